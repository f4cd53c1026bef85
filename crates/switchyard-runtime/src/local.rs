//! Queries handed to this node's router in process: the HTTP door of a node that also has the router role.
//!
//! Over the bus, a query costs a publish to the routers' queue group and a publish of its answer back. A
//! [`LocalDispatcher`] skips both: it gives the typed request to the router's intake ([`Intake::submit`]), which
//! admits it exactly as it admits a query from the bus (payload limit, gate, route, validation, de-duplication
//! by id, the same query task), and the final answer comes back on a channel.
//!
//! - A plain query ([`LocalDispatcher::ask`]) gets its answer typed: the reply or the refusal the router would
//!   have encoded for a bus client, without the encoding and the parsing. Without an id it runs in the caller's
//!   task ([`Intake::run_here`]): admitted the same way, answered by the code of the router's query tasks, and
//!   cancelled when the caller drops it.
//! - A streaming one ([`LocalDispatcher::submit`]) still has its chunks arrive on a bus inbox, because provider
//!   actors publish them on the bus wherever they run. The final frame comes on the channel as the bytes a bus
//!   client would receive, and the two are merged into one [`Subscription`] that reads like a bus client's reply
//!   inbox, so the client library's stream handling (`switchyard-client`) applies unchanged.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;

use switchyard_bus::{Bus, BusError, Message, Subscription, SubscriptionBackend};
use switchyard_protocol::client::QueryRequest;

use crate::actors::router::{Intake, ReplyTo, RunHere};
use crate::query::Answer;

/// Hands queries to the router of this node without the bus. Cheap to clone.
#[derive(Clone)]
pub struct LocalDispatcher {
    intake: Arc<Intake>,
    bus: Arc<dyn Bus>,
    default_deadline: Duration,
}

/// How a plain query handed over in process ended.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // made once per query and moved once, to the caller
pub enum Asked {
    /// The router's answer: a reply, or the refusal or failure a bus client would have received.
    Answered(Answer),
    /// No answer within the wait (the query's deadline plus the caller's slack).
    TimedOut,
    /// The router dropped the query without answering (it stopped).
    Dropped,
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

    /// Asks `route` for a plain (not streamed) answer to `request` and waits for it, at most `wait`; `size` is
    /// the size of the query's encoded form (the gate and the payload limit count it).
    #[allow(clippy::result_large_err)] // an answer is a reply either way, moved once to the caller
    pub async fn ask(&self, route: &str, mut request: QueryRequest, size: usize, wait: Duration) -> Asked {
        request.stream = false;
        // Without an id, nothing else asks for the answer: the query runs right here, in the caller's task.
        let request = match tokio::time::timeout(wait, self.intake.run_here(route, request, size)).await {
            Ok(RunHere::Answered(answer)) => return Asked::Answered(answer),
            Ok(RunHere::Dropped) => return Asked::Dropped,
            Ok(RunHere::Elsewhere(request)) => *request,
            Err(_) => return Asked::TimedOut,
        };
        let (answers, mut received) = mpsc::unbounded_channel();
        self.intake.submit(route, request, size, ReplyTo::Typed(answers)).await;
        match tokio::time::timeout(wait, received.recv()).await {
            // A query with an id (those without run above): the router keeps its answer for the copies of the id,
            // so this one is cloned.
            Ok(Some(answer)) => Asked::Answered(Arc::try_unwrap(answer).unwrap_or_else(|shared| (*shared).clone())),
            Ok(None) => Asked::Dropped,
            Err(_) => Asked::TimedOut,
        }
    }

    /// Submits a streaming `request` to `route`; `size` is the size of its encoded form. The returned
    /// subscription yields exactly what a bus client's inbox would: the query's chunks and final frame, or a
    /// refusal. Fails only when the chunk inbox cannot be subscribed.
    pub async fn submit(&self, route: &str, mut request: QueryRequest, size: usize) -> Result<Subscription, BusError> {
        request.stream = true;
        let (answers, received) = mpsc::unbounded_channel();
        let subject = self.bus.new_inbox();
        let chunks = self.bus.subscribe(&subject).await?;
        let reply_to = ReplyTo::Local { subject: subject.clone(), answers };
        self.intake.submit(route, request, size, reply_to).await;
        Ok(Subscription::new(subject.clone(), None, LocalInbox { subject, answers: received, chunks: Some(chunks) }))
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
