//! The OpenAI Chat Completions dialect: `POST /v1/chat/completions`.
//!
//! Provider clients are written against the real API, so the mock reproduces its shapes field for field:
//! `chat.completion` objects, `chat.completion.chunk` server-sent events ending in `data: [DONE]`, the
//! optional usage chunk of `stream_options.include_usage`, log-probabilities, and the
//! `{"error": {message, type, param, code}}` error envelope with OpenAI's own types, codes and
//! `retry-after`/`retry-after-ms` headers. A failure in the middle of a stream is a `data: {"error": …}`
//! event after which the stream stops, as the real API does.

use std::borrow::Cow;

use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::{
    BadRequest, Events, Exchange, Failure, Reply, Text, add_retry_after, json_response, stream_cutoff, summarize,
};
use crate::behavior::{Confidence, MockError};
use crate::text;

/// The request fields the mock reads; anything else (temperature, tools, …) is accepted and ignored.
#[derive(Deserialize)]
struct ChatRequest {
    model: String,
    messages: Vec<ChatMessage>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    logprobs: Option<bool>,
    #[serde(default)]
    top_logprobs: Option<u8>,
}

#[derive(Deserialize)]
struct ChatMessage {
    role: String,
    #[serde(default)]
    content: Text,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// Just the model, to count a call whose body is otherwise invalid.
#[derive(Deserialize)]
struct ModelOnly {
    #[serde(default)]
    model: Option<String>,
}

pub(crate) fn parse(body: &[u8]) -> Result<Exchange, BadRequest> {
    let request: ChatRequest = serde_json::from_slice(body).map_err(|err| BadRequest {
        model: serde_json::from_slice::<ModelOnly>(body).ok().and_then(|m| m.model),
        message: format!("We could not parse the JSON body of your request: {err}"),
        param: None,
    })?;
    let bad = |message: &str, param| BadRequest {
        model: Some(request.model.clone()),
        message: message.to_owned(),
        param: Some(param),
    };
    if request.messages.is_empty() {
        return Err(bad("[] is too short - 'messages'", "messages"));
    }
    let stream = request.stream.unwrap_or(false);
    if request.stream_options.is_some() && !stream {
        return Err(bad("The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options"));
    }
    let logprobs = request.logprobs.unwrap_or(false);
    match request.top_logprobs {
        Some(n) if n > 20 => {
            return Err(bad(
                "Invalid 'top_logprobs': integer above maximum value. Expected a value <= 20.",
                "top_logprobs",
            ));
        }
        Some(_) if !logprobs => {
            return Err(bad(
                "Invalid value for 'top_logprobs': logprobs must be set to true when top_logprobs is set.",
                "top_logprobs",
            ));
        }
        _ => {}
    }
    let (last_user, input_tokens) =
        summarize(None, request.messages.into_iter().map(|m| (m.role == "user", m.content)));
    Ok(Exchange {
        model: request.model,
        last_user,
        input_tokens,
        max_tokens: request.max_completion_tokens.or(request.max_tokens),
        stream,
        include_usage: request.stream_options.is_some_and(|o| o.include_usage),
        logprobs: logprobs.then(|| request.top_logprobs.unwrap_or(0)),
    })
}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    error: ErrorObject<'a>,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    message: Cow<'a, str>,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl<'a> ErrorObject<'a> {
    fn new(message: impl Into<Cow<'a, str>>, kind: &'a str, code: Option<&'a str>) -> Self {
        Self { message: message.into(), kind, param: None, code }
    }
}

const SERVER_ERROR: &str = "The server had an error while processing your request. Sorry about that!";

fn describe<'a>(failure: &Failure<'a>, model: &str, input_tokens: u32) -> (StatusCode, ErrorObject<'a>) {
    let invalid = "invalid_request_error";
    match *failure {
        Failure::BadRequest { message, param } => {
            (StatusCode::BAD_REQUEST, ErrorObject { param, ..ErrorObject::new(message, invalid, None) })
        }
        Failure::UnknownModel => (StatusCode::NOT_FOUND, model_not_found(model)),
        Failure::UnknownPrompt => (
            StatusCode::NOT_FOUND,
            ErrorObject::new(
                format!("The mock has no recorded response of `{model}` to this prompt."),
                invalid,
                Some("replay_not_found"),
            ),
        ),
        Failure::Scripted(MockError::Quota) => (
            StatusCode::TOO_MANY_REQUESTS,
            ErrorObject::new(
                "You exceeded your current quota, please check your plan and billing details. For more \
                 information on this error, read the docs: \
                 https://platform.openai.com/docs/guides/error-codes/api-errors.",
                "insufficient_quota",
                Some("insufficient_quota"),
            ),
        ),
        Failure::Scripted(MockError::Auth) => (StatusCode::UNAUTHORIZED, invalid_api_key()),
        Failure::Scripted(MockError::ContextLength) => (
            StatusCode::BAD_REQUEST,
            ErrorObject {
                param: Some("messages"),
                ..ErrorObject::new(
                    format!(
                        "This model's maximum context length is 8192 tokens. However, your messages \
                         resulted in {} tokens. Please reduce the length of the messages.",
                        input_tokens.max(8193)
                    ),
                    invalid,
                    Some("context_length_exceeded"),
                )
            },
        ),
        Failure::Scripted(MockError::ContentPolicy) => (
            StatusCode::BAD_REQUEST,
            ErrorObject::new(
                "Your request was rejected as a result of our safety system. Your prompt may contain \
                 text that is not allowed by our safety system.",
                invalid,
                Some("content_policy_violation"),
            ),
        ),
        Failure::Scripted(error @ MockError::Status { status, .. }) => {
            let code = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (code, status_error(code, model, error))
        }
    }
}

fn model_not_found(model: &str) -> ErrorObject<'static> {
    ErrorObject::new(
        format!("The model `{model}` does not exist or you do not have access to it."),
        "invalid_request_error",
        Some("model_not_found"),
    )
}

fn invalid_api_key() -> ErrorObject<'static> {
    ErrorObject::new(
        "Incorrect API key provided: sk-ab***yz. You can find your API key at \
         https://platform.openai.com/account/api-keys.",
        "invalid_request_error",
        Some("invalid_api_key"),
    )
}

fn status_error(status: StatusCode, model: &str, error: &MockError) -> ErrorObject<'static> {
    let server = "server_error";
    match status.as_u16() {
        400 => ErrorObject::new("Invalid request.", "invalid_request_error", None),
        401 => invalid_api_key(),
        403 => ErrorObject::new(
            "Country, region, or territory not supported",
            "request_forbidden",
            Some("unsupported_country_region_territory"),
        ),
        404 => model_not_found(model),
        408 => ErrorObject::new("Request timed out.", server, Some("timeout")),
        413 => ErrorObject::new("Request too large.", "invalid_request_error", Some("request_too_large")),
        429 => {
            let wait = error.retry_after().map_or_else(|| "1s".to_owned(), |(_, ms)| format!("{ms}ms"));
            ErrorObject::new(
                format!(
                    "Rate limit reached for {model} in organization org-mock on requests per min \
                     (RPM): Limit 60, Used 60, Requested 1. Please try again in {wait}. Visit \
                     https://platform.openai.com/account/rate-limits to learn more."
                ),
                "requests",
                Some("rate_limit_exceeded"),
            )
        }
        500 => ErrorObject::new(SERVER_ERROR, server, None),
        502 => ErrorObject::new("Bad gateway.", server, None),
        503 => ErrorObject::new("The server is overloaded or not ready yet.", server, None),
        504 => ErrorObject::new("Gateway timeout.", server, None),
        529 => ErrorObject::new("The server is overloaded.", server, Some("overloaded")),
        other if other < 500 => {
            ErrorObject::new(format!("Request failed with status {other}."), "invalid_request_error", None)
        }
        _ => ErrorObject::new(SERVER_ERROR, server, None),
    }
}

pub(crate) fn error(failure: &Failure<'_>, model: &str, input_tokens: u32) -> Response {
    let (status, error) = describe(failure, model, input_tokens);
    let mut response = json_response(status, &ErrorEnvelope { error });
    add_retry_after(&mut response, failure, true);
    response
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: u32,
    completion_tokens: u32,
    total_tokens: u32,
}

impl Usage {
    fn of(reply: &Reply<'_>) -> Self {
        Self {
            prompt_tokens: reply.input_tokens,
            completion_tokens: reply.output_tokens,
            total_tokens: reply.input_tokens.saturating_add(reply.output_tokens),
        }
    }
}

#[derive(Serialize)]
struct Logprobs<'a> {
    content: Vec<TokenLogprob<'a>>,
}

#[derive(Serialize)]
struct TokenLogprob<'a> {
    token: &'a str,
    logprob: f64,
    bytes: &'a [u8],
    top_logprobs: Vec<TopLogprob>,
}

#[derive(Serialize)]
struct TopLogprob {
    token: String,
    logprob: f64,
    bytes: Vec<u8>,
}

/// The log-probability entry of one token: the token itself heads its `top` alternatives, the others
/// are made-up tokens with strictly lower log-probabilities.
fn token_logprob(token: &str, top: u8, confidence: Confidence) -> TokenLogprob<'_> {
    let logprob = confidence.logprob(token);
    let top_logprobs = (0..top)
        .map(|i| {
            let token = if i == 0 { token.to_owned() } else { format!("alt{i}:{}", token.trim_end()) };
            let bytes = token.as_bytes().to_vec();
            TopLogprob { token, logprob: logprob - f64::from(i) * 0.75, bytes }
        })
        .collect();
    TokenLogprob { token, logprob, bytes: token.as_bytes(), top_logprobs }
}

fn finish_reason(reply: &Reply<'_>) -> &'static str {
    if reply.cut { "length" } else { "stop" }
}

#[derive(Serialize)]
struct Completion<'a> {
    id: String,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [Choice<'a>; 1],
    usage: Usage,
    system_fingerprint: Option<&'a str>,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    message: AssistantMessage<'a>,
    logprobs: Option<Logprobs<'a>>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct AssistantMessage<'a> {
    role: &'static str,
    content: &'a str,
    refusal: Option<&'a str>,
}

fn completion_id(seq: u64) -> String {
    format!("chatcmpl-mock{seq:016x}")
}

pub(crate) fn complete(reply: &Reply<'_>) -> Response {
    let logprobs = reply.logprobs.map(|top| Logprobs {
        content: text::tokens(reply.text).map(|token| token_logprob(token, top, reply.confidence)).collect(),
    });
    let completion = Completion {
        id: completion_id(reply.seq),
        object: "chat.completion",
        created: reply.created,
        model: reply.model,
        choices: [Choice {
            index: 0,
            message: AssistantMessage { role: "assistant", content: reply.text, refusal: None },
            logprobs,
            finish_reason: finish_reason(reply),
        }],
        usage: Usage::of(reply),
        system_fingerprint: None,
    };
    json_response(StatusCode::OK, &completion)
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<ChunkChoice<'a>>,
    /// Absent unless usage was requested; then `null` on every chunk but the usage chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<Usage>>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<Logprobs<'a>>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
}

fn chunk<'a>(id: &'a str, reply: &'a Reply<'_>, choices: Vec<ChunkChoice<'a>>) -> Chunk<'a> {
    Chunk {
        id,
        object: "chat.completion.chunk",
        created: reply.created,
        model: reply.model,
        choices,
        usage: reply.include_usage.then_some(None),
    }
}

pub(crate) fn stream(reply: &Reply<'_>) -> Events {
    let id = completion_id(reply.seq);
    let cutoff = stream_cutoff(reply);
    let mut events = Events::with_capacity(reply.output_tokens as usize + 4);
    let first = ChunkChoice {
        index: 0,
        delta: Delta { role: Some("assistant"), content: Some("") },
        logprobs: None,
        finish_reason: None,
    };
    events.json(None, &chunk(&id, reply, vec![first]));
    for (i, token) in text::tokens(reply.text).enumerate() {
        if cutoff == Some(i) {
            break;
        }
        let logprobs =
            reply.logprobs.map(|top| Logprobs { content: vec![token_logprob(token, top, reply.confidence)] });
        let choice =
            ChunkChoice { index: 0, delta: Delta { role: None, content: Some(token) }, logprobs, finish_reason: None };
        events.json(None, &chunk(&id, reply, vec![choice]));
    }
    if cutoff.is_some() {
        let error = ErrorObject::new(SERVER_ERROR, "server_error", None);
        events.json(None, &ErrorEnvelope { error });
        return events;
    }
    let last =
        ChunkChoice { index: 0, delta: Delta::default(), logprobs: None, finish_reason: Some(finish_reason(reply)) };
    events.json(None, &chunk(&id, reply, vec![last]));
    if reply.include_usage {
        let usage_chunk = Chunk { usage: Some(Some(Usage::of(reply))), ..chunk(&id, reply, Vec::new()) };
        events.json(None, &usage_chunk);
    }
    events.raw("[DONE]");
    events
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn parse_reads_the_fields_the_mock_uses() {
        let body = br#"{"model":"gpt-x","messages":[{"role":"system","content":"be nice"},
            {"role":"user","content":[{"type":"text","text":"hi there"}]}],
            "max_tokens":5,"max_completion_tokens":3,"temperature":0.2,"stream":true,
            "stream_options":{"include_usage":true},"logprobs":true,"top_logprobs":2}"#;
        let exchange = parse(body).unwrap();
        assert_eq!(exchange.model, "gpt-x");
        assert_eq!(exchange.last_user, "hi there");
        assert_eq!(exchange.input_tokens, 4);
        assert_eq!(exchange.max_tokens, Some(3));
        assert!(exchange.stream && exchange.include_usage);
        assert_eq!(exchange.logprobs, Some(2));
    }

    #[test]
    fn parse_rejects_like_the_real_api() {
        let check = |body: &str, model: Option<&str>, param: Option<&str>| {
            let err = parse(body.as_bytes()).unwrap_err();
            assert_eq!(err.model.as_deref(), model, "{body}");
            assert_eq!(err.param, param, "{body}");
        };
        check("not json", None, None);
        check(r#"{"model":"m"}"#, Some("m"), None);
        check(r#"{"model":"m","messages":[]}"#, Some("m"), Some("messages"));
        check(
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream_options":{}}"#,
            Some("m"),
            Some("stream_options"),
        );
        check(
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"top_logprobs":2}"#,
            Some("m"),
            Some("top_logprobs"),
        );
    }

    #[test]
    fn top_logprobs_start_with_the_token_and_decrease() {
        let entry = token_logprob("hello ", 3, Confidence::Hashed);
        assert_eq!(entry.top_logprobs.len(), 3);
        assert_eq!(entry.top_logprobs[0].token, "hello ");
        assert_eq!(entry.top_logprobs[0].logprob, entry.logprob);
        assert!(entry.top_logprobs[2].logprob < entry.top_logprobs[1].logprob);
    }
}
