//! [`Client`]: sends queries to a Switchyard cluster and waits for their answers.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tracing::debug;

use switchyard_bus::{Bus, Subscription};
use switchyard_protocol::client::{QueryOutcome, QueryReply, QueryRequest};
use switchyard_protocol::subjects::{Subjects, is_valid_token};

use crate::flight::{Cancel, Flight, is_copy_refusal};
use crate::stream::QueryStream;
use crate::{ClientError, ClientOptions};

/// A client of one Switchyard cluster (one subject namespace). Cheap to clone.
#[derive(Clone)]
pub struct Client {
    bus: Arc<dyn Bus>,
    subjects: Subjects,
    options: ClientOptions,
}

impl Client {
    pub fn new(bus: Arc<dyn Bus>, subjects: Subjects, options: ClientOptions) -> Self {
        Self { bus, subjects, options }
    }

    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// Asks `route` and waits for the answer: the first reply to any copy of the query.
    ///
    /// The request gets an id (uuid v4) unless it has one, and a deadline (`default_deadline`) unless it has
    /// one; `stream` is cleared. While nothing answers, the same request is re-sent (see the crate docs).
    pub async fn query(&self, route: &str, mut request: QueryRequest) -> Result<QueryReply, ClientError> {
        request.stream = false;
        let mut flight = self.start(route, request).await?;
        let reply = read_reply(&mut flight).await;
        flight.finish();
        reply
    }

    /// Asks `route` for a streamed answer; read it with [`QueryStream::next`] or as a `Stream`.
    ///
    /// The request gets an id and a deadline as in [`Client::query`]; `stream` is set. The query is re-sent
    /// while its stream has produced no frame (see the crate docs).
    pub async fn stream(&self, route: &str, mut request: QueryRequest) -> Result<QueryStream, ClientError> {
        request.stream = true;
        let flight = self.start(route, request).await?;
        Ok(QueryStream::new(flight, self.options.gap_grace))
    }

    /// Completes the request (id, deadline), validates it, encodes it once and sends the first copy.
    async fn start(&self, route: &str, mut request: QueryRequest) -> Result<Flight, ClientError> {
        if !is_valid_token(route) {
            return Err(ClientError::InvalidRoute { route: route.to_owned() });
        }
        if self.options.assign_ids && request.id.is_none() {
            request.id = Some(uuid::Uuid::new_v4().to_string());
        }
        let id = request.id.clone();
        let deadline_ms = *request
            .deadline_ms
            .get_or_insert_with(|| u64::try_from(self.options.default_deadline.as_millis()).unwrap_or(u64::MAX));
        request
            .validate()
            .map_err(|error| ClientError::InvalidRequest { reply: Box::new(error.with_id(id.clone())) })?;
        let payload = serde_json::to_vec(&request).map_err(|e| ClientError::Encode { reason: e.to_string() })?;
        let subject = self.subjects.query(route);
        let deadline = Duration::from_millis(deadline_ms);
        let mut options = self.options.clone();
        if id.is_none() {
            // Without an id a copy would be a second query: sent once.
            options.resend_after = Duration::ZERO;
        }
        // Only a query without an id is cancelled when dropped (see the flight's docs).
        let cancel = id.is_none().then(|| Cancel {
            subject: self.subjects.query_cancel(),
            token: uuid::Uuid::new_v4().simple().to_string(),
        });
        let id = id.unwrap_or_else(|| NO_ID.to_owned());
        Flight::start(self.bus.clone(), subject, id, Bytes::from(payload), deadline, &options, cancel).await
    }
}

/// How errors name a query sent without an idempotency key.
pub const NO_ID: &str = "(no id)";

/// Reads the frames of a streaming query that reached a node by other means than a publish (handed over in
/// process, as `switchyard_runtime::local::LocalDispatcher` does), from `replies`, which yields what a reply inbox
/// would, and assembles them as [`Client::stream`] does. Nothing is ever re-sent; `deadline` is the query's, and
/// the wait ends `options.deadline_slack` after it.
pub fn read_stream_on(
    id: Option<String>,
    replies: Subscription,
    deadline: Duration,
    options: &ClientOptions,
) -> QueryStream {
    let flight = Flight::attached(id.unwrap_or_else(|| NO_ID.to_owned()), replies, deadline, options);
    QueryStream::new(flight, options.gap_grace)
}

/// The first answer to any copy of the query in flight.
async fn read_reply(flight: &mut Flight) -> Result<QueryReply, ClientError> {
    {
        loop {
            let message = flight.next().await?;
            if message.is_no_responders() {
                if flight.refused() {
                    return Err(ClientError::NoResponders { subject: flight.subject.clone() });
                }
                continue;
            }
            let outcome = serde_json::from_slice::<QueryOutcome>(&message.payload)
                .map_err(|e| ClientError::Decode { id: flight.id.clone(), reason: e.to_string() })?;
            match outcome {
                QueryOutcome::Reply(reply) => return Ok(reply),
                QueryOutcome::Error(error) if is_copy_refusal(&error) && !flight.refused() => {
                    debug!(id = %flight.id, code = %error.error.code, "a copy was refused, waiting for the others");
                }
                QueryOutcome::Error(error) => return Err(ClientError::Server { reply: Box::new(error) }),
            }
        }
    }
}
