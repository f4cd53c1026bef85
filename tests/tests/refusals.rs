//! A refusal by one node is not the cluster's verdict (issue 6, point 4), end to end on the real NATS and Redis.
//!
//! A node whose own in-flight limit (or own breaker) refuses a call does not send the query down the chain when
//! another node hosting the same provider could serve it: the router tries that node directly, once. And a plain
//! chain entry refused by the cluster's breaker is remembered like a group member.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use switchyard_e2e::{Calls, PRIMARY_MODEL, TestCluster, ask, local_and_over_nats};
use switchyard_mock::Behavior;
use switchyard_protocol::client::{ErrorType, QueryOutcome};
use switchyard_runtime::Role;

// The checks whose outcome depends on how a router reaches its own node's providers run both ways.
local_and_over_nats!(a_plain_chain_entry_refused_by_the_cluster_is_skipped_until_its_retry_after,);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_one_node_refuses_is_served_by_another_node() {
    // node-1 routes; node-2 and node-3 host the providers; node-2 takes one primary call at a time.
    let cluster = TestCluster::start_with(3, &switchyard_testkit::redis_url(), |i, mut config| {
        config.node.roles = if i == 1 { vec![Role::Router] } else { vec![Role::Providers] };
        if i == 2 {
            config.providers[0].max_in_flight = 1;
        }
        config
    })
    .await
    .unwrap();
    // The router learns from answers which nodes host the primary.
    for _ in 0..20 {
        assert!(matches!(cluster.query("solo", &ask("warm up")).await.unwrap(), QueryOutcome::Reply(_)));
    }
    // Slow answers: node-2 is busy after its first call and refuses the next ones it is handed.
    cluster.mock.set_behavior(PRIMARY_MODEL, Behavior::default().with_latency_ms(600));
    let queries = (0..10).map(|i| {
        let mut request = ask(&format!("busy {i}"));
        request.deadline_ms = Some(10_000);
        let cluster = &cluster;
        async move { cluster.query("solo", &request).await.unwrap() }
    });
    let outcomes = futures::future::join_all(queries).await;
    let mut redirected = 0;
    for outcome in outcomes {
        // `solo` has no fallback: without the redirect a refused query would fail.
        let QueryOutcome::Reply(reply) = outcome else { panic!("a refused query was not served: {outcome:?}") };
        assert_eq!(reply.provider, "primary");
        if let [refused, served] = reply.trace.attempts.as_slice() {
            assert_eq!(refused.outcome, "refused_overloaded");
            assert!(refused.message.as_deref().unwrap_or_default().contains("node-2"), "{refused:?}");
            assert_eq!(served.outcome, "success");
            redirected += 1;
        }
    }
    println!("{redirected} of 10 queries were refused by node-2 and served by node-3");
    assert!(redirected > 0, "10 concurrent slow queries over two hosts must hit node-2's limit");
    cluster.shutdown().await;
}

async fn a_plain_chain_entry_refused_by_the_cluster_is_skipped_until_its_retry_after(path: Calls) {
    let cluster = TestCluster::start_calls(2, path).await.unwrap();
    cluster.mock.set_behavior(PRIMARY_MODEL, Behavior::failing(switchyard_mock::MockError::status(503)));
    let trip = cluster.drive_until_tripped("chat", "primary", 200).await.unwrap();
    assert!(trip.sent > 0);
    // Once a router has been refused by the open cluster breaker, it skips the primary without a call.
    let calls_before = cluster.mock.calls(PRIMARY_MODEL);
    let mut skipped = 0;
    for _ in 0..10 {
        let outcome = cluster.query("solo", &ask("still down?")).await.unwrap();
        let QueryOutcome::Error(error) = outcome else { panic!("the primary is down: {outcome:?}") };
        assert_eq!(error.error.kind, ErrorType::NoProviderAvailable);
        assert!(error.error.retry_after_ms.is_some_and(|ms| ms > 0));
        let attempts = error.trace.map(|t| t.attempts).unwrap_or_default();
        if attempts.iter().all(|a| a.outcome == "unavailable") {
            skipped += 1;
        }
    }
    assert!(skipped >= 8, "after its first refusal each router skips the primary: {skipped} of 10");
    assert!(cluster.mock.calls(PRIMARY_MODEL) - calls_before <= 1, "at most one probe reaches the primary");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_call_that_cannot_be_decoded_is_a_retryable_failure() {
    use bytes::Bytes;
    use switchyard_bus::Message;
    use switchyard_protocol::internal::{ProviderAnswer, ProviderReply};
    use switchyard_protocol::{Bincode, Codec};

    // What a router of another version would send: bytes this node cannot decode.
    let cluster = TestCluster::start(1).await.unwrap();
    let call = Message::new(cluster.subjects.provider_call("primary"), Bytes::from_static(b"\x07not a call"));
    let reply = cluster.client.request(call, std::time::Duration::from_secs(5)).await.unwrap();
    let answer = Bincode::decode::<ProviderAnswer>(&reply.payload).unwrap();
    match answer.reply {
        ProviderReply::Failed(failure) => {
            assert_eq!(failure.class, switchyard_core::FailureClass::Retryable.into(), "{failure:?}");
        }
        other => panic!("expected a retryable failure, got {other:?}"),
    }
    assert_eq!(answer.node, "node-1");
    cluster.shutdown().await;
}
