//! A node's figures: per-provider and per-route counters read by `admin.stats`, and the Prometheus registry
//! served on `node.metrics_addr`.
//!
//! The counters are shared atomics written where things happen (a call task as it ends, a query's walk as it
//! retries, falls back or hedges) and read as snapshots, so the admin topic never waits on an actor. A provider's
//! counters belong to its spec, not its actor, so they survive a restart of the actor. The Prometheus families
//! (`prometheus-client`, OpenMetrics text) carry the same events with labels, plus what only a scrape needs:
//! latency histograms of whole queries and of Switchyard's own overhead, breaker states and transitions, errors
//! of Redis and NATS, actor restarts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram as Hdr;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use switchyard_core::{BreakerState, FailureClass};
use switchyard_protocol::Usage;
use switchyard_protocol::admin::{ProviderStats, RouteStats};

const MAX_LATENCY_US: u64 = 3_600_000_000;

/// One provider's calls on this node, since the node started.
pub struct ProviderCounters {
    provider: String,
    calls: AtomicU64,
    successes: AtomicU64,
    failures: AtomicU64,
    rate_limited: AtomicU64,
    refused: AtomicU64,
    input_tokens: AtomicU64,
    output_tokens: AtomicU64,
    /// Cost in nano-USD, so it adds up exactly.
    cost_nano_usd: AtomicU64,
    /// Latency of answered calls, in microseconds (1 us to 1 h at 2 significant figures: a few kilobytes).
    latency_us: Mutex<Option<Hdr<u64>>>,
}

impl ProviderCounters {
    pub fn new(provider: &str) -> Self {
        ProviderCounters {
            provider: provider.to_owned(),
            calls: AtomicU64::new(0),
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            input_tokens: AtomicU64::new(0),
            output_tokens: AtomicU64::new(0),
            cost_nano_usd: AtomicU64::new(0),
            latency_us: Mutex::new(Hdr::new_with_bounds(1, MAX_LATENCY_US, 2).ok()),
        }
    }
}

/// How one call ended, for the counters.
pub enum CallEnd<'a> {
    Answered { latency: Duration, usage: &'a Usage, cost_usd: f64 },
    Failed { class: FailureClass },
}

impl ProviderCounters {
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// Counts a call admitted to the provider (it is counted again by [`ProviderCounters::record`] when it ends,
    /// unless it is cancelled: nobody waited for its end).
    pub fn started(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts how an admitted call ended.
    pub fn record(&self, end: CallEnd<'_>) {
        match end {
            CallEnd::Answered { latency, usage, cost_usd } => {
                self.successes.fetch_add(1, Ordering::Relaxed);
                self.input_tokens.fetch_add(usage.input_tokens, Ordering::Relaxed);
                self.output_tokens.fetch_add(usage.output_tokens, Ordering::Relaxed);
                self.cost_nano_usd.fetch_add((cost_usd.max(0.0) * 1e9).round() as u64, Ordering::Relaxed);
                let us = (latency.as_micros() as u64).clamp(1, MAX_LATENCY_US);
                if let Some(h) = self.latency_us.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
                    let _ = h.record(us);
                }
            }
            CallEnd::Failed { class } => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                if matches!(class, FailureClass::RateLimited { .. }) {
                    self.rate_limited.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Counts a call refused without calling upstream (breaker, in-flight limit).
    pub fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    pub fn successes(&self) -> u64 {
        self.successes.load(Ordering::Relaxed)
    }

    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    pub fn refusals(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// A snapshot for `admin.stats`; `uptime` turns counts into a rate.
    pub fn stats(&self, uptime: Duration) -> ProviderStats {
        let latency = self.latency_us.lock().unwrap_or_else(PoisonError::into_inner);
        let q = |q: f64| match latency.as_ref() {
            Some(h) if !h.is_empty() => h.value_at_quantile(q) as f64 / 1000.0,
            _ => 0.0,
        };
        let calls = self.calls();
        ProviderStats {
            provider: self.provider.clone(),
            calls,
            throughput: calls as f64 / uptime.as_secs_f64().max(1e-3),
            successes: self.successes(),
            failures: self.failures(),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
            refused: self.refusals(),
            p50_ms: q(0.5),
            p95_ms: q(0.95),
            p99_ms: q(0.99),
            input_tokens: self.input_tokens.load(Ordering::Relaxed),
            output_tokens: self.output_tokens.load(Ordering::Relaxed),
            cost_usd: self.cost_nano_usd.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// One route's walk events on this router node.
#[derive(Default)]
pub struct RouteCounters {
    queries: AtomicU64,
    retries: AtomicU64,
    fallbacks: AtomicU64,
    hedges: AtomicU64,
}

/// What a query's walk did, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalkEvent {
    Query,
    Retry,
    Fallback,
    Hedge,
}

impl RouteCounters {
    pub fn count(&self, event: WalkEvent) {
        let counter = match event {
            WalkEvent::Query => &self.queries,
            WalkEvent::Retry => &self.retries,
            WalkEvent::Fallback => &self.fallbacks,
            WalkEvent::Hedge => &self.hedges,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn stats(&self, route: &str) -> RouteStats {
        RouteStats {
            route: route.to_owned(),
            queries: self.queries.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            fallbacks: self.fallbacks.load(Ordering::Relaxed),
            hedges: self.hedges.load(Ordering::Relaxed),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    pub route: String,
    /// `ok`, or the error code.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    pub provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub provider: String,
    /// `success`, or the failure class.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BreakerLabels {
    pub provider: String,
    /// `local` or `cluster`.
    pub scope: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    pub provider: String,
    pub scope: String,
    pub to: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EscalationLabels {
    pub cascade: String,
    pub stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActorLabels {
    pub actor: String,
}

fn latency_histogram() -> Histogram {
    // 100 us to about 105 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 21))
}

/// The Prometheus families of a node.
pub struct Metrics {
    registry: Registry,
    pub queries: Family<QueryLabels, Counter>,
    pub query_seconds: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// A query's time in Switchyard: its whole latency less the upstream time of the attempt that answered.
    pub overhead_seconds: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub provider_calls: Family<CallLabels, Counter>,
    pub provider_seconds: Family<ProviderLabels, Histogram, fn() -> Histogram>,
    pub provider_tokens: Family<CallLabels, Counter>,
    pub retries: Family<RouteLabels, Counter>,
    pub fallbacks: Family<RouteLabels, Counter>,
    pub hedges: Family<RouteLabels, Counter>,
    pub escalations: Family<EscalationLabels, Counter>,
    /// 0 closed, 1 open, 2 half-open, 3 forced open, 4 disabled, 5 metrics only.
    pub breaker_state: Family<BreakerLabels, Gauge>,
    pub breaker_transitions: Family<TransitionLabels, Counter>,
    pub redis_errors: Counter,
    pub nats_errors: Counter,
    pub actor_restarts: Family<ActorLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("switchyard");
        let m = Metrics {
            queries: Family::default(),
            query_seconds: Family::new_with_constructor(latency_histogram),
            overhead_seconds: Family::new_with_constructor(latency_histogram),
            provider_calls: Family::default(),
            provider_seconds: Family::new_with_constructor(latency_histogram),
            provider_tokens: Family::default(),
            retries: Family::default(),
            fallbacks: Family::default(),
            hedges: Family::default(),
            escalations: Family::default(),
            breaker_state: Family::default(),
            breaker_transitions: Family::default(),
            redis_errors: Counter::default(),
            nats_errors: Counter::default(),
            actor_restarts: Family::default(),
            registry: Registry::default(),
        };
        registry.register("queries", "Queries answered, by route and outcome", m.queries.clone());
        registry.register("query_seconds", "Latency of whole queries", m.query_seconds.clone());
        registry.register(
            "overhead_seconds",
            "Time a query spent in Switchyard: its latency less the upstream time of the answering call",
            m.overhead_seconds.clone(),
        );
        registry.register("provider_calls", "Upstream calls, by provider and outcome", m.provider_calls.clone());
        registry.register("provider_seconds", "Latency of answered upstream calls", m.provider_seconds.clone());
        registry.register(
            "provider_tokens",
            "Tokens of answered calls, by provider and direction (outcome = input|output)",
            m.provider_tokens.clone(),
        );
        registry.register("retries", "Retries of the same provider", m.retries.clone());
        registry.register("fallbacks", "Moves to the next target of a route's chain", m.fallbacks.clone());
        registry.register("hedges", "Hedged attempts started beside a slow one", m.hedges.clone());
        registry.register("escalations", "Cascade escalations, by cascade and stage", m.escalations.clone());
        registry.register(
            "breaker_state",
            "Breaker state: 0 closed, 1 open, 2 half-open, 3 forced open, 4 disabled, 5 metrics only",
            m.breaker_state.clone(),
        );
        registry.register("breaker_transitions", "Breaker transitions, by new state", m.breaker_transitions.clone());
        registry.register("redis_errors", "Failed or timed-out calls to the shared store", m.redis_errors.clone());
        registry.register("nats_errors", "Failed publishes and requests on NATS", m.nats_errors.clone());
        registry.register("actor_restarts", "Restarts of supervised actors", m.actor_restarts.clone());
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// The OpenMetrics text of every family.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(%error, "cannot encode metrics");
        }
        out
    }

    /// Sets a breaker's state gauge and counts the transition.
    pub fn breaker(&self, provider: &str, scope: &str, state: BreakerState) {
        let code = match state {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
            BreakerState::ForcedOpen => 3,
            BreakerState::Disabled => 4,
            BreakerState::MetricsOnly => 5,
        };
        let labels = BreakerLabels { provider: provider.to_owned(), scope: scope.to_owned() };
        let previous = self.breaker_state.get_or_create(&labels).set(code);
        if previous != code {
            let to = TransitionLabels { provider: provider.to_owned(), scope: scope.to_owned(), to: state.to_string() };
            self.breaker_transitions.get_or_create(&to).inc();
        }
    }

    /// Counts a route's walk event.
    pub fn walk(&self, route: &str, event: WalkEvent) {
        let family = match event {
            WalkEvent::Query => return,
            WalkEvent::Retry => &self.retries,
            WalkEvent::Fallback => &self.fallbacks,
            WalkEvent::Hedge => &self.hedges,
        };
        family.get_or_create(&RouteLabels { route: route.to_owned() }).inc();
    }

    /// The series an answered call of `provider` updates.
    pub fn answered_series(&self, provider: &str) -> AnsweredSeries {
        let calls = |outcome: &str| CallLabels { provider: provider.to_owned(), outcome: outcome.to_owned() };
        // One statement each: a family's guard lives to the end of its statement, and a second lookup in the same
        // family while it is held would wait for it forever.
        let input_tokens = self.provider_tokens.get_or_create(&calls("input")).clone();
        let output_tokens = self.provider_tokens.get_or_create(&calls("output")).clone();
        let calls_ok = self.provider_calls.get_or_create(&calls("success")).clone();
        let seconds = self.provider_seconds.get_or_create(&ProviderLabels { provider: provider.to_owned() }).clone();
        AnsweredSeries { calls: calls_ok, seconds, input_tokens, output_tokens }
    }

    /// The series an answered query of `route` updates.
    pub fn answered_query_series(&self, route: &str) -> QuerySeries {
        let labels = RouteLabels { route: route.to_owned() };
        let ok = self.queries.get_or_create(&QueryLabels { route: route.to_owned(), outcome: "ok".into() }).clone();
        let seconds = self.query_seconds.get_or_create(&labels).clone();
        let overhead = self.overhead_seconds.get_or_create(&labels).clone();
        QuerySeries { ok, seconds, overhead }
    }
}

/// The series of a provider's answered calls, looked up once per provider actor: a lookup in a family hashes
/// and allocates its labels, and every call ends here.
pub struct AnsweredSeries {
    pub calls: Counter,
    pub seconds: Histogram,
    pub input_tokens: Counter,
    pub output_tokens: Counter,
}

/// The series of a route's answered queries, looked up once per route (a failed query looks its outcome up).
pub struct QuerySeries {
    pub ok: Counter,
    pub seconds: Histogram,
    pub overhead: Histogram,
}

/// A node's figures: its start, its metrics, and the counters `admin.stats` reads.
pub struct Telemetry {
    pub started: Instant,
    pub metrics: Metrics,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry { started: Instant::now(), metrics: Metrics::default() }
    }
}

/// The shared handle.
pub type SharedTelemetry = Arc<Telemetry>;

/// The wall clock in Unix milliseconds, for "when" fields operators read.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Writes the current span's trace context into NATS headers (W3C `traceparent`, `tracestate`), so the node
/// that handles the message continues the same trace. A no-op unless the process installed a propagator (the
/// binary does when an OTLP exporter is configured).
pub fn inject_trace(headers: &mut Vec<(String, String)>) {
    use opentelemetry::propagation::Injector;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    struct Headers<'a>(&'a mut Vec<(String, String)>);
    impl Injector for Headers<'_> {
        fn set(&mut self, key: &str, value: String) {
            self.0.push((key.to_owned(), value));
        }
    }
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&context, &mut Headers(headers)));
}

/// The trace context a message's headers carry (see [`inject_trace`]), to parent the span that handles it.
pub fn extract_trace(headers: &[(String, String)]) -> opentelemetry::Context {
    use opentelemetry::propagation::Extractor;

    struct Headers<'a>(&'a [(String, String)]);
    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_str())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.iter().map(|(k, _)| k.as_str()).collect()
        }
    }
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&Headers(headers)))
}
