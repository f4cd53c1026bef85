//! Injected faults as a client experiences them: hangs, resets, mid-stream failures, latency, delays,
//! and reproducible random error mixes.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use switchyard_mock::{Behavior, ErrorRule, Latency, MockConfig, MockError, MockServer};

use crate::common::{anthropic_body, client, collect_sse, openai_body, post_openai, start, start_scripted, start_with};

#[tokio::test]
async fn hang_holds_the_request_until_the_client_times_out() {
    let server = start_scripted("slow", Behavior::hanging()).await;
    let started = Instant::now();
    let err = client()
        .post(format!("{}/chat/completions", server.openai_base_url()))
        .timeout(Duration::from_millis(300))
        .json(&openai_body("slow", "hi"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(server.calls("slow"), 1);
}

#[tokio::test]
async fn shutdown_cuts_hanging_requests() {
    let server = start_scripted("slow", Behavior::hanging()).await;
    let url = format!("{}/chat/completions", server.openai_base_url());
    let request = tokio::spawn(async move { client().post(url).json(&openai_body("slow", "hi")).send().await });
    crate::common::eventually(|| server.calls("slow") == 1).await;
    let started = Instant::now();
    server.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(2));
    let err = request.await.unwrap().unwrap_err();
    assert!(!err.is_timeout(), "{err:?}");
}

#[tokio::test]
async fn reset_gives_a_connection_error_and_no_response() {
    let server = start_scripted("flaky", Behavior { reset_rate: 1.0, ..Behavior::default() }).await;
    for body in [openai_body("flaky", "hi"), anthropic_body("flaky", "hi")] {
        let path = if body.get("max_tokens").is_some() {
            format!("{}/v1/messages", server.base_url())
        } else {
            format!("{}/chat/completions", server.openai_base_url())
        };
        let err = client().post(path).json(&body).send().await.unwrap_err();
        assert!(err.status().is_none(), "{err:?}");
        assert!(!err.is_timeout(), "{err:?}");
        assert!(err.is_request() || err.is_connect(), "{err:?}");
        eprintln!("reset seen by the client as: {err:?}");
    }
    assert_eq!(server.calls("flaky"), 2);
    // The server itself is fine: other models still answer.
    assert_eq!(post_openai(&server, &openai_body("ok", "hi")).await.status(), 200);
}

#[tokio::test]
async fn fail_after_tokens_breaks_an_openai_stream_with_an_error_event() {
    let behavior = Behavior { fail_after_tokens: Some(2), ..Behavior::answering("a b c d e") };
    let server = start_scripted("m", behavior).await;
    let mut body = openai_body("m", "hi");
    body["stream"] = json!(true);
    let events = collect_sse(post_openai(&server, &body).await).await;
    // Role, two tokens, then the error; no finish chunk and no [DONE].
    assert_eq!(events.len(), 4, "{events:#?}");
    assert_eq!(events[2].json()["choices"][0]["delta"]["content"], "b ");
    let error = events[3].json();
    assert_eq!(error["error"]["type"], "server_error");
    assert!(events.iter().all(|e| e.data != "[DONE]"));

    // Non-streaming requests are not affected.
    let completion: serde_json::Value = post_openai(&server, &openai_body("m", "hi")).await.json().await.unwrap();
    assert_eq!(completion["choices"][0]["message"]["content"], "a b c d e");
}

#[tokio::test]
async fn fail_after_tokens_breaks_an_anthropic_stream_with_overloaded() {
    let behavior = Behavior { fail_after_tokens: Some(1), ..Behavior::answering("a b c") };
    let server = start_scripted("m", behavior).await;
    let mut body = anthropic_body("m", "hi");
    body["stream"] = json!(true);
    let events = collect_sse(crate::common::post_anthropic(&server, &body).await).await;
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names, ["message_start", "content_block_start", "ping", "content_block_delta", "error"]);
    assert_eq!(
        events[4].json(),
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    );
}

#[tokio::test]
async fn short_answers_complete_before_fail_after_tokens() {
    let behavior = Behavior { fail_after_tokens: Some(5), ..Behavior::answering("a b") };
    let server = start_scripted("m", behavior).await;
    let mut body = openai_body("m", "hi");
    body["stream"] = json!(true);
    let events = collect_sse(post_openai(&server, &body).await).await;
    assert_eq!(events.last().unwrap().data, "[DONE]");
}

#[tokio::test]
async fn latency_delays_the_response_head() {
    let server = start_scripted("m", Behavior::default().with_latency_ms(150)).await;
    let started = Instant::now();
    let response = post_openai(&server, &openai_body("m", "hi")).await;
    assert_eq!(response.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn chunk_delay_spaces_the_stream_out() {
    let behavior = Behavior { chunk_delay_ms: 40, ..Behavior::answering("a b c") };
    let server = start_scripted("m", behavior).await;
    let mut body = openai_body("m", "hi");
    body["stream"] = json!(true);
    let response = post_openai(&server, &body).await;
    let started = Instant::now();
    let mut stream = response.bytes_stream();
    let mut chunks = 0;
    while let Some(chunk) = stream.next().await {
        chunk.unwrap();
        chunks += 1;
    }
    // Role, three tokens, finish and [DONE] are six events, so five gaps of 40 ms after the first.
    assert!(chunks >= 2, "{chunks}");
    assert!(started.elapsed() >= Duration::from_millis(150), "{:?}", started.elapsed());
}

/// The statuses a fresh server with `seed` gives to a fixed sequence of requests.
async fn statuses(seed: u64) -> Vec<u16> {
    let behavior = Behavior {
        errors: vec![
            ErrorRule { rate: 0.3, error: MockError::status(503) },
            ErrorRule { rate: 0.2, error: MockError::rate_limited_ms(100) },
        ],
        latency: Latency::Uniform { min_ms: 0, max_ms: 2 },
        ..Behavior::default()
    };
    let server: MockServer = start_with(MockConfig { seed, default_behavior: behavior, ..MockConfig::default() }).await;
    let mut out = Vec::new();
    for _ in 0..40 {
        out.push(post_openai(&server, &openai_body("m", "hi")).await.status().as_u16());
    }
    out
}

#[tokio::test]
async fn the_seed_makes_error_mixes_reproducible() {
    let first = statuses(42).await;
    assert_eq!(first, statuses(42).await);
    assert!(first.contains(&200) && first.contains(&503) && first.contains(&429), "{first:?}");
}

#[tokio::test]
async fn concurrent_keep_alive_requests_are_all_answered() {
    let server = start().await;
    let client = client();
    let url = format!("{}/chat/completions", server.openai_base_url());
    let body = openai_body("m", "hi");
    let started = Instant::now();
    let results = futures::stream::iter(0..2_000)
        .map(|_| {
            let request = client.post(&url).json(&body).send();
            async move { request.await.map(|r| r.status().as_u16()) }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    eprintln!("2000 requests at concurrency 64 in {:?}", started.elapsed());
    assert!(results.iter().all(|r| matches!(r, Ok(200))));
    assert_eq!(server.calls("m"), 2_000);
}

#[tokio::test]
async fn unknown_routes_are_json_404s() {
    let server = start().await;
    let response = client().get(format!("{}/v1/nothing", server.base_url())).send().await.unwrap();
    assert_eq!(response.status(), 404);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unknown_url");
}
