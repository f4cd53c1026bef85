//! The one error type of the crate.
//!
//! Every failure names what it was reading (a path, and a line or row where there is one) so a bad data file can
//! be fixed without a debugger.

use std::path::PathBuf;

/// Everything that can go wrong while loading outcome data, training, saving or plotting.
#[derive(Debug, thiserror::Error)]
pub enum LearnError {
    /// A file or folder could not be read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A CSV file is not valid CSV.
    #[error("bad csv in {path}: {source}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: csv::Error,
    },
    /// A CSV file lacks a column the loader needs.
    #[error("{path} has no column {column:?}")]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The column that was expected in the header.
        column: String,
    },
    /// A CSV cell does not hold what its column promises.
    #[error("{path} row {row}, column {column:?}: {reason}")]
    BadCell {
        /// The file.
        path: PathBuf,
        /// One-based data row (the header is row 0).
        row: u64,
        /// The column.
        column: String,
        /// What is wrong with the value.
        reason: String,
    },
    /// A JSONL line is not valid JSON or does not have the expected shape.
    #[error("{path} line {line}: {source}")]
    JsonLine {
        /// The file.
        path: PathBuf,
        /// One-based line number.
        line: usize,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A JSONL line parses but breaks a rule of its format (a score out of range, a missing model, ...).
    #[error("{path} line {line}: {reason}")]
    BadRecord {
        /// The file.
        path: PathBuf,
        /// One-based line number.
        line: usize,
        /// What is wrong with the record.
        reason: String,
    },
    /// A whole JSON document (a price table, a saved model) could not be parsed.
    #[error("bad json in {path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A saved model was written by another, incompatible format version.
    #[error("{what} format version {found} is not supported (expected {expected})")]
    FormatVersion {
        /// Which kind of saved object.
        what: &'static str,
        /// The version in the file.
        found: u32,
        /// The version this build reads.
        expected: u32,
    },
    /// A setting or an argument is outside its allowed range.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The setting or argument.
        field: &'static str,
        /// Why it is refused.
        reason: String,
    },
    /// The data left nothing to work on (no query after filtering, an empty split, ...).
    #[error("no data: {what}")]
    Empty {
        /// What turned out empty.
        what: String,
    },
    /// The SVG plot could not be drawn.
    #[error("cannot draw plot {path}: {reason}")]
    Plot {
        /// The SVG file.
        path: PathBuf,
        /// The drawing backend's message.
        reason: String,
    },
}

impl LearnError {
    /// An [`LearnError::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }

    /// An [`LearnError::Invalid`] for `field`.
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid { field, reason: reason.into() }
    }
}

/// The result type of this crate.
pub type Result<T, E = LearnError> = std::result::Result<T, E>;
