//! Exponential backoff with full jitter.
//!
//! `delay(attempt, unit)` grows as `base * 2^attempt` up to `max`, and full jitter picks a point uniformly in
//! `[0, that]` using the caller's random `unit` in `[0, 1)` (the AWS "full jitter" scheme, also used by linkerd's
//! `exp-backoff`). The caller owns the random source, so the maths stays pure.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self { base, max: max.max(base) }
    }

    /// The ceiling for `attempt` (0-based): `min(max, base * 2^attempt)`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base.checked_mul(factor).map_or(self.max, |d| d.min(self.max))
    }

    /// A fully jittered delay for `attempt`; `unit` is a random number in `[0, 1)`.
    pub fn jittered(&self, attempt: u32, unit: f64) -> Duration {
        self.ceiling(attempt).mul_f64(unit.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_up_to_the_cap() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let ms = |a| b.ceiling(a).as_millis();
        assert_eq!([ms(0), ms(1), ms(2), ms(3), ms(4), ms(40)], [100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn jitter_stays_inside_the_ceiling() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(b.jittered(2, 0.0), Duration::ZERO);
        assert_eq!(b.jittered(2, 0.5), Duration::from_millis(200));
        assert!(b.jittered(2, 0.999_999) <= Duration::from_millis(400));
    }
}
