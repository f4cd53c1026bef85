//! `switchyard eval cascade` and `switchyard cascade train-verifier` as a user runs them: on a small synthetic
//! cascade log written by the test, on malformed input, on a command line that cannot work, and on the RouteLLM
//! GSM8K data when the shared data folder is present (skipped with a note otherwise).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// A fresh folder for one test.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switchyard-cli-cascade-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).env("NO_COLOR", "1").output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A synthetic cascade log of `n` queries: on "easy" prompts the weak model's three samples agree and are right;
/// on "hard" ones (every third) they disagree and the first is wrong. The strong model is always right.
fn synthetic_log(n: usize) -> String {
    let mut out = String::new();
    for i in 0..n {
        let hard = i % 3 == 0;
        let answer = i * 7;
        let (kind, weak) = if hard {
            (
                "hard",
                format!(
                    r#"{{"text":"maybe {}","correct":false,"logprob":-6.5}},{{"text":"maybe {}","correct":false}},{{"text":"so {answer}","correct":true}}"#,
                    answer + 1,
                    answer + 2
                ),
            )
        } else {
            ("easy", vec![format!(r#"{{"text":"so {answer}","correct":true,"logprob":-0.2}}"#); 3].join(","))
        };
        out.push_str(&format!(
            r#"{{"id":"q{i}","prompt":"A {kind} one: what is {i} times 7?","reference":"{answer}","stages":[{{"model":"small","cost_usd":0.0001,"samples":[{weak}]}},{{"model":"large","cost_usd":0.002,"samples":[{{"text":"The answer is {answer}","correct":true}}]}}]}}"#
        ));
        out.push('\n');
    }
    out
}

#[test]
fn eval_cascade_on_a_jsonl_log_prints_the_table_and_writes_the_svg() {
    let dir = temp_dir("jsonl");
    let log = dir.join("log.jsonl");
    std::fs::write(&log, synthetic_log(60)).unwrap();
    let svg = dir.join("plot.svg");
    let out = run(&[
        "eval",
        "cascade",
        "--jsonl",
        log.to_str().unwrap(),
        "--estimator",
        "self-consistency",
        "--svg",
        svg.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    for expected in ["estimator self-consistency", "threshold", "strong%", "cost formula", "APGR", "prompt length"] {
        assert!(stdout.contains(expected), "no {expected:?} in:\n{stdout}");
    }
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.starts_with("<svg"), "{}", &plot[..plot.len().min(80)]);

    // The same run as one JSON object: escalating the hard third recovers the whole gap.
    let out = run(&["eval", "cascade", "--jsonl", log.to_str().unwrap(), "--estimator", "self-consistency", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let apgr = report["main"]["apgr"].as_f64().unwrap();
    assert!(apgr > 0.75, "{apgr}");
    assert_eq!(report["test_queries"].as_u64().unwrap() + report["train_queries"].as_u64().unwrap(), 60);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_trained_verifier_is_saved_and_evaluated_on_questions_it_never_saw() {
    let dir = temp_dir("verifier");
    let all = synthetic_log(90);
    let lines: Vec<&str> = all.lines().collect();
    let (train, test) = (dir.join("train.jsonl"), dir.join("test.jsonl"));
    std::fs::write(&train, lines[..60].join("\n")).unwrap();
    std::fs::write(&test, lines[60..].join("\n")).unwrap();
    let model = dir.join("verifier.json");
    let out = run(&[
        "cascade",
        "train-verifier",
        "--train",
        train.to_str().unwrap(),
        "--out",
        model.to_str().unwrap(),
        "--l2",
        "0.01",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("verifier trained on 180 answers of 60 questions"), "{stdout}");

    let args = ["eval", "cascade", "--train", train.to_str().unwrap(), "--test", test.to_str().unwrap()];
    let out = run(&[&args[..], &["--verifier", model.to_str().unwrap(), "--json"]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["estimator"], "verifier");
    assert_eq!(report["test_queries"], 30);
    // The prompts say which questions are hard: the verifier learns it on the train file.
    let apgr = report["main"]["apgr"].as_f64().unwrap();
    assert!(apgr > 0.7, "{apgr}");

    // Evaluated on the whole log, the verifier's 60 training questions are left out and the report says so.
    let whole = dir.join("all.jsonl");
    std::fs::write(&whole, &all).unwrap();
    let out = run(&[
        "eval",
        "cascade",
        "--jsonl",
        whole.to_str().unwrap(),
        "--test-fraction",
        "0.9",
        "--verifier",
        model.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("the loaded verifier was trained on them"), "{stdout}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_malformed_line_fails_with_its_file_and_line_number() {
    let dir = temp_dir("malformed");
    let mut log = synthetic_log(12);
    let lines: Vec<&str> = log.lines().collect();
    let broken = format!("{}\n{}\n{}\n", lines[0], lines[1], &lines[2][..40]);
    log = broken + &lines[3..].join("\n");
    let path = dir.join("broken.jsonl");
    std::fs::write(&path, log).unwrap();
    let out = run(&["eval", "cascade", "--jsonl", path.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{stderr}");
    assert!(stderr.contains("broken.jsonl line 3"), "{stderr}");
    assert_eq!(stderr.matches("EOF while parsing").count(), 1, "the parser's reason once: {stderr}");

    // A record that parses but breaks the format (a positive logprob) names its line too.
    let bad = synthetic_log(4).replacen("\"logprob\":-0.2", "\"logprob\":0.5", 1);
    std::fs::write(&path, bad).unwrap();
    let out = run(&["cascade", "train-verifier", "--jsonl", path.to_str().unwrap(), "--out", "/dev/null"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{stderr}");
    assert!(stderr.contains("line 2") && stderr.contains("logprob"), "{stderr}");

    // A missing file is a data error naming the file.
    let absent = dir.join("absent.jsonl");
    let out = run(&["eval", "cascade", "--jsonl", absent.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(65));
    assert!(text(&out.stderr).contains("absent.jsonl"), "{}", text(&out.stderr));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_command_line_that_cannot_work_exits_64_naming_the_option() {
    let dir = temp_dir("usage");
    let log = dir.join("log.jsonl");
    std::fs::write(&log, synthetic_log(12)).unwrap();
    let log = log.to_str().unwrap();
    let check = |args: &[&str], option: &str| {
        let out = run(args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
        assert!(stderr.contains(option), "{args:?}: no {option} in {stderr}");
    };
    check(&["eval", "cascade"], "--set");
    check(&["eval", "cascade", "--jsonl", log, "--test-fraction", "1.5"], "--test-fraction");
    check(&["eval", "cascade", "--jsonl", log, "--estimator", "random", "--verifier", "v.json"], "--verifier");
    check(&["eval", "cascade", "--train", log], "--train");
    check(
        &["eval", "cascade", "--jsonl", log, "--estimator", "self-consistency", "--extractor", "none"],
        "--extractor",
    );
    check(&["cascade", "train-verifier", "--jsonl", log, "--out", "v.json", "--l2=-1"], "--l2");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn gsm8k_verifier_trained_by_the_command_beats_random() {
    let Some(data) = switchyard_testkit::routellm_dir() else { return };
    let dir = temp_dir("gsm8k");
    let model = dir.join("verifier.json");
    let data = data.to_str().unwrap();
    // One l2 (the value cross-validation picks on GSM8K) keeps training to one fit.
    let common = ["--set", "gsm8k", "--routellm", data, "--test-fraction", "0.5", "--seed", "7"];
    let out =
        run(&[&["cascade", "train-verifier"][..], &common, &["--out", model.to_str().unwrap(), "--l2", "0.001"]]
            .concat());
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    println!("{}", text(&out.stdout));

    let out =
        run(&[&["eval", "cascade"][..], &common, &["--verifier", model.to_str().unwrap(), "--thresholds", "200"]]
            .concat());
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    println!("{stdout}");
    // The verifier's line of the summary table: `verifier  <APGR> <CPT50> <CPT80> <gap>%`.
    let apgr: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("verifier ")?.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no verifier APGR in:\n{stdout}"));
    assert!(apgr > 0.5, "verifier APGR {apgr}");
    // The split is the one the verifier was trained with: no test question was dropped as seen in training.
    assert!(!stdout.contains("trained on them"), "{stdout}");
    std::fs::remove_dir_all(&dir).ok();
}
