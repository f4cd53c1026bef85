use std::path::PathBuf;

use super::*;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switchyard-cascade-eval-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).ok();
    dir
}

/// A synthetic cascade log: on "easy" questions the weak model's three samples agree and are right; on "hard"
/// ones they disagree and the first is wrong. The strong model is always right. Costs vary when `vary`.
fn synthetic_jsonl(n: usize, vary: bool) -> String {
    let mut out = String::new();
    for i in 0..n {
        let hard = i % 3 == 0;
        let answer = i * 7;
        let weak: Vec<String> = if hard {
            vec![
                format!(r#"{{"text":"It is {}","correct":false,"logprob":-4.0}}"#, answer + 1),
                format!(r#"{{"text":"It is {}","correct":false}}"#, answer + 2),
                format!(r#"{{"text":"It is {answer}","correct":true}}"#),
            ]
        } else {
            vec![format!("{{\"text\":\"#### {answer}\",\"correct\":true,\"logprob\":-0.1}}"); 3]
        };
        let weak_cost = if vary { 0.001 * (1 + i % 4) as f64 } else { 0.001 };
        // The strong model costs more on exactly the questions that escalate: the formula's mean cost is then off.
        let strong_cost = if vary && hard { 0.02 } else { 0.01 };
        out.push_str(&format!(
            r#"{{"id":"q{i}","prompt":"What is {i} times 7?","stages":[{{"model":"small","cost_usd":{weak_cost},"samples":[{}]}},{{"model":"large","cost_usd":{strong_cost},"samples":[{{"text":"{answer}","correct":true}}]}}]}}"#,
            weak.join(",")
        ));
        out.push('\n');
    }
    out
}

fn jsonl_options(path: PathBuf, estimator: EvalEstimator) -> EvalCascadeOptions {
    EvalCascadeOptions::new(EvalData::Jsonl { test: path, train: None }, estimator)
}

#[test]
fn self_consistency_replay_recovers_the_gap_and_costs_match_the_formula() {
    let dir = temp_dir("sc");
    let path = dir.join("log.jsonl");
    std::fs::write(&path, synthetic_jsonl(90, false)).unwrap();
    let mut opts = jsonl_options(path, EvalEstimator::SelfConsistency { extractor: Extractor::LastNumber });
    opts.svg = Some(dir.join("plot.svg"));
    let report = eval_cascade(&opts).unwrap();
    assert_eq!(report.train_queries + report.test_queries, 90);
    let m = &report.main;
    // Hard questions (a third) have a majority share of 1/3, easy ones 1: escalating the hard ones recovers the
    // whole gap at a strong share of one third.
    assert!((m.weak_quality - 2.0 / 3.0).abs() < 0.15, "{}", m.weak_quality);
    assert_eq!(m.strong_quality, 1.0);
    // Escalating exactly the hard share h recovers PGR 1 at strong share h: APGR = h / 2 + (1 - h).
    let hard = 1.0 - m.weak_quality;
    assert!((m.apgr - (1.0 - hard / 2.0)).abs() < 1e-9, "apgr {} for hard share {hard}", m.apgr);
    assert!(m.cpt80.unwrap() < 0.5);
    assert!(m.max_cost_gap() < 1e-9, "constant costs: measured equals the formula");
    // The threshold-0 run answers everything at the first stage; shares are sorted.
    assert_eq!(m.rows[0].strong_share, 0.0);
    assert!(m.rows.windows(2).all(|w| w[0].strong_share <= w[1].strong_share));
    let random = report.baselines.iter().find(|b| b.label == "random").unwrap();
    assert!(random.apgr < m.apgr);
    let text = report.to_string();
    assert!(text.contains("APGR") && text.contains("self-consistency") && text.contains("cost formula"), "{text}");
    let svg = std::fs::read_to_string(dir.join("plot.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("self-consistency"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn varying_costs_are_noted_and_logprobs_replay() {
    let dir = temp_dir("lp");
    let path = dir.join("log.jsonl");
    std::fs::write(&path, synthetic_jsonl(60, true)).unwrap();
    let report =
        eval_cascade(&jsonl_options(path, EvalEstimator::Logprobs { aggregate: LogprobAggregate::Mean })).unwrap();
    assert!(!report.constant_costs);
    assert!(report.notes.iter().any(|n| n.contains("vary")));
    // The hard questions' first sample has a low logprob; the easy ones a high one.
    let hard = 1.0 - report.main.weak_quality;
    assert!((report.main.apgr - (1.0 - hard / 2.0)).abs() < 1e-9, "{}", report.main.apgr);
    assert!(report.main.max_cost_gap() > 0.1, "{}", report.main.max_cost_gap());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn separate_train_file_and_verifier_training_keep_test_questions_out() {
    let dir = temp_dir("files");
    let all = synthetic_jsonl(120, false);
    let lines: Vec<&str> = all.lines().collect();
    // Train on q0..q79, test on q60..q119: q60..q79 overlap and must be dropped from the test side.
    std::fs::write(dir.join("train.jsonl"), lines[..80].join("\n")).unwrap();
    std::fs::write(dir.join("test.jsonl"), lines[60..].join("\n")).unwrap();
    let data = EvalData::Jsonl { test: dir.join("test.jsonl"), train: Some(dir.join("train.jsonl")) };
    let mut opts = EvalCascadeOptions::new(data.clone(), EvalEstimator::Verifier { model: None });
    opts.verifier.features.hash_bits = 12;
    let report = eval_cascade(&opts).unwrap();
    assert_eq!((report.train_queries, report.test_queries), (80, 40));
    assert!(report.verifier_training.is_some() && report.scoring_us.is_some());

    // A saved verifier remembers its training ids; evaluating with it on the whole file drops them.
    let out = dir.join("verifier.json");
    let training = train_verifier_cmd(&TrainVerifierCmdOptions {
        data,
        split: SplitOptions::default(),
        verifier: opts.verifier.clone(),
        out: out.clone(),
    })
    .unwrap();
    assert_eq!(training.examples, 80 * 3);
    std::fs::write(dir.join("all.jsonl"), &all).unwrap();
    let whole = EvalData::Jsonl { test: dir.join("all.jsonl"), train: None };
    let report = eval_cascade(&EvalCascadeOptions::new(whole, EvalEstimator::Verifier { model: Some(out) })).unwrap();
    assert!(report.notes.iter().any(|n| n.contains("trained on them")), "{:?}", report.notes);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn baselines_score_as_documented() {
    assert!(PromptLength.score("short", "").unwrap() > PromptLength.score(&"long ".repeat(200), "").unwrap());
    let r = SeededRandom(3);
    let a = r.score("a", "").unwrap();
    assert_eq!(a, r.score("a", "x").unwrap());
    assert!((0.0..1.0).contains(&a));
    let mean = (0..2000).map(|i| r.score(&i.to_string(), "").unwrap()).sum::<f64>() / 2000.0;
    assert!((mean - 0.5).abs() < 0.03, "{mean}");
}

#[test]
fn bad_data_is_a_typed_error() {
    let dir = temp_dir("bad");
    let one_stage =
        r#"{"id":"a","prompt":"p","stages":[{"model":"m","cost_usd":0.1,"samples":[{"text":"t","correct":true}]}]}"#;
    std::fs::write(dir.join("one.jsonl"), format!("{one_stage}\n{}", one_stage.replace("\"a\"", "\"b\""))).unwrap();
    let err = eval_cascade(&jsonl_options(dir.join("one.jsonl"), EvalEstimator::PromptLength)).err();
    assert!(matches!(err, Some(CascadeError::Data { .. })), "{err:?}");
    let err = eval_cascade(&jsonl_options(dir.join("absent.jsonl"), EvalEstimator::PromptLength)).err();
    assert!(matches!(err, Some(CascadeError::Learn(_))), "{err:?}");
    std::fs::remove_dir_all(&dir).ok();
}
