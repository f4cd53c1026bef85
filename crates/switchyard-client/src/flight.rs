//! One query in flight: its reply inbox, its copies, its re-send schedule and its deadline.
//!
//! Every copy of a query is the same bytes (same id) published with the same reply subject, so any reply to any
//! copy lands in one subscription and the first answer wins. Copies are re-sent while nothing answers, at
//! intervals doubling from `resend_after`, until the deadline. Some replies answer only the copy that received
//! them, not the query: a no-responders status, `overloaded`, or a node saying the id is being streamed
//! elsewhere. Such a refusal ends the query only once every copy sent so far has been refused.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tracing::{debug, warn};

use switchyard_bus::{Bus, Message, Subscription};
use switchyard_protocol::client::{ErrorReply, ErrorType};

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
}

impl Flight {
    /// Subscribes to a fresh inbox, then publishes the first copy.
    pub async fn start(
        bus: Arc<dyn Bus>,
        subject: String,
        id: String,
        payload: Bytes,
        deadline: Duration,
        options: &ClientOptions,
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
        };
        flight.send().await?;
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
        }
    }

    async fn send(&mut self) -> Result<(), ClientError> {
        let Some(bus) = &self.bus else { return Ok(()) };
        let message = Message::new(self.subject.clone(), self.payload.clone()).with_reply(self.inbox.clone());
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

    /// Counts a refusal of one copy; true when every copy sent so far has been refused.
    pub fn refused(&mut self) -> bool {
        self.refusals += 1;
        self.refusals >= self.copies
    }
}
