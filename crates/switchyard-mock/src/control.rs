//! Run-time control over HTTP, so a test or an operator can take a provider down and bring it back.
//!
//! In-process tests call [`crate::MockServer::set_behavior`] directly; the binary and out-of-process
//! tests use these routes on the same port as the fake APIs:
//!
//! | route | effect |
//! |---|---|
//! | `PUT /control/models/{model}` | script `model` (body: [`crate::Behavior`] JSON); model names may contain `/` |
//! | `DELETE /control/models/{model}` | send `model` back to the default behaviour |
//! | `PUT /control/default` | replace the default behaviour |
//! | `GET /control/stats` | `{"calls": {"<model>": n, …}, "total": n}` |
//! | `POST /control/reset` | restore the scripts the server started with, zero the counters |
//!
//! A behaviour replaces the model's whole script, so one body can change several knobs at once, e.g.
//! `{"unsure_rate": 0.5}` makes half of the answers unsure (low token log-probabilities) from the next request.
//!
//! Success is `204 No Content`; a body that is not a valid behaviour is a `400` with
//! `{"error": "<reason>"}`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Serialize;
use tracing::info;

use crate::Behavior;
use crate::server::Shared;
use crate::wire::json_response;

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/control/models/{*model}", put(put_model).delete(delete_model))
        .route("/control/default", put(put_default))
        .route("/control/stats", get(stats))
        .route("/control/reset", post(reset))
}

#[derive(Serialize)]
struct ControlError {
    error: String,
}

/// Parses and validates a behaviour, or explains why not.
fn behavior_from(body: &[u8]) -> Result<Behavior, String> {
    let behavior: Behavior = serde_json::from_slice(body).map_err(|err| format!("invalid behavior: {err}"))?;
    behavior.validate().map_err(|err| format!("invalid behavior: {err}"))?;
    Ok(behavior)
}

fn bad_request(error: String) -> Response {
    json_response(StatusCode::BAD_REQUEST, &ControlError { error })
}

async fn put_model(State(shared): State<Arc<Shared>>, Path(model): Path<String>, body: Bytes) -> Response {
    match behavior_from(&body) {
        Ok(behavior) => {
            info!(model, "model scripted over the control api");
            shared.set_behavior(&model, behavior);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(error) => bad_request(error),
    }
}

async fn delete_model(State(shared): State<Arc<Shared>>, Path(model): Path<String>) -> StatusCode {
    info!(model, "model script cleared over the control api");
    shared.clear_behavior(&model);
    StatusCode::NO_CONTENT
}

async fn put_default(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match behavior_from(&body) {
        Ok(behavior) => {
            info!("default behavior replaced over the control api");
            shared.set_default_behavior(behavior);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(error) => bad_request(error),
    }
}

async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    json_response(StatusCode::OK, &shared.stats())
}

async fn reset(State(shared): State<Arc<Shared>>) -> StatusCode {
    info!("scripts and counters reset over the control api");
    shared.reset();
    StatusCode::NO_CONTENT
}
