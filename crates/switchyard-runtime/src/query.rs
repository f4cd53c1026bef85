//! One query's journey over the providers of its route.
//!
//! The router actor admits a query and spawns [`run_query`] as a task. It walks the route's chains (the generic
//! one, or after a context-window or content-policy failure the special one first), resolving each entry to a
//! provider (a group picks a member), and calls it over the bus (`<ns>.v1.provider.<p>.call`, bincode). A
//! transient failure may be retried on the same provider (full-jitter backoff, `Retry-After` as a floor, within
//! the retry budget and the deadline); otherwise the walk moves on. Every attempt is recorded in the trace. A
//! failure that is the request's own fault ends the walk at once; so does any failure after stream chunks
//! reached the client (a stream is never retried after its first chunk).

// An answer is a reply either way: both sides are large and both are moved exactly once, to the client.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{debug, warn};
use uuid::Uuid;

use futures::future::{AbortHandle, Abortable, BoxFuture};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use switchyard_bus::{Bus, BusError, Message, Subscription};
use switchyard_core::{FailureClass, RetryDecision};
use switchyard_protocol::Completion;
use switchyard_protocol::client::QueryOutcome;
use switchyard_protocol::client::{Attempt, ErrorReply, ErrorType, QueryReply, QueryRequest, StreamFrame, Trace};
use switchyard_protocol::internal::{CascadeCall, ProviderAnswer, ProviderCall, ProviderReply, Refusal, StreamTarget};
use switchyard_protocol::subjects::Subjects;
use switchyard_protocol::{Bincode, Codec, Json};

use crate::actors::provider::{ProviderMsg, ReplyTo, STREAM_GRANTED};
use crate::actors::provider_supervisor::ProviderDirectory;
use crate::liveness::Liveness;
use crate::routing::{Resolved, RoutePlan, Routing};
use crate::telemetry::WalkEvent;

/// What every query task of a node shares.
pub struct QueryContext {
    pub node: String,
    pub bus: Arc<dyn Bus>,
    pub subjects: Subjects,
    /// Heartbeats of running calls, so a call whose node died is given up (none: calls are not watched).
    pub liveness: Option<Arc<Liveness>>,
    /// This node's provider actors, called directly instead of over the bus when the chosen provider is hosted
    /// here (`node.local_calls`, on by default). The actor admits, counts and answers exactly as for a bus call.
    pub local: Option<ProviderDirectory>,
}

/// The final answer of a query, before it is rendered for a plain or a streaming client.
pub type Answer = Result<QueryReply, ErrorReply>;

/// How a streamed answer ended: the attempt whose chunks reached the client, and how many it published.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamEnd {
    pub attempt: u32,
    pub chunks: u64,
}

impl StreamEnd {
    /// Read off an answer's trace: the attempt that answered, or the one whose stream broke.
    pub fn of(answer: &Answer) -> StreamEnd {
        let trace = match answer {
            Ok(reply) => Some(&reply.trace),
            Err(error) => error.trace.as_ref(),
        };
        let attempts = trace.map(|t| t.attempts.as_slice()).unwrap_or_default();
        let streamed = attempts.iter().enumerate().rev().find(|(_, a)| a.outcome == "success" || a.chunks > 0);
        streamed.map_or_else(StreamEnd::default, |(i, a)| StreamEnd { attempt: i as u32 + 1, chunks: a.chunks })
    }
}

/// Renders an answer as the bytes a client expects on its reply subject: a reply or an error, or for a streaming
/// client the final frame.
pub fn render(answer: &Answer, stream: Option<StreamEnd>) -> Bytes {
    let encoded = match (answer, stream) {
        (Ok(reply), None) => Json::encode(reply),
        (Err(error), None) => Json::encode(error),
        (Ok(reply), Some(StreamEnd { attempt, chunks })) => {
            Json::encode(&StreamFrame::Done { attempt, chunks, reply: reply.clone() })
        }
        (Err(error), Some(StreamEnd { attempt, chunks })) => {
            Json::encode(&StreamFrame::Error { attempt, chunks, error: error.clone() })
        }
    };
    // Our own reply types always serialise; an empty payload would still end the client's wait.
    Bytes::from(encoded.unwrap_or_default())
}

/// Renders an answer as [`render`] does, in at most `max` bytes (the bus's message limit).
///
/// An answer too long for one message keeps what its client can still get: a streaming client's final frame
/// leaves out the content and the log-probabilities (its chunks carried the text, and the client library takes
/// the text from them); any other answer becomes an `answer_too_large` error naming both sizes, with the answer's
/// id and trace, so the client hears at once why rather than waiting out its deadline.
pub fn render_within(answer: &Answer, stream: Option<StreamEnd>, max: usize) -> Bytes {
    let whole = render(answer, stream);
    if whole.len() <= max {
        return whole;
    }
    let streamed = stream.is_some_and(|end| end.chunks > 0);
    let smaller = match answer {
        Ok(reply) if streamed => Ok(QueryReply { content: String::new(), logprobs: None, ..reply.clone() }),
        Ok(reply) => Err(too_large(whole.len(), max, reply.id.clone(), Some(reply.trace.clone()))),
        Err(error) => Err(too_large(whole.len(), max, error.id.clone(), None)),
    };
    warn!(size = whole.len(), max, streamed, "an answer exceeds the bus's message limit");
    let smaller = render(&smaller, stream);
    match smaller.len() <= max {
        true => smaller,
        false => render(&Err(too_large(whole.len(), max, None, None)), stream),
    }
}

fn too_large(size: usize, max: usize, id: Option<String>, trace: Option<Trace>) -> ErrorReply {
    let message = format!(
        "the answer ({size} bytes) exceeds the bus's message limit ({max} bytes): raise the NATS server's \
         max_payload, or ask for a stream"
    );
    ErrorReply { id, trace, ..ErrorReply::new(ErrorType::UpstreamError, "answer_too_large", message) }
}

/// One upstream call's result, as the walk sees it.
enum CallResult {
    Answered {
        completion: Completion,
        chunks: u64,
    },
    Failed {
        class: FailureClass,
        status: Option<u16>,
        message: String,
        chunks: u64,
    },
    Refused {
        reason: Refusal,
    },
    NoResponders,
    Timeout,
    Broken(String),
    /// No answer and no heartbeat for this long: the node running the call died, or never got it.
    Lost {
        node: Option<String>,
        silent: Duration,
    },
}

/// Sends one encoded call and waits, at most `wait`, for its reply; also says which node answered.
async fn call_provider(
    bus: Arc<dyn Bus>,
    subject: String,
    payload: Bytes,
    wait: Duration,
) -> (Option<String>, CallResult) {
    let mut message = Message::new(subject, payload);
    crate::telemetry::inject_trace(&mut message.headers);
    let reply = match bus.request(message, wait).await {
        Ok(reply) => reply,
        Err(BusError::NoResponders { .. }) => return (None, CallResult::NoResponders),
        Err(BusError::Timeout { .. }) => return (None, CallResult::Timeout),
        Err(other) => return (None, CallResult::Broken(other.to_string())),
    };
    let Ok(ProviderAnswer { node, reply }) = Bincode::decode::<ProviderAnswer>(&reply.payload) else {
        // Another version of Switchyard answered: the next provider (or node) may still speak ours.
        return (None, CallResult::Broken("undecodable provider reply".into()));
    };
    (Some(node), result_of(reply))
}

/// Hands one call to a provider actor of this node (`node`) and waits, at most `wait`, for its answer: the same
/// call, admission and answer as over the bus, without encoding it or a round trip through the NATS server.
async fn call_local(
    actor: ractor::ActorRef<ProviderMsg>,
    node: String,
    call: ProviderCall,
    trace: Vec<(String, String)>,
    wait: Duration,
) -> (Option<String>, CallResult) {
    let (sender, answer) = tokio::sync::oneshot::channel();
    if actor.cast(ProviderMsg::Call { call, reply_to: ReplyTo::Local(sender), trace }).is_err() {
        // The actor is being restarted: this node refuses, as its bus bridge would, so the walk redirects the
        // call to another node hosting the provider rather than back to this one.
        return (Some(node), CallResult::Refused { reason: Refusal::Restarting });
    }
    match tokio::time::timeout(wait, answer).await {
        Ok(Ok(ProviderAnswer { node, reply })) => (Some(node), result_of(reply)),
        Ok(Err(_)) => (None, CallResult::Broken("the provider actor stopped before answering".into())),
        Err(_) => (None, CallResult::Timeout),
    }
}

fn result_of(reply: ProviderReply) -> CallResult {
    match reply {
        ProviderReply::Completed { completion, chunks, .. } => CallResult::Answered { completion, chunks },
        ProviderReply::Failed(f) => {
            CallResult::Failed { class: f.class.into(), status: f.status, message: f.message, chunks: f.chunks }
        }
        ProviderReply::Refused { reason } => CallResult::Refused { reason },
    }
}

/// How many times a router sends a cascade run again after its coordinator went silent.
const MAX_LOST_RUNS: u32 = 2;

/// Runs `request` through the cascade serving `plan`: sends it to the cascade's coordinators (a queue group) and
/// waits for the answer, watching the run's heartbeats. A run whose coordinator went silent (it died) is sent again,
/// and another coordinator takes it: at most twice, each paid from the retry budget like a hedge (without budget
/// the silent run is waited for, within the deadline).
pub async fn call_cascade(
    ctx: &QueryContext,
    routing: &Routing,
    plan: &RoutePlan,
    cascade: &str,
    request: &QueryRequest,
    deadline: Instant,
) -> Answer {
    let fail = |kind: ErrorType, code: &str, message: String| {
        Err(ErrorReply::new(kind, code, message).with_id(request.id.clone()))
    };
    let subject = ctx.subjects.cascade_run(cascade);
    let mut lost = 0;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return fail(ErrorType::DeadlineExceeded, "deadline_exceeded", "the deadline passed".into());
        }
        let call = CascadeCall {
            call_id: Uuid::new_v4(),
            route: plan.name.clone(),
            request: request.clone(),
            budget_ms: remaining.as_millis().max(1) as u64,
            keepalive: ctx.liveness.as_ref().map(|l| l.keepalive()),
        };
        let payload = match Json::encode(&call) {
            Ok(bytes) => Bytes::from(bytes),
            Err(error) => return fail(ErrorType::UpstreamError, "bus_error", error.to_string()),
        };
        let sent = Instant::now();
        let asked = ctx.bus.request(Message::new(subject.clone(), payload), remaining + Duration::from_millis(50));
        let give_up = || lost < MAX_LOST_RUNS && routing.try_retry(Instant::now());
        let result = watch(ctx, call.call_id, sent, asked, give_up).await;
        if let Some(liveness) = &ctx.liveness {
            liveness.forget(&call.call_id, sent);
        }
        let reply = match result {
            Watched::Done(Ok(reply)) => reply,
            Watched::Done(Err(BusError::NoResponders { .. })) => {
                let message = format!("no node coordinates cascade {cascade}");
                let error = ErrorReply::new(ErrorType::NoProviderAvailable, "no_provider_available", message);
                return Err(error.with_retry_after_ms(1000).with_id(request.id.clone()));
            }
            Watched::Done(Err(BusError::Timeout { .. })) => {
                return fail(ErrorType::DeadlineExceeded, "deadline_exceeded", "the deadline passed".into());
            }
            Watched::Done(Err(other)) => return fail(ErrorType::UpstreamError, "bus_error", other.to_string()),
            Watched::Lost { node } => {
                lost += 1;
                let on = node.map_or_else(String::new, |n| format!(" on node {n}"));
                warn!(cascade, lost, "a cascade run went silent{on}; sending it again");
                continue;
            }
        };
        return match serde_json::from_slice::<QueryOutcome>(&reply.payload) {
            Ok(QueryOutcome::Reply(reply)) => Ok(reply),
            Ok(QueryOutcome::Error(error)) => Err(error),
            Err(error) => fail(ErrorType::UpstreamError, "bad_cascade_answer", error.to_string()),
        };
    }
}

/// How a watched request ended: its answer, or silence (no answer, no heartbeat) for too long.
enum Watched<T> {
    Done(T),
    Lost { node: Option<String> },
}

/// Awaits `asked` (sent at `sent`) while `call_id`'s heartbeats keep coming. When it has been silent for too long
/// and `give_up` agrees, it is lost; otherwise it is waited for another period.
async fn watch<T>(
    ctx: &QueryContext,
    call_id: Uuid,
    sent: Instant,
    asked: impl std::future::Future<Output = T>,
    give_up: impl Fn() -> bool,
) -> Watched<T> {
    let Some(liveness) = &ctx.liveness else { return Watched::Done(asked.await) };
    tokio::pin!(asked);
    let mut patience_from = sent;
    loop {
        let at = liveness.last_sign(&call_id, sent).at.max(patience_from) + liveness.lost_after();
        tokio::select! {
            done = &mut asked => return Watched::Done(done),
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(at)) => {
                let sign = liveness.last_sign(&call_id, sent);
                if sign.at.elapsed() >= liveness.lost_after() && patience_from.elapsed() >= liveness.lost_after() {
                    if give_up() {
                        return Watched::Lost { node: sign.node };
                    }
                    debug!(%call_id, "a silent run is waited for: no retry budget (or re-sends) left");
                    patience_from = Instant::now();
                }
            }
        }
    }
}

/// Runs `request` on `plan`: retries of the same provider, fallbacks along the chains, balancing inside groups,
/// and a hedge beside a slow attempt, all inside the client's deadline.
pub async fn run_query(
    ctx: &QueryContext,
    routing: &Routing,
    plan: &RoutePlan,
    request: &QueryRequest,
    reply_to: &str,
    deadline: Instant,
) -> Answer {
    routing.record_request(Instant::now());
    Walk::new(ctx, routing, plan, request, reply_to, deadline).run().await
}

/// An attempt that was started and has not ended.
struct Running {
    /// Its place in the trace; its attempt number is `slot + 1`.
    slot: usize,
    provider: String,
    member: Option<(String, usize)>,
    /// The node it was addressed to, when not the provider's queue group.
    node: Option<String>,
    call_id: Uuid,
    started: Instant,
    /// Silence is counted from here at the earliest: a call found silent when the retry budget could not pay for
    /// running it again is waited for another period, not abandoned.
    patience_from: Instant,
    abort: AbortHandle,
    /// Handed to an actor of this node: it cannot be lost without this router going too, so it is not watched.
    local: bool,
}

/// What to start once no attempt is running.
enum Next {
    /// The next entry of the chains.
    Target,
    /// The same provider again, after a backoff.
    Retry { provider: String, member: Option<(String, usize)>, bypass: bool, delay: Duration, attempt_no: u32 },
    /// The same provider on another node, because one node refused the call for reasons of its own.
    Elsewhere { provider: String, member: Option<(String, usize)>, bypass: bool, node: String },
}

type Pending = Abortable<BoxFuture<'static, (Option<String>, CallResult)>>;

/// One query's walk over its route. See the module documentation.
struct Walk<'a> {
    ctx: &'a QueryContext,
    routing: &'a Routing,
    plan: &'a RoutePlan,
    request: &'a QueryRequest,
    deadline: Instant,
    started: Instant,
    call: ProviderCall,
    trace: Trace,
    tried: Vec<String>,
    last_failure: Option<FailureClass>,
    retry_after: Option<u64>,
    only_unavailable: bool,
    running: Vec<Running>,
    pending: FuturesUnordered<futures::future::Map<Pending, SlotFn>>,
    /// Attempts per provider of the current target (retries included).
    attempt_no: u32,
    /// A query hedges at most once.
    hedged: bool,
    /// A refusal by one node's own breaker or in-flight limit is tried once on another node.
    redirected: bool,
    /// For a stream that may be hedged: where attempts ask for the stream, and the attempt that got it.
    claims: Option<Subscription>,
    streaming: Option<u32>,
}

type SlotFn = Box<
    dyn FnOnce(
            Result<(Option<String>, CallResult), futures::future::Aborted>,
        ) -> (usize, Option<(Option<String>, CallResult)>)
        + Send,
>;

/// A walk dropped with attempts still running (its client went away, or its router was stopped) cancels them as
/// [`Walk::cancel`] would: nobody waits for their answers, so their providers are told to stop, and their places
/// in the load balancer are given back.
impl Drop for Walk<'_> {
    fn drop(&mut self) {
        let running = std::mem::take(&mut self.running);
        let cancels: Vec<Message> = running.into_iter().map(|running| self.stop(running).0).collect();
        if cancels.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let bus = self.ctx.bus.clone();
        runtime.spawn(async move {
            for cancel in cancels {
                publish_cancellation(bus.as_ref(), cancel).await;
            }
        });
    }
}

impl Running {
    /// The message that tells this attempt's provider to stop it.
    fn cancellation(&self, subjects: &Subjects) -> Message {
        Message::new(subjects.provider_cancel(&self.provider), Bytes::copy_from_slice(self.call_id.as_bytes()))
    }
}

async fn publish_cancellation(bus: &dyn Bus, cancel: Message) {
    if let Err(error) = bus.publish(cancel).await {
        debug!(%error, "cannot publish a cancellation");
    }
}

impl<'a> Walk<'a> {
    fn new(
        ctx: &'a QueryContext,
        routing: &'a Routing,
        plan: &'a RoutePlan,
        request: &'a QueryRequest,
        reply_to: &str,
        deadline: Instant,
    ) -> Self {
        let call = ProviderCall {
            call_id: Uuid::nil(),
            request: request.to_chat_request(),
            budget_ms: 0,
            stream: request.stream.then(|| StreamTarget { subject: reply_to.to_owned(), attempt: 1, claim: None }),
            bypass_breaker: false,
            keepalive: ctx.liveness.as_ref().map(|l| l.keepalive()),
        };
        Walk {
            ctx,
            routing,
            plan,
            request,
            deadline,
            started: Instant::now(),
            call,
            trace: Trace { node: ctx.node.clone(), route: plan.name.clone(), ..Trace::default() },
            tried: Vec::new(),
            last_failure: None,
            retry_after: None,
            only_unavailable: true,
            running: Vec::new(),
            pending: FuturesUnordered::new(),
            attempt_no: 0,
            hedged: false,
            redirected: false,
            claims: None,
            streaming: None,
        }
    }

    async fn run(mut self) -> Answer {
        let mut next = Some(Next::Target);
        loop {
            if self.running.is_empty() {
                let started = match next.take() {
                    Some(Next::Target) => self.start_next_target().await,
                    Some(Next::Retry { provider, member, bypass, delay, attempt_no }) => {
                        self.routing.count(&self.plan.name, WalkEvent::Retry);
                        tokio::time::sleep(delay.min(self.deadline.saturating_duration_since(Instant::now()))).await;
                        self.attempt_no = attempt_no;
                        self.routing.start(&member);
                        self.start(provider, member, bypass, false, None).await
                    }
                    Some(Next::Elsewhere { provider, member, bypass, node }) => {
                        self.routing.start(&member);
                        self.start(provider, member, bypass, false, Some(node)).await
                    }
                    None => false,
                };
                if !started {
                    return self.exhausted();
                }
            }
            let hedge_at = self.hedge_at();
            let lost_at = self.lost_at();
            let deadline = tokio::time::Instant::from_std(self.deadline);
            tokio::select! {
                biased;
                Some(claim) = next_claim(&mut self.claims) => self.on_claim(claim).await,
                Some((slot, result)) = self.pending.next() => {
                    let Some((node, result)) = result else { continue };
                    match self.on_result(slot, node, result).await {
                        Step::Done(answer) => return answer,
                        Step::Wait => {}
                        Step::Then(then) => next = Some(then),
                    }
                }
                _ = sleep_until_opt(hedge_at), if hedge_at.is_some() => self.start_hedge().await,
                _ = sleep_until_opt(lost_at), if lost_at.is_some() => {
                    match self.give_up_lost().await {
                        Some(Step::Done(answer)) => return answer,
                        Some(Step::Then(then)) => next = Some(then),
                        Some(Step::Wait) | None => {}
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    self.cancel_running().await;
                    return self.fail(ErrorType::DeadlineExceeded, "deadline_exceeded", "the deadline passed".into());
                }
            }
        }
    }

    fn fail(&mut self, kind: ErrorType, code: &str, message: String) -> Answer {
        let trace = std::mem::take(&mut self.trace);
        Err(ErrorReply::new(kind, code, message).with_id(self.request.id.clone()).with_trace(trace))
    }

    fn note_retry_after(&mut self, ms: u64) {
        self.retry_after = Some(self.retry_after.map_or(ms, |r| r.min(ms)));
    }

    /// Starts the next entry of the chains that resolves to a provider; `false` when the chains are used up.
    async fn start_next_target(&mut self) -> bool {
        while let Some(target) = self.plan.chains.next(&self.tried, self.last_failure) {
            if !self.tried.is_empty() {
                self.routing.count(&self.plan.name, WalkEvent::Fallback);
            }
            self.tried.push(target.clone());
            self.last_failure = None;
            match self.routing.resolve(&target, Instant::now()) {
                Resolved::Provider { name, member, bypass_breaker } => {
                    self.attempt_no = 1;
                    self.redirected = false;
                    return self.start(name, member, bypass_breaker, false, None).await;
                }
                Resolved::Unavailable { retry_after } => {
                    self.note_retry_after(retry_after.as_millis().max(1) as u64);
                    self.trace.attempts.push(attempt(target, "unavailable", false, false));
                }
            }
        }
        false
    }

    /// When the running attempt gets a hedge, if it may: one attempt running, no hedge yet, no stream granted,
    /// and a next target in the generic chain.
    fn hedge_at(&self) -> Option<tokio::time::Instant> {
        if self.hedged || self.running.len() != 1 || self.streaming.is_some() {
            return None;
        }
        self.plan.chains.next(&self.tried, None)?;
        let first = &self.running[0];
        let delay = self.routing.hedge_delay(self.plan, &first.provider)?;
        Some(tokio::time::Instant::from_std(first.started + delay))
    }

    /// When the first running call will have been silent for too long (no answer, no heartbeat).
    fn lost_at(&self) -> Option<tokio::time::Instant> {
        let liveness = self.ctx.liveness.as_ref()?;
        let last = self
            .running
            .iter()
            .filter(|r| !r.local)
            .map(|r| liveness.last_sign(&r.call_id, r.started).at.max(r.patience_from))
            .min()?;
        Some(tokio::time::Instant::from_std(last + liveness.lost_after()))
    }

    /// Gives up the running calls that have been silent for too long; what to do next, for the last of them.
    ///
    /// Running a lost call again is paid from the retry budget, like a hedge: an overloaded node whose heartbeats
    /// come late must not set off a storm of re-runs. Without budget the call is waited for another period.
    async fn give_up_lost(&mut self) -> Option<Step> {
        let liveness = self.ctx.liveness.clone()?;
        let lost_after = liveness.lost_after();
        let now = Instant::now();
        let mut lost: Vec<(usize, Option<String>, Duration)> = Vec::new();
        for running in self.running.iter_mut().filter(|r| !r.local) {
            let sign = liveness.last_sign(&running.call_id, running.started);
            let silent = sign.at.elapsed();
            if silent < lost_after || now.saturating_duration_since(running.patience_from) < lost_after {
                continue;
            }
            if self.routing.try_retry(now) {
                lost.push((running.slot, sign.node, silent));
            } else {
                debug!(provider = %running.provider, silent_ms = silent.as_millis() as u64,
                    "a silent call is waited for: no retry budget to run it again");
                running.patience_from = now;
            }
        }
        let mut step = None;
        for (slot, node, silent) in lost {
            if let Some(running) = self.running.iter().find(|r| r.slot == slot) {
                running.abort.abort();
                // Should the node be alive after all (a partition), it stops the call.
                publish_cancellation(self.ctx.bus.as_ref(), running.cancellation(&self.ctx.subjects)).await;
            }
            step = Some(self.on_result(slot, None, CallResult::Lost { node, silent }).await);
            if matches!(step, Some(Step::Done(_))) {
                break;
            }
        }
        step
    }

    fn forget(&self, call_id: &Uuid, started: Instant) {
        if let Some(liveness) = &self.ctx.liveness {
            liveness.forget(call_id, started);
        }
    }

    async fn start_hedge(&mut self) {
        self.hedged = true;
        if !self.routing.try_retry(Instant::now()) {
            debug!(route = %self.plan.name, "no hedge: the retry budget is spent");
            return;
        }
        let Some(target) = self.plan.chains.next(&self.tried, None) else { return };
        self.tried.push(target.clone());
        match self.routing.resolve(&target, Instant::now()) {
            Resolved::Provider { name, member, bypass_breaker } => {
                debug!(route = %self.plan.name, provider = %name, "hedging a slow attempt");
                self.routing.count(&self.plan.name, WalkEvent::Hedge);
                self.start(name, member, bypass_breaker, true, None).await;
            }
            Resolved::Unavailable { retry_after } => {
                self.note_retry_after(retry_after.as_millis().max(1) as u64);
                self.trace.attempts.push(attempt(target, "unavailable", false, true));
            }
        }
    }

    /// Sends one attempt to `provider` (on `node` when set, else to any node hosting it); `false` only when the
    /// call cannot even be encoded.
    async fn start(
        &mut self,
        provider: String,
        member: Option<(String, usize)>,
        bypass: bool,
        hedged: bool,
        node: Option<String>,
    ) -> bool {
        let slot = self.trace.attempts.len();
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        self.call.call_id = Uuid::new_v4();
        self.call.budget_ms = remaining.as_millis().max(1) as u64;
        self.call.bypass_breaker = bypass;
        let hedgeable = self.plan.hedge.enabled && self.plan.chains.next(&self.tried, None).is_some();
        if let Some(stream) = &mut self.call.stream {
            stream.attempt = slot as u32 + 1;
            // A stream that may get a hedge (or is one) asks for the client's stream before its first chunk.
            if (hedgeable || hedged) && self.claims.is_none() {
                let inbox = self.ctx.bus.new_inbox();
                match self.ctx.bus.subscribe(&inbox).await {
                    Ok(sub) => {
                        self.claims = Some(sub);
                        stream.claim = Some(inbox);
                    }
                    Err(error) => warn!(%error, "cannot subscribe for stream claims; this stream is not hedged"),
                }
            }
            if self.claims.is_none() {
                self.hedged = true;
            }
        }
        let local = match (&self.ctx.local, &node) {
            (Some(directory), None) => directory.get(&provider),
            (Some(directory), Some(to)) if *to == self.ctx.node => directory.get(&provider),
            _ => None,
        };
        // A little slack beyond the deadline lets the provider report its own expiry.
        let wait = remaining + Duration::from_millis(50);
        if let Some(actor) = local {
            self.trace.attempts.push(attempt(provider.clone(), "running", bypass, hedged));
            let mut call = self.call.clone();
            call.keepalive = None;
            let mut trace = Vec::new();
            crate::telemetry::inject_trace(&mut trace);
            let (abort, registration) = AbortHandle::new_pair();
            let future: BoxFuture<'static, _> = Box::pin(call_local(actor, self.ctx.node.clone(), call, trace, wait));
            let map: SlotFn = Box::new(move |result| (slot, result.ok()));
            self.pending.push(Abortable::new(future, registration).map(map));
            let (call_id, started) = (self.call.call_id, Instant::now());
            let running =
                Running { slot, provider, member, node, call_id, started, patience_from: started, abort, local: true };
            self.running.push(running);
            return true;
        }
        let payload = match Bincode::encode(&self.call) {
            Ok(bytes) => Bytes::from(bytes),
            Err(error) => {
                let mut failed = attempt(provider, "bus_error", bypass, hedged);
                failed.message = Some(error.to_string());
                self.trace.attempts.push(failed);
                self.only_unavailable = false;
                return false;
            }
        };
        self.trace.attempts.push(attempt(provider.clone(), "running", bypass, hedged));
        let subject = match &node {
            Some(node) => self.ctx.subjects.provider_node_call(&provider, node),
            None => self.ctx.subjects.provider_call(&provider),
        };
        let (abort, registration) = AbortHandle::new_pair();
        let call: BoxFuture<'static, _> = Box::pin(call_provider(self.ctx.bus.clone(), subject, payload, wait));
        let map: SlotFn = Box::new(move |result| (slot, result.ok()));
        self.pending.push(Abortable::new(call, registration).map(map));
        let call_id = self.call.call_id;
        let started = Instant::now();
        self.running.push(Running {
            slot,
            provider,
            member,
            node,
            call_id,
            started,
            patience_from: started,
            abort,
            local: false,
        });
        true
    }

    /// Grants the client's stream to the first attempt that asks, and cancels the others.
    async fn on_claim(&mut self, claim: Message) {
        let Some(reply) = claim.reply else { return };
        let asking = std::str::from_utf8(&claim.payload).ok().and_then(|s| s.parse::<u32>().ok());
        let granted = match (self.streaming, asking) {
            (None, Some(attempt)) => {
                self.streaming = Some(attempt);
                true
            }
            _ => false,
        };
        let answer = if granted { Bytes::from_static(STREAM_GRANTED) } else { Bytes::from_static(b"denied") };
        if let Err(error) = self.ctx.bus.publish(Message::new(reply, answer)).await {
            warn!(%error, "cannot answer a stream claim");
        }
        if granted {
            let others: Vec<usize> =
                self.running.iter().filter(|r| Some(r.slot as u32 + 1) != self.streaming).map(|r| r.slot).collect();
            for slot in others {
                self.cancel(slot).await;
            }
        }
    }

    /// Stops waiting for the attempt in `slot`, tells its provider to stop, and records it as cancelled.
    async fn cancel(&mut self, slot: usize) {
        let Some(index) = self.running.iter().position(|r| r.slot == slot) else { return };
        let running = self.running.swap_remove(index);
        let (cancellation, latency) = self.stop(running);
        if let Some(entry) = self.trace.attempts.get_mut(slot) {
            entry.outcome = "cancelled".into();
            entry.latency_ms = latency.as_secs_f64() * 1000.0;
        }
        publish_cancellation(self.ctx.bus.as_ref(), cancellation).await;
    }

    /// Stops waiting for an attempt taken out of `running`: no longer watched, its answer no longer awaited, its
    /// place in the load balancer given back. Returns the message that tells its provider to stop, and how long
    /// the attempt ran.
    fn stop(&self, running: Running) -> (Message, Duration) {
        self.forget(&running.call_id, running.started);
        running.abort.abort();
        let latency = running.started.elapsed();
        self.routing.finish(&running.member, latency, false, None);
        (running.cancellation(&self.ctx.subjects), latency)
    }

    async fn cancel_running(&mut self) {
        let slots: Vec<usize> = self.running.iter().map(|r| r.slot).collect();
        for slot in slots {
            self.cancel(slot).await;
        }
    }

    /// Takes in the result of the attempt in `slot`.
    async fn on_result(&mut self, slot: usize, answered_by: Option<String>, result: CallResult) -> Step {
        let Some(index) = self.running.iter().position(|r| r.slot == slot) else { return Step::Wait };
        let Running { provider, member, started, node, call_id, .. } = self.running.swap_remove(index);
        self.forget(&call_id, started);
        if let Some(host) = &answered_by {
            self.routing.note_host(&provider, host);
        }
        let latency = started.elapsed();
        let others_running = !self.running.is_empty();
        let bypass = self.trace.attempts.get(slot).is_some_and(|a| a.panic);
        let mut entry =
            self.trace.attempts.get(slot).cloned().unwrap_or_else(|| attempt(provider.clone(), "", bypass, false));
        entry.latency_ms = latency.as_secs_f64() * 1000.0;
        let mut step = Step::Then(Next::Target);
        match result {
            CallResult::Answered { completion, chunks } => {
                self.routing.finish(&member, latency, false, None);
                let this = slot as u32 + 1;
                if self.streaming.is_some_and(|granted| granted != this) {
                    // An answer with no text raced a granted stream: the client has the other attempt's chunks.
                    entry.outcome = "discarded".into();
                    self.trace.attempts[slot] = entry;
                    return if others_running { Step::Wait } else { Step::Then(Next::Target) };
                }
                if self.call.stream.is_none() {
                    self.routing.observe_latency(&provider, latency);
                }
                entry.outcome = "success".into();
                entry.chunks = chunks;
                self.trace.attempts[slot] = entry;
                self.cancel_running().await;
                let trace = std::mem::take(&mut self.trace);
                return Step::Done(Ok(QueryReply {
                    id: self.request.id.clone(),
                    content: completion.content,
                    model: completion.model,
                    provider,
                    finish_reason: completion.finish_reason,
                    usage: completion.usage,
                    cost_usd: completion.cost_usd,
                    latency_ms: self.started.elapsed().as_secs_f64() * 1000.0,
                    logprobs: completion.logprobs,
                    trace,
                }));
            }
            CallResult::Failed { class, status, message, chunks } => {
                self.routing.finish(&member, latency, class.worth_falling_back(), None);
                entry.outcome = class.as_str().into();
                entry.status = status;
                entry.message = Some(message.clone());
                entry.chunks = chunks;
                self.trace.attempts[slot] = entry;
                if class == FailureClass::Cancelled && others_running {
                    // A loser that was refused the stream, or cancelled: the other attempt goes on.
                    return Step::Wait;
                }
                self.only_unavailable &= matches!(class, FailureClass::RateLimited { .. });
                if let FailureClass::RateLimited { retry_after: Some(wait) } = class {
                    self.note_retry_after(wait.as_millis() as u64);
                }
                if chunks > 0 {
                    self.cancel_running().await;
                    let message = format!("{provider} failed after {chunks} streamed chunks");
                    return Step::Done(self.fail(ErrorType::UpstreamError, "stream_interrupted", message));
                }
                if others_running {
                    self.last_failure = Some(class);
                    return Step::Wait;
                }
                let remaining = self.deadline.saturating_duration_since(Instant::now());
                match self.plan.retry.decide(self.attempt_no, class, remaining, false, rand::random::<f64>()) {
                    RetryDecision::RetrySameAfter(delay) if self.routing.try_retry(Instant::now()) => {
                        let attempt_no = self.attempt_no + 1;
                        step = Step::Then(Next::Retry { provider, member, bypass, delay, attempt_no });
                    }
                    RetryDecision::RetrySameAfter(_) | RetryDecision::NextProvider => self.last_failure = Some(class),
                    RetryDecision::GiveUp if class == FailureClass::Cancelled => {
                        return Step::Done(self.fail(ErrorType::DeadlineExceeded, "deadline_exceeded", message));
                    }
                    RetryDecision::GiveUp => {
                        return Step::Done(self.fail(ErrorType::UpstreamError, class.as_str(), message));
                    }
                }
            }
            CallResult::Refused { reason } => {
                let refused_for = match reason {
                    Refusal::BreakerOpen { retry_after_ms } | Refusal::LocalBreakerOpen { retry_after_ms } => {
                        self.note_retry_after(retry_after_ms);
                        Some(Duration::from_millis(retry_after_ms))
                    }
                    _ => None,
                };
                entry.outcome = format!("refused_{}", reason.as_str());
                if let Some(host) = &answered_by {
                    entry.message = Some(format!("refused by node {host}"));
                }
                self.trace.attempts[slot] = entry;
                // One node's own refusal: another node hosting the provider may serve the call, once per target.
                if reason.is_node_local() && !self.redirected && !others_running {
                    let avoid: Vec<String> = answered_by.into_iter().collect();
                    if let Some(host) = self.routing.other_host(&provider, &avoid, rand::random::<f64>()) {
                        self.redirected = true;
                        debug!(provider = %provider, node = %host, "a node refused the call; trying another");
                        self.routing.finish(&member, latency, false, None);
                        return Step::Then(Next::Elsewhere { provider, member, bypass, node: host });
                    }
                }
                self.routing.finish(&member, latency, false, refused_for);
                if let (None, Refusal::BreakerOpen { .. }, Some(wait)) = (&member, reason, refused_for) {
                    self.routing.refused(&provider, wait);
                }
            }
            CallResult::NoResponders => {
                self.routing.finish(&member, latency, false, None);
                if let Some(node) = &node {
                    // The node addressed directly is gone.
                    self.routing.forget_host(&provider, node);
                }
                entry.outcome = "no_responders".into();
                self.trace.attempts[slot] = entry;
            }
            CallResult::Timeout => {
                self.routing.finish(&member, latency, false, None);
                entry.outcome = "timeout".into();
                self.trace.attempts[slot] = entry;
                if !others_running {
                    return Step::Done(self.fail(
                        ErrorType::DeadlineExceeded,
                        "deadline_exceeded",
                        "the deadline passed".into(),
                    ));
                }
            }
            CallResult::Broken(message) => {
                self.routing.finish(&member, latency, false, None);
                entry.outcome = "bus_error".into();
                entry.message = Some(message);
                self.trace.attempts[slot] = entry;
                self.only_unavailable = false;
            }
            CallResult::Lost { node: lost_on, silent } => {
                // The node's loss, not the provider's failure: nothing is charged.
                self.routing.finish(&member, latency, false, None);
                let silent_ms = silent.as_millis();
                entry.outcome = "lost".into();
                entry.message = Some(match &lost_on {
                    Some(host) => format!("node {host} went silent for {silent_ms} ms mid-call"),
                    None => format!("no node took the call or showed life for {silent_ms} ms"),
                });
                self.trace.attempts[slot] = entry;
                self.only_unavailable = false;
                if let Some(host) = &lost_on {
                    self.routing.forget_host(&provider, host);
                }
                // A stream the lost call was writing restarts with the next attempt (clients drop the chunks of
                // a superseded attempt), so that attempt may claim it.
                if self.streaming == Some(slot as u32 + 1) {
                    self.streaming = None;
                }
                if others_running {
                    return Step::Wait;
                }
                // The provider itself may be well on another node: once on a known one, else on any.
                let avoid: Vec<String> = lost_on.into_iter().collect();
                // Already paid from the retry budget when the call was given up.
                if let Some(host) = self.routing.other_host(&provider, &avoid, rand::random::<f64>()) {
                    return Step::Then(Next::Elsewhere { provider, member, bypass, node: host });
                }
                let attempt_no = self.attempt_no + 1;
                return Step::Then(Next::Retry { provider, member, bypass, delay: Duration::ZERO, attempt_no });
            }
        }
        if others_running { Step::Wait } else { step }
    }

    /// Every chain is used up and nothing runs.
    fn exhausted(&mut self) -> Answer {
        if self.only_unavailable {
            let message = format!("no provider of route {} is available", self.plan.name);
            let trace = std::mem::take(&mut self.trace);
            return Err(ErrorReply::new(ErrorType::NoProviderAvailable, "no_provider_available", message)
                .with_retry_after_ms(self.retry_after.unwrap_or(1000))
                .with_id(self.request.id.clone())
                .with_trace(trace));
        }
        let message = format!("every provider of route {} failed", self.plan.name);
        self.fail(ErrorType::UpstreamError, "all_providers_failed", message)
    }
}

/// What the walk does after an attempt ended.
// The answer is moved once per query, to the client: boxing it would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Step {
    Done(Answer),
    /// Another attempt is still running.
    Wait,
    Then(Next),
}

fn attempt(provider: String, outcome: &str, panic: bool, hedged: bool) -> Attempt {
    Attempt {
        provider,
        outcome: outcome.into(),
        latency_ms: 0.0,
        status: None,
        message: None,
        panic,
        hedged,
        chunks: 0,
    }
}

async fn next_claim(claims: &mut Option<Subscription>) -> Option<Message> {
    match claims {
        Some(sub) => sub.next().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use ractor::{Actor, ActorProcessingErr, ActorRef};
    use switchyard_protocol::ChatMessage;

    use super::*;

    fn long_reply(len: usize) -> QueryReply {
        QueryReply {
            id: Some("q-1".into()),
            content: "x".repeat(len),
            model: "m".into(),
            provider: "p".into(),
            finish_reason: Some("stop".into()),
            usage: switchyard_protocol::Usage::default(),
            cost_usd: 0.0,
            latency_ms: 1.0,
            logprobs: None,
            trace: Trace::default(),
        }
    }

    #[test]
    fn an_answer_within_the_limit_renders_whole() {
        let answer = Ok(long_reply(100));
        assert_eq!(render_within(&answer, None, 4096), render(&answer, None));
        let end = Some(StreamEnd { attempt: 1, chunks: 3 });
        assert_eq!(render_within(&answer, end, 4096), render(&answer, end));
    }

    #[test]
    fn an_answer_over_the_limit_becomes_a_typed_error_naming_both_sizes() {
        let answer = Ok(long_reply(10_000));
        let bytes = render_within(&answer, None, 4096);
        assert!(bytes.len() <= 4096);
        let Ok(QueryOutcome::Error(error)) = Json::decode::<QueryOutcome>(&bytes) else { panic!("not an error") };
        assert_eq!(error.error.code, "answer_too_large");
        assert!(error.error.message.contains("4096"), "{}", error.error.message);
        assert_eq!(error.id.as_deref(), Some("q-1"), "the client can tell which query it was");
        // A stream whose answer came without chunks has nowhere else to find the text either.
        let bytes = render_within(&answer, Some(StreamEnd { attempt: 1, chunks: 0 }), 4096);
        assert!(matches!(Json::decode::<StreamFrame>(&bytes), Ok(StreamFrame::Error { .. })));
    }

    #[test]
    fn a_streamed_final_frame_over_the_limit_leaves_the_text_to_its_chunks() {
        let answer = Ok(long_reply(10_000));
        let bytes = render_within(&answer, Some(StreamEnd { attempt: 2, chunks: 40 }), 4096);
        match Json::decode::<StreamFrame>(&bytes) {
            Ok(StreamFrame::Done { attempt: 2, chunks: 40, reply }) => {
                assert!(reply.content.is_empty());
                assert_eq!(reply.finish_reason.as_deref(), Some("stop"), "the rest of the reply stays");
            }
            other => panic!("not a final frame: {other:?}"),
        }
    }

    /// A provider actor that is gone by the time it is called (crashed, its restart not yet in the directory).
    struct Gone;

    impl Actor for Gone {
        type Msg = ProviderMsg;
        type State = ();
        type Arguments = ();

        async fn pre_start(&self, _: ActorRef<ProviderMsg>, _: ()) -> Result<(), ActorProcessingErr> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_local_call_to_a_stopped_actor_is_refused_by_this_node_as_over_the_bus() {
        let (actor, join) = Actor::spawn(None, Gone, ()).await.unwrap();
        actor.stop(None);
        join.await.unwrap();
        let call = ProviderCall {
            call_id: Uuid::new_v4(),
            request: QueryRequest::new(vec![ChatMessage::user("hi")]).to_chat_request(),
            budget_ms: 1_000,
            stream: None,
            bypass_breaker: false,
            keepalive: None,
        };
        let (node, result) = call_local(actor, "node-1".into(), call, Vec::new(), Duration::from_secs(1)).await;
        // The bus bridge answers `restarting` in its node's name; the walk then avoids this node when redirecting.
        assert_eq!(node.as_deref(), Some("node-1"));
        assert!(matches!(result, CallResult::Refused { reason: Refusal::Restarting }));
    }
}
