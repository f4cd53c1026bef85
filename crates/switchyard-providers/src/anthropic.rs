//! The client for Anthropic's Messages API.
//!
//! `POST {base_url}/v1/messages` with `x-api-key` and `anthropic-version`. Anthropic takes system prompts apart
//! from the conversation and requires `max_tokens`, so system messages are joined into `system` and the configured
//! `default_max_tokens` fills in when the query sets none. Streaming answers are typed SSE events
//! (`message_start`, `content_block_delta`, `message_delta`, `message_stop`, `ping`, `error`); `message_stop` ends a
//! well-formed stream, and an `error` event (such as `overloaded_error`) is classified like an error response.
//! Anthropic returns no log-probs, so [`Completion::logprobs`] is always `None` here.

use std::sync::Arc;

use eventsource_stream::Event;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::json;
use switchyard_core::FailureClass;
use switchyard_protocol::{ChatRequest, Completion, Role, Usage};

use crate::http::{HttpClient, Upstream};
use crate::sse::{self, Decoder, Step};
use crate::{CompletionStream, LlmProvider, ProviderError, ProviderSettings};

/// An Anthropic provider.
#[derive(Debug)]
pub(crate) struct AnthropicProvider {
    upstream: Arc<Upstream>,
}

impl AnthropicProvider {
    pub(crate) fn new(settings: ProviderSettings, http: HttpClient) -> AnthropicProvider {
        AnthropicProvider {
            upstream: Arc::new(Upstream::new(settings, http, "/v1/messages", HeaderName::from_static("x-api-key"), "")),
        }
    }

    fn headers(&self, stream: bool) -> Result<HeaderMap, ProviderError> {
        let mut headers = HeaderMap::new();
        if let Some((name, value)) = self.upstream.key_header()? {
            headers.insert(name, value);
        }
        let version = HeaderValue::from_str(&self.upstream.settings.anthropic_version).map_err(|_| {
            self.upstream.error(
                FailureClass::Fatal { auth: false },
                None,
                "anthropic_version is not a valid header value",
            )
        })?;
        headers.insert(HeaderName::from_static("anthropic-version"), version);
        if stream {
            headers.insert(http::header::ACCEPT, HeaderValue::from_static("text/event-stream"));
        }
        Ok(headers)
    }

    fn body(&self, request: &ChatRequest, stream: bool) -> serde_json::Value {
        let settings = &self.upstream.settings;
        let mut system = Vec::new();
        let mut messages = Vec::new();
        for message in &request.messages {
            match message.role {
                Role::System => system.push(message.content.as_str()),
                Role::User => messages.push(json!({ "role": "user", "content": message.content })),
                Role::Assistant => messages.push(json!({ "role": "assistant", "content": message.content })),
            }
        }
        let max_tokens = request.max_tokens.unwrap_or(settings.default_max_tokens);
        let mut body =
            json!({ "model": settings.model, "max_tokens": max_tokens, "messages": messages, "stream": stream });
        if !system.is_empty() {
            body["system"] = json!(system.join("\n\n"));
        }
        if let Some(temperature) = request.temperature {
            body["temperature"] = json!(temperature);
        }
        if let Some(top_p) = request.top_p {
            body["top_p"] = json!(top_p);
        }
        if !request.stop.is_empty() {
            body["stop_sequences"] = json!(request.stop);
        }
        body
    }
}

#[async_trait::async_trait]
impl LlmProvider for AnthropicProvider {
    fn name(&self) -> &str {
        &self.upstream.settings.name
    }

    fn model(&self) -> &str {
        &self.upstream.settings.model
    }

    async fn complete(&self, request: &ChatRequest) -> Result<Completion, ProviderError> {
        let upstream = &self.upstream;
        let (status, headers, bytes) = upstream.post_whole(self.headers(false)?, &self.body(request, false)).await?;
        let parsed = match serde_json::from_slice::<MessageResponse>(&bytes) {
            Ok(parsed) if parsed.kind.as_deref() != Some("error") => parsed,
            _ => return Err(upstream.error_response(status, &headers, &String::from_utf8_lossy(&bytes))),
        };
        let content: String = parsed
            .content
            .iter()
            .filter(|block| block.kind == "text")
            .filter_map(|block| block.text.as_deref())
            .collect();
        let answer = Answer {
            content,
            model: parsed.model,
            stop_reason: parsed.stop_reason,
            usage: parsed.usage.map(WireUsage::into_usage).unwrap_or_default(),
        };
        answer.finish(upstream)
    }

    async fn stream(&self, request: &ChatRequest) -> Result<CompletionStream, ProviderError> {
        let deadline = self.upstream.deadline(true);
        let response = self.upstream.post(self.headers(true)?, &self.body(request, true), deadline).await?;
        sse::drive(self.upstream.clone(), response, StreamDecoder::default(), deadline).await
    }
}

/// What an answer has gathered so far (all of it, for a non-streaming one).
#[derive(Default)]
struct Answer {
    content: String,
    model: Option<String>,
    stop_reason: Option<String>,
    usage: Usage,
}

impl Answer {
    /// The completion, or the content-policy failure an empty refusal really is.
    fn finish(self, upstream: &Upstream) -> Result<Completion, ProviderError> {
        if self.content.is_empty() && self.stop_reason.as_deref() == Some("refusal") {
            let message = "answer withheld by the provider's safety classifier (stop_reason refusal)";
            return Err(upstream.error(FailureClass::ContentPolicy, None, message));
        }
        Ok(Completion {
            content: self.content,
            model: self.model.unwrap_or_else(|| upstream.settings.model.clone()),
            finish_reason: self.stop_reason,
            usage: self.usage,
            cost_usd: upstream.cost(self.usage),
            logprobs: None,
        })
    }
}

/// Decodes typed events until `message_stop`.
#[derive(Default)]
struct StreamDecoder {
    answer: Answer,
}

impl Decoder for StreamDecoder {
    const TERMINATOR: &'static str = "message_stop";

    fn on_event(&mut self, event: &Event, upstream: &Upstream) -> Step {
        let Ok(payload) = serde_json::from_str::<StreamPayload>(&event.data) else {
            return Step::Fail(upstream.stream_error(&event.data));
        };
        // The payload's own `type` names the event; the SSE `event:` line is a copy of it.
        let kind = payload.kind.as_deref().unwrap_or(event.event.as_str());
        match kind {
            "message_start" => {
                if let Some(message) = payload.message {
                    self.answer.model = message.model;
                    if let Some(usage) = message.usage {
                        self.answer.usage = usage.merge_into(self.answer.usage);
                    }
                }
                Step::Skip
            }
            "content_block_start" => match payload.content_block {
                Some(block) if block.kind == "text" => self.text(block.text.unwrap_or_default()),
                _ => Step::Skip,
            },
            "content_block_delta" => match payload.delta {
                Some(delta) if delta.kind.as_deref() == Some("text_delta") => self.text(delta.text.unwrap_or_default()),
                _ => Step::Skip,
            },
            "message_delta" => {
                if let Some(stop_reason) = payload.delta.and_then(|delta| delta.stop_reason) {
                    self.answer.stop_reason = Some(stop_reason);
                }
                if let Some(usage) = payload.usage {
                    self.answer.usage = usage.merge_into(self.answer.usage);
                }
                Step::Skip
            }
            "message_stop" => Step::Finish(std::mem::take(&mut self.answer).finish(upstream)),
            "error" => Step::Fail(upstream.stream_error(&event.data)),
            // `ping`, `content_block_stop`, and event types added after this client was written.
            _ => Step::Skip,
        }
    }
}

impl StreamDecoder {
    fn text(&mut self, text: String) -> Step {
        self.answer.content.push_str(&text);
        Step::Delta(text)
    }
}

#[derive(Deserialize)]
struct MessageResponse {
    #[serde(rename = "type")]
    kind: Option<String>,
    model: Option<String>,
    #[serde(default)]
    content: Vec<ContentBlock>,
    stop_reason: Option<String>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct ContentBlock {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

#[derive(Deserialize)]
struct StreamPayload {
    #[serde(rename = "type")]
    kind: Option<String>,
    message: Option<StartMessage>,
    content_block: Option<ContentBlock>,
    delta: Option<Delta>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct StartMessage {
    model: Option<String>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct Delta {
    #[serde(rename = "type")]
    kind: Option<String>,
    text: Option<String>,
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

impl WireUsage {
    fn into_usage(self) -> Usage {
        self.merge_into(Usage::default())
    }

    /// Overwrites the counts this event reports; `message_delta` counts are cumulative, not increments.
    fn merge_into(self, usage: Usage) -> Usage {
        Usage {
            input_tokens: self.input_tokens.unwrap_or(usage.input_tokens),
            output_tokens: self.output_tokens.unwrap_or(usage.output_tokens),
        }
    }
}
