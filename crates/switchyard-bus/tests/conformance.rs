//! Runs the one bus conformance suite against both implementations.
//!
//! The in-memory bus must behave like NATS wherever a component could notice, so the same
//! checks run against `MemoryBus` and against the real server at `SWITCHYARD_NATS_URL`
//! (default `nats://127.0.0.1:4222`). The NATS half fails, loudly, when no server is reachable:
//! a skipped conformance run would prove nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests panic on failure")]

use switchyard_bus::{MemoryBus, NatsBus, NatsOptions, bus_conformance_suite};

async fn nats_bus() -> NatsBus {
    let url = std::env::var("SWITCHYARD_NATS_URL").unwrap_or_else(|_| String::from("nats://127.0.0.1:4222"));
    match NatsBus::connect(NatsOptions::new(url.clone())).await {
        Ok(bus) => bus,
        Err(error) => panic!(
            "the NATS conformance tests need a NATS server at {url} \
             (set SWITCHYARD_NATS_URL to use another): {error}"
        ),
    }
}

bus_conformance_suite!(memory, || async { MemoryBus::new() });
bus_conformance_suite!(memory_small_payload, || async { MemoryBus::with_max_payload(64 * 1024) });
bus_conformance_suite!(nats, nats_bus);
