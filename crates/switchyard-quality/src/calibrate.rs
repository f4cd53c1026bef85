//! Calibration: choose a binary router's thresholds so that a target share of a calibration sample goes to the
//! strong model, as RouteLLM does.
//!
//! The sample needs prompts only (no outcomes): the thresholds are the midpoints between neighbouring sorted
//! scores at the target shares (see [`threshold_for_share`]), counting the queries the out-of-distribution guard
//! sends to the strong model as strong, so the share hit is the deployed router's. The balanced threshold serves requests without an
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
    /// Share of the sample the router sends to the strong model with the balanced threshold, out-of-distribution
    /// queries included (equal to the target up to rounding and ties).
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
    // The share to hit is the router's as deployed: queries the out-of-distribution guard sends to the strong model
    // count as strong whatever their score, so they enter the calibration with the largest possible score.
    let scores: Vec<f64> = prompts
        .iter()
        .map(|p| {
            let score = router.score(p, &mut scratch);
            if file.ood.trips(scratch.last_signals()) { f64::MAX } else { score }
        })
        .collect();
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

#[cfg(test)]
mod tests {
    use switchyard_learn::dataset::{ModelInfo, QueryRecord};
    use switchyard_learn::{FeatureConfig, OutcomeTable};

    use super::*;
    use crate::train::{BinaryTrainOptions, train_binary};

    #[test]
    fn calibration_hits_the_target_share_on_its_sample() {
        let words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"];
        let queries = (0..300)
            .map(|i| QueryRecord {
                id: format!("q{i}"),
                prompt: format!("{} {} {}", words[i % 10], words[(i / 10) % 10], "x".repeat(i % 17)),
                group: None,
                quality: vec![if i % 3 == 0 { 0.0 } else { 1.0 }, 1.0],
                cost_usd: vec![None, None],
            })
            .collect();
        let model = |n: &str| ModelInfo { name: n.into(), price: None };
        let table = OutcomeTable { name: "t".into(), models: vec![model("w"), model("s")], queries };
        let options = BinaryTrainOptions {
            features: FeatureConfig { hash_bits: 12, ..FeatureConfig::default() },
            l2_grid: vec![1e-2],
            folds: 3,
            ..BinaryTrainOptions::default()
        };
        let (file, _) = train_binary(&table, 0, 1, &options).expect("trains");
        let prompts: Vec<&str> = table.queries.iter().map(|q| q.prompt.as_str()).collect();
        // Shares 1 and 0 are the extremes: everything strong, nothing strong.
        let targets = CalibrationTargets { target_share: 0.3, quality_share: 1.0, cost_share: 0.0 };
        let (calibrated, report) = calibrate_binary(&file, &prompts, targets, "test").expect("calibrates");
        assert!((report.realised_share - 0.3).abs() <= 0.02, "{report}");
        assert_eq!(calibrated.thresholds, report.thresholds);
        assert!(report.thresholds.quality <= report.thresholds.balanced);
        assert!(report.thresholds.balanced <= report.thresholds.cost);
        assert!(calibrate_binary(&file, &[], targets, "none").is_err());
        // Every threshold is finite, so the calibrated router saves and loads.
        let saved = crate::learned::RouterFile::Binary(calibrated).to_json().expect("serialises");
        assert!(crate::learned::RouterFile::from_json(&saved).is_ok());
    }
}
