//! `NodeSupervisor`: the root of a node's actor tree, and the owner of its shutdown.
//!
//! It starts the provider supervisor, the router, the admin actor and, last, the bus bridge (so no message
//! arrives before its actor exists). Provider actors are restarted by their own supervisor; the other children
//! hold no state worth restarting in place, so a failure of one of them stops the node, and the process exits
//! non-zero for its service manager to restart (OTP's escalation).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tracing::error;

use switchyard_bus::Bus;
use switchyard_core::RestartPolicy;
use switchyard_protocol::subjects::Subjects;
use switchyard_state::{BreakerStore, TripPolicy};

use super::provider::ClusterLink;
use super::state_sync::{ClusterGates, StateSync, StateSyncArgs, SyncSettings};

use super::admin::AdminBreakers;
use super::admin::{AdminActor, AdminArgs};
use super::bridge::{BridgeArgs, BridgeMsg, BusBridge};
use super::cascade::{CascadeCoordinator, CoordinatorArgs, CoordinatorMsg};
use super::provider_supervisor::{
    ProviderDirectory, ProviderSpec, ProviderSupervisor, ProviderSupervisorArgs, ProviderSupervisorMsg,
};
use super::router::{Gate, Intake, RouterActor, RouterArgs, RouterMsg, RouterSettings};
use crate::abandon::Abandons;
use crate::cascade::CascadeEngine;
use crate::idempotent::Idempotency;
use crate::quality::QualityRouting;
use crate::routing::Routing;
use crate::telemetry::Telemetry;
use tokio::sync::Notify;

pub struct NodeSupervisor;

pub struct NodeArgs {
    pub node: String,
    pub roles: Vec<String>,
    pub bus: Arc<dyn Bus>,
    pub subjects: Subjects,
    pub specs: Option<Vec<ProviderSpec>>,
    pub routing: Option<Arc<Routing>>,
    /// On a router node: the quality routers and ensembles its routes name.
    pub quality: Option<Arc<QualityRouting>>,
    pub restart_policy: RestartPolicy,
    pub max_payload_bytes: usize,
    pub router_settings: RouterSettings,
    /// Bounds the queries the node holds, shared by the bridge's intake and the router.
    pub gate: Arc<Gate>,
    pub draining: Arc<AtomicBool>,
    pub idempotency: Option<Idempotency>,
    pub breakers: Option<ClusterBreakers>,
    pub degraded: Arc<AtomicBool>,
    /// On a node with the cascade role: what its coordinator runs.
    pub cascade: Option<CascadeSetup>,
    pub telemetry: Arc<Telemetry>,
    /// Notified when an operator asks the node to drain.
    pub drain: Arc<Notify>,
    /// Whether the router calls this node's provider actors directly (`node.local_calls`).
    pub local_calls: bool,
}

/// What a cascade coordinator needs: the cascades, the routing its stages are called through, the store its
/// escalation counters are shared in, and the heartbeat period of its calls.
pub struct CascadeSetup {
    pub engine: Arc<CascadeEngine>,
    pub routing: Arc<Routing>,
    pub store: Arc<dyn BreakerStore>,
    pub keepalive: Option<std::time::Duration>,
}

/// Cluster-wide breakers: the shared store, each provider's trip policy, the sync timings.
pub struct ClusterBreakers {
    pub store: Arc<dyn BreakerStore>,
    pub policies: HashMap<String, TripPolicy>,
    pub settings: SyncSettings,
}

/// The node's children, for the node handle and the admin actor.
#[derive(Clone)]
pub struct NodeChildren {
    pub router: Option<ActorRef<RouterMsg>>,
    /// The router's admission half, for queries handed over in process (`crate::local`).
    pub intake: Option<Arc<Intake>>,
    pub providers: Option<ActorRef<ProviderSupervisorMsg>>,
    pub bridge: ActorRef<BridgeMsg>,
    pub admin: AdminArgs,
    pub coordinator: Option<ActorRef<CoordinatorMsg>>,
}

pub struct NodeState {
    children: NodeChildren,
}

pub enum NodeMsg {
    Children(RpcReplyPort<NodeChildren>),
}

impl Actor for NodeSupervisor {
    type Msg = NodeMsg;
    type State = NodeState;
    type Arguments = NodeArgs;

    async fn pre_start(&self, myself: ActorRef<NodeMsg>, args: NodeArgs) -> Result<NodeState, ActorProcessingErr> {
        let directory = ProviderDirectory::default();
        let mut hosted = Vec::new();
        let mut admin_breakers = None;
        let mut others: Vec<(String, ractor::ActorCell)> = vec![("node".into(), myself.get_cell())];
        let counters = args.specs.iter().flatten().map(|s| s.counters.clone()).collect();
        let providers = match args.specs {
            Some(mut specs) => {
                if let Some(ClusterBreakers { store, policies, settings }) = args.breakers {
                    let gates = ClusterGates::new(specs.iter().map(|s| s.provider.name()));
                    if let Some(routing) = &args.routing {
                        routing.attach_gates(gates.clone());
                    }
                    let sync_args = StateSyncArgs {
                        node: args.node.clone(),
                        store: store.clone(),
                        telemetry: args.telemetry.clone(),
                        bus: args.bus.clone(),
                        subjects: args.subjects.clone(),
                        directory: directory.clone(),
                        gates: gates.clone(),
                        policies,
                        settings,
                        degraded: args.degraded.clone(),
                    };
                    let (sync, _) = Actor::spawn_linked(None, StateSync, sync_args, myself.get_cell()).await?;
                    others.push(("state_sync".into(), sync.get_cell()));
                    admin_breakers = Some(AdminBreakers { store, gates: gates.clone(), sync: sync.clone() });
                    for spec in &mut specs {
                        spec.cluster =
                            gates.get(spec.provider.name()).map(|gate| ClusterLink { gate, sync: sync.clone() });
                    }
                }
                hosted = specs.iter().map(|s| s.provider.name().to_owned()).collect();
                let sup_args = ProviderSupervisorArgs {
                    node: args.node.clone(),
                    specs,
                    bus: args.bus.clone(),
                    policy: args.restart_policy,
                    directory: directory.clone(),
                    telemetry: args.telemetry.clone(),
                };
                let supervisor = Actor::spawn_linked(None, ProviderSupervisor, sup_args, myself.get_cell()).await?.0;
                others.push(("providers".into(), supervisor.get_cell()));
                Some(supervisor)
            }
            None => None,
        };
        let routing_for_admin = args.routing.clone();
        let router = match (args.routing, &args.quality) {
            (Some(routing), Some(quality)) => {
                let abandons = Arc::new(Abandons::default());
                let runner = Arc::new(std::sync::OnceLock::new());
                let router_args = RouterArgs {
                    node: args.node.clone(),
                    bus: args.bus.clone(),
                    subjects: args.subjects.clone(),
                    routing: routing.clone(),
                    quality: quality.clone(),
                    settings: args.router_settings.clone(),
                    gate: args.gate.clone(),
                    idempotency: args.idempotency.clone(),
                    local: (args.local_calls && providers.is_some()).then(|| directory.clone()),
                    abandons: abandons.clone(),
                    runner: runner.clone(),
                };
                let router = Actor::spawn_linked(None, RouterActor, router_args, myself.get_cell()).await?.0;
                others.push(("router".into(), router.get_cell()));
                let intake = Intake {
                    router: router.clone(),
                    routing,
                    bus: args.bus.clone(),
                    subjects: args.subjects.clone(),
                    max_payload_bytes: args.max_payload_bytes,
                    gate: args.gate.clone(),
                    abandons,
                    runner,
                };
                Some((router, Arc::new(intake)))
            }
            _ => None,
        };
        let (router, intake) = match router {
            Some((router, intake)) => (Some(router), Some(intake)),
            None => (None, None),
        };
        let cascades = match args.cascade {
            Some(CascadeSetup { engine, routing, store, keepalive }) => {
                let names = engine.names();
                let coordinator_args = CoordinatorArgs {
                    node: args.node.clone(),
                    bus: args.bus.clone(),
                    subjects: args.subjects.clone(),
                    engine: engine.clone(),
                    routing,
                    store,
                    keepalive,
                };
                let coordinator =
                    Actor::spawn_linked(None, CascadeCoordinator, coordinator_args, myself.get_cell()).await?.0;
                others.push(("cascade".into(), coordinator.get_cell()));
                Some((coordinator, names, engine))
            }
            None => None,
        };
        let breaker_commands = admin_breakers.is_some();
        let admin_args = AdminArgs {
            node: args.node.clone(),
            roles: args.roles,
            bus: args.bus.clone(),
            subjects: args.subjects.clone(),
            router: router.clone(),
            providers: providers.clone(),
            draining: args.draining,
            degraded: args.degraded,
            cascades: cascades.as_ref().map(|(_, _, engine)| engine.clone()),
            quality: args.quality.clone(),
            routing: routing_for_admin,
            counters,
            telemetry: args.telemetry.clone(),
            breakers: admin_breakers,
            drain: args.drain.clone(),
            others,
        };
        let (admin, _) = Actor::spawn_linked(None, AdminActor, admin_args.clone(), myself.get_cell()).await?;
        let bridge_args = BridgeArgs {
            node: args.node,
            bus: args.bus,
            subjects: args.subjects,
            intake: intake.clone(),
            providers: hosted,
            directory,
            admin,
            breaker_commands,
            cascades: cascades.as_ref().map(|(coordinator, names, _)| (coordinator.clone(), names.clone())),
        };
        let (bridge, _) = Actor::spawn_linked(None, BusBridge, bridge_args, myself.get_cell()).await?;
        Ok(NodeState {
            children: NodeChildren {
                router,
                intake,
                providers,
                bridge,
                admin: admin_args,
                coordinator: cascades.map(|(coordinator, _, _)| coordinator),
            },
        })
    }

    async fn handle(
        &self,
        _: ActorRef<NodeMsg>,
        message: NodeMsg,
        state: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            NodeMsg::Children(port) => {
                let _ = port.send(state.children.clone());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<NodeMsg>,
        event: SupervisionEvent,
        _: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(cell, err) = event {
            error!(actor = %cell.get_id(), %err, "a node actor failed, stopping the node");
            myself.stop(Some(format!("child failed: {err}")));
        }
        Ok(())
    }
}
