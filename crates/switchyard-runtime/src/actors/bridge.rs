//! `BusBridge`: turns bus subscriptions into actor messages.
//!
//! One pump task per subscription: client queries (queue group `switchyard-routers`) go to the router's intake
//! ([`Intake::accept`]: cheap refusals inline, parsing in a task per query, then the router actor), and their
//! clients' cancellations (every router) to the queries they name ([`crate::abandon`]);
//! provider calls (one queue group per provider) to the provider actor currently in the directory, admin
//! requests to the admin actor. Decoding of node-to-node calls happens here, so a malformed call is answered
//! with a typed failure and never reaches an actor. Draining stops a subscription from taking new messages while
//! the ones already delivered are still handed over, which is how SIGTERM stops a node without losing queries.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, warn};
use uuid::Uuid;

use switchyard_bus::{Bus, Message, Subscription};
use switchyard_core::FailureClass;
use switchyard_protocol::client::{ErrorReply, ErrorType};
use switchyard_protocol::internal::{CascadeCall, ProviderCall, ProviderReply, Refusal, WireFailure};
use switchyard_protocol::subjects::Subjects;
use switchyard_protocol::{Bincode, Codec, Json};

use super::admin::AdminMsg;
use super::cascade::CoordinatorMsg;
use super::provider::{ProviderMsg, ReplyTo, publish_reply};
use super::provider_supervisor::ProviderDirectory;
use super::router::Intake;
use crate::query::render;

pub struct BusBridge;

pub struct BridgeArgs {
    /// This node's name: provider calls may be addressed to it directly.
    pub node: String,
    pub bus: Arc<dyn Bus>,
    pub subjects: Subjects,
    /// The router's admission half, on a node with the router role.
    pub intake: Option<Arc<Intake>>,
    /// Providers hosted here, and where their actors are.
    pub providers: Vec<String>,
    pub directory: ProviderDirectory,
    pub admin: ActorRef<AdminMsg>,
    /// Whether this node executes operators' breaker commands (it keeps cluster breakers).
    pub breaker_commands: bool,
    /// On a node with the cascade role: its coordinator and the cascades it runs.
    pub cascades: Option<(ActorRef<CoordinatorMsg>, Vec<String>)>,
}

pub struct BridgeState {
    query_drain: CancellationToken,
    provider_drain: CancellationToken,
    // Pumps are aborted when the state is dropped, so a killed bridge (a crash) stops taking messages at once.
    queries: Option<AbortOnDropHandle<()>>,
    calls: Vec<AbortOnDropHandle<()>>,
    cancels: Vec<AbortOnDropHandle<()>>,
    admin: Option<AbortOnDropHandle<()>>,
}

pub enum BridgeMsg {
    /// Stop taking new queries; answers once the query subscription delivered its last message.
    DrainQueries(RpcReplyPort<()>),
    /// Stop taking new provider calls; answers once every call subscription is drained.
    DrainProviders(RpcReplyPort<()>),
}

impl Actor for BusBridge {
    type Msg = BridgeMsg;
    type State = BridgeState;
    type Arguments = BridgeArgs;

    async fn pre_start(&self, _: ActorRef<BridgeMsg>, args: BridgeArgs) -> Result<BridgeState, ActorProcessingErr> {
        let query_drain = CancellationToken::new();
        let provider_drain = CancellationToken::new();
        let mut calls = Vec::new();
        let mut cancels = Vec::new();
        for provider in &args.providers {
            let sub = args
                .bus
                .queue_subscribe(&args.subjects.provider_call(provider), &args.subjects.provider_queue(provider))
                .await?;
            // The same calls, addressed to this node: a router sends here a call another node refused.
            let direct = args.bus.subscribe(&args.subjects.provider_node_call(provider, &args.node)).await?;
            for sub in [sub, direct] {
                let (bus, directory) = (args.bus.clone(), args.directory.clone());
                let (name, node) = (provider.clone(), args.node.clone());
                calls.push(pump(sub, provider_drain.clone(), move |message| {
                    let (bus, directory, name, node) = (bus.clone(), directory.clone(), name.clone(), node.clone());
                    async move { forward_call(bus.as_ref(), &directory, &name, &node, message).await }
                }));
            }
            // Cancellations reach every node hosting the provider; the one running the call aborts it.
            let sub = args.bus.subscribe(&args.subjects.provider_cancel(provider)).await?;
            let (directory, name) = (args.directory.clone(), provider.clone());
            cancels.push(pump(sub, CancellationToken::new(), move |message| {
                if let (Ok(call_id), Some(actor)) = (Uuid::from_slice(&message.payload), directory.get(&name)) {
                    let _ = actor.cast(ProviderMsg::Cancel { call_id });
                }
                async {}
            }));
        }
        // Cascade runs (one queue group per cascade) drain with the provider calls: both are work for others.
        if let Some((coordinator, names)) = &args.cascades {
            for name in names {
                let sub = args
                    .bus
                    .queue_subscribe(&args.subjects.cascade_run(name), &args.subjects.cascade_queue(name))
                    .await?;
                let (bus, coordinator, name) = (args.bus.clone(), coordinator.clone(), name.clone());
                calls.push(pump(sub, provider_drain.clone(), move |message| {
                    let (bus, coordinator, name) = (bus.clone(), coordinator.clone(), name.clone());
                    async move { forward_run(bus.as_ref(), &coordinator, name, message).await }
                }));
            }
        }
        let queries = match args.intake {
            Some(intake) => {
                // Cancellations of keyless queries reach every router; the one running the query stops it. Taken
                // while draining too: a query in flight can still be abandoned.
                let sub = args.bus.subscribe(&args.subjects.query_cancel()).await?;
                let abandons = intake.abandons.clone();
                cancels.push(pump(sub, CancellationToken::new(), move |message| {
                    // `abandon` ignores oversized tokens.
                    if let Ok(token) = std::str::from_utf8(&message.payload)
                        && abandons.abandon(token)
                    {
                        debug!("query abandoned by its client");
                    }
                    async {}
                }));
                let sub =
                    args.bus.queue_subscribe(&args.subjects.query_wildcard(), &args.subjects.router_queue()).await?;
                Some(pump(sub, query_drain.clone(), move |message| {
                    let intake = intake.clone();
                    async move { intake.accept(message).await }
                }))
            }
            None => None,
        };
        let admin_sub = args.bus.subscribe(&args.subjects.admin_wildcard()).await?;
        let admin_actor = args.admin.clone();
        let admin = Some(pump(admin_sub, CancellationToken::new(), move |message| {
            let _ = admin_actor.cast(AdminMsg::Request(message));
            async {}
        }));
        // The NATS service API: `$SRV.PING|INFO|STATS[.switchyard[.<node>]]`.
        // Not essential: a server whose permissions leave it out still gets a working node.
        match args.bus.subscribe("$SRV.>").await {
            Ok(service_sub) => {
                let admin_actor = args.admin.clone();
                cancels.push(pump(service_sub, CancellationToken::new(), move |message| {
                    let _ = admin_actor.cast(AdminMsg::Request(message));
                    async {}
                }));
            }
            Err(error) => warn!(%error, "cannot answer the NATS service API ($SRV)"),
        }
        if args.breaker_commands {
            let subjects = &args.subjects;
            let sub =
                args.bus.queue_subscribe(&subjects.admin_breaker_wildcard(), &subjects.admin_breaker_queue()).await?;
            let admin_actor = args.admin;
            // A draining node stops executing commands with its provider calls.
            calls.push(pump(sub, provider_drain.clone(), move |message| {
                let _ = admin_actor.cast(AdminMsg::Command(message));
                async {}
            }));
        }
        Ok(BridgeState { query_drain, provider_drain, queries, calls, cancels, admin })
    }

    async fn handle(
        &self,
        _: ActorRef<BridgeMsg>,
        message: BridgeMsg,
        state: &mut BridgeState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            BridgeMsg::DrainQueries(port) => {
                state.query_drain.cancel();
                let task = state.queries.take();
                // Waiting for the pump would block this mailbox; the pump ends by itself once drained.
                tokio::spawn(async move {
                    if let Some(task) = task {
                        let _ = task.await;
                    }
                    let _ = port.send(());
                });
            }
            BridgeMsg::DrainProviders(port) => {
                state.provider_drain.cancel();
                let tasks = std::mem::take(&mut state.calls);
                tokio::spawn(async move {
                    futures::future::join_all(tasks).await;
                    let _ = port.send(());
                });
            }
        }
        Ok(())
    }

    async fn post_stop(&self, _: ActorRef<BridgeMsg>, state: &mut BridgeState) -> Result<(), ActorProcessingErr> {
        let tasks = state.queries.iter().chain(&state.calls).chain(&state.cancels).chain(&state.admin);
        for task in tasks {
            task.abort();
        }
        Ok(())
    }
}

/// Moves every message of `sub` into `deliver`; on `drain`, stops new deliveries and finishes what was delivered.
fn pump<F, Fut>(mut sub: Subscription, drain: CancellationToken, deliver: F) -> AbortOnDropHandle<()>
where
    F: Fn(Message) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let task: JoinHandle<()> = tokio::spawn(async move {
        let mut draining = false;
        loop {
            tokio::select! {
                biased;
                _ = drain.cancelled(), if !draining => {
                    draining = true;
                    if let Err(error) = sub.drain().await {
                        warn!(%error, "cannot drain subscription");
                        return;
                    }
                }
                message = sub.next() => match message {
                    Some(message) => deliver(message).await,
                    None => return,
                },
            }
        }
    });
    AbortOnDropHandle::new(task)
}

/// Decodes a cascade run and hands it to the coordinator, or answers it with a typed error.
async fn forward_run(bus: &dyn Bus, coordinator: &ActorRef<CoordinatorMsg>, name: String, message: Message) {
    let Some(reply_to) = message.reply else {
        debug!(cascade = %name, "cascade call without a reply subject dropped");
        return;
    };
    let refusal = match Json::decode::<CascadeCall>(&message.payload) {
        Ok(call) => {
            match coordinator.cast(CoordinatorMsg::Run { name, call: Box::new(call), reply_to: reply_to.clone() }) {
                Ok(()) => return,
                Err(_) => ErrorReply::new(ErrorType::Overloaded, "overloaded", "the cascade coordinator is stopping")
                    .with_retry_after_ms(100),
            }
        }
        Err(error) => ErrorReply::new(ErrorType::UpstreamError, "bad_cascade_call", error.to_string()),
    };
    if let Err(error) = bus.publish(Message::new(reply_to, render(&Err(refusal), None))).await {
        warn!(%error, "cannot answer a cascade call");
    }
}

/// Decodes a provider call and hands it to the provider's actor, or refuses it on the actor's behalf.
async fn forward_call(bus: &dyn Bus, directory: &ProviderDirectory, provider: &str, node: &str, message: Message) {
    let Some(reply_to) = message.reply else {
        debug!(provider, "provider call without a reply subject dropped");
        return;
    };
    let refusal = match Bincode::decode::<ProviderCall>(&message.payload) {
        Ok(call) => match directory.get(provider) {
            Some(actor) => {
                match actor.cast(ProviderMsg::Call {
                    call,
                    reply_to: ReplyTo::Subject(reply_to.clone()),
                    trace: message.headers,
                }) {
                    Ok(()) => return,
                    Err(_) => ProviderReply::Refused { reason: Refusal::Restarting },
                }
            }
            None => ProviderReply::Refused { reason: Refusal::Restarting },
        },
        // Most likely a router of another version: retryable, so it falls back instead of failing the query.
        Err(error) => ProviderReply::Failed(WireFailure {
            class: FailureClass::Retryable.into(),
            status: None,
            message: error.to_string(),
            latency_us: 0,
            chunks: 0,
        }),
    };
    publish_reply(bus, ReplyTo::Subject(reply_to), node, refusal).await;
}
