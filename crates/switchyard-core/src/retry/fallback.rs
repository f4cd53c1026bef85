//! Fallback chains: which provider a request tries next once it leaves one.
//!
//! A route names three chains, after LiteLLM's `fallbacks`, `context_window_fallbacks` and
//! `content_policy_fallbacks`. After a context-window failure the next provider comes from the context-window
//! chain (models with a larger window), after a content-policy refusal from the content-policy chain, and
//! otherwise, or once the special chain is used up, from the generic chain, whose first entry is the route's
//! primary provider. A provider already tried is never tried again, a request tries at most `max_depth`
//! providers in all (the primary included), and a failure no provider can fix (a malformed request, a
//! cancellation) ends the walk.

use crate::FailureClass;

use super::{RetryConfigError, refuse};

/// The fallback chains of one route. See the module documentation for the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FallbackChains {
    /// The providers in order of preference, the primary first.
    pub generic: Vec<String>,
    /// Tried first after `ContextWindowExceeded`.
    pub context_window: Vec<String>,
    /// Tried first after `ContentPolicy`.
    pub content_policy: Vec<String>,
    /// The most providers one request may try, the primary included, and those skipped without a call (an open
    /// breaker) too: the cap bounds the walk, not only the calls. Default: 3.
    pub max_depth: usize,
}

impl Default for FallbackChains {
    fn default() -> Self {
        Self { generic: Vec::new(), context_window: Vec::new(), content_policy: Vec::new(), max_depth: 3 }
    }
}

impl FallbackChains {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), RetryConfigError> {
        if self.generic.is_empty() {
            return refuse("generic", "must name at least the primary provider");
        }
        for (field, chain) in [
            ("generic", &self.generic),
            ("context_window", &self.context_window),
            ("content_policy", &self.content_policy),
        ] {
            if chain.iter().any(String::is_empty) {
                return refuse(field, "must not contain an empty provider name");
            }
        }
        if !(1..=32).contains(&self.max_depth) {
            return refuse("max_depth", "must be between 1 and 32");
        }
        Ok(())
    }

    /// The next provider to try, given the providers `tried` so far (in any order) and the failure of the last
    /// one (`None` before the first call, or when the last provider was skipped without a call, say because its
    /// breaker was open). `None` when the walk is over.
    pub fn next(&self, tried: &[String], last_failure: Option<FailureClass>) -> Option<String> {
        if last_failure.is_some_and(|class| !class.worth_falling_back()) {
            return None;
        }
        let distinct = tried.iter().enumerate().filter(|(i, name)| !tried[..*i].contains(name)).count();
        if distinct >= self.max_depth {
            return None;
        }
        let special: &[String] = match last_failure {
            Some(FailureClass::ContextWindowExceeded) => &self.context_window,
            Some(FailureClass::ContentPolicy) => &self.content_policy,
            _ => &[],
        };
        special.iter().chain(&self.generic).find(|name| !tried.contains(name)).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &str) -> Vec<String> {
        list.split_whitespace().map(str::to_owned).collect()
    }

    fn chains(max_depth: usize) -> FallbackChains {
        FallbackChains {
            generic: names("gpt claude mistral llama"),
            context_window: names("gemini claude"),
            content_policy: names("llama"),
            max_depth,
        }
    }

    #[track_caller]
    fn check(chains: &FallbackChains, tried: &str, last: Option<FailureClass>, expect: Option<&str>) {
        assert_eq!(chains.next(&names(tried), last).as_deref(), expect, "tried [{tried}] after {last:?}");
    }

    #[test]
    fn the_failure_picks_the_chain() {
        let c = chains(10);
        check(&c, "", None, Some("gpt"));
        check(&c, "gpt", Some(FailureClass::Retryable), Some("claude"));
        check(&c, "gpt", Some(FailureClass::RateLimited { retry_after: None }), Some("claude"));
        check(&c, "gpt", Some(FailureClass::Fatal { auth: true }), Some("claude"));
        check(&c, "gpt", None, Some("claude"));
        check(&c, "gpt", Some(FailureClass::ContextWindowExceeded), Some("gemini"));
        check(&c, "gpt", Some(FailureClass::ContentPolicy), Some("llama"));
    }

    #[test]
    fn never_a_provider_already_tried() {
        let c = chains(10);
        check(&c, "gpt gemini", Some(FailureClass::ContextWindowExceeded), Some("claude"));
        // The special chain used up, the generic chain goes on.
        check(&c, "gpt gemini claude", Some(FailureClass::ContextWindowExceeded), Some("mistral"));
        check(&c, "gpt llama", Some(FailureClass::ContentPolicy), Some("claude"));
        check(&c, "claude gpt", Some(FailureClass::Retryable), Some("mistral"));
        check(&c, "gpt claude mistral llama", Some(FailureClass::Retryable), None);
        check(&c, "gpt claude mistral llama gemini", Some(FailureClass::ContextWindowExceeded), None);
    }

    #[test]
    fn stops_at_max_depth() {
        let c = chains(2);
        check(&c, "gpt", Some(FailureClass::Retryable), Some("claude"));
        check(&c, "gpt claude", Some(FailureClass::Retryable), None);
        check(&c, "gpt", Some(FailureClass::ContextWindowExceeded), Some("gemini"));
        check(&c, "gpt gemini", Some(FailureClass::ContextWindowExceeded), None);
        // A name listed twice in `tried` is one provider.
        check(&c, "gpt gpt", Some(FailureClass::Retryable), Some("claude"));
        check(&chains(1), "", None, Some("gpt"));
        check(&chains(1), "gpt", Some(FailureClass::Retryable), None);
    }

    #[test]
    fn a_failure_no_provider_can_fix_ends_the_walk() {
        let c = chains(10);
        check(&c, "gpt", Some(FailureClass::Fatal { auth: false }), None);
        check(&c, "gpt", Some(FailureClass::Cancelled), None);
    }

    #[test]
    fn bad_chains_name_the_field() {
        let check = |chains: FallbackChains, field: &str| assert_eq!(chains.validate().unwrap_err().field, field);
        check(FallbackChains::default(), "generic");
        check(FallbackChains { max_depth: 0, ..chains(3) }, "max_depth");
        check(
            FallbackChains { content_policy: names("a").into_iter().chain([String::new()]).collect(), ..chains(3) },
            "content_policy",
        );
        assert!(chains(3).validate().is_ok());
    }
}
