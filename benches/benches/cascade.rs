//! The cascade coordinator's own cost: what a 2-stage cascade adds to a query beyond its model calls.
//!
//! One node (router, providers and cascade roles) on the real NATS, the mock answering instantly with token
//! logprobs. For every query the client measures the whole latency and subtracts the stage calls' own
//! latencies from the trace (each measured by the walk around its provider call): what is left is the router ->
//! coordinator hop, the coordinator's decision code (the logprob estimator) and its book-keeping. Three runs:
//! a plain route to the weak provider (its overhead above its one call is the router's own), the cascade
//! stopping at the weak stage, and the cascade always escalating to the strong one. The NATS request/reply
//! floor is measured in the same run. Prints a table and one JSON line.
//!
//! `cargo bench -p switchyard-benches --bench cascade -- [--seconds S] [--concurrency 1,16]`
//! Needs NATS at `SWITCHYARD_NATS_URL` (default nats://127.0.0.1:4222).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;

use switchyard_benches::{closed_loop, concurrency_list, round3};
use switchyard_bus::{Bus, Message, NatsBus, NatsOptions};
use switchyard_mock::{MockConfig, MockServer};
use switchyard_protocol::ChatMessage;
use switchyard_protocol::client::{QueryOutcome, QueryRequest};
use switchyard_protocol::subjects::Subjects;
use switchyard_runtime::{Node, NodeConfig, SharedState};

struct Args {
    seconds: u64,
    concurrency: Vec<usize>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args { seconds: 3, concurrency: vec![1, 16] };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--seconds" => args.seconds = it.next().context("--seconds needs a value")?.parse()?,
            "--concurrency" => args.concurrency = concurrency_list("--concurrency", it.next())?,
            _ => {} // cargo bench passes --bench; ignore what is not ours
        }
    }
    Ok(args)
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(run(args))
}

/// p50 and p99 of `values` (milliseconds).
fn quantiles(values: &mut [f64]) -> (f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0);
    }
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((q * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1];
    (at(0.50), at(0.99))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let nats = std::env::var("SWITCHYARD_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let mock = MockServer::start(MockConfig::default()).await?;
    let namespace = format!("cascade-bench-{}", std::process::id());
    let config = NodeConfig::from_toml(&format!(
        r#"
        [node]
        name = "bench-node"
        namespace = "{namespace}"
        roles = ["router", "providers", "cascade"]
        [[providers]]
        name = "weak"
        kind = "openai"
        base_url = "{base}"
        model = "bench-weak"
        max_in_flight = 4096
        [[providers]]
        name = "strong"
        kind = "openai"
        base_url = "{base}"
        model = "bench-strong"
        max_in_flight = 4096
        [[cascades]]
        name = "stops"
        [[cascades.stages]]
        target = "weak"
        threshold = 0.0
        estimator = {{ kind = "logprobs" }}
        [[cascades.stages]]
        target = "strong"
        [[cascades]]
        name = "escalates"
        [[cascades.stages]]
        target = "weak"
        threshold = 1.0
        estimator = {{ kind = "logprobs" }}
        [[cascades.stages]]
        target = "strong"
        [[routes]]
        name = "plain"
        providers = ["weak"]
        [[routes]]
        name = "stops"
        cascade = "stops"
        [[routes]]
        name = "escalates"
        cascade = "escalates"
        "#,
        base = mock.openai_base_url()
    ))?;
    let node_bus = NatsBus::connect(NatsOptions::new(nats.clone())).await.context("NATS must run")?;
    let node = Node::start(&config, Arc::new(node_bus), SharedState::default()).await?;
    let client: Arc<dyn Bus> = Arc::new(NatsBus::connect(NatsOptions::new(nats.clone())).await?);
    let subjects = Subjects::new(&namespace);
    let warmup = Duration::from_secs(1);
    let duration = Duration::from_secs(args.seconds);

    // The floor: a NATS request/reply to an echo responder on another connection.
    let responder = NatsBus::connect(NatsOptions::new(nats)).await?;
    let echo_subject = format!("{namespace}.echo");
    let mut echo = responder.subscribe(&echo_subject).await?;
    let echo_task = tokio::spawn(async move {
        while let Some(message) = echo.next().await {
            if let Some(reply) = message.reply {
                let _ = responder.publish(Message::new(reply, message.payload)).await;
            }
        }
    });

    println!("switchyard cascade benchmark: {}s per run after 1s warm-up, mock answers instantly", args.seconds);
    println!(
        "{:>5} {:<22} {:>9} {:>10} {:>10} {:>14} {:>14}",
        "conc", "path", "queries", "p50 ms", "p99 ms", "overhead p50", "overhead p99"
    );
    let mut rows = Vec::new();
    for &concurrency in &args.concurrency {
        let (bus, subject) = (client.clone(), echo_subject.clone());
        let floor =
            closed_loop(concurrency, warmup, duration, move || {
                let (bus, subject) = (bus.clone(), subject.clone());
                async move {
                    bus.request(Message::new(subject, Bytes::from_static(b"x")), Duration::from_secs(5)).await.is_ok()
                }
            })
            .await?;
        println!(
            "{concurrency:>5} {:<22} {:>9} {:>10.3} {:>10.3} {:>14} {:>14}",
            "nats request/reply", floor.requests, floor.p50_ms, floor.p99_ms, "-", "-"
        );
        rows.push(serde_json::json!({ "concurrency": concurrency, "path": "nats_floor", "figures": floor.json() }));
        for route in ["plain", "stops", "escalates"] {
            let overheads = Arc::new(Mutex::new(Vec::new()));
            let payload = Bytes::from(serde_json::to_vec(&QueryRequest::new(vec![ChatMessage::user("2 + 2?")]))?);
            let (bus, subject, sink) = (client.clone(), subjects.query(route), overheads.clone());
            let figures = closed_loop(concurrency, warmup, duration, move || {
                let (bus, subject, payload, sink) = (bus.clone(), subject.clone(), payload.clone(), sink.clone());
                async move {
                    let sent = Instant::now();
                    let Ok(answer) = bus.request(Message::new(subject, payload), Duration::from_secs(5)).await else {
                        return false;
                    };
                    let total_ms = sent.elapsed().as_secs_f64() * 1000.0;
                    match serde_json::from_slice::<QueryOutcome>(&answer.payload) {
                        Ok(QueryOutcome::Reply(reply)) => {
                            let calls: f64 = reply.trace.attempts.iter().map(|a| a.latency_ms).sum();
                            if let Ok(mut sink) = sink.lock() {
                                sink.push(total_ms - calls);
                            }
                            true
                        }
                        _ => false,
                    }
                }
            })
            .await?;
            let mut values = overheads.lock().map(|v| v.clone()).unwrap_or_default();
            let (o50, o99) = quantiles(&mut values);
            println!(
                "{concurrency:>5} {:<22} {:>9} {:>10.3} {:>10.3} {:>14.3} {:>14.3}",
                route, figures.requests, figures.p50_ms, figures.p99_ms, o50, o99
            );
            rows.push(serde_json::json!({
                "concurrency": concurrency, "path": route, "figures": figures.json(), "errors": figures.errors,
                "overhead_p50_ms": round3(o50), "overhead_p99_ms": round3(o99),
                "overhead_p50_in_nats_round_trips": round3(o50 / floor.p50_ms.max(1e-6)),
            }));
        }
    }
    echo_task.abort();
    node.shutdown().await;
    mock.shutdown().await;
    println!("overhead = client latency - the stage calls' own latencies (trace); plain = the router alone");
    println!("{}", serde_json::json!({ "bench": "cascade", "runs": rows }));
    Ok(())
}
