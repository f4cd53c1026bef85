//! [`IdempotencyStore`] in process memory, on the store's clock.

use std::time::Duration;

use super::MemoryStore;
use crate::StateError;
use crate::idempotency::{Claim, IdempotencyStore, validate_key};
use crate::types::ms;

/// One claimed key: its fingerprint, owner and answer, all kept until `until_ms`.
#[derive(Debug, Default)]
pub(super) struct Claimed {
    fingerprint: String,
    owner: String,
    answer: Option<Vec<u8>>,
    until_ms: u64,
}

impl MemoryStore {
    /// The one claim decision, shared by `claim` and `take_over` (`from`: the dead owner being replaced).
    fn claim_or_take(
        &self,
        key: &str,
        fingerprint: &str,
        from: Option<&str>,
        node: &str,
        retention: Duration,
    ) -> Result<Claim, StateError> {
        validate_key(key)?;
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        inner.claims.retain(|_, c| c.until_ms > now);
        inner.leases.retain(|_, until| *until > now);
        if let Some(claimed) = inner.claims.get(key) {
            if claimed.fingerprint != fingerprint {
                return Ok(Claim::Conflict);
            }
            if let Some(answer) = &claimed.answer {
                return Ok(Claim::Answered(answer.clone()));
            }
            if from != Some(claimed.owner.as_str()) {
                return Ok(Claim::Taken { owner: claimed.owner.clone() });
            }
        }
        let until_ms = now + ms(retention).max(1);
        let claimed = Claimed { fingerprint: fingerprint.to_owned(), owner: node.to_owned(), answer: None, until_ms };
        inner.claims.insert(key.to_owned(), claimed);
        Ok(Claim::Owned)
    }
}

#[async_trait::async_trait]
impl IdempotencyStore for MemoryStore {
    async fn claim(&self, key: &str, fingerprint: &str, node: &str, retention: Duration) -> Result<Claim, StateError> {
        self.claim_or_take(key, fingerprint, None, node, retention)
    }

    async fn take_over(
        &self,
        key: &str,
        fingerprint: &str,
        from: &str,
        node: &str,
        retention: Duration,
    ) -> Result<Claim, StateError> {
        self.claim_or_take(key, fingerprint, Some(from), node, retention)
    }

    async fn renew(&self, node: &str, lease: Duration) -> Result<(), StateError> {
        let now = self.clock.now_ms();
        self.lock().leases.insert(node.to_owned(), now + ms(lease).max(1));
        Ok(())
    }

    async fn alive(&self, node: &str) -> Result<bool, StateError> {
        let now = self.clock.now_ms();
        Ok(self.lock().leases.get(node).is_some_and(|until| *until > now))
    }

    async fn complete(&self, key: &str, answer: &[u8], retention: Duration) -> Result<(), StateError> {
        validate_key(key)?;
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        let claimed = inner.claims.entry(key.to_owned()).or_default();
        claimed.answer = Some(answer.to_vec());
        claimed.until_ms = claimed.until_ms.max(now + ms(retention).max(1));
        Ok(())
    }
}
