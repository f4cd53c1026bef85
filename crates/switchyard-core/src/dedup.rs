//! Recognising a query that was already answered, or is being answered, within one node, in bounded memory.
//!
//! Core NATS delivers at most once, so clients retry, and a retry must not cost a second upstream call. A query
//! with an `id` is claimed here, bound to the fingerprint of its request; a second arrival of the same key
//! before the first is answered joins it as a waiter, and one arriving after it, while the answer is still kept
//! (until the query's deadline), gets the kept answer. The same key with another fingerprint is a conflict.
//!
//! Everything is bounded: at most `max_in_flight` keys being answered (the router admits no more queries than
//! that anyway), at most `max_waiters` waiters per key, and at most `max_done` kept answers weighing at most
//! `max_done_weight` together (the caller weighs each, in bytes), the least recently used evicted first (an
//! `lru` cache); an answer past its expiry is never returned. Past a bound the table says
//! [`Seen::Full`] and the caller sheds the query. The table never reads a clock.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::time::Instant;

use lru::LruCache;

/// What the table knew about a key when it was presented.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen<V> {
    /// First sighting: the caller owns the work and must call [`DedupTable::complete`].
    New,
    /// The work is under way; the waiter was queued and will be returned by `complete`.
    Joined,
    /// The work finished earlier; here is its result.
    Done(V),
    /// The key is bound to another fingerprint (another request under the same id).
    Conflict,
    /// A bound is reached (keys in flight, or waiters of this key): shed the query.
    Full,
}

/// The bounds of a [`DedupTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupLimits {
    pub max_in_flight: usize,
    pub max_waiters: usize,
    pub max_done: usize,
    pub max_done_weight: usize,
}

struct InFlight<W> {
    fingerprint: String,
    waiters: Vec<W>,
    expires_at: Instant,
}

struct Done<V> {
    fingerprint: String,
    value: V,
    expires_at: Instant,
    weight: usize,
}

/// A bounded table of in-flight and recently finished keyed work, with expiries supplied by the caller.
pub struct DedupTable<W, V> {
    in_flight: HashMap<String, InFlight<W>>,
    done: LruCache<String, Done<V>>,
    done_weight: usize,
    limits: DedupLimits,
}

impl<W, V: Clone> DedupTable<W, V> {
    pub fn new(limits: DedupLimits) -> Self {
        let capacity = NonZeroUsize::new(limits.max_done).unwrap_or(NonZeroUsize::MIN);
        Self { in_flight: HashMap::new(), done: LruCache::new(capacity), done_weight: 0, limits }
    }

    /// Presents `key` with its request's `fingerprint` at `now`. A new key is claimed, its answer to be kept until
    /// `expires_at`; a key in flight takes the waiter out of `waiter` and queues it (otherwise `waiter` is left
    /// as it was, so whatever it holds stays with the caller).
    pub fn claim(
        &mut self,
        key: &str,
        fingerprint: &str,
        waiter: &mut Option<W>,
        now: Instant,
        expires_at: Instant,
    ) -> Seen<V> {
        if let Some(done) = self.done.get(key) {
            if done.expires_at > now {
                if done.fingerprint != fingerprint {
                    return Seen::Conflict;
                }
                return Seen::Done(done.value.clone());
            }
            if let Some(expired) = self.done.pop(key) {
                self.done_weight -= expired.weight;
            }
        }
        if let Some(entry) = self.in_flight.get_mut(key) {
            if entry.fingerprint != fingerprint {
                return Seen::Conflict;
            }
            if entry.waiters.len() >= self.limits.max_waiters {
                return Seen::Full;
            }
            let Some(waiter) = waiter.take() else { return Seen::Full };
            entry.waiters.push(waiter);
            return Seen::Joined;
        }
        if self.in_flight.len() >= self.limits.max_in_flight {
            return Seen::Full;
        }
        let entry = InFlight { fingerprint: fingerprint.to_owned(), waiters: Vec::new(), expires_at };
        self.in_flight.insert(key.to_owned(), entry);
        Seen::New
    }

    /// Records the result for `key`, of `weight`, keeps it until the key's expiry (or until evicted), and returns
    /// the waiters that joined. A result heavier than the whole weight bound is not kept.
    pub fn complete(&mut self, key: &str, value: V, weight: usize) -> Vec<W> {
        let Some(entry) = self.in_flight.remove(key) else { return Vec::new() };
        if weight <= self.limits.max_done_weight {
            let done = Done { fingerprint: entry.fingerprint, value, expires_at: entry.expires_at, weight };
            if let Some((_, evicted)) = self.done.push(key.to_owned(), done) {
                self.done_weight -= evicted.weight;
            }
            self.done_weight += weight;
            while self.done_weight > self.limits.max_done_weight {
                let Some((_, evicted)) = self.done.pop_lru() else { break };
                self.done_weight -= evicted.weight;
            }
        }
        entry.waiters
    }

    /// Ends the work on `key` without keeping a result (it must not answer later copies, for instance because the
    /// key turned out to belong to another request elsewhere), and returns the waiters that joined.
    pub fn forget(&mut self, key: &str) -> Vec<W> {
        self.in_flight.remove(key).map(|entry| entry.waiters).unwrap_or_default()
    }

    /// The weight of the answers kept.
    pub fn weight(&self) -> usize {
        self.done_weight
    }

    /// Keys in flight and answers kept.
    pub fn len(&self) -> usize {
        self.in_flight.len() + self.done.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const LIMITS: DedupLimits = DedupLimits { max_in_flight: 2, max_waiters: 2, max_done: 2, max_done_weight: 100 };

    #[test]
    fn first_claims_second_joins_third_gets_the_result() {
        let t0 = Instant::now();
        let until = t0 + Duration::from_secs(5);
        let mut table: DedupTable<&str, u32> = DedupTable::new(LIMITS);
        assert_eq!(table.claim("q1", "fp", &mut Some("a"), t0, until), Seen::New);
        assert_eq!(table.claim("q1", "fp", &mut Some("b"), t0, until), Seen::Joined);
        assert_eq!(table.complete("q1", 42, 1), vec!["b"]);
        assert_eq!(table.claim("q1", "fp", &mut Some("c"), t0 + Duration::from_secs(1), until), Seen::Done(42));
    }

    #[test]
    fn another_request_under_the_same_key_is_a_conflict() {
        let t0 = Instant::now();
        let until = t0 + Duration::from_secs(5);
        let mut table: DedupTable<(), u32> = DedupTable::new(LIMITS);
        assert_eq!(table.claim("q1", "fp-1", &mut Some(()), t0, until), Seen::New);
        assert_eq!(table.claim("q1", "fp-2", &mut Some(()), t0, until), Seen::Conflict, "in flight");
        table.complete("q1", 1, 1);
        assert_eq!(table.claim("q1", "fp-2", &mut Some(()), t0, until), Seen::Conflict, "answered");
    }

    #[test]
    fn answers_expire_at_their_deadline() {
        let t0 = Instant::now();
        let mut table: DedupTable<(), u32> = DedupTable::new(LIMITS);
        table.claim("q1", "fp", &mut Some(()), t0, t0 + Duration::from_secs(1));
        table.complete("q1", 1, 1);
        assert_eq!(
            table.claim("q1", "fp", &mut Some(()), t0 + Duration::from_secs(1), t0 + Duration::from_secs(3)),
            Seen::New
        );
        assert_eq!(table.len(), 1, "the expired answer is gone, the new claim is in flight");
    }

    #[test]
    fn every_part_of_the_table_is_bounded() {
        let t0 = Instant::now();
        let until = t0 + Duration::from_secs(5);
        let mut table: DedupTable<u8, u32> = DedupTable::new(LIMITS);
        assert_eq!(table.claim("a", "fp", &mut Some(0), t0, until), Seen::New);
        assert_eq!(table.claim("b", "fp", &mut Some(0), t0, until), Seen::New);
        assert_eq!(table.claim("c", "fp", &mut Some(0), t0, until), Seen::Full, "two keys in flight at most");
        assert_eq!(table.claim("a", "fp", &mut Some(1), t0, until), Seen::Joined);
        assert_eq!(table.claim("a", "fp", &mut Some(2), t0, until), Seen::Joined);
        assert_eq!(table.claim("a", "fp", &mut Some(3), t0, until), Seen::Full, "two waiters per key at most");
        assert_eq!(table.complete("a", 1, 1), vec![1, 2]);
        table.complete("b", 2, 1);
        assert_eq!(table.claim("c", "fp", &mut Some(0), t0, until), Seen::New);
        table.complete("c", 3, 1);
        assert_eq!(table.len(), 2, "two answers kept at most");
        assert_eq!(
            table.claim("a", "fp", &mut Some(0), t0, until),
            Seen::New,
            "the least recently used answer was evicted"
        );
    }

    #[test]
    fn a_forgotten_key_keeps_no_binding() {
        let t0 = Instant::now();
        let until = t0 + Duration::from_secs(5);
        let mut table: DedupTable<u8, u32> = DedupTable::new(LIMITS);
        table.claim("q1", "fp-2", &mut Some(0), t0, until);
        table.claim("q1", "fp-2", &mut Some(1), t0, until);
        assert_eq!(table.forget("q1"), vec![1]);
        assert_eq!(table.claim("q1", "fp-1", &mut Some(2), t0, until), Seen::New);
    }

    #[test]
    fn completing_an_unknown_key_returns_no_waiters() {
        let mut table: DedupTable<(), u32> = DedupTable::new(LIMITS);
        assert!(table.complete("nope", 1, 1).is_empty());
    }
}
