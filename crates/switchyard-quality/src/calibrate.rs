//! Calibration: choose a binary router's thresholds so that a target share of a calibration sample goes to the
//! strong model, as RouteLLM does.
//!
//! The sample needs prompts only (no outcomes): the thresholds are the midpoints between neighbouring sorted
//! scores at the target shares (see [`threshold_for_share`]). The balanced threshold serves requests without an
//! objective; the `quality` and `cost` objectives get their own shares.

use serde::{Deserialize, Serialize};
use switchyard_learn::metrics::threshold_for_share;

use crate::error::{QualityError, Result};
use crate::learned::{BinaryRouter, BinaryRouterFile, Calibration, RouterScratch, Thresholds};

/// Target strong shares of a calibration.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationTargets {
    /// Share for the balanced threshold (no objective).
    pub target_share: f64,
    /// Share for objective `quality`.
    pub quality_share: f64,
    /// Share for objective `cost`.
    pub cost_share: f64,
}

impl Default for CalibrationTargets {
    fn default() -> Self {
        Self { target_share: 0.5, quality_share: 0.8, cost_share: 0.2 }
    }
}

/// The outcome of a calibration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationReport {
    /// Prompts in the sample.
    pub sample: usize,
    /// The targets.
    pub targets: CalibrationTargets,
    /// The new thresholds.
    pub thresholds: Thresholds,
    /// Share of the sample at or above the balanced threshold (equal to the target up to rounding and ties).
    pub realised_share: f64,
}

impl std::fmt::Display for CalibrationReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "calibrated on {} prompts", self.sample)?;
        writeln!(f, "{:<10} {:>12} {:>12}", "objective", "target share", "threshold")?;
        let t = &self.thresholds;
        let c = &self.targets;
        writeln!(f, "{:<10} {:>12.3} {:>12.6}", "balanced", c.target_share, t.balanced)?;
        writeln!(f, "{:<10} {:>12.3} {:>12.6}", "quality", c.quality_share, t.quality)?;
        writeln!(f, "{:<10} {:>12.3} {:>12.6}", "cost", c.cost_share, t.cost)?;
        writeln!(f, "realised balanced share on the sample: {:.3}", self.realised_share)
    }
}

/// Scores `prompts` with the router and returns its file with calibrated thresholds.
pub fn calibrate_binary(
    file: &BinaryRouterFile,
    prompts: &[&str],
    targets: CalibrationTargets,
    source: &str,
) -> Result<(BinaryRouterFile, CalibrationReport)> {
    if prompts.is_empty() {
        return Err(QualityError::invalid("calibration sample", "no prompt"));
    }
    let router = BinaryRouter::new(file.clone())?;
    let mut scratch = RouterScratch::default();
    let scores: Vec<f64> = prompts.iter().map(|p| router.score(p, &mut scratch)).collect();
    let thresholds = Thresholds {
        balanced: threshold_for_share(&scores, targets.target_share)?,
        quality: threshold_for_share(&scores, targets.quality_share)?,
        cost: threshold_for_share(&scores, targets.cost_share)?,
    };
    let realised_share = scores.iter().filter(|s| **s >= thresholds.balanced).count() as f64 / scores.len() as f64;
    let mut out = file.clone();
    out.thresholds = thresholds;
    out.calibration = Calibration {
        target_share: targets.target_share,
        quality_share: targets.quality_share,
        cost_share: targets.cost_share,
        sample: prompts.len(),
        source: source.to_string(),
    };
    Ok((out, CalibrationReport { sample: prompts.len(), targets, thresholds, realised_share }))
}
