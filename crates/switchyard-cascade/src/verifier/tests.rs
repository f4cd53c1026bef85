use super::*;

fn example(i: usize, kind: usize) -> VerifierExample {
    let (a, b) = (i % 17 + 2, i % 13 + 3);
    let query = format!("Tom has {a} boxes with {b} pens each. How many pens does he have?");
    let (answer, correct) = match kind {
        0 => (format!("Each box has {b} pens, so {a} * {b} = {}.\n#### {}", a * b, a * b), true),
        1 => (format!("Each box has {b} pens, so {a} * {b} = {}.\n#### {}", a * b + 1, a * b + 1), false),
        _ => (format!("I think he has about {} pens, but I am not sure", a + b), false),
    };
    VerifierExample { id: format!("q{i}"), query, answer, correct }
}

fn data(range: std::ops::Range<usize>) -> Vec<VerifierExample> {
    range.flat_map(|i| [example(i, i % 2), example(i, 2 + i % 2)]).collect()
}

fn quick() -> VerifierOptions {
    VerifierOptions {
        features: FeatureConfig { hash_bits: 12, ..FeatureConfig::default() },
        l2_grid: vec![1e-3, 1e-1],
        ..VerifierOptions::default()
    }
}

#[test]
fn answer_checks_see_extraction_markers_and_arithmetic() {
    let e = Extractor::LastNumber;
    let right = answer_checks(Some(&e), "3 boxes of 4?", "3 * 4 = 12\n#### 12");
    let wrong = answer_checks(Some(&e), "3 boxes of 4?", "3 * 4 = 13\n#### 13");
    let vague = answer_checks(Some(&e), "3 boxes of 4?", "I think, not sure");
    let at = |name: &str| ANSWER_FEATURES.iter().position(|f| *f == name).unwrap();
    assert_eq!((right[at("extracted")], right[at("final_marker")], right[at("any_equation_wrong")]), (1.0, 1.0, 0.0));
    assert_eq!(wrong[at("any_equation_wrong")], 1.0);
    assert_eq!((vague[at("extracted")], vague[at("final_marker")]), (0.0, 0.0));
    assert!(vague[at("ln_hedges")] > 1.0);
    assert_eq!(answer_checks(Some(&e), "Is 3 odd?", "3")[at("answer_in_query")], 1.0);
    let empty = answer_checks(None, "", "");
    assert_eq!(empty[at("empty_answer")], 1.0);
    assert!(empty.iter().all(|v| v.is_finite()));
    let repeated = answer_checks(None, "q", "same line\nsame line\nsame line\nother");
    assert!((repeated[at("duplicate_line_share")] - 0.5).abs() < 1e-6);
}

#[test]
fn learns_to_separate_right_from_wrong_answers_on_held_out_questions() {
    let (model, training) = train_verifier(&data(0..120), &quick()).unwrap();
    assert_eq!(training.examples, 240);
    assert_eq!(training.cv_log_loss.len(), 2);
    assert!(model.trained_on().contains("q0") && !model.trained_on().contains("q150"));
    let test = data(150..200);
    let (mut right, mut wrong) = (Vec::new(), Vec::new());
    for e in &test {
        let p = model.score(&e.query, &e.answer).unwrap();
        assert!((0.0..=1.0).contains(&p));
        if e.correct { right.push(p) } else { wrong.push(p) }
    }
    // Pairwise ranking accuracy (AUC) on questions the model never saw.
    let pairs = right.len() * wrong.len();
    let ordered = right.iter().flat_map(|r| wrong.iter().map(move |w| (r > w) as usize)).sum::<usize>();
    let auc = ordered as f64 / pairs as f64;
    assert!(auc > 0.95, "auc {auc}");
}

#[test]
fn saves_and_loads_with_a_version() {
    let (model, _) = train_verifier(&data(0..40), &quick()).unwrap();
    let dir = std::env::temp_dir().join(format!("switchyard-cascade-verifier-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("verifier.json");
    model.save(&path).unwrap();
    let loaded = VerifierModel::load(&path).unwrap();
    let e = example(99, 1);
    assert_eq!(loaded.probability(&e.query, &e.answer), model.probability(&e.query, &e.answer));
    assert_eq!(loaded.trained_on(), model.trained_on());

    let text = model.to_json().unwrap();
    let bumped = text.replacen(r#""format_version":1"#, r#""format_version":99"#, 1);
    assert!(matches!(VerifierModel::from_json(&bumped), Err(CascadeError::InvalidModel { .. })));
    let relabelled = text.replacen("\"extracted\"", "\"something_else\"", 1);
    assert!(matches!(VerifierModel::from_json(&relabelled), Err(CascadeError::InvalidModel { .. })));
    assert!(matches!(VerifierModel::from_json("{"), Err(CascadeError::InvalidModel { .. })));
    assert!(matches!(VerifierModel::load(&dir.join("absent.json")), Err(CascadeError::Io { .. })));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn refuses_unlearnable_data() {
    assert!(matches!(train_verifier(&[], &quick()), Err(CascadeError::Data { .. })));
    let all_right: Vec<_> = (0..10).map(|i| example(i, 0)).collect();
    assert!(matches!(train_verifier(&all_right, &quick()), Err(CascadeError::Data { .. })));
    let bad = VerifierOptions { l2_grid: vec![f64::NAN], ..quick() };
    assert!(matches!(train_verifier(&data(0..10), &bad), Err(CascadeError::InvalidConfig(_))));
    let no_folds = VerifierOptions { cv_folds: 1, ..quick() };
    assert!(matches!(train_verifier(&data(0..10), &no_folds), Err(CascadeError::InvalidConfig(_))));
}
