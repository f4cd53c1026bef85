//! The shared cluster state a node uses, connected from the `[redis]` section of its configuration.

use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;

use switchyard_state::{BreakerStore, IdempotencyStore, RedisEndpoint, RedisOptions, RedisStore, StateError};

use crate::config::RedisSection;

/// The stores a node shares with the rest of its cluster. What is `None` stays node-local.
#[derive(Clone, Default)]
pub struct SharedState {
    pub idempotency: Option<Arc<dyn IdempotencyStore>>,
    pub breakers: Option<Arc<dyn BreakerStore>>,
}

impl SharedState {
    /// Everything in one store (a `RedisStore` in production, a `MemoryStore` in the demo and tests).
    pub fn from_store<S: IdempotencyStore + BreakerStore + Clone>(store: S) -> Self {
        SharedState { idempotency: Some(Arc::new(store.clone())), breakers: Some(Arc::new(store)) }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateConnectError {
    /// The URL's environment variable (`redis.url_env`) is missing or holds no Redis URL.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    State(#[from] StateError),
}

/// Connects without waiting for Redis: a node starts (and serves) while Redis is down, and every call is
/// bounded by `call_timeout_ms` until it is back. One server (`url`, `url_env`), a Redis Cluster
/// (`cluster_urls`) or a Sentinel-managed master (`sentinel_urls`, `sentinel_master`).
pub async fn connect(section: &RedisSection) -> Result<SharedState, StateConnectError> {
    let endpoint = match (&section.cluster_urls, &section.sentinel_urls, &section.sentinel_master) {
        (Some(urls), _, _) => RedisEndpoint::Cluster(urls.clone()),
        (None, Some(sentinels), Some(master)) => {
            RedisEndpoint::Sentinel { sentinels: sentinels.clone(), master: master.clone() }
        }
        _ => match crate::secrets::redis_url(section)? {
            Some(url) => RedisEndpoint::Server(url.expose_secret().to_owned()),
            None => return Ok(SharedState::default()),
        },
    };
    crate::secrets::redis_tls_files(section)?;
    let options = RedisOptions {
        key_prefix: section.key_prefix.clone(),
        call_timeout: Duration::from_millis(section.call_timeout_ms),
        tls_ca_file: section.tls_ca_file.clone(),
        tls_client_cert: section.tls_cert_file.clone(),
        tls_client_key: section.tls_key_file.clone(),
        ..RedisOptions::default()
    };
    Ok(SharedState::from_store(RedisStore::connect_lazy(endpoint, options).await?))
}
