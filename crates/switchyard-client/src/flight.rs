//! One query in flight: its reply inbox, its copies, its re-send schedule and its deadline.
//!
//! Every copy of a query is the same bytes (same id) published with the same reply subject, so any reply to any
//! copy lands in one subscription and the first answer wins. Copies are re-sent while nothing answers, at
//! intervals doubling from `resend_after`, until the deadline. Some replies answer only the copy that received
//! them, not the query: a no-responders status, `overloaded`, or a node saying the id is being streamed
//! elsewhere. Such a refusal ends the query only once every copy sent so far has been refused.
//!
//! A query without an id carries a cancel token ([`CANCEL_HEADER`]). Dropped before its answer (its caller stopped
//! waiting: a timeout around it, an HTTP client of the door hanging up), it publishes the token on the cancel
//! subject; the router running it stops it and cancels its provider calls. A query with an id is left to run, so
//! that a retry under the same id finds its answer.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tracing::{debug, warn};

use switchyard_bus::{Bus, Message, Subscription};
use switchyard_protocol::client::{ErrorReply, ErrorType};
use switchyard_protocol::subjects::CANCEL_HEADER;

use crate::{ClientError, ClientOptions};

/// Error codes a node answers to a copy of an id whose stream is being produced by another node: the original
/// may still come, so they refuse the copy, not the query.
pub const COPY_REFUSAL_CODES: &[&str] = &["stream_in_progress_elsewhere", "in_progress_elsewhere"];

/// Whether `error` refuses only the copy it answers (see [`COPY_REFUSAL_CODES`]); `overloaded` too.
pub fn is_copy_refusal(error: &ErrorReply) -> bool {
    error.error.kind == ErrorType::Overloaded || COPY_REFUSAL_CODES.contains(&error.error.code.as_str())
}

pub(crate) struct Flight {
    /// Where copies are published; none for a query handed over by other means ([`Flight::attached`]).
    bus: Option<Arc<dyn Bus>>,
    pub id: String,
    pub subject: String,
    inbox: String,
    payload: Bytes,
    replies: Subscription,
    copies: u32,
    refusals: u32,
    started: Instant,
    deadline: Instant,
    next_resend: Option<Instant>,
    interval: Duration,
    max_interval: Duration,
    /// Where to say that nobody waits for the answer any more (the cancel subject and the query's token), until
    /// the query is over ([`Flight::finish`]); only for a query without an id that was published.
    cancel: Option<Cancel>,
}

/// How a query without an id is cancelled.
pub(crate) struct Cancel {
    pub subject: String,
    pub token: String,
}

impl Flight {
    /// Subscribes to a fresh inbox, then publishes the first copy (with the cancel token, given `cancel`).
    pub async fn start(
        bus: Arc<dyn Bus>,
        subject: String,
        id: String,
        payload: Bytes,
        deadline: Duration,
        options: &ClientOptions,
        cancel: Option<Cancel>,
    ) -> Result<Self, ClientError> {
        let inbox = bus.new_inbox();
        let replies = bus.subscribe(&inbox).await?;
        let started = Instant::now();
        let resend = !options.resend_after.is_zero();
        let mut flight = Flight {
            bus: Some(bus),
            id,
            subject,
            inbox,
            payload,
            replies,
            copies: 0,
            refusals: 0,
            started,
            deadline: started + deadline + options.deadline_slack,
            next_resend: resend.then(|| started + options.resend_after),
            interval: options.resend_after,
            max_interval: options.max_resend_interval.max(options.resend_after),
            cancel,
        };
        flight.send().await.inspect_err(|_| flight.finish())?;
        debug!(id = %flight.id, subject = %flight.subject, "query sent");
        Ok(flight)
    }

    /// A query already sent by other means (handed to a node in process), whose replies come on `replies`:
    /// never re-sent, one copy.
    pub fn attached(id: String, replies: Subscription, deadline: Duration, options: &ClientOptions) -> Self {
        let started = Instant::now();
        Flight {
            bus: None,
            id,
            subject: replies.subject().to_owned(),
            inbox: replies.subject().to_owned(),
            payload: Bytes::new(),
            replies,
            copies: 1,
            refusals: 0,
            started,
            deadline: started + deadline + options.deadline_slack,
            next_resend: None,
            interval: Duration::ZERO,
            max_interval: Duration::ZERO,
            cancel: None,
        }
    }

    async fn send(&mut self) -> Result<(), ClientError> {
        let Some(bus) = &self.bus else { return Ok(()) };
        let mut message = Message::new(self.subject.clone(), self.payload.clone()).with_reply(self.inbox.clone());
        if let Some(cancel) = &self.cancel {
            message = message.with_header(CANCEL_HEADER, cancel.token.clone());
        }
        bus.publish(message).await?;
        self.copies += 1;
        Ok(())
    }

    /// The next reply to any copy, re-sending on schedule meanwhile.
    pub async fn next(&mut self) -> Result<Message, ClientError> {
        loop {
            let resend_at = self.next_resend.filter(|at| *at < self.deadline);
            tokio::select! {
                biased;
                message = self.replies.next() => {
                    return message.ok_or_else(|| ClientError::Closed { id: self.id.clone() });
                }
                () = tokio::time::sleep_until(resend_at.unwrap_or(self.deadline)), if resend_at.is_some() => {
                    self.resend().await;
                }
                () = tokio::time::sleep_until(self.deadline) => {
                    return Err(ClientError::DeadlineExceeded { id: self.id.clone(), waited: self.started.elapsed() });
                }
            }
        }
    }

    /// Publishes another copy. A copy the bus refuses is logged and the wait goes on: the copies already out may
    /// still be answered, and the next re-send may go through.
    async fn resend(&mut self) {
        self.interval = (self.interval * 2).min(self.max_interval);
        self.next_resend = Some(Instant::now() + self.interval);
        debug!(id = %self.id, copy = self.copies + 1, "re-sending query");
        if let Err(error) = self.send().await {
            warn!(id = %self.id, %error, "cannot re-send query");
        }
    }

    /// No more copies: the query is being answered.
    pub fn stop_resending(&mut self) {
        self.next_resend = None;
    }

    /// The query is over (answered, failed or past its deadline): dropping the flight now cancels nothing.
    pub fn finish(&mut self) {
        self.cancel = None;
    }

    /// Counts a refusal of one copy; true when every copy sent so far has been refused.
    pub fn refused(&mut self) -> bool {
        self.refusals += 1;
        self.refusals >= self.copies
    }
}

impl Drop for Flight {
    /// A query dropped before its end tells the routers that nobody waits for its answer (fire and forget, on the
    /// runtime the flight is dropped on; outside a runtime there is nothing to send it with).
    fn drop(&mut self) {
        let (Some(Cancel { subject, token }), Some(bus)) = (self.cancel.take(), self.bus.clone()) else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let message = Message::new(subject, Bytes::from(token));
        let id = std::mem::take(&mut self.id);
        runtime.spawn(async move {
            match bus.publish(message).await {
                Ok(()) => debug!(%id, "query abandoned"),
                Err(error) => debug!(%id, %error, "cannot cancel an abandoned query"),
            }
        });
    }
}
