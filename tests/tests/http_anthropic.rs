//! End-to-end: the door's Anthropic-compatible `POST /v1/messages` in front of a real node on NATS and the mock
//! provider (whose answers echo the last user message: "echo: <text>", counting one input token per word, the
//! system prompt's included).
//!
//! Every behaviour is checked both ways the door hands queries over: in process to the node's own router
//! (`LocalDispatch`) and over NATS to the routers' queue group (`NatsDispatch`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use reqwest::StatusCode;
use serde_json::{Value, json};

use switchyard_e2e::door::{Door, KEY, LIMITED_KEY, Mode};
use switchyard_e2e::{PRIMARY_KEY, PRIMARY_MODEL};
use switchyard_mock::{Behavior, MockError};

fn message(model: &str, text: &str) -> Value {
    json!({"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": text}]})
}

/// The named events of an SSE body: `(event, data)`, comments (keep-alives) left out.
fn sse_events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter_map(|block| {
            let field = |name: &str| {
                block.lines().find_map(|line| line.strip_prefix(name)).map(|value| value.trim().to_owned())
            };
            let data = field("data:")?;
            Some((field("event:").unwrap_or_default(), serde_json::from_str(&data).unwrap()))
        })
        .collect()
}

async fn check_completion(mode: Mode) {
    let door = Door::start(mode).await.unwrap();
    let response = door.post_messages(Some(KEY), message("chat", "hello door")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{mode:?}");
    assert_eq!(response.headers()["x-switchyard-provider"], "primary");
    let body: Value = response.json().await.unwrap();
    assert!(body["id"].as_str().unwrap().starts_with("msg_"), "{body}");
    assert_eq!(body["type"], "message");
    assert_eq!(body["role"], "assistant");
    assert_eq!(body["model"], "chat");
    assert_eq!(body["content"], json!([{"type": "text", "text": "echo: hello door"}]), "{body}");
    assert_eq!(body["stop_reason"], "end_turn");
    assert_eq!(body["stop_sequence"], Value::Null);
    let (input, output) = (body["usage"]["input_tokens"].as_u64().unwrap(), body["usage"]["output_tokens"].as_u64());
    assert!(input > 0 && output > Some(0), "{body}");
    // The system prompt reaches the model, before the conversation.
    let mut with_system = message("chat", "hello door");
    with_system["system"] = json!([{"type": "text", "text": "You answer in five words."}]);
    let body: Value = door.post_messages(Some(KEY), with_system).await.unwrap().json().await.unwrap();
    assert_eq!(body["usage"]["input_tokens"].as_u64(), Some(input + 5), "{body}");
    // max_tokens reaches the provider: the mock stops at the limit.
    let mut limited = message("chat", "one two three four five six seven eight");
    limited["max_tokens"] = json!(2);
    let body: Value = door.post_messages(Some(KEY), limited).await.unwrap().json().await.unwrap();
    assert_eq!(body["stop_reason"], "max_tokens", "{body}");
    assert_eq!(body["usage"]["output_tokens"], 2, "{body}");
    // Anthropic's clients with an auth token send a bearer key instead of x-api-key.
    let request = door.http.post(format!("{}/v1/messages", door.base)).bearer_auth(KEY);
    let response = request.json(&message("solo", "bearer")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    door.shutdown().await;
}

#[tokio::test]
async fn a_message_in_process() {
    check_completion(Mode::Local).await;
}

#[tokio::test]
async fn a_message_over_nats() {
    check_completion(Mode::Nats).await;
}

async fn check_stream(mode: Mode) {
    let door = Door::start(mode).await.unwrap();
    let mut body = message("chat", "stream me please");
    body["stream"] = json!(true);
    body["system"] = json!("Be brief.");
    let response = door.post_messages(Some(KEY), body).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{mode:?}");
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let events = sse_events(&response.text().await.unwrap());
    for (name, data) in &events {
        assert_eq!(data["type"], name.as_str(), "each event's data names it: {events:?}");
    }
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names[..3], ["message_start", "content_block_start", "ping"], "{names:?}");
    assert_eq!(names[names.len() - 3..], ["content_block_stop", "message_delta", "message_stop"], "{names:?}");
    let deltas = &events[3..events.len() - 3];
    assert!(deltas.len() >= 2 && deltas.iter().all(|(name, _)| name == "content_block_delta"), "{names:?}");
    let start = &events[0].1["message"];
    assert!(start["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!((&start["role"], &start["model"], &start["content"]), (&json!("assistant"), &json!("chat"), &json!([])));
    assert_eq!(events[1].1["content_block"], json!({"type": "text", "text": ""}));
    let text: String = deltas
        .iter()
        .map(|(_, data)| {
            assert_eq!((&data["index"], &data["delta"]["type"]), (&json!(0), &json!("text_delta")));
            data["delta"]["text"].as_str().unwrap()
        })
        .collect();
    assert_eq!(text, "echo: stream me please");
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"], json!({"stop_reason": "end_turn", "stop_sequence": null}));
    let usage = &delta["usage"];
    assert!(usage["input_tokens"].as_u64().unwrap() > 3, "the system prompt counts: {usage}");
    assert!(usage["output_tokens"].as_u64().unwrap() > 0, "{usage}");
    door.shutdown().await;
}

#[tokio::test]
async fn a_stream_in_process() {
    check_stream(Mode::Local).await;
}

#[tokio::test]
async fn a_stream_over_nats() {
    check_stream(Mode::Nats).await;
}

/// Sends `body` with `key` in `x-api-key` and checks the status and the Anthropic error: its type, its
/// `details.error_code`, and a message naming `names`.
async fn check_error(door: &Door, key: Option<&str>, body: Value, status: u16, kind: &str, code: &str, names: &str) {
    let response = door.post_messages(key, body.clone()).await.unwrap();
    assert_eq!(response.status().as_u16(), status, "{body}");
    let retry = response.headers()["x-should-retry"].to_str().unwrap().to_owned();
    let retry_after = response.headers().get("retry-after").cloned();
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["error"]["type"], kind, "{error}");
    assert_eq!(error["error"]["details"]["error_code"], code, "{error}");
    assert!(error["error"]["message"].as_str().unwrap().contains(names), "{error}");
    assert_eq!(retry, if status >= 500 { "true" } else { "false" }, "{error}");
    if status == 529 {
        assert!(retry_after.is_some(), "529 says when to retry");
    }
    let text = error.to_string();
    assert!(!text.contains(KEY) && !text.contains(PRIMARY_KEY), "no key in an error: {text}");
}

async fn check_errors(mode: Mode) {
    let door = Door::start(mode).await.unwrap();
    let hi = || message("chat", "x");
    check_error(&door, None, hi(), 401, "authentication_error", "invalid_api_key", "x-api-key").await;
    check_error(&door, Some("sk-wrong"), hi(), 401, "authentication_error", "invalid_api_key", "x-api-key").await;
    check_error(&door, Some(KEY), message("nope", "x"), 404, "not_found_error", "model_not_found", "nope").await;
    let limited = (LIMITED_KEY, "model_not_allowed");
    check_error(&door, Some(limited.0), hi(), 403, "permission_error", limited.1, "chat").await;
    let invalid = |field: &str, value: Value| {
        let mut body = hi();
        body[field] = value;
        body
    };
    check_error(&door, Some(KEY), invalid("top_k", json!(5)), 400, "invalid_request_error", "invalid_request", "top_k")
        .await;
    let tools = invalid("tools", json!([{"name": "f", "input_schema": {"type": "object"}}]));
    check_error(&door, Some(KEY), tools, 400, "invalid_request_error", "invalid_request", "tools").await;
    let mut no_max = hi();
    no_max.as_object_mut().unwrap().remove("max_tokens");
    check_error(&door, Some(KEY), no_max, 400, "invalid_request_error", "invalid_request", "max_tokens").await;
    let assistant_first = invalid("messages", json!([{"role": "assistant", "content": "hi"}]));
    check_error(&door, Some(KEY), assistant_first, 400, "invalid_request_error", "invalid_request", "user").await;
    let image = invalid("messages", json!([{"role": "user", "content": [{"type": "image", "source": {}}]}]));
    check_error(&door, Some(KEY), image, 400, "invalid_request_error", "invalid_request", "image").await;
    let response = door
        .http
        .post(format!("{}/v1/messages", door.base))
        .header("x-api-key", KEY)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
    // Every provider of the route fails: 502, also for a stream (before its first event).
    door.cluster.mock.set_behavior(PRIMARY_MODEL, Behavior::failing(MockError::status(500)));
    let failed = ("api_error", "all_providers_failed");
    check_error(&door, Some(KEY), message("solo", "x"), 502, failed.0, failed.1, "").await;
    let mut stream = message("solo", "x");
    stream["stream"] = json!(true);
    check_error(&door, Some(KEY), stream.clone(), 502, failed.0, failed.1, "").await;
    // A failure after chunks went out: the stream has started, and it ends with Anthropic's `error` event after
    // the text. (In process the failure can overtake the chunks, which travel on the bus while the failure comes
    // on a local channel; the client library shows the chunks published before the error first.)
    door.cluster.mock.set_behavior(PRIMARY_MODEL, Behavior { fail_after_tokens: Some(2), ..Behavior::default() });
    stream["messages"] = json!([{"role": "user", "content": "one two three four five six"}]);
    let response = door.post_messages(Some(KEY), stream).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{mode:?}");
    let mut events = sse_events(&response.text().await.unwrap());
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert!(names.contains(&"content_block_delta"), "{names:?}");
    assert!(!names.contains(&"message_stop"), "{names:?}");
    let (name, error) = events.pop().unwrap();
    assert_eq!(name, "error");
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "api_error", "{error}");
    assert_eq!(error["error"]["details"]["error_code"], "stream_interrupted", "{error}");
    door.shutdown().await;
}

#[tokio::test]
async fn errors_in_anthropic_format_in_process() {
    check_errors(Mode::Local).await;
}

#[tokio::test]
async fn errors_in_anthropic_format_over_nats() {
    check_errors(Mode::Nats).await;
}

/// A node holding as many queries as it may is overloaded: Anthropic's 529 `overloaded_error`, with
/// `Retry-After`.
async fn check_overloaded(mode: Mode) {
    let door = Door::start_holding_one(mode).await.unwrap();
    let first = door
        .while_one_is_held(
            door.post_messages(Some(KEY), message("solo", "first")),
            check_error(&door, Some(KEY), message("solo", "second"), 529, "overloaded_error", "overloaded", ""),
        )
        .await;
    assert_eq!(first.unwrap().status(), StatusCode::OK, "{mode:?}: the query holding the node is answered");
    door.shutdown().await;
}

#[tokio::test]
async fn overloaded_is_529_in_process() {
    check_overloaded(Mode::Local).await;
}

#[tokio::test]
async fn overloaded_is_529_over_nats() {
    check_overloaded(Mode::Nats).await;
}

#[tokio::test]
async fn idempotency_keys_and_the_payload_limit() {
    for mode in [Mode::Local, Mode::Nats] {
        let door = Door::start(mode).await.unwrap();
        // The same Idempotency-Key is answered once: one upstream call, the same answer.
        door.cluster.mock.reset();
        let key = format!("idem-{}", uuid::Uuid::new_v4().simple());
        let post = |body: Value| {
            let request = door.http.post(format!("{}/v1/messages", door.base)).header("x-api-key", KEY);
            request.header("Idempotency-Key", &key).json(&body).send()
        };
        let mut answers = Vec::new();
        for _ in 0..2 {
            let response = post(message("solo", "once")).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let body: Value = response.json().await.unwrap();
            answers.push(body["content"].clone());
        }
        assert_eq!(answers[0], answers[1]);
        assert_eq!(door.cluster.mock.calls(PRIMARY_MODEL), 1, "{mode:?}: one upstream call for one key");
        // Another request under the same key is a conflict.
        let response = post(message("solo", "other")).await.unwrap();
        assert_eq!(response.status(), StatusCode::CONFLICT, "{mode:?}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["details"]["error_code"], "idempotency_conflict", "{error}");
        // A body over the door's limit (64 KiB here) is a 413 `request_too_large`.
        let huge = message("solo", &"word ".repeat(20_000));
        check_error(&door, Some(KEY), huge, 413, "request_too_large", "payload_too_large", "bytes").await;
        door.shutdown().await;
    }
}
