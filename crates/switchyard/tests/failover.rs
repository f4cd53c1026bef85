//! Issue 6, node failover: a node killed (SIGKILL) with queries in flight loses none of them.
//!
//! Two `switchyard serve` processes share one namespace and one Redis. Queries go through the client library,
//! each with its own id, re-sent while unanswered. One node is killed while it is answering some of them; the
//! re-sent copies reach the survivor, which must take each of them over once the dead owner's claim (a short
//! lease) has lapsed, and answer. Without take-over, the survivor waits for the dead owner until the deadline and
//! the query fails with `deadline_exceeded`.
//!
//! Each node hosts its own provider (same mock, a model per node) and its route names only that provider, so a
//! node's router calls only its own provider actor. The other half, a router whose upstream call runs on a node
//! that dies (one provider name hosted on several nodes), is the second test: the call's heartbeats stop and the
//! router runs it on another node.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use switchyard_bus::{Bus, Message, NatsBus, NatsOptions};
use switchyard_client::{Client, ClientError, ClientOptions};
use switchyard_mock::{Behavior, Latency, MockConfig, MockServer};
use switchyard_protocol::ChatMessage;
use switchyard_protocol::admin::NodeHealth;
use switchyard_protocol::client::{QueryReply, QueryRequest};
use switchyard_protocol::subjects::Subjects;
use switchyard_testkit::{eventually, nats_url, redis_url};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
/// Queries sent at once.
const QUERIES: usize = 8;
/// How long the mock takes to answer each of them: they are all in flight when the node is killed.
const LATENCY_MS: u64 = 3_000;
/// The client's re-send interval: the kill happens before the first copy is re-sent.
const RESEND_AFTER: Duration = Duration::from_secs(1);
const DEADLINE: Duration = Duration::from_secs(20);

/// The node processes of one test; every one still running is killed when this is dropped (a failed assertion
/// included), so no test leaves a node behind.
struct Nodes {
    children: Vec<(String, Child)>,
    files: Vec<PathBuf>,
    /// Removed after a passing run only.
    logs: Vec<PathBuf>,
}

impl Nodes {
    /// Starts `switchyard serve` on `config` as node `name`; its logs go to a file kept for a failed run.
    fn spawn(&mut self, name: &str, config: &str) {
        let dir = std::env::temp_dir();
        let config_path = dir.join(format!("switchyard-failover-{}-{name}.toml", std::process::id()));
        let log_path = dir.join(format!("switchyard-failover-{}-{name}.log", std::process::id()));
        std::fs::write(&config_path, config).unwrap();
        let child = Command::new(BIN)
            .args(["serve", "--config", config_path.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap();
        eprintln!("node {name}: pid {}, logs in {}", child.id(), log_path.display());
        self.files.push(config_path);
        self.logs.push(log_path);
        self.children.push((name.to_owned(), child));
    }

    /// SIGKILL: the node dies at once, with whatever it had in flight.
    fn kill(&mut self, name: &str) {
        let (_, child) = self.children.iter_mut().find(|(n, _)| n == name).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for file in &self.files {
            let _ = std::fs::remove_file(file);
        }
        if !std::thread::panicking() {
            for log in &self.logs {
                let _ = std::fs::remove_file(log);
            }
        }
    }
}

/// Node `name`: roles router and providers, one provider `p-<name>` on `model`, route `slow` to it.
fn config(mock: &MockServer, namespace: &str, name: &str, model: &str) -> String {
    format!(
        r#"
        [node]
        name = "{name}"
        namespace = "{namespace}"
        roles = ["router", "providers"]
        drain_timeout_ms = 1000
        [nats]
        url = "{nats}"
        [redis]
        url = "{redis}"
        key_prefix = "switchyard:test:{namespace}:"
        [[providers]]
        name = "p-{name}"
        kind = "openai"
        base_url = "{openai}"
        model = "{model}"
        api_key = "sk-failover-test"
        timeout_ms = 15000
        [[routes]]
        name = "slow"
        providers = ["p-{name}"]
        retry = {{ max_attempts = 1 }}
        "#,
        nats = nats_url(),
        redis = redis_url(),
        openai = mock.openai_base_url(),
    )
}

/// One node's health, asked on its own admin subject.
async fn health(bus: &dyn Bus, subjects: &Subjects, node: &str) -> Option<NodeHealth> {
    let ask = Message::new(subjects.admin_node(node, "health"), Bytes::new());
    let reply = bus.request(ask, Duration::from_millis(300)).await.ok()?;
    serde_json::from_slice(&reply.payload).ok()
}

/// Upstream calls the node's provider has in flight.
fn provider_in_flight(health: &NodeHealth) -> u64 {
    health.providers.iter().map(|p| p.in_flight).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_with_queries_in_flight_loses_none_of_them() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let slow = || Behavior { latency: Latency::Fixed { ms: LATENCY_MS }, ..Behavior::default() };
    mock.set_behavior("failover-victim", slow());
    mock.set_behavior("failover-survivor", slow());

    let namespace = format!("failover-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let subjects = Subjects::new(&namespace);
    let (victim, survivor) = ("victim", "survivor");
    let mut nodes = Nodes { children: Vec::new(), files: Vec::new(), logs: Vec::new() };
    nodes.spawn(victim, &config(&mock, &namespace, victim, "failover-victim"));
    nodes.spawn(survivor, &config(&mock, &namespace, survivor, "failover-survivor"));

    let bus: Arc<dyn Bus> = Arc::new(NatsBus::connect(NatsOptions::new(nats_url())).await.unwrap());
    for node in [victim, survivor] {
        eventually(&format!("node {node} answers health with a router and a running provider"), DEADLINE, || {
            let (bus, subjects) = (bus.clone(), subjects.clone());
            async move {
                let health = health(bus.as_ref(), &subjects, node).await?;
                let running = health.providers.iter().all(|p| p.status == "running") && !health.providers.is_empty();
                (health.router.is_some() && running && !health.degraded).then_some(())
            }
        })
        .await
        .unwrap();
    }

    let options = ClientOptions {
        resend_after: RESEND_AFTER,
        max_resend_interval: Duration::from_secs(2),
        default_deadline: DEADLINE,
        ..ClientOptions::default()
    };
    let client = Client::new(bus.clone(), subjects.clone(), options);
    let sent = Instant::now();
    let queries: Vec<_> = (0..QUERIES)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let request = QueryRequest::new(vec![ChatMessage::user(format!("query {i}"))]);
                let result = client.query("slow", request).await;
                (i, result, sent.elapsed())
            })
        })
        .collect();

    // Kill the victim once every query has reached an upstream call and the victim is answering some of them;
    // that is before any copy was re-sent, so the victim's queries are the ones it owns.
    let owned = eventually("every query is at an upstream call, some of them on the victim", RESEND_AFTER, || {
        let (bus, subjects) = (bus.clone(), subjects.clone());
        async move {
            let on_victim = health(bus.as_ref(), &subjects, victim).await?;
            let on_survivor = health(bus.as_ref(), &subjects, survivor).await?;
            let (v, s) = (provider_in_flight(&on_victim), provider_in_flight(&on_survivor));
            let routing = on_victim.router.as_ref().map_or(0, |router| router.in_flight);
            (v + s == QUERIES as u64 && v > 0 && routing > 0).then_some(v)
        }
    })
    .await
    .unwrap();
    let killed_at = sent.elapsed();
    assert!(killed_at < RESEND_AFTER, "the kill came after the first re-send ({killed_at:?})");
    nodes.kill(victim);
    eprintln!("killed {victim} at {killed_at:?} with {owned} of {QUERIES} queries in flight on it");

    let mut results: Vec<(usize, Result<QueryReply, ClientError>, Duration)> = Vec::new();
    for query in queries {
        results.push(query.await.unwrap());
    }
    for (i, result, took) in &results {
        match result {
            Ok(reply) => eprintln!("query {i}: answered by {} in {took:?}", reply.provider),
            Err(error) => eprintln!("query {i}: FAILED after {took:?}: {error}"),
        }
    }
    let failed: Vec<_> = results.iter().filter(|(_, result, _)| result.is_err()).map(|(i, _, _)| *i).collect();
    assert!(
        failed.is_empty(),
        "queries {failed:?} of {QUERIES} were lost with {victim} ({owned} were in flight on it)"
    );
    for (i, result, _) in &results {
        let reply = result.as_ref().unwrap();
        assert_eq!(reply.content, format!("echo: query {i}"));
        assert_eq!(reply.provider, format!("p-{survivor}"), "query {i}: only the survivor can have answered");
    }
    let slowest = results.iter().map(|(_, _, took)| *took).max().unwrap_or_default();
    eprintln!("all {QUERIES} queries answered; the slowest took {slowest:?}");
    // Each query is answered once by the survivor: its own, plus one take-over call per query the victim held.
    assert_eq!(mock.calls("failover-survivor"), QUERIES as u64, "one survivor call per query, no duplicate");
    assert_eq!(mock.calls("failover-victim"), owned, "the victim's calls died with it");

    drop(nodes);
    mock.shutdown().await;
}

/// A node of the provider-death test: `roles`, and when it hosts providers, provider `p` on `model`.
fn split_config(mock: &MockServer, namespace: &str, name: &str, roles: &str, model: &str) -> String {
    format!(
        r#"
        [node]
        name = "{name}"
        namespace = "{namespace}"
        roles = {roles}
        drain_timeout_ms = 1000
        call_keepalive_ms = 200
        [nats]
        url = "{nats}"
        [redis]
        url = "{redis}"
        key_prefix = "switchyard:test:{namespace}:"
        [[providers]]
        name = "p"
        kind = "openai"
        base_url = "{openai}"
        model = "{model}"
        api_key = "sk-failover-test"
        timeout_ms = 30000
        [[routes]]
        name = "slow"
        providers = ["p"]
        "#,
        nats = nats_url(),
        redis = redis_url(),
        openai = mock.openai_base_url(),
    )
}

/// The other half of node death: the router lives, the node running its upstream calls dies. The router hears
/// no heartbeat from those calls any more, gives them up as lost (not the provider's failure) and runs them on
/// the other node hosting the provider, well inside the deadline. Without heartbeats they would wait for the
/// provider's 30 s timeout, past the client's deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_on_a_provider_node_that_dies_go_on_on_another_node() {
    const CALLS: usize = 4;
    const UPSTREAM_MS: u64 = 3_000;
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let slow = || Behavior { latency: Latency::Fixed { ms: UPSTREAM_MS }, ..Behavior::default() };
    mock.set_behavior("lost-victim", slow());
    mock.set_behavior("lost-survivor", slow());

    let namespace = format!("lost-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let subjects = Subjects::new(&namespace);
    let mut nodes = Nodes { children: Vec::new(), files: Vec::new(), logs: Vec::new() };
    nodes.spawn("router", &split_config(&mock, &namespace, "router", r#"["router"]"#, "unused"));
    nodes.spawn("victim", &split_config(&mock, &namespace, "victim", r#"["providers"]"#, "lost-victim"));
    let bus: Arc<dyn Bus> = Arc::new(NatsBus::connect(NatsOptions::new(nats_url())).await.unwrap());
    let ready = |node: &'static str, router: bool| {
        let (bus, subjects) = (bus.clone(), subjects.clone());
        async move {
            let what = format!("node {node} is ready");
            eventually(&what, DEADLINE, move || {
                let (bus, subjects) = (bus.clone(), subjects.clone());
                async move {
                    let health = health(bus.as_ref(), &subjects, node).await?;
                    let ready = if router { health.router.is_some() } else { !health.providers.is_empty() };
                    (ready && !health.degraded).then_some(())
                }
            })
            .await
        }
    };
    ready("router", true).await.unwrap();
    ready("victim", false).await.unwrap();

    // Every call starts on the victim (the only node hosting `p`); then the survivor joins and the victim dies.
    let sent = Instant::now();
    let queries: Vec<_> = (0..CALLS)
        .map(|i| {
            let (bus, subject) = (bus.clone(), subjects.query("slow"));
            tokio::spawn(async move {
                let mut request = QueryRequest::new(vec![ChatMessage::user(format!("lost {i}"))]);
                request.deadline_ms = Some(15_000);
                let payload = Bytes::from(serde_json::to_vec(&request).unwrap());
                let reply = bus.request(Message::new(subject, payload), Duration::from_secs(20)).await;
                (i, reply, sent.elapsed())
            })
        })
        .collect();
    let victim_calls = || async {
        let health = health(bus.as_ref(), &subjects, "victim").await?;
        (provider_in_flight(&health) == CALLS as u64).then_some(())
    };
    eventually("every call runs on the victim", DEADLINE, victim_calls).await.unwrap();
    nodes.spawn("survivor", &split_config(&mock, &namespace, "survivor", r#"["providers"]"#, "lost-survivor"));
    ready("survivor", false).await.unwrap();
    let killed_at = sent.elapsed();
    assert!(killed_at < Duration::from_millis(UPSTREAM_MS), "the victim's calls ended before the kill");
    nodes.kill("victim");
    eprintln!("killed the victim at {killed_at:?}, its {CALLS} calls in flight");

    for query in queries {
        let (i, reply, took) = query.await.unwrap();
        let reply = reply.unwrap_or_else(|e| panic!("query {i}: no reply: {e}"));
        let reply: QueryReply = match serde_json::from_slice(&reply.payload).unwrap() {
            switchyard_protocol::client::QueryOutcome::Reply(reply) => reply,
            other => panic!("query {i}: {other:?}"),
        };
        let outcomes: Vec<&str> = reply.trace.attempts.iter().map(|a| a.outcome.as_str()).collect();
        eprintln!("query {i}: answered in {took:?}, attempts {outcomes:?}");
        assert_eq!(reply.content, format!("echo: lost {i}"));
        assert_eq!(outcomes, ["lost", "success"], "query {i}: the lost call, then the survivor's");
        let lost = &reply.trace.attempts[0];
        assert!(lost.message.as_deref().unwrap_or("").contains("victim"), "the trace names the dead node: {lost:?}");
        // Lost after three 200 ms heartbeat periods, then one fresh upstream call.
        assert!(took < killed_at + Duration::from_millis(UPSTREAM_MS + 3_000), "query {i} took {took:?}");
    }
    assert_eq!(mock.calls("lost-survivor"), CALLS as u64, "each lost call ran once more, on the survivor");
    drop(nodes);
    mock.shutdown().await;
}
