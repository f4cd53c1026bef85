//! The HTTP server: configuration, the shared script table, and the request path.
//!
//! Every test and benchmark runs against this server, the benchmark at thousands of requests per second
//! on two cores, so the path of an instant answer is kept short: one short `std::sync::Mutex` section
//! counts the call and clones the model's `Arc<Behavior>`, randomness needs no lock (each request seeds
//! a small generator from the configured seed and its arrival number, so a run with the same seed and
//! the same arrival order makes the same draws), and the answer is serialized straight into the body.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::behavior::{Answer, Behavior, Plan};
use crate::conn::{Connection, MockListener};
use crate::wire::{Failure, Reply, Wire, json_response};
use crate::{MockServerError, ReplayData, control, text};

/// Largest accepted request body; long prompts must reach the handler, not an axum rejection.
const BODY_LIMIT: usize = 64 * 1024 * 1024;

/// How long [`MockServer::shutdown`] waits for open responses before it stops waiting.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Everything the server starts with.
#[derive(Clone, Debug)]
pub struct MockConfig {
    /// Where to listen; the default `127.0.0.1:0` picks a free port.
    pub listen: SocketAddr,
    /// Seed of all randomness (latency draws, error draws, resets).
    pub seed: u64,
    /// Behaviour of models without their own script.
    pub default_behavior: Behavior,
    /// Per-model scripts, keyed by the request's `model` field.
    pub models: HashMap<String, Behavior>,
    /// Recordings for [`Answer::Replay`].
    pub replay: Option<ReplayData>,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            seed: 0,
            default_behavior: Behavior::default(),
            models: HashMap::new(),
            replay: None,
        }
    }
}

/// Calls received since start or the last reset.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Calls per model, for requests whose body named a model.
    pub calls: HashMap<String, u64>,
    /// All calls to the two chat endpoints, including unparseable ones.
    pub total: u64,
}

/// The mutable script table and counters.
struct Scripts {
    default: Arc<Behavior>,
    models: HashMap<String, Arc<Behavior>>,
    stats: Stats,
}

/// State shared by the handlers and the [`MockServer`] handle.
pub(crate) struct Shared {
    seed: u64,
    replay: Option<ReplayData>,
    initial_default: Arc<Behavior>,
    initial_models: HashMap<String, Arc<Behavior>>,
    scripts: Mutex<Scripts>,
    shutdown: watch::Receiver<bool>,
}

impl Shared {
    fn scripts(&self) -> MutexGuard<'_, Scripts> {
        // A panic while holding the lock cannot leave the table half-updated, so poison is ignored.
        self.scripts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one call and returns its arrival number and the behaviour that applies.
    fn arrive(&self, model: Option<&str>) -> (u64, Arc<Behavior>) {
        let mut scripts = self.scripts();
        scripts.stats.total += 1;
        let seq = scripts.stats.total;
        let Some(model) = model else {
            return (seq, Arc::clone(&scripts.default));
        };
        match scripts.stats.calls.get_mut(model) {
            Some(count) => *count += 1,
            None => {
                scripts.stats.calls.insert(model.to_owned(), 1);
            }
        }
        let behavior = scripts.models.get(model).unwrap_or(&scripts.default);
        (seq, Arc::clone(behavior))
    }

    pub(crate) fn set_behavior(&self, model: &str, behavior: Behavior) {
        self.scripts().models.insert(model.to_owned(), Arc::new(behavior));
    }

    pub(crate) fn clear_behavior(&self, model: &str) {
        self.scripts().models.remove(model);
    }

    pub(crate) fn set_default_behavior(&self, behavior: Behavior) {
        self.scripts().default = Arc::new(behavior);
    }

    pub(crate) fn stats(&self) -> Stats {
        self.scripts().stats.clone()
    }

    /// Back to the scripts the server started with, and zero counters.
    pub(crate) fn reset(&self) {
        let mut scripts = self.scripts();
        scripts.default = Arc::clone(&self.initial_default);
        scripts.models = self.initial_models.clone();
        scripts.stats = Stats::default();
    }

    /// Resolves once the server is shutting down.
    async fn shutting_down(&self) {
        let mut shutdown = self.shutdown.clone();
        // An error means the sender is gone, which also means the server is going away.
        let _ = shutdown.wait_for(|&stopping| stopping).await;
    }
}

/// A running mock server; stops when shut down or dropped.
#[derive(Debug)]
pub struct MockServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("seed", &self.seed).finish_non_exhaustive()
    }
}

impl MockServer {
    /// Validates the scripts, binds, and serves in a background task.
    pub async fn start(config: MockConfig) -> Result<MockServer, MockServerError> {
        config.default_behavior.validate().map_err(|err| err.in_field("default_behavior"))?;
        for (model, behavior) in &config.models {
            behavior.validate().map_err(|err| err.in_field(&format!("models.{model}")))?;
        }
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| MockServerError::Bind { addr: config.listen, source })?;
        let addr = listener.local_addr().map_err(|source| MockServerError::Bind { addr: config.listen, source })?;
        let (stop, shutdown) = watch::channel(false);
        let initial_default = Arc::new(config.default_behavior);
        let initial_models: HashMap<String, Arc<Behavior>> =
            config.models.into_iter().map(|(model, behavior)| (model, Arc::new(behavior))).collect();
        let shared = Arc::new(Shared {
            seed: config.seed,
            replay: config.replay,
            scripts: Mutex::new(Scripts {
                default: Arc::clone(&initial_default),
                models: initial_models.clone(),
                stats: Stats::default(),
            }),
            initial_default,
            initial_models,
            shutdown: shutdown.clone(),
        });
        let app = router(Arc::clone(&shared));
        let mut signal = shutdown;
        let serve = axum::serve(MockListener::new(listener), app.into_make_service_with_connect_info::<Connection>())
            .with_graceful_shutdown(async move {
                let _ = signal.wait_for(|&stopping| stopping).await;
            });
        let task = tokio::spawn(async move {
            if let Err(err) = serve.await {
                warn!(%err, "mock server stopped with an error");
            }
        });
        info!(%addr, "mock llm server listening");
        Ok(MockServer { addr, shared, stop, task: Some(task) })
    }

    /// The bound address (with the real port when `listen` asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://host:port`; Anthropic clients post to `base_url() + "/v1/messages"`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://host:port/v1`, the base URL OpenAI clients expect.
    pub fn openai_base_url(&self) -> String {
        format!("{}/v1", self.base_url())
    }

    /// Scripts `model`, replacing any earlier script; takes effect for the next request.
    pub fn set_behavior(&self, model: &str, behavior: Behavior) {
        self.shared.set_behavior(model, behavior);
    }

    /// Sends `model` back to the default behaviour.
    pub fn clear_behavior(&self, model: &str) {
        self.shared.clear_behavior(model);
    }

    /// Replaces the behaviour of unscripted models.
    pub fn set_default_behavior(&self, behavior: Behavior) {
        self.shared.set_default_behavior(behavior);
    }

    /// Requests received for `model`, counted on arrival whatever their outcome.
    pub fn calls(&self, model: &str) -> u64 {
        self.shared.scripts().stats.calls.get(model).copied().unwrap_or(0)
    }

    /// Requests received on the chat endpoints.
    pub fn total_calls(&self) -> u64 {
        self.shared.scripts().stats.total
    }

    /// A copy of all counters.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Restores the scripts the server started with and zeroes the counters.
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// Stops accepting, answers hanging requests with a reset, and waits (a few seconds at most) for
    /// responses in flight.
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut task).await.is_err()
        {
            warn!("mock server did not drain in time; aborting it");
            task.abort();
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        // The serve task drains on its own once told to stop.
        self.stop.send_replace(true);
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(openai_chat))
        .route("/v1/messages", post(anthropic_messages))
        .route("/healthz", get(|| async { "ok" }))
        .merge(control::routes())
        .fallback(unknown_route)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(shared)
}

async fn openai_chat(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(connection): ConnectInfo<Connection>,
    body: Bytes,
) -> Response {
    handle(Wire::OpenAi, &shared, &connection, &body).await
}

async fn anthropic_messages(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(connection): ConnectInfo<Connection>,
    body: Bytes,
) -> Response {
    handle(Wire::Anthropic, &shared, &connection, &body).await
}

/// The common request path of both chat endpoints.
async fn handle(wire: Wire, shared: &Shared, connection: &Connection, body: &[u8]) -> Response {
    let exchange = match wire.parse(body) {
        Ok(exchange) => exchange,
        Err(bad) => {
            shared.arrive(bad.model.as_deref());
            debug!(?wire, model = bad.model.as_deref(), "rejected a malformed request");
            let failure = Failure::BadRequest { message: &bad.message, param: bad.param };
            return wire.error(&failure, bad.model.as_deref().unwrap_or(""), 1);
        }
    };
    let model = exchange.model.as_str();
    let (seq, behavior) = shared.arrive(Some(model));
    let mut rng = SmallRng::seed_from_u64(shared.seed ^ seq.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let (latency, error) = match behavior.plan(&mut rng) {
        Plan::Hang => {
            debug!(?wire, model, "hanging");
            shared.shutting_down().await;
            connection.reset();
            return Response::new(Body::empty());
        }
        Plan::Reset => {
            debug!(?wire, model, "resetting the connection");
            connection.reset();
            return Response::new(Body::empty());
        }
        Plan::Respond { latency, error } => (latency, error),
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(error) = error {
        debug!(?wire, model, ?error, "answering with a scripted error");
        return wire.error(&Failure::Scripted(error), model, exchange.input_tokens);
    }
    let answer: Cow<'_, str> = match &behavior.answer {
        Answer::Echo => Cow::Owned(format!("echo: {}", exchange.last_user)),
        Answer::Fixed { text } => Cow::Borrowed(text),
        Answer::Replay => {
            let replay = shared.replay.as_ref();
            match replay.and_then(|r| r.get(model, &exchange.last_user)) {
                Some(text) => Cow::Borrowed(text),
                None => {
                    let failure = if replay.is_some_and(|r| r.has_model(model)) {
                        Failure::UnknownPrompt
                    } else {
                        Failure::UnknownModel
                    };
                    debug!(?wire, model, ?failure, "no recording to replay");
                    return wire.error(&failure, model, exchange.input_tokens);
                }
            }
        }
    };
    let answer = text::truncate(&answer, exchange.max_tokens);
    // After the plan's draws, so a script without confidence knobs draws exactly as before.
    let confidence = behavior.confidence(&exchange.last_user, &mut rng);
    let reply = Reply {
        seq,
        created: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        model,
        input_tokens: exchange.input_tokens,
        text: answer.text,
        output_tokens: u32::try_from(answer.words).unwrap_or(u32::MAX),
        cut: answer.cut,
        logprobs: exchange.logprobs,
        confidence,
        include_usage: exchange.include_usage,
        fail_after_tokens: behavior.fail_after_tokens,
    };
    if exchange.stream {
        wire.stream(&reply, Duration::from_millis(behavior.chunk_delay_ms))
    } else {
        wire.complete(&reply)
    }
}

/// OpenAI's answer to an unknown URL, which Anthropic clients also read as a 404.
async fn unknown_route(method: Method, uri: Uri) -> Response {
    #[derive(Serialize)]
    struct Envelope {
        error: Unknown,
    }
    #[derive(Serialize)]
    struct Unknown {
        message: String,
        #[serde(rename = "type")]
        kind: &'static str,
        param: Option<&'static str>,
        code: &'static str,
    }
    let error = Unknown {
        message: format!("Unknown request URL: {method} {}.", uri.path()),
        kind: "invalid_request_error",
        param: None,
        code: "unknown_url",
    };
    json_response(StatusCode::NOT_FOUND, &Envelope { error })
}
