//! What a node says about itself on the admin topic (JSON).
//!
//! Health is data: each actor reports a snapshot, the admin actor assembles them into a [`NodeHealth`].

use serde::{Deserialize, Serialize};

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
    /// The local circuit breaker: `closed`, `open`, `half_open`, `forced_open`, `disabled`, `metrics_only`.
    pub breaker: String,
    pub breaker_epoch: u64,
    pub failure_rate: Option<f64>,
    /// The provider answered 401/403: its key or account needs an operator.
    pub misconfigured: bool,
    /// The cluster's breaker for this provider, as this node knows it (`closed` without shared state).
    pub cluster_breaker: String,
    pub cluster_epoch: u64,
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
    pub uptime_ms: u64,
    pub draining: bool,
    /// Shared state (Redis) is unreachable: the node serves with its local breakers.
    pub degraded: bool,
    pub router: Option<RouterHealth>,
    pub providers: Vec<ProviderHealth>,
}

/// The answer to an admin command other than health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdminAck {
    pub node: String,
    pub ok: bool,
    pub message: String,
}
