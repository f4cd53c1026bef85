//! `switchyard router train|calibrate` and `switchyard eval router` as a user runs them: usage errors exit 64,
//! and on the RouteLLM GSM8K data (skipped with a note when the shared data folder is absent) the learned router
//! is trained on one side of a split, evaluated on the other, and calibrated.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).env("NO_COLOR", "1").output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_command_line_without_data_or_with_a_bad_fraction_exits_64() {
    let none = run(&["eval", "router"]);
    assert_eq!(none.status.code(), Some(64), "{}", text(&none.stderr));
    assert!(text(&none.stderr).contains("--set"), "{}", text(&none.stderr));
    let bad = run(&["eval", "router", "--set", "gsm8k", "--test-fraction", "1.5"]);
    assert_eq!(bad.status.code(), Some(64));
    assert!(text(&bad.stderr).contains("--test-fraction"));
    let missing = run(&["router", "train", "--outcomes", "/nonexistent/outcomes.jsonl", "--out", "/tmp/x.json"]);
    assert_eq!(missing.status.code(), Some(65), "{}", text(&missing.stderr));
}

#[test]
fn gsm8k_router_is_trained_evaluated_and_calibrated_by_the_commands() {
    let Some(data) = switchyard_testkit::routellm_dir() else { return };
    let data = data.to_str().unwrap();
    let dir = std::env::temp_dir().join(format!("switchyard-cli-router-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg = dir.join("router.svg");
    let eval = run(&["eval", "router", "--set", "gsm8k", "--routellm", data, "--svg", svg.to_str().unwrap()]);
    let out = text(&eval.stdout);
    assert!(eval.status.success(), "{out}{}", text(&eval.stderr));
    println!("{out}");
    assert!(out.contains("APGR"), "{out}");
    assert!(std::fs::read_to_string(&svg).unwrap().starts_with("<svg"));

    let router = dir.join("router.json");
    let train = run(&["router", "train", "--set", "gsm8k", "--routellm", data, "--out", router.to_str().unwrap()]);
    assert!(train.status.success(), "{}{}", text(&train.stdout), text(&train.stderr));
    let calibrated = dir.join("calibrated.json");
    let prompts = format!("{data}/gsm8k/train.jsonl");
    let calibrate = run(&[
        "router",
        "calibrate",
        "--router",
        router.to_str().unwrap(),
        "--prompts",
        &prompts,
        "--target",
        "0.5",
        "--out",
        calibrated.to_str().unwrap(),
    ]);
    assert!(calibrate.status.success(), "{}{}", text(&calibrate.stdout), text(&calibrate.stderr));
    println!("{}", text(&calibrate.stdout));
    assert!(calibrated.is_file());
    std::fs::remove_dir_all(&dir).ok();
}
