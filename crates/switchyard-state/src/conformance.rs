//! One conformance suite that every [`BreakerStore`] implementation must pass.
//!
//! [`crate::MemoryStore`] stands in for Redis in the demo and in tests, which is only sound if it agrees with
//! the Redis store wherever a node could tell the difference. Each check here runs against both, through
//! [`state_conformance_suite!`](crate::state_conformance_suite) (after quickwit's `metastore_test_suite!`):
//!
//! ```no_run
//! switchyard_state::state_conformance_suite!(memory, || async { switchyard_state::conformance::Fixture::memory() });
//! # fn main() {}
//! ```
//!
//! A check gets a [`Fixture`]: several handles ("nodes") on one shared state and a way to move that state's
//! clock. For Redis the clock is moved with [`RedisStore::shift_clock`], an offset every script adds to Redis
//! `TIME`, so time-dependent checks (open waits, lease expiry, windows) are exact and instant on both stores.
//! A failed check panics, as a test should.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "conformance checks are test code: a failed expectation must panic"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{
    BreakerState, BreakerStore, ClusterView, EscalationCounts, ManualClock, MemoryStore, OpenWait, OutcomeBatch,
    ProbeDecision, RedisEndpoint, RedisOptions, RedisStore, ReportEffect, StateError, TripPolicy,
};

/// Generates one `#[tokio::test]` per conformance check in a module named `$name`.
///
/// `$fixture` is called as `$fixture().await` once per test and returns a [`Fixture`]. The calling crate needs
/// `tokio` (with `macros` and `rt-multi-thread`) and this crate's `testkit` feature.
#[macro_export]
macro_rules! state_conformance_suite {
    ($name:ident, $fixture:expr) => {
        $crate::__state_conformance_checks!(__state_conformance_tests, $name, $fixture);
    };
}

/// Generates one `#[tokio::test]` named `$name` that runs every conformance check in turn, each on a fresh
/// [`Fixture`] from the async closure `$fixture`, called with a reference to `$shared` (evaluated once, kept for
/// the whole test). For backends too slow to start once per check, such as a private Redis Cluster (a new
/// cluster master waits two seconds before it accepts writes). The name of each check is printed before it runs.
#[macro_export]
macro_rules! state_conformance_sequence {
    ($name:ident, $shared:expr, $fixture:expr) => {
        $crate::__state_conformance_checks!(__state_conformance_sequence, $name, $shared, $fixture);
    };
}

/// The one list of checks, handed to `$then` after its arguments.
#[doc(hidden)]
#[macro_export]
macro_rules! __state_conformance_checks {
    ($then:ident, $($args:tt)*) => {
        $crate::$then!(
            $($args)*,
            [
                fresh_provider_is_closed,
                get_many_keeps_order,
                one_node_never_trips,
                two_nodes_trip,
                trips_at_exactly_the_threshold,
                minimum_calls_before_any_rate,
                hard_error_trips_with_one_node,
                slow_calls_trip,
                outcomes_expire_with_the_window,
                stale_reports_change_nothing,
                concurrent_reports_trip_once,
                exactly_one_probe_lease,
                probe_lease_expires,
                probe_success_closes,
                probe_failure_reopens_longer,
                probe_result_needs_owner_and_epoch,
                rate_limit_extends_never_shortens,
                stale_rate_limit_never_reopens_a_closed_breaker,
                probe_lease_is_renewed_while_held,
                operator_commands_bump_epoch,
                escalation_counters,
                invalid_input_is_rejected,
            ]
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __state_conformance_tests {
    ($name:ident, $fixture:expr, [$($check:ident),* $(,)?]) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let fixture: $crate::conformance::Fixture = ($fixture)().await;
                    $crate::conformance::$check(&fixture).await;
                }
            )*
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __state_conformance_sequence {
    ($name:ident, $shared:expr, $fixture:expr, [$($check:ident),* $(,)?]) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let shared = $shared;
            let fixture = $fixture;
            $(
                eprintln!("conformance check {}", stringify!($check));
                let each: $crate::conformance::Fixture = fixture(&shared).await;
                $crate::conformance::$check(&each).await;
                drop(each);
            )*
        }
    };
}

/// Several handles on one shared state, and its clock.
pub struct Fixture {
    nodes: Vec<Arc<dyn BreakerStore>>,
    advance: Box<dyn Fn(Duration) + Send + Sync>,
    /// Dropped in order, after the nodes: key deletion before the servers it needs go away.
    _cleanup: Vec<Box<dyn Send + Sync>>,
}

impl Fixture {
    /// `nodes` share one state (at least one); `advance` moves its clock forward for all of them.
    pub fn new(nodes: Vec<Arc<dyn BreakerStore>>, advance: impl Fn(Duration) + Send + Sync + 'static) -> Self {
        assert!(!nodes.is_empty(), "a fixture needs at least one node");
        Fixture { nodes, advance: Box::new(advance), _cleanup: Vec::new() }
    }

    /// Keeps `guard` alive as long as the fixture, so its `Drop` can clean up after the check, even a failed one.
    /// Guards are dropped in the order they were added (a private server added last outlives the key deletion).
    pub fn with_cleanup(mut self, guard: impl Send + Sync + 'static) -> Self {
        self._cleanup.push(Box::new(guard));
        self
    }

    /// Three clones of one [`MemoryStore`] on a [`ManualClock`] starting at a realistic time.
    pub fn memory() -> Self {
        let clock = ManualClock::new(1_700_000_000_123);
        let store = MemoryStore::with_clock(Arc::new(clock.clone()));
        let nodes: Vec<Arc<dyn BreakerStore>> = (0..3).map(|_| Arc::new(store.clone()) as _).collect();
        Fixture::new(nodes, move |by| clock.advance(by))
    }

    /// Three [`RedisStore`]s, each with its own connection, on the Redis at `endpoint` (a URL, a Redis Cluster or
    /// Sentinels), under a key prefix no other test uses. Calls get a generous bound (2 s; timeouts are tested
    /// elsewhere) because the shared Redis may be busy with concurrent tests. Every key under the prefix is
    /// deleted when the fixture is dropped (on every cluster node; not behind Sentinels, whose servers tests own).
    pub async fn redis(endpoint: impl Into<RedisEndpoint>) -> Self {
        let endpoint = endpoint.into();
        let prefix = format!("{}:switchyard:v1:", unique_prefix("state"));
        let options = RedisOptions {
            key_prefix: prefix.clone(),
            call_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(5),
            ..RedisOptions::default()
        };
        let mut stores = Vec::new();
        for _ in 0..3 {
            match RedisStore::connect(endpoint.clone(), options.clone()).await {
                Ok(store) => stores.push(store),
                Err(error) => panic!("the Redis conformance tests need a Redis at {endpoint:?}: {error}"),
            }
        }
        let nodes: Vec<Arc<dyn BreakerStore>> = stores.iter().map(|store| Arc::new(store.clone()) as _).collect();
        let urls = match &endpoint {
            RedisEndpoint::Server(url) => vec![url.clone()],
            RedisEndpoint::Cluster(urls) => urls.clone(),
            RedisEndpoint::Sentinel { .. } => Vec::new(),
        };
        let cleanup: Vec<DeleteKeysOnDrop> =
            urls.into_iter().map(|url| DeleteKeysOnDrop { url, pattern: format!("{prefix}*") }).collect();
        Fixture::new(nodes, move |by| stores.iter().for_each(|store| store.shift_clock(by))).with_cleanup(cleanup)
    }

    /// Node `i` (modulo the number of handles).
    pub fn node(&self, i: usize) -> Arc<dyn BreakerStore> {
        self.nodes[i % self.nodes.len()].clone()
    }

    /// Moves the shared clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        (self.advance)(by);
    }
}

/// Deletes every key matching `pattern` from the Redis at `url` when dropped (synchronously, so it also runs
/// when a check panics). On a Redis Cluster, one per master: each deletes the keys its node holds, one by one.
pub struct DeleteKeysOnDrop {
    /// The Redis URL.
    pub url: String,
    /// A `SCAN MATCH` pattern such as `sytest:123:...:*`.
    pub pattern: String,
}

impl Drop for DeleteKeysOnDrop {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(self.url.as_str()) else { return };
        let Ok(mut connection) = client.get_connection_with_timeout(Duration::from_secs(2)) else { return };
        let mut cursor = 0u64;
        loop {
            let Ok((next, keys)) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&self.pattern)
                .arg("COUNT")
                .arg(1000)
                .query::<(u64, Vec<String>)>(&mut connection)
            else {
                return;
            };
            if !keys.is_empty() {
                let mut pipeline = redis::pipe();
                for key in &keys {
                    pipeline.cmd("DEL").arg(key).ignore();
                }
                let _ = pipeline.query::<()>(&mut connection);
            }
            if next == 0 {
                return;
            }
            cursor = next;
        }
    }
}

/// A prefix no other test (in this or another process) uses.
pub fn unique_prefix(check: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_nanos()).unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("sytest:{}:{nanos}:{n}:{check}", std::process::id())
}

const P: &str = "provider-a";
const BASE: Duration = Duration::from_secs(2);
const MAX: Duration = Duration::from_secs(16);

/// 10 s window, 50 %, 10 calls, 2 nodes, 1 hard error, 2 s doubling to 16 s.
pub fn policy() -> TripPolicy {
    TripPolicy {
        window: Duration::from_secs(10),
        failure_rate_threshold: 0.5,
        slow_call_rate_threshold: None,
        minimum_calls: 10,
        min_reporting_nodes: 2,
        hard_error_minimum: 1,
        wait: OpenWait::new(BASE, MAX),
    }
}

fn batch(epoch: u64, successes: u64, failures: u64) -> OutcomeBatch {
    OutcomeBatch { epoch, successes, failures, ..OutcomeBatch::default() }
}

fn ms(duration: Duration) -> u64 {
    duration.as_millis() as u64
}

async fn report(fx: &Fixture, node: usize, b: OutcomeBatch) -> (ReportEffect, ClusterView) {
    let outcome = fx.node(node).report(P, &format!("node-{node}"), b, &policy()).await.unwrap();
    (outcome.effect, outcome.view)
}

/// Trips `P` with two nodes' failures; returns the view after the trip.
async fn trip(fx: &Fixture) -> ClusterView {
    let epoch = fx.node(0).get(P).await.unwrap().epoch;
    report(fx, 0, batch(epoch, 0, 10)).await;
    let (effect, view) = report(fx, 1, batch(epoch, 0, 10)).await;
    assert_eq!(effect, ReportEffect::Tripped { hard_error: false });
    view
}

/// Trips `P`, waits out the open time and takes the lease as node 0; returns the grant's view.
async fn half_open(fx: &Fixture) -> ClusterView {
    let view = trip(fx).await;
    fx.advance(view.open_remaining);
    match fx.node(0).acquire_probe(P, "node-0", Duration::from_secs(5)).await.unwrap() {
        ProbeDecision::Granted(view) => view,
        ProbeDecision::Refused(view) => panic!("probe refused after the open wait: {view:?}"),
    }
}

pub async fn fresh_provider_is_closed(fx: &Fixture) {
    let view = fx.node(0).get(P).await.unwrap();
    assert_eq!(view.provider, P);
    assert_eq!(view.state, BreakerState::Closed);
    assert_eq!((view.epoch, view.consecutive_opens, view.open_until_ms, view.probe.clone()), (0, 0, None, None));
    assert!(!view.misconfigured && view.admits_calls());
    assert!(view.now_ms > 1_600_000_000_000, "the store's clock is Unix milliseconds: {}", view.now_ms);
    let probe = fx.node(1).acquire_probe(P, "node-1", Duration::from_secs(1)).await.unwrap();
    assert!(!probe.is_granted(), "a closed breaker has nothing to probe");
}

pub async fn get_many_keeps_order(fx: &Fixture) {
    trip(fx).await;
    let views = fx.node(2).get_many(&["other-x", P, "other-y"]).await.unwrap();
    let states: Vec<_> = views.iter().map(|view| (view.provider.as_str(), view.state)).collect();
    assert_eq!(states, [("other-x", BreakerState::Closed), (P, BreakerState::Open), ("other-y", BreakerState::Closed)]);
    let direct = fx.node(0).get(P).await.unwrap();
    assert_eq!((views[1].epoch, views[1].open_until_ms), (direct.epoch, direct.open_until_ms));
    assert!(fx.node(0).get_many(&[]).await.unwrap().is_empty());
}

pub async fn one_node_never_trips(fx: &Fixture) {
    for _ in 0..3 {
        let (effect, view) = report(fx, 0, batch(0, 0, 100)).await;
        assert_eq!((effect, view.state, view.epoch), (ReportEffect::Counted, BreakerState::Closed, 0));
    }
    // The same outcomes through one node handle but under another node's name do count as a second node.
    let one_node = TripPolicy { min_reporting_nodes: 1, ..policy() };
    let outcome = fx.node(0).report("single", "node-0", batch(0, 0, 10), &one_node).await.unwrap();
    assert_eq!(outcome.effect, ReportEffect::Tripped { hard_error: false }, "min_reporting_nodes is configurable");
}

pub async fn two_nodes_trip(fx: &Fixture) {
    let (effect, _) = report(fx, 0, batch(0, 0, 10)).await;
    assert_eq!(effect, ReportEffect::Counted);
    let (effect, view) = report(fx, 1, batch(0, 0, 10)).await;
    assert_eq!(effect, ReportEffect::Tripped { hard_error: false });
    assert_eq!((view.state, view.epoch, view.consecutive_opens), (BreakerState::Open, 1, 1));
    assert_eq!(view.open_until_ms, Some(view.now_ms + ms(BASE)), "open until store time + base wait");
    assert_eq!(view.open_remaining, BASE);
    assert!(!view.misconfigured && !view.admits_calls());
    let seen = fx.node(2).get(P).await.unwrap();
    assert_eq!((seen.state, seen.epoch, seen.open_until_ms), (BreakerState::Open, 1, view.open_until_ms));
    assert!(seen.open_remaining <= BASE);
    let (effect, _) = report(fx, 2, batch(1, 0, 10)).await;
    assert_eq!(effect, ReportEffect::Ignored, "an open breaker does not count outcomes");
}

pub async fn trips_at_exactly_the_threshold(fx: &Fixture) {
    assert_eq!(report(fx, 0, batch(0, 5, 5)).await.0, ReportEffect::Counted);
    assert_eq!(report(fx, 1, batch(0, 5, 4)).await.0, ReportEffect::Counted, "9 of 19 is below 50 %");
    assert_eq!(report(fx, 1, batch(0, 0, 1)).await.0, ReportEffect::Tripped { hard_error: false }, "10 of 20");
}

pub async fn minimum_calls_before_any_rate(fx: &Fixture) {
    assert_eq!(report(fx, 0, batch(0, 0, 2)).await.0, ReportEffect::Counted);
    assert_eq!(report(fx, 1, batch(0, 0, 2)).await.0, ReportEffect::Counted, "100 % of 4 calls, below minimum 10");
    assert_eq!(report(fx, 0, batch(0, 0, 5)).await.0, ReportEffect::Counted, "9 calls");
    assert_eq!(report(fx, 0, batch(0, 0, 1)).await.0, ReportEffect::Tripped { hard_error: false }, "10 calls");
}

pub async fn hard_error_trips_with_one_node(fx: &Fixture) {
    let hard = OutcomeBatch { hard_errors: 1, ..OutcomeBatch::new(0) };
    let (effect, view) = report(fx, 0, hard).await;
    assert_eq!(effect, ReportEffect::Tripped { hard_error: true });
    assert_eq!((view.state, view.epoch, view.consecutive_opens), (BreakerState::Open, 1, 1));
    assert!(view.misconfigured);
    fx.advance(view.open_remaining);
    let grant = fx.node(1).acquire_probe(P, "node-1", Duration::from_secs(5)).await.unwrap();
    assert!(fx.node(1).get(P).await.unwrap().misconfigured, "still misconfigured while probing");
    let closed = fx.node(1).probe_result(P, "node-1", grant.view().epoch, true, &policy().wait).await.unwrap();
    assert!(closed.changed && !closed.view.misconfigured, "closing clears the misconfigured flag");
    let off = TripPolicy { hard_error_minimum: 0, ..policy() };
    let outcome = fx.node(0).report("no-hard", "node-0", hard, &off).await.unwrap();
    assert_eq!(outcome.effect, ReportEffect::Counted, "hard_error_minimum 0 turns hard trips off");
}

pub async fn slow_calls_trip(fx: &Fixture) {
    let slow = OutcomeBatch { successes: 10, slow_calls: 5, ..OutcomeBatch::new(0) };
    let slow_policy = TripPolicy { slow_call_rate_threshold: Some(0.5), ..policy() };
    for (provider, policy, tripped) in [("slow-off", policy(), false), ("slow-on", slow_policy, true)] {
        fx.node(0).report(provider, "node-0", slow, &policy).await.unwrap();
        let outcome = fx.node(1).report(provider, "node-1", slow, &policy).await.unwrap();
        assert_eq!(outcome.effect == ReportEffect::Tripped { hard_error: false }, tripped, "{provider}");
    }
}

pub async fn outcomes_expire_with_the_window(fx: &Fixture) {
    assert_eq!(report(fx, 0, batch(0, 0, 10)).await.0, ReportEffect::Counted);
    fx.advance(Duration::from_secs(11));
    assert_eq!(report(fx, 1, batch(0, 0, 10)).await.0, ReportEffect::Counted, "node 0's failures left the window");
    fx.advance(Duration::from_secs(5));
    assert_eq!(report(fx, 0, batch(0, 0, 10)).await.0, ReportEffect::Tripped { hard_error: false });
}

pub async fn stale_reports_change_nothing(fx: &Fixture) {
    assert_eq!(report(fx, 0, batch(7, 0, 1)).await.0, ReportEffect::Counted, "a newer epoch is not stale");
    let tripped = trip(fx).await;
    let (effect, view) = report(fx, 2, batch(0, 0, 50)).await;
    assert_eq!(effect, ReportEffect::Stale);
    assert_eq!(view, ClusterView { now_ms: view.now_ms, open_remaining: view.open_remaining, ..tripped.clone() });
    let reset = fx.node(2).reset(P).await.unwrap();
    assert_eq!(reset.view.epoch, tripped.epoch + 1);
    for node in 0..2 {
        assert_eq!(report(fx, node, batch(tripped.epoch, 0, 10)).await.0, ReportEffect::Stale);
    }
    let epoch = reset.view.epoch;
    assert_eq!(report(fx, 0, batch(epoch, 0, 5)).await.0, ReportEffect::Counted);
    let (effect, view) = report(fx, 1, batch(epoch, 0, 4)).await;
    assert_eq!(effect, ReportEffect::Counted, "stale outcomes were not counted");
    assert_eq!((view.state, view.epoch), (BreakerState::Closed, epoch));
}

pub async fn concurrent_reports_trip_once(fx: &Fixture) {
    let one_each = TripPolicy { minimum_calls: 20, ..policy() };
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = fx.node(i);
            tokio::spawn(async move { store.report(P, &format!("node-{}", i % 2), batch(0, 0, 1), &one_each).await })
        })
        .collect();
    let mut trips = 0;
    for task in tasks {
        match task.await.unwrap().unwrap().effect {
            ReportEffect::Tripped { .. } => trips += 1,
            ReportEffect::Counted => {}
            other => panic!("unexpected effect {other:?}"),
        }
    }
    assert_eq!(trips, 1, "exactly the 20th call trips");
    assert_eq!(fx.node(0).get(P).await.unwrap().epoch, 1);
}

pub async fn exactly_one_probe_lease(fx: &Fixture) {
    let tripped = trip(fx).await;
    let early = fx.node(0).acquire_probe(P, "node-0", Duration::from_secs(5)).await.unwrap();
    assert!(!early.is_granted(), "refused before the open wait passed");
    assert_eq!(early.view().epoch, tripped.epoch);
    fx.advance(BASE);
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = fx.node(i);
            tokio::spawn(async move { store.acquire_probe(P, &format!("node-{i}"), Duration::from_secs(5)).await })
        })
        .collect();
    let mut granted = Vec::new();
    for task in tasks {
        if let ProbeDecision::Granted(view) = task.await.unwrap().unwrap() {
            granted.push(view);
        }
    }
    assert_eq!(granted.len(), 1, "exactly one probe lease among 20 acquirers: {granted:?}");
    let grant = &granted[0];
    let owner = grant.probe.as_ref().unwrap().owner.clone();
    assert_eq!((grant.state, grant.epoch), (BreakerState::HalfOpen, tripped.epoch + 1));
    assert_eq!(grant.probe.as_ref().unwrap().until_ms, grant.now_ms + 5000);
    let others = fx.node(0).acquire_probe(P, "someone-else", Duration::from_secs(5)).await.unwrap();
    assert!(!others.is_granted());
    assert_eq!(others.view().probe.as_ref().map(|lease| lease.owner.as_str()), Some(owner.as_str()));
    let again = fx.node(1).acquire_probe(P, &owner, Duration::from_secs(5)).await.unwrap();
    assert!(again.is_granted(), "the owner asking again gets its grant back");
    assert_eq!(again.view().epoch, grant.epoch, "without a new epoch");
}

pub async fn probe_lease_expires(fx: &Fixture) {
    let tripped = trip(fx).await;
    fx.advance(BASE);
    let first = fx.node(0).acquire_probe(P, "node-0", Duration::from_secs(1)).await.unwrap();
    assert!(first.is_granted());
    assert!(!fx.node(1).acquire_probe(P, "node-1", Duration::from_secs(1)).await.unwrap().is_granted());
    fx.advance(Duration::from_secs(1));
    let second = fx.node(1).acquire_probe(P, "node-1", Duration::from_secs(1)).await.unwrap();
    assert!(second.is_granted(), "an expired lease goes to the next node");
    assert_eq!(second.view().epoch, tripped.epoch + 2);
    let late = fx.node(0).probe_result(P, "node-0", first.view().epoch, true, &policy().wait).await.unwrap();
    assert!(!late.changed, "the first owner's late result is stale");
    assert_eq!(late.view.state, BreakerState::HalfOpen);
}

pub async fn probe_success_closes(fx: &Fixture) {
    let grant = half_open(fx).await;
    let closed = fx.node(0).probe_result(P, "node-0", grant.epoch, true, &policy().wait).await.unwrap();
    assert!(closed.changed);
    let view = &closed.view;
    assert_eq!((view.state, view.epoch, view.consecutive_opens), (BreakerState::Closed, grant.epoch + 1, 0));
    assert_eq!((view.open_until_ms, view.open_remaining, &view.probe), (None, Duration::ZERO, &None));
    // The failures that tripped the breaker are still inside the window unless closing cleared them.
    let (effect, _) = report(fx, 2, batch(view.epoch, 0, 1)).await;
    assert_eq!(effect, ReportEffect::Counted, "closing clears the outcome buckets");
    let again = fx.node(0).probe_result(P, "node-0", grant.epoch, true, &policy().wait).await.unwrap();
    assert!(!again.changed, "a repeated result changes nothing");
}

pub async fn probe_failure_reopens_longer(fx: &Fixture) {
    let mut grant = half_open(fx).await;
    for (opens, wait) in [(2, 4), (3, 8), (4, 16), (5, 16)] {
        let reopened = fx.node(0).probe_result(P, "node-0", grant.epoch, false, &policy().wait).await.unwrap();
        assert!(reopened.changed);
        let view = &reopened.view;
        assert_eq!((view.state, view.epoch, view.consecutive_opens), (BreakerState::Open, grant.epoch + 1, opens));
        assert_eq!(view.open_until_ms, Some(view.now_ms + wait * 1000), "opens {opens}: base doubled, capped");
        assert_eq!(view.probe, None);
        fx.advance(Duration::from_secs(wait - 1));
        assert!(!fx.node(1).acquire_probe(P, "node-1", Duration::from_secs(5)).await.unwrap().is_granted());
        fx.advance(Duration::from_secs(1));
        grant = fx.node(0).acquire_probe(P, "node-0", Duration::from_secs(5)).await.unwrap().view().clone();
        assert_eq!(grant.state, BreakerState::HalfOpen);
    }
    let jitter = OpenWait::new(BASE, MAX).with_jitter(Duration::from_millis(7));
    let reopened = fx.node(0).probe_result(P, "node-0", grant.epoch, false, &jitter).await.unwrap();
    assert_eq!(reopened.view.open_until_ms, Some(reopened.view.now_ms + 16_007), "jitter is added after the cap");
}

pub async fn probe_result_needs_owner_and_epoch(fx: &Fixture) {
    let grant = half_open(fx).await;
    let wait = policy().wait;
    let by_other = fx.node(1).probe_result(P, "node-1", grant.epoch, true, &wait).await.unwrap();
    assert!(!by_other.changed, "only the lease owner reports the probe");
    let wrong_epoch = fx.node(0).probe_result(P, "node-0", grant.epoch - 1, true, &wait).await.unwrap();
    assert!(!wrong_epoch.changed, "a result for another epoch is stale");
    assert_eq!(wrong_epoch.view.state, BreakerState::HalfOpen);
    let unknown = fx.node(0).probe_result("never-seen", "node-0", 0, true, &wait).await.unwrap();
    assert!(!unknown.changed && unknown.view.state == BreakerState::Closed);
}

pub async fn rate_limit_extends_never_shortens(fx: &Fixture) {
    let opened = fx.node(0).rate_limited(P, 0, Duration::from_secs(5)).await.unwrap();
    assert!(opened.changed);
    let view = &opened.view;
    assert_eq!((view.state, view.epoch, view.consecutive_opens), (BreakerState::Open, 1, 0));
    assert_eq!(view.open_until_ms, Some(view.now_ms + 5000));
    let deadline = view.open_until_ms;
    let shorter = fx.node(1).rate_limited(P, 0, Duration::from_secs(1)).await.unwrap();
    assert!(!shorter.changed, "a shorter Retry-After never shortens the cooldown");
    assert_eq!((shorter.view.epoch, shorter.view.open_until_ms), (1, deadline));
    let longer = fx.node(2).rate_limited(P, 0, Duration::from_secs(10)).await.unwrap();
    assert!(longer.changed);
    assert_eq!(longer.view.epoch, 2);
    assert_eq!(longer.view.open_until_ms, Some(longer.view.now_ms + 10_000));
    fx.advance(Duration::from_secs(9));
    assert!(!fx.node(0).acquire_probe(P, "node-0", Duration::from_secs(1)).await.unwrap().is_granted());
    fx.advance(Duration::from_secs(1));
    let grant = fx.node(0).acquire_probe(P, "node-0", Duration::from_secs(5)).await.unwrap();
    assert!(grant.is_granted(), "the cooldown ends at the extended deadline");
    let reopened = fx.node(1).rate_limited(P, 0, Duration::from_secs(3)).await.unwrap();
    assert!(reopened.changed, "a 429 on the probe re-opens");
    assert_eq!((reopened.view.state, reopened.view.epoch, &reopened.view.probe), (BreakerState::Open, 4, &None));
    assert_eq!(reopened.view.open_until_ms, Some(reopened.view.now_ms + 3000));
}

pub async fn stale_rate_limit_never_reopens_a_closed_breaker(fx: &Fixture) {
    let opened = fx.node(0).rate_limited(P, 0, Duration::from_secs(1)).await.unwrap();
    assert_eq!((opened.changed, opened.view.epoch), (true, 1));
    fx.advance(Duration::from_secs(1));
    let grant = fx.node(1).acquire_probe(P, "node-1", Duration::from_secs(1)).await.unwrap();
    let closed = fx.node(1).probe_result(P, "node-1", grant.view().epoch, true, &policy().wait).await.unwrap();
    assert_eq!((closed.view.state, closed.view.epoch), (BreakerState::Closed, 3));
    for epoch in [0, 1, 2] {
        let stale = fx.node(2).rate_limited(P, epoch, Duration::from_secs(30)).await.unwrap();
        assert!(!stale.changed, "a cooldown of epoch {epoch}, before the close at 3, is stale");
        assert_eq!((stale.view.state, stale.view.epoch), (BreakerState::Closed, 3));
    }
    let fresh = fx.node(2).rate_limited(P, 3, Duration::from_secs(2)).await.unwrap();
    assert!(fresh.changed, "a cooldown observed since the close opens");
    assert_eq!((fresh.view.state, fresh.view.epoch), (BreakerState::Open, 4));

    // A reset is a close too; after a trip, an older cooldown of the same closed spell still extends the open.
    let reset = fx.node(0).reset(P).await.unwrap();
    assert_eq!(reset.view.epoch, 5);
    let tripped = trip(fx).await;
    assert_eq!((tripped.epoch, tripped.open_remaining), (6, BASE));
    let extended = fx.node(1).rate_limited(P, 5, Duration::from_secs(10)).await.unwrap();
    assert!(extended.changed, "no close since epoch 5: the cooldown holds");
    assert_eq!((extended.view.epoch, extended.view.open_until_ms), (7, Some(extended.view.now_ms + 10_000)));
    let stale = fx.node(1).rate_limited(P, 4, Duration::from_secs(60)).await.unwrap();
    assert!(!stale.changed, "observed before the reset: stale even while open");
    assert_eq!(stale.view.open_until_ms, extended.view.open_until_ms);
}

pub async fn probe_lease_is_renewed_while_held(fx: &Fixture) {
    let lease = Duration::from_secs(1);
    let tripped = trip(fx).await;
    fx.advance(tripped.open_remaining);
    let grant = fx.node(0).acquire_probe(P, "node-0", lease).await.unwrap();
    let epoch = grant.view().epoch;
    assert!(grant.is_granted());
    fx.advance(Duration::from_millis(800));
    let renewed = fx.node(0).renew_probe(P, "node-0", epoch, lease).await.unwrap();
    let ProbeDecision::Granted(view) = &renewed else { panic!("the owner renews its live lease: {renewed:?}") };
    assert_eq!(view.epoch, epoch, "renewing is not a transition");
    assert_eq!(view.probe.as_ref().map(|l| l.until_ms), Some(view.now_ms + 1000));
    let shorter = fx.node(0).renew_probe(P, "node-0", epoch, Duration::from_millis(100)).await.unwrap();
    assert_eq!(shorter.view().probe, view.probe, "a renewal never shortens the lease");
    fx.advance(Duration::from_millis(800));
    assert!(!fx.node(1).acquire_probe(P, "node-1", lease).await.unwrap().is_granted(), "the renewed lease holds");
    assert!(!fx.node(1).renew_probe(P, "node-1", epoch, lease).await.unwrap().is_granted(), "only the owner renews");
    assert!(!fx.node(0).renew_probe(P, "node-0", epoch - 1, lease).await.unwrap().is_granted(), "of its epoch");
    fx.advance(Duration::from_millis(200));
    let lapsed = fx.node(0).renew_probe(P, "node-0", epoch, lease).await.unwrap();
    assert!(!lapsed.is_granted(), "a lapsed lease is lost, not renewed");
    assert_eq!(lapsed.view().epoch, epoch, "a refused renewal changes nothing");
    let taken = fx.node(1).acquire_probe(P, "node-1", lease).await.unwrap();
    assert!(taken.is_granted(), "a lapsed lease goes to the next node");
    assert_eq!(taken.view().epoch, epoch + 1);
    assert!(!fx.node(0).renew_probe(P, "node-0", epoch, lease).await.unwrap().is_granted());
    let closed = fx.node(1).probe_result(P, "node-1", epoch + 1, true, &policy().wait).await.unwrap();
    assert!(closed.changed);
    assert!(!fx.node(1).renew_probe(P, "node-1", epoch + 1, lease).await.unwrap().is_granted(), "nothing to renew");
}

pub async fn operator_commands_bump_epoch(fx: &Fixture) {
    let forced = fx.node(0).force_open(P).await.unwrap();
    assert!(forced.changed);
    assert_eq!((forced.view.state, forced.view.epoch), (BreakerState::ForcedOpen, 1));
    assert!(!forced.view.admits_calls());
    assert_eq!(report(fx, 1, batch(1, 0, 10)).await.0, ReportEffect::Ignored);
    fx.advance(Duration::from_secs(3600));
    assert!(!fx.node(1).acquire_probe(P, "node-1", Duration::from_secs(1)).await.unwrap().is_granted());
    assert!(!fx.node(1).rate_limited(P, 0, Duration::from_secs(5)).await.unwrap().changed);
    assert_eq!(fx.node(2).force_open(P).await.unwrap().view.epoch, 2, "every command bumps the epoch");

    let disabled = fx.node(1).disable(P).await.unwrap();
    assert_eq!((disabled.view.state, disabled.view.epoch), (BreakerState::Disabled, 3));
    assert!(disabled.view.admits_calls());
    report(fx, 0, batch(3, 0, 10)).await;
    let (effect, view) = report(fx, 1, batch(3, 0, 10)).await;
    assert_eq!((effect, view.state), (ReportEffect::Counted, BreakerState::Disabled), "disabled never trips");
    assert!(!fx.node(1).rate_limited(P, 0, Duration::from_secs(5)).await.unwrap().changed);

    let reset = fx.node(2).reset(P).await.unwrap();
    assert_eq!((reset.view.state, reset.view.epoch), (BreakerState::Closed, 4));
    let tripped = trip(fx).await;
    assert_eq!((tripped.epoch, tripped.consecutive_opens), (5, 1));
    let reset = fx.node(0).reset(P).await.unwrap();
    assert_eq!((reset.view.state, reset.view.epoch, reset.view.consecutive_opens), (BreakerState::Closed, 6, 0));
    assert_eq!(reset.view.open_until_ms, None);
}

pub async fn escalation_counters(fx: &Fixture) {
    let minute = Duration::from_secs(60);
    for escalated in [true, false, true, true] {
        fx.node(0).incr_escalation("summarize", 0, escalated).await.unwrap();
    }
    fx.node(1).add_escalations("summarize", 0, EscalationCounts { total: 6, escalated: 0 }).await.unwrap();
    fx.node(2).add_escalations("summarize", 1, EscalationCounts { total: 5, escalated: 5 }).await.unwrap();
    let stage0 = fx.node(2).escalation_rate("summarize", 0, minute).await.unwrap();
    assert_eq!(stage0, EscalationCounts { total: 10, escalated: 3 });
    assert_eq!(stage0.rate(), Some(0.3));
    let stage1 = fx.node(0).escalation_rate("summarize", 1, minute).await.unwrap();
    assert_eq!(stage1, EscalationCounts { total: 5, escalated: 5 });
    let other = fx.node(0).escalation_rate("translate", 0, minute).await.unwrap();
    assert_eq!((other, other.rate()), (EscalationCounts::default(), None));

    fx.advance(Duration::from_secs(30));
    fx.node(1).add_escalations("summarize", 0, EscalationCounts { total: 10, escalated: 5 }).await.unwrap();
    let recent = fx.node(0).escalation_rate("summarize", 0, Duration::from_secs(20)).await.unwrap();
    assert_eq!(recent, EscalationCounts { total: 10, escalated: 5 }, "a 20 s window is the last two buckets");
    let wider = fx.node(0).escalation_rate("summarize", 0, minute).await.unwrap();
    assert_eq!(wider, EscalationCounts { total: 20, escalated: 8 });

    fx.advance(Duration::from_secs(2 * 3600));
    let later = fx.node(0).escalation_rate("summarize", 0, Duration::from_secs(3600)).await.unwrap();
    assert_eq!(later, EscalationCounts::default(), "old buckets leave every window");
}

pub async fn invalid_input_is_rejected(fx: &Fixture) {
    let store = fx.node(0);
    let name_error = |result: Result<(), StateError>, kind: &str| match result {
        Err(StateError::InvalidName { kind: got, .. }) => assert_eq!(got, kind),
        other => panic!("expected an invalid {kind} name, got {other:?}"),
    };
    name_error(store.get("bad name").await.map(drop), "provider");
    name_error(store.get_many(&[P, "{tag}"]).await.map(drop), "provider");
    name_error(store.report(P, "node{0}", batch(0, 1, 0), &policy()).await.map(drop), "node");
    name_error(store.acquire_probe("", "node-0", Duration::from_secs(1)).await.map(drop), "provider");
    name_error(store.force_open("a\tb").await.map(drop), "provider");
    name_error(store.incr_escalation("", 0, true).await, "cascade");
    let config_error = |result: Result<(), StateError>, field: &str| match result {
        Err(StateError::Config { field: got, .. }) => assert_eq!(got, field),
        other => panic!("expected a config error on {field}, got {other:?}"),
    };
    let bad = TripPolicy { failure_rate_threshold: 1.5, ..policy() };
    config_error(store.report(P, "node-0", batch(0, 1, 0), &bad).await.map(drop), "failure_rate_threshold");
    config_error(store.acquire_probe(P, "node-0", Duration::ZERO).await.map(drop), "lease");
    config_error(store.renew_probe(P, "node-0", 0, Duration::ZERO).await.map(drop), "lease");
    name_error(store.renew_probe(P, "node 0", 0, Duration::from_secs(1)).await.map(drop), "node");
    let wait = OpenWait::new(Duration::ZERO, MAX);
    config_error(store.probe_result(P, "node-0", 0, true, &wait).await.map(drop), "wait.base");
    config_error(store.escalation_rate("c", 0, Duration::ZERO).await.map(drop), "window");
    config_error(store.escalation_rate("c", 0, Duration::from_secs(3601)).await.map(drop), "window");
    assert_eq!(store.get(P).await.unwrap().epoch, 0, "rejected calls change nothing");
}
