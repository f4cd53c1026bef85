//! Long generations and hedging (issue 6, point 1), end to end on the real NATS and Redis.
//!
//! A provider is charged only for breaking its own limits; a slow-but-healthy attempt is hedged, never cut.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use switchyard_e2e::{Calls, PRIMARY_MODEL, SECONDARY_MODEL, TestCluster, ask, local_and_over_nats, reply};
use switchyard_mock::Behavior;
use switchyard_protocol::admin::ProviderHealth;
use switchyard_protocol::client::{QueryReply, StreamFrame};
use switchyard_runtime::Node;
use switchyard_testkit::eventually;

// The checks whose outcome depends on how a router reaches its own node's providers run both ways.
local_and_over_nats!(
    a_long_generation_is_a_success_not_a_timeout,
    a_slow_attempt_is_hedged_the_first_answer_wins_and_the_loser_is_not_charged,
    a_hedged_stream_is_written_by_one_attempt_only,
);

fn outcomes(reply: &QueryReply) -> Vec<(&str, &str, bool)> {
    reply.trace.attempts.iter().map(|a| (a.provider.as_str(), a.outcome.as_str(), a.hedged)).collect()
}

async fn provider(node: &Node, name: &str) -> ProviderHealth {
    node.health().await.providers.into_iter().find(|p| p.name == name).unwrap()
}

/// Waits until `name` has no call in flight on `node` and returns its health.
async fn settled(node: &Node, name: &str) -> ProviderHealth {
    eventually("the provider's calls to end", Duration::from_secs(5), || async {
        let health = provider(node, name).await;
        (health.in_flight == 0).then_some(health)
    })
    .await
    .unwrap()
}

async fn a_long_generation_is_a_success_not_a_timeout(path: Calls) {
    // No hedge (the route's delay is the 10 s fallback: no latency samples yet) and a short client deadline:
    // under the old rule the attempt was cut at half of the deadline and charged to the provider.
    let cluster = TestCluster::start_calls(1, path).await.unwrap();
    cluster.mock.set_behavior(PRIMARY_MODEL, Behavior::default().with_latency_ms(1_500));
    let mut request = ask("write me a long essay");
    request.deadline_ms = Some(2_500);
    let answer = reply(cluster.query("chat", &request).await.unwrap());
    assert_eq!(outcomes(&answer), vec![("primary", "success", false)]);
    assert!(answer.latency_ms >= 1_500.0, "{}", answer.latency_ms);

    // A stream that takes far longer than its first token, with steady chunks, is a success too.
    let slow_chunks = Behavior { chunk_delay_ms: 60, ..Behavior::default() };
    cluster.mock.set_behavior(PRIMARY_MODEL, slow_chunks);
    let text = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen";
    let mut request = ask(text);
    request.deadline_ms = Some(5_000);
    let frames = cluster.stream("chat", &request).await.unwrap();
    match frames.last().unwrap() {
        StreamFrame::Done { reply, attempt, chunks } => {
            assert_eq!(reply.provider, "primary");
            assert_eq!((*attempt, *chunks as usize), (1, frames.len() - 1));
            assert!(reply.latency_ms > 1_000.0, "the stream took {} ms", reply.latency_ms);
        }
        other => panic!("expected a summary, got {other:?}"),
    }
    let primary = settled(&cluster.nodes[0], "primary").await;
    assert_eq!((primary.successes, primary.failures), (2, 0));
    assert_eq!(cluster.mock.calls(SECONDARY_MODEL), 0);
    cluster.shutdown().await;
}

async fn a_slow_attempt_is_hedged_the_first_answer_wins_and_the_loser_is_not_charged(path: Calls) {
    let cluster = TestCluster::start_calls(1, path).await.unwrap();
    cluster.mock.set_behavior(PRIMARY_MODEL, Behavior::default().with_latency_ms(3_000));
    let started = Instant::now();
    let answer = reply(cluster.query("hedged", &ask("hedge me")).await.unwrap());
    let elapsed = started.elapsed();
    assert_eq!(outcomes(&answer), vec![("primary", "cancelled", false), ("secondary", "success", true)]);
    assert_eq!(answer.provider, "secondary");
    assert!(elapsed < Duration::from_millis(2_000), "the hedge (200 ms) should answer long before 3 s: {elapsed:?}");
    // The cancellation reached the primary's node: its call ends long before the mock's 3 s, uncharged.
    let primary = settled(&cluster.nodes[0], "primary").await;
    assert!(started.elapsed() < Duration::from_millis(2_500), "the loser was not cancelled: {:?}", started.elapsed());
    assert_eq!((primary.successes, primary.failures), (0, 0));
    assert_eq!(cluster.mock.calls(PRIMARY_MODEL), 1);

    // A fast primary is never hedged.
    cluster.mock.set_behavior(PRIMARY_MODEL, Behavior::default());
    let answer = reply(cluster.query("hedged", &ask("quick")).await.unwrap());
    assert_eq!(outcomes(&answer), vec![("primary", "success", false)]);
    assert_eq!(cluster.mock.calls(SECONDARY_MODEL), 1);
    cluster.shutdown().await;
}

async fn a_hedged_stream_is_written_by_one_attempt_only(path: Calls) {
    // The primary's first token comes after 600 ms; the route hedges after 100 ms, and the secondary streams at
    // once, slowly. The secondary gets the client's stream; the primary is refused it and cancelled.
    let cluster = TestCluster::start_with(1, &switchyard_testkit::redis_url(), |_, config| {
        let mut config = path.apply(config);
        config.providers[0].first_token_timeout_ms = 5_000;
        let hedged = config.routes.iter_mut().find(|r| r.name == "hedged").unwrap();
        hedged.hedge.delay_ms = 100;
        config
    })
    .await
    .unwrap();
    cluster.mock.set_behavior(PRIMARY_MODEL, Behavior::default().with_latency_ms(600));
    // The secondary streams slowly, so the primary's first token comes while the secondary is still writing.
    cluster.mock.set_behavior(SECONDARY_MODEL, Behavior { chunk_delay_ms: 100, ..Behavior::default() });
    let text = "alpha beta gamma delta epsilon zeta eta theta";
    let frames = cluster.stream("hedged", &ask(text)).await.unwrap();
    let (last, chunks) = frames.split_last().unwrap();
    let StreamFrame::Done { reply, attempt, chunks: count } = last else { panic!("expected a summary, got {last:?}") };
    assert_eq!(reply.provider, "secondary");
    assert_eq!((*attempt, *count as usize), (2, chunks.len()));
    let mut content = String::new();
    for (i, frame) in chunks.iter().enumerate() {
        let StreamFrame::Chunk { attempt, seq, delta } = frame else { panic!("unexpected frame {frame:?}") };
        assert_eq!((*attempt, *seq), (2, i as u64), "only the hedge writes the stream, in order");
        content.push_str(delta);
    }
    assert_eq!(content, reply.content);
    assert_eq!(outcomes(reply), vec![("primary", "cancelled", false), ("secondary", "success", true)]);
    let primary = settled(&cluster.nodes[0], "primary").await;
    assert_eq!(primary.failures, 0);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hedges_are_paid_from_the_retry_budget() {
    // A budget with no floor and no ratio: no retry and no hedge may ever start.
    let cluster = TestCluster::start_with(1, &switchyard_testkit::redis_url(), |_, mut config| {
        config.retry_budget.ratio = 0.0;
        config.retry_budget.min_retries_per_second = 0;
        config
    })
    .await
    .unwrap();
    cluster.mock.set_behavior(PRIMARY_MODEL, Behavior::default().with_latency_ms(700));
    let answer = reply(cluster.query("hedged", &ask("no budget")).await.unwrap());
    assert_eq!(outcomes(&answer), vec![("primary", "success", false)]);
    assert_eq!(cluster.mock.calls(SECONDARY_MODEL), 0);
    cluster.shutdown().await;
}
