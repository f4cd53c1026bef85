//! Both provider clients against a canned HTTP server: request shapes, answers, streams, and every way a call
//! can fail (error statuses, error events mid-stream, streams cut short, dropped and silent connections).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

mod anthropic;
mod openai;
