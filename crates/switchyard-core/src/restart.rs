//! When a crashed actor is restarted, and when its supervisor gives up.
//!
//! OTP's rule: at most `max_restarts` within `period`; past that, restarting is pointless and the failure is
//! escalated. Between restarts the delay grows exponentially (with jitter supplied by the caller), so a child
//! that dies at start-up does not spin.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::Backoff;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    pub max_restarts: u32,
    pub period: Duration,
    pub backoff: Backoff,
}

/// What a supervisor should do about a child that just died.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartDecision {
    /// Restart after this delay.
    RestartAfter(Duration),
    /// The child died too often inside the period: give up and escalate.
    GiveUp,
}

/// The restart history of one child.
#[derive(Debug, Default, Clone)]
pub struct RestartTracker {
    recent: VecDeque<Instant>,
    total: u64,
}

impl RestartTracker {
    /// Records a death at `now` and decides; `unit` is a random number in `[0, 1)` for the jitter.
    pub fn on_death(&mut self, policy: &RestartPolicy, now: Instant, unit: f64) -> RestartDecision {
        while self.recent.front().is_some_and(|at| now.duration_since(*at) >= policy.period) {
            self.recent.pop_front();
        }
        if self.recent.len() as u32 >= policy.max_restarts {
            return RestartDecision::GiveUp;
        }
        let attempt = self.recent.len() as u32;
        self.recent.push_back(now);
        self.total += 1;
        // Half fixed, half jittered: never restart in a hot loop, never all children in lockstep.
        let ceiling = policy.backoff.ceiling(attempt);
        RestartDecision::RestartAfter(ceiling / 2 + ceiling.mul_f64(unit.clamp(0.0, 1.0) / 2.0))
    }

    /// Restarts granted so far, over the child's whole life.
    pub fn total(&self) -> u64 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            max_restarts: 3,
            period: Duration::from_secs(10),
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(1)),
        }
    }

    #[test]
    fn delays_grow_then_the_supervisor_gives_up() {
        let t0 = Instant::now();
        let mut tracker = RestartTracker::default();
        let decisions: Vec<_> = (0..4).map(|i| tracker.on_death(&policy(), t0 + Duration::from_secs(i), 0.0)).collect();
        assert_eq!(
            decisions,
            vec![
                RestartDecision::RestartAfter(Duration::from_millis(50)),
                RestartDecision::RestartAfter(Duration::from_millis(100)),
                RestartDecision::RestartAfter(Duration::from_millis(200)),
                RestartDecision::GiveUp,
            ]
        );
        assert_eq!(tracker.total(), 3);
    }

    #[test]
    fn old_deaths_leave_the_window() {
        let t0 = Instant::now();
        let mut tracker = RestartTracker::default();
        for i in 0..3 {
            tracker.on_death(&policy(), t0 + Duration::from_secs(i), 0.5);
        }
        let later = t0 + Duration::from_secs(12);
        assert!(matches!(tracker.on_death(&policy(), later, 0.5), RestartDecision::RestartAfter(_)));
    }
}
