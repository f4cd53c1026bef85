//! A circuit breaker per provider: stop calling a provider that is failing, and find out cheaply when it is back.
//!
//! The policy follows resilience4j and Polly, with Envoy's operator controls:
//!
//! - **Closed**: every call is admitted and its outcome lands in a sliding window (the last N calls, or the last
//!   N seconds in per-second buckets; see [`SlidingWindow`]). Once the window holds `minimum_calls`, the breaker
//!   trips when the failure rate **or** the slow-call rate reaches its threshold (`>=`, in percent). A call is
//!   slow when it took at least `slow_call_duration`, whether it succeeded or failed.
//! - **Open** until a deadline: every call is rejected with the time left. The wait after the `n`th consecutive
//!   trip is `min(max, base * 2^(n-1))`, shortened by jitter to `wait * (1 - jitter * unit)` with the caller's
//!   random `unit` in `[0, 1)`, so the wait never exceeds the cap and breakers tripped together on many nodes do
//!   not probe in lockstep.
//! - **HalfOpen**: once the deadline has passed, the next [`Breaker::try_acquire`] turns the breaker half-open
//!   (lazily: nothing happens without a call, and a closed breaker never becomes half-open). Exactly
//!   `half_open_permits` probe calls are admitted. When all of them succeed the breaker closes with an empty
//!   window and the consecutive-trip count goes back to zero; the first failing probe re-opens it with the next,
//!   longer wait. Probes are judged for slowness too: if the share of slow successful probes reaches the slow-call
//!   threshold, the breaker re-opens as if a probe had failed.
//!
//! Outcomes are weighed by their [`FailureClass`]:
//!
//! - `Retryable` (5xx, 529, timeouts, resets) is a failure; `Success` is a success.
//! - `RateLimited` is not a failure: it opens a cooldown of `max(Retry-After, 1 s)` (1 s when the provider gave
//!   no hint; capped at `max_retry_after`), without jitter and without growing the consecutive-trip count. A
//!   later 429 extends the deadline and never shortens it, even when its call started before the cooldown (see
//!   "Epochs" below).
//! - `Fatal { auth: true }` means the provider is misconfigured (a bad or revoked key): the breaker opens at once,
//!   with the longest wait (`open_wait.max`, jittered), and sets the `misconfigured` flag, which stays set until a
//!   call succeeds or an operator resets the breaker. Retrying every few seconds cannot fix a key.
//! - `Fatal { auth: false }`, `ContextWindowExceeded` and `ContentPolicy` are the request's fault, and
//!   `Cancelled` is the caller's: these are ignored, as resilience4j ignores exceptions it does not record. They
//!   count neither way, and an ignored probe gives its half-open permit back, so another call may probe.
//!
//! Operators can force the breaker open (nothing admitted until a reset), disable it (everything admitted,
//! nothing recorded) or put it in metrics-only mode: outcomes are recorded and the breaker reports, as a
//! `dry_run` [`Transition`], the trips it would have made, but every call is admitted. A would-be trip clears the
//! window, as the real trip's recovery would, and no rate trip is reported again before its would-be deadline has
//! passed; a 429 reaching past that deadline, or an auth failure that raises the flag anew, is reported at once.
//!
//! Every permit must come back: a half-open permit that is dropped unreported keeps its probe slot taken until
//! the next transition, so a caller that abandons a call reports it as `Cancelled`.
//!
//! # Epochs
//!
//! Every transition bumps `epoch`, and a [`Permit`] remembers the epoch it was granted in. An outcome whose permit
//! is older than the current epoch belongs to a regime that is over (the calls in flight when the breaker tripped,
//! a probe of an earlier half-open period) and changes nothing, with one exception: a stale 429 may push the
//! deadline of a breaker that is still open further out, because `Retry-After` is the provider's statement about
//! the future and honouring it never admits a call earlier. A half-open period lives in the epoch of the open
//! interval before it (the lazy Open to HalfOpen step does not bump the epoch), so every node that saw the same
//! trip agrees on the epoch until the next decision. The cluster's own breaker is not this one: a node applies it
//! beside this one, through [`crate::ClusterGate`].

mod window;

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

pub use window::SlidingWindow;
use window::{Call, Totals, Window};

use crate::{Backoff, BreakerState, FailureClass, Outcome};

/// The shortest cooldown a 429 opens, and the one it opens when the provider gave no `Retry-After`.
pub const MIN_RATE_LIMIT_COOLDOWN: Duration = Duration::from_secs(1);

/// The `retry_after` hint given while every half-open permit is out: a probe is under way.
pub const HALF_OPEN_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The longest open wait, cooldown or sliding window a configuration may ask for.
pub const MAX_CONFIGURED_WAIT: Duration = Duration::from_secs(24 * 60 * 60);

/// How a breaker trips and recovers. See the module documentation for the policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// The calls the rates are computed over. Default: the last 100 calls (resilience4j).
    pub window: SlidingWindow,
    /// No rate is computed, and nothing trips, before the window holds this many calls. Default: 20 (Hystrix's
    /// request volume threshold; resilience4j's 100 would let a provider fail 100 calls in a row first).
    pub minimum_calls: u32,
    /// Trip when the failure rate, in percent, is at least this. Default: 50 (resilience4j).
    pub failure_rate_threshold: f64,
    /// Trip when the slow-call rate, in percent, is at least this. Default: 100 (resilience4j).
    pub slow_call_rate_threshold: f64,
    /// A call that took at least this long is slow. Default: 60 s (resilience4j).
    pub slow_call_duration: Duration,
    /// The open wait: `base` after the first trip, doubling with each consecutive trip up to `max`.
    /// Default: 5 s (Polly's break duration) growing to 5 min.
    pub open_wait: Backoff,
    /// The share of the open wait that jitter may take off, in `[0, 1)`. Default: 0.2.
    pub open_jitter: f64,
    /// Probe calls admitted while half-open; all must succeed to close. Default: 1.
    pub half_open_permits: u32,
    /// The longest cooldown a `Retry-After` can open. Default: 10 min.
    pub max_retry_after: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            window: SlidingWindow::Count { calls: 100 },
            minimum_calls: 20,
            failure_rate_threshold: 50.0,
            slow_call_rate_threshold: 100.0,
            slow_call_duration: Duration::from_secs(60),
            open_wait: Backoff::new(Duration::from_secs(5), Duration::from_secs(300)),
            open_jitter: 0.2,
            half_open_permits: 1,
            max_retry_after: Duration::from_secs(600),
        }
    }
}

/// A configuration value a breaker cannot work with.
pub type BreakerConfigError = crate::InvalidSetting;

impl BreakerConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), BreakerConfigError> {
        let fail = |field, reason| Err(crate::InvalidSetting { component: "breaker", field, reason });
        let percent = |value: f64| value.is_finite() && value > 0.0 && value <= 100.0;
        match self.window {
            SlidingWindow::Count { calls } if !(1..=1_000_000).contains(&calls) => {
                return fail("window.calls", "must be between 1 and 1000000");
            }
            SlidingWindow::Time { seconds } if !(1..=3_600).contains(&seconds) => {
                return fail("window.seconds", "must be between 1 and 3600");
            }
            _ => {}
        }
        if self.minimum_calls == 0 {
            return fail("minimum_calls", "must be at least 1");
        }
        if let SlidingWindow::Count { calls } = self.window
            && self.minimum_calls > calls
        {
            return fail("minimum_calls", "must not exceed window.calls, or the breaker could never trip");
        }
        if !percent(self.failure_rate_threshold) {
            return fail("failure_rate_threshold", "must be a percentage in (0, 100]");
        }
        if !percent(self.slow_call_rate_threshold) {
            return fail("slow_call_rate_threshold", "must be a percentage in (0, 100]");
        }
        if self.slow_call_duration.is_zero() {
            return fail("slow_call_duration", "must be positive");
        }
        if self.open_wait.base.is_zero() {
            return fail("open_wait.base", "must be positive");
        }
        if self.open_wait.max < self.open_wait.base {
            return fail("open_wait.max", "must be at least open_wait.base");
        }
        if self.open_wait.max > MAX_CONFIGURED_WAIT {
            return fail("open_wait.max", "must be at most 24 h; force the breaker open instead");
        }
        if !(self.open_jitter.is_finite() && (0.0..1.0).contains(&self.open_jitter)) {
            return fail("open_jitter", "must be in [0, 1)");
        }
        if !(1..=10_000).contains(&self.half_open_permits) {
            return fail("half_open_permits", "must be between 1 and 10000");
        }
        if !(MIN_RATE_LIMIT_COOLDOWN..=MAX_CONFIGURED_WAIT).contains(&self.max_retry_after) {
            return fail("max_retry_after", "must be between 1 s and 24 h");
        }
        Ok(())
    }

    /// The open wait after the `opens`th consecutive trip (1-based), before jitter: `min(max, base * 2^(opens-1))`.
    pub fn open_wait_ceiling(&self, opens: u32) -> Duration {
        self.open_wait.ceiling(opens.saturating_sub(1))
    }

    /// The jittered open wait after the `opens`th consecutive trip: `ceiling * (1 - open_jitter * unit)`.
    pub fn open_wait(&self, opens: u32, unit: f64) -> Duration {
        jittered(self.open_wait_ceiling(opens), self.open_jitter, unit)
    }

    /// The cooldown a 429 opens: `max(retry_after or 1 s, 1 s)`, capped at `max_retry_after`.
    pub fn rate_limit_cooldown(&self, retry_after: Option<Duration>) -> Duration {
        retry_after.unwrap_or(MIN_RATE_LIMIT_COOLDOWN).clamp(MIN_RATE_LIMIT_COOLDOWN, self.max_retry_after)
    }
}

fn jittered(wait: Duration, jitter: f64, unit: f64) -> Duration {
    let unit = if unit.is_finite() { unit.clamp(0.0, 1.0) } else { 0.0 };
    let jitter = if jitter.is_finite() { jitter.clamp(0.0, 1.0) } else { 0.0 };
    wait.mul_f64(1.0 - jitter * unit)
}

/// `now + wait`; the configured caps keep the sum far from `Instant`'s limits.
fn deadline(now: Instant, wait: Duration) -> Instant {
    now.checked_add(wait.min(MAX_CONFIGURED_WAIT)).unwrap_or(now)
}

/// What the breaker is doing, as it would answer a call now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerPhase {
    /// Calls are admitted and recorded.
    Closed,
    /// Calls are rejected until `until`; then the breaker becomes half-open.
    Open { until: Instant },
    /// A limited number of probe calls are admitted.
    HalfOpen,
    /// An operator opened the breaker; nothing is admitted until a reset.
    ForcedOpen,
    /// An operator switched the breaker off: everything is admitted, nothing recorded.
    Disabled,
    /// Everything is admitted; outcomes are recorded and would-be trips reported.
    MetricsOnly,
}

impl BreakerPhase {
    /// The state's name, without its deadline.
    pub fn state(&self) -> BreakerState {
        match self {
            BreakerPhase::Closed => BreakerState::Closed,
            BreakerPhase::Open { .. } => BreakerState::Open,
            BreakerPhase::HalfOpen => BreakerState::HalfOpen,
            BreakerPhase::ForcedOpen => BreakerState::ForcedOpen,
            BreakerPhase::Disabled => BreakerState::Disabled,
            BreakerPhase::MetricsOnly => BreakerState::MetricsOnly,
        }
    }
}

/// Leave to make one call; hand it back through [`Breaker::on_outcome`] (as `Cancelled` if the call was never
/// made), or a half-open breaker keeps the permit's probe slot taken.
#[must_use = "report the call's outcome with Breaker::on_outcome, or Cancelled if it was not made"]
#[derive(Debug, PartialEq, Eq)]
pub struct Permit {
    epoch: u64,
    half_open: bool,
}

impl Permit {
    /// The epoch the permit was granted in.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether this call is a half-open probe.
    pub fn is_half_open(&self) -> bool {
        self.half_open
    }
}

/// Why a call was not admitted, and when to ask again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    /// Time left in the open interval; [`HALF_OPEN_RETRY_AFTER`] while the probes are out; `open_wait.max` when
    /// forced open.
    pub retry_after: Duration,
    pub state: BreakerPhase,
}

/// What one admitted call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallOutcome {
    pub outcome: Outcome,
    /// How long the call took; compared with `slow_call_duration`.
    pub duration: Duration,
}

/// Why the breaker changed state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TransitionReason {
    /// The failure rate over `calls` calls reached the threshold.
    FailureRate { rate: f64, calls: u32 },
    /// The slow-call rate over `calls` calls (the window, or the half-open probes) reached the threshold.
    SlowCallRate { rate: f64, calls: u32 },
    /// A 429 opened, or extended, a cooldown.
    RateLimited { cooldown: Duration },
    /// An authentication failure: the provider is misconfigured.
    Misconfigured,
    /// A half-open probe failed.
    ProbeFailed,
    /// Every half-open probe succeeded.
    ProbesSucceeded,
    /// An operator command.
    Operator(OperatorAction),
}

/// The operator commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorAction {
    ForceOpen,
    Disable,
    MetricsOnly,
    Reset,
}

/// A state change, to log, alert on and publish to the cluster.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transition {
    pub from: BreakerPhase,
    pub to: BreakerPhase,
    /// The epoch after the transition (unchanged for a dry run).
    pub epoch: u64,
    /// The open deadline: `to`'s, or for a dry run the one the breaker would have set.
    pub open_until: Option<Instant>,
    pub reason: TransitionReason,
    /// A metrics-only breaker reporting what it would have done; its state did not change.
    pub dry_run: bool,
}

/// An observable picture of a breaker, for health replies and metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerSnapshot {
    pub state: BreakerPhase,
    pub epoch: u64,
    /// Percent of failed calls in the window; `None` before `minimum_calls`.
    pub failure_rate: Option<f64>,
    /// Percent of slow calls in the window; `None` before `minimum_calls`.
    pub slow_rate: Option<f64>,
    pub calls_in_window: u32,
    pub consecutive_opens: u32,
    /// Time left before the breaker turns half-open, while open.
    pub open_remaining: Option<Duration>,
    pub misconfigured: bool,
    pub half_open_in_flight: u32,
}

/// The probes of the current half-open period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Probes {
    /// Permits granted and not given back by an ignored outcome.
    granted: u32,
    succeeded: u32,
    slow: u32,
}

/// How the breaker weighs one outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Recorded(Call),
    RateLimited(Duration),
    Misconfigured,
    Ignored,
}

/// One provider's breaker. Pure: time and randomness come in as arguments.
#[derive(Debug, Clone)]
pub struct Breaker {
    config: BreakerConfig,
    state: BreakerPhase,
    epoch: u64,
    window: Window,
    consecutive_opens: u32,
    misconfigured: bool,
    probes: Probes,
    /// In metrics-only mode, the deadline of the last would-be trip; no further trip is reported before it.
    dry_run_until: Option<Instant>,
}

impl Breaker {
    /// A closed breaker at epoch 0, or the reason the configuration is unusable.
    pub fn new(config: BreakerConfig) -> Result<Self, BreakerConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            state: BreakerPhase::Closed,
            epoch: 0,
            window: Window::new(config.window),
            consecutive_opens: 0,
            misconfigured: false,
            probes: Probes::default(),
            dry_run_until: None,
        })
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The effective state at `now`: an open breaker whose deadline has passed is half-open.
    pub fn state(&self, now: Instant) -> BreakerPhase {
        match self.state {
            BreakerPhase::Open { until } if now >= until => BreakerPhase::HalfOpen,
            state => state,
        }
    }

    /// Asks to make one call at `now`.
    pub fn try_acquire(&mut self, now: Instant) -> Result<Permit, Rejected> {
        if let BreakerPhase::Open { until } = self.state
            && now >= until
        {
            // The open interval is over; its probes belong to the same epoch (entering Open cleared their count).
            self.state = BreakerPhase::HalfOpen;
        }
        match self.state {
            BreakerPhase::Closed | BreakerPhase::Disabled | BreakerPhase::MetricsOnly => {
                Ok(Permit { epoch: self.epoch, half_open: false })
            }
            BreakerPhase::HalfOpen if self.probes.granted < self.config.half_open_permits => {
                self.probes.granted += 1;
                Ok(Permit { epoch: self.epoch, half_open: true })
            }
            BreakerPhase::HalfOpen => Err(Rejected { retry_after: HALF_OPEN_RETRY_AFTER, state: self.state }),
            BreakerPhase::Open { until } => {
                Err(Rejected { retry_after: until.saturating_duration_since(now), state: self.state })
            }
            BreakerPhase::ForcedOpen => Err(Rejected { retry_after: self.config.open_wait.max, state: self.state }),
        }
    }

    /// Records the outcome of the call `permit` admitted, which ended at `now`; `unit` is a random number in
    /// `[0, 1)` for the jitter of a new open wait. Returns the transition it caused, if any.
    pub fn on_outcome(&mut self, permit: Permit, outcome: CallOutcome, now: Instant, unit: f64) -> Option<Transition> {
        let verdict = self.judge(outcome);
        if permit.epoch != self.epoch {
            return self.on_stale(verdict, now);
        }
        match self.state {
            BreakerPhase::Closed => self.on_closed(verdict, now, unit),
            BreakerPhase::HalfOpen => self.on_probe(verdict, now, unit),
            BreakerPhase::MetricsOnly => self.on_metrics_only(verdict, now, unit),
            BreakerPhase::Disabled => None,
            // No permit is granted while open, so this one is stale in all but number.
            BreakerPhase::Open { .. } | BreakerPhase::ForcedOpen => self.on_stale(verdict, now),
        }
    }

    /// Operator: reject everything until [`Breaker::reset`]. `None` if already forced open.
    pub fn force_open(&mut self, now: Instant) -> Option<Transition> {
        self.operator(BreakerPhase::ForcedOpen, OperatorAction::ForceOpen, now)
    }

    /// Operator: admit everything and record nothing. `None` if already disabled.
    pub fn disable(&mut self, now: Instant) -> Option<Transition> {
        self.operator(BreakerPhase::Disabled, OperatorAction::Disable, now)
    }

    /// Operator: admit everything, record outcomes and report would-be trips. `None` if already in that mode.
    pub fn metrics_only(&mut self, now: Instant) -> Option<Transition> {
        self.operator(BreakerPhase::MetricsOnly, OperatorAction::MetricsOnly, now)
    }

    /// Operator: close with an empty window, no consecutive trips and the misconfigured flag cleared. Always a
    /// transition, so calls in flight from before the reset are not counted.
    pub fn reset(&mut self, now: Instant) -> Transition {
        self.consecutive_opens = 0;
        self.misconfigured = false;
        self.transition(BreakerPhase::Closed, TransitionReason::Operator(OperatorAction::Reset), now)
    }

    pub fn snapshot(&self, now: Instant) -> BreakerSnapshot {
        let totals = self.window.totals(now);
        let state = self.state(now);
        BreakerSnapshot {
            state,
            epoch: self.epoch,
            failure_rate: self.rates(totals).map(|(failure, _)| failure),
            slow_rate: self.rates(totals).map(|(_, slow)| slow),
            calls_in_window: totals.calls,
            consecutive_opens: self.consecutive_opens,
            open_remaining: match state {
                BreakerPhase::Open { until } => Some(until.saturating_duration_since(now)),
                _ => None,
            },
            misconfigured: self.misconfigured,
            half_open_in_flight: match state {
                BreakerPhase::HalfOpen => self.probes.granted.saturating_sub(self.probes.succeeded),
                _ => 0,
            },
        }
    }

    fn judge(&self, outcome: CallOutcome) -> Verdict {
        let slow = outcome.duration >= self.config.slow_call_duration;
        match outcome.outcome {
            Outcome::Success => Verdict::Recorded(Call { failure: false, slow }),
            Outcome::Failure(FailureClass::Retryable) => Verdict::Recorded(Call { failure: true, slow }),
            Outcome::Failure(FailureClass::RateLimited { retry_after }) => {
                Verdict::RateLimited(self.config.rate_limit_cooldown(retry_after))
            }
            Outcome::Failure(FailureClass::Fatal { auth: true }) => Verdict::Misconfigured,
            Outcome::Failure(
                FailureClass::Fatal { auth: false }
                | FailureClass::ContextWindowExceeded
                | FailureClass::ContentPolicy
                | FailureClass::Cancelled,
            ) => Verdict::Ignored,
        }
    }

    /// `(failure rate, slow rate)` in percent, once the window holds `minimum_calls`.
    fn rates(&self, totals: Totals) -> Option<(f64, f64)> {
        if totals.calls == 0 || totals.calls < self.config.minimum_calls {
            return None;
        }
        let percent = |n: u32| f64::from(n) * 100.0 / f64::from(totals.calls);
        Some((percent(totals.failures), percent(totals.slow)))
    }

    fn trip_reason(&self, totals: Totals) -> Option<TransitionReason> {
        let (failure, slow) = self.rates(totals)?;
        if failure >= self.config.failure_rate_threshold {
            Some(TransitionReason::FailureRate { rate: failure, calls: totals.calls })
        } else if slow >= self.config.slow_call_rate_threshold {
            Some(TransitionReason::SlowCallRate { rate: slow, calls: totals.calls })
        } else {
            None
        }
    }

    fn on_closed(&mut self, verdict: Verdict, now: Instant, unit: f64) -> Option<Transition> {
        match verdict {
            Verdict::Recorded(call) => {
                if !call.failure {
                    self.misconfigured = false;
                }
                let totals = self.window.record(call, now);
                let reason = self.trip_reason(totals)?;
                Some(self.trip(reason, now, unit))
            }
            Verdict::RateLimited(cooldown) => Some(self.cool_down(cooldown, now)),
            Verdict::Misconfigured => Some(self.misconfigured(now, unit)),
            Verdict::Ignored => None,
        }
    }

    fn on_probe(&mut self, verdict: Verdict, now: Instant, unit: f64) -> Option<Transition> {
        match verdict {
            Verdict::Recorded(Call { failure: true, .. }) => Some(self.trip(TransitionReason::ProbeFailed, now, unit)),
            Verdict::Recorded(Call { failure: false, slow }) => {
                self.misconfigured = false;
                self.probes.succeeded += 1;
                self.probes.slow += u32::from(slow);
                let permits = self.config.half_open_permits;
                if self.probes.succeeded < permits {
                    return None;
                }
                let slow_rate = f64::from(self.probes.slow) * 100.0 / f64::from(permits);
                if slow_rate >= self.config.slow_call_rate_threshold {
                    let reason = TransitionReason::SlowCallRate { rate: slow_rate, calls: permits };
                    return Some(self.trip(reason, now, unit));
                }
                self.consecutive_opens = 0;
                Some(self.transition(BreakerPhase::Closed, TransitionReason::ProbesSucceeded, now))
            }
            Verdict::RateLimited(cooldown) => Some(self.cool_down(cooldown, now)),
            Verdict::Misconfigured => Some(self.misconfigured(now, unit)),
            Verdict::Ignored => {
                self.probes.granted = self.probes.granted.saturating_sub(1);
                None
            }
        }
    }

    fn on_metrics_only(&mut self, verdict: Verdict, now: Instant, unit: f64) -> Option<Transition> {
        let quiet = self.dry_run_until.is_some_and(|until| now < until);
        let (reason, wait) = match verdict {
            Verdict::Recorded(call) => {
                if !call.failure {
                    self.misconfigured = false;
                }
                let totals = self.window.record(call, now);
                if quiet {
                    return None;
                }
                (self.trip_reason(totals)?, self.config.open_wait(self.consecutive_opens.saturating_add(1), unit))
            }
            Verdict::RateLimited(cooldown) => {
                // Like a real cooldown: a longer 429 extends the would-be deadline, a shorter one is not news.
                if self.dry_run_until.is_some_and(|until| deadline(now, cooldown) <= until) {
                    return None;
                }
                (TransitionReason::RateLimited { cooldown }, cooldown)
            }
            Verdict::Misconfigured => {
                let newly = !self.misconfigured;
                self.misconfigured = true;
                if quiet && !newly {
                    return None;
                }
                (TransitionReason::Misconfigured, self.config.open_wait.max)
            }
            Verdict::Ignored => return None,
        };
        // A would-be deadline is never shortened, like a real one.
        let until = self.dry_run_until.map_or(deadline(now, wait), |current| current.max(deadline(now, wait)));
        self.dry_run_until = Some(until);
        self.window.clear();
        Some(Transition {
            from: self.state,
            to: self.state,
            epoch: self.epoch,
            open_until: Some(until),
            reason,
            dry_run: true,
        })
    }

    /// A stale outcome changes nothing, except that a 429 may push a still-open deadline further out.
    fn on_stale(&mut self, verdict: Verdict, now: Instant) -> Option<Transition> {
        match (verdict, self.state) {
            (Verdict::RateLimited(cooldown), BreakerPhase::Open { until })
                if now < until && deadline(now, cooldown) > until =>
            {
                Some(self.cool_down(cooldown, now))
            }
            _ => None,
        }
    }

    /// Opens after a trip, with the wait for one more consecutive trip.
    fn trip(&mut self, reason: TransitionReason, now: Instant, unit: f64) -> Transition {
        self.consecutive_opens = self.consecutive_opens.saturating_add(1);
        let until = deadline(now, self.config.open_wait(self.consecutive_opens, unit));
        self.transition(BreakerPhase::Open { until }, reason, now)
    }

    /// Opens, or extends, a 429 cooldown; never shortens an open deadline and never counts as a trip.
    fn cool_down(&mut self, cooldown: Duration, now: Instant) -> Transition {
        let mut until = deadline(now, cooldown);
        if let BreakerPhase::Open { until: current } = self.state {
            until = until.max(current);
        }
        self.transition(BreakerPhase::Open { until }, TransitionReason::RateLimited { cooldown }, now)
    }

    /// Opens for the longest wait and raises the misconfigured flag.
    fn misconfigured(&mut self, now: Instant, unit: f64) -> Transition {
        self.misconfigured = true;
        self.consecutive_opens = self.consecutive_opens.saturating_add(1);
        let until = deadline(now, jittered(self.config.open_wait.max, self.config.open_jitter, unit));
        self.transition(BreakerPhase::Open { until }, TransitionReason::Misconfigured, now)
    }

    fn operator(&mut self, to: BreakerPhase, action: OperatorAction, now: Instant) -> Option<Transition> {
        if self.state == to {
            return None;
        }
        Some(self.transition(to, TransitionReason::Operator(action), now))
    }

    /// Moves to `to` and bumps the epoch; the only way the state changes, besides the lazy Open to HalfOpen step.
    fn transition(&mut self, to: BreakerPhase, reason: TransitionReason, now: Instant) -> Transition {
        let from = self.state(now);
        self.enter(to);
        self.epoch = self.epoch.saturating_add(1);
        let open_until = match to {
            BreakerPhase::Open { until } => Some(until),
            _ => None,
        };
        Transition { from, to, epoch: self.epoch, open_until, reason, dry_run: false }
    }

    fn enter(&mut self, to: BreakerPhase) {
        self.state = to;
        self.probes = Probes::default();
        self.dry_run_until = None;
        if matches!(to, BreakerPhase::Closed | BreakerPhase::MetricsOnly) {
            self.window.clear();
        }
    }
}
