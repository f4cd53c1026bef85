//! Running queries through cascades: the coordinator's side of the strategy.
//!
//! A route may be served by a cascade (`[[routes]] cascade = "math"`). Its router sends the client's query to
//! the cascade's coordinators (`<ns>.v1.cascade.<name>.run`, a queue group, [`CascadeCall`]) and waits for the
//! answer with the same heartbeat watch as a provider call, so a coordinator that dies mid-run is replaced by
//! another. A coordinator runs the decision code of `switchyard_cascade` (the very code `switchyard eval
//! cascade` replays) and performs its effects:
//!
//! - each stage is called through the availability layer ([`run_query`]: retries, a group's balancing and
//!   fallbacks, both breakers, hedging) with the stage's samples in parallel and logprobs when its estimator needs
//!   them; a stage whose providers are all tripped answers `no_provider_available` at once and is skipped, so a
//!   cascade never waits on an open breaker;
//! - the estimator's follow-up (a self-evaluation prompt, a verifier score from the model loaded at start or an
//!   external endpoint) is obtained, then the stage stops or escalates;
//! - the answer carries one trace record per stage and every attempt of every stage.
//!
//! Every decision is counted in a local batch; the coordinator actor flushes the batches to the shared store once a
//! second (one command per cascade stage with decisions, never one per query) and reads the cluster's escalation
//! rate back, so every node judges the same rate ([`CascadeUnit::observe`]).

// An answer is a reply either way: both sides are large and both are moved exactly once, to the client.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tracing::{info, warn};

use switchyard_cascade::counters::{Buckets, CounterBatch, StageCounts};
use switchyard_cascade::health::{CostReport, EscalationHealth, HealthMonitor, LatencyRecorder, LatencySplit};
use switchyard_cascade::{
    Cascade, CascadeOutcome, FollowUp, FollowUpResult, Next, Sample, ScoreRequest, ScoreResponse, Scorer, SkipReason,
    StageResult, VerifierModel, VerifierSource, estimate, follow_up,
};
use switchyard_core::{HedgePolicy, RetryPolicy};
use switchyard_protocol::ChatMessage;
use switchyard_protocol::Role as ChatRole;
use switchyard_protocol::client::{Attempt, CascadeRunInfo, ErrorReply, ErrorType, QueryReply, QueryRequest, Trace};

use crate::config::CascadeSection;
use crate::query::{Answer, QueryContext, run_query};
use crate::routing::{RoutePlan, Routing};

/// How many answer latencies (direct and escalated apart) the tail figures are computed over.
const LATENCY_SAMPLES: usize = 4096;

/// Why a cascade cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum CascadeSetupError {
    #[error("cascade `{cascade}` stage {stage}: cannot load the verifier `{path}`: {reason}")]
    Verifier { cascade: String, stage: usize, path: String, reason: String },
    #[error("cascade `{cascade}`: {reason}")]
    Invalid { cascade: String, reason: String },
}

/// One configured cascade on a coordinator node: its decision code, its stages' routes and verifiers, and what
/// it has seen.
pub struct CascadeUnit {
    pub cascade: Cascade,
    stage_plans: Vec<Arc<RoutePlan>>,
    verifiers: HashMap<usize, Arc<VerifierModel>>,
    /// The window the cluster's escalation rate is read over.
    pub window: Duration,
    stats: Mutex<UnitStats>,
}

/// What a coordinator measured of one cascade, and the cluster's rate it last read.
struct UnitStats {
    /// Decisions not yet flushed to the shared store.
    batch: CounterBatch,
    latency: LatencyRecorder,
    /// Per stage: the cost of its calls summed, and how many calls.
    stage_costs: Vec<(f64, u64)>,
    /// Cost of every answered query, summed, and how many.
    total_cost: (f64, u64),
    /// Per stage but the last: the cluster's decisions over the window, and their health.
    cluster: Vec<StageCounts>,
    monitors: Vec<HealthMonitor>,
}

/// The state of one cascade, as the admin topic shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CascadeStatus {
    pub name: String,
    pub node: String,
    pub window_s: u64,
    pub stages: Vec<StageStatus>,
    /// Expected cost `c_w + P(esc) c_s` (generalised to N stages) next to the measured and the strong-only cost,
    /// and whether the observed rate broke even.
    pub cost: CostReport,
    /// Latency of answers the first stage gave against escalated ones (this node's).
    pub latency_ms: LatencySplit,
}

/// One stage of a [`CascadeStatus`].
#[derive(Debug, Clone, Serialize)]
pub struct StageStatus {
    pub stage: usize,
    pub target: String,
    /// The cluster's decisions at this stage over the window (none for the last stage, which never escalates).
    pub direct: u64,
    pub escalated: u64,
    pub escalation_rate: Option<f64>,
    pub health: Option<EscalationHealth>,
    /// Mean measured cost of one call of this stage (this node's), or the configured hint.
    pub cost_usd: Option<f64>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl CascadeUnit {
    /// Builds a cascade of a validated configuration; loads its local verifiers (`base` resolves relative paths).
    pub fn new(section: &CascadeSection, base: &Path) -> Result<CascadeUnit, CascadeSetupError> {
        let invalid = |reason: String| CascadeSetupError::Invalid { cascade: section.name.clone(), reason };
        let cascade = Cascade::new(section.to_config()).map_err(|e| invalid(e.to_string()))?;
        let stage_plans = section
            .stages
            .iter()
            .enumerate()
            .map(|(i, stage)| {
                Arc::new(RoutePlan::single(
                    format!("{}.{i}", section.name),
                    stage.target.clone(),
                    RetryPolicy::default(),
                    HedgePolicy::default(),
                ))
            })
            .collect();
        let mut verifiers = HashMap::new();
        for (i, stage) in section.stages.iter().enumerate() {
            if let Some(switchyard_cascade::EstimatorConfig::Verifier {
                source: VerifierSource::Local { path }, ..
            }) = &stage.estimator
            {
                let resolved = base.join(path);
                let model = VerifierModel::load(&resolved).map_err(|e| CascadeSetupError::Verifier {
                    cascade: section.name.clone(),
                    stage: i,
                    path: resolved.display().to_string(),
                    reason: e.to_string(),
                })?;
                verifiers.insert(i, Arc::new(model));
            }
        }
        let buckets = Buckets::new(10).map_err(|e| invalid(e.to_string()))?;
        let escalating = section.stages.len().saturating_sub(1);
        let monitors = (0..escalating)
            .map(|_| HealthMonitor::new(section.health))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(e.to_string()))?;
        let stats = UnitStats {
            batch: CounterBatch::new(section.name.clone(), buckets),
            latency: LatencyRecorder::new(LATENCY_SAMPLES),
            stage_costs: vec![(0.0, 0); section.stages.len()],
            total_cost: (0.0, 0),
            cluster: vec![StageCounts::default(); escalating],
            monitors,
        };
        Ok(CascadeUnit {
            cascade,
            stage_plans,
            verifiers,
            window: Duration::from_secs(section.escalation_window_s),
            stats: Mutex::new(stats),
        })
    }

    pub fn name(&self) -> &str {
        self.cascade.name()
    }

    /// The decisions counted since the last flush, per stage (their buckets are the store's concern).
    pub fn take_counts(&self) -> Vec<(usize, StageCounts)> {
        let entries = lock(&self.stats).batch.take();
        let mut per_stage: Vec<(usize, StageCounts)> = Vec::new();
        for entry in entries {
            match per_stage.iter_mut().find(|(stage, _)| *stage == entry.stage) {
                Some((_, counts)) => counts.add(entry.counts),
                None => per_stage.push((entry.stage, entry.counts)),
            }
        }
        per_stage
    }

    /// Puts back counts whose flush failed, so the next flush sends them.
    pub fn restore_counts(&self, counts: &[(usize, StageCounts)]) {
        let mut stats = lock(&self.stats);
        let now = now_ms();
        for (stage, c) in counts {
            for _ in 0..c.direct {
                stats.batch.record(now, *stage, false);
            }
            for _ in 0..c.escalated {
                stats.batch.record(now, *stage, true);
            }
        }
    }

    /// Takes in the cluster's decisions at `stage` over the window; logs a change of the stage's health.
    pub fn observe(&self, stage: usize, counts: StageCounts) {
        let mut stats = lock(&self.stats);
        if let Some(slot) = stats.cluster.get_mut(stage) {
            *slot = counts;
        }
        let Some(monitor) = stats.monitors.get_mut(stage) else { return };
        if let Some(change) = monitor.observe(counts) {
            let (cascade, rate, decisions) = (self.name(), change.rate.unwrap_or(0.0), change.decisions);
            let (from, to) = (format!("{:?}", change.from), format!("{:?}", change.to));
            match change.to {
                EscalationHealth::Act | EscalationHealth::Warn => {
                    warn!(cascade, stage, %from, %to, rate, decisions, "cascade escalation health changed")
                }
                _ => info!(cascade, stage, %from, %to, rate, decisions, "cascade escalation health changed"),
            }
        }
    }

    /// The cascade's state for the admin topic.
    pub fn status(&self, node: &str) -> CascadeStatus {
        let stats = lock(&self.stats);
        let config = self.cascade.config();
        let stage_cost = |i: usize| {
            let (sum, n) = stats.stage_costs[i];
            if n > 0 { Some(sum / n as f64) } else { config.stages[i].cost_hint_usd }
        };
        let stages: Vec<StageStatus> = config
            .stages
            .iter()
            .enumerate()
            .map(|(i, stage)| {
                let counts = stats.cluster.get(i).copied();
                StageStatus {
                    stage: i,
                    target: stage.target.clone(),
                    direct: counts.map_or(0, |c| c.direct),
                    escalated: counts.map_or(0, |c| c.escalated),
                    escalation_rate: counts.and_then(|c| c.rate()),
                    health: stats.monitors.get(i).map(HealthMonitor::state),
                    cost_usd: stage_cost(i),
                }
            })
            .collect();
        let costs: Vec<f64> = (0..stages.len()).map(|i| stage_cost(i).unwrap_or(0.0)).collect();
        let rates: Vec<f64> = stages.iter().filter_map(|s| s.escalation_rate).collect();
        let measured = (stats.total_cost.1 > 0).then(|| stats.total_cost.0 / stats.total_cost.1 as f64);
        CascadeStatus {
            name: self.name().to_owned(),
            node: node.to_owned(),
            window_s: self.window.as_secs(),
            stages,
            cost: CostReport::new(&costs, &rates, measured),
            latency_ms: stats.latency.split(),
        }
    }

    fn record(&self, outcome: &CascadeOutcome, latency: Duration) {
        let mut stats = lock(&self.stats);
        stats.batch.record_outcome(now_ms(), outcome);
        stats.latency.record(latency.as_millis() as u64, outcome.escalated());
        for stage in &outcome.trace {
            if let (Some(cost), Some(slot)) = (stage.cost_usd, stats.stage_costs.get_mut(stage.stage)) {
                slot.0 += cost;
                slot.1 += 1;
            }
        }
        if outcome.answer.is_some() {
            stats.total_cost.0 += outcome.cost_usd();
            stats.total_cost.1 += 1;
        }
    }
}

/// The cascades a coordinator node runs, with what their stages need.
pub struct CascadeEngine {
    pub units: HashMap<String, Arc<CascadeUnit>>,
    /// For external verifier endpoints.
    http: reqwest::Client,
}

impl CascadeEngine {
    pub fn new(sections: &[CascadeSection], base: &Path) -> Result<CascadeEngine, CascadeSetupError> {
        let units = sections
            .iter()
            .map(|s| Ok((s.name.clone(), Arc::new(CascadeUnit::new(s, base)?))))
            .collect::<Result<_, CascadeSetupError>>()?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| CascadeSetupError::Invalid { cascade: String::new(), reason: e.to_string() })?;
        Ok(CascadeEngine { units, http })
    }

    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.units.keys().cloned().collect();
        names.sort();
        names
    }

    /// Runs `request` (asked on `route`) through cascade `name` within `deadline`.
    pub async fn run(
        &self,
        ctx: &QueryContext,
        routing: &Routing,
        name: &str,
        route: &str,
        request: &QueryRequest,
        deadline: Instant,
    ) -> Answer {
        let Some(unit) = self.units.get(name) else {
            let message = format!("this node runs no cascade `{name}`");
            return Err(
                ErrorReply::new(ErrorType::NoProviderAvailable, "unknown_cascade", message).with_id(request.id.clone())
            );
        };
        let started = Instant::now();
        let mut run = match unit.cascade.start(&request.cascade.unwrap_or_default()) {
            Ok(run) => run,
            Err(error) => {
                return Err(ErrorReply::new(ErrorType::InvalidRequest, "invalid_field", error.to_string())
                    .with_field("cascade")
                    .with_id(request.id.clone()));
            }
        };
        let query = last_user_text(request);
        let mut trace = Trace { node: ctx.node.clone(), route: route.to_owned(), ..Trace::default() };
        let mut replies: HashMap<usize, Vec<QueryReply>> = HashMap::new();
        while let Next::Call(call) = run.next() {
            let stage_started = Instant::now();
            let plan = &unit.stage_plans[call.stage];
            let mut stage_request = request.clone();
            stage_request.id = None;
            stage_request.stream = false;
            stage_request.cascade = None;
            stage_request.logprobs |= call.logprobs;
            if let Some(temperature) = call.temperature {
                stage_request.temperature = Some(temperature as f32);
            }
            let samples = call.samples.max(1) as usize;
            let calls = (0..samples).map(|_| run_query(ctx, routing, plan, &stage_request, "", deadline));
            let answers = futures::future::join_all(calls).await;
            let mut answered = Vec::new();
            let mut failures = Vec::new();
            for answer in answers {
                match answer {
                    Ok(mut reply) => {
                        trace.attempts.append(&mut reply.trace.attempts);
                        answered.push(reply);
                    }
                    Err(mut error) => {
                        if let Some(t) = error.trace.as_mut() {
                            trace.attempts.append(&mut t.attempts);
                        }
                        failures.push(error);
                    }
                }
            }
            if answered.is_empty() {
                let all_tripped =
                    !failures.is_empty() && failures.iter().all(|e| e.error.kind == ErrorType::NoProviderAvailable);
                let reason = if all_tripped {
                    SkipReason::AllTripped
                } else {
                    let detail = failures.first().map_or_else(String::new, |e| e.error.message.clone());
                    SkipReason::CallFailed { detail }
                };
                if let Err(error) = run.skip(reason) {
                    warn!(cascade = unit.name(), %error, "cascade run refused a skip");
                    break;
                }
                continue;
            }
            let samples: Vec<Sample> =
                answered.iter().map(|r| Sample { text: r.content.clone(), logprobs: r.logprobs.clone() }).collect();
            let mut cost: f64 = answered.iter().map(|r| r.cost_usd).sum();
            let estimate = match call.estimator {
                None => None,
                Some(config) => {
                    let follow = follow_up(config, &query, &samples);
                    let (result, extra_cost, mut attempts) = self
                        .follow_up(ctx, routing, unit, call.stage, call.target, follow, &stage_request, deadline)
                        .await;
                    cost += extra_cost;
                    trace.attempts.append(&mut attempts);
                    Some(estimate(config, &samples, &result))
                }
            };
            let latency_ms = stage_started.elapsed().as_millis() as u64;
            let provider = answered
                [estimate.as_ref().and_then(|e| e.answer_index).unwrap_or(0).min(answered.len() - 1)]
            .provider
            .clone();
            let result = StageResult::from_samples(provider, &samples, estimate, Some(cost), latency_ms);
            replies.insert(call.stage, answered);
            if let Err(error) = run.record(result) {
                warn!(cascade = unit.name(), %error, "cascade run refused a stage result");
                break;
            }
        }
        let applied = *run.applied();
        let outcome = run.finish();
        unit.record(&outcome, started.elapsed());
        trace.stages = outcome.trace.iter().filter_map(|s| serde_json::to_value(s).ok()).collect();
        trace.cascade = Some(Box::new(CascadeRunInfo {
            name: unit.name().to_owned(),
            node: ctx.node.clone(),
            threshold: applied.threshold.map(|a| a.used),
            max_stage: applied.max_stage.map(|a| a.used),
        }));
        let Some(answer) = &outcome.answer else {
            let message = format!("no stage of cascade {} answered", unit.name());
            let kind =
                if outcome.trace.iter().all(|s| {
                    matches!(&s.verdict, switchyard_cascade::Verdict::Skipped { reason: SkipReason::AllTripped })
                }) {
                    ErrorType::NoProviderAvailable
                } else {
                    ErrorType::UpstreamError
                };
            let code =
                if kind == ErrorType::NoProviderAvailable { "no_provider_available" } else { "all_providers_failed" };
            let mut error = ErrorReply::new(kind, code, message).with_id(request.id.clone()).with_trace(trace);
            if kind == ErrorType::NoProviderAvailable {
                error = error.with_retry_after_ms(1000);
            }
            return Err(error);
        };
        let stage_replies = replies.remove(&answer.stage).unwrap_or_default();
        let chosen = stage_replies.iter().find(|r| r.content == answer.text).or(stage_replies.first());
        let (model, finish_reason, usage, logprobs) = match chosen {
            Some(r) => (r.model.clone(), r.finish_reason.clone(), r.usage, r.logprobs.clone()),
            None => (String::new(), None, Default::default(), None),
        };
        Ok(QueryReply {
            id: request.id.clone(),
            content: answer.text.clone(),
            model,
            provider: answer.provider.clone(),
            finish_reason,
            usage,
            cost_usd: outcome.cost_usd(),
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            logprobs: logprobs.filter(|_| request.logprobs),
            trace,
        })
    }

    /// Obtains what the estimator needs beyond the samples; returns it with the cost of the extra call.
    #[allow(clippy::too_many_arguments)]
    async fn follow_up(
        &self,
        ctx: &QueryContext,
        routing: &Routing,
        unit: &CascadeUnit,
        stage: usize,
        stage_target: &str,
        follow: FollowUp,
        request: &QueryRequest,
        deadline: Instant,
    ) -> (FollowUpResult, f64, Vec<Attempt>) {
        match follow {
            FollowUp::None => (FollowUpResult::None, 0.0, Vec::new()),
            FollowUp::SelfEval { target, prompt } => {
                let target = target.unwrap_or_else(|| stage_target.to_owned());
                let name = format!("{}.{stage}.self_eval", unit.name());
                let plan = RoutePlan::single(name, target, RetryPolicy::default(), HedgePolicy::default());
                let mut ask = QueryRequest::new(vec![ChatMessage { role: ChatRole::User, content: prompt }]);
                ask.max_tokens = Some(32);
                ask.temperature = Some(0.0);
                ask.metadata = request.metadata.clone();
                match run_query(ctx, routing, &plan, &ask, "", deadline).await {
                    Ok(reply) => (FollowUpResult::SelfEvalReply(reply.content), reply.cost_usd, reply.trace.attempts),
                    Err(error) => {
                        let attempts = error.trace.map(|t| t.attempts).unwrap_or_default();
                        (FollowUpResult::Failed(error.error.message), 0.0, attempts)
                    }
                }
            }
            FollowUp::Score { source, request } => match source {
                VerifierSource::Local { .. } => match unit.verifiers.get(&stage) {
                    Some(model) => match model.score(&request.query, &request.answer) {
                        Ok(p) => (FollowUpResult::Score(p), 0.0, Vec::new()),
                        Err(error) => (FollowUpResult::Failed(error.to_string()), 0.0, Vec::new()),
                    },
                    None => (FollowUpResult::Failed("the verifier is not loaded".into()), 0.0, Vec::new()),
                },
                VerifierSource::External { url, timeout_ms } => {
                    let score = self.external_score(&url, Duration::from_millis(timeout_ms), &request).await;
                    (score, 0.0, Vec::new())
                }
            },
        }
    }

    /// One call to an external scoring endpoint: a [`ScoreRequest`] in, a [`ScoreResponse`] out, bounded.
    async fn external_score(&self, url: &str, timeout: Duration, request: &ScoreRequest) -> FollowUpResult {
        let call = async {
            let response = self.http.post(url).json(request).send().await.map_err(|e| e.without_url().to_string())?;
            if !response.status().is_success() {
                return Err(format!("the scoring endpoint answered {}", response.status()));
            }
            let body: ScoreResponse = response.json().await.map_err(|e| e.without_url().to_string())?;
            body.probability().map_err(|e| e.to_string())
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(p)) => FollowUpResult::Score(p),
            Ok(Err(reason)) => FollowUpResult::Failed(reason),
            Err(_) => FollowUpResult::Failed(format!("no score within {} ms", timeout.as_millis())),
        }
    }
}

/// The text a verifier or self-evaluation judges the answer against: the last user message.
fn last_user_text(request: &QueryRequest) -> String {
    request.messages.iter().rev().find(|m| m.role == ChatRole::User).map(|m| m.content.clone()).unwrap_or_default()
}
