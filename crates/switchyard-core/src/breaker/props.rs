//! Property tests: random configurations driven by random sequences of time steps, calls, held permits
//! reported later and operator commands, checked against the breaker's invariants after every step. The test
//! keeps its own model of the state, built only from what the breaker announced (its transitions), so a silent
//! state change is caught too.

use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone, Copy)]
enum Kind {
    Success,
    Retryable,
    RateLimited(Option<u64>),
    Auth,
    Fatal,
    ContextWindow,
    ContentPolicy,
    Cancelled,
}

#[derive(Debug, Clone)]
enum Op {
    Advance {
        ms: u64,
    },
    /// Acquire and keep the permit.
    Hold,
    /// Report a held permit (chosen by `pick`).
    Report {
        pick: usize,
        kind: Kind,
        ms: u64,
        unit: f64,
    },
    /// Acquire and report at once.
    Call {
        kind: Kind,
        ms: u64,
        unit: f64,
    },
    Operator(OperatorAction),
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        6 => Just(Kind::Success),
        6 => Just(Kind::Retryable),
        2 => proptest::option::of(0u64..20_000).prop_map(Kind::RateLimited),
        1 => Just(Kind::Auth),
        1 => Just(Kind::Fatal),
        1 => Just(Kind::ContextWindow),
        1 => Just(Kind::ContentPolicy),
        1 => Just(Kind::Cancelled),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let action = prop_oneof![
        Just(OperatorAction::ForceOpen),
        Just(OperatorAction::Disable),
        Just(OperatorAction::MetricsOnly),
        Just(OperatorAction::Reset),
    ];
    prop_oneof![
        4 => (0u64..4_000).prop_map(|ms| Op::Advance { ms }),
        3 => Just(Op::Hold),
        4 => (any::<usize>(), kind(), 0u64..4_000, 0.0f64..1.0)
            .prop_map(|(pick, kind, ms, unit)| Op::Report { pick, kind, ms, unit }),
        6 => (kind(), 0u64..4_000, 0.0f64..1.0).prop_map(|(kind, ms, unit)| Op::Call { kind, ms, unit }),
        1 => action.prop_map(Op::Operator),
    ]
}

fn breaker_config() -> impl Strategy<Value = BreakerConfig> {
    let window = prop_oneof![
        (1u32..12).prop_map(|calls| SlidingWindow::Count { calls }),
        (1u32..6).prop_map(|seconds| SlidingWindow::Time { seconds }),
    ];
    let threshold = prop::sample::select(vec![25.0, 50.0, 75.0, 100.0]);
    (window, 1u32..12, threshold.clone(), threshold, 1u64..4, 1u64..6, 1u32..5, 0.0f64..0.9, 1u32..4, 1u64..30)
        .prop_map(|(window, minimum, failure, slow, slow_s, base_s, factor, jitter, permits, retry_s)| {
            let minimum_calls = match window {
                SlidingWindow::Count { calls } => minimum.min(calls),
                SlidingWindow::Time { .. } => minimum,
            };
            BreakerConfig {
                window,
                minimum_calls,
                failure_rate_threshold: failure,
                slow_call_rate_threshold: slow,
                slow_call_duration: Duration::from_secs(slow_s),
                open_wait: Backoff::new(Duration::from_secs(base_s), Duration::from_secs(base_s * u64::from(factor))),
                open_jitter: jitter,
                half_open_permits: permits,
                max_retry_after: Duration::from_secs(retry_s),
            }
        })
}

fn call_outcome(kind: Kind, ms: u64) -> CallOutcome {
    let failure = |class| Outcome::Failure(class);
    let outcome = match kind {
        Kind::Success => Outcome::Success,
        Kind::Retryable => failure(FailureClass::Retryable),
        Kind::RateLimited(after) => {
            failure(FailureClass::RateLimited { retry_after: after.map(Duration::from_millis) })
        }
        Kind::Auth => failure(FailureClass::Fatal { auth: true }),
        Kind::Fatal => failure(FailureClass::Fatal { auth: false }),
        Kind::ContextWindow => failure(FailureClass::ContextWindowExceeded),
        Kind::ContentPolicy => failure(FailureClass::ContentPolicy),
        Kind::Cancelled => failure(FailureClass::Cancelled),
    };
    CallOutcome { outcome, duration: Duration::from_millis(ms) }
}

fn ignored(outcome: CallOutcome) -> bool {
    matches!(
        outcome.outcome,
        Outcome::Failure(
            FailureClass::Fatal { auth: false }
                | FailureClass::ContextWindowExceeded
                | FailureClass::ContentPolicy
                | FailureClass::Cancelled
        )
    )
}

/// The state as announced, seen at `now`.
fn effective(model: BreakerPhase, now: Instant) -> BreakerPhase {
    match model {
        BreakerPhase::Open { until } if now >= until => BreakerPhase::HalfOpen,
        state => state,
    }
}

struct Harness {
    breaker: Breaker,
    model: BreakerPhase,
    now: Instant,
    held: Vec<Permit>,
    /// `(epoch, count)` of the half-open permits granted and not given back, by the test's own count.
    probes: (u64, u32),
}

impl Harness {
    fn acquire(&mut self) -> Result<Option<Permit>, TestCaseError> {
        let before = effective(self.model, self.now);
        let granted = self.probes_granted();
        let result = self.breaker.try_acquire(self.now);
        match (&result, before) {
            (Ok(_), BreakerPhase::Open { until }) => {
                return Err(TestCaseError::fail(format!("admitted while open until {until:?}, at {:?}", self.now)));
            }
            (Ok(_), BreakerPhase::ForcedOpen) => return Err(TestCaseError::fail("admitted while forced open")),
            (Err(rejected), BreakerPhase::Closed | BreakerPhase::Disabled | BreakerPhase::MetricsOnly) => {
                return Err(TestCaseError::fail(format!("rejected while {before:?}: {rejected:?}")));
            }
            (Err(rejected), BreakerPhase::HalfOpen) => {
                prop_assert_eq!(granted, self.breaker.config().half_open_permits, "rejected a free probe slot");
                prop_assert_eq!(rejected.retry_after, HALF_OPEN_RETRY_AFTER);
            }
            (Err(rejected), BreakerPhase::Open { until }) => {
                prop_assert_eq!(rejected.retry_after, until - self.now);
            }
            (Ok(permit), _) => {
                prop_assert_eq!(permit.epoch(), self.breaker.epoch());
                prop_assert_eq!(permit.is_half_open(), before == BreakerPhase::HalfOpen);
                if permit.is_half_open() {
                    self.probes = (permit.epoch(), self.probes_granted() + 1);
                }
            }
            (Err(_), BreakerPhase::ForcedOpen) => {}
        }
        Ok(result.ok())
    }

    /// Half-open permits granted in the current epoch and not given back by an ignored outcome.
    fn probes_granted(&self) -> u32 {
        if self.probes.0 == self.breaker.epoch() { self.probes.1 } else { 0 }
    }

    /// Half-open permits of the current epoch the test holds (a call made with `Op::Call` is reported at once).
    fn probes_in_flight(&self) -> u32 {
        let epoch = self.breaker.epoch();
        self.held.iter().filter(|p| p.is_half_open() && p.epoch() == epoch).count() as u32
    }

    fn report(&mut self, permit: Permit, outcome: CallOutcome, unit: f64) -> Result<(), TestCaseError> {
        let stale = permit.epoch() != self.breaker.epoch();
        let probe = permit.is_half_open();
        let before = self.breaker.snapshot(self.now);
        let transition = self.breaker.on_outcome(permit, outcome, self.now, unit);
        let after = self.breaker.snapshot(self.now);
        if stale {
            // A stale outcome changes nothing, except a 429 pushing a running open deadline further out.
            match (transition, before.state, after.state) {
                (None, _, _) => prop_assert_eq!(before, after, "a stale outcome changed the breaker"),
                (Some(t), BreakerPhase::Open { until: old }, BreakerPhase::Open { until: new })
                    if matches!(t.reason, TransitionReason::RateLimited { .. }) =>
                {
                    prop_assert!(new > old, "a stale 429 did not extend the deadline");
                    let rate_limited = matches!(outcome.outcome, Outcome::Failure(FailureClass::RateLimited { .. }));
                    prop_assert!(rate_limited, "only a 429 may extend the deadline");
                    prop_assert_eq!(after.epoch, before.epoch + 1);
                    let unchanged = BreakerSnapshot {
                        state: before.state,
                        epoch: before.epoch,
                        open_remaining: before.open_remaining,
                        ..after
                    };
                    prop_assert_eq!(unchanged, before, "a stale 429 changed more than the deadline");
                }
                (Some(t), _, _) => return Err(TestCaseError::fail(format!("a stale outcome made {t:?}"))),
            }
        } else if probe && transition.is_none() && ignored(outcome) {
            self.probes.1 -= 1;
        }
        self.announced(transition, before.epoch)
    }

    /// Checks an announced transition and updates the model with it.
    fn announced(&mut self, transition: Option<Transition>, epoch_before: u64) -> Result<(), TestCaseError> {
        let Some(t) = transition else {
            prop_assert_eq!(self.breaker.epoch(), epoch_before, "the epoch moved without a transition");
            return Ok(());
        };
        if t.dry_run {
            prop_assert_eq!(t.from, BreakerPhase::MetricsOnly);
            prop_assert_eq!(t.to, BreakerPhase::MetricsOnly);
            prop_assert_eq!(t.epoch, epoch_before);
            prop_assert!(t.open_until.is_some());
            return Ok(());
        }
        prop_assert_eq!(t.epoch, epoch_before + 1, "a transition must bump the epoch by one");
        prop_assert_eq!(t.epoch, self.breaker.epoch());
        prop_assert_eq!(t.from, effective(self.model, self.now), "the transition started from an unannounced state");
        prop_assert!(!(t.from == BreakerPhase::Closed && t.to == BreakerPhase::HalfOpen), "closed jumped to half-open");
        prop_assert_ne!(t.to, BreakerPhase::HalfOpen, "only time makes a breaker half-open");
        self.model = t.to;
        Ok(())
    }

    fn step(&mut self, op: Op) -> Result<(), TestCaseError> {
        let epoch_before = self.breaker.epoch();
        let state_before = effective(self.model, self.now);
        match op {
            Op::Advance { ms } => self.now += Duration::from_millis(ms),
            Op::Hold => {
                if let Some(permit) = self.acquire()? {
                    self.held.push(permit);
                }
            }
            Op::Report { pick, kind, ms, unit } => {
                if !self.held.is_empty() {
                    let permit = self.held.swap_remove(pick % self.held.len());
                    self.report(permit, call_outcome(kind, ms), unit)?;
                }
            }
            Op::Call { kind, ms, unit } => {
                if let Some(permit) = self.acquire()? {
                    self.report(permit, call_outcome(kind, ms), unit)?;
                }
            }
            Op::Operator(action) => {
                let now = self.now;
                let transition = match action {
                    OperatorAction::ForceOpen => self.breaker.force_open(now),
                    OperatorAction::Disable => self.breaker.disable(now),
                    OperatorAction::MetricsOnly => self.breaker.metrics_only(now),
                    OperatorAction::Reset => Some(self.breaker.reset(now)),
                };
                if let Some(t) = transition {
                    prop_assert_eq!(t.reason, TransitionReason::Operator(action));
                    prop_assert!(!t.dry_run);
                }
                self.announced(transition, epoch_before)?;
            }
        }
        let state_after = self.breaker.state(self.now);
        prop_assert_eq!(state_after, effective(self.model, self.now), "the state changed without an announcement");
        prop_assert!(self.breaker.epoch() >= epoch_before, "the epoch went backwards");
        if state_before == BreakerPhase::Closed {
            prop_assert_ne!(state_after, BreakerPhase::HalfOpen, "closed jumped to half-open");
        }
        let permits = self.breaker.config().half_open_permits;
        prop_assert!(self.probes_in_flight() <= self.probes_granted(), "the test lost count of its probes");
        prop_assert!(self.probes_granted() <= permits, "more probes granted than permits");
        prop_assert!(self.breaker.snapshot(self.now).half_open_in_flight <= self.probes_granted());
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn breaker_invariants_hold(config in breaker_config(), ops in prop::collection::vec(op(), 1..200)) {
        let breaker = Breaker::new(config).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut harness = Harness { breaker, model: BreakerPhase::Closed, now: Instant::now(), held: Vec::new(), probes: (0, 0) };
        for op in ops {
            harness.step(op)?;
        }
    }
}
