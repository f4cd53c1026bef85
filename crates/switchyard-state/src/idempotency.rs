//! Answering a query once, cluster-wide.
//!
//! Core NATS is at-most-once, so clients retry, and the queue group may hand a retry to another node than the
//! first copy. The node that first sees an idempotency key claims it here; the others see who owns it and wait
//! for the answer the owner stores, or get that answer at once when it is already there. Keys expire with the
//! query's deadline. This is one store round trip per query *that carries an id*; queries without an id never
//! touch the store.

use std::time::Duration;

use crate::StateError;

/// Longest accepted key (a route name and a client's id).
pub const MAX_KEY_LEN: usize = 256;

/// What [`IdempotencyStore::claim`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Nobody had the key: the caller owns it and must [`IdempotencyStore::complete`] it.
    Owned,
    /// Another node owns it and has not answered yet.
    Taken { owner: String },
    /// The key was answered; here is the stored answer.
    Answered(Vec<u8>),
}

/// Cluster-wide claims on idempotency keys, with their answers.
#[async_trait::async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Claims `key` for `node` until `ttl` from now, or reports who has it or its answer.
    async fn claim(&self, key: &str, node: &str, ttl: Duration) -> Result<Claim, StateError>;
    /// Stores the answer of an owned key, kept for `ttl`.
    async fn complete(&self, key: &str, answer: &[u8], ttl: Duration) -> Result<(), StateError>;
    /// The stored answer of `key`, if there is one yet.
    async fn answer(&self, key: &str) -> Result<Option<Vec<u8>>, StateError>;
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

/// Checks shared by every implementation; `expire` makes `ttl`-old keys disappear (a clock move or a real wait).
#[cfg(any(test, feature = "testkit"))]
pub mod conformance {
    use super::*;

    /// Runs every check on `store` with keys under `prefix`; `expire` must let a key with `ttl` expire.
    pub async fn check_all<F, Fut>(store: &dyn IdempotencyStore, prefix: &str, ttl: Duration, expire: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let key = format!("{prefix}/q1");
        assert_eq!(store.claim(&key, "node-a", ttl).await.ok(), Some(Claim::Owned));
        assert_eq!(
            store.claim(&key, "node-b", ttl).await.ok(),
            Some(Claim::Taken { owner: "node-a".into() }),
            "a second node sees the owner"
        );
        assert_eq!(store.answer(&key).await.ok(), Some(None));
        store.complete(&key, b"the answer", ttl).await.ok();
        assert_eq!(store.answer(&key).await.ok(), Some(Some(b"the answer".to_vec())));
        assert_eq!(store.claim(&key, "node-c", ttl).await.ok(), Some(Claim::Answered(b"the answer".to_vec())));

        let other = format!("{prefix}/q2");
        assert_eq!(store.claim(&other, "node-b", ttl).await.ok(), Some(Claim::Owned), "keys are independent");

        expire().await;
        assert_eq!(store.claim(&key, "node-d", ttl).await.ok(), Some(Claim::Owned), "an expired key is free again");
        assert!(store.claim("", "node-a", ttl).await.is_err(), "an empty key is refused");
        assert!(store.claim(&"k".repeat(MAX_KEY_LEN + 1), "node-a", ttl).await.is_err());
    }

    /// Many concurrent claims of one key: exactly one owner.
    pub async fn check_one_owner(store: std::sync::Arc<dyn IdempotencyStore>, prefix: &str) {
        let key = format!("{prefix}/race");
        let claims = (0..20).map(|i| {
            let (store, key) = (store.clone(), key.clone());
            async move { store.claim(&key, &format!("node-{i}"), Duration::from_secs(5)).await }
        });
        let results = futures::future::join_all(claims).await;
        let owners = results.iter().filter(|r| matches!(r, Ok(Claim::Owned))).count();
        assert_eq!(owners, 1, "{results:?}");
    }
}
