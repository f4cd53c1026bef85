//! Server-sent-event plumbing shared by both streaming clients.
//!
//! Each provider supplies a [`Decoder`] that turns one SSE event into a step (skip it, emit a delta, finish, fail);
//! [`drive`] owns everything else: parsing the byte stream into events, mapping transport failures, and the rule
//! that a stream must end with its provider's terminal event (`[DONE]`, `message_stop`). A stream that stops short
//! is an interrupted answer, so it is `Retryable`, never a silent success. After the final item (a `Done` or an
//! error) the stream yields nothing more.

use std::sync::Arc;

use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures::StreamExt;
use http_body_util::BodyExt;
use switchyard_core::FailureClass;
use tokio::time::Instant;
use tracing::{debug, trace};

use crate::http::{Response, Transport, Upstream, within};
use crate::{CompletionStream, ProviderError, StreamEvent};

/// What a decoder makes of one event.
pub(crate) enum Step {
    /// Nothing to emit (pings, bookkeeping events).
    Skip,
    /// Text to pass on at once.
    Delta(String),
    /// The terminal event arrived: the complete answer, or the error it turned out to be.
    Finish(Result<switchyard_protocol::Completion, ProviderError>),
    /// The stream carried an error event.
    Fail(ProviderError),
}

/// A provider's stream format.
pub(crate) trait Decoder: Send + 'static {
    /// The event that ends a well-formed stream, named in the error when it never comes.
    const TERMINATOR: &'static str;

    /// Handles one event; `upstream` builds errors and prices usage.
    fn on_event(&mut self, event: &Event, upstream: &Upstream) -> Step;
}

/// Turns a 2xx streaming response into a [`CompletionStream`] that must end before `deadline` (the provider's
/// stream timeout), if there is one.
///
/// A 2xx that is JSON rather than an event stream is an error object some servers send with a success status; it
/// is classified like any other error body.
pub(crate) async fn drive<D: Decoder>(
    upstream: Arc<Upstream>,
    response: Response,
    decoder: D,
    deadline: Option<Instant>,
) -> Result<CompletionStream, ProviderError> {
    let is_json = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    let (head, body) = response.into_parts();
    if is_json {
        let body = upstream.read_body(body, deadline).await?;
        return Err(upstream.error_response(head.status.as_u16(), &head.headers, &String::from_utf8_lossy(&body)));
    }

    let events = Box::pin(body.into_data_stream().eventsource());
    let state = State { events, decoder, upstream, deadline, finished: false };
    Ok(Box::pin(futures::stream::unfold(state, next_item)))
}

type Events = std::pin::Pin<Box<dyn futures::Stream<Item = Result<Event, EventStreamError<hyper::Error>>> + Send>>;

struct State<D> {
    events: Events,
    decoder: D,
    upstream: Arc<Upstream>,
    /// When the whole stream must have ended.
    deadline: Option<Instant>,
    finished: bool,
}

async fn next_item<D: Decoder>(mut state: State<D>) -> Option<(Result<StreamEvent, ProviderError>, State<D>)> {
    if state.finished {
        return None;
    }
    let item = loop {
        let step = match within(state.deadline, state.events.next()).await {
            None => Step::Fail(state.upstream.transport_error(Transport::TimedOut)),
            Some(None) => Step::Fail(state.upstream.error(
                FailureClass::Retryable,
                None,
                &format!("stream ended before {}", D::TERMINATOR),
            )),
            Some(Some(Err(EventStreamError::Transport(err)))) => {
                Step::Fail(state.upstream.transport_error(Transport::Body(&err)))
            }
            Some(Some(Err(err))) => Step::Fail(state.upstream.error(
                FailureClass::Retryable,
                None,
                &format!("malformed event stream: {err}"),
            )),
            Some(Some(Ok(event))) => {
                trace!(provider = %state.upstream.settings.name, event = %event.event, "stream event");
                state.decoder.on_event(&event, &state.upstream)
            }
        };
        match step {
            Step::Skip => continue,
            Step::Delta(text) if text.is_empty() => continue,
            Step::Delta(text) => break Ok(StreamEvent::Delta(text)),
            Step::Finish(Ok(completion)) => {
                debug!(
                    provider = %state.upstream.settings.name,
                    input_tokens = completion.usage.input_tokens,
                    output_tokens = completion.usage.output_tokens,
                    "stream finished"
                );
                state.finished = true;
                break Ok(StreamEvent::Done(completion));
            }
            Step::Finish(Err(err)) | Step::Fail(err) => {
                state.finished = true;
                break Err(err);
            }
        }
    };
    Some((item, state))
}
