//! The shared breaker state inside one process: the embedded demo's cluster and the fast half of the tests.
//!
//! [`MemoryStore`] keeps exactly what the Redis store keeps (a breaker record per provider, per-second outcome
//! buckets and reporting-node sets that expire `window + 1 s` after their last write, escalation buckets) in one
//! mutex'd map, and applies each operation under the lock, which is what a Lua script does on Redis. Clones share
//! the state, so several "nodes" in one process agree exactly as nodes sharing a Redis do. Time comes from an
//! injected [`Clock`]; tests use [`ManualClock`] and move it by hand.

mod idempotency;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::types::{
    ESCALATION_BUCKET, ESCALATION_RETENTION, RawBreaker, WindowCounts, escalation_buckets, ms, trip_decision, wait_ms,
};
use crate::{
    BreakerState, BreakerStore, ClusterView, EscalationCounts, OpenWait, OutcomeBatch, ProbeDecision, ReportEffect,
    ReportOutcome, StateError, TripPolicy, Update, validate_name, validate_probe_lease,
};

/// Where a [`MemoryStore`] reads the time: Unix milliseconds, like Redis `TIME`.
pub trait Clock: Send + Sync + 'static {
    /// The current time in Unix milliseconds.
    fn now_ms(&self) -> u64;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(ms).unwrap_or_default()
    }
}

/// A clock that only moves when told to; clones share the time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock showing `now_ms` (Unix milliseconds).
    pub fn new(now_ms: u64) -> Self {
        ManualClock(Arc::new(AtomicU64::new(now_ms)))
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(ms(by), Ordering::SeqCst);
    }

    /// Sets the clock to `now_ms`.
    pub fn set(&self, now_ms: u64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A value that disappears at `expires_at_ms`, like a Redis key with a TTL.
#[derive(Debug, Clone, Default)]
struct Expiring<T> {
    value: T,
    expires_at_ms: u64,
}

/// One per-second outcome bucket.
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    successes: u64,
    failures: u64,
    slow_calls: u64,
    hard_errors: u64,
}

/// Everything kept for one provider.
#[derive(Debug, Default)]
struct Entry {
    breaker: RawBreaker,
    /// The epoch the breaker got when it last closed (a successful probe or a reset); a 429 cooldown observed
    /// under an older epoch is stale. Redis keeps it as the `closed_epoch` field of the breaker hash.
    closed_epoch: u64,
    /// Outcome buckets and the nodes that reported bad outcomes, by Unix second.
    buckets: BTreeMap<u64, Expiring<Bucket>>,
    bad_nodes: BTreeMap<u64, Expiring<BTreeSet<String>>>,
}

impl Entry {
    fn state(&self) -> BreakerState {
        self.breaker.state.unwrap_or(BreakerState::Closed)
    }

    fn clear_buckets(&mut self) {
        self.buckets.clear();
        self.bad_nodes.clear();
    }

    /// Closes the breaker for good: a successful probe or an operator reset. Forgets opens, deadline, probe and
    /// the outcome buckets.
    fn close(&mut self) {
        self.transition(BreakerState::Closed);
        self.closed_epoch = self.breaker.epoch;
        self.breaker.opens = 0;
        self.breaker.open_until_ms = 0;
        self.breaker.misconfigured = false;
        self.clear_probe();
        self.clear_buckets();
    }

    fn clear_probe(&mut self) {
        self.breaker.probe_owner.clear();
        self.breaker.probe_until_ms = 0;
    }

    /// Moves to `state`, bumping the epoch.
    fn transition(&mut self, state: BreakerState) {
        self.breaker.state = Some(state);
        self.breaker.epoch += 1;
    }

    /// Opens for the next consecutive open's wait.
    fn open_for_next(&mut self, now_ms: u64, wait: &OpenWait) {
        self.breaker.opens += 1;
        self.transition(BreakerState::Open);
        self.breaker.open_until_ms = now_ms + wait_ms(ms(wait.base), ms(wait.max), ms(wait.jitter), self.breaker.opens);
        self.clear_probe();
    }

    fn window_counts(&self, now_ms: u64, window_secs: u64) -> WindowCounts {
        let now_sec = now_ms / 1000;
        let first = (now_sec + 1).saturating_sub(window_secs);
        let mut counts = WindowCounts::default();
        for bucket in self.buckets.range(first..=now_sec).map(|(_, b)| b).filter(|b| b.expires_at_ms > now_ms) {
            counts.successes += bucket.value.successes;
            counts.failures += bucket.value.failures;
            counts.slow_calls += bucket.value.slow_calls;
            counts.hard_errors += bucket.value.hard_errors;
        }
        let nodes: BTreeSet<&String> = self
            .bad_nodes
            .range(first..=now_sec)
            .filter(|(_, set)| set.expires_at_ms > now_ms)
            .flat_map(|(_, set)| set.value.iter())
            .collect();
        counts.bad_nodes = nodes.len() as u64;
        counts
    }
}

#[derive(Debug, Default)]
struct Inner {
    breakers: HashMap<String, Entry>,
    claims: HashMap<String, idempotency::Claimed>,
    /// Idempotency leases of node instances: until when each is live.
    leases: HashMap<String, u64>,
    escalations: HashMap<(String, u32), BTreeMap<u64, Expiring<EscalationCounts>>>,
}

/// The in-process [`BreakerStore`]: the same semantics as [`RedisStore`](crate::RedisStore), one mutex.
///
/// Clones share the state. It never fails except on invalid input.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    clock: Arc<dyn Clock>,
}

impl MemoryStore {
    /// An operator state (forced open, disabled): no deadline, no probe.
    fn operator_state(&self, provider: &str, state: BreakerState) -> Result<Update, StateError> {
        self.change(provider, |entry, _| {
            entry.transition(state);
            entry.breaker.open_until_ms = 0;
            entry.clear_probe();
            true
        })
    }

    /// An empty store on the system clock.
    pub fn new() -> Self {
        MemoryStore::with_clock(Arc::new(SystemClock))
    }

    /// An empty store reading time from `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        MemoryStore { inner: Arc::new(Mutex::new(Inner::default())), clock }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-applied transition behind that matters more than
        // refusing all further calls would, so poisoning is ignored.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `apply` on `provider`'s entry under the lock, with the store's time.
    fn with_entry<T>(&self, provider: &str, apply: impl FnOnce(&mut Entry, u64) -> T) -> Result<T, StateError> {
        validate_name("provider", provider)?;
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        let entry = inner.breakers.entry(provider.to_owned()).or_default();
        Ok(apply(entry, now))
    }

    /// Applies `command` and reports whether it bumped the epoch.
    fn change(&self, provider: &str, command: impl FnOnce(&mut Entry, u64) -> bool) -> Result<Update, StateError> {
        self.with_entry(provider, |entry, now| {
            let changed = command(entry, now);
            Update { changed, view: entry.breaker.view(provider, now) }
        })
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let providers = self.lock().breakers.len();
        f.debug_struct("MemoryStore").field("providers", &providers).finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl BreakerStore for MemoryStore {
    async fn report(
        &self,
        provider: &str,
        node: &str,
        batch: OutcomeBatch,
        policy: &TripPolicy,
    ) -> Result<ReportOutcome, StateError> {
        validate_name("node", node)?;
        policy.validate()?;
        let window_secs = policy.window_secs();
        self.with_entry(provider, |entry, now| {
            let effect = if batch.epoch < entry.breaker.epoch {
                ReportEffect::Stale
            } else if matches!(entry.state(), BreakerState::Open | BreakerState::HalfOpen | BreakerState::ForcedOpen) {
                ReportEffect::Ignored
            } else {
                let second = now / 1000;
                let expires_at_ms = now + (window_secs + 1) * 1000;
                let bucket = entry.buckets.entry(second).or_default();
                bucket.value.successes += batch.successes;
                bucket.value.failures += batch.failures;
                bucket.value.slow_calls += batch.slow_calls;
                bucket.value.hard_errors += batch.hard_errors;
                bucket.expires_at_ms = expires_at_ms;
                if batch.is_bad() {
                    let nodes = entry.bad_nodes.entry(second).or_default();
                    nodes.value.insert(node.to_owned());
                    nodes.expires_at_ms = expires_at_ms;
                }
                entry.buckets.retain(|_, bucket| bucket.expires_at_ms > now);
                entry.bad_nodes.retain(|_, nodes| nodes.expires_at_ms > now);
                // Successes alone never decide a trip (the Redis script does the same): the next bad batch does.
                let decision = match entry.state() {
                    BreakerState::Closed if batch.is_bad() => {
                        trip_decision(&entry.window_counts(now, window_secs), policy)
                    }
                    _ => None,
                };
                match decision {
                    Some(hard_error) => {
                        entry.open_for_next(now, &policy.wait);
                        entry.breaker.misconfigured |= hard_error;
                        ReportEffect::Tripped { hard_error }
                    }
                    None => ReportEffect::Counted,
                }
            };
            ReportOutcome { effect, view: entry.breaker.view(provider, now) }
        })
    }

    async fn rate_limited(&self, provider: &str, epoch: u64, retry_after: Duration) -> Result<Update, StateError> {
        self.change(provider, |entry, now| {
            let until = now + ms(retry_after);
            if epoch < entry.closed_epoch {
                // Observed before the breaker last closed: that cooldown is over as far as the cluster knows.
                return false;
            }
            match entry.state() {
                // MetricsOnly is never held by the store (see `BreakerState`).
                BreakerState::ForcedOpen | BreakerState::Disabled | BreakerState::MetricsOnly => false,
                BreakerState::Open if until <= entry.breaker.open_until_ms => false,
                BreakerState::Open => {
                    entry.breaker.open_until_ms = until;
                    entry.breaker.epoch += 1;
                    true
                }
                BreakerState::Closed | BreakerState::HalfOpen => {
                    entry.transition(BreakerState::Open);
                    entry.breaker.open_until_ms = entry.breaker.open_until_ms.max(until);
                    entry.clear_probe();
                    true
                }
            }
        })
    }

    async fn acquire_probe(&self, provider: &str, node: &str, lease: Duration) -> Result<ProbeDecision, StateError> {
        validate_probe_lease(node, lease)?;
        self.with_entry(provider, |entry, now| {
            let breaker = &entry.breaker;
            let grant = match entry.state() {
                BreakerState::Open => now >= breaker.open_until_ms,
                BreakerState::HalfOpen if breaker.probe_owner == node && now < breaker.probe_until_ms => {
                    return ProbeDecision::Granted(breaker.view(provider, now));
                }
                BreakerState::HalfOpen => now >= breaker.probe_until_ms,
                BreakerState::Closed
                | BreakerState::ForcedOpen
                | BreakerState::Disabled
                | BreakerState::MetricsOnly => false,
            };
            if !grant {
                return ProbeDecision::Refused(entry.breaker.view(provider, now));
            }
            entry.transition(BreakerState::HalfOpen);
            entry.breaker.probe_owner = node.to_owned();
            entry.breaker.probe_until_ms = now + ms(lease);
            ProbeDecision::Granted(entry.breaker.view(provider, now))
        })
    }

    async fn renew_probe(
        &self,
        provider: &str,
        node: &str,
        epoch: u64,
        lease: Duration,
    ) -> Result<ProbeDecision, StateError> {
        validate_probe_lease(node, lease)?;
        self.with_entry(provider, |entry, now| {
            let breaker = &mut entry.breaker;
            let holds = breaker.state == Some(BreakerState::HalfOpen)
                && breaker.probe_owner == node
                && breaker.epoch == epoch
                && now < breaker.probe_until_ms;
            if !holds {
                return ProbeDecision::Refused(breaker.view(provider, now));
            }
            breaker.probe_until_ms = breaker.probe_until_ms.max(now + ms(lease));
            ProbeDecision::Granted(breaker.view(provider, now))
        })
    }

    async fn probe_result(
        &self,
        provider: &str,
        node: &str,
        epoch: u64,
        success: bool,
        wait: &OpenWait,
    ) -> Result<Update, StateError> {
        validate_name("node", node)?;
        wait.validate()?;
        self.change(provider, |entry, now| {
            let owns = entry.state() == BreakerState::HalfOpen
                && entry.breaker.probe_owner == node
                && entry.breaker.epoch == epoch;
            if !owns {
                return false;
            }
            if success {
                entry.close();
            } else {
                entry.open_for_next(now, wait);
            }
            true
        })
    }

    async fn get(&self, provider: &str) -> Result<ClusterView, StateError> {
        validate_name("provider", provider)?;
        let now = self.clock.now_ms();
        let inner = self.lock();
        Ok(match inner.breakers.get(provider) {
            Some(entry) => entry.breaker.view(provider, now),
            None => ClusterView::unknown(provider, now),
        })
    }

    async fn get_many(&self, providers: &[&str]) -> Result<Vec<ClusterView>, StateError> {
        for provider in providers {
            validate_name("provider", provider)?;
        }
        let now = self.clock.now_ms();
        let inner = self.lock();
        Ok(providers
            .iter()
            .map(|provider| match inner.breakers.get(*provider) {
                Some(entry) => entry.breaker.view(provider, now),
                None => ClusterView::unknown(provider, now),
            })
            .collect())
    }

    async fn force_open(&self, provider: &str) -> Result<Update, StateError> {
        self.operator_state(provider, BreakerState::ForcedOpen)
    }

    async fn disable(&self, provider: &str) -> Result<Update, StateError> {
        self.operator_state(provider, BreakerState::Disabled)
    }

    async fn reset(&self, provider: &str) -> Result<Update, StateError> {
        self.change(provider, |entry, _| {
            entry.close();
            true
        })
    }

    async fn add_escalations(&self, cascade: &str, stage: u32, counts: EscalationCounts) -> Result<(), StateError> {
        validate_name("cascade", cascade)?;
        let now = self.clock.now_ms();
        let width = ESCALATION_BUCKET.as_secs();
        let start = now / 1000 / width * width;
        let mut inner = self.lock();
        let buckets = inner.escalations.entry((cascade.to_owned(), stage)).or_default();
        buckets.retain(|_, bucket| bucket.expires_at_ms > now);
        let bucket = buckets.entry(start).or_default();
        bucket.value.total += counts.total;
        bucket.value.escalated += counts.escalated;
        bucket.expires_at_ms = now + ms(ESCALATION_RETENTION + ESCALATION_BUCKET);
        Ok(())
    }

    async fn escalation_rate(
        &self,
        cascade: &str,
        stage: u32,
        window: Duration,
    ) -> Result<EscalationCounts, StateError> {
        validate_name("cascade", cascade)?;
        let now = self.clock.now_ms();
        let starts = escalation_buckets(now, window)?;
        let inner = self.lock();
        let mut sum = EscalationCounts::default();
        if let Some(buckets) = inner.escalations.get(&(cascade.to_owned(), stage)) {
            for start in starts {
                if let Some(bucket) = buckets.get(&start).filter(|bucket| bucket.expires_at_ms > now) {
                    sum.total += bucket.value.total;
                    sum.escalated += bucket.value.escalated;
                }
            }
        }
        Ok(sum)
    }
}
