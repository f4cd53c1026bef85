//! End-to-end idempotency on the real NATS and Redis: an id is bound to its request, a copy on another node
//! waits for (or is streamed) the owner's answer, and a dead owner's query is taken over after its lease.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use switchyard_e2e::{Calls, PRIMARY_MODEL, TestCluster, ask, error, local_and_over_nats, reply};
use switchyard_mock::{Behavior, Latency};
use switchyard_protocol::client::{ErrorType, QueryOutcome, QueryRequest, StreamFrame};
use switchyard_testkit::eventually;

// The checks whose outcome depends on how a router reaches its own node's providers run both ways.
local_and_over_nats!(
    an_id_reused_with_another_request_is_a_conflict_on_every_node,
    a_streaming_copy_gets_the_whole_answer_never_only_the_final_frame,
    a_dead_owners_query_is_taken_over_after_its_lease,
);

fn with_id(text: &str, id: &str) -> QueryRequest {
    let mut request = ask(text);
    request.id = Some(id.into());
    request
}

fn slow(ms: u64) -> Behavior {
    Behavior { latency: Latency::Fixed { ms }, ..Behavior::default() }
}

async fn an_id_reused_with_another_request_is_a_conflict_on_every_node(path: Calls) {
    let cluster = TestCluster::start_calls(2, path).await.unwrap();
    // Answered: every copy with other messages is refused, whichever node the queue group picks.
    let answer = reply(cluster.query("chat", &with_id("first", "conflict-1")).await.unwrap());
    assert_eq!(answer.content, "echo: first");
    for _ in 0..6 {
        let refused = error(cluster.query("chat", &with_id("second", "conflict-1")).await.unwrap());
        assert_eq!(refused.error.kind, ErrorType::InvalidRequest);
        assert_eq!(refused.error.code, "idempotency_conflict");
        assert_eq!(refused.id.as_deref(), Some("conflict-1"));
    }
    let mut other_params = with_id("first", "conflict-1");
    other_params.temperature = Some(0.3);
    assert_eq!(error(cluster.query("chat", &other_params).await.unwrap()).error.code, "idempotency_conflict");
    // The same request under the same id is still answered, from the kept answer.
    assert_eq!(reply(cluster.query("chat", &with_id("first", "conflict-1")).await.unwrap()).content, "echo: first");

    // In flight: the owner is still calling upstream while copies with another request arrive.
    cluster.mock.set_behavior(PRIMARY_MODEL, slow(600));
    let first = with_id("slow", "conflict-2");
    let owner = cluster.query("chat", &first);
    let copies = async {
        eventually("the owner calls upstream", Duration::from_secs(5), || async {
            (cluster.mock.calls(PRIMARY_MODEL) >= 2).then_some(())
        })
        .await
        .unwrap();
        let mut codes = Vec::new();
        for _ in 0..4 {
            codes.push(error(cluster.query("chat", &with_id("other", "conflict-2")).await.unwrap()).error.code);
        }
        codes
    };
    let (owner, codes) = tokio::join!(owner, copies);
    assert_eq!(reply(owner.unwrap()).content, "echo: slow");
    assert!(codes.iter().all(|code| code == "idempotency_conflict"), "{codes:?}");
    assert_eq!(cluster.mock.calls(PRIMARY_MODEL), 2, "no refused copy reached a provider");
    cluster.shutdown().await;
}

async fn a_streaming_copy_gets_the_whole_answer_never_only_the_final_frame(path: Calls) {
    let cluster = TestCluster::start_calls(2, path).await.unwrap();
    // A copy of an answered id, streamed: the whole answer as one chunk, then a consistent final frame.
    let answer = reply(cluster.query("chat", &with_id("kept answer", "stream-1")).await.unwrap());
    let frames = cluster.stream("chat", &with_id("kept answer", "stream-1")).await.unwrap();
    check_replayed(&frames, &answer.content);

    // Copies of an id being streamed elsewhere (or on the same node): each receives the whole answer too.
    cluster.mock.set_behavior(PRIMARY_MODEL, slow(500));
    let first = with_id("streamed live", "stream-2");
    let owner = cluster.stream("chat", &first);
    let copies = async {
        eventually("the owner calls upstream", Duration::from_secs(5), || async {
            (cluster.mock.calls(PRIMARY_MODEL) >= 2).then_some(())
        })
        .await
        .unwrap();
        let request = with_id("streamed live", "stream-2");
        futures::future::join_all((0..4).map(|_| cluster.stream("chat", &request))).await
    };
    let (owner, copies) = tokio::join!(owner, copies);
    let owner = owner.unwrap();
    let Some(StreamFrame::Done { reply, .. }) = owner.last() else { panic!("{owner:?}") };
    for copy in copies {
        check_replayed(&copy.unwrap(), &reply.content);
    }
    assert_eq!(cluster.mock.calls(PRIMARY_MODEL), 2, "one upstream call per id");
    cluster.shutdown().await;
}

fn check_replayed(frames: &[StreamFrame], content: &str) {
    match frames {
        [StreamFrame::Chunk { attempt, seq: 0, delta }, StreamFrame::Done { attempt: done, chunks: 1, reply }] => {
            assert_eq!(attempt, done);
            assert_eq!(delta, content);
            assert_eq!(reply.content, content);
        }
        other => panic!("expected one chunk and the final frame, got {other:?}"),
    }
}

async fn a_dead_owners_query_is_taken_over_after_its_lease(path: Calls) {
    let mut cluster = TestCluster::start_with(2, &switchyard_testkit::redis_url(), |_, config| {
        let mut config = path.apply(config);
        config.node.idempotency_lease_ms = 300;
        config
    })
    .await
    .unwrap();
    cluster.mock.set_behavior(PRIMARY_MODEL, slow(2_000));
    let mut request = with_id("survive me", "orphan-1");
    request.deadline_ms = Some(20_000);
    // The first copy: its node claims the id and calls upstream, then dies; the client never hears back.
    let client = cluster.client.clone();
    let subject = cluster.subjects.query("chat");
    let payload = bytes::Bytes::from(serde_json::to_vec(&request).unwrap());
    let lost = tokio::spawn(async move {
        client.request(switchyard_bus::Message::new(subject, payload), Duration::from_secs(20)).await
    });
    eventually("the first copy reaches upstream", Duration::from_secs(5), || async {
        (cluster.mock.calls(PRIMARY_MODEL) >= 1).then_some(())
    })
    .await
    .unwrap();
    let mut owner = None;
    for (i, node) in cluster.nodes.iter().enumerate() {
        if node.health().await.router.is_some_and(|r| r.in_flight > 0) {
            owner = Some(i);
        }
    }
    let owner = owner.expect("one node holds the query");
    cluster.mock.clear_behavior(PRIMARY_MODEL);
    cluster.nodes.remove(owner).abort().await;
    let survivor = cluster.nodes[0].name().to_owned();

    // The client re-sends the same id, as the client library does when no reply comes (a copy may still reach
    // the dead node's subscription while the server has not yet processed its removal): the survivor finds the
    // claim, sees the owner's lease expire, takes over.
    let payload = bytes::Bytes::from(serde_json::to_vec(&request).unwrap());
    let answer = eventually("the survivor answers a re-send", Duration::from_secs(15), || {
        let message = switchyard_bus::Message::new(cluster.subjects.query("chat"), payload.clone());
        let client = cluster.client.clone();
        async move {
            let reply = client.request(message, Duration::from_secs(2)).await.ok()?;
            serde_json::from_slice::<QueryOutcome>(&reply.payload).ok()
        }
    })
    .await
    .unwrap();
    let answer = reply(answer);
    assert_eq!(answer.content, "echo: survive me");
    assert_eq!(answer.trace.node, survivor, "the survivor answered");
    // Now answered and stored: one more copy gets the kept answer, without another upstream call.
    let calls = cluster.mock.calls(PRIMARY_MODEL);
    assert_eq!(reply(cluster.query("chat", &request).await.unwrap()).content, "echo: survive me");
    assert_eq!(cluster.mock.calls(PRIMARY_MODEL), calls);
    lost.abort();
    cluster.shutdown().await;
}
