//! Answering a query once, cluster-wide.
//!
//! Core NATS is at-most-once, so clients retry, and the queue group may hand a retry to another node than the
//! first copy. The node that first sees an idempotency key claims it here; the others see who owns it and wait
//! for its answer, or get that answer at once when it is already stored.
//!
//! - A key is bound to the **fingerprint** of its request: the same key with another fingerprint is a
//!   [`Claim::Conflict`] (Stripe's rule), so a client reusing or guessing an id never gets another's answer.
//! - Ownership is a **short lease held by the owner node**, not by each key: a claim names its owner (a node
//!   instance), and the owner keeps one lease alive for all its claims with [`IdempotencyStore::renew`], one
//!   store command per interval per node however many queries it owns. A waiter that finds the owner's lease
//!   gone ([`IdempotencyStore::alive`]) [`take_over`](IdempotencyStore::take_over)s the key, which succeeds for
//!   exactly one waiter, and answers the query itself. A lease per node also keeps each command on one key (or
//!   one hash tag), as Redis Cluster requires.
//! - The fingerprint, owner and answer are kept for a **retention** chosen by the caller (at least the query's
//!   deadline), so a late copy still gets the stored answer.
//!
//! Costs: one store round trip before a query's upstream call (the claim), one after it, off the reply path
//! ([`IdempotencyStore::complete`]); queries without an id never touch the store.

use std::time::Duration;

use crate::StateError;

/// Longest accepted key (a route name and a client's id).
pub const MAX_KEY_LEN: usize = 256;

/// What [`IdempotencyStore::claim`] (or [`IdempotencyStore::take_over`]) found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The caller owns the key now and must [`IdempotencyStore::complete`] it.
    Owned,
    /// Another node instance owns it and has not answered yet.
    Taken { owner: String },
    /// The key was answered; here is the stored answer.
    Answered(Vec<u8>),
    /// The key is bound to another request (another fingerprint).
    Conflict,
}

/// Cluster-wide claims on idempotency keys, with their answers and the owners' leases.
#[async_trait::async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Claims `key`, bound to `fingerprint`, for node instance `node`, keeping the claim for `retention`; or
    /// reports the owner, the stored answer, or a conflict. A live claim is [`Claim::Taken`] even for its own
    /// owner: each node de-duplicates its own copies before it asks.
    async fn claim(&self, key: &str, fingerprint: &str, node: &str, retention: Duration) -> Result<Claim, StateError>;
    /// Takes `key` over from `from`, whose lease the caller found expired: [`Claim::Owned`] only when `from` still
    /// owns it unanswered (so exactly one of several waiters wins); otherwise what [`claim`](Self::claim) reports.
    async fn take_over(
        &self,
        key: &str,
        fingerprint: &str,
        from: &str,
        node: &str,
        retention: Duration,
    ) -> Result<Claim, StateError>;
    /// Extends the lease of node instance `node`, covering every key it owns, to `lease` from now.
    async fn renew(&self, node: &str, lease: Duration) -> Result<(), StateError>;
    /// Whether `node`'s lease is live.
    async fn alive(&self, node: &str) -> Result<bool, StateError>;
    /// Stores the answer of an owned key; the key, its fingerprint and answer are kept for `retention`.
    async fn complete(&self, key: &str, answer: &[u8], retention: Duration) -> Result<(), StateError>;
}

pub(crate) fn validate_key(key: &str) -> Result<(), StateError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(StateError::InvalidName {
            kind: "idempotency key",
            name: key.chars().take(64).collect(),
            reason: "must be 1 to 256 bytes",
        });
    }
    Ok(())
}

/// Checks shared by every implementation. `advance` must move the store's time forward by its argument (a
/// clock move for the memory store, a real wait for Redis, whose expiries are its own).
#[cfg(any(test, feature = "testkit"))]
pub mod conformance {
    use super::*;

    /// Runs every check on `store` with keys under `prefix`. `lease` and `retention` should be short on a store
    /// that really waits (`retention` at least four leases).
    pub async fn check_all<F, Fut>(
        store: &dyn IdempotencyStore,
        prefix: &str,
        lease: Duration,
        retention: Duration,
        advance: F,
    ) where
        F: Fn(Duration) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let (a, b, c) = (format!("{prefix}-node-a"), format!("{prefix}-node-b"), format!("{prefix}-node-c"));
        let key = format!("{prefix}/q1");
        store.renew(&a, lease).await.ok();
        assert_eq!(store.claim(&key, "fp-1", &a, retention).await.ok(), Some(Claim::Owned));
        assert_eq!(
            store.claim(&key, "fp-1", &b, retention).await.ok(),
            Some(Claim::Taken { owner: a.clone() }),
            "a second node sees the owner"
        );
        assert_eq!(store.claim(&key, "fp-1", &a, retention).await.ok(), Some(Claim::Taken { owner: a.clone() }));
        assert_eq!(store.claim(&key, "fp-2", &b, retention).await.ok(), Some(Claim::Conflict), "another request");
        assert_eq!(store.alive(&a).await.ok(), Some(true), "a renewed lease is live");
        assert_eq!(store.alive(&b).await.ok(), Some(false), "a node that never renewed has no lease");
        assert_eq!(
            store.take_over(&key, "fp-1", &c, &b, retention).await.ok(),
            Some(Claim::Taken { owner: a.clone() }),
            "a take-over from a node that is not the owner changes nothing"
        );
        store.complete(&key, b"the answer", retention).await.ok();
        assert_eq!(store.claim(&key, "fp-1", &c, retention).await.ok(), Some(Claim::Answered(b"the answer".to_vec())));
        assert_eq!(store.claim(&key, "fp-2", &c, retention).await.ok(), Some(Claim::Conflict), "still bound");
        assert_eq!(
            store.take_over(&key, "fp-1", &a, &c, retention).await.ok(),
            Some(Claim::Answered(b"the answer".to_vec()))
        );

        let other = format!("{prefix}/q2");
        assert_eq!(store.claim(&other, "fp-9", &b, retention).await.ok(), Some(Claim::Owned), "keys are independent");

        // The owner stops renewing (it died): once its lease expires, exactly one waiter takes the key over.
        let orphan = format!("{prefix}/orphan");
        assert_eq!(store.claim(&orphan, "fp-1", &a, retention).await.ok(), Some(Claim::Owned));
        advance(lease + lease / 2).await;
        assert_eq!(store.alive(&a).await.ok(), Some(false), "an unrenewed lease expires");
        assert_eq!(
            store.claim(&orphan, "fp-1", &b, retention).await.ok(),
            Some(Claim::Taken { owner: a.clone() }),
            "the claim outlives its owner's lease; only a take-over moves it"
        );
        assert_eq!(store.take_over(&orphan, "fp-2", &a, &b, retention).await.ok(), Some(Claim::Conflict));
        assert_eq!(store.take_over(&orphan, "fp-1", &a, &b, retention).await.ok(), Some(Claim::Owned));
        assert_eq!(
            store.take_over(&orphan, "fp-1", &a, &c, retention).await.ok(),
            Some(Claim::Taken { owner: b.clone() }),
            "a second waiter loses the take-over"
        );

        // Renewal keeps ownership across many lease periods.
        let kept = format!("{prefix}/kept");
        store.renew(&c, lease).await.ok();
        assert_eq!(store.claim(&kept, "fp-1", &c, retention).await.ok(), Some(Claim::Owned));
        for _ in 0..3 {
            advance(lease / 2).await;
            store.renew(&c, lease).await.ok();
        }
        assert_eq!(store.alive(&c).await.ok(), Some(true), "renewed leases stay live past the first lease");
        assert_eq!(store.claim(&kept, "fp-1", &b, retention).await.ok(), Some(Claim::Taken { owner: c.clone() }));

        // After the retention everything is forgotten, the binding to a fingerprint included.
        advance(retention + lease).await;
        assert_eq!(store.claim(&key, "fp-2", &b, retention).await.ok(), Some(Claim::Owned), "an expired key is free");
        assert!(store.claim("", "fp-1", &a, retention).await.is_err(), "an empty key is refused");
        assert!(store.claim(&"k".repeat(MAX_KEY_LEN + 1), "fp-1", &a, retention).await.is_err());
    }

    /// Many concurrent claims of one key: exactly one owner.
    pub async fn check_one_owner(store: std::sync::Arc<dyn IdempotencyStore>, prefix: &str) {
        let key = format!("{prefix}/race");
        let claims = (0..20).map(|i| {
            let (store, key) = (store.clone(), key.clone());
            async move { store.claim(&key, "fp", &format!("node-{i}"), Duration::from_secs(5)).await }
        });
        let results = futures::future::join_all(claims).await;
        let owners = results.iter().filter(|r| matches!(r, Ok(Claim::Owned))).count();
        assert_eq!(owners, 1, "{results:?}");
    }
}
