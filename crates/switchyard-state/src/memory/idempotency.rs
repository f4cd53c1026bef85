//! [`IdempotencyStore`] in process memory, on the store's clock.

use std::time::Duration;

use super::MemoryStore;
use crate::StateError;
use crate::idempotency::{Claim, IdempotencyStore, validate_key};
use crate::types::ms;

/// One claimed key.
#[derive(Debug, Default)]
pub(super) struct Claimed {
    owner: String,
    owner_until_ms: u64,
    answer: Option<(Vec<u8>, u64)>,
}

impl Claimed {
    fn answer(&self, now: u64) -> Option<&[u8]> {
        self.answer.as_ref().filter(|(_, until)| *until > now).map(|(answer, _)| answer.as_slice())
    }
}

#[async_trait::async_trait]
impl IdempotencyStore for MemoryStore {
    async fn claim(&self, key: &str, node: &str, ttl: Duration) -> Result<Claim, StateError> {
        validate_key(key)?;
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        inner.claims.retain(|_, c| c.owner_until_ms > now || c.answer(now).is_some());
        let claimed = inner.claims.entry(key.to_owned()).or_default();
        if let Some(answer) = claimed.answer(now) {
            return Ok(Claim::Answered(answer.to_vec()));
        }
        if claimed.owner_until_ms > now {
            return Ok(Claim::Taken { owner: claimed.owner.clone() });
        }
        *claimed = Claimed { owner: node.to_owned(), owner_until_ms: now + ms(ttl).max(1), answer: None };
        Ok(Claim::Owned)
    }

    async fn complete(&self, key: &str, answer: &[u8], ttl: Duration) -> Result<(), StateError> {
        validate_key(key)?;
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        inner.claims.entry(key.to_owned()).or_default().answer = Some((answer.to_vec(), now + ms(ttl).max(1)));
        Ok(())
    }

    async fn answer(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        validate_key(key)?;
        let now = self.clock.now_ms();
        Ok(self.lock().claims.get(key).and_then(|c| c.answer(now)).map(<[u8]>::to_vec))
    }
}
