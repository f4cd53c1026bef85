//! `switchyard demo` as a user runs it: the recovery it announces must happen before it ends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

#[test]
fn the_demo_ends_with_every_breaker_closed_and_the_primary_serving_again() {
    let out = Command::new(BIN).arg("demo").env("NO_COLOR", "1").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the demo failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));

    let summary = stdout.split("== summary").nth(1).unwrap_or_else(|| panic!("no summary in:\n{stdout}"));
    let node_lines: Vec<&str> = summary.lines().filter(|l| l.trim_start().starts_with("node-")).collect();
    assert_eq!(node_lines.len(), 3, "one summary line per node:\n{summary}");
    for line in &node_lines {
        for provider in ["primary", "secondary"] {
            let closed = format!("{provider} running (");
            let rest = line.split(&closed).nth(1).unwrap_or_else(|| panic!("no {provider} in {line}"));
            let entry = rest.split(')').next().unwrap();
            assert!(
                entry.contains("breaker closed, cluster breaker closed"),
                "{provider} is not closed everywhere: {line}\n{stdout}"
            );
        }
    }
    assert!(stdout.contains("every breaker of `primary` is closed again"), "{stdout}");

    let served = summary
        .lines()
        .find_map(|l| l.split("answered by primary after the outage").nth(1))
        .and_then(|rest| rest.rsplit(':').next())
        .and_then(|n| n.trim().parse::<usize>().ok())
        .unwrap_or_else(|| panic!("no count of the primary's answers after the outage:\n{summary}"));
    // Phase 4 ends with 12 queries sent once every breaker is closed: the primary answers them.
    assert!(served >= 12, "the primary answered only {served} queries after the outage:\n{stdout}");
    let phase4 = stdout.split("== 4.").nth(1).unwrap().split("== summary").next().unwrap();
    let last_twelve: Vec<&str> = phase4.lines().filter(|l| l.starts_with('q')).rev().take(12).collect();
    assert!(
        last_twelve.iter().all(|l| l.contains("primary ok") && !l.contains("failover")),
        "the last queries must be answered by the primary at the first attempt:\n{phase4}"
    );
}

#[test]
fn the_demo_routes_short_questions_to_the_small_model_and_long_or_tagged_ones_to_the_large_one() {
    let out = Command::new(BIN).arg("demo").env("NO_COLOR", "1").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the demo failed: {stdout}");
    let phase6 = stdout.split("== 6.").nth(1).unwrap().split("== summary").next().unwrap();
    let lines: Vec<&str> = phase6.lines().filter(|l| l.starts_with('r')).collect();
    assert_eq!(lines.len(), 8, "{phase6}");
    for line in &lines {
        let expected = if line.contains("default") { "-> small" } else { "-> large" };
        assert!(line.ends_with(expected), "{line}");
    }
    assert!(stdout.contains("router `pick`: 8 of 8 questions answered: 4 to large, 4 to small"), "{stdout}");
}
