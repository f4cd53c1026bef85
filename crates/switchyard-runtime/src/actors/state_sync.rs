//! `StateSync`: keeps this node's copy of the cluster's breakers in step with the shared store.
//!
//! - Outcomes of provider calls arrive one message per call and are batched per provider; every flush interval
//!   (~100 ms, at once on a local trip) each provider with calls since the last flush gets one `report`, successes
//!   included, so the cluster's failure rate is computed over every node's calls, not only the failing ones'.
//!   While no batch holds a failure, reports wait up to a second (`HEALTHY_REPORT_INTERVAL`): a busy healthy
//!   provider costs about one store command a second per node, never one per query; an idle one none.
//!   The reports of one flush go out together (one pipelined round trip; a script per provider, since each
//!   provider has its own hash slot).
//! - A 429's cooldown is coalesced per provider (the longest one of the newest epoch) and sent at once, tagged
//!   with the epoch its call was admitted under: the store ignores it if the breaker closed since.
//! - The store's answer decides cluster trips (threshold **and** at least two reporting nodes, hard errors
//!   excepted); a trip is pushed to every node on `events.breaker.<p>` and applied to this node's gate at once.
//! - Past an open deadline every node asks for the probe lease; the one that gets it lets one call through, and
//!   its outcome closes or re-opens the breaker for everyone. The lease is short (`cluster.probe_lease_ms`); the
//!   holder renews it every third of a lease while its probe runs (the gate decides, `LeaseRenewal`), up to the
//!   longest provider timeout. A holder that dies stops renewing, and another node probes within about a lease.
//! - Every second a poll of the store is the backstop for lost events; it skips the providers whose view a
//!   report brought back in the last one and a half intervals (a report answers with the view). A failing store marks the node degraded
//!   (it keeps its local breakers and still applies events); the first good poll clears it. A store that lost its
//!   memory (epoch 0 after a restart) is adopted: local breakers take over until it learns again.
//!
//! The gates themselves are shared with the provider actors (`ClusterGates`), so a restarted provider actor
//! finds its provider's cluster state where it left it. All store calls run in tasks; their results come back
//! as messages, so a slow Redis never blocks this mailbox.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::collections::hash_map::Entry;

use bytes::Bytes;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use switchyard_bus::{Bus, Message};
use switchyard_core::{ClusterGate, ClusterPhase, FailureClass, LeaseRenewal, Outcome};
use switchyard_protocol::internal::BreakerEvent;
use switchyard_protocol::subjects::Subjects;
use switchyard_protocol::{Bincode, Codec};
use switchyard_state::{
    BreakerState, BreakerStore, ClusterView, OpenWait, OutcomeBatch, ProbeDecision, ReportEffect, StateError,
    TripPolicy,
};

use super::provider::ProviderMsg;
use super::provider_supervisor::ProviderDirectory;

/// Every provider's cluster gate on this node, shared by `StateSync` and the provider actors.
#[derive(Clone, Default)]
pub struct ClusterGates(Arc<HashMap<String, Arc<Mutex<ClusterGate>>>>);

impl ClusterGates {
    pub fn new<'a>(providers: impl IntoIterator<Item = &'a str>) -> Self {
        ClusterGates(Arc::new(providers.into_iter().map(|p| (p.to_owned(), Arc::default())).collect()))
    }

    pub fn get(&self, provider: &str) -> Option<Arc<Mutex<ClusterGate>>> {
        self.0.get(provider).cloned()
    }

    /// Runs `f` on `provider`'s gate (a poisoned lock is recovered: a gate is always consistent).
    pub fn with<T>(&self, provider: &str, f: impl FnOnce(&mut ClusterGate) -> T) -> Option<T> {
        let gate = self.0.get(provider)?;
        let mut guard = gate.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Some(f(&mut guard))
    }
}

/// Timings of the synchronisation.
#[derive(Debug, Clone, Copy)]
pub struct SyncSettings {
    pub flush_interval: Duration,
    pub poll_interval: Duration,
    /// How long a probe lease lasts unless renewed.
    pub probe_lease: Duration,
    /// The longest a probe may run (the longest provider timeout): renewals stop after it.
    pub max_probe: Duration,
}

impl SyncSettings {
    /// How often the lease holder renews: a third of the lease, so two renewals may fail before it lapses.
    pub fn renew_every(&self) -> Duration {
        self.probe_lease / 3
    }
}

pub struct StateSync;

pub struct StateSyncArgs {
    pub node: String,
    pub store: Arc<dyn BreakerStore>,
    pub bus: Arc<dyn Bus>,
    pub subjects: Subjects,
    pub directory: ProviderDirectory,
    pub gates: ClusterGates,
    pub policies: HashMap<String, TripPolicy>,
    pub settings: SyncSettings,
    pub degraded: Arc<AtomicBool>,
    pub telemetry: Arc<crate::telemetry::Telemetry>,
}

pub struct StateSyncState {
    args: StateSyncArgs,
    /// Outcomes not reported yet, per provider.
    pending: HashMap<String, OutcomeBatch>,
    /// Per provider since the last flush: the newest epoch a 429 was seen under, and its longest cooldown.
    rate_limits: HashMap<String, (u64, Duration)>,
    /// The generation of the latest scheduled probe attempt, per provider.
    probe_timers: HashMap<String, u64>,
    /// The lease (epoch) whose renewal chain runs, per provider.
    renewing: HashMap<String, u64>,
    /// Polls in a row that showed a provider at an older epoch than this node knows.
    older_polls: HashMap<String, u32>,
    /// When a report last brought back each provider's view: a provider reported since the last poll is not
    /// polled (a busy healthy provider's once-a-second report is its poll).
    viewed: HashMap<String, Instant>,
    flushing: bool,
    flush_again: bool,
    /// When batches of successes were last reported.
    last_healthy_report: tokio::time::Instant,
    polling: bool,
    tasks: Vec<JoinHandle<()>>,
}

/// Batches holding only successes are reported at most this often (failures go out every flush interval).
const HEALTHY_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// A 429 never keeps a provider shut cluster-wide for longer than this (the local breaker's cap too).
const MAX_COOLDOWN: Duration = Duration::from_secs(600);

pub enum StateSyncMsg {
    /// One call's outcome; `local_trip` asks for an immediate flush.
    Outcome {
        provider: String,
        epoch: u64,
        outcome: Outcome,
        slow: bool,
        local_trip: bool,
    },
    /// The cluster's probe ended; `None` when its outcome says nothing about the provider's health.
    ProbeResult {
        provider: String,
        epoch: u64,
        success: Option<bool>,
    },
    FlushTick,
    Flushed(Vec<(String, Result<switchyard_state::ReportOutcome, StateError>)>),
    PollTick,
    Polled(Result<Vec<ClusterView>, StateError>),
    /// A view learnt from a store call; `announce` pushes it to the other nodes.
    View {
        view: ClusterView,
        announce: bool,
    },
    Event(BreakerEvent),
    /// Ask for the probe lease. `timer` is the generation of a scheduled attempt: only the latest one scheduled
    /// for a provider runs (views keep arriving while a lease is renewed, and each would schedule another).
    TryProbe {
        provider: String,
        epoch: u64,
        timer: Option<u64>,
    },
    /// Time to renew this node's probe lease of `epoch`, if its probe still runs. `first` starts the renewal
    /// chain of a grant (ignored when that lease already has one: the owner may be granted its lease again).
    RenewTick {
        provider: String,
        epoch: u64,
        first: bool,
    },
    /// The store's answer to a renewal.
    Renewed {
        provider: String,
        epoch: u64,
        result: Result<ProbeDecision, StateError>,
    },
    StoreFailed(StateError),
}

impl Actor for StateSync {
    type Msg = StateSyncMsg;
    type State = StateSyncState;
    type Arguments = StateSyncArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<StateSyncMsg>,
        args: StateSyncArgs,
    ) -> Result<StateSyncState, ActorProcessingErr> {
        let mut tasks = Vec::new();
        let mut events = args.bus.subscribe(&args.subjects.breaker_event_wildcard()).await?;
        let me = myself.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(message) = events.next().await {
                match Bincode::decode::<BreakerEvent>(&message.payload) {
                    Ok(event) => {
                        let _ = me.cast(StateSyncMsg::Event(event));
                    }
                    Err(error) => debug!(%error, "ignoring a malformed breaker event"),
                }
            }
        }));
        tasks.push(ticker(myself.clone(), args.settings.flush_interval, || StateSyncMsg::FlushTick));
        tasks.push(ticker(myself.clone(), args.settings.poll_interval, || StateSyncMsg::PollTick));
        // Rehydrate at once rather than after the first poll interval.
        let _ = myself.cast(StateSyncMsg::PollTick);
        Ok(StateSyncState {
            args,
            pending: HashMap::new(),
            rate_limits: HashMap::new(),
            renewing: HashMap::new(),
            probe_timers: HashMap::new(),
            older_polls: HashMap::new(),
            viewed: HashMap::new(),
            flushing: false,
            flush_again: false,
            last_healthy_report: tokio::time::Instant::now(),
            polling: false,
            tasks,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<StateSyncMsg>,
        message: StateSyncMsg,
        state: &mut StateSyncState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            StateSyncMsg::Outcome { provider, epoch, outcome, slow, local_trip } => {
                state.record(&provider, epoch, outcome, slow);
                // A local trip, or a 429 (its cooldown should reach every node before they call again).
                if local_trip || matches!(outcome, Outcome::Failure(FailureClass::RateLimited { .. })) {
                    state.flush(&myself);
                }
            }
            StateSyncMsg::ProbeResult { provider, epoch, success } => {
                state.probe_result(&myself, provider, epoch, success)
            }
            StateSyncMsg::FlushTick => state.flush(&myself),
            StateSyncMsg::Flushed(results) => {
                state.flushing = false;
                if std::mem::take(&mut state.flush_again) {
                    let _ = myself.cast(StateSyncMsg::FlushTick);
                }
                for (provider, result) in results {
                    match result {
                        Ok(outcome) => {
                            state.store_answered();
                            state.viewed.insert(provider.clone(), now());
                            if matches!(outcome.effect, ReportEffect::Tripped { .. }) {
                                info!(provider = %provider, epoch = outcome.view.epoch, "cluster breaker tripped");
                                state.apply(&myself, outcome.view, true).await;
                            } else {
                                // The report's view is as fresh as a poll's, and this provider's poll is skipped.
                                state.reconcile(&myself, outcome.view).await;
                            }
                        }
                        Err(error) => state.store_failed(error),
                    }
                }
            }
            StateSyncMsg::PollTick => state.poll(&myself),
            StateSyncMsg::Polled(result) => {
                state.polling = false;
                match result {
                    Ok(views) => {
                        state.store_answered();
                        for view in views {
                            state.reconcile(&myself, view).await;
                        }
                    }
                    Err(error) => state.store_failed(error),
                }
            }
            StateSyncMsg::View { view, announce } => state.apply(&myself, view, announce).await,
            StateSyncMsg::Event(event) => {
                if event.origin != state.args.node {
                    state.apply_event(&myself, event);
                }
            }
            StateSyncMsg::TryProbe { provider, epoch, timer } => {
                if timer.is_none() || timer == state.probe_timers.get(&provider).copied() {
                    state.try_probe(&myself, provider, epoch);
                }
            }
            StateSyncMsg::RenewTick { provider, epoch, first } => state.renew_tick(&myself, provider, epoch, first),
            StateSyncMsg::Renewed { provider, epoch, result } => state.renewed(&myself, provider, epoch, result).await,
            StateSyncMsg::StoreFailed(error) => state.store_failed(error),
        }
        Ok(())
    }

    async fn post_stop(&self, _: ActorRef<StateSyncMsg>, state: &mut StateSyncState) -> Result<(), ActorProcessingErr> {
        for task in &state.tasks {
            task.abort();
        }
        Ok(())
    }
}

fn ticker(actor: ActorRef<StateSyncMsg>, every: Duration, message: fn() -> StateSyncMsg) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            if actor.cast(message()).is_err() {
                return;
            }
        }
    })
}

/// Up to a tenth of the base wait added at random, so nodes that trip together do not probe in lockstep.
fn jittered(wait: OpenWait) -> OpenWait {
    wait.with_jitter(wait.base.mul_f64(rand::random::<f64>() * 0.1))
}

/// This node's clock. Tokio's, so that actor tests with paused time move it (outside tests it is the system's
/// monotonic clock).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// The lease left in a view, by the store's clock.
fn lease_left(view: &ClusterView, otherwise: Duration) -> Duration {
    view.probe.as_ref().map_or(otherwise, |l| Duration::from_millis(l.until_ms.saturating_sub(view.now_ms)))
}

/// The phase of a view on this node's clock.
fn phase_of(view: &ClusterView, now: Instant) -> ClusterPhase {
    phase_of_state(view.state, view.open_remaining, now)
}

/// A cluster state named `state`, with `open_remaining` left if open, on this node's clock. The cluster's breaker
/// is never metrics-only (the store refuses it, and so does this node in an event); were it, it would object to
/// nothing, as closed.
fn phase_of_state(state: BreakerState, open_remaining: Duration, now: Instant) -> ClusterPhase {
    match state {
        BreakerState::Closed => ClusterPhase::Closed,
        BreakerState::Open => ClusterPhase::Open { until: now + open_remaining },
        BreakerState::HalfOpen => ClusterPhase::HalfOpen,
        BreakerState::ForcedOpen => ClusterPhase::ForcedOpen,
        BreakerState::Disabled => ClusterPhase::Disabled,
        BreakerState::MetricsOnly => ClusterPhase::Closed,
    }
}

fn phase_of_event(event: &BreakerEvent, now: Instant) -> Option<ClusterPhase> {
    let open_remaining = Duration::from_millis(event.open_remaining_ms);
    (event.state != BreakerState::MetricsOnly).then(|| phase_of_state(event.state, open_remaining, now))
}

impl StateSyncState {
    fn record(&mut self, provider: &str, epoch: u64, outcome: Outcome, slow: bool) {
        if let Outcome::Failure(FailureClass::RateLimited { retry_after }) = outcome {
            // Coalesced per provider: the newest epoch's longest cooldown. Never dropped here for its epoch: only
            // the store knows whether the breaker closed since (an older epoch of the same open spell counts).
            let cooldown = retry_after.unwrap_or(Duration::ZERO).clamp(Duration::from_secs(1), MAX_COOLDOWN);
            match self.rate_limits.entry(provider.to_owned()) {
                Entry::Vacant(slot) => {
                    slot.insert((epoch, cooldown));
                }
                Entry::Occupied(mut slot) => {
                    let (seen, longest) = slot.get_mut();
                    if epoch > *seen {
                        (*seen, *longest) = (epoch, cooldown);
                    } else if epoch == *seen {
                        *longest = (*longest).max(cooldown);
                    }
                }
            }
        }
        // Outcomes of an older cluster state say nothing about the current one (the store would call them stale).
        let known = self.args.gates.with(provider, |gate| gate.epoch()).unwrap_or_default();
        if epoch < known {
            return;
        }
        let batch = self.pending.entry(provider.to_owned()).or_insert_with(|| OutcomeBatch::new(epoch));
        if batch.epoch != epoch {
            if epoch < batch.epoch {
                return;
            }
            *batch = OutcomeBatch::new(epoch);
        }
        batch.slow_calls += u64::from(slow);
        match outcome {
            Outcome::Success => batch.successes += 1,
            Outcome::Failure(FailureClass::Retryable) => batch.failures += 1,
            Outcome::Failure(FailureClass::Fatal { auth: true }) => batch.hard_errors += 1,
            // A 429 is a cooldown (above), not a failure; the request's own fault or a cancellation says nothing
            // about the provider.
            Outcome::Failure(_) => {}
        }
    }

    /// Reports every provider's batch with calls since the last flush, successes included (one `report` per
    /// provider, all in one pipeline), and the 429 cooldowns seen, each with its epoch. Nothing is sent when
    /// nothing happened.
    fn flush(&mut self, myself: &ActorRef<StateSyncMsg>) {
        if self.flushing {
            self.flush_again = true;
            return;
        }
        // Good news can wait: while no batch says anything bad, reports go out at most once per
        // `HEALTHY_REPORT_INTERVAL`, so a healthy provider costs about one command a second per node. (Tokio's clock,
        // so actor tests can move it.)
        let now = tokio::time::Instant::now();
        let report = self.pending.values().any(OutcomeBatch::is_bad)
            || now.saturating_duration_since(self.last_healthy_report) >= HEALTHY_REPORT_INTERVAL;
        let due: Vec<(String, OutcomeBatch)> = match report {
            true => {
                self.last_healthy_report = now;
                self.pending.drain().filter(|(_, batch)| batch.calls() > 0 || batch.is_bad()).collect()
            }
            false => Vec::new(),
        };
        let cooldowns: Vec<(String, (u64, Duration))> = self.rate_limits.drain().collect();
        if due.is_empty() && cooldowns.is_empty() {
            return;
        }
        self.flushing = true;
        let (store, node, me) = (self.args.store.clone(), self.args.node.clone(), myself.clone());
        let policies = self.args.policies.clone();
        tokio::spawn(async move {
            for (provider, (epoch, cooldown)) in cooldowns {
                let message = match store.rate_limited(&provider, epoch, cooldown).await {
                    Ok(update) => {
                        if !update.changed && update.view.state == BreakerState::Closed {
                            debug!(provider = %provider, epoch, "429 cooldown from before the last close ignored");
                        }
                        StateSyncMsg::View { view: update.view, announce: update.changed }
                    }
                    Err(error) => StateSyncMsg::StoreFailed(error),
                };
                let _ = me.cast(message);
            }
            // All providers' reports at once: on the multiplexed Redis connection they travel as one pipeline
            // (one round trip per flush), each still its own script on its own provider's hash slot.
            let reports = due.into_iter().map(|(provider, batch)| {
                let mut policy = policies.get(&provider).cloned().unwrap_or_default();
                policy.wait = jittered(policy.wait);
                let (store, node) = (&store, &node);
                async move {
                    let result = store.report(&provider, node, batch, &policy).await;
                    (provider, result)
                }
            });
            let results = futures::future::join_all(reports).await;
            let _ = me.cast(StateSyncMsg::Flushed(results));
        });
    }

    /// Reads the breakers of the providers no report brought back lately (the backstop for lost events).
    fn poll(&mut self, myself: &ActorRef<StateSyncMsg>) {
        if self.polling {
            return;
        }
        // Reports of healthy providers go out about once a second, not in step with the poll: a view younger than
        // one and a half intervals is fresh enough.
        let fresh = self.args.settings.poll_interval.max(HEALTHY_REPORT_INTERVAL).mul_f64(1.5);
        let now = now();
        let providers: Vec<String> = self
            .args
            .policies
            .keys()
            .filter(|p| self.viewed.get(*p).is_none_or(|at| now.saturating_duration_since(*at) >= fresh))
            .cloned()
            .collect();
        if providers.is_empty() {
            return;
        }
        self.polling = true;
        let (store, me) = (self.args.store.clone(), myself.clone());
        tokio::spawn(async move {
            let names: Vec<&str> = providers.iter().map(String::as_str).collect();
            let _ = me.cast(StateSyncMsg::Polled(store.get_many(&names).await));
        });
    }

    /// The store answered: a degraded node is whole again.
    fn store_answered(&mut self) {
        if self.args.degraded.swap(false, Ordering::Relaxed) {
            info!(node = %self.args.node, "shared state reachable again");
            self.set_degraded(false);
        }
    }

    fn store_failed(&mut self, error: StateError) {
        self.args.telemetry.metrics.redis_errors.inc();
        if !self.args.degraded.swap(true, Ordering::Relaxed) {
            warn!(node = %self.args.node, %error, "shared state unreachable, serving with local breakers");
            self.set_degraded(true);
        }
    }

    fn set_degraded(&self, degraded: bool) {
        for provider in self.args.policies.keys() {
            self.args.gates.with(provider, |gate| gate.set_degraded(degraded));
        }
    }

    /// Applies a view to this node's gate; announces it when it is news we caused.
    async fn apply(&mut self, myself: &ActorRef<StateSyncMsg>, view: ClusterView, announce: bool) {
        let now = now();
        let phase = phase_of(&view, now);
        let applied = self.args.gates.with(&view.provider, |gate| {
            let was_closed = gate.phase() == ClusterPhase::Closed;
            (gate.apply(phase, view.epoch), was_closed)
        });
        let Some((true, was_closed)) = applied else { return };
        self.after_change(myself, &view.provider, phase, view.epoch, was_closed);
        if announce {
            let event = BreakerEvent {
                provider: view.provider.clone(),
                state: view.state,
                epoch: view.epoch,
                open_remaining_ms: view.open_remaining.as_millis() as u64,
                origin: self.args.node.clone(),
            };
            if let Ok(bytes) = Bincode::encode(&event) {
                let subject = self.args.subjects.breaker_event(&view.provider);
                if let Err(error) = self.args.bus.publish(Message::new(subject, Bytes::from(bytes))).await {
                    warn!(%error, "cannot publish breaker event");
                }
            }
        }
    }

    /// The poll's view: applied like any other, except that a store which lost its memory is adopted.
    async fn reconcile(&mut self, myself: &ActorRef<StateSyncMsg>, view: ClusterView) {
        let known = self.args.gates.with(&view.provider, |gate| gate.epoch()).unwrap_or_default();
        let phase = phase_of(&view, now());
        if view.epoch < known {
            // An event can overtake a poll, so one older view proves nothing; two in a row (or a store that
            // knows nothing at all) mean the store restarted and lost what we know: it is the truth again.
            let older = self.older_polls.entry(view.provider.clone()).or_default();
            *older += 1;
            if *older < 2 && view.epoch > 0 {
                return;
            }
            warn!(provider = %view.provider, known, store = view.epoch, "shared state went back in time, adopting it");
            self.older_polls.remove(&view.provider);
            self.args.gates.with(&view.provider, |gate| gate.replace(phase, view.epoch));
            self.after_change(myself, &view.provider, phase, view.epoch, false);
            return;
        }
        self.older_polls.remove(&view.provider);
        // A probe lease is out: try again when it expires (a lease that ends unused must not stall the breaker).
        // Scheduled after applying the view, so the store's lease time replaces the generic one a new half-open
        // state schedules.
        let retry = match (phase, &view.probe) {
            (ClusterPhase::HalfOpen, Some(lease)) => {
                let left = Duration::from_millis(lease.until_ms.saturating_sub(view.now_ms));
                Some((view.provider.clone(), view.epoch, left))
            }
            _ => None,
        };
        self.apply(myself, view, false).await;
        if let Some((provider, epoch, left)) = retry {
            self.schedule_probe(myself, &provider, epoch, left);
        }
    }

    fn apply_event(&mut self, myself: &ActorRef<StateSyncMsg>, event: BreakerEvent) {
        let now = now();
        let Some(phase) = phase_of_event(&event, now) else { return };
        let applied = self.args.gates.with(&event.provider, |gate| {
            let was_closed = gate.phase() == ClusterPhase::Closed;
            (gate.apply(phase, event.epoch), was_closed)
        });
        if let Some((true, was_closed)) = applied {
            debug!(provider = %event.provider, state = %event.state, epoch = event.epoch, origin = %event.origin, "breaker event applied");
            self.after_change(myself, &event.provider, phase, event.epoch, was_closed);
        }
    }

    /// Follow-ups of a new cluster state: schedule the probe attempt, or let the local breaker start afresh.
    fn after_change(
        &mut self,
        myself: &ActorRef<StateSyncMsg>,
        provider: &str,
        phase: ClusterPhase,
        epoch: u64,
        was_closed: bool,
    ) {
        self.pending.remove(provider);
        self.args.telemetry.metrics.breaker(provider, "cluster", phase.state());
        match phase {
            ClusterPhase::Open { until } => {
                self.schedule_probe(myself, provider, epoch, until.saturating_duration_since(now()));
            }
            ClusterPhase::Closed if !was_closed => self.notify_closed(provider),
            ClusterPhase::HalfOpen => {
                // Another node probes; ask for the lease again if its probe never reports.
                self.schedule_probe(myself, provider, epoch, self.args.settings.probe_lease);
            }
            _ => {}
        }
    }

    /// Asks for the probe lease of `epoch` after `after`, replacing any attempt scheduled before for `provider`.
    fn schedule_probe(&mut self, myself: &ActorRef<StateSyncMsg>, provider: &str, epoch: u64, after: Duration) {
        let timer = self.probe_timers.entry(provider.to_owned()).or_default();
        *timer += 1;
        let (provider, timer) = (provider.to_owned(), Some(*timer));
        myself.send_after(after, move || StateSyncMsg::TryProbe { provider, epoch, timer });
    }

    fn notify_closed(&self, provider: &str) {
        if let Some(actor) = self.args.directory.get(provider) {
            let _ = actor.cast(ProviderMsg::ClusterClosed);
        }
    }

    fn try_probe(&mut self, myself: &ActorRef<StateSyncMsg>, provider: String, epoch: u64) {
        let wants = self.args.gates.with(&provider, |gate| gate.epoch() == epoch && gate.wants_probe(now()));
        if wants != Some(true) {
            return;
        }
        let (store, node, me, lease) =
            (self.args.store.clone(), self.args.node.clone(), myself.clone(), self.args.settings.probe_lease);
        let renew_every = self.args.settings.renew_every();
        let gates = self.args.gates.clone();
        tokio::spawn(async move {
            match store.acquire_probe(&provider, &node, lease).await {
                Ok(ProbeDecision::Granted(view)) => {
                    let epoch = view.epoch;
                    // The store's lease, not a fresh one: when we asked again it may be the one granted before.
                    let left = lease_left(&view, lease);
                    let until = now() + left;
                    gates.with(&provider, |gate| {
                        gate.apply(ClusterPhase::HalfOpen, epoch);
                        gate.grant_probe(epoch, until);
                    });
                    debug!(provider = %provider, epoch, "probe lease granted");
                    // Renew while the probe runs; if no call comes to send it, ask again once the lease is over.
                    let renewing = provider.clone();
                    me.send_after(renew_every, move || StateSyncMsg::RenewTick {
                        provider: renewing,
                        epoch,
                        first: true,
                    });
                    me.send_after(left, move || StateSyncMsg::TryProbe { provider, epoch, timer: None });
                }
                Ok(ProbeDecision::Refused(view)) => {
                    // Someone else probes, or the state moved on: reconcile with what the store says.
                    let _ = me.cast(StateSyncMsg::Polled(Ok(vec![view])));
                }
                Err(error) => {
                    let _ = me.cast(StateSyncMsg::StoreFailed(error));
                }
            }
        });
    }

    /// A renewal tick for this node's lease of `epoch`: the gate says whether to renew, wait or let go. One
    /// renewal chain per provider and lease.
    fn renew_tick(&mut self, myself: &ActorRef<StateSyncMsg>, provider: String, epoch: u64, first: bool) {
        let chain = self.renewing.get(&provider).copied();
        if (first && chain == Some(epoch)) || (!first && chain != Some(epoch)) {
            return;
        }
        let settings = self.args.settings;
        let decision = self.args.gates.with(&provider, |gate| gate.lease_renewal(epoch, now(), settings.max_probe));
        if !matches!(decision, Some(LeaseRenewal::Renew { .. } | LeaseRenewal::Wait)) {
            self.renewing.remove(&provider);
        } else {
            self.renewing.insert(provider.clone(), epoch);
        }
        match decision {
            Some(LeaseRenewal::Renew { epoch }) => {
                let (store, node, me) = (self.args.store.clone(), self.args.node.clone(), myself.clone());
                tokio::spawn(async move {
                    let result = store.renew_probe(&provider, &node, epoch, settings.probe_lease).await;
                    let _ = me.cast(StateSyncMsg::Renewed { provider, epoch, result });
                });
            }
            Some(LeaseRenewal::Wait) => {
                myself.send_after(settings.renew_every(), move || StateSyncMsg::RenewTick {
                    provider,
                    epoch,
                    first: false,
                });
            }
            Some(LeaseRenewal::GiveUp) => {
                warn!(provider = %provider, epoch, max_probe_ms = settings.max_probe.as_millis() as u64,
                    "probe outlived the longest provider timeout, letting its lease lapse");
            }
            Some(LeaseRenewal::Stop) | None => {}
        }
    }

    async fn renewed(
        &mut self,
        myself: &ActorRef<StateSyncMsg>,
        provider: String,
        epoch: u64,
        result: Result<ProbeDecision, StateError>,
    ) {
        let every = self.args.settings.renew_every();
        match result {
            Ok(ProbeDecision::Granted(view)) => {
                let until = now() + lease_left(&view, self.args.settings.probe_lease);
                self.args.gates.with(&provider, |gate| gate.renew_probe(epoch, until));
                debug!(provider = %provider, epoch, "probe lease renewed");
                myself.send_after(every, move || StateSyncMsg::RenewTick { provider, epoch, first: false });
            }
            Ok(ProbeDecision::Refused(view)) => {
                if self.renewing.get(&provider) == Some(&epoch) {
                    self.renewing.remove(&provider);
                }
                // Lapsed (renewals failed for a whole lease) or the cluster moved on: the store is the truth.
                warn!(provider = %provider, epoch, store_epoch = view.epoch, "probe lease lost while the probe ran");
                self.reconcile(myself, view).await;
            }
            Err(error) => {
                // The lease may still hold: try again at the next tick.
                self.store_failed(error);
                myself.send_after(every, move || StateSyncMsg::RenewTick { provider, epoch, first: false });
            }
        }
    }

    fn probe_result(&mut self, myself: &ActorRef<StateSyncMsg>, provider: String, epoch: u64, success: Option<bool>) {
        self.args.gates.with(&provider, |gate| gate.probe_done());
        let Some(success) = success else {
            // The probe's outcome said nothing about the provider: probe again.
            let _ = myself.cast(StateSyncMsg::TryProbe { provider, epoch, timer: None });
            return;
        };
        let wait = jittered(self.args.policies.get(&provider).map(|p| p.wait).unwrap_or_default());
        let (store, node, me) = (self.args.store.clone(), self.args.node.clone(), myself.clone());
        tokio::spawn(async move {
            let message = match store.probe_result(&provider, &node, epoch, success, &wait).await {
                Ok(update) => StateSyncMsg::View { view: update.view, announce: update.changed },
                Err(error) => StateSyncMsg::StoreFailed(error),
            };
            let _ = me.cast(message);
        });
    }
}

#[cfg(test)]
mod tests;
