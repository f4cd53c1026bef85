//! The file-level entry points end to end on small generated files: train, calibrate, load and decide, evaluate.

use std::path::PathBuf;

use switchyard_learn::FeatureConfig;
use switchyard_quality::calibrate::CalibrationTargets;
use switchyard_quality::entry::{
    CalibrateRouterOptions, CalibrationSample, DataSource, EvalRouterOptions, EvalRouterReport, RouterKind,
    TrainRouterOptions, calibrate_router, eval_router, train_router,
};
use switchyard_quality::eval::{BinaryEvalOptions, NWayEvalOptions};
use switchyard_quality::learned::LearnedRouter;
use switchyard_quality::train::{BinaryTrainOptions, NWayTrainOptions};
use switchyard_quality::{LiveView, QueryInput, RouterScratch};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const EASY: [&str; 6] = ["add", "sum", "count", "list", "copy", "name"];
const HARD: [&str; 6] = ["prove", "derive", "integrate", "optimise", "bound", "classify"];

/// A generic outcome file: the cheap model answers easy prompts only, the dear one everything.
fn write_data(dir: &std::path::Path, n: usize) -> std::io::Result<PathBuf> {
    let mut lines = String::new();
    for i in 0..n {
        let hard = i % 3 == 0;
        let verb = if hard { HARD[i % 6] } else { EASY[i % 6] };
        let prompt = format!("please {verb} the numbers of list {} then report", i % 11);
        let cheap = if hard { 0 } else { 1 };
        lines.push_str(&format!(
            "{{\"id\":\"q{i}\",\"prompt\":\"{prompt}\",\"outcomes\":{{\"cheap\":{{\"score\":{cheap},\"cost_usd\":0.001}},\
             \"dear\":{{\"score\":1,\"cost_usd\":0.01}}}}}}\n"
        ));
    }
    let path = dir.join("outcomes.jsonl");
    std::fs::write(&path, lines)?;
    Ok(path)
}

fn temp_dir(name: &str) -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("switchyard-quality-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn small_features() -> FeatureConfig {
    FeatureConfig { hash_bits: 12, ..FeatureConfig::default() }
}

#[test]
fn train_calibrate_load_decide() -> TestResult {
    let dir = temp_dir("train")?;
    let data = DataSource::Outcomes { path: write_data(&dir, 300)?, prices: None };
    let out = dir.join("router.json");
    let report = train_router(&TrainRouterOptions {
        data: data.clone(),
        kind: RouterKind::Binary { weak: Some("cheap".into()), strong: Some("dear".into()) },
        test_fraction: Some(0.3),
        seed: 1,
        binary: BinaryTrainOptions { features: small_features(), l2_grid: vec![1e-3], folds: 3, ..Default::default() },
        nway: NWayTrainOptions::default(),
        out: out.clone(),
    })?;
    assert_eq!((report.train_queries, report.held_out), (210, 90));
    assert!(report.to_string().contains("router written to"));

    let calibrated = dir.join("calibrated.json");
    let cal = calibrate_router(&CalibrateRouterOptions {
        router: out,
        sample: CalibrationSample::Data { data, test_side: Some((0.3, 1)) },
        targets: CalibrationTargets { target_share: 0.4, ..CalibrationTargets::default() },
        out: calibrated.clone(),
    })?;
    assert_eq!(cal.sample, 90);
    assert!((cal.realised_share - 0.4).abs() < 0.05, "{cal}");

    let router = LearnedRouter::load(&calibrated)?;
    let mut scratch = RouterScratch::default();
    let hard = "please optimise the numbers of list 3 then report";
    let d = router.decide(&QueryInput::prompt(hard), None, &LiveView::default(), &mut scratch);
    assert_eq!(&*d.model, "dear", "{d:?}");
    let easy = "please copy the numbers of list 4 then report";
    let d = router.decide(&QueryInput::prompt(easy), None, &LiveView::default(), &mut scratch);
    assert_eq!(&*d.model, "cheap", "{d:?}");
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

#[test]
fn eval_binary_and_nway_from_files() -> TestResult {
    let dir = temp_dir("eval")?;
    let path = write_data(&dir, 300)?;
    let plot = dir.join("binary.svg");
    let report = eval_router(&EvalRouterOptions {
        data: DataSource::Outcomes { path: path.clone(), prices: None },
        kind: RouterKind::Binary { weak: Some("cheap".into()), strong: Some("dear".into()) },
        train_data: None,
        binary: BinaryEvalOptions {
            train: BinaryTrainOptions {
                features: small_features(),
                l2_grid: vec![1e-3],
                folds: 3,
                ..Default::default()
            },
            random_seeds: 5,
            plot: Some(plot.clone()),
            ..BinaryEvalOptions::default()
        },
        nway: NWayEvalOptions::default(),
    })?;
    let EvalRouterReport::Binary(b) = &report else { return Err("expected a binary report".into()) };
    let learned = b.rows.iter().find(|r| r.router == "learned").map_or(0.0, |r| r.apgr);
    // Perfect routing of a third of hard queries: PGR 1 from share 1/3 on, APGR 1 - 1/6.
    assert!(learned > 0.8, "{report}");
    assert!(std::fs::read_to_string(&plot)?.contains("<svg"));

    // Costs are in the file, so both models are candidates without a price file.
    let report = eval_router(&EvalRouterOptions {
        data: DataSource::Outcomes { path, prices: None },
        kind: RouterKind::NWay { exclude: vec![] },
        train_data: None,
        binary: BinaryEvalOptions::default(),
        nway: NWayEvalOptions {
            train: NWayTrainOptions { features: small_features(), l2_grid: vec![1e-3], ..Default::default() },
            reference_model: "cheap".into(),
            ..NWayEvalOptions::default()
        },
    })?;
    let EvalRouterReport::NWay(n) = &report else { return Err("expected an N-way report".into()) };
    assert_eq!(n.models.len(), 2);
    // The router reaches the dear model's accuracy (1.0) for less: the cheap model takes the easy two thirds.
    let reached = n.router_cost_at_best_quality.as_ref().map_or(f64::INFINITY, |p| p.cost);
    assert!(reached < 0.6 * n.best_single.cost, "{report}");
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}
