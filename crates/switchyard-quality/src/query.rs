//! What a router sees of a query, and the per-request objective.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

use crate::error::{QualityError, Result};

/// The parts of a query a routing decision may read. Borrowed, so building one costs nothing.
#[derive(Debug, Clone, Copy)]
pub struct QueryInput<'a> {
    /// The text routers read: the last user message (the runtime's choice; the offline data holds single prompts).
    pub prompt: &'a str,
    /// Number of messages in the conversation.
    pub message_count: usize,
    /// Whether the conversation has a system prompt.
    pub has_system_prompt: bool,
    /// The request's free key/value metadata (user tier, task ...).
    pub metadata: &'a BTreeMap<String, String>,
}

static NO_METADATA: LazyLock<BTreeMap<String, String>> = LazyLock::new(BTreeMap::new);

impl<'a> QueryInput<'a> {
    /// A single-message query without system prompt or metadata (the shape of the offline data).
    pub fn prompt(prompt: &'a str) -> Self {
        QueryInput { prompt, message_count: 1, has_system_prompt: false, metadata: &NO_METADATA }
    }
}

/// What a request asks the router to favour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// The best predicted answer, whatever it costs.
    Quality,
    /// The cheapest model predicted good enough.
    Cost,
    /// The fastest model predicted good enough (latency from the caller's live statistics).
    Latency,
}

impl std::str::FromStr for Objective {
    type Err = QualityError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "quality" => Ok(Objective::Quality),
            "cost" => Ok(Objective::Cost),
            "latency" => Ok(Objective::Latency),
            other => Err(QualityError::invalid("objective", format!("{other:?} is not quality, cost or latency"))),
        }
    }
}

/// Live facts about the candidates the caller passes to a decision, indexed like the router's candidates.
/// Empty slices mean "unknown": every candidate available, no latency known.
#[derive(Debug, Clone, Copy, Default)]
pub struct LiveView<'a> {
    /// Whether each candidate can be called now (false when all its providers are tripped).
    pub available: &'a [bool],
    /// Recent latency of each candidate in milliseconds, when known.
    pub latency_ms: &'a [Option<f64>],
}

impl LiveView<'_> {
    /// Whether candidate `i` is available (unknown counts as available).
    pub fn is_available(&self, i: usize) -> bool {
        self.available.get(i).copied().unwrap_or(true)
    }

    /// The latency of candidate `i`, when known.
    pub fn latency(&self, i: usize) -> Option<f64> {
        self.latency_ms.get(i).copied().flatten()
    }
}
