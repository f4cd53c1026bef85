//! [`QueryStream`]: the frames of a streaming query, turned into [`StreamEvent`]s.
//!
//! The stream rules are in the crate docs; the assembling is in [`crate::assemble`]. This module drives it from
//! the reply inbox: it stops re-sending at the first frame of the stream, waits a short grace for chunks that
//! trail the final frame, and ends after the first final frame (any later one, from another copy, is ignored).

use std::collections::VecDeque;
use std::time::Duration;

use futures::Stream;
use tokio::time::Instant;
use tracing::debug;

use switchyard_bus::Message;
use switchyard_protocol::client::{ErrorReply, QueryReply, StreamFrame};

use crate::ClientError;
use crate::assemble::{Assembler, Missing, StreamEvent};
use crate::flight::{Flight, is_copy_refusal};

/// The final frame is known, but chunks of its attempt are missing.
struct Trailing {
    attempt: u32,
    chunks: u64,
    end: End,
    until: Instant,
    missing: Missing,
}

/// How a stream ends once its trailing chunks are in.
enum End {
    /// The answer (a `Done` frame).
    Answer(Box<QueryReply>),
    /// The query failed after the followed attempt had published some chunks: they are shown, then the error.
    Failed(Box<ErrorReply>),
}

/// A streaming query in flight. Yields deltas, possibly a restart, then one `Done` or an error, then ends.
pub struct QueryStream {
    flight: Flight,
    assembler: Assembler,
    ready: VecDeque<StreamEvent>,
    /// The error that ends the stream once `ready` is drained.
    failure: Option<ClientError>,
    trailing: Option<Trailing>,
    gap_grace: Duration,
    finished: bool,
}

impl QueryStream {
    pub(crate) fn new(flight: Flight, gap_grace: Duration) -> Self {
        Self {
            flight,
            assembler: Assembler::default(),
            ready: VecDeque::new(),
            failure: None,
            trailing: None,
            gap_grace,
            finished: false,
        }
    }

    /// The query's idempotency key.
    pub fn id(&self) -> &str {
        &self.flight.id
    }

    /// The next event; `None` after `Done` or an error.
    pub async fn next(&mut self) -> Option<Result<StreamEvent, ClientError>> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                if matches!(event, StreamEvent::Done(_)) {
                    self.finished = true;
                    self.ready.clear();
                }
                return Some(Ok(event));
            }
            if let Some(error) = self.failure.take() {
                self.finished = true;
                return Some(Err(error));
            }
            if self.finished {
                return None;
            }
            let received = match self.trailing.as_ref().map(|trailing| trailing.until) {
                Some(until) => match tokio::time::timeout_at(until, self.flight.next()).await {
                    Ok(Ok(message)) => Ok(message),
                    // The grace ran out (or the wait ended otherwise): the chunks are lost.
                    Ok(Err(_)) | Err(_) => Err(self.gap()),
                },
                None => self.flight.next().await,
            };
            let outcome = match received {
                Ok(message) => self.take(message),
                Err(error) => Err(error),
            };
            if let Err(error) = outcome {
                self.finished = true;
                self.flight.finish();
                return Some(Err(error));
            }
        }
    }

    /// The events as a `Stream`.
    pub fn into_stream(self) -> impl Stream<Item = Result<StreamEvent, ClientError>> + Send {
        futures::stream::unfold(self, |mut stream| async move { stream.next().await.map(|item| (item, stream)) })
    }

    fn gap(&mut self) -> ClientError {
        match self.trailing.take() {
            Some(Trailing { missing, end: End::Answer(reply), .. }) => ClientError::Gap {
                id: self.flight.id.clone(),
                attempt: missing.attempt,
                expected: missing.expected,
                got: missing.got,
                reply,
            },
            // The query failed anyway: its error says more than the chunks that did not come.
            Some(Trailing { end: End::Failed(reply), .. }) => ClientError::Server { reply },
            None => ClientError::Closed { id: self.flight.id.clone() },
        }
    }

    /// Takes one message from the inbox; an `Err` ends the stream.
    fn take(&mut self, message: Message) -> Result<(), ClientError> {
        if message.is_no_responders() {
            if self.flight.refused() && self.trailing.is_none() {
                return Err(ClientError::NoResponders { subject: self.flight.subject.clone() });
            }
            return Ok(());
        }
        let frame = match serde_json::from_slice::<StreamFrame>(&message.payload) {
            Ok(frame) => frame,
            // A query refused before the node knew it streams (malformed, too large) gets a plain error.
            Err(e) => match serde_json::from_slice::<ErrorReply>(&message.payload) {
                Ok(error) => StreamFrame::Error { attempt: 0, chunks: 0, error },
                Err(_) => return Err(ClientError::Decode { id: self.flight.id.clone(), reason: e.to_string() }),
            },
        };
        match frame {
            StreamFrame::Chunk { attempt, seq, delta } => {
                self.flight.stop_resending();
                self.ready.extend(self.assembler.chunk(attempt, seq, delta));
                if let Some(trailing) = self.trailing.take() {
                    self.finish(trailing.attempt, trailing.chunks, trailing.end, Some(trailing.until));
                }
            }
            StreamFrame::Done { attempt, chunks, reply } => {
                self.flight.stop_resending();
                self.flight.finish();
                if self.trailing.is_some() {
                    debug!(id = %self.flight.id, attempt, "second final frame ignored");
                } else {
                    self.finish(attempt, chunks, End::Answer(Box::new(reply)), None);
                }
            }
            StreamFrame::Error { attempt, chunks, error } => {
                if self.trailing.is_some() {
                    debug!(id = %self.flight.id, code = %error.error.code, "error after the final frame ignored");
                } else if is_copy_refusal(&error) && !self.flight.refused() {
                    debug!(id = %self.flight.id, code = %error.error.code, "a copy was refused, waiting for the others");
                } else {
                    self.flight.finish();
                    // Chunks and the error can travel different ways (a node answering in process, chunks over
                    // the bus): the chunks published before the error are shown first.
                    self.finish(attempt, chunks, End::Failed(Box::new(error)), None);
                }
            }
        }
        Ok(())
    }

    /// Tries to end the stream on a final frame or an error; keeps waiting (until `until`, or a fresh grace)
    /// when chunks of the winner, or of the failed attempt shown so far, are missing.
    fn finish(&mut self, attempt: u32, chunks: u64, end: End, until: Option<Instant>) {
        let missing = match &end {
            End::Answer(reply) => {
                self.assembler.finish(attempt, chunks, reply).map(|events| self.ready.extend(events)).err()
            }
            End::Failed(_) => self.assembler.missing_before_error(attempt, chunks),
        };
        let Some(missing) = missing else {
            if let End::Failed(reply) = end {
                self.failure = Some(ClientError::Server { reply });
            }
            return;
        };
        let until = until.unwrap_or_else(|| Instant::now() + self.gap_grace);
        debug!(id = %self.flight.id, attempt, expected = missing.expected, got = missing.got, "waiting for late chunks");
        self.trailing = Some(Trailing { attempt, chunks, end, until, missing });
    }
}
