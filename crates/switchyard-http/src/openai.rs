//! The OpenAI chat completions wire format: requests read into a [`QueryRequest`], answers written back.
//!
//! A request is read field by field from its JSON object, so every field is decided on explicitly: the ones
//! Switchyard honours are mapped (`model` names the route; `max_completion_tokens` or `max_tokens`,
//! `temperature`, `top_p`, `stop` (a string or up to four), `metadata`, `logprobs`, `stream`,
//! `stream_options.include_usage`), harmless ones are accepted at their neutral value or ignored (`n: 1`, `user`,
//! `seed`, `tool_choice: "none"`, `response_format: text`, ...), and anything that would change the answer without
//! being honoured (`n > 1`, tools, penalties, images) or is unknown gets a 400 naming the parameter, as OpenAI
//! does for unknown arguments.

use serde::Serialize;
use serde_json::{Map, Value};

use switchyard_protocol::client::{QueryReply, QueryRequest};
use switchyard_protocol::{ChatMessage, Role, Usage};

use crate::error::ApiError;
use crate::fields;

/// A chat completion request, read.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatCompletionRequest {
    /// The route.
    pub model: String,
    /// The query, `id` and `stream` set by the caller.
    pub query: QueryRequest,
    pub stream: bool,
    /// `stream_options.include_usage`: a last chunk carries the usage.
    pub include_usage: bool,
}

/// Reads a request body.
pub fn parse_request(body: &[u8]) -> Result<ChatCompletionRequest, ApiError> {
    let fields = fields::object(body)?;
    let mut model = None;
    let mut messages = None;
    let mut query = QueryRequest::new(Vec::new());
    let (mut max_tokens, mut max_completion_tokens) = (None, None);
    let (mut stream, mut include_usage) = (false, false);
    for (name, value) in &fields {
        if value.is_null() {
            // An explicit null is the default for every optional parameter.
            continue;
        }
        match name.as_str() {
            "model" => model = Some(fields::string(name, value)?),
            "messages" => messages = Some(parse_messages(value)?),
            "max_tokens" => max_tokens = Some(fields::positive(name, value)?),
            "max_completion_tokens" => max_completion_tokens = Some(fields::positive(name, value)?),
            "temperature" => query.temperature = Some(fields::temperature(name, value, 2.0)?),
            "top_p" => query.top_p = Some(fields::probability(name, value)?),
            "stop" => query.stop = fields::strings(name, value)?,
            "stream" => stream = fields::boolean(name, value)?,
            "stream_options" => include_usage = parse_stream_options(value)?,
            "metadata" => query.metadata = parse_metadata(value)?,
            "logprobs" => query.logprobs = fields::boolean(name, value)?,
            "n" => fields::neutral(name, value, &Value::from(1))?,
            "presence_penalty" | "frequency_penalty" => fields::neutral_number(name, value, 0.0)?,
            "top_logprobs" => fields::neutral(name, value, &Value::from(0))?,
            "logit_bias" if value.as_object().is_some_and(Map::is_empty) => {}
            "tools" | "functions" if fields::is_empty_array(value) => {}
            "tool_choice" | "function_call" if value == "none" => {}
            "response_format" if value.get("type").is_some_and(|t| t == "text") => {}
            // Harmless: they change neither the answer nor its form.
            "user" | "seed" | "store" | "parallel_tool_calls" | "service_tier" => {}
            "tools" | "functions" | "tool_choice" | "function_call" => {
                return Err(ApiError::invalid("tools and function calling are not supported by this gateway", name));
            }
            "logit_bias" | "response_format" | "audio" | "modalities" | "prediction" | "reasoning_effort"
            | "web_search_options" => {
                return Err(ApiError::invalid(format!("`{name}` is not supported by this gateway"), name));
            }
            _ => return Err(ApiError::invalid(format!("unrecognized request argument supplied: {name}"), name)),
        }
    }
    let model = model.ok_or_else(|| ApiError::invalid("you must provide a model parameter", "model"))?;
    query.messages = messages.ok_or_else(|| ApiError::invalid("missing required parameter: 'messages'", "messages"))?;
    if query.messages.is_empty() {
        return Err(ApiError::invalid("messages must not be empty", "messages"));
    }
    query.max_tokens = max_completion_tokens.or(max_tokens);
    query.stream = stream;
    if include_usage && !stream {
        return Err(ApiError::invalid("stream_options is only allowed when stream is true", "stream_options"));
    }
    Ok(ChatCompletionRequest { model, query, stream, include_usage })
}

fn parse_stream_options(value: &Value) -> Result<bool, ApiError> {
    let Some(options) = value.as_object() else {
        return Err(ApiError::invalid("stream_options must be an object", "stream_options"));
    };
    let mut include_usage = false;
    for (name, value) in options {
        match name.as_str() {
            "include_usage" => include_usage = value.as_bool().unwrap_or(false),
            _ => return Err(ApiError::invalid(format!("unrecognized stream option: {name}"), "stream_options")),
        }
    }
    Ok(include_usage)
}

fn parse_metadata(value: &Value) -> Result<std::collections::BTreeMap<String, String>, ApiError> {
    let Some(map) = value.as_object() else {
        return Err(ApiError::invalid("metadata must be an object of strings", "metadata"));
    };
    map.iter()
        .map(|(k, v)| match v.as_str() {
            Some(v) => Ok((k.clone(), v.to_owned())),
            None => Err(ApiError::invalid(format!("metadata value of `{k}` must be a string"), "metadata")),
        })
        .collect()
}

fn parse_messages(value: &Value) -> Result<Vec<ChatMessage>, ApiError> {
    let Some(items) = value.as_array() else {
        return Err(ApiError::invalid("messages must be an array", "messages"));
    };
    items.iter().enumerate().map(|(i, item)| parse_message(i, item)).collect()
}

fn parse_message(i: usize, item: &Value) -> Result<ChatMessage, ApiError> {
    let param = |f: &str| format!("messages[{i}].{f}");
    let Some(fields) = item.as_object() else {
        return Err(ApiError::invalid(format!("messages[{i}] must be an object"), param("role")));
    };
    let mut role = None;
    let mut content = None;
    for (name, value) in fields {
        match name.as_str() {
            "role" => {
                role = Some(match value.as_str() {
                    Some("system" | "developer") => Role::System,
                    Some("user") => Role::User,
                    Some("assistant") => Role::Assistant,
                    Some("tool" | "function") => {
                        return Err(ApiError::invalid("tool messages are not supported by this gateway", param(name)));
                    }
                    _ => {
                        return Err(ApiError::invalid(
                            "role must be system, developer, user or assistant",
                            param(name),
                        ));
                    }
                });
            }
            "content" => content = Some(parse_content(value, &param(name))?),
            "name" | "refusal" => {}
            "tool_calls" | "function_call" if value.is_null() || value.as_array().is_some_and(Vec::is_empty) => {}
            "tool_calls" | "function_call" | "tool_call_id" => {
                return Err(ApiError::invalid("tool calls are not supported by this gateway", param(name)));
            }
            _ => return Err(ApiError::invalid(format!("unrecognized message field: {name}"), param(name))),
        }
    }
    let role = role.ok_or_else(|| ApiError::invalid("missing required parameter: role", param("role")))?;
    let content = content.ok_or_else(|| ApiError::invalid("missing required parameter: content", param("content")))?;
    Ok(ChatMessage { role, content })
}

/// A string, or an array of text parts (concatenated).
fn parse_content(value: &Value, param: &str) -> Result<String, ApiError> {
    match value {
        Value::String(text) => Ok(text.clone()),
        Value::Array(parts) => {
            let mut text = String::new();
            for part in parts {
                match (part.get("type").and_then(Value::as_str), part.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(part)) => text.push_str(part),
                    _ => return Err(ApiError::invalid("only text content parts are supported by this gateway", param)),
                }
            }
            Ok(text)
        }
        _ => Err(ApiError::invalid("content must be a string or an array of text parts", param)),
    }
}

/// OpenAI's finish reason for a provider's: `stop`, `length` or `content_filter`.
pub fn finish_reason(reason: Option<&str>) -> &'static str {
    match reason {
        Some("length" | "max_tokens") => "length",
        Some("content_filter" | "refusal") => "content_filter",
        _ => "stop",
    }
}

#[derive(Debug, Serialize)]
pub struct CompletionUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

impl From<Usage> for CompletionUsage {
    fn from(usage: Usage) -> Self {
        Self {
            prompt_tokens: usage.input_tokens,
            completion_tokens: usage.output_tokens,
            total_tokens: usage.input_tokens + usage.output_tokens,
        }
    }
}

#[derive(Debug, Serialize)]
struct AssistantMessage<'a> {
    role: &'static str,
    content: &'a str,
    refusal: Option<()>,
}

#[derive(Debug, Serialize)]
struct Choice<'a> {
    index: u32,
    message: AssistantMessage<'a>,
    logprobs: Option<Logprobs>,
    finish_reason: &'static str,
}

#[derive(Debug, Serialize)]
struct Logprobs {
    content: Vec<TokenLogprob>,
}

#[derive(Debug, Serialize)]
struct TokenLogprob {
    token: String,
    logprob: f64,
    bytes: Vec<u8>,
    top_logprobs: Vec<()>,
}

/// A `chat.completion` object.
#[derive(Debug, Serialize)]
pub struct ChatCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [Choice<'a>; 1],
    usage: CompletionUsage,
    system_fingerprint: Option<()>,
}

impl<'a> ChatCompletion<'a> {
    pub fn new(id: &'a str, created: u64, model: &'a str, reply: &'a QueryReply) -> Self {
        let logprobs = reply.logprobs.as_ref().map(|tokens| Logprobs {
            content: tokens
                .iter()
                .map(|t| TokenLogprob {
                    token: t.token.clone(),
                    logprob: t.logprob,
                    bytes: t.token.as_bytes().to_vec(),
                    top_logprobs: Vec::new(),
                })
                .collect(),
        });
        Self {
            id,
            object: "chat.completion",
            created,
            model,
            choices: [Choice {
                index: 0,
                message: AssistantMessage { role: "assistant", content: &reply.content, refusal: None },
                logprobs,
                finish_reason: finish_reason(reply.finish_reason.as_deref()),
            }],
            usage: reply.usage.into(),
            system_fingerprint: None,
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<&'a str>,
}

#[derive(Debug, Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

/// A `chat.completion.chunk` object: one delta, the finish reason, or (choices empty) the usage.
#[derive(Debug, Serialize)]
pub struct ChatCompletionChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<ChunkChoice<'a>>,
    system_fingerprint: Option<()>,
    /// Present (null until the last chunk) only when the request asked for `include_usage`.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<CompletionUsage>>,
}

/// What the chunks of one stream share.
#[derive(Debug, Clone)]
pub struct ChunkHeader {
    pub id: String,
    pub created: u64,
    pub model: String,
    pub include_usage: bool,
}

impl ChunkHeader {
    fn chunk<'a>(&'a self, choices: Vec<ChunkChoice<'a>>, usage: Option<CompletionUsage>) -> ChatCompletionChunk<'a> {
        ChatCompletionChunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices,
            system_fingerprint: None,
            usage: self.include_usage.then_some(usage),
        }
    }

    /// A chunk carrying `delta`, or the finish reason.
    pub fn delta<'a>(&'a self, delta: Delta<'a>, finish: Option<&'static str>) -> ChatCompletionChunk<'a> {
        self.chunk(vec![ChunkChoice { index: 0, delta, logprobs: None, finish_reason: finish }], None)
    }

    /// The last chunk of a stream that asked for `include_usage`: no choices, the usage.
    pub fn usage(&self, usage: Usage) -> ChatCompletionChunk<'_> {
        self.chunk(Vec::new(), Some(usage.into()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn check_err(body: &str, param: Option<&str>) {
        let error = parse_request(body.as_bytes()).expect_err(body);
        assert_eq!(error.status.as_u16(), 400, "{body}");
        assert_eq!(error.param.as_deref(), param, "{body}: {}", error.message);
    }

    const HI: &str = r#""messages":[{"role":"user","content":"hi"}]"#;

    #[test]
    fn requests_map_to_queries() {
        let body = format!(
            r#"{{"model":"chat",{HI},"max_tokens":5,"max_completion_tokens":7,"temperature":0.5,"n":1,"user":"u",
               "metadata":{{"tier":"gold"}},"stream":true,"stream_options":{{"include_usage":true}},"tools":[],
               "top_p":0.5,"stop":"\n"}}"#
        );
        let request = parse_request(body.as_bytes()).expect("valid");
        assert_eq!(request.model, "chat");
        assert_eq!(request.query.max_tokens, Some(7), "max_completion_tokens wins");
        assert_eq!(request.query.temperature, Some(0.5));
        assert_eq!((request.query.top_p, request.query.stop.as_slice()), (Some(0.5), ["\n".to_owned()].as_slice()));
        assert_eq!(request.query.metadata.get("tier").map(String::as_str), Some("gold"));
        assert!(request.stream && request.include_usage && request.query.stream);
        let parts = r#"{"model":"m","messages":[{"role":"developer","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]}"#;
        let request = parse_request(parts.as_bytes()).expect("valid");
        assert_eq!(request.query.messages, vec![ChatMessage { role: Role::System, content: "ab".into() }]);
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_by_name() {
        check_err("{not json", None);
        check_err(&format!(r#"{{{HI}}}"#), Some("model"));
        check_err(r#"{"model":"m"}"#, Some("messages"));
        check_err(r#"{"model":"m","messages":[]}"#, Some("messages"));
        check_err(&format!(r#"{{"model":"m",{HI},"n":2}}"#), Some("n"));
        check_err(&format!(r#"{{"model":"m",{HI},"tools":[{{"type":"function"}}]}}"#), Some("tools"));
        check_err(&format!(r#"{{"model":"m",{HI},"stop":[1]}}"#), Some("stop"));
        check_err(&format!(r#"{{"model":"m",{HI},"top_p":1.5}}"#), Some("top_p"));
        check_err(&format!(r#"{{"model":"m",{HI},"presence_penalty":0.5}}"#), Some("presence_penalty"));
        check_err(&format!(r#"{{"model":"m",{HI},"temperature":3}}"#), Some("temperature"));
        check_err(&format!(r#"{{"model":"m",{HI},"bogus":1}}"#), Some("bogus"));
        check_err(
            &format!(r#"{{"model":"m",{HI},"stream_options":{{"include_usage":true}}}}"#),
            Some("stream_options"),
        );
        check_err(r#"{"model":"m","messages":[{"role":"tool","content":"x"}]}"#, Some("messages[0].role"));
        let image = r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{}}]}]}"#;
        check_err(image, Some("messages[0].content"));
    }

    #[test]
    fn finish_reasons_are_openais() {
        assert_eq!(finish_reason(Some("end_turn")), "stop");
        assert_eq!(finish_reason(Some("max_tokens")), "length");
        assert_eq!(finish_reason(None), "stop");
    }
}
