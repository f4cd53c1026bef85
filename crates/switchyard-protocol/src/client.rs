//! The JSON protocol between clients and Switchyard.
//!
//! A query is published on `switchyard.v1.query.<route>` with a reply subject. The reply is a [`QueryReply`] or
//! an [`ErrorReply`] (an object with an `error` key); a streaming query receives [`StreamFrame`]s instead: ordered
//! chunks, then one `done` or `error` frame. Requests are validated here, so a bad one is refused with a typed
//! error that names the field.

// A typed error is itself the reply a client receives; it is built once per rejected query and moved once,
// so the size of `Result<_, ErrorReply>` does not matter here.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::chat::{ChatMessage, ChatRequest, TokenLogprob, Usage};

/// Longest accepted idempotency key.
pub const MAX_ID_LEN: usize = 128;
/// Longest accepted client deadline (10 minutes).
pub const MAX_DEADLINE_MS: u64 = 600_000;

/// Most stop sequences a query may give (OpenAI's limit).
pub const MAX_STOP_SEQUENCES: usize = 4;

/// Longest stop sequence, in bytes.
pub const MAX_STOP_LEN: usize = 256;

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    /// Idempotency key: the same `id` inside its deadline is answered once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub messages: Vec<ChatMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Nucleus sampling, in (0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// Up to four sequences that end the answer before they would appear.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    /// Ask for token log-probabilities where the provider supports them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub logprobs: bool,
    /// Free key/values that routing rules may use.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// `quality`, `cost` or `latency`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objective: Option<String>,
    /// For a route served by a cascade: this query's threshold or last stage, within the operator's limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cascade: Option<CascadeOverride>,
}

/// A query's own cascade settings (`"cascade": {"threshold": 0.8}` or `{"max_stage": 0}`); the operator's limits
/// clamp them, and the trace shows what was used.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CascadeOverride {
    /// The confidence a stage needs to stop the cascade, in `[0, 1]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// The last stage to call (0-based).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_stage: Option<usize>,
}

impl QueryRequest {
    pub fn new(messages: Vec<ChatMessage>) -> Self {
        Self {
            id: None,
            messages,
            max_tokens: None,
            temperature: None,
            top_p: None,
            stop: Vec::new(),
            stream: false,
            logprobs: false,
            metadata: BTreeMap::new(),
            deadline_ms: None,
            objective: None,
            cascade: None,
        }
    }

    /// Checks what serde cannot: non-empty messages, ranges, lengths.
    pub fn validate(&self) -> Result<(), ErrorReply> {
        let invalid = |field: &str, message: &str| {
            Err(ErrorReply::new(ErrorType::InvalidRequest, "invalid_field", message).with_field(field))
        };
        if self.messages.is_empty() {
            return invalid("messages", "messages must not be empty");
        }
        if let Some(id) = &self.id
            && (id.is_empty() || id.len() > MAX_ID_LEN)
        {
            return invalid("id", "id must be 1 to 128 bytes");
        }
        if self.max_tokens == Some(0) {
            return invalid("max_tokens", "max_tokens must be positive");
        }
        if let Some(t) = self.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return invalid("temperature", "temperature must be between 0 and 2");
        }
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return invalid("top_p", "top_p must be greater than 0 and at most 1");
        }
        if self.stop.len() > MAX_STOP_SEQUENCES {
            return invalid("stop", "stop takes at most 4 sequences");
        }
        if self.stop.iter().any(|s| s.is_empty() || s.len() > MAX_STOP_LEN) {
            return invalid("stop", "a stop sequence must be 1 to 256 bytes");
        }
        if let Some(d) = self.deadline_ms
            && (d == 0 || d > MAX_DEADLINE_MS)
        {
            return invalid("deadline_ms", "deadline_ms must be between 1 and 600000");
        }
        if let Some(o) = &self.objective
            && !matches!(o.as_str(), "quality" | "cost" | "latency")
        {
            return invalid("objective", "objective must be quality, cost or latency");
        }
        Ok(())
    }

    /// A stable digest (sha256, 64 hex digits) of everything in the request that can change its answer: the
    /// messages, `max_tokens`, `temperature`, `top_p`, `stop`, `logprobs`, `metadata` (rules route on it),
    /// `objective` and the cascade override.
    ///
    /// An idempotency key is bound to this fingerprint: the same `id` with another fingerprint is refused with
    /// `idempotency_conflict`, so a client that reuses or guesses an id never receives somebody else's answer.
    /// Left out on purpose: `id` itself, `deadline_ms` (how long to wait, not what to answer) and `stream` (the
    /// form of the answer, not the answer: a streaming copy of an answered id receives the same answer streamed).
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};

        /// The canonical form: a fixed struct encoded as JSON (field order fixed, metadata sorted by key).
        #[derive(Serialize)]
        struct Canonical<'a> {
            v: u8,
            messages: &'a [ChatMessage],
            max_tokens: Option<u32>,
            temperature: Option<f32>,
            logprobs: bool,
            metadata: &'a BTreeMap<String, String>,
            objective: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            cascade: Option<CascadeOverride>,
            // Left out when unset, so the fingerprints of requests without them stay what they were.
            #[serde(skip_serializing_if = "Option::is_none")]
            top_p: Option<f32>,
            #[serde(skip_serializing_if = "<[String]>::is_empty")]
            stop: &'a [String],
        }
        let canonical = Canonical {
            v: 1,
            messages: &self.messages,
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            logprobs: self.logprobs,
            metadata: &self.metadata,
            objective: self.objective.as_deref(),
            cascade: self.cascade,
            top_p: self.top_p,
            stop: &self.stop,
        };
        let mut hasher = Sha256::new();
        // Serialising plain data into a Vec cannot fail; an empty encoding would still hash consistently.
        hasher.update(serde_json::to_vec(&canonical).unwrap_or_default());
        hex(&hasher.finalize())
    }

    pub fn to_chat_request(&self) -> ChatRequest {
        ChatRequest {
            messages: self.messages.clone(),
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            logprobs: self.logprobs,
            stop: self.stop.clone(),
            top_p: self.top_p,
        }
    }
}

/// Lower-case hexadecimal digits of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes.iter().flat_map(|b| [DIGITS[usize::from(b >> 4)] as char, DIGITS[usize::from(b & 15)] as char]).collect()
}

/// One upstream attempt, as the trace reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub provider: String,
    /// `success`, `retryable`, `rate_limited`, `fatal`, `auth`, `refused`, ...
    pub outcome: String,
    pub latency_ms: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// A panic-mode trickle: every member of the group was tripped, and this call went past the breaker.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub panic: bool,
    /// A hedge: started while an earlier attempt was still running, because that one was slow. The attempt that
    /// won has the outcome `success`; the other one `cancelled`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hedged: bool,
    /// Stream chunks this attempt published to the client.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub chunks: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Why the answer came from where it came from.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Trace {
    pub node: String,
    pub route: String,
    pub attempts: Vec<Attempt>,
    /// For a route served by a cascade: one record per stage (`switchyard_cascade::StageTrace`: provider,
    /// estimator, threshold, confidence, cost, latency, and why it stopped, escalated or was skipped). The
    /// attempts are then those of every stage's calls, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<serde_json::Value>,
    /// The cascade that answered, and the coordinator node that ran it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cascade: Option<Box<CascadeRunInfo>>,
    /// For a route with a quality router: which router chose, its score and threshold, the model and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Box<RoutingDecision>>,
    /// For an answer of an ensemble (Mixture-of-Agents): each proposer (with its attempts) and the aggregator. The
    /// trace's attempts are then the aggregator's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ensemble: Option<Box<EnsembleTrace>>,
}

/// A quality router's decision, as the trace shows it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RoutingDecision {
    /// The router's name.
    pub router: String,
    /// The model the router chose, in the router's own names (a learned router's training models).
    pub model: String,
    /// The route target that model maps to: a provider, a group or an ensemble, tried first.
    pub target: String,
    /// The router's score, if it computes one (learned binary: the score compared with the threshold; N-way: the
    /// chosen model's predicted quality).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// The threshold the score was compared with (N-way: the quality target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// The request's objective, when it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objective: Option<String>,
    /// Why (`switchyard_quality::Reason`, tagged by `kind`: `rule_matched`, `default`, `score_at_or_above_threshold`,
    /// `score_below_threshold`, `out_of_distribution`, `cheapest_good_enough`, ..., `fallback` with the preferred
    /// model and its own reason).
    pub reason: serde_json::Value,
}

/// What an ensemble did for one query.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct EnsembleTrace {
    /// The ensemble's name.
    pub name: String,
    /// The proposers called, in order.
    pub proposers: Vec<EnsembleCall>,
    /// The aggregator's call (absent when no proposer answered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregator: Option<EnsembleCall>,
}

/// One member call of an ensemble.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct EnsembleCall {
    /// The target it was called on (a provider or a group).
    pub target: String,
    /// The provider that answered, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// `success`, or the error code of the call.
    pub outcome: String,
    pub latency_ms: f64,
    pub cost_usd: f64,
    /// A proposer's attempts (the aggregator's are the trace's own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<Attempt>,
}

/// Which cascade ran a query, where, and with what settings.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CascadeRunInfo {
    pub name: String,
    pub node: String,
    /// The threshold and last stage this query used, after the operator's limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_stage: Option<usize>,
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryReply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub content: String,
    pub model: String,
    pub provider: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    pub usage: Usage,
    pub cost_usd: f64,
    pub latency_ms: f64,
    /// The answer's token log-probabilities, when the query asked for them and the provider gave them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Vec<TokenLogprob>>,
    pub trace: Trace,
}

/// The kinds of error a client can receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    InvalidRequest,
    NoProviderAvailable,
    DeadlineExceeded,
    UpstreamError,
    Overloaded,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    #[serde(rename = "type")]
    pub kind: ErrorType,
    /// A finer reason: `malformed_json`, `missing_field`, `unknown_route`, `payload_too_large`, ...
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// A typed error answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub error: ErrorBody,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<Trace>,
}

impl ErrorReply {
    pub fn new(kind: ErrorType, code: &str, message: impl Into<String>) -> Self {
        Self {
            error: ErrorBody {
                kind,
                code: code.to_owned(),
                message: message.into(),
                field: None,
                retry_after_ms: None,
            },
            id: None,
            trace: None,
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.error.field = Some(field.into());
        self
    }

    pub fn with_id(mut self, id: Option<String>) -> Self {
        self.id = id;
        self
    }

    pub fn with_trace(mut self, trace: Trace) -> Self {
        self.trace = Some(trace);
        self
    }

    pub fn with_retry_after_ms(mut self, ms: u64) -> Self {
        self.error.retry_after_ms = Some(ms);
        self
    }

    /// Builds the typed error for a payload that serde refused, naming the field where serde can tell.
    pub fn from_json_error(err: &serde_json::Error) -> Self {
        use serde_json::error::Category;
        let text = err.to_string();
        match err.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                ErrorReply::new(ErrorType::InvalidRequest, "malformed_json", format!("malformed JSON: {text}"))
            }
            Category::Data => {
                let code = if text.starts_with("missing field") {
                    "missing_field"
                } else if text.starts_with("unknown field") {
                    "unknown_field"
                } else {
                    "invalid_field"
                };
                // Only these two messages name a field in backticks; others quote values there.
                let field = (code != "invalid_field").then(|| field_named_in(&text)).flatten();
                let reply = ErrorReply::new(ErrorType::InvalidRequest, code, text);
                match field {
                    Some(f) => reply.with_field(f),
                    None => reply,
                }
            }
        }
    }
}

/// serde names the offending field in backticks: "missing field `messages` at line 1 column 2".
fn field_named_in(text: &str) -> Option<String> {
    let start = text.find('`')? + 1;
    let len = text[start..].find('`')?;
    Some(text[start..start + len].to_owned())
}

/// What a non-streaming client receives: an answer or a typed error (an object with an `error` field).
///
/// Written as either payload, untagged. Read in one pass over the fields (see [`WireFields`]): serde's own untagged
/// reading buffers the whole payload into a tree and then tries each variant on it, which costs more than the rest
/// of reading a reply, and every client reads one per query.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum QueryOutcome {
    Error(ErrorReply),
    Reply(QueryReply),
}

/// The fields of every payload a client reads: a [`QueryOutcome`] (`error` tells a reply from an error) and a
/// [`StreamFrame`] (`type` names the frame; a final frame carries a reply's or an error's fields beside its own).
/// Read in one pass, without serde's buffering of untagged and internally tagged enums. Unknown fields are
/// ignored, as by each payload on its own.
#[derive(Deserialize)]
struct WireFields {
    #[serde(rename = "type")]
    frame: Option<FrameType>,
    attempt: Option<u32>,
    seq: Option<u64>,
    delta: Option<String>,
    chunks: Option<u64>,
    error: Option<ErrorBody>,
    id: Option<String>,
    content: Option<String>,
    model: Option<String>,
    provider: Option<String>,
    finish_reason: Option<String>,
    usage: Option<Usage>,
    cost_usd: Option<f64>,
    latency_ms: Option<f64>,
    logprobs: Option<Vec<TokenLogprob>>,
    trace: Option<Trace>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum FrameType {
    Chunk,
    Done,
    Error,
}

fn required<T, E: serde::de::Error>(value: Option<T>, name: &'static str) -> Result<T, E> {
    value.ok_or_else(|| E::missing_field(name))
}

impl WireFields {
    /// The error these fields carry, or the reply they must then make up.
    fn outcome<E: serde::de::Error>(self) -> Result<QueryOutcome, E> {
        let WireFields { error, id, trace, .. } = self;
        if let Some(error) = error {
            return Ok(QueryOutcome::Error(ErrorReply { error, id, trace }));
        }
        Ok(QueryOutcome::Reply(QueryReply {
            id,
            content: required(self.content, "content")?,
            model: required(self.model, "model")?,
            provider: required(self.provider, "provider")?,
            finish_reason: self.finish_reason,
            usage: required(self.usage, "usage")?,
            cost_usd: required(self.cost_usd, "cost_usd")?,
            latency_ms: required(self.latency_ms, "latency_ms")?,
            logprobs: self.logprobs,
            trace: required(trace, "trace")?,
        }))
    }
}

impl<'de> Deserialize<'de> for QueryOutcome {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        WireFields::deserialize(deserializer)?.outcome()
    }
}

/// What a streaming client receives on its reply subject.
///
/// Every chunk names the upstream attempt it belongs to (1-based, as in the trace) and its sequence number inside
/// that attempt (from 0). The final frame names the attempt that answered and how many of its chunks were
/// published before it, so a client can drop chunks of a superseded attempt (a hedge that lost), put reordered
/// chunks back in order, and tell a gap from the end of the stream. NATS keeps the order of one publisher, but
/// two attempts run on two publishers, possibly on two nodes.
///
/// Written internally tagged (`type`); read in one pass over the fields (see [`WireFields`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamFrame {
    Chunk {
        attempt: u32,
        seq: u64,
        delta: String,
    },
    Done {
        attempt: u32,
        chunks: u64,
        #[serde(flatten)]
        reply: QueryReply,
    },
    Error {
        /// 0 when no attempt streamed anything.
        attempt: u32,
        chunks: u64,
        #[serde(flatten)]
        error: ErrorReply,
    },
}

impl<'de> Deserialize<'de> for StreamFrame {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut fields = WireFields::deserialize(deserializer)?;
        let frame = required(fields.frame.take(), "type")?;
        let attempt = required(fields.attempt, "attempt")?;
        Ok(match frame {
            FrameType::Chunk => StreamFrame::Chunk {
                attempt,
                seq: required(fields.seq, "seq")?,
                delta: required(fields.delta.take(), "delta")?,
            },
            FrameType::Done => {
                let chunks = required(fields.chunks, "chunks")?;
                match fields.outcome()? {
                    QueryOutcome::Reply(reply) => StreamFrame::Done { attempt, chunks, reply },
                    QueryOutcome::Error(_) => return Err(D::Error::custom("a `done` frame carries an `error`")),
                }
            }
            FrameType::Error => {
                let chunks = required(fields.chunks, "chunks")?;
                match fields.outcome()? {
                    QueryOutcome::Error(error) => StreamFrame::Error { attempt, chunks, error },
                    QueryOutcome::Reply(_) => return Err(D::Error::missing_field("error")),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<QueryRequest, ErrorReply> {
        let request: QueryRequest = serde_json::from_str(json).map_err(|e| ErrorReply::from_json_error(&e))?;
        request.validate()?;
        Ok(request)
    }

    fn check_err(json: &str, code: &str, field: Option<&str>) {
        let err = parse(json).expect_err(json);
        assert_eq!(err.error.kind, ErrorType::InvalidRequest, "{json}");
        assert_eq!(err.error.code, code, "{json}: {}", err.error.message);
        assert_eq!(err.error.field.as_deref(), field, "{json}");
    }

    #[test]
    fn bad_requests_get_typed_errors() {
        check_err("{not json", "malformed_json", None);
        check_err("{}", "missing_field", Some("messages"));
        check_err(r#"{"messages": []}"#, "invalid_field", Some("messages"));
        check_err(r#"{"messages": [{"role":"user","content":"hi"}], "bogus": 1}"#, "unknown_field", Some("bogus"));
        check_err(r#"{"messages": [{"role":"robot","content":"hi"}]}"#, "invalid_field", None);
        check_err(
            r#"{"messages": [{"role":"user","content":"hi"}], "temperature": 7}"#,
            "invalid_field",
            Some("temperature"),
        );
        check_err(r#"{"messages": [{"role":"user","content":"hi"}], "top_p": 0}"#, "invalid_field", Some("top_p"));
        check_err(
            r#"{"messages": [{"role":"user","content":"hi"}], "stop": ["a","b","c","d","e"]}"#,
            "invalid_field",
            Some("stop"),
        );
        check_err(r#"{"messages": [{"role":"user","content":"hi"}], "stop": [""]}"#, "invalid_field", Some("stop"));
        check_err(
            r#"{"messages": [{"role":"user","content":"hi"}], "deadline_ms": 0}"#,
            "invalid_field",
            Some("deadline_ms"),
        );
        check_err(
            r#"{"messages": [{"role":"user","content":"hi"}], "objective": "vibes"}"#,
            "invalid_field",
            Some("objective"),
        );
    }

    #[test]
    fn a_good_request_parses() {
        let request = parse(r#"{"id":"q1","messages":[{"role":"user","content":"hi"}],"stream":true}"#).expect("valid");
        assert_eq!(request.id.as_deref(), Some("q1"));
        assert!(request.stream);
    }

    #[test]
    fn fingerprints_cover_what_changes_the_answer_only() {
        let base = parse(r#"{"id":"q1","messages":[{"role":"user","content":"hi"}]}"#).expect("valid");
        let same = |json: &str| parse(json).expect("valid").fingerprint() == base.fingerprint();
        assert_eq!(base.fingerprint().len(), 64);
        assert!(same(r#"{"id":"other","messages":[{"role":"user","content":"hi"}],"stream":true,"deadline_ms":5}"#));
        for other in [
            r#"{"messages":[{"role":"user","content":"ho"}]}"#,
            r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":5}"#,
            r#"{"messages":[{"role":"user","content":"hi"}],"temperature":0.5}"#,
            r#"{"messages":[{"role":"user","content":"hi"}],"logprobs":true}"#,
            r#"{"messages":[{"role":"user","content":"hi"}],"metadata":{"tier":"gold"}}"#,
            r#"{"messages":[{"role":"user","content":"hi"}],"objective":"cost"}"#,
            r#"{"messages":[{"role":"user","content":"hi"}],"top_p":0.5}"#,
            r#"{"messages":[{"role":"user","content":"hi"}],"stop":["."]}"#,
        ] {
            assert!(!same(other), "{other} must change the fingerprint");
        }
        let a = parse(r#"{"messages":[{"role":"user","content":"hi"}],"metadata":{"a":"1","b":"2"}}"#).expect("valid");
        let b = parse(r#"{"messages":[{"role":"user","content":"hi"}],"metadata":{"b":"2","a":"1"}}"#).expect("valid");
        assert_eq!(a.fingerprint(), b.fingerprint(), "metadata order does not matter");
    }

    /// A reply with every field set but `logprobs`, and its trace.
    fn full_reply() -> (QueryReply, Trace) {
        let trace = Trace { node: "n1".into(), route: "r".into(), ..Trace::default() };
        let reply = QueryReply {
            id: Some("q-1".into()),
            content: "four".into(),
            model: "m".into(),
            provider: "p".into(),
            finish_reason: Some("stop".into()),
            usage: Usage { input_tokens: 3, output_tokens: 1 },
            cost_usd: 0.5,
            latency_ms: 1.25,
            logprobs: None,
            trace: trace.clone(),
        };
        (reply, trace)
    }

    #[test]
    fn outcomes_read_back_as_written() {
        let (reply, trace) = full_reply();
        let logprobs = Some(vec![TokenLogprob { token: "four".into(), logprob: -0.1 }]);
        let reply = QueryReply { logprobs, ..reply };
        let error = ErrorReply::new(ErrorType::UpstreamError, "exhausted", "all failed")
            .with_id(Some("q-2".into()))
            .with_trace(trace);
        let bare = ErrorReply::new(ErrorType::Overloaded, "overloaded", "busy");
        let minimal = QueryReply { id: None, finish_reason: None, logprobs: None, ..reply.clone() };
        for outcome in [
            QueryOutcome::Reply(reply),
            QueryOutcome::Reply(minimal),
            QueryOutcome::Error(error),
            QueryOutcome::Error(bare),
        ] {
            let json = serde_json::to_string(&outcome).expect("json");
            assert_eq!(serde_json::from_str::<QueryOutcome>(&json).expect("reads"), outcome, "{json}");
        }
    }

    #[test]
    fn a_reply_missing_a_field_is_refused_by_name_and_unknown_fields_are_ignored() {
        let reply = r#"{"content":"a","model":"m","provider":"p","usage":{"input_tokens":1,"output_tokens":1},
            "cost_usd":0,"latency_ms":1,"trace":{"node":"n","route":"r","attempts":[]},"from_the_future":1}"#;
        assert!(matches!(serde_json::from_str::<QueryOutcome>(reply), Ok(QueryOutcome::Reply(_))));
        let error = serde_json::from_str::<QueryOutcome>(&reply.replace(r#""model":"m","#, "")).unwrap_err();
        assert!(error.to_string().contains("missing field `model`"), "{error}");
        let error = serde_json::from_str::<QueryOutcome>(r#"{"error":{"type":"overloaded"}}"#).unwrap_err();
        assert!(error.to_string().contains("missing field"), "a malformed error is refused: {error}");
        assert!(serde_json::from_str::<QueryOutcome>("[1]").is_err());
    }

    #[test]
    fn stream_frames_read_back_as_written_and_bad_ones_are_refused_by_name() {
        let (reply, trace) = full_reply();
        let error = ErrorReply::new(ErrorType::UpstreamError, "stream_interrupted", "cut").with_trace(trace);
        for frame in [
            StreamFrame::Chunk { attempt: 2, seq: 3, delta: "a \"quoted\" delta".into() },
            StreamFrame::Done { attempt: 2, chunks: 4, reply },
            StreamFrame::Error { attempt: 0, chunks: 0, error },
        ] {
            let json = serde_json::to_string(&frame).expect("json");
            assert_eq!(serde_json::from_str::<StreamFrame>(&json).expect("reads"), frame, "{json}");
        }
        for (json, missing) in [
            (r#"{"type":"chunk","attempt":1,"delta":"a"}"#, "missing field `seq`"),
            (r#"{"attempt":1,"seq":0,"delta":"a"}"#, "missing field `type`"),
            (r#"{"type":"error","attempt":1,"chunks":0}"#, "missing field"),
            (r#"{"type":"done","attempt":1,"chunks":0,"content":"a"}"#, "missing field `model`"),
            (r#"{"type":"nope","attempt":1}"#, "unknown variant"),
        ] {
            let error = serde_json::from_str::<StreamFrame>(json).unwrap_err().to_string();
            assert!(error.contains(missing), "{json}: {error}");
        }
    }

    #[test]
    fn outcomes_are_told_apart() {
        let err = serde_json::to_string(&ErrorReply::new(ErrorType::Overloaded, "busy", "busy")).expect("json");
        assert!(matches!(serde_json::from_str::<QueryOutcome>(&err), Ok(QueryOutcome::Error(_))));
        let frame = serde_json::to_string(&StreamFrame::Chunk { attempt: 2, seq: 3, delta: "a".into() }).expect("json");
        assert_eq!(frame, r#"{"type":"chunk","attempt":2,"seq":3,"delta":"a"}"#);
        let error = ErrorReply::new(ErrorType::UpstreamError, "stream_interrupted", "cut");
        let frame = StreamFrame::Error { attempt: 1, chunks: 4, error };
        let json = serde_json::to_string(&frame).expect("json");
        assert_eq!(serde_json::from_str::<StreamFrame>(&json).ok(), Some(frame), "{json}");
    }
}
