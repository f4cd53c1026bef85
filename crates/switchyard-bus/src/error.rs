//! The one error type of the bus crate.
//!
//! Callers match on what happened on the bus (nobody listening, a timeout, a payload too large,
//! the connection gone), never on the underlying client's error types, so a component works the
//! same over [`crate::NatsBus`] and [`crate::MemoryBus`]. Client-specific detail is kept as the
//! error's `source` for logs.

use std::time::Duration;

/// A boxed underlying error, kept as [`std::error::Error::source`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong on the bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The bus configuration is unusable (for example a client certificate without its key).
    #[error("invalid bus configuration: {field}: {reason}")]
    Config {
        /// The offending option.
        field: &'static str,
        /// Why it is rejected.
        reason: String,
    },

    /// Connecting to the server failed. `servers` has credentials redacted.
    #[error("failed to connect to {servers}")]
    Connect {
        /// The servers tried, comma-separated, with any password or token redacted.
        servers: String,
        /// The client's error.
        #[source]
        source: BoxError,
    },

    /// The server refused this client's credentials: a wrong token, password, nkey or creds file, an unknown
    /// user, or none where the server wants some. Retrying with the same credentials cannot succeed. The error
    /// holds no secret: `servers` is redacted and the source is the server's own refusal.
    #[error("{servers} refused the credentials")]
    Unauthorized {
        /// The servers tried, with any password or token redacted.
        servers: String,
        /// The client's error.
        #[source]
        source: BoxError,
    },

    /// The TLS handshake failed: the server's certificate is not trusted (a missing `tls_ca_file`?), the server
    /// wants a client certificate it did not get or does not trust, or one side does not speak TLS.
    #[error("TLS with {servers} failed")]
    Tls {
        /// The servers tried, with any password or token redacted.
        servers: String,
        /// The client's error.
        #[source]
        source: BoxError,
    },

    /// The subject (or reply subject, or subscription pattern) is not valid NATS syntax.
    #[error("invalid subject {subject:?}")]
    InvalidSubject {
        /// The rejected subject.
        subject: String,
    },

    /// The queue group name is empty or contains whitespace.
    #[error("invalid queue group {queue:?}")]
    InvalidQueue {
        /// The rejected queue group name.
        queue: String,
    },

    /// A header name is empty or has a character NATS does not allow (non-printable ASCII or
    /// `:`), or its value contains a line break.
    #[error("invalid header {name:?}")]
    InvalidHeader {
        /// The name of the rejected header.
        name: String,
    },

    /// A request found nobody subscribed to its subject.
    #[error("no responders on {subject}")]
    NoResponders {
        /// The request's subject.
        subject: String,
    },

    /// A request got no reply in time although someone was subscribed.
    #[error("request on {subject} timed out after {timeout:?}")]
    Timeout {
        /// The request's subject.
        subject: String,
        /// The timeout that expired.
        timeout: Duration,
    },

    /// The message (payload plus encoded headers) is larger than the bus accepts.
    #[error("message of {size} bytes exceeds the bus limit of {max} bytes")]
    PayloadTooLarge {
        /// The message's size on the wire: payload plus encoded headers.
        size: usize,
        /// The bus limit, see [`crate::Bus::max_payload`].
        max: usize,
    },

    /// A request failed for a reason other than no responders or a timeout.
    #[error("request on {subject} failed")]
    Request {
        /// The request's subject.
        subject: String,
        /// The client's error.
        #[source]
        source: BoxError,
    },

    /// Subscribing failed.
    #[error("failed to subscribe to {subject}")]
    Subscribe {
        /// The subscription pattern.
        subject: String,
        /// The client's error.
        #[source]
        source: BoxError,
    },

    /// Flushing buffered messages to the server failed.
    #[error("failed to flush the bus")]
    Flush {
        /// The client's error.
        #[source]
        source: BoxError,
    },

    /// The connection is closed for good (drained, or the client shut down).
    #[error("the bus connection is closed")]
    Closed,
}

impl BusError {
    /// Whether retrying the same operation later may succeed: no responders, timeouts and
    /// connection-level failures are transient; bad subjects, headers, sizes and configuration
    /// are not.
    pub fn is_transient(&self) -> bool {
        match self {
            BusError::NoResponders { .. }
            | BusError::Timeout { .. }
            | BusError::Connect { .. }
            | BusError::Request { .. }
            | BusError::Subscribe { .. }
            | BusError::Flush { .. } => true,
            BusError::Config { .. }
            | BusError::Unauthorized { .. }
            | BusError::Tls { .. }
            | BusError::InvalidSubject { .. }
            | BusError::InvalidQueue { .. }
            | BusError::InvalidHeader { .. }
            | BusError::PayloadTooLarge { .. }
            | BusError::Closed => false,
        }
    }
}
