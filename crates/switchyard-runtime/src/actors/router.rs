//! `RouterActor`: admits client queries and hands each one to a task that walks its route.
//!
//! The actor is the single owner of the node's query book-keeping: it refuses bad input with typed errors
//! (oversized, malformed, unknown route, invalid fields), sheds load past the in-flight limit, and de-duplicates
//! by idempotency key: a query whose `id` is already being answered waits for that answer, and one whose answer
//! is still within its deadline gets it again, without a second upstream call. Within a node this is the
//! in-memory table; across nodes (the queue group may hand a retry to another node) a claim in the shared
//! idempotency store decides which node runs the query (`idempotent::answer_once`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tracing::{Instrument, debug, info_span, warn};

use switchyard_bus::{Bus, Message};
use switchyard_core::{DedupTable, Seen};
use switchyard_protocol::admin::RouterHealth;
use switchyard_protocol::client::{ErrorReply, ErrorType, QueryRequest};
use switchyard_protocol::subjects::Subjects;
use switchyard_state::IdempotencyStore;

use crate::idempotent::answer_once;
use crate::query::{Answer, QueryContext, StreamEnd, render, run_query};
use crate::routing::Routing;

pub struct RouterActor;

pub struct RouterArgs {
    pub node: String,
    pub bus: Arc<dyn Bus>,
    pub subjects: Subjects,
    /// The routes, their chains and groups, and the retry budget.
    pub routing: Arc<Routing>,
    pub max_payload_bytes: usize,
    pub default_deadline: Duration,
    pub max_in_flight: usize,
    /// Cluster-wide idempotency; without it, de-duplication is per node.
    pub idempotency: Option<Arc<dyn IdempotencyStore>>,
}

/// Somebody waiting for a de-duplicated answer: where to send it, and in which form.
struct Waiter {
    reply_to: String,
    stream: bool,
}

pub struct RouterState {
    ctx: Arc<QueryContext>,
    routing: Arc<Routing>,
    max_payload_bytes: usize,
    default_deadline: Duration,
    max_in_flight: usize,
    in_flight: usize,
    dedup: DedupTable<Waiter, Arc<Answer>>,
    idempotency: Option<Arc<dyn IdempotencyStore>>,
    health: RouterHealth,
}

pub enum RouterMsg {
    /// A client's query, straight from the bus.
    Query(Message),
    /// A query task finished; `key` is its de-duplication key, when it had one.
    Completed {
        key: Option<String>,
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
        Ok(RouterState {
            ctx: Arc::new(QueryContext { node: args.node, bus: args.bus, subjects: args.subjects }),
            routing: args.routing,
            max_payload_bytes: args.max_payload_bytes,
            default_deadline: args.default_deadline,
            max_in_flight: args.max_in_flight,
            in_flight: 0,
            dedup: DedupTable::new(),
            idempotency: args.idempotency,
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
            RouterMsg::Query(message) => state.admit(myself, message).await,
            RouterMsg::Completed { key, answer } => {
                state.in_flight = state.in_flight.saturating_sub(1);
                match answer.as_ref() {
                    Ok(_) => state.health.answered += 1,
                    Err(_) => state.health.errors += 1,
                }
                if let Some(key) = key {
                    for waiter in state.dedup.complete(&key, answer.clone()) {
                        state.publish(waiter.reply_to, render(&answer, waiter.stream.then(StreamEnd::default))).await;
                    }
                }
            }
            RouterMsg::Health(port) => {
                let mut health = state.health.clone();
                health.in_flight = state.in_flight as u64;
                let _ = port.send(health);
            }
        }
        Ok(())
    }
}

impl RouterState {
    async fn publish(&self, subject: String, payload: Bytes) {
        if let Err(error) = self.ctx.bus.publish(Message::new(subject, payload)).await {
            warn!(%error, "cannot publish reply");
        }
    }

    async fn reject(&mut self, reply_to: String, error: ErrorReply) {
        self.health.rejected += 1;
        debug!(code = %error.error.code, "query rejected");
        self.publish(reply_to, render(&Err(error), None)).await;
    }

    /// Validates a query and, when it is admitted, starts its task.
    async fn admit(&mut self, myself: ActorRef<RouterMsg>, message: Message) {
        let Some(reply_to) = message.reply else {
            self.health.rejected += 1;
            warn!(subject = %message.subject, "query without a reply subject dropped");
            return;
        };
        if message.payload.len() > self.max_payload_bytes {
            let text =
                format!("payload of {} bytes exceeds the limit of {}", message.payload.len(), self.max_payload_bytes);
            return self.reject(reply_to, ErrorReply::new(ErrorType::InvalidRequest, "payload_too_large", text)).await;
        }
        let route = self.ctx.subjects.route_of(&message.subject).unwrap_or_default();
        let Some(plan) = self.routing.route(route) else {
            let text = format!("unknown route `{route}`");
            let error = ErrorReply::new(ErrorType::InvalidRequest, "unknown_route", text).with_field("route");
            return self.reject(reply_to, error).await;
        };
        let request: QueryRequest = match serde_json::from_slice(&message.payload) {
            Ok(request) => request,
            Err(e) => return self.reject(reply_to, ErrorReply::from_json_error(&e)).await,
        };
        if let Err(error) = request.validate() {
            return self.reject(reply_to, error.with_id(request.id.clone())).await;
        }
        if self.in_flight >= self.max_in_flight {
            let error = ErrorReply::new(ErrorType::Overloaded, "overloaded", "too many queries in flight")
                .with_retry_after_ms(100)
                .with_id(request.id.clone());
            return self.reject(reply_to, error).await;
        }

        let now = Instant::now();
        let deadline = now + request.deadline_ms.map_or(self.default_deadline, Duration::from_millis);
        let key = request.id.as_ref().map(|id| format!("{route}/{id}"));
        if let Some(key) = &key {
            let waiter = Waiter { reply_to: reply_to.clone(), stream: request.stream };
            match self.dedup.claim(key, waiter, now, deadline) {
                Seen::New => {}
                Seen::Joined => {
                    self.health.duplicates += 1;
                    return;
                }
                Seen::Done(answer) => {
                    self.health.duplicates += 1;
                    return self.publish(reply_to, render(&answer, request.stream.then(StreamEnd::default))).await;
                }
            }
        }

        self.in_flight += 1;
        let ctx = self.ctx.clone();
        let store = self.idempotency.clone();
        let routing = self.routing.clone();
        let span =
            info_span!("query", route = %route, id = request.id.as_deref().unwrap_or(""), stream = request.stream);
        tokio::spawn(
            async move {
                let run = || run_query(&ctx, &routing, &plan, &request, &reply_to, deadline);
                let answer = match (&store, &key) {
                    (Some(store), Some(key)) => answer_once(store.as_ref(), key, &ctx.node, deadline, run).await,
                    _ => run().await,
                };
                if let Err(error) = ctx
                    .bus
                    .publish(Message::new(reply_to, render(&answer, request.stream.then(StreamEnd::default))))
                    .await
                {
                    warn!(%error, "cannot publish reply");
                }
                let _ = myself.cast(RouterMsg::Completed { key, answer: Arc::new(answer) });
            }
            .instrument(span),
        );
    }
}
