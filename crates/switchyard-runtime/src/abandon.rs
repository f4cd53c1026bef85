//! [`Abandons`]: the queries from the bus without an id that run on this node, by the cancel token they carry
//! ([`CANCEL_HEADER`]), so that a client's word that it stopped waiting (the token published on
//! [`Subjects::query_cancel`]) reaches the task running the query. Dropping that task's walk cancels the provider
//! calls it waits for.
//!
//! A query handed over in process needs none of this: its client hanging up drops its receiver, which the router
//! sees directly ([`crate::actors::router::ReplyTo`]).
//!
//! [`Subjects::query_cancel`]: switchyard_protocol::subjects::Subjects::query_cancel
//! [`CANCEL_HEADER`]: switchyard_protocol::subjects::CANCEL_HEADER

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

/// The watched queries of one node.
#[derive(Debug, Default)]
pub struct Abandons {
    watched: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Abandons {
    /// Watches the query carrying `token` until the returned watch is dropped. A second query with a token
    /// already watched (a client reusing it) is not watched: it runs to its end.
    pub fn watch(self: &Arc<Self>, token: &str) -> Option<Watch> {
        let notify = Arc::new(Notify::new());
        match self.lock().entry(token.to_owned()) {
            Entry::Occupied(_) => return None,
            Entry::Vacant(entry) => entry.insert(notify.clone()),
        };
        Some(Watch { abandons: self.clone(), token: token.to_owned(), notify })
    }

    /// Tells the query carrying `token` that its client is gone; false when no such query runs here (another node
    /// runs it, or it is already answered).
    pub fn abandon(&self, token: &str) -> bool {
        match self.lock().get(token) {
            Some(notify) => {
                // Kept as a permit when the task is not waiting yet, so a cancellation is never missed.
                notify.notify_one();
                true
            }
            None => false,
        }
    }

    /// Queries watched now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Notify>>> {
        // The map holds no invariant a panicking holder could break.
        self.watched.lock().unwrap_or_else(PoisonError::into_inner)
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
        let mut watched = self.abandons.lock();
        if watched.get(&self.token).is_some_and(|notify| Arc::ptr_eq(notify, &self.notify)) {
            watched.remove(&self.token);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cancellation_reaches_its_query_even_before_it_waits() {
        let abandons = Arc::new(Abandons::default());
        let watch = abandons.watch("a").unwrap();
        assert!(!abandons.abandon("b"), "no query carries b");
        assert!(abandons.abandon("a"));
        // Told before it waited: the permit is kept.
        tokio::time::timeout(std::time::Duration::from_secs(5), watch.abandoned()).await.unwrap();
        drop(watch);
        assert!(abandons.is_empty());
        assert!(!abandons.abandon("a"), "an answered query is no longer watched");
    }

    #[tokio::test]
    async fn a_reused_token_is_not_watched_twice() {
        let abandons = Arc::new(Abandons::default());
        let first = abandons.watch("a").unwrap();
        assert!(abandons.watch("a").is_none());
        // The refused second watch took nothing from the first.
        assert_eq!(abandons.len(), 1);
        assert!(abandons.abandon("a"));
        tokio::time::timeout(std::time::Duration::from_secs(5), first.abandoned()).await.unwrap();
    }
}
