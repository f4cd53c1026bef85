//! The one error type of the client crate.
//!
//! A caller matches on what happened to its query: the cluster answered with a typed error (the server's
//! [`ErrorReply`], unchanged), nobody serves the namespace, no answer came before the deadline, a stream lost
//! chunks of the answer that won, or the bus failed. Every variant that belongs to a query names its `id`, so a
//! caller can retry with the same id and still be answered once.

use std::time::Duration;

use switchyard_bus::BusError;
use switchyard_protocol::client::{ErrorReply, QueryReply};

/// Everything that can go wrong with a query sent through [`crate::Client`].
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The cluster answered with a typed error (`invalid_request`, `no_provider_available`, `overloaded`, ...).
    #[error("{} ({}): {}", kind_name(.reply), .reply.error.code, .reply.error.message)]
    Server {
        /// The error as the node sent it, with its `trace` when it has one.
        reply: Box<ErrorReply>,
    },

    /// The request was refused before it was sent, with the error a node would have answered.
    #[error("invalid request ({}): {}", .reply.error.code, .reply.error.message)]
    InvalidRequest {
        /// The typed error, naming the offending field.
        reply: Box<ErrorReply>,
    },

    /// The route is not a valid subject token (1 to 64 characters of `[A-Za-z0-9_-]`).
    #[error("invalid route {route:?}")]
    InvalidRoute {
        /// The rejected route.
        route: String,
    },

    /// Nobody is subscribed to the query subject: no node serves this namespace.
    #[error("no node serves {subject}")]
    NoResponders {
        /// The query subject.
        subject: String,
    },

    /// Neither the query nor any of its re-sent copies was answered before the deadline (plus slack).
    #[error("query {id} got no answer within {waited:?}")]
    DeadlineExceeded {
        /// The query's idempotency key.
        id: String,
        /// How long the client waited.
        waited: Duration,
    },

    /// The final frame of a stream named an attempt of which fewer chunks arrived than it published.
    ///
    /// `reply.content` is the full answer as the node assembled it, so a consumer that printed a partial text
    /// can recover by printing it instead.
    #[error("stream of query {id} lost chunks of attempt {attempt}: {got} of {expected} arrived")]
    Gap {
        /// The query's idempotency key.
        id: String,
        /// The attempt that answered.
        attempt: u32,
        /// How many chunks that attempt published.
        expected: u64,
        /// How many of them arrived.
        got: u64,
        /// The final answer, whose `content` is authoritative.
        reply: Box<QueryReply>,
    },

    /// A reply could not be decoded as a Switchyard answer.
    #[error("cannot decode the reply to query {id}: {reason}")]
    Decode {
        /// The query's idempotency key.
        id: String,
        /// What serde said.
        reason: String,
    },

    /// The request could not be encoded.
    #[error("cannot encode the query: {reason}")]
    Encode {
        /// What serde said.
        reason: String,
    },

    /// The reply subscription ended before an answer (the bus connection closed).
    #[error("the reply subscription of query {id} closed before an answer")]
    Closed {
        /// The query's idempotency key.
        id: String,
    },

    /// The bus refused an operation (subscribe, publish).
    #[error(transparent)]
    Bus(#[from] BusError),
}

impl ClientError {
    /// The server's typed error, when the cluster answered with one.
    pub fn server_reply(&self) -> Option<&ErrorReply> {
        match self {
            ClientError::Server { reply } | ClientError::InvalidRequest { reply } => Some(reply),
            _ => None,
        }
    }
}

fn kind_name(reply: &ErrorReply) -> String {
    serde_json::to_value(reply.error.kind)
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{:?}", reply.error.kind))
}
