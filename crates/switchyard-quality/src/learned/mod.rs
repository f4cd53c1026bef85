//! Learned routers: a featurizer and logistic models trained offline, loaded from one JSON file.
//!
//! - **Binary** ([`BinaryRouter`]): one score per query, "how much the strong model is needed", compared with a
//!   calibrated threshold: at or above it, the strong model. What the score is trained to predict is recorded in
//!   the file ([`BinaryTarget`]); training picks the target and the regularisation by cross-validated APGR.
//! - **N-way** ([`NWayRouter`]): one logistic model per candidate predicting the candidate's quality on the query;
//!   the choice depends on the objective: without one, the router's policy (the largest `quality - lambda * cost`,
//!   or the cheapest candidate predicted to reach the quality target); `quality` takes the best predicted; `cost`
//!   the cheapest good enough; `latency` the fastest good enough, latency supplied by the caller.
//!
//! Both apply the out-of-distribution guard first (an unfamiliar query goes to the safe side: the strong model, or
//! the most accurate candidate) and skip unavailable candidates, saying so in the [`Decision`]. Deciding reuses a
//! [`RouterScratch`], so a warmed-up router allocates nothing per query.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use switchyard_learn::{FeatureConfig, FeatureScratch, Featurizer, LogisticModel, SparseVec};

use crate::decision::{Decision, Reason};
use crate::drift::{DriftBaseline, DriftMonitor, OodGuard, QuerySignals, Vocabulary, signals};
use crate::error::{QualityError, Result};
use crate::query::{LiveView, Objective, QueryInput};

/// The version of the router file format; bump on any change of meaning.
pub const ROUTER_FORMAT_VERSION: u32 = 1;

/// What a binary router's logistic model was trained to predict; the score is oriented so that higher always
/// means "send to the strong model".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BinaryTarget {
    /// The soft target `(q_strong - q_weak + 1) / 2`: the model estimates the expected quality gain of the strong
    /// model, the quantity whose ordering maximises PGR. Score = the prediction.
    Gain,
    /// Whether the weak model's answer is good (`q_weak`); score = `1 - P(weak good)`.
    WeakFails,
    /// Whether the strong model is strictly better (`q_strong > q_weak`), RouteLLM's win label; score = the
    /// prediction.
    StrongWins,
}

impl BinaryTarget {
    /// Every target, in the order training tries them.
    pub const ALL: [BinaryTarget; 3] = [BinaryTarget::Gain, BinaryTarget::WeakFails, BinaryTarget::StrongWins];

    /// The training target of a query with these qualities.
    pub fn label(self, weak_quality: f64, strong_quality: f64) -> f64 {
        match self {
            BinaryTarget::Gain => ((strong_quality - weak_quality + 1.0) / 2.0).clamp(0.0, 1.0),
            BinaryTarget::WeakFails => weak_quality.clamp(0.0, 1.0),
            BinaryTarget::StrongWins => f64::from(u8::from(strong_quality > weak_quality)),
        }
    }

    /// The routing score of a prediction.
    pub fn score(self, probability: f64) -> f64 {
        match self {
            BinaryTarget::WeakFails => 1.0 - probability,
            BinaryTarget::Gain | BinaryTarget::StrongWins => probability,
        }
    }
}

/// The thresholds of a binary router: the calibrated one and one per objective.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Used when the request has no objective.
    pub balanced: f64,
    /// Used for objective `quality` (a larger strong share).
    pub quality: f64,
    /// Used for objective `cost` (a smaller strong share).
    pub cost: f64,
}

/// How a threshold set was chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// Target strong share of the balanced threshold.
    pub target_share: f64,
    /// Target strong share of the quality threshold.
    pub quality_share: f64,
    /// Target strong share of the cost threshold.
    pub cost_share: f64,
    /// Size of the calibration sample.
    pub sample: usize,
    /// Where the sample came from (a file, or `out-of-fold training scores`).
    pub source: String,
}

/// Facts about the training run, kept in the file for the record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingInfo {
    /// The data set's name.
    pub data: String,
    /// Training queries.
    pub queries: usize,
    /// The chosen L2 strength.
    pub l2: f64,
    /// Cross-validation folds used for the choice.
    pub folds: usize,
    /// The split seed.
    pub seed: u64,
    /// Mean cross-validated metric of the chosen setting (binary: APGR; N-way: mean log loss).
    pub cv_metric: f64,
}

/// A binary router as saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinaryRouterFile {
    /// The router's name in traces.
    pub name: String,
    /// The weak model.
    pub weak_model: String,
    /// The strong model.
    pub strong_model: String,
    /// What the logistic model predicts.
    pub target: BinaryTarget,
    /// The featurizer.
    pub features: FeatureConfig,
    /// The logistic model.
    pub model: LogisticModel,
    /// The thresholds.
    pub thresholds: Thresholds,
    /// How they were chosen.
    pub calibration: Calibration,
    /// The out-of-distribution guard.
    pub ood: OodGuard,
    /// The vocabulary unseen shares are measured against.
    pub vocabulary: Vocabulary,
    /// The baseline of the drift monitor.
    pub drift_baseline: DriftBaseline,
    /// Training facts.
    pub training: TrainingInfo,
}

/// One candidate of an N-way router.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NWayCandidate {
    /// The model.
    pub model: String,
    /// Its expected cost per query in USD (mean over the training queries).
    pub cost_usd: f64,
    /// Its mean quality on the training queries.
    pub mean_quality: f64,
}

/// How an N-way router predicts each candidate's quality.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum QualityModels {
    /// One logistic model per candidate, in candidate order: `P_m(good | x) = sigmoid(b_m + w_m . x)`.
    PerCandidate {
        /// The models.
        models: Vec<LogisticModel>,
    },
    /// One logistic model shared by all candidates (multi-task): `P_m(good | x) = sigmoid(b + u_m + (w + v_m) . x)`,
    /// with `w` learned from every candidate's outcomes (how hard the query is) and `v_m`, `u_m` the candidate's
    /// deviations, all under one L2 penalty, so a candidate's own weights stay near the shared ones unless its data
    /// says otherwise. Layout of the weight vector for `d` features and `M` candidates: `w` at `[0, d)`, `v_m` at
    /// `[d (1 + m), d (2 + m))`, `u_m` at `d (1 + M) + m`.
    Shared {
        /// The model over the expanded layout.
        model: LogisticModel,
    },
}

/// `sigmoid(b + u_m + (w + v_m) . x)` of every candidate `m` of a model over the shared layout (see
/// [`QualityModels::Shared`]), appended to `out`.
pub fn shared_probabilities(model: &LogisticModel, x: &SparseVec, dim: usize, candidates: usize, out: &mut Vec<f64>) {
    let shared: f64 = x.iter().map(|(i, v)| f64::from(model.weight(i as usize) * v)).sum();
    for m in 0..candidates {
        let offset = dim * (1 + m);
        let own: f64 = x.iter().map(|(i, v)| f64::from(model.weight(offset + i as usize) * v)).sum();
        let z = f64::from(model.bias()) + f64::from(model.weight(dim * (1 + candidates) + m)) + shared + own;
        out.push(switchyard_learn::logistic::sigmoid(z));
    }
}

/// A per-query cost predictor: `cost_m(x) = scale_m * sigmoid(...)` over the shared layout, trained on each
/// candidate's recorded cost divided by its scale (soft targets), so a query that makes models write long answers
/// (a hard maths problem) is known to cost more than a short one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostModel {
    /// The model over the shared layout.
    pub model: LogisticModel,
    /// Per candidate: the cost that maps to 1 (its largest training cost).
    pub scale: Vec<f64>,
}

impl CostModel {
    /// Writes every candidate's predicted cost into `out`.
    pub fn predict(&self, x: &SparseVec, dim: usize, out: &mut Vec<f64>) {
        out.clear();
        shared_probabilities(&self.model, x, dim, self.scale.len(), out);
        for (c, s) in out.iter_mut().zip(&self.scale) {
            *c *= s;
        }
    }
}

impl QualityModels {
    /// The expanded feature vector of candidate `m` for the shared layout.
    pub fn expand(x: &SparseVec, m: usize, dim: usize, candidates: usize) -> SparseVec {
        let mut pairs: Vec<(u32, f32)> = Vec::with_capacity(2 * x.nnz() + 1);
        let offset = (dim * (1 + m)) as u32;
        pairs.extend(x.iter());
        pairs.extend(x.iter().map(|(i, v)| (offset + i, v)));
        pairs.push(((dim * (1 + candidates) + m) as u32, 1.0));
        SparseVec::from_pairs(pairs)
    }

    /// The dimension of the shared layout.
    pub fn shared_dim(dim: usize, candidates: usize) -> usize {
        dim * (1 + candidates) + candidates
    }

    /// Writes every candidate's predicted quality for features `x` (of dimension `dim`) into `out`.
    pub fn predict(&self, x: &SparseVec, dim: usize, candidates: usize, out: &mut Vec<f64>) {
        out.clear();
        match self {
            QualityModels::PerCandidate { models } => out.extend(models.iter().map(|lr| lr.predict_proba(x))),
            QualityModels::Shared { model } => shared_probabilities(model, x, dim, candidates, out),
        }
    }

    fn fits(&self, dim: usize, candidates: usize) -> bool {
        match self {
            QualityModels::PerCandidate { models } => {
                models.len() == candidates && models.iter().all(|lr| lr.dim() == dim)
            }
            QualityModels::Shared { model } => model.dim() == Self::shared_dim(dim, candidates),
        }
    }
}

/// How an N-way router chooses when the request has no objective.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum NWayPolicy {
    /// The cheapest candidate with predicted quality at least `target`.
    CheapestGoodEnough {
        /// The quality target.
        target: f64,
    },
    /// The largest `predicted quality - lambda * cost_usd`.
    Utility {
        /// Quality points per USD.
        lambda: f64,
        /// The quality target used by the `cost` and `latency` objectives.
        target: f64,
    },
}

impl NWayPolicy {
    /// The quality target of the policy.
    pub fn target(&self) -> f64 {
        match *self {
            NWayPolicy::CheapestGoodEnough { target } | NWayPolicy::Utility { target, .. } => target,
        }
    }
}

/// An N-way router as saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NWayRouterFile {
    /// The router's name in traces.
    pub name: String,
    /// The featurizer.
    pub features: FeatureConfig,
    /// The candidates.
    pub candidates: Vec<NWayCandidate>,
    /// The quality predictors.
    pub quality: QualityModels,
    /// The per-query cost predictor; without it each candidate's mean training cost is used.
    pub cost: Option<CostModel>,
    /// The default policy.
    pub policy: NWayPolicy,
    /// The candidate used for out-of-distribution queries (the most accurate in training).
    pub safe_model: String,
    /// The out-of-distribution guard.
    pub ood: OodGuard,
    /// The vocabulary unseen shares are measured against.
    pub vocabulary: Vocabulary,
    /// The baseline of the drift monitor.
    pub drift_baseline: DriftBaseline,
    /// Training facts.
    pub training: TrainingInfo,
}

/// A saved router of either kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RouterFile {
    /// A weak/strong router.
    Binary(BinaryRouterFile),
    /// A router over N candidates.
    NWay(NWayRouterFile),
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    format_version: u32,
    router: RouterFile,
}

impl RouterFile {
    /// Serialises with the format version.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string(&Envelope { format_version: ROUTER_FORMAT_VERSION, router: self.clone() })
            .map_err(|e| QualityError::invalid("router", e.to_string()))
    }

    /// Parses a router written by [`RouterFile::to_json`], checking the format version first.
    pub fn from_json(text: &str) -> Result<Self> {
        #[derive(Deserialize)]
        struct VersionOnly {
            format_version: u32,
        }
        let v: VersionOnly = serde_json::from_str(text).map_err(|e| QualityError::invalid("router", e.to_string()))?;
        if v.format_version != ROUTER_FORMAT_VERSION {
            return Err(QualityError::FormatVersion { found: v.format_version, expected: ROUTER_FORMAT_VERSION });
        }
        let e: Envelope = serde_json::from_str(text).map_err(|e| QualityError::invalid("router", e.to_string()))?;
        Ok(e.router)
    }

    /// Writes the router to `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.to_json()?)
            .map_err(|e| QualityError::RouterFile { path: path.to_path_buf(), reason: e.to_string() })
    }

    /// Reads a router from `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| QualityError::RouterFile { path: path.to_path_buf(), reason: e.to_string() })?;
        Self::from_json(&text).map_err(|e| match e {
            QualityError::Invalid { reason, .. } => QualityError::RouterFile { path: path.to_path_buf(), reason },
            other => other,
        })
    }
}

/// Per-caller buffers of a decision; also keeps the last query's signals for the drift monitor.
#[derive(Debug, Default)]
pub struct RouterScratch {
    features: FeatureScratch,
    x: SparseVec,
    predictions: Vec<f64>,
    costs: Vec<f64>,
    last: QuerySignals,
    last_ood: bool,
}

impl RouterScratch {
    /// The signals of the last decided query.
    pub fn last_signals(&self) -> &QuerySignals {
        &self.last
    }

    /// Whether the guard flagged the last decided query.
    pub fn last_out_of_distribution(&self) -> bool {
        self.last_ood
    }

    /// Feeds the last decided query to a drift monitor.
    pub fn observe_into(&self, monitor: &mut DriftMonitor) {
        monitor.observe(&self.last, self.last_ood);
    }

    /// The per-candidate predicted qualities of the last N-way decision.
    pub fn last_predictions(&self) -> &[f64] {
        &self.predictions
    }

    /// The per-candidate expected costs of the last N-way decision.
    pub fn last_costs(&self) -> &[f64] {
        &self.costs
    }
}

/// A loaded binary router.
#[derive(Debug, Clone)]
pub struct BinaryRouter {
    file: BinaryRouterFile,
    featurizer: Featurizer,
    name: Arc<str>,
    weak: Arc<str>,
    strong: Arc<str>,
}

impl BinaryRouter {
    /// Builds the router of a saved file.
    pub fn new(file: BinaryRouterFile) -> Result<Self> {
        let featurizer = Featurizer::new(file.features.clone())?;
        if file.model.dim() != featurizer.dim() || file.vocabulary.dim() != featurizer.dim() {
            return Err(QualityError::invalid("model", "the model's dimension does not match its feature config"));
        }
        Ok(BinaryRouter {
            name: file.name.as_str().into(),
            weak: file.weak_model.as_str().into(),
            strong: file.strong_model.as_str().into(),
            featurizer,
            file,
        })
    }

    /// The saved form.
    pub fn file(&self) -> &BinaryRouterFile {
        &self.file
    }

    /// The featurizer.
    pub fn featurizer(&self) -> &Featurizer {
        &self.featurizer
    }

    /// The candidates, weak then strong (the order of [`LiveView`] slices).
    pub fn candidates(&self) -> [&str; 2] {
        [&self.weak, &self.strong]
    }

    /// The routing score of a prompt (higher: the strong model is more needed), computed in `scratch`.
    pub fn score(&self, prompt: &str, scratch: &mut RouterScratch) -> f64 {
        self.featurizer.featurize_into(prompt, &mut scratch.features, &mut scratch.x);
        scratch.last = signals(&self.featurizer, &scratch.x, &self.file.vocabulary);
        self.file.target.score(self.file.model.predict_proba(&scratch.x))
    }

    /// Decides between weak and strong. The objective picks the threshold (`latency`: the cost threshold when the
    /// strong model is slower, else the quality one); an unavailable choice falls back to the other model.
    pub fn decide(
        &self,
        query: &QueryInput<'_>,
        objective: Option<Objective>,
        live: &LiveView<'_>,
        scratch: &mut RouterScratch,
    ) -> Decision {
        let score = self.score(query.prompt, scratch);
        let t = &self.file.thresholds;
        let threshold = match objective {
            None => t.balanced,
            Some(Objective::Quality) => t.quality,
            Some(Objective::Cost) => t.cost,
            Some(Objective::Latency) => match (live.latency(0), live.latency(1)) {
                (Some(w), Some(s)) if s <= w => t.quality,
                _ => t.cost,
            },
        };
        scratch.last_ood = self.file.ood.trips(&scratch.last);
        let (strong, reason) = if scratch.last_ood {
            (
                true,
                Reason::OutOfDistribution {
                    unseen_share: scratch.last.unseen_share,
                    limit: self.file.ood.max_unseen_share,
                },
            )
        } else if score >= threshold {
            (true, Reason::ScoreAtOrAboveThreshold)
        } else {
            (false, Reason::ScoreBelowThreshold)
        };
        let preferred = usize::from(strong);
        let (model, reason) = if !live.is_available(preferred) && live.is_available(1 - preferred) {
            let names = [&self.weak, &self.strong];
            (
                names[1 - preferred].clone(),
                Reason::Fallback { preferred: names[preferred].clone(), because: Box::new(reason) },
            )
        } else {
            (if strong { self.strong.clone() } else { self.weak.clone() }, reason)
        };
        Decision { router: self.name.clone(), model, score: Some(score), threshold: Some(threshold), objective, reason }
    }
}

/// A loaded N-way router.
#[derive(Debug, Clone)]
pub struct NWayRouter {
    file: NWayRouterFile,
    featurizer: Featurizer,
    name: Arc<str>,
    models: Vec<Arc<str>>,
    safe: usize,
}

impl NWayRouter {
    /// Builds the router of a saved file.
    pub fn new(file: NWayRouterFile) -> Result<Self> {
        let featurizer = Featurizer::new(file.features.clone())?;
        if file.candidates.is_empty() {
            return Err(QualityError::invalid("candidates", "an N-way router needs at least one candidate"));
        }
        let fits =
            file.quality.fits(featurizer.dim(), file.candidates.len()) && file.vocabulary.dim() == featurizer.dim();
        if !fits || file.candidates.iter().any(|c| c.cost_usd.is_nan() || c.cost_usd < 0.0) {
            return Err(QualityError::invalid("candidates", "a candidate's model or cost does not fit"));
        }
        let safe =
            file.candidates.iter().position(|c| c.model == file.safe_model).ok_or_else(|| {
                QualityError::invalid("safe_model", format!("{:?} is not a candidate", file.safe_model))
            })?;
        if file.cost.as_ref().is_some_and(|c| {
            c.scale.len() != file.candidates.len()
                || c.model.dim() != QualityModels::shared_dim(featurizer.dim(), file.candidates.len())
        }) {
            return Err(QualityError::invalid("cost", "the cost model does not fit the candidates"));
        }
        Ok(NWayRouter {
            name: file.name.as_str().into(),
            models: file.candidates.iter().map(|c| Arc::from(c.model.as_str())).collect(),
            featurizer,
            safe,
            file,
        })
    }

    /// The saved form.
    pub fn file(&self) -> &NWayRouterFile {
        &self.file
    }

    /// The featurizer.
    pub fn featurizer(&self) -> &Featurizer {
        &self.featurizer
    }

    /// The candidates' names (the order of [`LiveView`] slices).
    pub fn candidates(&self) -> impl Iterator<Item = &str> {
        self.models.iter().map(|m| &**m)
    }

    /// Predicts every candidate's quality and cost on `prompt` into `scratch` (see
    /// [`RouterScratch::last_predictions`] and [`RouterScratch::last_costs`]).
    pub fn predict(&self, prompt: &str, scratch: &mut RouterScratch) {
        self.featurizer.featurize_into(prompt, &mut scratch.features, &mut scratch.x);
        let (dim, n) = (self.featurizer.dim(), self.file.candidates.len());
        self.file.quality.predict(&scratch.x, dim, n, &mut scratch.predictions);
        match &self.file.cost {
            Some(cost) => cost.predict(&scratch.x, dim, &mut scratch.costs),
            None => {
                scratch.costs.clear();
                scratch.costs.extend(self.file.candidates.iter().map(|c| c.cost_usd));
            }
        }
        scratch.last = signals(&self.featurizer, &scratch.x, &self.file.vocabulary);
        scratch.last_ood = self.file.ood.trips(&scratch.last);
    }

    /// Chooses a candidate under `policy` (the router's own unless overridden, e.g. by a sweep).
    pub fn decide_with_policy(
        &self,
        query: &QueryInput<'_>,
        objective: Option<Objective>,
        policy: &NWayPolicy,
        live: &LiveView<'_>,
        scratch: &mut RouterScratch,
    ) -> Decision {
        self.predict(query.prompt, scratch);
        let p = &scratch.predictions;
        let cost = &scratch.costs;
        let n = self.file.candidates.len();
        let target = policy.target();
        let ok = |i: &usize| live.is_available(*i);
        let best = || (0..n).filter(ok).max_by(|&a, &b| p[a].total_cmp(&p[b]).then(cost[b].total_cmp(&cost[a])));
        let cheapest_good =
            || (0..n).filter(ok).filter(|&i| p[i] >= target).min_by(|&a, &b| cost[a].total_cmp(&cost[b]));
        // When no candidate is predicted good enough: the most accurate model of training (the safe model) if it
        // is available, which is steadier than the arg-max of close, noisy predictions; else the best predicted.
        let fallback = || if live.is_available(self.safe) { Some(self.safe) } else { best() };
        let (choice, reason) = if scratch.last_ood {
            (
                Some(self.safe),
                Reason::OutOfDistribution {
                    unseen_share: scratch.last.unseen_share,
                    limit: self.file.ood.max_unseen_share,
                },
            )
        } else {
            match (objective, policy) {
                (Some(Objective::Quality), _) => {
                    let c = best();
                    (c, Reason::BestPredicted { predicted_quality: c.map_or(0.0, |i| p[i]) })
                }
                (Some(Objective::Latency), _) => {
                    let fastest = (0..n)
                        .filter(ok)
                        .filter(|&i| p[i] >= target)
                        .filter_map(|i| live.latency(i).map(|l| (i, l)))
                        .min_by(|a, b| a.1.total_cmp(&b.1));
                    match fastest {
                        Some((i, l)) => (Some(i), Reason::FastestGoodEnough { predicted_quality: p[i], latency_ms: l }),
                        None => self.cheapest_or_best(cheapest_good(), fallback(), p, target),
                    }
                }
                (Some(Objective::Cost), _) | (None, NWayPolicy::CheapestGoodEnough { .. }) => {
                    self.cheapest_or_best(cheapest_good(), fallback(), p, target)
                }
                (None, NWayPolicy::Utility { lambda, .. }) => {
                    let u = |i: usize| p[i] - lambda * cost[i];
                    let c = (0..n).filter(ok).max_by(|&a, &b| u(a).total_cmp(&u(b)));
                    (
                        c,
                        Reason::BestUtility {
                            predicted_quality: c.map_or(0.0, |i| p[i]),
                            cost_usd: c.map_or(0.0, |i| cost[i]),
                            lambda: *lambda,
                        },
                    )
                }
            }
        };
        // Only the safe model of the guard can be unavailable here (every other choice filters on availability);
        // it falls back to the best predicted available candidate. With nothing available, the preferred model is
        // named and the availability layer reports the outage.
        let (chosen, reason) = match choice {
            Some(i) if live.is_available(i) => (i, reason),
            preferred => {
                let preferred = preferred.unwrap_or(self.safe);
                match best() {
                    Some(j) => {
                        (j, Reason::Fallback { preferred: self.models[preferred].clone(), because: Box::new(reason) })
                    }
                    None => (preferred, reason),
                }
            }
        };
        Decision {
            router: self.name.clone(),
            model: self.models[chosen].clone(),
            score: p.get(chosen).copied(),
            threshold: Some(target),
            objective,
            reason,
        }
    }

    fn cheapest_or_best(
        &self,
        cheapest: Option<usize>,
        best: Option<usize>,
        p: &[f64],
        target: f64,
    ) -> (Option<usize>, Reason) {
        match cheapest {
            Some(i) => (Some(i), Reason::CheapestGoodEnough { predicted_quality: p[i], target }),
            None => (best, Reason::NoneGoodEnough { predicted_quality: best.map_or(0.0, |i| p[i]), target }),
        }
    }

    /// Chooses a candidate under the router's own policy.
    pub fn decide(
        &self,
        query: &QueryInput<'_>,
        objective: Option<Objective>,
        live: &LiveView<'_>,
        scratch: &mut RouterScratch,
    ) -> Decision {
        let policy = self.file.policy;
        self.decide_with_policy(query, objective, &policy, live, scratch)
    }
}

/// A loaded learned router of either kind.
#[derive(Debug, Clone)]
pub enum LearnedRouter {
    /// Weak/strong.
    Binary(BinaryRouter),
    /// N candidates.
    NWay(NWayRouter),
}

impl LearnedRouter {
    /// Loads a router file.
    pub fn load(path: &Path) -> Result<Self> {
        Self::from_file(RouterFile::load(path)?)
    }

    /// Builds a router from its saved form.
    pub fn from_file(file: RouterFile) -> Result<Self> {
        Ok(match file {
            RouterFile::Binary(b) => LearnedRouter::Binary(BinaryRouter::new(b)?),
            RouterFile::NWay(n) => LearnedRouter::NWay(NWayRouter::new(n)?),
        })
    }

    /// Decides with the router's own thresholds or policy.
    pub fn decide(
        &self,
        query: &QueryInput<'_>,
        objective: Option<Objective>,
        live: &LiveView<'_>,
        scratch: &mut RouterScratch,
    ) -> Decision {
        match self {
            LearnedRouter::Binary(r) => r.decide(query, objective, live, scratch),
            LearnedRouter::NWay(r) => r.decide(query, objective, live, scratch),
        }
    }

    /// A drift monitor over this router's training baseline.
    pub fn drift_monitor(&self) -> DriftMonitor {
        match self {
            LearnedRouter::Binary(r) => DriftMonitor::new(r.file.drift_baseline.clone()),
            LearnedRouter::NWay(r) => DriftMonitor::new(r.file.drift_baseline.clone()),
        }
    }
}

#[cfg(test)]
mod tests;
