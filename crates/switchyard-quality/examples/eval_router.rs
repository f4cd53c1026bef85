//! Runs `eval router` on the shared data and prints the reports: the figures of issue 8's closing note.
//!
//! `cargo run --release -p switchyard-quality --example eval_router -- [gsm8k|mmlu|mt-bench|zeroeval|all] [OUT_DIR] [SEED]`
//! Data: `$SWITCHYARD_DATA`, else `../shared/data` beside the repository. Plots go to OUT_DIR (default: the
//! system's temporary folder).

use std::path::{Path, PathBuf};
use std::time::Instant;

use switchyard_learn::dataset::default_data_dir;
use switchyard_learn::dataset::routellm::RouteLlmSet;
use switchyard_quality::entry::{DataSource, EvalRouterOptions, RouterKind, eval_router};
use switchyard_quality::eval::{BinaryEvalOptions, NWayEvalOptions};
use switchyard_quality::learned::BinaryTarget;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let which = args.first().map_or("all", String::as_str).to_string();
    let out_dir = args.get(1).map_or_else(std::env::temp_dir, PathBuf::from);
    let seed: u64 = args.get(2).map_or(Ok(1), |s| s.parse())?;
    std::fs::create_dir_all(&out_dir)?;
    let data = default_data_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."));
    let routellm = data.join("routellm");
    let binary = |set: RouteLlmSet, train_data: Option<DataSource>| EvalRouterOptions {
        data: DataSource::RouteLlm { dir: routellm.clone(), set },
        kind: RouterKind::Binary { weak: None, strong: None },
        train_data,
        binary: BinaryEvalOptions {
            seed,
            plot: Some(out_dir.join(format!("router-{}.svg", set.name()))),
            ..BinaryEvalOptions::default()
        },
        nway: NWayEvalOptions::default(),
    };
    let mut runs = Vec::new();
    for set in [RouteLlmSet::Gsm8k, RouteLlmSet::Mmlu] {
        if which == "all" || which == set.name() {
            let mut o = binary(set, None);
            if set == RouteLlmSet::Gsm8k {
                // GSM8K's 7,473 training questions (no outcomes, disjoint from the 1,319 test questions with
                // outcomes) are the calibration sample: the test side's halves would be 196 prompts each.
                o.binary.calibration_prompts = Some(routellm.join("gsm8k/train.jsonl"));
            }
            runs.push(o);
        }
    }
    if which == "all" || which == "mt-bench" {
        // 72 questions are too few to train on; the router is trained on all of MMLU instead and tested on all of
        // MT-Bench. The grid is narrowed to the target MMLU's cross-validation chose and its two best L2
        // strengths (the choice is made on MMLU either way), which keeps the run short.
        let mut o =
            binary(RouteLlmSet::MtBench, Some(DataSource::RouteLlm { dir: routellm.clone(), set: RouteLlmSet::Mmlu }));
        o.binary.train.targets = vec![BinaryTarget::Gain];
        o.binary.train.l2_grid = vec![1e-3, 3e-3];
        o.binary.train.folds = 3;
        runs.push(o);
    }
    if which == "all" || which == "zeroeval" {
        runs.push(EvalRouterOptions {
            data: DataSource::zeroeval(&data.join("zeroeval")),
            kind: RouterKind::NWay { exclude: vec![] },
            train_data: None,
            binary: BinaryEvalOptions::default(),
            nway: NWayEvalOptions {
                seed,
                plot: Some(out_dir.join("router-zeroeval.svg")),
                ..NWayEvalOptions::default()
            },
        });
    }
    for run in runs {
        let start = Instant::now();
        let report = eval_router(&run)?;
        println!("{report}");
        println!("(evaluated in {:.1} s)\n", start.elapsed().as_secs_f64());
    }
    Ok(())
}
