//! [`Abandons`]: the queries from the bus without an id that run on this node, by the cancel token they carry
//! ([`CANCEL_HEADER`]), so that a client's word that it stopped waiting (the token published on
//! [`Subjects::query_cancel`]) reaches the task running the query. Dropping that task's walk cancels the provider
//! calls it waits for.
//!
//! The cancellation and the query travel on two subscriptions, and a query may wait in the bus pump and the
//! router's mailbox before it is watched, so a token that finds no query is remembered for a while
//! ([`MISSED_FOR`], the [`MISSED_CAPACITY`] most recent): a query that arrives with it later is abandoned at once.
//! Every router hears every cancellation, so most of the tokens a node remembers belong to other nodes' queries.
//!
//! A query handed over in process needs none of this: a plain one without an id runs in its client's own task and
//! is dropped with it ([`crate::actors::router::Intake::run_here`]); for the others, the client hanging up drops
//! their receiver, which the query's task sees directly ([`crate::actors::router::ReplyTo`]).
//!
//! [`Subjects::query_cancel`]: switchyard_protocol::subjects::Subjects::query_cancel
//! [`CANCEL_HEADER`]: switchyard_protocol::subjects::CANCEL_HEADER

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use lru::LruCache;
use tokio::sync::Notify;
use tokio::time::Instant;

use switchyard_protocol::subjects::MAX_CANCEL_TOKEN_LEN;

/// How long a token that found no query is remembered: longer than a query waits for a router.
pub const MISSED_FOR: Duration = Duration::from_secs(30);

/// How many tokens that found no query are remembered at most (the least recent forgotten first).
pub const MISSED_CAPACITY: usize = 4096;

/// The watched queries of one node, and the cancellations that came before their query.
#[derive(Debug)]
pub struct Abandons {
    inner: Mutex<Inner>,
    missed_for: Duration,
}

#[derive(Debug)]
struct Inner {
    watched: HashMap<String, Arc<Notify>>,
    /// Tokens that found no query, with when they came.
    missed: LruCache<String, Instant>,
}

impl Default for Abandons {
    fn default() -> Self {
        Self::new(MISSED_FOR, MISSED_CAPACITY)
    }
}

impl Abandons {
    /// Remembers up to `capacity` tokens that found no query, each for `missed_for`.
    pub fn new(missed_for: Duration, capacity: usize) -> Self {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        Self { inner: Mutex::new(Inner { watched: HashMap::new(), missed: LruCache::new(capacity) }), missed_for }
    }

    /// Watches the query carrying `token` until the returned watch is dropped; a watch whose token was cancelled
    /// already is abandoned at once. A second query with a token already watched (a client reusing it), or a
    /// token longer than [`MAX_CANCEL_TOKEN_LEN`], is not watched: that query runs to its end.
    pub fn watch(self: &Arc<Self>, token: &str) -> Option<Watch> {
        if token.len() > MAX_CANCEL_TOKEN_LEN {
            return None;
        }
        let notify = Arc::new(Notify::new());
        let mut inner = self.lock();
        match inner.watched.entry(token.to_owned()) {
            Entry::Occupied(_) => return None,
            Entry::Vacant(entry) => entry.insert(notify.clone()),
        };
        if inner.missed.pop(token).is_some_and(|at| at.elapsed() <= self.missed_for) {
            notify.notify_one();
        }
        Some(Watch { abandons: self.clone(), token: token.to_owned(), notify })
    }

    /// Tells the query carrying `token` that its client is gone; false when no such query runs here (another node
    /// runs it, it is already answered, or it has not reached the router yet: then the token is remembered).
    pub fn abandon(&self, token: &str) -> bool {
        if token.len() > MAX_CANCEL_TOKEN_LEN {
            return false;
        }
        let mut inner = self.lock();
        match inner.watched.get(token) {
            Some(notify) => {
                // Kept as a permit when the task is not waiting yet, so a cancellation is never missed.
                notify.notify_one();
                true
            }
            None => {
                inner.missed.put(token.to_owned(), Instant::now());
                false
            }
        }
    }

    /// Queries watched now.
    pub fn len(&self) -> usize {
        self.lock().watched.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The maps hold no invariant a panicking holder could break.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One watched query; stops being watched when dropped.
#[derive(Debug)]
pub struct Watch {
    abandons: Arc<Abandons>,
    token: String,
    notify: Arc<Notify>,
}

impl Watch {
    /// Completes when the query's client said it stopped waiting.
    pub async fn abandoned(&self) {
        self.notify.notified().await
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut inner = self.abandons.lock();
        if inner.watched.get(&self.token).is_some_and(|notify| Arc::ptr_eq(notify, &self.notify)) {
            inner.watched.remove(&self.token);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn is_abandoned(watch: &Watch) -> bool {
        tokio::time::timeout(Duration::from_secs(5), watch.abandoned()).await.is_ok()
    }

    #[tokio::test]
    async fn a_cancellation_reaches_its_query_even_before_it_waits() {
        let abandons = Arc::new(Abandons::default());
        let watch = abandons.watch("a").unwrap();
        assert!(abandons.abandon("a"));
        // Told before it waited: the permit is kept.
        assert!(is_abandoned(&watch).await);
        drop(watch);
        assert!(abandons.is_empty());
        assert!(!abandons.abandon("a"), "an answered query is no longer watched");
    }

    #[tokio::test]
    async fn a_cancellation_that_overtakes_its_query_is_kept_for_it() {
        let abandons = Arc::new(Abandons::default());
        assert!(!abandons.abandon("early"), "no query carries it yet");
        let watch = abandons.watch("early").unwrap();
        assert!(is_abandoned(&watch).await, "the query arriving after its cancellation is abandoned at once");
        drop(watch);
        // Remembered once: the token was taken by its query.
        let again = abandons.watch("early").unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(50), again.abandoned()).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_missed_cancellation_is_forgotten_after_a_while_or_past_the_capacity() {
        let abandons = Arc::new(Abandons::new(Duration::from_secs(1), 4));
        abandons.abandon("stale");
        tokio::time::advance(Duration::from_secs(2)).await;
        let watch = abandons.watch("stale").unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(50), watch.abandoned()).await.is_err(), "expired");

        let abandons = Arc::new(Abandons::new(MISSED_FOR, 2));
        for token in ["x", "y", "z"] {
            abandons.abandon(token);
        }
        let (x, z) = (abandons.watch("x").unwrap(), abandons.watch("z").unwrap());
        assert!(tokio::time::timeout(Duration::from_millis(50), x.abandoned()).await.is_err(), "x was evicted");
        assert!(is_abandoned(&z).await);
    }

    #[tokio::test]
    async fn reused_or_oversized_tokens_are_not_watched() {
        let abandons = Arc::new(Abandons::default());
        let first = abandons.watch("a").unwrap();
        assert!(abandons.watch("a").is_none());
        // The refused second watch took nothing from the first.
        assert_eq!(abandons.len(), 1);
        assert!(abandons.abandon("a"));
        assert!(is_abandoned(&first).await);

        let long = "t".repeat(MAX_CANCEL_TOKEN_LEN + 1);
        assert!(abandons.watch(&long).is_none());
        assert!(!abandons.abandon(&long));
    }
}
