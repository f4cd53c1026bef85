//! The Rust client of Switchyard: send a query over the bus, get one answer, even when nodes die.
//!
//! Core NATS delivers at most once, so a query published to a node that dies (or to a connection that drops)
//! can be lost with nobody noticing. [`Client`] makes the query's fate the client's business, without ever
//! paying for a second upstream call:
//!
//! - **Ids.** Every query carries an idempotency key: the caller's `id`, or a fresh uuid v4.
//! - **Re-sending.** When no reply came within [`ClientOptions::resend_after`], the client publishes the same
//!   bytes again (same id), at intervals doubling up to [`ClientOptions::max_resend_interval`], until the
//!   deadline (`deadline_ms`, or [`ClientOptions::default_deadline`], plus [`ClientOptions::deadline_slack`]).
//!   This is safe because nodes de-duplicate by id: a copy that reaches the node already answering joins that
//!   answer, one that reaches another node waits for the owner's answer in the shared idempotency store, and a
//!   copy after the answer gets the kept answer; the id is bound to the request, and the copies are identical.
//!   It is useful because the owner's claim on the id is a lease: when the owner dies with the query in flight,
//!   a copy reaching a live node (the queue group) takes the query over after about one lease. So re-sending a
//!   non-streaming query long before the LLM could have answered costs a little bus traffic, never an upstream
//!   call.
//! - **One inbox.** All copies carry the same reply subject; the first answer from any copy answers the query
//!   and everything after it is ignored. A reply that refuses only its copy (no responders, `overloaded`, a node
//!   saying the id streams elsewhere: [`COPY_REFUSAL_CODES`]) fails the query only when every copy sent so far
//!   was refused; otherwise the client keeps waiting for the others.
//! - **Giving up.** A query without an id (`assign_ids` off and none given) that is dropped before its answer, the
//!   future of [`Client::query`] or a [`QueryStream`] before its end, tells the routers so: it publishes the
//!   random token its query carried (header `Switchyard-Cancel`) on `<namespace>.v1.cancel.query`, and the router
//!   running it stops it and cancels its provider calls, so nobody pays for an answer nobody reads. A query with
//!   an id runs on, so that a retry under the same id finds its answer.
//!
//! Streams ([`Client::stream`], [`StreamEvent`]) follow these rules:
//!
//! - A streaming query is re-sent only while its stream has produced no frame; after the first frame, the
//!   client waits for that stream. (A copy re-sent to a node while the original still streams may get a refusal
//!   such as `stream_in_progress_elsewhere`, or the final frame alone when the answer is done.)
//! - Chunks are buffered per attempt and emitted in `seq` order: out-of-order chunks are put back in order.
//!   Deltas are emitted live for one attempt only, the first one that sent a chunk; chunks of other attempts
//!   (a hedge racing it) are kept aside, never mixed in.
//! - The final frame names the attempt that answered and how many chunks it published. If that is the followed
//!   attempt, the stream emits its remaining chunks and `Done`. If it is another attempt, the stream emits
//!   [`StreamEvent::Restart`] (discard what was shown), then the winner's chunks from the start, then `Done`.
//!   So the deltas after the last restart are exactly [`StreamDone::text`], the winner's chunks in order. An
//!   answer that came without chunks (attempt 0, e.g. to a de-duplicated copy) is emitted as one delta of its
//!   content, continuing what was shown when that is a prefix of it.
//! - If chunks of the winner are missing at the final frame, the client waits [`ClientOptions::gap_grace`] for
//!   them (chunks and the final frame may come from different nodes), then ends with [`ClientError::Gap`], which
//!   carries the final reply: its `content` is the full text, for recovery.
//! - An error frame names the attempt that failed and how many chunks it published. When that attempt is the one
//!   shown (or none is yet) and some of its chunks have not arrived, the client waits the same grace for them
//!   (in process the error comes on a channel while chunks come over the bus, so it can overtake them): the
//!   text that went out is shown, then the error.
//! - The first final frame ends the stream; a later one (from another copy) is ignored.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod assemble;
mod client;
mod error;
mod flight;
mod options;
mod stream;
#[cfg(test)]
mod tests;

pub use assemble::{StreamDone, StreamEvent};
pub use client::{Client, NO_ID, read_stream_on};
pub use error::ClientError;
pub use flight::{COPY_REFUSAL_CODES, is_copy_refusal};
pub use options::ClientOptions;
pub use stream::QueryStream;
