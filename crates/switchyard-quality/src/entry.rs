//! File-level entry points for the binary's commands: `switchyard router train`, `switchyard router calibrate` and
//! `switchyard eval router`. Each takes an options struct of paths and settings and returns a report that prints
//! as a text table; the command line only has to fill the struct.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use switchyard_learn::OutcomeTable;
use switchyard_learn::dataset::load_prompts;
use switchyard_learn::dataset::outcomes::{load_outcomes_jsonl, load_prices};
use switchyard_learn::dataset::routellm::{self, RouteLlmOptions, RouteLlmSet};
use switchyard_learn::split::split_by_id;

use crate::calibrate::{CalibrationReport, CalibrationTargets, calibrate_binary};
use crate::error::{QualityError, Result};
use crate::eval::{BinaryEvalOptions, BinaryEvalReport, NWayEvalOptions, NWayEvalReport, eval_binary, eval_nway};
use crate::learned::RouterFile;
use crate::train::{
    BinaryTrainOptions, BinaryTrainReport, NWayTrainOptions, NWayTrainReport, train_binary, train_nway,
};

/// Where outcome data comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "format", rename_all = "snake_case")]
pub enum DataSource {
    /// One RouteLLM set from the folder holding `gsm8k/`, `mmlu/`, `mt_bench/` (weak = column 0, strong = 1).
    RouteLlm {
        /// The RouteLLM folder.
        dir: PathBuf,
        /// The set.
        set: RouteLlmSet,
    },
    /// The generic N-model JSONL (ZeroEval's `outcomes.jsonl` is one), optionally priced by a `models.json`.
    Outcomes {
        /// The JSONL file.
        path: PathBuf,
        /// The price file.
        prices: Option<PathBuf>,
    },
}

impl DataSource {
    /// The ZeroEval folder as a source (`outcomes.jsonl` priced by `models.json`).
    pub fn zeroeval(dir: &Path) -> Self {
        DataSource::Outcomes { path: dir.join("outcomes.jsonl"), prices: Some(dir.join("models.json")) }
    }

    /// Loads the table.
    pub fn load(&self) -> Result<OutcomeTable> {
        Ok(match self {
            DataSource::RouteLlm { dir, set } => routellm::load(dir, *set, &RouteLlmOptions::default())?,
            DataSource::Outcomes { path, prices } => {
                let prices = prices.as_deref().map(load_prices).transpose()?;
                let mut t = load_outcomes_jsonl(path, prices.as_ref())?;
                if path.parent().and_then(Path::file_name).is_some_and(|n| n == "zeroeval") {
                    t.name = "zeroeval".into();
                }
                t
            }
        })
    }
}

/// Which router to build.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RouterKind {
    /// Weak/strong; the models default to the table's first two columns.
    Binary {
        /// The weak model's name.
        weak: Option<String>,
        /// The strong model's name.
        strong: Option<String>,
    },
    /// Over every model of the table with a price or a cost on every query, except `exclude`.
    NWay {
        /// Models to leave out.
        exclude: Vec<String>,
    },
}

fn columns(table: &OutcomeTable, weak: &Option<String>, strong: &Option<String>) -> Result<(usize, usize)> {
    let col = |name: &Option<String>, default: usize| match name {
        Some(n) => table.require_model(n).map_err(QualityError::from),
        None if default < table.models.len() => Ok(default),
        None => Err(QualityError::invalid("models", "the table has fewer than two models")),
    };
    Ok((col(weak, 0)?, col(strong, 1)?))
}

/// Options of [`train_router`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainRouterOptions {
    /// The training data.
    pub data: DataSource,
    /// The router to build.
    pub kind: RouterKind,
    /// Hold out this share of question ids (seeded by `seed`) and train on the rest; `None` trains on all.
    pub test_fraction: Option<f64>,
    /// The split seed (the same seed and fraction as `eval router` give the same test side).
    pub seed: u64,
    /// Binary training settings.
    pub binary: BinaryTrainOptions,
    /// N-way training settings.
    pub nway: NWayTrainOptions,
    /// Where to write the router JSON.
    pub out: PathBuf,
}

/// What training reports, by kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TrainDetails {
    /// Binary.
    Binary(BinaryTrainReport),
    /// N-way.
    NWay(NWayTrainReport),
}

/// The result of [`train_router`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainRouterReport {
    /// The written file.
    pub out: PathBuf,
    /// The data set.
    pub data: String,
    /// Queries trained on.
    pub train_queries: usize,
    /// Queries held out.
    pub held_out: usize,
    /// Details.
    pub details: TrainDetails,
}

impl std::fmt::Display for TrainRouterReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "trained on {} queries of {} ({} held out); router written to {}",
            self.train_queries,
            self.data,
            self.held_out,
            self.out.display()
        )?;
        match &self.details {
            TrainDetails::Binary(r) => write!(f, "{r}"),
            TrainDetails::NWay(r) => write!(f, "{r}"),
        }
    }
}

fn train_side(table: &OutcomeTable, test_fraction: Option<f64>, seed: u64) -> Result<(OutcomeTable, OutcomeTable)> {
    match test_fraction {
        None => Ok((table.clone(), table.subset(&[]))),
        Some(fraction) => {
            let ids: Vec<&str> = table.queries.iter().map(|q| q.id.as_str()).collect();
            let s = split_by_id(&ids, fraction, seed)?;
            Ok((table.subset(&s.train), table.subset(&s.test)))
        }
    }
}

/// Trains a router and writes it as JSON.
pub fn train_router(options: &TrainRouterOptions) -> Result<TrainRouterReport> {
    let table = options.data.load()?;
    let (train, held) = train_side(&table, options.test_fraction, options.seed)?;
    let (file, details) = match &options.kind {
        RouterKind::Binary { weak, strong } => {
            let (w, s) = columns(&train, weak, strong)?;
            let (file, report) = train_binary(&train, w, s, &options.binary)?;
            (RouterFile::Binary(file), TrainDetails::Binary(report))
        }
        RouterKind::NWay { exclude } => {
            let costed: Vec<String> = (0..train.models.len())
                .filter(|&m| train.models[m].is_priced() || train.queries.iter().all(|q| q.cost_usd[m].is_some()))
                .map(|m| train.models[m].name.clone())
                .collect();
            let candidates = train.select_models(|m| costed.contains(&m.name) && !exclude.contains(&m.name));
            let (file, report) = train_nway(&candidates, &options.nway)?;
            (RouterFile::NWay(file), TrainDetails::NWay(report))
        }
    };
    file.save(&options.out)?;
    Ok(TrainRouterReport {
        out: options.out.clone(),
        data: table.name.clone(),
        train_queries: train.queries.len(),
        held_out: held.queries.len(),
        details,
    })
}

/// Where calibration prompts come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum CalibrationSample {
    /// The prompts of an outcome data set, optionally only the test side of a seeded split.
    Data {
        /// The data.
        data: DataSource,
        /// `(test_fraction, seed)`: take only the held-out side of that split.
        test_side: Option<(f64, u64)>,
    },
    /// A JSONL file whose lines have a `prompt` (or `question`) string field; other fields are ignored.
    Prompts {
        /// The file.
        path: PathBuf,
    },
}

/// Options of [`calibrate_router`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrateRouterOptions {
    /// The binary router file to calibrate.
    pub router: PathBuf,
    /// The calibration prompts.
    pub sample: CalibrationSample,
    /// The target shares.
    pub targets: CalibrationTargets,
    /// Where to write the calibrated router (may equal `router`).
    pub out: PathBuf,
}

/// Calibrates a binary router's thresholds on a prompt sample and writes it.
pub fn calibrate_router(options: &CalibrateRouterOptions) -> Result<CalibrationReport> {
    let RouterFile::Binary(file) = RouterFile::load(&options.router)? else {
        return Err(QualityError::invalid("router", "only binary routers have thresholds to calibrate"));
    };
    let (prompts, source) = match &options.sample {
        CalibrationSample::Prompts { path } => (load_prompts(path)?, path.display().to_string()),
        CalibrationSample::Data { data, test_side } => {
            let table = data.load()?;
            let table = match test_side {
                Some((fraction, seed)) => train_side(&table, Some(*fraction), *seed)?.1,
                None => table,
            };
            let prompts = table.queries.into_iter().map(|q| q.prompt).collect();
            (prompts, format!("{} prompts", table.name))
        }
    };
    let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let (calibrated, report) = calibrate_binary(&file, &refs, options.targets, &source)?;
    RouterFile::Binary(calibrated).save(&options.out)?;
    Ok(report)
}

/// Options of [`eval_router`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRouterOptions {
    /// The data to evaluate on.
    pub data: DataSource,
    /// Binary or N-way.
    pub kind: RouterKind,
    /// Train the binary router on this data instead of a split of `data` (then all of `data` is tested).
    pub train_data: Option<DataSource>,
    /// Binary settings.
    pub binary: BinaryEvalOptions,
    /// N-way settings (its `exclude` is extended by the kind's).
    pub nway: NWayEvalOptions,
}

/// The result of [`eval_router`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EvalRouterReport {
    /// Binary.
    Binary(Box<BinaryEvalReport>),
    /// N-way.
    NWay(Box<NWayEvalReport>),
}

impl std::fmt::Display for EvalRouterReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EvalRouterReport::Binary(r) => write!(f, "{r}"),
            EvalRouterReport::NWay(r) => write!(f, "{r}"),
        }
    }
}

/// Evaluates routers on a data set (see [`crate::eval`]).
pub fn eval_router(options: &EvalRouterOptions) -> Result<EvalRouterReport> {
    let table = options.data.load()?;
    match &options.kind {
        RouterKind::Binary { weak, strong } => {
            let (w, s) = columns(&table, weak, strong)?;
            let train = options.train_data.as_ref().map(DataSource::load).transpose()?;
            Ok(EvalRouterReport::Binary(Box::new(eval_binary(&table, w, s, train.as_ref(), &options.binary)?)))
        }
        RouterKind::NWay { exclude } => {
            let mut nway = options.nway.clone();
            nway.exclude.extend(exclude.iter().cloned());
            Ok(EvalRouterReport::NWay(Box::new(eval_nway(&table, &nway)?)))
        }
    }
}
