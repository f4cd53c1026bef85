//! Offline evaluation of routers on recorded outcomes: what `switchyard eval router` prints.
//!
//! Binary ([`eval_binary`]): the table is split by question id (seeded; a test question is never trained on), the
//! learned router is trained on the training side (its settings chosen by cross-validation there), and three
//! routers are measured on the test side: a random router (mean over seeds), the prompt-length rule (longer
//! prompt, strong model) and the learned router. For each: APGR, CPT(50%) and CPT(80%) over the full threshold
//! sweep, and an operating point: the threshold calibrated to a 50 % strong share on one half of the test queries
//! (prompts only), applied through the routers' own decision code to the other half, where the realised strong
//! share, quality and cost are measured. An SVG plots quality against strong-call share.
//!
//! N-way ([`eval_nway`]): the same split; the router is trained on the training side; on the test side its
//! quality/cost curve is traced by sweeping the quality target of "cheapest candidate predicted good enough" and
//! the `lambda` of "best quality - lambda * cost", next to every single model's point. The report answers the
//! acceptance questions directly: the cheapest router point reaching the most accurate single model's accuracy,
//! and the best router accuracy within a reference model's cost; the curves are the learned router's, and the
//! same two answers are given with the out-of-distribution guard on.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use switchyard_learn::OutcomeTable;
use switchyard_learn::dataset::load_prompts;
use switchyard_learn::hash::SplitMix64;
use switchyard_learn::metrics::{
    BinaryCurve, BinaryOutcome, CostQualityPoint, CurvePoint, best_quality_within, binary_sweep, cheapest_reaching,
    threshold_for_share,
};
use switchyard_learn::plot::{PlotSpec, Series, write_svg};
use switchyard_learn::split::split_by_id;

use crate::calibrate::{CalibrationTargets, calibrate_binary};
use crate::error::{QualityError, Result};
use crate::learned::{BinaryRouter, NWayPolicy, NWayRouter, RouterScratch};
use crate::query::{LiveView, QueryInput};
use crate::rules::{RuleCondition, RuleConfig, RuleRouter, RuleRouterConfig};
use crate::train::{
    BinaryTrainOptions, BinaryTrainReport, NWayTrainOptions, NWayTrainReport, train_binary, train_nway,
};

/// Options of [`eval_binary`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinaryEvalOptions {
    /// Share of question ids held out for testing (ignored when a separate training table is given).
    pub test_fraction: f64,
    /// Seed of the train/test split (and, plus one, of the calibration/held-out halves of the test side).
    pub seed: u64,
    /// Training options of the learned router.
    pub train: BinaryTrainOptions,
    /// Seeds averaged for the random router.
    pub random_seeds: u64,
    /// Calibration targets of the operating point.
    pub calibration: CalibrationTargets,
    /// Unlabelled prompts to calibrate on (a JSONL with `prompt` or `question` fields), as RouteLLM calibrates on
    /// prompts outside the benchmark; the operating point is then measured on the whole test side. Without it,
    /// half of the test prompts calibrate and the other half is measured. Prompts equal to a test prompt are left
    /// out.
    pub calibration_prompts: Option<PathBuf>,
    /// Where to write the SVG plot, if anywhere.
    pub plot: Option<PathBuf>,
}

impl Default for BinaryEvalOptions {
    fn default() -> Self {
        Self {
            test_fraction: 0.3,
            seed: 1,
            train: BinaryTrainOptions::default(),
            random_seeds: 20,
            calibration: CalibrationTargets::default(),
            calibration_prompts: None,
            plot: None,
        }
    }
}

/// One router's line of the binary table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouterRow {
    /// The router.
    pub router: String,
    /// APGR on the test side.
    pub apgr: f64,
    /// CPT(50%).
    pub cpt50: Option<f64>,
    /// CPT(80%).
    pub cpt80: Option<f64>,
    /// Realised strong share on the held-out queries at the calibrated threshold.
    pub strong_share: f64,
    /// Mean quality there.
    pub quality: f64,
    /// Mean cost per query there, in USD.
    pub cost: Option<f64>,
}

/// The calibration check of the binary evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationCheck {
    /// The target strong share.
    pub target_share: f64,
    /// Where the calibration prompts came from.
    pub source: String,
    /// Prompts used for calibration.
    pub calibration_queries: usize,
    /// Held-out queries it was checked on.
    pub heldout_queries: usize,
    /// The learned router's realised strong share on them, OOD routing included.
    pub realised_share: f64,
    /// Share of held-out queries the OOD guard sent to the strong model.
    pub ood_share: f64,
}

/// The result of [`eval_binary`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BinaryEvalReport {
    /// The data set.
    pub data: String,
    /// The weak model.
    pub weak_model: String,
    /// The strong model.
    pub strong_model: String,
    /// Training queries.
    pub train_queries: usize,
    /// Test queries.
    pub test_queries: usize,
    /// Weak model alone on the test side: quality.
    pub weak_quality: f64,
    /// Strong model alone on the test side: quality.
    pub strong_quality: f64,
    /// Weak model alone: cost per query.
    pub weak_cost: Option<f64>,
    /// Strong model alone: cost per query.
    pub strong_cost: Option<f64>,
    /// Random, prompt length, learned.
    pub rows: Vec<RouterRow>,
    /// The calibration check.
    pub calibration: CalibrationCheck,
    /// The published RouteLLM APGR for this set, when known.
    pub published_apgr: Option<f64>,
    /// What training tried.
    pub training: BinaryTrainReport,
    /// The learned router's test curve.
    pub learned_curve: Vec<CurvePoint>,
}

/// The best published RouteLLM APGR for a set name (arXiv 2406.18665 v4, Tables 2-4).
pub fn published_apgr(data: &str) -> Option<f64> {
    match data {
        "gsm8k" => Some(0.622),
        "mmlu" => Some(0.603),
        "mt-bench" => Some(0.802),
        _ => None,
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{x:.digits$}"))
}

impl std::fmt::Display for BinaryEvalReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{}: weak {} / strong {}; {} training queries, {} test queries",
            self.data, self.weak_model, self.strong_model, self.train_queries, self.test_queries
        )?;
        writeln!(
            f,
            "test quality: weak {:.4}, strong {:.4}; cost per query: weak {} USD, strong {} USD",
            self.weak_quality,
            self.strong_quality,
            opt(self.weak_cost, 6),
            opt(self.strong_cost, 6)
        )?;
        writeln!(
            f,
            "{:<16} {:>7} {:>9} {:>9} {:>13} {:>9} {:>11}",
            "router", "APGR", "CPT(50%)", "CPT(80%)", "strong share", "quality", "cost/query"
        )?;
        for r in &self.rows {
            writeln!(
                f,
                "{:<16} {:>7.4} {:>9} {:>9} {:>13.3} {:>9.4} {:>11}",
                r.router,
                r.apgr,
                opt(r.cpt50, 3),
                opt(r.cpt80, 3),
                r.strong_share,
                r.quality,
                opt(r.cost, 6)
            )?;
        }
        if let Some(p) = self.published_apgr {
            writeln!(f, "published RouteLLM best APGR on this set: {p:.3}")?;
        }
        let c = &self.calibration;
        writeln!(
            f,
            "calibration: target strong share {:.2} on {} prompts ({}); realised {:.3} on {} held-out queries \
             (OOD guard share {:.3})",
            c.target_share, c.calibration_queries, c.source, c.realised_share, c.heldout_queries, c.ood_share
        )?;
        writeln!(f, "(operating-point columns: thresholds calibrated as above, measured on the held-out queries)")?;
        write!(f, "{}", self.training)
    }
}

/// Scores of the prompt-length rule: the prompt's character count (the longer, the more strong-worthy).
pub fn length_score(prompt: &str) -> f64 {
    prompt.chars().count() as f64
}

fn outcomes(table: &OutcomeTable, weak: usize, strong: usize, scores: &[f64]) -> Vec<BinaryOutcome> {
    table
        .queries
        .iter()
        .zip(scores)
        .map(|(q, &score)| BinaryOutcome {
            score,
            weak_quality: q.quality[weak],
            strong_quality: q.quality[strong],
            costs: q.cost_usd[weak].zip(q.cost_usd[strong]),
        })
        .collect()
}

/// Mean quality and cost of routing `table`'s queries strong where `strong[i]`.
fn operating_point(table: &OutcomeTable, weak: usize, strong: usize, to_strong: &[bool]) -> (f64, f64, Option<f64>) {
    let n = table.queries.len().max(1) as f64;
    let mut quality = 0.0;
    let mut cost = Some(0.0);
    for (q, &s) in table.queries.iter().zip(to_strong) {
        let m = if s { strong } else { weak };
        quality += q.quality[m];
        cost = cost.zip(q.cost_usd[m]).map(|(a, b)| a + b);
    }
    (to_strong.iter().filter(|s| **s).count() as f64 / n, quality / n, cost.map(|c| c / n))
}

fn row(name: &str, curve: &BinaryCurve, point: (f64, f64, Option<f64>)) -> RouterRow {
    RouterRow {
        router: name.into(),
        apgr: curve.apgr(),
        cpt50: curve.cpt(0.5),
        cpt80: curve.cpt(0.8),
        strong_share: point.0,
        quality: point.1,
        cost: point.2,
    }
}

/// Evaluates random, prompt-length and learned routers on `table` (columns `weak`, `strong`). With
/// `train_table`, the learned router is trained on it and the whole of `table` is the test side; otherwise `table`
/// is split by id.
pub fn eval_binary(
    table: &OutcomeTable,
    weak: usize,
    strong: usize,
    train_table: Option<&OutcomeTable>,
    options: &BinaryEvalOptions,
) -> Result<BinaryEvalReport> {
    let (train, test) = match train_table {
        Some(t) => (t.clone(), table.clone()),
        None => {
            let ids: Vec<&str> = table.queries.iter().map(|q| q.id.as_str()).collect();
            let s = split_by_id(&ids, options.test_fraction, options.seed)?;
            (table.subset(&s.train), table.subset(&s.test))
        }
    };
    let (tw, ts) = match train_table {
        Some(t) => (t.require_model(&table.models[weak].name)?, t.require_model(&table.models[strong].name)?),
        None => (weak, strong),
    };
    let (file, training) = train_binary(&train, tw, ts, &options.train)?;

    // Calibration prompts, and the held-out queries the calibrated operating point is measured on.
    let external = options.calibration_prompts.as_deref().map(load_prompts).transpose()?;
    let (cal_prompts, held, source): (Vec<String>, OutcomeTable, String) =
        match (&external, &options.calibration_prompts) {
            (Some(prompts), Some(path)) => {
                let test_prompts: std::collections::HashSet<&str> =
                    test.queries.iter().map(|q| q.prompt.as_str()).collect();
                let kept = prompts.iter().filter(|p| !test_prompts.contains(p.as_str())).cloned().collect();
                (kept, test.clone(), path.display().to_string())
            }
            _ => {
                let test_ids: Vec<&str> = test.queries.iter().map(|q| q.id.as_str()).collect();
                let halves = split_by_id(&test_ids, 0.5, options.seed.wrapping_add(1))?;
                let cal = test.subset(&halves.train);
                let prompts = cal.queries.iter().map(|q| q.prompt.clone()).collect();
                (prompts, test.subset(&halves.test), "half of the test prompts".to_string())
            }
        };
    let cal_prompts: Vec<&str> = cal_prompts.iter().map(String::as_str).collect();

    // Learned router.
    let router = BinaryRouter::new(file.clone())?;
    let mut scratch = RouterScratch::default();
    let learned_scores: Vec<f64> = test.queries.iter().map(|q| router.score(&q.prompt, &mut scratch)).collect();
    let learned_curve = binary_sweep(&outcomes(&test, weak, strong, &learned_scores))?;
    let (calibrated, _) = calibrate_binary(&file, &cal_prompts, options.calibration, &source)?;
    let calibrated = BinaryRouter::new(calibrated)?;
    let mut ood = 0usize;
    let learned_strong: Vec<bool> = held
        .queries
        .iter()
        .map(|q| {
            let d = calibrated.decide(&QueryInput::prompt(&q.prompt), None, &LiveView::default(), &mut scratch);
            ood += usize::from(scratch.last_out_of_distribution());
            d.model.as_ref() == file.strong_model
        })
        .collect();
    let learned_point = operating_point(&held, weak, strong, &learned_strong);

    // The learned router as the runtime runs it: out-of-distribution queries always go strong.
    let guarded_scores: Vec<f64> = test
        .queries
        .iter()
        .zip(&learned_scores)
        .map(|(q, &s)| {
            router.score(&q.prompt, &mut scratch);
            if file.ood.trips(scratch.last_signals()) { 2.0 } else { s }
        })
        .collect();
    let guarded_curve = binary_sweep(&outcomes(&test, weak, strong, &guarded_scores))?;

    // Prompt-length rule, decided by a rule router with the calibrated length.
    let length_scores: Vec<f64> = test.queries.iter().map(|q| length_score(&q.prompt)).collect();
    let length_curve = binary_sweep(&outcomes(&test, weak, strong, &length_scores))?;
    let cal_lengths: Vec<f64> = cal_prompts.iter().map(|p| length_score(p)).collect();
    let min_chars = threshold_for_share(&cal_lengths, options.calibration.target_share)?;
    let rule = RuleRouter::new(&RuleRouterConfig {
        name: "prompt-length".into(),
        rules: vec![RuleConfig {
            name: "long prompt".into(),
            model: file.strong_model.clone(),
            when: RuleCondition {
                min_chars: Some(if min_chars.is_finite() { min_chars.ceil() as usize } else { usize::MAX }),
                ..RuleCondition::default()
            },
        }],
        default: file.weak_model.clone(),
    })?;
    let length_strong: Vec<bool> = held
        .queries
        .iter()
        .map(|q| rule.decide(&QueryInput::prompt(&q.prompt)).model.as_ref() == file.strong_model)
        .collect();
    let length_point = operating_point(&held, weak, strong, &length_strong);

    // Random router: mean over seeds.
    let seeds = options.random_seeds.max(1);
    let (mut apgr, mut cpt50, mut cpt80, mut point) = (0.0, 0.0, 0.0, (0.0, 0.0, Some(0.0)));
    for s in 0..seeds {
        let mut rng = SplitMix64::new(s);
        let scores: Vec<f64> = test.queries.iter().map(|_| rng.next_f64()).collect();
        let curve = binary_sweep(&outcomes(&test, weak, strong, &scores))?;
        apgr += curve.apgr();
        cpt50 += curve.cpt(0.5).unwrap_or(1.0);
        cpt80 += curve.cpt(0.8).unwrap_or(1.0);
        let picks: Vec<bool> = held.queries.iter().map(|_| rng.next_f64() < options.calibration.target_share).collect();
        let p = operating_point(&held, weak, strong, &picks);
        point = (point.0 + p.0, point.1 + p.1, point.2.zip(p.2).map(|(a, b)| a + b));
    }
    let k = seeds as f64;
    let random_row = RouterRow {
        router: format!("random ({seeds} seeds)"),
        apgr: apgr / k,
        cpt50: Some(cpt50 / k),
        cpt80: Some(cpt80 / k),
        strong_share: point.0 / k,
        quality: point.1 / k,
        cost: point.2.map(|c| c / k),
    };

    let rows = vec![
        random_row,
        row("prompt length", &length_curve, length_point),
        row("learned", &learned_curve, learned_point),
        row("learned+ood", &guarded_curve, learned_point),
    ];
    let report = BinaryEvalReport {
        data: table.name.clone(),
        weak_model: file.weak_model.clone(),
        strong_model: file.strong_model.clone(),
        train_queries: train.queries.len(),
        test_queries: test.queries.len(),
        weak_quality: learned_curve.weak_quality,
        strong_quality: learned_curve.strong_quality,
        weak_cost: learned_curve.weak_cost,
        strong_cost: learned_curve.strong_cost,
        rows,
        calibration: CalibrationCheck {
            target_share: options.calibration.target_share,
            source,
            calibration_queries: cal_prompts.len(),
            heldout_queries: held.queries.len(),
            realised_share: learned_point.0,
            ood_share: ood as f64 / held.queries.len().max(1) as f64,
        },
        published_apgr: published_apgr(&table.name),
        training,
        learned_curve: learned_curve.points.clone(),
    };
    if let Some(path) = &options.plot {
        let curve = |c: &BinaryCurve| c.points.iter().map(|p| (p.strong_share, p.quality)).collect::<Vec<_>>();
        let (qw, qs) = (report.weak_quality, report.strong_quality);
        let spec = PlotSpec {
            title: format!("{}: quality vs strong-call share (test, {} queries)", report.data, report.test_queries),
            x_label: "share of queries sent to the strong model".into(),
            y_label: "mean quality".into(),
            log_x: false,
            series: vec![
                Series::line(format!("learned (APGR {:.3})", report.rows[2].apgr), curve(&learned_curve)),
                Series::line(format!("prompt length (APGR {:.3})", report.rows[1].apgr), curve(&length_curve)),
                Series::line("random (expected)", vec![(0.0, qw), (1.0, qs)]),
                Series::points(
                    format!("weak {} / strong {}", report.weak_model, report.strong_model),
                    vec![(0.0, qw), (1.0, qs)],
                    vec!["weak".into(), "strong".into()],
                ),
                Series::points(
                    "calibrated 50% (held-out queries)",
                    vec![(learned_point.0, learned_point.1), (length_point.0, length_point.1)],
                    vec!["learned".into(), "length".into()],
                ),
            ],
        };
        write_svg(path, &spec)?;
    }
    Ok(report)
}

/// Options of [`eval_nway`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NWayEvalOptions {
    /// Share of question ids held out for testing.
    pub test_fraction: f64,
    /// Seed of the split.
    pub seed: u64,
    /// Training options.
    pub train: NWayTrainOptions,
    /// Models left out (besides unpriced ones).
    pub exclude: Vec<String>,
    /// Quality targets swept for "cheapest good enough".
    pub targets: Vec<f64>,
    /// Lambdas swept for "quality - lambda * cost".
    pub lambdas: Vec<f64>,
    /// The model whose cost and accuracy the router must beat.
    pub reference_model: String,
    /// Where to write the SVG plot, if anywhere.
    pub plot: Option<PathBuf>,
}

impl Default for NWayEvalOptions {
    fn default() -> Self {
        Self {
            test_fraction: 0.3,
            seed: 1,
            train: NWayTrainOptions::default(),
            exclude: vec!["o1-mini-2024-09-12".into()],
            targets: (0..=50).map(|i| f64::from(i) / 50.0).collect(),
            lambdas: (0..=40).map(|i| 10f64.powf(f64::from(i) / 8.0)).collect(),
            reference_model: "gpt-4o-mini-2024-07-18".into(),
            plot: None,
        }
    }
}

/// The result of [`eval_nway`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NWayEvalReport {
    /// The data set.
    pub data: String,
    /// Training queries.
    pub train_queries: usize,
    /// Test queries.
    pub test_queries: usize,
    /// Every candidate alone on the test side.
    pub models: Vec<CostQualityPoint>,
    /// Router points of the quality-target sweep.
    pub target_curve: Vec<CostQualityPoint>,
    /// Router points of the lambda sweep.
    pub utility_curve: Vec<CostQualityPoint>,
    /// The most accurate single model.
    pub best_single: CostQualityPoint,
    /// The cheapest router point (either sweep) at least as accurate, if any.
    pub router_cost_at_best_quality: Option<CostQualityPoint>,
    /// The reference model alone.
    pub reference: CostQualityPoint,
    /// The most accurate router point within the reference's cost, if any.
    pub router_at_reference_cost: Option<CostQualityPoint>,
    /// Share of test queries the out-of-distribution guard flags.
    pub ood_share: f64,
    /// With the guard on: the cheapest point at least as accurate as the best single model.
    pub guarded_cost_at_best_quality: Option<CostQualityPoint>,
    /// With the guard on: the most accurate point within the reference's cost.
    pub guarded_at_reference_cost: Option<CostQualityPoint>,
    /// What training tried.
    pub training: NWayTrainReport,
}

impl std::fmt::Display for NWayEvalReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{}: {} candidates; {} training queries, {} test queries",
            self.data,
            self.models.len(),
            self.train_queries,
            self.test_queries
        )?;
        writeln!(f, "{:<34} {:>14} {:>9}", "single model (test)", "cost/query", "accuracy")?;
        let mut models = self.models.clone();
        models.sort_by(|a, b| a.cost.total_cmp(&b.cost));
        for m in &models {
            writeln!(f, "{:<34} {:>14.8} {:>9.4}", m.label, m.cost, m.quality)?;
        }
        writeln!(f, "{:<34} {:>14} {:>9}", "router (cheapest good enough)", "cost/query", "accuracy")?;
        for p in switchyard_learn::metrics::pareto_frontier(&self.target_curve) {
            writeln!(f, "{:<34} {:>14.8} {:>9.4}", p.label, p.cost, p.quality)?;
        }
        writeln!(f, "{:<34} {:>14} {:>9}", "router (quality - lambda*cost)", "cost/query", "accuracy")?;
        for p in switchyard_learn::metrics::pareto_frontier(&self.utility_curve) {
            writeln!(f, "{:<34} {:>14.8} {:>9.4}", p.label, p.cost, p.quality)?;
        }
        let b = &self.best_single;
        match &self.router_cost_at_best_quality {
            Some(p) => writeln!(
                f,
                "most accurate single model {} ({:.4} at {:.8} USD): router reaches {:.4} at {:.8} USD ({:.1}% of its cost) [{}]",
                b.label,
                b.quality,
                b.cost,
                p.quality,
                p.cost,
                100.0 * p.cost / b.cost,
                p.label
            )?,
            None => {
                writeln!(f, "most accurate single model {} ({:.4}): the router never reaches it", b.label, b.quality)?
            }
        }
        let r = &self.reference;
        match &self.router_at_reference_cost {
            Some(p) => writeln!(
                f,
                "at the cost of {} ({:.8} USD, accuracy {:.4}): router accuracy {:.4} at {:.8} USD [{}]",
                r.label, r.cost, r.quality, p.quality, p.cost, p.label
            )?,
            None => writeln!(f, "no router point costs at most {} ({:.8} USD)", r.label, r.cost)?,
        }
        let show = |p: &Option<CostQualityPoint>| {
            p.as_ref()
                .map_or_else(|| "never".to_string(), |p| format!("{:.4} at {:.8} USD [{}]", p.quality, p.cost, p.label))
        };
        writeln!(
            f,
            "with the out-of-distribution guard on ({:.1}% of test queries to the safe model): reaching {}: {}; \
             within {}'s cost: {}",
            100.0 * self.ood_share,
            b.label,
            show(&self.guarded_cost_at_best_quality),
            r.label,
            show(&self.guarded_at_reference_cost)
        )?;
        writeln!(f, "(curves above: the learned router without the guard, as the binary table's `learned` row)")?;
        write!(f, "{}", self.training)
    }
}

/// Evaluates the N-way router on `table` (models with a price or a cost on every query, `exclude`d models left
/// out).
pub fn eval_nway(table: &OutcomeTable, options: &NWayEvalOptions) -> Result<NWayEvalReport> {
    // Candidates: models with a price, or with a recorded cost on every query.
    let costed: Vec<&str> = (0..table.models.len())
        .filter(|&m| table.models[m].is_priced() || table.queries.iter().all(|q| q.cost_usd[m].is_some()))
        .map(|m| table.models[m].name.as_str())
        .collect();
    let table = table.select_models(|m| costed.contains(&m.name.as_str()) && !options.exclude.contains(&m.name));
    if table.models.len() < 2 || !table.fully_costed() {
        return Err(QualityError::invalid("models", "need at least two priced models with a cost on every query"));
    }
    let ids: Vec<&str> = table.queries.iter().map(|q| q.id.as_str()).collect();
    let s = split_by_id(&ids, options.test_fraction, options.seed)?;
    let (train, test) = (table.subset(&s.train), table.subset(&s.test));
    let (file, training) = train_nway(&train, &options.train)?;
    // The learned router alone, and as deployed with its out-of-distribution guard (which sends unfamiliar
    // queries to the most accurate, and dearest, candidate).
    let guarded = NWayRouter::new(file.clone())?;
    let mut plain = file;
    plain.ood.enabled = false;
    let router = NWayRouter::new(plain)?;
    let n = test.queries.len() as f64;
    let models: Vec<CostQualityPoint> = (0..test.models.len())
        .map(|m| CostQualityPoint {
            label: test.models[m].name.clone(),
            cost: test.mean_cost(m).unwrap_or(0.0),
            quality: test.mean_quality(m),
        })
        .collect();
    let mut scratch = RouterScratch::default();
    let mut ood = 0usize;
    let mut run = |router: &NWayRouter, label: String, policy: NWayPolicy| {
        let (mut q, mut c) = (0.0, 0.0);
        ood = 0;
        for query in &test.queries {
            let d = router.decide_with_policy(
                &QueryInput::prompt(&query.prompt),
                None,
                &policy,
                &LiveView::default(),
                &mut scratch,
            );
            ood += usize::from(scratch.last_out_of_distribution());
            let m = test.model_index(&d.model).unwrap_or(0);
            q += query.quality[m];
            c += query.cost_usd[m].unwrap_or(0.0);
        }
        CostQualityPoint { label, cost: c / n, quality: q / n }
    };
    let mut curves = |router: &NWayRouter| {
        let targets: Vec<CostQualityPoint> = options
            .targets
            .iter()
            .map(|&t| run(router, format!("target={t:.2}"), NWayPolicy::CheapestGoodEnough { target: t }))
            .collect();
        let utility: Vec<CostQualityPoint> = options
            .lambdas
            .iter()
            .map(|&l| run(router, format!("lambda={l:.3e}"), NWayPolicy::Utility { lambda: l, target: 0.8 }))
            .collect();
        (targets, utility)
    };
    let (target_curve, utility_curve) = curves(&router);
    let (guarded_targets, guarded_utility) = curves(&guarded);
    let ood_share = ood as f64 / n;
    let best_single = models
        .iter()
        .max_by(|a, b| a.quality.total_cmp(&b.quality).then(b.cost.total_cmp(&a.cost)))
        .cloned()
        .ok_or_else(|| QualityError::invalid("models", "no model"))?;
    let reference = models.iter().find(|m| m.label == options.reference_model).cloned().ok_or_else(|| {
        QualityError::invalid("reference_model", format!("{:?} is not a candidate", options.reference_model))
    })?;
    let checks = |all: &[CostQualityPoint]| {
        let at_best = cheapest_reaching(all, best_single.quality)
            .and_then(|c| all.iter().find(|p| p.cost == c && p.quality >= best_single.quality).cloned());
        let at_reference = best_quality_within(all, reference.cost)
            .and_then(|q| all.iter().find(|p| p.quality == q && p.cost <= reference.cost).cloned());
        (at_best, at_reference)
    };
    let all: Vec<CostQualityPoint> = target_curve.iter().chain(&utility_curve).cloned().collect();
    let (router_cost_at_best_quality, router_at_reference_cost) = checks(&all);
    let all_guarded: Vec<CostQualityPoint> = guarded_targets.iter().chain(&guarded_utility).cloned().collect();
    let (guarded_cost_at_best_quality, guarded_at_reference_cost) = checks(&all_guarded);
    let report = NWayEvalReport {
        data: table.name.clone(),
        train_queries: train.queries.len(),
        test_queries: test.queries.len(),
        models,
        target_curve,
        utility_curve,
        best_single,
        router_cost_at_best_quality,
        reference,
        router_at_reference_cost,
        ood_share,
        guarded_cost_at_best_quality,
        guarded_at_reference_cost,
        training,
    };
    if let Some(path) = &options.plot {
        let pts = |c: &[CostQualityPoint]| {
            switchyard_learn::metrics::pareto_frontier(c).iter().map(|p| (p.cost, p.quality)).collect::<Vec<_>>()
        };
        let spec = PlotSpec {
            title: format!("{}: accuracy vs cost per query (test, {} queries)", report.data, report.test_queries),
            x_label: "mean cost per query (USD, log scale)".into(),
            y_label: "accuracy".into(),
            log_x: true,
            series: vec![
                Series::line("router: cheapest good enough", pts(&report.target_curve)),
                Series::line("router: quality - lambda*cost", pts(&report.utility_curve)),
                Series::points(
                    "single models",
                    report.models.iter().map(|m| (m.cost, m.quality)).collect(),
                    report.models.iter().map(|m| m.label.clone()).collect(),
                ),
            ],
        };
        write_svg(path, &spec)?;
    }
    Ok(report)
}
