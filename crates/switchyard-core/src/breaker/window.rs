//! The sliding windows a breaker computes its failure and slow-call rates over.
//!
//! Both kinds are ring buffers with running totals, so recording a call and reading the totals cost O(1) (the
//! time-based ring pays amortised O(1): it clears at most one bucket per second that has passed, and never more
//! buckets than it holds).
//!
//! - A **count-based** window keeps the last `calls` outcomes, one byte each; recording into a full ring evicts
//!   the oldest outcome from the totals.
//! - A **time-based** window keeps `seconds` per-second buckets. The window at time `t` is the bucket of the
//!   current second plus the `seconds - 1` before it (as resilience4j does), so a call drops out between
//!   `seconds - 1` and `seconds` after it was recorded. Seconds are counted from the first call recorded after
//!   the window was created or cleared; a call reported with a time earlier than the newest bucket (outcomes can
//!   arrive slightly out of order) is counted in the newest bucket.

use std::time::Instant;

/// Which calls a breaker's rates are computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlidingWindow {
    /// The last `calls` recorded calls.
    Count { calls: u32 },
    /// The calls recorded in the last `seconds` seconds, in per-second buckets.
    Time { seconds: u32 },
}

/// One recorded call, as the window sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Call {
    pub failure: bool,
    pub slow: bool,
}

impl Call {
    fn to_bits(self) -> u8 {
        u8::from(self.failure) | (u8::from(self.slow) << 1)
    }

    fn from_bits(bits: u8) -> Self {
        Self { failure: bits & 1 != 0, slow: bits & 2 != 0 }
    }
}

/// Counts over a window (or one bucket of it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Totals {
    pub calls: u32,
    pub failures: u32,
    pub slow: u32,
}

impl Totals {
    fn add(&mut self, call: Call) {
        self.calls += 1;
        self.failures += u32::from(call.failure);
        self.slow += u32::from(call.slow);
    }

    fn remove(&mut self, call: Call) {
        self.calls = self.calls.saturating_sub(1);
        self.failures = self.failures.saturating_sub(u32::from(call.failure));
        self.slow = self.slow.saturating_sub(u32::from(call.slow));
    }

    fn merge(&mut self, other: Totals) {
        self.calls += other.calls;
        self.failures += other.failures;
        self.slow += other.slow;
    }

    fn subtract(&mut self, other: Totals) {
        self.calls = self.calls.saturating_sub(other.calls);
        self.failures = self.failures.saturating_sub(other.failures);
        self.slow = self.slow.saturating_sub(other.slow);
    }
}

/// A sliding window of either kind.
#[derive(Debug, Clone)]
pub(super) enum Window {
    Count(CountRing),
    Time(TimeRing),
}

impl Window {
    /// An empty window; the sizes were validated by [`super::BreakerConfig::validate`].
    pub fn new(kind: SlidingWindow) -> Self {
        match kind {
            SlidingWindow::Count { calls } => Window::Count(CountRing::new(calls.max(1) as usize)),
            SlidingWindow::Time { seconds } => Window::Time(TimeRing::new(seconds.max(1) as usize)),
        }
    }

    /// Records `call` at `now` and returns the totals over the window that now ends at `now`.
    pub fn record(&mut self, call: Call, now: Instant) -> Totals {
        match self {
            Window::Count(ring) => ring.record(call),
            Window::Time(ring) => ring.record(call, now),
        }
    }

    /// The totals over the window ending at `now`, without changing the window.
    pub fn totals(&self, now: Instant) -> Totals {
        match self {
            Window::Count(ring) => ring.totals,
            Window::Time(ring) => ring.totals_at(now),
        }
    }

    /// Forgets every recorded call.
    pub fn clear(&mut self) {
        match self {
            Window::Count(ring) => *ring = CountRing::new(ring.capacity),
            Window::Time(ring) => *ring = TimeRing::new(ring.buckets.len()),
        }
    }
}

/// The last `capacity` calls, oldest first from `next` once the ring is full.
#[derive(Debug, Clone)]
pub(super) struct CountRing {
    capacity: usize,
    slots: Vec<u8>,
    next: usize,
    totals: Totals,
}

impl CountRing {
    fn new(capacity: usize) -> Self {
        Self { capacity, slots: Vec::new(), next: 0, totals: Totals::default() }
    }

    fn record(&mut self, call: Call) -> Totals {
        if self.slots.len() < self.capacity {
            self.slots.push(call.to_bits());
        } else if let Some(slot) = self.slots.get_mut(self.next) {
            self.totals.remove(Call::from_bits(*slot));
            *slot = call.to_bits();
            self.next = (self.next + 1) % self.capacity;
        }
        self.totals.add(call);
        self.totals
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    second: u64,
    totals: Totals,
}

/// Per-second buckets; bucket `s % len` holds second `s` (counted from `origin`) while `s` is in the window.
#[derive(Debug, Clone)]
pub(super) struct TimeRing {
    buckets: Vec<Bucket>,
    origin: Option<Instant>,
    head: u64,
    totals: Totals,
}

impl TimeRing {
    fn new(seconds: usize) -> Self {
        Self { buckets: vec![Bucket::default(); seconds], origin: None, head: 0, totals: Totals::default() }
    }

    fn len(&self) -> u64 {
        self.buckets.len() as u64
    }

    fn second_of(&self, now: Instant) -> u64 {
        self.origin.map_or(0, |origin| now.saturating_duration_since(origin).as_secs())
    }

    /// Moves the head to the second of `now`, clearing the buckets of the seconds that left the window.
    fn advance(&mut self, now: Instant) {
        let origin = *self.origin.get_or_insert(now);
        let second = now.saturating_duration_since(origin).as_secs();
        if second <= self.head {
            return;
        }
        let len = self.len();
        // Only the last `len` seconds up to `second` can hold anything still in the window.
        let first = (self.head + 1).max(second.saturating_sub(len - 1));
        for s in first..=second {
            let bucket = &mut self.buckets[(s % len) as usize];
            self.totals.subtract(bucket.totals);
            *bucket = Bucket { second: s, totals: Totals::default() };
        }
        self.head = second;
    }

    fn record(&mut self, call: Call, now: Instant) -> Totals {
        self.advance(now);
        let len = self.len();
        self.buckets[(self.head % len) as usize].totals.add(call);
        self.totals.add(call);
        self.totals
    }

    /// The totals as they will be at `now`: buckets older than the window are left out. O(len).
    fn totals_at(&self, now: Instant) -> Totals {
        let second = self.second_of(now).max(self.head);
        if second == self.head {
            return self.totals;
        }
        let len = self.len();
        let mut totals = Totals::default();
        for bucket in self.buckets.iter().filter(|b| b.second + len > second) {
            totals.merge(bucket.totals);
        }
        totals
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const OK: Call = Call { failure: false, slow: false };
    const FAIL: Call = Call { failure: true, slow: false };
    const SLOW_FAIL: Call = Call { failure: true, slow: true };

    fn totals(calls: u32, failures: u32, slow: u32) -> Totals {
        Totals { calls, failures, slow }
    }

    #[test]
    fn a_count_window_evicts_the_oldest_call() {
        let t0 = Instant::now();
        let mut window = Window::new(SlidingWindow::Count { calls: 3 });
        let recorded: Vec<_> = [SLOW_FAIL, FAIL, OK, OK, OK, FAIL].into_iter().map(|c| window.record(c, t0)).collect();
        assert_eq!(
            recorded,
            vec![totals(1, 1, 1), totals(2, 2, 1), totals(3, 2, 1), totals(3, 1, 0), totals(3, 0, 0), totals(3, 1, 0)]
        );
        window.clear();
        assert_eq!(window.totals(t0), Totals::default());
    }

    #[test]
    fn a_time_window_forgets_seconds_that_left_it() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut window = Window::new(SlidingWindow::Time { seconds: 3 });
        window.record(FAIL, at(0));
        window.record(FAIL, at(900));
        window.record(OK, at(1_500));
        assert_eq!(window.record(SLOW_FAIL, at(2_999)), totals(4, 3, 1));
        // Second 0 leaves the window when second 3 begins.
        assert_eq!(window.totals(at(3_000)), totals(2, 1, 1));
        assert_eq!(window.record(OK, at(3_000)), totals(3, 1, 1));
        // A call reported out of order lands in the newest bucket.
        assert_eq!(window.record(FAIL, at(100)), totals(4, 2, 1));
        // A long silence empties the window, and reading never changes it.
        assert_eq!(window.totals(at(60_000)), Totals::default());
        assert_eq!(window.totals(at(3_000)), totals(4, 2, 1));
        assert_eq!(window.record(OK, at(60_000)), totals(1, 0, 0));
    }

    #[test]
    fn a_cleared_time_window_restarts_its_seconds() {
        let t0 = Instant::now();
        let mut window = Window::new(SlidingWindow::Time { seconds: 2 });
        window.record(FAIL, t0 + Duration::from_millis(700));
        window.clear();
        assert_eq!(window.totals(t0 + Duration::from_millis(800)), Totals::default());
        window.record(FAIL, t0 + Duration::from_millis(800));
        // Seconds now count from 0.8 s: the call is still in the window at 2.7 s and gone at 2.8 s.
        assert_eq!(window.totals(t0 + Duration::from_millis(2_700)).calls, 1);
        assert_eq!(window.totals(t0 + Duration::from_millis(2_800)).calls, 0);
    }
}
