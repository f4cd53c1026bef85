//! Where a [`RedisStore`](crate::RedisStore) finds Redis: one server, a Redis Cluster, or the master a set of
//! Sentinels names; and the one connection type the store's calls go through, whichever it is.
//!
//! - One server: a `ConnectionManager`, which reconnects to the same address in the background.
//! - Redis Cluster: the redis crate's cluster connection, which learns the slot map from the seed nodes, follows
//!   `MOVED`/`ASK` and refreshes the map after a failover. Every script the store runs declares its keys, all of
//!   one hash tag, so each call goes to one node.
//! - Sentinel: a `ConnectionManager` to the master the Sentinels name, found by a background task. A call that
//!   fails on the connection (refused, reset, timed out, or `READONLY` from a demoted master) asks that task to
//!   look again; calls keep using the old master until the Sentinels name another, so a failover costs the calls
//!   made while it is under way, never a blocked caller. Sentinels and master share the credentials and the TLS
//!   mode of the sentinel URLs.
//!
//! Each form connects lazily, so a node starts (and serves on its local breakers) while Redis is away.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::{
    Cmd, ErrorKind, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, RedisResult, ServerErrorKind, Value,
};
use tokio::sync::watch;

use super::options::{RedisOptions, redact_url, tls_certificates};
use crate::StateError;

/// Where the store's Redis is.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisEndpoint {
    /// One server: `redis://` or `rediss://`, an ACL user and password may be in the URL.
    Server(String),
    /// A Redis Cluster, given by some of its nodes (any will do; the client discovers the others). All URLs use
    /// the same scheme; credentials in the first one apply to every node.
    Cluster(Vec<String>),
    /// The master called `master` by the Sentinels at `sentinels` (`redis://host:26379`).
    Sentinel {
        /// Sentinel URLs; their credentials and TLS mode are used for the master too.
        sentinels: Vec<String>,
        /// The name the Sentinels monitor the master under (`sentinel monitor <name> ...`).
        master: String,
    },
}

impl RedisEndpoint {
    /// A description for logs and errors, every password replaced by `***`.
    pub fn redacted(&self) -> String {
        let list = |urls: &[String]| urls.iter().map(|url| redact_url(url)).collect::<Vec<_>>().join(",");
        match self {
            RedisEndpoint::Server(url) => redact_url(url),
            RedisEndpoint::Cluster(urls) => format!("cluster {}", list(urls)),
            RedisEndpoint::Sentinel { sentinels, master } => {
                format!("sentinel master {master} via {}", list(sentinels))
            }
        }
    }

    /// Rejects an endpoint that cannot work, naming the field.
    pub fn validate(&self) -> Result<(), StateError> {
        let scheme_ok = |url: &str| url.starts_with("redis://") || url.starts_with("rediss://");
        let check_list = |field: &'static str, urls: &[String]| {
            if urls.is_empty() {
                return Err(StateError::config(field, "at least one URL is required"));
            }
            if let Some(bad) = urls.iter().find(|url| !scheme_ok(url)) {
                return Err(StateError::config(
                    field,
                    format!("{} must start with redis:// or rediss://", redact_url(bad)),
                ));
            }
            if urls.iter().any(|url| url.starts_with("rediss://"))
                != urls.iter().all(|url| url.starts_with("rediss://"))
            {
                return Err(StateError::config(field, "mixes redis:// and rediss:// URLs"));
            }
            Ok(())
        };
        match self {
            RedisEndpoint::Server(_) => Ok(()),
            RedisEndpoint::Cluster(urls) => check_list("cluster_urls", urls),
            RedisEndpoint::Sentinel { sentinels, master } => {
                check_list("sentinel_urls", sentinels)?;
                if master.trim().is_empty() {
                    return Err(StateError::config("sentinel_master", "must not be empty"));
                }
                Ok(())
            }
        }
    }
}

impl fmt::Debug for RedisEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl From<&str> for RedisEndpoint {
    fn from(url: &str) -> Self {
        RedisEndpoint::Server(url.to_owned())
    }
}

impl From<&String> for RedisEndpoint {
    fn from(url: &String) -> Self {
        RedisEndpoint::Server(url.clone())
    }
}

impl From<String> for RedisEndpoint {
    fn from(url: String) -> Self {
        RedisEndpoint::Server(url)
    }
}

/// The store's way to Redis, shared by its clones.
pub(super) enum Connection {
    Server(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(Arc<SentinelMaster>),
}

/// One connection a call sends its commands on (cheap clones of a multiplexed connection).
#[derive(Clone)]
pub(super) enum Handle {
    Server(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Handle {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Handle::Server(connection) => connection.req_packed_command(cmd),
            Handle::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Handle::Server(connection) => connection.req_packed_commands(pipeline, offset, count),
            Handle::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Handle::Server(connection) => connection.get_db(),
            Handle::Cluster(connection) => connection.get_db(),
        }
    }
}

impl Connection {
    /// Builds the connection without waiting for Redis; fails only on unusable options.
    pub(super) fn lazy(endpoint: &RedisEndpoint, options: &RedisOptions) -> Result<Self, StateError> {
        endpoint.validate()?;
        match endpoint {
            RedisEndpoint::Server(url) => {
                let client = super::options::client(url, options)?;
                let manager = ConnectionManager::new_lazy_with_config(client, manager_config(options))
                    .map_err(|error| connect_error(endpoint, error))?;
                Ok(Connection::Server(manager))
            }
            RedisEndpoint::Cluster(urls) => {
                let client = cluster_client(urls, options)?;
                Ok(Connection::Cluster(client.get_pending_async_connection_with_config(cluster_config(options))))
            }
            RedisEndpoint::Sentinel { sentinels, master } => {
                Ok(Connection::Sentinel(SentinelMaster::start(sentinels, master, options)?))
            }
        }
    }

    /// A first connection made now, so that its real error (refused, bad password, TLS, not a cluster) is
    /// reported instead of a timeout behind the background reconnection.
    pub(super) async fn probe(endpoint: &RedisEndpoint, options: &RedisOptions) -> Result<(), StateError> {
        endpoint.validate()?;
        let attempt = async {
            match endpoint {
                RedisEndpoint::Server(url) => {
                    let client = super::options::client(url, options)?;
                    let config = redis::AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(options.connect_timeout))
                        .set_response_timeout(Some(options.connect_timeout));
                    let mut connection =
                        client.get_multiplexed_async_connection_with_config(&config).await.map_err(boxed)?;
                    redis::cmd("PING").query_async::<()>(&mut connection).await.map_err(boxed)
                }
                RedisEndpoint::Cluster(urls) => {
                    let client = cluster_client(urls, options)?;
                    let config = redis::cluster::ClusterConfig::new()
                        .set_connection_timeout(options.connect_timeout)
                        .set_response_timeout(options.connect_timeout);
                    let mut connection = client.get_async_connection_with_config(config).await.map_err(boxed)?;
                    redis::cmd("PING").query_async::<()>(&mut connection).await.map_err(boxed)
                }
                RedisEndpoint::Sentinel { sentinels, master } => {
                    let (mut sentinel, node) = sentinel(sentinels, options)?;
                    let client = sentinel.async_master_for(master, Some(&node)).await.map_err(boxed)?;
                    let mut connection = client.get_multiplexed_async_connection().await.map_err(boxed)?;
                    redis::cmd("PING").query_async::<()>(&mut connection).await.map_err(boxed)
                }
            }
        };
        match tokio::time::timeout(options.connect_timeout, attempt).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(AttemptError::State(error))) => Err(error),
            // The real cause a node's operator needs: its credentials were refused (never shown).
            Ok(Err(AttemptError::Redis(error))) if super::is_refusal(&error) => {
                Err(StateError::Unauthorized { operation: "connect", url: endpoint.redacted() })
            }
            Ok(Err(AttemptError::Redis(source))) => {
                Err(StateError::Connect { url: endpoint.redacted(), source: Box::new(source) })
            }
            Err(elapsed) => Err(StateError::Connect { url: endpoint.redacted(), source: Box::new(elapsed) }),
        }
    }

    /// The connection to send a call on; with Sentinel, waits (within the caller's bound) for the first master.
    pub(super) async fn handle(&self) -> RedisResult<Handle> {
        match self {
            Connection::Server(manager) => Ok(Handle::Server(manager.clone())),
            Connection::Cluster(cluster) => Ok(Handle::Cluster(cluster.clone())),
            Connection::Sentinel(sentinel) => sentinel.handle().await.map(Handle::Server),
        }
    }

    /// Tells the connection a call failed (`None`: it timed out): with Sentinel, the master may have moved.
    pub(super) fn failed(&self, error: Option<&RedisError>) {
        if let Connection::Sentinel(sentinel) = self {
            let moved = match error {
                None => true,
                Some(error) => {
                    error.is_io_error()
                        || error.is_connection_dropped()
                        || error.is_connection_refusal()
                        || error.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly)
                }
            };
            if moved {
                sentinel.resolve();
            }
        }
    }
}

enum AttemptError {
    State(StateError),
    Redis(RedisError),
}

impl From<StateError> for AttemptError {
    fn from(error: StateError) -> Self {
        AttemptError::State(error)
    }
}

fn boxed(error: RedisError) -> AttemptError {
    AttemptError::Redis(error)
}

fn connect_error(endpoint: &RedisEndpoint, error: RedisError) -> StateError {
    StateError::Connect { url: endpoint.redacted(), source: Box::new(error) }
}

fn manager_config(options: &RedisOptions) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(options.connect_timeout))
        .set_response_timeout(Some(options.call_timeout))
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(options.reconnect_max_delay)
}

fn cluster_config(options: &RedisOptions) -> redis::cluster::ClusterConfig {
    redis::cluster::ClusterConfig::new()
        .set_connection_timeout(options.connect_timeout)
        .set_response_timeout(options.call_timeout)
}

fn cluster_client(urls: &[String], options: &RedisOptions) -> Result<redis::cluster::ClusterClient, StateError> {
    options.validate()?;
    let tls = urls.iter().all(|url| url.starts_with("rediss://"));
    if tls {
        super::options::install_crypto_provider();
    }
    let invalid = |error: RedisError| StateError::config("cluster_urls", error.to_string());
    let mut builder = redis::cluster::ClusterClient::builder(urls.iter().map(String::as_str))
        .connection_timeout(options.connect_timeout)
        .response_timeout(options.call_timeout)
        // A call has one bound (`call_timeout`); a few quick retries inside it follow a slot move or a failover.
        .retries(3)
        .min_retry_wait(10)
        .max_retry_wait(100);
    if let Some(certificates) = tls_certificates(options, tls)? {
        builder = builder.certs(certificates);
    }
    builder.build().map_err(invalid)
}

fn sentinel(
    sentinels: &[String],
    options: &RedisOptions,
) -> Result<(Sentinel, SentinelNodeConnectionInfo), StateError> {
    options.validate()?;
    if options.tls_ca_file.is_some() || options.tls_client_cert.is_some() {
        return Err(StateError::config("tls_ca_file", "custom TLS files are not supported with Sentinel yet"));
    }
    let tls = sentinels.iter().all(|url| url.starts_with("rediss://"));
    if tls {
        super::options::install_crypto_provider();
    }
    let invalid = |error: RedisError| StateError::config("sentinel_urls", error.to_string());
    // The master is reached with the first sentinel URL's user, password and database.
    let first = sentinels.first().map(String::as_str).unwrap_or_default();
    let info = first.into_connection_info().map_err(invalid)?;
    let mut node = SentinelNodeConnectionInfo::default().set_redis_connection_info(info.redis_settings().clone());
    if tls {
        node = node.set_tls_mode(redis::TlsMode::Secure);
    }
    let sentinel = Sentinel::build(sentinels.iter().map(String::as_str).collect()).map_err(invalid)?;
    Ok((sentinel, node))
}

/// The current master of a Sentinel-managed Redis, looked up again in the background when calls fail.
pub(super) struct SentinelMaster {
    sentinel: tokio::sync::Mutex<(Sentinel, SentinelNodeConnectionInfo)>,
    master: String,
    /// The master's address and a connection to it, once found.
    current: watch::Sender<Option<(String, ConnectionManager)>>,
    /// Whether a lookup task runs (one at a time).
    resolving: AtomicBool,
    config: ConnectionManagerConfig,
    connect_timeout: Duration,
    max_delay: Duration,
}

impl SentinelMaster {
    fn start(sentinels: &[String], master: &str, options: &RedisOptions) -> Result<Arc<Self>, StateError> {
        let this = Arc::new(SentinelMaster {
            sentinel: tokio::sync::Mutex::new(sentinel(sentinels, options)?),
            master: master.to_owned(),
            current: watch::Sender::new(None),
            resolving: AtomicBool::new(false),
            config: manager_config(options),
            connect_timeout: options.connect_timeout,
            max_delay: options.reconnect_max_delay,
        });
        this.resolve();
        Ok(this)
    }

    async fn handle(self: &Arc<Self>) -> RedisResult<ConnectionManager> {
        let mut current = self.current.subscribe();
        if let Some((_, manager)) = current.borrow_and_update().as_ref() {
            return Ok(manager.clone());
        }
        self.resolve();
        let found = current.wait_for(Option::is_some).await.map_err(|_| no_master())?;
        found.as_ref().map(|(_, manager)| manager.clone()).ok_or_else(no_master)
    }

    /// Starts a lookup unless one runs. It retries with backoff until a master answers, then keeps the current
    /// connection when the master is unchanged, or swaps in a connection to the new one.
    fn resolve(self: &Arc<Self>) {
        if self.resolving.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak: Weak<Self> = Arc::downgrade(self);
        let max_delay = self.max_delay;
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(50);
            loop {
                let Some(this) = weak.upgrade() else { return };
                match this.lookup().await {
                    Ok(()) => {
                        // A burst of failing calls asks for one lookup, not one each.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        this.resolving.store(false, Ordering::Release);
                        return;
                    }
                    Err(error) => {
                        tracing::debug!(master = %this.master, %error, "redis sentinel lookup failed");
                    }
                }
                drop(this);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(max_delay);
            }
        });
    }

    async fn lookup(&self) -> RedisResult<()> {
        let client = {
            let mut guard = self.sentinel.lock().await;
            let (sentinel, node) = &mut *guard;
            let lookup = sentinel.async_master_for(&self.master, Some(node));
            tokio::time::timeout(self.connect_timeout, lookup).await.map_err(|_| {
                RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, "sentinel lookup timed out"))
            })??
        };
        let address = client.get_connection_info().addr().to_string();
        if self.current.borrow().as_ref().is_some_and(|(current, _)| *current == address) {
            return Ok(());
        }
        let manager = ConnectionManager::new_lazy_with_config(client, self.config.clone())?;
        tracing::info!(master = %self.master, %address, "redis sentinel master found");
        self.current.send_replace(Some((address, manager)));
        Ok(())
    }
}

fn no_master() -> RedisError {
    RedisError::from(std::io::Error::new(std::io::ErrorKind::NotConnected, "no redis master known yet"))
}
