//! [`IdempotencyStore`] on Redis.
//!
//! A key's state lives under one hash tag, `idem:{key}`: `:fp` (the request's fingerprint), `:owner` (the owning
//! node instance) and `:answer`, each expiring with the retention (Redis `PX`, so node clocks never matter). An
//! owner's lease is `idem:lease:{node}`, one key per node instance, renewed with one `SET PX` per interval.
//! Claims and take-overs are one script (`switchyard_idempotency_claim_v2`), completion another
//! (`switchyard_idempotency_complete_v1`): one command each.

use std::time::Duration;

use super::RedisStore;
use crate::StateError;
use crate::idempotency::{Claim, IdempotencyStore, validate_key};
use crate::types::ms;

/// Braces would move the hash tag: escape them (and the escape character), so distinct names stay distinct.
fn tag(name: &str) -> String {
    name.replace('%', "%25").replace('{', "%7B").replace('}', "%7D")
}

impl RedisStore {
    fn idempotency_key(&self, key: &str) -> String {
        format!("{}idem:{{{}}}", self.key_prefix(), tag(key))
    }

    fn lease_key(&self, node: &str) -> String {
        format!("{}idem:lease:{{{}}}", self.key_prefix(), tag(node))
    }

    async fn claim_script(
        &self,
        key: &str,
        fingerprint: &str,
        from: Option<&str>,
        node: &str,
        retention: Duration,
    ) -> Result<Claim, StateError> {
        validate_key(key)?;
        let base = self.idempotency_key(key);
        let mut invocation = self.inner.scripts.idempotency_claim.key(format!("{base}:fp"));
        invocation.key(format!("{base}:owner")).key(format!("{base}:answer"));
        invocation.arg(fingerprint).arg(node).arg(ms(retention).max(1)).arg(from.unwrap_or(""));
        let (kind, value): (String, Vec<u8>) =
            self.bounded("idempotency_claim", async |connection| invocation.invoke_async(connection).await).await?;
        match kind.as_str() {
            "owned" => Ok(Claim::Owned),
            "taken" => Ok(Claim::Taken { owner: String::from_utf8_lossy(&value).into_owned() }),
            "answered" => Ok(Claim::Answered(value)),
            "conflict" => Ok(Claim::Conflict),
            other => Err(StateError::Protocol { operation: "idempotency_claim", detail: format!("unknown {other:?}") }),
        }
    }
}

#[async_trait::async_trait]
impl IdempotencyStore for RedisStore {
    async fn claim(&self, key: &str, fingerprint: &str, node: &str, retention: Duration) -> Result<Claim, StateError> {
        self.claim_script(key, fingerprint, None, node, retention).await
    }

    async fn take_over(
        &self,
        key: &str,
        fingerprint: &str,
        from: &str,
        node: &str,
        retention: Duration,
    ) -> Result<Claim, StateError> {
        self.claim_script(key, fingerprint, Some(from), node, retention).await
    }

    async fn renew(&self, node: &str, lease: Duration) -> Result<(), StateError> {
        let mut command = redis::cmd("SET");
        command.arg(self.lease_key(node)).arg(1).arg("PX").arg(ms(lease).max(1));
        self.bounded("idempotency_renew", async |connection| command.query_async::<()>(connection).await).await
    }

    async fn alive(&self, node: &str) -> Result<bool, StateError> {
        let mut command = redis::cmd("EXISTS");
        command.arg(self.lease_key(node));
        let found: u32 =
            self.bounded("idempotency_alive", async |connection| command.query_async(connection).await).await?;
        Ok(found > 0)
    }

    async fn complete(&self, key: &str, answer: &[u8], retention: Duration) -> Result<(), StateError> {
        validate_key(key)?;
        let base = self.idempotency_key(key);
        let mut invocation = self.inner.scripts.idempotency_complete.key(format!("{base}:fp"));
        invocation.key(format!("{base}:owner")).key(format!("{base}:answer"));
        invocation.arg(answer).arg(ms(retention).max(1));
        self.bounded("idempotency_complete", async |connection| invocation.invoke_async::<()>(connection).await).await
    }
}
