//! [`IdempotencyStore`] on Redis: `idem:{key}:owner` (SET NX PX) and `idem:{key}:answer`, sharing a hash tag.

use std::time::Duration;

use super::RedisStore;
use crate::StateError;
use crate::idempotency::{Claim, IdempotencyStore, validate_key};
use crate::types::ms;

impl RedisStore {
    fn idempotency_key(&self, key: &str) -> String {
        // Braces would move the hash tag: escape them (and the escape character), so distinct ids stay distinct.
        let tag = key.replace('%', "%25").replace('{', "%7B").replace('}', "%7D");
        format!("{}idem:{{{tag}}}", self.key_prefix())
    }
}

#[async_trait::async_trait]
impl IdempotencyStore for RedisStore {
    async fn claim(&self, key: &str, node: &str, ttl: Duration) -> Result<Claim, StateError> {
        validate_key(key)?;
        let base = self.idempotency_key(key);
        let mut invocation = self.inner.scripts.idempotency_claim.key(format!("{base}:owner"));
        invocation.key(format!("{base}:answer")).arg(node).arg(ms(ttl).max(1));
        let mut connection = self.inner.connection.clone();
        let (kind, value): (String, Vec<u8>) =
            self.bounded("idempotency_claim", invocation.invoke_async(&mut connection)).await?;
        match kind.as_str() {
            "owned" => Ok(Claim::Owned),
            "taken" => Ok(Claim::Taken { owner: String::from_utf8_lossy(&value).into_owned() }),
            "answered" => Ok(Claim::Answered(value)),
            other => Err(StateError::Protocol { operation: "idempotency_claim", detail: format!("unknown {other:?}") }),
        }
    }

    async fn complete(&self, key: &str, answer: &[u8], ttl: Duration) -> Result<(), StateError> {
        validate_key(key)?;
        let mut command = redis::cmd("SET");
        command.arg(format!("{}:answer", self.idempotency_key(key))).arg(answer).arg("PX").arg(ms(ttl).max(1));
        let mut connection = self.inner.connection.clone();
        self.bounded("idempotency_complete", command.query_async::<()>(&mut connection)).await
    }

    async fn answer(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        validate_key(key)?;
        let mut command = redis::cmd("GET");
        command.arg(format!("{}:answer", self.idempotency_key(key)));
        let mut connection = self.inner.connection.clone();
        self.bounded("idempotency_answer", command.query_async::<Option<Vec<u8>>>(&mut connection)).await
    }
}
