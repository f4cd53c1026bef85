//! Answers longer than one NATS message (the server's `max_payload`, 1 MiB on the test server and in
//! `deploy/nats.conf`).
//!
//! Such an answer never leaves a client waiting out its deadline. A plain query gets a typed error at once that
//! names both sizes; a stream gets every chunk, and its final frame leaves the content to them when the router
//! hands calls to its own provider actors (the default). Over the bus the provider's whole answer cannot reach
//! the router, so the query ends with the provider's error, after the chunks it streamed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use switchyard_e2e::{Calls, PRIMARY_MODEL, TestCluster, ask, error, local_and_over_nats};
use switchyard_mock::Behavior;
use switchyard_protocol::client::StreamFrame;

/// About 1.3 MB of text in 20,000 words (the mock streams a word per chunk).
fn long_text() -> String {
    (0..20_000).map(|i| format!("{i:0>8}-{}", "x".repeat(56))).collect::<Vec<_>>().join(" ")
}

const LIMIT_MESSAGE: &str = "exceeds the bus's message limit";

async fn a_longer_answer_than_one_message_is_told_at_once(path: Calls) {
    // The mock takes its time to cut so long a text into chunks: the test cluster's 250 ms for a first token is
    // too short for it.
    let cluster = TestCluster::start_with(1, &switchyard_testkit::redis_url(), |_, mut config| {
        config.providers.iter_mut().for_each(|p| p.first_token_timeout_ms = 10_000);
        path.apply(config)
    })
    .await
    .unwrap();
    let text = long_text();
    cluster.mock.set_behavior(PRIMARY_MODEL, Behavior::answering(text.clone()));

    let started = Instant::now();
    let failed = error(cluster.query("solo", &ask("a long one")).await.unwrap());
    assert!(failed.error.message.contains(LIMIT_MESSAGE), "{failed:?}");
    if path == Calls::Local {
        assert_eq!(failed.error.code, "answer_too_large");
        assert!(failed.trace.is_some_and(|t| t.attempts.len() == 1), "the error keeps the answer's trace");
    }
    assert!(started.elapsed() < Duration::from_secs(10), "the client did not wait out its 30 s deadline");

    let frames = cluster.stream("solo", &ask("a long stream")).await.unwrap();
    let (last, chunks) = frames.split_last().unwrap();
    let streamed: String = chunks
        .iter()
        .map(|frame| match frame {
            StreamFrame::Chunk { delta, .. } => delta.as_str(),
            other => panic!("not a chunk: {other:?}"),
        })
        .collect();
    assert_eq!(streamed.len(), text.len(), "every chunk came; the last frame: {last:?}");
    match (path, last) {
        (Calls::Local, StreamFrame::Done { chunks: count, reply, .. }) => {
            assert_eq!(*count, chunks.len() as u64);
            assert!(reply.content.is_empty(), "the final frame leaves the text to the chunks");
            assert_eq!(reply.finish_reason.as_deref(), Some("stop"));
        }
        (Calls::OverNats, StreamFrame::Error { error, .. }) => {
            let attempt = error.trace.as_ref().and_then(|t| t.attempts.first()).and_then(|a| a.message.as_deref());
            assert!(attempt.is_some_and(|m| m.contains(LIMIT_MESSAGE)), "{error:?}");
        }
        (_, other) => panic!("unexpected final frame on {path:?}: {other:?}"),
    }
    cluster.shutdown().await;
}

local_and_over_nats!(a_longer_answer_than_one_message_is_told_at_once);
