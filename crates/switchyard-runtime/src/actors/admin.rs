//! `AdminActor`: answers the admin topic from health snapshots.
//!
//! `switchyard.v1.admin.health` is answered by every node (a client gathers the replies);
//! `switchyard.v1.admin.routers` by every router node (its quality routers' decisions, strong share, drift) and
//! `switchyard.v1.admin.routers.reload` by every router node, which reloads its routers from its config file;
//! `switchyard.v1.admin.node.<node>.health` only by the named node; `switchyard.v1.admin.cascades` by every
//! cascade coordinator (escalation rates and health, costs, latency tails of its cascades); `switchyard.v1.admin.provider.<p>.crash`
//! by every node hosting `p`, which crashes that provider actor on purpose so supervision can be exercised.
//! Snapshots are gathered in a task, so a slow child never blocks the admin mailbox.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::Serialize;
use tracing::warn;

use switchyard_bus::{Bus, Message};
use switchyard_protocol::admin::{AdminAck, NodeHealth};
use switchyard_protocol::subjects::Subjects;
use switchyard_protocol::{Codec, Json};

use super::provider_supervisor::ProviderSupervisorMsg;
use super::router::RouterMsg;
use crate::cascade::CascadeEngine;
use crate::quality::{QualityRouting, ReloadOutcome};

const ASK_TIMEOUT: Duration = Duration::from_millis(1000);

pub struct AdminActor;

#[derive(Clone)]
pub struct AdminArgs {
    pub node: String,
    pub roles: Vec<String>,
    pub bus: Arc<dyn Bus>,
    pub subjects: Subjects,
    pub router: Option<ActorRef<RouterMsg>>,
    pub providers: Option<ActorRef<ProviderSupervisorMsg>>,
    pub draining: Arc<AtomicBool>,
    pub degraded: Arc<AtomicBool>,
    /// The cascades this node coordinates, read for `admin.cascades`.
    pub cascades: Option<Arc<CascadeEngine>>,
    /// The quality routers of a router node, read for `admin.routers` and reloaded by `admin.routers.reload`.
    pub quality: Option<Arc<QualityRouting>>,
}

pub struct AdminState {
    args: AdminArgs,
    started: Instant,
}

pub enum AdminMsg {
    Request(Message),
}

impl Actor for AdminActor {
    type Msg = AdminMsg;
    type State = AdminState;
    type Arguments = AdminArgs;

    async fn pre_start(&self, _: ActorRef<AdminMsg>, args: AdminArgs) -> Result<AdminState, ActorProcessingErr> {
        Ok(AdminState { args, started: Instant::now() })
    }

    async fn handle(
        &self,
        _: ActorRef<AdminMsg>,
        message: AdminMsg,
        state: &mut AdminState,
    ) -> Result<(), ActorProcessingErr> {
        let AdminMsg::Request(message) = message;
        let Some(reply_to) = message.reply.clone() else { return Ok(()) };
        let args = state.args.clone();
        let started = state.started;
        let subject = message.subject;
        tokio::spawn(async move {
            let payload = if subject == args.subjects.admin_health()
                || subject == args.subjects.admin_node(&args.node, "health")
            {
                encode(&health(&args, started).await)
            } else if subject == args.subjects.admin_cascades() {
                // Only coordinators answer: the client gathers every node's view.
                let Some(engine) = &args.cascades else { return };
                let statuses: Vec<_> =
                    engine.names().iter().filter_map(|n| engine.units.get(n)).map(|u| u.status(&args.node)).collect();
                encode(&statuses)
            } else if subject == args.subjects.admin_routers() {
                // Only router nodes answer.
                let Some(quality) = &args.quality else { return };
                encode(&quality.status(&args.node))
            } else if subject == args.subjects.admin_routers_reload() {
                let Some(quality) = &args.quality else { return };
                let outcome = match quality.reload() {
                    Ok(generation) => {
                        ReloadOutcome { node: args.node.clone(), ok: true, generation, message: "reloaded".into() }
                    }
                    Err(error) => {
                        warn!(%error, "router reload refused; the routers in use stay");
                        let generation = quality.status(&args.node).first().map_or(0, |s| s.generation);
                        ReloadOutcome { node: args.node.clone(), ok: false, generation, message: error.to_string() }
                    }
                };
                encode(&outcome)
            } else if let Some((provider, command)) = args.subjects.parse_admin_provider(&subject) {
                match (command, &args.providers) {
                    ("crash", Some(supervisor)) => {
                        let hosted = matches!(
                            supervisor
                                .call(|port| ProviderSupervisorMsg::Crash(provider.to_owned(), port), Some(ASK_TIMEOUT))
                                .await,
                            Ok(CallResult::Success(true))
                        );
                        if !hosted {
                            return;
                        }
                        encode(&AdminAck {
                            node: args.node.clone(),
                            ok: true,
                            message: format!("crashed provider actor {provider}"),
                        })
                    }
                    _ => return,
                }
            } else {
                // Commands for other nodes, or unknown ones: not ours to answer.
                return;
            };
            if let Err(error) = args.bus.publish(Message::new(reply_to, payload)).await {
                warn!(%error, "cannot publish admin reply");
            }
        });
        Ok(())
    }
}

fn encode<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(Json::encode(value).unwrap_or_default())
}

/// Assembles the node's health from its actors' snapshots.
pub async fn health(args: &AdminArgs, started: Instant) -> NodeHealth {
    let router = match &args.router {
        Some(router) => match router.call(RouterMsg::Health, Some(ASK_TIMEOUT)).await {
            Ok(CallResult::Success(health)) => Some(health),
            _ => None,
        },
        None => None,
    };
    let providers = match &args.providers {
        Some(supervisor) => match supervisor.call(ProviderSupervisorMsg::Health, Some(ASK_TIMEOUT)).await {
            Ok(CallResult::Success(health)) => health,
            _ => Vec::new(),
        },
        None => Vec::new(),
    };
    NodeHealth {
        node: args.node.clone(),
        roles: args.roles.clone(),
        uptime_ms: started.elapsed().as_millis() as u64,
        draining: args.draining.load(Ordering::Relaxed),
        degraded: args.degraded.load(Ordering::Relaxed),
        router,
        providers,
    }
}
