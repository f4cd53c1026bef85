//! `switchyard router train|calibrate` and `switchyard eval router`: the command line of quality routing's
//! offline tools. Flags become the options of `switchyard_quality::entry`; the training, the calibration and the
//! evaluation live there, with the decision code the router will call.
//!
//! Exit codes as for the cascade commands: 64 when the command line cannot work (the option is named), 65 when
//! the data cannot be used.

use std::path::Path;
use std::time::Instant;

use switchyard_learn::dataset::default_data_dir;
use switchyard_learn::dataset::routellm::RouteLlmSet;
use switchyard_quality::calibrate::CalibrationTargets;
use switchyard_quality::entry::{
    CalibrateRouterOptions, CalibrationSample, DataSource, EvalRouterOptions, RouterKind, TrainRouterOptions,
    calibrate_router, eval_router, train_router,
};
use switchyard_quality::eval::{BinaryEvalOptions, NWayEvalOptions};

use crate::cascade::UsageError;
use crate::cli::{EvalRouterArgs, RouterCalibrateArgs, RouterDataArgs, RouterSetArg, RouterTrainArgs};

fn usage(option: &'static str, reason: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError { option, reason: reason.into() })
}

/// The data and the kind of router it trains: binary on a RouteLLM set, N-way on an outcomes file.
fn source(args: &RouterDataArgs) -> anyhow::Result<(DataSource, RouterKind)> {
    if !(args.test_fraction > 0.0 && args.test_fraction < 1.0) {
        return Err(usage("--test-fraction", "must be between 0 and 1"));
    }
    let binary = RouterKind::Binary { weak: None, strong: None };
    let nway = RouterKind::NWay { exclude: args.exclude.clone() };
    match (&args.set, &args.outcomes, &args.zeroeval) {
        (Some(set), None, None) => {
            let dir = match &args.routellm {
                Some(dir) => dir.clone(),
                None => default_data_dir(Path::new(".")).join("routellm"),
            };
            let set = match set {
                RouterSetArg::Gsm8k => RouteLlmSet::Gsm8k,
                RouterSetArg::Mmlu => RouteLlmSet::Mmlu,
                RouterSetArg::MtBench => RouteLlmSet::MtBench,
            };
            Ok((DataSource::RouteLlm { dir, set }, binary))
        }
        (None, Some(path), None) => {
            Ok((DataSource::Outcomes { path: path.clone(), prices: args.prices.clone() }, nway))
        }
        (None, None, Some(dir)) => Ok((DataSource::zeroeval(dir), nway)),
        _ => Err(usage("--set", "give one of --set, --outcomes or --zeroeval")),
    }
}

fn data_error(error: switchyard_quality::QualityError) -> anyhow::Error {
    anyhow::Error::new(DataError(error.to_string()))
}

/// Data the router commands cannot use (exit 65).
#[derive(Debug)]
pub struct DataError(pub String);

impl std::fmt::Display for DataError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DataError {}

pub fn train(args: &RouterTrainArgs) -> anyhow::Result<()> {
    let (data, kind) = source(&args.data)?;
    let options = TrainRouterOptions {
        data,
        kind,
        test_fraction: (!args.all).then_some(args.data.test_fraction),
        seed: args.data.seed,
        binary: Default::default(),
        nway: Default::default(),
        out: args.out.clone(),
    };
    let started = Instant::now();
    let report = train_router(&options).map_err(data_error)?;
    println!("{report}");
    println!("took {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

pub fn calibrate(args: &RouterCalibrateArgs) -> anyhow::Result<()> {
    if !(args.target > 0.0 && args.target < 1.0) {
        return Err(usage("--target", "must be between 0 and 1"));
    }
    let options = CalibrateRouterOptions {
        router: args.router.clone(),
        sample: CalibrationSample::Prompts { path: args.prompts.clone() },
        targets: CalibrationTargets { target_share: args.target, ..CalibrationTargets::default() },
        out: args.out.clone(),
    };
    let report = calibrate_router(&options).map_err(data_error)?;
    println!("{report}");
    Ok(())
}

pub fn eval(args: &EvalRouterArgs) -> anyhow::Result<()> {
    let (data, kind) = source(&args.data)?;
    let options = EvalRouterOptions {
        data,
        kind,
        train_data: None,
        binary: BinaryEvalOptions {
            test_fraction: args.data.test_fraction,
            seed: args.data.seed,
            plot: args.svg.clone(),
            calibration_prompts: args.calibration_prompts.clone(),
            ..BinaryEvalOptions::default()
        },
        nway: NWayEvalOptions {
            test_fraction: args.data.test_fraction,
            seed: args.data.seed,
            plot: args.svg.clone(),
            ..NWayEvalOptions::default()
        },
    };
    let started = Instant::now();
    let report = eval_router(&options).map_err(data_error)?;
    println!("{report}");
    println!("took {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
