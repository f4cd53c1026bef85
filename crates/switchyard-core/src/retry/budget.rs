//! A retry budget: retries may add only a fraction to the load, plus a small reserve.
//!
//! After Finagle's `RetryBudget` (also tower's `TpsBudget`, which linkerd uses, and Envoy's retry budgets):
//! over a sliding window of `window_seconds`, a retry is allowed while the retries in the window, this one
//! included, stay at or below `ratio * requests + min_retries_per_second * window_seconds`. The ratio keeps
//! retries to about 20 % of the traffic however bad things get, so retries cannot turn an overload into a
//! storm; the reserve lets a quiet route retry at all.
//!
//! The window is `window_seconds` per-second buckets: the bucket of the current second plus the
//! `window_seconds - 1` before it, so an event drops out between `window_seconds - 1` and `window_seconds` after
//! it was recorded. Seconds count from the first call to `record_request` or `try_withdraw`; an event reported
//! with a time earlier than the newest bucket lands in the newest bucket. A retry is recorded when it is granted,
//! and it stays in the window at least as long as every request that paid for it, so a request never pays for
//! two retries: over any span of `window_seconds` seconds, the retries granted are at most `ratio` times the
//! requests of that span and of the `window_seconds - 1` seconds before it, plus the reserve.

use std::time::Instant;

use super::{RetryConfigError, refuse};

/// Room for floating-point error in `ratio * requests`, so that a ratio of 0.2 over 5 requests allows 1 retry.
const EPSILON: f64 = 1e-9;

/// How many retries a [`RetryBudget`] allows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudgetConfig {
    /// Retries allowed per request in the window. Default: 0.2 (Finagle's `percentCanRetry`).
    pub ratio: f64,
    /// The sliding window, in whole seconds. Default: 10 (Finagle's `ttl`).
    pub window_seconds: u32,
    /// Retries allowed per second whatever the traffic: a reserve of `min_retries_per_second * window_seconds`
    /// retries in the window. Default: 10 (Finagle's `minRetriesPerSec`).
    pub min_retries_per_second: u32,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        Self { ratio: 0.2, window_seconds: 10, min_retries_per_second: 10 }
    }
}

impl RetryBudgetConfig {
    /// Checks every field; the error names the first bad one. The bounds are Finagle's.
    pub fn validate(&self) -> Result<(), RetryConfigError> {
        if !(self.ratio.is_finite() && (0.0..=10.0).contains(&self.ratio)) {
            return refuse("ratio", "must be between 0 and 10");
        }
        if !(1..=60).contains(&self.window_seconds) {
            return refuse("window_seconds", "must be between 1 and 60");
        }
        if self.min_retries_per_second > 1_000_000 {
            return refuse("min_retries_per_second", "must be at most 1000000");
        }
        Ok(())
    }

    /// The retries allowed in a window holding `requests` requests.
    pub fn limit(&self, requests: u64) -> u64 {
        let reserve = u64::from(self.min_retries_per_second) * u64::from(self.window_seconds);
        // Truncation is the point: a fraction of a retry is no retry. The product is finite and non-negative.
        let earned = (self.ratio * requests as f64 + EPSILON).floor() as u64;
        earned.saturating_add(reserve)
    }
}

/// What the budget holds, for health replies and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryBudgetSnapshot {
    /// Requests recorded in the window.
    pub requests: u64,
    /// Retries granted in the window.
    pub retries: u64,
    /// Retries the window allows in all: `ratio * requests` rounded down, plus the reserve.
    pub limit: u64,
    /// Retries that would still be granted now.
    pub available: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    second: u64,
    requests: u64,
    retries: u64,
}

/// The retry budget of one route (or one node). Pure: time comes in as an argument.
#[derive(Debug, Clone)]
pub struct RetryBudget {
    config: RetryBudgetConfig,
    /// Bucket `s % len` holds second `s` while `s` is in the window.
    buckets: Vec<Bucket>,
    origin: Option<Instant>,
    /// The newest second recorded.
    head: u64,
}

impl RetryBudget {
    /// An empty budget, or the reason the configuration is unusable.
    pub fn new(config: RetryBudgetConfig) -> Result<Self, RetryConfigError> {
        config.validate()?;
        Ok(Self { config, buckets: vec![Bucket::default(); config.window_seconds as usize], origin: None, head: 0 })
    }

    pub fn config(&self) -> &RetryBudgetConfig {
        &self.config
    }

    /// Records one client request (not a retry) at `now`; every request earns `ratio` retries for the window.
    pub fn record_request(&mut self, now: Instant) {
        self.bucket(now).requests += 1;
    }

    /// Asks for one retry at `now`. When the budget allows it, the retry is recorded and `true` comes back.
    pub fn try_withdraw(&mut self, now: Instant) -> bool {
        self.origin.get_or_insert(now);
        let (requests, retries) = self.totals(self.second_of(now));
        if retries >= self.config.limit(requests) {
            return false;
        }
        self.bucket(now).retries += 1;
        true
    }

    pub fn snapshot(&self, now: Instant) -> RetryBudgetSnapshot {
        let (requests, retries) = self.totals(self.second_of(now));
        let limit = self.config.limit(requests);
        RetryBudgetSnapshot { requests, retries, limit, available: limit.saturating_sub(retries) }
    }

    /// The second `now` falls in, counted from the first event; never before the newest bucket.
    fn second_of(&self, now: Instant) -> u64 {
        self.origin.map_or(0, |origin| now.saturating_duration_since(origin).as_secs()).max(self.head)
    }

    /// The bucket of `now`, emptied first if it still held an older second.
    fn bucket(&mut self, now: Instant) -> &mut Bucket {
        self.origin.get_or_insert(now);
        let second = self.second_of(now);
        self.head = second;
        let len = self.buckets.len().max(1) as u64;
        let slot = (second % len) as usize;
        let bucket = &mut self.buckets[slot];
        if bucket.second != second {
            *bucket = Bucket { second, requests: 0, retries: 0 };
        }
        bucket
    }

    /// `(requests, retries)` in the window that ends with `second`.
    fn totals(&self, second: u64) -> (u64, u64) {
        let len = self.buckets.len() as u64;
        self.buckets
            .iter()
            .filter(|bucket| bucket.second + len > second)
            .fold((0, 0), |(requests, retries), bucket| (requests + bucket.requests, retries + bucket.retries))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn budget(ratio: f64, window_seconds: u32, min_retries_per_second: u32) -> RetryBudget {
        RetryBudget::new(RetryBudgetConfig { ratio, window_seconds, min_retries_per_second }).unwrap()
    }

    /// Records `requests` requests at `at`, then asks for retries until one is refused; returns the grants.
    fn grants(budget: &mut RetryBudget, at: Instant, requests: u64) -> u64 {
        (0..requests).for_each(|_| budget.record_request(at));
        let mut granted = 0;
        while granted < 100_000 && budget.try_withdraw(at) {
            granted += 1;
        }
        granted
    }

    #[test]
    fn allows_the_ratio_plus_the_reserve() {
        // (ratio, window, min per second, requests, retries granted)
        let rows = [
            (0.2, 10, 0, 100, 20),
            (0.2, 10, 0, 4, 0),
            (0.2, 10, 0, 5, 1),
            (0.2, 10, 1, 100, 30),
            (0.2, 10, 10, 0, 100),
            (0.2, 10, 10, 1_000, 300),
            (0.0, 5, 2, 1_000, 10),
            (1.5, 1, 0, 10, 15),
        ];
        for (ratio, window, min, requests, expected) in rows {
            let mut b = budget(ratio, window, min);
            let got = grants(&mut b, Instant::now(), requests);
            assert_eq!(got, expected, "ratio {ratio}, window {window}, min {min}, requests {requests}");
            let snapshot = b.snapshot(Instant::now());
            assert_eq!((snapshot.retries, snapshot.available), (expected, 0));
        }
    }

    #[test]
    fn the_default_is_twenty_percent_plus_ten_per_second() {
        let config = RetryBudgetConfig::default();
        assert_eq!((config.ratio, config.window_seconds, config.min_retries_per_second), (0.2, 10, 10));
        assert_eq!(config.limit(1_000), 300);
    }

    #[test]
    fn recovers_as_the_window_slides() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut b = budget(0.5, 3, 0);
        assert_eq!(grants(&mut b, at(0), 4), 2);
        // Seconds 1 and 2 still see second 0: no new requests, no new retries.
        assert!(!b.try_withdraw(at(2_999)));
        // New requests in second 2 earn retries while the old retries still count.
        assert_eq!(grants(&mut b, at(2_500), 6), 3);
        // Second 3: second 0 (4 requests, 2 retries) leaves the window; 6 requests and 3 retries remain.
        assert_eq!(b.snapshot(at(3_000)), RetryBudgetSnapshot { requests: 6, retries: 3, limit: 3, available: 0 });
        // Second 5: everything has left the window; two fresh requests earn one retry.
        assert_eq!(b.snapshot(at(5_000)), RetryBudgetSnapshot { requests: 0, retries: 0, limit: 0, available: 0 });
        assert_eq!(grants(&mut b, at(5_000), 2), 1);
    }

    #[test]
    fn an_event_from_the_past_lands_in_the_newest_bucket() {
        let t0 = Instant::now();
        let mut b = budget(1.0, 2, 0);
        b.record_request(t0 + Duration::from_secs(5));
        // Reported late, with a time of second 0: counted in second 5.
        b.record_request(t0);
        assert_eq!(b.snapshot(t0 + Duration::from_secs(6)).requests, 2);
        assert_eq!(b.snapshot(t0 + Duration::from_secs(7)).requests, 0);
    }

    #[test]
    fn bad_configs_name_the_field() {
        let check = |config: RetryBudgetConfig, field: &str| {
            assert_eq!(RetryBudget::new(config).map(|_| ()).unwrap_err().field, field);
        };
        let good = RetryBudgetConfig::default();
        check(RetryBudgetConfig { ratio: -0.1, ..good }, "ratio");
        check(RetryBudgetConfig { ratio: f64::NAN, ..good }, "ratio");
        check(RetryBudgetConfig { window_seconds: 0, ..good }, "window_seconds");
        check(RetryBudgetConfig { window_seconds: 61, ..good }, "window_seconds");
        check(RetryBudgetConfig { min_retries_per_second: 2_000_000, ..good }, "min_retries_per_second");
        assert!(good.validate().is_ok());
    }
}

#[cfg(test)]
mod props {
    //! Property tests: random configurations driven by random sequences of requests, retries and time steps.

    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Advance { ms: u64 },
        Requests { n: u64 },
        Retries { n: u64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u64..1_500).prop_map(|ms| Op::Advance { ms }),
            3 => (1u64..20).prop_map(|n| Op::Requests { n }),
            4 => (1u64..20).prop_map(|n| Op::Retries { n }),
        ]
    }

    fn config() -> impl Strategy<Value = RetryBudgetConfig> {
        let ratio = prop::sample::select(vec![0.0, 0.1, 0.2, 0.5, 1.0, 2.0]);
        (ratio, 1u32..6, 0u32..4).prop_map(|(ratio, window_seconds, min_retries_per_second)| RetryBudgetConfig {
            ratio,
            window_seconds,
            min_retries_per_second,
        })
    }

    proptest! {
        /// In any span of `window_seconds` seconds, the retries granted are at most `ratio` times the requests
        /// of that span and the `window_seconds - 1` seconds before it, plus `min_retries_per_second *
        /// window_seconds`; and at every grant, the window as the budget sees it is within its limit.
        #[test]
        fn retries_never_exceed_the_budget(config in config(), ops in prop::collection::vec(op(), 1..200)) {
            let mut budget = RetryBudget::new(config).unwrap();
            let t0 = Instant::now();
            let mut now = t0;
            let window = u64::from(config.window_seconds);
            // Events per second since t0 (the first event is at t0, so seconds match the budget's).
            let mut requests: Vec<u64> = Vec::new();
            let mut retries: Vec<u64> = Vec::new();
            let mut started = false;
            for op in ops {
                let second = now.duration_since(t0).as_secs() as usize;
                if requests.len() <= second {
                    requests.resize(second + 1, 0);
                    retries.resize(second + 1, 0);
                }
                match op {
                    Op::Advance { ms } => {
                        if started {
                            now += Duration::from_millis(ms);
                        }
                    }
                    Op::Requests { n } => {
                        started = true;
                        for _ in 0..n {
                            budget.record_request(now);
                        }
                        requests[second] += n;
                    }
                    Op::Retries { n } => {
                        started = true;
                        for _ in 0..n {
                            if budget.try_withdraw(now) {
                                retries[second] += 1;
                                let from = (second as u64 + 1).saturating_sub(window) as usize;
                                let seen_requests: u64 = requests[from..=second].iter().sum();
                                let seen_retries: u64 = retries[from..=second].iter().sum();
                                prop_assert!(seen_retries <= config.limit(seen_requests));
                            }
                        }
                    }
                }
            }
            let reserve = u64::from(config.min_retries_per_second) * window;
            let seconds = retries.len();
            for end in 0..seconds {
                let start = (end as u64 + 1).saturating_sub(window) as usize;
                let paid_from = (start as u64).saturating_sub(window - 1) as usize;
                let granted: u64 = retries[start..=end].iter().sum();
                let paying: u64 = requests[paid_from..=end].iter().sum();
                let bound = (config.ratio * paying as f64 + EPSILON).floor() as u64 + reserve;
                prop_assert!(granted <= bound, "seconds {start}..={end}: {granted} retries, {paying} requests");
            }
        }
    }
}
