//! Recognising a query that was already answered, or is being answered.
//!
//! Core NATS delivers at most once, so clients retry, and a retry must not cost a second upstream call. A query
//! with an `id` is claimed here; a second arrival of the same `id` before the first is answered joins it as a
//! waiter, and one arriving after it, while the answer is still kept (until the query's deadline), gets the kept
//! answer. Entries expire at a time the caller chooses; the table never reads a clock.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

/// What the table knew about a key when it was presented.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen<V> {
    /// First sighting: the caller owns the work and must call [`DedupTable::complete`].
    New,
    /// The work is under way; the waiter was queued and will be returned by `complete`.
    Joined,
    /// The work finished earlier; here is its result.
    Done(V),
}

enum Entry<W, V> {
    InFlight { waiters: Vec<W> },
    Done { value: V },
}

/// A table of in-flight and recently finished keyed work, with deadlines supplied by the caller.
pub struct DedupTable<W, V> {
    entries: HashMap<String, (Entry<W, V>, Instant)>,
    expiries: BinaryHeap<Reverse<(Instant, String)>>,
}

impl<W, V: Clone> Default for DedupTable<W, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<W, V: Clone> DedupTable<W, V> {
    pub fn new() -> Self {
        Self { entries: HashMap::new(), expiries: BinaryHeap::new() }
    }

    /// Presents `key` at `now`. A new key is claimed until `expires_at`; a key in flight queues `waiter`.
    pub fn claim(&mut self, key: &str, waiter: W, now: Instant, expires_at: Instant) -> Seen<V> {
        self.evict_expired(now);
        match self.entries.get_mut(key) {
            Some((Entry::Done { value }, _)) => Seen::Done(value.clone()),
            Some((Entry::InFlight { waiters }, _)) => {
                waiters.push(waiter);
                Seen::Joined
            }
            None => {
                self.entries.insert(key.to_owned(), (Entry::InFlight { waiters: Vec::new() }, expires_at));
                self.expiries.push(Reverse((expires_at, key.to_owned())));
                Seen::New
            }
        }
    }

    /// Records the result for `key`, keeps it until the key's expiry, and returns the waiters that joined.
    pub fn complete(&mut self, key: &str, value: V) -> Vec<W> {
        match self.entries.get_mut(key) {
            Some((entry, _)) => match std::mem::replace(entry, Entry::Done { value }) {
                Entry::InFlight { waiters } => waiters,
                Entry::Done { .. } => Vec::new(),
            },
            None => Vec::new(),
        }
    }

    /// Forgets every key whose expiry is at or before `now`.
    pub fn evict_expired(&mut self, now: Instant) {
        while let Some(Reverse((at, _))) = self.expiries.peek() {
            if *at > now {
                break;
            }
            if let Some(Reverse((at, key))) = self.expiries.pop() {
                // A key can be claimed again after it expired; only remove the entry this expiry belongs to.
                if self.entries.get(&key).is_some_and(|(_, expiry)| *expiry == at) {
                    self.entries.remove(&key);
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn first_claims_second_joins_third_gets_the_result() {
        let t0 = Instant::now();
        let until = t0 + Duration::from_secs(5);
        let mut table: DedupTable<&str, u32> = DedupTable::new();
        assert_eq!(table.claim("q1", "a", t0, until), Seen::New);
        assert_eq!(table.claim("q1", "b", t0, until), Seen::Joined);
        assert_eq!(table.complete("q1", 42), vec!["b"]);
        assert_eq!(table.claim("q1", "c", t0 + Duration::from_secs(1), until), Seen::Done(42));
    }

    #[test]
    fn entries_expire_at_their_deadline() {
        let t0 = Instant::now();
        let mut table: DedupTable<(), u32> = DedupTable::new();
        table.claim("q1", (), t0, t0 + Duration::from_secs(1));
        table.complete("q1", 1);
        assert_eq!(table.claim("q1", (), t0 + Duration::from_secs(1), t0 + Duration::from_secs(3)), Seen::New);
        assert_eq!(table.len(), 1);
        table.evict_expired(t0 + Duration::from_secs(3));
        assert!(table.is_empty());
    }

    #[test]
    fn completing_an_unknown_key_returns_no_waiters() {
        let mut table: DedupTable<(), u32> = DedupTable::new();
        assert!(table.complete("nope", 1).is_empty());
    }
}
