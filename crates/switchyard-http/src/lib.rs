//! The OpenAI- and Anthropic-compatible HTTP door of a Switchyard node (role `http`).
//!
//! Clients that speak to models through the OpenAI or Anthropic SDKs point their base URL here and keep their
//! code: `POST /v1/chat/completions` (a whole `chat.completion`, or `chat.completion.chunk`s over SSE ending with
//! `data: [DONE]`, the usage on request), `POST /v1/messages` (Anthropic's Messages API: a whole `message`, or its
//! named SSE events), `GET /v1/models` (the routes a key may ask, as models), `/healthz` and `/readyz`. The
//! `model` field names a route. Keys come from the configuration ([`auth`]), each with the routes it may ask and
//! metadata set on its queries; `/v1/messages` also takes them in `x-api-key`. Errors are written in the format
//! of the endpoint ([`Wire`]).
//!
//! ```text
//! HTTP ──▶ server (key, body) ──▶ openai / anthropic::parse_request ──▶ QueryRequest ──▶ server::ask (model, id)
//!                                                                                           │
//!   reply (whole or SSE, in the endpoint's format) ◀── Dispatch ◀───────────────────────────┘
//!                                                        ├── LocalDispatch: the node's router intake, in process
//!                                                        └── NatsDispatch: the query subject (switchyard-client)
//! ```
//! The door holds no query state of its own: admission, de-duplication (`Idempotency-Key`, namespaced by the
//! bearer key, is the query's `id`), deadlines and traces are the router's, exactly as for a client on the bus.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod anthropic;
pub mod auth;
pub mod dispatch;
mod error;
mod fields;
pub mod openai;
mod reply;
mod server;

pub use dispatch::{Dispatch, LocalDispatch, NatsDispatch};
pub use error::{ApiError, HttpError, Wire};
pub use server::{DoorConfig, HttpServer, IDEMPOTENCY_HEADER, MAX_IDEMPOTENCY_KEY_LEN, serve};
