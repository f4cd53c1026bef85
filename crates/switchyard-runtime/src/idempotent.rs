//! Answering a query that carries an idempotency key once, across the cluster.
//!
//! The router de-duplicates copies of a key inside one node ([`switchyard_core::DedupTable`]); this module does
//! it between nodes, through the shared [`IdempotencyStore`]:
//!
//! - **One store round trip before the upstream call**: [`answer_once`] claims the key, bound to the request's
//!   fingerprint. The claim answers at once with the stored answer, a conflict (same id, another request:
//!   `idempotency_conflict`), the owner, or ownership.
//! - **The owner answers the client first**, then announces the answer on the key's NATS subject
//!   (`Subjects::idempotency_answer`) and stores it ([`publish_answer`]), in the query's task, so neither delays
//!   the reply.
//! - **Waiters listen, and poll slowly as a backstop**: a node that finds the key taken subscribes to its
//!   subject, checks the store once more (the owner may have answered before the subscription), then waits for
//!   the announcement, checking the store every `poll` interval. That check also looks at the owner's lease: an
//!   owner whose lease expired is dead, and the waiter takes the query over and answers it itself.
//! - **Leases are per node, not per query**: [`renew_leases`] runs once per node and renews one lease covering
//!   every key the node owns, one store command per `lease / 3` however many queries are in flight, and none
//!   while the node holds no key (queries without an id cost the store nothing). The first claim after such a
//!   quiet spell sends the renewal in the same round trip, just ahead of the claim ([`Idempotency::with_lease`]).
//!
//! When the store cannot be reached the node answers by itself: a duplicate upstream call is then possible, a
//! lost query is not. A waiter that times out gets `deadline_exceeded`; an owner that stalls without dying (its
//! lease renewed, its query stuck) is waited for until the deadline.

// An answer is a reply either way: both sides are large and both are moved exactly once, to the client.
#![allow(clippy::result_large_err)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{debug, warn};

use switchyard_bus::Message;
use switchyard_protocol::client::{ErrorReply, ErrorType, QueryOutcome, StreamFrame};
use switchyard_protocol::{Codec, Json};
use switchyard_state::{Claim, IdempotencyStore};

use crate::query::{Answer, QueryContext, StreamEnd, render_within};

/// A node's side of cluster-wide idempotency.
#[derive(Clone)]
pub struct Idempotency {
    pub store: Arc<dyn IdempotencyStore>,
    /// This node instance's name in claims: the node name and a random suffix, so a node restarted under the
    /// same name never inherits (and never waits for) the claims of its previous life.
    pub instance: String,
    /// How long an owner's lease lasts without renewal; a dead owner's queries are taken over after it.
    pub lease: Duration,
    /// How long answers (and the binding of a key to its fingerprint) are kept, at least the query's deadline.
    pub retention: Duration,
    /// How often a waiter checks the store when no announcement came.
    pub poll: Duration,
    /// The queries holding the lease, and when it was last renewed.
    pub holders: Arc<LeaseHolders>,
}

/// Who needs this node's lease, and how fresh it is.
#[derive(Debug, Default)]
pub struct LeaseHolders {
    count: AtomicUsize,
    renewed: Mutex<Option<Instant>>,
}

impl LeaseHolders {
    fn renewed_at(&self) -> Option<Instant> {
        *self.renewed.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn mark_renewed(&self, at: Instant) {
        let mut renewed = self.renewed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *renewed = Some(renewed.map_or(at, |before| before.max(at)));
    }
}

/// A query's hold on its node's lease: renewals run while any hold is alive.
pub struct LeaseHold(Arc<LeaseHolders>);

impl Drop for LeaseHold {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Idempotency {
    fn retention_for(&self, deadline: Instant) -> Duration {
        deadline.saturating_duration_since(Instant::now()).max(self.retention)
    }

    /// Holds the node's lease for a query with a key, from before its claim until its answer is stored.
    pub fn hold(&self) -> LeaseHold {
        self.holders.count.fetch_add(1, Ordering::Relaxed);
        LeaseHold(self.holders.clone())
    }

    /// The renewal period: a third of the lease, so two renewals may fail before it lapses.
    fn renew_every(&self) -> Duration {
        (self.lease / 3).max(Duration::from_millis(1))
    }

    /// Runs `claim` (a claim or a take-over) with the lease live behind it. While renewals run (a hold was alive
    /// at the last tick, within a renewal period) the lease has at least two thirds of its time left and the next
    /// tick renews it. Otherwise the renewal is sent together with the claim, first: on the store's one
    /// connection they travel in one round trip, in order, so no waiter sees the claim without the lease.
    async fn with_lease<T>(&self, claim: impl std::future::Future<Output = T>) -> T {
        let fresh = self.holders.renewed_at().is_some_and(|at| at.elapsed() < self.renew_every());
        if fresh {
            return claim.await;
        }
        let started = Instant::now();
        let (renewed, claimed) = tokio::join!(self.store.renew(&self.instance, self.lease), claim);
        match renewed {
            Ok(()) => self.holders.mark_renewed(started),
            Err(error) => debug!(%error, "cannot renew the idempotency lease"),
        }
        claimed
    }
}

/// Where an answer came from.
pub enum Resolved {
    /// This node ran the query (`owned`: under a claim, so it must announce and store the answer).
    Ran { answer: Answer, owned: bool },
    /// Another node's answer (announced or stored), or a refusal (conflict, deadline): nothing streamed yet.
    Found(Answer),
}

/// The typed refusal of an id reused with another request.
pub fn conflict(id: Option<String>) -> ErrorReply {
    let message = "this id was already used with another request (different messages or parameters)";
    ErrorReply::new(ErrorType::InvalidRequest, "idempotency_conflict", message).with_field("id").with_id(id)
}

/// Answers a query whose `key` is bound to `fingerprint` once across the cluster; `run` calls upstream.
pub async fn answer_once<F, Fut>(
    idem: &Idempotency,
    ctx: &QueryContext,
    key: &str,
    fingerprint: &str,
    id: Option<String>,
    deadline: Instant,
    run: F,
) -> Resolved
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Answer>,
{
    let claim = idem.store.claim(key, fingerprint, &idem.instance, idem.retention_for(deadline));
    match idem.with_lease(claim).await {
        Ok(Claim::Owned) => Resolved::Ran { answer: run().await, owned: true },
        Ok(Claim::Answered(bytes)) => match decode_answer(&bytes) {
            Some(answer) => Resolved::Found(answer),
            None => Resolved::Ran { answer: run().await, owned: false },
        },
        Ok(Claim::Conflict) => Resolved::Found(Err(conflict(id))),
        Ok(Claim::Taken { owner }) => wait_for_answer(idem, ctx, key, fingerprint, id, owner, deadline, run).await,
        Err(error) => {
            debug!(%error, "idempotency store unavailable, answering locally");
            Resolved::Ran { answer: run().await, owned: false }
        }
    }
}

/// What one look at the store decided for a waiter.
// The answer is moved once per query, to the client: boxing it would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Look {
    Wait(String),
    Resolved(Answer),
    Own,
}

/// Waits for the answer another node (`owner`) is producing: its announcement, or the store, checked every
/// `poll`; takes the query over when the owner's lease expired.
#[allow(clippy::too_many_arguments)]
async fn wait_for_answer<F, Fut>(
    idem: &Idempotency,
    ctx: &QueryContext,
    key: &str,
    fingerprint: &str,
    id: Option<String>,
    mut owner: String,
    deadline: Instant,
    run: F,
) -> Resolved
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Answer>,
{
    let mut announcements = match ctx.bus.subscribe(&ctx.subjects.idempotency_answer(key)).await {
        Ok(subscription) => Some(subscription),
        Err(error) => {
            debug!(%error, "cannot listen for the answer, polling only");
            None
        }
    };
    // The owner may have answered between the claim and the subscription: look once more right away.
    let mut next_look = Instant::now();
    loop {
        let now = Instant::now();
        if now >= deadline {
            let message = format!("the query is being answered by node {owner} and its deadline passed");
            return Resolved::Found(Err(
                ErrorReply::new(ErrorType::DeadlineExceeded, "deadline_exceeded", message).with_id(id)
            ));
        }
        if now >= next_look {
            next_look = now + idem.poll;
            match look(idem, key, fingerprint, &owner, deadline).await {
                Look::Wait(current) => owner = current,
                Look::Resolved(Err(mut error)) if error.error.code == "idempotency_conflict" => {
                    error.id = id;
                    return Resolved::Found(Err(error));
                }
                Look::Resolved(answer) => return Resolved::Found(answer),
                Look::Own => {
                    debug!(key, dead = %owner, "owner's lease expired, taking the query over");
                    return Resolved::Ran { answer: run().await, owned: true };
                }
            }
        }
        let wake = tokio::time::Instant::from_std(next_look.min(deadline));
        match &mut announcements {
            Some(subscription) => {
                let closed = tokio::select! {
                    message = subscription.next() => match message {
                        Some(message) => match decode_answer(&message.payload) {
                            Some(answer) => return Resolved::Found(answer),
                            None => false,
                        },
                        None => true,
                    },
                    _ = tokio::time::sleep_until(wake) => false,
                };
                if closed {
                    announcements = None;
                }
            }
            None => tokio::time::sleep_until(wake).await,
        }
    }
}

/// One look at the store: the answer, a conflict, the current owner, or a take-over from a dead one.
async fn look(idem: &Idempotency, key: &str, fingerprint: &str, owner: &str, deadline: Instant) -> Look {
    let retention = idem.retention_for(deadline);
    // A claim of this very instance that this node is not answering (the router de-duplicates its own copies,
    // so there is no such query in flight here) was left behind: its answer never got stored. Take it back.
    let alive = if owner == idem.instance { Ok(false) } else { idem.store.alive(owner).await };
    let found = match alive {
        Ok(false) => idem.with_lease(idem.store.take_over(key, fingerprint, owner, &idem.instance, retention)).await,
        Ok(true) => idem.store.claim(key, fingerprint, &idem.instance, retention).await,
        Err(error) => Err(error),
    };
    match found {
        Ok(Claim::Owned) => Look::Own,
        Ok(Claim::Taken { owner }) => Look::Wait(owner),
        Ok(Claim::Answered(bytes)) => match decode_answer(&bytes) {
            Some(answer) => Look::Resolved(answer),
            None => Look::Wait(owner.to_owned()),
        },
        Ok(Claim::Conflict) => Look::Resolved(Err(conflict(None))),
        Err(error) => {
            debug!(%error, "idempotency store unavailable while waiting");
            Look::Wait(owner.to_owned())
        }
    }
}

/// After the client got its reply: announces the owned answer to waiting nodes, then stores it.
pub async fn publish_answer(idem: &Idempotency, ctx: &QueryContext, key: &str, answer: &Answer, deadline: Instant) {
    let encoded = encode_answer(answer);
    let subject = ctx.subjects.idempotency_answer(key);
    if let Err(error) = ctx.bus.publish(Message::new(subject, Bytes::from(encoded.clone()))).await {
        debug!(%error, "cannot announce the answer of an idempotent query");
    }
    if let Err(error) = idem.store.complete(key, &encoded, idem.retention_for(deadline)).await {
        warn!(%error, "cannot store the answer of an idempotent query");
    }
}

/// Keeps this node instance's lease alive while queries hold it: one store command every `lease / 3`, for every
/// key it owns; nothing while it owns none.
pub async fn renew_leases(idem: Idempotency) {
    let mut ticks = tokio::time::interval(idem.renew_every());
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if idem.holders.count.load(Ordering::Relaxed) == 0 {
            continue;
        }
        let started = Instant::now();
        match idem.store.renew(&idem.instance, idem.lease).await {
            Ok(()) => idem.holders.mark_renewed(started),
            Err(error) => debug!(%error, "cannot renew the idempotency lease"),
        }
    }
}

/// The frames a streaming client receives for an answer it did not see streamed (a copy of an id answered
/// elsewhere or earlier): the content in chunks of the answering attempt, then the final frame, with `seq`,
/// `attempt` and `chunks` consistent, each frame within `max` bytes (the bus's message limit; see
/// [`render_within`]). An error is just the final frame.
pub fn replay(answer: &Answer, max: usize) -> Vec<Bytes> {
    let Ok(reply) = answer else {
        return vec![render_within(answer, Some(StreamEnd::default()), max)];
    };
    // The attempt that answered, as the trace numbers it (a hedge's loser may come after it).
    let attempt = StreamEnd::of(answer).attempt.max(1);
    // JSON escaping can make a piece of text up to six times longer (control characters as \u00XX).
    let pieces = split_text(&reply.content, (max / 8).max(1024));
    let mut frames: Vec<Bytes> = pieces
        .iter()
        .enumerate()
        .map(|(seq, &delta)| {
            let chunk = StreamFrame::Chunk { attempt, seq: seq as u64, delta: delta.to_owned() };
            Bytes::from(Json::encode(&chunk).unwrap_or_default())
        })
        .collect();
    frames.push(render_within(answer, Some(StreamEnd { attempt, chunks: pieces.len() as u64 }), max));
    frames
}

/// `text` in pieces of at most `size` bytes (more when one character is longer), cut between characters.
fn split_text(text: &str, size: usize) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = size.min(rest.len());
        while !rest.is_char_boundary(end) {
            end += 1;
        }
        let (piece, tail) = rest.split_at(end);
        pieces.push(piece);
        rest = tail;
    }
    pieces
}

fn encode_answer(answer: &Answer) -> Vec<u8> {
    let outcome = match answer {
        Ok(reply) => QueryOutcome::Reply(reply.clone()),
        Err(error) => QueryOutcome::Error(error.clone()),
    };
    Json::encode(&outcome).unwrap_or_default()
}

fn decode_answer(bytes: &[u8]) -> Option<Answer> {
    match Json::decode::<QueryOutcome>(bytes).ok()? {
        QueryOutcome::Reply(reply) => Some(Ok(reply)),
        QueryOutcome::Error(error) => Some(Err(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_protocol::Usage;
    use switchyard_protocol::client::{QueryReply, Trace};

    fn reply(content: &str) -> QueryReply {
        QueryReply {
            id: Some("q".into()),
            content: content.into(),
            model: "m".into(),
            provider: "p".into(),
            finish_reason: None,
            usage: Usage::default(),
            cost_usd: 0.0,
            latency_ms: 1.0,
            logprobs: None,
            trace: Trace::default(),
        }
    }

    #[test]
    fn a_replayed_answer_longer_than_a_bus_message_comes_in_chunks_that_each_fit() {
        let content: String = (0..40_000).map(|i| if i % 7 == 0 { 'é' } else { 'a' }).collect();
        let reply = reply(&content);
        let max = 16 * 1024;
        let encoded = replay(&Ok(reply), max);
        assert!(encoded.len() > 2, "several chunks: {}", encoded.len());
        assert!(encoded.iter().all(|frame| frame.len() <= max), "every frame fits in one message");
        let frames: Vec<StreamFrame> = encoded.iter().map(|b| Json::decode(b).expect("frame")).collect();
        let (last, chunks) = frames.split_last().expect("frames");
        let text: String = chunks
            .iter()
            .enumerate()
            .map(|(i, frame)| match frame {
                StreamFrame::Chunk { attempt: 1, seq, delta } if *seq == i as u64 => delta.as_str(),
                other => panic!("not chunk {i}: {other:?}"),
            })
            .collect();
        assert_eq!(text, content, "the chunks carry the whole text, cut between characters");
        match last {
            StreamFrame::Done { attempt: 1, chunks: n, reply } => {
                assert_eq!(*n, chunks.len() as u64);
                assert!(reply.content.is_empty(), "the final frame leaves the content to the chunks");
                assert_eq!(reply.id.as_deref(), Some("q"));
            }
            other => panic!("not a final frame: {other:?}"),
        }
    }

    #[test]
    fn a_replayed_answer_is_one_chunk_then_a_consistent_final_frame() {
        let reply = reply("hello");
        let frames: Vec<StreamFrame> =
            replay(&Ok(reply), usize::MAX).iter().map(|b| Json::decode(b).expect("frame")).collect::<Vec<_>>();
        assert!(matches!(&frames[0], StreamFrame::Chunk { attempt: 1, seq: 0, delta } if delta == "hello"));
        assert!(matches!(&frames[1], StreamFrame::Done { attempt: 1, chunks: 1, .. }));
        let error = replay(&Err(conflict(None)), usize::MAX);
        assert_eq!(error.len(), 1);
    }
}
