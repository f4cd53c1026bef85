//! A node's memory under a flood: one million queries with distinct ids, then a flood of large but legal
//! payloads (just under `node.max_payload_bytes`), against an in-process node (memory bus, mock provider).
//!
//! The client keeps a window of queries outstanding, far more than the node admits, so the node must shed
//! (`overloaded`, before parsing) rather than queue. The process RSS (`VmRSS` in `/proc/self/status`) is sampled
//! every few milliseconds: before, peak and after each flood, against the bound the node's limits imply:
//! `COPIES` x `max_in_flight_bytes` (a held query exists in several forms along its path: payload, parsed
//! request, provider call, HTTP bodies on both sides of the mock, answer, rendered reply) +
//! `dedup_max_answer_bytes` (kept answers) + a fixed allowance for the runtime, the mock and the client's own
//! window. The bound is judged on the RSS after each flood, once the allocator handed freed pages back (jemalloc,
//! as in the `switchyard` binary); the peak is reported beside it (`peak_within_bound`): during a flood the process
//! also holds the HTTP connections of up to `max_in_flight` provider calls on both sides of the in-process mock,
//! and the client's window. Prints a table and ends with one JSON line.
//!
//! The node runs without a shared store (the idempotency answers would then live in Redis, outside the node).
//!
//! `cargo bench -p switchyard-benches --bench memory -- [--queries N] [--large N] [--window N]`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;

use switchyard_bus::{Bus, MemoryBus, Message};
use switchyard_mock::{MockConfig, MockServer};
use switchyard_protocol::ChatMessage;
use switchyard_protocol::client::QueryRequest;
use switchyard_protocol::subjects::Subjects;
use switchyard_runtime::{Node, NodeConfig, SharedState};

const MIB: f64 = 1024.0 * 1024.0;
/// The runtime, the mock, the allocator's slack and the client's window of outstanding messages.
const ALLOWANCE_MIB: f64 = 256.0;
/// How many copies of a held query's payload the path holds at worst.
const COPIES: f64 = 8.0;

struct Args {
    queries: u64,
    large: u64,
    window: u64,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args { queries: 1_000_000, large: 1_000, window: 20_000 };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || -> anyhow::Result<u64> { Ok(it.next().context("a value is needed")?.parse()?) };
        match arg.as_str() {
            "--queries" => args.queries = value()?,
            "--large" => args.large = value()?,
            "--window" => args.window = value()?,
            _ => {} // cargo bench passes --bench; ignore what is not ours
        }
    }
    Ok(args)
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// The RSS once the flood is over: what the node still holds, after the allocator handed freed pages back
/// (jemalloc purges them after a second). Read every 250 ms until it stops falling, for at most 5 s.
async fn settled_rss() -> f64 {
    let mut last = rss_mib();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = rss_mib();
        if now >= last - 0.5 {
            return now.min(last);
        }
        last = now;
    }
    last
}

/// Samples RSS on its own thread until stopped; returns the peak.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<f64>,
}

impl Sampler {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak: f64 = 0.0;
            while !flag.load(Ordering::Relaxed) {
                peak = peak.max(rss_mib());
                std::thread::sleep(Duration::from_millis(5));
            }
            peak.max(rss_mib())
        });
        Sampler { stop, thread }
    }

    fn peak(self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(0.0)
    }
}

#[derive(Default)]
struct Counts {
    replies: AtomicU64,
    answered: AtomicU64,
    overloaded: AtomicU64,
    other: AtomicU64,
    /// The first bytes of other errors, for the report.
    kinds: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mock = MockServer::start(MockConfig::default()).await?;
    let namespace = format!("mem-{}", std::process::id());
    let config = NodeConfig::from_toml(&format!(
        r#"
        [node]
        name = "flooded"
        namespace = "{namespace}"
        max_in_flight_bytes = 16777216
        dedup_max_answer_bytes = 16777216
        [[providers]]
        name = "mock"
        kind = "openai"
        base_url = "{base}"
        model = "bench-model"
        max_in_flight = 4096
        [[routes]]
        name = "chat"
        providers = ["mock"]
        "#,
        base = mock.openai_base_url()
    ))?;
    let bus = MemoryBus::new();
    let node = Node::start(&config, Arc::new(bus.clone()), SharedState::default()).await?;
    let limits = &config.node;
    let bound =
        (COPIES * limits.max_in_flight_bytes as f64 + limits.dedup_max_answer_bytes as f64) / MIB + ALLOWANCE_MIB;

    let client: Arc<dyn Bus> = Arc::new(bus.clone());
    let counts = Arc::new(Counts::default());
    let mut replies = client.subscribe("bench.reply.>").await?;
    let sink = {
        let counts = counts.clone();
        tokio::spawn(async move {
            while let Some(message) = replies.next().await {
                let text = &message.payload[..message.payload.len().min(96)];
                let counter = if text.starts_with(b"{\"error\"") {
                    if text.windows(10).any(|w| w == b"overloaded") {
                        &counts.overloaded
                    } else {
                        let mut kinds = counts.kinds.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        *kinds.entry(String::from_utf8_lossy(text).into_owned()).or_default() += 1;
                        &counts.other
                    }
                } else {
                    &counts.answered
                };
                counter.fetch_add(1, Ordering::Relaxed);
                counts.replies.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    let subject = Subjects::new(&namespace).query("chat");
    println!("switchyard memory benchmark: in-process node, window of {} outstanding queries", args.window);
    println!("bound: {COPIES} x max_in_flight_bytes + dedup_max_answer_bytes + {ALLOWANCE_MIB} MiB = {bound:.0} MiB");
    println!(
        "{:<8} {:>9} {:>9} {:>10} {:>7} {:>8} {:>9} {:>9} {:>9}",
        "flood", "queries", "answered", "overloaded", "other", "secs", "rss0 MiB", "peak MiB", "after MiB"
    );
    let mut results = Vec::new();
    let large_text = "x".repeat(limits.max_payload_bytes - 512);
    for (name, total, text) in [("small", args.queries, None), ("large", args.large, Some(large_text.as_str()))] {
        let before = rss_mib();
        let base = counts.replies.load(Ordering::Relaxed);
        let (answered0, overloaded0, other0) = (
            counts.answered.load(Ordering::Relaxed),
            counts.overloaded.load(Ordering::Relaxed),
            counts.other.load(Ordering::Relaxed),
        );
        let sampler = Sampler::start();
        let started = Instant::now();
        for i in 0..total {
            while i - (counts.replies.load(Ordering::Relaxed) - base) >= args.window {
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            let mut request = QueryRequest::new(vec![ChatMessage::user(text.unwrap_or("flood"))]);
            request.id = Some(format!("{name}-{i}"));
            let payload = Bytes::from(serde_json::to_vec(&request)?);
            let message = Message::new(subject.clone(), payload).with_reply(format!("bench.reply.{name}.{i}"));
            client.publish(message).await?;
            if i % 256 == 0 {
                tokio::task::yield_now().await;
            }
        }
        while counts.replies.load(Ordering::Relaxed) - base < total {
            if started.elapsed() > Duration::from_secs(600) {
                anyhow::bail!("replies stopped coming");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let secs = started.elapsed().as_secs_f64();
        let peak = sampler.peak();
        let after = settled_rss().await;
        let answered = counts.answered.load(Ordering::Relaxed) - answered0;
        let overloaded = counts.overloaded.load(Ordering::Relaxed) - overloaded0;
        let other = counts.other.load(Ordering::Relaxed) - other0;
        println!(
            "{name:<8} {total:>9} {answered:>9} {overloaded:>10} {other:>7} {secs:>8.1} {before:>9.1} {peak:>9.1} {after:>9.1}"
        );
        results.push(serde_json::json!({
            "flood": name, "queries": total, "answered": answered, "overloaded": overloaded, "other": other,
            "seconds": (secs * 10.0).round() / 10.0, "rss_before_mib": before.round(), "rss_peak_mib": peak.round(),
            "rss_after_mib": after.round(), "within_bound": after <= bound, "peak_within_bound": peak <= bound,
        }));
    }
    let health = node.health().await;
    node.shutdown().await;
    sink.abort();
    mock.shutdown().await;
    let held = health.router.map_or(0, |r| r.in_flight);
    for (kind, count) in counts.kinds.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter() {
        println!("other error x{count}: {kind}");
    }
    println!(
        "{}",
        serde_json::json!({ "bench": "memory", "bound_mib": bound.round(), "held_after": held, "runs": results })
    );
    Ok(())
}
