//! `RouterActor`: the owner of a node's query book-keeping; and the intake that admits queries before it.
//!
//! Admission is split so that a single actor is not the node's ceiling:
//! - the **intake** ([`Intake::accept`], called by the bus bridge for every message on the query subject) does
//!   the cheap checks first, in the bridge's pump, before any JSON is parsed: a reply subject, the payload limit,
//!   and the admission [`Gate`], which bounds the queries a node holds (queued for the router or running) in
//!   number and in payload bytes. Past the gate a query gets `overloaded` with `retry_after_ms` at once. An
//!   admitted query is then parsed, validated and fingerprinted (in the pump when it is small, in a task of its
//!   own when it is large, so big payloads neither block the pump nor one core), and reaches the router as a
//!   typed [`Admitted`] holding its [`Permit`];
//! - the **router actor** only does book-keeping: it drops queries that waited too long in its mailbox
//!   (`overloaded`), de-duplicates by idempotency key in a bounded [`DedupTable`] (same key and fingerprint:
//!   join or get the kept answer; another fingerprint: `idempotency_conflict`), and spawns one task per query.
//!   Across nodes, the task settles the key through the shared store ([`crate::idempotent`]).
//!
//! A query's permit is released when the query is finished with (answered, refused, or its waiter served), so
//! the gate counts every query in the mailbox, in parsing, running or waiting. A streaming copy of a key that
//! is in flight waits for the answer and receives it as one chunk and the final frame ([`replay`]): simpler and
//! still complete, where forwarding the live chunks would couple two clients' streams.
//!
//! Queries come from the bus ([`Intake::accept`]) or, on a node whose HTTP door runs beside its router, in process
//! ([`Intake::submit`], used by [`crate::local::LocalDispatcher`]); both take the same path from the gate on, and
//! differ only in where the final answer goes ([`ReplyTo`]). A plain query in process without an id has no
//! book-keeping for the router to do (nobody else can ask for its answer): it is admitted the same way and
//! answered by the same code (`resolve`, with the router's [`Runner`]), in its caller's task
//! ([`Intake::run_here`]), so it costs no mailbox, task or channel, and dropping it cancels it.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, debug_span, warn};

use switchyard_bus::{Bus, Message};
use switchyard_core::{DedupLimits, DedupTable, Seen};
use switchyard_protocol::admin::RouterHealth;
use switchyard_protocol::client::{ErrorReply, ErrorType, QueryRequest};
use switchyard_protocol::subjects::{CANCEL_HEADER, Subjects};

use crate::abandon::{Abandons, Watch};
use crate::idempotent::{Idempotency, Resolved, answer_once, conflict, publish_answer, renew_leases, replay};
use crate::liveness::Liveness;
use crate::quality::{QualityRouting, run_ensemble, with_decision};
use crate::query::{Answer, QueryContext, StreamEnd, call_cascade, render, render_within, run_query};
use crate::routing::{RoutePlan, Routing};
use crate::telemetry::{QueryLabels, WalkEvent};

/// Queries up to this size are parsed in the bus pump; larger ones in a task of their own.
const INLINE_PARSE_BYTES: usize = 16 * 1024;

/// How long an overloaded client is asked to wait before it retries.
const OVERLOADED_RETRY_AFTER_MS: u64 = 100;

/// Whether a node holding `held` queries of `held_bytes` payload bytes may take one more of `bytes`. Pure.
pub fn admits(held: usize, held_bytes: usize, bytes: usize, max: usize, max_bytes: usize) -> bool {
    held < max && held_bytes.saturating_add(bytes) <= max_bytes
}

/// Bounds the queries a node holds, from the bus to their answer, in number and in payload bytes.
pub struct Gate {
    held: AtomicUsize,
    held_bytes: AtomicUsize,
    max: usize,
    max_bytes: usize,
    rejected: AtomicU64,
}

impl Gate {
    pub fn new(max: usize, max_bytes: usize) -> Self {
        Gate { held: AtomicUsize::new(0), held_bytes: AtomicUsize::new(0), max, max_bytes, rejected: AtomicU64::new(0) }
    }

    /// A permit for a query of `bytes`, or `None` past a bound.
    pub fn enter(self: &Arc<Self>, bytes: usize) -> Option<Permit> {
        let held = self.held.fetch_add(1, Ordering::AcqRel);
        let held_bytes = self.held_bytes.fetch_add(bytes, Ordering::AcqRel);
        let permit = Permit { gate: self.clone(), bytes };
        // Counted first, checked after: concurrent entries can never both slip under the bound.
        admits(held, held_bytes, bytes, self.max, self.max_bytes).then_some(permit)
    }

    /// Queries held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    fn reject(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }
}

/// One query's place in the [`Gate`], released when dropped.
pub struct Permit {
    gate: Arc<Gate>,
    bytes: usize,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.gate.held.fetch_sub(1, Ordering::AcqRel);
        self.gate.held_bytes.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Where a query's answers go.
///
/// A query from the bus names a reply subject, and everything it receives (stream chunks, the final frame or
/// reply, refusals) is published there. A query handed over in process ([`Intake::submit`]) receives its final
/// answer and any refusal on a local channel instead: a streaming one as the very frames a bus client would
/// receive (its chunks still come on `subject`, because provider actors, on this node or another, publish them on
/// the bus), a plain one as the typed answer itself, which nobody encodes or parses.
#[derive(Debug, Clone)]
pub enum ReplyTo {
    Subject(String),
    /// A streaming query handed over in process.
    Local {
        /// Where stream chunks are published (a bus inbox the local client subscribed to).
        subject: String,
        /// Where the final frame and refusals go.
        answers: mpsc::UnboundedSender<Bytes>,
    },
    /// A plain query handed over in process: its answer, or its refusal, typed.
    Typed(mpsc::UnboundedSender<Arc<Answer>>),
}

/// The subject a plain query handed over in process appears to be answered on (nothing is published on it: a
/// plain query has no chunks).
pub const TYPED_SUBJECT: &str = "_LOCAL";

impl ReplyTo {
    /// The subject stream chunks are published on.
    pub fn subject(&self) -> &str {
        match self {
            ReplyTo::Subject(subject) | ReplyTo::Local { subject, .. } => subject,
            ReplyTo::Typed(_) => TYPED_SUBJECT,
        }
    }

    /// Sends an answer or a refusal: rendered as a reply (or for a streaming client, given `stream`, as the final
    /// frame), except to a typed receiver, which takes it as it is.
    async fn answer(&self, bus: &dyn Bus, answer: &Arc<Answer>, stream: Option<StreamEnd>) {
        match self {
            ReplyTo::Typed(answers) => {
                if answers.send(answer.clone()).is_err() {
                    debug!("the local client is gone, reply dropped");
                }
            }
            // A bus message has a size limit; a channel in process has none.
            ReplyTo::Subject(_) => self.send(bus, render_within(answer, stream, bus.max_payload())).await,
            ReplyTo::Local { .. } => self.send(bus, render(answer, stream)).await,
        }
    }

    /// Completes when nobody waits for the answer any more: the receiver of a query handed over in process was
    /// dropped (the HTTP client of the door hung up), or a bus client said so on the cancel subject (`watch`, for
    /// a query from the bus that carried a cancel token).
    async fn abandoned(&self, watch: Option<&Watch>) {
        match self {
            ReplyTo::Subject(_) => match watch {
                Some(watch) => watch.abandoned().await,
                None => std::future::pending().await,
            },
            ReplyTo::Local { answers, .. } => answers.closed().await,
            ReplyTo::Typed(answers) => answers.closed().await,
        }
    }

    /// Sends an encoded reply, refusal or stream frame.
    async fn send(&self, bus: &dyn Bus, payload: Bytes) {
        match self {
            ReplyTo::Subject(subject) => publish(bus, subject.clone(), payload).await,
            ReplyTo::Local { answers, .. } => {
                if answers.send(payload).is_err() {
                    debug!("the local client is gone, reply dropped");
                }
            }
            // Never reached: a typed receiver is only ever given answers (`answer`, `deliver`).
            ReplyTo::Typed(_) => warn!("an encoded frame for a typed receiver dropped"),
        }
    }
}

/// A parsed, validated query on its way to the router.
pub struct Admitted {
    pub reply_to: ReplyTo,
    pub plan: Arc<RoutePlan>,
    pub request: QueryRequest,
    pub fingerprint: String,
    pub received: Instant,
    pub permit: Permit,
    /// The client's trace context, from the message's headers (all of them but the cancel token).
    pub trace: Vec<(String, String)>,
    /// The token a bus client may cancel the query with ([`CANCEL_HEADER`]).
    pub cancel: Option<String>,
}

/// The admission half that runs in the bus bridge, before the router.
pub struct Intake {
    pub router: ActorRef<RouterMsg>,
    pub routing: Arc<Routing>,
    pub bus: Arc<dyn Bus>,
    pub subjects: Subjects,
    pub max_payload_bytes: usize,
    pub gate: Arc<Gate>,
    /// The keyless queries from the bus running here, for their clients' cancellations.
    pub abandons: Arc<Abandons>,
    /// What the router's query tasks run with, set when the router starts: plain keyless queries handed over in
    /// process run with it in their caller's task ([`Intake::run_here`]).
    pub runner: Arc<OnceLock<Arc<Runner>>>,
}

impl Intake {
    /// Admits one message from the query subject: refuses at once what is too big or past the gate, then parses
    /// and validates it (here when it is small, in a task of its own otherwise) and hands the typed query to the
    /// router.
    pub async fn accept(self: &Arc<Self>, mut message: Message) {
        let received = Instant::now();
        let Some(reply_to) = message.reply.take() else {
            self.gate.reject();
            warn!(subject = %message.subject, "query without a reply subject dropped");
            return;
        };
        let reply_to = ReplyTo::Subject(reply_to);
        let size = message.payload.len();
        let permit = match self.enter(size) {
            Ok(permit) => permit,
            Err(error) => return self.reject(reply_to, *error).await,
        };
        // A small query is parsed here, in the pump: a few microseconds, cheaper than a task and its wake-up. A
        // large one gets a task of its own, so parsing it neither holds up the queries behind it nor one core.
        if size <= INLINE_PARSE_BYTES {
            self.parse(message, reply_to, received, permit).await;
        } else {
            let intake = self.clone();
            tokio::spawn(async move { intake.parse(message, reply_to, received, permit).await });
        }
    }

    /// A query of `size` bytes within the payload limit takes its place in the gate; the refusal otherwise.
    fn enter(&self, size: usize) -> Result<Permit, Box<ErrorReply>> {
        if size > self.max_payload_bytes {
            let text = format!("payload of {size} bytes exceeds the limit of {}", self.max_payload_bytes);
            return Err(Box::new(ErrorReply::new(ErrorType::InvalidRequest, "payload_too_large", text)));
        }
        self.gate.enter(size).ok_or_else(|| {
            let error = ErrorReply::new(ErrorType::Overloaded, "overloaded", "too many queries held by this node");
            Box::new(error.with_retry_after_ms(OVERLOADED_RETRY_AFTER_MS))
        })
    }

    /// The plan of `route`, or the refusal of an unknown route.
    fn plan(&self, route: &str) -> Result<Arc<RoutePlan>, Box<ErrorReply>> {
        self.routing.route(route).ok_or_else(|| {
            let text = format!("unknown route `{route}`");
            Box::new(ErrorReply::new(ErrorType::InvalidRequest, "unknown_route", text).with_field("route"))
        })
    }

    /// Parses an admitted message and hands the query over to the router.
    async fn parse(&self, message: Message, reply_to: ReplyTo, received: Instant, permit: Permit) {
        let route = self.subjects.route_of(&message.subject).unwrap_or_default();
        let plan = match self.plan(route) {
            Ok(plan) => plan,
            Err(error) => return self.reject(reply_to, *error).await,
        };
        let request: QueryRequest = match serde_json::from_slice(&message.payload) {
            Ok(request) => request,
            Err(e) => return self.reject(reply_to, ErrorReply::from_json_error(&e)).await,
        };
        self.hand_over(plan, request, reply_to, received, permit, message.headers).await;
    }

    /// Admits a query handed over in process, already parsed (the HTTP door of a router node): the checks of
    /// [`Intake::accept`] in the same order (payload limit, gate, route, validation), without a JSON pass.
    /// `size` is the size of the query's encoded form, counted by the gate as a payload would be. Every answer,
    /// refusals included, goes to `reply_to`.
    pub async fn submit(&self, route: &str, request: QueryRequest, size: usize, reply_to: ReplyTo) {
        let received = Instant::now();
        let permit = match self.enter(size) {
            Ok(permit) => permit,
            Err(error) => return self.reject(reply_to, *error).await,
        };
        let plan = match self.plan(route) {
            Ok(plan) => plan,
            Err(error) => return self.reject(reply_to, *error).await,
        };
        // The caller's span (the HTTP request) is the query's parent, as a bus client's trace context would be.
        let mut trace = Vec::new();
        crate::telemetry::inject_trace(&mut trace);
        self.hand_over(plan, request, reply_to, received, permit, trace).await;
    }

    /// Runs a plain query without an id, handed over in process, to its end in the caller's task: admitted as
    /// [`Intake::submit`] admits it, and answered by the code of the router's query tasks (`resolve`), without
    /// the router's mailbox, a task of its own or a channel back; nothing else ever asks for such a query's
    /// answer, so the router has no book-keeping to do for it. Dropping the future (the door's client hung up)
    /// cancels its calls, and it is counted as `client_gone`, as a query task counts it.
    ///
    /// As a query task would be, it is abandoned when the router stops (a killed router's queries die with it),
    /// and a panic while it runs ends it without an answer: both are [`RunHere::Dropped`].
    pub async fn run_here(&self, route: &str, request: QueryRequest, size: usize) -> RunHere {
        let runner = match self.runner.get() {
            Some(runner) if request.id.is_none() && !request.stream && !runner.stopped.is_cancelled() => runner,
            _ => return RunHere::Elsewhere(Box::new(request)),
        };
        let received = Instant::now();
        let refused = |error: ErrorReply| {
            self.gate.reject();
            debug!(code = %error.error.code, "query rejected");
            RunHere::Answered(Err(error))
        };
        let _permit = match self.enter(size) {
            Ok(permit) => permit,
            Err(error) => return refused(*error),
        };
        let plan = match self.plan(route) {
            Ok(plan) => plan,
            Err(error) => return refused(*error),
        };
        if let Err(error) = request.validate() {
            return refused(error);
        }
        let deadline = received + request.deadline_ms.map_or(runner.default_deadline, Duration::from_millis);
        let span = debug_span!("query", route = %plan.name, id = "", stream = false);
        let mut running = Running { runner, route: &plan.name, received, ended: false };
        let answered = AssertUnwindSafe(resolve(runner, &plan, &request, TYPED_SUBJECT, deadline)).catch_unwind();
        let answer = tokio::select! {
            biased;
            answer = answered.instrument(span) => answer.ok(),
            () = runner.stopped.cancelled() => None,
        };
        match answer {
            Some(answer) => {
                running.end(&answer);
                RunHere::Answered(answer)
            }
            None => {
                // Not counted, as a query task that was aborted or panicked is not.
                running.ended = true;
                RunHere::Dropped
            }
        }
    }

    /// Validates a parsed query, fingerprints it when it has an id, and casts it to the router; `headers` are
    /// the message's (the client's trace context, and its cancel token).
    async fn hand_over(
        &self,
        plan: Arc<RoutePlan>,
        request: QueryRequest,
        reply_to: ReplyTo,
        received: Instant,
        permit: Permit,
        headers: Vec<(String, String)>,
    ) {
        if let Err(error) = request.validate() {
            return self.reject(reply_to, error.with_id(request.id.clone())).await;
        }
        let fingerprint = if request.id.is_some() { request.fingerprint() } else { String::new() };
        // The cancel token is taken out, so that only a client's trace context remains.
        let mut trace = headers;
        let cancel = trace.iter().position(|(name, _)| name == CANCEL_HEADER).map(|at| trace.swap_remove(at).1);
        let admitted = Admitted { reply_to, plan, request, fingerprint, received, permit, trace, cancel };
        if let Err(error) = self.router.cast(RouterMsg::Query(Box::new(admitted))) {
            debug!(%error, "router gone, query dropped");
        }
    }

    async fn reject(&self, reply_to: ReplyTo, error: ErrorReply) {
        self.gate.reject();
        debug!(code = %error.error.code, "query rejected");
        reply_to.answer(self.bus.as_ref(), &Arc::new(Err(error)), None).await;
    }
}

async fn publish(bus: &dyn Bus, subject: String, payload: Bytes) {
    if let Err(error) = bus.publish(Message::new(subject, payload)).await {
        warn!(%error, "cannot publish reply");
    }
}

/// Sends `answer` to a client that did not see it streamed: a reply, or for a streaming client the whole
/// answer as one chunk and the final frame.
async fn deliver(bus: &dyn Bus, reply_to: &ReplyTo, answer: &Arc<Answer>, stream: bool) {
    match (stream, reply_to) {
        (true, ReplyTo::Subject(_) | ReplyTo::Local { .. }) => {
            for frame in replay(answer, bus.max_payload()) {
                reply_to.send(bus, frame).await;
            }
        }
        _ => reply_to.answer(bus, answer, None).await,
    }
}

pub struct RouterActor;

/// How a router admits queries, from the `node` section of the configuration.
#[derive(Debug, Clone)]
pub struct RouterSettings {
    pub default_deadline: Duration,
    /// A query that waited longer than this in the router's mailbox is refused as `overloaded`.
    pub max_queue_wait: Duration,
    pub dedup: DedupLimits,
    /// How often a running provider call sends its router a heartbeat (none: calls are not watched).
    pub keepalive: Option<Duration>,
}

pub struct RouterArgs {
    pub node: String,
    pub bus: Arc<dyn Bus>,
    pub subjects: Subjects,
    /// The routes, their chains and groups, and the retry budget.
    pub routing: Arc<Routing>,
    /// The quality routers and ensembles routes may name.
    pub quality: Arc<QualityRouting>,
    pub settings: RouterSettings,
    pub gate: Arc<Gate>,
    /// Cluster-wide idempotency; without it, de-duplication is per node.
    pub idempotency: Option<Idempotency>,
    /// This node's provider actors, for calls that need not cross the bus (`node.local_calls`).
    pub local: Option<crate::actors::provider_supervisor::ProviderDirectory>,
    /// The keyless queries from the bus running here, shared with the intake.
    pub abandons: Arc<Abandons>,
    /// Set to what the query tasks run with when the router starts, for the intake (shared with it).
    pub runner: Arc<OnceLock<Arc<Runner>>>,
}

/// Somebody waiting for a de-duplicated answer: where to send it, in which form, and its place in the gate.
struct Waiter {
    reply_to: ReplyTo,
    stream: bool,
    #[allow(dead_code)] // held, not read: released when the waiter is served
    permit: Permit,
}

pub struct RouterState {
    /// What query tasks run with, shared with the intake.
    runner: Arc<Runner>,
    settings: RouterSettings,
    gate: Arc<Gate>,
    dedup: DedupTable<Waiter, Arc<Answer>>,
    idempotency: Option<Idempotency>,
    abandons: Arc<Abandons>,
    /// Query tasks and the lease renewal: aborted with the actor's state if the actor is killed. Finished tasks
    /// are reaped at the next query or keyed completion.
    tasks: JoinSet<()>,
    health: RouterHealth,
}

pub enum RouterMsg {
    /// A client's query, parsed and validated by the intake.
    Query(Box<Admitted>),
    /// The task of a query with an id finished: its de-duplication key and answer, for the copies waiting. A
    /// query without one sends nothing (its task counts its end in [`Ended`]) and leaves its answer to its
    /// client alone.
    Completed {
        key: String,
        answer: Arc<Answer>,
    },
    Health(RpcReplyPort<RouterHealth>),
}

impl Actor for RouterActor {
    type Msg = RouterMsg;
    type State = RouterState;
    type Arguments = RouterArgs;

    async fn pre_start(&self, _: ActorRef<RouterMsg>, args: RouterArgs) -> Result<RouterState, ActorProcessingErr> {
        let names = args.routing.route_names();
        let mut tasks = JoinSet::new();
        if let Some(idem) = &args.idempotency {
            tasks.spawn(renew_leases(idem.clone()));
        }
        // One inbox per router for the heartbeats of the calls its queries wait for.
        let liveness = match args.settings.keepalive {
            Some(every) => {
                let inbox = args.bus.new_inbox();
                let heartbeats = args.bus.subscribe(&inbox).await?;
                let liveness = Arc::new(Liveness::new(inbox, every));
                tasks.spawn(liveness.clone().listen(heartbeats));
                Some(liveness)
            }
            None => None,
        };
        if !args.quality.is_empty() {
            tasks.spawn(args.quality.clone().watch());
        }
        let runner = Arc::new(Runner {
            ctx: QueryContext { node: args.node, bus: args.bus, subjects: args.subjects, liveness, local: args.local },
            routing: args.routing,
            quality: args.quality,
            ended: Ended::default(),
            default_deadline: args.settings.default_deadline,
            stopped: CancellationToken::new(),
        });
        // Set once: a router is not restarted in place (its failure stops the node); a stopped one cancels `stopped`.
        let _ = args.runner.set(runner.clone());
        Ok(RouterState {
            runner,
            dedup: DedupTable::new(args.settings.dedup),
            settings: args.settings,
            gate: args.gate,
            idempotency: args.idempotency,
            abandons: args.abandons,
            tasks,
            health: RouterHealth { routes: names, ..RouterHealth::default() },
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<RouterMsg>,
        message: RouterMsg,
        state: &mut RouterState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RouterMsg::Query(admitted) => state.admit(myself, *admitted).await,
            RouterMsg::Completed { key, answer } => {
                while state.tasks.try_join_next().is_some() {}
                // A conflict reported by the store means the key belongs to another request: this node must not
                // bind it to the refused one.
                let conflict = matches!(answer.as_ref(), Err(e) if e.error.code == "idempotency_conflict");
                let waiters = match conflict {
                    true => state.dedup.forget(&key),
                    false => state.dedup.complete(&key, answer.clone(), weight(&answer)),
                };
                for waiter in waiters {
                    deliver(state.runner.ctx.bus.as_ref(), &waiter.reply_to, &answer, waiter.stream).await;
                }
            }
            RouterMsg::Health(port) => {
                let mut health = state.health.clone();
                health.answered = state.runner.ended.answered.load(Ordering::Relaxed);
                health.errors = state.runner.ended.failed.load(Ordering::Relaxed);
                health.in_flight = state.gate.held() as u64;
                health.rejected += state.gate.rejected.load(Ordering::Relaxed);
                let _ = port.send(health);
            }
        }
        Ok(())
    }
}

impl RouterState {
    async fn reject(&mut self, reply_to: ReplyTo, error: ErrorReply) {
        self.health.rejected += 1;
        debug!(code = %error.error.code, "query rejected");
        reply_to.answer(self.runner.ctx.bus.as_ref(), &Arc::new(Err(error)), None).await;
    }

    /// Book-keeping of an admitted query: queue time, de-duplication, then its task.
    async fn admit(&mut self, myself: ActorRef<RouterMsg>, admitted: Admitted) {
        let Admitted { reply_to, plan, request, fingerprint, received, permit, trace, cancel } = admitted;
        let now = Instant::now();
        if now.duration_since(received) > self.settings.max_queue_wait {
            let error = ErrorReply::new(ErrorType::Overloaded, "overloaded", "the query waited too long for a router")
                .with_retry_after_ms(OVERLOADED_RETRY_AFTER_MS)
                .with_id(request.id.clone());
            return self.reject(reply_to, error).await;
        }
        let deadline = received + request.deadline_ms.map_or(self.settings.default_deadline, Duration::from_millis);
        let key = request.id.as_ref().map(|id| format!("{}/{id}", plan.name));
        let mut waiter = Some(Waiter { reply_to: reply_to.clone(), stream: request.stream, permit });
        if let Some(key) = &key {
            match self.dedup.claim(key, &fingerprint, &mut waiter, now, deadline) {
                Seen::New => {}
                Seen::Joined => {
                    self.health.duplicates += 1;
                    return;
                }
                Seen::Done(answer) => {
                    self.health.duplicates += 1;
                    return deliver(self.runner.ctx.bus.as_ref(), &reply_to, &answer, request.stream).await;
                }
                Seen::Conflict => return self.reject(reply_to, conflict(request.id.clone())).await,
                Seen::Full => {
                    let error = ErrorReply::new(ErrorType::Overloaded, "overloaded", "too many copies of this id")
                        .with_retry_after_ms(OVERLOADED_RETRY_AFTER_MS)
                        .with_id(request.id.clone());
                    return self.reject(reply_to, error).await;
                }
            }
        }

        // Not queued as a waiter: the query runs, and its task holds its place in the gate.
        let Some(Waiter { reply_to, permit, .. }) = waiter else { return };
        while self.tasks.try_join_next().is_some() {}
        let runner = self.runner.clone();
        let idem = self.idempotency.clone();
        // Watched from here on (a cancellation that came earlier was kept by `abandons`).
        let watch = cancel.filter(|_| key.is_none()).and_then(|token| self.abandons.watch(&token));
        let span =
            debug_span!("query", route = %plan.name, id = request.id.as_deref().unwrap_or(""), stream = request.stream);
        if !trace.is_empty() {
            use tracing_opentelemetry::OpenTelemetrySpanExt;
            let _ = span.set_parent(crate::telemetry::extract_trace(&trace));
        }
        // Boxed where it is made: the task's future is about 10 KB, and moving it into the span, the join set and
        // the task cell would copy it each time.
        let task = Box::pin(async move {
            // Held until the answer is out, so the gate counts the query while it runs.
            let _permit = permit;
            // A query with a key holds its node's lease until its answer is stored.
            let _lease = idem.as_ref().filter(|_| key.is_some()).map(Idempotency::hold);
            let runner = runner.as_ref();
            let ctx = &runner.ctx;
            let run = || resolve(runner, &plan, &request, reply_to.subject(), deadline);
            let resolved = match (&idem, &key) {
                (Some(idem), Some(key)) => {
                    answer_once(idem, ctx, key, &fingerprint, request.id.clone(), deadline, run).await
                }
                // A query with an id runs on whatever its client does, so that a retry under the same id finds
                // its answer (here, in the node's de-duplication table).
                (None, Some(_)) => Resolved::Ran { answer: run().await, owned: false },
                // Without an id nobody else can ask for the answer: when its client hangs up (or, over the bus,
                // says it stopped waiting), the query stops and its running calls are cancelled (dropping the walk
                // does that).
                (_, None) => {
                    let answer = tokio::select! {
                        biased;
                        answer = run() => answer,
                        () = reply_to.abandoned(watch.as_ref()) => Err(client_gone(request.id.clone())),
                    };
                    Resolved::Ran { answer, owned: false }
                }
            };
            // Counted before the client sees the answer, so a client that asks for the figures next sees it.
            let counted = match &resolved {
                Resolved::Ran { answer, .. } | Resolved::Found(answer) => answer,
            };
            observe(&runner.routing, &plan.name, counted, received.elapsed());
            let answer = match resolved {
                Resolved::Ran { answer, owned } => {
                    let answer = Arc::new(answer);
                    // The client first; announcing and storing the answer only afterwards. A cascade answers whole
                    // (its stages' confidence is known only at their end): a streaming client gets it as one
                    // chunk, like a copy of an answered id.
                    if plan.cascade.is_some() {
                        deliver(ctx.bus.as_ref(), &reply_to, &answer, request.stream).await;
                    } else {
                        let stream = request.stream.then(|| StreamEnd::of(&answer));
                        reply_to.answer(ctx.bus.as_ref(), &answer, stream).await;
                    }
                    if let (true, Some(idem), Some(key)) = (owned, &idem, &key) {
                        publish_answer(idem, ctx, key, &answer, deadline).await;
                    }
                    answer
                }
                Resolved::Found(answer) => {
                    let answer = Arc::new(answer);
                    deliver(ctx.bus.as_ref(), &reply_to, &answer, request.stream).await;
                    answer
                }
            };
            runner.ended.count(answer.is_ok());
            if let Some(key) = key {
                let _ = myself.cast(RouterMsg::Completed { key, answer });
            }
        });
        self.tasks.spawn(task.instrument(span));
    }
}

/// How [`Intake::run_here`] ended.
#[allow(clippy::large_enum_variant)] // made once per query and moved once, to the caller
pub enum RunHere {
    /// The answer, or the refusal.
    Answered(Answer),
    /// No answer: the router stopped, or the query panicked.
    Dropped,
    /// Not a query for this path (it has an id or streams, which the router's book-keeping serves, or the router
    /// has stopped): hand it to [`Intake::submit`].
    Elsewhere(Box<QueryRequest>),
}

/// What a query runs with, wherever it runs: made by the router when it starts, and shared with its intake.
pub struct Runner {
    ctx: QueryContext,
    routing: Arc<Routing>,
    quality: Arc<QualityRouting>,
    /// Queries answered and failed, counted where they end (a query without an id sends the router no message).
    ended: Ended,
    default_deadline: Duration,
    /// Cancelled when the router stops: queries run in their callers' tasks are abandoned with it.
    stopped: CancellationToken,
}

impl Drop for RouterState {
    fn drop(&mut self) {
        self.runner.stopped.cancel();
    }
}

/// A query's answer: through its cascade, its ensemble or its route's walk, the quality router deciding first.
/// The one code that answers queries, whether in a router's task or in the task of a caller in process.
async fn resolve(
    runner: &Runner,
    plan: &Arc<RoutePlan>,
    request: &QueryRequest,
    subject: &str,
    deadline: Instant,
) -> Answer {
    let Runner { ctx, routing, quality, .. } = runner;
    if let Some(name) = &plan.cascade {
        return call_cascade(ctx, routing, plan, name, request, deadline).await;
    }
    // The router decides when the query runs, not when a copy of an answered id is served.
    let routed = quality.route(plan, request, routing);
    let answer = match &routed.ensemble {
        Some(e) => run_ensemble(ctx, routing, &routed.plan, e, request, subject, deadline).await,
        None => run_query(ctx, routing, &routed.plan, request, subject, deadline).await,
    };
    with_decision(answer, routed.decision)
}

/// A query run in its caller's task ([`Intake::run_here`]), until it ends: counted as a query task counts its
/// end, and as `client_gone` when its caller drops it first.
struct Running<'a> {
    runner: &'a Runner,
    route: &'a str,
    received: Instant,
    ended: bool,
}

impl Running<'_> {
    fn end(&mut self, answer: &Answer) {
        observe(&self.runner.routing, self.route, answer, self.received.elapsed());
        self.runner.ended.count(answer.is_ok());
        self.ended = true;
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.end(&Err(client_gone(None)));
        }
    }
}

/// How many queries this router's tasks ended, answered or failed.
#[derive(Default)]
struct Ended {
    answered: AtomicU64,
    failed: AtomicU64,
}

impl Ended {
    fn count(&self, answered: bool) {
        let counter = if answered { &self.answered } else { &self.failed };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The outcome recorded for a query whose client stopped waiting before its answer (nobody receives it).
fn client_gone(id: Option<String>) -> ErrorReply {
    ErrorReply::new(ErrorType::DeadlineExceeded, "client_gone", "the client stopped waiting for the answer").with_id(id)
}

/// Counts a finished query: its route's counter, and the metrics of its outcome, latency and overhead (the
/// latency less the upstream time of the attempt that answered).
fn observe(routing: &Routing, route: &str, answer: &Answer, latency: Duration) {
    routing.count(route, WalkEvent::Query);
    let metrics = &routing.telemetry().metrics;
    // Every plan comes from this routing, which looked up the series of each of its routes once.
    let Some(series) = routing.query_series(route) else { return };
    match answer {
        Ok(_) => series.ok.inc(),
        Err(error) => {
            let labels = QueryLabels { route: route.to_owned(), outcome: error.error.code.clone() };
            metrics.queries.get_or_create(&labels).inc()
        }
    };
    series.seconds.observe(latency.as_secs_f64());
    if let Ok(reply) = answer
        && let Some(upstream) = reply.trace.attempts.iter().rev().find(|a| a.outcome == "success")
    {
        series.overhead.observe((latency.as_secs_f64() - upstream.latency_ms / 1000.0).max(0.0));
    }
}

/// Roughly what a kept answer costs in memory: its text, its trace and a fixed overhead.
fn weight(answer: &Answer) -> usize {
    let trace = |attempts: usize| attempts * 256;
    512 + match answer {
        Ok(reply) => reply.content.len() + trace(reply.trace.attempts.len()),
        Err(error) => error.error.message.len() + error.trace.as_ref().map_or(0, |t| trace(t.attempts.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_bounds_queries_and_bytes() {
        assert!(admits(0, 0, 10, 2, 100));
        assert!(!admits(2, 0, 10, 2, 100), "count bound");
        assert!(!admits(1, 95, 10, 2, 100), "byte bound");
        let gate = Arc::new(Gate::new(2, 100));
        let a = gate.enter(40);
        let b = gate.enter(40);
        assert!(a.is_some() && b.is_some());
        assert!(gate.enter(1).is_none(), "third query refused");
        assert_eq!(gate.held(), 2, "a refused permit is released at once");
        drop(a);
        assert!(gate.enter(70).is_none(), "40 + 70 bytes is past the byte bound");
        assert!(gate.enter(60).is_some());
        drop(b);
        assert_eq!(gate.held(), 0);
    }
}
