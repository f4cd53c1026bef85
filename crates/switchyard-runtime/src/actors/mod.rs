//! The actors of a node. Each is a thin shell: it matches a message, asks the core or a task to do the work,
//! and records the result.

pub mod admin;
pub mod bridge;
pub mod cascade;
pub mod node;
pub mod provider;
pub mod provider_supervisor;
pub mod router;
pub mod state_sync;
