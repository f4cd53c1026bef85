//! The one error type of the state crate.
//!
//! Callers (the `StateSync` actor, provider actors rehydrating after a restart) must tell "Redis is slow or gone,
//! keep serving on local breakers and report degraded" apart from "this call was wrong and will never work", so
//! the variants say what happened, never which client library failed. The Redis client's own error is kept as the
//! `source`, for logs.

use std::time::Duration;

/// A boxed underlying error, kept as [`std::error::Error::source`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong with the shared state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The store did not answer within the per-call bound (Redis paused, overloaded, or reconnecting). The
    /// operation may or may not have been applied.
    #[error("shared state call {operation} timed out after {timeout:?}")]
    Timeout {
        /// The store operation, such as `report` or `acquire_probe`.
        operation: &'static str,
        /// The bound that expired.
        timeout: Duration,
    },

    /// The store cannot be reached right now (connection refused, dropped, or being re-established).
    #[error("shared state unavailable during {operation}")]
    Unavailable {
        /// The store operation.
        operation: &'static str,
        /// The client's error.
        #[source]
        source: BoxError,
    },

    /// The store answered with an error that retrying will not fix (a script error, missing ACL permission,
    /// out of memory, a read-only replica).
    #[error("shared state rejected {operation}: {detail}")]
    Backend {
        /// The store operation.
        operation: &'static str,
        /// What the server said.
        detail: String,
    },

    /// The store answered something this crate cannot read (a version mismatch between nodes, say).
    #[error("unexpected reply to {operation}: {detail}")]
    Protocol {
        /// The store operation.
        operation: &'static str,
        /// What was wrong with the reply.
        detail: String,
    },

    /// Connecting failed. `url` has any password redacted.
    #[error("failed to connect to {url}")]
    Connect {
        /// The URL tried, with the password replaced by `***`.
        url: String,
        /// The client's error.
        #[source]
        source: BoxError,
    },

    /// Redis refused the credentials: a wrong ACL user or password, or none where it wants one. Retrying will
    /// not help until an operator fixes them; meanwhile a node serves with its local breakers, so it is transient
    /// in the sense of [`StateError::is_transient`]. `url` has the password redacted, and nothing else here holds it.
    #[error("{url} refused the credentials during {operation}")]
    Unauthorized {
        /// The store operation (`connect` when connecting).
        operation: &'static str,
        /// The URL tried, with the password replaced by `***`.
        url: String,
    },

    /// A provider, node or cascade name cannot be used as (part of) a key.
    #[error("invalid {kind} name {name:?}: {reason}")]
    InvalidName {
        /// `provider`, `node` or `cascade`.
        kind: &'static str,
        /// The rejected name.
        name: String,
        /// Why it is rejected.
        reason: &'static str,
    },

    /// A policy or option is unusable; `field` names it.
    #[error("invalid state configuration: {field}: {reason}")]
    Config {
        /// The offending field, such as `failure_rate_threshold`.
        field: &'static str,
        /// Why it is rejected.
        reason: String,
    },
}

impl StateError {
    /// Whether the node should treat this as "shared state degraded" and carry on with its local breakers:
    /// timeouts, outages and connection failures are; bad names, bad configuration and unreadable replies are
    /// bugs to fix, not weather to wait out.
    pub fn is_transient(&self) -> bool {
        match self {
            StateError::Timeout { .. }
            | StateError::Unavailable { .. }
            | StateError::Connect { .. }
            | StateError::Unauthorized { .. } => true,
            StateError::Backend { .. }
            | StateError::Protocol { .. }
            | StateError::InvalidName { .. }
            | StateError::Config { .. } => false,
        }
    }

    pub(crate) fn config(field: &'static str, reason: impl Into<String>) -> Self {
        StateError::Config { field, reason: reason.into() }
    }
}
