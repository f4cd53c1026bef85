//! Cluster breaker honesty (issue 6, point 4), on the real NATS and Redis: the cluster's failure rate counts
//! every node's successes, and a half-open probe lease is short, renewed while its probe runs, and handed over
//! within about one lease when its holder dies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use switchyard_e2e::{PRIMARY_MODEL, TestCluster, ask, cluster_config, connect, unique_namespace};
use switchyard_mock::{Behavior, MockConfig, MockError, MockServer};
use switchyard_protocol::client::QueryOutcome;
use switchyard_protocol::subjects::Subjects;
use switchyard_runtime::{Node, NodeConfig, SharedState};
use switchyard_state::{BreakerState, BreakerStore, RedisOptions, RedisStore};
use switchyard_testkit::eventually;

fn answered(outcome: &anyhow::Result<QueryOutcome>) -> bool {
    matches!(outcome, Ok(QueryOutcome::Reply(_)))
}

/// Like `TestCluster::start_with`, but with a Redis call bound of `redis_timeout`: the lease test must not see
/// a node turn degraded (and let its local breaker probe on its own) because a loaded test machine was slow to
/// answer within the production 50 ms.
async fn start_cluster(
    nodes: usize,
    redis_timeout: Duration,
    adjust: impl Fn(usize, NodeConfig) -> NodeConfig,
) -> TestCluster {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let namespace = unique_namespace();
    let mut started = Vec::new();
    for i in 1..=nodes {
        let config = adjust(i, cluster_config(&mock, &namespace, &format!("node-{i}")).unwrap());
        let options = RedisOptions {
            key_prefix: format!("switchyard:test:{namespace}:"),
            call_timeout: redis_timeout,
            ..RedisOptions::default()
        };
        let store = RedisStore::connect_lazy(&switchyard_testkit::redis_url(), options).await.unwrap();
        started.push(Node::start(&config, connect().await.unwrap(), SharedState::from_store(store)).await.unwrap());
    }
    TestCluster { mock, nodes: started, subjects: Subjects::new(&namespace), client: connect().await.unwrap() }
}

/// The cluster's own store, as the test cluster's nodes see it (same key prefix).
async fn store_of(cluster: &TestCluster) -> RedisStore {
    let options =
        RedisOptions { key_prefix: format!("switchyard:test:{}:", cluster.namespace()), ..RedisOptions::default() };
    RedisStore::connect(&switchyard_testkit::redis_url(), options).await.unwrap()
}

/// Each node's own (local) breaker for `provider`.
async fn local_breakers(cluster: &TestCluster, provider: &str) -> Vec<Option<BreakerState>> {
    let mut out = Vec::new();
    for node in &cluster.nodes {
        let health = node.health().await;
        out.push(health.providers.iter().find(|p| p.name == provider).and_then(|p| p.breaker));
    }
    out
}

/// Two nodes on a bad network path fail every call to the primary, while three busy nodes call it successfully.
/// Before successes were reported, the cluster only ever heard the two bad nodes (their batches held failures,
/// the healthy nodes' batches never left the node), so its failure rate was 100 % over two reporting nodes and it
/// tripped the provider for everyone. With every node's successes counted the rate stays low and nothing trips.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_bad_nodes_among_busy_healthy_ones_do_not_trip_the_cluster() {
    const WINDOW_SECS: u64 = 2;
    let broken = MockServer::start(MockConfig::default()).await.unwrap();
    let broken_url = broken.openai_base_url();
    let cluster = TestCluster::start_with(5, &switchyard_testkit::redis_url(), |i, mut config| {
        if i <= 2 {
            config.providers[0].base_url = broken_url.clone();
        }
        config.cluster.window_secs = WINDOW_SECS;
        config
    })
    .await
    .unwrap();

    // Warm up: every node's path works and every node calls the primary.
    let sent = AtomicU32::new(0);
    let drive = |stop: &'static str| {
        let (cluster, sent) = (&cluster, &sent);
        async move {
            let n = sent.fetch_add(1, Ordering::Relaxed);
            let outcome = cluster.query("chat", &ask(&format!("{stop} {n}"))).await;
            assert!(answered(&outcome), "query {n} not answered: {outcome:?}");
        }
    };
    while cluster.mock.calls(PRIMARY_MODEL) < 150 || broken.calls(PRIMARY_MODEL) < 60 {
        futures::future::join_all((0..8).map(|_| drive("warm"))).await;
    }

    // The two nodes' path breaks; busy traffic goes on for three windows, long enough for every success of the
    // warm-up to leave the cluster's window.
    broken.set_behavior(PRIMARY_MODEL, Behavior::failing(MockError::status(502)));
    let (healthy_before, broken_before) = (cluster.mock.calls(PRIMARY_MODEL), broken.calls(PRIMARY_MODEL));
    let done = AtomicBool::new(false);
    let traffic = async {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(3 * WINDOW_SECS) {
            futures::future::join_all((0..8).map(|_| drive("busy"))).await;
        }
        done.store(true, Ordering::Relaxed);
    };
    let watch = async {
        let mut seen = Vec::new();
        while !done.load(Ordering::Relaxed) {
            let states = cluster.cluster_breakers("primary").await;
            if states.iter().any(|s| *s != Some(BreakerState::Closed)) {
                seen.push(states);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        seen
    };
    let ((), tripped) = tokio::join!(traffic, watch);
    let healthy_calls = cluster.mock.calls(PRIMARY_MODEL) - healthy_before;
    let failed_calls = broken.calls(PRIMARY_MODEL) - broken_before;
    let local = local_breakers(&cluster, "primary").await;
    eprintln!(
        "{} queries; {healthy_calls} successful primary calls on 3 nodes, {failed_calls} failed ones on 2 nodes; \
         local breakers {local:?}",
        sent.load(Ordering::Relaxed)
    );
    assert!(tripped.is_empty(), "two bad nodes tripped the provider for the cluster: {:?}", tripped.first());
    // The two bad nodes did fail and did report: their own breakers opened.
    assert!(failed_calls >= 8, "the bad nodes must fail enough to report trouble, {failed_calls} failed calls");
    assert!(
        local[..2].iter().all(|s| *s != Some(BreakerState::Closed)),
        "both bad nodes' own breakers trip: {local:?}"
    );
    assert!(
        local[2..].iter().all(|s| *s == Some(BreakerState::Closed)),
        "the healthy nodes' breakers stay closed: {local:?}"
    );
    assert!(healthy_calls > 5 * failed_calls, "the healthy nodes must be busy: {healthy_calls} vs {failed_calls}");
    let view = store_of(&cluster).await.get("primary").await.unwrap();
    assert_eq!(view.state, BreakerState::Closed, "{view:?}");
    cluster.shutdown().await;
    broken.shutdown().await;
}

/// The probe lease is short (1 s here, against a 30 s provider timeout that used to set it) and renewed while its
/// probe runs: a hanging probe keeps it, and nobody sends a second probe. When its holder dies, another node takes
/// over within about one lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_probe_holder_hands_the_probe_over_within_about_one_lease() {
    const LEASE: Duration = Duration::from_millis(1000);
    let mut cluster = start_cluster(3, Duration::from_millis(500), |_, mut config| {
        config.cluster.probe_lease_ms = LEASE.as_millis() as u64;
        config.node.drain_timeout_ms = 100;
        for provider in &mut config.providers {
            provider.timeout_ms = 30_000;
        }
        config
    })
    .await;
    let store = store_of(&cluster).await;
    cluster.mock.set_behavior(PRIMARY_MODEL, Behavior::failing(MockError::status(503)));
    cluster.drive_until_tripped("chat", "primary", 500).await.unwrap();

    // The provider now hangs: the next probe never returns.
    cluster.mock.set_behavior(PRIMARY_MODEL, Behavior::hanging());
    let before = cluster.mock.calls(PRIMARY_MODEL);
    let probe = eventually("a probe goes out", Duration::from_secs(10), || async {
        let _ = tokio::time::timeout(Duration::from_millis(50), cluster.query("chat", &ask("probe"))).await;
        let view = store.get("primary").await.ok()?;
        (cluster.mock.calls(PRIMARY_MODEL) > before && view.state == BreakerState::HalfOpen).then_some(view)
    })
    .await
    .unwrap();
    let lease = probe.probe.clone().expect("a half-open breaker has a lease");
    eprintln!("probe out from {} at epoch {}", lease.owner, probe.epoch);

    // The holder lives: for three leases its lease is renewed and no second probe is sent.
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < 3 * LEASE {
        n += 1;
        let outcome = cluster.query("chat", &ask(&format!("during probe {n}"))).await;
        if !answered(&outcome) {
            let degraded: Vec<bool> = futures::future::join_all(cluster.nodes.iter().map(Node::health))
                .await
                .iter()
                .map(|health| health.degraded)
                .collect();
            panic!("the fallback answers while the probe hangs: {outcome:?}; degraded nodes {degraded:?}");
        }
    }
    let view = store.get("primary").await.unwrap();
    let held = view.probe.clone().expect("the lease is still held");
    assert_eq!((view.epoch, held.owner.as_str()), (probe.epoch, lease.owner.as_str()), "the holder keeps its lease");
    assert!(held.until_ms > lease.until_ms + LEASE.as_millis() as u64, "the lease was renewed: {held:?}");
    assert_eq!(cluster.mock.calls(PRIMARY_MODEL), before + 1, "one probe while its holder lives");

    // The holder dies; the provider heals. Another node must probe, and close the breaker, within about a lease.
    cluster.mock.clear_behavior(PRIMARY_MODEL);
    let index = cluster.nodes.iter().position(|node| node.name() == lease.owner).expect("the holder is a node");
    let holder = cluster.nodes.remove(index);
    holder.shutdown().await;
    let dead = Instant::now();
    eventually("another node probes and closes the breaker", Duration::from_secs(20), || async {
        let _ = cluster.query("chat", &ask("after the holder died")).await;
        cluster.cluster_breakers("primary").await.iter().all(|s| *s == Some(BreakerState::Closed)).then_some(())
    })
    .await
    .unwrap();
    let recovery = dead.elapsed();
    eprintln!("recovery after the probe holder died: {recovery:?} (lease {LEASE:?}, provider timeout 30 s)");
    assert!(recovery < 2 * LEASE + Duration::from_secs(1), "recovery took {recovery:?}, lease {LEASE:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_429_never_reopens_a_breaker_that_closed_since() {
    // Trip the primary for the cluster, then let it heal: the probe closes the breaker at a newer epoch.
    let cluster = TestCluster::start(2).await.unwrap();
    let store = store_of(&cluster).await;
    cluster.mock.set_behavior(PRIMARY_MODEL, Behavior::failing(MockError::status(503)));
    cluster.drive_until_tripped("chat", "primary", 500).await.unwrap();
    let open = store.get("primary").await.unwrap();
    cluster.mock.clear_behavior(PRIMARY_MODEL);
    eventually("the probe closes the breaker", Duration::from_secs(10), || async {
        let _ = cluster.query("chat", &ask("heal")).await;
        let closed = cluster.cluster_breakers("primary").await.iter().all(|s| *s == Some(BreakerState::Closed));
        closed.then_some(())
    })
    .await
    .unwrap();

    // A lagging node reports a 429 it saw while the breaker was open (its admission epoch): it changes nothing.
    let stale = store.rate_limited("primary", open.epoch, Duration::from_secs(30)).await.unwrap();
    let view = store.get("primary").await.unwrap();
    assert_eq!(view.state, BreakerState::Closed, "a stale cooldown reopened the breaker: {stale:?}");
    let calls = cluster.mock.calls(PRIMARY_MODEL);
    for i in 0..6 {
        let outcome = cluster.query("chat", &ask(&format!("after the stale 429 {i}"))).await.unwrap();
        let QueryOutcome::Reply(reply) = outcome else { panic!("the primary is healthy: {outcome:?}") };
        assert_eq!(reply.provider, "primary", "{:?}", reply.trace);
    }
    assert_eq!(cluster.mock.calls(PRIMARY_MODEL), calls + 6);

    // A 429 of the current epoch still opens it: the rule drops stale cooldowns only.
    let fresh = store.rate_limited("primary", view.epoch, Duration::from_secs(2)).await.unwrap();
    assert_ne!(store.get("primary").await.unwrap().state, BreakerState::Closed, "{fresh:?}");
    cluster.shutdown().await;
}
