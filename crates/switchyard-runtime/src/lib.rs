//! The runtime of a Switchyard node: its configuration, its actors (ractor) and the query path.
//!
//! ```text
//! NodeSupervisor
//! ├── ProviderSupervisor   restarts crashed provider actors with backoff, at most N per period
//! │   └── ProviderActor[p] p's client, in-flight limit and statistics
//! ├── RouterActor          admits queries, de-duplicates, spawns one task per query
//! ├── AdminActor           answers the admin topic from health snapshots
//! └── BusBridge            bus subscriptions -> actor messages
//! ```
//! Actors are thin shells; the work of a query lives in [`query`] (and [`quality`] for routers and ensembles,
//! [`cascade`] for cascades), the rules in `switchyard-core`, `switchyard-quality` and `switchyard-cascade`.

pub mod abandon;
pub mod actors;
#[cfg(feature = "jemalloc")]
mod allocator;
pub mod cascade;
pub mod config;
pub mod idempotent;
pub mod liveness;
pub mod local;
pub mod nats;
pub mod node;
pub mod quality;
pub mod query;
pub mod routing;
pub mod secrets;
pub mod service;
pub mod state;
pub mod telemetry;

pub use config::{ConfigError, NodeConfig, Role};
pub use node::{Node, NodeError, ShutdownReport};
pub use state::SharedState;
