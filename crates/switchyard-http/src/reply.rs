//! Writing an answer back in a wire format ([`Writer`]), whole or as a stream of SSE events.
//!
//! Both formats stream alike: the response starts only with the query's first event, so a query refused before
//! it (unknown route, overloaded, no provider) is answered with an HTTP error; then the format's opening events,
//! a text event per chunk, and its closing events. A failure after the start is the format's error event (OpenAI:
//! a `data: {"error": ...}` event; Anthropic: `event: error`), which the SDKs raise as an API error. When the
//! answering attempt is not the one streamed (`Restart`) after text went out, the stream ends with a
//! `stream_restarted` error: neither format can take text back, and a retry beats a wrong text.

use std::convert::Infallible;

use axum::http::{HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use tracing::{debug, warn};

use switchyard_client::{ClientError, QueryStream, StreamEvent};
use switchyard_protocol::client::QueryReply;

use crate::anthropic::{MessageEvent, MessageStream};
use crate::error::{ApiError, Wire};
use crate::openai::{ChatCompletion, ChunkHeader, Delta, finish_reason};

/// How one wire format writes one answer.
pub trait Writer: Send + 'static {
    /// The format, for the errors.
    const WIRE: Wire;

    /// The body of a whole answer.
    fn whole(&self, reply: &QueryReply) -> Response;

    /// The events before the first text.
    fn opening(&self) -> Vec<Event>;

    /// The event carrying a piece of the text.
    fn text(&self, text: &str) -> Event;

    /// The events after the last text.
    fn closing(&self, reply: &QueryReply) -> Vec<Event>;

    /// The event that ends a stream failing after its start.
    fn error(&self, error: &ApiError) -> Event;
}

/// OpenAI: `chat.completion`, or `chat.completion.chunk`s (a role chunk, content chunks, a finish chunk, the
/// usage if asked) and `data: [DONE]`.
impl Writer for ChunkHeader {
    const WIRE: Wire = Wire::OpenAi;

    fn whole(&self, reply: &QueryReply) -> Response {
        axum::Json(ChatCompletion::new(&self.id, self.created, &self.model, reply)).into_response()
    }

    fn opening(&self) -> Vec<Event> {
        vec![data(&self.delta(Delta { role: Some("assistant"), content: Some("") }, None))]
    }

    fn text(&self, text: &str) -> Event {
        data(&self.delta(Delta { role: None, content: Some(text) }, None))
    }

    fn closing(&self, reply: &QueryReply) -> Vec<Event> {
        let finish = finish_reason(reply.finish_reason.as_deref());
        let mut events = vec![data(&self.delta(Delta::default(), Some(finish)))];
        if self.include_usage {
            events.push(data(&self.usage(reply.usage)));
        }
        events.push(Event::default().data("[DONE]"));
        events
    }

    fn error(&self, error: &ApiError) -> Event {
        Event::default().data(error.body(Self::WIRE))
    }
}

/// Anthropic: a `message`, or its named events (`message_start` ... `message_stop`).
impl Writer for MessageStream {
    const WIRE: Wire = Wire::Anthropic;

    fn whole(&self, reply: &QueryReply) -> Response {
        axum::Json(self.message(reply)).into_response()
    }

    fn opening(&self) -> Vec<Event> {
        self.start().iter().map(named).collect()
    }

    fn text(&self, text: &str) -> Event {
        named(&self.text_delta(text))
    }

    fn closing(&self, reply: &QueryReply) -> Vec<Event> {
        self.stop(reply).iter().map(named).collect()
    }

    fn error(&self, error: &ApiError) -> Event {
        Event::default().event("error").data(error.body(Self::WIRE))
    }
}

fn data(value: &impl serde::Serialize) -> Event {
    Event::default().data(serde_json::to_string(value).unwrap_or_default())
}

fn named(event: &MessageEvent<'_>) -> Event {
    data(event).event(event.name())
}

/// A whole answer, with the provider that answered in `x-switchyard-provider`.
pub fn whole(writer: &impl Writer, reply: &QueryReply) -> Response {
    let mut response = writer.whole(reply);
    if let Ok(provider) = HeaderValue::from_str(&reply.provider) {
        response.headers_mut().insert("x-switchyard-provider", provider);
    }
    response
}

/// Waits for the stream's first event, so a query refused before it answers with an HTTP error; then streams.
pub async fn stream(writer: impl Writer, mut stream: QueryStream) -> Result<Response, ClientError> {
    let first = match stream.next().await {
        Some(Ok(event)) => event,
        Some(Err(error)) => return Err(error),
        None => return Err(ClientError::Closed { id: stream.id().to_owned() }),
    };
    let sse = Sse::new(events(writer, first, stream)).keep_alive(KeepAlive::default());
    Ok(sse.into_response())
}

/// Where a stream is.
struct Streaming<W> {
    writer: W,
    stream: QueryStream,
    /// The first event, taken before the response started.
    first: Option<StreamEvent>,
    /// Text was sent: a restart cannot be honoured any more.
    sent_text: bool,
    done: bool,
}

/// The SSE events of a stream: the opening events, then one or more per event of the query's stream.
fn events<W: Writer>(
    writer: W,
    first: StreamEvent,
    stream: QueryStream,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let opening = writer.opening();
    let state = Streaming { writer, stream, first: Some(first), sent_text: false, done: false };
    let rest = futures::stream::unfold(state, |mut state| async move {
        if state.done {
            return None;
        }
        let item = match state.first.take() {
            Some(event) => Some(Ok(event)),
            None => state.stream.next().await,
        };
        let events = state.translate(item);
        Some((events, state))
    });
    futures::stream::iter(opening).chain(rest.flat_map(futures::stream::iter)).map(Ok)
}

impl<W: Writer> Streaming<W> {
    fn translate(&mut self, item: Option<Result<StreamEvent, ClientError>>) -> Vec<Event> {
        match item {
            Some(Ok(StreamEvent::Delta { text, .. })) if text.is_empty() => Vec::new(),
            Some(Ok(StreamEvent::Delta { text, .. })) => {
                self.sent_text = true;
                vec![self.writer.text(&text)]
            }
            Some(Ok(StreamEvent::Restart { .. })) if !self.sent_text => Vec::new(),
            Some(Ok(StreamEvent::Restart { attempt })) => {
                // The text sent belongs to an attempt that did not answer, and a stream cannot take text back:
                // the client is told to retry instead of being left with a wrong text.
                warn!(attempt, "the answering attempt is not the one streamed; stream ended with an error");
                let error = ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "api_error",
                    "the stream was superseded by another attempt; retry",
                )
                .with_code("stream_restarted");
                self.error(error)
            }
            Some(Ok(StreamEvent::Done(done))) => {
                self.done = true;
                self.writer.closing(&done.reply)
            }
            Some(Err(error)) => self.error(ApiError::from(&error)),
            None => self.error(ApiError::from(&ClientError::Closed { id: self.stream.id().to_owned() })),
        }
    }

    fn error(&mut self, error: ApiError) -> Vec<Event> {
        self.done = true;
        debug!(code = ?error.code, "stream ended with an error");
        vec![self.writer.error(&error)]
    }
}
