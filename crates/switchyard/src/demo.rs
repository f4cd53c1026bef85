//! `switchyard demo`: the embedded default. A small cluster in one process, nothing external needed.
//!
//! Three nodes share an in-memory bus; two mock providers (one OpenAI-compatible, one Anthropic-compatible)
//! run on loopback in this process. The script: healthy traffic; an outage of the primary provider (queries fail
//! over, and each node's breaker trips so the dead provider is no longer called); a crashed provider actor (its
//! supervisor restarts it); recovery (once an open interval is over, one half-open probe reaches the healed primary
//! and closes the cluster's breaker, then each node's own); and a cascade (route `ask`: a small model first, judged
//! by its token logprobs, escalating hard questions to a large one); and quality routing (route `pick`: a rule
//! router sends short questions to the small model, long, tagged or `task = math` ones to the large one). Each
//! query prints one line; a summary closes the run with the cascade's escalation rate and the routing split.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;

use switchyard_bus::{Bus, MemoryBus, Message};
use switchyard_core::BreakerState;
use switchyard_mock::{Behavior, MockConfig, MockError, MockServer};
use switchyard_protocol::ChatMessage;
use switchyard_protocol::admin::NodeHealth;
use switchyard_protocol::client::{QueryOutcome, QueryRequest};
use switchyard_protocol::subjects::Subjects;
use switchyard_runtime::{Node, NodeConfig, Role, SharedState};
use switchyard_state::MemoryStore;

use crate::admin::state_name;

const PRIMARY_MODEL: &str = "gpt-4o-mini";
const SECONDARY_MODEL: &str = "claude-3-5-haiku";
/// The cascade's stages: a cheap model judged by its token logprobs, then a strong one.
const SMALL_MODEL: &str = "small-8b";
const LARGE_MODEL: &str = "large-405b";
/// The small model is unsure (low token logprobs) of every question containing this.
const HARD_MARKER: &str = "Prove";

const CASCADE_QUESTIONS: &[&str] = &[
    "What is 7 times 8?",
    "Prove that there are infinitely many primes.",
    "Name the capital of France.",
    "What is 12 plus 30?",
    "Prove that the square root of 2 is irrational.",
    "Spell 'queue' backwards.",
    "What colour is the sky on a clear day?",
    "Prove the triangle inequality.",
];
/// Phase 6's questions and their metadata `task`: the rule router `pick` sends short untagged ones to the small
/// model, long ones, `prove`/`derive` ones and `task = math` ones to the large one.
const ROUTED_QUESTIONS: &[(&str, Option<&str>)] = &[
    ("What is the capital of Japan?", None),
    ("Derive the quadratic formula from ax^2 + bx + c = 0.", None),
    ("Translate 'good morning' into Spanish.", None),
    ("How many legs does a spider have?", Some("math")),
    (
        "Our service keeps a per-node cache of user sessions, and after a deploy half of the users are logged out. \
         Walk me through the likely causes and how to make the cache survive rolling restarts.",
        None,
    ),
    ("Give me a synonym for 'quick'.", None),
    ("Prove that the sum of two even numbers is even.", None),
    ("Which planet is closest to the sun?", None),
];

/// How long phase 4 keeps sending queries for the breakers to close (open waits grow to 2 s during the outage).
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(15);
/// Pace of phase 4's queries while the breakers are still open: enough for a probe after each open interval.
const RECOVERY_PACE: Duration = Duration::from_millis(100);

const QUESTIONS: &[&str] = &[
    "What is a circuit breaker?",
    "Summarise the CAP theorem in one line.",
    "Why retry with jitter?",
    "Name a queue group use.",
    "What does idempotent mean?",
    "Explain backpressure briefly.",
];

#[derive(Default)]
struct Tally {
    answered: usize,
    failed: usize,
    failovers: usize,
    by_provider: BTreeMap<String, usize>,
    latencies_ms: Vec<f64>,
    /// Who answered the last query (to count the primary's answers after the outage).
    last_provider: Option<String>,
}

pub async fn run(queries: usize, nodes: usize) -> anyhow::Result<()> {
    let nodes = nodes.clamp(1, 9);
    let mock = MockServer::start(MockConfig::default()).await.context("cannot start the mock provider")?;
    let bus = MemoryBus::new();
    // The nodes share one in-memory store, as real nodes share Redis.
    let shared = SharedState::from_store(MemoryStore::new());
    let config = demo_config(&mock.openai_base_url(), &mock.base_url())?;

    println!("Switchyard demo: {nodes} nodes on an in-memory bus, mock providers at {}", mock.base_url());
    println!(
        "route `chat` = primary ({PRIMARY_MODEL}, OpenAI wire) then secondary ({SECONDARY_MODEL}, Anthropic wire)\n"
    );
    let mut cluster = Vec::new();
    mock.set_behavior(SMALL_MODEL, Behavior { unsure_marker: Some(HARD_MARKER.into()), ..Behavior::default() });
    for i in 1..=nodes {
        let mut config = config.clone();
        config.node.name = format!("node-{i}");
        config.node.roles = vec![Role::Router, Role::Providers, Role::Cascade];
        cluster.push(Node::start(&config, Arc::new(bus.clone()), shared.clone()).await?);
    }
    let client: Arc<dyn Bus> = Arc::new(bus.clone());
    let mut tally = Tally::default();
    let mut n = 0;

    phase("1. healthy: the primary answers");
    for _ in 0..queries {
        ask(&client, &mut n, &mut tally).await;
    }

    phase("2. outage: the primary answers HTTP 503 to everything");
    mock.set_behavior(PRIMARY_MODEL, outage());
    for _ in 0..queries {
        ask(&client, &mut n, &mut tally).await;
    }

    phase("3. the secondary's actor crashes on every node; supervisors restart it");
    let crash = Message::new(Subjects::default().admin_provider("secondary", "crash"), Bytes::new());
    switchyard_bus::gather(client.as_ref(), crash, Duration::from_secs(2), nodes).await?;
    let restarted = wait_for_nodes(&cluster, Duration::from_secs(2), |health| {
        health.providers.iter().any(|p| p.name == "secondary" && p.status == "running" && p.restarts > 0)
    })
    .await;
    if restarted {
        println!("   every node restarted its `secondary` actor");
    } else {
        println!("   not every `secondary` actor was back within 2 s");
    }
    for _ in 0..queries {
        ask(&client, &mut n, &mut tally).await;
    }

    phase(
        "4. recovery: the primary is healthy again; after its open interval one probe reaches it and closes the breakers",
    );
    mock.clear_behavior(PRIMARY_MODEL);
    let outage_end = n;
    let mut primary_after_outage = 0;
    // Paced queries until every breaker of the primary, each node's and the cluster's, is closed again.
    let recovery = Instant::now();
    let recovered = loop {
        if all_breakers_closed(&cluster).await {
            break true;
        }
        if recovery.elapsed() > RECOVERY_TIMEOUT {
            break false;
        }
        ask(&client, &mut n, &mut tally).await;
        primary_after_outage += usize::from(tally.last_provider.as_deref() == Some("primary"));
        tokio::time::sleep(RECOVERY_PACE).await;
    };
    if recovered {
        println!(
            "   every breaker of `primary` is closed again, {:.1} s after it healed",
            recovery.elapsed().as_secs_f64()
        );
    } else {
        println!("   the breakers of `primary` were not all closed within {RECOVERY_TIMEOUT:?}");
    }
    for _ in 0..queries {
        ask(&client, &mut n, &mut tally).await;
        primary_after_outage += usize::from(tally.last_provider.as_deref() == Some("primary"));
    }

    phase(&format!(
        "5. cascade: route `ask` tries {SMALL_MODEL} first and escalates to {LARGE_MODEL} when its token logprobs are low"
    ));
    let mut escalated = 0;
    for (i, question) in CASCADE_QUESTIONS.iter().enumerate() {
        escalated += usize::from(ask_cascade(&client, i + 1, question).await);
    }
    let health = cascade_health(&client).await;

    phase(&format!(
        "6. quality routing: route `pick` sends short questions to {SMALL_MODEL}, long, tagged (prove, derive) or \
         task=math ones to {LARGE_MODEL}"
    ));
    let mut split: BTreeMap<String, usize> = BTreeMap::new();
    for (i, (question, task)) in ROUTED_QUESTIONS.iter().enumerate() {
        if let Some(provider) = ask_routed(&client, i + 1, question, *task).await {
            *split.entry(provider).or_default() += 1;
        }
    }

    println!("\n== summary");
    println!("queries answered {}/{}, failed {}, failovers {}", tally.answered, n, tally.failed, tally.failovers);
    for (provider, count) in &tally.by_provider {
        println!("  answered by {provider:<10} {count}");
    }
    tally.latencies_ms.sort_by(f64::total_cmp);
    if let Some(p50) = tally.latencies_ms.get(tally.latencies_ms.len() / 2) {
        println!("  median latency {p50:.2} ms");
    }
    println!(
        "upstream calls seen by the mock: {PRIMARY_MODEL} {}, {SECONDARY_MODEL} {}",
        mock.calls(PRIMARY_MODEL),
        mock.calls(SECONDARY_MODEL)
    );
    println!("answered by primary after the outage (q{:02} on): {primary_after_outage}", outage_end + 1);
    for node in &cluster {
        let health = node.health().await;
        let restarts: Vec<String> = health
            .providers
            .iter()
            .map(|p| {
                format!(
                    "{} {} (restarts {}, breaker {}, cluster breaker {})",
                    p.name,
                    p.status,
                    p.restarts,
                    state_name(p.breaker),
                    state_name(p.cluster_breaker)
                )
            })
            .collect();
        println!("  {}: {}", health.node, restarts.join(", "));
    }
    println!(
        "cascade `answers`: {escalated} of {} questions escalated; the cluster's escalation rate {}",
        CASCADE_QUESTIONS.len(),
        health.unwrap_or_else(|| "was not read back in time".into())
    );
    let routed: usize = split.values().sum();
    let split: Vec<String> = split.iter().map(|(provider, n)| format!("{n} to {provider}")).collect();
    println!("router `pick`: {routed} of {} questions answered: {}", ROUTED_QUESTIONS.len(), split.join(", "));
    for node in cluster {
        node.shutdown().await;
    }
    mock.shutdown().await;
    Ok(())
}

/// Asks the routed route one question and prints the router's decision; the provider that answered.
async fn ask_routed(client: &Arc<dyn Bus>, n: usize, question: &str, task: Option<&str>) -> Option<String> {
    let mut request = QueryRequest::new(vec![ChatMessage::user(question)]);
    request.deadline_ms = Some(5_000);
    if let Some(task) = task {
        request.metadata.insert("task".into(), task.into());
    }
    let payload = serde_json::to_vec(&request).ok()?;
    let message = Message::new(Subjects::default().query("pick"), Bytes::from(payload));
    let reply = client.request(message, Duration::from_secs(6)).await;
    match reply.ok().and_then(|m| serde_json::from_slice::<QueryOutcome>(&m.payload).ok()) {
        Some(QueryOutcome::Reply(reply)) => {
            let why = reply.trace.decision.as_ref().map_or_else(
                || "no decision".to_owned(),
                |d| match d.reason["rule"].as_str() {
                    Some(rule) => format!("rule {rule}"),
                    None => d.reason["kind"].as_str().unwrap_or("?").to_owned(),
                },
            );
            let tag = task.map(|t| format!(" [task={t}]")).unwrap_or_default();
            println!("r{n:02} {:<56} {why:<14} -> {}", truncate(&format!("{question}{tag}"), 53), reply.provider);
            Some(reply.provider)
        }
        Some(QueryOutcome::Error(error)) => {
            println!("r{n:02} error {}: {}", error.error.code, error.error.message);
            None
        }
        None => {
            println!("r{n:02} no answer");
            None
        }
    }
}

/// Asks the cascade route one question and prints its stages; whether it escalated.
async fn ask_cascade(client: &Arc<dyn Bus>, n: usize, question: &str) -> bool {
    let mut request = QueryRequest::new(vec![ChatMessage::user(question)]);
    request.deadline_ms = Some(5_000);
    let Ok(payload) = serde_json::to_vec(&request) else { return false };
    let message = Message::new(Subjects::default().query("ask"), Bytes::from(payload));
    let reply = client.request(message, Duration::from_secs(6)).await;
    match reply.ok().and_then(|m| serde_json::from_slice::<QueryOutcome>(&m.payload).ok()) {
        Some(QueryOutcome::Reply(reply)) => {
            let stages: Vec<String> = reply
                .trace
                .stages
                .iter()
                .map(|s| {
                    let confidence = s["confidence"].as_f64().map_or_else(|| "-".into(), |c| format!("{c:.2}"));
                    let verdict = s["verdict"]["verdict"].as_str().unwrap_or("?");
                    format!("{} {confidence} {verdict}", s["target"].as_str().unwrap_or("?"))
                })
                .collect();
            println!("c{n:02} {:<48} {:<44} -> {}", truncate(question, 48), stages.join(" | "), reply.provider);
            reply.trace.stages.len() > 1
        }
        Some(QueryOutcome::Error(error)) => {
            println!("c{n:02} error {}: {}", error.error.code, error.error.message);
            false
        }
        None => {
            println!("c{n:02} no answer");
            false
        }
    }
}

/// The cluster's escalation rate of the cascade and its health, once the coordinators have flushed and read it
/// back (about a second).
async fn cascade_health(client: &Arc<dyn Bus>) -> Option<String> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        let ask = Message::new(Subjects::default().admin_cascades(), Bytes::new());
        if let Ok(replies) = switchyard_bus::gather(client.as_ref(), ask, Duration::from_millis(300), 1).await
            && let Some(status) = replies
                .iter()
                .filter_map(|m| serde_json::from_slice::<Vec<serde_json::Value>>(&m.payload).ok())
                .flatten()
                .next()
        {
            let stage = &status["stages"][0];
            let total = stage["direct"].as_u64().unwrap_or(0) + stage["escalated"].as_u64().unwrap_or(0);
            if total as usize >= CASCADE_QUESTIONS.len() {
                let rate = stage["escalation_rate"].as_f64().unwrap_or(0.0);
                let health = stage["health"].as_str().unwrap_or("unknown");
                let cost = &status["cost"];
                return Some(format!(
                    "{:.0} % ({health}); cost per query {:.6} USD against {:.6} for {LARGE_MODEL} alone",
                    rate * 100.0,
                    cost["measured_per_query"].as_f64().unwrap_or(0.0),
                    cost["strong_only_per_query"].as_f64().unwrap_or(0.0)
                ));
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// Polls every node's health until `done` holds for each (true), or `timeout` passes (false).
async fn wait_for_nodes(cluster: &[Node], timeout: Duration, done: impl Fn(&NodeHealth) -> bool) -> bool {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        let mut all = true;
        for node in cluster {
            all &= done(&node.health().await);
        }
        if all {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Whether every node sees every provider's breakers, its own and the cluster's, closed.
async fn all_breakers_closed(cluster: &[Node]) -> bool {
    for node in cluster {
        let health = node.health().await;
        let closed = Some(BreakerState::Closed);
        if !health.providers.iter().all(|p| p.breaker == closed && p.cluster_breaker == closed) {
            return false;
        }
    }
    true
}

fn phase(title: &str) {
    println!("\n== {title}");
}

fn outage() -> Behavior {
    Behavior {
        errors: vec![switchyard_mock::ErrorRule {
            rate: 1.0,
            error: MockError::Status { status: 503, retry_after_s: None, retry_after_ms: None },
        }],
        ..Behavior::default()
    }
}

async fn ask(client: &Arc<dyn Bus>, n: &mut usize, tally: &mut Tally) {
    *n += 1;
    tally.last_provider = None;
    let question = QUESTIONS[*n % QUESTIONS.len()];
    let mut request = QueryRequest::new(vec![ChatMessage::user(question)]);
    request.id = Some(format!("demo-{n}"));
    request.deadline_ms = Some(5_000);
    let Ok(payload) = serde_json::to_vec(&request) else { return };
    let started = Instant::now();
    let reply = client
        .request(Message::new(Subjects::default().query("chat"), Bytes::from(payload)), Duration::from_secs(6))
        .await;
    let outcome = reply.ok().and_then(|m| serde_json::from_slice::<QueryOutcome>(&m.payload).ok());
    match outcome {
        Some(QueryOutcome::Reply(reply)) => {
            let path: Vec<String> =
                reply.trace.attempts.iter().map(|a| format!("{} {}", a.provider, mark(&a.outcome))).collect();
            let failover = reply.trace.attempts.len() > 1;
            tally.answered += 1;
            tally.failovers += usize::from(failover);
            *tally.by_provider.entry(reply.provider.clone()).or_default() += 1;
            tally.last_provider = Some(reply.provider.clone());
            tally.latencies_ms.push(started.elapsed().as_secs_f64() * 1000.0);
            println!(
                "q{n:02} {:<7} {:<46} {:>6.2} ms  {}{}",
                reply.trace.node,
                path.join(" -> "),
                reply.latency_ms,
                truncate(&reply.content, 40),
                if failover { "   [failover]" } else { "" }
            );
        }
        Some(QueryOutcome::Error(error)) => {
            tally.failed += 1;
            println!("q{n:02} error {}: {}", error.error.code, error.error.message);
        }
        None => {
            tally.failed += 1;
            println!("q{n:02} no answer");
        }
    }
}

fn mark(outcome: &str) -> String {
    if outcome == "success" { "ok".into() } else { format!("x {outcome}") }
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        format!("{}...", text.chars().take(max).collect::<String>())
    }
}

fn demo_config(openai_base: &str, anthropic_base: &str) -> anyhow::Result<NodeConfig> {
    let toml = format!(
        r#"
        [supervisor]
        backoff_base_ms = 20
        [[providers]]
        name = "primary"
        kind = "openai"
        base_url = "{openai_base}"
        model = "{PRIMARY_MODEL}"
        api_key = "sk-demo-not-a-real-key"
        input_price_per_mtok = 0.15
        output_price_per_mtok = 0.60
        timeout_ms = 2000
        [providers.breaker]
        window_calls = 10
        minimum_calls = 3
        open_wait_base_ms = 300
        open_wait_max_ms = 2000
        [[providers]]
        name = "secondary"
        kind = "anthropic"
        base_url = "{anthropic_base}"
        model = "{SECONDARY_MODEL}"
        api_key = "sk-ant-demo-not-a-real-key"
        input_price_per_mtok = 0.80
        output_price_per_mtok = 4.00
        timeout_ms = 2000
        [[routes]]
        name = "chat"
        providers = ["primary", "secondary"]
        [[providers]]
        name = "small"
        kind = "openai"
        base_url = "{openai_base}"
        model = "{SMALL_MODEL}"
        api_key = "sk-demo-not-a-real-key"
        input_price_per_mtok = 0.05
        output_price_per_mtok = 0.10
        [[providers]]
        name = "large"
        kind = "openai"
        base_url = "{openai_base}"
        model = "{LARGE_MODEL}"
        api_key = "sk-demo-not-a-real-key"
        input_price_per_mtok = 3.00
        output_price_per_mtok = 9.00
        [[cascades]]
        name = "answers"
        health = {{ min_decisions = 5 }}
        # Cost hints stand in for a stage until this node has measured its own calls of it.
        [[cascades.stages]]
        target = "small"
        threshold = 0.5
        estimator = {{ kind = "logprobs" }}
        cost_hint_usd = 0.000002
        [[cascades.stages]]
        target = "large"
        cost_hint_usd = 0.0001
        [[routes]]
        name = "ask"
        cascade = "answers"
        [[routers]]
        kind = "rules"
        name = "by-size"
        default = "small"
        [[routers.rules]]
        name = "long"
        model = "large"
        min_chars = 120
        [[routers.rules]]
        name = "tagged"
        model = "large"
        regex = "(?i)\\b(prove|derive)\\b"
        [[routers.rules]]
        name = "math"
        model = "large"
        metadata = {{ task = ["math"] }}
        [[routes]]
        name = "pick"
        router = "by-size"
        providers = ["small", "large"]
        "#
    );
    Ok(NodeConfig::from_toml(&toml)?)
}
