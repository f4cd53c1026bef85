//! The cascade decision: which stage to call next, whether its answer is good enough, and the trace of why.
//!
//! A cascade is an ordered list of stages, cheapest first. Each stage names a target (a provider or a group,
//! called through the availability layer by the runtime), a confidence estimator and a threshold. A run walks
//! the stages as a pure state machine driven by the caller:
//!
//! ```text
//! let mut run = cascade.start(&request_override)?;
//! while let Next::Call(call) = run.next() {
//!     // the caller calls call.target (call.samples completions, logprobs if call.logprobs) …
//!     //   … or, when every provider of the target is tripped or the call failed: run.skip(reason)?
//!     // … runs estimate::follow_up / estimate::estimate, then:
//!     let decision = run.record(result)?;            // Stop or Escalate, with a StageTrace
//! }
//! let outcome = run.finish();                        // the answer and the whole trace
//! ```
//!
//! Rules (all visible in each [`StageTrace`]):
//! - a stage **stops** when its estimate is available and its confidence is at least the threshold;
//! - it **escalates** when the confidence is below the threshold or could not be measured (a missing signal
//!   never stops a cascade on a guess);
//! - the **last** stage (the configured last, or the request's `max_stage`) always stops;
//! - a stage the caller cannot call is **skipped** and the run moves on without waiting; if the stages after an
//!   escalation are all skipped, the run answers with the most confident earlier answer and says so
//!   ([`Answer::below_threshold`]); if nothing answered at all, there is no answer.
//!
//! Per-request overrides are clamped to the operator's limits rather than refused, because a client cannot
//! know the operator's limits and a cascade that still answers is more useful than an error; the clamping is
//! reported in [`CascadeOutcome::applied`]. Only a value that is not a number (a NaN or infinite threshold) is
//! an error.

use serde::{Deserialize, Serialize};

use crate::CascadeError;
use crate::estimate::{Estimate, EstimatorConfig, EstimatorKind, Sample, Unavailable};

/// A cascade as configured by the operator (serde, `deny_unknown_fields`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CascadeConfig {
    /// The cascade's name (`math`), used in subjects, counters and logs.
    pub name: String,
    /// The stages, cheapest first; at least two.
    pub stages: Vec<StageConfig>,
    /// What a request may change.
    #[serde(default)]
    pub overrides: OverrideLimits,
}

/// One stage of a cascade.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    /// The provider or group to call.
    pub target: String,
    /// How confidence is estimated; required on every stage but the last (where it only feeds the trace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimator: Option<EstimatorConfig>,
    /// The confidence at or above which the cascade stops here, in `[0, 1]`; ignored on the last stage.
    #[serde(default)]
    pub threshold: f64,
    /// The expected cost of one call of this stage in USD (all samples and follow-ups included), used by the
    /// expected-cost formula before measured costs exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_hint_usd: Option<f64>,
}

/// The operator's limits on per-request overrides.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverrideLimits {
    /// The lowest threshold a request may ask for.
    pub min_threshold: f64,
    /// The highest threshold a request may ask for.
    pub max_threshold: f64,
    /// Whether a request may stop the cascade early with `max_stage`.
    pub allow_max_stage: bool,
    /// The lowest `max_stage` a request may ask for (0 lets a request use the first stage alone).
    pub min_max_stage: usize,
}

impl Default for OverrideLimits {
    fn default() -> Self {
        OverrideLimits { min_threshold: 0.0, max_threshold: 1.0, allow_max_stage: true, min_max_stage: 0 }
    }
}

/// What a request asks of the cascade (`"cascade": {"threshold": 0.8, "max_stage": 1}` on the wire): the
/// protocol's type, so the client's JSON is what the decision code reads.
pub use switchyard_protocol::client::CascadeOverride;

/// An override value after the operator's limits.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Applied<T> {
    /// What the request asked for.
    pub requested: T,
    /// What the run uses.
    pub used: T,
}

impl<T: PartialEq> Applied<T> {
    /// Whether the request's value was changed to fit the limits.
    pub fn clamped(&self) -> bool {
        self.requested != self.used
    }
}

/// The overrides a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct AppliedOverride {
    /// The threshold override, if the request had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<Applied<f64>>,
    /// The max-stage override, if the request had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_stage: Option<Applied<usize>>,
}

/// A validated cascade.
#[derive(Debug, Clone, PartialEq)]
pub struct Cascade {
    config: CascadeConfig,
}

impl Cascade {
    /// Validates `config`: a name, at least two stages, an estimator on every stage but the last, thresholds and
    /// cost hints that are numbers in range, sane override limits.
    pub fn new(config: CascadeConfig) -> Result<Self, CascadeError> {
        if config.name.is_empty() {
            return Err(CascadeError::invalid(None, "name", "must not be empty"));
        }
        if config.stages.len() < 2 {
            return Err(CascadeError::invalid(None, "stages", "needs at least two stages"));
        }
        let last = config.stages.len() - 1;
        for (i, stage) in config.stages.iter().enumerate() {
            if stage.target.is_empty() {
                return Err(CascadeError::invalid(Some(i), "target", "must not be empty"));
            }
            match &stage.estimator {
                Some(estimator) => estimator.validate(i)?,
                None if i < last => {
                    return Err(CascadeError::invalid(Some(i), "estimator", "is required on every stage but the last"));
                }
                None => {}
            }
            if !(0.0..=1.0).contains(&stage.threshold) {
                return Err(CascadeError::invalid(Some(i), "threshold", "must be between 0 and 1"));
            }
            if stage.cost_hint_usd.is_some_and(|c| !(c.is_finite() && c >= 0.0)) {
                return Err(CascadeError::invalid(Some(i), "cost_hint_usd", "must be a non-negative number"));
            }
        }
        let limits = &config.overrides;
        if !(0.0..=1.0).contains(&limits.min_threshold)
            || !(0.0..=1.0).contains(&limits.max_threshold)
            || limits.min_threshold > limits.max_threshold
        {
            return Err(CascadeError::invalid(
                None,
                "overrides.min_threshold",
                "and max_threshold must satisfy 0 <= min <= max <= 1",
            ));
        }
        if limits.min_max_stage > last {
            return Err(CascadeError::invalid(None, "overrides.min_max_stage", "is beyond the last stage"));
        }
        Ok(Cascade { config })
    }

    /// The configuration.
    pub fn config(&self) -> &CascadeConfig {
        &self.config
    }

    /// The cascade's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The number of stages.
    pub fn len(&self) -> usize {
        self.config.stages.len()
    }

    /// Always false: a cascade has at least two stages.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Applies a request's override within the operator's limits (clamping; see the module documentation).
    pub fn apply(&self, request: &CascadeOverride) -> Result<AppliedOverride, CascadeError> {
        let limits = &self.config.overrides;
        let last = self.config.stages.len() - 1;
        let threshold = match request.threshold {
            Some(t) if !t.is_finite() => {
                return Err(CascadeError::InvalidOverride { field: "threshold", reason: "is not a finite number" });
            }
            Some(t) => Some(Applied { requested: t, used: t.clamp(limits.min_threshold, limits.max_threshold) }),
            None => None,
        };
        let max_stage = request.max_stage.map(|m| Applied {
            requested: m,
            used: if limits.allow_max_stage { m.clamp(limits.min_max_stage, last) } else { last },
        });
        Ok(AppliedOverride { threshold, max_stage })
    }

    /// Starts a run for one request.
    pub fn start(&self, request: &CascadeOverride) -> Result<CascadeRun<'_>, CascadeError> {
        let applied = self.apply(request)?;
        Ok(CascadeRun {
            cascade: self,
            last: applied.max_stage.map_or(self.config.stages.len() - 1, |m| m.used),
            applied,
            next: 0,
            trace: Vec::new(),
            answered: None,
            best: None,
            done: false,
        })
    }

    /// The threshold stage `stage` uses under `applied` (the override replaces every stage's but the last's).
    pub fn threshold(&self, stage: usize, applied: &AppliedOverride) -> f64 {
        applied.threshold.map_or(self.config.stages[stage].threshold, |t| t.used)
    }
}

/// What the caller must do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Next<'a> {
    /// Call this stage (or skip it with [`CascadeRun::skip`]).
    Call(StageCall<'a>),
    /// The run is over: call [`CascadeRun::finish`].
    Done,
}

/// A stage to call.
#[derive(Debug, Clone, PartialEq)]
pub struct StageCall<'a> {
    /// The stage index.
    pub stage: usize,
    /// The provider or group to call.
    pub target: &'a str,
    /// The stage's estimator, if any.
    pub estimator: Option<&'a EstimatorConfig>,
    /// How many completions to request.
    pub samples: u32,
    /// The temperature to request, when the estimator sets one.
    pub temperature: Option<f64>,
    /// Whether to request token log-probabilities.
    pub logprobs: bool,
    /// The stop threshold in force.
    pub threshold: f64,
    /// Whether this stage stops whatever its confidence.
    pub last: bool,
}

/// What a called stage produced.
#[derive(Debug, Clone, PartialEq)]
pub struct StageResult {
    /// The provider that answered (a member of the target group).
    pub provider: String,
    /// The reply returned if the cascade stops here.
    pub answer: String,
    /// The estimator's result (ignored for the decision on the last stage, kept in the trace).
    pub estimate: Option<Estimate>,
    /// What the stage cost, all samples and follow-up calls included.
    pub cost_usd: Option<f64>,
    /// How long the stage took, follow-ups included.
    pub latency_ms: u64,
}

impl StageResult {
    /// A result whose answer is the sample the estimate chose (the first sample when it chose none).
    pub fn from_samples(
        provider: impl Into<String>,
        samples: &[Sample],
        estimate: Option<Estimate>,
        cost_usd: Option<f64>,
        latency_ms: u64,
    ) -> Self {
        let index = estimate.as_ref().and_then(|e| e.answer_index).unwrap_or(0);
        let answer = samples.get(index).or(samples.first()).map(|s| s.text.clone()).unwrap_or_default();
        StageResult { provider: provider.into(), answer, estimate, cost_usd, latency_ms }
    }
}

/// Why a stage stopped the cascade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// Its confidence reached the threshold.
    Confident,
    /// It is the cascade's last stage.
    LastStage,
    /// The request's `max_stage` made it the last.
    MaxStage,
}

/// Why a stage escalated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EscalateReason {
    /// Its confidence was below the threshold.
    BelowThreshold,
    /// Its confidence could not be measured (the estimate says why).
    EstimateUnavailable,
}

/// Why a stage was skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "why", rename_all = "snake_case")]
pub enum SkipReason {
    /// Every provider of the target is tripped: the cascade does not wait on an open breaker.
    AllTripped,
    /// The call failed after the availability layer's retries and fallbacks.
    CallFailed {
        /// The failure, as the caller describes it.
        detail: String,
    },
}

/// The decision on one stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// The cascade stops with this stage's answer.
    Stopped {
        /// Why.
        reason: StopReason,
    },
    /// The cascade moves to the next stage.
    Escalated {
        /// Why.
        reason: EscalateReason,
    },
    /// The stage was not called.
    Skipped {
        /// Why.
        reason: SkipReason,
    },
}

/// The trace record of one stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageTrace {
    /// The stage index.
    pub stage: usize,
    /// The configured target.
    pub target: String,
    /// The provider that answered; `None` when skipped.
    pub provider: Option<String>,
    /// The estimator family, when the stage has one.
    pub estimator: Option<EstimatorKind>,
    /// The threshold in force.
    pub threshold: f64,
    /// The measured confidence; `None` when skipped, unestimated or unavailable.
    pub confidence: Option<f64>,
    /// Why the confidence could not be measured, if so (for the caller to log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<Unavailable>,
    /// What the stage cost.
    pub cost_usd: Option<f64>,
    /// How long it took.
    pub latency_ms: Option<u64>,
    /// What was decided.
    pub verdict: Verdict,
}

/// The decision [`CascadeRun::record`] returns.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// Return this stage's answer.
    Stop {
        /// The stage's confidence (`0` when unmeasured).
        confidence: f64,
        /// Why.
        reason: StopReason,
    },
    /// Go on to the next stage.
    Escalate {
        /// Why.
        reason: EscalateReason,
    },
}

/// The pure stop rule of one stage: stop when the estimate is available and reaches `threshold`, or when the
/// stage is the last one callable.
pub fn decide(estimate: Option<&Estimate>, threshold: f64, last: Option<StopReason>) -> Decision {
    let confidence = estimate.filter(|e| e.unavailable.is_none()).map(|e| e.confidence);
    if let Some(reason) = last {
        return Decision::Stop { confidence: confidence.unwrap_or(0.0), reason };
    }
    match confidence {
        None => Decision::Escalate { reason: EscalateReason::EstimateUnavailable },
        Some(c) if c >= threshold => Decision::Stop { confidence: c, reason: StopReason::Confident },
        Some(_) => Decision::Escalate { reason: EscalateReason::BelowThreshold },
    }
}

/// The answer of a finished run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// The stage that answered.
    pub stage: usize,
    /// The provider that answered.
    pub provider: String,
    /// The reply.
    pub text: String,
    /// The extracted answer, when the estimator extracted one.
    pub extracted: Option<String>,
    /// The stage's confidence (`0` when unmeasured).
    pub confidence: f64,
    /// True when the answering stage had escalated but every later stage was skipped.
    pub below_threshold: bool,
}

/// The result of a run: the answer (if any stage answered) and the trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CascadeOutcome {
    /// The cascade's name.
    pub cascade: String,
    /// The answer; `None` when every stage was skipped.
    pub answer: Option<Answer>,
    /// One record per stage reached, in order.
    pub trace: Vec<StageTrace>,
    /// The request's overrides after the operator's limits.
    pub applied: AppliedOverride,
}

impl CascadeOutcome {
    /// Whether the answer came from a later stage than the first one called: the query escalated.
    pub fn escalated(&self) -> bool {
        self.trace.iter().any(|t| matches!(t.verdict, Verdict::Escalated { .. }))
    }

    /// The total cost of the stages that reported one.
    pub fn cost_usd(&self) -> f64 {
        self.trace.iter().filter_map(|t| t.cost_usd).sum()
    }
}

/// One request's walk through a cascade. See the module documentation for the protocol.
#[derive(Debug, Clone)]
pub struct CascadeRun<'a> {
    cascade: &'a Cascade,
    applied: AppliedOverride,
    last: usize,
    next: usize,
    trace: Vec<StageTrace>,
    answered: Option<Answer>,
    /// The most confident escalated answer so far, the fallback when every later stage is skipped.
    best: Option<Answer>,
    done: bool,
}

impl<'a> CascadeRun<'a> {
    /// The next step.
    pub fn next(&self) -> Next<'a> {
        if self.done || self.next > self.last {
            return Next::Done;
        }
        let stage = &self.cascade.config.stages[self.next];
        let estimator = stage.estimator.as_ref();
        Next::Call(StageCall {
            stage: self.next,
            target: &stage.target,
            estimator,
            samples: estimator.map_or(1, EstimatorConfig::samples),
            temperature: match estimator {
                Some(EstimatorConfig::SelfConsistency { temperature, .. }) => Some(*temperature),
                _ => None,
            },
            logprobs: estimator.is_some_and(EstimatorConfig::needs_logprobs),
            threshold: self.cascade.threshold(self.next, &self.applied),
            last: self.next == self.last,
        })
    }

    /// The overrides in force.
    pub fn applied(&self) -> &AppliedOverride {
        &self.applied
    }

    /// The trace so far.
    pub fn trace(&self) -> &[StageTrace] {
        &self.trace
    }

    fn current(&self) -> Result<(usize, &'a StageConfig), CascadeError> {
        if self.done || self.next > self.last {
            return Err(CascadeError::Misuse { reason: "the run is over" });
        }
        Ok((self.next, &self.cascade.config.stages[self.next]))
    }

    /// The stage [`next`](Self::next) asked for could not be called: record why and move on.
    pub fn skip(&mut self, reason: SkipReason) -> Result<(), CascadeError> {
        let (index, stage) = self.current()?;
        self.trace.push(StageTrace {
            stage: index,
            target: stage.target.clone(),
            provider: None,
            estimator: stage.estimator.as_ref().map(EstimatorConfig::kind),
            threshold: self.cascade.threshold(index, &self.applied),
            confidence: None,
            unavailable: None,
            cost_usd: None,
            latency_ms: None,
            verdict: Verdict::Skipped { reason },
        });
        self.next += 1;
        Ok(())
    }

    /// The stage [`next`](Self::next) asked for answered: decide whether to stop.
    pub fn record(&mut self, result: StageResult) -> Result<Decision, CascadeError> {
        let (index, stage) = self.current()?;
        let threshold = self.cascade.threshold(index, &self.applied);
        let last = (index == self.last).then(|| {
            if index == self.cascade.config.stages.len() - 1 { StopReason::LastStage } else { StopReason::MaxStage }
        });
        let decision = decide(result.estimate.as_ref(), threshold, last);
        let measured = result.estimate.as_ref().filter(|e| e.unavailable.is_none());
        let confidence = measured.map(|e| e.confidence);
        let answer = Answer {
            stage: index,
            provider: result.provider.clone(),
            text: result.answer,
            extracted: result.estimate.as_ref().and_then(|e| e.extracted.clone()),
            confidence: confidence.unwrap_or(0.0),
            below_threshold: false,
        };
        let verdict = match decision {
            Decision::Stop { reason, .. } => {
                self.answered = Some(answer);
                self.done = true;
                Verdict::Stopped { reason }
            }
            Decision::Escalate { reason } => {
                // Ties go to the later (stronger) stage.
                if self.best.as_ref().is_none_or(|b| answer.confidence >= b.confidence) {
                    self.best = Some(answer);
                }
                self.next += 1;
                Verdict::Escalated { reason }
            }
        };
        self.trace.push(StageTrace {
            stage: index,
            target: stage.target.clone(),
            provider: Some(result.provider),
            estimator: stage.estimator.as_ref().map(EstimatorConfig::kind),
            threshold,
            confidence,
            unavailable: result.estimate.and_then(|e| e.unavailable),
            cost_usd: result.cost_usd,
            latency_ms: Some(result.latency_ms),
            verdict,
        });
        Ok(decision)
    }

    /// Ends the run: the stopping stage's answer, or the best escalated one when every later stage was skipped.
    pub fn finish(self) -> CascadeOutcome {
        let answer = self.answered.or_else(|| self.best.map(|b| Answer { below_threshold: true, ..b }));
        CascadeOutcome { cascade: self.cascade.config.name.clone(), answer, trace: self.trace, applied: self.applied }
    }
}

#[cfg(test)]
mod tests;
