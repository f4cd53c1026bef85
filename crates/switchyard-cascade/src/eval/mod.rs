//! `switchyard eval cascade` and `switchyard cascade train-verifier`, as library functions.
//!
//! The evaluation replays recorded outcomes through the **same** code the runtime runs: for every test query,
//! each non-last stage's confidence comes from [`estimate::follow_up`] and [`estimate::estimate`] (a verifier or
//! a baseline answers the follow-up as a [`Scorer`]), and the decision comes from a [`CascadeRun`] started with
//! the swept threshold as a request override. Nothing here decides on its own.
//!
//! Per threshold the sweep reports the strong-call share (queries that reached the last stage), the quality
//! (share of correct final answers), PGR, the measured cost per query and the expected cost of the formula
//! `Σ c_i · Π p_j` (measured escalation rates, mean stage costs) with their gap; over the sweep, APGR and
//! CPT(50 %), CPT(80 %) with switchyard-learn's metrics (definitions in the RouteLLM data README). Baselines go
//! through the same path: a seeded random score and the prompt-length rule ("longer prompt → less confident").
//!
//! Splits are explicit: a seeded split by question id, or separate train and test files. A verifier is trained
//! only on the train side, and a loaded verifier's training ids are removed from the test side.

pub mod data;
mod report;

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use switchyard_learn::dataset::routellm::RouteLlmSet;
use switchyard_learn::hash::stable_hash;
use switchyard_learn::metrics;
use switchyard_learn::split::split_by_id;

use crate::estimate::logprobs::{LogprobAggregate, LogprobScope, TokenLogprob};
use crate::estimate::{self, Estimate, EstimatorConfig, FollowUp, FollowUpResult, Sample, Scorer, VerifierSource};
use crate::extract::Extractor;
use crate::plan::{Cascade, CascadeConfig, CascadeOverride, Next, OverrideLimits, StageConfig, StageResult};
use crate::verifier::{VerifierExample, VerifierModel, VerifierOptions, VerifierTraining, train_verifier};
use crate::{CascadeError, health};

pub use data::{ReplayQuery, ReplaySample, ReplayStage, RouteLlmCosts};
pub use report::{Report, SweepRow, SweepSummary};

/// Where the recorded outcomes come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EvalData {
    /// A RouteLLM set (`gsm8k` or `mmlu`) from the folder holding `gsm8k/` and `mmlu/`, split by seed.
    RouteLlm {
        /// The RouteLLM data folder.
        dir: PathBuf,
        /// The set.
        set: RouteLlmSet,
        /// Constant stage costs; [`RouteLlmCosts::documented`] when absent.
        costs: Option<RouteLlmCosts>,
    },
    /// A generic cascade JSONL file; with `train`, the test file is evaluated whole and the train file is used
    /// for training (ids present in both are removed from the test side); without, the file is split by seed.
    Jsonl {
        /// The file to evaluate on (or to split).
        test: PathBuf,
        /// A separate training file.
        train: Option<PathBuf>,
    },
}

/// A seeded split by question id.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SplitOptions {
    /// Share of the distinct question ids on the test side.
    pub test_fraction: f64,
    /// The seed.
    pub seed: u64,
}

impl Default for SplitOptions {
    fn default() -> Self {
        SplitOptions { test_fraction: 0.5, seed: 7 }
    }
}

/// The confidence estimator of the non-last stages under evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EvalEstimator {
    /// The local verifier: loaded from `model`, or trained on the train side with the evaluation's options.
    Verifier {
        /// A model file written by [`train_verifier_cmd`].
        model: Option<PathBuf>,
    },
    /// Self-consistency over the recorded samples.
    SelfConsistency {
        /// How to read each sample's answer.
        extractor: Extractor,
    },
    /// The recorded total logprob of the first sample (JSONL `logprob`), as one token.
    Logprobs {
        /// Mean or min (equal for one value).
        aggregate: LogprobAggregate,
    },
    /// Baseline: confidence falls with prompt length.
    PromptLength,
    /// Baseline: a seeded uniform score per prompt.
    Random {
        /// The seed.
        seed: u64,
    },
}

impl EvalEstimator {
    fn label(&self) -> &'static str {
        match self {
            EvalEstimator::Verifier { .. } => "verifier",
            EvalEstimator::SelfConsistency { .. } => "self-consistency",
            EvalEstimator::Logprobs { .. } => "logprobs",
            EvalEstimator::PromptLength => "prompt length",
            EvalEstimator::Random { .. } => "random",
        }
    }
}

/// Options of [`eval_cascade`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalCascadeOptions {
    /// The data.
    pub data: EvalData,
    /// The seeded split (unused with separate train and test files).
    pub split: SplitOptions,
    /// The estimator to evaluate.
    pub estimator: EvalEstimator,
    /// How a verifier is trained when it is not loaded.
    pub verifier: VerifierOptions,
    /// Also evaluate the random and prompt-length baselines.
    pub baselines: bool,
    /// The most thresholds swept (evenly spaced ranks of the observed confidences).
    pub max_thresholds: usize,
    /// Rows of the printed table (operating points nearest to evenly spaced strong-call shares).
    pub table_rows: usize,
    /// Where to write the quality-against-cost SVG plot.
    pub svg: Option<PathBuf>,
}

impl EvalCascadeOptions {
    /// The defaults for `data` and `estimator`: split 50/50 with seed 7, baselines on, 400 thresholds, 11 rows.
    pub fn new(data: EvalData, estimator: EvalEstimator) -> Self {
        EvalCascadeOptions {
            data,
            split: SplitOptions::default(),
            estimator,
            verifier: VerifierOptions::default(),
            baselines: true,
            max_thresholds: 400,
            table_rows: 11,
            svg: None,
        }
    }
}

/// Options of [`train_verifier_cmd`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainVerifierCmdOptions {
    /// The data; training uses its train side: the `train` file when given, otherwise the train side of `split`.
    pub data: EvalData,
    /// The seeded split (RouteLLM, or JSONL without a separate train file).
    pub split: SplitOptions,
    /// Training settings.
    pub verifier: VerifierOptions,
    /// Where to write the model.
    pub out: PathBuf,
}

/// Trains a verifier on the training side of the data and writes it to `opts.out`.
pub fn train_verifier_cmd(opts: &TrainVerifierCmdOptions) -> Result<VerifierTraining, CascadeError> {
    let (train, _) = load_split(&opts.data, opts.split)?;
    let (model, training) = train_verifier(&verifier_examples(&train), &opts.verifier)?;
    model.save(&opts.out)?;
    Ok(training)
}

/// Runs the evaluation (see the module documentation) and writes the SVG plot if asked.
pub fn eval_cascade(opts: &EvalCascadeOptions) -> Result<Report, CascadeError> {
    let (train, mut test) = load_split(&opts.data, opts.split)?;
    let mut notes = Vec::new();
    let mut verifier_training = None;
    let mut scoring_us = None;
    let verifier = match &opts.estimator {
        EvalEstimator::Verifier { model: Some(path) } => {
            let model = VerifierModel::load(path)?;
            let before = test.len();
            test.retain(|q| !model.trained_on().contains(&q.id));
            if before != test.len() {
                notes.push(format!(
                    "{} test queries dropped: the loaded verifier was trained on them",
                    before - test.len()
                ));
            }
            Some(model)
        }
        EvalEstimator::Verifier { model: None } => {
            let (model, training) = train_verifier(&verifier_examples(&train), &opts.verifier)?;
            verifier_training = Some(training);
            Some(model)
        }
        _ => None,
    };
    if test.is_empty() {
        return Err(CascadeError::Data { reason: "no test query left".into() });
    }
    let stage_costs: Vec<f64> = (0..test[0].stages.len())
        .map(|s| test.iter().map(|q| q.stages[s].cost_usd).sum::<f64>() / test.len() as f64)
        .collect();
    let constant_costs =
        (0..stage_costs.len()).all(|s| test.iter().all(|q| q.stages[s].cost_usd == test[0].stages[s].cost_usd));
    if !constant_costs {
        notes.push(
            "stage costs vary per query: the formula uses mean stage costs, so measured and expected costs differ \
             where cost correlates with escalation"
                .into(),
        );
    }

    let main = match (&opts.estimator, &verifier) {
        (EvalEstimator::Verifier { .. }, Some(model)) => {
            let summary = sweep("verifier", &test, &ScorerEstimator(model), opts.max_thresholds)?;
            scoring_us = Some(summary.estimate_us);
            summary
        }
        (EvalEstimator::SelfConsistency { extractor }, _) => {
            sweep("self-consistency", &test, &SamplesEstimator::consistency(extractor.clone()), opts.max_thresholds)?
        }
        (EvalEstimator::Logprobs { aggregate }, _) => {
            sweep("logprobs", &test, &SamplesEstimator::logprobs(*aggregate), opts.max_thresholds)?
        }
        (EvalEstimator::PromptLength, _) => {
            sweep("prompt length", &test, &ScorerEstimator(&PromptLength), opts.max_thresholds)?
        }
        (EvalEstimator::Random { seed }, _) => {
            sweep("random", &test, &ScorerEstimator(&SeededRandom(*seed)), opts.max_thresholds)?
        }
        (EvalEstimator::Verifier { .. }, None) => {
            return Err(CascadeError::Misuse { reason: "verifier estimator without a verifier" });
        }
    };
    let mut baselines = Vec::new();
    if opts.baselines {
        if !matches!(opts.estimator, EvalEstimator::Random { .. }) {
            baselines.push(sweep(
                "random",
                &test,
                &ScorerEstimator(&SeededRandom(opts.split.seed)),
                opts.max_thresholds,
            )?);
        }
        if opts.estimator != EvalEstimator::PromptLength {
            baselines.push(sweep("prompt length", &test, &ScorerEstimator(&PromptLength), opts.max_thresholds)?);
        }
    }
    let report = Report::new(report::ReportParts {
        data: describe(&opts.data),
        estimator: opts.estimator.label().to_owned(),
        split: opts.split,
        train_queries: distinct(&train),
        test_queries: distinct(&test),
        stage_models: test[0].stages.iter().map(|s| s.model.clone()).collect(),
        stage_costs,
        constant_costs,
        main,
        baselines,
        verifier_training,
        scoring_us,
        notes,
        table_rows: opts.table_rows,
    });
    if let Some(path) = &opts.svg {
        report.write_svg(path)?;
    }
    Ok(report)
}

fn describe(data: &EvalData) -> String {
    match data {
        EvalData::RouteLlm { set, .. } => format!("RouteLLM {set}"),
        EvalData::Jsonl { test, .. } => format!("cascade JSONL {}", test.display()),
    }
}

fn distinct(queries: &[ReplayQuery]) -> usize {
    queries.iter().map(|q| q.id.as_str()).collect::<HashSet<_>>().len()
}

/// The (train, test) sides of the data.
fn load_split(data: &EvalData, split: SplitOptions) -> Result<(Vec<ReplayQuery>, Vec<ReplayQuery>), CascadeError> {
    let seeded = |all: Vec<ReplayQuery>| -> Result<_, CascadeError> {
        let ids: Vec<&str> = all.iter().map(|q| q.id.as_str()).collect();
        let s = split_by_id(&ids, split.test_fraction, split.seed)?;
        let pick = |idx: &[usize]| idx.iter().map(|&i| all[i].clone()).collect::<Vec<_>>();
        Ok((pick(&s.train), pick(&s.test)))
    };
    match data {
        EvalData::RouteLlm { dir, set, costs } => {
            seeded(data::load_routellm(dir, *set, costs.unwrap_or_else(|| RouteLlmCosts::documented(*set)))?)
        }
        EvalData::Jsonl { test, train: None } => seeded(data::load_jsonl(test)?),
        EvalData::Jsonl { test, train: Some(train) } => {
            let train = data::load_jsonl(train)?;
            let train_ids: BTreeSet<&str> = train.iter().map(|q| q.id.as_str()).collect();
            let test: Vec<ReplayQuery> =
                data::load_jsonl(test)?.into_iter().filter(|q| !train_ids.contains(q.id.as_str())).collect();
            Ok((train, test))
        }
    }
}

/// Training examples for a verifier: every sample of every non-last stage.
pub fn verifier_examples(queries: &[ReplayQuery]) -> Vec<VerifierExample> {
    queries
        .iter()
        .flat_map(|q| {
            let non_last = &q.stages[..q.stages.len().saturating_sub(1)];
            non_last.iter().flat_map(move |s| {
                s.samples.iter().map(move |x| VerifierExample {
                    id: q.id.clone(),
                    query: q.prompt.clone(),
                    answer: x.text.clone(),
                    correct: x.correct,
                })
            })
        })
        .collect()
}

/// Baseline scorer: `1 / (1 + chars / 500)`, so a longer prompt is less confident (escalates first).
#[derive(Debug, Clone, Copy)]
pub struct PromptLength;

impl Scorer for PromptLength {
    fn score(&self, query: &str, _answer: &str) -> Result<f64, CascadeError> {
        Ok(1.0 / (1.0 + query.chars().count() as f64 / 500.0))
    }
}

/// Baseline scorer: a uniform score in `[0, 1)` from a seeded hash of the query.
#[derive(Debug, Clone, Copy)]
pub struct SeededRandom(pub u64);

impl Scorer for SeededRandom {
    fn score(&self, query: &str, _answer: &str) -> Result<f64, CascadeError> {
        Ok((stable_hash(self.0, query.as_bytes()) >> 11) as f64 / (1u64 << 53) as f64)
    }
}

/// How the replay gets a stage's estimate: the stage's estimator config and whatever answers its follow-up.
trait ReplayEstimator {
    fn config(&self) -> EstimatorConfig;
    fn follow(&self, follow: &FollowUp) -> FollowUpResult;
}

struct ScorerEstimator<'s, S: Scorer>(&'s S);

impl<S: Scorer> ReplayEstimator for ScorerEstimator<'_, S> {
    fn config(&self) -> EstimatorConfig {
        EstimatorConfig::Verifier { extractor: None, source: VerifierSource::Local { path: "(in memory)".into() } }
    }

    fn follow(&self, follow: &FollowUp) -> FollowUpResult {
        match follow {
            FollowUp::Score { request, .. } => match self.0.score(&request.query, &request.answer) {
                Ok(p) => FollowUpResult::Score(p),
                Err(e) => FollowUpResult::Failed(e.to_string()),
            },
            _ => FollowUpResult::None,
        }
    }
}

struct SamplesEstimator(EstimatorConfig);

impl SamplesEstimator {
    fn consistency(extractor: Extractor) -> Self {
        SamplesEstimator(EstimatorConfig::SelfConsistency { samples: 2, temperature: 0.7, extractor })
    }

    fn logprobs(aggregate: LogprobAggregate) -> Self {
        SamplesEstimator(EstimatorConfig::Logprobs { aggregate, scope: LogprobScope::All })
    }
}

impl ReplayEstimator for SamplesEstimator {
    fn config(&self) -> EstimatorConfig {
        self.0.clone()
    }

    fn follow(&self, _follow: &FollowUp) -> FollowUpResult {
        FollowUpResult::None
    }
}

/// A recorded stage's estimate and the correctness of the answer it would return.
struct StageReplay {
    estimate: Option<Estimate>,
    correct: bool,
    cost_usd: f64,
    model: String,
}

fn replay_stage(query: &ReplayQuery, index: usize, estimator: &dyn ReplayEstimator) -> StageReplay {
    let stage = &query.stages[index];
    let last = index + 1 == query.stages.len();
    let estimate = (!last).then(|| {
        let config = estimator.config();
        let samples: Vec<Sample> = stage
            .samples
            .iter()
            .map(|s| Sample {
                text: s.text.clone(),
                logprobs: s.logprob.map(|lp| vec![TokenLogprob { token: s.text.clone(), logprob: lp }]),
            })
            .collect();
        let follow = estimator.follow(&estimate::follow_up(&config, &query.prompt, &samples));
        estimate::estimate(&config, &samples, &follow)
    });
    let chosen = estimate.as_ref().and_then(|e| e.answer_index).unwrap_or(0);
    let correct = stage.samples.get(chosen).or(stage.samples.first()).is_some_and(|s| s.correct);
    StageReplay { estimate, correct, cost_usd: stage.cost_usd, model: stage.model.clone() }
}

/// Sweeps thresholds for one estimator over the test queries through [`CascadeRun`](crate::plan::CascadeRun).
fn sweep(
    label: &str,
    test: &[ReplayQuery],
    estimator: &dyn ReplayEstimator,
    max_thresholds: usize,
) -> Result<SweepSummary, CascadeError> {
    let stages = test[0].stages.len();
    // The wall clock is read only here, to report what one estimate costs.
    let started = Instant::now();
    let replays: Vec<Vec<StageReplay>> =
        test.iter().map(|q| (0..stages).map(|s| replay_stage(q, s, estimator)).collect()).collect();
    let estimate_us = started.elapsed().as_secs_f64() * 1e6 / (test.len() * (stages - 1)).max(1) as f64;
    let config = CascadeConfig {
        name: "eval".into(),
        stages: (0..stages)
            .map(|s| StageConfig {
                target: test[0].stages[s].model.clone(),
                estimator: (s + 1 < stages).then(|| estimator.config()),
                threshold: 0.5,
                cost_hint_usd: None,
            })
            .collect(),
        overrides: OverrideLimits::default(),
    };
    let cascade = Cascade::new(config)?;
    let n = test.len() as f64;
    let weak_quality = replays.iter().filter(|r| r[0].correct).count() as f64 / n;
    let strong_quality = replays.iter().filter(|r| r[stages - 1].correct).count() as f64 / n;
    let mean_costs: Vec<f64> = (0..stages).map(|s| replays.iter().map(|r| r[s].cost_usd).sum::<f64>() / n).collect();

    let mut rows = Vec::new();
    for threshold in thresholds(&replays, max_thresholds) {
        let request = CascadeOverride { threshold: Some(threshold), max_stage: None };
        let (mut correct, mut cost, mut reached_last) = (0usize, 0.0, 0usize);
        let mut reached = vec![0usize; stages];
        let mut escalated = vec![0usize; stages];
        for replay in &replays {
            let mut run = cascade.start(&request)?;
            while let Next::Call(call) = run.next() {
                let r = &replay[call.stage];
                reached[call.stage] += 1;
                let result = StageResult {
                    provider: r.model.clone(),
                    answer: String::new(),
                    estimate: r.estimate.clone(),
                    cost_usd: Some(r.cost_usd),
                    latency_ms: 0,
                };
                if matches!(run.record(result)?, crate::plan::Decision::Escalate { .. }) {
                    escalated[call.stage] += 1;
                }
            }
            let outcome = run.finish();
            let Some(answer) = outcome.answer.as_ref() else { continue };
            correct += usize::from(replay[answer.stage].correct);
            cost += outcome.cost_usd();
            reached_last += usize::from(answer.stage == stages - 1);
        }
        let rates: Vec<f64> = (0..stages - 1)
            .map(|s| if reached[s] == 0 { 0.0 } else { escalated[s] as f64 / reached[s] as f64 })
            .collect();
        let quality = correct as f64 / n;
        let measured = cost / n;
        let expected = health::expected_cost(&mean_costs, &rates);
        rows.push(SweepRow {
            threshold,
            strong_share: reached_last as f64 / n,
            quality,
            pgr: metrics::pgr(quality, weak_quality, strong_quality)?,
            measured_cost: measured,
            expected_cost: expected,
            cost_gap: if expected > 0.0 { (measured - expected).abs() / expected } else { 0.0 },
            escalation_rate: rates.first().copied().unwrap_or(0.0),
        });
    }
    rows.sort_by(|a, b| a.strong_share.total_cmp(&b.strong_share).then(a.threshold.total_cmp(&b.threshold)));
    let points: Vec<(f64, f64)> = rows.iter().map(|r| (r.strong_share, r.pgr)).collect();
    Ok(SweepSummary {
        label: label.to_owned(),
        apgr: metrics::apgr(&points),
        cpt50: metrics::cpt(&points, 0.5),
        cpt80: metrics::cpt(&points, 0.8),
        weak_quality,
        strong_quality,
        break_even_rate: health::break_even_rate(&mean_costs, &vec![0.0; stages - 1]),
        estimate_us,
        rows,
    })
}

/// The swept thresholds: 0, the observed measured confidences (at most `max` of them, evenly spaced by rank)
/// and 1.
fn thresholds(replays: &[Vec<StageReplay>], max: usize) -> Vec<f64> {
    let mut seen: Vec<f64> = replays
        .iter()
        .flat_map(|r| r.iter().filter_map(|s| s.estimate.as_ref()))
        .filter(|e| e.unavailable.is_none())
        .map(|e| e.confidence)
        .collect();
    seen.sort_by(f64::total_cmp);
    seen.dedup();
    let max = max.max(2);
    let mut out: Vec<f64> =
        if seen.len() <= max { seen } else { (0..max).map(|k| seen[k * (seen.len() - 1) / (max - 1)]).collect() };
    out.push(0.0);
    out.push(1.0);
    out.sort_by(f64::total_cmp);
    out.dedup();
    out
}

/// Writes `text` to `path`.
pub(crate) fn write_file(path: &Path, text: &str) -> Result<(), CascadeError> {
    std::fs::write(path, text).map_err(|source| CascadeError::Io { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests;
