//! Table tests of [`RetryPolicy::decide`] and of the policy's validation.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests panic on failure")]

use super::*;

const RETRYABLE: FailureClass = FailureClass::Retryable;
const LIMITED: FailureClass = FailureClass::RateLimited { retry_after: None };

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn limited_after(after: u64) -> FailureClass {
    FailureClass::RateLimited { retry_after: Some(ms(after)) }
}

fn retry(after: u64) -> RetryDecision {
    RetryDecision::RetrySameAfter(ms(after))
}

const NEXT: RetryDecision = RetryDecision::NextProvider;
const GIVE_UP: RetryDecision = RetryDecision::GiveUp;

/// One decision: `(attempt, class, remaining ms, chunks forwarded, unit) -> expected`.
type Row = (u32, FailureClass, u64, bool, f64, RetryDecision);

#[track_caller]
fn check(policy: RetryPolicy, rows: &[Row]) {
    policy.validate().unwrap();
    for &(attempt, class, remaining, chunks, unit, expect) in rows {
        let got = policy.decide(attempt, class, ms(remaining), chunks, unit);
        assert_eq!(got, expect, "attempt {attempt}, {class:?}, {remaining} ms left, chunks {chunks}, unit {unit}");
    }
}

fn policy(max_attempts: u32) -> RetryPolicy {
    RetryPolicy { max_attempts, ..RetryPolicy::default() }
}

#[test]
fn the_defaults() {
    let p = RetryPolicy::default();
    assert_eq!(p.max_attempts, 2);
    assert_eq!(p.retry_on, RetryOn { retryable: true, rate_limited: true });
    assert_eq!(p.backoff, Backoff::new(ms(100), ms(2_000)));
    assert_eq!(p.rate_limited_floor, ms(1_000));
    assert!(p.validate().is_ok());
}

#[test]
fn only_transient_failures_are_retried_on_the_same_provider() {
    check(
        RetryPolicy::default(),
        &[
            (1, RETRYABLE, 10_000, false, 0.5, retry(50)),
            (1, LIMITED, 10_000, false, 0.5, retry(1_000)),
            (1, FailureClass::Fatal { auth: true }, 10_000, false, 0.5, NEXT),
            (1, FailureClass::ContextWindowExceeded, 10_000, false, 0.5, NEXT),
            (1, FailureClass::ContentPolicy, 10_000, false, 0.5, NEXT),
            (1, FailureClass::Fatal { auth: false }, 10_000, false, 0.5, GIVE_UP),
            (1, FailureClass::Cancelled, 10_000, false, 0.5, GIVE_UP),
        ],
    );
    // Switching a class off sends it to the next provider.
    let only_5xx = RetryPolicy { retry_on: RetryOn { retryable: true, rate_limited: false }, ..RetryPolicy::default() };
    check(only_5xx, &[(1, RETRYABLE, 10_000, false, 0.0, retry(0)), (1, LIMITED, 10_000, false, 0.0, NEXT)]);
    let only_429 = RetryPolicy { retry_on: RetryOn { retryable: false, rate_limited: true }, ..RetryPolicy::default() };
    check(only_429, &[(1, RETRYABLE, 10_000, false, 0.0, NEXT), (1, LIMITED, 10_000, false, 0.0, retry(1_000))]);
}

#[test]
fn attempts_are_capped_per_provider_and_the_backoff_grows() {
    check(
        policy(4),
        &[
            // Full jitter: uniform in [0, 100 ms * 2^(attempt-1)].
            (1, RETRYABLE, 10_000, false, 0.0, retry(0)),
            (1, RETRYABLE, 10_000, false, 0.999, RetryDecision::RetrySameAfter(ms(100).mul_f64(0.999))),
            (2, RETRYABLE, 10_000, false, 0.5, retry(100)),
            (3, RETRYABLE, 10_000, false, 0.5, retry(200)),
            (4, RETRYABLE, 10_000, false, 0.5, NEXT),
            // Attempt 0 is read as the first.
            (0, RETRYABLE, 10_000, false, 0.5, retry(50)),
            // A unit out of range or not a number stays inside the ceiling.
            (1, RETRYABLE, 10_000, false, 7.0, retry(100)),
            (1, RETRYABLE, 10_000, false, f64::NAN, retry(0)),
        ],
    );
    check(policy(1), &[(1, RETRYABLE, 10_000, false, 0.5, NEXT), (1, LIMITED, 10_000, false, 0.5, NEXT)]);
    // The ceiling stops at backoff.max (2 s).
    check(policy(10), &[(9, RETRYABLE, 10_000, false, 1.0, retry(2_000))]);
}

#[test]
fn retry_after_is_a_floor() {
    check(
        RetryPolicy::default(),
        &[
            // Longer than the jittered backoff: the provider's hint wins.
            (1, limited_after(3_000), 10_000, false, 0.5, retry(3_000)),
            // Shorter than the breaker's 1 s cooldown: the cooldown wins.
            (1, limited_after(200), 10_000, false, 0.5, retry(1_000)),
            (1, limited_after(0), 10_000, false, 0.5, retry(1_000)),
            // Beyond max_retry_after (5 s): not waited for.
            (1, limited_after(5_000), 10_000, false, 0.5, retry(5_000)),
            (1, limited_after(5_001), 10_000, false, 0.5, NEXT),
        ],
    );
    // With a floor below the backoff, the backoff wins.
    let low_floor = RetryPolicy {
        rate_limited_floor: ms(10),
        backoff: Backoff::new(ms(1_000), ms(4_000)),
        max_attempts: 3,
        ..RetryPolicy::default()
    };
    check(
        low_floor,
        &[
            (2, limited_after(300), 10_000, false, 0.5, retry(1_000)),
            (2, limited_after(1_500), 10_000, false, 0.5, retry(1_500)),
            (1, LIMITED, 10_000, false, 0.0, retry(10)),
        ],
    );
}

#[test]
fn a_delay_that_reaches_the_deadline_goes_to_the_next_provider() {
    check(
        RetryPolicy::default(),
        &[
            (1, RETRYABLE, 51, false, 0.5, retry(50)),
            (1, RETRYABLE, 50, false, 0.5, NEXT),
            (1, RETRYABLE, 10, false, 0.5, NEXT),
            (1, limited_after(3_000), 2_999, false, 0.0, NEXT),
            (1, limited_after(3_000), 3_001, false, 0.0, retry(3_000)),
            (1, LIMITED, 999, false, 0.0, NEXT),
            // A zero delay fits any time left, however short.
            (1, RETRYABLE, 1, false, 0.0, retry(0)),
            // No time left at all: nothing can answer any more.
            (1, RETRYABLE, 0, false, 0.0, GIVE_UP),
            (1, FailureClass::ContextWindowExceeded, 0, false, 0.0, GIVE_UP),
        ],
    );
}

#[test]
fn a_stream_is_never_retried_after_its_first_chunk() {
    check(
        RetryPolicy::default(),
        &[
            (1, RETRYABLE, 10_000, true, 0.5, GIVE_UP),
            (1, LIMITED, 10_000, true, 0.5, GIVE_UP),
            (1, FailureClass::ContextWindowExceeded, 10_000, true, 0.5, GIVE_UP),
            (1, FailureClass::Fatal { auth: true }, 10_000, true, 0.5, GIVE_UP),
            (1, RETRYABLE, 10_000, false, 0.5, retry(50)),
        ],
    );
}

#[test]
fn bad_policies_name_the_field() {
    let check = |policy: RetryPolicy, field: &str| assert_eq!(policy.validate().unwrap_err().field, field);
    let good = RetryPolicy::default();
    check(RetryPolicy { max_attempts: 0, ..good }, "max_attempts");
    check(RetryPolicy { max_attempts: 11, ..good }, "max_attempts");
    check(RetryPolicy { backoff: Backoff { base: Duration::ZERO, max: ms(10) }, ..good }, "backoff.base");
    check(RetryPolicy { backoff: Backoff { base: ms(10), max: ms(5) }, ..good }, "backoff.max");
    check(RetryPolicy { backoff: Backoff::new(ms(10), MAX_RETRY_WAIT + ms(1)), ..good }, "backoff.max");
    check(RetryPolicy { max_retry_after: MAX_RETRY_WAIT + ms(1), ..good }, "max_retry_after");
    check(RetryPolicy { rate_limited_floor: ms(6_000), ..good }, "rate_limited_floor");
    let error = RetryPolicy { max_attempts: 0, ..good }.validate().unwrap_err();
    assert_eq!(error.to_string(), "invalid retry config: max_attempts must be between 1 and 10 (1 means no retry)");
}

#[test]
fn decisions_have_stable_names() {
    assert_eq!([retry(1).as_str(), NEXT.as_str(), GIVE_UP.as_str()], ["retry_same", "next_provider", "give_up"]);
}
