//! The OpenAI-compatible HTTP door of a Switchyard node (role `http`).
//!
//! Clients that speak to models through the OpenAI SDKs point their base URL here and keep their code:
//! `POST /v1/chat/completions` (a whole `chat.completion`, or `chat.completion.chunk`s over SSE ending with
//! `data: [DONE]`, the usage on request), `GET /v1/models` (the routes a key may ask, as models), `/healthz` and
//! `/readyz`. The `model` field names a route. Bearer keys come from the configuration ([`auth`]), each with the
//! routes it may ask and metadata set on its queries. Errors are OpenAI's (`error` module).
//!
//! ```text
//! HTTP ──▶ server (auth, body, model) ──▶ openai::parse_request ──▶ QueryRequest
//!                                             │
//!                          Dispatch ──────────┴── LocalDispatch: the node's router intake, in process
//!                                                 NatsDispatch: the query subject, through switchyard-client
//! ```
//! The door holds no query state of its own: admission, de-duplication (`Idempotency-Key`, namespaced by the
//! bearer key, is the query's `id`), deadlines and traces are the router's, exactly as for a client on the bus.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod auth;
pub mod dispatch;
mod error;
pub mod openai;
mod server;

pub use dispatch::{Dispatch, LocalDispatch, NatsDispatch};
pub use error::{ApiError, HttpError};
pub use server::{DoorConfig, HttpServer, IDEMPOTENCY_HEADER, MAX_IDEMPOTENCY_KEY_LEN, serve};
