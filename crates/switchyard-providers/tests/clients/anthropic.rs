//! The Anthropic client against canned upstream bytes.

use std::time::Duration;

use switchyard_providers::{FailureClass, ProviderKind};

use crate::common::canned::{Canned, json, response, sse};
use crate::common::{assert_cost, collect, provider, request, settings};

const KEY: &str = "sk-ant-api03-test0123456789abcdef";

const ANSWER: &str = r#"{
  "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
  "type": "message",
  "role": "assistant",
  "model": "claude-sonnet-4-5-20250929",
  "content": [
    { "type": "thinking", "thinking": "The user wants a greeting.", "signature": "EqQBCgIYAhIM" },
    { "type": "text", "text": "Hello" },
    { "type": "text", "text": " there!" }
  ],
  "stop_reason": "end_turn",
  "stop_sequence": null,
  "usage": { "input_tokens": 2095, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 503 }
}"#;

const START: &str = r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}

"#;

const END: &str = r#"event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" there!"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}

"#;

const STOP: &str = "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

#[tokio::test]
async fn complete_sends_the_messages_shape_and_reads_the_answer() {
    let mut server = Canned::start(vec![json(200, ANSWER)]).await;
    let client = provider(settings(ProviderKind::Anthropic, &format!("{}/", server.base), Some(KEY)));
    let no_limit = switchyard_protocol::ChatRequest { max_tokens: None, logprobs: true, ..request() };
    let completion = client.complete(&no_limit).await.unwrap();
    assert_eq!(completion.content, "Hello there!");
    assert_eq!(completion.model, "claude-sonnet-4-5-20250929");
    assert_eq!(completion.finish_reason.as_deref(), Some("end_turn"));
    assert_eq!((completion.usage.input_tokens, completion.usage.output_tokens), (2095, 503));
    assert_eq!(completion.logprobs, None);
    assert_cost(&completion);

    let seen = server.request().await;
    assert_eq!(seen.target, "POST /v1/messages");
    assert_eq!(seen.headers["x-api-key"], KEY);
    assert_eq!(seen.headers["anthropic-version"], "2023-06-01");
    assert!(!seen.headers.contains_key("authorization"));
    assert!(seen.headers["content-type"].starts_with("application/json"));
    let body = &seen.body;
    assert_eq!(body["model"], "configured-model");
    assert_eq!(body["max_tokens"], 1024);
    assert_eq!(body["temperature"], 0.5);
    assert_eq!(body["top_p"], 0.5);
    assert_eq!(body["stop_sequences"], serde_json::json!(["\n\n"]));
    assert_eq!(body["stream"], false);
    assert_eq!(body["system"], "Be brief.\n\nAnswer in English.");
    assert_eq!(body["messages"], serde_json::json!([{"role": "user", "content": "Say hello"}]));
    assert!(body.get("logprobs").is_none());
}

#[tokio::test]
async fn without_system_messages_no_system_field_is_sent() {
    let mut server = Canned::start(vec![json(200, ANSWER)]).await;
    let client = provider(settings(ProviderKind::Anthropic, &server.base, Some(KEY)));
    let plain = switchyard_protocol::ChatRequest {
        messages: vec![switchyard_protocol::ChatMessage::user("hi")],
        max_tokens: Some(7),
        temperature: None,
        logprobs: false,
        stop: vec![],
        top_p: None,
    };
    client.complete(&plain).await.unwrap();
    let seen = server.request().await;
    assert!(seen.body.get("system").is_none());
    for field in ["temperature", "top_p", "stop_sequences"] {
        assert!(seen.body.get(field).is_none(), "{field} sent");
    }
    assert_eq!(seen.body["max_tokens"], 7);
}

#[tokio::test]
async fn stream_yields_deltas_then_the_whole_answer() {
    let mut server = Canned::start(vec![sse(&format!("{START}{END}{STOP}"))]).await;
    let client = provider(settings(ProviderKind::Anthropic, &server.base, Some(KEY)));
    let (deltas, done) = collect(client.stream(&request()).await.unwrap()).await;
    assert_eq!(deltas, ["Hello", " there!"]);
    let completion = done.unwrap();
    assert_eq!(completion.content, "Hello there!");
    assert_eq!(completion.finish_reason.as_deref(), Some("end_turn"));
    assert_eq!((completion.usage.input_tokens, completion.usage.output_tokens), (25, 15));
    assert_eq!(completion.model, "claude-sonnet-4-5-20250929");
    assert_cost(&completion);
    let seen = server.request().await;
    assert_eq!(seen.body["stream"], true);
    assert_eq!(seen.headers["accept"], "text/event-stream");
}

#[tokio::test]
async fn error_events_mid_stream_are_classified() {
    let overloaded = format!(
        "{START}event: error\ndata: {{\"type\": \"error\", \"error\": {{\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}}}\n\n"
    );
    let rate_limited = format!(
        "{START}event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"rate_limit_error\",\"message\":\"Number of request tokens has exceeded your per-minute rate limit\"}}}}\n\n"
    );
    let server = Canned::start(vec![sse(&overloaded), sse(&rate_limited)]).await;
    let client = provider(settings(ProviderKind::Anthropic, &server.base, Some(KEY)));

    let (deltas, done) = collect(client.stream(&request()).await.unwrap()).await;
    assert_eq!(deltas, ["Hello"]);
    let err = done.unwrap_err();
    assert_eq!(err.class, FailureClass::Retryable);
    assert!(err.message.contains("overloaded_error: Overloaded"), "{err}");

    let (_, done) = collect(client.stream(&request()).await.unwrap()).await;
    assert_eq!(done.unwrap_err().class, FailureClass::RateLimited { retry_after: None });
}

#[tokio::test]
async fn a_stream_without_message_stop_is_retryable() {
    let server = Canned::start(vec![sse(&format!("{START}{END}"))]).await;
    let client = provider(settings(ProviderKind::Anthropic, &server.base, Some(KEY)));
    let (deltas, done) = collect(client.stream(&request()).await.unwrap()).await;
    assert_eq!(deltas, ["Hello", " there!"]);
    let err = done.unwrap_err();
    assert_eq!(err.class, FailureClass::Retryable);
    assert!(err.message.contains("message_stop"), "{err}");
}

#[tokio::test]
async fn error_statuses_are_classified() {
    let overloaded = json(
        529,
        r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_011CSHoEeqs5C35K2UUqR7Fy"}"#,
    );
    let rate_limited = response(
        429,
        &[("content-type", "application/json"), ("retry-after", "7")],
        r#"{"type":"error","error":{"type":"rate_limit_error","message":"This request would exceed the rate limit for your organization of 50 input tokens per minute."}}"#,
    );
    let too_long = json(
        400,
        r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 208310 tokens > 200000 maximum"}}"#,
    );
    let auth = json(401, r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#);
    let server = Canned::start(vec![overloaded, rate_limited, too_long, auth]).await;
    let client = provider(settings(ProviderKind::Anthropic, &server.base, Some(KEY)));

    let err = client.complete(&request()).await.unwrap_err();
    assert_eq!((err.class, err.status), (FailureClass::Retryable, Some(529)));
    let Err(err) = client.stream(&request()).await else { panic!("rate limit expected") };
    assert_eq!(err.class, FailureClass::RateLimited { retry_after: Some(Duration::from_secs(7)) });
    let err = client.complete(&request()).await.unwrap_err();
    assert_eq!(err.class, FailureClass::ContextWindowExceeded);
    let err = client.complete(&request()).await.unwrap_err();
    assert_eq!((err.class, err.status), (FailureClass::Fatal { auth: true }, Some(401)));
}

#[tokio::test]
async fn an_empty_refusal_is_a_content_policy_failure() {
    let refusal = r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[],"stop_reason":"refusal","stop_sequence":null,"usage":{"input_tokens":12,"output_tokens":0}}"#;
    let server = Canned::start(vec![json(200, refusal)]).await;
    let client = provider(settings(ProviderKind::Anthropic, &server.base, Some(KEY)));
    assert_eq!(client.complete(&request()).await.unwrap_err().class, FailureClass::ContentPolicy);
}
