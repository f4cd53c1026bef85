//! The client for OpenAI's chat completions API and the servers that copy it (vLLM, llama.cpp server, Ollama,
//! Together).
//!
//! `POST {base_url}/chat/completions` with a bearer key. Non-streaming answers are read whole; streaming answers are
//! SSE chunks ending in `data: [DONE]`, with usage in a final chunk (`stream_options.include_usage`). Log-probs are
//! requested when the query asks for them (cascades use them as a confidence signal). A `content_filter` finish
//! with no text, or a refusal with no text, is a [`FailureClass::ContentPolicy`] failure, not an empty answer.

use std::sync::Arc;

use eventsource_stream::Event;
use http::HeaderMap;
use serde::{Deserialize, Serialize};
use switchyard_core::FailureClass;
use switchyard_protocol::{ChatRequest, Completion, Role, TokenLogprob, Usage};

use crate::http::{HttpClient, Upstream};
use crate::sse::{self, Decoder, Step};
use crate::{CompletionStream, LlmProvider, ProviderError, ProviderSettings};

/// An OpenAI-compatible provider.
#[derive(Debug)]
pub(crate) struct OpenAiProvider {
    upstream: Arc<Upstream>,
}

impl OpenAiProvider {
    pub(crate) fn new(settings: ProviderSettings, http: HttpClient) -> OpenAiProvider {
        OpenAiProvider {
            upstream: Arc::new(Upstream::new(
                settings,
                http,
                "/chat/completions",
                http::header::AUTHORIZATION,
                "Bearer ",
            )),
        }
    }

    fn headers(&self, stream: bool) -> Result<HeaderMap, ProviderError> {
        let mut headers = HeaderMap::new();
        if let Some((name, value)) = self.upstream.key_header()? {
            headers.insert(name, value);
        }
        if stream {
            headers.insert(http::header::ACCEPT, http::HeaderValue::from_static("text/event-stream"));
        }
        Ok(headers)
    }

    fn body<'a>(&'a self, request: &'a ChatRequest, stream: bool) -> Body<'a> {
        Body {
            model: &self.upstream.settings.model,
            messages: request.messages.iter().map(|m| OutMessage { role: role(m.role), content: &m.content }).collect(),
            stream,
            max_tokens: request.max_tokens,
            temperature: request.temperature,
            top_p: request.top_p,
            stop: &request.stop,
            stream_options: stream.then_some(StreamOptions { include_usage: true }),
            logprobs: request.logprobs.then_some(true),
            top_logprobs: request.logprobs.then_some(0),
        }
    }
}

/// The request body, serialized straight from the query (no intermediate JSON tree).
#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    messages: Vec<OutMessage<'a>>,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    logprobs: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_logprobs: Option<u32>,
}

#[derive(Serialize)]
struct OutMessage<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

fn role(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}

#[async_trait::async_trait]
impl LlmProvider for OpenAiProvider {
    fn name(&self) -> &str {
        &self.upstream.settings.name
    }

    fn model(&self) -> &str {
        &self.upstream.settings.model
    }

    async fn complete(&self, request: &ChatRequest) -> Result<Completion, ProviderError> {
        let upstream = &self.upstream;
        let (status, headers, bytes) = upstream.post_whole(self.headers(false)?, &self.body(request, false)).await?;
        let Ok(parsed) = serde_json::from_slice::<ChatResponse>(&bytes) else {
            return Err(upstream.error_response(status, &headers, &String::from_utf8_lossy(&bytes)));
        };
        let Some(choice) = parsed.choices.into_iter().next() else {
            return Err(upstream.error_response(status, &headers, &String::from_utf8_lossy(&bytes)));
        };
        let message = choice.message.unwrap_or_default();
        let answer = Answer {
            content: message.content.unwrap_or_default(),
            refusal: message.refusal,
            model: parsed.model,
            finish_reason: choice.finish_reason,
            usage: parsed.usage,
            logprobs: choice.logprobs.and_then(|logprobs| logprobs.content).map(convert_logprobs),
        };
        answer.finish(upstream)
    }

    async fn stream(&self, request: &ChatRequest) -> Result<CompletionStream, ProviderError> {
        let deadline = self.upstream.deadline(true);
        let response = self.upstream.post(self.headers(true)?, &self.body(request, true), deadline).await?;
        let decoder = StreamDecoder { answer: Answer::default() };
        sse::drive(self.upstream.clone(), response, decoder, deadline).await
    }
}

/// What an answer has gathered so far (all of it, for a non-streaming one).
#[derive(Default)]
struct Answer {
    content: String,
    refusal: Option<String>,
    model: Option<String>,
    finish_reason: Option<String>,
    usage: Option<WireUsage>,
    logprobs: Option<Vec<TokenLogprob>>,
}

impl Answer {
    /// The completion, or the content-policy failure an empty filtered answer really is.
    fn finish(self, upstream: &Upstream) -> Result<Completion, ProviderError> {
        if self.content.is_empty() {
            if self.finish_reason.as_deref() == Some("content_filter") {
                let message = "answer withheld by the provider's content filter (finish_reason content_filter)";
                return Err(upstream.error(FailureClass::ContentPolicy, None, message));
            }
            if let Some(refusal) = self.refusal.filter(|refusal| !refusal.is_empty()) {
                return Err(upstream.error(FailureClass::ContentPolicy, None, &format!("model refused: {refusal}")));
            }
        }
        let usage = self.usage.map(WireUsage::into_usage).unwrap_or_default();
        Ok(Completion {
            content: self.content,
            model: self.model.unwrap_or_else(|| upstream.settings.model.clone()),
            finish_reason: self.finish_reason,
            usage,
            cost_usd: upstream.cost(usage),
            logprobs: self.logprobs,
        })
    }
}

/// Decodes `data:` chunks until `[DONE]`.
struct StreamDecoder {
    answer: Answer,
}

impl Decoder for StreamDecoder {
    const TERMINATOR: &'static str = "[DONE]";

    fn on_event(&mut self, event: &Event, upstream: &Upstream) -> Step {
        let data = event.data.trim();
        if data == "[DONE]" {
            return Step::Finish(std::mem::take(&mut self.answer).finish(upstream));
        }
        let chunk = match serde_json::from_str::<ChatChunk>(data) {
            Ok(chunk) if chunk.error.is_none() => chunk,
            // An error object, or a chunk we cannot read: both are classified from the raw data.
            _ => return Step::Fail(upstream.stream_error(data)),
        };
        if chunk.model.is_some() {
            self.answer.model = chunk.model;
        }
        if chunk.usage.is_some() {
            self.answer.usage = chunk.usage;
        }
        let Some(choice) = chunk.choices.into_iter().next() else { return Step::Skip };
        if choice.finish_reason.is_some() {
            self.answer.finish_reason = choice.finish_reason;
        }
        if let Some(content) = choice.logprobs.and_then(|logprobs| logprobs.content) {
            self.answer.logprobs.get_or_insert_with(Vec::new).extend(convert_logprobs(content));
        }
        let delta = choice.delta.unwrap_or_default();
        if let Some(refusal) = delta.refusal {
            self.answer.refusal.get_or_insert_with(String::new).push_str(&refusal);
        }
        match delta.content {
            Some(text) if !text.is_empty() => {
                self.answer.content.push_str(&text);
                Step::Delta(text)
            }
            _ => Step::Skip,
        }
    }
}

fn convert_logprobs(content: Vec<WireLogprob>) -> Vec<TokenLogprob> {
    content.into_iter().map(|entry| TokenLogprob { token: entry.token, logprob: entry.logprob }).collect()
}

#[derive(Deserialize)]
struct ChatResponse {
    model: Option<String>,
    #[serde(default)]
    choices: Vec<Choice>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct Choice {
    message: Option<Message>,
    finish_reason: Option<String>,
    logprobs: Option<WireLogprobs>,
}

#[derive(Deserialize, Default)]
struct Message {
    content: Option<String>,
    refusal: Option<String>,
}

#[derive(Deserialize)]
struct ChatChunk {
    error: Option<serde_json::Value>,
    model: Option<String>,
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    delta: Option<Message>,
    finish_reason: Option<String>,
    logprobs: Option<WireLogprobs>,
}

#[derive(Deserialize)]
struct WireLogprobs {
    content: Option<Vec<WireLogprob>>,
}

#[derive(Deserialize)]
struct WireLogprob {
    token: String,
    logprob: f64,
}

#[derive(Deserialize)]
struct WireUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
}

impl WireUsage {
    fn into_usage(self) -> Usage {
        Usage { input_tokens: self.prompt_tokens.unwrap_or(0), output_tokens: self.completion_tokens.unwrap_or(0) }
    }
}
