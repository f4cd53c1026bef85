//! End-to-end: queries over the real NATS, answered by the mock provider through real nodes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;

use switchyard_bus::Message;
use switchyard_core::BreakerState;
use switchyard_e2e::{Calls, PRIMARY_MODEL, SECONDARY_MODEL, TestCluster, ask, error, local_and_over_nats, reply};
use switchyard_mock::{Behavior, Latency, MockError};
use switchyard_protocol::client::{ErrorType, QueryOutcome, StreamFrame};
use switchyard_testkit::eventually;

// The checks whose outcome depends on how a router reaches its own node's providers run both ways.
local_and_over_nats!(
    a_query_over_nats_is_answered_by_the_mock_through_a_node,
    streaming_chunks_arrive_in_order_then_a_summary,
    a_failing_provider_falls_back_to_the_next_one,
    a_crashed_provider_actor_is_restarted_and_serves_again,
    the_same_id_inside_its_deadline_is_answered_once_across_nodes,
    shutdown_finishes_queries_in_flight_then_stops_taking_new_ones,
    a_dead_provider_trips_its_breaker_and_is_left_alone_until_the_probe,
);

async fn a_query_over_nats_is_answered_by_the_mock_through_a_node(path: Calls) {
    let cluster = TestCluster::start_calls(1, path).await.unwrap();
    let answer = reply(cluster.query("chat", &ask("hello there")).await.unwrap());
    assert_eq!(answer.content, "echo: hello there");
    assert_eq!(answer.provider, "primary");
    assert_eq!(answer.model, PRIMARY_MODEL);
    assert_eq!(answer.trace.node, "node-1");
    assert_eq!(answer.trace.route, "chat");
    assert_eq!(answer.trace.attempts.len(), 1);
    assert_eq!(answer.trace.attempts[0].outcome, "success");
    assert!(answer.usage.input_tokens > 0 && answer.usage.output_tokens > 0);
    let expected_cost = (answer.usage.input_tokens as f64 * 1.0 + answer.usage.output_tokens as f64 * 2.0) / 1e6;
    assert!((answer.cost_usd - expected_cost).abs() < 1e-12);
    assert_eq!(cluster.mock.calls(PRIMARY_MODEL), 1);
    cluster.shutdown().await;
}

async fn streaming_chunks_arrive_in_order_then_a_summary(path: Calls) {
    let cluster = TestCluster::start_calls(1, path).await.unwrap();
    for route in ["chat", "solo"] {
        let text = "one two three four five six seven eight nine ten";
        let frames = cluster.stream(route, &ask(text)).await.unwrap();
        let (last, chunks) = frames.split_last().unwrap();
        let mut content = String::new();
        for (i, frame) in chunks.iter().enumerate() {
            match frame {
                StreamFrame::Chunk { seq, delta, .. } => {
                    assert_eq!(*seq, i as u64, "chunks out of order");
                    content.push_str(delta);
                }
                other => panic!("unexpected frame {other:?}"),
            }
        }
        assert!(chunks.len() >= 10, "expected one chunk per token, got {}", chunks.len());
        match last {
            StreamFrame::Done { reply: summary, .. } => {
                assert_eq!(summary.content, content);
                assert_eq!(content, format!("echo: {text}"));
                assert!(summary.usage.output_tokens > 0);
            }
            other => panic!("expected the summary last, got {other:?}"),
        }
    }
    // The Anthropic wire streams too: take the primary down and stream through the secondary.
    cluster.mock.set_behavior(PRIMARY_MODEL, Behavior::failing(MockError::status(503)));
    let frames = cluster.stream("chat", &ask("via the fallback")).await.unwrap();
    match frames.last().unwrap() {
        StreamFrame::Done { reply: summary, .. } => {
            assert_eq!(summary.provider, "secondary");
            assert_eq!(summary.content, "echo: via the fallback");
        }
        other => panic!("expected a summary, got {other:?}"),
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_in_a_queue_group_share_queries() {
    let cluster = TestCluster::start(2).await.unwrap();
    let mut by_node: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..60 {
        let answer = reply(cluster.query("chat", &ask(&format!("q{i}"))).await.unwrap());
        *by_node.entry(answer.trace.node).or_default() += 1;
    }
    assert_eq!(by_node.len(), 2, "both nodes should answer some queries: {by_node:?}");
    assert!(by_node.values().all(|n| *n >= 5), "queries should be shared: {by_node:?}");
    cluster.shutdown().await;
}

async fn a_failing_provider_falls_back_to_the_next_one(path: Calls) {
    let cluster = TestCluster::start_calls(1, path).await.unwrap();
    cluster.mock.set_behavior(PRIMARY_MODEL, Behavior::failing(MockError::status(503)));
    let answer = reply(cluster.query("chat", &ask("fallback please")).await.unwrap());
    assert_eq!(answer.provider, "secondary");
    assert_eq!(answer.model, SECONDARY_MODEL);
    let outcomes: Vec<_> = answer.trace.attempts.iter().map(|a| (a.provider.as_str(), a.outcome.as_str())).collect();
    assert_eq!(outcomes, vec![("primary", "retryable"), ("secondary", "success")]);
    assert_eq!(answer.trace.attempts[0].status, Some(503));

    // A route without a fallback reports the upstream failure, typed.
    let failure = error(cluster.query("solo", &ask("no fallback")).await.unwrap());
    assert_eq!(failure.error.kind, ErrorType::UpstreamError);
    assert_eq!(failure.trace.unwrap().attempts.len(), 1);
    cluster.shutdown().await;
}

async fn a_crashed_provider_actor_is_restarted_and_serves_again(path: Calls) {
    let cluster = TestCluster::start_calls(1, path).await.unwrap();
    reply(cluster.query("solo", &ask("before")).await.unwrap());

    let crash = Message::new(cluster.subjects.admin_provider("primary", "crash"), Bytes::new());
    let acks = switchyard_bus::gather(cluster.client.as_ref(), crash, Duration::from_secs(5), 1).await.unwrap();
    assert_eq!(acks.len(), 1, "the node hosting the provider acknowledges");
    assert!(String::from_utf8_lossy(&acks[0].payload).contains("crashed provider actor primary"));

    let node = &cluster.nodes[0];
    eventually("the provider actor restarted", Duration::from_secs(5), || async {
        let health = node.health().await;
        health.providers.iter().any(|p| p.name == "primary" && p.status == "running" && p.restarts == 1).then_some(())
    })
    .await
    .unwrap();
    let answer = reply(cluster.query("solo", &ask("after")).await.unwrap());
    assert_eq!(answer.content, "echo: after");

    // The restart is visible on the admin topic too.
    let health = cluster.health(Duration::from_millis(500)).await.unwrap();
    assert_eq!(health.len(), 1);
    let primary = health[0].providers.iter().find(|p| p.name == "primary").unwrap();
    assert_eq!(primary.restarts, 1);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_get_typed_errors_and_the_node_keeps_serving() {
    let cluster = TestCluster::start(1).await.unwrap();
    let check = |outcome: QueryOutcome, code: &str, field: Option<&str>| {
        let failure = error(outcome);
        assert_eq!(failure.error.kind, ErrorType::InvalidRequest, "{failure:?}");
        assert_eq!(failure.error.code, code, "{failure:?}");
        assert_eq!(failure.error.field.as_deref(), field, "{failure:?}");
    };
    check(cluster.query_raw("chat", Bytes::from_static(b"{oops")).await.unwrap(), "malformed_json", None);
    check(cluster.query_raw("chat", Bytes::from_static(b"\xff\xfe")).await.unwrap(), "malformed_json", None);
    check(cluster.query_raw("chat", Bytes::from_static(b"{}")).await.unwrap(), "missing_field", Some("messages"));
    check(
        cluster
            .query_raw("chat", Bytes::from_static(br#"{"messages":[{"role":"user","content":"x"}],"temperature":9}"#))
            .await
            .unwrap(),
        "invalid_field",
        Some("temperature"),
    );
    check(
        cluster.query_raw("chat", Bytes::from_static(br#"{"messages":[{"role":"user"}]}"#)).await.unwrap(),
        "missing_field",
        Some("content"),
    );
    check(cluster.query("nosuchroute", &ask("x")).await.unwrap(), "unknown_route", Some("route"));
    let big = ask(&"x".repeat(300 * 1024));
    check(cluster.query("chat", &big).await.unwrap(), "payload_too_large", None);

    let answer = reply(cluster.query("chat", &ask("still here")).await.unwrap());
    assert_eq!(answer.content, "echo: still here");
    assert_eq!(cluster.mock.total_calls(), 1, "no bad input may reach a provider");
    cluster.shutdown().await;
}

async fn the_same_id_inside_its_deadline_is_answered_once_across_nodes(path: Calls) {
    // Two nodes in the queue group: copies of one id land on either node, and still cost one upstream call.
    let cluster = TestCluster::start_calls(2, path).await.unwrap();
    cluster.mock.set_behavior(PRIMARY_MODEL, Behavior { latency: Latency::Fixed { ms: 200 }, ..Behavior::default() });
    let ids: Vec<String> = (0..6).map(|i| format!("idem-{i}")).collect();
    let copies = ids.iter().flat_map(|id| {
        let mut request = ask(&format!("only once {id}"));
        request.id = Some(id.clone());
        let cluster = &cluster;
        (0..3).map(move |_| {
            let request = request.clone();
            async move { (request.id.clone(), cluster.query("chat", &request).await) }
        })
    });
    for (id, outcome) in futures::future::join_all(copies).await {
        let answer = reply(outcome.unwrap());
        assert_eq!(answer.id, id);
        assert_eq!(answer.content, format!("echo: only once {}", id.unwrap()));
    }
    // A copy after the answer gets the kept answer.
    let mut late = ask("only once idem-0");
    late.id = Some("idem-0".into());
    assert_eq!(reply(cluster.query("chat", &late).await.unwrap()).content, "echo: only once idem-0");
    assert_eq!(cluster.mock.calls(PRIMARY_MODEL), 6, "one upstream call per id, whichever node got the copies");
    cluster.shutdown().await;
}

async fn shutdown_finishes_queries_in_flight_then_stops_taking_new_ones(path: Calls) {
    let mut cluster = TestCluster::start_calls(1, path).await.unwrap();
    cluster.mock.set_behavior(PRIMARY_MODEL, Behavior { latency: Latency::Fixed { ms: 400 }, ..Behavior::default() });
    let client = cluster.client.clone();
    let subjects = cluster.subjects.clone();
    let pending: Vec<_> = (0..5)
        .map(|i| {
            let (client, subject) = (client.clone(), subjects.query("chat"));
            let payload = Bytes::from(serde_json::to_vec(&ask(&format!("in flight {i}"))).unwrap());
            tokio::spawn(async move { client.request(Message::new(subject, payload), Duration::from_secs(10)).await })
        })
        .collect();
    eventually("the provider saw every query", Duration::from_secs(5), || async {
        (cluster.mock.calls(PRIMARY_MODEL) == 5).then_some(())
    })
    .await
    .unwrap();
    let node = cluster.nodes.remove(0);
    let report = node.shutdown().await;
    assert_eq!(report.abandoned_queries, 0);
    for task in pending {
        let message = task.await.unwrap().unwrap();
        let outcome: QueryOutcome = serde_json::from_slice(&message.payload).unwrap();
        assert!(reply(outcome).content.starts_with("echo: in flight"));
    }
    // Nobody serves the namespace any more: NATS says so at once.
    let late = cluster.query("chat", &ask("too late")).await;
    assert!(late.is_err(), "a stopped node must not answer");
    cluster.shutdown().await;
}

async fn a_dead_provider_trips_its_breaker_and_is_left_alone_until_the_probe(path: Calls) {
    let cluster = TestCluster::start_calls(1, path).await.unwrap();
    cluster.mock.set_behavior(PRIMARY_MODEL, Behavior::failing(MockError::status(503)));
    // Four failures in the window trip the breaker (minimum_calls = 4, threshold 50 %).
    for i in 0..4 {
        let answer = reply(cluster.query("chat", &ask(&format!("tripping {i}"))).await.unwrap());
        assert_eq!(answer.provider, "secondary");
    }
    let calls_at_trip = cluster.mock.calls(PRIMARY_MODEL);
    assert_eq!(calls_at_trip, 4);
    let health = cluster.nodes[0].health().await;
    let primary = health.providers.iter().find(|p| p.name == "primary").unwrap();
    assert_eq!(primary.breaker, Some(BreakerState::Open));

    // While open, the dead provider is not called at all: queries fall back without touching it.
    for i in 0..10 {
        let answer = reply(cluster.query("chat", &ask(&format!("while open {i}"))).await.unwrap());
        assert_eq!(answer.provider, "secondary");
        // The node's own breaker refused (no other node hosts the primary here, so the walk moves on).
        assert_eq!(answer.trace.attempts[0].outcome, "refused_local_breaker_open");
    }
    assert_eq!(cluster.mock.calls(PRIMARY_MODEL), calls_at_trip, "an open breaker must not call upstream");

    // A route with no fallback gets a fast typed error with a retry hint.
    let refused = error(cluster.query("solo", &ask("nothing else")).await.unwrap());
    assert_eq!(refused.error.kind, ErrorType::NoProviderAvailable);
    assert!(refused.error.retry_after_ms.is_some_and(|ms| ms > 0 && ms <= 1000));

    // The provider heals; after the open interval one probe goes through and closes the breaker.
    cluster.mock.clear_behavior(PRIMARY_MODEL);
    let answer = eventually("the half-open probe closes the breaker", Duration::from_secs(5), || async {
        match cluster.query("solo", &ask("probe")).await.ok()? {
            QueryOutcome::Reply(reply) => Some(reply),
            QueryOutcome::Error(_) => None,
        }
    })
    .await
    .unwrap();
    assert_eq!(answer.provider, "primary");
    let health = cluster.nodes[0].health().await;
    assert_eq!(health.providers.iter().find(|p| p.name == "primary").unwrap().breaker, Some(BreakerState::Closed));
    cluster.shutdown().await;
}
