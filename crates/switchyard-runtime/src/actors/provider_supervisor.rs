//! `ProviderSupervisor`: starts one `ProviderActor` per provider and restarts those that crash.
//!
//! ractor's default supervisor stops when a child dies, so the policy is written here, as OTP does it: a crashed
//! child is restarted after a growing, jittered delay, at most `max_restarts` times per `period`; past that the
//! supervisor gives up on that provider (it is reported `failed`) and keeps the others running. While a child is
//! down its directory entry is empty, so the bus bridge refuses its calls at once (`restarting`) and routers fall
//! back instead of waiting.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tracing::{error, info, warn};

use switchyard_bus::Bus;
use switchyard_core::{BreakerConfig, RestartDecision, RestartPolicy, RestartTracker};
use switchyard_protocol::admin::ProviderHealth;
use switchyard_providers::LlmProvider;

use super::provider::{ClusterLink, ProviderActor, ProviderArgs, ProviderMsg, StreamLimits};
use crate::telemetry::{ActorLabels, ProviderCounters, Telemetry, unix_ms};

/// Which actor currently serves each provider on this node; shared with the bus bridge.
#[derive(Clone, Default)]
pub struct ProviderDirectory(Arc<RwLock<HashMap<String, ActorRef<ProviderMsg>>>>);

impl ProviderDirectory {
    pub fn get(&self, provider: &str) -> Option<ActorRef<ProviderMsg>> {
        self.0.read().ok()?.get(provider).cloned()
    }

    fn set(&self, provider: &str, actor: Option<ActorRef<ProviderMsg>>) {
        if let Ok(mut map) = self.0.write() {
            match actor {
                Some(actor) => map.insert(provider.to_owned(), actor),
                None => map.remove(provider),
            };
        }
    }
}

/// Everything needed to (re)start one provider actor.
#[derive(Clone)]
pub struct ProviderSpec {
    pub provider: Arc<dyn LlmProvider>,
    pub max_in_flight: usize,
    /// The provider's calls in flight on this node, across restarts of its actor.
    pub in_flight: Arc<AtomicUsize>,
    pub limits: StreamLimits,
    pub breaker: BreakerConfig,
    pub cluster: Option<ClusterLink>,
    /// The provider's counters on this node, across restarts of its actor.
    pub counters: Arc<ProviderCounters>,
}

pub struct ProviderSupervisor;

pub struct ProviderSupervisorArgs {
    pub node: String,
    pub specs: Vec<ProviderSpec>,
    pub bus: Arc<dyn Bus>,
    pub policy: RestartPolicy,
    pub directory: ProviderDirectory,
    pub telemetry: Arc<Telemetry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChildStatus {
    Running,
    Restarting,
    Failed,
}

struct Child {
    spec: ProviderSpec,
    actor: Option<ActorRef<ProviderMsg>>,
    tracker: RestartTracker,
    status: ChildStatus,
    /// Why the actor last died, and when (Unix ms).
    last_crash: Option<(String, u64)>,
}

pub struct ProviderSupervisorState {
    node: String,
    children: HashMap<String, Child>,
    by_actor: HashMap<ActorId, String>,
    bus: Arc<dyn Bus>,
    policy: RestartPolicy,
    directory: ProviderDirectory,
    telemetry: Arc<Telemetry>,
}

pub enum ProviderSupervisorMsg {
    /// The restart delay of a crashed child has passed.
    Restart(String),
    Health(RpcReplyPort<Vec<ProviderHealth>>),
    /// Crash a child on purpose (operators, supervision tests); answers whether the provider is hosted here.
    Crash(String, RpcReplyPort<bool>),
}

impl ProviderSupervisorState {
    async fn start_child(&mut self, myself: &ActorRef<ProviderSupervisorMsg>, name: &str) {
        let Some(child) = self.children.get_mut(name) else { return };
        let args = ProviderArgs {
            node: self.node.clone(),
            provider: child.spec.provider.clone(),
            bus: self.bus.clone(),
            max_in_flight: child.spec.max_in_flight,
            in_flight: child.spec.in_flight.clone(),
            limits: child.spec.limits,
            breaker: child.spec.breaker,
            cluster: child.spec.cluster.clone(),
            counters: child.spec.counters.clone(),
            telemetry: self.telemetry.clone(),
        };
        match Actor::spawn_linked(None, ProviderActor, args, myself.get_cell()).await {
            Ok((actor, _)) => {
                self.by_actor.insert(actor.get_id(), name.to_owned());
                self.directory.set(name, Some(actor.clone()));
                child.actor = Some(actor);
                child.status = ChildStatus::Running;
            }
            Err(err) => {
                error!(provider = name, %err, "cannot start provider actor");
                child.status = ChildStatus::Failed;
            }
        }
    }
}

impl Actor for ProviderSupervisor {
    type Msg = ProviderSupervisorMsg;
    type State = ProviderSupervisorState;
    type Arguments = ProviderSupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ProviderSupervisorMsg>,
        args: ProviderSupervisorArgs,
    ) -> Result<ProviderSupervisorState, ActorProcessingErr> {
        let mut state = ProviderSupervisorState {
            node: args.node,
            children: HashMap::new(),
            by_actor: HashMap::new(),
            bus: args.bus,
            telemetry: args.telemetry,
            policy: args.policy,
            directory: args.directory,
        };
        for spec in args.specs {
            let name = spec.provider.name().to_owned();
            state.children.insert(
                name,
                Child {
                    spec,
                    actor: None,
                    tracker: RestartTracker::default(),
                    status: ChildStatus::Restarting,
                    last_crash: None,
                },
            );
        }
        let names: Vec<String> = state.children.keys().cloned().collect();
        for name in names {
            state.start_child(&myself, &name).await;
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<ProviderSupervisorMsg>,
        message: ProviderSupervisorMsg,
        state: &mut ProviderSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ProviderSupervisorMsg::Restart(name) => {
                info!(provider = %name, "restarting provider actor");
                state.start_child(&myself, &name).await;
            }
            ProviderSupervisorMsg::Crash(name, port) => {
                let actor = state.children.get(&name).and_then(|c| c.actor.clone());
                if let Some(actor) = &actor {
                    let _ = actor.cast(ProviderMsg::Crash);
                }
                let _ = port.send(actor.is_some());
            }
            ProviderSupervisorMsg::Health(port) => {
                let children: Vec<_> = state
                    .children
                    .values()
                    .map(|c| {
                        let crash = c.last_crash.clone();
                        (
                            c.spec.provider.clone(),
                            c.actor.clone(),
                            c.status,
                            c.tracker.total(),
                            crash,
                            c.spec.counters.clone(),
                        )
                    })
                    .collect();
                // Asking the children is a round trip per child: do it off the supervisor's mailbox.
                tokio::spawn(async move {
                    let mut out = Vec::with_capacity(children.len());
                    for (provider, actor, status, restarts, crash, counters) in children {
                        let live = match (&actor, status) {
                            (Some(actor), ChildStatus::Running) => {
                                actor.call(ProviderMsg::Health, Some(Duration::from_millis(500))).await.ok()
                            }
                            _ => None,
                        };
                        let mut health = match live {
                            Some(ractor::rpc::CallResult::Success(h)) => h,
                            _ => ProviderHealth {
                                name: provider.name().to_owned(),
                                model: provider.model().to_owned(),
                                status: String::new(),
                                restarts: 0,
                                in_flight: 0,
                                calls: counters.calls(),
                                successes: counters.successes(),
                                failures: counters.failures(),
                                refused: counters.refusals(),
                                ewma_latency_ms: 0.0,
                                last_error: None,
                                last_error_at_ms: None,
                                last_crash: None,
                                last_crash_at_ms: None,
                                breaker: None,
                                breaker_epoch: 0,
                                failure_rate: None,
                                misconfigured: false,
                                cluster_breaker: None,
                                cluster_epoch: 0,
                                cluster_open_remaining_ms: None,
                            },
                        };
                        health.status = match status {
                            ChildStatus::Running => "running",
                            ChildStatus::Restarting => "restarting",
                            ChildStatus::Failed => "failed",
                        }
                        .into();
                        health.restarts = restarts;
                        (health.last_crash, health.last_crash_at_ms) =
                            crash.map_or((None, None), |(e, at)| (Some(e), Some(at)));
                        out.push(health);
                    }
                    out.sort_by(|a, b| a.name.cmp(&b.name));
                    let _ = port.send(out);
                });
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<ProviderSupervisorMsg>,
        event: SupervisionEvent,
        state: &mut ProviderSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, reason) = match event {
            SupervisionEvent::ActorFailed(cell, err) => (cell, err.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.unwrap_or_else(|| "stopped".to_owned()))
            }
            _ => return Ok(()),
        };
        let Some(name) = state.by_actor.remove(&cell.get_id()) else { return Ok(()) };
        state.directory.set(&name, None);
        let Some(child) = state.children.get_mut(&name) else { return Ok(()) };
        child.actor = None;
        child.last_crash = Some((reason.clone(), unix_ms()));
        let actor = ActorLabels { actor: format!("provider:{name}") };
        state.telemetry.metrics.actor_restarts.get_or_create(&actor).inc();
        match child.tracker.on_death(&state.policy, Instant::now(), rand::random::<f64>()) {
            RestartDecision::RestartAfter(delay) => {
                warn!(provider = %name, reason = %reason, delay_ms = delay.as_millis() as u64, "provider actor died");
                child.status = ChildStatus::Restarting;
                myself.send_after(delay, move || ProviderSupervisorMsg::Restart(name));
            }
            RestartDecision::GiveUp => {
                error!(provider = %name, reason = %reason, "provider actor died too often, giving up");
                child.status = ChildStatus::Failed;
            }
        }
        Ok(())
    }
}
