//! The Anthropic Messages dialect, checked field by field as a client sees it.

use serde_json::{Value, json};
use switchyard_mock::{Behavior, MockError};

use crate::common::{anthropic_body, collect_sse, post_anthropic, start, start_scripted};

#[tokio::test]
async fn non_streaming_message_has_the_real_shape() {
    let server = start().await;
    let response = post_anthropic(&server, &anthropic_body("claude-x", "hello there")).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert!(body["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(body["type"], "message");
    assert_eq!(body["role"], "assistant");
    assert_eq!(body["model"], "claude-x");
    assert_eq!(body["content"], json!([{"type": "text", "text": "echo: hello there"}]));
    assert_eq!(body["stop_reason"], "end_turn");
    assert_eq!(body["stop_sequence"], Value::Null);
    // "you are terse" + "hello there" = 5 words in; "echo: hello there" = 3 words out.
    assert_eq!(body["usage"], json!({"input_tokens": 5, "output_tokens": 3}));
    assert_eq!(server.calls("claude-x"), 1);
}

#[tokio::test]
async fn streaming_sends_the_named_event_sequence() {
    let server = start_scripted("claude-x", Behavior::answering("hello world")).await;
    let mut body = anthropic_body("claude-x", "hi");
    body["stream"] = json!(true);
    let events = collect_sse(post_anthropic(&server, &body).await).await;
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    for event in &events {
        assert_eq!(event.json()["type"], event.event, "{}", event.data);
    }
    let start = events[0].json();
    assert_eq!(start["message"]["role"], "assistant");
    assert_eq!(start["message"]["content"], json!([]));
    assert_eq!(start["message"]["stop_reason"], Value::Null);
    assert_eq!(start["message"]["usage"], json!({"input_tokens": 4, "output_tokens": 1}));
    assert_eq!(events[1].json()["content_block"], json!({"type": "text", "text": ""}));
    assert_eq!(
        events[3].json(),
        json!({"type": "content_block_delta", "index": 0,
               "delta": {"type": "text_delta", "text": "hello "}})
    );
    assert_eq!(events[4].json()["delta"]["text"], "world");
    assert_eq!(
        events[6].json(),
        json!({"type": "message_delta",
               "delta": {"stop_reason": "end_turn", "stop_sequence": null},
               "usage": {"output_tokens": 2}})
    );
}

#[tokio::test]
async fn max_tokens_truncates_with_stop_reason_max_tokens() {
    let server = start_scripted("claude-x", Behavior::answering("a b c d e f")).await;
    let mut body = anthropic_body("claude-x", "go");
    body["max_tokens"] = json!(4);
    let message: Value = post_anthropic(&server, &body).await.json().await.unwrap();
    assert_eq!(message["content"][0]["text"], "a b c d");
    assert_eq!(message["stop_reason"], "max_tokens");
    assert_eq!(message["usage"]["output_tokens"], 4);

    body["stream"] = json!(true);
    let events = collect_sse(post_anthropic(&server, &body).await).await;
    let deltas = events.iter().filter(|e| e.event == "content_block_delta").count();
    assert_eq!(deltas, 4);
    let delta = events.iter().find(|e| e.event == "message_delta").unwrap();
    assert_eq!(delta.json()["delta"]["stop_reason"], "max_tokens");
}

#[tokio::test]
async fn missing_max_tokens_is_an_invalid_request() {
    let server = start().await;
    let body = json!({"model": "claude-x", "messages": [{"role": "user", "content": "hi"}]});
    let response = post_anthropic(&server, &body).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(body["error"]["message"].as_str().unwrap().contains("max_tokens"));
    assert_eq!(server.calls("claude-x"), 1);
}

#[tokio::test]
async fn content_blocks_and_system_blocks_are_read() {
    let server = start().await;
    let body = json!({
        "model": "claude-x",
        "max_tokens": 50,
        "system": [{"type": "text", "text": "be brief"}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "what now"}]}]
    });
    let message: Value = post_anthropic(&server, &body).await.json().await.unwrap();
    assert_eq!(message["content"][0]["text"], "echo: what now");
    assert_eq!(message["usage"]["input_tokens"], 4);
}

async fn check_error(error: MockError, status: u16, kind: &str, retry_after: Option<&str>) {
    let server = start_scripted("claude-x", Behavior::failing(error.clone())).await;
    let response = post_anthropic(&server, &anthropic_body("claude-x", "hi")).await;
    assert_eq!(response.status(), status, "{error:?}");
    assert_eq!(
        response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned()).as_deref(),
        retry_after,
        "{error:?}"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "error", "{error:?}");
    assert_eq!(body["error"]["type"], kind, "{error:?}");
    assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
}

#[tokio::test]
async fn every_error_kind_has_the_anthropic_status_and_type() {
    check_error(MockError::status(529), 529, "overloaded_error", None).await;
    check_error(MockError::rate_limited_ms(2500), 429, "rate_limit_error", Some("3")).await;
    check_error(MockError::status(500), 500, "api_error", None).await;
    check_error(MockError::status(401), 401, "authentication_error", None).await;
    check_error(MockError::Auth, 401, "authentication_error", None).await;
    check_error(MockError::status(400), 400, "invalid_request_error", None).await;
    check_error(MockError::status(403), 403, "permission_error", None).await;
    check_error(MockError::status(404), 404, "not_found_error", None).await;
    check_error(MockError::status(413), 413, "request_too_large", None).await;
    check_error(MockError::ContextLength, 400, "invalid_request_error", None).await;
    check_error(MockError::ContentPolicy, 400, "invalid_request_error", None).await;
    check_error(MockError::Quota, 400, "invalid_request_error", None).await;
}
