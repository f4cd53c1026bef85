//! The peak-EWMA latency estimate of one group member, after Finagle's `PeakEwma` and tower's (linkerd's)
//! `load::PeakEwma`.
//!
//! A slower observation than the current estimate replaces it at once (the peak), so a member that turns slow
//! is avoided at the first slow answer. A faster one pulls the estimate toward itself by `1 - e^(-dt/tau)`,
//! where `dt` is the time since the previous update, so a fast answer right after a slow one barely counts and
//! one after a long quiet counts almost fully. While nothing is observed the estimate decays with the same time
//! constant, as in Finagle and linkerd; the one difference is where it decays to: linkerd and Finagle decay
//! toward zero, which makes a member that was excluded for a while (an open breaker) look infinitely fast when
//! it returns, and every pick that draws it lands on it until its first answer arrives, many seconds later for
//! an LLM. Here an idle estimate decays toward `default_latency`, the same prior a member starts with, so a
//! returning member is neither punished for an old peak nor flooded.

use std::time::{Duration, Instant};

/// One member's latency estimate, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct PeakEwma {
    /// The estimate at `updated_at`, in seconds; meaningless before the first observation.
    estimate: f64,
    updated_at: Option<Instant>,
}

impl PeakEwma {
    /// The estimate at `now`, in seconds: `prior` before any observation, then the last estimate decayed toward
    /// `prior` with time constant `tau`.
    pub fn value(&self, now: Instant, tau: Duration, prior: Duration) -> f64 {
        let prior = prior.as_secs_f64();
        match self.updated_at {
            None => prior,
            Some(at) => prior + (self.estimate - prior) * weight(now.saturating_duration_since(at), tau),
        }
    }

    /// Folds in one observed latency at `now`. An observation reported with a time before the last update counts
    /// as made at the same instant.
    pub fn observe(&mut self, latency: Duration, now: Instant, tau: Duration, prior: Duration) {
        let latency = latency.as_secs_f64();
        let Some(at) = self.updated_at else {
            self.estimate = latency;
            self.updated_at = Some(now);
            return;
        };
        let w = weight(now.saturating_duration_since(at), tau);
        let current = self.value(now, tau, prior);
        self.estimate = if latency >= current { latency } else { current * w + latency * (1.0 - w) };
        self.updated_at = Some(at.max(now));
    }
}

/// `e^(-elapsed/tau)`: how much of the past survives `elapsed`.
fn weight(elapsed: Duration, tau: Duration) -> f64 {
    let tau = tau.as_secs_f64();
    if tau <= 0.0 {
        return 0.0;
    }
    (-elapsed.as_secs_f64() / tau).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAU: Duration = Duration::from_secs(10);
    const PRIOR: Duration = Duration::from_secs(1);

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn starts_at_the_prior_and_takes_the_first_observation() {
        let t0 = Instant::now();
        let mut e = PeakEwma::default();
        assert!(close(e.value(t0, TAU, PRIOR), 1.0));
        e.observe(Duration::from_millis(300), t0, TAU, PRIOR);
        assert!(close(e.value(t0, TAU, PRIOR), 0.3));
    }

    #[test]
    fn a_peak_replaces_the_estimate_and_a_lower_value_moves_it_with_time() {
        let t0 = Instant::now();
        let mut e = PeakEwma::default();
        e.observe(Duration::from_secs(2), t0, TAU, PRIOR);
        e.observe(Duration::from_secs(5), t0 + Duration::from_millis(1), TAU, PRIOR);
        assert!(close(e.value(t0 + Duration::from_millis(1), TAU, PRIOR), 5.0));
        // Right after the peak a fast answer barely counts.
        let mut quick = e;
        quick.observe(Duration::from_millis(100), t0 + Duration::from_millis(1), TAU, PRIOR);
        assert!(close(quick.value(t0 + Duration::from_millis(1), TAU, PRIOR), 5.0));
        // One tau later: the estimate has decayed toward the prior, then moves toward the observation.
        let later = t0 + Duration::from_millis(1) + TAU;
        let w = (-1.0f64).exp();
        let decayed = 1.0 + 4.0 * w;
        assert!(close(e.value(later, TAU, PRIOR), decayed));
        e.observe(Duration::from_millis(100), later, TAU, PRIOR);
        assert!(close(e.value(later, TAU, PRIOR), decayed * w + 0.1 * (1.0 - w)));
    }

    #[test]
    fn an_idle_estimate_returns_to_the_prior() {
        let t0 = Instant::now();
        let mut slow = PeakEwma::default();
        slow.observe(Duration::from_secs(30), t0, TAU, PRIOR);
        let mut fast = PeakEwma::default();
        fast.observe(Duration::from_millis(10), t0, TAU, PRIOR);
        let much_later = t0 + Duration::from_secs(600);
        assert!(close(slow.value(much_later, TAU, PRIOR), 1.0));
        assert!(close(fast.value(much_later, TAU, PRIOR), 1.0));
    }
}
