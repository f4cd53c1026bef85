//! What the two provider wire formats have in common, and the dispatch between them.
//!
//! The server decides *what* happens to a request (answer, error, hang, reset) without knowing which API
//! was called; this module turns a request body into an [`Exchange`] and a decision back into bytes in
//! the format of the endpoint that was hit, so errors always come back in the caller's dialect.

pub(crate) mod anthropic;
pub(crate) mod openai;

use std::fmt;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::behavior::{Confidence, MockError};
use crate::text;

/// Which provider API a request came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wire {
    OpenAi,
    Anthropic,
}

/// The parts of a chat request the mock acts on, whatever the wire format.
#[derive(Debug, Default)]
pub(crate) struct Exchange {
    pub model: String,
    /// Content of the last user message: what Echo repeats and Replay looks up.
    pub last_user: String,
    /// Words across the system prompt and all messages, at least 1.
    pub input_tokens: u32,
    pub max_tokens: Option<u32>,
    pub stream: bool,
    /// OpenAI `stream_options.include_usage`.
    pub include_usage: bool,
    /// OpenAI `logprobs: true`, with the number of `top_logprobs` wanted.
    pub logprobs: Option<u8>,
}

/// A request the real API would reject before looking at it.
#[derive(Debug)]
pub(crate) struct BadRequest {
    /// The model, when the body parsed far enough to name one (so the call can still be counted).
    pub model: Option<String>,
    pub message: String,
    pub param: Option<&'static str>,
}

/// Every way the mock can refuse a request.
#[derive(Debug)]
pub(crate) enum Failure<'a> {
    Scripted(&'a MockError),
    BadRequest {
        message: &'a str,
        param: Option<&'static str>,
    },
    /// Replay has no recording for this model.
    UnknownModel,
    /// Replay knows the model but not this prompt.
    UnknownPrompt,
}

/// Everything needed to render a successful answer.
#[derive(Debug)]
pub(crate) struct Reply<'a> {
    /// Unique per request; becomes the response id.
    pub seq: u64,
    /// Unix seconds.
    pub created: u64,
    pub model: &'a str,
    pub input_tokens: u32,
    /// The answer after `max_tokens`.
    pub text: &'a str,
    pub output_tokens: u32,
    /// True when `max_tokens` cut the answer.
    pub cut: bool,
    pub logprobs: Option<u8>,
    /// Which log-probabilities the tokens report, when `logprobs` is asked for.
    pub confidence: Confidence,
    pub include_usage: bool,
    /// Streaming only: the number of tokens after which the stream fails.
    pub fail_after_tokens: Option<u32>,
}

impl Wire {
    pub(crate) fn parse(self, body: &[u8]) -> Result<Exchange, BadRequest> {
        match self {
            Self::OpenAi => openai::parse(body),
            Self::Anthropic => anthropic::parse(body),
        }
    }

    pub(crate) fn error(self, failure: &Failure<'_>, model: &str, input_tokens: u32) -> Response {
        match self {
            Self::OpenAi => openai::error(failure, model, input_tokens),
            Self::Anthropic => anthropic::error(failure, model, input_tokens),
        }
    }

    pub(crate) fn complete(self, reply: &Reply<'_>) -> Response {
        match self {
            Self::OpenAi => openai::complete(reply),
            Self::Anthropic => anthropic::complete(reply),
        }
    }

    pub(crate) fn stream(self, reply: &Reply<'_>, chunk_delay: Duration) -> Response {
        let events = match self {
            Self::OpenAi => openai::stream(reply),
            Self::Anthropic => anthropic::stream(reply),
        };
        events.into_response(chunk_delay)
    }
}

/// The tokens a stream emits before it fails, or `None` when it completes: a stream fails once it has
/// sent `fail_after` tokens and has not yet finished.
pub(crate) fn stream_cutoff(reply: &Reply<'_>) -> Option<usize> {
    reply.fail_after_tokens.map(|n| n as usize).filter(|&n| n <= reply.output_tokens as usize)
}

/// Reads the system prompt and messages into the common fields of an [`Exchange`].
/// Each message comes as (is it from the user, its content).
pub(crate) fn summarize(system: Option<&str>, messages: impl IntoIterator<Item = (bool, Text)>) -> (String, u32) {
    let mut words = system.map_or(0, text::count_words);
    let mut last_user = None;
    for (from_user, content) in messages {
        words += text::count_words(&content.0);
        if from_user {
            last_user = Some(content.0);
        }
    }
    let input_tokens = u32::try_from(words).unwrap_or(u32::MAX).max(1);
    (last_user.unwrap_or_default(), input_tokens)
}

/// Message content in either shape both APIs accept: a string, or an array of parts whose `text`
/// fields are joined with newlines (images and other parts are ignored). `null` reads as empty.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TextVisitor)
    }
}

struct TextVisitor;

/// One part of an array content; only text parts matter.
#[derive(Deserialize)]
struct Part {
    #[serde(default)]
    text: Option<String>,
}

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Text;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or an array of content parts")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
        Ok(Text(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Text, E> {
        Ok(Text(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Text, E> {
        Ok(Text::default())
    }

    fn visit_none<E: de::Error>(self) -> Result<Text, E> {
        Ok(Text::default())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Text, A::Error> {
        let mut out = String::new();
        while let Some(part) = seq.next_element::<Part>()? {
            if let Some(text) = part.text {
                if !out.is_empty() {
                    out.push('\n');
                }
                out.push_str(&text);
            }
        }
        Ok(Text(out))
    }
}

/// A JSON response with the given status.
pub(crate) fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    let (status, bytes) = match serde_json::to_vec(body) {
        Ok(bytes) => (status, bytes),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, Vec::new()),
    };
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Adds `retry-after` (and, for OpenAI, `retry-after-ms`) when the error carries a retry hint.
pub(crate) fn add_retry_after(response: &mut Response, error: &Failure<'_>, with_ms: bool) {
    let Failure::Scripted(error) = error else {
        return;
    };
    let Some((seconds, millis)) = error.retry_after() else {
        return;
    };
    let headers = response.headers_mut();
    headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    if with_ms {
        headers.insert("retry-after-ms", HeaderValue::from(millis));
    }
}

/// Server-sent events written into one buffer, remembering where each event ends so they can be sent
/// all at once or one by one with a delay.
#[derive(Debug, Default)]
pub(crate) struct Events {
    buf: Vec<u8>,
    ends: Vec<usize>,
}

impl Events {
    pub(crate) fn with_capacity(events: usize) -> Self {
        Self { buf: Vec::with_capacity(events * 160), ends: Vec::with_capacity(events) }
    }

    /// Appends `event: <name>\n` (when named) and `data: <json>\n\n`.
    pub(crate) fn json(&mut self, name: Option<&str>, data: &impl Serialize) {
        if let Some(name) = name {
            self.buf.extend_from_slice(b"event: ");
            self.buf.extend_from_slice(name.as_bytes());
            self.buf.push(b'\n');
        }
        self.buf.extend_from_slice(b"data: ");
        // Serializing plain structs into a Vec cannot fail; if it did, the event would be empty.
        let _ = serde_json::to_writer(&mut self.buf, data);
        self.buf.extend_from_slice(b"\n\n");
        self.ends.push(self.buf.len());
    }

    /// Appends `data: <raw>\n\n`.
    pub(crate) fn raw(&mut self, data: &str) {
        self.buf.extend_from_slice(b"data: ");
        self.buf.extend_from_slice(data.as_bytes());
        self.buf.extend_from_slice(b"\n\n");
        self.ends.push(self.buf.len());
    }

    /// A `200 text/event-stream` response: one body chunk when there is no delay, else one chunk per
    /// event with `delay` between them.
    pub(crate) fn into_response(self, delay: Duration) -> Response {
        let bytes = Bytes::from(self.buf);
        let body = if delay.is_zero() {
            Body::from(bytes)
        } else {
            let mut start = 0;
            let chunks: Vec<Bytes> = self
                .ends
                .iter()
                .map(|&end| {
                    let chunk = bytes.slice(start..end);
                    start = end;
                    chunk
                })
                .collect();
            let stream = futures::stream::unfold((chunks.into_iter(), true), move |(mut chunks, first)| async move {
                let chunk = chunks.next()?;
                if !first {
                    tokio::time::sleep(delay).await;
                }
                Some((Ok::<_, std::io::Error>(chunk), (chunks, false)))
            });
            Body::from_stream(stream)
        };
        let mut response = Response::new(body);
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        response
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn text_reads_strings_parts_and_null() {
        let check = |json: &str, expected: &str| {
            let got: Text = serde_json::from_str(json).unwrap();
            assert_eq!(got.0, expected, "{json}");
        };
        check(r#""hi there""#, "hi there");
        check("null", "");
        check(
            r#"[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"b"}]"#,
            "a\nb",
        );
        assert!(serde_json::from_str::<Text>("3").is_err());
    }

    #[test]
    fn summarize_counts_words_and_keeps_last_user() {
        let messages =
            vec![(true, Text("one two".into())), (false, Text("three".into())), (true, Text("four five six".into()))];
        assert_eq!(summarize(Some("sys tem"), messages), ("four five six".to_owned(), 8));
        assert_eq!(summarize(None, Vec::new()), (String::new(), 1));
    }
}
