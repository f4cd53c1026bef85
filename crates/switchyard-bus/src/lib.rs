//! The message bus of Switchyard, behind one narrow trait we own.
//!
//! Nodes talk over NATS in production and over an in-process bus in the embedded demo and in
//! unit tests. Both sit behind [`Bus`]:
//! - [`NatsBus`] wraps an `async-nats` client (auth, TLS, reconnects, the muxed request inbox);
//! - [`MemoryBus`] is a NATS look-alike inside one process: subject wildcards, queue groups,
//!   request/reply through inboxes, no-responders, payload limits, FIFO delivery, drain.
//!
//! One conformance suite (`conformance` and `bus_conformance_suite!`, behind the `testkit`
//! feature) runs against both, so a component tested on [`MemoryBus`] behaves the same on NATS.
//! Subjects follow NATS syntax; see [`subject`].
//!
//! Delivery is at-most-once, as in core NATS: a message published while nobody is subscribed is
//! lost, and a slow subscriber on NATS can be cut off by the server.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};

#[cfg(any(test, feature = "testkit"))]
pub mod conformance;
mod error;
mod memory;
mod message;
mod nats;
mod replies;
pub mod subject;

pub use error::{BoxError, BusError};
pub use memory::{DEFAULT_MAX_PAYLOAD, MemoryBus};
pub use message::{Message, STATUS_HEADER, STATUS_NO_RESPONDERS};
pub use nats::{
    ConnectedServer, DEFAULT_CONNECTION_TIMEOUT, DEFAULT_NATS_URL, DEFAULT_SYNC_TIMEOUT, NatsAuth, NatsBus, NatsOptions,
};
pub use replies::{gather, request_many};

/// What a Switchyard node needs from a message bus: core NATS semantics, nothing more.
///
/// Implementations validate subjects ([`subject`]), headers and sizes the same way, so an
/// operation that fails on one fails on the other with the same [`BusError`].
#[async_trait::async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Publishes `message` (with its reply subject and headers, if any) to everyone subscribed
    /// to a matching subject. Returns once the message is handed to the bus; it may still be
    /// buffered (see [`Bus::flush`]). Publishing to a subject nobody listens on is not an error.
    async fn publish(&self, message: Message) -> Result<(), BusError>;

    /// Publishes `message` with a fresh inbox as its reply subject (any `reply` it carries is
    /// replaced) and returns the first reply.
    ///
    /// Fails with [`BusError::NoResponders`] when nobody is subscribed to the subject, and with
    /// [`BusError::Timeout`] when someone is but no reply arrives within `timeout`.
    async fn request(&self, message: Message, timeout: Duration) -> Result<Message, BusError>;

    /// Receives every message published to a subject matching `subject` (wildcards allowed).
    /// Once this returns, the subscription is active on the bus: anything published
    /// afterwards, by any client, reaches it.
    async fn subscribe(&self, subject: &str) -> Result<Subscription, BusError>;

    /// Joins queue group `queue` on `subject`: each message goes to exactly one member of each
    /// queue group (grouped by queue name), in addition to every plain subscriber.
    async fn queue_subscribe(&self, subject: &str, queue: &str) -> Result<Subscription, BusError>;

    /// A new subject, unique on this bus, to receive replies on.
    fn new_inbox(&self) -> String;

    /// Waits until the server has processed everything this client sent before (publishes,
    /// subscriptions) and this client has received what the server routed to it before.
    /// A no-op in memory, where delivery is synchronous.
    async fn flush(&self) -> Result<(), BusError>;

    /// Whether the connection to the bus is up now (NATS: connected to a server; it reconnects by itself).
    fn is_connected(&self) -> bool {
        true
    }

    /// The largest message the bus accepts, payload plus encoded headers
    /// (see [`Message::wire_size`]). NATS: the server's `max_payload`; memory: configurable.
    fn max_payload(&self) -> usize;
}

/// A shared bus is a bus, so `Arc<dyn Bus>` can be handed to code generic over `B: Bus`.
#[async_trait::async_trait]
impl<B: Bus + ?Sized> Bus for Arc<B> {
    async fn publish(&self, message: Message) -> Result<(), BusError> {
        (**self).publish(message).await
    }

    async fn request(&self, message: Message, timeout: Duration) -> Result<Message, BusError> {
        (**self).request(message, timeout).await
    }

    async fn subscribe(&self, subject: &str) -> Result<Subscription, BusError> {
        (**self).subscribe(subject).await
    }

    async fn queue_subscribe(&self, subject: &str, queue: &str) -> Result<Subscription, BusError> {
        (**self).queue_subscribe(subject, queue).await
    }

    fn new_inbox(&self) -> String {
        (**self).new_inbox()
    }

    async fn flush(&self) -> Result<(), BusError> {
        (**self).flush().await
    }

    fn max_payload(&self) -> usize {
        (**self).max_payload()
    }
}

/// The implementation side of a [`Subscription`]: a stream of messages that can stop early.
///
/// Bus implementations provide one; users only see [`Subscription`].
#[async_trait::async_trait]
pub trait SubscriptionBackend: Stream<Item = Message> + Send + Unpin + 'static {
    /// Stops new deliveries; the stream yields what was already delivered, then ends.
    async fn drain(&mut self) -> Result<(), BusError>;

    /// Stops deliveries at once; the caller discards anything buffered.
    async fn unsubscribe(&mut self) -> Result<(), BusError>;
}

/// Messages received on a subscription, in the order they were published (per publisher).
///
/// A `Subscription` is a [`Stream`] of [`Message`]s; [`Subscription::next`] is a shortcut.
/// Dropping it unsubscribes.
pub struct Subscription {
    subject: String,
    queue: Option<String>,
    backend: Box<dyn SubscriptionBackend>,
    unsubscribed: bool,
}

impl Subscription {
    /// Wraps a backend; used by [`Bus`] implementations.
    pub fn new(subject: impl Into<String>, queue: Option<String>, backend: impl SubscriptionBackend) -> Self {
        Subscription { subject: subject.into(), queue, backend: Box::new(backend), unsubscribed: false }
    }

    /// The subscribed subject pattern.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The queue group, for a queue subscription.
    pub fn queue(&self) -> Option<&str> {
        self.queue.as_deref()
    }

    /// The next message, or `None` once the subscription has ended (drained, unsubscribed, or
    /// the connection closed for good).
    pub async fn next(&mut self) -> Option<Message> {
        StreamExt::next(self).await
    }

    /// Stops receiving new messages. Messages already delivered to this subscription are still
    /// yielded, then the stream ends. On NATS, messages the server sent before it processed the
    /// unsubscribe count as delivered.
    pub async fn drain(&mut self) -> Result<(), BusError> {
        if self.unsubscribed {
            return Ok(());
        }
        self.backend.drain().await
    }

    /// Stops receiving at once and discards anything not yet yielded; the stream ends.
    pub async fn unsubscribe(&mut self) -> Result<(), BusError> {
        if self.unsubscribed {
            return Ok(());
        }
        self.unsubscribed = true;
        self.backend.unsubscribe().await
    }
}

impl Stream for Subscription {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        if self.unsubscribed {
            return Poll::Ready(None);
        }
        self.backend.poll_next_unpin(cx)
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("subject", &self.subject)
            .field("queue", &self.queue)
            .field("unsubscribed", &self.unsubscribed)
            .finish_non_exhaustive()
    }
}
