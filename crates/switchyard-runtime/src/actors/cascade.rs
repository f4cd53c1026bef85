//! `CascadeCoordinator`: runs the node's cascades, one task per query, and keeps their counters.
//!
//! A thin shell around [`CascadeEngine`]: a run request becomes a task (the actor never awaits a stage); the
//! task sends its router heartbeats while it runs and publishes the answer. Once a second the decisions counted
//! since the last flush go to the shared store (one command per cascade stage with decisions), and the cluster's
//! escalation rate of every stage is read back and judged, so every coordinator sees the same rate and health.
//! Store calls run in tasks too; a slow store never blocks this mailbox.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::JoinSet;
use tracing::{debug, warn};

use switchyard_bus::{Bus, Message};
use switchyard_cascade::counters::StageCounts;
use switchyard_protocol::internal::CascadeCall;
use switchyard_protocol::subjects::Subjects;
use switchyard_state::{BreakerStore, EscalationCounts};

use crate::cascade::CascadeEngine;
use crate::liveness::{Liveness, heartbeats};
use crate::query::{QueryContext, render_within};
use crate::routing::Routing;
use crate::telemetry::{EscalationLabels, Metrics};

/// How often decisions are flushed to the store and the cluster's rates read back.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

pub struct CascadeCoordinator;

pub struct CoordinatorArgs {
    pub node: String,
    pub bus: Arc<dyn Bus>,
    pub subjects: Subjects,
    pub engine: Arc<CascadeEngine>,
    pub routing: Arc<Routing>,
    /// Where escalation counters are shared (Redis in a cluster, memory on a lone node or in the demo).
    pub store: Arc<dyn BreakerStore>,
    /// Heartbeats of the stage calls this node waits for.
    pub keepalive: Option<Duration>,
}

pub struct CoordinatorState {
    ctx: Arc<QueryContext>,
    engine: Arc<CascadeEngine>,
    routing: Arc<Routing>,
    store: Arc<dyn BreakerStore>,
    tasks: JoinSet<()>,
    flushing: bool,
}

pub enum CoordinatorMsg {
    /// A run request of cascade `name`, decoded by the bridge.
    Run {
        name: String,
        call: Box<CascadeCall>,
        reply_to: String,
    },
    Tick,
    Flushed,
}

impl Actor for CascadeCoordinator {
    type Msg = CoordinatorMsg;
    type State = CoordinatorState;
    type Arguments = CoordinatorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<CoordinatorMsg>,
        args: CoordinatorArgs,
    ) -> Result<CoordinatorState, ActorProcessingErr> {
        let mut tasks = JoinSet::new();
        let liveness = match args.keepalive {
            Some(every) => {
                let inbox = args.bus.new_inbox();
                let beats = args.bus.subscribe(&inbox).await?;
                let liveness = Arc::new(Liveness::new(inbox, every));
                tasks.spawn(liveness.clone().listen(beats));
                Some(liveness)
            }
            None => None,
        };
        let me = myself.clone();
        tasks.spawn(async move {
            let mut ticks = tokio::time::interval(FLUSH_EVERY);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if me.cast(CoordinatorMsg::Tick).is_err() {
                    return;
                }
            }
        });
        let ctx = QueryContext { node: args.node, bus: args.bus, subjects: args.subjects, liveness, local: None };
        Ok(CoordinatorState {
            ctx: Arc::new(ctx),
            engine: args.engine,
            routing: args.routing,
            store: args.store,
            tasks,
            flushing: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<CoordinatorMsg>,
        message: CoordinatorMsg,
        state: &mut CoordinatorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            CoordinatorMsg::Run { name, call, reply_to } => {
                let (ctx, engine, routing) = (state.ctx.clone(), state.engine.clone(), state.routing.clone());
                state.tasks.spawn(async move {
                    let CascadeCall { call_id, route, request, budget_ms, keepalive } = *call;
                    let _alive = keepalive.map(|k| heartbeats(ctx.bus.clone(), k, call_id, ctx.node.clone()));
                    let deadline = Instant::now() + Duration::from_millis(budget_ms);
                    let answer = engine.run(&ctx, &routing, &name, &route, &request, deadline).await;
                    if let Err(error) = ctx
                        .bus
                        .publish(Message::new(reply_to, render_within(&answer, None, ctx.bus.max_payload())))
                        .await
                    {
                        warn!(%error, cascade = %name, "cannot publish a cascade's answer");
                    }
                });
                // Finished runs are reaped here, so the set holds only what runs.
                while state.tasks.try_join_next().is_some() {}
            }
            CoordinatorMsg::Tick if !state.flushing => {
                state.flushing = true;
                let (engine, store, me) = (state.engine.clone(), state.store.clone(), myself.clone());
                let telemetry = state.routing.telemetry().clone();
                tokio::spawn(async move {
                    flush_and_read(&engine, store.as_ref(), &telemetry.metrics).await;
                    let _ = me.cast(CoordinatorMsg::Flushed);
                });
            }
            CoordinatorMsg::Tick => {}
            CoordinatorMsg::Flushed => state.flushing = false,
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _: ActorRef<CoordinatorMsg>,
        state: &mut CoordinatorState,
    ) -> Result<(), ActorProcessingErr> {
        state.tasks.abort_all();
        Ok(())
    }
}

/// Sends every cascade's new decisions to the store (one command per stage with decisions), then reads the
/// cluster's counts of every escalating stage back into the engine.
async fn flush_and_read(engine: &CascadeEngine, store: &dyn BreakerStore, metrics: &Metrics) {
    for unit in engine.units.values() {
        let counts = unit.take_counts();
        let mut failed = Vec::new();
        for (stage, c) in counts {
            let batch = EscalationCounts { total: c.total(), escalated: c.escalated };
            if let Err(error) = store.add_escalations(unit.name(), stage as u32, batch).await {
                debug!(%error, cascade = unit.name(), "cannot flush escalation counters; kept for the next flush");
                metrics.redis_errors.inc();
                failed.push((stage, c));
            } else {
                // Counted once flushed: a batch kept for the next flush is not counted twice.
                let labels = EscalationLabels { cascade: unit.name().to_owned(), stage: stage.to_string() };
                metrics.escalations.get_or_create(&labels).inc_by(c.escalated);
            }
        }
        unit.restore_counts(&failed);
        for stage in 0..unit.cascade.len().saturating_sub(1) {
            match store.escalation_rate(unit.name(), stage as u32, unit.window).await {
                Ok(c) => {
                    let counts = StageCounts { direct: c.total.saturating_sub(c.escalated), escalated: c.escalated };
                    unit.observe(stage, counts);
                }
                Err(error) => debug!(%error, cascade = unit.name(), "cannot read the escalation rate"),
            }
        }
    }
}
