//! The operating rules of a cascade, as data: escalation-rate health, what the cascade costs against the strong
//! model alone, and the latency tail of escalated against direct answers.
//!
//! **Health.** A weak stage that escalates most queries is pure overhead. Following the survey this project
//! follows, the escalation rate of a stage is *healthy* below 20 %, a *warning* from 20 % to 40 % (check the
//! weak model) and a call to *act* above 40 % (resize the weak model or move the threshold). Below a minimum
//! number of decisions the state is *unknown*, so that a quiet minute does not flap the state. A
//! [`HealthMonitor`] reports each change once, for the runtime to log and publish.
//!
//! **Cost.** With stage costs `c_0 … c_n` and per-stage escalation rates `p_0 … p_{n-1}` (the share of the
//! queries reaching stage `i` that it escalates), the expected cost per query is
//! `Σ_i c_i · Π_{j<i} p_j`, which for two stages is `c_w + P(esc) · c_s`. The cascade pays for itself only while
//! that is below the last stage's cost alone; for two stages, while `P(esc) < 1 - c_w / c_s` (the break-even
//! rate). [`CostReport`] sets a flag when the observed rate is at or past it.
//!
//! **Latency.** [`LatencyTail`] gives p50/p95/p99 by the nearest-rank method over a sorted copy of the samples;
//! [`LatencyRecorder`] keeps a bounded ring of recent samples per class so memory stays constant.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::CascadeError;
use crate::counters::StageCounts;

/// The health thresholds (serde, `deny_unknown_fields`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// The escalation rate from which a stage is a warning (default 0.20).
    pub warn_at: f64,
    /// The escalation rate above which a stage calls for action (default 0.40).
    pub act_at: f64,
    /// The fewest decisions in the window for a verdict (default 20); fewer give [`EscalationHealth::Unknown`].
    pub min_decisions: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig { warn_at: 0.20, act_at: 0.40, min_decisions: 20 }
    }
}

impl HealthConfig {
    /// Checks `0 <= warn_at <= act_at <= 1`.
    pub fn validate(&self) -> Result<(), CascadeError> {
        if !(0.0..=1.0).contains(&self.warn_at) || !(0.0..=1.0).contains(&self.act_at) || self.warn_at > self.act_at {
            return Err(CascadeError::invalid(None, "health.warn_at", "and act_at must satisfy 0 <= warn <= act <= 1"));
        }
        Ok(())
    }

    /// The health of a stage with these counts.
    pub fn classify(&self, counts: StageCounts) -> EscalationHealth {
        match counts.rate() {
            Some(rate) if counts.total() >= self.min_decisions.max(1) => self.classify_rate(rate),
            _ => EscalationHealth::Unknown,
        }
    }

    /// The health of an escalation rate (no minimum count): below `warn_at` healthy, up to and including
    /// `act_at` warn, above act.
    pub fn classify_rate(&self, rate: f64) -> EscalationHealth {
        if rate < self.warn_at {
            EscalationHealth::Healthy
        } else if rate <= self.act_at {
            EscalationHealth::Warn
        } else {
            EscalationHealth::Act
        }
    }
}

/// The health of one stage's escalation rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EscalationHealth {
    /// Too few decisions to say.
    Unknown,
    /// Below the warning rate.
    Healthy,
    /// Between the warning and the action rate: check the weak model.
    Warn,
    /// Above the action rate: resize the weak model or move the threshold.
    Act,
}

/// A change of health, to log and publish.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HealthTransition {
    /// The state before.
    pub from: EscalationHealth,
    /// The state now.
    pub to: EscalationHealth,
    /// The escalation rate that caused the change (`None` when it became unknown for lack of decisions).
    pub rate: Option<f64>,
    /// The decisions in the window.
    pub decisions: u64,
}

/// Tracks one stage's health and reports changes.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthMonitor {
    config: HealthConfig,
    state: EscalationHealth,
}

impl HealthMonitor {
    /// A monitor in the unknown state.
    pub fn new(config: HealthConfig) -> Result<Self, CascadeError> {
        config.validate()?;
        Ok(HealthMonitor { config, state: EscalationHealth::Unknown })
    }

    /// The current state.
    pub fn state(&self) -> EscalationHealth {
        self.state
    }

    /// Classifies the window's counts; returns the transition when the state changed.
    pub fn observe(&mut self, counts: StageCounts) -> Option<HealthTransition> {
        let next = self.config.classify(counts);
        if next == self.state {
            return None;
        }
        let from = std::mem::replace(&mut self.state, next);
        Some(HealthTransition { from, to: next, rate: counts.rate(), decisions: counts.total() })
    }
}

/// The expected cost per query of a cascade: `Σ_i c_i · Π_{j<i} p_j` with `stage_costs = [c_0, …, c_n]` and
/// `escalation_rates = [p_0, …, p_{n-1}]` (rates beyond the given ones count as 0: the query stopped).
pub fn expected_cost(stage_costs: &[f64], escalation_rates: &[f64]) -> f64 {
    let mut reach = 1.0;
    let mut total = 0.0;
    for (i, cost) in stage_costs.iter().enumerate() {
        total += reach * cost;
        reach *= escalation_rates.get(i).copied().unwrap_or(0.0);
    }
    total
}

/// The first stage's escalation rate at which the cascade costs exactly as much as its last stage alone, the
/// other rates held; for two stages `1 - c_w / c_s`. `None` when the later stages cost nothing (then no rate
/// makes the cascade dearer than… nothing), or fewer than two stages are given.
pub fn break_even_rate(stage_costs: &[f64], escalation_rates: &[f64]) -> Option<f64> {
    let (&first, rest) = stage_costs.split_first()?;
    let &strong = rest.last()?;
    let after_first = expected_cost(rest, escalation_rates.get(1..).unwrap_or(&[]));
    (after_first > 0.0).then(|| (strong - first) / after_first)
}

/// Measured against expected cost, and against the strong model alone.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CostReport {
    /// The first stage's escalation rate used.
    pub escalation_rate: f64,
    /// The formula's cost per query.
    pub expected_per_query: f64,
    /// The measured cost per query, when known.
    pub measured_per_query: Option<f64>,
    /// `|measured - expected| / expected`, when both are known and expected is above zero.
    pub relative_gap: Option<f64>,
    /// The last stage's cost per query: what calling only the strong model costs.
    pub strong_only_per_query: f64,
    /// The first stage's break-even escalation rate.
    pub break_even_rate: Option<f64>,
    /// True when the observed rate is at or past break-even: the cascade costs at least as much as the strong
    /// model alone.
    pub costs_more_than_strong: bool,
}

impl CostReport {
    /// The report for per-stage costs, per-stage escalation rates, and optionally the measured cost per query.
    pub fn new(stage_costs: &[f64], escalation_rates: &[f64], measured_per_query: Option<f64>) -> Self {
        let expected = expected_cost(stage_costs, escalation_rates);
        let escalation_rate = escalation_rates.first().copied().unwrap_or(0.0);
        let break_even = break_even_rate(stage_costs, escalation_rates);
        CostReport {
            escalation_rate,
            expected_per_query: expected,
            measured_per_query,
            relative_gap: measured_per_query.filter(|_| expected > 0.0).map(|m| (m - expected).abs() / expected),
            strong_only_per_query: stage_costs.last().copied().unwrap_or(0.0),
            break_even_rate: break_even,
            costs_more_than_strong: break_even.is_some_and(|b| escalation_rate >= b),
        }
    }
}

/// Latency quantiles of one class of answers, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LatencyTail {
    /// How many samples.
    pub count: usize,
    /// Median.
    pub p50: u64,
    /// 95th percentile.
    pub p95: u64,
    /// 99th percentile.
    pub p99: u64,
}

impl LatencyTail {
    /// The tail of `samples` (nearest rank); all zero when empty.
    pub fn from_samples(samples: impl IntoIterator<Item = u64>) -> Self {
        let mut sorted: Vec<u64> = samples.into_iter().collect();
        sorted.sort_unstable();
        LatencyTail {
            count: sorted.len(),
            p50: quantile(&sorted, 0.50),
            p95: quantile(&sorted, 0.95),
            p99: quantile(&sorted, 0.99),
        }
    }
}

/// The nearest-rank `q` quantile of sorted samples (0 when empty).
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The latency tails of direct and escalated answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LatencySplit {
    /// Answers of the first stage called.
    pub direct: LatencyTail,
    /// Answers that escalated at least once.
    pub escalated: LatencyTail,
}

/// A bounded ring of recent end-to-end latencies, per class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyRecorder {
    capacity: usize,
    direct: VecDeque<u64>,
    escalated: VecDeque<u64>,
}

impl LatencyRecorder {
    /// A recorder that keeps the last `capacity` samples of each class (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        LatencyRecorder { capacity, direct: VecDeque::new(), escalated: VecDeque::new() }
    }

    /// Records one answer's latency.
    pub fn record(&mut self, latency_ms: u64, escalated: bool) {
        let ring = if escalated { &mut self.escalated } else { &mut self.direct };
        if ring.len() == self.capacity {
            ring.pop_front();
        }
        ring.push_back(latency_ms);
    }

    /// The tails of the samples held.
    pub fn split(&self) -> LatencySplit {
        LatencySplit {
            direct: LatencyTail::from_samples(self.direct.iter().copied()),
            escalated: LatencyTail::from_samples(self.escalated.iter().copied()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(direct: u64, escalated: u64) -> StageCounts {
        StageCounts { direct, escalated }
    }

    #[test]
    fn classification_bands() {
        let config = HealthConfig::default();
        for (rate, expected) in [
            (0.0, EscalationHealth::Healthy),
            (0.199, EscalationHealth::Healthy),
            (0.20, EscalationHealth::Warn),
            (0.40, EscalationHealth::Warn),
            (0.401, EscalationHealth::Act),
            (1.0, EscalationHealth::Act),
        ] {
            assert_eq!(config.classify_rate(rate), expected, "{rate}");
        }
        assert_eq!(config.classify(counts(10, 0)), EscalationHealth::Unknown, "under min_decisions");
        assert_eq!(config.classify(counts(0, 0)), EscalationHealth::Unknown);
        assert_eq!(config.classify(counts(15, 5)), EscalationHealth::Warn);
        let custom = HealthConfig { warn_at: 0.1, act_at: 0.2, min_decisions: 1 };
        assert_eq!(custom.classify(counts(15, 5)), EscalationHealth::Act);
        assert!(HealthConfig { warn_at: 0.5, act_at: 0.4, min_decisions: 1 }.validate().is_err());
        assert!(HealthMonitor::new(HealthConfig { warn_at: -0.1, ..HealthConfig::default() }).is_err());
    }

    #[test]
    fn monitor_reports_healthy_to_warn_to_act_once_each() {
        let mut monitor = HealthMonitor::new(HealthConfig::default()).unwrap();
        let mut seen = Vec::new();
        // The weak stage gets worse over time: 10 %, 10 %, 30 %, 30 %, 60 %.
        for escalated in [10, 10, 30, 30, 60] {
            if let Some(t) = monitor.observe(counts(100 - escalated, escalated)) {
                seen.push((t.from, t.to, t.rate, t.decisions));
            }
        }
        assert_eq!(
            seen,
            vec![
                (EscalationHealth::Unknown, EscalationHealth::Healthy, Some(0.1), 100),
                (EscalationHealth::Healthy, EscalationHealth::Warn, Some(0.3), 100),
                (EscalationHealth::Warn, EscalationHealth::Act, Some(0.6), 100),
            ]
        );
        assert_eq!(monitor.state(), EscalationHealth::Act);
        let back = monitor.observe(counts(0, 0)).unwrap();
        assert_eq!((back.to, back.rate), (EscalationHealth::Unknown, None));
    }

    #[test]
    fn expected_cost_generalises_to_n_stages() {
        assert!((expected_cost(&[1.0, 10.0], &[0.3]) - 4.0).abs() < 1e-12);
        // 1 + 0.5*4 + 0.5*0.25*20 = 5.5
        assert!((expected_cost(&[1.0, 4.0, 20.0], &[0.5, 0.25]) - 5.5).abs() < 1e-12);
        assert_eq!(expected_cost(&[2.0, 8.0], &[]), 2.0);
        assert_eq!(expected_cost(&[], &[0.5]), 0.0);
    }

    #[test]
    fn cost_flag_fires_past_break_even() {
        let costs = [1.0, 10.0];
        let b = break_even_rate(&costs, &[0.0]).unwrap();
        assert!((b - 0.9).abs() < 1e-12, "1 - c_w/c_s");
        for (rate, flagged) in [(0.5, false), (0.899, false), (0.9, true), (0.95, true)] {
            let report = CostReport::new(&costs, &[rate], None);
            assert_eq!(report.costs_more_than_strong, flagged, "{rate}");
            assert_eq!(report.strong_only_per_query, 10.0);
            // The flag means exactly: the expected cost is at least the strong model's.
            assert_eq!(report.expected_per_query >= report.strong_only_per_query - 1e-12, flagged, "{rate}");
        }
        let report = CostReport::new(&costs, &[0.5], Some(6.06));
        assert!((report.relative_gap.unwrap() - 0.01).abs() < 1e-9);
        // Three stages: break-even of the first stage given the second's rate.
        let three = [1.0, 4.0, 20.0];
        let b = break_even_rate(&three, &[0.0, 0.25]).unwrap();
        assert!((expected_cost(&three, &[b, 0.25]) - 20.0).abs() < 1e-9);
        assert_eq!(break_even_rate(&[1.0, 0.0], &[0.5]), None);
        assert_eq!(break_even_rate(&[1.0], &[]), None);
    }

    #[test]
    fn latency_tails() {
        let tail = LatencyTail::from_samples(1..=100);
        assert_eq!(tail, LatencyTail { count: 100, p50: 50, p95: 95, p99: 99 });
        assert_eq!(LatencyTail::from_samples([7]), LatencyTail { count: 1, p50: 7, p95: 7, p99: 7 });
        assert_eq!(LatencyTail::from_samples([]), LatencyTail::default());
        let mut recorder = LatencyRecorder::new(3);
        for ms in [100, 200, 300, 400] {
            recorder.record(ms, false);
        }
        recorder.record(2_000, true);
        let split = recorder.split();
        assert_eq!((split.direct.count, split.direct.p50, split.direct.p99), (3, 300, 400));
        assert_eq!((split.escalated.count, split.escalated.p50), (1, 2_000));
    }
}
