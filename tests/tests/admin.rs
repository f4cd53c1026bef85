//! Operating a cluster (issue 9), end to end on the real NATS and Redis: the admin topic's health, breakers and
//! stats, operators' breaker commands, draining a node, the NATS service API and the Prometheus endpoint.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use serde::de::DeserializeOwned;

use switchyard_bus::{Bus, Message, gather};
use switchyard_core::BreakerState;
use switchyard_e2e::{PRIMARY_MODEL, TestCluster, ask, reply};
use switchyard_mock::Behavior;
use switchyard_protocol::admin::{AdminAck, AdminRequest, NodeBreakers, NodeHealth, NodeStats};
use switchyard_protocol::client::QueryOutcome;
use switchyard_testkit::eventually;

async fn ask_all<T: DeserializeOwned>(cluster: &TestCluster, subject: String, n: usize) -> Vec<T> {
    let replies =
        gather(cluster.client.as_ref(), Message::new(subject, Bytes::new()), Duration::from_secs(2), n).await.unwrap();
    replies.iter().map(|m| serde_json::from_slice(&m.payload).unwrap()).collect()
}

async fn command(cluster: &TestCluster, subject: String) -> AdminAck {
    let body = serde_json::to_vec(&AdminRequest { sender: Some("ops@test".into()) }).unwrap();
    let reply = cluster.client.request(Message::new(subject, Bytes::from(body)), Duration::from_secs(5)).await.unwrap();
    serde_json::from_slice(&reply.payload).unwrap()
}

#[tokio::test]
async fn health_lists_every_node_with_its_actors_and_both_breakers() {
    let cluster = TestCluster::start(2).await.unwrap();
    let mut health: Vec<NodeHealth> = ask_all(&cluster, cluster.subjects.admin_health(), 2).await;
    health.sort_by(|a, b| a.node.cmp(&b.node));
    assert_eq!(health.iter().map(|h| h.node.as_str()).collect::<Vec<_>>(), ["node-1", "node-2"]);
    for h in &health {
        assert!(!h.version.is_empty());
        assert!(!h.nats_disconnected && !h.degraded);
        let actors: Vec<&str> = h.actors.iter().map(|a| a.actor.as_str()).collect();
        for expected in ["node", "providers", "state_sync", "router", "provider:primary", "provider:secondary"] {
            assert!(actors.contains(&expected), "{expected} missing from {actors:?}");
        }
        assert!(h.actors.iter().all(|a| a.status == "running"), "{:?}", h.actors);
        let primary = h.providers.iter().find(|p| p.name == "primary").unwrap();
        let closed = Some(BreakerState::Closed);
        assert_eq!((primary.breaker, primary.cluster_breaker), (closed, closed));
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn trip_and_reset_change_the_cluster_breaker_and_the_next_queries_follow_it() {
    let cluster = TestCluster::start(2).await.unwrap();
    assert_eq!(reply(cluster.query("chat", &ask("before")).await.unwrap()).provider, "primary");

    let ack = command(&cluster, cluster.subjects.admin_breaker("primary", "trip")).await;
    assert!(ack.ok, "{ack:?}");
    assert_eq!(ack.state, Some(BreakerState::ForcedOpen));
    // Every node follows the cluster's state at once (the executing node announces it).
    eventually("every node sees primary forced open", Duration::from_secs(5), || async {
        cluster.cluster_breakers("primary").await.iter().all(|s| *s == Some(BreakerState::ForcedOpen)).then_some(())
    })
    .await
    .unwrap();
    let calls = cluster.mock.calls(PRIMARY_MODEL);
    for i in 0..6 {
        let answer = reply(cluster.query("chat", &ask(&format!("while tripped {i}"))).await.unwrap());
        assert_eq!(answer.provider, "secondary");
    }
    assert_eq!(cluster.mock.calls(PRIMARY_MODEL), calls, "no node calls a tripped provider");

    // The breakers view shows the store's state, and no node disagrees with it.
    let views: Vec<NodeBreakers> = ask_all(&cluster, cluster.subjects.admin_breakers(), 2).await;
    for node in &views {
        let primary = node.providers.iter().find(|p| p.provider == "primary").unwrap();
        let store = primary.store.as_ref().expect("nodes read the shared store");
        assert_eq!((store.state, primary.cluster), (BreakerState::ForcedOpen, BreakerState::ForcedOpen));
        assert_eq!(store.epoch, primary.cluster_epoch);
    }

    let ack = command(&cluster, cluster.subjects.admin_breaker("primary", "reset")).await;
    assert_eq!((ack.ok, ack.state), (true, Some(BreakerState::Closed)));
    eventually("every node sees primary closed", Duration::from_secs(5), || async {
        cluster.cluster_breakers("primary").await.iter().all(|s| *s == Some(BreakerState::Closed)).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(reply(cluster.query("chat", &ask("after")).await.unwrap()).provider, "primary");

    let refused = command(&cluster, cluster.subjects.admin_breaker("nobody", "trip")).await;
    assert!(!refused.ok && refused.message.contains("unknown provider"), "{refused:?}");
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_drained_node_leaves_without_losing_its_queries_in_flight() {
    let mut cluster = TestCluster::start(2).await.unwrap();
    cluster.mock.set_behavior(PRIMARY_MODEL, Behavior::answering("slow answer").with_latency_ms(600));
    let requests: Vec<_> = (0..8).map(|i| ask(&format!("in flight {i}"))).collect();
    let queries = join_all(requests.iter().map(|r| cluster.query("solo", r)));
    let drain = async {
        // Once node-1 holds queries, ask it to drain.
        eventually("node-1 holds queries", Duration::from_secs(5), || async {
            let health = cluster.nodes[0].health().await;
            (health.router.is_some_and(|r| r.in_flight > 0)).then_some(())
        })
        .await
        .unwrap();
        let ack = command(&cluster, cluster.subjects.admin_node("node-1", "drain")).await;
        assert!(ack.ok, "{ack:?}");
    };
    let (outcomes, ()) = tokio::join!(queries, drain);
    for outcome in outcomes {
        assert!(matches!(outcome, Ok(QueryOutcome::Reply(_))), "{outcome:?}");
    }
    // What `switchyard serve` does once asked: leave gracefully.
    let node = cluster.nodes.remove(0);
    tokio::time::timeout(Duration::from_secs(1), node.drain_requested()).await.expect("the drain was requested");
    assert!(node.health().await.draining);
    let report = node.shutdown().await;
    assert_eq!(report.abandoned_queries, 0);
    let health: Vec<NodeHealth> = ask_all(&cluster, cluster.subjects.admin_health(), 2).await;
    assert_eq!(health.iter().map(|h| h.node.as_str()).collect::<Vec<_>>(), ["node-2"], "node-1 left");
    cluster.shutdown().await;
}

#[tokio::test]
async fn the_nats_service_api_lists_the_nodes_and_their_endpoints() {
    let cluster = TestCluster::start(2).await.unwrap();
    reply(cluster.query("chat", &ask("count me")).await.unwrap());
    // The service is named after the cluster's namespace: other test clusters on this server are other services.
    let service = cluster.subjects.namespace().to_owned();
    let pings: Vec<serde_json::Value> = ask_all(&cluster, format!("$SRV.PING.{service}"), 2).await;
    let mut ids: Vec<&str> = pings.iter().map(|p| p["id"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["node-1", "node-2"]);
    assert!(pings.iter().all(|p| p["type"] == "io.nats.micro.v1.ping_response" && p["name"] == service.as_str()));

    let info: Vec<serde_json::Value> = ask_all(&cluster, format!("$SRV.INFO.{service}.node-1"), 1).await;
    let endpoints: Vec<&str> =
        info[0]["endpoints"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert!(endpoints.contains(&"query") && endpoints.contains(&"provider-primary"), "{endpoints:?}");

    // The query is counted once its answer is out.
    eventually("the query is counted", Duration::from_secs(5), || async {
        let stats: Vec<serde_json::Value> = ask_all(&cluster, format!("$SRV.STATS.{service}"), 2).await;
        assert!(stats.iter().all(|s| s["type"] == "io.nats.micro.v1.stats_response"));
        let queries: u64 = stats
            .iter()
            .flat_map(|s| s["endpoints"].as_array().unwrap().iter())
            .filter(|e| e["name"] == "query")
            .map(|e| e["num_requests"].as_u64().unwrap())
            .sum();
        (queries == 1).then_some(())
    })
    .await
    .unwrap();
    cluster.shutdown().await;
}

#[tokio::test]
async fn stats_and_metrics_count_calls_latency_tokens_and_route_events() {
    let cluster = TestCluster::start_with(1, &switchyard_testkit::redis_url(), |_, mut config| {
        config.node.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
        config
    })
    .await
    .unwrap();
    cluster.mock.set_behavior(PRIMARY_MODEL, Behavior::failing(switchyard_mock::MockError::status(503)));
    for i in 0..3 {
        assert_eq!(reply(cluster.query("chat", &ask(&format!("q{i}"))).await.unwrap()).provider, "secondary");
    }
    let stats: Vec<NodeStats> = ask_all(&cluster, cluster.subjects.admin_stats(), 1).await;
    let node = &stats[0];
    let secondary = node.providers.iter().find(|p| p.provider == "secondary").unwrap();
    assert_eq!((secondary.calls, secondary.successes), (3, 3));
    assert!(secondary.p50_ms > 0.0 && secondary.p99_ms >= secondary.p50_ms);
    assert!(secondary.input_tokens > 0 && secondary.output_tokens > 0);
    let primary = node.providers.iter().find(|p| p.provider == "primary").unwrap();
    assert_eq!(primary.failures, 3);
    let chat = node.routes.iter().find(|r| r.route == "chat").unwrap();
    assert_eq!((chat.queries, chat.fallbacks), (3, 3));

    let addr = cluster.nodes[0].metrics_addr().unwrap();
    let body = reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap();
    for family in [
        "switchyard_queries_total{route=\"chat\",outcome=\"ok\"} 3",
        "switchyard_fallbacks_total{route=\"chat\"} 3",
        "switchyard_provider_calls_total{provider=\"primary\",outcome=\"retryable\"} 3",
        "switchyard_overhead_seconds_bucket",
        "switchyard_breaker_state",
    ] {
        assert!(body.contains(family), "{family} missing from:\n{body}");
    }
    cluster.shutdown().await;
}
