//! What a router knows about its routes: fallback chains, retry policies, balanced groups, the retry budget.
//!
//! Built once from the configuration and shared by every query task of a node. A chain entry names a provider
//! or a group; a group is balanced by its `Balancer` (core), with members a router has seen refused by their
//! breaker left out until the refusal's `retry_after` passes. When every member is out, the balancer's panic
//! mode lets one call per interval through to the least recently failed member, past its breaker. Each
//! provider's recent latencies feed the route's hedge delay (`switchyard_core::hedge`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use switchyard_core::{
    Balancer, ClusterPhase, FallbackChains, HedgePolicy, LatencyWindow, Pick, RetryBudget, RetryPolicy,
};

use crate::actors::state_sync::ClusterGates;

use crate::config::NodeConfig;
use crate::telemetry::{QuerySeries, RouteCounters, Telemetry, WalkEvent};
use switchyard_protocol::admin::RouteStats;

/// One route: its chains and its retry policy.
pub struct RoutePlan {
    pub name: String,
    pub chains: FallbackChains,
    pub retry: RetryPolicy,
    pub hedge: HedgePolicy,
    /// The cascade that serves this route, instead of its chains.
    pub cascade: Option<String>,
    /// The quality router that chooses each query's first target (`crate::quality`).
    pub router: Option<String>,
    /// The ensemble that serves this route.
    pub ensemble: Option<String>,
}

impl RoutePlan {
    /// A plan that calls `target` only, without fallback: a cascade stage, a self-evaluation, an ensemble proposer.
    pub fn single(name: String, target: String, retry: RetryPolicy, hedge: HedgePolicy) -> RoutePlan {
        let chains = FallbackChains { generic: vec![target], max_depth: 1, ..FallbackChains::default() };
        RoutePlan { name, chains, retry, hedge, cascade: None, router: None, ensemble: None }
    }

    /// This plan with `target` tried first, then the route's chain without it (a quality router's choice).
    pub fn first(&self, target: &str) -> RoutePlan {
        let generic = std::iter::once(target.to_owned())
            .chain(self.chains.generic.iter().filter(|t| *t != target).cloned())
            .collect();
        RoutePlan {
            name: self.name.clone(),
            chains: FallbackChains { generic, ..self.chains.clone() },
            retry: self.retry,
            hedge: self.hedge,
            cascade: None,
            router: None,
            ensemble: None,
        }
    }
}

/// A balanced group, as one router node sees it.
struct GroupState {
    balancer: Balancer,
    unavailable_until: Vec<Option<Instant>>,
}

/// Which provider a chain entry resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    Provider {
        name: String,
        member: Option<(String, usize)>,
        bypass_breaker: bool,
    },
    /// Every member of the group is out and the trickle slot is taken.
    Unavailable {
        retry_after: Duration,
    },
}

/// All routes of a node, with the state they share.
pub struct Routing {
    routes: HashMap<String, Arc<RoutePlan>>,
    /// Each route's walk events, for `admin.stats`.
    counters: HashMap<String, RouteCounters>,
    /// Each route's metric series of answered queries.
    series: HashMap<String, QuerySeries>,
    telemetry: Arc<Telemetry>,
    groups: HashMap<String, Mutex<GroupState>>,
    budget: Mutex<RetryBudget>,
    /// Each provider's recent successful latencies, as this router saw them.
    latency: HashMap<String, Mutex<LatencyWindow>>,
    /// Each provider's refusal by the cluster's breaker: a plain chain entry is skipped until then, as a group
    /// member is.
    refused_until: HashMap<String, Mutex<Option<Instant>>>,
    /// The nodes seen answering for each provider, so a call one node refuses can go to another.
    hosts: HashMap<String, Mutex<Vec<String>>>,
    /// This node's copy of the cluster breakers, when it hosts providers: a remembered refusal ends as soon as the
    /// provider's cluster breaker is seen closed.
    gates: OnceLock<ClusterGates>,
}

/// The longest a plain chain entry's refusal is remembered: long enough to spare an open provider a call per
/// query, short enough that a recovered provider (or a probe) is not skipped for long.
const REFUSAL_MEMORY: Duration = Duration::from_millis(250);

/// Most nodes remembered per provider.
const MAX_HOSTS: usize = 64;

/// One default value per configured provider.
fn per_provider<T: Default>(config: &NodeConfig) -> HashMap<String, Mutex<T>> {
    config.providers.iter().map(|p| (p.name.clone(), Mutex::default())).collect()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Routing {
    /// Builds the routing of a validated configuration.
    pub fn from_config(config: &NodeConfig, telemetry: Arc<Telemetry>) -> Result<Routing, String> {
        let routes = config
            .routes
            .iter()
            .map(|r| {
                let plan = RoutePlan {
                    name: r.name.clone(),
                    chains: r.chains(),
                    retry: r.retry.to_core(),
                    hedge: r.hedge.to_core(),
                    cascade: r.cascade.clone(),
                    router: r.router.clone(),
                    ensemble: r.ensemble.clone(),
                };
                (r.name.clone(), Arc::new(plan))
            })
            .collect();
        let mut groups = HashMap::new();
        for g in &config.groups {
            let balancer = Balancer::new(g.balancer_config(), g.members()).map_err(|e| e.to_string())?;
            let size = balancer.len();
            groups.insert(g.name.clone(), Mutex::new(GroupState { balancer, unavailable_until: vec![None; size] }));
        }
        let budget = RetryBudget::new(config.retry_budget.to_core()).map_err(|e| e.to_string())?;
        let latency = per_provider(config);
        let refused_until = per_provider(config);
        let hosts = per_provider(config);
        let gates = OnceLock::new();
        let counters = config.routes.iter().map(|r| (r.name.clone(), RouteCounters::default())).collect();
        let series =
            config.routes.iter().map(|r| (r.name.clone(), telemetry.metrics.answered_query_series(&r.name))).collect();
        Ok(Routing {
            routes,
            counters,
            series,
            telemetry,
            groups,
            budget: Mutex::new(budget),
            latency,
            refused_until,
            hosts,
            gates,
        })
    }

    /// Counts a walk event of `route` (its counters and its metrics).
    pub fn count(&self, route: &str, event: WalkEvent) {
        if let Some(counters) = self.counters.get(route) {
            counters.count(event);
        }
        self.telemetry.metrics.walk(route, event);
    }

    /// The metric series of `route`'s answered queries.
    pub fn query_series(&self, route: &str) -> Option<&QuerySeries> {
        self.series.get(route)
    }

    /// Every route's counters, by name.
    pub fn route_stats(&self) -> Vec<RouteStats> {
        let mut out: Vec<RouteStats> = self.counters.iter().map(|(name, c)| c.stats(name)).collect();
        out.sort_by(|a, b| a.route.cmp(&b.route));
        out
    }

    /// The node's figures.
    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    /// Lets remembered refusals see this node's cluster breakers.
    pub fn attach_gates(&self, gates: ClusterGates) {
        let _ = self.gates.set(gates);
    }

    /// Remembers that `node` hosts `provider`.
    pub fn note_host(&self, provider: &str, node: &str) {
        let Some(hosts) = self.hosts.get(provider) else { return };
        let mut hosts = lock(hosts);
        if !hosts.iter().any(|h| h == node) {
            if hosts.len() == MAX_HOSTS {
                hosts.remove(0);
            }
            hosts.push(node.to_owned());
        }
    }

    /// Forgets `node` for `provider` (it no longer answers there).
    pub fn forget_host(&self, provider: &str, node: &str) {
        if let Some(hosts) = self.hosts.get(provider) {
            lock(hosts).retain(|h| h != node);
        }
    }

    /// A node known to host `provider`, other than those in `avoid`.
    pub fn other_host(&self, provider: &str, avoid: &[String], draw: f64) -> Option<String> {
        let hosts = lock(self.hosts.get(provider)?);
        let candidates: Vec<&String> = hosts.iter().filter(|h| !avoid.contains(h)).collect();
        let pick = (draw.clamp(0.0, 0.999_999) * candidates.len() as f64) as usize;
        candidates.get(pick).map(|h| (*h).clone())
    }

    /// Records the latency of a provider's successful call.
    pub fn observe_latency(&self, provider: &str, latency: Duration) {
        if let Some(window) = self.latency.get(provider) {
            lock(window).record(latency);
        }
    }

    /// How long an attempt on `provider` runs before `plan` hedges it; `None`: never.
    pub fn hedge_delay(&self, plan: &RoutePlan, provider: &str) -> Option<Duration> {
        let window = self.latency.get(provider)?;
        plan.hedge.delay_for(&lock(window))
    }

    pub fn route(&self, name: &str) -> Option<Arc<RoutePlan>> {
        self.routes.get(name).cloned()
    }

    pub fn route_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.routes.keys().cloned().collect();
        names.sort();
        names
    }

    pub fn record_request(&self, now: Instant) {
        lock(&self.budget).record_request(now);
    }

    pub fn try_retry(&self, now: Instant) -> bool {
        lock(&self.budget).try_withdraw(now)
    }

    /// Resolves a chain entry to a provider; picks a member (and records its start) for a group.
    pub fn resolve(&self, target: &str, now: Instant) -> Resolved {
        let Some(group) = self.groups.get(target) else {
            if let Some(until) = self.refused_until.get(target).and_then(|u| *lock(u))
                && until > now
            {
                let closed = self.gates.get().and_then(|g| g.with(target, |gate| gate.phase() == ClusterPhase::Closed));
                if closed != Some(true) {
                    return Resolved::Unavailable { retry_after: until - now };
                }
            }
            return Resolved::Provider { name: target.to_owned(), member: None, bypass_breaker: false };
        };
        let mut group = lock(group);
        let available: Vec<bool> = group.unavailable_until.iter().map(|u| u.is_none_or(|until| now >= until)).collect();
        let pick = group.balancer.pick(&available, (rand::random::<f64>(), rand::random::<f64>()), now);
        let (index, bypass_breaker) = match pick {
            Pick::Member(i) => (i, false),
            Pick::Panic(i) => (i, true),
            Pick::None { retry_after } => return Resolved::Unavailable { retry_after },
        };
        group.balancer.on_start(index);
        let name = group.balancer.name(index).unwrap_or_default().to_owned();
        Resolved::Provider { name, member: Some((target.to_owned(), index)), bypass_breaker }
    }

    /// Whether `target` (a provider or a group) can be called now, as far as this node knows: not a provider whose
    /// refusal by the cluster's breaker is remembered or whose cluster breaker this node sees open, not a group
    /// whose every member is out. Unknown targets count as available (the walk reports them).
    pub fn available(&self, target: &str, now: Instant) -> bool {
        match self.groups.get(target) {
            Some(group) => lock(group).unavailable_until.iter().any(|u| u.is_none_or(|until| now >= until)),
            None => self.provider_available(target, now),
        }
    }

    fn provider_available(&self, provider: &str, now: Instant) -> bool {
        let phase = self.gates.get().and_then(|g| g.with(provider, |gate| gate.phase()));
        match phase {
            Some(ClusterPhase::Closed | ClusterPhase::HalfOpen) => true,
            Some(ClusterPhase::Open { until }) if until <= now => true,
            Some(_) => false,
            None => self.refused_until.get(provider).and_then(|u| *lock(u)).is_none_or(|until| until <= now),
        }
    }

    /// The median of `target`'s recent successful latencies in milliseconds (a group: its fastest member's).
    pub fn latency_ms(&self, target: &str) -> Option<f64> {
        let median = |provider: &str| {
            let window = self.latency.get(provider)?;
            lock(window).quantile(0.5).map(|d| d.as_secs_f64() * 1000.0)
        };
        match self.groups.get(target) {
            Some(group) => {
                let group = lock(group);
                (0..group.balancer.len()).filter_map(|i| group.balancer.name(i).and_then(median)).min_by(f64::total_cmp)
            }
            None => median(target),
        }
    }

    /// Records that a retry of a group member starts (the first call is recorded by [`Routing::resolve`]).
    pub fn start(&self, member: &Option<(String, usize)>) {
        if let Some((group, index)) = member
            && let Some(group) = self.groups.get(group)
        {
            lock(group).balancer.on_start(*index);
        }
    }

    /// Records how a group member's call ended: `refused_for` when its breaker refused, `failed` for a failure
    /// that counts against its health.
    pub fn finish(
        &self,
        member: &Option<(String, usize)>,
        latency: Duration,
        failed: bool,
        refused_for: Option<Duration>,
    ) {
        let Some((group, index)) = member else { return };
        self.finish_member(group, *index, latency, failed, refused_for);
    }

    /// Records that the cluster's breaker refused `provider` for `wait`; a plain chain entry naming it is skipped
    /// until then, for at most [`REFUSAL_MEMORY`] and not once this node sees the breaker closed (a group member
    /// is remembered by [`Routing::finish`], and trickles in panic mode).
    pub fn refused(&self, provider: &str, wait: Duration) {
        if let Some(until) = self.refused_until.get(provider) {
            *lock(until) = Some(Instant::now() + wait.min(REFUSAL_MEMORY));
        }
    }

    fn finish_member(&self, group: &str, index: usize, latency: Duration, failed: bool, refused_for: Option<Duration>) {
        let Some(group) = self.groups.get(group) else { return };
        let mut group = lock(group);
        let now = Instant::now();
        group.balancer.on_end(index, latency, now);
        if failed {
            group.balancer.on_failure(index, now);
        }
        if let Some(slot) = group.unavailable_until.get_mut(index) {
            *slot = refused_for.map(|wait| now + wait);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routing() -> Routing {
        let config = NodeConfig::from_toml(
            r#"
            [[providers]]
            name = "a"
            kind = "openai"
            base_url = "http://127.0.0.1:1/v1"
            model = "m"
            [[providers]]
            name = "b"
            kind = "openai"
            base_url = "http://127.0.0.1:1/v1"
            model = "m"
            [[groups]]
            name = "pool"
            members = [{ provider = "a", weight = 1 }, { provider = "b", weight = 1 }]
            [[routes]]
            name = "chat"
            providers = ["pool", "a"]
            "#,
        )
        .expect("valid");
        Routing::from_config(&config, Arc::default()).expect("routing")
    }

    #[test]
    fn a_provider_resolves_to_itself_and_a_group_to_a_member() {
        let routing = routing();
        let now = Instant::now();
        assert_eq!(
            routing.resolve("a", now),
            Resolved::Provider { name: "a".into(), member: None, bypass_breaker: false }
        );
        let picks: Vec<String> = (0..4)
            .map(|_| match routing.resolve("pool", now) {
                Resolved::Provider { name, .. } => name,
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(picks.contains(&"a".to_owned()) && picks.contains(&"b".to_owned()), "{picks:?}");
    }

    #[test]
    fn refused_members_are_skipped_and_a_dead_group_trickles() {
        let routing = routing();
        let now = Instant::now();
        let refused = Some(Duration::from_secs(30));
        routing.finish(&Some(("pool".into(), 0)), Duration::from_millis(1), true, refused);
        for _ in 0..3 {
            assert!(matches!(routing.resolve("pool", now), Resolved::Provider { ref name, .. } if name == "b"));
        }
        routing.finish(&Some(("pool".into(), 1)), Duration::from_millis(1), true, refused);
        let first = routing.resolve("pool", now);
        assert!(matches!(first, Resolved::Provider { bypass_breaker: true, .. }), "{first:?}");
        assert!(matches!(routing.resolve("pool", now), Resolved::Unavailable { .. }), "one trickle per interval");
    }
}
