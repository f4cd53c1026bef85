//! The cluster's shared breaker state, behind one narrow trait we own.
//!
//! Every node keeps its own breakers, but a provider is tripped for the whole cluster only when the cluster
//! agrees: outcomes from several nodes, a single half-open probe, a 429 cooldown everyone honours. That agreement
//! lives in Redis in production and in process memory in the embedded demo and in tests. Both sit behind
//! [`BreakerStore`]:
//! - [`RedisStore`] runs every transition as one versioned Lua script that reads Redis `TIME` (node clocks never
//!   matter) and bumps the breaker's epoch; keys carry one hash tag per provider, so Redis Cluster works; every
//!   call is bounded by a short timeout, so a paused or restarting Redis never blocks a caller for long;
//! - [`MemoryStore`] keeps the same state in a mutex'd map with an injectable [`Clock`].
//!
//! One conformance suite (`conformance` and `state_conformance_suite!`, behind the `testkit` feature) runs
//! against both, so a component tested on [`MemoryStore`] behaves the same on Redis.
//!
//! # The protocol, in short
//! - Nodes [`report`](BreakerStore::report) batched outcomes, successes included so the rate is honest (about
//!   every 100 ms, at once on a local trip), into
//!   per-second buckets. A closed breaker trips when the window's failure or slow-call rate reaches the
//!   threshold, with enough calls, and with at least `min_reporting_nodes` nodes reporting trouble, so one bad
//!   node cannot trip the cluster; hard errors (authentication) trip with one node (see [`TripPolicy`]).
//! - Once the open wait has passed, exactly one node wins [`acquire_probe`](BreakerStore::acquire_probe) and
//!   sends the one probe call; its [`probe_result`](BreakerStore::probe_result) closes the breaker or re-opens
//!   it for a longer wait. The lease is short (about a second or two) and its holder
//!   [renews](BreakerStore::renew_probe) it while the probe runs, so a live holder keeps it however long the call
//!   takes, and a lease whose holder died expires within one lease: then another node takes it.
//! - [`rate_limited`](BreakerStore::rate_limited) opens a 429 cooldown that later 429s extend, never shorten. A
//!   cooldown carries the epoch its call was admitted under; one observed before the breaker last closed is stale
//!   and never re-opens it (the store remembers the epoch of the last close).
//! - Operators [`force_open`](BreakerStore::force_open), [`disable`](BreakerStore::disable) and
//!   [`reset`](BreakerStore::reset).
//! - Every change bumps the epoch. A report made under an older epoch is stale and changes nothing; nodes that
//!   hear about transitions out of order keep the highest epoch.
//! - Cascade escalation counters ([`add_escalations`](BreakerStore::add_escalations),
//!   [`escalation_rate`](BreakerStore::escalation_rate)) give the cluster one escalation rate per stage.
//!
//! A healthy provider costs no store round trip per query: callers batch outcomes and poll views about once a
//! second; the store is never on a query's path.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

use std::sync::Arc;
use std::time::Duration;

#[cfg(any(test, feature = "testkit"))]
pub mod conformance;
mod error;
pub mod idempotency;
mod memory;
mod redis;
mod types;

pub use self::redis::{
    DEFAULT_CALL_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEY_PREFIX, RedisEndpoint, RedisOptions, RedisStore, scripts,
};
pub use error::{BoxError, StateError};
pub use idempotency::{Claim, IdempotencyStore};
pub use memory::{Clock, ManualClock, MemoryStore, SystemClock};
pub use types::{
    BreakerState, ClusterView, ESCALATION_BUCKET, ESCALATION_RETENTION, EscalationCounts, MAX_NAME_LEN, MAX_WINDOW,
    OpenWait, OutcomeBatch, ProbeDecision, ProbeLease, ReportEffect, ReportOutcome, TripPolicy, Update, validate_name,
    validate_probe_lease,
};

/// The cluster's shared breaker state and escalation counters.
///
/// All times are the store's: Redis `TIME` for [`RedisStore`], the injected [`Clock`] for [`MemoryStore`].
/// Names (providers, nodes, cascades) are checked with [`validate_name`]; a bad one fails with
/// [`StateError::InvalidName`] before anything is sent. Every state change bumps the breaker's epoch.
#[async_trait::async_trait]
pub trait BreakerStore: Send + Sync + 'static {
    /// Adds `node`'s batched outcomes for `provider` to the current second's bucket, then decides a cluster trip
    /// over `policy.window` (see [`TripPolicy`]), all in one atomic step.
    ///
    /// - A batch whose epoch is older than the breaker's changes nothing: [`ReportEffect::Stale`].
    /// - Open, half-open and forced-open breakers do not count outcomes: [`ReportEffect::Ignored`].
    /// - A closed breaker that trips becomes open: epoch + 1, consecutive opens + 1, open until now +
    ///   `policy.wait.for_open(opens)`; a hard-error trip also marks the provider misconfigured.
    /// - A disabled breaker counts outcomes but never trips.
    /// - A batch of successes only is counted but decides nothing: a trip is decided when a bad batch arrives.
    async fn report(
        &self,
        provider: &str,
        node: &str,
        batch: OutcomeBatch,
        policy: &TripPolicy,
    ) -> Result<ReportOutcome, StateError>;

    /// A 429 cooldown observed by a call admitted under `epoch`: the breaker is open until at least now +
    /// `retry_after` (the caller applies its floor, such as 1 s). Extends an open deadline, never shortens it; a
    /// half-open breaker re-opens (its probe lease is dropped). Does not count as a consecutive open. Changes (and
    /// bumps the epoch) only when the state changes or the deadline moves; forced-open and disabled breakers are
    /// left alone.
    ///
    /// A stale cooldown changes nothing: one whose `epoch` is older than the epoch the breaker got when it last
    /// closed (a successful probe or a reset). Its call was made before that close, and the close is newer
    /// evidence that the provider answers, so it never re-opens the breaker nor stretches a later open. A cooldown
    /// from an older epoch of the same closed spell (the breaker opened since, say by a trip or another 429, but
    /// has not closed) still counts: the provider asked to be left alone, and nothing proved otherwise since.
    async fn rate_limited(&self, provider: &str, epoch: u64, retry_after: Duration) -> Result<Update, StateError>;

    /// Asks for the half-open probe lease. Granted to exactly one node in the cluster when the breaker is open
    /// and its deadline has passed (state becomes half-open, epoch + 1, `node` owns the lease until now +
    /// `lease`), or when it is half-open and the previous lease expired unreported (new owner, epoch + 1). The
    /// owner asking again while its lease holds gets the same grant back (same epoch), so a retry after a timed
    /// out call is safe. Everyone else is refused.
    async fn acquire_probe(&self, provider: &str, node: &str, lease: Duration) -> Result<ProbeDecision, StateError>;

    /// The probe owner keeps its lease while the probe runs: when the breaker is half-open, `node` owns the lease
    /// of `epoch` and it has not expired, the lease runs until at least now + `lease` (never shortened) and the
    /// answer is [`ProbeDecision::Granted`]. Renewing is not a transition: the epoch stays, so the probe's result
    /// is still reported under the grant's epoch. Anything else (another owner, a new epoch, a lease that already
    /// lapsed and may have been taken) is [`ProbeDecision::Refused`] and changes nothing: a holder that was too
    /// slow to renew has lost the lease.
    async fn renew_probe(
        &self,
        provider: &str,
        node: &str,
        epoch: u64,
        lease: Duration,
    ) -> Result<ProbeDecision, StateError>;

    /// The probe owner reports its call. Applied only when the breaker is half-open, `node` owns the lease and
    /// `epoch` is the grant's epoch; otherwise nothing changes. Success closes the breaker (consecutive opens
    /// and the misconfigured flag reset, outcome buckets cleared, epoch + 1); failure re-opens it with consecutive
    /// opens + 1 and the longer `wait.for_open(opens)` (epoch + 1).
    async fn probe_result(
        &self,
        provider: &str,
        node: &str,
        epoch: u64,
        success: bool,
        wait: &OpenWait,
    ) -> Result<Update, StateError>;

    /// The breaker of `provider`; a provider never seen is closed with epoch 0.
    async fn get(&self, provider: &str) -> Result<ClusterView, StateError>;

    /// The breakers of `providers`, in the same order (the poll backstop reads all of a node's providers at once).
    async fn get_many(&self, providers: &[&str]) -> Result<Vec<ClusterView>, StateError>;

    /// Operator command: the breaker is forced open until [`reset`](BreakerStore::reset). Always bumps the epoch.
    async fn force_open(&self, provider: &str) -> Result<Update, StateError>;

    /// Operator command: the breaker is switched off (calls always flow, nothing trips) until
    /// [`reset`](BreakerStore::reset). Always bumps the epoch.
    async fn disable(&self, provider: &str) -> Result<Update, StateError>;

    /// Operator command: the breaker is closed, consecutive opens, misconfigured flag, probe lease and outcome
    /// buckets cleared. Always bumps the epoch.
    async fn reset(&self, provider: &str) -> Result<Update, StateError>;

    /// Adds a batch of cascade escalation counts for `stage` of `cascade` to the current
    /// [`ESCALATION_BUCKET`]; buckets expire after [`ESCALATION_RETENTION`].
    async fn add_escalations(&self, cascade: &str, stage: u32, counts: EscalationCounts) -> Result<(), StateError>;

    /// Counts one query of `stage` of `cascade`, escalated or not. Prefer batching with
    /// [`add_escalations`](BreakerStore::add_escalations) on hot paths.
    async fn incr_escalation(&self, cascade: &str, stage: u32, escalated: bool) -> Result<(), StateError> {
        let counts = EscalationCounts { total: 1, escalated: u64::from(escalated) };
        self.add_escalations(cascade, stage, counts).await
    }

    /// The cluster's escalation counts for `stage` of `cascade` over the last `window`, rounded up to whole
    /// buckets (the current, partial one included); at most [`ESCALATION_RETENTION`].
    async fn escalation_rate(
        &self,
        cascade: &str,
        stage: u32,
        window: Duration,
    ) -> Result<EscalationCounts, StateError>;
}

/// A shared store is a store, so `Arc<dyn BreakerStore>` can be handed to code generic over `S: BreakerStore`.
#[async_trait::async_trait]
impl<S: BreakerStore + ?Sized> BreakerStore for Arc<S> {
    async fn report(
        &self,
        provider: &str,
        node: &str,
        batch: OutcomeBatch,
        policy: &TripPolicy,
    ) -> Result<ReportOutcome, StateError> {
        (**self).report(provider, node, batch, policy).await
    }

    async fn rate_limited(&self, provider: &str, epoch: u64, retry_after: Duration) -> Result<Update, StateError> {
        (**self).rate_limited(provider, epoch, retry_after).await
    }

    async fn renew_probe(
        &self,
        provider: &str,
        node: &str,
        epoch: u64,
        lease: Duration,
    ) -> Result<ProbeDecision, StateError> {
        (**self).renew_probe(provider, node, epoch, lease).await
    }

    async fn acquire_probe(&self, provider: &str, node: &str, lease: Duration) -> Result<ProbeDecision, StateError> {
        (**self).acquire_probe(provider, node, lease).await
    }

    async fn probe_result(
        &self,
        provider: &str,
        node: &str,
        epoch: u64,
        success: bool,
        wait: &OpenWait,
    ) -> Result<Update, StateError> {
        (**self).probe_result(provider, node, epoch, success, wait).await
    }

    async fn get(&self, provider: &str) -> Result<ClusterView, StateError> {
        (**self).get(provider).await
    }

    async fn get_many(&self, providers: &[&str]) -> Result<Vec<ClusterView>, StateError> {
        (**self).get_many(providers).await
    }

    async fn force_open(&self, provider: &str) -> Result<Update, StateError> {
        (**self).force_open(provider).await
    }

    async fn disable(&self, provider: &str) -> Result<Update, StateError> {
        (**self).disable(provider).await
    }

    async fn reset(&self, provider: &str) -> Result<Update, StateError> {
        (**self).reset(provider).await
    }

    async fn add_escalations(&self, cascade: &str, stage: u32, counts: EscalationCounts) -> Result<(), StateError> {
        (**self).add_escalations(cascade, stage, counts).await
    }

    async fn incr_escalation(&self, cascade: &str, stage: u32, escalated: bool) -> Result<(), StateError> {
        (**self).incr_escalation(cascade, stage, escalated).await
    }

    async fn escalation_rate(
        &self,
        cascade: &str,
        stage: u32,
        window: Duration,
    ) -> Result<EscalationCounts, StateError> {
        (**self).escalation_rate(cascade, stage, window).await
    }
}
