//! Recorded outcomes in the one shape the replay reads: per query, per stage, the recorded samples.
//!
//! Two sources:
//! - the RouteLLM files: stage 0 is the weak model (Mixtral-8x7B), stage 1 the strong one (GPT-4 Turbo), one
//!   sample each; GSM8K has the response texts, MMLU only the correctness (its sample text is empty). The files
//!   carry no cost, so each stage gets a constant cost per query from [`RouteLlmCosts`];
//! - the generic cascade JSONL of switchyard-learn ([`switchyard_learn::dataset::cascade`]), with its own
//!   per-stage costs and several samples per stage.

use std::path::Path;

use serde::{Deserialize, Serialize};
use switchyard_learn::dataset::cascade::{CascadeRecord, load_cascade_jsonl};
use switchyard_learn::dataset::routellm::{self, RouteLlmOptions, RouteLlmSet, STRONG_MODEL, WEAK_MODEL};

use crate::CascadeError;

/// One recorded sample of a stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplaySample {
    /// The answer text (empty when the data has none).
    pub text: String,
    /// Whether it was correct.
    pub correct: bool,
    /// The answer's total token log-probability, when recorded.
    pub logprob: Option<f64>,
}

/// One stage's recorded call on a query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayStage {
    /// The model.
    pub model: String,
    /// The cost of the call in USD.
    pub cost_usd: f64,
    /// The samples (at least one).
    pub samples: Vec<ReplaySample>,
}

/// One query with every stage's recorded outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayQuery {
    /// The question's id.
    pub id: String,
    /// The prompt.
    pub prompt: String,
    /// The stages, cheapest first.
    pub stages: Vec<ReplayStage>,
}

/// Constant per-query stage costs for the RouteLLM data, which records none: list price per token times a
/// typical token count. Typical counts are the data's means with switchyard-learn's `ceil(chars / 4)` token
/// estimate, rounded: GSM8K prompts 60 tokens, Mixtral answers 76, GPT-4 answers 105; MMLU prompts 117 tokens
/// and a 5-token answer. Prices: Mixtral-8x7B 0.60 USD per million input and output tokens (a typical hosted
/// price), `gpt-4-1106-preview` 10 / 30 USD per million input / output tokens (OpenAI's list price).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RouteLlmCosts {
    /// The weak stage's cost per query, USD.
    pub weak_usd: f64,
    /// The strong stage's cost per query, USD.
    pub strong_usd: f64,
}

impl RouteLlmCosts {
    /// The documented constants for `set` (see the type's documentation).
    pub fn documented(set: RouteLlmSet) -> Self {
        let prices = RouteLlmOptions::default();
        let (input, weak_out, strong_out) = match set {
            RouteLlmSet::Gsm8k => (60, 76, 105),
            RouteLlmSet::Mmlu | RouteLlmSet::MtBench => (117, 5, 5),
        };
        RouteLlmCosts {
            weak_usd: prices.weak_price.cost(input, weak_out),
            strong_usd: prices.strong_price.cost(input, strong_out),
        }
    }
}

/// Loads a RouteLLM set (GSM8K or MMLU) as two-stage replay queries, contaminated prompts removed.
pub fn load_routellm(dir: &Path, set: RouteLlmSet, costs: RouteLlmCosts) -> Result<Vec<ReplayQuery>, CascadeError> {
    let table = match set {
        RouteLlmSet::Gsm8k => routellm::load_gsm8k(dir, &RouteLlmOptions::default())?,
        RouteLlmSet::Mmlu => routellm::load_mmlu(dir, &RouteLlmOptions::default())?,
        RouteLlmSet::MtBench => {
            return Err(CascadeError::Data {
                reason: "MT-Bench has judge scores, not right/wrong outcomes; use gsm8k or mmlu".into(),
            });
        }
    };
    let responses = match set {
        RouteLlmSet::Gsm8k => routellm::load_gsm8k_responses(dir)?,
        _ => Default::default(),
    };
    let weak = table.require_model(WEAK_MODEL)?;
    let strong = table.require_model(STRONG_MODEL)?;
    Ok(table
        .queries
        .iter()
        .map(|q| {
            let texts = responses.get(&q.id);
            let stage = |model: &str, column: usize, cost: f64| ReplayStage {
                model: model.to_owned(),
                cost_usd: cost,
                samples: vec![ReplaySample {
                    text: texts.map(|t| t[column].clone()).unwrap_or_default(),
                    correct: q.quality[column] >= 0.5,
                    logprob: None,
                }],
            };
            ReplayQuery {
                id: q.id.clone(),
                prompt: q.prompt.clone(),
                stages: vec![stage(WEAK_MODEL, weak, costs.weak_usd), stage(STRONG_MODEL, strong, costs.strong_usd)],
            }
        })
        .collect())
}

/// Loads a generic cascade JSONL file; every record must have the same stage models, and at least two stages.
pub fn load_jsonl(path: &Path) -> Result<Vec<ReplayQuery>, CascadeError> {
    let records = load_cascade_jsonl(path)?;
    from_records(&records)
}

/// Converts cascade records (checked: same stage models on every record, at least two stages).
pub fn from_records(records: &[CascadeRecord]) -> Result<Vec<ReplayQuery>, CascadeError> {
    let Some(first) = records.first() else {
        return Err(CascadeError::Data { reason: "no cascade record".into() });
    };
    if first.stages.len() < 2 {
        return Err(CascadeError::Data { reason: format!("record {} has fewer than two stages", first.id) });
    }
    records
        .iter()
        .map(|r| {
            let same = r.stages.len() == first.stages.len()
                && r.stages.iter().zip(&first.stages).all(|(a, b)| a.model == b.model);
            if !same {
                return Err(CascadeError::Data {
                    reason: format!("record {} has other stage models than record {}", r.id, first.id),
                });
            }
            Ok(ReplayQuery {
                id: r.id.clone(),
                prompt: r.prompt.clone(),
                stages: r
                    .stages
                    .iter()
                    .map(|s| ReplayStage {
                        model: s.model.clone(),
                        cost_usd: s.cost_usd,
                        samples: s
                            .samples
                            .iter()
                            .map(|x| ReplaySample { text: x.text.clone(), correct: x.correct, logprob: x.logprob })
                            .collect(),
                    })
                    .collect(),
            })
        })
        .collect()
}
