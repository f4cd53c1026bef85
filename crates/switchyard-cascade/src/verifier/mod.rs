//! The local verifier: a lightweight trained scorer of (query, answer) → P(correct).
//!
//! It is a logistic regression (switchyard-learn's [`LogisticModel`]) over three blocks of features:
//! `[query n-grams | answer n-grams | answer checks]`. The first two are switchyard-learn's hashed featurizer
//! applied to the query and to the answer separately (so "7" in the question and "7" in the answer are different
//! features); the last block is what a grader looks at without knowing the reference: whether an answer could be
//! extracted at all, whether it is marked as final (`####`, `answer:`), whether the shown arithmetic is right
//! ([`arith`]), length ratios, hedging words, repeated lines, a cut-off ending. Training is offline
//! ([`train_verifier`]); a trained model saves as versioned JSON and scores one pair in microseconds.
//!
//! A model remembers the ids of the questions it was trained on, so an evaluation can refuse to score them.

pub mod arith;

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};
use switchyard_learn::features::FeatureScratch;
use switchyard_learn::logistic::{self, LogisticModel, TrainConfig, TrainSummary};
use switchyard_learn::{FeatureConfig, Featurizer, SparseVec, split};

use crate::estimate::Scorer;
use crate::extract::{Extractor, normalize_text, numbers};
use crate::{CascadeError, InvalidField};

pub use arith::{ArithCheck, check_arithmetic};

/// The version of the saved model; bump on any change of the features' meaning.
pub const VERIFIER_FORMAT_VERSION: u32 = 1;

/// The answer-check features, in layout order (stored in the model file to detect a layout change).
pub const ANSWER_FEATURES: [&str; 16] = [
    "extracted",
    "final_marker",
    "decimal_answer",
    "negative_answer",
    "answer_in_query",
    "ln_answer_chars",
    "ln_length_ratio",
    "ln_hedges",
    "duplicate_line_share",
    "clean_ending",
    "ln_answer_numbers",
    "ln_equations_checked",
    "ln_equations_wrong",
    "any_equation_wrong",
    "empty_answer",
    "ln_answer_lines",
];

const HEDGES: [&str; 10] =
    ["not sure", "i think", "cannot", "can't", "unclear", "assume", "approximately", "however", "wait", "mistake"];

const MARKERS: [&str; 5] = ["####", "answer:", "answer is", "\\boxed", "final answer"];

/// One training example: a question, an answer to it, whether the answer was correct.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifierExample {
    /// The question's id (examples with the same id stay on one side of a cross-validation split).
    pub id: String,
    /// The query.
    pub query: String,
    /// The answer text.
    pub answer: String,
    /// Whether it was correct.
    pub correct: bool,
}

/// How a verifier is trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerifierOptions {
    /// The n-gram featurizer of both query and answer.
    pub features: FeatureConfig,
    /// The logistic regression's settings (its `l2` is replaced by the cross-validated one when `l2_grid` has
    /// more than one value).
    pub train: TrainConfig,
    /// The answer extractor the answer checks use (`extracted`, `decimal_answer`, …); none disables them.
    pub extractor: Option<Extractor>,
    /// L2 strengths to choose from by cross-validated log loss on the training data only.
    pub l2_grid: Vec<f64>,
    /// Folds of that cross-validation (at least 2 when the grid has several values).
    pub cv_folds: usize,
    /// Seed of the cross-validation folds.
    pub cv_seed: u64,
}

impl Default for VerifierOptions {
    fn default() -> Self {
        VerifierOptions {
            features: FeatureConfig { hash_bits: 16, ..FeatureConfig::default() },
            train: TrainConfig::default(),
            extractor: Some(Extractor::LastNumber),
            l2_grid: vec![1e-3, 1e-2, 3e-2, 1e-1],
            cv_folds: 3,
            cv_seed: 17,
        }
    }
}

/// What training did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifierTraining {
    /// Examples used.
    pub examples: usize,
    /// Share of them that were correct.
    pub positive_share: f64,
    /// The L2 strength chosen.
    pub l2: f64,
    /// The cross-validated mean log loss of each grid value (empty without cross-validation).
    pub cv_log_loss: Vec<(f64, f64)>,
    /// The final fit.
    pub summary: TrainSummary,
}

/// A trained verifier.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifierModel {
    featurizer: Featurizer,
    extractor: Option<Extractor>,
    model: LogisticModel,
    trained_on: BTreeSet<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifierFile {
    format_version: u32,
    features: FeatureConfig,
    extractor: Option<Extractor>,
    answer_features: Vec<String>,
    trained_on: BTreeSet<String>,
    model: LogisticModel,
}

impl VerifierModel {
    /// The feature vector of a (query, answer) pair.
    pub fn features(&self, query: &str, answer: &str) -> SparseVec {
        pair_features(&self.featurizer, self.extractor.as_ref(), query, answer, &mut FeatureScratch::default())
    }

    /// P(correct) of `answer` to `query`.
    pub fn probability(&self, query: &str, answer: &str) -> f64 {
        self.model.predict_proba(&self.features(query, answer))
    }

    /// The ids of the questions the model was trained on.
    pub fn trained_on(&self) -> &BTreeSet<String> {
        &self.trained_on
    }

    /// The extractor the answer checks use.
    pub fn extractor(&self) -> Option<&Extractor> {
        self.extractor.as_ref()
    }

    /// The model as versioned JSON.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(&VerifierFile {
            format_version: VERIFIER_FORMAT_VERSION,
            features: self.featurizer.config().clone(),
            extractor: self.extractor.clone(),
            answer_features: ANSWER_FEATURES.iter().map(|s| (*s).to_owned()).collect(),
            trained_on: self.trained_on.clone(),
            model: self.model.clone(),
        })
    }

    /// A model from its JSON, checking the version and the feature layout.
    pub fn from_json(text: &str) -> Result<Self, CascadeError> {
        let file: VerifierFile =
            serde_json::from_str(text).map_err(|e| CascadeError::InvalidModel { reason: e.to_string() })?;
        if file.format_version != VERIFIER_FORMAT_VERSION {
            return Err(CascadeError::InvalidModel {
                reason: format!("has format version {}, expected {VERIFIER_FORMAT_VERSION}", file.format_version),
            });
        }
        if file.answer_features.iter().map(String::as_str).ne(ANSWER_FEATURES) {
            return Err(CascadeError::InvalidModel { reason: "was trained with another answer-feature layout".into() });
        }
        let featurizer = Featurizer::new(file.features)?;
        if file.model.dim() != model_dim(&featurizer) {
            return Err(CascadeError::InvalidModel {
                reason: format!("has {} weights for {} features", file.model.dim(), model_dim(&featurizer)),
            });
        }
        Ok(VerifierModel { featurizer, extractor: file.extractor, model: file.model, trained_on: file.trained_on })
    }

    /// Writes the model to `path`.
    pub fn save(&self, path: &Path) -> Result<(), CascadeError> {
        let text = self.to_json().map_err(|source| CascadeError::Json { path: path.to_path_buf(), source })?;
        std::fs::write(path, text).map_err(|source| CascadeError::Io { path: path.to_path_buf(), source })
    }

    /// Reads a model written by [`save`](Self::save).
    pub fn load(path: &Path) -> Result<Self, CascadeError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| CascadeError::Io { path: path.to_path_buf(), source })?;
        Self::from_json(&text)
    }
}

impl Scorer for VerifierModel {
    fn score(&self, query: &str, answer: &str) -> Result<f64, CascadeError> {
        Ok(self.probability(query, answer))
    }
}

fn model_dim(featurizer: &Featurizer) -> usize {
    2 * featurizer.dim() + ANSWER_FEATURES.len()
}

/// `[query n-grams | answer n-grams | answer checks]`.
fn pair_features(
    featurizer: &Featurizer,
    extractor: Option<&Extractor>,
    query: &str,
    answer: &str,
    scratch: &mut FeatureScratch,
) -> SparseVec {
    let dim = featurizer.dim() as u32;
    let mut part = SparseVec::new();
    let mut pairs: Vec<(u32, f32)> = Vec::new();
    featurizer.featurize_into(query, scratch, &mut part);
    pairs.extend(part.iter());
    featurizer.featurize_into(answer, scratch, &mut part);
    pairs.extend(part.iter().map(|(i, v)| (i + dim, v)));
    let checks = answer_checks(extractor, query, answer);
    pairs.extend(checks.iter().enumerate().map(|(i, v)| (2 * dim + i as u32, *v)));
    SparseVec::from_pairs(pairs)
}

/// The answer-check block ([`ANSWER_FEATURES`]).
pub fn answer_checks(extractor: Option<&Extractor>, query: &str, answer: &str) -> [f32; ANSWER_FEATURES.len()] {
    let ln = |x: usize| (x as f32).ln_1p();
    let lower = answer.to_lowercase();
    let extracted = extractor.and_then(|e| e.extract(answer));
    let query_numbers: Vec<String> = numbers(query).into_iter().map(|n| n.canonical).collect();
    let answer_chars = answer.chars().count();
    let query_chars = query.chars().count();
    let lines: Vec<&str> = answer.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let distinct: BTreeSet<Option<String>> = lines.iter().map(|l| normalize_text(l)).collect();
    let duplicate_share = if lines.is_empty() { 0.0 } else { 1.0 - distinct.len() as f32 / lines.len() as f32 };
    let ending = answer.trim_end().chars().last();
    let clean_ending = ending.is_some_and(|c| c.is_ascii_digit() || matches!(c, '.' | '!' | '?' | ')' | '"' | '*'));
    let arith = check_arithmetic(answer);
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    [
        flag(extracted.is_some()),
        flag(MARKERS.iter().any(|m| lower.contains(m))),
        flag(extracted.as_deref().is_some_and(|a| a.contains('.'))),
        flag(extracted.as_deref().is_some_and(|a| a.starts_with('-'))),
        flag(extracted.as_ref().is_some_and(|a| query_numbers.contains(a))),
        ln(answer_chars) / 8.0,
        ((1.0 + answer_chars as f32) / (1.0 + query_chars as f32)).ln() / 4.0,
        ln(HEDGES.iter().map(|h| lower.matches(h).count()).sum()),
        duplicate_share,
        flag(clean_ending),
        ln(numbers(answer).len()) / 4.0,
        ln(arith.checked as usize) / 3.0,
        ln(arith.wrong as usize),
        flag(arith.wrong > 0),
        flag(answer.trim().is_empty()),
        ln(lines.len()) / 4.0,
    ]
}

/// Trains a verifier on `examples` (the caller keeps test questions out; their ids are stored in the model).
pub fn train_verifier(
    examples: &[VerifierExample],
    options: &VerifierOptions,
) -> Result<(VerifierModel, VerifierTraining), CascadeError> {
    if examples.is_empty() {
        return Err(CascadeError::Data { reason: "no training example for the verifier".into() });
    }
    let positives = examples.iter().filter(|e| e.correct).count();
    if positives == 0 || positives == examples.len() {
        return Err(CascadeError::Data { reason: "the verifier needs both correct and wrong answers to learn".into() });
    }
    if options.l2_grid.iter().any(|l| !(l.is_finite() && *l >= 0.0)) {
        return Err(CascadeError::InvalidConfig(InvalidField {
            stage: None,
            field: "l2_grid",
            reason: "must hold non-negative numbers",
        }));
    }
    let featurizer = Featurizer::new(options.features.clone())?;
    let dim = model_dim(&featurizer);
    let mut scratch = FeatureScratch::default();
    let xs: Vec<SparseVec> = examples
        .iter()
        .map(|e| pair_features(&featurizer, options.extractor.as_ref(), &e.query, &e.answer, &mut scratch))
        .collect();
    let ys: Vec<f64> = examples.iter().map(|e| if e.correct { 1.0 } else { 0.0 }).collect();

    let mut cv_log_loss = Vec::new();
    let mut l2 = options.l2_grid.first().copied().unwrap_or(options.train.l2);
    if options.l2_grid.len() > 1 {
        if options.cv_folds < 2 {
            return Err(CascadeError::invalid(None, "cv_folds", "must be at least 2 to choose among several l2"));
        }
        let ids: Vec<&str> = examples.iter().map(|e| e.id.as_str()).collect();
        let folds = split::kfold_by_id(&ids, options.cv_folds, options.cv_seed)?;
        for &candidate in &options.l2_grid {
            let config = TrainConfig { l2: candidate, ..options.train };
            let (mut loss, mut n) = (0.0, 0usize);
            for fold in &folds {
                let train_x: Vec<SparseVec> = fold.train.iter().map(|&i| xs[i].clone()).collect();
                let train_y: Vec<f64> = fold.train.iter().map(|&i| ys[i]).collect();
                let (model, _) = logistic::train(&train_x, &train_y, None, dim, &config)?;
                for &i in &fold.test {
                    let p = model.predict_proba(&xs[i]).clamp(1e-9, 1.0 - 1e-9);
                    loss -= if ys[i] > 0.5 { p.ln() } else { (1.0 - p).ln() };
                    n += 1;
                }
            }
            cv_log_loss.push((candidate, loss / n.max(1) as f64));
        }
        if let Some(&(best, _)) = cv_log_loss.iter().min_by(|a, b| a.1.total_cmp(&b.1)) {
            l2 = best;
        }
    }
    let (model, summary) = logistic::train(&xs, &ys, None, dim, &TrainConfig { l2, ..options.train })?;
    let trained_on = examples.iter().map(|e| e.id.clone()).collect();
    Ok((
        VerifierModel { featurizer, extractor: options.extractor.clone(), model, trained_on },
        VerifierTraining {
            examples: examples.len(),
            positive_share: positives as f64 / examples.len() as f64,
            l2,
            cv_log_loss,
            summary,
        },
    ))
}

#[cfg(test)]
mod tests;
