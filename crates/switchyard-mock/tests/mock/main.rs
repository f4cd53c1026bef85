//! Black-box tests of the mock over real HTTP with a real client, one binary for all of them so the
//! workspace links one test executable instead of five.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod anthropic;
mod common;
mod control;
mod faults;
mod openai;
mod replay;
