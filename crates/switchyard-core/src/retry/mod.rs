//! Retries and fallbacks: what to do after one upstream call failed.
//!
//! Availability routing keeps a query alive in three layers, and this module holds the first two (the third is
//! the per-provider [`crate::Breaker`]):
//!
//! 1. **Retry the same provider** ([`RetryPolicy::decide`]). Only transient failures are retried there:
//!    `Retryable` and `RateLimited` by default, never `Fatal`, `ContextWindowExceeded`, `ContentPolicy` or
//!    `Cancelled` (the policy cannot even express it). A provider gets at most `max_attempts` calls per request.
//!    The wait is exponential with full jitter (the AWS scheme, as in [`crate::Backoff`]), and for a 429 it is
//!    never shorter than the provider's `Retry-After`, nor than the cooldown the 429 opened on the provider's
//!    breaker. A retry that could not start before the client's deadline is not scheduled: the request moves on
//!    to the next provider instead. A stream whose first chunk already reached the client is never retried nor
//!    sent elsewhere, because the client would see the answer twice.
//! 2. **Fall back to another provider** ([`FallbackChains::next`]). A route has a generic chain and two special
//!    ones, used after a context-window or a content-policy failure (as LiteLLM's `context_window_fallbacks` and
//!    `content_policy_fallbacks`); no provider is tried twice and a request tries at most `max_depth` providers.
//!
//! Retries are also capped across requests by a [`RetryBudget`] (Finagle's `RetryBudget`, linkerd's and Envoy's
//! retry budgets): retries may add about 20 % to the requests of the last 10 s, plus a small reserve so that a
//! quiet route can still retry. A budget stops a retry storm from multiplying the load on a provider that is
//! already struggling. Fallbacks do not draw on it: they leave the struggling provider alone, and `max_depth`
//! bounds them.
//!
//! How the runtime composes the pieces for one request:
//!
//! ```text
//! budget.record_request(now)
//! provider = chains.next(&tried, None)
//! loop: call provider (attempt n)
//!   success                   -> answer
//!   failure class             -> policy.decide(n, class, remaining, chunks_forwarded, unit)
//!     RetrySameAfter(delay)   -> if budget.try_withdraw(now) { wait delay; n += 1 } else { as NextProvider }
//!     NextProvider            -> provider = chains.next(&tried, Some(class)), n = 1; none left -> error
//!     GiveUp                  -> error
//! ```
//!
//! Everything here is pure: the remaining deadline, the time and the random `unit` for the jitter are arguments.

mod budget;
mod fallback;

use std::time::Duration;

pub use budget::{RetryBudget, RetryBudgetConfig, RetryBudgetSnapshot};
pub use fallback::FallbackChains;

use crate::{Backoff, FailureClass, breaker::MIN_RATE_LIMIT_COOLDOWN};

/// The longest backoff ceiling or `Retry-After` a retry policy may be configured with.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(60 * 60);

/// Which transient failures are retried on the same provider. Every other class is never retried there, so the
/// policy has no switch for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryOn {
    /// 5xx, 529, timeouts, connection resets. Default: on.
    pub retryable: bool,
    /// 429. Default: on.
    pub rate_limited: bool,
}

impl Default for RetryOn {
    fn default() -> Self {
        Self { retryable: true, rate_limited: true }
    }
}

impl RetryOn {
    /// Whether a failure of `class` may be retried on the same provider.
    pub fn covers(&self, class: FailureClass) -> bool {
        match class {
            FailureClass::Retryable => self.retryable,
            FailureClass::RateLimited { .. } => self.rate_limited,
            FailureClass::Fatal { .. }
            | FailureClass::ContextWindowExceeded
            | FailureClass::ContentPolicy
            | FailureClass::Cancelled => false,
        }
    }
}

/// When and how a failed call is retried on the same provider. See the module documentation for the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Calls per provider and request, the first one included. Default: 2 (one retry).
    pub max_attempts: u32,
    /// The failures retried on the same provider. Default: `Retryable` and `RateLimited`.
    pub retry_on: RetryOn,
    /// The jittered wait before retry `n` (1-based) is uniform in `[0, min(max, base * 2^(n-1))]`.
    /// Default: 100 ms doubling up to 2 s.
    pub backoff: Backoff,
    /// The shortest wait before retrying a 429, with or without `Retry-After`. Default: 1 s, the cooldown a 429
    /// opens on the provider's breaker ([`MIN_RATE_LIMIT_COOLDOWN`]): an earlier retry would only be refused.
    pub rate_limited_floor: Duration,
    /// A provider asking, through `Retry-After`, for a longer wait than this is not waited for: the request moves
    /// to the next provider. Default: 5 s.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 2,
            retry_on: RetryOn::default(),
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(2)),
            rate_limited_floor: MIN_RATE_LIMIT_COOLDOWN,
            max_retry_after: Duration::from_secs(5),
        }
    }
}

/// A retry, budget or fallback setting that cannot work.
pub type RetryConfigError = crate::InvalidSetting;

/// `Err` naming `field` and `reason`; shared by the validators of this module.
fn refuse(field: &'static str, reason: &'static str) -> Result<(), RetryConfigError> {
    Err(crate::InvalidSetting { component: "retry", field, reason })
}

/// What to do after a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum RetryDecision {
    /// Call the same provider again after this delay (if the [`RetryBudget`] allows it).
    RetrySameAfter(Duration),
    /// Leave this provider; [`FallbackChains::next`] says which one is next.
    NextProvider,
    /// Answer the client with the error: nothing else can help.
    GiveUp,
}

impl RetryDecision {
    /// A stable lowercase name, used in traces.
    pub fn as_str(&self) -> &'static str {
        match self {
            RetryDecision::RetrySameAfter(_) => "retry_same",
            RetryDecision::NextProvider => "next_provider",
            RetryDecision::GiveUp => "give_up",
        }
    }
}

impl RetryPolicy {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), RetryConfigError> {
        if !(1..=10).contains(&self.max_attempts) {
            return refuse("max_attempts", "must be between 1 and 10 (1 means no retry)");
        }
        if self.backoff.base.is_zero() {
            return refuse("backoff.base", "must be positive");
        }
        if self.backoff.max < self.backoff.base {
            return refuse("backoff.max", "must be at least backoff.base");
        }
        if self.backoff.max > MAX_RETRY_WAIT {
            return refuse("backoff.max", "must be at most 1 h");
        }
        if self.max_retry_after > MAX_RETRY_WAIT {
            return refuse("max_retry_after", "must be at most 1 h");
        }
        if self.rate_limited_floor > self.max_retry_after {
            return refuse("rate_limited_floor", "must not exceed max_retry_after, or no 429 could be retried");
        }
        Ok(())
    }

    /// Decides what follows a failed call.
    ///
    /// `attempt` counts this provider's calls for the request, the failed one included (1 after the first
    /// failure; 0 is read as 1). `remaining` is the time left before the client's deadline. `chunks_forwarded`
    /// says whether part of a streamed answer already reached the client. `unit` is a random number in `[0, 1)`
    /// for the jitter.
    ///
    /// In order: a stream with forwarded chunks, an expired deadline, a malformed request (`Fatal` without
    /// `auth`) and a cancellation give up; a failure the policy does not retry (including an auth failure, a
    /// context-window or a content-policy refusal), an exhausted attempt count, a `Retry-After` beyond
    /// `max_retry_after`, or a delay that reaches the deadline move to the next provider; anything else is
    /// retried after `max(jittered backoff, floor)`, where the floor of a 429 is
    /// `max(Retry-After, rate_limited_floor)` and 0 otherwise.
    pub fn decide(
        &self,
        attempt: u32,
        class: FailureClass,
        remaining: Duration,
        chunks_forwarded: bool,
        unit: f64,
    ) -> RetryDecision {
        if chunks_forwarded || remaining.is_zero() || !class.worth_falling_back() {
            return RetryDecision::GiveUp;
        }
        let attempt = attempt.max(1);
        if !self.retry_on.covers(class) || attempt >= self.max_attempts {
            return RetryDecision::NextProvider;
        }
        let floor = match class {
            FailureClass::RateLimited { retry_after } => {
                let asked = retry_after.unwrap_or(Duration::ZERO);
                if asked > self.max_retry_after {
                    return RetryDecision::NextProvider;
                }
                asked.max(self.rate_limited_floor)
            }
            _ => Duration::ZERO,
        };
        let unit = if unit.is_finite() { unit } else { 0.0 };
        let delay = self.backoff.jittered(attempt - 1, unit).max(floor);
        // A retry that starts at the deadline has no time left to answer.
        if delay >= remaining {
            return RetryDecision::NextProvider;
        }
        RetryDecision::RetrySameAfter(delay)
    }
}

#[cfg(test)]
mod tests;
