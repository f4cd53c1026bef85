//! Quality routing in the router: a route's router chooses the first target of each query before any call.
//!
//! The decisions are `switchyard_quality`'s (the same code `switchyard eval router` runs); this module only
//! carries them out. For a route with `router = "<name>"`:
//! 1. the router decides on the query (its last user message, message count, system prompt, metadata, objective),
//!    seeing which targets this node believes callable ([`Routing::available`]) and their live median latency;
//! 2. the chosen model maps to a route target (a provider, a group or an ensemble); when that target cannot be
//!    called now, a rule router's choice falls back to the first callable target of the route's chain, and a learned
//!    router already chose the next-best model. The trace's [`RoutingDecision`] says which and why;
//! 3. the query walks the chain `[target, route providers...]` through the availability layer (retries,
//!    fallbacks, hedges, breakers), or, for an ensemble, runs it ([`run_ensemble`]).
//!
//! Each router keeps live counts (decisions per model, the realised strong share of a binary router, fallbacks,
//! out-of-distribution queries) and a learned router a drift monitor over its training baseline; both are read on
//! `switchyard.v1.admin.routers`. The routers reload when the configuration file changes (checked every
//! [`WATCH_EVERY`]) or on `switchyard.v1.admin.routers.reload`: a file that fails to load or validate is refused,
//! logged, and the routers in use keep serving. Queries in flight keep the routers they started with.

// An answer is a reply either way, as in `query`.
#![allow(clippy::result_large_err)]

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use switchyard_core::HedgePolicy;
use switchyard_protocol::client::{
    EnsembleCall, EnsembleTrace, ErrorReply, ErrorType, QueryRequest, RoutingDecision, Trace,
};
use switchyard_protocol::{ChatMessage, Role};
use switchyard_quality::drift::DriftReport;
use switchyard_quality::ensemble::{aggregator_prompt, pick_proposers};
use switchyard_quality::learned::RouterFile;
use switchyard_quality::{
    Decision, DriftMonitor, LearnedRouter, LiveView, Objective, QueryInput, Reason, RouterScratch, RuleRouter,
};

use crate::config::{ConfigError, EnsembleSection, LearnedSection, NodeConfig, RouterSection};
use crate::query::{Answer, QueryContext, run_query};
use crate::routing::{RoutePlan, Routing};

/// How often the configuration file is checked for changed routers, and drift is logged at most.
pub const WATCH_EVERY: Duration = Duration::from_secs(2);

/// A live drift window is reported, then restarted, after this many queries.
const DRIFT_WINDOW: u64 = 5_000;

/// Drift is logged only over windows of at least this many queries.
const DRIFT_MIN_WINDOW: u64 = 200;

/// Why the routers of a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum QualityLoadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("router `{router}`: {reason}")]
    Router { router: String, reason: String },
}

/// Every router of a node, reloadable, and the ensembles they and the routes may name.
pub struct QualityRouting {
    routers: ArcSwap<RouterSet>,
    ensembles: HashMap<String, Arc<EnsembleSection>>,
    /// Providers, groups and ensembles: what a reloaded router may name.
    targets: HashSet<String>,
    source: Option<PathBuf>,
    base_dir: PathBuf,
    modified: Mutex<Option<SystemTime>>,
}

/// One generation of routers.
struct RouterSet {
    units: HashMap<String, Arc<RouterUnit>>,
    /// The `[[routers]]` sections it was built from: a reload that changes nothing keeps the live counts.
    sections: Vec<RouterSection>,
    generation: u64,
}

/// A router with its live counts.
pub struct RouterUnit {
    name: String,
    kind: UnitKind,
    tally: Mutex<Tally>,
}

enum UnitKind {
    Rules(RuleRouter),
    Learned {
        router: Box<LearnedRouter>,
        /// The route target of each candidate, in the router's candidate order.
        targets: Vec<String>,
        file: PathBuf,
    },
}

/// A router's live counts since it was loaded.
#[derive(Default)]
struct Tally {
    decisions: u64,
    by_model: BTreeMap<String, u64>,
    fallbacks: u64,
    out_of_distribution: u64,
    drift: Option<DriftMonitor>,
    last_drift: Option<DriftReport>,
}

/// What a router did, for `switchyard.v1.admin.routers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouterStatus {
    pub node: String,
    pub router: String,
    /// `rules`, `binary` or `n_way`.
    pub kind: String,
    /// The router file of a learned router.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Reloads of the node's routers since it started (0: as started).
    pub generation: u64,
    pub decisions: u64,
    /// Decisions per chosen model (after fallbacks).
    pub by_model: BTreeMap<String, u64>,
    /// A binary router: the realised share of queries sent to the strong model, next to its calibration target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strong_share: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_strong_share: Option<f64>,
    /// Decisions whose preferred model could not be called.
    pub fallbacks: u64,
    /// Queries the out-of-distribution guard sent to the safe model.
    pub out_of_distribution: u64,
    /// A learned router: live feature statistics against the training baseline (the current window once it holds
    /// enough queries, else the last full one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftReport>,
}

/// How a reload went, for `switchyard.v1.admin.routers.reload`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadOutcome {
    pub node: String,
    pub ok: bool,
    pub generation: u64,
    pub message: String,
}

/// A query's route after its router decided.
pub struct Routed {
    pub plan: Arc<RoutePlan>,
    pub decision: Option<RoutingDecision>,
    pub ensemble: Option<Arc<EnsembleSection>>,
}

thread_local! {
    /// Decision buffers, one per worker thread: a decision allocates nothing in the steady state.
    static SCRATCH: RefCell<RouterScratch> = RefCell::new(RouterScratch::default());
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl QualityRouting {
    /// The routers and ensembles of a validated configuration; reads learned routers' files.
    pub fn new(config: &NodeConfig) -> Result<QualityRouting, QualityLoadError> {
        let base_dir = config.base_dir.clone().unwrap_or_default();
        let mut targets: HashSet<String> = config.providers.iter().map(|p| p.name.clone()).collect();
        targets.extend(config.groups.iter().map(|g| g.name.clone()));
        targets.extend(config.ensembles.iter().map(|e| e.name.clone()));
        let ensembles = config.ensembles.iter().map(|e| (e.name.clone(), Arc::new(e.clone()))).collect();
        let units = build_units(&config.routers, &base_dir, &targets)?;
        let modified = config.source.as_deref().and_then(modified_at);
        Ok(QualityRouting {
            routers: ArcSwap::from_pointee(RouterSet { units, sections: config.routers.clone(), generation: 0 }),
            ensembles,
            targets,
            source: config.source.clone(),
            base_dir,
            modified: Mutex::new(modified),
        })
    }

    /// Whether the node has any router or ensemble (otherwise routes go straight to their chains).
    pub fn is_empty(&self) -> bool {
        self.routers.load().units.is_empty() && self.ensembles.is_empty()
    }

    /// Decides `request`'s first target on `plan`; a route without router or ensemble is returned as it is.
    pub fn route(&self, plan: &Arc<RoutePlan>, request: &QueryRequest, routing: &Routing) -> Routed {
        if let Some(name) = &plan.ensemble {
            let ensemble = self.ensembles.get(name).cloned();
            return Routed { plan: plan.clone(), decision: None, ensemble };
        }
        let Some(router) = &plan.router else { return Routed { plan: plan.clone(), decision: None, ensemble: None } };
        // A router removed by a reload while the route still names it: the route's own chain.
        let Some(unit) = self.routers.load().units.get(router).cloned() else {
            warn!(route = %plan.name, router = %router, "the route's router is gone; its chain serves");
            return Routed { plan: plan.clone(), decision: None, ensemble: None };
        };
        let now = Instant::now();
        let (decision, target) = unit.decide(request, plan, routing, |t| self.callable(t, routing, now));
        let ensemble = self.ensembles.get(&target).cloned();
        let plan = match &ensemble {
            Some(_) => plan.clone(),
            None => Arc::new(plan.first(&target)),
        };
        Routed { plan, decision: Some(decision), ensemble }
    }

    /// Whether a target can be called now: an ensemble when its aggregator can and enough proposers can.
    fn callable(&self, target: &str, routing: &Routing, now: Instant) -> bool {
        match self.ensembles.get(target) {
            Some(e) => {
                routing.available(&e.aggregator, now)
                    && e.proposers.iter().filter(|p| routing.available(p, now)).count() >= e.min_proposals
            }
            None => routing.available(target, now),
        }
    }

    /// Every router's live status.
    pub fn status(&self, node: &str) -> Vec<RouterStatus> {
        let set = self.routers.load();
        let mut names: Vec<&String> = set.units.keys().collect();
        names.sort();
        names.into_iter().map(|n| set.units[n].status(node, set.generation)).collect()
    }

    /// Reloads the routers from the configuration file. A file that does not load, or whose routers do not
    /// validate, is refused and the routers in use stay.
    pub fn reload(&self) -> Result<u64, QualityLoadError> {
        let Some(source) = &self.source else {
            return Err(QualityLoadError::Router { router: "*".into(), reason: "the node has no config file".into() });
        };
        *lock(&self.modified) = modified_at(source);
        let config = NodeConfig::load(source)?;
        let current = self.routers.load_full();
        if config.routers == current.sections {
            return Ok(current.generation);
        }
        let mut units = build_units(&config.routers, &self.base_dir, &self.targets)?;
        // Routers whose section did not change keep their counts and drift window.
        for (name, unit) in units.iter_mut() {
            let old_section = current.sections.iter().find(|s| s.name() == name);
            let new_section = config.routers.iter().find(|s| s.name() == name);
            if let (Some(old), true) = (current.units.get(name), old_section == new_section) {
                *unit = old.clone();
            }
        }
        let generation = current.generation + 1;
        self.routers.store(Arc::new(RouterSet { units, sections: config.routers, generation }));
        info!(generation, source = %source.display(), "routers reloaded");
        Ok(generation)
    }

    /// Reloads when the configuration file changed, and logs drift; runs until the task is aborted.
    pub async fn watch(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(WATCH_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut logged: HashMap<String, u64> = HashMap::new();
        loop {
            ticker.tick().await;
            if let Some(source) = &self.source {
                let now = modified_at(source);
                let changed = now.is_some() && now != *lock(&self.modified);
                if changed && let Err(error) = self.reload() {
                    warn!(%error, source = %source.display(), "router reload refused; the routers in use stay");
                }
            }
            for unit in self.routers.load().units.values() {
                unit.log_drift(&mut logged);
            }
        }
    }
}

fn modified_at(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn build_units(
    sections: &[RouterSection],
    base_dir: &Path,
    targets: &HashSet<String>,
) -> Result<HashMap<String, Arc<RouterUnit>>, QualityLoadError> {
    let refuse = |router: &str, reason: String| QualityLoadError::Router { router: router.to_owned(), reason };
    let mut units = HashMap::new();
    for section in sections {
        let kind = match section {
            RouterSection::Rules(rules) => {
                let router = RuleRouter::new(rules).map_err(|e| refuse(&rules.name, e.to_string()))?;
                if let Some(unknown) = router.models().into_iter().find(|m| !targets.contains(*m)) {
                    return Err(refuse(&rules.name, format!("unknown provider, group or ensemble `{unknown}`")));
                }
                UnitKind::Rules(router)
            }
            RouterSection::Learned(learned) => load_learned(learned, base_dir, targets)?,
        };
        let drift = match &kind {
            UnitKind::Learned { router, .. } => Some(router.drift_monitor()),
            UnitKind::Rules(_) => None,
        };
        let tally = Mutex::new(Tally { drift, ..Tally::default() });
        units.insert(section.name().to_owned(), Arc::new(RouterUnit { name: section.name().to_owned(), kind, tally }));
    }
    Ok(units)
}

fn load_learned(
    section: &LearnedSection,
    base_dir: &Path,
    targets: &HashSet<String>,
) -> Result<UnitKind, QualityLoadError> {
    let refuse = |reason: String| QualityLoadError::Router { router: section.name.clone(), reason };
    let file = if section.file.is_absolute() { section.file.clone() } else { base_dir.join(&section.file) };
    let mut saved = RouterFile::load(&file).map_err(|e| refuse(e.to_string()))?;
    if let (Some(threshold), RouterFile::Binary(binary)) = (section.threshold, &mut saved) {
        binary.thresholds.balanced = threshold;
    } else if section.threshold.is_some() {
        return Err(refuse("`threshold` applies to a binary router only".into()));
    }
    let router = LearnedRouter::from_file(saved).map_err(|e| refuse(e.to_string()))?;
    let models: Vec<String> = match &router {
        LearnedRouter::Binary(b) => b.candidates().iter().map(|m| (*m).to_owned()).collect(),
        LearnedRouter::NWay(n) => n.candidates().map(str::to_owned).collect(),
    };
    if let Some(unmapped) = section.targets.keys().find(|m| !models.contains(m)) {
        return Err(refuse(format!("`targets` names `{unmapped}`, which is not a model of {}", file.display())));
    }
    let mut mapped = Vec::with_capacity(models.len());
    for model in &models {
        let target = section.targets.get(model).unwrap_or(model);
        if !targets.contains(target) {
            let reason =
                format!("model `{model}` has no target: map it with `targets` to a provider, group or ensemble");
            return Err(refuse(reason));
        }
        mapped.push(target.clone());
    }
    Ok(UnitKind::Learned { router: Box::new(router), targets: mapped, file })
}

impl RouterUnit {
    /// Decides, counts, and returns the trace's decision and the chosen target.
    fn decide(
        &self,
        request: &QueryRequest,
        plan: &RoutePlan,
        routing: &Routing,
        callable: impl Fn(&str) -> bool,
    ) -> (RoutingDecision, String) {
        static NO_TEXT: String = String::new();
        let prompt = request.messages.iter().rev().find(|m| m.role == Role::User).map_or(&NO_TEXT, |m| &m.content);
        let query = QueryInput {
            prompt,
            message_count: request.messages.len(),
            has_system_prompt: request.messages.iter().any(|m| m.role == Role::System),
            metadata: &request.metadata,
        };
        // Validated at intake: an unknown objective never reaches a router.
        let objective = request.objective.as_deref().and_then(|o| o.parse::<Objective>().ok());
        let (decision, target, signals) = match &self.kind {
            UnitKind::Rules(router) => {
                let mut decision = router.decide(&query);
                decision.objective = objective;
                let mut target = decision.model.to_string();
                if !callable(&target)
                    && let Some(next) = plan.chains.generic.iter().find(|t| **t != target && callable(t))
                {
                    decision = decision.fallen_back_to(next.as_str().into());
                    target = next.clone();
                }
                (decision, target, None)
            }
            UnitKind::Learned { router, targets, .. } => {
                let available: Vec<bool> = targets.iter().map(|t| callable(t)).collect();
                let latency: Vec<Option<f64>> = targets.iter().map(|t| routing.latency_ms(t)).collect();
                let live = LiveView { available: &available, latency_ms: &latency };
                SCRATCH.with_borrow_mut(|scratch| {
                    let decision = router.decide(&query, objective, &live, scratch);
                    let index = match &**router {
                        LearnedRouter::Binary(b) => b.candidates().iter().position(|m| *m == &*decision.model),
                        LearnedRouter::NWay(n) => n.candidates().position(|m| m == &*decision.model),
                    };
                    let target = index.map_or_else(|| decision.model.to_string(), |i| targets[i].clone());
                    let signals = (*scratch.last_signals(), scratch.last_out_of_distribution());
                    (decision, target, Some(signals))
                })
            }
        };
        self.count(&decision, signals);
        let trace = RoutingDecision {
            router: self.name.clone(),
            model: decision.model.to_string(),
            target: target.clone(),
            score: decision.score,
            threshold: decision.threshold,
            objective: request.objective.clone(),
            reason: serde_json::to_value(&decision.reason).unwrap_or_default(),
        };
        (trace, target)
    }

    fn count(&self, decision: &Decision, signals: Option<(switchyard_quality::QuerySignals, bool)>) {
        let mut tally = lock(&self.tally);
        tally.decisions += 1;
        *tally.by_model.entry(decision.model.to_string()).or_default() += 1;
        let mut reason = &decision.reason;
        if let Reason::Fallback { because, .. } = reason {
            tally.fallbacks += 1;
            reason = because;
        }
        if matches!(reason, Reason::OutOfDistribution { .. }) {
            tally.out_of_distribution += 1;
        }
        let Some((signals, ood)) = signals else { return };
        let full = tally.drift.as_mut().map(|monitor| {
            monitor.observe(&signals, ood);
            (monitor.window() >= DRIFT_WINDOW).then(|| {
                let report = monitor.report();
                monitor.reset();
                report
            })
        });
        if let Some(Some(report)) = full {
            tally.last_drift = Some(report);
        }
    }

    fn status(&self, node: &str, generation: u64) -> RouterStatus {
        let tally = lock(&self.tally);
        let (kind, file, strong, target_share) = match &self.kind {
            UnitKind::Rules(_) => ("rules", None, None, None),
            UnitKind::Learned { router, file, .. } => match &**router {
                LearnedRouter::Binary(b) => {
                    let strong = b.file().strong_model.as_str();
                    let share = (tally.decisions > 0)
                        .then(|| tally.by_model.get(strong).copied().unwrap_or(0) as f64 / tally.decisions as f64);
                    ("binary", Some(file), share, Some(b.file().calibration.target_share))
                }
                LearnedRouter::NWay(_) => ("n_way", Some(file), None, None),
            },
        };
        let drift = tally.drift.as_ref().and_then(|monitor| {
            if monitor.window() >= DRIFT_MIN_WINDOW { Some(monitor.report()) } else { tally.last_drift.clone() }
        });
        RouterStatus {
            node: node.to_owned(),
            router: self.name.clone(),
            kind: kind.to_owned(),
            file: file.map(|f| f.display().to_string()),
            generation,
            decisions: tally.decisions,
            by_model: tally.by_model.clone(),
            strong_share: strong,
            target_strong_share: target_share,
            fallbacks: tally.fallbacks,
            out_of_distribution: tally.out_of_distribution,
            drift,
        }
    }

    /// Logs the drift of a window once it holds enough queries, at most once per [`WATCH_EVERY`] and only when
    /// the window grew: a warning when it is not stable.
    fn log_drift(&self, logged: &mut HashMap<String, u64>) {
        let report = {
            let tally = lock(&self.tally);
            let Some(monitor) = &tally.drift else { return };
            let window = monitor.window();
            let seen = logged.entry(self.name.clone()).or_default();
            if window < DRIFT_MIN_WINDOW || window == *seen {
                return;
            }
            *seen = window;
            monitor.report()
        };
        let worst = report.groups.iter().max_by(|a, b| a.psi.total_cmp(&b.psi));
        let (group, psi) = worst.map_or(("none", 0.0), |g| (g.group.name(), g.psi));
        let status = format!("{:?}", report.status).to_lowercase();
        if report.status == switchyard_quality::DriftStatus::Stable {
            tracing::debug!(router = %self.name, window = report.window, %status, group, psi, "router drift");
        } else {
            warn!(router = %self.name, window = report.window, %status, group, psi, ood_share = report.ood_share,
                "router inputs drifted from the training data");
        }
    }
}

/// Runs `request` on an ensemble: the first `k` callable proposers answer in parallel (each on its own target,
/// with the route's retry policy, no fallback so two proposers are never the same model), then the aggregator
/// answers with their answers in view, on the chain `[aggregator, route providers...]`; a streaming client gets
/// the aggregator's stream. The reply adds up every call's usage and cost; the trace shows each proposer (with
/// its attempts) and the aggregator, whose attempts are the trace's.
pub async fn run_ensemble(
    ctx: &QueryContext,
    routing: &Routing,
    plan: &RoutePlan,
    ensemble: &EnsembleSection,
    request: &QueryRequest,
    reply_to: &str,
    deadline: Instant,
) -> Answer {
    let now = Instant::now();
    let available: Vec<bool> = ensemble.proposers.iter().map(|p| routing.available(p, now)).collect();
    let mut picked = pick_proposers(&available, ensemble.k());
    if picked.len() < ensemble.min_proposals {
        // Too few look callable: call the first k anyway and let the availability layer tell.
        picked = (0..ensemble.k()).collect();
    }
    let mut quiet = request.clone();
    quiet.stream = false;
    quiet.logprobs = false;
    let calls = picked.iter().map(|&i| {
        let target = &ensemble.proposers[i];
        let plan = RoutePlan::single(plan.name.clone(), target.clone(), plan.retry, HedgePolicy::default());
        let quiet = &quiet;
        async move { (target.clone(), run_query(ctx, routing, &plan, quiet, reply_to, deadline).await) }
    });
    let answers = futures::future::join_all(calls).await;
    let mut trace = EnsembleTrace { name: ensemble.name.clone(), proposers: Vec::new(), aggregator: None };
    let mut proposals = Vec::new();
    let (mut usage, mut cost) = (switchyard_protocol::Usage::default(), 0.0);
    for (target, answer) in answers {
        trace.proposers.push(member_call(target, &answer, true));
        if let Ok(reply) = answer {
            usage.input_tokens += reply.usage.input_tokens;
            usage.output_tokens += reply.usage.output_tokens;
            cost += reply.cost_usd;
            proposals.push(reply.content);
        }
    }
    if proposals.len() < ensemble.min_proposals {
        let message = format!(
            "ensemble {}: {} of {} proposers answered, {} needed",
            ensemble.name,
            proposals.len(),
            trace.proposers.len(),
            ensemble.min_proposals
        );
        let trace = Trace {
            node: ctx.node.clone(),
            route: plan.name.clone(),
            ensemble: Some(Box::new(trace)),
            ..Trace::default()
        };
        let error = ErrorReply::new(ErrorType::UpstreamError, "ensemble_failed", message);
        return Err(error.with_id(request.id.clone()).with_trace(trace));
    }
    let mut aggregate = request.clone();
    aggregate.messages = std::iter::once(ChatMessage {
        role: Role::System,
        content: aggregator_prompt(&proposals, ensemble.max_proposal_chars),
    })
    .chain(request.messages.iter().cloned())
    .collect();
    let answer = run_query(ctx, routing, &plan.first(&ensemble.aggregator), &aggregate, reply_to, deadline).await;
    trace.aggregator = Some(member_call(ensemble.aggregator.clone(), &answer, false));
    match answer {
        Ok(mut reply) => {
            reply.usage.input_tokens += usage.input_tokens;
            reply.usage.output_tokens += usage.output_tokens;
            reply.cost_usd += cost;
            reply.trace.ensemble = Some(Box::new(trace));
            Ok(reply)
        }
        Err(mut error) => {
            error.trace.get_or_insert_with(Trace::default).ensemble = Some(Box::new(trace));
            Err(error)
        }
    }
}

/// One ensemble member's call, for the trace.
fn member_call(target: String, answer: &Answer, keep_attempts: bool) -> EnsembleCall {
    let (provider, outcome, latency_ms, cost_usd, attempts) = match answer {
        Ok(reply) => (
            Some(reply.provider.clone()),
            "success".to_owned(),
            reply.latency_ms,
            reply.cost_usd,
            &reply.trace.attempts,
        ),
        Err(error) => {
            let attempts = error.trace.as_ref().map(|t| &t.attempts);
            let latency = attempts.map_or(0.0, |a| a.iter().map(|a| a.latency_ms).sum());
            (None, error.error.code.clone(), latency, 0.0, attempts.unwrap_or(&EMPTY))
        }
    };
    let attempts = if keep_attempts { attempts.clone() } else { Vec::new() };
    EnsembleCall { target, provider, outcome, latency_ms, cost_usd, attempts }
}

static EMPTY: Vec<switchyard_protocol::client::Attempt> = Vec::new();

/// Stamps the router's decision on an answer's trace.
pub fn with_decision(answer: Answer, decision: Option<RoutingDecision>) -> Answer {
    let Some(decision) = decision else { return answer };
    match answer {
        Ok(mut reply) => {
            reply.trace.decision = Some(Box::new(decision));
            Ok(reply)
        }
        Err(mut error) => {
            error.trace.get_or_insert_with(Trace::default).decision = Some(Box::new(decision));
            Err(error)
        }
    }
}
