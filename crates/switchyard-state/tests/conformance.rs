//! Runs the one state conformance suite against both implementations.
//!
//! The in-memory store must behave like the Redis store wherever a node could notice, so the same checks run
//! against `MemoryStore` and against the real Redis at `SWITCHYARD_REDIS_URL` (default `redis://127.0.0.1:6379`),
//! each Redis test under its own key prefix, deleted afterwards. The Redis half fails, loudly, when no server is
//! reachable: a skipped conformance run would prove nothing.

use switchyard_state::conformance::Fixture;
use switchyard_state::state_conformance_suite;

state_conformance_suite!(memory, || async { Fixture::memory() });
state_conformance_suite!(redis, || async { Fixture::redis(&switchyard_testkit::redis_url()).await });
