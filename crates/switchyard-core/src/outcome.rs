//! What happened to one upstream call, classified once.
//!
//! Provider clients map HTTP statuses, headers, stream error events and transport errors into a [`FailureClass`]
//! exactly once; everything downstream (fallback, retries, breakers) matches on this enum and never on an HTTP
//! code.

use std::time::Duration;

/// Why an upstream call did not produce an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// Transient trouble worth another attempt: 5xx, 529, 408, 409, timeouts, connection resets.
    Retryable,
    /// The provider asked us to slow down; `retry_after` is its hint, when it gave one.
    RateLimited { retry_after: Option<Duration> },
    /// The request can never succeed at this provider as sent: 400, 404, 413, quota exhausted, or, with
    /// `auth = true`, 401/403 (the provider is misconfigured).
    Fatal { auth: bool },
    /// The prompt does not fit the model's context window; a larger-context fallback may succeed.
    ContextWindowExceeded,
    /// The provider refused the content; a content-policy fallback may succeed.
    ContentPolicy,
    /// The caller gave up (deadline or cancellation); says nothing about the provider's health.
    Cancelled,
}

impl FailureClass {
    /// A stable lowercase name, used in traces and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            FailureClass::Retryable => "retryable",
            FailureClass::RateLimited { .. } => "rate_limited",
            FailureClass::Fatal { auth: true } => "auth",
            FailureClass::Fatal { auth: false } => "fatal",
            FailureClass::ContextWindowExceeded => "context_window_exceeded",
            FailureClass::ContentPolicy => "content_policy",
            FailureClass::Cancelled => "cancelled",
        }
    }

    /// Whether another provider (or a later attempt) might answer the same request.
    ///
    /// Only a fatal non-auth failure (a malformed request, say) is the request's own fault everywhere; an auth
    /// failure is one provider's misconfiguration, so another provider may well answer.
    pub fn worth_falling_back(&self) -> bool {
        !matches!(self, FailureClass::Fatal { auth: false } | FailureClass::Cancelled)
    }
}

/// The outcome of one upstream call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure(FailureClass),
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure(class) => class.as_str(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable() {
        let check = |class: FailureClass, name: &str| assert_eq!(class.as_str(), name);
        check(FailureClass::Retryable, "retryable");
        check(FailureClass::RateLimited { retry_after: None }, "rate_limited");
        check(FailureClass::Fatal { auth: true }, "auth");
        check(FailureClass::Fatal { auth: false }, "fatal");
        check(FailureClass::ContextWindowExceeded, "context_window_exceeded");
        check(FailureClass::ContentPolicy, "content_policy");
        check(FailureClass::Cancelled, "cancelled");
        assert_eq!(Outcome::Success.as_str(), "success");
    }

    #[test]
    fn a_malformed_request_is_not_retried_elsewhere() {
        assert!(!FailureClass::Fatal { auth: false }.worth_falling_back());
        assert!(FailureClass::Fatal { auth: true }.worth_falling_back());
        assert!(FailureClass::Retryable.worth_falling_back());
        assert!(FailureClass::ContextWindowExceeded.worth_falling_back());
    }
}
