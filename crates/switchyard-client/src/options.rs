//! How patient a [`crate::Client`] is: when it re-sends, how long it waits, how long it waits for late chunks.

use std::time::Duration;

/// Settings of a [`crate::Client`]. The defaults suit a cluster whose nodes hold an id's claim as a lease of
/// about 2 s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// Re-send the query (same id, same bytes) when no reply came within this interval; `Duration::ZERO`
    /// never re-sends. For a stream, a reply is any frame, so this should exceed the time to the first token;
    /// for a non-streaming query it may be much shorter than the answer takes, since a re-sent copy never
    /// causes a second upstream call (the nodes de-duplicate by id).
    pub resend_after: Duration,
    /// The interval between copies doubles from `resend_after` up to this.
    pub max_resend_interval: Duration,
    /// The deadline given to a query that has none (`deadline_ms`), so client and node stop at the same time.
    pub default_deadline: Duration,
    /// How long past the query's deadline the client still waits, for the node's own `deadline_exceeded`.
    pub deadline_slack: Duration,
    /// After a stream's final frame, how long to wait for chunks of the winning attempt that have not arrived
    /// (chunks and the final frame may come from different nodes) before reporting a gap.
    pub gap_grace: Duration,
    /// Give a request without an `id` a fresh uuid v4, which makes re-sending it safe. When false, a request
    /// without an id is sent once and never re-sent: the nodes spend nothing on de-duplicating it (no claim in
    /// the shared store), at the price of no recovery when the node answering it dies. Requests with an id are
    /// re-sent either way.
    pub assign_ids: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            resend_after: Duration::from_secs(2),
            max_resend_interval: Duration::from_secs(8),
            default_deadline: Duration::from_secs(30),
            deadline_slack: Duration::from_secs(1),
            gap_grace: Duration::from_millis(250),
            assign_ids: true,
        }
    }
}
