//! Outcome data: which model answered which query how well, and at what cost.
//!
//! Routers and cascade verifiers learn from recorded outcomes and are measured on them. Three sources exist
//! (RouteLLM's weak/strong files, the generic N-model JSONL of issue 8 with ZeroEval as its real instance, and the
//! generic cascade JSONL of issue 7); each loader turns its source into one in-memory shape, [`OutcomeTable`]: a
//! list of queries, each with its prompt and, per model, a quality in `[0, 1]` and an optional cost in USD.
//! Everything downstream (splits, features, training, metrics) reads only that shape.

pub mod cascade;
pub mod outcomes;
pub mod routellm;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{LearnError, Result};

/// A model's list price in USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Price {
    /// USD per million input (prompt) tokens.
    pub input_usd_per_million: f64,
    /// USD per million output (completion) tokens.
    pub output_usd_per_million: f64,
}

impl Price {
    /// The cost in USD of a call with these token counts.
    pub fn cost(&self, input_tokens: u64, output_tokens: u64) -> f64 {
        (input_tokens as f64 * self.input_usd_per_million + output_tokens as f64 * self.output_usd_per_million) / 1e6
    }
}

/// The token estimate used wherever no tokenizer is at hand: `ceil(chars / 4)`, as the ZeroEval data does.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

/// A candidate model of an outcome table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The model's name as the data spells it.
    pub name: String,
    /// Its price, `None` when the data has no price for it (an unpriced model).
    pub price: Option<Price>,
}

impl ModelInfo {
    /// Whether the model has a price.
    pub fn is_priced(&self) -> bool {
        self.price.is_some()
    }
}

/// One query and every model's recorded outcome on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryRecord {
    /// The question's id; two records with the same id are the same question (splits keep them together).
    pub id: String,
    /// The prompt as a user would send it (for multi-turn data, the first turn).
    pub prompt: String,
    /// A grouping known from the data but not at query time (MMLU subject, ZeroEval task, MT-Bench category).
    /// Reported per group; never a feature.
    pub group: Option<String>,
    /// Quality of each model's answer in `[0, 1]`, indexed like [`OutcomeTable::models`].
    pub quality: Vec<f64>,
    /// Cost in USD of each model's answer, `None` where unknown, indexed like [`OutcomeTable::models`].
    pub cost_usd: Vec<Option<f64>>,
}

/// Recorded outcomes of several models on a set of queries: the one shape every loader produces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeTable {
    /// A short name of the data set (`gsm8k`, `mmlu`, `mt-bench`, `zeroeval`, a file stem ...).
    pub name: String,
    /// The candidate models; the column order of every record.
    pub models: Vec<ModelInfo>,
    /// The queries.
    pub queries: Vec<QueryRecord>,
}

impl OutcomeTable {
    /// Checks that every record has one quality and one cost per model, qualities in `[0, 1]` and costs finite
    /// and non-negative.
    pub fn validate(&self) -> Result<()> {
        if self.models.is_empty() {
            return Err(LearnError::Empty { what: format!("{}: no model", self.name) });
        }
        for q in &self.queries {
            if q.quality.len() != self.models.len() || q.cost_usd.len() != self.models.len() {
                return Err(LearnError::invalid(
                    "outcome table",
                    format!("query {} has {} qualities for {} models", q.id, q.quality.len(), self.models.len()),
                ));
            }
            if let Some(bad) = q.quality.iter().find(|v| !(0.0..=1.0).contains(*v)) {
                return Err(LearnError::invalid("quality", format!("query {} has quality {bad}", q.id)));
            }
            if let Some(bad) = q.cost_usd.iter().flatten().find(|v| !v.is_finite() || **v < 0.0) {
                return Err(LearnError::invalid("cost_usd", format!("query {} has cost {bad}", q.id)));
            }
        }
        Ok(())
    }

    /// The column of the model called `name`.
    pub fn model_index(&self, name: &str) -> Option<usize> {
        self.models.iter().position(|m| m.name == name)
    }

    /// The column of the model called `name`, or a typed error naming it.
    pub fn require_model(&self, name: &str) -> Result<usize> {
        self.model_index(name)
            .ok_or_else(|| LearnError::invalid("model", format!("{name:?} is not a model of {}", self.name)))
    }

    /// A table with only the models for which `keep` is true, in their current order.
    pub fn select_models(&self, keep: impl Fn(&ModelInfo) -> bool) -> OutcomeTable {
        let cols: Vec<usize> = (0..self.models.len()).filter(|&i| keep(&self.models[i])).collect();
        OutcomeTable {
            name: self.name.clone(),
            models: cols.iter().map(|&i| self.models[i].clone()).collect(),
            queries: self
                .queries
                .iter()
                .map(|q| QueryRecord {
                    id: q.id.clone(),
                    prompt: q.prompt.clone(),
                    group: q.group.clone(),
                    quality: cols.iter().map(|&i| q.quality[i]).collect(),
                    cost_usd: cols.iter().map(|&i| q.cost_usd[i]).collect(),
                })
                .collect(),
        }
    }

    /// A table with the queries at `indices` (in that order).
    pub fn subset(&self, indices: &[usize]) -> OutcomeTable {
        OutcomeTable {
            name: self.name.clone(),
            models: self.models.clone(),
            queries: indices.iter().filter_map(|&i| self.queries.get(i).cloned()).collect(),
        }
    }

    /// The mean quality of model column `model` over all queries (`0` on an empty table).
    pub fn mean_quality(&self, model: usize) -> f64 {
        mean(self.queries.iter().map(|q| q.quality[model]))
    }

    /// The mean cost per query of model column `model`, `None` if any query lacks its cost.
    pub fn mean_cost(&self, model: usize) -> Option<f64> {
        let costs: Option<Vec<f64>> = self.queries.iter().map(|q| q.cost_usd[model]).collect();
        costs.map(|c| mean(c.into_iter()))
    }

    /// Whether every query has a cost for every model.
    pub fn fully_costed(&self) -> bool {
        self.queries.iter().all(|q| q.cost_usd.iter().all(Option::is_some))
    }
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 { 0.0 } else { sum / n as f64 }
}

/// The folder of the shared data: `$SWITCHYARD_DATA` if set, else `../shared/data` relative to `repo_root`.
pub fn default_data_dir(repo_root: &Path) -> PathBuf {
    match std::env::var_os("SWITCHYARD_DATA") {
        Some(dir) => PathBuf::from(dir),
        None => repo_root.join("../shared/data"),
    }
}

/// Reads the prompts of a JSONL file: each line's `prompt` string field, or its `question` field (the shape of
/// GSM8K's `train.jsonl`); other fields are ignored. Calibration needs prompts only, no outcomes.
pub fn load_prompts(path: &Path) -> Result<Vec<String>> {
    #[derive(Deserialize)]
    struct Line {
        #[serde(default)]
        prompt: Option<String>,
        #[serde(default)]
        question: Option<String>,
    }
    let text = read_text(path)?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let l: Line = serde_json::from_str(line).map_err(|source| LearnError::JsonLine {
            path: path.to_path_buf(),
            line: i + 1,
            source,
        })?;
        match l.prompt.or(l.question) {
            Some(p) => out.push(p),
            None => {
                return Err(LearnError::BadRecord {
                    path: path.to_path_buf(),
                    line: i + 1,
                    reason: "no `prompt` or `question` field".into(),
                });
            }
        }
    }
    Ok(out)
}

/// Reads a whole file as UTF-8 text.
pub(crate) fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| LearnError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> OutcomeTable {
        let rec = |id: &str, q: [f64; 2], c: [Option<f64>; 2]| QueryRecord {
            id: id.into(),
            prompt: format!("prompt {id}"),
            group: None,
            quality: q.to_vec(),
            cost_usd: c.to_vec(),
        };
        OutcomeTable {
            name: "t".into(),
            models: vec![
                ModelInfo { name: "a".into(), price: None },
                ModelInfo {
                    name: "b".into(),
                    price: Some(Price { input_usd_per_million: 1.0, output_usd_per_million: 2.0 }),
                },
            ],
            queries: vec![rec("x", [1.0, 0.0], [None, Some(0.5)]), rec("y", [0.0, 1.0], [None, Some(1.5)])],
        }
    }

    #[test]
    fn means_and_selection() {
        let t = table();
        t.validate().ok();
        assert_eq!(t.mean_quality(0), 0.5);
        assert_eq!(t.mean_cost(1), Some(1.0));
        assert_eq!(t.mean_cost(0), None);
        assert!(!t.fully_costed());
        let priced = t.select_models(ModelInfo::is_priced);
        assert_eq!(priced.models.len(), 1);
        assert_eq!(priced.queries[1].quality, vec![1.0]);
        assert!(priced.fully_costed());
        assert_eq!(t.subset(&[1]).queries[0].id, "y");
    }

    #[test]
    fn validation_rejects_out_of_range_quality() {
        let mut t = table();
        assert!(t.validate().is_ok());
        t.queries[0].quality[0] = 1.5;
        assert!(matches!(t.validate(), Err(LearnError::Invalid { field: "quality", .. })));
    }

    #[test]
    fn prompts_from_either_field() {
        let path = std::env::temp_dir().join(format!("switchyard-prompts-{}.jsonl", std::process::id()));
        std::fs::write(&path, "{\"prompt\":\"a\"}\n\n{\"question\":\"b\",\"answer\":\"1\"}\n").ok();
        assert_eq!(load_prompts(&path).ok(), Some(vec!["a".to_string(), "b".to_string()]));
        std::fs::write(&path, "{\"prompt\":\"a\"}\n{\"answer\":\"1\"}\n").ok();
        assert!(matches!(load_prompts(&path), Err(LearnError::BadRecord { line: 2, .. })));
        std::fs::remove_file(&path).ok();
    }

    #[test]
    fn price_and_tokens() {
        let p = Price { input_usd_per_million: 2.0, output_usd_per_million: 10.0 };
        assert!((p.cost(1000, 100) - 0.003).abs() < 1e-12);
        assert_eq!(estimate_tokens("abcde"), 2);
        assert_eq!(estimate_tokens(""), 0);
    }
}
