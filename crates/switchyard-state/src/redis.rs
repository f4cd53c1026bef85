//! The cluster's shared breaker state in Redis.
//!
//! Why it looks the way it does:
//! - Every transition is one Lua script (see [`scripts`]) that reads Redis `TIME`, so node clocks never matter
//!   and two nodes can never both win a race: Redis runs one script at a time.
//! - Keys live under a configurable prefix (default `switchyard:v1:`) with one hash tag per provider:
//!   `cb:{p}` (hash: state, epoch, opens, open_until_ms, probe_owner, probe_until_ms, misconfigured,
//!   closed_epoch), `cb:{p}:b` (hash of outcome counts, fields `<second>:s|f|slow|h`) and `cb:{p}:n` (sorted set
//!   of the nodes that reported trouble, scored by the last second they did). Every breaker script declares all
//!   three in `KEYS` and builds no key name itself, so it runs on one slot of a Redis Cluster. Escalation
//!   counters: `esc:{cascade}:<stage>` (hash, fields `<bucket second>:t|e`).
//! - Scripts run through `redis::Script` (EVALSHA, falling back to loading the script after a restart; on a
//!   cluster the load goes to every node).
//! - One server, a Redis Cluster or a Sentinel-managed master ([`RedisEndpoint`]), through one connection type
//!   (see [`connection`]).
//! - Every call is bounded by [`RedisOptions::call_timeout`] (50 ms by default) and fails with
//!   [`StateError::Timeout`] or [`StateError::Unavailable`]; the connection reconnects in the background, so a
//!   paused or restarting Redis never blocks a caller for longer than the bound.
//! - URLs may carry ACL credentials (`redis://user:password@host`) and use TLS (`rediss://`); `Debug` output and
//!   errors show them with the password replaced by `***`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::{ErrorKind, RedisError, ServerErrorKind};

mod connection;
mod idempotency;
mod options;
pub mod scripts;

pub use connection::RedisEndpoint;
use connection::{Connection, Handle};
pub use options::{DEFAULT_CALL_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEY_PREFIX, RedisOptions};

use crate::types::{ESCALATION_BUCKET, ESCALATION_RETENTION, RawBreaker, escalation_bucket_count, ms};
use crate::{
    BreakerState, BreakerStore, ClusterView, EscalationCounts, OpenWait, OutcomeBatch, ProbeDecision, ReportEffect,
    ReportOutcome, StateError, TripPolicy, Update, validate_name, validate_probe_lease,
};

/// The production [`BreakerStore`]: Lua scripts on Redis through an auto-reconnecting connection.
///
/// Clones share the connection (commands are pipelined on it).
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    connection: Connection,
    redacted_url: String,
    key_prefix: String,
    call_timeout: Duration,
    /// Added to Redis `TIME` in every script; only the test harness moves it (see `shift_clock`).
    clock_offset_ms: AtomicU64,
    scripts: Scripts,
    /// Commands this store has sent (a script counts once, whatever it runs inside Redis).
    commands_sent: AtomicU64,
}

struct Scripts {
    report: redis::Script,
    rate_limited: redis::Script,
    acquire_probe: redis::Script,
    renew_probe: redis::Script,
    probe_result: redis::Script,
    command: redis::Script,
    get: redis::Script,
    escalation_add: redis::Script,
    escalation_rate: redis::Script,
    idempotency_claim: redis::Script,
    idempotency_complete: redis::Script,
}

impl Scripts {
    fn new() -> Self {
        use scripts::*;
        Scripts {
            report: redis::Script::new(REPORT.source),
            rate_limited: redis::Script::new(RATE_LIMITED.source),
            acquire_probe: redis::Script::new(ACQUIRE_PROBE.source),
            renew_probe: redis::Script::new(RENEW_PROBE.source),
            probe_result: redis::Script::new(PROBE_RESULT.source),
            command: redis::Script::new(COMMAND.source),
            get: redis::Script::new(GET.source),
            escalation_add: redis::Script::new(ESCALATION_ADD.source),
            escalation_rate: redis::Script::new(ESCALATION_RATE.source),
            idempotency_claim: redis::Script::new(IDEMPOTENCY_CLAIM.source),
            idempotency_complete: redis::Script::new(IDEMPOTENCY_COMPLETE.source),
        }
    }
}

/// What every breaker script returns: effect, now, state, epoch, opens, open_until, owner, probe_until, misconf.
type Reply = (String, u64, String, u64, u64, u64, String, u64, u64);

impl RedisStore {
    /// Connects to `endpoint` (a `redis://` or `rediss://` URL, ACL user and password in the URL; or a
    /// [`RedisEndpoint`] naming a Redis Cluster or Sentinels) and waits, at most `options.connect_timeout`, until
    /// Redis answers. Fails with [`StateError::Connect`] (passwords redacted) when it does not, or
    /// [`StateError::Config`] for unusable options. Later outages are survived: see [`RedisStore::connect_lazy`].
    pub async fn connect(endpoint: impl Into<RedisEndpoint>, options: RedisOptions) -> Result<Self, StateError> {
        let endpoint = endpoint.into();
        // One direct attempt first: it reports the real cause (refused, bad password, TLS) instead of a timeout
        // hidden behind the background reconnection.
        Connection::probe(&endpoint, &options).await?;
        let store = Self::build(&endpoint, &options)?;
        let ping = store.bounded_by("connect", options.connect_timeout, async |connection| {
            redis::cmd("PING").query_async::<()>(connection).await
        });
        match ping.await {
            Ok(()) => Ok(store),
            Err(failure) => Err(StateError::Connect { url: endpoint.redacted(), source: failure.into() }),
        }
    }

    /// Like [`RedisStore::connect`] but without waiting for Redis: the connection is made in the background and
    /// calls fail with [`StateError::Timeout`] or [`StateError::Unavailable`] until it is up. For a node that
    /// must start while Redis is down. Fails only on an unusable endpoint or options.
    pub async fn connect_lazy(endpoint: impl Into<RedisEndpoint>, options: RedisOptions) -> Result<Self, StateError> {
        let endpoint = endpoint.into();
        let store = Self::build(&endpoint, &options)?;
        // The connection is made on first use; drive that first connection now, in the background.
        let warm = store.clone();
        let bound = options.connect_timeout;
        tokio::spawn(async move {
            let ping = warm.bounded_by("connect", bound, async |connection| {
                redis::cmd("PING").query_async::<()>(connection).await
            });
            if let Err(error) = ping.await {
                tracing::debug!(%error, "redis not reachable yet");
            }
        });
        Ok(store)
    }

    fn build(endpoint: &RedisEndpoint, options: &RedisOptions) -> Result<Self, StateError> {
        let connection = Connection::lazy(endpoint, options)?;
        Ok(RedisStore {
            inner: Arc::new(Inner {
                connection,
                redacted_url: endpoint.redacted(),
                key_prefix: options.key_prefix.clone(),
                call_timeout: options.call_timeout,
                clock_offset_ms: AtomicU64::new(0),
                commands_sent: AtomicU64::new(0),
                scripts: Scripts::new(),
            }),
        })
    }

    /// Where this store connects to (URL, cluster seeds or Sentinels), with any password replaced by `***`.
    pub fn redacted_url(&self) -> &str {
        &self.inner.redacted_url
    }

    /// The key prefix.
    pub fn key_prefix(&self) -> &str {
        &self.inner.key_prefix
    }

    /// The key of `provider`'s breaker hash.
    pub fn breaker_key(&self, provider: &str) -> String {
        format!("{}cb:{{{provider}}}", self.inner.key_prefix)
    }

    /// Every key of `provider`'s breaker, in the order the breaker scripts take them: the breaker hash, the
    /// outcome buckets (`:b`) and the nodes that reported trouble (`:n`). One hash tag, so one cluster slot.
    pub fn breaker_keys(&self, provider: &str) -> [String; 3] {
        let key = self.breaker_key(provider);
        [key.clone(), format!("{key}:b"), format!("{key}:n")]
    }

    /// The key of `cascade`'s `stage` escalation counters (a hash of buckets, fields `<bucket second>:t|e`).
    pub fn escalation_key(&self, cascade: &str, stage: u32) -> String {
        format!("{}esc:{{{cascade}}}:{stage}", self.inner.key_prefix)
    }

    /// Moves this store's view of time forward by `by` (added to Redis `TIME` in every script). Test-only: it
    /// lets the conformance suite advance time on a real Redis. Clones share the shift; separate stores do not.
    #[cfg(any(test, feature = "testkit"))]
    pub fn shift_clock(&self, by: Duration) {
        self.inner.clock_offset_ms.fetch_add(ms(by), Ordering::SeqCst);
    }

    /// Commands this store has sent so far (a script counts once): what a node costs Redis, for benchmarks.
    pub fn commands_sent(&self) -> u64 {
        self.inner.commands_sent.load(Ordering::Relaxed)
    }

    fn offset(&self) -> u64 {
        self.inner.clock_offset_ms.load(Ordering::SeqCst)
    }

    /// Runs one Redis exchange under the call bound (getting the connection included), mapping failures to
    /// [`StateError`].
    async fn bounded<T>(
        &self,
        operation: &'static str,
        exchange: impl AsyncFnOnce(&mut Handle) -> redis::RedisResult<T>,
    ) -> Result<T, StateError> {
        let timeout = self.inner.call_timeout;
        self.inner.commands_sent.fetch_add(1, Ordering::Relaxed);
        match self.bounded_by(operation, timeout, exchange).await {
            Ok(value) => Ok(value),
            Err(Failure::Redis(error)) if is_refusal(&error) => {
                Err(StateError::Unauthorized { operation, url: self.inner.redacted_url.clone() })
            }
            Err(Failure::Redis(error)) => Err(map_error(operation, timeout, error)),
            Err(Failure::Timeout) => Err(StateError::Timeout { operation, timeout }),
        }
    }

    async fn bounded_by<T>(
        &self,
        _operation: &'static str,
        timeout: Duration,
        exchange: impl AsyncFnOnce(&mut Handle) -> redis::RedisResult<T>,
    ) -> Result<T, Failure> {
        let connection = &self.inner.connection;
        let call = async {
            let mut handle = connection.handle().await?;
            exchange(&mut handle).await
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => {
                connection.failed(Some(&error));
                Err(Failure::Redis(error))
            }
            Err(_) => {
                connection.failed(None);
                Err(Failure::Timeout)
            }
        }
    }

    /// Runs a breaker script on `provider`'s key with `args` after the clock offset.
    async fn breaker_script(
        &self,
        operation: &'static str,
        script: &redis::Script,
        provider: &str,
        args: &[String],
    ) -> Result<(String, ClusterView), StateError> {
        validate_name("provider", provider)?;
        let mut invocation = script.prepare_invoke();
        for key in self.breaker_keys(provider) {
            invocation.key(key);
        }
        invocation.arg(self.offset());
        for arg in args {
            invocation.arg(arg);
        }
        let reply: Reply =
            self.bounded(operation, async |connection| invocation.invoke_async(connection).await).await?;
        parse_reply(operation, provider, reply)
    }

    async fn command(&self, provider: &str, command: &'static str) -> Result<Update, StateError> {
        let (_, view) = self.breaker_script(command, &self.inner.scripts.command, provider, &[command.into()]).await?;
        Ok(Update { changed: true, view })
    }
}

/// Whether Redis refused the connection's credentials (`AUTH` failed with `WRONGPASS`, or a command met `NOAUTH`).
/// A command the ACL user may not run (`NOPERM`) is not a refusal of the credentials: it stays a backend error.
pub(super) fn is_refusal(error: &RedisError) -> bool {
    error.kind() == ErrorKind::AuthenticationFailed || matches!(error.code(), Some("NOAUTH" | "WRONGPASS"))
}

/// Why a bounded exchange failed, before it is named after its operation.
enum Failure {
    Redis(RedisError),
    Timeout,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Redis(error) => write!(f, "{error}"),
            Failure::Timeout => f.write_str("no answer within the bound"),
        }
    }
}

impl From<Failure> for crate::BoxError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Redis(error) => Box::new(error),
            Failure::Timeout => "no answer within the bound".into(),
        }
    }
}

fn map_error(operation: &'static str, timeout: Duration, error: RedisError) -> StateError {
    if error.is_timeout() {
        return StateError::Timeout { operation, timeout };
    }
    match error.kind() {
        ErrorKind::Io
        | ErrorKind::AuthenticationFailed
        | ErrorKind::ClusterConnectionNotFound
        | ErrorKind::Server(
            ServerErrorKind::BusyLoading
            | ServerErrorKind::TryAgain
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::MasterDown,
        ) => StateError::Unavailable { operation, source: Box::new(error) },
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType => {
            StateError::Protocol { operation, detail: error.to_string() }
        }
        _ => StateError::Backend { operation, detail: error.to_string() },
    }
}

fn parse_reply(operation: &'static str, provider: &str, reply: Reply) -> Result<(String, ClusterView), StateError> {
    let (effect, now, state, epoch, opens, open_until_ms, probe_owner, probe_until_ms, misconfigured) = reply;
    let state = BreakerState::from_name(&state)
        .filter(|state| *state != BreakerState::MetricsOnly)
        .ok_or_else(|| StateError::Protocol { operation, detail: format!("unknown breaker state {state:?}") })?;
    let raw = RawBreaker {
        state: Some(state),
        epoch,
        opens,
        open_until_ms,
        probe_owner,
        probe_until_ms,
        misconfigured: misconfigured != 0,
    };
    Ok((effect, raw.view(provider, now)))
}

fn unexpected(operation: &'static str, effect: &str) -> StateError {
    StateError::Protocol { operation, detail: format!("unexpected effect {effect:?}") }
}

#[async_trait::async_trait]
impl BreakerStore for RedisStore {
    async fn report(
        &self,
        provider: &str,
        node: &str,
        batch: OutcomeBatch,
        policy: &TripPolicy,
    ) -> Result<ReportOutcome, StateError> {
        validate_name("node", node)?;
        policy.validate()?;
        let args = [
            node.to_owned(),
            batch.epoch.to_string(),
            batch.successes.to_string(),
            batch.failures.to_string(),
            batch.slow_calls.to_string(),
            batch.hard_errors.to_string(),
            policy.window_secs().to_string(),
            policy.failure_rate_threshold.to_string(),
            policy.slow_call_rate_threshold.unwrap_or(-1.0).to_string(),
            policy.minimum_calls.to_string(),
            policy.min_reporting_nodes.to_string(),
            policy.hard_error_minimum.to_string(),
            ms(policy.wait.base).to_string(),
            ms(policy.wait.max).to_string(),
            ms(policy.wait.jitter).to_string(),
        ];
        let (effect, view) = self.breaker_script("report", &self.inner.scripts.report, provider, &args).await?;
        let effect = match effect.as_str() {
            "counted" => ReportEffect::Counted,
            "tripped" => ReportEffect::Tripped { hard_error: false },
            "tripped_hard" => ReportEffect::Tripped { hard_error: true },
            "stale" => ReportEffect::Stale,
            "ignored" => ReportEffect::Ignored,
            other => return Err(unexpected("report", other)),
        };
        Ok(ReportOutcome { effect, view })
    }

    async fn rate_limited(&self, provider: &str, epoch: u64, retry_after: Duration) -> Result<Update, StateError> {
        let args = [epoch.to_string(), ms(retry_after).to_string()];
        let script = &self.inner.scripts.rate_limited;
        let (effect, view) = self.breaker_script("rate_limited", script, provider, &args).await?;
        match effect.as_str() {
            "changed" => Ok(Update { changed: true, view }),
            "unchanged" | "stale" => Ok(Update { changed: false, view }),
            other => Err(unexpected("rate_limited", other)),
        }
    }

    async fn renew_probe(
        &self,
        provider: &str,
        node: &str,
        epoch: u64,
        lease: Duration,
    ) -> Result<ProbeDecision, StateError> {
        validate_probe_lease(node, lease)?;
        let args = [node.to_owned(), epoch.to_string(), ms(lease).to_string()];
        let script = &self.inner.scripts.renew_probe;
        let (effect, view) = self.breaker_script("renew_probe", script, provider, &args).await?;
        match effect.as_str() {
            "granted" => Ok(ProbeDecision::Granted(view)),
            "refused" => Ok(ProbeDecision::Refused(view)),
            other => Err(unexpected("renew_probe", other)),
        }
    }

    async fn acquire_probe(&self, provider: &str, node: &str, lease: Duration) -> Result<ProbeDecision, StateError> {
        validate_probe_lease(node, lease)?;
        let args = [node.to_owned(), ms(lease).to_string()];
        let script = &self.inner.scripts.acquire_probe;
        let (effect, view) = self.breaker_script("acquire_probe", script, provider, &args).await?;
        match effect.as_str() {
            "granted" => Ok(ProbeDecision::Granted(view)),
            "refused" => Ok(ProbeDecision::Refused(view)),
            other => Err(unexpected("acquire_probe", other)),
        }
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
        let args = [
            node.to_owned(),
            epoch.to_string(),
            if success { "1" } else { "0" }.to_owned(),
            ms(wait.base).to_string(),
            ms(wait.max).to_string(),
            ms(wait.jitter).to_string(),
        ];
        let script = &self.inner.scripts.probe_result;
        let (effect, view) = self.breaker_script("probe_result", script, provider, &args).await?;
        Ok(Update { changed: effect == "changed", view })
    }

    async fn get(&self, provider: &str) -> Result<ClusterView, StateError> {
        Ok(self.breaker_script("get", &self.inner.scripts.get, provider, &[]).await?.1)
    }

    async fn get_many(&self, providers: &[&str]) -> Result<Vec<ClusterView>, StateError> {
        for provider in providers {
            validate_name("provider", provider)?;
        }
        // One script per provider (a script may only touch one hash slot), all in flight at once on the
        // multiplexed connection, under one bound.
        let offset = self.offset();
        self.inner.commands_sent.fetch_add(providers.len().saturating_sub(1) as u64, Ordering::Relaxed);
        let replies = self
            .bounded("get_many", async |connection: &mut Handle| {
                let reads = providers.iter().map(|provider| {
                    let mut connection = connection.clone();
                    let mut invocation = self.inner.scripts.get.prepare_invoke();
                    for key in self.breaker_keys(provider) {
                        invocation.key(key);
                    }
                    invocation.arg(offset);
                    async move { invocation.invoke_async::<Reply>(&mut connection).await }
                });
                futures::future::try_join_all(reads).await
            })
            .await?;
        providers.iter().zip(replies).map(|(provider, reply)| Ok(parse_reply("get_many", provider, reply)?.1)).collect()
    }

    async fn force_open(&self, provider: &str) -> Result<Update, StateError> {
        self.command(provider, "force_open").await
    }

    async fn disable(&self, provider: &str) -> Result<Update, StateError> {
        self.command(provider, "disable").await
    }

    async fn reset(&self, provider: &str) -> Result<Update, StateError> {
        self.command(provider, "reset").await
    }

    async fn add_escalations(&self, cascade: &str, stage: u32, counts: EscalationCounts) -> Result<(), StateError> {
        validate_name("cascade", cascade)?;
        let mut invocation = self.inner.scripts.escalation_add.key(self.escalation_key(cascade, stage));
        invocation
            .arg(self.offset())
            .arg(counts.total)
            .arg(counts.escalated)
            .arg(ESCALATION_BUCKET.as_secs())
            .arg(ms(ESCALATION_RETENTION + ESCALATION_BUCKET));
        self.bounded("add_escalations", async |connection| invocation.invoke_async::<u64>(connection).await).await?;
        Ok(())
    }

    async fn escalation_rate(
        &self,
        cascade: &str,
        stage: u32,
        window: Duration,
    ) -> Result<EscalationCounts, StateError> {
        validate_name("cascade", cascade)?;
        // The script computes the bucket starts from Redis TIME; the count is the same as the memory store's.
        let buckets = escalation_bucket_count(window)?;
        let mut invocation = self.inner.scripts.escalation_rate.key(self.escalation_key(cascade, stage));
        invocation.arg(self.offset()).arg(ESCALATION_BUCKET.as_secs()).arg(buckets);
        let (total, escalated): (u64, u64) =
            self.bounded("escalation_rate", async |connection| invocation.invoke_async(connection).await).await?;
        Ok(EscalationCounts { total, escalated })
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.inner.redacted_url)
            .field("key_prefix", &self.inner.key_prefix)
            .field("call_timeout", &self.inner.call_timeout)
            .finish_non_exhaustive()
    }
}
