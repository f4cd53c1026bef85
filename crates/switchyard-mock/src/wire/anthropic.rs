//! The Anthropic Messages dialect: `POST /v1/messages`.
//!
//! Reproduces the real API's shapes so Anthropic clients can be tested without the network: `message`
//! objects with text content blocks and `end_turn`/`max_tokens` stop reasons, the named server-sent
//! events of a stream (`message_start`, `content_block_start`, `ping`, `content_block_delta`…,
//! `content_block_stop`, `message_delta`, `message_stop`), and the `{"type":"error","error":{type,
//! message}}` envelope with Anthropic's error types (`overloaded_error` on 529, `rate_limit_error` with a
//! `retry-after` header on 429, …). `max_tokens` is required, as in the real API. A failure in the
//! middle of a stream is an `event: error` carrying `overloaded_error`.

use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::{
    BadRequest, Events, Exchange, Failure, Reply, Text, add_retry_after, json_response, stream_cutoff, summarize,
};
use crate::behavior::MockError;
use crate::text;

/// The request fields the mock reads; anything else (temperature, metadata, …) is accepted and ignored.
#[derive(Deserialize)]
struct MessagesRequest {
    model: String,
    #[serde(default)]
    max_tokens: Option<u32>,
    messages: Vec<Message>,
    #[serde(default)]
    system: Option<Text>,
    #[serde(default)]
    stream: Option<bool>,
}

#[derive(Deserialize)]
struct Message {
    role: String,
    #[serde(default)]
    content: Text,
}

/// Just the model, to count a call whose body is otherwise invalid.
#[derive(Deserialize)]
struct ModelOnly {
    #[serde(default)]
    model: Option<String>,
}

pub(crate) fn parse(body: &[u8]) -> Result<Exchange, BadRequest> {
    let request: MessagesRequest = serde_json::from_slice(body).map_err(|err| BadRequest {
        model: serde_json::from_slice::<ModelOnly>(body).ok().and_then(|m| m.model),
        message: format!("invalid request body: {err}"),
        param: None,
    })?;
    let bad =
        |message: &str| BadRequest { model: Some(request.model.clone()), message: message.to_owned(), param: None };
    let max_tokens = match request.max_tokens {
        None => return Err(bad("max_tokens: Field required")),
        Some(0) => return Err(bad("max_tokens: Input should be greater than or equal to 1")),
        Some(n) => n,
    };
    if request.messages.is_empty() {
        return Err(bad("messages: at least one message is required"));
    }
    let (last_user, input_tokens) = summarize(
        request.system.as_ref().map(|s| s.0.as_str()),
        request.messages.into_iter().map(|m| (m.role == "user", m.content)),
    );
    Ok(Exchange {
        model: request.model,
        last_user,
        input_tokens,
        max_tokens: Some(max_tokens),
        stream: request.stream.unwrap_or(false),
        include_usage: false,
        logprobs: None,
    })
}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: ErrorObject<'a>,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: std::borrow::Cow<'a, str>,
}

fn envelope<'a>(kind: &'static str, message: impl Into<std::borrow::Cow<'a, str>>) -> ErrorEnvelope<'a> {
    ErrorEnvelope { kind: "error", error: ErrorObject { kind, message: message.into() } }
}

const INVALID: &str = "invalid_request_error";

fn describe<'a>(failure: &Failure<'a>, model: &str, input_tokens: u32) -> (StatusCode, ErrorEnvelope<'a>) {
    match *failure {
        Failure::BadRequest { message, .. } => (StatusCode::BAD_REQUEST, envelope(INVALID, message)),
        Failure::UnknownModel => (StatusCode::NOT_FOUND, model_not_found(model)),
        Failure::UnknownPrompt => (
            StatusCode::NOT_FOUND,
            envelope("not_found_error", format!("the mock has no recorded response of {model} to this prompt")),
        ),
        Failure::Scripted(MockError::Quota) => (
            StatusCode::BAD_REQUEST,
            envelope(
                INVALID,
                "Your credit balance is too low to access the Anthropic API. Please go to Plans & \
                 Billing to upgrade or purchase credits.",
            ),
        ),
        Failure::Scripted(MockError::Auth) => (StatusCode::UNAUTHORIZED, invalid_api_key()),
        Failure::Scripted(MockError::ContextLength) => (
            StatusCode::BAD_REQUEST,
            envelope(INVALID, format!("prompt is too long: {} tokens > 200000 maximum", input_tokens.max(200_001))),
        ),
        Failure::Scripted(MockError::ContentPolicy) => {
            (StatusCode::BAD_REQUEST, envelope(INVALID, "Output blocked by content filtering policy"))
        }
        Failure::Scripted(MockError::Status { status, .. }) => {
            let code = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (code, status_error(code, model))
        }
    }
}

fn model_not_found(model: &str) -> ErrorEnvelope<'static> {
    envelope("not_found_error", format!("model: {model}"))
}

fn invalid_api_key() -> ErrorEnvelope<'static> {
    envelope("authentication_error", "invalid x-api-key")
}

fn overloaded() -> ErrorEnvelope<'static> {
    envelope("overloaded_error", "Overloaded")
}

fn status_error(status: StatusCode, model: &str) -> ErrorEnvelope<'static> {
    match status.as_u16() {
        400 => envelope(INVALID, "Invalid request."),
        401 => invalid_api_key(),
        403 => envelope("permission_error", "Your API key does not have permission to use the specified resource."),
        404 => model_not_found(model),
        408 => envelope("api_error", "Request timed out."),
        413 => envelope("request_too_large", "Request exceeds the maximum allowed number of bytes."),
        429 => envelope(
            "rate_limit_error",
            "This request would exceed your organization's rate limit of 50 requests per minute. \
             For details, refer to: https://docs.anthropic.com/en/api/rate-limits.",
        ),
        529 => overloaded(),
        other if other < 500 => envelope(INVALID, format!("Request failed with status {other}.")),
        _ => envelope("api_error", "Internal server error"),
    }
}

pub(crate) fn error(failure: &Failure<'_>, model: &str, input_tokens: u32) -> Response {
    let (status, body) = describe(failure, model, input_tokens);
    let mut response = json_response(status, &body);
    add_retry_after(&mut response, failure, false);
    response
}

#[derive(Serialize)]
struct Usage {
    input_tokens: u32,
    output_tokens: u32,
}

#[derive(Serialize)]
struct TextBlock<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
}

#[derive(Serialize)]
struct MessageObject<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<TextBlock<'a>>,
    stop_reason: Option<&'static str>,
    stop_sequence: Option<&'a str>,
    usage: Usage,
}

fn message_id(seq: u64) -> String {
    format!("msg_mock{seq:016x}")
}

fn stop_reason(reply: &Reply<'_>) -> &'static str {
    if reply.cut { "max_tokens" } else { "end_turn" }
}

pub(crate) fn complete(reply: &Reply<'_>) -> Response {
    let id = message_id(reply.seq);
    let message = MessageObject {
        id: &id,
        kind: "message",
        role: "assistant",
        model: reply.model,
        content: vec![TextBlock { kind: "text", text: reply.text }],
        stop_reason: Some(stop_reason(reply)),
        stop_sequence: None,
        usage: Usage { input_tokens: reply.input_tokens, output_tokens: reply.output_tokens },
    };
    json_response(StatusCode::OK, &message)
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StreamEvent<'a> {
    MessageStart { message: MessageObject<'a> },
    ContentBlockStart { index: u32, content_block: TextBlock<'a> },
    Ping,
    ContentBlockDelta { index: u32, delta: TextBlock<'a> },
    ContentBlockStop { index: u32 },
    MessageDelta { delta: StopDelta, usage: OutputUsage },
    MessageStop,
}

#[derive(Serialize)]
struct StopDelta {
    stop_reason: &'static str,
    stop_sequence: Option<&'static str>,
}

#[derive(Serialize)]
struct OutputUsage {
    output_tokens: u32,
}

pub(crate) fn stream(reply: &Reply<'_>) -> Events {
    let id = message_id(reply.seq);
    let cutoff = stream_cutoff(reply);
    let mut events = Events::with_capacity(reply.output_tokens as usize + 7);
    let start = StreamEvent::MessageStart {
        message: MessageObject {
            id: &id,
            kind: "message",
            role: "assistant",
            model: reply.model,
            content: Vec::new(),
            stop_reason: None,
            stop_sequence: None,
            usage: Usage { input_tokens: reply.input_tokens, output_tokens: 1 },
        },
    };
    events.json(Some("message_start"), &start);
    let block = TextBlock { kind: "text", text: "" };
    events.json(Some("content_block_start"), &StreamEvent::ContentBlockStart { index: 0, content_block: block });
    events.json(Some("ping"), &StreamEvent::Ping);
    for (i, token) in text::tokens(reply.text).enumerate() {
        if cutoff == Some(i) {
            break;
        }
        let delta = TextBlock { kind: "text_delta", text: token };
        events.json(Some("content_block_delta"), &StreamEvent::ContentBlockDelta { index: 0, delta });
    }
    if cutoff.is_some() {
        events.json(Some("error"), &overloaded());
        return events;
    }
    events.json(Some("content_block_stop"), &StreamEvent::ContentBlockStop { index: 0 });
    let delta = StreamEvent::MessageDelta {
        delta: StopDelta { stop_reason: stop_reason(reply), stop_sequence: None },
        usage: OutputUsage { output_tokens: reply.output_tokens },
    };
    events.json(Some("message_delta"), &delta);
    events.json(Some("message_stop"), &StreamEvent::MessageStop);
    events
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn parse_reads_system_and_requires_max_tokens() {
        let body = br#"{"model":"claude-x","max_tokens":7,"system":"be brief",
            "messages":[{"role":"user","content":"one two"},{"role":"assistant","content":"three"}],
            "stream":true,"temperature":0}"#;
        let exchange = parse(body).unwrap();
        assert_eq!(exchange.model, "claude-x");
        assert_eq!(exchange.last_user, "one two");
        assert_eq!(exchange.input_tokens, 5);
        assert_eq!(exchange.max_tokens, Some(7));
        assert!(exchange.stream);

        let err = parse(br#"{"model":"claude-x","messages":[{"role":"user","content":"x"}]}"#).unwrap_err();
        assert_eq!(err.model.as_deref(), Some("claude-x"));
        assert!(err.message.contains("max_tokens"), "{}", err.message);
    }

    #[test]
    fn stream_events_serialize_with_their_type_tag() {
        let json = serde_json::to_value(StreamEvent::ContentBlockDelta {
            index: 0,
            delta: TextBlock { kind: "text_delta", text: "hi" },
        })
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi"}})
        );
        assert_eq!(serde_json::to_value(StreamEvent::Ping).unwrap(), serde_json::json!({"type":"ping"}));
    }
}
