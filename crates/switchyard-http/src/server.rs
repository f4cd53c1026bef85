//! The door's HTTP server (axum): routes, authentication, and the steps both query endpoints share.
//!
//! `POST /v1/chat/completions` (OpenAI) and `POST /v1/messages` (Anthropic) differ only in how they read a
//! request (`openai`, `anthropic`), which key headers they take, and how they write the answer and its errors
//! (`reply`, [`Wire`]). A request is checked in the order that tells a client the most without leaking anything:
//! the key (401), the body (413, 400), the model (404, then 403 when the key may not use it), the
//! `Idempotency-Key` (400). Only then is the query handed over ([`ask`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, debug_span, info, warn};

use switchyard_protocol::client::{MAX_ID_LEN, QueryRequest};
use switchyard_runtime::config::HttpSection;
use switchyard_runtime::{ConfigError, NodeConfig};

use crate::anthropic::{self, MessageStream};
use crate::auth::{Key, Keys};
use crate::dispatch::Dispatch;
use crate::error::{ApiError, HttpError, Wire};
use crate::openai::{self, ChunkHeader};
use crate::reply::{self, Writer};

/// The header whose value becomes the query's idempotency key (`id`).
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// The longest accepted `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 256;

/// The query id of an `Idempotency-Key` sent with the bearer key named `key`: the key's name and a digest of the
/// header, so two keys' clients never share an id (neither an answer nor a conflict), whatever they send, and
/// the id stays within the protocol's length.
fn query_id(key: &str, idempotency_key: &str) -> String {
    let id = format!("{key}:{}", digest_hex(&[idempotency_key.as_bytes()]));
    debug_assert!(id.len() <= MAX_ID_LEN);
    id
}

/// The id of a response (after its `chatcmpl-` or `msg_` prefix): fresh, or for a request with an
/// `Idempotency-Key` derived from it and the bearer key, so a replayed answer has the id of the first.
fn response_id(key: &Key, headers: &HeaderMap) -> String {
    match headers.get(IDEMPOTENCY_HEADER) {
        Some(idempotency_key) => digest_hex(&[key.name.as_bytes(), &[0], idempotency_key.as_bytes()]),
        None => uuid::Uuid::new_v4().simple().to_string(),
    }
}

/// The first 16 bytes of the SHA-256 of `parts` (concatenated), as 32 hexadecimal digits.
fn digest_hex(parts: &[&[u8]]) -> String {
    use sha2::{Digest, Sha256};
    let mut digest = Sha256::new();
    parts.iter().for_each(|part| digest.update(part));
    digest.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// What a door serves: where, which routes (as models), which keys.
#[derive(Debug)]
pub struct DoorConfig {
    pub listen: SocketAddr,
    /// The routes, in the configuration's order.
    pub routes: Vec<String>,
    pub keys: Keys,
    pub max_body_bytes: usize,
}

impl DoorConfig {
    /// The door of `config`'s `[http]` section, its keys read from where the section says.
    pub fn from_node_config(config: &NodeConfig) -> Result<Self, HttpError> {
        let Some(HttpSection { listen, keys, max_body_bytes }) = &config.http else {
            let reason = "a node with the http role needs an [http] section".to_owned();
            return Err(ConfigError::Invalid { field: "http".into(), reason }.into());
        };
        Ok(Self {
            listen: *listen,
            routes: config.routes.iter().map(|r| r.name.clone()).collect(),
            keys: Keys::load(keys)?,
            max_body_bytes: *max_body_bytes,
        })
    }
}

struct AppState {
    keys: Keys,
    routes: Vec<String>,
    dispatch: Arc<dyn Dispatch>,
    max_body_bytes: usize,
    ready: AtomicBool,
}

/// A running door.
pub struct HttpServer {
    addr: SocketAddr,
    state: Arc<AppState>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl HttpServer {
    /// Where the door listens (the actual port when the configuration said 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops taking connections (`/readyz` says 503 from now on) and waits for the requests in flight.
    pub async fn shutdown(self) {
        self.state.ready.store(false, Ordering::Relaxed);
        self.stop.cancel();
        if let Err(error) = self.task.await {
            warn!(%error, "the http door's task failed");
        }
        info!(addr = %self.addr, "http door stopped");
    }
}

/// Binds `config.listen` and serves the door, handing queries to `dispatch`.
pub async fn serve(config: DoorConfig, dispatch: Arc<dyn Dispatch>) -> Result<HttpServer, HttpError> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| HttpError::Bind { addr: config.listen, source })?;
    let addr = listener.local_addr().map_err(|source| HttpError::Bind { addr: config.listen, source })?;
    let listener = without_nagle(listener);
    let kind = dispatch.kind();
    let state = Arc::new(AppState {
        keys: config.keys,
        routes: config.routes,
        dispatch,
        max_body_bytes: config.max_body_bytes,
        ready: AtomicBool::new(true),
    });
    let app = router(state.clone());
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    let task = tokio::spawn(async move {
        let serving = axum::serve(listener, app).with_graceful_shutdown(async move { stopped.cancelled().await });
        if let Err(error) = serving.await {
            warn!(%error, "the http door stopped");
        }
    });
    info!(%addr, dispatch = kind, "serving the OpenAI- and Anthropic-compatible http door");
    Ok(HttpServer { addr, state, stop, task })
}

/// `listener`, with `TCP_NODELAY` set on every connection it accepts (axum leaves Nagle's algorithm on). A stream's
/// chunks are small writes, one after another: with Nagle on, each waits for the client's acknowledgement of the
/// one before, which a client delays by up to 40 ms when it has nothing to send back.
fn without_nagle(
    listener: tokio::net::TcpListener,
) -> impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = SocketAddr> {
    use axum::serve::ListenerExt;
    listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            debug!(%error, "cannot set TCP_NODELAY on a door connection");
        }
    })
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/messages", post(messages))
        .route("/v1/models", get(models))
        .route("/v1/models/{model}", get(model))
        .route("/healthz", get(|| async { axum::Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "invalid_request_error", "unknown path") })
        .with_state(state)
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match state.ready.load(Ordering::Relaxed) && state.dispatch.is_ready() {
        true => axum::Json(json!({"status": "ready"})).into_response(),
        false => (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({"status": "not_ready"}))).into_response(),
    }
}

fn model_object(route: &str) -> serde_json::Value {
    json!({"id": route, "object": "model", "created": 0, "owned_by": "switchyard"})
}

async fn models(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let key = state.keys.authenticate(&headers).ok_or_else(|| ApiError::unauthorized(Wire::OpenAi))?;
    let data: Vec<_> = state.routes.iter().filter(|r| key.allows(r)).map(|r| model_object(r)).collect();
    Ok(axum::Json(json!({"object": "list", "data": data})).into_response())
}

async fn model(
    State(state): State<Arc<AppState>>,
    Path(model): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = state.keys.authenticate(&headers).ok_or_else(|| ApiError::unauthorized(Wire::OpenAi))?;
    check_model(&state, key, &model)?;
    Ok(axum::Json(model_object(&model)).into_response())
}

fn check_model(state: &AppState, key: &Key, model: &str) -> Result<(), ApiError> {
    if !state.routes.iter().any(|r| r == model) {
        return Err(ApiError::unknown_model(model));
    }
    if !key.allows(model) {
        return Err(ApiError::model_not_allowed(model));
    }
    Ok(())
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The body, up to the payload limit (413 beyond it).
async fn read_body(state: &AppState, body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, state.max_body_bytes).await.map_err(|_| {
        let message = format!("the request body exceeds {} bytes", state.max_body_bytes);
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error", message).with_code("payload_too_large")
    })
}

/// The query id of the request's `Idempotency-Key`, if it has one.
fn idempotency_id(key: &Key, headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(id) = headers.get(IDEMPOTENCY_HEADER) else {
        return Ok(None);
    };
    let id = id.to_str().ok().filter(|id| !id.is_empty() && id.len() <= MAX_IDEMPOTENCY_KEY_LEN);
    let id = id.ok_or_else(|| {
        ApiError::invalid("Idempotency-Key must be 1 to 256 visible ASCII characters", "Idempotency-Key")
    })?;
    Ok(Some(query_id(&key.name, id)))
}

async fn chat_completions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let key = state.keys.authenticate(&headers).ok_or_else(|| ApiError::unauthorized(Wire::OpenAi))?;
    let body = read_body(&state, body).await?;
    let request = openai::parse_request(&body)?;
    let writer = ChunkHeader {
        id: format!("chatcmpl-{}", response_id(key, &headers)),
        created: now_secs(),
        model: request.model.clone(),
        include_usage: request.include_usage,
    };
    ask(&state, key, &headers, request.model, request.query, body.len(), writer).await
}

/// `POST /v1/messages`: errors in Anthropic's format.
async fn messages(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    match create_message(&state, &headers, body).await {
        Ok(response) => response,
        Err(error) => error.into_response_in(Wire::Anthropic),
    }
}

async fn create_message(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Response, ApiError> {
    let key = state.keys.authenticate_api_key(headers).ok_or_else(|| ApiError::unauthorized(Wire::Anthropic))?;
    let body = read_body(state, body).await?;
    let request = anthropic::parse_request(&body)?;
    let writer = MessageStream::new(&response_id(key, headers), request.model.clone());
    ask(state, key, headers, request.model, request.query, body.len(), writer).await
}

/// What both query endpoints do with a request they have read: check the model, give the query its id
/// (`Idempotency-Key`) and the key's metadata, hand it over, and write the answer (or its stream) with `writer`.
async fn ask<W: Writer>(
    state: &AppState,
    key: &Key,
    headers: &HeaderMap,
    route: String,
    mut query: QueryRequest,
    size: usize,
    writer: W,
) -> Result<Response, ApiError> {
    check_model(state, key, &route)?;
    if let Some(id) = idempotency_id(key, headers)? {
        query.id = Some(id);
    }
    // The key's metadata wins over the request's: routing rules can trust it.
    query.metadata.extend(key.metadata().iter().map(|(k, v)| (k.clone(), v.clone())));
    let stream = query.stream;
    let span = debug_span!("http_query", %route, key = %key.name, stream, wire = ?W::WIRE);
    let dispatch = state.dispatch.clone();
    async move {
        let answer = match stream {
            false => dispatch.query(&route, query, size).await.map(|reply| reply::whole(&writer, &reply)),
            true => match dispatch.stream(&route, query, size).await {
                Ok(stream) => reply::stream(writer, stream).await,
                Err(error) => Err(error),
            },
        };
        answer.map_err(|error| {
            let api = ApiError::from(&error);
            match api.status.is_server_error() {
                true => warn!(status = api.status.as_u16(), code = ?api.code, "query failed"),
                false => debug!(status = api.status.as_u16(), code = ?api.code, "query refused"),
            }
            api
        })
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn door_connections_send_small_writes_at_once() {
        use axum::serve::Listener;
        let mut listener = without_nagle(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(tokio::net::TcpStream::connect(addr));
        let (accepted, _) = listener.accept().await;
        assert!(accepted.nodelay().unwrap(), "Nagle's algorithm is off on an accepted connection");
        client.await.unwrap().unwrap();
    }

    #[test]
    fn idempotency_keys_are_namespaced_by_bearer_key() {
        let a = query_id("team-a", "order-42");
        assert_eq!(a, query_id("team-a", "order-42"), "stable");
        assert_ne!(a, query_id("team-b", "order-42"), "another key, another id");
        assert_ne!(a, query_id("team-a", "order-43"));
        assert!(a.starts_with("team-a:") && a.len() <= MAX_ID_LEN);
        assert!(query_id(&"k".repeat(64), &"x".repeat(MAX_IDEMPOTENCY_KEY_LEN)).len() <= MAX_ID_LEN);
    }
}
