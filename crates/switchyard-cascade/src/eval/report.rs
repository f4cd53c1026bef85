//! The evaluation's result: a text table and a quality-against-cost plot.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use switchyard_learn::plot::{PlotSpec, Series, render_svg};

use super::{SplitOptions, write_file};
use crate::CascadeError;
use crate::verifier::VerifierTraining;

/// One operating point of the sweep.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SweepRow {
    /// The threshold given to every non-last stage.
    pub threshold: f64,
    /// Share of queries answered by the last stage.
    pub strong_share: f64,
    /// Share of correct final answers.
    pub quality: f64,
    /// Performance gap recovered.
    pub pgr: f64,
    /// Mean cost per query of the replayed runs.
    pub measured_cost: f64,
    /// `Σ c_i · Π p_j` with the measured escalation rates and mean stage costs.
    pub expected_cost: f64,
    /// `|measured - expected| / expected`.
    pub cost_gap: f64,
    /// The first stage's escalation rate.
    pub escalation_rate: f64,
}

/// The sweep of one estimator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepSummary {
    /// The estimator's name.
    pub label: String,
    /// Operating points by increasing strong share.
    pub rows: Vec<SweepRow>,
    /// Area under PGR over the strong share.
    pub apgr: f64,
    /// The smallest strong share reaching PGR 0.5.
    pub cpt50: Option<f64>,
    /// The smallest strong share reaching PGR 0.8.
    pub cpt80: Option<f64>,
    /// Quality when the first stage answers everything.
    pub weak_quality: f64,
    /// Quality when the last stage answers everything.
    pub strong_quality: f64,
    /// The first stage's break-even escalation rate (`1 - c_w / c_s` for two stages).
    pub break_even_rate: Option<f64>,
    /// Mean wall-clock microseconds of one stage estimate (follow-up and estimator), measured in the replay.
    pub estimate_us: f64,
}

impl SweepSummary {
    /// The largest relative gap between measured and formula cost over the sweep.
    pub fn max_cost_gap(&self) -> f64 {
        self.rows.iter().map(|r| r.cost_gap).fold(0.0, f64::max)
    }
}

/// The result of [`eval_cascade`](super::eval_cascade).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The data evaluated.
    pub data: String,
    /// The estimator evaluated.
    pub estimator: String,
    /// The split.
    pub split: SplitOptions,
    /// Distinct questions on the train side.
    pub train_queries: usize,
    /// Distinct questions on the test side.
    pub test_queries: usize,
    /// The stage models, cheapest first.
    pub stage_models: Vec<String>,
    /// Mean cost per call of each stage on the test side.
    pub stage_costs: Vec<f64>,
    /// Whether every stage costs the same on every query.
    pub constant_costs: bool,
    /// The estimator's sweep.
    pub main: SweepSummary,
    /// The baselines' sweeps.
    pub baselines: Vec<SweepSummary>,
    /// How the verifier was trained, when it was.
    pub verifier_training: Option<VerifierTraining>,
    /// Mean wall-clock time of one verifier estimate (featurise, score, decide), microseconds.
    pub scoring_us: Option<f64>,
    /// Remarks (dropped queries, varying costs).
    pub notes: Vec<String>,
    /// Rows of the printed table.
    pub table_rows: usize,
}

pub(super) struct ReportParts {
    pub data: String,
    pub estimator: String,
    pub split: SplitOptions,
    pub train_queries: usize,
    pub test_queries: usize,
    pub stage_models: Vec<String>,
    pub stage_costs: Vec<f64>,
    pub constant_costs: bool,
    pub main: SweepSummary,
    pub baselines: Vec<SweepSummary>,
    pub verifier_training: Option<VerifierTraining>,
    pub scoring_us: Option<f64>,
    pub notes: Vec<String>,
    pub table_rows: usize,
}

impl Report {
    pub(super) fn new(p: ReportParts) -> Self {
        Report {
            data: p.data,
            estimator: p.estimator,
            split: p.split,
            train_queries: p.train_queries,
            test_queries: p.test_queries,
            stage_models: p.stage_models,
            stage_costs: p.stage_costs,
            constant_costs: p.constant_costs,
            main: p.main,
            baselines: p.baselines,
            verifier_training: p.verifier_training,
            scoring_us: p.scoring_us,
            notes: p.notes,
            table_rows: p.table_rows,
        }
    }

    /// The operating points printed: for `table_rows` evenly spaced strong shares, the nearest sweep point.
    pub fn table(&self) -> Vec<SweepRow> {
        let rows = &self.main.rows;
        let k = self.table_rows.max(2);
        let mut picked: Vec<SweepRow> = Vec::new();
        for i in 0..k {
            let target = i as f64 / (k - 1) as f64;
            let nearest =
                rows.iter().min_by(|a, b| (a.strong_share - target).abs().total_cmp(&(b.strong_share - target).abs()));
            if let Some(row) = nearest
                && picked.last().is_none_or(|p| p.threshold != row.threshold)
            {
                picked.push(*row);
            }
        }
        picked
    }

    /// The quality-against-cost plot.
    pub fn plot(&self) -> PlotSpec {
        let curve = |s: &SweepSummary| {
            Series::line(
                format!("{} (APGR {:.3})", s.label, s.apgr),
                s.rows.iter().map(|r| (r.measured_cost, r.quality)).collect(),
            )
        };
        let mut series = vec![curve(&self.main)];
        series.extend(self.baselines.iter().map(curve));
        let last = self.stage_costs.len().saturating_sub(1);
        let first_only = self.stage_costs.first().copied().unwrap_or(0.0);
        let everything: f64 = self.stage_costs.iter().sum();
        series.push(Series::points(
            "single stages",
            vec![(first_only, self.main.weak_quality), (everything, self.main.strong_quality)],
            vec![
                format!("{} alone", short(&self.stage_models[0])),
                format!("{} after {}", short(&self.stage_models[last]), short(&self.stage_models[0])),
            ],
        ));
        PlotSpec {
            title: format!("Cascade on {}: quality against cost ({} test questions)", self.data, self.test_queries),
            x_label: "cost per query (USD)".into(),
            y_label: "share of correct answers".into(),
            log_x: false,
            series,
        }
    }

    /// Renders and writes the plot.
    pub fn write_svg(&self, path: &Path) -> Result<(), CascadeError> {
        write_file(path, &render_svg(&self.plot())?)
    }
}

fn short(model: &str) -> &str {
    model.rsplit('/').next().unwrap_or(model)
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "never".into(), |v| format!("{v:.3}"))
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "cascade evaluation: {} — estimator {}", self.data, self.estimator)?;
        writeln!(
            f,
            "questions: {} test, {} train (split by question id, seed {}, test fraction {})",
            self.test_queries, self.train_queries, self.split.seed, self.split.test_fraction
        )?;
        for (i, (model, cost)) in self.stage_models.iter().zip(&self.stage_costs).enumerate() {
            writeln!(
                f,
                "stage {i}: {model}, {} ${cost:.7} per call",
                if self.constant_costs { "constant" } else { "mean" }
            )?;
        }
        let m = &self.main;
        writeln!(
            f,
            "first stage alone: quality {:.3}; last stage alone: quality {:.3}; break-even escalation rate {}",
            m.weak_quality,
            m.strong_quality,
            opt(m.break_even_rate)
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "{:>9} {:>8} {:>8} {:>7} {:>7} {:>13} {:>13} {:>7}",
            "threshold", "strong%", "esc.rate", "quality", "PGR", "cost measured", "cost formula", "gap%"
        )?;
        for r in self.table() {
            writeln!(
                f,
                "{:>9.4} {:>7.1}% {:>8.3} {:>7.3} {:>7.3} {:>13.7} {:>13.7} {:>6.3}%",
                r.threshold,
                100.0 * r.strong_share,
                r.escalation_rate,
                r.quality,
                r.pgr,
                r.measured_cost,
                r.expected_cost,
                100.0 * r.cost_gap
            )?;
        }
        writeln!(
            f,
            "(cost formula: Σ c_i · Π p_j = c_w + P(esc) · c_s for two stages, measured rates and mean costs)"
        )?;
        writeln!(f)?;
        writeln!(f, "{:<18} {:>7} {:>9} {:>9} {:>13}", "estimator", "APGR", "CPT(50%)", "CPT(80%)", "max cost gap")?;
        for s in std::iter::once(m).chain(&self.baselines) {
            writeln!(
                f,
                "{:<18} {:>7.3} {:>9} {:>9} {:>12.3}%",
                s.label,
                s.apgr,
                opt(s.cpt50),
                opt(s.cpt80),
                100.0 * s.max_cost_gap()
            )?;
        }
        if let Some(t) = &self.verifier_training {
            let how = if t.cv_log_loss.is_empty() {
                "fixed".to_owned()
            } else {
                let losses: Vec<String> = t.cv_log_loss.iter().map(|(l2, loss)| format!("{l2}: {loss:.4}")).collect();
                format!("chosen by cross-validated log loss on the train side [{}]", losses.join(", "))
            };
            writeln!(
                f,
                "\nverifier: trained on {} examples ({:.1}% correct), l2 {} {how}",
                t.examples,
                100.0 * t.positive_share,
                t.l2
            )?;
        }
        if let Some(us) = self.scoring_us {
            writeln!(f, "verifier estimate (featurise + score + estimate, replay build): {us:.1} µs per stage answer")?;
        }
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        Ok(())
    }
}
