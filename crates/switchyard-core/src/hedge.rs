//! Hedging: when a slow-but-healthy call gets a companion instead of a cut.
//!
//! LLM answers of 20 to 60 s are normal, so a router never cuts an attempt at a share of the client's deadline:
//! a provider is charged with a timeout only when it breaks its own limits (whole non-streaming call, first
//! token, idle gap between chunks). What a router does against a slow call is to *hedge*, as Envoy and "The Tail
//! at Scale" do: once the first attempt has run for the hedge delay, the next target of the route starts while
//! the first keeps running; the first complete answer wins and the other call is cancelled, never charged.
//!
//! The delay is the route's setting, or by default derived from the provider's observed latency: its p95 over
//! the last [`LatencyWindow::CAPACITY`] successful calls, so only the slowest ~5 % of calls are hedged. Until a
//! provider has [`LatencyWindow::MIN_SAMPLES`] samples the route's fallback delay applies. A hedge is an extra
//! call, so it is paid for from the retry budget (hedging cannot multiply load during an outage), and a query
//! hedges at most once.

use std::time::Duration;

/// How a route hedges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HedgePolicy {
    pub enabled: bool,
    /// A fixed delay; `None` derives it from the provider's p95.
    pub delay: Option<Duration>,
    /// The delay while a provider has too few samples for a p95.
    pub fallback_delay: Duration,
    /// The derived delay is never shorter than this (a p95 of 1 ms must not double every call).
    pub min_delay: Duration,
}

impl Default for HedgePolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            delay: None,
            fallback_delay: Duration::from_secs(10),
            min_delay: Duration::from_millis(50),
        }
    }
}

impl HedgePolicy {
    /// The hedge delay of a call to a provider whose recent latencies are `window`.
    pub fn delay_for(&self, window: &LatencyWindow) -> Option<Duration> {
        if !self.enabled {
            return None;
        }
        Some(match self.delay {
            Some(fixed) => fixed,
            None => window.quantile(0.95).map_or(self.fallback_delay, |p95| p95.max(self.min_delay)),
        })
    }
}

/// The latencies of a provider's last successful calls, in a ring.
#[derive(Debug, Clone, Default)]
pub struct LatencyWindow {
    samples_us: Vec<u64>,
    next: usize,
    /// The p95 computed at the last refresh, with the count of samples added since.
    cached_p95: Option<Duration>,
    since_refresh: usize,
}

impl LatencyWindow {
    /// Samples kept.
    pub const CAPACITY: usize = 256;
    /// Samples needed before a quantile is trusted.
    pub const MIN_SAMPLES: usize = 20;
    /// The p95 is recomputed after this many new samples (selecting from 256 values on every query would be waste).
    const REFRESH_EVERY: usize = 16;

    pub fn record(&mut self, latency: Duration) {
        let us = latency.as_micros().min(u128::from(u64::MAX)) as u64;
        if self.samples_us.len() < Self::CAPACITY {
            self.samples_us.push(us);
        } else {
            self.samples_us[self.next] = us;
        }
        self.next = (self.next + 1) % Self::CAPACITY;
        self.since_refresh += 1;
        if self.cached_p95.is_none() && self.samples_us.len() >= Self::MIN_SAMPLES
            || self.since_refresh >= Self::REFRESH_EVERY
        {
            self.cached_p95 = self.compute(0.95);
            self.since_refresh = 0;
        }
    }

    pub fn len(&self) -> usize {
        self.samples_us.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples_us.is_empty()
    }

    /// The `q` quantile (nearest rank) of the window, `None` below [`Self::MIN_SAMPLES`]; the p95 is cached.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if (q - 0.95).abs() < f64::EPSILON {
            return self.cached_p95;
        }
        self.compute(q)
    }

    fn compute(&self, q: f64) -> Option<Duration> {
        if self.samples_us.len() < Self::MIN_SAMPLES {
            return None;
        }
        let mut samples = self.samples_us.clone();
        let rank = ((q.clamp(0.0, 1.0) * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
        // The rank-th smallest, without sorting the rest (linear, where a sort is n log n).
        let (_, nth, _) = samples.select_nth_unstable(rank - 1);
        Some(Duration::from_micros(*nth))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn window(latencies_ms: impl IntoIterator<Item = u64>) -> LatencyWindow {
        let mut window = LatencyWindow::default();
        for latency in latencies_ms {
            window.record(ms(latency));
        }
        window
    }

    #[test]
    fn no_quantile_below_the_minimum_samples() {
        let few = window(1..LatencyWindow::MIN_SAMPLES as u64);
        assert_eq!(few.quantile(0.95), None);
        assert_eq!(few.quantile(0.5), None);
        let policy = HedgePolicy::default();
        assert_eq!(policy.delay_for(&few), Some(policy.fallback_delay));
    }

    #[test]
    fn the_delay_is_the_p95_of_the_window() {
        let hundred = window(1..=100);
        assert_eq!(hundred.quantile(0.95), Some(ms(95)));
        assert_eq!(hundred.quantile(0.5), Some(ms(50)));
        assert_eq!(HedgePolicy::default().delay_for(&hundred), Some(ms(95)));
    }

    #[test]
    fn a_quantile_does_not_depend_on_the_order_of_the_samples() {
        // 1..=100 ms scrambled (37 is coprime with 101).
        let scrambled = window((1..=100u64).map(|i| (i * 37) % 101));
        for (q, expected) in [(0.0, 1), (0.5, 50), (0.95, 95), (0.99, 99), (1.0, 100)] {
            assert_eq!(scrambled.quantile(q), Some(ms(expected)), "q = {q}");
        }
    }

    #[test]
    fn old_samples_leave_the_window() {
        let mut w = window(std::iter::repeat_n(1_000, LatencyWindow::CAPACITY));
        assert_eq!(w.quantile(0.95), Some(ms(1_000)));
        for _ in 0..LatencyWindow::CAPACITY {
            w.record(ms(100));
        }
        assert_eq!(w.len(), LatencyWindow::CAPACITY);
        assert_eq!(w.quantile(0.95), Some(ms(100)));
    }

    #[test]
    fn a_fixed_delay_wins_a_floor_holds_and_disabled_means_never() {
        let fast = window(std::iter::repeat_n(1, 50));
        let policy = HedgePolicy::default();
        assert_eq!(policy.delay_for(&fast), Some(policy.min_delay));
        let fixed = HedgePolicy { delay: Some(ms(700)), ..policy };
        assert_eq!(fixed.delay_for(&fast), Some(ms(700)));
        let off = HedgePolicy { enabled: false, ..policy };
        assert_eq!(off.delay_for(&fast), None);
    }
}
