//! End-to-end: the OpenAI-compatible HTTP door in front of a real node on NATS and the mock provider.
//!
//! Every behaviour is checked both ways the door hands queries over: in process to the node's own router
//! (`LocalDispatch`) and over NATS to the routers' queue group (`NatsDispatch`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use switchyard_e2e::door::{Door, KEY, LIMITED_KEY, Mode};
use switchyard_e2e::{PRIMARY_KEY, PRIMARY_MODEL};
use switchyard_mock::{Behavior, MockError};
use switchyard_testkit::eventually;

fn chat(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

/// The `data:` payloads of an SSE body.
fn sse_data(body: &str) -> Vec<String> {
    body.lines().filter_map(|line| line.strip_prefix("data:")).map(|d| d.trim().to_owned()).collect()
}

async fn check_completion(mode: Mode) {
    let door = Door::start(mode).await.unwrap();
    let response = door.post(Some(KEY), chat("chat", "hello door")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{mode:?}");
    assert_eq!(response.headers()["x-switchyard-provider"], "primary");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "chat");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    let choice = &body["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert!(choice["message"]["content"].as_str().unwrap().contains("hello door"), "the mock echoes: {body}");
    assert_eq!(choice["finish_reason"], "stop");
    let usage = &body["usage"];
    let (prompt, completion) = (usage["prompt_tokens"].as_u64().unwrap(), usage["completion_tokens"].as_u64().unwrap());
    assert!(prompt > 0 && completion > 0, "{usage}");
    assert_eq!(usage["total_tokens"].as_u64(), Some(prompt + completion));
    // max_tokens reaches the provider: the mock stops at the limit.
    let mut limited = chat("chat", "one two three four five six seven eight");
    limited["max_tokens"] = json!(2);
    let body: Value = door.post(Some(KEY), limited).await.unwrap().json().await.unwrap();
    assert_eq!(body["choices"][0]["finish_reason"], "length", "{body}");
    assert_eq!(body["usage"]["completion_tokens"], 2, "{body}");
    door.shutdown().await;
}

#[tokio::test]
async fn a_completion_in_process() {
    check_completion(Mode::Local).await;
}

#[tokio::test]
async fn a_completion_over_nats() {
    check_completion(Mode::Nats).await;
}

async fn check_stream(mode: Mode) {
    let door = Door::start(mode).await.unwrap();
    let mut body = chat("chat", "stream me please");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let response = door.post(Some(KEY), body).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{mode:?}");
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let events = sse_data(&response.text().await.unwrap());
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c["id"] == chunks[0]["id"]));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String =
        chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect::<Vec<_>>().concat();
    assert!(text.contains("stream me please"), "{text}");
    assert!(chunks.len() >= 4, "role, several deltas, finish, usage: {chunks:?}");
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let usage = &chunks[chunks.len() - 1];
    assert_eq!(usage["choices"], json!([]));
    assert!(usage["usage"]["completion_tokens"].as_u64().unwrap() > 0, "{usage}");
    assert!(chunks[..chunks.len() - 1].iter().all(|c| c["usage"].is_null()), "usage only on the last chunk");
    // Without include_usage there is no usage chunk and no usage field.
    let mut body = chat("chat", "again");
    body["stream"] = json!(true);
    let events = sse_data(&door.post(Some(KEY), body).await.unwrap().text().await.unwrap());
    let last: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert!(last.get("usage").is_none(), "{last}");
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

/// Sends `body` with `key` and checks the status and the OpenAI error's code and param.
async fn check_error(door: &Door, key: Option<&str>, body: Value, status: u16, code: &str, param: Option<&str>) {
    let response = door.post(key, body.clone()).await.unwrap();
    assert_eq!(response.status().as_u16(), status, "{body}");
    let retry = response.headers().get("retry-after").cloned();
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], code, "{error}");
    assert_eq!(error["error"]["param"].as_str(), param, "{error}");
    assert!(error["error"]["message"].is_string() && error["error"]["type"].is_string(), "{error}");
    if status == 429 {
        assert!(retry.is_some(), "429 says when to retry");
    }
    let text = error.to_string();
    assert!(!text.contains(KEY) && !text.contains(PRIMARY_KEY), "no key in an error: {text}");
}

async fn check_errors(mode: Mode) {
    let door = Door::start(mode).await.unwrap();
    check_error(&door, None, chat("chat", "x"), 401, "invalid_api_key", None).await;
    check_error(&door, Some("sk-wrong"), chat("chat", "x"), 401, "invalid_api_key", None).await;
    check_error(&door, Some(KEY), chat("nope", "x"), 404, "model_not_found", Some("model")).await;
    check_error(&door, Some(LIMITED_KEY), chat("chat", "x"), 403, "model_not_allowed", Some("model")).await;
    let mut two = chat("chat", "x");
    two["n"] = json!(2);
    check_error(&door, Some(KEY), two, 400, "invalid_request", Some("n")).await;
    let mut tools = chat("chat", "x");
    tools["tools"] = json!([{"type": "function", "function": {"name": "f"}}]);
    check_error(&door, Some(KEY), tools, 400, "invalid_request", Some("tools")).await;
    // Every provider of the route fails: 502, also for a stream (before its first event).
    door.cluster.mock.set_behavior(PRIMARY_MODEL, Behavior::failing(MockError::status(500)));
    check_error(&door, Some(KEY), chat("solo", "x"), 502, "all_providers_failed", None).await;
    let mut stream = chat("solo", "x");
    stream["stream"] = json!(true);
    check_error(&door, Some(KEY), stream, 502, "all_providers_failed", None).await;
    door.shutdown().await;
}

#[tokio::test]
async fn errors_in_openai_format_in_process() {
    check_errors(Mode::Local).await;
}

#[tokio::test]
async fn errors_in_openai_format_over_nats() {
    check_errors(Mode::Nats).await;
}

/// A node holding as many queries as it may gets `overloaded`: a 429 with `Retry-After`.
async fn check_overloaded(mode: Mode) {
    let door = Door::start_holding_one(mode).await.unwrap();
    let first = door
        .while_one_is_held(
            door.post(Some(KEY), chat("solo", "first")),
            check_error(&door, Some(KEY), chat("solo", "second"), 429, "overloaded", None),
        )
        .await;
    assert_eq!(first.unwrap().status(), StatusCode::OK, "{mode:?}: the query holding the node is answered");
    door.shutdown().await;
}

#[tokio::test]
async fn overloaded_is_429_in_process() {
    check_overloaded(Mode::Local).await;
}

#[tokio::test]
async fn overloaded_is_429_over_nats() {
    check_overloaded(Mode::Nats).await;
}

#[tokio::test]
async fn models_health_and_idempotency_keys() {
    for mode in [Mode::Local, Mode::Nats] {
        let door = Door::start(mode).await.unwrap();
        let list = |key: &'static str| {
            let request = door.http.get(format!("{}/v1/models", door.base)).bearer_auth(key);
            async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
        };
        let all = list(KEY).await;
        let ids: Vec<&str> = all["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["chat", "solo", "hedged", "retrying", "long", "pooled"], "routes as models");
        assert_eq!(all["object"], "list");
        assert_eq!(list(LIMITED_KEY).await["data"][0]["id"], "solo", "only the key's routes");
        assert_eq!(list(LIMITED_KEY).await["data"].as_array().unwrap().len(), 1);
        let unauth = door.http.get(format!("{}/v1/models", door.base)).send().await.unwrap();
        assert_eq!(unauth.status(), StatusCode::UNAUTHORIZED);
        for path in ["healthz", "readyz"] {
            let response = door.http.get(format!("{}/{path}", door.base)).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{path}");
        }
        // The same Idempotency-Key is answered once: one upstream call, the same answer.
        door.cluster.mock.reset();
        let key = format!("idem-{}", uuid::Uuid::new_v4().simple());
        let mut answers = Vec::new();
        for _ in 0..2 {
            let request = door.http.post(format!("{}/v1/chat/completions", door.base)).bearer_auth(KEY);
            let response = request.header("Idempotency-Key", &key).json(&chat("solo", "once")).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let body: Value = response.json().await.unwrap();
            answers.push((body["id"].clone(), body["choices"][0]["message"]["content"].clone()));
        }
        assert_eq!(answers[0], answers[1], "the same answer, with the same id");
        assert!(answers[0].0.as_str().is_some_and(|id| id.starts_with("chatcmpl-")));
        assert_eq!(door.cluster.mock.calls(PRIMARY_MODEL), 1, "{mode:?}: one upstream call for one key");
        // Another request under the same key is a conflict.
        let request = door.http.post(format!("{}/v1/chat/completions", door.base)).bearer_auth(KEY);
        let response = request.header("Idempotency-Key", &key).json(&chat("solo", "other")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::CONFLICT, "{mode:?}");
        door.shutdown().await;
    }
}

/// A client of the door that hangs up gives its place in the node back at once, and its provider call is
/// cancelled, plain or streamed: the node holds one query, its provider one call, and the query's deadline and the
/// provider's timeouts are a minute away, so the next query is answered within seconds only if both were released.
#[tokio::test]
async fn a_client_that_hangs_up_frees_its_place_and_its_call() {
    check_hang_up(Mode::Local).await;
    // The door publishes the query over NATS; its client library tells the routers when the door drops it.
    check_hang_up(Mode::Nats).await;
}

async fn check_hang_up(mode: Mode) {
    let door = Door::start_with(mode, |mut config| {
        config.node.max_in_flight_queries = 1;
        config.node.default_deadline_ms = 60_000;
        for provider in &mut config.providers {
            provider.max_in_flight = 1;
            (provider.timeout_ms, provider.first_token_timeout_ms) = (60_000, 60_000);
        }
        config
    })
    .await
    .unwrap();
    let mock = &door.cluster.mock;
    for stream in [false, true] {
        mock.reset();
        mock.set_behavior(PRIMARY_MODEL, Behavior::hanging());
        let mut body = chat("solo", "hang up on me");
        body["stream"] = json!(stream);
        let request = door.http.post(format!("{}/v1/chat/completions", door.base)).bearer_auth(KEY).json(&body);
        let client = tokio::spawn(async move {
            if let Ok(response) = request.send().await {
                let _ = response.bytes().await;
            }
        });
        eventually("the query reached the provider", Duration::from_secs(5), || async {
            (mock.calls(PRIMARY_MODEL) == 1).then_some(())
        })
        .await
        .unwrap();
        client.abort();
        let _ = client.await;

        mock.set_behavior(PRIMARY_MODEL, Behavior::answering("next"));
        let status = eventually("the next query is answered", Duration::from_secs(10), || async {
            let response = door.post(Some(KEY), chat("solo", "next")).await.ok()?;
            (response.status() == StatusCode::OK).then_some(response.status())
        })
        .await;
        assert!(status.is_ok(), "{mode:?}, stream {stream}: the hung-up query still holds the node or its provider");
    }
    door.shutdown().await;
}

/// A query with an id runs on when its in-process client hangs up, also on a node without a shared idempotency
/// store (de-duplication by its own table only), so that the client's retry under the same id gets the answer of
/// the one upstream call instead of a `client_gone` kept for the id.
#[tokio::test]
async fn a_keyed_query_runs_on_when_its_client_hangs_up_even_without_a_shared_store() {
    use switchyard_e2e::ask;
    use switchyard_runtime::local::Asked;

    let (mock, node, dispatcher) = router_node("keyed").await;
    mock.set_behavior(PRIMARY_MODEL, Behavior::answering("the one answer").with_latency_ms(500));
    let mut request = ask("keep going");
    request.id = Some("keyed-hang-up".into());

    let first = tokio::spawn({
        let (dispatcher, request) = (dispatcher.clone(), request.clone());
        async move { dispatcher.ask("chat", request, 100, Duration::from_secs(30)).await }
    });
    eventually("the query reached the provider", Duration::from_secs(5), || async {
        (mock.calls(PRIMARY_MODEL) == 1).then_some(())
    })
    .await
    .unwrap();
    first.abort();
    let _ = first.await;

    match dispatcher.ask("chat", request, 100, Duration::from_secs(30)).await {
        Asked::Answered(Ok(reply)) => assert_eq!(reply.content, "the one answer"),
        Asked::Answered(Err(error)) => panic!("the retry got an error: {error:?}"),
        _ => panic!("the retry got no answer"),
    }
    assert_eq!(mock.calls(PRIMARY_MODEL), 1, "the retry joined the running query");
    node.shutdown().await;
    mock.shutdown().await;
}

/// A plain query without an id runs in its in-process caller's task, yet dies with its router as a query task
/// would: when the node is killed with one in flight, its caller hears `Dropped` at once (not after the deadline),
/// and a query asked afterwards is not run.
#[tokio::test]
async fn a_keyless_query_in_process_is_dropped_when_its_router_dies() {
    use switchyard_e2e::ask;
    use switchyard_runtime::local::Asked;

    let (mock, node, dispatcher) = router_node("dies").await;
    mock.set_behavior(PRIMARY_MODEL, Behavior::hanging());

    let in_flight = tokio::spawn({
        let dispatcher = dispatcher.clone();
        async move { dispatcher.ask("chat", ask("hang"), 100, Duration::from_secs(60)).await }
    });
    eventually("the query reached the provider", Duration::from_secs(5), || async {
        (mock.calls(PRIMARY_MODEL) == 1).then_some(())
    })
    .await
    .unwrap();
    node.abort().await;
    let asked = tokio::time::timeout(Duration::from_secs(5), in_flight).await.expect("dropped at once").unwrap();
    assert!(matches!(asked, Asked::Dropped), "the query in flight died with its router: {asked:?}");

    let after = dispatcher.ask("chat", ask("after"), 100, Duration::from_secs(5)).await;
    assert!(matches!(after, Asked::Dropped), "a dead router runs nothing: {after:?}");
    assert_eq!(mock.calls(PRIMARY_MODEL), 1, "the query asked after the router died reached no provider");
    mock.shutdown().await;
}

/// A mock and one router node on it (no shared state, no door), with the node's in-process dispatcher.
async fn router_node(
    name: &str,
) -> (switchyard_mock::MockServer, switchyard_runtime::Node, std::sync::Arc<switchyard_runtime::local::LocalDispatcher>)
{
    use switchyard_e2e::{cluster_config, connect};
    use switchyard_runtime::{Node, SharedState};

    let mock = switchyard_mock::MockServer::start(switchyard_mock::MockConfig::default()).await.unwrap();
    let namespace = format!("{name}-{}", uuid::Uuid::new_v4().simple());
    let config = cluster_config(&mock, &namespace, "node-1").unwrap();
    let node = Node::start(&config, connect().await.unwrap(), SharedState::default()).await.unwrap();
    let dispatcher = std::sync::Arc::new(node.dispatcher().expect("a router node"));
    (mock, node, dispatcher)
}
