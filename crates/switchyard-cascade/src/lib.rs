//! The decision code of Switchyard's cascade strategy: call the weak model first, estimate its confidence,
//! escalate to the next stage below a threshold.
//!
//! This crate is pure. It performs no network I/O, starts no runtime and reads no clock; only its explicit
//! file entry points (loading and saving a verifier model, the offline evaluation) touch the file system. The
//! runtime's cascade coordinator and `switchyard eval cascade` call the very same functions, so what the
//! evaluation measures is what production decides.
//!
//! - [`extract`]: reading a comparable answer out of a reply;
//! - [`estimate`]: the confidence estimators (self-consistency, token logprobs, self-evaluation, verifier);
//! - [`plan`]: the stage state machine and its trace;
//! - [`health`]: escalation-rate health, cost maths, latency tails;
//! - [`verifier`]: the trained local verifier (features, training, versioned JSON);
//! - [`eval`]: `switchyard eval cascade` and `switchyard cascade train-verifier` as library functions;
//! - [`counters`]: the pure part of the cluster-wide escalation counters (time buckets, windows, batches).

pub mod counters;
pub mod error;
pub mod estimate;
pub mod eval;
pub mod extract;
pub mod health;
pub mod plan;
pub mod verifier;

pub use error::{CascadeError, InvalidField};
pub use estimate::{
    Estimate, EstimatorConfig, EstimatorKind, FollowUp, FollowUpResult, Sample, ScoreRequest, ScoreResponse, Scorer,
    Unavailable, VerifierSource, estimate, follow_up,
};
pub use eval::{EvalCascadeOptions, Report, TrainVerifierCmdOptions, eval_cascade, train_verifier_cmd};
pub use extract::Extractor;
pub use plan::{
    Answer, Cascade, CascadeConfig, CascadeOutcome, CascadeOverride, CascadeRun, Decision, Next, OverrideLimits,
    SkipReason, StageCall, StageConfig, StageResult, StageTrace, Verdict, decide,
};
pub use verifier::{VerifierExample, VerifierModel, VerifierOptions, train_verifier};
