//! `AdminActor`: answers the admin topic from snapshots, and carries out operators' commands.
//!
//! Every node answers the cluster-wide subjects (a client gathers the replies within a deadline):
//! - `switchyard.v1.admin.health`: the node's actor tree (status, restarts, last error and when, work held),
//!   roles, uptime, version, degraded flags, and per provider both its own breaker and its copy of the cluster's;
//! - `switchyard.v1.admin.breakers`: per provider what this node believes (own breaker, copy of the cluster's)
//!   next to the shared store's view (state, epoch, open-until, probe owner), for the client to mark disagreements;
//! - `switchyard.v1.admin.stats`: per provider throughput, latency quantiles, errors, rate limits, tokens, cost;
//!   per route retries, fallbacks and hedges;
//! - `switchyard.v1.admin.routers` (router nodes), `switchyard.v1.admin.cascades` (coordinators).
//!
//! Commands: `switchyard.v1.admin.node.<node>.{health,drain}` only for the named node (`drain`: stop taking
//! queries, finish those in flight, leave); `switchyard.v1.admin.breaker.<p>.{trip,disable,reset}` executed by
//! exactly one node that reads the shared store (a queue group), which changes the cluster breaker there and
//! announces it, so every node follows at once; `switchyard.v1.admin.provider.<p>.crash` by every node hosting
//! `p` (to exercise supervision); `switchyard.v1.admin.routers.reload`. Each command is acknowledged with its
//! result and logged with the sender the request names ([`AdminRequest`]). Snapshots are gathered in a task, so a
//! slow child never blocks the admin mailbox.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};
use serde::Serialize;
use tokio::sync::Notify;
use tracing::{info, warn};

use switchyard_bus::{Bus, Message};
use switchyard_core::BreakerState;
use switchyard_protocol::admin::{
    ActorHealth, AdminAck, AdminRequest, BreakerBelief, BreakerCommand, NodeBreakers, NodeHealth, NodeStats,
    ProviderHealth, StoreView,
};
use switchyard_protocol::subjects::Subjects;
use switchyard_protocol::{Codec, Json};
use switchyard_state::{BreakerStore, ClusterView};

use super::provider_supervisor::ProviderSupervisorMsg;
use super::router::RouterMsg;
use super::state_sync::{ClusterGates, StateSyncMsg};
use crate::cascade::CascadeEngine;
use crate::quality::{QualityRouting, ReloadOutcome};
use crate::routing::Routing;
use crate::service;
use crate::telemetry::{ProviderCounters, Telemetry};

const ASK_TIMEOUT: Duration = Duration::from_millis(1000);

/// The version nodes report.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub struct AdminActor;

/// The shared breaker state a node reads and changes for operators.
#[derive(Clone)]
pub struct AdminBreakers {
    pub store: Arc<dyn BreakerStore>,
    pub gates: ClusterGates,
    pub sync: ActorRef<StateSyncMsg>,
}

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
    /// The routes of a router node, for their counters.
    pub routing: Option<Arc<Routing>>,
    /// The hosted providers' counters.
    pub counters: Vec<Arc<ProviderCounters>>,
    pub telemetry: Arc<Telemetry>,
    /// The shared store, when the node keeps cluster breakers.
    pub breakers: Option<AdminBreakers>,
    /// Notified when an operator asks this node to drain; the node's owner then shuts it down gracefully.
    pub drain: Arc<Notify>,
    /// The other actors of the tree, for their status.
    pub others: Vec<(String, ActorCell)>,
}

pub struct AdminState {
    args: AdminArgs,
    started: Instant,
}

pub enum AdminMsg {
    /// A message on the admin wildcard (every node hears it).
    Request(Message),
    /// A breaker command from the queue group (this node alone executes it).
    Command(Message),
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
        let args = state.args.clone();
        let started = state.started;
        tokio::spawn(async move {
            let (message, command) = match message {
                AdminMsg::Request(m) => (m, false),
                AdminMsg::Command(m) => (m, true),
            };
            let Some(reply_to) = message.reply.clone() else { return };
            let answer =
                if command { breaker_command(&args, &message).await } else { answer(&args, started, &message).await };
            let Some(payload) = answer else { return };
            if let Err(error) = args.bus.publish(Message::new(reply_to, payload)).await {
                args.telemetry.metrics.nats_errors.inc();
                warn!(%error, "cannot publish admin reply");
            }
        });
        Ok(())
    }
}

fn encode<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(Json::encode(value).unwrap_or_default())
}

/// Who sent a command, as its body says.
fn sender(message: &Message) -> String {
    let request: AdminRequest = serde_json::from_slice(&message.payload).unwrap_or_default();
    request.sender.unwrap_or_else(|| "unnamed".into())
}

/// The answer to a message on the admin wildcard; `None` when it is not this node's to answer.
async fn answer(args: &AdminArgs, started: Instant, message: &Message) -> Option<Bytes> {
    let subject = message.subject.as_str();
    let s = &args.subjects;
    if let Some(verb) = service::parse(subject, args.subjects.namespace(), &args.node) {
        return Some(encode(&service::respond(verb, &instance(args, started))));
    }
    if subject == s.admin_health() || subject == s.admin_node(&args.node, "health") {
        return Some(encode(&health(args, started).await));
    }
    if subject == s.admin_breakers() {
        return Some(encode(&breakers(args).await));
    }
    if subject == s.admin_stats() {
        return Some(encode(&stats(args, started)));
    }
    if subject == s.admin_node(&args.node, "drain") {
        let sender = sender(message);
        info!(node = %args.node, %sender, "drain requested by an operator");
        args.draining.store(true, Ordering::Relaxed);
        args.drain.notify_one();
        let ack =
            AdminAck::new(&args.node, true, "draining: no new queries; leaving once those in flight are answered");
        return Some(encode(&ack));
    }
    if subject == s.admin_cascades() {
        // Only coordinators answer: the client gathers every node's view.
        let engine = args.cascades.as_ref()?;
        let statuses: Vec<_> =
            engine.names().iter().filter_map(|n| engine.units.get(n)).map(|u| u.status(&args.node)).collect();
        return Some(encode(&statuses));
    }
    if subject == s.admin_routers() {
        return Some(encode(&args.quality.as_ref()?.status(&args.node)));
    }
    if subject == s.admin_routers_reload() {
        let quality = args.quality.as_ref()?;
        let sender = sender(message);
        let outcome = match quality.reload() {
            Ok(generation) => {
                info!(%sender, generation, "routers reloaded by an operator");
                ReloadOutcome { node: args.node.clone(), ok: true, generation, message: "reloaded".into() }
            }
            Err(error) => {
                warn!(%sender, %error, "router reload refused; the routers in use stay");
                let generation = quality.status(&args.node).first().map_or(0, |s| s.generation);
                ReloadOutcome { node: args.node.clone(), ok: false, generation, message: error.to_string() }
            }
        };
        return Some(encode(&outcome));
    }
    if let Some((provider, "crash")) = s.parse_admin_provider(subject) {
        let supervisor = args.providers.as_ref()?;
        let asked = supervisor.call(|port| ProviderSupervisorMsg::Crash(provider.to_owned(), port), Some(ASK_TIMEOUT));
        if !matches!(asked.await, Ok(CallResult::Success(true))) {
            return None;
        }
        warn!(provider, sender = %sender(message), "provider actor crashed by an operator");
        return Some(encode(&AdminAck::new(&args.node, true, format!("crashed provider actor {provider}"))));
    }
    // Breaker commands come through the queue group; commands for other nodes, or unknown ones: not ours.
    None
}

/// This node as an instance of the NATS service: its endpoints and their counts.
fn instance(args: &AdminArgs, started: Instant) -> service::Instance {
    let s = &args.subjects;
    let mut endpoints = Vec::new();
    if let Some(routing) = &args.routing {
        let requests = routing.route_stats().iter().map(|r| r.queries).sum();
        endpoints.push(service::Endpoint {
            name: "query".into(),
            subject: s.query_wildcard(),
            queue_group: Some(s.router_queue()),
            requests,
            errors: 0,
        });
    }
    for counters in &args.counters {
        let p = counters.provider();
        endpoints.push(service::Endpoint {
            name: format!("provider-{p}"),
            subject: s.provider_call(p),
            queue_group: Some(s.provider_queue(p)),
            requests: counters.calls() + counters.refusals(),
            errors: counters.failures(),
        });
    }
    endpoints.push(service::Endpoint {
        name: "admin".into(),
        subject: s.admin_wildcard(),
        queue_group: None,
        requests: 0,
        errors: 0,
    });
    let since = std::time::SystemTime::now() - started.elapsed();
    service::Instance {
        name: args.subjects.namespace().to_owned(),
        id: args.node.clone(),
        version: VERSION.to_owned(),
        roles: args.roles.clone(),
        started: service::rfc3339(since),
        endpoints,
    }
}

/// Executes a breaker command against the shared store and announces the new state.
async fn breaker_command(args: &AdminArgs, message: &Message) -> Option<Bytes> {
    let (provider, command) = args.subjects.parse_admin_breaker(&message.subject)?;
    let sender = sender(message);
    let command: BreakerCommand = match command.parse() {
        Ok(command) => command,
        Err(reason) => return Some(encode(&AdminAck::new(&args.node, false, reason))),
    };
    let Some(breakers) = &args.breakers else {
        let reason = "this node keeps no cluster breakers (no shared store)";
        return Some(encode(&AdminAck::new(&args.node, false, reason)));
    };
    if breakers.gates.get(provider).is_none() {
        let reason = format!("unknown provider `{provider}`");
        return Some(encode(&AdminAck::new(&args.node, false, reason)));
    }
    let store = &breakers.store;
    let result = match command {
        BreakerCommand::Trip => store.force_open(provider).await,
        BreakerCommand::Disable => store.disable(provider).await,
        BreakerCommand::Reset => store.reset(provider).await,
    };
    let ack = match result {
        Ok(update) => {
            let view = update.view;
            info!(provider, command = command.as_str(), %sender, state = %view.state, epoch = view.epoch,
                "operator breaker command");
            let mut ack = AdminAck::new(&args.node, true, format!("{} {provider}", command.as_str()));
            (ack.state, ack.epoch) = (Some(view.state), Some(view.epoch));
            // Applied here and announced to every node.
            let _ = breakers.sync.cast(StateSyncMsg::View { view, announce: true });
            ack
        }
        Err(error) => {
            args.telemetry.metrics.redis_errors.inc();
            warn!(provider, command = command.as_str(), %sender, %error, "operator breaker command failed");
            AdminAck::new(&args.node, false, format!("the shared store refused: {error}"))
        }
    };
    Some(encode(&ack))
}

/// What this node believes of each provider's breakers, next to the store's view.
async fn breakers(args: &AdminArgs) -> NodeBreakers {
    let hosted = provider_health(args).await;
    let mut out: Vec<BreakerBelief> = hosted
        .iter()
        .map(|p| BreakerBelief {
            provider: p.name.clone(),
            local: p.breaker,
            cluster: p.cluster_breaker.unwrap_or(BreakerState::Closed),
            cluster_epoch: p.cluster_epoch,
            store: None,
        })
        .collect();
    if let Some(breakers) = &args.breakers {
        let names: Vec<&str> = out.iter().map(|b| b.provider.as_str()).collect();
        if let Ok(views) = breakers.store.get_many(&names).await {
            for (belief, view) in out.iter_mut().zip(views) {
                belief.store = Some(store_view(&view));
            }
        } else {
            args.telemetry.metrics.redis_errors.inc();
        }
        for belief in &mut out {
            if let Some((phase, epoch)) = breakers.gates.with(&belief.provider, |g| (g.phase(), g.epoch())) {
                (belief.cluster, belief.cluster_epoch) = (phase.state(), epoch);
            }
        }
    }
    NodeBreakers { node: args.node.clone(), providers: out }
}

fn store_view(view: &ClusterView) -> StoreView {
    StoreView {
        state: view.state,
        epoch: view.epoch,
        open_remaining_ms: view.open_until_ms.map(|_| view.open_remaining.as_millis() as u64),
        probe_owner: view.probe.as_ref().filter(|l| l.until_ms > view.now_ms).map(|l| l.owner.clone()),
    }
}

/// The node's traffic figures.
fn stats(args: &AdminArgs, started: Instant) -> NodeStats {
    let uptime = started.elapsed();
    let mut providers: Vec<_> = args.counters.iter().map(|c| c.stats(uptime)).collect();
    providers.sort_by(|a, b| a.provider.cmp(&b.provider));
    let routes = args.routing.as_ref().map(|r| r.route_stats()).unwrap_or_default();
    NodeStats { node: args.node.clone(), uptime_ms: uptime.as_millis() as u64, providers, routes }
}

async fn provider_health(args: &AdminArgs) -> Vec<ProviderHealth> {
    match &args.providers {
        Some(supervisor) => match supervisor.call(ProviderSupervisorMsg::Health, Some(ASK_TIMEOUT)).await {
            Ok(CallResult::Success(health)) => health,
            _ => Vec::new(),
        },
        None => Vec::new(),
    }
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
    let providers = provider_health(args).await;
    let status = |cell: &ActorCell| format!("{:?}", cell.get_status()).to_lowercase();
    let mut actors: Vec<ActorHealth> = args
        .others
        .iter()
        .map(|(name, cell)| ActorHealth {
            actor: name.clone(),
            status: status(cell),
            restarts: 0,
            last_error: None,
            last_error_at_ms: None,
            in_flight: (name == "router").then(|| router.as_ref().map_or(0, |r| r.in_flight)),
        })
        .collect();
    actors.extend(providers.iter().map(|p| ActorHealth {
        actor: format!("provider:{}", p.name),
        status: p.status.clone(),
        restarts: p.restarts,
        last_error: p.last_crash.clone(),
        last_error_at_ms: p.last_crash_at_ms,
        in_flight: Some(p.in_flight),
    }));
    NodeHealth {
        node: args.node.clone(),
        roles: args.roles.clone(),
        version: VERSION.to_owned(),
        uptime_ms: started.elapsed().as_millis() as u64,
        draining: args.draining.load(Ordering::Relaxed),
        degraded: args.degraded.load(Ordering::Relaxed),
        nats_disconnected: !args.bus.is_connected(),
        actors,
        router,
        providers,
    }
}
