//! Switchyard's overhead: the same load sent straight to the mock provider over HTTP, and through a node over
//! NATS into the same mock. Closed loop at each concurrency; prints a table and ends with one JSON line.
//!
//! The node runs as in production, with its shared state in Redis (cluster breakers, idempotency); the Redis
//! commands it sends during each run (`INFO commandstats` before and after) are reported per query, to show
//! that a healthy provider costs no Redis round trip per query.
//!
//! Two more runs follow: the same load with a distinct idempotency key on every query (its Redis cost per
//! query), and a long-tail latency run (a log-normal mock, median 10 ms, sigma 1) on a route of two providers,
//! once with hedging off and once on (delay: the provider's p95), which reports the p99 of each.
//!
//! `cargo bench -p switchyard-benches --bench load -- [--seconds S] [--concurrency 1,64] [--tail-concurrency 8]`
//! Needs NATS at `SWITCHYARD_NATS_URL` (default nats://127.0.0.1:4222) and Redis at `SWITCHYARD_REDIS_URL`
//! (default redis://127.0.0.1:6379); run `deploy/services.sh` first.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;

use switchyard_benches::{closed_loop, concurrency_list, print_row, redis_commands, round3};
use switchyard_bus::{Bus, Message, NatsBus, NatsOptions};
use switchyard_mock::{Behavior, Latency, MockConfig, MockServer};
use switchyard_protocol::ChatMessage;
use switchyard_protocol::client::{QueryOutcome, QueryRequest};
use switchyard_protocol::subjects::Subjects;
use switchyard_runtime::{Node, NodeConfig, SharedState};
use switchyard_state::{RedisOptions, RedisStore};

const MODEL: &str = "bench-model";
const TAIL_A: &str = "tail-model-a";
const TAIL_B: &str = "tail-model-b";

struct Args {
    seconds: u64,
    concurrency: Vec<usize>,
    tail_concurrency: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args { seconds: 5, concurrency: vec![1, 64], tail_concurrency: 8 };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--seconds" => args.seconds = it.next().context("--seconds needs a value")?.parse()?,
            "--tail-concurrency" => {
                args.tail_concurrency = it.next().context("--tail-concurrency needs a value")?.parse()?
            }
            "--concurrency" => args.concurrency = concurrency_list("--concurrency", it.next())?,
            _ => {} // cargo bench passes --bench; ignore what is not ours
        }
    }
    Ok(args)
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let _ = async_nats::rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let nats = std::env::var("SWITCHYARD_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let tail = Behavior { latency: Latency::LogNormal { median_ms: 10.0, sigma: 1.0 }, ..Behavior::default() };
    let models = [(TAIL_A.to_owned(), tail.clone()), (TAIL_B.to_owned(), tail)].into_iter().collect();
    let mock = MockServer::start(MockConfig { models, ..MockConfig::default() }).await?;
    let namespace = format!("bench-{}", std::process::id());
    let config = NodeConfig::from_toml(&format!(
        r#"
        [node]
        name = "bench-node"
        namespace = "{namespace}"
        [[providers]]
        name = "mock"
        kind = "openai"
        base_url = "{base}"
        model = "{MODEL}"
        max_in_flight = 4096
        [[providers]]
        name = "tail-a"
        kind = "openai"
        base_url = "{base}"
        model = "{TAIL_A}"
        max_in_flight = 4096
        [[providers]]
        name = "tail-b"
        kind = "openai"
        base_url = "{base}"
        model = "{TAIL_B}"
        max_in_flight = 4096
        [[routes]]
        name = "chat"
        providers = ["mock"]
        [[routes]]
        name = "tail"
        providers = ["tail-a", "tail-b"]
        hedge = {{ enabled = false }}
        [[routes]]
        name = "tail-hedged"
        providers = ["tail-a", "tail-b"]
        "#,
        base = mock.openai_base_url()
    ))?;
    let redis_url = std::env::var("SWITCHYARD_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let options =
        RedisOptions { key_prefix: format!("switchyard:bench:{}:", std::process::id()), ..RedisOptions::default() };
    let store = RedisStore::connect(&redis_url, options).await.context("Redis must run")?;
    let mut stats = redis::Client::open(redis_url.as_str())?.get_multiplexed_async_connection().await?;
    let node_bus = NatsBus::connect(NatsOptions::new(nats.clone())).await.context("NATS must run")?;
    // The node's own count of the commands it sends (a script once), beside Redis's count, which also counts every
    // command a script runs inside Redis.
    let node_store = store.clone();
    let node = Node::start(&config, Arc::new(node_bus), SharedState::from_store(store)).await?;
    let client: Arc<dyn Bus> = Arc::new(NatsBus::connect(NatsOptions::new(nats)).await?);
    let http = reqwest::Client::builder().tcp_nodelay(true).pool_max_idle_per_host(1024).build()?;

    let query = Bytes::from(serde_json::to_vec(&QueryRequest::new(vec![ChatMessage::user("hello bench")]))?);
    let direct_body = Bytes::from(serde_json::to_vec(&serde_json::json!({
        "model": MODEL, "messages": [{"role": "user", "content": "hello bench"}]
    }))?);
    let url = format!("{}/chat/completions", mock.openai_base_url());
    let subject = Subjects::new(&namespace).query("chat");
    let warmup = Duration::from_secs(1);
    let duration = Duration::from_secs(args.seconds);

    println!("switchyard load benchmark: {}s per run after 1s warm-up, mock answers instantly", args.seconds);
    println!(
        "{:>5} {:<11} {:>10} {:>8} {:>9} {:>9} {:>9}",
        "conc", "path", "requests", "errors", "qps", "p50 ms", "p99 ms"
    );
    let mut results = Vec::new();
    for &concurrency in &args.concurrency {
        let (http, url, body) = (http.clone(), url.clone(), direct_body.clone());
        let direct = closed_loop(concurrency, warmup, duration, move || {
            let request = http.post(&url).header("content-type", "application/json").body(body.clone());
            async move {
                match request.send().await {
                    Ok(response) => response.status().is_success() && response.bytes().await.is_ok(),
                    Err(_) => false,
                }
            }
        })
        .await?;
        print_row(concurrency, "direct-http", &direct);

        let (client, subject, query) = (client.clone(), subject.clone(), query.clone());
        let commands_before = redis_commands(&mut stats).await?;
        let sent_before = node_store.commands_sent();
        let through = closed_loop(concurrency, warmup, duration, move || {
            let (client, message) = (client.clone(), Message::new(subject.clone(), query.clone()));
            async move {
                match client.request(message, Duration::from_secs(10)).await {
                    Ok(reply) => matches!(serde_json::from_slice(&reply.payload), Ok(QueryOutcome::Reply(_))),
                    Err(_) => false,
                }
            }
        })
        .await?;
        print_row(concurrency, "switchyard", &through);
        // INFO itself counts as one command.
        let commands = redis_commands(&mut stats).await?.saturating_sub(commands_before + 1);
        let queries = (through.requests + through.errors).max(1) as f64;
        let sent = node_store.commands_sent() - sent_before;
        let per_query = sent as f64 / queries;
        println!(
            "{concurrency:>5} redis       the node sent {sent} commands ({per_query:.5} per query); Redis counted {commands} \
             with what scripts run inside"
        );
        let overhead_p50 = through.p50_ms - direct.p50_ms;
        let overhead_p99 = through.p99_ms - direct.p99_ms;
        println!("{concurrency:>5} overhead    p50 {overhead_p50:+.3} ms, p99 {overhead_p99:+.3} ms");
        results.push(serde_json::json!({
            "concurrency": concurrency,
            "direct": direct.json(),
            "switchyard": through.json(),
            "overhead_p50_ms": round3(overhead_p50),
            "overhead_p99_ms": round3(overhead_p99),
            "node_redis_commands": sent,
            "node_redis_commands_per_query": per_query,
            "redis_commands_incl_script_internals": commands,
        }));
    }

    // Queries with an idempotency key: each one is claimed in Redis.
    let subjects = Subjects::new(&namespace);
    let mut idempotent = Vec::new();
    for &concurrency in &args.concurrency {
        let (client, subject) = (client.clone(), subjects.query("chat"));
        let counter = Arc::new(AtomicU64::new(0));
        let sent_so_far = counter.clone();
        let commands_before = redis_commands(&mut stats).await?;
        let node_before = node_store.commands_sent();
        let figures = closed_loop(concurrency, warmup, duration, move || {
            let mut request = QueryRequest::new(vec![ChatMessage::user("hello bench")]);
            request.id = Some(format!("bench-{}-{}", std::process::id(), counter.fetch_add(1, Ordering::Relaxed)));
            let payload = Bytes::from(serde_json::to_vec(&request).unwrap_or_default());
            let (client, message) = (client.clone(), Message::new(subject.clone(), payload));
            async move {
                match client.request(message, Duration::from_secs(10)).await {
                    Ok(reply) => matches!(serde_json::from_slice(&reply.payload), Ok(QueryOutcome::Reply(_))),
                    Err(_) => false,
                }
            }
        })
        .await?;
        print_row(concurrency, "with-id", &figures);
        let commands = redis_commands(&mut stats).await?.saturating_sub(commands_before + 1);
        // The warm-up's queries send commands too, so divide by every query sent.
        let sent = sent_so_far.load(Ordering::Relaxed);
        let node_sent = node_store.commands_sent() - node_before;
        let per_query = node_sent as f64 / sent.max(1) as f64;
        println!(
            "{concurrency:>5} redis       the node sent {node_sent} commands with ids ({per_query:.2} per query); Redis \
             counted {commands} with what scripts run inside"
        );
        idempotent.push(serde_json::json!({
            "concurrency": concurrency,
            "switchyard": figures.json(),
            "node_redis_commands": node_sent,
            "node_redis_commands_per_query": per_query,
            "redis_commands_incl_script_internals": commands,
        }));
    }

    // A long tail, without and with hedging.
    println!("long tail: log-normal latency (median 10 ms, sigma 1.0), c={}", args.tail_concurrency);
    let mut tail = Vec::new();
    for route in ["tail", "tail-hedged"] {
        let (client, subject, query) = (client.clone(), subjects.query(route), query.clone());
        let hedges = Arc::new(AtomicU64::new(0));
        let counted = hedges.clone();
        let figures = closed_loop(args.tail_concurrency, warmup, duration, move || {
            let (client, message, hedges) =
                (client.clone(), Message::new(subject.clone(), query.clone()), counted.clone());
            async move {
                match client.request(message, Duration::from_secs(10)).await {
                    Ok(reply) => match serde_json::from_slice(&reply.payload) {
                        Ok(QueryOutcome::Reply(reply)) => {
                            if reply.trace.attempts.iter().any(|a| a.hedged) {
                                hedges.fetch_add(1, Ordering::Relaxed);
                            }
                            true
                        }
                        _ => false,
                    },
                    Err(_) => false,
                }
            }
        })
        .await?;
        print_row(args.tail_concurrency, route, &figures);
        let hedged = hedges.load(Ordering::Relaxed);
        tail.push(serde_json::json!({ "route": route, "figures": figures.json(), "hedged_queries": hedged }));
    }
    if let [off, on] = tail.as_slice() {
        let p99 = |v: &serde_json::Value| v["figures"]["p99_ms"].as_f64().unwrap_or_default();
        println!(
            "tail p99: hedging off {:.3} ms, on {:.3} ms ({:.2}x)",
            p99(off),
            p99(on),
            p99(on) / p99(off).max(1e-9)
        );
    }

    node.shutdown().await;
    mock.shutdown().await;
    println!(
        "{}",
        serde_json::json!({
            "bench": "load", "seconds": args.seconds, "runs": results, "with_id": idempotent, "tail": tail
        })
    );
    Ok(())
}
