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

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tracing::{debug, info, warn};

use switchyard_bus::{Bus, Message};
use switchyard_core::{
    Breaker, BreakerConfig, BreakerState, CallOutcome, ClusterGate, ClusterPhase, FailureClass, GateDecision, Outcome,
    Permit,
};
use switchyard_protocol::admin::ProviderHealth;
use switchyard_protocol::client::StreamFrame;
use switchyard_protocol::internal::{ProviderCall, ProviderReply, Refusal, StreamTarget, WireFailure};
use switchyard_protocol::{Bincode, Codec, Json};
use switchyard_providers::{LlmProvider, ProviderError, StreamEvent};

use super::state_sync::StateSyncMsg;

pub struct ProviderActor;

pub struct ProviderArgs {
    pub provider: Arc<dyn LlmProvider>,
    pub bus: Arc<dyn Bus>,
    pub max_in_flight: usize,
    pub breaker: BreakerConfig,
    /// Streams only: how long the first token may take.
    pub first_token_timeout: Option<Duration>,
    /// The cluster's breaker for this provider and where outcomes go, when the node shares state.
    pub cluster: Option<ClusterLink>,
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

pub struct ProviderState {
    provider: Arc<dyn LlmProvider>,
    bus: Arc<dyn Bus>,
    max_in_flight: usize,
    first_token_timeout: Option<Duration>,
    in_flight: usize,
    breaker: Breaker,
    cluster: Option<ClusterLink>,
    stats: Stats,
}

#[derive(Default)]
struct Stats {
    calls: u64,
    successes: u64,
    failures: u64,
    refused: u64,
    last_error: Option<String>,
    ewma_latency_ms: f64,
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

pub enum ProviderMsg {
    /// A call from a router; the answer goes to `reply_to`.
    Call {
        call: ProviderCall,
        reply_to: String,
    },
    /// A call task ended; its admission comes back with its outcome.
    Finished {
        admission: Admission,
        outcome: Outcome,
        latency: Duration,
        error: Option<String>,
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
        Ok(ProviderState {
            provider: args.provider,
            bus: args.bus,
            max_in_flight: args.max_in_flight,
            first_token_timeout: args.first_token_timeout,
            in_flight: 0,
            breaker: Breaker::new(args.breaker)?,
            cluster: args.cluster,
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
            ProviderMsg::Call { call, reply_to } => {
                let admission = match state.admit(Instant::now(), call.bypass_breaker) {
                    Ok(admission) => admission,
                    Err(reason) => {
                        state.stats.refused += 1;
                        publish_reply(state.bus.as_ref(), reply_to, &ProviderReply::Refused { reason }).await;
                        return Ok(());
                    }
                };
                state.in_flight += 1;
                state.stats.calls += 1;
                let provider = state.provider.clone();
                let bus = state.bus.clone();
                let first_token = state.first_token_timeout;
                tokio::spawn(async move {
                    let started = Instant::now();
                    let reply = run_call(provider.as_ref(), bus.as_ref(), call, first_token).await;
                    let latency = started.elapsed();
                    publish_reply(bus.as_ref(), reply_to, &reply).await;
                    let (outcome, error) = match &reply {
                        ProviderReply::Failed(f) => (Outcome::Failure(f.class.into()), Some(f.message.clone())),
                        _ => (Outcome::Success, None),
                    };
                    // The actor may have been restarted meanwhile; then nobody needs the outcome.
                    let _ = myself.cast(ProviderMsg::Finished { admission, outcome, latency, error });
                });
            }
            ProviderMsg::Finished { admission, outcome, latency, error } => {
                state.in_flight = state.in_flight.saturating_sub(1);
                state.record(admission, outcome, latency);
                let ms = latency.as_secs_f64() * 1000.0;
                let stats = &mut state.stats;
                stats.ewma_latency_ms =
                    if stats.successes + stats.failures == 0 { ms } else { 0.8 * stats.ewma_latency_ms + 0.2 * ms };
                match outcome {
                    Outcome::Success => stats.successes += 1,
                    Outcome::Failure(_) => {
                        stats.failures += 1;
                        stats.last_error = error;
                    }
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
                let _ = port.send(ProviderHealth {
                    name: state.provider.name().to_owned(),
                    model: state.provider.model().to_owned(),
                    status: "running".into(),
                    restarts: 0,
                    in_flight: state.in_flight as u64,
                    calls: stats.calls,
                    successes: stats.successes,
                    failures: stats.failures,
                    refused: stats.refused,
                    ewma_latency_ms: stats.ewma_latency_ms,
                    last_error: stats.last_error.clone(),
                    breaker: breaker.state.as_str().to_owned(),
                    breaker_epoch: breaker.epoch,
                    failure_rate: breaker.failure_rate,
                    misconfigured: breaker.misconfigured,
                    cluster_breaker: cluster_phase.as_str().to_owned(),
                    cluster_epoch,
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
        if self.in_flight >= self.max_in_flight {
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
        self.breaker
            .try_acquire(now)
            .map(|permit| Admission::Local(permit, epoch))
            .map_err(|rejected| refuse(rejected.retry_after))
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
                    let (from, to) = (t.from.as_str(), t.to.as_str());
                    info!(provider, from, to, epoch = t.epoch, open_ms, reason = ?t.reason, "breaker transition");
                    local_trip = matches!(t.to, BreakerState::Open { .. });
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
async fn publish_reply(bus: &dyn Bus, reply_to: String, reply: &ProviderReply) {
    match Bincode::encode(reply) {
        Ok(bytes) => {
            if let Err(error) = bus.publish(Message::new(reply_to, Bytes::from(bytes))).await {
                warn!(%error, "cannot publish provider reply");
            }
        }
        Err(error) => warn!(%error, "cannot encode provider reply"),
    }
}

/// Runs one call against the upstream provider within the call's budget.
async fn run_call(
    provider: &dyn LlmProvider,
    bus: &dyn Bus,
    call: ProviderCall,
    first_token: Option<Duration>,
) -> ProviderReply {
    let started = Instant::now();
    let budget = Duration::from_millis(call.budget_ms);
    let mut chunks = 0u64;
    let work = async {
        match &call.stream {
            None => provider.complete(&call.request).await,
            Some(target) => stream_to(provider, bus, &call, target, first_token, &mut chunks).await,
        }
    };
    let result = match tokio::time::timeout(budget, work).await {
        Ok(result) => result,
        // The router's cap on an attempt is the provider's timeout; the client's own deadline is a cancellation.
        Err(_) if call.attempt_capped => Err(ProviderError {
            class: FailureClass::Retryable,
            status: None,
            message: format!("no answer within the attempt's {} ms", call.budget_ms),
            provider: provider.name().to_owned(),
        }),
        Err(_) => Err(ProviderError {
            class: FailureClass::Cancelled,
            status: None,
            message: format!("deadline of {} ms reached", call.budget_ms),
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

/// Streams a completion, publishing each delta as a chunk frame to the client's reply subject.
async fn stream_to(
    provider: &dyn LlmProvider,
    bus: &dyn Bus,
    call: &ProviderCall,
    target: &StreamTarget,
    first_token: Option<Duration>,
    chunks: &mut u64,
) -> Result<switchyard_protocol::Completion, ProviderError> {
    let failure = |message: String| ProviderError {
        class: FailureClass::Retryable,
        status: None,
        message,
        provider: provider.name().to_owned(),
    };
    let first = async {
        let mut stream = provider.stream(&call.request).await?;
        let event = stream.next().await;
        Ok::<_, ProviderError>((stream, event))
    };
    let (mut stream, mut next) = match first_token {
        Some(limit) => tokio::time::timeout(limit, first)
            .await
            .map_err(|_| failure(format!("no first token within {} ms", limit.as_millis())))??,
        None => first.await?,
    };
    while let Some(event) = next.take() {
        match event? {
            StreamEvent::Delta(delta) => {
                let frame = StreamFrame::Chunk { attempt: target.attempt, seq: *chunks, delta };
                let bytes = Json::encode(&frame).map_err(|e| failure(e.to_string()))?;
                // A chunk the client cannot receive is lost to it whatever we do; keep consuming the stream so
                // the summary still reports usage and cost.
                if let Err(error) = bus.publish(Message::new(target.subject.clone(), Bytes::from(bytes))).await {
                    warn!(%error, "cannot publish stream chunk");
                }
                *chunks += 1;
            }
            StreamEvent::Done(completion) => return Ok(completion),
        }
        next = stream.next().await;
    }
    Err(failure("stream ended without a final event".into()))
}
