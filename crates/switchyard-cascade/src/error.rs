//! The one error type of the cascade crate.

use std::fmt;
use std::path::PathBuf;

/// A configuration value the cascade cannot work with: which stage (if any), which field, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidField {
    /// The stage index, when the field belongs to a stage.
    pub stage: Option<usize>,
    /// The field, as named in the config (`threshold`, `estimator.samples`, …).
    pub field: &'static str,
    /// Why the value was refused.
    pub reason: &'static str,
}

impl fmt::Display for InvalidField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.stage {
            Some(stage) => write!(f, "stage {stage}: {} {}", self.field, self.reason),
            None => write!(f, "{} {}", self.field, self.reason),
        }
    }
}

/// Everything that can go wrong in the cascade crate.
#[derive(Debug, thiserror::Error)]
pub enum CascadeError {
    /// A cascade, estimator, health or counter configuration is invalid.
    #[error("invalid cascade config: {0}")]
    InvalidConfig(InvalidField),
    /// A per-request override is not a usable value (it is clamped when merely out of the operator's limits).
    #[error("invalid cascade override: {field} {reason}")]
    InvalidOverride {
        /// `threshold` or `max_stage`.
        field: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// A call on a cascade run that its state does not allow (recording a stage that was not asked for).
    #[error("cascade run misuse: {reason}")]
    Misuse {
        /// What was wrong.
        reason: &'static str,
    },
    /// A verifier score that is not a probability.
    #[error("verifier score {value} is not in [0, 1]")]
    InvalidScore {
        /// The value received.
        value: f64,
    },
    /// A verifier model file has an unknown version or inconsistent contents.
    #[error("verifier model {reason}")]
    InvalidModel {
        /// What is wrong with it.
        reason: String,
    },
    /// Training or evaluation data is unusable.
    #[error("bad data: {reason}")]
    Data {
        /// What is wrong with it.
        reason: String,
    },
    /// A learning step (loading data, featurising, training, metrics, plotting) failed.
    #[error(transparent)]
    Learn(#[from] switchyard_learn::LearnError),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A JSON file could not be parsed or written.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: serde_json::Error,
    },
}

impl CascadeError {
    pub(crate) fn invalid(stage: Option<usize>, field: &'static str, reason: &'static str) -> Self {
        CascadeError::InvalidConfig(InvalidField { stage, field, reason })
    }
}
