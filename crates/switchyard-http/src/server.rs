//! The door's HTTP server (axum): routes, authentication, and the OpenAI replies, whole or streamed (SSE).
//!
//! A request is checked in the order that tells a client the most without leaking anything: the key (401), the
//! body (413, 400), the model (404, then 403 when the key may not use it). Only then is the query handed over.
//! A streaming request is answered with an HTTP error, not a stream, when the query fails before its first
//! event (unknown route, overloaded, no provider): the response starts with the first event. After that, a
//! failure is an SSE `data: {"error": ...}` event, which the SDKs raise as an API error.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::{Stream, StreamExt};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, debug_span, info, warn};

use switchyard_client::{ClientError, QueryStream, StreamEvent};
use switchyard_protocol::client::{MAX_ID_LEN, QueryReply};
use switchyard_runtime::config::HttpSection;
use switchyard_runtime::{ConfigError, NodeConfig};

use crate::auth::{Key, Keys};
use crate::dispatch::Dispatch;
use crate::error::{ApiError, HttpError};
use crate::openai::{ChatCompletion, ChunkHeader, Delta, finish_reason, parse_request};

/// The header whose value becomes the query's idempotency key (`id`).
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// The longest accepted `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 256;

/// The query id of an `Idempotency-Key` sent with the bearer key named `key`: the key's name and a digest of the
/// header, so two keys' clients never share an id (neither an answer nor a conflict), whatever they send, and
/// the id stays within the protocol's length.
fn query_id(key: &str, idempotency_key: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(idempotency_key.as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    let id = format!("{key}:{hex}");
    debug_assert!(id.len() <= MAX_ID_LEN);
    id
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
    info!(%addr, dispatch = kind, "serving the OpenAI-compatible http door");
    Ok(HttpServer { addr, state, stop, task })
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
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
    let key = state.keys.authenticate(&headers).ok_or_else(ApiError::unauthorized)?;
    let data: Vec<_> = state.routes.iter().filter(|r| key.allows(r)).map(|r| model_object(r)).collect();
    Ok(axum::Json(json!({"object": "list", "data": data})).into_response())
}

async fn model(
    State(state): State<Arc<AppState>>,
    Path(model): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = state.keys.authenticate(&headers).ok_or_else(ApiError::unauthorized)?;
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

async fn chat_completions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let key = state.keys.authenticate(&headers).ok_or_else(ApiError::unauthorized)?;
    let body = axum::body::to_bytes(body, state.max_body_bytes).await.map_err(|_| {
        let message = format!("the request body exceeds {} bytes", state.max_body_bytes);
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error", message).with_code("payload_too_large")
    })?;
    let mut request = parse_request(&body)?;
    check_model(&state, key, &request.model)?;
    if let Some(id) = headers.get(IDEMPOTENCY_HEADER) {
        let id = id.to_str().ok().filter(|id| !id.is_empty() && id.len() <= MAX_IDEMPOTENCY_KEY_LEN);
        let id = id.ok_or_else(|| {
            ApiError::invalid("Idempotency-Key must be 1 to 256 visible ASCII characters", "Idempotency-Key")
        })?;
        request.query.id = Some(query_id(&key.name, id));
    }
    // The key's metadata wins over the request's: routing rules can trust it.
    request.query.metadata.extend(key.metadata().iter().map(|(k, v)| (k.clone(), v.clone())));
    let span = debug_span!("http_query", route = %request.model, key = %key.name, stream = request.stream);
    let header = ChunkHeader {
        id: format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
        created: now_secs(),
        model: request.model.clone(),
        include_usage: request.include_usage,
    };
    let dispatch = state.dispatch.clone();
    async move {
        let (route, query, size) = (request.model, request.query, body.len());
        let answer = match request.stream {
            false => dispatch.query(&route, query, size).await.map(|reply| completion(&header, &reply)),
            true => match dispatch.stream(&route, query, size).await {
                Ok(stream) => start_stream(header, stream).await,
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

/// A `chat.completion` response, with the provider that answered in `x-switchyard-provider`.
fn completion(header: &ChunkHeader, reply: &QueryReply) -> Response {
    let body = ChatCompletion::new(&header.id, header.created, &header.model, reply);
    let mut response = axum::Json(body).into_response();
    if let Ok(provider) = HeaderValue::from_str(&reply.provider) {
        response.headers_mut().insert("x-switchyard-provider", provider);
    }
    response
}

/// Waits for the stream's first event, so a query refused before it answers with an HTTP error; then streams.
async fn start_stream(header: ChunkHeader, mut stream: QueryStream) -> Result<Response, ClientError> {
    let first = match stream.next().await {
        Some(Ok(event)) => event,
        Some(Err(error)) => return Err(error),
        None => return Err(ClientError::Closed { id: stream.id().to_owned() }),
    };
    let sse = Sse::new(events(header, first, stream)).keep_alive(KeepAlive::default());
    Ok(sse.into_response())
}

/// Where a stream is.
struct Streaming {
    header: ChunkHeader,
    stream: QueryStream,
    /// The first event, taken before the response started.
    first: Option<StreamEvent>,
    /// Text was sent: a restart cannot be honoured any more.
    sent_text: bool,
    done: bool,
}

/// The SSE events of a stream: a role chunk, content chunks, a finish chunk, the usage if asked, `[DONE]`.
fn events(
    header: ChunkHeader,
    first: StreamEvent,
    stream: QueryStream,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let role = data(&header.delta(Delta { role: Some("assistant"), content: Some("") }, None));
    let state = Streaming { header, stream, first: Some(first), sent_text: false, done: false };
    let rest = futures::stream::unfold(state, |mut state| async move {
        if state.done {
            return None;
        }
        let item = match state.first.take() {
            Some(event) => Some(Ok(event)),
            None => state.stream.next().await,
        };
        let events = state.translate(item);
        Some((events, state))
    });
    futures::stream::iter([role]).chain(rest.flat_map(futures::stream::iter)).map(Ok)
}

impl Streaming {
    fn translate(&mut self, item: Option<Result<StreamEvent, ClientError>>) -> Vec<Event> {
        match item {
            Some(Ok(StreamEvent::Delta { text, .. })) if text.is_empty() => Vec::new(),
            Some(Ok(StreamEvent::Delta { text, .. })) => {
                self.sent_text = true;
                vec![data(&self.header.delta(Delta { role: None, content: Some(&text) }, None))]
            }
            Some(Ok(StreamEvent::Restart { .. })) if !self.sent_text => Vec::new(),
            Some(Ok(StreamEvent::Restart { attempt })) => {
                // The text sent belongs to an attempt that did not answer, and an OpenAI stream cannot take text
                // back: the client is told to retry instead of being left with a wrong text.
                warn!(attempt, "the answering attempt is not the one streamed; stream ended with an error");
                let error = ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "api_error",
                    "the stream was superseded by another attempt; retry",
                )
                .with_code("stream_restarted");
                self.error(error)
            }
            Some(Ok(StreamEvent::Done(done))) => {
                self.done = true;
                let reply = &done.reply;
                let finish = finish_reason(reply.finish_reason.as_deref());
                let mut events = vec![data(&self.header.delta(Delta::default(), Some(finish)))];
                if self.header.include_usage {
                    events.push(data(&self.header.usage(reply.usage)));
                }
                events.push(Event::default().data("[DONE]"));
                events
            }
            Some(Err(error)) => self.error(ApiError::from(&error)),
            None => self.error(ApiError::from(&ClientError::Closed { id: self.stream.id().to_owned() })),
        }
    }

    fn error(&mut self, error: ApiError) -> Vec<Event> {
        self.done = true;
        debug!(code = ?error.code, "stream ended with an error");
        vec![Event::default().data(error.body())]
    }
}

fn data(value: &impl serde::Serialize) -> Event {
    Event::default().data(serde_json::to_string(value).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

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
