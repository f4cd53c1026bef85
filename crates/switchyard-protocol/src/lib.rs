//! The wire of Switchyard: every type that crosses a process boundary, the subject names, and the codecs.
//!
//! Clients speak JSON ([`client`]); nodes speak bincode to each other ([`internal`]). Subject names are built only
//! in [`subjects`], so the versioned namespace lives in one place. Core types stay free of serde; the wire types
//! here convert to and from them.

pub mod admin;
pub mod chat;
pub mod client;
pub mod codec;
pub mod internal;
pub mod subjects;

pub use chat::{ChatMessage, ChatRequest, Completion, Role, TokenLogprob, Usage};
pub use codec::{Bincode, Codec, CodecError, Json};

/// The schema version carried in every subject (`switchyard.v1.…`).
pub const SCHEMA_VERSION: u32 = 1;
