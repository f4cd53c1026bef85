//! `switchyard eval cascade` and `switchyard cascade train-verifier`: the command line of the offline cascade
//! evaluation.
//!
//! This module only turns flags into the options of `switchyard_cascade::eval` and prints what comes back; the
//! replay, the decisions, the sweep and the verifier all live in switchyard-cascade, the crate the runtime's
//! coordinator calls, so what is measured here is what production decides.
//!
//! Exit codes: a command line that cannot work (conflicting or missing data options, an estimator without what
//! it needs, a split fraction outside (0, 1)) exits 64 naming the option; data that cannot be used (a missing
//! or unreadable file, a malformed JSONL line, a bad verifier file) exits 65 naming the file and, for JSONL, the
//! line.

use std::fmt;
use std::path::Path;
use std::time::Instant;

use switchyard_cascade::estimate::logprobs::LogprobAggregate;
use switchyard_cascade::eval::{EvalData, EvalEstimator, SplitOptions};
use switchyard_cascade::verifier::VerifierOptions;
use switchyard_cascade::{
    CascadeError, EvalCascadeOptions, Extractor, TrainVerifierCmdOptions, VerifierModel, eval_cascade,
    train_verifier_cmd,
};
use switchyard_learn::dataset::default_data_dir;
use switchyard_learn::dataset::routellm::RouteLlmSet;

use crate::cli::{CascadeDataArgs, EstimatorArg, EvalCascadeArgs, ExtractorArg, SetArg, TrainVerifierArgs};

/// sysexits' EX_USAGE: the command line cannot work as given.
pub const EXIT_USAGE: u8 = 64;
/// sysexits' EX_DATAERR: the input data cannot be used.
pub const EXIT_DATA: u8 = 65;
/// sysexits' EX_SOFTWARE: a bug of ours.
const EXIT_SOFTWARE: u8 = 70;

/// A command line the cascade commands cannot work with: the option and why.
#[derive(Debug)]
pub struct UsageError {
    /// The option, as typed (`--verifier`).
    pub option: &'static str,
    /// Why it cannot be used.
    pub reason: String,
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.option, self.reason)
    }
}

impl std::error::Error for UsageError {}

fn usage(option: &'static str, reason: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError { option, reason: reason.into() })
}

/// The exit code of a cascade error: 64 for settings, 65 for data, 70 for a misuse of the library (a bug).
///
/// The command-line settings the learning crate would refuse (split fraction, L2 strength) are checked before
/// the library runs, so what it still refuses is the data (no quality gap between the stages, an empty side).
pub fn exit_code(err: &CascadeError) -> u8 {
    match err {
        CascadeError::InvalidConfig(_) | CascadeError::InvalidOverride { .. } => EXIT_USAGE,
        CascadeError::Misuse { .. } | CascadeError::InvalidScore { .. } => EXIT_SOFTWARE,
        CascadeError::InvalidModel { .. }
        | CascadeError::Data { .. }
        | CascadeError::Learn(_)
        | CascadeError::Io { .. }
        | CascadeError::Json { .. } => EXIT_DATA,
    }
}

/// `switchyard eval cascade`: prints the report table (or one JSON object) and writes the SVG if asked.
pub fn eval(args: &EvalCascadeArgs) -> anyhow::Result<()> {
    let data = eval_data(&args.data, Command::Eval)?;
    let extractor = extractor(&args.data);
    let estimator = match args.estimator {
        EstimatorArg::Verifier => EvalEstimator::Verifier { model: args.verifier.clone() },
        _ if args.verifier.is_some() => {
            return Err(usage("--verifier", "a verifier model is only used with --estimator verifier"));
        }
        EstimatorArg::SelfConsistency => EvalEstimator::SelfConsistency {
            extractor: match (args.data.extractor, args.data.set) {
                (Some(ExtractorArg::None), _) => {
                    return Err(usage("--extractor", "self-consistency compares extracted answers: none is not one"));
                }
                (None, Some(SetArg::Mmlu)) => Extractor::Choice { letters: "ABCD".into() },
                _ => extractor.clone().unwrap_or(Extractor::LastNumber),
            },
        },
        EstimatorArg::Logprobs => EvalEstimator::Logprobs { aggregate: LogprobAggregate::Mean },
        EstimatorArg::PromptLength => EvalEstimator::PromptLength,
        EstimatorArg::Random => EvalEstimator::Random { seed: args.data.seed },
    };
    if args.thresholds < 2 {
        return Err(usage("--thresholds", "must be at least 2"));
    }
    if args.rows < 2 {
        return Err(usage("--rows", "must be at least 2"));
    }
    let mut opts = EvalCascadeOptions::new(data, estimator);
    opts.split = split(&args.data)?;
    opts.verifier = verifier_options(&args.data, extractor)?;
    opts.baselines = !args.no_baselines;
    opts.max_thresholds = args.thresholds;
    opts.table_rows = args.rows;
    opts.svg = args.svg.clone();

    let started = Instant::now();
    let report = eval_cascade(&opts)?;
    let took = started.elapsed();
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{report}");
        if let Some(svg) = &args.svg {
            println!("plot: {}", svg.display());
        }
        println!("took {:.1} s (load, split, train if needed, sweep)", took.as_secs_f64());
    }
    Ok(())
}

/// `switchyard cascade train-verifier`: trains on the training side and writes the model.
pub fn train_verifier(args: &TrainVerifierArgs) -> anyhow::Result<()> {
    let data = eval_data(&args.data, Command::TrainVerifier)?;
    let extractor = extractor(&args.data);
    let opts = TrainVerifierCmdOptions {
        data,
        split: split(&args.data)?,
        verifier: verifier_options(&args.data, extractor)?,
        out: args.out.clone(),
    };
    let started = Instant::now();
    let training = train_verifier_cmd(&opts)?;
    let took = started.elapsed();
    // Read back what was written: the file must load, and its training ids are what eval will leave out.
    let model = VerifierModel::load(&args.out)?;
    let questions = model.trained_on().len();
    if args.json {
        let out = serde_json::json!({
            "out": args.out,
            "train_questions": questions,
            "training": training,
            "seconds": took.as_secs_f64(),
        });
        println!("{out}");
        return Ok(());
    }
    let how = if training.cv_log_loss.is_empty() {
        "fixed".to_owned()
    } else {
        let losses: Vec<String> = training.cv_log_loss.iter().map(|(l2, loss)| format!("{l2}: {loss:.4}")).collect();
        format!("chosen by 3-fold cross-validated log loss [{}]", losses.join(", "))
    };
    println!(
        "verifier trained on {} answers of {questions} questions ({:.1}% correct), l2 {} {how}",
        training.examples,
        100.0 * training.positive_share,
        training.l2
    );
    println!(
        "written to {} (it records its {questions} training question ids; `eval cascade --verifier` leaves them out)",
        args.out.display()
    );
    println!("took {:.1} s", took.as_secs_f64());
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Command {
    Eval,
    TrainVerifier,
}

/// The data the flags name (see [`CascadeDataArgs`]).
fn eval_data(args: &CascadeDataArgs, command: Command) -> anyhow::Result<EvalData> {
    const WHICH: &str = "give --set gsm8k|mmlu (RouteLLM, with --routellm DIR), --jsonl FILE (a seeded split) or \
                         --train FILE --test FILE";
    if let Some(set) = args.set {
        let dir = args.routellm.clone().unwrap_or_else(|| default_data_dir(Path::new(".")).join("routellm"));
        if !dir.is_dir() {
            return Err(CascadeError::Data {
                reason: format!(
                    "RouteLLM data not found at {} (give --routellm DIR or set SWITCHYARD_DATA)",
                    dir.display()
                ),
            }
            .into());
        }
        let set = match set {
            SetArg::Gsm8k => RouteLlmSet::Gsm8k,
            SetArg::Mmlu => RouteLlmSet::Mmlu,
        };
        return Ok(EvalData::RouteLlm { dir, set, costs: None });
    }
    match (&args.jsonl, &args.train, &args.test) {
        (Some(file), None, None) => Ok(EvalData::Jsonl { test: file.clone(), train: None }),
        (None, Some(train), Some(test)) => Ok(EvalData::Jsonl { test: test.clone(), train: Some(train.clone()) }),
        // Training alone needs no test file: the train file is read as both sides and only its train side used.
        (None, Some(train), None) if command == Command::TrainVerifier => {
            Ok(EvalData::Jsonl { test: train.clone(), train: Some(train.clone()) })
        }
        (None, Some(_), None) => Err(usage("--train", format!("needs --test FILE to evaluate on; or {WHICH}"))),
        _ => Err(usage("--set", format!("no data: {WHICH}"))),
    }
}

fn split(args: &CascadeDataArgs) -> anyhow::Result<SplitOptions> {
    if !(args.test_fraction > 0.0 && args.test_fraction < 1.0) {
        return Err(usage("--test-fraction", format!("{} is not in (0, 1)", args.test_fraction)));
    }
    Ok(SplitOptions { test_fraction: args.test_fraction, seed: args.seed })
}

/// The extractor asked for, or the data's default (none for RouteLLM MMLU, which records no answer text).
fn extractor(args: &CascadeDataArgs) -> Option<Extractor> {
    match (args.extractor, args.set) {
        (Some(ExtractorArg::LastNumber), _) => Some(Extractor::LastNumber),
        (Some(ExtractorArg::Choice), _) => Some(Extractor::Choice { letters: "ABCD".into() }),
        (Some(ExtractorArg::Normalized), _) => Some(Extractor::Normalized),
        (Some(ExtractorArg::None), _) | (None, Some(SetArg::Mmlu)) => None,
        (None, _) => Some(Extractor::LastNumber),
    }
}

fn verifier_options(args: &CascadeDataArgs, extractor: Option<Extractor>) -> anyhow::Result<VerifierOptions> {
    let mut options = VerifierOptions { extractor, ..VerifierOptions::default() };
    if let Some(l2) = args.l2 {
        if !(l2.is_finite() && l2 >= 0.0) {
            return Err(usage("--l2", format!("{l2} is not a finite number >= 0")));
        }
        options.l2_grid = vec![l2];
    }
    Ok(options)
}
