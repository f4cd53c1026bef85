//! A closed-loop load generator: `concurrency` workers each send a request, wait for its answer, and repeat
//! until the duration ends. Latencies go into an HDR histogram (microseconds).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::Mutex;

/// What one run measured.
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    pub requests: u64,
    pub errors: u64,
    pub throughput: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
}

impl Figures {
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "requests": self.requests,
            "errors": self.errors,
            "throughput_qps": (self.throughput * 10.0).round() / 10.0,
            "p50_ms": round3(self.p50_ms),
            "p90_ms": round3(self.p90_ms),
            "p99_ms": round3(self.p99_ms),
        })
    }
}

impl Figures {
    /// The figures of several runs of one path: each figure's median on its own (throughput, p50, p90, p99), and
    /// the requests and errors of all runs together. `runs` must not be empty.
    pub fn median(runs: &[Figures]) -> Figures {
        let median = |figure: fn(&Figures) -> f64| {
            let mut values: Vec<f64> = runs.iter().map(figure).collect();
            values.sort_by(f64::total_cmp);
            let mid = values.len() / 2;
            if values.len() % 2 == 1 { values[mid] } else { (values[mid - 1] + values[mid]) / 2.0 }
        };
        Figures {
            requests: runs.iter().map(|f| f.requests).sum(),
            errors: runs.iter().map(|f| f.errors).sum(),
            throughput: median(|f| f.throughput),
            p50_ms: median(|f| f.p50_ms),
            p90_ms: median(|f| f.p90_ms),
            p99_ms: median(|f| f.p99_ms),
        }
    }
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Runs `call` in a closed loop; `call` returns whether the request succeeded.
pub async fn closed_loop<F, Fut>(
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
    call: F,
) -> anyhow::Result<Figures>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let call = Arc::new(call);
    let histogram = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (call, histogram, errors) = (call.clone(), histogram.clone(), errors.clone());
        workers.push(tokio::spawn(async move {
            let mut local = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).ok()?;
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let ok = call().await;
                if sent >= measure_from {
                    if ok {
                        local.record(sent.elapsed().as_micros().max(1) as u64).ok()?;
                    } else {
                        errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
            histogram.lock().await.add(&local).ok()
        }));
    }
    for worker in workers {
        worker.await?;
    }
    let histogram = histogram.lock().await;
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    Ok(Figures {
        requests: histogram.len(),
        errors: errors.load(std::sync::atomic::Ordering::Relaxed),
        throughput: histogram.len() as f64 / duration.as_secs_f64(),
        p50_ms: ms(0.50),
        p90_ms: ms(0.90),
        p99_ms: ms(0.99),
    })
}

/// A comma-separated list of concurrencies (`--concurrency 1,16,64`); `flag` names the option in the error.
pub fn concurrency_list(flag: &str, value: Option<String>) -> anyhow::Result<Vec<usize>> {
    let value = value.ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
    Ok(value.split(',').map(|c| c.trim().parse()).collect::<Result<_, _>>()?)
}

/// Commands Redis has processed so far, from `INFO commandstats` (the INFO itself counts as one more).
pub async fn redis_commands(connection: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<u64> {
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(connection).await?;
    Ok(info
        .lines()
        .filter_map(|line| line.split("calls=").nth(1))
        .filter_map(|rest| rest.split(',').next()?.parse::<u64>().ok())
        .sum())
}

/// One row of a benchmark's table: concurrency, path, requests, errors, throughput, p50 and p99.
pub fn print_row(concurrency: usize, path: &str, f: &Figures) {
    println!(
        "{concurrency:>5} {path:<12} {:>9} {:>7} {:>9.0} {:>9.3} {:>9.3}",
        f.requests, f.errors, f.throughput, f.p50_ms, f.p99_ms
    );
}
