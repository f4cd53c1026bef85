//! The configuration of a node, read from TOML.
//!
//! Every struct rejects unknown fields, and [`NodeConfig::from_toml`] validates what serde cannot (names usable
//! as subject tokens, routes naming known providers, sane limits), so a bad file fails at start-up with an error
//! that names the field. The whole cluster can share one file: `node.roles` decides what each node runs.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use switchyard_cascade::health::HealthConfig;
use switchyard_cascade::{Cascade, CascadeConfig, OverrideLimits, StageConfig};
use switchyard_core::{
    Backoff, BalanceStrategy, Balancer, BalancerConfig, BreakerConfig, FallbackChains, GroupMember, HedgePolicy, Price,
    RestartPolicy, RetryBudgetConfig, RetryPolicy, SlidingWindow, TieBreak,
};
use switchyard_protocol::subjects::is_valid_token;
use switchyard_quality::{RuleRouter, RuleRouterConfig};
use switchyard_state::{OpenWait, TripPolicy};

use crate::actors::provider::StreamLimits;

mod http;

pub use http::{HttpKeySection, HttpSection};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config: {message}")]
    Parse { message: String },
    #[error("invalid config field `{field}`: {reason}")]
    Invalid { field: String, reason: String },
    /// A secret named by the configuration (an environment variable) is not there.
    #[error("invalid config field `{field}`: environment variable `{var}` is not set")]
    MissingEnv { field: String, var: String },
    /// A file named by the configuration (a key, a seed, credentials, a certificate) cannot be read.
    #[error("invalid config field `{field}`: cannot read {path}: {source}")]
    Unreadable { field: String, path: PathBuf, source: std::io::Error },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field: field.into(), reason: reason.into() }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    #[serde(default)]
    pub node: NodeSection,
    #[serde(default)]
    pub nats: NatsSection,
    /// Shared cluster state; without it a node keeps everything to itself (idempotency is per node).
    #[serde(default)]
    pub redis: Option<RedisSection>,
    #[serde(default)]
    pub cluster: ClusterSection,
    #[serde(default)]
    pub supervisor: SupervisorSection,
    #[serde(default)]
    pub providers: Vec<ProviderSection>,
    #[serde(default)]
    pub routes: Vec<RouteSection>,
    /// Balanced groups of providers; a route's chains may name a group where they name a provider.
    #[serde(default)]
    pub groups: Vec<GroupSection>,
    /// Caps retries across all queries of a router node.
    #[serde(default)]
    pub retry_budget: RetryBudgetSection,
    /// Cascades: weak stage first, escalate on low confidence. A route serves one with `cascade = "<name>"`.
    #[serde(default)]
    pub cascades: Vec<CascadeSection>,
    /// Quality routers: a route with `router = "<name>"` lets one choose its first target per query.
    #[serde(default)]
    pub routers: Vec<RouterSection>,
    /// Ensembles (Mixture-of-Agents): k proposers answer, an aggregator merges their answers. A route serves one
    /// with `ensemble = "<name>"`, and a router may choose one as a target.
    #[serde(default)]
    pub ensembles: Vec<EnsembleSection>,
    /// The OpenAI-compatible HTTP door, on a node with the `http` role.
    #[serde(default)]
    pub http: Option<HttpSection>,
    /// The directory of the configuration file: relative paths in it (verifier models) resolve from here.
    #[serde(skip)]
    pub base_dir: Option<PathBuf>,
    /// The file the configuration was read from, watched for changes of its routers.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// A quality router. Its choices name route targets: providers, groups or ensembles.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RouterSection {
    /// Ordered rules over the query, first match wins, an explicit default (`switchyard_quality::rules`). The
    /// rules reload when the file changes or on `switchyard admin reload`.
    Rules(RuleRouterConfig),
    /// A router file trained by `switchyard router train` (binary weak/strong or N-way), loaded at start.
    Learned(LearnedSection),
}

impl RouterSection {
    pub fn name(&self) -> &str {
        match self {
            RouterSection::Rules(r) => &r.name,
            RouterSection::Learned(l) => &l.name,
        }
    }
}

/// A learned router: its file, and the route target of each of its models.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearnedSection {
    pub name: String,
    /// The router file (relative paths resolve from the configuration's directory).
    pub file: PathBuf,
    /// The route target (provider, group or ensemble) of each model the file names; a model not listed is the
    /// target of the same name.
    #[serde(default)]
    pub targets: BTreeMap<String, String>,
    /// A binary router's threshold for queries without an objective, replacing the file's calibrated one.
    #[serde(default)]
    pub threshold: Option<f64>,
}

/// An ensemble (Mixture-of-Agents): the first `k` available proposers answer in parallel, each through the
/// availability layer; the aggregator then answers the query with their answers in its system prompt.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnsembleSection {
    pub name: String,
    /// Providers or groups, in order of preference.
    pub proposers: Vec<String>,
    /// How many proposers to call (default: all). Tripped proposers are passed over for the next ones.
    #[serde(default)]
    pub k: Option<usize>,
    /// The provider or group that merges the proposals.
    pub aggregator: String,
    /// The fewest proposals the aggregator needs; with fewer, the query fails (default 1).
    #[serde(default = "default_min_proposals")]
    pub min_proposals: usize,
    /// Each proposal is cut to this many characters in the aggregator's prompt.
    #[serde(default = "default_max_proposal_chars")]
    pub max_proposal_chars: usize,
}

fn default_min_proposals() -> usize {
    1
}

fn default_max_proposal_chars() -> usize {
    8_000
}

impl EnsembleSection {
    /// The number of proposers a query calls.
    pub fn k(&self) -> usize {
        self.k.unwrap_or(self.proposers.len()).min(self.proposers.len())
    }
}

/// One cascade: its stages (cheapest first, each a provider or group called through the availability layer),
/// what a request may override, and its escalation-rate health thresholds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CascadeSection {
    pub name: String,
    pub stages: Vec<StageConfig>,
    #[serde(default)]
    pub overrides: OverrideLimits,
    #[serde(default)]
    pub health: HealthConfig,
    /// The window the cluster's escalation rate is computed over.
    #[serde(default = "default_escalation_window_s")]
    pub escalation_window_s: u64,
}

fn default_escalation_window_s() -> u64 {
    60
}

impl CascadeSection {
    /// The decision code's view of this cascade.
    pub fn to_config(&self) -> CascadeConfig {
        CascadeConfig { name: self.name.clone(), stages: self.stages.clone(), overrides: self.overrides }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Answers client queries and routes them to provider actors.
    Router,
    /// Hosts one provider actor per configured provider.
    Providers,
    /// Runs the configured cascades (a coordinator in each cascade's queue group).
    Cascade,
    /// Serves the OpenAI-compatible HTTP door (`[http]`): in process to its own router with the router role,
    /// over the bus otherwise.
    Http,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSection {
    /// The node's name in traces and on the admin topic; a random one when empty.
    pub name: String,
    /// Subject namespace (`<namespace>.v1.…`): clusters sharing one NATS server use different ones.
    pub namespace: String,
    pub roles: Vec<Role>,
    /// Largest accepted query payload; must stay below the bus's own limit.
    pub max_payload_bytes: usize,
    /// Deadline of a query that does not set `deadline_ms`.
    pub default_deadline_ms: u64,
    /// How long SIGTERM waits for queries in flight.
    pub drain_timeout_ms: u64,
    /// Queries a router node holds at once (waiting for the router, running, or waiting for a copy's answer)
    /// before it answers `overloaded`, without parsing them.
    pub max_in_flight_queries: usize,
    /// The same bound in payload bytes, so a flood of large queries is bounded in memory too.
    pub max_in_flight_bytes: usize,
    /// A query that waited longer than this for the router actor is refused as `overloaded`.
    pub max_queue_wait_ms: u64,
    /// Answers kept per node for de-duplication (least recently used evicted first), besides the queries in
    /// flight.
    pub dedup_max_answers: usize,
    /// The same bound in bytes (content and trace, roughly).
    pub dedup_max_answer_bytes: usize,
    /// Copies of one id waiting for its answer on one node; more are refused as `overloaded`.
    pub dedup_max_waiters: usize,
    /// How long a node's idempotency lease lasts; it renews it every third of that. A copy of an id whose owner
    /// has not renewed for this long takes the query over.
    pub idempotency_lease_ms: u64,
    /// How long answers of idempotent queries are kept in the shared store (at least each query's deadline).
    pub idempotency_retention_ms: u64,
    /// How often a provider call running for longer sends its router a heartbeat; a call silent for three of
    /// these is lost (its node died) and the query goes on elsewhere. 0 turns the watch off.
    pub call_keepalive_ms: u64,
    /// Where to serve Prometheus metrics (`GET /metrics`), e.g. `127.0.0.1:9464`; none by default.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// A router calls the provider actors of its own node directly, not over NATS (same admission, breakers,
    /// traces and idempotency; remote providers are still reached over NATS).
    pub local_calls: bool,
    /// Threads of the node's async runtime; none means one per core. A node that shares a few cores with NATS,
    /// Redis or other processes answers sooner with fewer: one worker never hands a query to another thread, and
    /// runs as tokio's current-thread runtime (no work-stealing queues to keep).
    pub worker_threads: Option<usize>,
}

impl Default for NodeSection {
    fn default() -> Self {
        Self {
            name: String::new(),
            namespace: switchyard_protocol::subjects::DEFAULT_NAMESPACE.to_owned(),
            roles: vec![Role::Router, Role::Providers],
            max_payload_bytes: 256 * 1024,
            default_deadline_ms: 30_000,
            drain_timeout_ms: 10_000,
            max_in_flight_queries: 10_000,
            max_in_flight_bytes: 64 * 1024 * 1024,
            max_queue_wait_ms: 1_000,
            dedup_max_answers: 10_000,
            dedup_max_answer_bytes: 32 * 1024 * 1024,
            dedup_max_waiters: 32,
            idempotency_lease_ms: 2_000,
            idempotency_retention_ms: 60_000,
            call_keepalive_ms: 1_000,
            metrics_addr: None,
            local_calls: true,
            worker_threads: None,
        }
    }
}

#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsSection {
    /// One server. Set this or `urls`, not both; neither means `nats://127.0.0.1:4222`.
    pub url: Option<String>,
    /// Several servers of one NATS cluster: the node connects to one and fails over to the others.
    pub urls: Option<Vec<String>>,
    /// Environment variable holding a token.
    pub token_env: Option<String>,
    /// File holding a token (instead of `token_env`).
    pub token_file: Option<PathBuf>,
    pub user: Option<String>,
    /// Environment variable holding the password of `user`.
    pub password_env: Option<String>,
    /// File holding the password of `user` (instead of `password_env`).
    pub password_file: Option<PathBuf>,
    pub creds_file: Option<PathBuf>,
    pub nkey_seed_file: Option<PathBuf>,
    pub tls_required: bool,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// Prefix of this node's reply inboxes instead of `_INBOX` (see `deploy/nats-accounts.conf`).
    pub inbox_prefix: Option<String>,
}

impl std::fmt::Debug for NatsSection {
    // Only names of secret sources are stored here, but keep Debug short and obviously safe.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Credentials embedded in a server URL are redacted.
        let servers = switchyard_bus::NatsOptions { servers: self.servers(), ..Default::default() }.redacted_servers();
        f.debug_struct("NatsSection").field("servers", &servers).field("user", &self.user).finish_non_exhaustive()
    }
}

/// The NATS server of a node whose configuration names none.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

impl NatsSection {
    /// The server URLs to connect to: `urls`, or `url`, or the default.
    pub fn servers(&self) -> Vec<String> {
        match (&self.urls, &self.url) {
            (Some(urls), _) => urls.clone(),
            (None, Some(url)) => vec![url.clone()],
            (None, None) => vec![DEFAULT_NATS_URL.to_owned()],
        }
    }

    /// What can be checked without reading a secret: the servers, one way to authenticate, complete TLS, a usable
    /// prefix.
    fn validate(&self) -> Result<(), ConfigError> {
        let url_ok = |url: &str| {
            let shape_ok = match url.split_once("://") {
                Some((scheme, rest)) => ["nats", "tls", "ws", "wss"].contains(&scheme) && !rest.is_empty(),
                None => !url.trim().is_empty() && !url.contains('/'),
            };
            shape_ok && !url.contains(',')
        };
        match (&self.url, &self.urls) {
            (Some(_), Some(_)) => return Err(invalid("nats.urls", "set exactly one of url and urls")),
            (Some(url), None) if !url_ok(url) => {
                return Err(invalid("nats.url", "one server: nats://, tls://, ws:// or wss:// and a host"));
            }
            (None, Some(urls)) if urls.is_empty() => {
                return Err(invalid("nats.urls", "list at least one server"));
            }
            (None, Some(urls)) if !urls.iter().all(|url| url_ok(url)) => {
                return Err(invalid("nats.urls", "each entry one server: nats://, tls://, ws:// or wss:// and a host"));
            }
            _ => {}
        }
        let password = self.password_env.is_some() || self.password_file.is_some();
        match (&self.user, password) {
            (Some(_), false) => {
                return Err(invalid(
                    "nats.password_env",
                    "`nats.user` needs `nats.password_env` or `nats.password_file`",
                ));
            }
            (None, true) => return Err(invalid("nats.user", "a password needs `nats.user`")),
            (Some(user), true) if user.is_empty() => return Err(invalid("nats.user", "must not be empty")),
            _ => {}
        }
        if self.password_env.is_some() && self.password_file.is_some() {
            return Err(invalid("nats.password_file", "set `nats.password_env` or `nats.password_file`, not both"));
        }
        if self.token_env.is_some() && self.token_file.is_some() {
            return Err(invalid("nats.token_file", "set `nats.token_env` or `nats.token_file`, not both"));
        }
        let token = self.token_env.is_some() || self.token_file.is_some();
        let methods = [token, self.user.is_some(), self.nkey_seed_file.is_some(), self.creds_file.is_some()];
        if methods.iter().filter(|set| **set).count() > 1 {
            let reason = "set at most one of a token, user + password, nkey_seed_file, creds_file";
            return Err(invalid("nats", reason));
        }
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(_), None) => return Err(invalid("nats.tls_key_file", "a client certificate needs its key")),
            (None, Some(_)) => return Err(invalid("nats.tls_cert_file", "a client key needs its certificate")),
            _ => {}
        }
        if let Some(prefix) = &self.inbox_prefix
            && !switchyard_bus::subject::is_valid_subject(prefix)
        {
            return Err(invalid("nats.inbox_prefix", "must be a subject without wildcards, such as `_INBOX_node`"));
        }
        Ok(())
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSection {
    /// `redis://` or `rediss://`; an ACL user and password may be in the URL, which is then better given
    /// through `url_env`.
    #[serde(default)]
    pub url: Option<String>,
    /// Environment variable holding the URL (so a password stays out of the file).
    #[serde(default)]
    pub url_env: Option<String>,
    /// Nodes of a Redis Cluster (some or all of them; the client discovers the rest). One scheme for all; an ACL
    /// user and password in the first URL apply to every node.
    #[serde(default)]
    pub cluster_urls: Option<Vec<String>>,
    /// Sentinels of a Sentinel-managed Redis (with `sentinel_master`); the credentials and TLS mode of their URLs
    /// are used for the master too.
    #[serde(default)]
    pub sentinel_urls: Option<Vec<String>>,
    /// The name the Sentinels monitor the master under.
    #[serde(default)]
    pub sentinel_master: Option<String>,
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// Bound on every Redis call.
    #[serde(default = "default_redis_timeout_ms")]
    pub call_timeout_ms: u64,
    /// PEM file of the CA(s) that issued the server's certificate, for `rediss://` (instead of the system's roots).
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate for servers that verify clients (`tls-auth-clients yes`); needs `tls_key_file`.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
}

impl RedisSection {
    /// TLS files go with a `rediss://` URL (checked here when the URL is in the file) and a client certificate
    /// with its key.
    fn validate_tls(&self) -> Result<(), ConfigError> {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(_), None) => return Err(invalid("redis.tls_key_file", "a client certificate needs its key")),
            (None, Some(_)) => return Err(invalid("redis.tls_cert_file", "a client key needs its certificate")),
            _ => {}
        }
        let files = self.tls_ca_file.is_some() || self.tls_cert_file.is_some();
        if files && self.url.as_ref().is_some_and(|url| !url.starts_with("rediss://")) {
            return Err(invalid("redis.url", "TLS files need a rediss:// URL"));
        }
        Ok(())
    }
}

impl std::fmt::Debug for RedisSection {
    // The URL may carry a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSection").field("key_prefix", &self.key_prefix).finish_non_exhaustive()
    }
}

impl RedisSection {
    /// Exactly one way to Redis: `url`, `url_env`, `cluster_urls`, or `sentinel_urls` with `sentinel_master`.
    fn validate(&self) -> Result<(), ConfigError> {
        let scheme_ok = |url: &str| url.starts_with("redis://") || url.starts_with("rediss://");
        let forms =
            [self.url.is_some(), self.url_env.is_some(), self.cluster_urls.is_some(), self.sentinel_urls.is_some()];
        if forms.iter().filter(|set| **set).count() != 1 {
            let reason = "set exactly one of url, url_env, cluster_urls and sentinel_urls";
            return Err(invalid("redis.url", reason));
        }
        if let Some(url) = &self.url
            && !scheme_ok(url)
        {
            return Err(invalid("redis.url", "must start with redis:// or rediss://"));
        }
        for (field, urls) in [("redis.cluster_urls", &self.cluster_urls), ("redis.sentinel_urls", &self.sentinel_urls)]
        {
            let Some(urls) = urls else { continue };
            if urls.is_empty() {
                return Err(invalid(field, "list at least one URL"));
            }
            if !urls.iter().all(|url| scheme_ok(url)) {
                return Err(invalid(field, "each URL must start with redis:// or rediss://"));
            }
            let tls = urls.iter().filter(|url| url.starts_with("rediss://")).count();
            if tls != 0 && tls != urls.len() {
                return Err(invalid(field, "mixes redis:// and rediss:// URLs"));
            }
        }
        match (&self.sentinel_urls, &self.sentinel_master) {
            (Some(_), None) => Err(invalid("redis.sentinel_master", "`redis.sentinel_urls` needs the master's name")),
            (None, Some(_)) => Err(invalid("redis.sentinel_urls", "`redis.sentinel_master` needs the sentinels")),
            (Some(_), Some(name)) if name.trim().is_empty() => {
                Err(invalid("redis.sentinel_master", "must not be empty"))
            }
            _ => Ok(()),
        }
    }
}

fn default_key_prefix() -> String {
    "switchyard:v1:".into()
}

fn default_redis_timeout_ms() -> u64 {
    50
}

/// How nodes agree on breakers through the shared store (used only with `[redis]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// Distinct nodes that must report failures before the cluster trips (hard errors excepted).
    pub min_reporting_nodes: u32,
    /// The cluster's failure-rate window.
    pub window_secs: u64,
    /// How often a node reports its outcomes (successes included; one store command per provider with calls).
    pub flush_interval_ms: u64,
    /// How often the store is read as a backstop for lost events.
    pub poll_interval_ms: u64,
    /// How long the half-open probe lease lasts unless renewed. Its holder renews it every third of it while the
    /// probe runs (up to the longest provider `timeout_ms`), so a dead holder's lease passes to another node
    /// within about this long. Keep it a few times the store's timeout.
    pub probe_lease_ms: u64,
}

/// The shortest accepted probe lease.
const MIN_PROBE_LEASE_MS: u64 = 300;

impl Default for ClusterSection {
    fn default() -> Self {
        Self {
            min_reporting_nodes: 2,
            window_secs: 10,
            flush_interval_ms: 100,
            poll_interval_ms: 1000,
            probe_lease_ms: 2000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisorSection {
    pub max_restarts: u32,
    pub period_ms: u64,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
}

impl Default for SupervisorSection {
    fn default() -> Self {
        Self { max_restarts: 5, period_ms: 60_000, backoff_base_ms: 100, backoff_max_ms: 5_000 }
    }
}

impl SupervisorSection {
    pub fn policy(&self) -> RestartPolicy {
        RestartPolicy {
            max_restarts: self.max_restarts,
            period: Duration::from_millis(self.period_ms),
            backoff: Backoff::new(
                Duration::from_millis(self.backoff_base_ms),
                Duration::from_millis(self.backoff_max_ms),
            ),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKindConfig {
    /// OpenAI Chat Completions and compatible servers (vLLM, llama.cpp, Ollama, Together, ...).
    Openai,
    /// Anthropic Messages.
    Anthropic,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSection {
    pub name: String,
    pub kind: ProviderKindConfig,
    pub base_url: String,
    pub model: String,
    /// The key itself. Prefer `api_key_env` or `api_key_file`; it is held as a secret either way.
    #[serde(default)]
    pub api_key: Option<SecretString>,
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    #[serde(default)]
    pub input_price_per_mtok: f64,
    #[serde(default)]
    pub output_price_per_mtok: f64,
    /// A whole non-streaming call; breaking it is the provider's (retryable) failure.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// A stream whose first token takes longer fails (retryable); 0 means `timeout_ms`.
    #[serde(default)]
    pub first_token_timeout_ms: u64,
    /// A stream that sends no chunk for this long fails (retryable); 0 turns this off.
    #[serde(default = "default_stream_idle_timeout_ms")]
    pub stream_idle_timeout_ms: u64,
    /// A cap on a whole stream; 0 (the default): none, a long answer is not a failure.
    #[serde(default)]
    pub stream_timeout_ms: u64,
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    #[serde(default)]
    pub breaker: BreakerSection,
}

/// The circuit breaker of one provider (see `switchyard_core::breaker` for the policy).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerSection {
    /// Count-based window: the last N calls.
    pub window_calls: u32,
    /// Calls in the window before any rate is computed.
    pub minimum_calls: u32,
    /// Percent of failures that opens the breaker (>=).
    pub failure_rate_threshold: f64,
    /// Percent of slow calls that opens the breaker (>=).
    pub slow_call_rate_threshold: f64,
    pub slow_call_ms: u64,
    /// First open interval; doubles with consecutive opens up to `open_wait_max_ms`.
    pub open_wait_base_ms: u64,
    pub open_wait_max_ms: u64,
    /// Calls let through while half-open.
    pub half_open_permits: u32,
}

impl Default for BreakerSection {
    fn default() -> Self {
        let core = BreakerConfig::default();
        Self {
            window_calls: match core.window {
                SlidingWindow::Count { calls } => calls,
                SlidingWindow::Time { .. } => 100,
            },
            minimum_calls: core.minimum_calls,
            failure_rate_threshold: core.failure_rate_threshold,
            slow_call_rate_threshold: core.slow_call_rate_threshold,
            slow_call_ms: core.slow_call_duration.as_millis() as u64,
            open_wait_base_ms: core.open_wait.base.as_millis() as u64,
            open_wait_max_ms: core.open_wait.max.as_millis() as u64,
            half_open_permits: core.half_open_permits,
        }
    }
}

impl BreakerSection {
    /// The cluster's trip policy for this provider: the same thresholds and waits as the local breaker, over the
    /// cluster's window and with its reporting-node rule.
    pub fn trip_policy(&self, cluster: &ClusterSection) -> TripPolicy {
        TripPolicy {
            window: Duration::from_secs(cluster.window_secs),
            failure_rate_threshold: (self.failure_rate_threshold / 100.0).clamp(f64::MIN_POSITIVE, 1.0),
            slow_call_rate_threshold: Some((self.slow_call_rate_threshold / 100.0).clamp(f64::MIN_POSITIVE, 1.0)),
            minimum_calls: u64::from(self.minimum_calls),
            min_reporting_nodes: cluster.min_reporting_nodes,
            hard_error_minimum: 1,
            wait: OpenWait::new(
                Duration::from_millis(self.open_wait_base_ms),
                Duration::from_millis(self.open_wait_max_ms),
            ),
        }
    }

    pub fn to_core(&self) -> BreakerConfig {
        BreakerConfig {
            window: SlidingWindow::Count { calls: self.window_calls },
            minimum_calls: self.minimum_calls,
            failure_rate_threshold: self.failure_rate_threshold,
            slow_call_rate_threshold: self.slow_call_rate_threshold,
            slow_call_duration: Duration::from_millis(self.slow_call_ms),
            open_wait: Backoff::new(
                Duration::from_millis(self.open_wait_base_ms),
                Duration::from_millis(self.open_wait_max_ms),
            ),
            half_open_permits: self.half_open_permits,
            ..BreakerConfig::default()
        }
    }
}

fn default_timeout_ms() -> u64 {
    60_000
}

fn default_stream_idle_timeout_ms() -> u64 {
    30_000
}

fn default_max_in_flight() -> usize {
    512
}

impl ProviderSection {
    pub fn price(&self) -> Price {
        Price { input_per_mtok: self.input_price_per_mtok, output_per_mtok: self.output_price_per_mtok }
    }

    /// The limits a stream of this provider must keep.
    pub fn stream_limits(&self) -> StreamLimits {
        let first_token = if self.first_token_timeout_ms > 0 { self.first_token_timeout_ms } else { self.timeout_ms };
        StreamLimits {
            first_token: Some(Duration::from_millis(first_token)),
            idle: (self.stream_idle_timeout_ms > 0).then(|| Duration::from_millis(self.stream_idle_timeout_ms)),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    pub name: String,
    /// Providers (or groups) in order of preference: the first healthy one answers, the next ones are the
    /// generic fallbacks. Empty on a route served by a cascade.
    #[serde(default)]
    pub providers: Vec<String>,
    /// Tried first after a context-window failure.
    #[serde(default)]
    pub context_window_fallbacks: Vec<String>,
    /// Tried first after a content-policy refusal.
    #[serde(default)]
    pub content_policy_fallbacks: Vec<String>,
    /// Most providers (or groups) one query tries.
    #[serde(default = "default_fallback_depth")]
    pub max_fallback_depth: usize,
    #[serde(default)]
    pub retry: RetrySection,
    /// Hedging against slow calls (see `switchyard_core::hedge`).
    #[serde(default)]
    pub hedge: HedgeSection,
    /// Served by this cascade instead of `providers` (the query goes to the cascade's coordinators).
    #[serde(default)]
    pub cascade: Option<String>,
    /// A quality router that chooses the first target per query; `providers` are then the fallbacks after it.
    #[serde(default)]
    pub router: Option<String>,
    /// Served by this ensemble; `providers`, if any, are the aggregator's fallbacks.
    #[serde(default)]
    pub ensemble: Option<String>,
}

/// When a route starts its next target beside a slow attempt.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HedgeSection {
    pub enabled: bool,
    /// A fixed hedge delay; 0 (the default): the p95 of the provider's recent latency.
    pub delay_ms: u64,
    /// The delay while a provider has too few samples for a p95.
    pub fallback_delay_ms: u64,
    /// The shortest derived delay.
    pub min_delay_ms: u64,
}

impl Default for HedgeSection {
    fn default() -> Self {
        let core = HedgePolicy::default();
        Self {
            enabled: core.enabled,
            delay_ms: 0,
            fallback_delay_ms: core.fallback_delay.as_millis() as u64,
            min_delay_ms: core.min_delay.as_millis() as u64,
        }
    }
}

impl HedgeSection {
    pub fn to_core(&self) -> HedgePolicy {
        HedgePolicy {
            enabled: self.enabled,
            delay: (self.delay_ms > 0).then(|| Duration::from_millis(self.delay_ms)),
            fallback_delay: Duration::from_millis(self.fallback_delay_ms),
            min_delay: Duration::from_millis(self.min_delay_ms),
        }
    }
}

fn default_fallback_depth() -> usize {
    3
}

/// Retries of the same provider, per route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySection {
    /// Calls per provider and query, the first included (1 = no retry).
    pub max_attempts: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// A `Retry-After` longer than this sends the query to the next provider instead of waiting.
    pub max_retry_after_ms: u64,
}

impl Default for RetrySection {
    fn default() -> Self {
        let core = RetryPolicy::default();
        Self {
            max_attempts: core.max_attempts,
            backoff_base_ms: core.backoff.base.as_millis() as u64,
            backoff_max_ms: core.backoff.max.as_millis() as u64,
            max_retry_after_ms: core.max_retry_after.as_millis() as u64,
        }
    }
}

impl RetrySection {
    pub fn to_core(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts,
            backoff: Backoff::new(
                Duration::from_millis(self.backoff_base_ms),
                Duration::from_millis(self.backoff_max_ms),
            ),
            max_retry_after: Duration::from_millis(self.max_retry_after_ms),
            ..RetryPolicy::default()
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryBudgetSection {
    /// Retries may add this share of the requests in the window.
    pub ratio: f64,
    pub window_secs: u32,
    /// Retries always allowed per second, so a quiet route can still retry.
    pub min_retries_per_second: u32,
}

impl Default for RetryBudgetSection {
    fn default() -> Self {
        let core = RetryBudgetConfig::default();
        Self {
            ratio: core.ratio,
            window_secs: core.window_seconds,
            min_retries_per_second: core.min_retries_per_second,
        }
    }
}

impl RetryBudgetSection {
    pub fn to_core(&self) -> RetryBudgetConfig {
        RetryBudgetConfig {
            ratio: self.ratio,
            window_seconds: self.window_secs,
            min_retries_per_second: self.min_retries_per_second,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StrategyConfig {
    /// Smooth weighted round-robin.
    Weighted,
    /// Fewest calls in flight (per unit of weight).
    LeastBusy,
    /// Power of two choices on peak-EWMA latency.
    PeakEwma,
}

/// A group of interchangeable providers, balanced; tripped members are skipped, and when every member is
/// tripped a trickle (one call per `panic_interval_ms`) goes to the least recently failed one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSection {
    pub name: String,
    #[serde(default = "default_strategy")]
    pub strategy: StrategyConfig,
    pub members: Vec<GroupMemberSection>,
    #[serde(default = "default_panic_interval_ms")]
    pub panic_interval_ms: u64,
}

fn default_strategy() -> StrategyConfig {
    StrategyConfig::Weighted
}

fn default_panic_interval_ms() -> u64 {
    1000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupMemberSection {
    pub provider: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

impl GroupSection {
    pub fn balancer_config(&self) -> BalancerConfig {
        BalancerConfig {
            strategy: match self.strategy {
                StrategyConfig::Weighted => BalanceStrategy::Weighted,
                StrategyConfig::LeastBusy => BalanceStrategy::LeastBusy { ties: TieBreak::Random },
                StrategyConfig::PeakEwma => BalanceStrategy::PeakEwma,
            },
            panic_interval: Duration::from_millis(self.panic_interval_ms),
            ..BalancerConfig::default()
        }
    }

    pub fn members(&self) -> Vec<GroupMember> {
        self.members.iter().map(|m| GroupMember::new(m.provider.clone(), m.weight)).collect()
    }
}

impl RouteSection {
    pub fn chains(&self) -> FallbackChains {
        FallbackChains {
            generic: self.providers.clone(),
            context_window: self.context_window_fallbacks.clone(),
            content_policy: self.content_policy_fallbacks.clone(),
            max_depth: self.max_fallback_depth,
        }
    }
}

impl NodeConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let mut config = Self::from_toml(&text)?;
        config.base_dir = path.parent().map(Path::to_path_buf);
        config.source = Some(path.to_owned());
        Ok(config)
    }

    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: NodeConfig = toml::from_str(text).map_err(|e| ConfigError::Parse { message: e.to_string() })?;
        config.validate()?;
        Ok(config)
    }

    pub fn has_role(&self, role: Role) -> bool {
        self.node.roles.contains(&role)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let node = &self.node;
        if !node.name.is_empty() && !is_valid_token(&node.name) {
            return Err(invalid("node.name", "use 1 to 64 characters of [A-Za-z0-9_-]"));
        }
        if !is_valid_token(&node.namespace) {
            return Err(invalid("node.namespace", "use 1 to 64 characters of [A-Za-z0-9_-]"));
        }
        if node.roles.is_empty() {
            return Err(invalid("node.roles", "a node needs at least one role (router, providers)"));
        }
        if node.max_payload_bytes < 1024 {
            return Err(invalid("node.max_payload_bytes", "must be at least 1024"));
        }
        if node.default_deadline_ms == 0 || node.default_deadline_ms > switchyard_protocol::client::MAX_DEADLINE_MS {
            return Err(invalid("node.default_deadline_ms", "must be between 1 and 600000"));
        }
        if node.worker_threads == Some(0) {
            return Err(invalid("node.worker_threads", "must be at least 1 (leave it out for one per core)"));
        }
        if node.max_in_flight_queries == 0 {
            return Err(invalid("node.max_in_flight_queries", "must be positive"));
        }
        self.nats.validate()?;
        if node.max_in_flight_bytes < node.max_payload_bytes {
            return Err(invalid("node.max_in_flight_bytes", "must be at least node.max_payload_bytes"));
        }
        if node.max_queue_wait_ms == 0 {
            return Err(invalid("node.max_queue_wait_ms", "must be positive"));
        }
        if node.dedup_max_answers == 0 || node.dedup_max_waiters == 0 || node.dedup_max_answer_bytes == 0 {
            return Err(invalid("node.dedup_max_answers", "the dedup_max_* bounds must be positive"));
        }
        if node.call_keepalive_ms != 0 && node.call_keepalive_ms < 10 {
            return Err(invalid("node.call_keepalive_ms", "must be 0 (off) or at least 10"));
        }
        if node.idempotency_lease_ms < 30 {
            return Err(invalid("node.idempotency_lease_ms", "must be at least 30"));
        }
        if node.idempotency_retention_ms < node.idempotency_lease_ms {
            return Err(invalid("node.idempotency_retention_ms", "must be at least node.idempotency_lease_ms"));
        }
        if let Some(redis) = &self.redis {
            redis.validate()?;
            if redis.call_timeout_ms == 0 || redis.call_timeout_ms > 5_000 {
                return Err(invalid("redis.call_timeout_ms", "must be between 1 and 5000"));
            }
            redis.validate_tls()?;
        }
        let cluster = &self.cluster;
        if cluster.min_reporting_nodes == 0 {
            return Err(invalid("cluster.min_reporting_nodes", "must be at least 1"));
        }
        if cluster.window_secs == 0 || cluster.window_secs > 3600 {
            return Err(invalid("cluster.window_secs", "must be between 1 and 3600"));
        }
        for (field, value) in [
            ("cluster.flush_interval_ms", cluster.flush_interval_ms),
            ("cluster.poll_interval_ms", cluster.poll_interval_ms),
            ("cluster.probe_lease_ms", cluster.probe_lease_ms),
        ] {
            if value == 0 {
                return Err(invalid(field, "must be positive"));
            }
        }
        if cluster.probe_lease_ms < MIN_PROBE_LEASE_MS {
            // Renewed every third of it, each renewal bounded by the store's timeout: shorter leases lapse under a
            // live holder.
            return Err(invalid("cluster.probe_lease_ms", "must be at least 300"));
        }
        if self.supervisor.backoff_base_ms == 0 {
            return Err(invalid("supervisor.backoff_base_ms", "must be positive"));
        }
        let mut names = HashSet::new();
        for (i, p) in self.providers.iter().enumerate() {
            let field = |f: &str| format!("providers[{i}].{f}");
            if !is_valid_token(&p.name) {
                return Err(invalid(field("name"), "use 1 to 64 characters of [A-Za-z0-9_-]"));
            }
            if !names.insert(p.name.as_str()) {
                return Err(invalid(field("name"), format!("duplicate provider `{}`", p.name)));
            }
            if !(p.base_url.starts_with("http://") || p.base_url.starts_with("https://")) {
                return Err(invalid(field("base_url"), "must start with http:// or https://"));
            }
            if p.model.is_empty() {
                return Err(invalid(field("model"), "must not be empty"));
            }
            let sources = [p.api_key.is_some(), p.api_key_env.is_some(), p.api_key_file.is_some()];
            if sources.iter().filter(|s| **s).count() > 1 {
                return Err(invalid(field("api_key"), "set at most one of api_key, api_key_env, api_key_file"));
            }
            if p.input_price_per_mtok < 0.0 || p.output_price_per_mtok < 0.0 {
                return Err(invalid(field("input_price_per_mtok"), "prices must not be negative"));
            }
            if p.timeout_ms == 0 {
                return Err(invalid(field("timeout_ms"), "must be positive"));
            }
            if p.max_in_flight == 0 {
                return Err(invalid(field("max_in_flight"), "must be positive"));
            }
            if let Err(e) = p.breaker.to_core().validate() {
                return Err(invalid(field(&format!("breaker.{}", e.field)), e.reason));
            }
        }
        let mut targets: HashSet<&str> = names.clone();
        for (i, g) in self.groups.iter().enumerate() {
            let field = |f: &str| format!("groups[{i}].{f}");
            if !is_valid_token(&g.name) {
                return Err(invalid(field("name"), "use 1 to 64 characters of [A-Za-z0-9_-]"));
            }
            if !targets.insert(g.name.as_str()) {
                return Err(invalid(field("name"), format!("`{}` is already a provider or a group", g.name)));
            }
            if let Some(unknown) = g.members.iter().find(|m| !names.contains(m.provider.as_str())) {
                return Err(invalid(field("members"), format!("unknown provider `{}`", unknown.provider)));
            }
            if let Err(e) = Balancer::new(g.balancer_config(), g.members()) {
                return Err(invalid(field(e.field), e.reason));
            }
        }
        if let Err(e) = self.retry_budget.to_core().validate() {
            return Err(invalid(format!("retry_budget.{}", e.field), e.reason));
        }
        let mut routes = HashSet::new();
        for (i, r) in self.routes.iter().enumerate() {
            if !is_valid_token(&r.name) {
                return Err(invalid(format!("routes[{i}].name"), "use 1 to 64 characters of [A-Za-z0-9_-]"));
            }
            if !routes.insert(r.name.as_str()) {
                return Err(invalid(format!("routes[{i}].name"), format!("duplicate route `{}`", r.name)));
            }
            if let Some(cascade) = &r.cascade {
                if !self.cascades.iter().any(|c| &c.name == cascade) {
                    return Err(invalid(format!("routes[{i}].cascade"), format!("unknown cascade `{cascade}`")));
                }
                if !r.providers.is_empty() {
                    return Err(invalid(format!("routes[{i}].providers"), "a cascade route names no providers"));
                }
                continue;
            }
            if r.router.is_some() && r.ensemble.is_some() {
                return Err(invalid(format!("routes[{i}].router"), "a route has a router or an ensemble, not both"));
            }
            if let Some(router) = &r.router
                && !self.routers.iter().any(|q| q.name() == router)
            {
                return Err(invalid(format!("routes[{i}].router"), format!("unknown router `{router}`")));
            }
            if let Some(ensemble) = &r.ensemble
                && !self.ensembles.iter().any(|e| &e.name == ensemble)
            {
                return Err(invalid(format!("routes[{i}].ensemble"), format!("unknown ensemble `{ensemble}`")));
            }
            let chosen = r.router.is_some() || r.ensemble.is_some();
            if r.providers.is_empty() && !chosen {
                return Err(invalid(format!("routes[{i}].providers"), "a route needs at least one provider"));
            }
            for (list, field) in [
                (&r.providers, "providers"),
                (&r.context_window_fallbacks, "context_window_fallbacks"),
                (&r.content_policy_fallbacks, "content_policy_fallbacks"),
            ] {
                if let Some(unknown) = list.iter().find(|p| !targets.contains(p.as_str())) {
                    let reason = format!("unknown provider or group `{unknown}`");
                    return Err(invalid(format!("routes[{i}].{field}"), reason));
                }
            }
            if let Err(e) = r.chains().validate()
                && !(chosen && e.field == "generic")
            {
                return Err(invalid(format!("routes[{i}].{}", e.field), e.reason));
            }
            if let Err(e) = r.retry.to_core().validate() {
                return Err(invalid(format!("routes[{i}].retry.{}", e.field), e.reason));
            }
        }
        let mut cascades = HashSet::new();
        for (i, c) in self.cascades.iter().enumerate() {
            if !is_valid_token(&c.name) {
                return Err(invalid(format!("cascades[{i}].name"), "use 1 to 64 characters of [A-Za-z0-9_-]"));
            }
            if !cascades.insert(c.name.as_str()) {
                return Err(invalid(format!("cascades[{i}].name"), format!("duplicate cascade `{}`", c.name)));
            }
            if let Some((j, stage)) = c.stages.iter().enumerate().find(|(_, s)| !targets.contains(s.target.as_str())) {
                let reason = format!("unknown provider or group `{}`", stage.target);
                return Err(invalid(format!("cascades[{i}].stages[{j}].target"), reason));
            }
            if let Err(error) = Cascade::new(c.to_config()) {
                return Err(invalid(format!("cascades[{i}]"), error.to_string()));
            }
            if let Err(error) = c.health.validate() {
                return Err(invalid(format!("cascades[{i}].health"), error.to_string()));
            }
            if c.escalation_window_s == 0 || c.escalation_window_s > 3600 {
                return Err(invalid(format!("cascades[{i}].escalation_window_s"), "must be between 1 and 3600"));
            }
        }
        self.validate_quality(&targets)?;
        if self.has_role(Role::Cascade) && self.cascades.is_empty() {
            return Err(invalid("cascades", "a cascade node needs at least one cascade"));
        }
        if self.has_role(Role::Router) && self.routes.is_empty() {
            return Err(invalid("routes", "a router node needs at least one route"));
        }
        self.validate_http()?;
        Ok(())
    }
}

impl NodeConfig {
    /// Checks the ensembles and routers: unique names, known targets, rules that compile. A learned router's
    /// file is read when the node starts (`crate::quality::QualityRouting`), which checks its models' targets.
    fn validate_quality(&self, targets: &HashSet<&str>) -> Result<(), ConfigError> {
        let mut ensembles = HashSet::new();
        for (i, e) in self.ensembles.iter().enumerate() {
            let field = |f: &str| format!("ensembles[{i}].{f}");
            if !is_valid_token(&e.name) {
                return Err(invalid(field("name"), "use 1 to 64 characters of [A-Za-z0-9_-]"));
            }
            if targets.contains(e.name.as_str()) || !ensembles.insert(e.name.as_str()) {
                return Err(invalid(field("name"), format!("`{}` is already a provider, group or ensemble", e.name)));
            }
            if e.proposers.is_empty() {
                return Err(invalid(field("proposers"), "an ensemble needs at least one proposer"));
            }
            if let Some(unknown) = e.proposers.iter().chain([&e.aggregator]).find(|p| !targets.contains(p.as_str())) {
                let reason = format!("unknown provider or group `{unknown}`");
                let which = if unknown == &e.aggregator { "aggregator" } else { "proposers" };
                return Err(invalid(field(which), reason));
            }
            if e.k == Some(0) {
                return Err(invalid(field("k"), "must be at least 1"));
            }
            if e.min_proposals == 0 || e.min_proposals > e.k() {
                return Err(invalid(field("min_proposals"), "must be between 1 and k"));
            }
            if e.max_proposal_chars < 100 {
                return Err(invalid(field("max_proposal_chars"), "must be at least 100"));
            }
        }
        let known = |t: &str| targets.contains(t) || ensembles.contains(t);
        let mut routers = HashSet::new();
        for (i, r) in self.routers.iter().enumerate() {
            let field = |f: &str| format!("routers[{i}].{f}");
            if !is_valid_token(r.name()) {
                return Err(invalid(field("name"), "use 1 to 64 characters of [A-Za-z0-9_-]"));
            }
            if !routers.insert(r.name()) {
                return Err(invalid(field("name"), format!("duplicate router `{}`", r.name())));
            }
            match r {
                RouterSection::Rules(rules) => {
                    let compiled = RuleRouter::new(rules).map_err(|e| invalid(field("rules"), e.to_string()))?;
                    if let Some(unknown) = compiled.models().into_iter().find(|m| !known(m)) {
                        let reason = format!("unknown provider, group or ensemble `{unknown}`");
                        return Err(invalid(field("rules"), reason));
                    }
                }
                RouterSection::Learned(learned) => {
                    if let Some((_, unknown)) = learned.targets.iter().find(|(_, t)| !known(t)) {
                        let reason = format!("unknown provider, group or ensemble `{unknown}`");
                        return Err(invalid(field("targets"), reason));
                    }
                    if learned.threshold.is_some_and(|t| !t.is_finite()) {
                        return Err(invalid(field("threshold"), "must be a number"));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [node]
        name = "n1"
        [[providers]]
        name = "a"
        kind = "openai"
        base_url = "http://127.0.0.1:1/v1"
        model = "m"
        api_key = "sk-secret"
        [[routes]]
        name = "chat"
        providers = ["a"]
    "#;

    fn check_err(toml: &str, field: &str) {
        match NodeConfig::from_toml(toml) {
            Err(ConfigError::Invalid { field: f, .. }) => assert_eq!(f, field, "{toml}"),
            Err(ConfigError::Parse { message }) => assert!(message.contains(field), "{field} not in {message}"),
            other => panic!("expected an error naming {field}, got {other:?}"),
        }
    }

    #[test]
    fn a_good_config_loads_with_defaults() {
        let config = NodeConfig::from_toml(GOOD).expect("valid");
        assert_eq!(config.node.max_payload_bytes, 256 * 1024);
        assert!(config.has_role(Role::Router) && config.has_role(Role::Providers));
        assert_eq!(config.providers[0].max_in_flight, 512);
        assert_eq!(config.cluster.probe_lease_ms, 2000, "short, and renewed while the probe runs");
    }

    #[test]
    fn bad_configs_name_the_field() {
        check_err(&GOOD.replace("name = \"n1\"", "name = \"n1\"\nbogus = 1"), "bogus");
        check_err(&GOOD.replace("providers = [\"a\"]", "providers = [\"b\"]"), "routes[0].providers");
        check_err(&GOOD.replace("name = \"a\"", "name = \"a.b\""), "providers[0].name");
        check_err(&GOOD.replace("http://127.0.0.1:1/v1", "ftp://x"), "providers[0].base_url");
        check_err(&GOOD.replace("kind = \"openai\"", "kind = \"gemini\""), "gemini");
        check_err(&GOOD.replace("[[routes]]\n        name = \"chat\"\n        providers = [\"a\"]", ""), "routes");
        check_err(&format!("{GOOD}\n        [cluster]\n        probe_lease_ms = 299"), "cluster.probe_lease_ms");
        check_err(&GOOD.replace("name = \"n1\"", "name = \"n1\"\nworker_threads = 0"), "node.worker_threads");
    }

    #[test]
    fn routers_and_ensembles_name_known_targets() {
        let with = |extra: &str| format!("{GOOD}\n{extra}");
        let good = with(
            r#"
            [[routers]]
            kind = "rules"
            name = "by-length"
            default = "a"
            rules = [{ name = "long", model = "panel", min_chars = 100 }]
            [[ensembles]]
            name = "panel"
            proposers = ["a"]
            aggregator = "a"
            [[routes]]
            name = "routed"
            router = "by-length"
            [[routes]]
            name = "moa"
            ensemble = "panel"
            "#,
        );
        let config = NodeConfig::from_toml(&good).expect("a routed route needs no providers");
        assert_eq!(config.routers[0].name(), "by-length");
        assert_eq!(config.ensembles[0].k(), 1, "k defaults to every proposer");
        check_err(&good.replace("model = \"panel\"", "model = \"nowhere\""), "routers[0].rules");
        check_err(&good.replace("default = \"a\"", "default = \"a\"\n            bogus = 1"), "bogus");
        check_err(&good.replace("router = \"by-length\"", "router = \"other\""), "routes[1].router");
        check_err(&good.replace("ensemble = \"panel\"", "ensemble = \"other\""), "routes[2].ensemble");
        check_err(&good.replace("aggregator = \"a\"", "aggregator = \"b\""), "ensembles[0].aggregator");
        check_err(&good.replace("proposers = [\"a\"]", "proposers = [\"a\"]\n            k = 0"), "ensembles[0].k");
        let clash = "[[ensembles]]\nname = \"a\"\nproposers = [\"a\"]\naggregator = \"a\"";
        check_err(&format!("{good}\n{clash}"), "ensembles[1].name");
        check_err(
            &with("[[routers]]\nkind = \"learned\"\nname = \"l\"\nfile = \"r.json\"\ntargets = { weak = \"x\" }"),
            "routers[0].targets",
        );
    }

    #[test]
    fn nats_and_redis_take_one_server_or_a_cluster() {
        let with = |extra: &str| format!("{GOOD}\n{extra}");
        let nats = |config: &str| NodeConfig::from_toml(config).expect("valid").nats.servers();
        assert_eq!(nats(GOOD), [DEFAULT_NATS_URL]);
        assert_eq!(nats(&with("[nats]\nurl = \"nats://a:4222\"")), ["nats://a:4222"]);
        let three = with("[nats]\nurls = [\"nats://a:4222\", \"nats://b:4222\", \"tls://c:4222\"]");
        assert_eq!(nats(&three).len(), 3);
        check_err(&with("[nats]\nurl = \"nats://a:4222\"\nurls = [\"nats://b:4222\"]"), "nats.urls");
        check_err(&with("[nats]\nurls = []"), "nats.urls");
        check_err(&with("[nats]\nurls = [\"http://a:4222\"]"), "nats.urls");
        check_err(&with("[nats]\nurl = \"nats://a:4222,nats://b:4222\""), "nats.url");
        let debug = format!("{:?}", NodeConfig::from_toml(&with("[nats]\nurls = [\"nats://u:pw-SECRET@a:4222\"]")));
        assert!(!debug.contains("pw-SECRET"), "{debug}");

        let cluster = with("[redis]\ncluster_urls = [\"redis://a:7000\", \"redis://b:7001\"]");
        assert_eq!(
            NodeConfig::from_toml(&cluster).expect("valid").redis.and_then(|r| r.cluster_urls).map(|u| u.len()),
            Some(2)
        );
        let sentinel = with("[redis]\nsentinel_urls = [\"redis://s:26379\"]\nsentinel_master = \"main\"");
        assert!(NodeConfig::from_toml(&sentinel).is_ok());
        check_err(&with("[redis]\nsentinel_urls = [\"redis://s:26379\"]"), "redis.sentinel_master");
        check_err(&with("[redis]\nsentinel_master = \"main\"\nurl = \"redis://a\""), "redis.sentinel_urls");
        check_err(&with("[redis]\nurl = \"redis://a\"\ncluster_urls = [\"redis://b\"]"), "redis.url");
        check_err(&with("[redis]\ncluster_urls = []"), "redis.cluster_urls");
        check_err(&with("[redis]\ncluster_urls = [\"redis://a\", \"rediss://b\"]"), "redis.cluster_urls");
        check_err(&with("[redis]\nkey_prefix = \"p:\""), "redis.url");
    }

    #[test]
    fn the_key_is_not_in_debug_output() {
        let config = NodeConfig::from_toml(GOOD).expect("valid");
        assert!(!format!("{config:?}").contains("sk-secret"));
    }
}
