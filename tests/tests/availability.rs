//! Availability across the cluster (issue 3): breakers the nodes agree on, through the real Redis and NATS,
//! with three nodes that each have their own connections.
//!
//! The checks that share breaker state run twice (issue 9): on the shared Redis, and on a Redis Cluster of three
//! masters (`SWITCHYARD_REDIS_CLUSTER_URLS`, set by `deploy/test.sh`, else a private cluster the test starts), as
//! modules `<check>::redis_local` and `<check>::redis_cluster`. On the shared Redis they also run with every
//! router calling its own node's providers over NATS (`<check>::redis_over_nats`, `node.local_calls = false`):
//! the shortcut must trip, probe and cool down exactly like the bus. The checks that kill or pause Redis use a
//! server of their own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use switchyard_core::BreakerState;
use switchyard_e2e::{Calls, PRIMARY_MODEL, TestCluster, ask};
use switchyard_mock::{Behavior, MockConfig, MockError, MockServer};
use switchyard_protocol::client::QueryOutcome;
use switchyard_state::RedisEndpoint;
use switchyard_testkit::{ServerProcess, eventually};

fn answered(outcome: &anyhow::Result<QueryOutcome>) -> bool {
    matches!(outcome, Ok(QueryOutcome::Reply(_)))
}

/// Runs the check `$check(redis: RedisEndpoint, path: Calls)` on the shared Redis with local calls and over
/// NATS, and on a Redis Cluster with local calls (the call path and the store are independent of each other).
macro_rules! on_redis_and_redis_cluster {
    ($($check:ident),* $(,)?) => {
        $(
            mod $check {
                use super::Calls;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn redis_local() {
                    super::$check(switchyard_testkit::redis_url().into(), Calls::Local).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn redis_over_nats() {
                    super::$check(switchyard_testkit::redis_url().into(), Calls::OverNats).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn redis_cluster() {
                    let cluster = switchyard_testkit::RedisCluster::shared_or_start().unwrap();
                    super::$check(super::RedisEndpoint::Cluster(cluster.urls.clone()), Calls::Local).await;
                }
            }
        )*
    };
}

on_redis_and_redis_cluster!(
    a_hard_down_provider_trips_the_whole_cluster_and_then_sees_only_probes,
    one_bad_node_does_not_trip_the_provider_for_the_others,
    a_429_with_retry_after_keeps_every_node_away_until_the_deadline,
    a_recovering_provider_gets_exactly_one_probe_while_many_queries_wait,
    a_later_longer_retry_after_extends_the_cooldown,
);

async fn a_hard_down_provider_trips_the_whole_cluster_and_then_sees_only_probes(redis: RedisEndpoint, path: Calls) {
    let cluster = TestCluster::start_with(3, redis, |_, config| path.apply(config)).await.unwrap();
    cluster.mock.set_behavior(PRIMARY_MODEL, Behavior::failing(MockError::status(503)));

    // Drive traffic until every node refuses the dead provider; every query is still answered, by the fallback.
    let trip = cluster.drive_until_tripped("chat", "primary", 500).await.unwrap();
    let (mut sent, mut ok) = (trip.sent, trip.answered);
    eprintln!("cluster trip after {sent} queries; from the first node to all 3 refusing: {:?}", trip.spread);

    // While open, only the cluster's probes reach the provider: at most one per open interval (300 ms growing to
    // 1 s here), however many queries and nodes.
    let calls_at_trip = cluster.mock.calls(PRIMARY_MODEL);
    let window = Duration::from_millis(2500);
    let started = Instant::now();
    while started.elapsed() < window {
        sent += 1;
        ok += u32::from(answered(&cluster.query("chat", &ask(&format!("q{sent}"))).await));
    }
    let probes = cluster.mock.calls(PRIMARY_MODEL) - calls_at_trip;
    eprintln!("{probes} probe calls in {window:?} while the provider was down, {sent} queries, {ok} answered");
    // Intervals after the trip: 300 ms, 600 ms, 1 s, 1 s ... (jittered down by up to 20 %): at most 5 in 2.5 s.
    assert!(probes >= 1, "a probe must test the provider after the open interval");
    assert!(probes <= 5, "{probes} calls reached the dead provider: more than one probe per interval");
    assert!(f64::from(ok) / f64::from(sent) >= 0.995, "{ok} of {sent} answered");

    // The provider heals: the next probe closes the breaker for everyone.
    cluster.mock.clear_behavior(PRIMARY_MODEL);
    eventually("every node sees the cluster breaker closed", Duration::from_secs(10), || async {
        let _ = cluster.query("chat", &ask("heal")).await;
        cluster.cluster_breakers("primary").await.iter().all(|s| *s == Some(BreakerState::Closed)).then_some(())
    })
    .await
    .unwrap();
    cluster.shutdown().await;
}

async fn one_bad_node_does_not_trip_the_provider_for_the_others(redis: RedisEndpoint, path: Calls) {
    // node-1 reaches the primary through a broken path (its own mock, failing); the others reach a healthy one.
    let broken = MockServer::start(MockConfig::default()).await.unwrap();
    broken.set_behavior(PRIMARY_MODEL, Behavior::failing(MockError::status(502)));
    let broken_url = broken.openai_base_url();
    let cluster = TestCluster::start_with(3, redis, |i, config| {
        let mut config = path.apply(config);
        if i == 1 {
            config.providers[0].base_url = broken_url.clone();
        }
        config
    })
    .await
    .unwrap();
    for i in 0..150 {
        assert!(answered(&cluster.query("chat", &ask(&format!("q{i}"))).await));
    }
    assert!(broken.calls(PRIMARY_MODEL) >= 4, "node-1's calls must have failed enough to trip its own breaker");
    let states = cluster.cluster_breakers("primary").await;
    assert!(states.iter().all(|s| *s == Some(BreakerState::Closed)), "one bad node tripped the cluster: {states:?}");
    let local: Vec<Option<BreakerState>> = {
        let mut out = Vec::new();
        for node in &cluster.nodes {
            let h = node.health().await;
            out.push(h.providers.iter().find(|p| p.name == "primary").unwrap().breaker);
        }
        out
    };
    assert_ne!(local[0], Some(BreakerState::Closed), "node-1's own breaker protects its own calls");
    let before = cluster.mock.calls(PRIMARY_MODEL);
    for i in 0..30 {
        cluster.query("chat", &ask(&format!("after {i}"))).await.unwrap();
    }
    assert!(cluster.mock.calls(PRIMARY_MODEL) > before, "the healthy nodes keep using the provider");
    cluster.shutdown().await;
    broken.shutdown().await;
}

async fn a_429_with_retry_after_keeps_every_node_away_until_the_deadline(redis: RedisEndpoint, path: Calls) {
    let cluster = TestCluster::start_with(3, redis, |_, config| path.apply(config)).await.unwrap();
    cluster.mock.set_behavior(PRIMARY_MODEL, Behavior::failing(MockError::rate_limited_ms(3000)));
    // The first call meets the 429; the cooldown reaches every node.
    assert!(answered(&cluster.query("chat", &ask("first")).await));
    eventually("every node honours the cooldown", Duration::from_secs(3), || async {
        cluster.cluster_breakers("primary").await.iter().all(|s| *s == Some(BreakerState::Open)).then_some(())
    })
    .await
    .unwrap();
    let calls = cluster.mock.calls(PRIMARY_MODEL);
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        assert!(answered(&cluster.query("chat", &ask("during")).await));
    }
    assert_eq!(cluster.mock.calls(PRIMARY_MODEL), calls, "no call may reach a provider before its Retry-After");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_loses_no_query_and_the_nodes_report_degraded_then_recover() {
    let redis = ServerProcess::redis().unwrap();
    let port = redis.port;
    let url = format!("redis://127.0.0.1:{port}");
    let cluster = TestCluster::start_with(2, &url, |_, config| config).await.unwrap();
    let mut sent = 0;
    let id_query = |i: usize| {
        let mut q = ask(&format!("q{i}"));
        q.id = Some(format!("id-{i}"));
        q
    };
    for _ in 0..20 {
        sent += 1;
        assert!(answered(&cluster.query("chat", &id_query(sent)).await));
    }
    drop(redis); // SIGKILL
    // Queries keep being answered (idempotency falls back to the node, breakers to the local ones).
    for _ in 0..40 {
        sent += 1;
        let started = Instant::now();
        assert!(answered(&cluster.query("chat", &id_query(sent)).await), "query {sent} lost while Redis is down");
        assert!(started.elapsed() < Duration::from_secs(1), "a dead Redis must not hold a query");
    }
    eventually("the nodes report themselves degraded", Duration::from_secs(5), || async {
        let mut all = true;
        for node in &cluster.nodes {
            all &= node.health().await.degraded;
        }
        all.then_some(())
    })
    .await
    .unwrap();
    let _redis = ServerProcess::redis_on(port).unwrap();
    eventually("the nodes reconcile with Redis", Duration::from_secs(10), || async {
        let mut healthy = true;
        for node in &cluster.nodes {
            healthy &= !node.health().await.degraded;
        }
        healthy.then_some(())
    })
    .await
    .unwrap();
    for _ in 0..10 {
        sent += 1;
        assert!(answered(&cluster.query("chat", &id_query(sent)).await));
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_redis_bounds_query_latency_by_its_timeout() {
    let redis = ServerProcess::redis().unwrap();
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let cluster = TestCluster::start_with(2, &url, |_, config| config).await.unwrap();
    let mut q = ask("warm");
    q.id = Some("warm".into());
    assert!(answered(&cluster.query("chat", &q).await));
    redis.signal("STOP").unwrap();
    let mut worst = Duration::ZERO;
    for i in 0..20 {
        let mut q = ask(&format!("paused {i}"));
        q.id = Some(format!("paused-{i}"));
        let started = Instant::now();
        let outcome = cluster.query("chat", &q).await;
        worst = worst.max(started.elapsed());
        assert!(answered(&outcome));
    }
    redis.signal("CONT").unwrap();
    eprintln!("worst query latency with Redis paused: {worst:?}");
    // One bounded Redis call (50 ms) per idempotent query, plus the query itself.
    assert!(worst < Duration::from_millis(500), "worst {worst:?}");
    cluster.shutdown().await;
}

async fn a_recovering_provider_gets_exactly_one_probe_while_many_queries_wait(redis: RedisEndpoint, path: Calls) {
    let cluster = TestCluster::start_with(3, redis, |_, config| path.apply(config)).await.unwrap();
    cluster.mock.set_behavior(PRIMARY_MODEL, Behavior::failing(MockError::status(503)));
    cluster.drive_until_tripped("chat", "primary", 500).await.unwrap();
    // It heals, but slowly: a probe takes 300 ms, during which a herd of queries keeps arriving on every node.
    cluster.mock.set_behavior(PRIMARY_MODEL, Behavior::default().with_latency_ms(300));
    let before = cluster.mock.calls(PRIMARY_MODEL);
    // Queries arrive in bursts of 20 at once, spread over every node. The burst that meets the end of the open
    // interval sends the probe; it completes only when the probe has (join_all waits for the probe's 300 ms), so
    // the calls counted once that burst is answered are everything that reached the provider while the probe was
    // out: the probe alone.
    let mut during_probe = None;
    let mut n = 0;
    while during_probe.is_none() || n < 10 {
        let requests: Vec<_> = (0..20).map(|k| ask(&format!("herd {n} {k}"))).collect();
        let burst = requests.iter().map(|request| cluster.query("chat", request));
        for outcome in futures::future::join_all(burst).await {
            assert!(answered(&outcome));
        }
        let calls = cluster.mock.calls(PRIMARY_MODEL) - before;
        if during_probe.is_none() && calls > 0 {
            during_probe = Some(calls);
        }
        n += 1;
        assert!(n < 400, "no probe came");
    }
    assert_eq!(during_probe, Some(1), "exactly one probe while the provider was being tested");
    eventually("the probe closed the breaker everywhere", Duration::from_secs(5), || async {
        cluster.cluster_breakers("primary").await.iter().all(|s| *s == Some(BreakerState::Closed)).then_some(())
    })
    .await
    .unwrap();
    cluster.shutdown().await;
}

async fn a_later_longer_retry_after_extends_the_cooldown(redis: RedisEndpoint, path: Calls) {
    let cluster = TestCluster::start_with(2, redis, |_, config| path.apply(config)).await.unwrap();
    let limited = |ms: u64| Behavior::failing(MockError::rate_limited_ms(ms));
    cluster.mock.set_behavior(PRIMARY_MODEL, limited(1000));
    assert!(answered(&cluster.query("chat", &ask("first")).await));
    // The next 429 (the probe after the first cooldown) asks for longer: 3 s.
    cluster.mock.set_behavior(PRIMARY_MODEL, limited(3000));
    let first_calls = cluster.mock.calls(PRIMARY_MODEL);
    let second_429 = eventually("the probe meets the second 429", Duration::from_secs(5), || async {
        let _ = cluster.query("chat", &ask("waiting")).await;
        (cluster.mock.calls(PRIMARY_MODEL) > first_calls).then(Instant::now)
    })
    .await
    .unwrap();
    let calls = cluster.mock.calls(PRIMARY_MODEL);
    while second_429.elapsed() < Duration::from_millis(2500) {
        assert!(answered(&cluster.query("chat", &ask("during")).await));
    }
    assert_eq!(cluster.mock.calls(PRIMARY_MODEL), calls, "the longer Retry-After must hold every node off");
    cluster.shutdown().await;
}
