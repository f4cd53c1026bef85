//! Redis-only behaviour: surviving a paused or restarted server, lazy start, ACL users, TLS, and the key layout.
//!
//! Tests that pause, kill or configure a server start their own `redis-server` on a free port and never touch
//! the shared one; the key-layout test uses the shared Redis under a unique prefix and deletes its keys.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests panic on failure")]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use switchyard_state::conformance::{DeleteKeysOnDrop, unique_prefix};
use switchyard_state::{
    BreakerState, BreakerStore, DEFAULT_CALL_TIMEOUT, EscalationCounts, OutcomeBatch, RedisEndpoint, RedisOptions,
    RedisStore, StateError, TripPolicy,
};
use switchyard_testkit::pki::TestPki;
use switchyard_testkit::{ServerProcess, eventually, free_port};

/// How long a call may take when Redis does not answer: the 50 ms bound plus scheduling slack, far below the
/// seconds a reconnect or a TCP timeout would take.
const QUICK: Duration = Duration::from_millis(250);

fn options() -> RedisOptions {
    RedisOptions { key_prefix: format!("{}:switchyard:v1:", unique_prefix("redis")), ..RedisOptions::default() }
}

/// A `redis-server` with custom arguments on a given port, killed when dropped.
struct Redis {
    child: Child,
}

impl Redis {
    fn start(port: u16, args: &[&str]) -> anyhow::Result<Self> {
        let mut command = Command::new("redis-server");
        command.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        if !args.contains(&"--tls-port") {
            command.args(["--port", &port.to_string()]);
        }
        let child = command
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start redis-server")?;
        let server = Redis { child };
        let until = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() >= until {
                bail!("redis-server on port {port} did not come up");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resumes a paused server when dropped, so a failed assertion never leaves it stopped.
struct ResumeOnDrop<'a>(&'a ServerProcess);

impl Drop for ResumeOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.signal("CONT");
    }
}

/// Runs `call`, asserting it fails with a transient error within [`QUICK`]; returns the error.
async fn fails_quickly<T: std::fmt::Debug>(
    what: &str,
    call: impl std::future::Future<Output = Result<T, StateError>>,
) -> StateError {
    let started = Instant::now();
    let result = call.await;
    let elapsed = started.elapsed();
    assert!(elapsed < QUICK, "{what} took {elapsed:?}");
    match result {
        Err(error) if error.is_transient() => error,
        other => panic!("{what}: expected a transient error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_time_out_within_the_bound_while_redis_is_paused() -> anyhow::Result<()> {
    let server = ServerProcess::redis()?;
    let url = format!("redis://127.0.0.1:{}", server.port);
    let store = RedisStore::connect(&url, options()).await?;
    let policy = TripPolicy::default();
    store.report("p", "node-0", OutcomeBatch::new(0), &policy).await?; // loads the script
    assert_eq!(store.get("p").await?.state, BreakerState::Closed);

    let resume = ResumeOnDrop(&server);
    server.signal("STOP")?;
    for _ in 0..3 {
        let error = fails_quickly("get", store.get("p")).await;
        assert!(matches!(error, StateError::Timeout { operation: "get", timeout } if timeout == DEFAULT_CALL_TIMEOUT));
        fails_quickly("report", store.report("p", "node-0", OutcomeBatch::new(0), &policy)).await;
        fails_quickly("acquire_probe", store.acquire_probe("p", "node-0", Duration::from_secs(1))).await;
        fails_quickly("rate_limited", store.rate_limited("p", 0, Duration::from_secs(1))).await;
        fails_quickly("renew_probe", store.renew_probe("p", "node-0", 1, Duration::from_secs(1))).await;
        fails_quickly("get_many", store.get_many(&["p", "q"])).await;
        fails_quickly("escalations", store.add_escalations("c", 0, EscalationCounts::default())).await;
        let quick_connect = RedisOptions { connect_timeout: DEFAULT_CALL_TIMEOUT, ..options() };
        fails_quickly("connect", RedisStore::connect(&url, quick_connect)).await;
    }
    // Many callers at once are each bounded too.
    let started = Instant::now();
    let calls = (0..50).map(|_| store.get("p"));
    let results = futures::future::join_all(calls).await;
    assert!(results.iter().all(|result| matches!(result, Err(StateError::Timeout { .. }))));
    assert!(started.elapsed() < QUICK, "50 concurrent calls took {:?}", started.elapsed());

    server.signal("CONT")?;
    drop(resume);
    let view =
        eventually("the store answers after SIGCONT", Duration::from_secs(10), || async { store.get("p").await.ok() })
            .await?;
    // The rate_limited calls sent during the pause reached Redis and ran after it resumed: a timeout means
    // "unknown", not "not applied".
    assert!(matches!(view.state, BreakerState::Closed | BreakerState::Open));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_recovers_after_redis_restarts_on_the_same_port() -> anyhow::Result<()> {
    let port = free_port()?;
    let url = format!("redis://127.0.0.1:{port}");
    let server = Redis::start(port, &[])?;
    let store = RedisStore::connect(&url, options()).await?;
    let opened = store.rate_limited("p", 0, Duration::from_secs(60)).await?;
    assert_eq!((opened.view.state, opened.view.epoch), (BreakerState::Open, 1));

    drop(server);
    for _ in 0..10 {
        fails_quickly("get while redis is down", store.get("p")).await;
        fails_quickly(
            "report while redis is down",
            store.report("p", "n", OutcomeBatch::new(0), &TripPolicy::default()),
        )
        .await;
    }

    let _server = Redis::start(port, &[])?;
    let view = eventually("the store reconnects after the restart", Duration::from_secs(10), || async {
        store.get("p").await.ok()
    })
    .await?;
    // The restarted Redis kept nothing (no persistence): the node reconciles by epoch, which is the runtime's job.
    assert_eq!((view.state, view.epoch), (BreakerState::Closed, 0));
    // Scripts are loaded again on first use (EVALSHA falls back to loading them).
    let opened = store.rate_limited("p", 0, Duration::from_secs(60)).await?;
    assert_eq!((opened.view.state, opened.view.epoch), (BreakerState::Open, 1));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lazy_store_starts_without_redis_and_connects_when_it_comes() -> anyhow::Result<()> {
    let port = free_port()?;
    let url = format!("redis://127.0.0.1:{port}");
    let store = RedisStore::connect_lazy(&url, options()).await?;
    for _ in 0..5 {
        fails_quickly("get before redis exists", store.get("p")).await;
    }
    let _server = Redis::start(port, &[])?;
    eventually("the lazy store connects", Duration::from_secs(10), || async { store.get("p").await.ok() }).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_nothing_fails_fast_without_printing_the_password() -> anyhow::Result<()> {
    let url = format!("redis://alice:s3cret@127.0.0.1:{}", free_port()?);
    let options = RedisOptions { connect_timeout: Duration::from_millis(200), ..options() };
    let started = Instant::now();
    let error = RedisStore::connect(&url, options).await.expect_err("nothing listens there");
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    assert!(matches!(error, StateError::Connect { .. }), "{error:?}");
    let shown = format!("{error} {error:?}");
    assert!(!shown.contains("s3cret") && shown.contains("alice:***@"), "{shown}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_user_in_the_url_and_every_key_under_the_prefix() -> anyhow::Result<()> {
    let port = free_port()?;
    // alice may only touch keys under the production prefix: every key a script writes must live there.
    let _server = Redis::start(
        port,
        &["--user", "alice", "on", ">s3cret", "~switchyard:v1:*", "+@all", "--user", "default", "off"],
    )?;
    let url = format!("redis://alice:s3cret@127.0.0.1:{port}");
    let store = RedisStore::connect(&url, RedisOptions::default()).await?;
    let debug = format!("{store:?}");
    assert!(!debug.contains("s3cret") && debug.contains("alice:***@"), "{debug}");

    let policy = TripPolicy { minimum_calls: 1, ..TripPolicy::default() };
    let failures = OutcomeBatch { failures: 5, ..OutcomeBatch::new(0) };
    store.report("p", "node-0", failures, &policy).await?;
    let tripped = store.report("p", "node-1", failures, &policy).await?;
    assert_eq!(tripped.view.state, BreakerState::Open);
    store.force_open("p").await?;
    store.reset("p").await?;
    store.incr_escalation("c", 0, true).await?;
    assert_eq!(store.escalation_rate("c", 0, Duration::from_secs(60)).await?.total, 1);

    let wrong = format!("redis://alice:wrong@127.0.0.1:{port}");
    let error = RedisStore::connect(&wrong, RedisOptions::default()).await.expect_err("wrong password");
    assert!(matches!(error, StateError::Unauthorized { operation: "connect", .. }), "{error:?}");
    assert!(!format!("{error} {error:?}").contains("wrong@") && error.to_string().contains("alice:***@"), "{error}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_follow_the_documented_layout() -> anyhow::Result<()> {
    let url = switchyard_testkit::redis_url();
    let options = options();
    let prefix = options.key_prefix.clone();
    let _cleanup = DeleteKeysOnDrop { url: url.clone(), pattern: format!("{prefix}*") };
    let store = RedisStore::connect(&url, options).await?;
    let bad = OutcomeBatch { successes: 3, failures: 2, slow_calls: 1, ..OutcomeBatch::new(0) };
    let outcome = store.report("openai", "node-7", bad, &TripPolicy::default()).await?;
    store.add_escalations("summarize", 2, EscalationCounts { total: 4, escalated: 1 }).await?;
    let second = outcome.view.now_ms / 1000;

    let client = redis::Client::open(url.as_str())?;
    let mut redis = client.get_multiplexed_async_connection().await?;
    let breaker = store.breaker_key("openai");
    assert_eq!(breaker, format!("{prefix}cb:{{openai}}"));
    assert_eq!(store.breaker_keys("openai"), [breaker.clone(), format!("{breaker}:b"), format!("{breaker}:n")]);
    let bucket: Vec<(String, u64)> = redis::cmd("HGETALL").arg(format!("{breaker}:b")).query_async(&mut redis).await?;
    let mut bucket = bucket;
    bucket.sort();
    let field = |name: &str| format!("{second}:{name}");
    assert_eq!(bucket, [(field("f"), 2), (field("h"), 0), (field("s"), 3), (field("slow"), 1)]);
    let nodes: Vec<(String, u64)> = redis::cmd("ZRANGE")
        .arg(format!("{breaker}:n"))
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(&mut redis)
        .await?;
    assert_eq!(nodes, [("node-7".to_owned(), second)]);
    let ttl: i64 = redis::cmd("PTTL").arg(format!("{breaker}:b")).query_async(&mut redis).await?;
    assert!(ttl > 0 && ttl <= 11_000, "buckets expire after the window plus one second: {ttl}");
    store.force_open("openai").await?;
    let fields: Vec<String> = redis::cmd("HKEYS").arg(&breaker).query_async(&mut redis).await?;
    for field in ["state", "epoch", "opens", "open_until_ms", "probe_owner", "probe_until_ms", "misconfigured"] {
        assert!(fields.iter().any(|got| got == field), "{field} missing from {fields:?}");
    }

    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut redis).await?;
    assert_eq!(keys.len(), 4, "{keys:?}");
    for key in &keys {
        let tag = key.split_once('{').and_then(|(_, rest)| rest.split_once('}')).map(|(tag, _)| tag);
        assert!(matches!(tag, Some("openai" | "summarize")), "one hash tag per provider or cascade: {key}");
    }
    assert!(keys.contains(&format!("{prefix}esc:{{summarize}}:2")), "{keys:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca() -> anyhow::Result<()> {
    let pki = TestPki::generate()?;
    let port = free_port()?;
    let (cert, key, ca) = (
        pki.server_cert().display().to_string(),
        pki.server_key().display().to_string(),
        pki.ca().display().to_string(),
    );
    let tls_port = port.to_string();
    let _server = Redis::start(
        port,
        &[
            "--port",
            "0",
            "--tls-port",
            &tls_port,
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            "no",
        ],
    )?;
    let url = format!("rediss://127.0.0.1:{port}");
    let trusting = RedisOptions { tls_ca_file: Some(PathBuf::from(&ca)), ..options() };
    let store = RedisStore::connect(&url, trusting).await?;
    let opened = store.rate_limited("p", 0, Duration::from_secs(5)).await?;
    assert_eq!(opened.view.state, BreakerState::Open);

    let error = RedisStore::connect(&url, options()).await.expect_err("the server's CA is not a system root");
    assert!(matches!(error, StateError::Connect { .. }), "{error:?}");
    let plain = RedisOptions { tls_ca_file: Some(PathBuf::from(&ca)), ..options() };
    let error =
        RedisStore::connect(&format!("redis://127.0.0.1:{port}"), plain).await.expect_err("TLS files need rediss");
    assert!(matches!(error, StateError::Config { field: "tls_ca_file", .. }), "{error:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_sentinel_the_store_follows_a_failover_to_the_promoted_replica() -> anyhow::Result<()> {
    let servers = switchyard_testkit::RedisSentinel::start_with_replica()?;
    let endpoint =
        RedisEndpoint::Sentinel { sentinels: vec![servers.sentinel_url.clone()], master: servers.master_name.clone() };
    let store = RedisStore::connect(endpoint, options()).await?;
    let forced = store.force_open("p").await?;
    assert_eq!(forced.view.state, BreakerState::ForcedOpen);
    // Make sure the replica has the write before the master dies (replication is asynchronous). Not with `WAIT`
    // from another connection: it waits only for that connection's own writes (none), so it said yes at once.
    let replica_port = servers.replica.as_ref().map(|replica| replica.port).context("a replica")?;
    let written = repl_offset(servers.master.port, "master_repl_offset")?;
    eventually("the replica has the write", Duration::from_secs(5), || async {
        (repl_offset(replica_port, "slave_repl_offset").ok()? >= written).then_some(())
    })
    .await?;
    servers.master.signal("KILL")?;

    // While the Sentinel has not promoted the replica, calls fail within their bound; then they reach the new
    // master, which has the breaker state, and writes work again.
    let started = Instant::now();
    let view = eventually("the store reaches the promoted replica", Duration::from_secs(15), || async {
        let started = Instant::now();
        let outcome = store.reset("p").await;
        assert!(started.elapsed() < QUICK, "a call took {:?} during the failover", started.elapsed());
        outcome.ok()
    })
    .await?;
    eprintln!("store writable again {:?} after the master died", started.elapsed());
    assert_eq!(view.view.state, BreakerState::Closed);
    assert_eq!(view.view.epoch, forced.view.epoch + 1, "the reset lands on the forced-open state the replica had");
    let role = switchyard_testkit::redis_cli(replica_port, &["ROLE"])?;
    assert!(role.starts_with("master"), "{role}");
    Ok(())
}

/// A replication offset (`master_repl_offset` of a master, `slave_repl_offset` of a replica) from `INFO replication`.
fn repl_offset(port: u16, field: &str) -> anyhow::Result<u64> {
    let info = switchyard_testkit::redis_cli(port, &["INFO", "replication"])?;
    let line = info.lines().find_map(|line| line.strip_prefix(field)?.strip_prefix(':'));
    Ok(line.with_context(|| format!("no {field} in {info}"))?.trim().parse()?)
}
