//! Confidence estimators: how sure a stage is of its answer, as a number in `[0, 1]`.
//!
//! A cascade stops at a stage when the stage's confidence reaches its threshold, so every estimator must produce
//! a comparable number, and must degrade safely: when the evidence it needs is missing (no logprobs, a
//! self-evaluation reply that is not a score, no extractable answer, a scorer that failed), the estimate is
//! [`Estimate::unavailable`], confidence `0`, with the reason for the caller to log. A missing signal therefore
//! escalates (the safe side: the next stage is stronger) and never stops the cascade on a guess.
//!
//! Estimating is two steps because two estimators need a second call after the stage's answer:
//! [`follow_up`] says what the caller must obtain (a self-evaluation reply from a model, or a verifier score),
//! and [`estimate`] turns the stage's samples plus that result into an [`Estimate`]. Both are pure.

pub mod consistency;
pub mod logprobs;
pub mod self_eval;
pub mod verifier;

use serde::{Deserialize, Serialize};

use crate::extract::Extractor;
use crate::{CascadeError, InvalidField};

pub use consistency::{Majority, majority};
pub use logprobs::{LogprobAggregate, LogprobScope, TokenLogprob, logprob_confidence};
pub use self_eval::{SelfEvalConfig, SelfEvalParseError, parse_self_eval};
pub use verifier::{ScoreRequest, ScoreResponse, Scorer};

/// One completion of a stage's model.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Sample {
    /// The completion text.
    pub text: String,
    /// The per-token log-probabilities (`choices[].logprobs.content[]` of an OpenAI-compatible reply), when the
    /// provider returned them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Vec<TokenLogprob>>,
}

impl Sample {
    /// A sample with text only.
    pub fn text(text: impl Into<String>) -> Self {
        Sample { text: text.into(), logprobs: None }
    }
}

/// The estimator of a stage, with its parameters (serde: `{"kind": "self_consistency", "samples": 5, …}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum EstimatorConfig {
    /// Ask for `samples` completions and take the share of the majority answer as the confidence.
    SelfConsistency {
        /// How many completions to request (2 to 64).
        samples: u32,
        /// The sampling temperature to request (0 to 2).
        #[serde(default = "default_temperature")]
        temperature: f64,
        /// How to read the answer out of each completion.
        extractor: Extractor,
    },
    /// The exponential of the mean (or minimum) token log-probability of the answer.
    Logprobs {
        /// Mean or minimum.
        #[serde(default)]
        aggregate: LogprobAggregate,
        /// All completion tokens, or only those of the extracted answer.
        #[serde(default)]
        scope: LogprobScope,
    },
    /// Ask a model (the stage's own, or `target`) to score the answer and parse its reply.
    SelfEval(SelfEvalConfig),
    /// A verifier's P(correct) of (query, answer): a local trained model or an external HTTP endpoint; the
    /// runtime owns both and hands the score back.
    Verifier {
        /// When set, the verifier scores only the extracted answer instead of the whole reply.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        extractor: Option<Extractor>,
        /// Where the score comes from.
        source: VerifierSource,
    },
}

fn default_temperature() -> f64 {
    0.7
}

/// Where a verifier's score comes from. The cascade crate only names it; the runtime loads the model file
/// ([`VerifierModel::load`](crate::VerifierModel::load)) or calls the endpoint with [`ScoreRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum VerifierSource {
    /// A model trained by `switchyard cascade train-verifier`, loaded at start.
    Local {
        /// The JSON file written by [`VerifierModel::save`](crate::VerifierModel::save).
        path: String,
    },
    /// An external scoring endpoint that accepts a [`ScoreRequest`] and answers a [`ScoreResponse`].
    External {
        /// The endpoint's URL.
        url: String,
        /// How long the runtime waits for the score before treating it as unavailable.
        #[serde(default = "default_score_timeout_ms")]
        timeout_ms: u64,
    },
}

fn default_score_timeout_ms() -> u64 {
    500
}

/// The estimator family, as written in traces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EstimatorKind {
    /// [`EstimatorConfig::SelfConsistency`].
    SelfConsistency,
    /// [`EstimatorConfig::Logprobs`].
    Logprobs,
    /// [`EstimatorConfig::SelfEval`].
    SelfEval,
    /// [`EstimatorConfig::Verifier`].
    Verifier,
}

impl EstimatorConfig {
    /// The estimator family.
    pub fn kind(&self) -> EstimatorKind {
        match self {
            EstimatorConfig::SelfConsistency { .. } => EstimatorKind::SelfConsistency,
            EstimatorConfig::Logprobs { .. } => EstimatorKind::Logprobs,
            EstimatorConfig::SelfEval(_) => EstimatorKind::SelfEval,
            EstimatorConfig::Verifier { .. } => EstimatorKind::Verifier,
        }
    }

    /// How many completions the stage must request.
    pub fn samples(&self) -> u32 {
        match self {
            EstimatorConfig::SelfConsistency { samples, .. } => *samples,
            _ => 1,
        }
    }

    /// Whether the stage must request token log-probabilities.
    pub fn needs_logprobs(&self) -> bool {
        matches!(self, EstimatorConfig::Logprobs { .. })
    }

    /// Checks the parameters; `stage` names the stage in the error.
    pub fn validate(&self, stage: usize) -> Result<(), CascadeError> {
        let invalid = |field: &'static str, reason: &'static str| {
            Err(CascadeError::InvalidConfig(InvalidField { stage: Some(stage), field, reason }))
        };
        match self {
            EstimatorConfig::SelfConsistency { samples, temperature, extractor } => {
                if !(2..=64).contains(samples) {
                    return invalid("estimator.samples", "must be between 2 and 64");
                }
                if !(0.0..=2.0).contains(temperature) {
                    return invalid("estimator.temperature", "must be between 0 and 2");
                }
                validate_extractor(extractor, stage)
            }
            EstimatorConfig::Logprobs { scope: LogprobScope::Answer { extractor }, .. } => {
                validate_extractor(extractor, stage)
            }
            EstimatorConfig::Logprobs { .. } => Ok(()),
            EstimatorConfig::SelfEval(config) => config.validate(stage),
            EstimatorConfig::Verifier { extractor, source } => {
                if let Some(extractor) = extractor {
                    validate_extractor(extractor, stage)?;
                }
                match source {
                    VerifierSource::Local { path } if path.is_empty() => {
                        invalid("estimator.source.path", "must not be empty")
                    }
                    VerifierSource::External { url, .. } if url.is_empty() => {
                        invalid("estimator.source.url", "must not be empty")
                    }
                    VerifierSource::External { timeout_ms: 0, .. } => {
                        invalid("estimator.source.timeout_ms", "must be above zero")
                    }
                    _ => Ok(()),
                }
            }
        }
    }
}

fn validate_extractor(extractor: &Extractor, stage: usize) -> Result<(), CascadeError> {
    let reason = match extractor {
        Extractor::Choice { letters } if letters.is_empty() || !letters.chars().all(|c| c.is_ascii_uppercase()) => {
            "choice letters must be upper-case ASCII letters"
        }
        Extractor::Between { start, .. } if start.is_empty() => "between needs a start marker",
        _ => return Ok(()),
    };
    Err(CascadeError::InvalidConfig(InvalidField { stage: Some(stage), field: "estimator.extractor", reason }))
}

/// Why an estimator could not measure confidence. The estimate is then `0` and the stage escalates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "why", rename_all = "snake_case")]
pub enum Unavailable {
    /// The stage returned no completion.
    NoSamples,
    /// No completion contained an answer the extractor could read.
    NoExtractableAnswer,
    /// The provider returned no token log-probabilities (or an empty list).
    NoLogprobs,
    /// A log-probability was not a finite number at most 0.
    InvalidLogprob,
    /// The self-evaluation call was not made or failed.
    NoSelfEvalReply,
    /// The self-evaluation reply was not a score.
    SelfEvalUnparseable {
        /// What was wrong with it.
        error: SelfEvalParseError,
    },
    /// The verifier gave no score (endpoint down, timeout, model not loaded).
    NoScore {
        /// The caller's description of the failure.
        detail: String,
    },
    /// The verifier's score was not a probability.
    InvalidScore {
        /// The value it returned.
        value: f64,
    },
}

/// A stage's confidence in its answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// In `[0, 1]`; `0` when [`unavailable`](Self::unavailable) is set.
    pub confidence: f64,
    /// Which sample is the stage's answer (the first sample of the majority answer for self-consistency, the
    /// first sample otherwise); `None` when there is none.
    pub answer_index: Option<usize>,
    /// The extracted answer, when the estimator uses an extractor and found one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extracted: Option<String>,
    /// Why confidence could not be measured, if so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<Unavailable>,
}

impl Estimate {
    /// A measured confidence (clamped into `[0, 1]`; a NaN becomes `0`).
    pub fn measured(confidence: f64, answer_index: Option<usize>, extracted: Option<String>) -> Self {
        let confidence = if confidence.is_nan() { 0.0 } else { confidence.clamp(0.0, 1.0) };
        Estimate { confidence, answer_index, extracted, unavailable: None }
    }

    /// No measurable confidence: counts as `0`, so the stage escalates unless it is the last.
    pub fn unavailable(why: Unavailable, answer_index: Option<usize>) -> Self {
        Estimate { confidence: 0.0, answer_index, extracted: None, unavailable: Some(why) }
    }
}

/// What the caller must obtain after a stage answered, before [`estimate`] can run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FollowUp {
    /// Nothing: the samples are enough.
    None,
    /// Ask `target` (the stage's own target when `None`) this prompt and pass the reply to [`estimate`].
    SelfEval {
        /// The model to ask, when not the stage's own.
        target: Option<String>,
        /// The prompt to send (one user message).
        prompt: String,
    },
    /// Score this (query, answer) pair with the stage's verifier and pass the score to [`estimate`].
    Score {
        /// Where to get the score.
        source: VerifierSource,
        /// The request (the body of the HTTP call for an external endpoint).
        request: ScoreRequest,
    },
}

/// The result of a [`FollowUp`], handed back by the caller.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum FollowUpResult {
    /// No follow-up was needed or none was obtained.
    #[default]
    None,
    /// The self-evaluation reply's text.
    SelfEvalReply(String),
    /// The verifier's P(correct).
    Score(f64),
    /// The follow-up call failed; the detail is kept in the trace.
    Failed(String),
}

/// What must happen after the stage's `samples` arrived, for the estimator `config`.
pub fn follow_up(config: &EstimatorConfig, query: &str, samples: &[Sample]) -> FollowUp {
    let Some(first) = samples.first() else { return FollowUp::None };
    match config {
        EstimatorConfig::SelfConsistency { .. } | EstimatorConfig::Logprobs { .. } => FollowUp::None,
        EstimatorConfig::SelfEval(c) => {
            FollowUp::SelfEval { target: c.target.clone(), prompt: c.prompt(query, &first.text) }
        }
        EstimatorConfig::Verifier { extractor, source } => {
            let answer = verifier_answer(extractor.as_ref(), &first.text);
            FollowUp::Score { source: source.clone(), request: ScoreRequest { query: query.to_owned(), answer } }
        }
    }
}

/// The text a verifier scores: the extracted answer when an extractor is configured and finds one, otherwise
/// the whole reply.
pub fn verifier_answer(extractor: Option<&Extractor>, text: &str) -> String {
    extractor.and_then(|e| e.extract(text)).unwrap_or_else(|| text.to_owned())
}

/// The stage's confidence from its `samples` and the result of its [`follow_up`].
pub fn estimate(config: &EstimatorConfig, samples: &[Sample], follow: &FollowUpResult) -> Estimate {
    if samples.is_empty() {
        return Estimate::unavailable(Unavailable::NoSamples, None);
    }
    match config {
        EstimatorConfig::SelfConsistency { extractor, .. } => match majority(samples, extractor) {
            Some(m) => Estimate::measured(m.share, Some(m.first_index), Some(m.answer)),
            None => Estimate::unavailable(Unavailable::NoExtractableAnswer, Some(0)),
        },
        EstimatorConfig::Logprobs { aggregate, scope } => {
            let sample = &samples[0];
            match logprob_confidence(sample.logprobs.as_deref(), &sample.text, *aggregate, scope) {
                Ok((confidence, extracted)) => Estimate::measured(confidence, Some(0), extracted),
                Err(why) => Estimate::unavailable(why, Some(0)),
            }
        }
        EstimatorConfig::SelfEval(_) => match follow {
            FollowUpResult::SelfEvalReply(reply) => match parse_self_eval(reply) {
                Ok(score) => Estimate::measured(score, Some(0), None),
                Err(error) => Estimate::unavailable(Unavailable::SelfEvalUnparseable { error }, Some(0)),
            },
            _ => Estimate::unavailable(Unavailable::NoSelfEvalReply, Some(0)),
        },
        EstimatorConfig::Verifier { extractor, .. } => {
            let extracted = extractor.as_ref().and_then(|e| e.extract(&samples[0].text));
            match follow {
                FollowUpResult::Score(p) if (0.0..=1.0).contains(p) => Estimate::measured(*p, Some(0), extracted),
                FollowUpResult::Score(p) => Estimate::unavailable(Unavailable::InvalidScore { value: *p }, Some(0)),
                FollowUpResult::Failed(detail) => {
                    Estimate::unavailable(Unavailable::NoScore { detail: detail.clone() }, Some(0))
                }
                _ => Estimate::unavailable(Unavailable::NoScore { detail: "no score was provided".into() }, Some(0)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sc(samples: u32) -> EstimatorConfig {
        EstimatorConfig::SelfConsistency { samples, temperature: 0.7, extractor: Extractor::LastNumber }
    }

    #[test]
    fn no_samples_is_unavailable_for_every_estimator() {
        let configs = [
            sc(3),
            EstimatorConfig::Logprobs { aggregate: LogprobAggregate::Mean, scope: LogprobScope::All },
            EstimatorConfig::SelfEval(SelfEvalConfig::default()),
            EstimatorConfig::Verifier { extractor: None, source: VerifierSource::Local { path: "v.json".into() } },
        ];
        for config in configs {
            let e = estimate(&config, &[], &FollowUpResult::Score(0.9));
            assert_eq!(e, Estimate::unavailable(Unavailable::NoSamples, None), "{:?}", config.kind());
            assert_eq!(follow_up(&config, "q", &[]), FollowUp::None);
        }
    }

    #[test]
    fn self_consistency_end_to_end() {
        let samples: Vec<Sample> = ["#### 4", "so 5", "garbled", "answer 4.0"].into_iter().map(Sample::text).collect();
        let e = estimate(&sc(4), &samples, &FollowUpResult::None);
        assert_eq!(e.confidence, 0.5);
        assert_eq!(e.answer_index, Some(0));
        assert_eq!(e.extracted.as_deref(), Some("4"));
        let none: Vec<Sample> = ["no", "numbers"].into_iter().map(Sample::text).collect();
        let e = estimate(&sc(2), &none, &FollowUpResult::None);
        assert_eq!(e.unavailable, Some(Unavailable::NoExtractableAnswer));
        assert_eq!(e.confidence, 0.0);
    }

    #[test]
    fn self_eval_needs_a_parseable_reply() {
        let config = EstimatorConfig::SelfEval(SelfEvalConfig::default());
        let samples = [Sample::text("Paris")];
        match follow_up(&config, "Capital of France?", &samples) {
            FollowUp::SelfEval { target: None, prompt } => {
                assert!(prompt.contains("Capital of France?") && prompt.contains("Paris"));
            }
            other => panic!("unexpected follow-up {other:?}"),
        }
        let ok = estimate(&config, &samples, &FollowUpResult::SelfEvalReply("Confidence: 9/10".into()));
        assert!((ok.confidence - 0.9).abs() < 1e-12 && ok.unavailable.is_none());
        let bad = estimate(&config, &samples, &FollowUpResult::SelfEvalReply("I am sure!".into()));
        assert_eq!(bad.confidence, 0.0);
        assert!(matches!(bad.unavailable, Some(Unavailable::SelfEvalUnparseable { .. })));
        let missing = estimate(&config, &samples, &FollowUpResult::Failed("timeout".into()));
        assert_eq!(missing.unavailable, Some(Unavailable::NoSelfEvalReply));
    }

    #[test]
    fn verifier_score_must_be_a_probability() {
        let config = EstimatorConfig::Verifier {
            extractor: Some(Extractor::LastNumber),
            source: VerifierSource::External { url: "http://scorer".into(), timeout_ms: 100 },
        };
        let samples = [Sample::text("so the total is #### 42")];
        match follow_up(&config, "q", &samples) {
            FollowUp::Score { request, .. } => {
                assert_eq!(request, ScoreRequest { query: "q".into(), answer: "42".into() })
            }
            other => panic!("unexpected follow-up {other:?}"),
        }
        let ok = estimate(&config, &samples, &FollowUpResult::Score(0.75));
        assert_eq!((ok.confidence, ok.extracted.as_deref()), (0.75, Some("42")));
        for bad in [f64::NAN, 1.5, -0.1] {
            let e = estimate(&config, &samples, &FollowUpResult::Score(bad));
            assert!(matches!(e.unavailable, Some(Unavailable::InvalidScore { .. })), "{bad}");
            assert_eq!(e.confidence, 0.0);
        }
        let failed = estimate(&config, &samples, &FollowUpResult::Failed("503".into()));
        assert_eq!(failed.unavailable, Some(Unavailable::NoScore { detail: "503".into() }));
    }

    #[test]
    fn validation_names_the_field() {
        let check = |config: EstimatorConfig, field: &str| match config.validate(2) {
            Err(CascadeError::InvalidConfig(f)) => assert_eq!((f.stage, f.field), (Some(2), field)),
            other => panic!("expected an invalid {field}, got {other:?}"),
        };
        check(sc(1), "estimator.samples");
        check(
            EstimatorConfig::SelfConsistency { samples: 3, temperature: 9.0, extractor: Extractor::LastNumber },
            "estimator.temperature",
        );
        check(
            EstimatorConfig::SelfConsistency {
                samples: 3,
                temperature: 1.0,
                extractor: Extractor::Choice { letters: "ab".into() },
            },
            "estimator.extractor",
        );
        check(
            EstimatorConfig::Verifier { extractor: None, source: VerifierSource::Local { path: String::new() } },
            "estimator.source.path",
        );
        assert!(sc(5).validate(0).is_ok());
    }

    #[test]
    fn config_from_json() {
        let c: EstimatorConfig = serde_json::from_str(
            r#"{"kind":"self_consistency","samples":5,"extractor":{"kind":"choice","letters":"ABCDE"}}"#,
        )
        .unwrap();
        assert_eq!(c.samples(), 5);
        let c: EstimatorConfig =
            serde_json::from_str(r#"{"kind":"logprobs","aggregate":"min","scope":{"kind":"all"}}"#).unwrap();
        assert!(c.needs_logprobs());
        let c: EstimatorConfig =
            serde_json::from_str(r#"{"kind":"verifier","source":{"kind":"external","url":"http://x/score"}}"#).unwrap();
        assert_eq!(c.kind(), EstimatorKind::Verifier);
        let c: EstimatorConfig = serde_json::from_str(r#"{"kind":"self_eval","target":"judge"}"#).unwrap();
        assert_eq!(c.kind(), EstimatorKind::SelfEval);
        assert!(serde_json::from_str::<EstimatorConfig>(r#"{"kind":"logprobs","agg":"min"}"#).is_err());
    }
}
