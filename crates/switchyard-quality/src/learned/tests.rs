//! Tests of the learned routers on small generated data.

use switchyard_learn::dataset::{ModelInfo, QueryRecord};
use switchyard_learn::{FeatureConfig, OutcomeTable};

use super::*;
use crate::drift::DriftStatus;
use crate::train::{BinaryTrainOptions, NWayTrainOptions, train_binary, train_nway};

const EASY: [&str; 8] = ["add", "sum", "plus", "count", "list", "name", "copy", "echo"];
const HARD: [&str; 8] = ["prove", "derive", "optimize", "integral", "theorem", "lemma", "asymptotic", "proof"];

/// Prompts about easy or hard topics; the weak model answers the easy ones, the strong model all.
fn table(n: usize) -> OutcomeTable {
    let mut queries = Vec::new();
    for i in 0..n {
        let hard = i % 2 == 0;
        queries.push(QueryRecord {
            id: format!("q{i}"),
            prompt: prompt(i),
            group: None,
            quality: vec![if hard { 0.0 } else { 1.0 }, 1.0, if hard { 0.0 } else { 1.0 }],
            cost_usd: vec![Some(0.001), Some(0.01), Some(0.0005)],
        });
    }
    let model = |name: &str| ModelInfo { name: name.into(), price: None };
    OutcomeTable { name: "toy".into(), models: vec![model("weak"), model("strong"), model("tiny")], queries }
}

/// Prompt `i` of the toy distribution: even ones are hard.
fn prompt(i: usize) -> String {
    let words = if i.is_multiple_of(2) { HARD } else { EASY };
    format!("please {} the {} of item {}", words[i % 8], words[(i / 8) % 8], i % 13)
}

fn features() -> FeatureConfig {
    FeatureConfig { hash_bits: 12, ..FeatureConfig::default() }
}

fn binary() -> BinaryRouter {
    binary_on(240)
}

fn binary_on(n: usize) -> BinaryRouter {
    let options =
        BinaryTrainOptions { features: features(), l2_grid: vec![1e-3], folds: 3, ..BinaryTrainOptions::default() };
    let (file, report) = train_binary(&table(n), 0, 1, &options).expect("trains");
    // Perfect routing reaches PGR 1 at share 0.5 here: APGR 0.25 + 0.5.
    assert!(report.tried[report.chosen].mean_apgr > 0.74, "{report}");
    BinaryRouter::new(file).expect("valid file")
}

#[test]
fn binary_router_sends_hard_prompts_strong_and_explains_why() {
    let r = binary();
    let mut scratch = RouterScratch::default();
    let live = LiveView::default();
    let d = r.decide(&QueryInput::prompt(&prompt(6)), None, &live, &mut scratch);
    assert_eq!((&*d.model, &d.reason), ("strong", &Reason::ScoreAtOrAboveThreshold));
    assert!(d.score >= d.threshold);
    assert_eq!(&*d.router, "learned-binary");
    let d = r.decide(&QueryInput::prompt(&prompt(7)), None, &live, &mut scratch);
    assert_eq!((&*d.model, &d.reason), ("weak", &Reason::ScoreBelowThreshold));
    // The strong model's providers are all tripped: the weak one answers, and the trace says so.
    let down = LiveView { available: &[true, false], latency_ms: &[] };
    let d = r.decide(&QueryInput::prompt(&prompt(6)), None, &down, &mut scratch);
    assert_eq!(&*d.model, "weak");
    assert!(matches!(d.reason, Reason::Fallback { ref preferred, .. } if &**preferred == "strong"));
}

#[test]
fn objectives_move_the_threshold() {
    let r = binary();
    let t = r.file().thresholds;
    assert!(t.cost >= t.balanced && t.balanced >= t.quality, "{t:?}");
    let mut scratch = RouterScratch::default();
    let easy = prompt(7);
    let q = QueryInput::prompt(&easy);
    let cost = r.decide(&q, Some(Objective::Cost), &LiveView::default(), &mut scratch);
    assert_eq!(cost.threshold, Some(t.cost));
    let fast_strong = LiveView { available: &[], latency_ms: &[Some(900.0), Some(300.0)] };
    let latency = r.decide(&q, Some(Objective::Latency), &fast_strong, &mut scratch);
    assert_eq!(latency.threshold, Some(t.quality));
}

#[test]
fn out_of_distribution_queries_go_strong() {
    let r = binary();
    let mut scratch = RouterScratch::default();
    let d = r.decide(
        &QueryInput::prompt("Zxqv wybrzeże gżegżółka fjörður ptarmigan"),
        None,
        &LiveView::default(),
        &mut scratch,
    );
    assert_eq!(&*d.model, "strong");
    assert!(matches!(d.reason, Reason::OutOfDistribution { unseen_share, limit } if unseen_share > limit));
}

#[test]
fn drift_monitor_reports_a_shifted_distribution() {
    // 600 training queries: the drift baseline is the 200 held-out queries of the first fold.
    let r = LearnedRouter::Binary(binary_on(600));
    let mut monitor = r.drift_monitor();
    let mut scratch = RouterScratch::default();
    let live = LiveView::default();
    let familiar = table(1000);
    for q in familiar.queries.iter().skip(600) {
        r.decide(&QueryInput::prompt(&q.prompt), None, &live, &mut scratch);
        scratch.observe_into(&mut monitor);
    }
    assert_eq!(monitor.report().status, DriftStatus::Stable, "{}", monitor.report());
    monitor.reset();
    for i in 0..160 {
        let shifted = format!("Translate to French: the weather in city number {i} is sunny and warm today");
        r.decide(&QueryInput::prompt(&shifted), None, &live, &mut scratch);
        scratch.observe_into(&mut monitor);
    }
    let report = monitor.report();
    assert_eq!(report.status, DriftStatus::Significant, "{report}");
    assert!(report.ood_share > 0.5, "{report}");
}

#[test]
fn router_file_round_trips_and_checks_its_version() {
    let r = binary();
    let file = RouterFile::Binary(r.file().clone());
    let text = file.to_json().expect("serialises");
    // Compared without Debug output: a model prints megabytes.
    assert!(RouterFile::from_json(&text).expect("parses") == file);
    let wrong = text.replacen("\"format_version\":1", "\"format_version\":7", 1);
    assert!(matches!(RouterFile::from_json(&wrong), Err(QualityError::FormatVersion { found: 7, .. })));
    assert!(RouterFile::from_json("{\"format_version\":1}").is_err());
}

fn nway() -> NWayRouter {
    let options = NWayTrainOptions {
        features: features(),
        l2_grid: vec![1e-3],
        policy: NWayPolicy::CheapestGoodEnough { target: 0.8 },
        ..NWayTrainOptions::default()
    };
    let mut t = table(240);
    for m in &mut t.models {
        m.price = Some(switchyard_learn::Price { input_usd_per_million: 1.0, output_usd_per_million: 1.0 });
    }
    let (file, _) = train_nway(&t, &options).expect("trains");
    NWayRouter::new(file).expect("valid")
}

#[test]
fn nway_picks_the_cheapest_good_enough_and_honours_objectives() {
    let r = nway();
    assert_eq!(r.file().safe_model, "strong");
    let mut s = RouterScratch::default();
    let live = LiveView::default();
    let (easy_text, hard_text) = (prompt(7), prompt(6));
    let easy = QueryInput::prompt(&easy_text);
    let hard = QueryInput::prompt(&hard_text);
    let d = r.decide(&easy, None, &live, &mut s);
    assert_eq!(&*d.model, "tiny", "{d:?}");
    assert!(matches!(d.reason, Reason::CheapestGoodEnough { .. }));
    assert_eq!(&*r.decide(&hard, None, &live, &mut s).model, "strong");
    // Objective quality: the best predicted (the strong model is right everywhere).
    assert_eq!(&*r.decide(&easy, Some(Objective::Quality), &live, &mut s).model, "strong");
    // Objective latency: the fastest of the good-enough candidates.
    let lat = LiveView { available: &[], latency_ms: &[Some(100.0), Some(900.0), Some(400.0)] };
    let d = r.decide(&easy, Some(Objective::Latency), &lat, &mut s);
    assert_eq!(&*d.model, "weak");
    assert!(matches!(d.reason, Reason::FastestGoodEnough { latency_ms, .. } if latency_ms == 100.0));
    // A huge lambda makes cost dominate; a zero lambda makes quality dominate.
    let cheap = NWayPolicy::Utility { lambda: 1e6, target: 0.8 };
    assert_eq!(&*r.decide_with_policy(&hard, None, &cheap, &live, &mut s).model, "tiny");
    let rich = NWayPolicy::Utility { lambda: 0.0, target: 0.8 };
    assert_eq!(&*r.decide_with_policy(&hard, None, &rich, &live, &mut s).model, "strong");
    // Unavailable candidates are skipped.
    let no_tiny = LiveView { available: &[true, true, false], latency_ms: &[] };
    assert_eq!(&*r.decide(&easy, None, &no_tiny, &mut s).model, "weak");
    // Out of distribution: the safe model.
    let odd = QueryInput::prompt("Zxqv wybrzeże gżegżółka fjörður ptarmigan");
    let d = r.decide(&odd, None, &live, &mut s);
    assert_eq!(&*d.model, "strong");
    assert!(matches!(d.reason, Reason::OutOfDistribution { .. }));
}

#[test]
fn a_small_data_set_still_gets_a_drift_baseline_from_several_folds() {
    // 60 queries in 5 folds: 12 held out per fold, fewer than a baseline needs.
    let options =
        BinaryTrainOptions { features: features(), l2_grid: vec![1e-3], folds: 5, ..BinaryTrainOptions::default() };
    let (file, _) = train_binary(&table(60), 0, 1, &options).expect("trains on 60 queries");
    assert!(file.drift_baseline.queries >= crate::drift::MIN_BASELINE, "{}", file.drift_baseline.queries);
}
