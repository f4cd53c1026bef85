//! Runs the cascade evaluation on the RouteLLM data, the way `switchyard eval cascade` will.
//!
//! `cargo run --release -p switchyard-cascade --example eval_cascade -- <gsm8k|mmlu> [DATA_DIR] [SVG_OUT]`
//! DATA_DIR defaults to `../shared/data/routellm` (relative to the workspace root).

use std::path::PathBuf;

use switchyard_cascade::eval::{EvalCascadeOptions, EvalData, EvalEstimator};
use switchyard_learn::dataset::routellm::RouteLlmSet;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let set = match args.first().map(String::as_str) {
        Some("mmlu") => RouteLlmSet::Mmlu,
        Some("gsm8k") | None => RouteLlmSet::Gsm8k,
        Some(other) => anyhow::bail!("unknown set {other}: use gsm8k or mmlu"),
    };
    let dir = args.get(1).map_or_else(|| PathBuf::from("../shared/data/routellm"), PathBuf::from);
    let mut opts =
        EvalCascadeOptions::new(EvalData::RouteLlm { dir, set, costs: None }, EvalEstimator::Verifier { model: None });
    opts.svg = args.get(2).map(PathBuf::from);
    if set == RouteLlmSet::Mmlu {
        // MMLU records no answer text: the verifier sees the question only, so no answer extractor.
        opts.verifier.extractor = None;
    }
    let report = switchyard_cascade::eval_cascade(&opts)?;
    println!("{report}");
    Ok(())
}
