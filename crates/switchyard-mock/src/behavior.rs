//! The script that decides how the mock answers one model's requests.
//!
//! Tests and benchmarks need providers that are slow, flaky, rate-limited, hung or simply down, and they
//! need them to be so reproducibly. A [`Behavior`] describes all of that as plain serde data, so the same
//! script can live in a JSON file for the binary, travel over the control endpoint, or be built in Rust.
//!
//! A request is handled in this order: a hanging model never answers; otherwise the connection may be
//! reset at once (`reset_rate`); otherwise the latency is waited out, one draw picks at most one scripted
//! error (rules are cumulative, checked in order), and finally the answer is produced.
//!
//! Two knobs make the answer's confidence scriptable, for cascades that read token log-probabilities: an
//! answer is *unsure* when the last user message contains `unsure_marker`, or otherwise with probability
//! `unsure_rate`. An unsure answer reports [`UNSURE_LOGPROB`] for every token, a sure one [`SURE_LOGPROB`].
//! With neither knob set the log-probabilities are a deterministic hash of each token, as before.

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::MockServerError;

/// The log-probability of every token of a *sure* answer when a confidence knob is set (`unsure_rate` above 0
/// or an `unsure_marker`).
pub const SURE_LOGPROB: f64 = -0.05;

/// The log-probability of every token of an *unsure* answer.
pub const UNSURE_LOGPROB: f64 = -2.5;

/// How one model (or the default) behaves.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Behavior {
    /// Time before the response head (or the first streamed chunk); applies to errors too.
    pub latency: Latency,
    /// Scripted errors, checked in order against one uniform draw: rule `i` fires when the draw falls in
    /// `[sum(rate[..i]), sum(rate[..=i]))`, so the rates add up to the total error probability.
    pub errors: Vec<ErrorRule>,
    /// Accept the request and never answer, until the client gives up or the server shuts down.
    pub hang: bool,
    /// Probability to drop the TCP connection (with a reset) without any response.
    pub reset_rate: f64,
    /// Streaming only: after this many content tokens, send a retryable mid-stream error event instead of
    /// the rest of the stream. Answers with fewer tokens than this complete normally.
    pub fail_after_tokens: Option<u32>,
    /// Delay between streamed chunks.
    pub chunk_delay_ms: u64,
    /// What to say.
    pub answer: Answer,
    /// Probability that an answer is unsure: every token's logprob is then [`UNSURE_LOGPROB`] instead of
    /// [`SURE_LOGPROB`]. Drawn per request; 0 (the default) draws nothing.
    pub unsure_rate: f64,
    /// A prompt whose last user message contains this text is always unsure.
    pub unsure_marker: Option<String>,
}

impl Default for Behavior {
    fn default() -> Self {
        Self {
            latency: Latency::default(),
            errors: Vec::new(),
            hang: false,
            reset_rate: 0.0,
            fail_after_tokens: None,
            chunk_delay_ms: 0,
            answer: Answer::Echo,
            unsure_rate: 0.0,
            unsure_marker: None,
        }
    }
}

impl Behavior {
    /// A behaviour that fails every request with `error`.
    pub fn failing(error: MockError) -> Self {
        Self { errors: vec![ErrorRule { rate: 1.0, error }], ..Self::default() }
    }

    /// A behaviour that accepts every request and never answers.
    pub fn hanging() -> Self {
        Self { hang: true, ..Self::default() }
    }

    /// A behaviour that always answers `text`.
    pub fn answering(text: impl Into<String>) -> Self {
        Self { answer: Answer::Fixed { text: text.into() }, ..Self::default() }
    }

    /// The same behaviour with a fixed latency.
    pub fn with_latency_ms(self, ms: u64) -> Self {
        Self { latency: Latency::Fixed { ms }, ..self }
    }

    /// Checks that probabilities and latency parameters make sense; the error names the field.
    pub fn validate(&self) -> Result<(), MockServerError> {
        let invalid =
            |field: &str, reason: String| MockServerError::InvalidBehavior { field: field.to_owned(), reason };
        if !(0.0..=1.0).contains(&self.reset_rate) {
            return Err(invalid("reset_rate", format!("{} is not a probability in [0, 1]", self.reset_rate)));
        }
        let mut total = 0.0;
        for (i, rule) in self.errors.iter().enumerate() {
            if !(0.0..=1.0).contains(&rule.rate) {
                return Err(invalid(
                    &format!("errors[{i}].rate"),
                    format!("{} is not a probability in [0, 1]", rule.rate),
                ));
            }
            total += rule.rate;
            if let MockError::Status { status, .. } = rule.error
                && !(400..=599).contains(&status)
            {
                return Err(invalid(
                    &format!("errors[{i}].error.status"),
                    format!("{status} is not an HTTP error status (400..=599)"),
                ));
            }
        }
        if total > 1.0 + 1e-9 {
            return Err(invalid("errors", format!("rates add up to {total}, more than 1")));
        }
        if !(0.0..=1.0).contains(&self.unsure_rate) {
            return Err(invalid("unsure_rate", format!("{} is not a probability in [0, 1]", self.unsure_rate)));
        }
        if self.unsure_marker.as_deref().is_some_and(str::is_empty) {
            return Err(invalid("unsure_marker", "must not be empty (every prompt would contain it)".to_owned()));
        }
        self.latency.validate()
    }

    /// How sure the answer to `last_user` is: [`Confidence::Hashed`] when no knob is set; otherwise unsure when
    /// the marker is in the prompt, else with probability `unsure_rate` (one draw, only when the rate is above 0).
    pub(crate) fn confidence(&self, last_user: &str, rng: &mut impl Rng) -> Confidence {
        let marker = self.unsure_marker.as_deref();
        if self.unsure_rate <= 0.0 && marker.is_none() {
            return Confidence::Hashed;
        }
        if marker.is_some_and(|m| last_user.contains(m)) {
            return Confidence::Unsure;
        }
        if self.unsure_rate > 0.0 && rng.random::<f64>() < self.unsure_rate {
            Confidence::Unsure
        } else {
            Confidence::Sure
        }
    }

    /// Draws the fate of one request, consuming randomness only where the script needs it.
    pub(crate) fn plan(&self, rng: &mut impl Rng) -> Plan<'_> {
        if self.hang {
            return Plan::Hang;
        }
        if self.reset_rate > 0.0 && rng.random::<f64>() < self.reset_rate {
            return Plan::Reset;
        }
        let latency = self.latency.sample(rng);
        let error = if self.errors.is_empty() {
            None
        } else {
            let draw: f64 = rng.random();
            let mut upper = 0.0;
            self.errors.iter().find_map(|rule| {
                upper += rule.rate;
                (draw < upper).then_some(&rule.error)
            })
        };
        Plan::Respond { latency, error }
    }
}

/// The log-probabilities an answer reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Confidence {
    /// No confidence knob: a deterministic hash of each token, in `[-2.5, 0]`.
    Hashed,
    /// [`SURE_LOGPROB`] for every token.
    Sure,
    /// [`UNSURE_LOGPROB`] for every token.
    Unsure,
}

impl Confidence {
    /// The log-probability of `token` under this confidence.
    pub(crate) fn logprob(self, token: &str) -> f64 {
        match self {
            Confidence::Hashed => crate::text::logprob(token),
            Confidence::Sure => SURE_LOGPROB,
            Confidence::Unsure => UNSURE_LOGPROB,
        }
    }
}

/// What happens to one request, decided on arrival.
#[derive(Debug, PartialEq)]
pub(crate) enum Plan<'a> {
    Hang,
    Reset,
    Respond { latency: Duration, error: Option<&'a MockError> },
}

/// A latency distribution, in milliseconds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Latency {
    /// Always the same.
    Fixed { ms: u64 },
    /// Uniform in `[min_ms, max_ms]`.
    Uniform { min_ms: u64, max_ms: u64 },
    /// Normal, clamped at zero.
    Normal { mean_ms: f64, stddev_ms: f64 },
    /// Log-normal with the given median (`exp(mu)`) and shape `sigma`: a long right tail like real APIs.
    LogNormal { median_ms: f64, sigma: f64 },
}

impl Default for Latency {
    fn default() -> Self {
        Self::Fixed { ms: 0 }
    }
}

impl Latency {
    fn validate(&self) -> Result<(), MockServerError> {
        let invalid = |field: &str, reason: &str| MockServerError::InvalidBehavior {
            field: format!("latency.{field}"),
            reason: reason.to_owned(),
        };
        match *self {
            Self::Fixed { .. } => Ok(()),
            Self::Uniform { min_ms, max_ms } if min_ms > max_ms => Err(invalid("min_ms", "must not exceed max_ms")),
            Self::Uniform { .. } => Ok(()),
            Self::Normal { mean_ms, .. } if !(mean_ms.is_finite() && mean_ms >= 0.0) => {
                Err(invalid("mean_ms", "must be a finite number >= 0"))
            }
            Self::Normal { stddev_ms, .. } if !(stddev_ms.is_finite() && stddev_ms >= 0.0) => {
                Err(invalid("stddev_ms", "must be a finite number >= 0"))
            }
            Self::Normal { .. } => Ok(()),
            Self::LogNormal { median_ms, .. } if !(median_ms.is_finite() && median_ms >= 0.0) => {
                Err(invalid("median_ms", "must be a finite number >= 0"))
            }
            Self::LogNormal { sigma, .. } if !(sigma.is_finite() && sigma >= 0.0) => {
                Err(invalid("sigma", "must be a finite number >= 0"))
            }
            Self::LogNormal { .. } => Ok(()),
        }
    }

    /// Draws one latency; draws nothing for a fixed latency.
    pub(crate) fn sample(&self, rng: &mut impl Rng) -> Duration {
        let ms = match *self {
            Self::Fixed { ms } => return Duration::from_millis(ms),
            Self::Uniform { min_ms, max_ms } if min_ms >= max_ms => {
                return Duration::from_millis(min_ms);
            }
            Self::Uniform { min_ms, max_ms } => {
                return Duration::from_millis(rng.random_range(min_ms..=max_ms));
            }
            Self::Normal { mean_ms, stddev_ms } => mean_ms + stddev_ms * standard_normal(rng),
            Self::LogNormal { median_ms, sigma } => median_ms * (sigma * standard_normal(rng)).exp(),
        };
        // Clamp to a day so a wild parameter cannot overflow `Duration`.
        Duration::from_secs_f64((ms / 1000.0).clamp(0.0, 86_400.0))
    }
}

/// One standard normal draw (Box-Muller), so no distribution crate is needed.
fn standard_normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>(); // In (0, 1], so the logarithm is finite.
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A scripted error and how often it fires.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ErrorRule {
    /// Probability in `[0, 1]`.
    pub rate: f64,
    pub error: MockError,
}

/// An error the mock can answer with, rendered in the wire format of the endpoint that was hit.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields, from = "MockErrorRepr")]
pub enum MockError {
    /// An HTTP status with the provider's usual body for it: 400, 401, 403, 404, 408, 413, 429, 500, 502,
    /// 503, 504 and 529 have specific bodies, other statuses a generic one. `retry_after_s` and
    /// `retry_after_ms` add `retry-after` (seconds, rounded up) and, for OpenAI, `retry-after-ms`; either
    /// one is enough, the other is derived.
    Status { status: u16, retry_after_s: Option<u64>, retry_after_ms: Option<u64> },
    /// Out of credit: OpenAI 429 `insufficient_quota`; Anthropic 400 "credit balance is too low".
    Quota,
    /// A bad API key: 401.
    Auth,
    /// The prompt is too long for the model: 400.
    ContextLength,
    /// The request was refused by the safety system: 400.
    ContentPolicy,
}

impl MockError {
    /// A bare status error without retry hints.
    pub fn status(status: u16) -> Self {
        Self::Status { status, retry_after_s: None, retry_after_ms: None }
    }

    /// A 429 rate limit that asks the client to wait `ms` milliseconds.
    pub fn rate_limited_ms(ms: u64) -> Self {
        Self::Status { status: 429, retry_after_s: None, retry_after_ms: Some(ms) }
    }

    /// The retry hint as `(seconds rounded up, milliseconds)`, if any.
    pub(crate) fn retry_after(&self) -> Option<(u64, u64)> {
        match *self {
            Self::Status { retry_after_ms: Some(ms), retry_after_s, .. } => {
                Some((retry_after_s.unwrap_or_else(|| ms.div_ceil(1000)), ms))
            }
            Self::Status { retry_after_s: Some(s), .. } => Some((s, s.saturating_mul(1000))),
            _ => None,
        }
    }
}

/// What a successful answer says.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields, from = "AnswerRepr")]
pub enum Answer {
    /// `"echo: "` followed by the content of the last user message; deterministic.
    #[default]
    Echo,
    /// Always this text.
    Fixed { text: String },
    /// The recorded response for (model, last user message) from the loaded [`crate::ReplayData`];
    /// a miss is a 404 in the provider's format.
    Replay,
}

// serde ignores `deny_unknown_fields` on the unit variants of an internally tagged enum, so the public
// enums deserialize through mirrors whose variants are empty structs, which do reject unknown fields.

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum MockErrorRepr {
    Status { status: u16, retry_after_s: Option<u64>, retry_after_ms: Option<u64> },
    Quota {},
    Auth {},
    ContextLength {},
    ContentPolicy {},
}

impl From<MockErrorRepr> for MockError {
    fn from(repr: MockErrorRepr) -> Self {
        match repr {
            MockErrorRepr::Status { status, retry_after_s, retry_after_ms } => {
                Self::Status { status, retry_after_s, retry_after_ms }
            }
            MockErrorRepr::Quota {} => Self::Quota,
            MockErrorRepr::Auth {} => Self::Auth,
            MockErrorRepr::ContextLength {} => Self::ContextLength,
            MockErrorRepr::ContentPolicy {} => Self::ContentPolicy,
        }
    }
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum AnswerRepr {
    Echo {},
    Fixed { text: String },
    Replay {},
}

impl From<AnswerRepr> for Answer {
    fn from(repr: AnswerRepr) -> Self {
        match repr {
            AnswerRepr::Echo {} => Self::Echo,
            AnswerRepr::Fixed { text } => Self::Fixed { text },
            AnswerRepr::Replay {} => Self::Replay,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    use super::*;

    #[test]
    fn default_behavior_round_trips_from_empty_json() {
        let parsed: Behavior = serde_json::from_str("{}").unwrap();
        assert_eq!(parsed, Behavior::default());
    }

    #[test]
    fn behaviors_round_trip_through_json() {
        for error in [
            MockError::rate_limited_ms(10),
            MockError::Quota,
            MockError::Auth,
            MockError::ContextLength,
            MockError::ContentPolicy,
        ] {
            for answer in [Answer::Echo, Answer::Replay, Answer::Fixed { text: "t".into() }] {
                let behavior = Behavior { answer, ..Behavior::failing(error.clone()) };
                let json = serde_json::to_string(&behavior).unwrap();
                assert_eq!(serde_json::from_str::<Behavior>(&json).unwrap(), behavior);
            }
        }
        let json = serde_json::to_value(MockError::Auth).unwrap();
        assert_eq!(json, serde_json::json!({"kind": "auth"}));
    }

    #[test]
    fn full_behavior_parses_from_documented_json() {
        let json = r#"{
            "latency": {"kind": "log_normal", "median_ms": 40, "sigma": 0.5},
            "errors": [
                {"rate": 0.1, "error": {"kind": "status", "status": 429, "retry_after_ms": 1500}},
                {"rate": 0.05, "error": {"kind": "quota"}}
            ],
            "reset_rate": 0.01,
            "fail_after_tokens": 3,
            "chunk_delay_ms": 5,
            "answer": {"kind": "fixed", "text": "hi"}
        }"#;
        let parsed: Behavior = serde_json::from_str(json).unwrap();
        assert_eq!(parsed.errors.len(), 2);
        assert_eq!(parsed.errors[0].error.retry_after(), Some((2, 1500)));
        assert_eq!(parsed.answer, Answer::Fixed { text: "hi".into() });
        parsed.validate().unwrap();
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let check = |json: &str| {
            assert!(serde_json::from_str::<Behavior>(json).is_err(), "{json} should not parse");
        };
        check(r#"{"latncy": {"kind": "fixed", "ms": 1}}"#);
        check(r#"{"latency": {"kind": "fixed", "ms": 1, "extra": 2}}"#);
        check(r#"{"answer": {"kind": "shout"}}"#);
        check(r#"{"errors": [{"rate": 1, "error": {"kind": "auth", "x": 1}}]}"#);
        check(r#"{"answer": {"kind": "echo", "text": "x"}}"#);
        check(r#"{"errors": [{"rate": 1, "error": {"kind": "status"}}]}"#);
    }

    #[test]
    fn validation_names_the_field() {
        let check = |behavior: Behavior, field: &str| match behavior.validate() {
            Err(MockServerError::InvalidBehavior { field: got, .. }) => assert_eq!(got, field),
            other => panic!("expected an invalid {field}, got {other:?}"),
        };
        check(Behavior { reset_rate: 1.5, ..Behavior::default() }, "reset_rate");
        check(Behavior::failing(MockError::status(200)), "errors[0].error.status");
        let mut twice = Behavior::failing(MockError::Auth);
        twice.errors.push(ErrorRule { rate: 0.5, error: MockError::Quota });
        check(twice, "errors");
        check(Behavior { latency: Latency::Uniform { min_ms: 5, max_ms: 1 }, ..Behavior::default() }, "latency.min_ms");
        check(Behavior { unsure_rate: -0.1, ..Behavior::default() }, "unsure_rate");
        check(Behavior { unsure_rate: f64::NAN, ..Behavior::default() }, "unsure_rate");
        check(Behavior { unsure_marker: Some(String::new()), ..Behavior::default() }, "unsure_marker");
    }

    #[test]
    fn confidence_follows_the_knobs() {
        let mut rng = SmallRng::seed_from_u64(5);
        let check = |behavior: &Behavior, prompt: &str, want: Confidence, rng: &mut SmallRng| {
            for _ in 0..100 {
                assert_eq!(behavior.confidence(prompt, rng), want, "{behavior:?} on {prompt:?}");
            }
        };
        // No knob: the per-token hash of before.
        check(&Behavior::default(), "anything HARD", Confidence::Hashed, &mut rng);
        let marked = Behavior { unsure_marker: Some("HARD".into()), ..Behavior::default() };
        // The marker makes a prompt unsure; without it, rate 0 is always sure.
        check(&marked, "a HARD question", Confidence::Unsure, &mut rng);
        check(&marked, "an easy question", Confidence::Sure, &mut rng);
        let always = Behavior { unsure_rate: 1.0, ..Behavior::default() };
        check(&always, "an easy question", Confidence::Unsure, &mut rng);
        let zero_with_marker = Behavior { unsure_rate: 0.0, ..marked };
        check(&zero_with_marker, "plain", Confidence::Sure, &mut rng);

        let some = Behavior { unsure_rate: 0.3, ..Behavior::default() };
        let unsure = (0..2_000).filter(|_| some.confidence("q", &mut rng) == Confidence::Unsure).count();
        let share = unsure as f64 / 2_000.0;
        assert!((share - 0.3).abs() <= 0.05, "{share}");
    }

    #[test]
    fn confidence_logprobs_are_the_constants_or_the_hash() {
        assert_eq!(Confidence::Sure.logprob("x "), SURE_LOGPROB);
        assert_eq!(Confidence::Unsure.logprob("x "), UNSURE_LOGPROB);
        assert_eq!(Confidence::Hashed.logprob("x "), crate::text::logprob("x "));
    }

    #[test]
    fn confidence_knobs_parse_from_json() {
        let parsed: Behavior = serde_json::from_str(r#"{"unsure_rate": 0.25, "unsure_marker": "[hard]"}"#).unwrap();
        assert_eq!(parsed.unsure_rate, 0.25);
        assert_eq!(parsed.unsure_marker.as_deref(), Some("[hard]"));
        parsed.validate().unwrap();
        assert!(serde_json::from_str::<Behavior>(r#"{"unsure_ratio": 0.25}"#).is_err());
    }

    #[test]
    fn error_rules_share_one_draw() {
        let behavior = Behavior {
            errors: vec![
                ErrorRule { rate: 0.25, error: MockError::Auth },
                ErrorRule { rate: 0.25, error: MockError::Quota },
            ],
            ..Behavior::default()
        };
        let mut rng = SmallRng::seed_from_u64(7);
        let (mut auth, mut quota, mut ok) = (0, 0, 0);
        for _ in 0..10_000 {
            match behavior.plan(&mut rng) {
                Plan::Respond { error: Some(MockError::Auth), .. } => auth += 1,
                Plan::Respond { error: Some(MockError::Quota), .. } => quota += 1,
                Plan::Respond { error: None, .. } => ok += 1,
                other => panic!("unexpected plan {other:?}"),
            }
        }
        for count in [auth, quota] {
            assert!((2_200..2_800).contains(&count), "{auth} {quota} {ok}");
        }
        assert!((4_600..5_400).contains(&ok), "{auth} {quota} {ok}");
    }

    #[test]
    fn latency_samples_stay_in_range() {
        let mut rng = SmallRng::seed_from_u64(1);
        let uniform = Latency::Uniform { min_ms: 10, max_ms: 20 };
        let normal = Latency::Normal { mean_ms: 5.0, stddev_ms: 50.0 };
        let log_normal = Latency::LogNormal { median_ms: 100.0, sigma: 1.0 };
        let mut below_median = 0;
        for _ in 0..1_000 {
            let ms = uniform.sample(&mut rng).as_millis();
            assert!((10..=20).contains(&ms));
            assert!(normal.sample(&mut rng) >= Duration::ZERO);
            if log_normal.sample(&mut rng) < Duration::from_millis(100) {
                below_median += 1;
            }
        }
        assert!((400..600).contains(&below_median), "{below_median}");
    }

    #[test]
    fn same_seed_same_plans() {
        let behavior =
            Behavior { reset_rate: 0.3, latency: Latency::Uniform { min_ms: 0, max_ms: 1000 }, ..Behavior::default() };
        let run = |seed| {
            let mut rng = SmallRng::seed_from_u64(seed);
            (0..50).map(|_| format!("{:?}", behavior.plan(&mut rng))).collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }
}
