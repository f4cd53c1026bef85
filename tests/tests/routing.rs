//! Retries, fallback chains by failure kind, and balanced groups with panic mode (issue 3), end to end.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use switchyard_e2e::{Calls, PRIMARY_MODEL, SECONDARY_MODEL, TestCluster, ask, local_and_over_nats, reply};
use switchyard_mock::{Behavior, MockError};
use switchyard_protocol::client::{ErrorType, QueryOutcome, QueryReply, StreamFrame};
use switchyard_testkit::eventually;

// The checks whose outcome depends on how a router reaches its own node's providers run both ways.
local_and_over_nats!(
    transient_failures_are_retried_on_the_same_provider_then_fall_back,
    a_stream_is_never_retried_after_its_first_chunk,
    a_context_window_failure_takes_the_context_window_chain,
    a_group_balances_its_members_and_trickles_when_all_are_down,
    a_stream_without_a_first_token_in_time_falls_back,
    a_hung_provider_is_hedged_and_the_fallback_answers_without_charging_it,
);

fn outcomes(reply: &QueryReply) -> Vec<(String, String)> {
    reply.trace.attempts.iter().map(|a| (a.provider.clone(), a.outcome.clone())).collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

async fn transient_failures_are_retried_on_the_same_provider_then_fall_back(path: Calls) {
    let cluster = TestCluster::start_calls(1, path).await.unwrap();
    cluster.mock.set_behavior(PRIMARY_MODEL, Behavior::failing(MockError::status(503)));
    let answer = reply(cluster.query("retrying", &ask("retry me")).await.unwrap());
    assert_eq!(
        outcomes(&answer),
        pairs(&[
            ("primary", "retryable"),
            ("primary", "retryable"),
            ("primary", "retryable"),
            ("secondary", "success")
        ])
    );
    assert_eq!(cluster.mock.calls(PRIMARY_MODEL), 3, "max_attempts = 3 on the same provider");

    // A failure that is the request's own fault is neither retried nor sent elsewhere.
    cluster.mock.set_behavior(PRIMARY_MODEL, Behavior::failing(MockError::status(400)));
    let before = cluster.mock.calls(PRIMARY_MODEL);
    match cluster.query("retrying", &ask("bad request")).await.unwrap() {
        QueryOutcome::Error(error) => {
            assert_eq!(error.error.kind, ErrorType::UpstreamError);
            assert_eq!(error.trace.unwrap().attempts.len(), 1);
        }
        other => panic!("expected an error, got {other:?}"),
    }
    assert_eq!(cluster.mock.calls(PRIMARY_MODEL), before + 1);
    assert_eq!(cluster.mock.calls(SECONDARY_MODEL), 1, "a 400 must not reach the fallback");
    cluster.shutdown().await;
}

async fn a_stream_is_never_retried_after_its_first_chunk(path: Calls) {
    let cluster = TestCluster::start_calls(1, path).await.unwrap();
    cluster.mock.set_behavior(PRIMARY_MODEL, Behavior { fail_after_tokens: Some(2), ..Behavior::default() });
    let frames = cluster.stream("retrying", &ask("one two three four five six")).await.unwrap();
    match frames.last().unwrap() {
        StreamFrame::Error { error, .. } => assert_eq!(error.error.code, "stream_interrupted"),
        other => panic!("expected an interrupted stream, got {other:?}"),
    }
    assert!(frames.iter().filter(|f| matches!(f, StreamFrame::Chunk { .. })).count() >= 2);
    assert_eq!(cluster.mock.calls(PRIMARY_MODEL), 1, "no retry after a chunk reached the client");
    assert_eq!(cluster.mock.calls(SECONDARY_MODEL), 0, "no fallback after a chunk reached the client");
    cluster.shutdown().await;
}

async fn a_context_window_failure_takes_the_context_window_chain(path: Calls) {
    let cluster = TestCluster::start_calls(1, path).await.unwrap();
    cluster.mock.set_behavior(PRIMARY_MODEL, Behavior::failing(MockError::ContextLength));
    let answer = reply(cluster.query("long", &ask("a very long prompt")).await.unwrap());
    assert_eq!(outcomes(&answer), pairs(&[("primary", "context_window_exceeded"), ("secondary", "success")]));
    // The route's generic chain has no secondary: only the context-window chain brought it in.
    cluster.mock.set_behavior(PRIMARY_MODEL, Behavior::failing(MockError::status(503)));
    match cluster.query("long", &ask("not a context problem")).await.unwrap() {
        QueryOutcome::Error(error) => assert_eq!(error.trace.unwrap().attempts.len(), 1),
        other => panic!("a 503 must not take the context-window chain: {other:?}"),
    }
    cluster.shutdown().await;
}

async fn a_group_balances_its_members_and_trickles_when_all_are_down(path: Calls) {
    let cluster = TestCluster::start_calls(1, path).await.unwrap();
    let mut by_provider: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..40 {
        *by_provider
            .entry(reply(cluster.query("pooled", &ask(&format!("q{i}"))).await.unwrap()).provider)
            .or_default() += 1;
    }
    assert_eq!(by_provider.len(), 2, "both members serve: {by_provider:?}");

    // Every member goes down: their breakers trip, the group answers fast with a retry hint.
    cluster.mock.set_behavior(PRIMARY_MODEL, Behavior::failing(MockError::status(503)));
    cluster.mock.set_behavior(SECONDARY_MODEL, Behavior::failing(MockError::status(503)));
    let fast_error = eventually("the group fails fast with no_provider_available", Duration::from_secs(10), || async {
        match cluster.query("pooled", &ask("down")).await.ok()? {
            QueryOutcome::Error(e) if e.error.kind == ErrorType::NoProviderAvailable => Some(e),
            _ => None,
        }
    })
    .await
    .unwrap();
    assert!(fast_error.error.retry_after_ms.is_some_and(|ms| ms > 0));

    // Panic mode: while everything is down, a trickle still reaches a member, about one call per 500 ms.
    // (Each member's own breaker also sends its half-open probes; those are not the trickle.)
    let started = Instant::now();
    let (mut fast, mut trickle) = (0, 0);
    while started.elapsed() < Duration::from_millis(1600) {
        let asked = Instant::now();
        match cluster.query("pooled", &ask("down")).await.unwrap() {
            QueryOutcome::Error(e) => {
                trickle += e.trace.iter().flat_map(|t| &t.attempts).filter(|a| a.panic).count();
                if e.error.kind == ErrorType::NoProviderAvailable && asked.elapsed() < Duration::from_millis(100) {
                    fast += 1;
                }
            }
            QueryOutcome::Reply(r) => panic!("nothing should answer while every member is down: {r:?}"),
        }
    }
    assert!(fast > 10, "refusals must be fast: {fast}");
    assert!((1..=4).contains(&trickle), "a trickle of at most one call per 500 ms, got {trickle}");

    // One member heals: the group recovers.
    cluster.mock.clear_behavior(SECONDARY_MODEL);
    let healed = eventually("the group answers again", Duration::from_secs(10), || async {
        match cluster.query("pooled", &ask("back")).await.ok()? {
            QueryOutcome::Reply(r) => Some(r),
            _ => None,
        }
    })
    .await
    .unwrap();
    assert_eq!(healed.provider, "secondary");
    cluster.shutdown().await;
}

async fn a_stream_without_a_first_token_in_time_falls_back(path: Calls) {
    let cluster = TestCluster::start_calls(1, path).await.unwrap();
    // The primary would answer, but only after 800 ms; its first-token timeout is 250 ms.
    cluster.mock.set_behavior(PRIMARY_MODEL, Behavior::default().with_latency_ms(800));
    let started = Instant::now();
    let frames = cluster.stream("chat", &ask("quick please")).await.unwrap();
    match frames.last().unwrap() {
        StreamFrame::Done { reply: summary, .. } => {
            assert_eq!(summary.provider, "secondary");
            let first = &summary.trace.attempts[0];
            assert_eq!((first.provider.as_str(), first.outcome.as_str()), ("primary", "retryable"));
            assert!(first.message.as_deref().unwrap_or_default().contains("first token"), "{first:?}");
        }
        other => panic!("expected a summary, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_millis(700), "the fallback must not wait for the slow provider");
    cluster.shutdown().await;
}

async fn a_hung_provider_is_hedged_and_the_fallback_answers_without_charging_it(path: Calls) {
    let cluster = TestCluster::start_calls(1, path).await.unwrap();
    cluster.mock.set_behavior(PRIMARY_MODEL, Behavior::hanging());
    let mut request = ask("anyone there?");
    request.deadline_ms = Some(5000);
    let started = Instant::now();
    let answer = reply(cluster.query("hedged", &request).await.unwrap());
    // The route hedges after 200 ms: the secondary answers and the hung call is cancelled.
    assert_eq!(outcomes(&answer), pairs(&[("primary", "cancelled"), ("secondary", "success")]));
    assert!(answer.trace.attempts[1].hedged && !answer.trace.attempts[0].hedged);
    assert!(started.elapsed() < Duration::from_millis(2500), "took {:?}", started.elapsed());
    // A cancelled call says nothing about the provider: no failure, and its slot comes back.
    let node = &cluster.nodes[0];
    eventually("the cancelled call to leave the primary", Duration::from_secs(5), || async {
        let health = node.health().await;
        let primary = health.providers.iter().find(|p| p.name == "primary").unwrap();
        (primary.in_flight == 0 && primary.failures == 0).then_some(())
    })
    .await
    .unwrap();
    cluster.shutdown().await;
}
