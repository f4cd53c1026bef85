//! The data that crosses the [`BreakerStore`](crate::BreakerStore) boundary, and the arithmetic both stores share.
//!
//! These types are this crate's own on purpose (except the state's name, [`BreakerState`], which is the core's):
//! the pure core's breaker state machine evolves on its own, and the cluster state only needs a small, stable
//! vocabulary (a state name, an epoch, a deadline, a probe lease). The runtime converts between the two. The trip and wait arithmetic lives here once, in integer milliseconds
//! and `f64` rates, and the Lua scripts repeat it operation for operation, so [`MemoryStore`](crate::MemoryStore)
//! and [`RedisStore`](crate::RedisStore) agree to the millisecond (the conformance suite checks that they do).

use std::time::Duration;

use crate::StateError;

/// The cluster-wide state of one provider's breaker: the core's one name type. The store never holds
/// `MetricsOnly` (a mode of a node's own breaker); a store that reports it is refused as a protocol error.
pub use switchyard_core::BreakerState;

/// One node's outcomes for one provider since its last report (a node batches about every 100 ms).
///
/// The four counters are disjoint except `slow_calls`: every call is exactly one of a success, a failure or a
/// hard error, and `slow_calls` counts those among them that were slower than the slow-call threshold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutcomeBatch {
    /// The breaker epoch the node saw while making these calls. A batch whose epoch is older than the cluster's
    /// is stale (the calls were made under a state that no longer exists) and changes nothing.
    pub epoch: u64,
    /// Calls that succeeded.
    pub successes: u64,
    /// Calls that failed in a way that counts toward the failure rate (5xx, 529, timeouts, resets).
    pub failures: u64,
    /// Calls (of any outcome) slower than the slow-call threshold.
    pub slow_calls: u64,
    /// Failures that mean the provider is misconfigured (authentication); these trip with a single node.
    pub hard_errors: u64,
}

impl OutcomeBatch {
    /// An empty batch made under `epoch`.
    pub fn new(epoch: u64) -> Self {
        OutcomeBatch { epoch, ..OutcomeBatch::default() }
    }

    /// Calls in the batch: successes, failures and hard errors.
    pub fn calls(&self) -> u64 {
        self.successes.saturating_add(self.failures).saturating_add(self.hard_errors)
    }

    /// Whether the batch says anything bad about the provider (a failure, a slow call or a hard error); the
    /// reporting node then counts toward `min_reporting_nodes`.
    pub fn is_bad(&self) -> bool {
        self.failures > 0 || self.slow_calls > 0 || self.hard_errors > 0
    }
}

/// How long a trip keeps the breaker open: `min(base * 2^(opens - 1), max) + jitter`, where `opens` counts the
/// consecutive opens including this one. The caller draws the jitter (stores never draw random numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenWait {
    /// The wait after the first open.
    pub base: Duration,
    /// The cap on the doubled wait.
    pub max: Duration,
    /// Added after capping; the caller picks it, for example uniformly in `0..=base/10`.
    pub jitter: Duration,
}

impl OpenWait {
    /// A wait doubling from `base` up to `max`, without jitter.
    pub fn new(base: Duration, max: Duration) -> Self {
        OpenWait { base, max, jitter: Duration::ZERO }
    }

    /// The same wait with `jitter` added after capping.
    pub fn with_jitter(self, jitter: Duration) -> Self {
        OpenWait { jitter, ..self }
    }

    /// The open wait for the `consecutive_opens`-th consecutive open (1 for the first).
    pub fn for_open(&self, consecutive_opens: u64) -> Duration {
        Duration::from_millis(wait_ms(ms(self.base), ms(self.max), ms(self.jitter), consecutive_opens))
    }

    /// Rejects a zero base or a cap below the base.
    pub fn validate(&self) -> Result<(), StateError> {
        if ms(self.base) == 0 {
            return Err(StateError::config("wait.base", "must be at least 1 ms"));
        }
        if self.max < self.base {
            return Err(StateError::config("wait.max", "must not be below wait.base"));
        }
        Ok(())
    }
}

impl Default for OpenWait {
    /// 5 s doubling up to 2 min.
    fn default() -> Self {
        OpenWait::new(Duration::from_secs(5), Duration::from_secs(120))
    }
}

/// The wait in ms for the `opens`-th consecutive open; the Lua scripts compute exactly the same.
pub(crate) fn wait_ms(base_ms: u64, max_ms: u64, jitter_ms: u64, opens: u64) -> u64 {
    let mut wait = base_ms;
    for _ in 1..opens {
        if wait >= max_ms {
            break;
        }
        wait = wait.saturating_mul(2);
    }
    wait.min(max_ms).saturating_add(jitter_ms)
}

/// Duration in whole milliseconds, saturating.
pub(crate) fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// When the cluster trips a provider's breaker. Passed with every report, so each provider can have its own.
///
/// A report trips a closed breaker when, over the last `window` (whole seconds, by the store's clock):
/// - hard errors >= `hard_error_minimum` (when that is above 0), from any number of nodes; the breaker is also
///   marked misconfigured; or
/// - calls >= `minimum_calls`, at least `min_reporting_nodes` distinct nodes reported a failure, slow call or
///   hard error, and either `(failures + hard errors) >= failure_rate_threshold * calls` or
///   `slow_calls >= slow_call_rate_threshold * calls`.
///
/// Keep a provider's window constant: outcome buckets expire `window + 1 s` after their last write.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TripPolicy {
    /// The sliding window, rounded up to whole seconds, at most one hour.
    pub window: Duration,
    /// Failure rate (0, 1] at or above which the breaker trips.
    pub failure_rate_threshold: f64,
    /// Slow-call rate (0, 1] at or above which the breaker trips; `None` never trips on slowness.
    pub slow_call_rate_threshold: Option<f64>,
    /// Calls in the window below which no rate is computed.
    pub minimum_calls: u64,
    /// Distinct nodes that must have reported something bad in the window (one bad node must not trip the
    /// cluster). Default 2.
    pub min_reporting_nodes: u32,
    /// Hard errors in the window that trip with a single node; 0 turns hard-error trips off. Default 1.
    pub hard_error_minimum: u64,
    /// The open wait of a trip.
    pub wait: OpenWait,
}

/// The longest trip window a store accepts.
pub const MAX_WINDOW: Duration = Duration::from_secs(3600);

impl Default for TripPolicy {
    /// 10 s window, 50 % failures, no slow-call trip, 20 calls, 2 nodes, 1 hard error, 5 s doubling to 2 min.
    fn default() -> Self {
        TripPolicy {
            window: Duration::from_secs(10),
            failure_rate_threshold: 0.5,
            slow_call_rate_threshold: None,
            minimum_calls: 20,
            min_reporting_nodes: 2,
            hard_error_minimum: 1,
            wait: OpenWait::default(),
        }
    }
}

impl TripPolicy {
    /// Rejects a policy that cannot work, naming the field.
    pub fn validate(&self) -> Result<(), StateError> {
        if self.window.is_zero() || self.window > MAX_WINDOW {
            return Err(StateError::config("window", "must be above zero and at most one hour"));
        }
        if !(self.failure_rate_threshold > 0.0 && self.failure_rate_threshold <= 1.0) {
            return Err(StateError::config("failure_rate_threshold", "must be in (0, 1]"));
        }
        if let Some(slow) = self.slow_call_rate_threshold
            && !(slow > 0.0 && slow <= 1.0)
        {
            return Err(StateError::config("slow_call_rate_threshold", "must be in (0, 1]"));
        }
        if self.minimum_calls == 0 {
            return Err(StateError::config("minimum_calls", "must be at least 1"));
        }
        if self.min_reporting_nodes == 0 {
            return Err(StateError::config("min_reporting_nodes", "must be at least 1"));
        }
        self.wait.validate()
    }

    /// The window in whole seconds (rounded up).
    pub(crate) fn window_secs(&self) -> u64 {
        self.window.as_millis().div_ceil(1000).try_into().unwrap_or(u64::MAX)
    }
}

/// Sums of one provider's outcomes over a trip window, and the nodes that reported bad ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct WindowCounts {
    pub successes: u64,
    pub failures: u64,
    pub slow_calls: u64,
    pub hard_errors: u64,
    pub bad_nodes: u64,
}

/// The trip decision over a window (see [`TripPolicy`]): `None` keeps the breaker closed, `Some(hard)` trips it.
/// The Lua report script decides identically.
pub(crate) fn trip_decision(counts: &WindowCounts, policy: &TripPolicy) -> Option<bool> {
    if policy.hard_error_minimum > 0 && counts.hard_errors >= policy.hard_error_minimum {
        return Some(true);
    }
    let calls = counts.successes.saturating_add(counts.failures).saturating_add(counts.hard_errors);
    if calls < policy.minimum_calls || counts.bad_nodes < u64::from(policy.min_reporting_nodes) {
        return None;
    }
    let bad = counts.failures.saturating_add(counts.hard_errors) as f64;
    let failing = bad >= policy.failure_rate_threshold * calls as f64;
    let slow = policy.slow_call_rate_threshold.is_some_and(|rate| counts.slow_calls as f64 >= rate * calls as f64);
    (failing || slow).then_some(false)
}

/// The half-open probe lease: who may send the one probe call, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeLease {
    /// The node holding the lease.
    pub owner: String,
    /// When the lease expires, in the store's clock (Unix ms); after that another node may take it.
    pub until_ms: u64,
}

/// What the cluster believes about one provider, read atomically with the store's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    /// The provider.
    pub provider: String,
    /// The breaker state.
    pub state: BreakerState,
    /// Bumped by every transition; 0 for a provider never seen. The highest epoch wins when nodes reconcile.
    pub epoch: u64,
    /// Consecutive opens since the breaker last closed (drives the growing open wait).
    pub consecutive_opens: u64,
    /// While [`BreakerState::Open`]: the deadline after which a probe may be taken, in the store's clock (Unix
    /// ms; Redis `TIME` for the Redis store).
    pub open_until_ms: Option<u64>,
    /// While [`BreakerState::Open`]: how long until `open_until_ms`, zero once it passed. Use this, not the
    /// absolute deadline, against a node's own clock.
    pub open_remaining: Duration,
    /// While [`BreakerState::HalfOpen`]: the probe lease (possibly expired, see `now_ms`).
    pub probe: Option<ProbeLease>,
    /// Whether a hard error (authentication) tripped the breaker; cleared when it closes or is reset.
    pub misconfigured: bool,
    /// The store's clock when this view was read (Unix ms).
    pub now_ms: u64,
}

impl ClusterView {
    /// The view of a provider the store has never seen.
    pub fn unknown(provider: &str, now_ms: u64) -> Self {
        ClusterView {
            provider: provider.to_owned(),
            state: BreakerState::Closed,
            epoch: 0,
            consecutive_opens: 0,
            open_until_ms: None,
            open_remaining: Duration::ZERO,
            probe: None,
            misconfigured: false,
            now_ms,
        }
    }

    /// Whether a node should send calls to this provider at all: closed or disabled. (Open and half-open
    /// refuse everything except the probe lease holder's one call.)
    pub fn admits_calls(&self) -> bool {
        matches!(self.state, BreakerState::Closed | BreakerState::Disabled)
    }
}

/// The raw fields of a breaker, as both stores keep them; turned into a [`ClusterView`] in one place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RawBreaker {
    pub state: Option<BreakerState>,
    pub epoch: u64,
    pub opens: u64,
    pub open_until_ms: u64,
    pub probe_owner: String,
    pub probe_until_ms: u64,
    pub misconfigured: bool,
}

impl RawBreaker {
    pub(crate) fn view(&self, provider: &str, now_ms: u64) -> ClusterView {
        let state = self.state.unwrap_or(BreakerState::Closed);
        let open = state == BreakerState::Open;
        let probing = state == BreakerState::HalfOpen && !self.probe_owner.is_empty();
        ClusterView {
            provider: provider.to_owned(),
            state,
            epoch: self.epoch,
            consecutive_opens: self.opens,
            open_until_ms: open.then_some(self.open_until_ms),
            open_remaining: if open {
                Duration::from_millis(self.open_until_ms.saturating_sub(now_ms))
            } else {
                Duration::ZERO
            },
            probe: probing.then(|| ProbeLease { owner: self.probe_owner.clone(), until_ms: self.probe_until_ms }),
            misconfigured: self.misconfigured,
            now_ms,
        }
    }
}

/// What a [`report`](crate::BreakerStore::report) did with the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportEffect {
    /// The outcomes were added to the window; the breaker stays as it was.
    Counted,
    /// The outcomes were added and tripped the breaker (now open, epoch bumped). `hard_error` says a hard error
    /// tripped it with a single node, marking the provider misconfigured.
    Tripped {
        /// Whether hard errors (not the failure or slow-call rate) tripped the breaker.
        hard_error: bool,
    },
    /// The batch's epoch is older than the cluster's: nothing changed.
    Stale,
    /// The breaker is open, half-open or forced open, so outcomes are not counted: nothing changed.
    Ignored,
}

/// The result of a [`report`](crate::BreakerStore::report): its effect and the state after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportOutcome {
    /// What the report did.
    pub effect: ReportEffect,
    /// The breaker after the report.
    pub view: ClusterView,
}

/// The result of a state-changing call: whether it changed anything (and so bumped the epoch), and the state
/// after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// Whether the call changed the breaker; every change bumps the epoch.
    pub changed: bool,
    /// The breaker after the call.
    pub view: ClusterView,
}

/// The answer to [`acquire_probe`](crate::BreakerStore::acquire_probe).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeDecision {
    /// This node holds the probe lease: it may send one call and must report it with
    /// [`probe_result`](crate::BreakerStore::probe_result) and this view's epoch.
    Granted(ClusterView),
    /// Someone else holds the lease, the open wait has not passed, or the breaker is not open: no call.
    Refused(ClusterView),
}

impl ProbeDecision {
    /// Whether the lease was granted to the caller.
    pub fn is_granted(&self) -> bool {
        matches!(self, ProbeDecision::Granted(_))
    }

    /// The breaker after the decision.
    pub fn view(&self) -> &ClusterView {
        match self {
            ProbeDecision::Granted(view) | ProbeDecision::Refused(view) => view,
        }
    }
}

/// Cascade escalation counts: how many queries a stage answered or escalated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EscalationCounts {
    /// Queries the stage handled.
    pub total: u64,
    /// Queries among them that the stage escalated to the next one.
    pub escalated: u64,
}

impl EscalationCounts {
    /// The escalation rate `escalated / total`, or `None` without any query.
    pub fn rate(&self) -> Option<f64> {
        (self.total > 0).then(|| self.escalated as f64 / self.total as f64)
    }
}

/// The width of an escalation time bucket.
pub const ESCALATION_BUCKET: Duration = Duration::from_secs(10);

/// The longest window [`escalation_rate`](crate::BreakerStore::escalation_rate) can look back; buckets expire
/// after it (plus one bucket).
pub const ESCALATION_RETENTION: Duration = Duration::from_secs(3600);

/// How many escalation buckets a `window` covers: `ceil(window / bucket)`, the current one included. Rejects a
/// zero window or one longer than [`ESCALATION_RETENTION`].
pub(crate) fn escalation_bucket_count(window: Duration) -> Result<u64, StateError> {
    if window.is_zero() || window > ESCALATION_RETENTION {
        return Err(StateError::config("window", "must be above zero and at most the escalation retention (1 h)"));
    }
    Ok(ms(window).div_ceil(ms(ESCALATION_BUCKET)))
}

/// The bucket starts (Unix seconds, newest first) a `window` ending at `now_ms` covers.
pub(crate) fn escalation_buckets(now_ms: u64, window: Duration) -> Result<Vec<u64>, StateError> {
    let count = escalation_bucket_count(window)?;
    let width = ESCALATION_BUCKET.as_secs();
    let current = now_ms / 1000 / width * width;
    Ok((0..count).map_while(|i| current.checked_sub(i * width)).collect())
}

/// The longest accepted provider, node or cascade name, in bytes.
pub const MAX_NAME_LEN: usize = 200;

/// Checks that `name` can be used inside a Redis key: 1 to [`MAX_NAME_LEN`] bytes, no whitespace or control
/// characters, and no `{` or `}` (which would break the per-provider hash tag). `kind` names the argument.
/// Checks the arguments of a probe lease request (acquire or renew): a usable node name and a lease of at least
/// 1 ms.
pub fn validate_probe_lease(node: &str, lease: std::time::Duration) -> Result<(), StateError> {
    validate_name("node", node)?;
    if lease.as_millis() == 0 {
        return Err(StateError::config("lease", "must be at least 1 ms"));
    }
    Ok(())
}

pub fn validate_name(kind: &'static str, name: &str) -> Result<(), StateError> {
    let reason = if name.is_empty() {
        "must not be empty"
    } else if name.len() > MAX_NAME_LEN {
        "is longer than 200 bytes"
    } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        "must not contain whitespace or control characters"
    } else if name.contains(['{', '}']) {
        "must not contain braces"
    } else {
        return Ok(());
    };
    Err(StateError::InvalidName { kind, name: name.to_owned(), reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_round_trip() {
        for state in [
            BreakerState::Closed,
            BreakerState::Open,
            BreakerState::HalfOpen,
            BreakerState::ForcedOpen,
            BreakerState::Disabled,
        ] {
            assert_eq!(BreakerState::from_name(state.as_str()), Some(state));
        }
        assert_eq!(BreakerState::from_name("ajar"), None);
    }

    #[test]
    fn wait_doubles_up_to_the_cap_then_adds_jitter() {
        let check = |opens, expected| assert_eq!(wait_ms(100, 1000, 0, opens), expected, "opens {opens}");
        check(0, 100);
        check(1, 100);
        check(2, 200);
        check(3, 400);
        check(4, 800);
        check(5, 1000);
        check(64, 1000);
        check(u64::MAX, 1000);
        assert_eq!(wait_ms(100, 1000, 7, 5), 1007);
        assert_eq!(
            OpenWait::new(Duration::from_millis(100), Duration::from_secs(1)).for_open(3),
            Duration::from_millis(400)
        );
    }

    #[test]
    fn trip_decisions() {
        let policy = TripPolicy { minimum_calls: 10, ..TripPolicy::default() };
        let check = |s, f, slow, h, nodes, expected: Option<bool>| {
            let counts = WindowCounts { successes: s, failures: f, slow_calls: slow, hard_errors: h, bad_nodes: nodes };
            assert_eq!(trip_decision(&counts, &policy), expected, "{counts:?}");
        };
        check(5, 5, 0, 0, 2, Some(false)); // exactly the threshold trips
        check(6, 4, 0, 0, 2, None);
        check(5, 5, 0, 0, 1, None); // one node never trips
        check(2, 2, 0, 0, 2, None); // below minimum calls
        check(0, 0, 0, 1, 1, Some(true)); // hard error, one node, no minimum
        let slow = TripPolicy { slow_call_rate_threshold: Some(0.5), ..policy };
        let counts = WindowCounts { successes: 10, slow_calls: 5, bad_nodes: 2, ..WindowCounts::default() };
        assert_eq!(trip_decision(&counts, &slow), Some(false));
        assert_eq!(trip_decision(&counts, &policy), None);
    }

    #[test]
    fn escalation_buckets_cover_the_window() {
        let buckets = escalation_buckets(1_000_005_000, Duration::from_secs(25)).unwrap();
        assert_eq!(buckets, vec![1_000_000, 999_990, 999_980]);
        assert!(escalation_buckets(0, Duration::ZERO).is_err());
        assert!(escalation_buckets(0, Duration::from_secs(3601)).is_err());
    }

    #[test]
    fn names() {
        assert!(validate_name("provider", "openai-gpt-4o:eu/1").is_ok());
        for bad in ["", "a b", "a{b}", "x\n", &"x".repeat(201)] {
            assert!(matches!(validate_name("provider", bad), Err(StateError::InvalidName { .. })), "{bad:?}");
        }
    }

    #[test]
    fn policy_validation_names_the_field() {
        let check = |policy: TripPolicy, field: &str| match policy.validate() {
            Err(StateError::Config { field: got, .. }) => assert_eq!(got, field),
            other => panic!("expected a config error on {field}, got {other:?}"),
        };
        assert!(TripPolicy::default().validate().is_ok());
        check(TripPolicy { window: Duration::ZERO, ..TripPolicy::default() }, "window");
        check(TripPolicy { failure_rate_threshold: 0.0, ..TripPolicy::default() }, "failure_rate_threshold");
        check(TripPolicy { failure_rate_threshold: f64::NAN, ..TripPolicy::default() }, "failure_rate_threshold");
        check(TripPolicy { slow_call_rate_threshold: Some(1.5), ..TripPolicy::default() }, "slow_call_rate_threshold");
        check(TripPolicy { minimum_calls: 0, ..TripPolicy::default() }, "minimum_calls");
        check(TripPolicy { min_reporting_nodes: 0, ..TripPolicy::default() }, "min_reporting_nodes");
        let wait = OpenWait::new(Duration::from_secs(2), Duration::from_secs(1));
        check(TripPolicy { wait, ..TripPolicy::default() }, "wait.max");
    }
}
