//! `ProviderActor`: one per provider and node; owns the provider's client, local circuit breaker, in-flight limit
//! and statistics, and obeys the cluster's breaker for its provider.
//!
//! The actor never awaits the upstream call inside `handle`: it admits or refuses a call (in-flight limit, then
//! the cluster's gate, then the local breaker; an open breaker refuses without touching the network), spawns the
//! call as a task, and learns its outcome from a `Finished` message that carries the admission back. The task
//! publishes the provider's answer (and, for a streaming query, the chunks) straight to the bus, so a crash of
//! this actor never loses a call in flight. Outcomes go on to `StateSync`, which shares them with the cluster.
//! The cluster gate is kept by the node, so a restarted actor finds its provider's cluster state unchanged; its
//! local breaker starts closed.
//!
//! A provider is charged with a timeout only when it breaks its own limits: the client's `timeout_ms` on a whole
//! non-streaming call, and for a stream the first-token limit and the idle limit between chunks (a stream has no
//! whole-call cap unless the operator sets `stream_timeout_ms`). Running out of the query's deadline is a
//! cancellation, and so is a call a router cancels because a hedge won: neither counts against a breaker.
//!
//! Every call task carries a [`CallGuard`]: however the task ends (its answer, an abort, a panic), the guard
//! gives its in-flight slot back and reports the outcome with its admission, so no slot or half-open permit
//! leaks. The in-flight count lives outside the actor, like the cluster gate, so a restarted actor still counts
//! the calls of its predecessor that are running.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tracing::{Instrument, debug, info, warn};

use switchyard_bus::{Bus, Message};
use switchyard_core::{
    Breaker, BreakerConfig, BreakerPhase, BreakerState, CallOutcome, ClusterGate, ClusterPhase, FailureClass,
    GateDecision, Outcome, Permit,
};
use switchyard_protocol::admin::ProviderHealth;
use switchyard_protocol::client::StreamFrame;
use switchyard_protocol::internal::{ProviderAnswer, ProviderCall, ProviderReply, Refusal, StreamTarget, WireFailure};
use switchyard_protocol::{Bincode, Codec, Json};
use switchyard_providers::{LlmProvider, ProviderError, StreamEvent};
use tokio::task::AbortHandle;
use uuid::Uuid;

use super::state_sync::StateSyncMsg;
use crate::telemetry::{AnsweredSeries, CallEnd, CallLabels, ProviderCounters, Telemetry, unix_ms};

pub struct ProviderActor;

pub struct ProviderArgs {
    /// This node's name, stamped on every answer.
    pub node: String,
    pub provider: Arc<dyn LlmProvider>,
    pub bus: Arc<dyn Bus>,
    pub max_in_flight: usize,
    /// Calls running on this node, shared with the actor's predecessors and successors.
    pub in_flight: Arc<AtomicUsize>,
    pub breaker: BreakerConfig,
    pub limits: StreamLimits,
    /// The cluster's breaker for this provider and where outcomes go, when the node shares state.
    pub cluster: Option<ClusterLink>,
    /// This provider's counters on this node, across restarts of its actor.
    pub counters: Arc<ProviderCounters>,
    pub telemetry: Arc<Telemetry>,
}

/// This provider's cluster gate (kept by the node, so it survives a restart of this actor) and the node's
/// `StateSync`.
#[derive(Clone)]
pub struct ClusterLink {
    pub gate: Arc<Mutex<ClusterGate>>,
    pub sync: ActorRef<StateSyncMsg>,
}

impl ClusterLink {
    fn with<T>(&self, f: impl FnOnce(&mut ClusterGate) -> T) -> T {
        f(&mut self.gate.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

/// The limits a streaming call must keep; breaking one is the provider's failure (retryable).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamLimits {
    /// From the request to the first token.
    pub first_token: Option<Duration>,
    /// Between two chunks.
    pub idle: Option<Duration>,
}

pub struct ProviderState {
    node: String,
    provider: Arc<dyn LlmProvider>,
    bus: Arc<dyn Bus>,
    max_in_flight: usize,
    limits: StreamLimits,
    in_flight: Arc<AtomicUsize>,
    /// This actor's running calls, so a router can cancel one (a hedge's loser).
    running: HashMap<Uuid, AbortHandle>,
    breaker: Breaker,
    cluster: Option<ClusterLink>,
    counters: Arc<ProviderCounters>,
    /// This provider's metric series of answered calls, looked up once.
    answered: Arc<AnsweredSeries>,
    telemetry: Arc<Telemetry>,
    stats: Stats,
}

/// What only this actor's health shows (the counts are in [`ProviderCounters`]).
#[derive(Default)]
struct Stats {
    last_error: Option<(String, u64)>,
    ewma_latency_ms: f64,
    ended: u64,
}

/// How a call was let through: by the local breaker, as the cluster's probe, or past both (a router's
/// panic-mode trickle).
pub enum Admission {
    /// The local breaker's permit, and the cluster epoch the call was admitted under.
    Local(Permit, u64),
    Probe {
        epoch: u64,
    },
    Bypass,
}

/// Where a provider call's answer goes.
pub enum ReplyTo {
    /// A router that called over the bus: its reply subject.
    Subject(String),
    /// A router on this node that called the actor directly (`node.local_calls`).
    Local(tokio::sync::oneshot::Sender<ProviderAnswer>),
}

pub enum ProviderMsg {
    /// A call from a router; the answer goes to `reply_to`.
    Call {
        call: ProviderCall,
        reply_to: ReplyTo,
        /// The headers of the call's message: the router's trace context, when tracing is on.
        trace: Vec<(String, String)>,
    },
    /// A call task ended; its admission comes back with its outcome.
    Finished {
        call_id: Uuid,
        admission: Admission,
        outcome: Outcome,
        latency: Duration,
        error: Option<String>,
    },
    /// A router no longer needs this call (another attempt won): abort it, without charging the provider.
    Cancel {
        call_id: Uuid,
    },
    /// The cluster's breaker closed: the local one starts afresh too.
    ClusterClosed,
    Health(RpcReplyPort<ProviderHealth>),
    /// Fail on purpose, so operators and tests can exercise supervision.
    Crash,
}

impl Actor for ProviderActor {
    type Msg = ProviderMsg;
    type State = ProviderState;
    type Arguments = ProviderArgs;

    async fn pre_start(
        &self,
        _: ActorRef<ProviderMsg>,
        args: ProviderArgs,
    ) -> Result<ProviderState, ActorProcessingErr> {
        // A restarted actor starts with a fresh local breaker.
        args.telemetry.metrics.breaker(args.provider.name(), "local", BreakerState::Closed);
        Ok(ProviderState {
            node: args.node,
            provider: args.provider,
            bus: args.bus,
            max_in_flight: args.max_in_flight,
            limits: args.limits,
            in_flight: args.in_flight,
            running: HashMap::new(),
            breaker: Breaker::new(args.breaker)?,
            cluster: args.cluster,
            answered: Arc::new(args.telemetry.metrics.answered_series(args.counters.provider())),
            counters: args.counters,
            telemetry: args.telemetry,
            stats: Stats::default(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<ProviderMsg>,
        message: ProviderMsg,
        state: &mut ProviderState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ProviderMsg::Call { call, reply_to, trace } => {
                let admission = match state.admit(Instant::now(), call.bypass_breaker) {
                    Ok(admission) => admission,
                    Err(reason) => {
                        state.counters.refused();
                        let refused = ProviderReply::Refused { reason };
                        publish_reply(state.bus.as_ref(), reply_to, &state.node, refused).await;
                        return Ok(());
                    }
                };
                state.in_flight.fetch_add(1, Ordering::AcqRel);
                state.counters.started();
                let (provider, bus, limits) = (state.provider.clone(), state.bus.clone(), state.limits);
                let node = state.node.clone();
                let call_id = call.call_id;
                let guard = CallGuard {
                    actor: myself,
                    counters: state.counters.clone(),
                    telemetry: state.telemetry.clone(),
                    in_flight: state.in_flight.clone(),
                    call_id,
                    admission: Some(admission),
                    started: Instant::now(),
                    panic_reply: Some((bus.clone(), reply_to, node.clone())),
                    answered: state.answered.clone(),
                };
                let keepalive = call.keepalive.clone();
                // The call's span continues the router's trace (its context came in the message's headers).
                let span = tracing::debug_span!("provider_call", provider = state.provider.name(), %call_id);
                if !trace.is_empty() {
                    use tracing_opentelemetry::OpenTelemetrySpanExt;
                    let _ = span.set_parent(crate::telemetry::extract_trace(&trace));
                }
                // Boxed where it is made (a few KB), so it is not copied again on its way into the task.
                let call = Box::pin(async move {
                    let mut guard = guard;
                    // Signs of life while the call runs; dropped with the task, however it ends.
                    let _alive = keepalive.map(|k| crate::liveness::heartbeats(bus.clone(), k, call_id, node.clone()));
                    let reply = run_call(provider.as_ref(), bus.as_ref(), call, limits).await;
                    let reply_to = guard.panic_reply.take();
                    guard.count(&reply);
                    let (outcome, error) = match &reply {
                        ProviderReply::Failed(f) => (Outcome::Failure(f.class.into()), Some(f.message.clone())),
                        _ => (Outcome::Success, None),
                    };
                    // Reported before the router hears the answer, so that whoever asks this actor next (the
                    // client that got the answer, reading the breaker) sees the call's outcome.
                    guard.finish(outcome, error);
                    if let Some((_, reply_to, _)) = reply_to {
                        publish_reply(bus.as_ref(), reply_to, &node, reply).await;
                    }
                });
                let task = tokio::spawn(call.instrument(span));
                state.running.insert(call_id, task.abort_handle());
            }
            ProviderMsg::Finished { call_id, admission, outcome, latency, error } => {
                state.running.remove(&call_id);
                state.record(admission, outcome, latency);
                let ms = latency.as_secs_f64() * 1000.0;
                let stats = &mut state.stats;
                if outcome == Outcome::Failure(FailureClass::Cancelled) {
                    // Nobody waited for the end of this call: its latency and fate say nothing.
                    return Ok(());
                }
                stats.ewma_latency_ms = if stats.ended == 0 { ms } else { 0.8 * stats.ewma_latency_ms + 0.2 * ms };
                stats.ended += 1;
                if let (Outcome::Failure(_), Some(error)) = (outcome, error) {
                    stats.last_error = Some((error, unix_ms()));
                }
            }
            ProviderMsg::Cancel { call_id } => {
                if let Some(task) = state.running.remove(&call_id) {
                    debug!(provider = state.provider.name(), %call_id, "call cancelled by its router");
                    task.abort();
                }
            }
            ProviderMsg::ClusterClosed => {
                state.breaker.reset(Instant::now());
            }
            ProviderMsg::Health(port) => {
                let stats = &state.stats;
                let breaker = state.breaker.snapshot(Instant::now());
                let (cluster_phase, cluster_epoch) = state
                    .cluster
                    .as_ref()
                    .map_or((ClusterPhase::Closed, 0), |link| link.with(|gate| (gate.phase(), gate.epoch())));
                let cluster_open_remaining_ms = match cluster_phase {
                    ClusterPhase::Open { until } => {
                        Some(until.saturating_duration_since(Instant::now()).as_millis() as u64)
                    }
                    _ => None,
                };
                let _ = port.send(ProviderHealth {
                    name: state.provider.name().to_owned(),
                    model: state.provider.model().to_owned(),
                    status: "running".into(),
                    restarts: 0,
                    in_flight: state.in_flight.load(Ordering::Acquire) as u64,
                    calls: state.counters.calls(),
                    successes: state.counters.successes(),
                    failures: state.counters.failures(),
                    refused: state.counters.refusals(),
                    ewma_latency_ms: stats.ewma_latency_ms,
                    last_error: stats.last_error.as_ref().map(|(e, _)| e.clone()),
                    last_error_at_ms: stats.last_error.as_ref().map(|(_, at)| *at),
                    last_crash: None,
                    last_crash_at_ms: None,
                    breaker: Some(breaker.state.state()),
                    breaker_epoch: breaker.epoch,
                    failure_rate: breaker.failure_rate,
                    misconfigured: breaker.misconfigured,
                    cluster_breaker: Some(cluster_phase.state()),
                    cluster_epoch,
                    cluster_open_remaining_ms,
                });
            }
            ProviderMsg::Crash => {
                warn!(provider = state.provider.name(), "provider actor crashing on request");
                return Err("crash requested by an operator".into());
            }
        }
        Ok(())
    }
}

impl ProviderState {
    /// The cluster's gate first (an open cluster breaker refuses; its probe bypasses the local breaker), then the
    /// local breaker.
    fn admit(&mut self, now: Instant, bypass: bool) -> Result<Admission, Refusal> {
        if self.in_flight.load(Ordering::Acquire) >= self.max_in_flight {
            return Err(Refusal::Overloaded);
        }
        let refuse =
            |retry_after: Duration| Refusal::BreakerOpen { retry_after_ms: retry_after.as_millis().max(1) as u64 };
        let mut epoch = 0;
        if let Some(link) = &self.cluster {
            let (decision, phase, current) = link.with(|gate| {
                // A trickle goes past open breakers, never past an operator's forced open.
                let decision = if bypass { GateDecision::Admit } else { gate.admit(now) };
                (decision, gate.phase(), gate.epoch())
            });
            epoch = current;
            if phase == ClusterPhase::ForcedOpen {
                return Err(refuse(switchyard_core::gate::FORCED_OPEN_RETRY_AFTER));
            }
            match decision {
                GateDecision::Probe { epoch } => return Ok(Admission::Probe { epoch }),
                GateDecision::Refuse { retry_after } => return Err(refuse(retry_after)),
                GateDecision::Admit => {}
            }
        }
        if bypass {
            return Ok(Admission::Bypass);
        }
        self.breaker.try_acquire(now).map(|permit| Admission::Local(permit, epoch)).map_err(|rejected| {
            Refusal::LocalBreakerOpen { retry_after_ms: rejected.retry_after.as_millis().max(1) as u64 }
        })
    }

    /// Feeds an outcome to the local breaker and to the cluster.
    fn record(&mut self, admission: Admission, outcome: Outcome, latency: Duration) {
        let now = Instant::now();
        let provider = self.provider.name();
        let mut local_trip = false;
        let slow = latency >= self.breaker.config().slow_call_duration;
        let epoch = match admission {
            Admission::Local(permit, epoch) => {
                let call = CallOutcome { outcome, duration: latency };
                if let Some(t) = self.breaker.on_outcome(permit, call, now, rand::random::<f64>()) {
                    let open_ms = t.open_until.map(|until| until.saturating_duration_since(now).as_millis() as u64);
                    let (from, to) = (t.from.state(), t.to.state());
                    info!(provider, %from, %to, epoch = t.epoch, open_ms, reason = ?t.reason, "breaker transition");
                    self.telemetry.metrics.breaker(provider, "local", to);
                    local_trip = matches!(t.to, BreakerPhase::Open { .. });
                }
                epoch
            }
            Admission::Probe { epoch } => {
                let success = match outcome {
                    Outcome::Success => Some(true),
                    Outcome::Failure(FailureClass::Retryable | FailureClass::Fatal { auth: true }) => Some(false),
                    // A 429 answers with its own cooldown (reported below as an outcome); the request's own
                    // fault or a cancellation says nothing about the provider.
                    Outcome::Failure(_) => None,
                };
                info!(provider, epoch, ?success, "cluster probe finished");
                if let Some(link) = &self.cluster {
                    let message = if let Outcome::Failure(FailureClass::RateLimited { .. }) = outcome {
                        // The 429's cooldown decides what comes next, not a probe verdict.
                        link.with(|gate| gate.probe_done());
                        StateSyncMsg::Outcome { provider: provider.to_owned(), epoch, outcome, slow, local_trip: true }
                    } else {
                        StateSyncMsg::ProbeResult { provider: provider.to_owned(), epoch, success }
                    };
                    let _ = link.sync.cast(message);
                }
                return;
            }
            // A trickle's outcome is for the router's balancer; the breakers have their own probes.
            Admission::Bypass => return,
        };
        if let Some(link) = &self.cluster {
            let message = StateSyncMsg::Outcome { provider: provider.to_owned(), epoch, outcome, slow, local_trip };
            let _ = link.sync.cast(message);
        }
    }
}

/// Publishes a provider's answer; a router that gave up no longer listens, which is not an error here.
pub(crate) async fn publish_reply(bus: &dyn Bus, reply_to: ReplyTo, node: &str, reply: ProviderReply) {
    let answer = ProviderAnswer { node: node.to_owned(), reply };
    let subject = match reply_to {
        ReplyTo::Subject(subject) => subject,
        ReplyTo::Local(sender) => {
            // The router may have given up on the call meanwhile: nobody to tell.
            let _ = sender.send(answer);
            return;
        }
    };
    let bytes = match Bincode::encode(&answer) {
        Ok(bytes) if bytes.len() > bus.max_payload() => match Bincode::encode(&too_large(answer, bytes.len(), bus)) {
            Ok(bytes) => bytes,
            Err(error) => return warn!(%error, "cannot encode provider reply"),
        },
        Ok(bytes) => bytes,
        Err(error) => return warn!(%error, "cannot encode provider reply"),
    };
    if let Err(error) = bus.publish(Message::new(subject, Bytes::from(bytes))).await {
        warn!(%error, "cannot publish provider reply");
    }
}

/// What a router hears of an answer too long for one bus message: a failure that is not the provider's and that
/// another provider would most likely repeat, so the query ends with a message naming both sizes.
fn too_large(answer: ProviderAnswer, size: usize, bus: &dyn Bus) -> ProviderAnswer {
    let max = bus.max_payload();
    warn!(size, max, "a provider's answer exceeds the bus's message limit");
    let (latency_us, chunks) = match &answer.reply {
        ProviderReply::Completed { latency_us, chunks, .. } => (*latency_us, *chunks),
        ProviderReply::Failed(failure) => (failure.latency_us, failure.chunks),
        ProviderReply::Refused { .. } => (0, 0),
    };
    let message = format!(
        "the answer ({size} bytes) exceeds the bus's message limit ({max} bytes): raise the NATS server's max_payload"
    );
    let class = FailureClass::Fatal { auth: false }.into();
    let reply = ProviderReply::Failed(WireFailure { class, status: None, message, latency_us, chunks });
    ProviderAnswer { node: answer.node, reply }
}

/// Gives a call's in-flight slot back and reports its outcome, however its task ends.
///
/// The task calls [`CallGuard::finish`] with the real outcome. When the task is aborted (its router cancelled it)
/// or panics, `Drop` reports a cancellation instead, which releases a half-open permit without charging the
/// provider, and after a panic also answers the router, so it falls back at once instead of waiting.
struct CallGuard {
    actor: ActorRef<ProviderMsg>,
    counters: Arc<ProviderCounters>,
    telemetry: Arc<Telemetry>,
    in_flight: Arc<AtomicUsize>,
    call_id: Uuid,
    admission: Option<Admission>,
    started: Instant,
    /// Where to send a failure if the task panics before it has replied, and this node's name.
    panic_reply: Option<(Arc<dyn Bus>, ReplyTo, String)>,
    answered: Arc<AnsweredSeries>,
}

impl CallGuard {
    /// Counts the call's end in this provider's counters and metrics (a refusal was counted at admission).
    fn count(&self, reply: &ProviderReply) {
        match reply {
            ProviderReply::Completed { completion, .. } => {
                let latency = self.started.elapsed();
                let (usage, cost_usd) = (&completion.usage, completion.cost_usd);
                self.counters.record(CallEnd::Answered { latency, usage, cost_usd });
                let series = &self.answered;
                series.calls.inc();
                series.seconds.observe(latency.as_secs_f64());
                series.input_tokens.inc_by(usage.input_tokens);
                series.output_tokens.inc_by(usage.output_tokens);
            }
            ProviderReply::Failed(failure) => {
                let class: FailureClass = failure.class.into();
                if class != FailureClass::Cancelled {
                    self.counters.record(CallEnd::Failed { class });
                    let labels = CallLabels { provider: self.telemetry_provider(), outcome: class.as_str().to_owned() };
                    self.telemetry.metrics.provider_calls.get_or_create(&labels).inc();
                }
            }
            ProviderReply::Refused { .. } => {}
        }
    }

    fn telemetry_provider(&self) -> String {
        self.counters.provider().to_owned()
    }

    fn finish(mut self, outcome: Outcome, error: Option<String>) {
        self.report(outcome, error);
    }

    fn report(&mut self, outcome: Outcome, error: Option<String>) {
        let Some(admission) = self.admission.take() else { return };
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        let latency = self.started.elapsed();
        // The actor may have been restarted meanwhile; the slot is given back above either way.
        let _ = self.actor.cast(ProviderMsg::Finished { call_id: self.call_id, admission, outcome, latency, error });
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if self.admission.is_none() {
            return;
        }
        let panicked = std::thread::panicking();
        let error = if panicked { "the call task panicked" } else { "the call was cancelled" };
        if panicked {
            warn!(call_id = %self.call_id, "provider call task panicked");
            if let Some((bus, reply_to, node)) = self.panic_reply.take() {
                let reply = ProviderReply::Failed(WireFailure {
                    class: FailureClass::Retryable.into(),
                    status: None,
                    message: error.into(),
                    latency_us: self.started.elapsed().as_micros() as u64,
                    chunks: 0,
                });
                tokio::spawn(async move { publish_reply(bus.as_ref(), reply_to, &node, reply).await });
            }
        }
        self.report(Outcome::Failure(FailureClass::Cancelled), Some(error.into()));
    }
}

/// Runs one call against the upstream provider, within what is left of the query's deadline.
async fn run_call(
    provider: &dyn LlmProvider,
    bus: &dyn Bus,
    call: ProviderCall,
    limits: StreamLimits,
) -> ProviderReply {
    let started = Instant::now();
    let budget = Duration::from_millis(call.budget_ms);
    let mut chunks = 0u64;
    let work = async {
        match &call.stream {
            // The client's own `timeout_ms` bounds a whole call; breaking it is the provider's (retryable) failure.
            None => provider.complete(&call.request).await,
            Some(target) => stream_to(provider, bus, &call, target, limits, &mut chunks).await,
        }
    };
    let result = match tokio::time::timeout(budget, work).await {
        Ok(result) => result,
        // The query's deadline passed: the caller gave up, which says nothing about the provider.
        Err(_) => Err(ProviderError {
            class: FailureClass::Cancelled,
            status: None,
            message: format!("the query's deadline ({} ms) passed", call.budget_ms),
            provider: provider.name().to_owned(),
        }),
    };
    let latency_us = started.elapsed().as_micros() as u64;
    match result {
        Ok(completion) => {
            debug!(provider = provider.name(), latency_us, "upstream call succeeded");
            ProviderReply::Completed { completion, latency_us, chunks }
        }
        Err(error) => {
            debug!(provider = provider.name(), class = error.class.as_str(), status = ?error.status, "upstream call failed");
            ProviderReply::Failed(WireFailure {
                class: error.class.into(),
                status: error.status,
                message: error.message,
                latency_us,
                chunks,
            })
        }
    }
}

/// The answer of a router granting a stream to the attempt that asked first.
pub const STREAM_GRANTED: &[u8] = b"granted";

/// Streams a completion, publishing each delta as a chunk frame to the client's reply subject.
///
/// When the target names a claim subject (the query may be hedged), the first chunk waits for the router's
/// grant: the attempt that asks first streams, any other gives up as cancelled, so two attempts never both write
/// to the client.
async fn stream_to(
    provider: &dyn LlmProvider,
    bus: &dyn Bus,
    call: &ProviderCall,
    target: &StreamTarget,
    limits: StreamLimits,
    chunks: &mut u64,
) -> Result<switchyard_protocol::Completion, ProviderError> {
    let failure = |class: FailureClass, message: String| ProviderError {
        class,
        status: None,
        message,
        provider: provider.name().to_owned(),
    };
    let first = async {
        let mut stream = provider.stream(&call.request).await?;
        let event = stream.next().await;
        Ok::<_, ProviderError>((stream, event))
    };
    let (mut stream, mut next) = match limits.first_token {
        Some(limit) => tokio::time::timeout(limit, first).await.map_err(|_| {
            failure(FailureClass::Retryable, format!("no first token within {} ms", limit.as_millis()))
        })??,
        None => first.await?,
    };
    loop {
        let Some(event) = next.take() else {
            return Err(failure(FailureClass::Retryable, "stream ended without a final event".into()));
        };
        match event? {
            StreamEvent::Delta(delta) => {
                if *chunks == 0
                    && let Some(claim) = &target.claim
                {
                    claim_stream(bus, claim, target.attempt)
                        .await
                        .map_err(|why| failure(FailureClass::Cancelled, why))?;
                }
                let frame = StreamFrame::Chunk { attempt: target.attempt, seq: *chunks, delta };
                let bytes = Json::encode(&frame).map_err(|e| failure(FailureClass::Retryable, e.to_string()))?;
                // A chunk the client cannot receive is lost to it whatever we do; keep consuming the stream so
                // the summary still reports usage and cost.
                if let Err(error) = bus.publish(Message::new(target.subject.clone(), Bytes::from(bytes))).await {
                    warn!(%error, "cannot publish stream chunk");
                }
                *chunks += 1;
            }
            StreamEvent::Done(completion) => return Ok(completion),
        }
        next = match limits.idle {
            Some(idle) => tokio::time::timeout(idle, stream.next()).await.map_err(|_| {
                failure(FailureClass::Retryable, format!("no chunk for {} ms in the stream", idle.as_millis()))
            })?,
            None => stream.next().await,
        };
    }
}

/// Asks the router whether this attempt may write the client's stream.
async fn claim_stream(bus: &dyn Bus, claim: &str, attempt: u32) -> Result<(), String> {
    let ask = Message::new(claim.to_owned(), Bytes::from(attempt.to_string()));
    match bus.request(ask, CLAIM_WAIT).await {
        Ok(reply) if reply.payload.as_ref() == STREAM_GRANTED => Ok(()),
        Ok(_) => Err("another attempt of the query is streaming".into()),
        Err(error) => Err(format!("the router did not grant the stream: {error}")),
    }
}

/// How long a streaming attempt waits for its router's grant; the router answers from its own task at once.
const CLAIM_WAIT: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use switchyard_bus::MemoryBus;
    use switchyard_protocol::ChatMessage;
    use switchyard_protocol::client::QueryRequest;
    use switchyard_providers::CompletionStream;

    /// A provider whose calls panic, or never end.
    struct Broken {
        panics: bool,
    }

    #[async_trait::async_trait]
    impl LlmProvider for Broken {
        fn name(&self) -> &str {
            "broken"
        }

        fn model(&self) -> &str {
            "broken-model"
        }

        async fn complete(&self, _: &switchyard_protocol::ChatRequest) -> Result<Completion, ProviderError> {
            if self.panics {
                panic!("a bug in the provider client");
            }
            std::future::pending().await
        }

        async fn stream(&self, _: &switchyard_protocol::ChatRequest) -> Result<CompletionStream, ProviderError> {
            std::future::pending().await
        }
    }

    use switchyard_protocol::Completion;

    async fn start(panics: bool) -> (ActorRef<ProviderMsg>, Arc<MemoryBus>, Arc<AtomicUsize>) {
        let bus = Arc::new(MemoryBus::new());
        let in_flight = Arc::new(AtomicUsize::new(0));
        let args = ProviderArgs {
            node: "node-t".into(),
            provider: Arc::new(Broken { panics }),
            bus: bus.clone(),
            max_in_flight: 4,
            in_flight: in_flight.clone(),
            breaker: BreakerConfig::default(),
            limits: StreamLimits::default(),
            cluster: None,
            counters: Arc::new(ProviderCounters::new("p")),
            telemetry: Arc::default(),
        };
        let (actor, _) = Actor::spawn(None, ProviderActor, args).await.unwrap();
        (actor, bus, in_flight)
    }

    fn call() -> ProviderCall {
        ProviderCall {
            call_id: Uuid::new_v4(),
            request: QueryRequest::new(vec![ChatMessage::user("hi")]).to_chat_request(),
            budget_ms: 60_000,
            stream: None,
            bypass_breaker: false,
            keepalive: None,
        }
    }

    async fn health(actor: &ActorRef<ProviderMsg>) -> ProviderHealth {
        ractor::call!(actor, ProviderMsg::Health).unwrap()
    }

    #[tokio::test]
    async fn a_panicking_call_gives_its_slot_back_and_answers_its_router() {
        let (actor, bus, in_flight) = start(true).await;
        let mut replies = bus.subscribe("router.inbox").await.unwrap();
        actor
            .cast(ProviderMsg::Call {
                call: call(),
                reply_to: ReplyTo::Subject("router.inbox".into()),
                trace: Vec::new(),
            })
            .unwrap();
        let reply = replies.next().await.unwrap();
        match Bincode::decode::<ProviderAnswer>(&reply.payload).unwrap().reply {
            ProviderReply::Failed(failure) => {
                assert_eq!(failure.class, FailureClass::Retryable.into());
                assert!(failure.message.contains("panicked"), "{}", failure.message);
            }
            other => panic!("expected a failure, got {other:?}"),
        }
        // The guard's report was cast before the reply; wait for the actor to handle it, through its mailbox.
        while health(&actor).await.in_flight > 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(in_flight.load(Ordering::Acquire), 0);
        let health = health(&actor).await;
        assert_eq!(
            (health.failures, health.breaker),
            (0, Some(BreakerState::Closed)),
            "a bug of ours is not the provider's"
        );
        actor.stop(None);
    }

    #[tokio::test]
    async fn a_cancelled_call_gives_its_slot_back_without_charging_the_provider() {
        let (actor, _bus, in_flight) = start(false).await;
        let call = call();
        let call_id = call.call_id;
        actor.cast(ProviderMsg::Call { call, reply_to: ReplyTo::Subject("nobody".into()), trace: Vec::new() }).unwrap();
        assert_eq!(health(&actor).await.in_flight, 1);
        actor.cast(ProviderMsg::Cancel { call_id }).unwrap();
        while health(&actor).await.in_flight > 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(in_flight.load(Ordering::Acquire), 0);
        let health = health(&actor).await;
        assert_eq!((health.calls, health.successes, health.failures), (1, 0, 0));
        actor.stop(None);
    }

    #[tokio::test]
    async fn a_restarted_actor_still_counts_its_predecessors_calls() {
        let (first, bus, in_flight) = start(false).await;
        for _ in 0..4 {
            first
                .cast(ProviderMsg::Call {
                    call: call(),
                    reply_to: ReplyTo::Subject("nobody".into()),
                    trace: Vec::new(),
                })
                .unwrap();
        }
        assert_eq!(health(&first).await.in_flight, 4);
        first.stop(None);
        // The successor shares the count: its in-flight limit (4) is still reached by the calls that run on.
        let args = ProviderArgs {
            node: "node-t".into(),
            provider: Arc::new(Broken { panics: false }),
            bus: bus.clone(),
            max_in_flight: 4,
            in_flight: in_flight.clone(),
            breaker: BreakerConfig::default(),
            limits: StreamLimits::default(),
            cluster: None,
            counters: Arc::new(ProviderCounters::new("p")),
            telemetry: Arc::default(),
        };
        let (second, _) = Actor::spawn(None, ProviderActor, args).await.unwrap();
        let mut replies = bus.subscribe("router.inbox").await.unwrap();
        second
            .cast(ProviderMsg::Call {
                call: call(),
                reply_to: ReplyTo::Subject("router.inbox".into()),
                trace: Vec::new(),
            })
            .unwrap();
        let answer = Bincode::decode::<ProviderAnswer>(&replies.next().await.unwrap().payload).unwrap();
        assert_eq!(answer.reply, ProviderReply::Refused { reason: Refusal::Overloaded });
        assert_eq!(answer.node, "node-t");
        second.stop(None);
    }
}
