//! How fast a cluster trip spreads: three nodes (each with its own NATS and Redis connections) on the real NATS
//! and Redis; a provider goes hard down, and the time from the first node refusing it to all three refusing is
//! measured, trip after trip. Prints p50/p99/max and one JSON line.
//!
//! `cargo bench -p switchyard-benches --bench propagation -- [--trips N]`

use std::time::{Duration, Instant};

use anyhow::bail;
use hdrhistogram::Histogram;

use switchyard_benches::round3;
use switchyard_e2e::{PRIMARY_MODEL, TestCluster, ask};
use switchyard_mock::{Behavior, MockError};
use switchyard_state::BreakerState;

fn main() -> anyhow::Result<()> {
    let mut trips = 20u32;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--trips" {
            trips = args.next().unwrap_or_default().parse()?;
        }
    }
    let _ = async_nats::rustls::crypto::aws_lc_rs::default_provider().install_default();
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?.block_on(run(trips))
}

async fn run(trips: u32) -> anyhow::Result<()> {
    let cluster = TestCluster::start(3).await?;
    let down = Behavior::failing(MockError::status(503));
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for n in 0..trips {
        cluster.mock.set_behavior(PRIMARY_MODEL, down.clone());
        let trip = cluster.drive_until_tripped("chat", "primary", 1000).await?;
        histogram.record(trip.spread.as_micros().max(1) as u64)?;
        // Heal and wait until every node has closed the breaker again.
        cluster.mock.clear_behavior(PRIMARY_MODEL);
        let started = Instant::now();
        while !cluster.cluster_breakers("primary").await.iter().all(|s| *s == Some(BreakerState::Closed)) {
            let _ = cluster.query("chat", &ask("heal")).await;
            if started.elapsed() > Duration::from_secs(30) {
                bail!("trip {n}: the breaker never closed again");
            }
        }
    }
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "trip propagation over {trips} trips (first node refusing -> all 3 refusing): p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        ms(0.5),
        ms(0.99),
        histogram.max() as f64 / 1000.0
    );
    println!(
        "{}",
        serde_json::json!({"bench": "propagation", "trips": trips, "p50_ms": round3(ms(0.5)), "p99_ms": round3(ms(0.99)), "max_ms": round3(histogram.max() as f64 / 1000.0)})
    );
    cluster.shutdown().await;
    Ok(())
}
