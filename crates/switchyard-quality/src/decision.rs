//! The outcome of a routing decision, carrying what the trace shows: which router, its score and threshold, the
//! chosen model and why.

use std::sync::Arc;

use serde::Serialize;

use crate::query::Objective;

/// Why a router chose its model.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    /// A rule of a rule router matched (first match wins).
    RuleMatched {
        /// Zero-based position of the rule.
        index: usize,
        /// The rule's name.
        rule: Arc<str>,
    },
    /// No rule matched; the router's default.
    Default,
    /// The learned score reached the threshold: the strong model.
    ScoreAtOrAboveThreshold,
    /// The learned score stayed below the threshold: the weak model.
    ScoreBelowThreshold,
    /// The query is unlike the training data: the safe (strong) model.
    OutOfDistribution {
        /// Share of the query's hashed n-gram features never seen in training.
        unseen_share: f64,
        /// The limit it exceeded (the 99th percentile on held-out training queries).
        limit: f64,
    },
    /// N-way: the cheapest candidate whose predicted quality reaches the target.
    CheapestGoodEnough {
        /// The chosen model's predicted quality.
        predicted_quality: f64,
        /// The quality target.
        target: f64,
    },
    /// N-way: no available candidate is predicted to reach the target; the best predicted one.
    NoneGoodEnough {
        /// The chosen model's predicted quality.
        predicted_quality: f64,
        /// The quality target.
        target: f64,
    },
    /// N-way: the candidate maximising `predicted quality - lambda * cost`.
    BestUtility {
        /// The chosen model's predicted quality.
        predicted_quality: f64,
        /// Its expected cost in USD.
        cost_usd: f64,
        /// The trade-off: quality points per USD.
        lambda: f64,
    },
    /// N-way: the best predicted quality (objective `quality`).
    BestPredicted {
        /// The chosen model's predicted quality.
        predicted_quality: f64,
    },
    /// N-way: the lowest known latency among the candidates predicted good enough (objective `latency`).
    FastestGoodEnough {
        /// The chosen model's predicted quality.
        predicted_quality: f64,
        /// Its latency in milliseconds.
        latency_ms: f64,
    },
    /// The preferred model was unavailable; the next choice was taken.
    Fallback {
        /// The model that would have been chosen.
        preferred: Arc<str>,
        /// Why that model was preferred.
        because: Box<Reason>,
    },
}

/// A routing decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// The router's name.
    pub router: Arc<str>,
    /// The chosen model (or route target).
    pub model: Arc<str>,
    /// The router's score, if it computes one (learned binary: the score compared with the threshold).
    pub score: Option<f64>,
    /// The threshold the score was compared with.
    pub threshold: Option<f64>,
    /// The objective that shaped the choice, if the request gave one.
    pub objective: Option<Objective>,
    /// Why.
    pub reason: Reason,
}

impl Decision {
    /// The same decision sent to `model` instead, because the chosen model cannot be called now (all its providers
    /// tripped): the reason becomes [`Reason::Fallback`], naming the preferred model and why it was preferred.
    pub fn fallen_back_to(self, model: Arc<str>) -> Decision {
        let reason = Reason::Fallback { preferred: self.model, because: Box::new(self.reason) };
        Decision { model, reason, ..self }
    }
}
