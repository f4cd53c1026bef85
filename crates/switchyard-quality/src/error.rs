//! The one error type of the crate.

use std::path::PathBuf;

use switchyard_learn::LearnError;

/// Everything that can go wrong while building, training, calibrating or evaluating a router.
#[derive(Debug, thiserror::Error)]
pub enum QualityError {
    /// Loading data, training a model, computing a metric or drawing a plot failed.
    #[error(transparent)]
    Learn(#[from] LearnError),
    /// A rule of a rule router is invalid.
    #[error("rule {index} ({name:?}): {field}: {reason}")]
    Rule {
        /// Zero-based position of the rule.
        index: usize,
        /// The rule's name.
        name: String,
        /// The offending field.
        field: &'static str,
        /// Why it is refused.
        reason: String,
    },
    /// A router setting is invalid.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The setting.
        field: &'static str,
        /// Why it is refused.
        reason: String,
    },
    /// A saved router could not be read or written.
    #[error("router file {path}: {reason}")]
    RouterFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A saved router was written by another, incompatible format version.
    #[error("router file format version {found} is not supported (expected {expected})")]
    FormatVersion {
        /// The version in the file.
        found: u32,
        /// The version this build reads.
        expected: u32,
    },
}

impl QualityError {
    /// A [`QualityError::Invalid`] for `field`.
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid { field, reason: reason.into() }
    }
}

/// The result type of this crate.
pub type Result<T, E = QualityError> = std::result::Result<T, E>;
