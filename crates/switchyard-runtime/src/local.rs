//! Queries handed to this node's router in process: the HTTP door of a node that also has the router role.
//!
//! Over the bus, a query costs a publish to the routers' queue group and a publish of its answer back. A
//! [`LocalDispatcher`] skips both: it gives the typed request to the router's intake ([`Intake::submit`]), which
//! admits it exactly as it admits a query from the bus (payload limit, gate, route, validation, de-duplication
//! by id, the same query task), and the final answer comes back on a channel. Streamed chunks still arrive on a
//! bus inbox, because provider actors publish them on the bus wherever they run. [`LocalDispatcher::submit`]
//! merges both into one [`Subscription`] that reads like a bus client's reply inbox, so the client library's
//! reply and stream handling (`switchyard-client`) apply unchanged.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;

use switchyard_bus::{Bus, BusError, Message, Subscription, SubscriptionBackend};
use switchyard_protocol::client::QueryRequest;

use crate::actors::router::{Intake, ReplyTo};

/// The subject a non-streaming local query's replies appear to come from (nothing is published on it).
const LOCAL_SUBJECT: &str = "_LOCAL";

/// Hands queries to the router of this node without the bus. Cheap to clone.
#[derive(Clone)]
pub struct LocalDispatcher {
    intake: Arc<Intake>,
    bus: Arc<dyn Bus>,
    default_deadline: Duration,
}

impl LocalDispatcher {
    pub(crate) fn new(intake: Arc<Intake>, bus: Arc<dyn Bus>, default_deadline: Duration) -> Self {
        Self { intake, bus, default_deadline }
    }

    /// The deadline the router gives a query without `deadline_ms`.
    pub fn default_deadline(&self) -> Duration {
        self.default_deadline
    }

    /// Whether the node's bus is connected (stream chunks, provider calls and idempotency announcements use it).
    pub fn is_connected(&self) -> bool {
        self.bus.is_connected()
    }

    /// Submits `request` to `route`; `size` is the size of its encoded form (the gate and the payload limit
    /// count it). The returned subscription yields exactly what a bus client's inbox would: for a streaming
    /// query its chunks and final frame, otherwise the reply; a refusal in either case. Fails only when the
    /// chunk inbox of a streaming query cannot be subscribed.
    pub async fn submit(&self, route: &str, request: QueryRequest, size: usize) -> Result<Subscription, BusError> {
        let (answers, received) = mpsc::unbounded_channel();
        let (subject, chunks) = match request.stream {
            true => {
                let inbox = self.bus.new_inbox();
                let chunks = self.bus.subscribe(&inbox).await?;
                (inbox, Some(chunks))
            }
            false => (LOCAL_SUBJECT.to_owned(), None),
        };
        let reply_to = ReplyTo::Local { subject: subject.clone(), answers };
        self.intake.submit(route, request, size, reply_to).await;
        Ok(Subscription::new(subject.clone(), None, LocalInbox { subject, answers: received, chunks }))
    }
}

/// The replies of one local query: the local channel's answer, and the bus inbox's chunks when it streams.
struct LocalInbox {
    subject: String,
    answers: mpsc::UnboundedReceiver<Bytes>,
    chunks: Option<Subscription>,
}

impl Stream for LocalInbox {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        // Chunks first: the final frame names how many chunks came before it.
        if let Some(chunks) = self.chunks.as_mut() {
            match chunks.poll_next_unpin(cx) {
                Poll::Ready(Some(message)) => return Poll::Ready(Some(message)),
                Poll::Ready(None) => self.chunks = None,
                Poll::Pending => {}
            }
        }
        match self.answers.poll_recv(cx) {
            Poll::Ready(Some(payload)) => Poll::Ready(Some(Message::new(self.subject.clone(), payload))),
            // Every sender is gone: no answer will come. Late chunks of a stream still may, until its reader stops.
            Poll::Ready(None) if self.chunks.is_none() => Poll::Ready(None),
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }
}

#[async_trait::async_trait]
impl SubscriptionBackend for LocalInbox {
    async fn drain(&mut self) -> Result<(), BusError> {
        self.answers.close();
        match self.chunks.as_mut() {
            Some(chunks) => chunks.drain().await,
            None => Ok(()),
        }
    }

    async fn unsubscribe(&mut self) -> Result<(), BusError> {
        self.answers.close();
        match self.chunks.as_mut() {
            Some(chunks) => chunks.unsubscribe().await,
            None => Ok(()),
        }
    }
}
