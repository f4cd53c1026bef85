//! A fake LLM provider that speaks the OpenAI Chat Completions and Anthropic Messages wire formats,
//! with scripted faults and replay of recorded model outputs.
//!
//! There is no real LLM API on the machines Switchyard is built and benchmarked on, and real APIs could
//! not be made to fail on cue anyway. This crate stands in for them: a real HTTP server (keep-alive
//! HTTP/1.1, `TCP_NODELAY`) that provider clients talk to exactly as they would to the real thing, and
//! whose behaviour per model (latency distribution, error mix, hangs, connection resets, mid-stream
//! failures, the answer itself, and how sure its token log-probabilities say it is) is scripted with
//! [`Behavior`] and can change while it runs.
//!
//! OpenAI requests with `logprobs: true` get one log-probability per token. By default it is a
//! deterministic hash of the token in `[-2.5, 0]`. A cascade test scripts confidence instead with
//! `unsure_rate` (the probability an answer is unsure) and `unsure_marker` (a prompt containing this text is
//! always unsure): every token of an unsure answer reports [`UNSURE_LOGPROB`] (-2.5), every token of a sure one
//! [`SURE_LOGPROB`] (-0.05). Raising `unsure_rate` at run time makes a weak stage escalate more:
//!
//! ```text
//! PUT /control/models/weak-model   {"unsure_rate": 0.3, "unsure_marker": "[hard]"}
//! ```
//!
//! ```no_run
//! # async fn demo() -> Result<(), switchyard_mock::MockServerError> {
//! use switchyard_mock::{Behavior, MockConfig, MockError, MockServer};
//!
//! let server = MockServer::start(MockConfig::default()).await?;
//! server.set_behavior("gpt-4o", Behavior::failing(MockError::status(503)));
//! // Point an OpenAI client at `server.openai_base_url()`, an Anthropic client at `server.base_url()`.
//! server.clear_behavior("gpt-4o");
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod behavior;
mod conn;
mod control;
mod replay;
mod server;
mod text;
mod wire;

use std::collections::HashMap;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use behavior::{Answer, Behavior, ErrorRule, Latency, MockError, SURE_LOGPROB, UNSURE_LOGPROB};
pub use replay::ReplayData;
pub use server::{MockConfig, MockServer, Stats};

/// Everything that can go wrong starting the mock or loading its inputs.
#[derive(Debug, thiserror::Error)]
pub enum MockServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("invalid behavior: `{field}` {reason}")]
    InvalidBehavior { field: String, reason: String },
    #[error("cannot read replay file {path}: {source}")]
    ReplayIo { path: PathBuf, source: std::io::Error },
    #[error("malformed replay CSV {path}: {source}")]
    ReplayCsv { path: PathBuf, source: csv::Error },
    #[error("malformed replay JSONL {path} line {line}: {source}")]
    ReplayJson { path: PathBuf, line: usize, source: serde_json::Error },
    #[error("unusable replay file {path}: {reason}")]
    ReplayFormat { path: PathBuf, reason: String },
    #[error("cannot read behavior file {path}: {source}")]
    ConfigIo { path: PathBuf, source: std::io::Error },
    #[error("malformed behavior file {path}: {source}")]
    ConfigJson { path: PathBuf, source: serde_json::Error },
}

impl MockServerError {
    /// Prefixes the field of an [`MockServerError::InvalidBehavior`] with where the behaviour sits.
    fn in_field(self, prefix: &str) -> Self {
        match self {
            Self::InvalidBehavior { field, reason } => {
                Self::InvalidBehavior { field: format!("{prefix}.{field}"), reason }
            }
            other => other,
        }
    }
}

/// The behaviour file of the binary: `{"default": Behavior, "models": {"<model>": Behavior, …}}`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BehaviorFile {
    pub default: Behavior,
    pub models: HashMap<String, Behavior>,
}

impl BehaviorFile {
    /// Reads and validates a behaviour file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, MockServerError> {
        let path = path.as_ref();
        let text = fs::read_to_string(path)
            .map_err(|source| MockServerError::ConfigIo { path: path.to_path_buf(), source })?;
        let file: Self = serde_json::from_str(&text)
            .map_err(|source| MockServerError::ConfigJson { path: path.to_path_buf(), source })?;
        file.default.validate().map_err(|err| err.in_field("default"))?;
        for (model, behavior) in &file.models {
            behavior.validate().map_err(|err| err.in_field(&format!("models.{model}")))?;
        }
        Ok(file)
    }
}
