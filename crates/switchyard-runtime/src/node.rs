//! A running node: built from its configuration, inspected, and shut down gracefully.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};
use tokio::task::JoinHandle;
use tracing::{info, warn};
use uuid::Uuid;

use switchyard_bus::Bus;
use switchyard_protocol::admin::NodeHealth;
use switchyard_protocol::subjects::Subjects;
use switchyard_providers::{ApiKeySource, ProviderKind, ProviderSettings};

use crate::actors::admin;
use crate::actors::bridge::BridgeMsg;
use crate::actors::node::{CascadeSetup, ClusterBreakers, NodeArgs, NodeChildren, NodeMsg, NodeSupervisor};
use crate::actors::provider_supervisor::ProviderSpec;
use crate::actors::router::{Gate, RouterMsg, RouterSettings};
use crate::actors::state_sync::SyncSettings;
use crate::cascade::CascadeEngine;
use crate::config::{NodeConfig, ProviderKindConfig, ProviderSection, Role};
use crate::idempotent::Idempotency;
use crate::local::LocalDispatcher;
use crate::quality::QualityRouting;
use crate::routing::Routing;
use crate::state::SharedState;
use crate::telemetry::{ProviderCounters, Telemetry};
use std::net::SocketAddr;
use switchyard_core::DedupLimits;
use switchyard_state::{BreakerStore, MemoryStore};
use tokio::sync::Notify;
use tokio_util::task::AbortOnDropHandle;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("provider `{provider}`: {reason}")]
    Provider { provider: String, reason: String },
    #[error("cannot start the node's actors: {reason}")]
    Spawn { reason: String },
}

/// A node's actor tree, running.
pub struct Node {
    name: String,
    supervisor: ActorRef<NodeMsg>,
    join: JoinHandle<()>,
    children: NodeChildren,
    draining: Arc<AtomicBool>,
    started: Instant,
    drain_timeout: Duration,
    /// Each hosted provider's calls in flight, read directly so a drain never mistakes a slow answer for zero.
    provider_calls: Vec<Arc<AtomicUsize>>,
    /// Notified when an operator asks this node to drain.
    drain: Arc<Notify>,
    telemetry: Arc<Telemetry>,
    /// The Prometheus endpoint, when configured.
    metrics: Option<(SocketAddr, AbortOnDropHandle<()>)>,
    /// Hands queries to this node's router in process, on a node with the router role.
    dispatcher: Option<LocalDispatcher>,
}

/// How a graceful shutdown went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Queries still in flight when the drain timeout expired (0 on a clean shutdown).
    pub abandoned_queries: u64,
}

impl Node {
    /// Builds the provider clients, then starts the actor tree on `bus`, sharing `shared` with the cluster.
    pub async fn start(config: &NodeConfig, bus: Arc<dyn Bus>, shared: SharedState) -> Result<Node, NodeError> {
        let name = if config.node.name.is_empty() { generated_name() } else { config.node.name.clone() };
        let specs = if config.has_role(Role::Providers) { Some(build_providers(&config.providers)?) } else { None };
        let provider_calls = specs.iter().flatten().map(|spec| spec.in_flight.clone()).collect();
        let telemetry = Arc::new(Telemetry::default());
        let routing = match config.has_role(Role::Router) || config.has_role(Role::Cascade) {
            true => Some(Arc::new(
                Routing::from_config(config, telemetry.clone()).map_err(|reason| NodeError::Spawn { reason })?,
            )),
            false => None,
        };
        let metrics = match config.node.metrics_addr {
            Some(addr) => Some(serve_metrics(addr, telemetry.clone()).await?),
            None => None,
        };
        let drain = Arc::new(Notify::new());
        let keepalive =
            (config.node.call_keepalive_ms > 0).then(|| Duration::from_millis(config.node.call_keepalive_ms));
        let cascade = match (config.has_role(Role::Cascade), &routing) {
            (true, Some(routing)) => {
                let base = config.base_dir.clone().unwrap_or_default();
                let engine = CascadeEngine::new(&config.cascades, &base)
                    .map_err(|e| NodeError::Spawn { reason: e.to_string() })?;
                // Escalation counters are the cluster's in Redis; a node without it keeps its own in memory.
                let store: Arc<dyn BreakerStore> = match &shared.breakers {
                    Some(store) => store.clone(),
                    None => Arc::new(MemoryStore::new()),
                };
                Some(CascadeSetup { engine: Arc::new(engine), routing: routing.clone(), store, keepalive })
            }
            _ => None,
        };
        let routing = routing.filter(|_| config.has_role(Role::Router));
        let quality = match &routing {
            Some(_) => {
                Some(Arc::new(QualityRouting::new(config).map_err(|e| NodeError::Spawn { reason: e.to_string() })?))
            }
            None => None,
        };
        let draining = Arc::new(AtomicBool::new(false));
        let roles = config
            .node
            .roles
            .iter()
            .map(|r| match r {
                Role::Router => "router".to_owned(),
                Role::Providers => "providers".to_owned(),
                Role::Cascade => "cascade".to_owned(),
                Role::Http => "http".to_owned(),
            })
            .collect();
        let bus_for_dispatch = bus.clone();
        let args = NodeArgs {
            node: name.clone(),
            roles,
            bus,
            subjects: Subjects::new(&config.node.namespace),
            specs,
            routing,
            quality,
            restart_policy: config.supervisor.policy(),
            max_payload_bytes: config.node.max_payload_bytes,
            router_settings: RouterSettings {
                default_deadline: Duration::from_millis(config.node.default_deadline_ms),
                max_queue_wait: Duration::from_millis(config.node.max_queue_wait_ms),
                dedup: DedupLimits {
                    max_in_flight: config.node.max_in_flight_queries,
                    max_waiters: config.node.dedup_max_waiters,
                    max_done: config.node.dedup_max_answers,
                    max_done_weight: config.node.dedup_max_answer_bytes,
                },
                keepalive,
            },
            cascade,
            gate: Arc::new(Gate::new(config.node.max_in_flight_queries, config.node.max_in_flight_bytes)),
            draining: draining.clone(),
            idempotency: shared.idempotency.map(|store| {
                let lease = Duration::from_millis(config.node.idempotency_lease_ms);
                Idempotency {
                    store,
                    instance: format!("{name}-{}", &Uuid::new_v4().simple().to_string()[..8]),
                    lease,
                    retention: Duration::from_millis(config.node.idempotency_retention_ms),
                    poll: lease / 2,
                    holders: Arc::default(),
                }
            }),
            breakers: shared.breakers.filter(|_| config.has_role(Role::Providers)).map(|store| {
                let policies =
                    config.providers.iter().map(|p| (p.name.clone(), p.breaker.trip_policy(&config.cluster))).collect();
                let settings = SyncSettings {
                    flush_interval: Duration::from_millis(config.cluster.flush_interval_ms),
                    poll_interval: Duration::from_millis(config.cluster.poll_interval_ms),
                    // Short, and renewed by its holder while the probe runs, up to the longest provider timeout.
                    probe_lease: Duration::from_millis(config.cluster.probe_lease_ms),
                    max_probe: Duration::from_millis(config.providers.iter().map(|p| p.timeout_ms).max().unwrap_or(0)),
                };
                ClusterBreakers { store, policies, settings }
            }),
            degraded: Arc::new(AtomicBool::new(false)),
            telemetry: telemetry.clone(),
            drain: drain.clone(),
            local_calls: config.node.local_calls,
        };
        let spawn_err = |e: &dyn std::fmt::Display| NodeError::Spawn { reason: e.to_string() };
        let (supervisor, join) = Actor::spawn(None, NodeSupervisor, args).await.map_err(|e| spawn_err(&e))?;
        let children = match supervisor.call(NodeMsg::Children, Some(Duration::from_secs(5))).await {
            Ok(CallResult::Success(children)) => children,
            Ok(_) => return Err(NodeError::Spawn { reason: "node supervisor did not answer".into() }),
            Err(e) => return Err(spawn_err(&e)),
        };
        let default_deadline = Duration::from_millis(config.node.default_deadline_ms);
        let dispatcher =
            children.intake.clone().map(|intake| LocalDispatcher::new(intake, bus_for_dispatch, default_deadline));
        info!(node = %name, "node started");
        Ok(Node {
            dispatcher,
            name,
            supervisor,
            join,
            children,
            draining,
            provider_calls,
            drain,
            telemetry,
            metrics,
            started: Instant::now(),
            drain_timeout: Duration::from_millis(config.node.drain_timeout_ms),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Hands queries to this node's router in process (no bus hop for the query or its answer), on a node with
    /// the router role; `None` otherwise. Queries taken this way are admitted, de-duplicated, counted and
    /// drained exactly like queries from the bus.
    pub fn dispatcher(&self) -> Option<LocalDispatcher> {
        self.dispatcher.clone()
    }

    pub async fn health(&self) -> NodeHealth {
        admin::health(&self.children.admin, self.started).await
    }

    /// Resolves when an operator asked this node to drain (`switchyard admin drain`); its owner then calls
    /// [`Node::shutdown`], which finishes the queries in flight.
    pub fn drain_requested(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let drain = self.drain.clone();
        async move { drain.notified().await }
    }

    /// The address of the Prometheus endpoint, when the node serves one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(addr, _)| *addr)
    }

    /// The node's metrics in the OpenMetrics text format (what `GET /metrics` serves).
    pub fn metrics_text(&self) -> String {
        self.telemetry.metrics.render()
    }

    /// Resolves when the node stopped by itself (an actor failed and the failure was escalated).
    pub async fn stopped(&mut self) {
        let _ = (&mut self.join).await;
    }

    /// Stops taking queries, lets those in flight finish (up to the drain timeout), then stops every actor.
    pub async fn shutdown(self) -> ShutdownReport {
        info!(node = %self.name, "draining");
        self.draining.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + self.drain_timeout;
        let _ = self.children.bridge.call(BridgeMsg::DrainQueries, Some(self.drain_timeout)).await;
        let abandoned = self.wait_for_router(deadline).await;
        // Provider calls from other nodes' routers: stop taking them, finish the ones accepted.
        let _ = self.children.bridge.call(BridgeMsg::DrainProviders, Some(self.drain_timeout)).await;
        self.wait_for_providers(deadline).await;
        self.supervisor.stop(Some("shutdown".into()));
        let _ = self.join.await;
        info!(node = %self.name, abandoned, "node stopped");
        ShutdownReport { abandoned_queries: abandoned }
    }

    /// Stops the node at once, as a crash would: no drain, queries in flight abandoned, subscriptions and the
    /// idempotency lease dropped. For tests of what the rest of the cluster does when a node dies.
    pub async fn abort(self) {
        warn!(node = %self.name, "aborting");
        self.children.bridge.kill();
        if let Some(router) = &self.children.router {
            router.kill();
        }
        if let Some(providers) = &self.children.providers {
            providers.kill();
        }
        if let Some(coordinator) = &self.children.coordinator {
            coordinator.kill();
        }
        self.supervisor.kill();
        let _ = self.join.await;
    }

    async fn wait_for_router(&self, deadline: Instant) -> u64 {
        let Some(router) = &self.children.router else { return 0 };
        let mut in_flight = 0;
        loop {
            // A health call that times out says nothing: keep the last count and ask again, until the deadline.
            match router.call(RouterMsg::Health, Some(Duration::from_secs(1))).await {
                Ok(CallResult::Success(health)) => in_flight = health.in_flight,
                Ok(_) => {}
                Err(error) => {
                    warn!(node = %self.name, %error, "the router is gone while draining");
                    return in_flight;
                }
            }
            if in_flight == 0 || Instant::now() >= deadline {
                if in_flight > 0 {
                    warn!(node = %self.name, in_flight, "drain timeout reached with queries in flight");
                }
                return in_flight;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn wait_for_providers(&self, deadline: Instant) {
        let busy = || self.provider_calls.iter().map(|calls| calls.load(Ordering::Acquire)).sum::<usize>();
        while busy() > 0 {
            if Instant::now() >= deadline {
                warn!(node = %self.name, calls = busy(), "drain timeout reached with provider calls in flight");
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A name for a node whose configuration gives none: `node-` and eight hex digits.
pub fn generated_name() -> String {
    format!("node-{}", &Uuid::new_v4().simple().to_string()[..8])
}

/// Builds one provider client per configured provider, reading API keys from where the config says.
fn build_providers(sections: &[ProviderSection]) -> Result<Vec<ProviderSpec>, NodeError> {
    let http = switchyard_providers::http_client()
        .map_err(|e| NodeError::Provider { provider: "*".into(), reason: e.to_string() })?;
    sections
        .iter()
        .map(|p| {
            let source = match (&p.api_key, &p.api_key_env, &p.api_key_file) {
                (Some(key), _, _) => Some(ApiKeySource::Inline(key.clone())),
                (_, Some(env), _) => Some(ApiKeySource::Env(env.clone())),
                (_, _, Some(file)) => Some(ApiKeySource::File(file.clone())),
                _ => None,
            };
            let api_key = source
                .map(|s| switchyard_providers::load_api_key(&s))
                .transpose()
                .map_err(|e| NodeError::Provider { provider: p.name.clone(), reason: e.to_string() })?;
            let settings = ProviderSettings {
                name: p.name.clone(),
                kind: match p.kind {
                    ProviderKindConfig::Openai => ProviderKind::OpenAi,
                    ProviderKindConfig::Anthropic => ProviderKind::Anthropic,
                },
                base_url: p.base_url.clone(),
                model: p.model.clone(),
                api_key,
                price: p.price(),
                timeout: Duration::from_millis(p.timeout_ms),
                stream_timeout: (p.stream_timeout_ms > 0).then(|| Duration::from_millis(p.stream_timeout_ms)),
                anthropic_version: "2023-06-01".into(),
                default_max_tokens: 1024,
            };
            Ok(ProviderSpec {
                provider: switchyard_providers::build(settings, http.clone()),
                max_in_flight: p.max_in_flight,
                in_flight: Arc::default(),
                limits: p.stream_limits(),
                breaker: p.breaker.to_core(),
                cluster: None,
                counters: Arc::new(ProviderCounters::new(&p.name)),
            })
        })
        .collect()
}

/// Serves `GET /metrics` (OpenMetrics text) on `addr`; the server stops when the handle is dropped.
async fn serve_metrics(
    addr: SocketAddr,
    telemetry: Arc<Telemetry>,
) -> Result<(SocketAddr, AbortOnDropHandle<()>), NodeError> {
    use axum::http::header::CONTENT_TYPE;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| NodeError::Spawn { reason: format!("cannot serve metrics on {addr}: {e}") })?;
    let bound = listener.local_addr().map_err(|e| NodeError::Spawn { reason: e.to_string() })?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let telemetry = telemetry.clone();
            async move {
                let body = telemetry.metrics.render();
                ([(CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
            }
        }),
    );
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            warn!(%error, "the metrics endpoint stopped");
        }
    });
    info!(%bound, "serving metrics");
    Ok((bound, AbortOnDropHandle::new(task)))
}
