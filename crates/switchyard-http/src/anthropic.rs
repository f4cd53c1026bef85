//! The Anthropic Messages wire format (`POST /v1/messages`): requests read into a [`QueryRequest`], answers and
//! stream events written back.
//!
//! A request is read field by field, as `openai` does, so every field is decided on explicitly:
//! - honoured: `model` (the route), `max_tokens` (required, as for Anthropic), `messages` (`user` and `assistant`
//!   turns, the first a `user` one, content a string or `text` blocks), `system` (a string or `text` blocks, sent
//!   as a system message before the conversation), `temperature` (Anthropic's range, 0 to 1), `top_p`,
//!   `stop_sequences` (at most four, as for OpenAI), `stream`, and
//!   `metadata.user_id`, which becomes the query's metadata `user_id` (routing rules may use it; the key's own
//!   metadata wins, as for OpenAI's `metadata`);
//! - accepted because they change neither the answer nor its form: `service_tier`, `speed`, `cache_control` (also
//!   a text block's), `diagnostics`, `user_profile_id`, `workspace_id`, a text block's `citations`, and neutral
//!   values (`tools: []`, `tool_choice` of type `auto` or `none`, `thinking` of type `disabled`, an
//!   `output_config` whose settings are all null);
//! - refused with a 400 naming the field: anything that would change the answer without being honoured (tools,
//!   `tool_use`/`tool_result`/image/document/thinking blocks, `top_k`, `thinking`,
//!   `output_config` (effort, structured output), a final `assistant` message, which Anthropic reads as a prefill
//!   to continue, `max_tokens: 0`, Anthropic's prompt-cache pre-warming), a constraint it cannot keep
//!   (`inference_geo`), and unknown fields.
//!
//! Messages name the field the way Anthropic's do (`messages.1.content.0.type: ...`): Anthropic's error object has
//! no `param`.

use serde::Serialize;
use serde_json::Value;

use switchyard_protocol::client::{QueryReply, QueryRequest};
use switchyard_protocol::{ChatMessage, Role, Usage};

use crate::error::ApiError;
use crate::fields;

/// A Messages request, read.
#[derive(Debug, Clone, PartialEq)]
pub struct MessagesRequest {
    /// The route.
    pub model: String,
    /// The query (system message first), `stream` set; `id` is the caller's.
    pub query: QueryRequest,
}

/// Reads a request body.
pub fn parse_request(body: &[u8]) -> Result<MessagesRequest, ApiError> {
    let fields = fields::object(body)?;
    let mut model = None;
    let mut messages = None;
    let mut system = None;
    let mut query = QueryRequest::new(Vec::new());
    for (name, value) in &fields {
        if value.is_null() {
            // An explicit null is the default for every optional parameter.
            continue;
        }
        match name.as_str() {
            "model" => model = Some(fields::string(name, value)?),
            "messages" => messages = Some(parse_messages(value)?),
            "system" => system = Some(parse_text(value, name)?),
            "max_tokens" => query.max_tokens = Some(fields::positive(name, value)?),
            "temperature" => query.temperature = Some(fields::temperature(name, value, 1.0)?),
            "stream" => query.stream = fields::boolean(name, value)?,
            "metadata" => parse_metadata(value, &mut query)?,
            "top_p" => query.top_p = Some(fields::probability(name, value)?),
            "stop_sequences" => query.stop = fields::strings(name, value)?,
            "tools" if fields::is_empty_array(value) => {}
            "tool_choice" if matches!(kind(value), Some("auto" | "none")) => {}
            "thinking" if kind(value) == Some("disabled") => {}
            "output_config" if value.as_object().is_some_and(|config| config.values().all(Value::is_null)) => {}
            // Harmless: they change neither the answer nor its form (`diagnostics` only asks for a report on the
            // prompt cache, which this gateway does not give).
            "service_tier" | "speed" | "cache_control" | "diagnostics" | "user_profile_id" | "workspace_id" => {}
            "tools" | "tool_choice" => {
                let message = format!("{name}: tools and tool use are not supported by this gateway");
                return Err(ApiError::invalid(message, name));
            }
            "top_k" | "thinking" | "output_config" | "inference_geo" | "container" | "mcp_servers"
            | "context_management" | "output_format" => {
                return Err(ApiError::invalid(format!("`{name}` is not supported by this gateway"), name));
            }
            _ => return Err(ApiError::invalid(format!("{name}: extra inputs are not permitted"), name)),
        }
    }
    let model = model.ok_or_else(|| ApiError::invalid("model: field required", "model"))?;
    let messages = messages.ok_or_else(|| ApiError::invalid("messages: field required", "messages"))?;
    if query.max_tokens.is_none() {
        return Err(ApiError::invalid("max_tokens: field required", "max_tokens"));
    }
    check_turns(&messages)?;
    let system = system.filter(|s| !s.is_empty()).map(|content| ChatMessage { role: Role::System, content });
    query.messages = system.into_iter().chain(messages).collect();
    Ok(MessagesRequest { model, query })
}

/// The `type` of an object such as `tool_choice` or `thinking`.
fn kind(value: &Value) -> Option<&str> {
    value.get("type").and_then(Value::as_str)
}

/// The conversation's shape: not empty, a user turn first, no assistant turn last.
fn check_turns(messages: &[ChatMessage]) -> Result<(), ApiError> {
    match (messages.first(), messages.last()) {
        (None, _) | (_, None) => Err(ApiError::invalid("messages: at least one message is required", "messages")),
        (Some(first), _) if first.role != Role::User => {
            Err(ApiError::invalid("messages.0.role: the first message must use the `user` role", "messages.0.role"))
        }
        (_, Some(last)) if last.role == Role::Assistant => Err(ApiError::invalid(
            "messages: a final `assistant` message (a prefill to continue) is not supported by this gateway",
            "messages",
        )),
        _ => Ok(()),
    }
}

fn parse_metadata(value: &Value, query: &mut QueryRequest) -> Result<(), ApiError> {
    let Some(map) = value.as_object() else {
        return Err(ApiError::invalid("metadata: must be an object", "metadata"));
    };
    for (name, value) in map {
        match (name.as_str(), value) {
            (_, Value::Null) => {}
            ("user_id", Value::String(user)) => {
                query.metadata.insert("user_id".to_owned(), user.clone());
            }
            ("user_id", _) => return Err(ApiError::invalid("metadata.user_id: must be a string", "metadata.user_id")),
            _ => {
                let param = format!("metadata.{name}");
                return Err(ApiError::invalid(format!("{param}: extra inputs are not permitted"), param));
            }
        }
    }
    Ok(())
}

fn parse_messages(value: &Value) -> Result<Vec<ChatMessage>, ApiError> {
    let Some(items) = value.as_array() else {
        return Err(ApiError::invalid("messages: must be an array", "messages"));
    };
    items.iter().enumerate().map(|(i, item)| parse_message(i, item)).collect()
}

fn parse_message(i: usize, item: &Value) -> Result<ChatMessage, ApiError> {
    let param = |f: &str| format!("messages.{i}.{f}");
    let Some(fields) = item.as_object() else {
        return Err(ApiError::invalid(format!("messages.{i}: must be an object"), format!("messages.{i}")));
    };
    let mut role = None;
    let mut content = None;
    for (name, value) in fields {
        match name.as_str() {
            "role" => {
                role = Some(match value.as_str() {
                    Some("user") => Role::User,
                    Some("assistant") => Role::Assistant,
                    _ => {
                        let message =
                            format!("{}: must be `user` or `assistant` (the system prompt is `system`)", param(name));
                        return Err(ApiError::invalid(message, param(name)));
                    }
                });
            }
            "content" => content = Some(parse_text(value, &param(name))?),
            _ => {
                let message = format!("{}: extra inputs are not permitted", param(name));
                return Err(ApiError::invalid(message, param(name)));
            }
        }
    }
    let role = role.ok_or_else(|| ApiError::invalid(format!("{}: field required", param("role")), param("role")))?;
    let content =
        content.ok_or_else(|| ApiError::invalid(format!("{}: field required", param("content")), param("content")))?;
    if content.is_empty() {
        let message = format!("{}: messages must have non-empty content", param("content"));
        return Err(ApiError::invalid(message, param("content")));
    }
    Ok(ChatMessage { role, content })
}

/// A string, or an array of `text` blocks (joined as they are). `param` is where the value sits.
fn parse_text(value: &Value, param: &str) -> Result<String, ApiError> {
    match value {
        Value::String(text) => Ok(text.clone()),
        Value::Array(blocks) => {
            let mut text = String::new();
            for (j, block) in blocks.iter().enumerate() {
                text.push_str(text_block(block, &format!("{param}.{j}"))?);
            }
            Ok(text)
        }
        _ => Err(ApiError::invalid(format!("{param}: must be a string or an array of text blocks"), param)),
    }
}

/// The text of one content block, which must be a `text` block.
fn text_block<'a>(block: &'a Value, param: &str) -> Result<&'a str, ApiError> {
    let Some(fields) = block.as_object() else {
        return Err(ApiError::invalid(format!("{param}: must be a content block object"), param));
    };
    match fields.get("type").and_then(Value::as_str) {
        Some("text") => {}
        Some(other) => {
            let param = format!("{param}.type");
            let message = format!("{param}: `{other}` content blocks are not supported by this gateway (text only)");
            return Err(ApiError::invalid(message, param));
        }
        None => return Err(ApiError::invalid(format!("{param}.type: field required"), format!("{param}.type"))),
    }
    let mut text = None;
    for (name, value) in fields {
        match name.as_str() {
            "type" => {}
            "text" => text = value.as_str(),
            // Prompt caching and earlier answers' citations change nothing in the answer.
            "cache_control" | "citations" => {}
            _ => {
                let param = format!("{param}.{name}");
                return Err(ApiError::invalid(format!("{param}: extra inputs are not permitted"), param));
            }
        }
    }
    text.ok_or_else(|| {
        let param = format!("{param}.text");
        ApiError::invalid(format!("{param}: a text block needs a string `text`"), param)
    })
}

/// Anthropic's stop reason for a provider's finish reason (OpenAI's or Anthropic's own, as the upstream gave it):
/// `end_turn`, `max_tokens`, `stop_sequence` or `refusal` (a content filter that kept part of an answer).
pub fn stop_reason(finish: Option<&str>) -> &'static str {
    match finish {
        Some("length" | "max_tokens") => "max_tokens",
        Some("stop_sequence") => "stop_sequence",
        Some("content_filter" | "refusal") => "refusal",
        _ => "end_turn",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MessageUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl From<Usage> for MessageUsage {
    fn from(usage: Usage) -> Self {
        Self { input_tokens: usage.input_tokens, output_tokens: usage.output_tokens }
    }
}

#[derive(Debug, Serialize)]
pub struct TextBlock<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
}

impl<'a> TextBlock<'a> {
    fn new(text: &'a str) -> Self {
        Self { kind: "text", text }
    }
}

/// A `message` object: a whole answer, or (no content, no stop reason) the one `message_start` carries.
#[derive(Debug, Serialize)]
pub struct Message<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<TextBlock<'a>>,
    stop_reason: Option<&'static str>,
    stop_sequence: Option<()>,
    usage: MessageUsage,
}

impl<'a> Message<'a> {
    /// The whole answer; an empty answer has no content block (Anthropic never sends an empty text block).
    pub fn new(id: &'a str, model: &'a str, reply: &'a QueryReply) -> Self {
        Self {
            id,
            kind: "message",
            role: "assistant",
            model,
            content: (!reply.content.is_empty()).then(|| TextBlock::new(&reply.content)).into_iter().collect(),
            stop_reason: Some(stop_reason(reply.finish_reason.as_deref())),
            stop_sequence: None,
            usage: reply.usage.into(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct TextDelta<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
}

#[derive(Debug, Serialize)]
pub struct StopDelta {
    stop_reason: &'static str,
    stop_sequence: Option<()>,
}

/// One event of a streamed answer; its SSE event name is its `type` ([`MessageEvent::name`]).
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MessageEvent<'a> {
    MessageStart { message: Message<'a> },
    ContentBlockStart { index: u32, content_block: TextBlock<'a> },
    Ping,
    ContentBlockDelta { index: u32, delta: TextDelta<'a> },
    ContentBlockStop { index: u32 },
    MessageDelta { delta: StopDelta, usage: MessageUsage },
    MessageStop,
}

impl MessageEvent<'_> {
    /// The SSE `event:` name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::MessageStart { .. } => "message_start",
            Self::ContentBlockStart { .. } => "content_block_start",
            Self::Ping => "ping",
            Self::ContentBlockDelta { .. } => "content_block_delta",
            Self::ContentBlockStop { .. } => "content_block_stop",
            Self::MessageDelta { .. } => "message_delta",
            Self::MessageStop => "message_stop",
        }
    }
}

/// What the events of one streamed answer share, and the events themselves: `message_start`, one text block
/// (`content_block_start`, a `ping`, a `content_block_delta` per chunk, `content_block_stop`), `message_delta`
/// with the stop reason and the usage, `message_stop`.
///
/// The input tokens are known only with the answer: `message_start` counts 0 of them and `message_delta` carries
/// both counts (Anthropic's usage there is cumulative, and the SDKs take `input_tokens` from it).
#[derive(Debug, Clone)]
pub struct MessageStream {
    pub id: String,
    pub model: String,
}

impl MessageStream {
    /// A stream of the route `model` whose answer (whole or streamed) has the id `msg_{id}`.
    pub fn new(id: &str, model: String) -> Self {
        Self { id: format!("msg_{id}"), model }
    }

    /// The whole answer, for a request that did not stream.
    pub fn message<'a>(&'a self, reply: &'a QueryReply) -> Message<'a> {
        Message::new(&self.id, &self.model, reply)
    }

    /// The events before the first text.
    pub fn start(&self) -> [MessageEvent<'_>; 3] {
        let message = Message {
            id: &self.id,
            kind: "message",
            role: "assistant",
            model: &self.model,
            content: Vec::new(),
            stop_reason: None,
            stop_sequence: None,
            usage: MessageUsage { input_tokens: 0, output_tokens: 0 },
        };
        [
            MessageEvent::MessageStart { message },
            MessageEvent::ContentBlockStart { index: 0, content_block: TextBlock::new("") },
            MessageEvent::Ping,
        ]
    }

    /// A piece of the text.
    pub fn text_delta<'a>(&self, text: &'a str) -> MessageEvent<'a> {
        MessageEvent::ContentBlockDelta { index: 0, delta: TextDelta { kind: "text_delta", text } }
    }

    /// The events after the last text.
    pub fn stop(&self, reply: &QueryReply) -> [MessageEvent<'static>; 3] {
        let delta = StopDelta { stop_reason: stop_reason(reply.finish_reason.as_deref()), stop_sequence: None };
        [
            MessageEvent::ContentBlockStop { index: 0 },
            MessageEvent::MessageDelta { delta, usage: reply.usage.into() },
            MessageEvent::MessageStop,
        ]
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check_err(body: &str, param: &str) {
        let error = parse_request(body.as_bytes()).expect_err(body);
        assert_eq!(error.status.as_u16(), 400, "{body}");
        assert_eq!(error.param.as_deref(), Some(param), "{body}: {}", error.message);
        assert!(error.message.contains(param.rsplit('.').next().unwrap_or(param)), "{body}: {}", error.message);
    }

    const HI: &str = r#""messages":[{"role":"user","content":"hi"}]"#;

    fn valid(body: &str) -> MessagesRequest {
        parse_request(body.as_bytes()).expect(body)
    }

    #[test]
    fn requests_map_to_queries() {
        let body = r#"{"model":"chat","max_tokens":64,"temperature":0.5,"stream":true,
            "system":[{"type":"text","text":"Be ","cache_control":{"type":"ephemeral"}},
                      {"type":"text","text":"brief."}],
            "messages":[{"role":"user","content":"one"},
                        {"role":"assistant","content":[{"type":"text","text":"two"}]},
                        {"role":"user","content":"three"}],
            "metadata":{"user_id":"u-42"},"service_tier":"auto","speed":"standard","cache_control":{"type":"ephemeral"},
            "output_config":{"effort":null},"tools":[],"stop_sequences":["\n\nHuman:"],
            "tool_choice":{"type":"auto"},"thinking":{"type":"disabled"},"top_p":0.5,"top_k":null}"#;
        let request = valid(body);
        assert_eq!(request.model, "chat");
        let query = &request.query;
        assert_eq!(query.max_tokens, Some(64));
        assert_eq!(query.temperature, Some(0.5));
        assert_eq!((query.top_p, query.stop.as_slice()), (Some(0.5), ["\n\nHuman:".to_owned()].as_slice()));
        assert!(query.stream);
        assert_eq!(query.metadata.get("user_id").map(String::as_str), Some("u-42"));
        assert_eq!(
            query.messages,
            vec![
                ChatMessage { role: Role::System, content: "Be brief.".into() },
                ChatMessage { role: Role::User, content: "one".into() },
                ChatMessage { role: Role::Assistant, content: "two".into() },
                ChatMessage { role: Role::User, content: "three".into() },
            ]
        );
        let plain = valid(&format!(r#"{{"model":"m","max_tokens":1,"system":"",{HI}}}"#));
        assert_eq!(plain.query.messages, vec![ChatMessage::user("hi")], "an empty system prompt adds nothing");
        assert!(!plain.query.stream && plain.query.metadata.is_empty());
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_by_name() {
        let error = parse_request(b"{not json").expect_err("bad json");
        assert_eq!((error.status.as_u16(), error.param), (400, None));
        check_err(&format!(r#"{{"max_tokens":1,{HI}}}"#), "model");
        check_err(r#"{"model":"m","max_tokens":1}"#, "messages");
        check_err(&format!(r#"{{"model":"m",{HI}}}"#), "max_tokens");
        check_err(&format!(r#"{{"model":"m","max_tokens":0,{HI}}}"#), "max_tokens");
        let conversation = |messages: &str| format!(r#"{{"model":"m","max_tokens":1,"messages":[{messages}]}}"#);
        check_err(&conversation(""), "messages");
        check_err(&conversation(r#"{"role":"assistant","content":"x"}"#), "messages.0.role");
        check_err(&conversation(r#"{"role":"user","content":"a"},{"role":"assistant","content":"b"}"#), "messages");
        check_err(&conversation(r#"{"role":"system","content":"x"}"#), "messages.0.role");
        check_err(&conversation(r#"{"role":"user","content":""}"#), "messages.0.content");
        check_err(&conversation(r#"{"role":"user"}"#), "messages.0.content");
        let image = r#"{"role":"user","content":[{"type":"text","text":"a"},{"type":"image","source":{}}]}"#;
        check_err(&conversation(image), "messages.0.content.1.type");
        let tool_result = r#"{"role":"user","content":[{"type":"tool_result","tool_use_id":"t"}]}"#;
        check_err(&conversation(tool_result), "messages.0.content.0.type");
        check_err(&format!(r#"{{"model":"m","max_tokens":1,{HI},"system":[{{"type":"text"}}]}}"#), "system.0.text");
        for (field, value) in [
            ("tools", r#"[{"name":"f","input_schema":{}}]"#),
            ("tool_choice", r#"{"type":"any"}"#),
            ("stop_sequences", "[1]"),
            ("top_p", "0"),
            ("top_k", "5"),
            ("thinking", r#"{"type":"enabled","budget_tokens":1024}"#),
            ("output_config", r#"{"effort":"low"}"#),
            ("inference_geo", r#""eu""#),
            ("temperature", "1.5"),
            ("stream", r#""yes""#),
            ("bogus", "1"),
        ] {
            check_err(&format!(r#"{{"model":"m","max_tokens":1,{HI},"{field}":{value}}}"#), field);
        }
        check_err(&format!(r#"{{"model":"m","max_tokens":1,{HI},"metadata":{{"tier":"x"}}}}"#), "metadata.tier");
    }

    #[test]
    fn stop_reasons_are_anthropics() {
        assert_eq!(stop_reason(Some("stop")), "end_turn");
        assert_eq!(stop_reason(Some("end_turn")), "end_turn");
        assert_eq!(stop_reason(None), "end_turn");
        assert_eq!(stop_reason(Some("length")), "max_tokens");
        assert_eq!(stop_reason(Some("max_tokens")), "max_tokens");
        assert_eq!(stop_reason(Some("stop_sequence")), "stop_sequence");
        assert_eq!(stop_reason(Some("content_filter")), "refusal");
        assert_eq!(stop_reason(Some("refusal")), "refusal");
    }

    fn answer(content: &str, finish: Option<&str>) -> QueryReply {
        QueryReply {
            id: None,
            content: content.into(),
            model: "model-a".into(),
            provider: "primary".into(),
            finish_reason: finish.map(str::to_owned),
            usage: Usage { input_tokens: 7, output_tokens: 3 },
            cost_usd: 0.0,
            latency_ms: 1.0,
            logprobs: None,
            trace: Default::default(),
        }
    }

    #[test]
    fn a_whole_answer_is_a_message() {
        let stream = MessageStream { id: "msg_1".into(), model: "chat".into() };
        let reply = answer("Hi!", Some("length"));
        assert_eq!(
            serde_json::to_value(stream.message(&reply)).unwrap(),
            json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "chat",
                   "content": [{"type": "text", "text": "Hi!"}], "stop_reason": "max_tokens",
                   "stop_sequence": null, "usage": {"input_tokens": 7, "output_tokens": 3}})
        );
        let empty = answer("", None);
        assert_eq!(serde_json::to_value(stream.message(&empty)).unwrap()["content"], json!([]));
        assert_eq!(MessageStream::new("0a1b", "chat".into()).id, "msg_0a1b");
    }

    #[test]
    fn a_stream_is_anthropics_event_sequence() {
        let stream = MessageStream { id: "msg_1".into(), model: "chat".into() };
        let reply = answer("Hi there", Some("stop"));
        let events: Vec<MessageEvent<'_>> = stream
            .start()
            .into_iter()
            .chain([stream.text_delta("Hi"), stream.text_delta(" there")])
            .chain(stream.stop(&reply))
            .collect();
        let names: Vec<&str> = events.iter().map(MessageEvent::name).collect();
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
        let json: Vec<Value> = events.iter().map(|e| serde_json::to_value(e).unwrap()).collect();
        for (event, name) in json.iter().zip(names) {
            assert_eq!(event["type"], name, "the data's type is the event's name");
        }
        assert_eq!(
            json[0],
            json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
                   "model": "chat", "content": [], "stop_reason": null, "stop_sequence": null,
                   "usage": {"input_tokens": 0, "output_tokens": 0}}})
        );
        assert_eq!(
            json[1],
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
        );
        assert_eq!(json[2], json!({"type": "ping"}));
        assert_eq!(
            json[3],
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}})
        );
        assert_eq!(json[5], json!({"type": "content_block_stop", "index": 0}));
        assert_eq!(
            json[6],
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                   "usage": {"input_tokens": 7, "output_tokens": 3}})
        );
        assert_eq!(json[7], json!({"type": "message_stop"}));
    }
}
