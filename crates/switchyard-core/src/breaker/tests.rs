//! Scenario tests: each runs a script of calls, held permits, time steps and operator commands against one
//! breaker and compares the trace of what it did (transitions, rejections, a final snapshot) with the expected
//! trace.
//!
//! Script tokens, separated by spaces; `N*token` repeats a token:
//! - outcomes, each one acquire plus an immediate report: `s` success, `w` slow success, `f` failure, `wf` slow
//!   failure, `429` / `429:30s` rate limited, `auth`, `bad` (fatal, not auth), `ctx`, `policy`, `cancel`;
//! - `hold` acquires and keeps the permit; `^X` reports the oldest held permit with outcome `X`;
//! - `+10s`, `+500ms` advance the clock; `u=0.5` sets the jitter unit (default 0);
//! - `!force`, `!disable`, `!metrics`, `!reset` are operator commands; `?` prints a snapshot.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests panic on failure")]

use std::collections::VecDeque;

use super::*;

/// A small configuration that trips quickly: 10 calls, 5 minimum, 50 % failures, 10 s slow calls, open waits of
/// 10 s doubling to 60 s without jitter, one probe.
fn config() -> BreakerConfig {
    BreakerConfig {
        window: SlidingWindow::Count { calls: 10 },
        minimum_calls: 5,
        failure_rate_threshold: 50.0,
        slow_call_rate_threshold: 100.0,
        slow_call_duration: Duration::from_secs(10),
        open_wait: Backoff::new(Duration::from_secs(10), Duration::from_secs(60)),
        open_jitter: 0.0,
        half_open_permits: 1,
        max_retry_after: Duration::from_secs(600),
    }
}

#[track_caller]
fn check(config: BreakerConfig, script: &str, expect: &str) {
    let expect: Vec<&str> = expect.lines().map(str::trim).filter(|line| !line.is_empty()).collect();
    assert_eq!(run(config, script), expect.join("\n"), "script: {script}");
}

struct Run {
    breaker: Breaker,
    t0: Instant,
    now: Instant,
    unit: f64,
    held: VecDeque<Permit>,
    trace: Vec<String>,
}

fn run(config: BreakerConfig, script: &str) -> String {
    let t0 = Instant::now();
    let breaker = match Breaker::new(config) {
        Ok(breaker) => breaker,
        Err(error) => return error.to_string(),
    };
    let mut run = Run { breaker, t0, now: t0, unit: 0.0, held: VecDeque::new(), trace: Vec::new() };
    for token in script.split_whitespace() {
        let (times, token) = match token.split_once('*') {
            Some((n, rest)) => (n.parse().unwrap(), rest),
            None => (1, token),
        };
        for _ in 0..times {
            run.step(token);
        }
    }
    let end = run.snapshot();
    run.trace.push(format!("= {end}"));
    run.trace.join("\n")
}

impl Run {
    fn step(&mut self, token: &str) {
        let config = *self.breaker.config();
        if let Some(step) = token.strip_prefix('+') {
            self.now += duration(step);
        } else if let Some(unit) = token.strip_prefix("u=") {
            self.unit = unit.parse().unwrap();
        } else if token == "?" {
            let line = format!("{} ? {}", self.at(self.now), self.snapshot());
            self.trace.push(line);
        } else if token == "hold" {
            match self.breaker.try_acquire(self.now) {
                Ok(permit) => {
                    let kind = if permit.is_half_open() { "probe" } else { "call" };
                    self.trace.push(format!("{} hold: {kind}", self.at(self.now)));
                    self.held.push_back(permit);
                }
                Err(rejected) => self.rejected(rejected),
            }
        } else if let Some(outcome) = token.strip_prefix('^') {
            let permit = self.held.pop_front().expect("a held permit");
            let transition = self.breaker.on_outcome(permit, call_outcome(outcome, &config), self.now, self.unit);
            self.transition(transition);
        } else if let Some(command) = token.strip_prefix('!') {
            let now = self.now;
            let transition = match command {
                "force" => self.breaker.force_open(now),
                "disable" => self.breaker.disable(now),
                "metrics" => self.breaker.metrics_only(now),
                "reset" => Some(self.breaker.reset(now)),
                other => panic!("unknown command {other}"),
            };
            if transition.is_none() {
                self.trace.push(format!("{} {command}: no change", self.at(now)));
            }
            self.transition(transition);
        } else {
            let outcome = call_outcome(token, &config);
            match self.breaker.try_acquire(self.now) {
                Ok(permit) => {
                    let transition = self.breaker.on_outcome(permit, outcome, self.now, self.unit);
                    self.transition(transition);
                }
                Err(rejected) => self.rejected(rejected),
            }
        }
    }

    fn at(&self, instant: Instant) -> String {
        format!("@{}", show(instant.saturating_duration_since(self.t0)))
    }

    fn state(&self, state: BreakerPhase) -> String {
        match state {
            BreakerPhase::Open { until } => format!("open until {}", self.at(until)),
            other => other.state().to_string(),
        }
    }

    fn rejected(&mut self, rejected: Rejected) {
        let line = format!(
            "{} rejected: {}, retry in {}",
            self.at(self.now),
            self.state(rejected.state),
            show(rejected.retry_after)
        );
        self.trace.push(line);
    }

    fn transition(&mut self, transition: Option<Transition>) {
        let Some(t) = transition else { return };
        let reason = match t.reason {
            TransitionReason::FailureRate { rate, calls } => format!("failure rate {rate:.0}% of {calls}"),
            TransitionReason::SlowCallRate { rate, calls } => format!("slow rate {rate:.0}% of {calls}"),
            TransitionReason::RateLimited { cooldown } => format!("429 for {}", show(cooldown)),
            TransitionReason::Misconfigured => "misconfigured".to_owned(),
            TransitionReason::ProbeFailed => "probe failed".to_owned(),
            TransitionReason::ProbesSucceeded => "probes succeeded".to_owned(),
            TransitionReason::Operator(action) => format!("operator {action:?}"),
        };
        let line = if t.dry_run {
            assert_eq!(
                (t.from, t.to, t.epoch),
                (BreakerPhase::MetricsOnly, BreakerPhase::MetricsOnly, self.breaker.epoch())
            );
            let until = t.open_until.map_or("?".to_owned(), |until| self.at(until));
            format!("{} would open until {until} ({reason})", self.at(self.now))
        } else {
            assert_eq!(t.epoch, self.breaker.epoch());
            assert_eq!(t.open_until, if let BreakerPhase::Open { until } = t.to { Some(until) } else { None });
            format!("{} {} -> {} ({reason}) e{}", self.at(self.now), self.state(t.from), self.state(t.to), t.epoch)
        };
        self.trace.push(line);
    }

    fn snapshot(&self) -> String {
        let s = self.breaker.snapshot(self.now);
        let mut line = format!("{} e{} calls={}", self.state(s.state), s.epoch, s.calls_in_window);
        if let (Some(failure), Some(slow)) = (s.failure_rate, s.slow_rate) {
            line += &format!(" failures={failure:.0}% slow={slow:.0}%");
        }
        line += &format!(" opens={}", s.consecutive_opens);
        if let Some(remaining) = s.open_remaining {
            line += &format!(" remaining={}", show(remaining));
        }
        if s.half_open_in_flight > 0 {
            line += &format!(" probes={}", s.half_open_in_flight);
        }
        if s.misconfigured {
            line += " misconfigured";
        }
        line
    }
}

fn duration(text: &str) -> Duration {
    match text.strip_suffix("ms") {
        Some(ms) => Duration::from_millis(ms.parse().unwrap()),
        None => Duration::from_secs(text.strip_suffix('s').expect("a unit").parse().unwrap()),
    }
}

fn show(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms.is_multiple_of(1000) { format!("{}s", ms / 1000) } else { format!("{ms}ms") }
}

fn call_outcome(token: &str, config: &BreakerConfig) -> CallOutcome {
    let fast = Duration::from_millis(100);
    let slow = config.slow_call_duration;
    let failure = |class| Outcome::Failure(class);
    let (outcome, duration) = match token {
        "s" => (Outcome::Success, fast),
        "w" => (Outcome::Success, slow),
        "f" => (failure(FailureClass::Retryable), fast),
        "wf" => (failure(FailureClass::Retryable), slow),
        "429" => (failure(FailureClass::RateLimited { retry_after: None }), fast),
        "auth" => (failure(FailureClass::Fatal { auth: true }), fast),
        "bad" => (failure(FailureClass::Fatal { auth: false }), fast),
        "ctx" => (failure(FailureClass::ContextWindowExceeded), fast),
        "policy" => (failure(FailureClass::ContentPolicy), fast),
        "cancel" => (failure(FailureClass::Cancelled), slow),
        other => match other.strip_prefix("429:") {
            Some(after) => (failure(FailureClass::RateLimited { retry_after: Some(duration(after)) }), fast),
            None => panic!("unknown token {other}"),
        },
    };
    CallOutcome { outcome, duration }
}

#[test]
fn nothing_trips_before_the_minimum_number_of_calls() {
    check(config(), "4*f", "= closed e0 calls=4 opens=0");
    check(
        config(),
        "4*f f",
        "@0s closed -> open until @10s (failure rate 100% of 5) e1
         = open until @10s e1 calls=5 failures=100% slow=0% opens=1 remaining=10s",
    );
}

#[test]
fn trips_at_exactly_the_failure_threshold() {
    let config = BreakerConfig { minimum_calls: 10, ..config() };
    check(config, "6*s 4*f", "= closed e0 calls=10 failures=40% slow=0% opens=0");
    check(
        config,
        "5*s 4*f ? f",
        "@0s ? closed e0 calls=9 opens=0
         @0s closed -> open until @10s (failure rate 50% of 10) e1
         = open until @10s e1 calls=10 failures=50% slow=0% opens=1 remaining=10s",
    );
    // The window slides: old failures leave it, and new successes push the rate under the threshold.
    check(config, "4*f 6*s 5*s", "= closed e0 calls=10 failures=0% slow=0% opens=0");
}

#[test]
fn trips_on_slow_calls() {
    let config = BreakerConfig { slow_call_rate_threshold: 50.0, ..config() };
    check(config, "6*s 4*w", "= closed e0 calls=10 failures=0% slow=40% opens=0");
    check(
        config,
        "5*s 4*w w",
        "@0s closed -> open until @10s (slow rate 50% of 10) e1
         = open until @10s e1 calls=10 failures=0% slow=50% opens=1 remaining=10s",
    );
    // A slow failure counts in both rates; the failure rate is checked first.
    check(config, "4*s wf", "= closed e0 calls=5 failures=20% slow=20% opens=0");
    check(
        config,
        "3*w wf wf",
        "@0s closed -> open until @10s (slow rate 100% of 5) e1
         = open until @10s e1 calls=5 failures=40% slow=100% opens=1 remaining=10s",
    );
}

#[test]
fn the_open_wait_grows_with_consecutive_opens_up_to_the_cap() {
    check(
        config(),
        "5*f +9999ms s +1ms f +20s f +40s f +60s f +60s s",
        "@0s closed -> open until @10s (failure rate 100% of 5) e1
         @9999ms rejected: open until @10s, retry in 1ms
         @10s half_open -> open until @30s (probe failed) e2
         @30s half_open -> open until @70s (probe failed) e3
         @70s half_open -> open until @130s (probe failed) e4
         @130s half_open -> open until @190s (probe failed) e5
         @190s half_open -> closed (probes succeeded) e6
         = closed e6 calls=0 opens=0",
    );
}

#[test]
fn jitter_shortens_the_wait_by_at_most_its_fraction() {
    let config = BreakerConfig { open_jitter: 0.2, ..config() };
    for (opens, unit, expected_ms) in [(1, 0.0, 10_000), (1, 0.5, 9_000), (2, 0.5, 18_000), (9, 0.25, 57_000)] {
        assert_eq!(config.open_wait(opens, unit), Duration::from_millis(expected_ms), "opens {opens} unit {unit}");
    }
    for opens in 1..10 {
        let ceiling = config.open_wait_ceiling(opens);
        for unit in [0.0, 0.1, 0.5, 0.9, 0.999_999, 1.0, -3.0, 7.0, f64::NAN] {
            let wait = config.open_wait(opens, unit);
            assert!(wait <= ceiling && wait >= ceiling.mul_f64(0.8), "opens {opens} unit {unit}: {wait:?}");
        }
    }
    check(
        config,
        "u=0.5 5*f",
        "@0s closed -> open until @9s (failure rate 100% of 5) e1\n= open until @9s e1 calls=5 failures=100% slow=0% opens=1 remaining=9s",
    );
}

#[test]
fn half_open_closes_when_every_permitted_probe_succeeds() {
    let config = BreakerConfig { half_open_permits: 2, ..config() };
    check(
        config,
        "5*f +10s hold hold hold ^s ? s ^s",
        "@0s closed -> open until @10s (failure rate 100% of 5) e1
         @10s hold: probe
         @10s hold: probe
         @10s rejected: half_open, retry in 1s
         @10s ? half_open e1 calls=5 failures=100% slow=0% opens=1 probes=1
         @10s rejected: half_open, retry in 1s
         @10s half_open -> closed (probes succeeded) e2
         = closed e2 calls=0 opens=0",
    );
}

#[test]
fn a_failed_probe_reopens_with_a_longer_wait() {
    let config = BreakerConfig { half_open_permits: 2, ..config() };
    check(
        config,
        "5*f +10s hold hold ^s ^f +19s s +1s s s",
        "@0s closed -> open until @10s (failure rate 100% of 5) e1
         @10s hold: probe
         @10s hold: probe
         @10s half_open -> open until @30s (probe failed) e2
         @29s rejected: open until @30s, retry in 1s
         @30s half_open -> closed (probes succeeded) e3
         = closed e3 calls=0 opens=0",
    );
    // Slow probes reopen the breaker when they reach the slow-call threshold.
    check(
        config,
        "5*f +10s w w",
        "@0s closed -> open until @10s (failure rate 100% of 5) e1
         @10s half_open -> open until @30s (slow rate 100% of 2) e2
         = open until @30s e2 calls=5 failures=100% slow=0% opens=2 remaining=20s",
    );
}

#[test]
fn exactly_the_permitted_number_of_probes_is_admitted() {
    for permits in [1, 3, 7] {
        let config = BreakerConfig { half_open_permits: permits, ..config() };
        let mut breaker = Breaker::new(config).unwrap();
        let t0 = Instant::now();
        let unit = 0.0;
        for _ in 0..5 {
            let permit = breaker.try_acquire(t0).unwrap();
            breaker.on_outcome(
                permit,
                CallOutcome { outcome: Outcome::Failure(FailureClass::Retryable), duration: Duration::ZERO },
                t0,
                unit,
            );
        }
        let later = t0 + Duration::from_secs(10);
        let admitted: Vec<Permit> = (0..permits + 5).filter_map(|_| breaker.try_acquire(later).ok()).collect();
        assert_eq!(admitted.len(), permits as usize);
        assert!(admitted.iter().all(|p| p.is_half_open() && p.epoch() == 1));
        assert_eq!(breaker.snapshot(later).half_open_in_flight, permits);
    }
}

#[test]
fn operators_can_force_open_disable_and_watch() {
    check(
        config(),
        "!force s +1000s s !force !reset s",
        "@0s closed -> forced_open (operator ForceOpen) e1
         @0s rejected: forced_open, retry in 60s
         @1000s rejected: forced_open, retry in 60s
         @1000s force: no change
         @1000s forced_open -> closed (operator Reset) e2
         = closed e2 calls=1 opens=0",
    );
    check(
        config(),
        "!disable 20*f auth 429:60s ? !reset",
        "@0s closed -> disabled (operator Disable) e1
         @0s ? disabled e1 calls=0 opens=0
         @0s disabled -> closed (operator Reset) e2
         = closed e2 calls=0 opens=0",
    );
    // Metrics-only admits everything and reports the trip it would make, once per would-be open interval.
    check(
        config(),
        "!metrics 5*f 4*f +10s f 429:30s 429:5s 429:60s s",
        "@0s closed -> metrics_only (operator MetricsOnly) e1
         @0s would open until @10s (failure rate 100% of 5)
         @10s would open until @20s (failure rate 100% of 5)
         @10s would open until @40s (429 for 30s)
         @10s would open until @70s (429 for 60s)
         = metrics_only e1 calls=1 opens=0",
    );
    // An auth failure raises the flag (and is reported again when it comes back after a success), but nothing
    // is rejected.
    check(
        config(),
        "!metrics auth ? s ? auth s",
        "@0s closed -> metrics_only (operator MetricsOnly) e1
         @0s would open until @60s (misconfigured)
         @0s ? metrics_only e1 calls=0 opens=0 misconfigured
         @0s ? metrics_only e1 calls=1 opens=0
         @0s would open until @60s (misconfigured)
         = metrics_only e1 calls=1 opens=0",
    );
}

#[test]
fn ignored_outcomes_count_neither_way_and_release_the_probe() {
    check(config(), "5*bad 5*ctx 5*policy 5*cancel 4*f", "= closed e0 calls=4 opens=0");
    check(
        config(),
        "5*f +10s hold hold ^cancel hold ^bad hold ^s",
        "@0s closed -> open until @10s (failure rate 100% of 5) e1
         @10s hold: probe
         @10s rejected: half_open, retry in 1s
         @10s hold: probe
         @10s hold: probe
         @10s half_open -> closed (probes succeeded) e2
         = closed e2 calls=0 opens=0",
    );
}

#[test]
fn retry_after_opens_a_cooldown_that_later_429s_extend_and_never_shorten() {
    // No Retry-After, or a shorter one than 1 s, means 1 s; an absurd one is capped. None counts as a failure.
    check(
        config(),
        "4*f 429 +1s s 429:0s",
        "@0s closed -> open until @1s (429 for 1s) e1
         @1s half_open -> closed (probes succeeded) e2
         @1s closed -> open until @2s (429 for 1s) e3
         = open until @2s e3 calls=0 opens=0 remaining=1s",
    );
    check(
        config(),
        "429:100000s",
        "@0s closed -> open until @600s (429 for 600s) e1\n= open until @600s e1 calls=0 opens=0 remaining=600s",
    );
    // Calls in flight when the first 429 opened the cooldown: a longer Retry-After extends it, a shorter one and
    // other outcomes change nothing.
    check(
        config(),
        "hold hold hold hold ^429:10s +2s ^429:30s ^429:5s ^f +31s s",
        "@0s hold: call
         @0s hold: call
         @0s hold: call
         @0s hold: call
         @0s closed -> open until @10s (429 for 10s) e1
         @2s open until @10s -> open until @32s (429 for 30s) e2
         @33s half_open -> closed (probes succeeded) e3
         = closed e3 calls=0 opens=0",
    );
    // A probe that meets a 429 reopens for the new cooldown without growing the consecutive-trip count.
    check(
        config(),
        "5*f +10s 429:20s +19s s",
        "@0s closed -> open until @10s (failure rate 100% of 5) e1
         @10s half_open -> open until @30s (429 for 20s) e2
         @29s rejected: open until @30s, retry in 1s
         = open until @30s e2 calls=5 failures=100% slow=0% opens=1 remaining=1s",
    );
}

#[test]
fn an_auth_failure_opens_for_the_longest_wait_until_a_call_succeeds() {
    check(
        config(),
        "s auth +59s s +1s auth +60s s",
        "@0s closed -> open until @60s (misconfigured) e1
         @59s rejected: open until @60s, retry in 1s
         @60s half_open -> open until @120s (misconfigured) e2
         @120s half_open -> closed (probes succeeded) e3
         = closed e3 calls=0 opens=0",
    );
    check(
        config(),
        "auth ?",
        "@0s closed -> open until @60s (misconfigured) e1\n@0s ? open until @60s e1 calls=0 opens=1 remaining=60s misconfigured\n= open until @60s e1 calls=0 opens=1 remaining=60s misconfigured",
    );
}

#[test]
fn a_time_window_forgets_old_buckets() {
    let config = BreakerConfig { window: SlidingWindow::Time { seconds: 10 }, ..config() };
    check(
        config,
        "4*f +9s f",
        "@9s closed -> open until @19s (failure rate 100% of 5) e1
         = open until @19s e1 calls=5 failures=100% slow=0% opens=1 remaining=10s",
    );
    check(config, "4*f +10s f", "= closed e0 calls=1 opens=0");
    // Successes that leave the window stop diluting the failures.
    check(
        config,
        "6*s +5s 4*f ? +5s f",
        "@5s ? closed e0 calls=10 failures=40% slow=0% opens=0
         @10s closed -> open until @20s (failure rate 100% of 5) e1
         = open until @20s e1 calls=5 failures=100% slow=0% opens=1 remaining=10s",
    );
}

#[test]
fn a_stale_permit_changes_nothing() {
    // A call that started before the trip reports once the breaker is half-open: neither a failure nor a
    // success of that call may move it.
    check(
        config(),
        "hold hold 5*f +10s ^f ^s ? s",
        "@0s hold: call
         @0s hold: call
         @0s closed -> open until @10s (failure rate 100% of 5) e1
         @10s ? half_open e1 calls=5 failures=100% slow=0% opens=1
         @10s half_open -> closed (probes succeeded) e2
         = closed e2 calls=0 opens=0",
    );
    // A probe of an earlier half-open period neither closes the breaker nor frees a slot of the current one.
    let config = BreakerConfig { half_open_permits: 2, ..config() };
    check(
        config,
        "5*f +10s hold hold ^f +20s ^s hold hold hold ^s ^s",
        "@0s closed -> open until @10s (failure rate 100% of 5) e1
         @10s hold: probe
         @10s hold: probe
         @10s half_open -> open until @30s (probe failed) e2
         @30s hold: probe
         @30s hold: probe
         @30s rejected: half_open, retry in 1s
         @30s half_open -> closed (probes succeeded) e3
         = closed e3 calls=0 opens=0",
    );
}

#[test]
fn a_bad_config_names_its_field() {
    type Spoil = fn(&mut BreakerConfig);
    let cases: [(Spoil, &str); 12] = [
        (|c| c.window = SlidingWindow::Count { calls: 0 }, "window.calls"),
        (|c| c.window = SlidingWindow::Time { seconds: 0 }, "window.seconds"),
        (|c| c.minimum_calls = 0, "minimum_calls"),
        (|c| c.minimum_calls = 11, "minimum_calls"),
        (|c| c.failure_rate_threshold = 0.0, "failure_rate_threshold"),
        (|c| c.slow_call_rate_threshold = f64::NAN, "slow_call_rate_threshold"),
        (|c| c.slow_call_duration = Duration::ZERO, "slow_call_duration"),
        (|c| c.open_wait.base = Duration::ZERO, "open_wait.base"),
        (|c| c.open_wait.max = Duration::from_secs(1), "open_wait.max"),
        (|c| c.open_jitter = 1.0, "open_jitter"),
        (|c| c.half_open_permits = 0, "half_open_permits"),
        (|c| c.max_retry_after = Duration::from_millis(999), "max_retry_after"),
    ];
    for (spoil, field) in cases {
        let mut config = config();
        spoil(&mut config);
        assert_eq!(config.validate().map_err(|e| e.field), Err(field));
        assert_eq!(Breaker::new(config).err().map(|e| e.field), Some(field));
    }
    assert_eq!(config().validate(), Ok(()));
    assert_eq!(BreakerConfig::default().validate(), Ok(()));
    // A minimum above the window size is fine for a time window, which has no fixed size.
    let time = BreakerConfig { window: SlidingWindow::Time { seconds: 10 }, minimum_calls: 500, ..config() };
    assert_eq!(time.validate(), Ok(()));
    check(
        BreakerConfig { open_jitter: -0.1, ..config() },
        "f",
        "invalid breaker config: open_jitter must be in [0, 1)",
    );
}
