//! Scenario tests: each runs a script against one balancer over members named `a`, `b`, `c`, … and compares
//! the picks with the expected ones.
//!
//! Script tokens, separated by spaces; `N*token` repeats a token:
//! - `p` picks and prints the pick: `a` for a member, `!a` for a panic trickle, `-400ms` for `None` with its
//!   `retry_after`; `t` ("take") picks and starts the call on the picked member;
//! - `down:ab` makes members `a` and `b` unavailable (and the others available), `down:` makes all available;
//! - `u=0.1,0.9` sets the two units (default 0, 0); `+10s`, `+500ms` advance the clock;
//! - `start:a`, `end:a:200ms` (a call to `a` ended after 200 ms), `fail:a` report calls.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests panic on failure")]

use super::*;

const LEAST_BUSY: BalanceStrategy = BalanceStrategy::LeastBusy { ties: TieBreak::Index };

fn name(i: usize) -> char {
    (b'a' + i as u8) as char
}

fn index(name: &str) -> usize {
    usize::from(name.as_bytes()[0] - b'a')
}

fn duration(text: &str) -> Duration {
    match text.strip_suffix("ms") {
        Some(ms) => Duration::from_millis(ms.parse().unwrap()),
        None => Duration::from_secs(text.strip_suffix('s').unwrap().parse().unwrap()),
    }
}

fn balancer(strategy: BalanceStrategy, weights: &[u32]) -> Balancer {
    let members = weights.iter().enumerate().map(|(i, &w)| GroupMember::new(name(i).to_string(), w)).collect();
    Balancer::new(BalancerConfig { strategy, ..BalancerConfig::default() }, members).unwrap()
}

#[track_caller]
fn check(strategy: BalanceStrategy, weights: &[u32], script: &str, expect: &str) {
    let mut b = balancer(strategy, weights);
    assert_eq!(run(&mut b, script), expect, "script: {script}");
}

fn run(b: &mut Balancer, script: &str) -> String {
    let mut now = Instant::now();
    let mut available = vec![true; b.len()];
    let mut units = (0.0, 0.0);
    let mut out = Vec::new();
    for token in script.split_whitespace() {
        let (times, token) = match token.split_once('*') {
            Some((n, rest)) => (n.parse().unwrap(), rest),
            None => (1, token),
        };
        for _ in 0..times {
            if token == "p" || token == "t" {
                let pick = b.pick(&available, units, now);
                if let (Some(member), "t") = (pick.member(), token) {
                    b.on_start(member);
                }
                out.push(match pick {
                    Pick::Member(i) => name(i).to_string(),
                    Pick::Panic(i) => format!("!{}", name(i)),
                    Pick::None { retry_after } => format!("-{}ms", retry_after.as_millis()),
                });
            } else if let Some(step) = token.strip_prefix('+') {
                now += duration(step);
            } else if let Some(list) = token.strip_prefix("down:") {
                available = (0..b.len()).map(|i| !list.contains(name(i))).collect();
            } else if let Some(pair) = token.strip_prefix("u=") {
                let (u0, u1) = pair.split_once(',').unwrap();
                units = (u0.parse().unwrap(), u1.parse().unwrap());
            } else if let Some(member) = token.strip_prefix("start:") {
                b.on_start(index(member));
            } else if let Some(rest) = token.strip_prefix("end:") {
                let (member, latency) = rest.split_once(':').unwrap();
                b.on_end(index(member), duration(latency), now);
            } else if let Some(member) = token.strip_prefix("fail:") {
                b.on_failure(index(member), now);
            } else {
                panic!("unknown token {token}");
            }
        }
    }
    out.join(" ")
}

#[test]
fn weighted_is_exact_and_smooth_over_a_cycle() {
    check(BalanceStrategy::Weighted, &[5, 1, 1], "7*p", "a a b a c a a");
    check(BalanceStrategy::Weighted, &[5, 1, 1], "14*p", "a a b a c a a a a b a c a a");
    check(BalanceStrategy::Weighted, &[1, 1, 1], "6*p", "a b c a b c");
    check(BalanceStrategy::Weighted, &[2, 3], "5*p", "b a b a b");
    // The units play no part.
    check(BalanceStrategy::Weighted, &[5, 1, 1], "u=0.9,0.3 7*p", "a a b a c a a");
}

#[test]
fn weighted_shares_among_the_available_members_only() {
    check(BalanceStrategy::Weighted, &[5, 1, 1], "down:a 4*p", "b c b c");
    check(BalanceStrategy::Weighted, &[3, 1, 1], "down:c 4*p", "a a b a");
    // Counting over many picks: the excluded member gets nothing, the others share by weight.
    let mut b = balancer(BalanceStrategy::Weighted, &[5, 1, 2]);
    let mut counts = [0; 3];
    for _ in 0..700 {
        counts[b.pick(&[true, false, true], (0.0, 0.0), Instant::now()).member().unwrap()] += 1;
    }
    assert_eq!(counts, [500, 0, 200]);
}

#[test]
fn least_busy_takes_the_fewest_in_flight() {
    check(LEAST_BUSY, &[1, 1, 1], "t t t t", "a b c a");
    check(LEAST_BUSY, &[1, 1, 1], "start:a start:a start:b p", "c");
    check(LEAST_BUSY, &[1, 1, 1], "start:a start:b end:a:1s p", "a");
    check(LEAST_BUSY, &[1, 1, 1], "start:a down:b p", "c");
    // Weights scale the load: `(in_flight + 1) / weight`.
    check(LEAST_BUSY, &[3, 1], "t t t t t", "a a a b a");
    // Ties by the unit, among the tied members only.
    let random = BalanceStrategy::LeastBusy { ties: TieBreak::Random };
    check(random, &[1, 1, 1, 1], "start:b u=0.0,0 p u=0.4,0 p u=0.99,0 p", "a c d");
}

#[test]
fn two_choices_prefer_the_lower_cost() {
    // `a` answers in 100 ms, `b` in 500 ms; both draws orders pick `a`.
    let known = "end:a:100ms end:b:500ms";
    check(BalanceStrategy::PeakEwma, &[1, 1], &format!("{known} u=0,0 p u=0.9,0 p"), "a a");
    // Enough calls in flight make the fast member the costlier: 100 ms * 6 > 500 ms * 1 > 100 ms * 4.
    check(BalanceStrategy::PeakEwma, &[1, 1], &format!("{known} 5*start:a u=0,0 p"), "b");
    check(BalanceStrategy::PeakEwma, &[1, 1], &format!("{known} 3*start:a u=0,0 p"), "a");
    // The draws choose which two compete: with a, b, c and `c` the slowest, drawing (c, b) gives b and
    // drawing (a, c) gives a; `c` never wins against a faster member.
    let three = "end:a:100ms end:b:200ms end:c:900ms";
    check(BalanceStrategy::PeakEwma, &[1, 1, 1], &format!("{three} u=0.9,0.5 p u=0.1,0.9 p u=0.9,0.0 p"), "b a a");
    // A member without observations is estimated at `default_latency` (1 s).
    check(BalanceStrategy::PeakEwma, &[1, 1], "end:b:2s u=0,0 p u=0.9,0 p", "a a");
    // A single available member is picked whatever the units.
    check(BalanceStrategy::PeakEwma, &[1, 1, 1], "down:ac u=0.7,0.7 p", "b");
}

#[test]
fn a_peak_fades_with_time() {
    // `b` had one slow answer; a minute later it is back near the prior (1 s) and beats `a`, which has just
    // answered in 1.5 s again.
    let script = "end:a:1500ms end:b:20s u=0,0.9 p +60s end:a:1500ms p";
    check(BalanceStrategy::PeakEwma, &[1, 1], script, "a b");
}

#[test]
fn unavailable_members_are_never_picked() {
    for strategy in [BalanceStrategy::Weighted, LEAST_BUSY, BalanceStrategy::PeakEwma] {
        check(strategy, &[1, 1, 1], "down:ab 3*p u=0.5,0.5 p down:bc p down:ac u=0.9,0.1 p", "c c c c a b");
    }
    // A short availability list leaves the missing members out.
    let mut b = balancer(BalanceStrategy::Weighted, &[1, 1, 1]);
    assert_eq!(b.pick(&[false, true], (0.0, 0.0), Instant::now()), Pick::Member(1));
}

#[test]
fn panic_mode_lets_one_call_per_interval_through() {
    // Everything down: one trickle, then `None` with the time left until the next slot.
    check(BalanceStrategy::Weighted, &[1, 1, 1], "down:abc p p +400ms p +600ms p p", "!a -1000ms -600ms !a -1000ms");
    // The trickle goes to the member that failed least recently; one never seen failing comes first.
    check(BalanceStrategy::Weighted, &[1, 1, 1], "fail:a +1s fail:c down:abc p", "!b");
    check(BalanceStrategy::Weighted, &[1, 1, 1], "fail:b +1s fail:c +1s fail:a down:abc p", "!b");
    // A failing trickle moves the next one on.
    let script = "fail:a +1s fail:b +1s fail:c down:abc p +1s fail:a p +1s fail:b p +1s fail:c p";
    check(BalanceStrategy::Weighted, &[1, 1, 1], script, "!a !b !c !a");
}

#[test]
fn the_group_recovers_when_a_member_comes_back() {
    let script = "down:ab p p +1s p down:a p p down:ab p +1s p";
    check(BalanceStrategy::Weighted, &[1, 1], script, "!a -1000ms !a b b -1000ms !a");
    // The trickle slot is per group: after recovery, a new outage within the interval waits for it.
    check(BalanceStrategy::Weighted, &[1, 1], "down:ab p down: p down:ab +300ms p", "!a a -700ms");
}

#[test]
fn the_snapshot_shows_the_members() {
    let mut b = balancer(BalanceStrategy::PeakEwma, &[2, 1]);
    let t0 = Instant::now();
    b.on_start(0);
    b.on_start(0);
    b.on_end(0, Duration::from_millis(250), t0);
    b.on_failure(1, t0);
    let _ = b.pick(&[false, false], (0.0, 0.0), t0);
    let snapshot = b.snapshot(t0 + Duration::from_millis(100));
    assert_eq!(snapshot.next_trickle_in, Some(Duration::from_millis(900)));
    let a = &snapshot.members[0];
    assert_eq!((a.name.as_str(), a.weight, a.in_flight, a.last_failure_at), ("a", 2, 1, None));
    assert!(a.latency_estimate > Duration::from_millis(250) && a.latency_estimate < Duration::from_millis(260));
    assert_eq!(snapshot.members[1].last_failure_at, Some(t0));
    assert_eq!(snapshot.members[1].latency_estimate, Duration::from_secs(1));
    assert_eq!((b.index_of("b"), b.name(1), b.index_of("z"), b.name(7)), (Some(1), Some("b"), None, None));
}

#[test]
fn reports_about_unknown_members_change_nothing() {
    let mut b = balancer(LEAST_BUSY, &[1, 1]);
    b.on_start(9);
    b.on_end(9, Duration::from_secs(1), Instant::now());
    b.on_failure(9, Instant::now());
    // Ending a call never started does not underflow.
    b.on_end(0, Duration::from_secs(1), Instant::now());
    assert_eq!(b.snapshot(Instant::now()).members.iter().map(|m| m.in_flight).sum::<u32>(), 0);
}

#[test]
fn bad_groups_name_the_field() {
    let check = |config: BalancerConfig, members: &[(&str, u32)], field: &str| {
        let members = members.iter().map(|&(n, w)| GroupMember::new(n, w)).collect();
        assert_eq!(Balancer::new(config, members).unwrap_err().field, field);
    };
    let good = BalancerConfig::default();
    check(good, &[], "members");
    check(good, &[("a", 1), ("", 1)], "members.name");
    check(good, &[("a", 1), ("a", 2)], "members.name");
    check(good, &[("a", 0)], "members.weight");
    check(good, &[("a", MAX_WEIGHT + 1)], "members.weight");
    check(BalancerConfig { decay: Duration::ZERO, ..good }, &[("a", 1)], "decay");
    check(BalancerConfig { default_latency: Duration::ZERO, ..good }, &[("a", 1)], "default_latency");
    check(BalancerConfig { panic_interval: Duration::ZERO, ..good }, &[("a", 1)], "panic_interval");
    let error = BalancerConfig { decay: Duration::ZERO, ..good }.validate().unwrap_err();
    assert_eq!(error.to_string(), "invalid balancer config: decay must be positive and at most 1 h");
}
