//! Offline training of the learned routers, with every choice made by cross-validation on the training data only.
//!
//! Binary: for each candidate [`BinaryTarget`] and L2 strength, `k`-fold cross-validation by question id measures
//! the mean APGR of the held-out folds; the best pair is retrained on all training queries. The out-of-fold scores
//! give the thresholds (a calibration on queries the fold model never saw); the first fold's training features
//! become the vocabulary of the out-of-distribution guard, and its held-out queries give the guard's limit (the
//! 99th percentile of their unseen share) and the drift baseline.
//!
//! N-way: one logistic model per candidate predicts `P(good answer)` (soft targets for graded scores); one L2
//! strength for all, chosen by the mean cross-validated log loss; the candidate's expected cost is its mean cost
//! on the training queries; the safe model is the candidate with the best mean quality.

use serde::{Deserialize, Serialize};
use switchyard_learn::metrics::{BinaryOutcome, binary_sweep, threshold_for_share};
use switchyard_learn::split::kfold_by_id;
use switchyard_learn::{FeatureConfig, Featurizer, LogisticModel, OutcomeTable, SparseVec, TrainConfig, logistic};

use crate::drift::{DriftBaseline, OodGuard, folds_baseline, quantile};
use crate::error::{QualityError, Result};
use crate::learned::{
    BinaryRouterFile, BinaryTarget, Calibration, CostModel, NWayCandidate, NWayPolicy, NWayRouterFile, QualityModels,
    Thresholds, TrainingInfo,
};

/// Options of [`train_binary`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinaryTrainOptions {
    /// The router's name in traces.
    pub name: String,
    /// The featurizer.
    pub features: FeatureConfig,
    /// Targets to try.
    pub targets: Vec<BinaryTarget>,
    /// L2 strengths to try.
    pub l2_grid: Vec<f64>,
    /// Cross-validation folds.
    pub folds: usize,
    /// Seed of the folds.
    pub seed: u64,
    /// Most L-BFGS iterations per fit.
    pub max_iter: usize,
    /// Strong share of the balanced threshold.
    pub target_share: f64,
    /// Strong share of the `quality` objective's threshold.
    pub quality_share: f64,
    /// Strong share of the `cost` objective's threshold.
    pub cost_share: f64,
    /// Quantile of held-out unseen shares that becomes the OOD limit.
    pub ood_quantile: f64,
    /// Whether the OOD guard routes to the strong model.
    pub ood_enabled: bool,
}

impl Default for BinaryTrainOptions {
    fn default() -> Self {
        Self {
            name: "learned-binary".into(),
            features: FeatureConfig::default(),
            targets: BinaryTarget::ALL.to_vec(),
            l2_grid: vec![1e-4, 3e-4, 1e-3, 3e-3, 1e-2],
            folds: 5,
            seed: 17,
            max_iter: 200,
            target_share: 0.5,
            quality_share: 0.8,
            cost_share: 0.2,
            ood_quantile: 0.99,
            ood_enabled: true,
        }
    }
}

/// The cross-validated result of one setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CvResult {
    /// The target.
    pub target: BinaryTarget,
    /// The L2 strength.
    pub l2: f64,
    /// APGR of each held-out fold.
    pub fold_apgr: Vec<f64>,
    /// Their mean.
    pub mean_apgr: f64,
}

/// What binary training tried and chose.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BinaryTrainReport {
    /// Training queries.
    pub queries: usize,
    /// Every setting tried.
    pub tried: Vec<CvResult>,
    /// The chosen setting's index in `tried`.
    pub chosen: usize,
    /// The OOD limit.
    pub ood_limit: f64,
}

impl std::fmt::Display for BinaryTrainReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "cross-validation on {} training queries (mean held-out APGR per setting):", self.queries)?;
        writeln!(f, "{:<12} {:>8} {:>10}", "target", "l2", "cv apgr")?;
        for (i, r) in self.tried.iter().enumerate() {
            let mark = if i == self.chosen { "  <- chosen" } else { "" };
            writeln!(f, "{:<12} {:>8.0e} {:>10.4}{mark}", format!("{:?}", r.target), r.l2, r.mean_apgr)?;
        }
        writeln!(f, "out-of-distribution limit (unseen n-gram share): {:.4}", self.ood_limit)
    }
}

/// Featurises every prompt of a table.
pub fn featurize_all(featurizer: &Featurizer, table: &OutcomeTable) -> Vec<SparseVec> {
    table.queries.iter().map(|q| featurizer.featurize(&q.prompt)).collect()
}

fn pick<T: Clone>(items: &[T], idx: &[usize]) -> Vec<T> {
    idx.iter().map(|&i| items[i].clone()).collect()
}

fn check_columns(table: &OutcomeTable, weak: usize, strong: usize) -> Result<()> {
    if weak >= table.models.len() || strong >= table.models.len() || weak == strong {
        return Err(QualityError::invalid("models", "weak and strong must be two different columns of the table"));
    }
    Ok(())
}

/// Trains a binary router on `table` (columns `weak` and `strong`).
pub fn train_binary(
    table: &OutcomeTable,
    weak: usize,
    strong: usize,
    options: &BinaryTrainOptions,
) -> Result<(BinaryRouterFile, BinaryTrainReport)> {
    check_columns(table, weak, strong)?;
    if options.targets.is_empty() || options.l2_grid.is_empty() {
        return Err(QualityError::invalid("train options", "no target or no L2 strength to try"));
    }
    let featurizer = Featurizer::new(options.features.clone())?;
    let xs = featurize_all(&featurizer, table);
    let ids: Vec<&str> = table.queries.iter().map(|q| q.id.as_str()).collect();
    let folds = kfold_by_id(&ids, options.folds, options.seed)?;
    let qw: Vec<f64> = table.queries.iter().map(|q| q.quality[weak]).collect();
    let qs: Vec<f64> = table.queries.iter().map(|q| q.quality[strong]).collect();
    let fit = |target: BinaryTarget, l2: f64, idx: &[usize]| -> Result<LogisticModel> {
        let x = pick(&xs, idx);
        let y: Vec<f64> = idx.iter().map(|&i| target.label(qw[i], qs[i])).collect();
        let cfg = TrainConfig { l2, max_iter: options.max_iter, ..TrainConfig::default() };
        Ok(logistic::train(&x, &y, None, featurizer.dim(), &cfg)?.0)
    };
    let mut tried = Vec::new();
    let mut best: Option<(f64, Vec<f64>)> = None;
    let mut chosen = 0;
    for &target in &options.targets {
        for &l2 in &options.l2_grid {
            let mut fold_apgr = Vec::with_capacity(folds.len());
            let mut oof_scores = vec![0.0; xs.len()];
            for fold in &folds {
                let model = fit(target, l2, &fold.train)?;
                let outcomes: Vec<BinaryOutcome> = fold
                    .test
                    .iter()
                    .map(|&i| {
                        let score = target.score(model.predict_proba(&xs[i]));
                        oof_scores[i] = score;
                        BinaryOutcome { score, weak_quality: qw[i], strong_quality: qs[i], costs: None }
                    })
                    .collect();
                fold_apgr.push(binary_sweep(&outcomes)?.apgr());
            }
            let mean_apgr = fold_apgr.iter().sum::<f64>() / fold_apgr.len() as f64;
            if best.as_ref().is_none_or(|(b, _)| mean_apgr > *b) {
                best = Some((mean_apgr, oof_scores));
                chosen = tried.len();
            }
            tried.push(CvResult { target, l2, fold_apgr, mean_apgr });
        }
    }
    let Some((cv_apgr, oof_scores)) = best else {
        return Err(QualityError::invalid("train options", "nothing was tried"));
    };
    let (target, l2) = (tried[chosen].target, tried[chosen].l2);
    let all: Vec<usize> = (0..xs.len()).collect();
    let model = fit(target, l2, &all)?;
    let thresholds = Thresholds {
        balanced: threshold_for_share(&oof_scores, options.target_share)?,
        quality: threshold_for_share(&oof_scores, options.quality_share)?,
        cost: threshold_for_share(&oof_scores, options.cost_share)?,
    };
    let (vocabulary, held_signals) = folds_baseline(&featurizer, &xs, &folds);
    let unseen: Vec<f64> = held_signals.iter().map(|s| s.unseen_share).collect();
    let ood_limit = quantile(&unseen, options.ood_quantile).unwrap_or(1.0);
    let file = BinaryRouterFile {
        name: options.name.clone(),
        weak_model: table.models[weak].name.clone(),
        strong_model: table.models[strong].name.clone(),
        target,
        features: options.features.clone(),
        model,
        thresholds,
        calibration: Calibration {
            target_share: options.target_share,
            quality_share: options.quality_share,
            cost_share: options.cost_share,
            sample: oof_scores.len(),
            source: "out-of-fold training scores".into(),
        },
        ood: OodGuard { enabled: options.ood_enabled, max_unseen_share: ood_limit },
        vocabulary,
        drift_baseline: DriftBaseline::from_signals(&held_signals)?,
        training: TrainingInfo {
            data: table.name.clone(),
            queries: table.queries.len(),
            l2,
            folds: options.folds,
            seed: options.seed,
            cv_metric: cv_apgr,
        },
    };
    Ok((file, BinaryTrainReport { queries: table.queries.len(), tried, chosen, ood_limit }))
}

/// Options of [`train_nway`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NWayTrainOptions {
    /// The router's name in traces.
    pub name: String,
    /// The featurizer.
    pub features: FeatureConfig,
    /// L2 strengths to try (one for all candidates).
    pub l2_grid: Vec<f64>,
    /// Cross-validation folds.
    pub folds: usize,
    /// Seed of the folds.
    pub seed: u64,
    /// Most L-BFGS iterations per fit.
    pub max_iter: usize,
    /// One shared multi-task model (true) or one model per candidate (false); see [`QualityModels`].
    pub shared: bool,
    /// Learn a per-query cost predictor (see [`CostModel`]) instead of using each candidate's mean cost.
    pub cost_model: bool,
    /// The default policy of the router.
    pub policy: NWayPolicy,
    /// Quantile of held-out unseen shares that becomes the OOD limit.
    pub ood_quantile: f64,
    /// Whether the OOD guard routes to the safe model.
    pub ood_enabled: bool,
}

impl Default for NWayTrainOptions {
    fn default() -> Self {
        Self {
            name: "learned-nway".into(),
            features: FeatureConfig { hash_bits: 16, ..FeatureConfig::default() },
            l2_grid: vec![3e-4, 1e-3],
            folds: 3,
            seed: 17,
            max_iter: 150,
            shared: true,
            cost_model: true,
            // On ZeroEval the utility sweep dominates "cheapest good enough" below 0.002 USD per query; lambda 500
            // lands near gpt-4o-mini's cost there.
            policy: NWayPolicy::Utility { lambda: 500.0, target: 0.8 },
            ood_quantile: 0.99,
            ood_enabled: true,
        }
    }
}

/// What N-way training tried and chose.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NWayTrainReport {
    /// Training queries.
    pub queries: usize,
    /// `(l2, mean cross-validated log loss over candidates)` per setting.
    pub tried: Vec<(f64, f64)>,
    /// The chosen L2.
    pub l2: f64,
    /// The OOD limit.
    pub ood_limit: f64,
}

impl std::fmt::Display for NWayTrainReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "cross-validation on {} training queries (mean held-out log loss over candidates):", self.queries)?;
        for (l2, loss) in &self.tried {
            let mark = if *l2 == self.l2 { "  <- chosen" } else { "" };
            writeln!(f, "  l2 {l2:>8.0e}  log loss {loss:.4}{mark}")?;
        }
        writeln!(f, "out-of-distribution limit (unseen n-gram share): {:.4}", self.ood_limit)
    }
}

fn log_loss(p: f64, y: f64) -> f64 {
    let p = p.clamp(1e-9, 1.0 - 1e-9);
    -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
}

/// Fits the quality predictors of every candidate on the queries `idx`.
fn fit_quality(
    table: &OutcomeTable,
    xs: &[SparseVec],
    dim: usize,
    idx: &[usize],
    shared: bool,
    config: &TrainConfig,
) -> Result<QualityModels> {
    let m = table.models.len();
    if shared {
        let mut x = Vec::with_capacity(idx.len() * m);
        let mut y = Vec::with_capacity(idx.len() * m);
        for &i in idx {
            for model in 0..m {
                x.push(QualityModels::expand(&xs[i], model, dim, m));
                y.push(table.queries[i].quality[model]);
            }
        }
        let model = logistic::train(&x, &y, None, QualityModels::shared_dim(dim, m), config)?.0;
        Ok(QualityModels::Shared { model })
    } else {
        let x = pick(xs, idx);
        let mut models = Vec::with_capacity(m);
        for model in 0..m {
            let y: Vec<f64> = idx.iter().map(|&i| table.queries[i].quality[model]).collect();
            models.push(logistic::train(&x, &y, None, dim, config)?.0);
        }
        Ok(QualityModels::PerCandidate { models })
    }
}

/// Fits the per-query cost predictor on all queries of `table` (every cost known).
fn fit_cost(table: &OutcomeTable, xs: &[SparseVec], dim: usize, config: &TrainConfig) -> Result<CostModel> {
    let m = table.models.len();
    let scale: Vec<f64> = (0..m)
        .map(|model| {
            let max = table.queries.iter().filter_map(|q| q.cost_usd[model]).fold(0.0, f64::max);
            if max > 0.0 { max } else { 1.0 }
        })
        .collect();
    let mut x = Vec::with_capacity(xs.len() * m);
    let mut y = Vec::with_capacity(xs.len() * m);
    for (i, q) in table.queries.iter().enumerate() {
        for (model, s) in scale.iter().enumerate() {
            x.push(QualityModels::expand(&xs[i], model, dim, m));
            y.push((q.cost_usd[model].unwrap_or(0.0) / s).clamp(0.0, 1.0));
        }
    }
    let model = logistic::train(&x, &y, None, QualityModels::shared_dim(dim, m), config)?.0;
    Ok(CostModel { model, scale })
}

/// Trains an N-way router over every model of `table`; every model must have a cost on every query.
pub fn train_nway(table: &OutcomeTable, options: &NWayTrainOptions) -> Result<(NWayRouterFile, NWayTrainReport)> {
    if !table.fully_costed() {
        return Err(QualityError::invalid(
            "models",
            "every candidate needs a cost on every query (priced models only)",
        ));
    }
    if options.l2_grid.is_empty() {
        return Err(QualityError::invalid("train options", "no L2 strength to try"));
    }
    let featurizer = Featurizer::new(options.features.clone())?;
    let dim = featurizer.dim();
    let xs = featurize_all(&featurizer, table);
    let ids: Vec<&str> = table.queries.iter().map(|q| q.id.as_str()).collect();
    let folds = kfold_by_id(&ids, options.folds, options.seed)?;
    let m = table.models.len();
    let config = |l2: f64| TrainConfig { l2, max_iter: options.max_iter, ..TrainConfig::default() };
    let mut tried = Vec::new();
    let mut best: Option<(f64, f64)> = None;
    let mut predictions = Vec::with_capacity(m);
    for &l2 in &options.l2_grid {
        let mut loss = 0.0;
        let mut count = 0usize;
        for fold in &folds {
            let quality = fit_quality(table, &xs, dim, &fold.train, options.shared, &config(l2))?;
            for &i in &fold.test {
                quality.predict(&xs[i], dim, m, &mut predictions);
                for (model, p) in predictions.iter().enumerate() {
                    loss += log_loss(*p, table.queries[i].quality[model]);
                    count += 1;
                }
            }
        }
        let mean = loss / count.max(1) as f64;
        tried.push((l2, mean));
        if best.as_ref().is_none_or(|(_, b)| mean < *b) {
            best = Some((l2, mean));
        }
    }
    let Some((l2, cv_loss)) = best else {
        return Err(QualityError::invalid("train options", "nothing was tried"));
    };
    let all: Vec<usize> = (0..xs.len()).collect();
    let quality = fit_quality(table, &xs, dim, &all, options.shared, &config(l2))?;
    let cost = if options.cost_model { Some(fit_cost(table, &xs, dim, &config(l2))?) } else { None };
    let candidates: Vec<NWayCandidate> = table
        .models
        .iter()
        .enumerate()
        .map(|(model, info)| NWayCandidate {
            model: info.name.clone(),
            cost_usd: table.mean_cost(model).unwrap_or(0.0),
            mean_quality: table.mean_quality(model),
        })
        .collect();
    let safe_model = candidates
        .iter()
        .max_by(|a, b| a.mean_quality.total_cmp(&b.mean_quality))
        .map(|c| c.model.clone())
        .unwrap_or_default();
    let (vocabulary, held_signals) = folds_baseline(&featurizer, &xs, &folds);
    let unseen: Vec<f64> = held_signals.iter().map(|s| s.unseen_share).collect();
    let ood_limit = quantile(&unseen, options.ood_quantile).unwrap_or(1.0);
    let file = NWayRouterFile {
        name: options.name.clone(),
        features: options.features.clone(),
        candidates,
        quality,
        cost,
        policy: options.policy,
        safe_model,
        ood: OodGuard { enabled: options.ood_enabled, max_unseen_share: ood_limit },
        vocabulary,
        drift_baseline: DriftBaseline::from_signals(&held_signals)?,
        training: TrainingInfo {
            data: table.name.clone(),
            queries: table.queries.len(),
            l2,
            folds: options.folds,
            seed: options.seed,
            cv_metric: cv_loss,
        },
    };
    Ok((file, NWayTrainReport { queries: table.queries.len(), tried, l2, ood_limit }))
}
