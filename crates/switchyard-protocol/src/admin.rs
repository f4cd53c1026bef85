//! What a node says about itself on the admin topic (JSON).
//!
//! Health is data: each actor reports a snapshot, the admin actor assembles them into a [`NodeHealth`].

use serde::{Deserialize, Serialize};
use switchyard_core::BreakerState;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderHealth {
    pub name: String,
    pub model: String,
    /// `running`, `restarting` or `failed` (the supervisor gave up).
    pub status: String,
    pub restarts: u64,
    pub in_flight: u64,
    pub calls: u64,
    pub successes: u64,
    pub failures: u64,
    pub refused: u64,
    pub ewma_latency_ms: f64,
    pub last_error: Option<String>,
    /// When the last error happened (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_at_ms: Option<u64>,
    /// Why the provider's actor last died, and when (Unix ms): what its supervisor restarted it after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_crash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_crash_at_ms: Option<u64>,
    /// The local circuit breaker; absent while the provider's actor is not running (restarting, or failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<BreakerState>,
    pub breaker_epoch: u64,
    pub failure_rate: Option<f64>,
    /// The provider answered 401/403: its key or account needs an operator.
    pub misconfigured: bool,
    /// The cluster's breaker for this provider, as this node knows it (`closed` without shared state); absent
    /// while the provider's actor is not running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_breaker: Option<BreakerState>,
    pub cluster_epoch: u64,
    /// While the cluster breaker is open: milliseconds until a probe may be taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_open_remaining_ms: Option<u64>,
}

/// One actor of a node's tree, for `admin.health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActorHealth {
    /// `node`, `router`, `providers`, `provider:<name>`, `state_sync`, `cascade`, `admin`, `bridge`.
    pub actor: String,
    /// `running`, `restarting`, `failed`, `stopped`, ...
    pub status: String,
    pub restarts: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_at_ms: Option<u64>,
    /// Work the actor holds: queries for the router, calls for a provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RouterHealth {
    pub in_flight: u64,
    pub answered: u64,
    pub errors: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub routes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeHealth {
    pub node: String,
    pub roles: Vec<String>,
    /// The node's version (the `switchyard` crate's).
    #[serde(default)]
    pub version: String,
    pub uptime_ms: u64,
    pub draining: bool,
    /// Shared state (Redis) is unreachable: the node serves with its local breakers.
    pub degraded: bool,
    /// The node's NATS connection is down (it reconnects by itself; this answer went out once it was back).
    #[serde(default)]
    pub nats_disconnected: bool,
    /// The actor tree.
    #[serde(default)]
    pub actors: Vec<ActorHealth>,
    pub router: Option<RouterHealth>,
    pub providers: Vec<ProviderHealth>,
}

/// The answer to an admin command other than health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdminAck {
    pub node: String,
    pub ok: bool,
    pub message: String,
    /// For a breaker command: the cluster breaker's state and epoch after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<BreakerState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

impl AdminAck {
    pub fn new(node: impl Into<String>, ok: bool, message: impl Into<String>) -> Self {
        AdminAck { node: node.into(), ok, message: message.into(), state: None, epoch: None }
    }
}

/// The body of an admin command: who sends it, logged with the command by the node that executes it. The
/// shipped NATS permissions let only the admin user publish admin commands; the name is the operator's own word.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
}

/// An operator's command on a provider's cluster breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerCommand {
    /// Force the breaker open: no node calls the provider until a reset.
    Trip,
    /// Switch the breaker off: calls always flow, failures never trip it.
    Disable,
    /// Close it and forget its history.
    Reset,
}

impl BreakerCommand {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerCommand::Trip => "trip",
            BreakerCommand::Disable => "disable",
            BreakerCommand::Reset => "reset",
        }
    }
}

impl std::str::FromStr for BreakerCommand {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "trip" => Ok(BreakerCommand::Trip),
            "disable" => Ok(BreakerCommand::Disable),
            "reset" => Ok(BreakerCommand::Reset),
            other => Err(format!("`{other}` is not trip, disable or reset")),
        }
    }
}

/// One provider's breakers as one node sees them, for `admin.breakers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreakerBelief {
    pub provider: String,
    /// This node's own breaker (`None` when the node does not host the provider, or its actor is not running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<BreakerState>,
    /// This node's copy of the cluster breaker.
    pub cluster: BreakerState,
    pub cluster_epoch: u64,
    /// The store's view, when this node reads the shared store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreView>,
}

/// The cluster breaker as the shared store holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreView {
    pub state: BreakerState,
    pub epoch: u64,
    /// While open: milliseconds until a probe may be taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_remaining_ms: Option<u64>,
    /// While half-open: the node holding the probe lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_owner: Option<String>,
}

/// A node's answer to `admin.breakers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeBreakers {
    pub node: String,
    pub providers: Vec<BreakerBelief>,
}

/// A node's traffic figures, for `admin.stats`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NodeStats {
    pub node: String,
    pub uptime_ms: u64,
    pub providers: Vec<ProviderStats>,
    pub routes: Vec<RouteStats>,
}

/// One provider's calls on one node since its actor started.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ProviderStats {
    pub provider: String,
    pub calls: u64,
    /// Calls per second over the node's uptime.
    pub throughput: f64,
    pub successes: u64,
    pub failures: u64,
    pub rate_limited: u64,
    pub refused: u64,
    /// Latency quantiles of answered calls, in milliseconds.
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
}

/// One route's queries on one router node.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RouteStats {
    pub route: String,
    pub queries: u64,
    pub retries: u64,
    pub fallbacks: u64,
    pub hedges: u64,
}
