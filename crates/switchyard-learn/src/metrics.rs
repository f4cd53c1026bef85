//! How routers are measured: PGR, APGR and CPT exactly as RouteLLM defines them, plus quality/cost curves.
//!
//! Definitions (RouteLLM evaluation code, restated in the data README):
//! - strong-call share `f`: the share of queries sent to the strong model;
//! - `PGR(f) = (quality(f) - quality(weak)) / (quality(strong) - quality(weak))`, where `quality(weak)` and
//!   `quality(strong)` are the mean qualities of sending every query to one model;
//! - `APGR`: the area under PGR over `f` in `[0, 1]` by the trapezoid rule, endpoints `(0, 0)` and `(1, 1)`
//!   included;
//! - `CPT(x)`: the smallest `f` with `PGR >= x`, by linear interpolation between the two curve points around the
//!   first crossing.
//!
//! A binary router is a score per query and a threshold; [`binary_sweep`] evaluates every distinct threshold
//! (queries with equal scores always go the same way), which is the full-resolution version of RouteLLM's
//! percentile sweep.

use serde::{Deserialize, Serialize};

use crate::error::{LearnError, Result};

/// One operating point of a binary router.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// Queries with a score at or above this go to the strong model (the first point's is just above every score).
    pub threshold: f64,
    /// Share of queries sent to the strong model.
    pub strong_share: f64,
    /// Mean quality of the routed answers.
    pub quality: f64,
    /// Performance gap recovered.
    pub pgr: f64,
    /// Mean cost per query in USD, when every query has both costs.
    pub cost: Option<f64>,
}

/// A binary router's full curve and the single-model references.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BinaryCurve {
    /// Points in increasing strong share, from `(0, 0)` to `(1, 1)`.
    pub points: Vec<CurvePoint>,
    /// Mean quality of the weak model alone.
    pub weak_quality: f64,
    /// Mean quality of the strong model alone.
    pub strong_quality: f64,
    /// Mean cost of the weak model alone.
    pub weak_cost: Option<f64>,
    /// Mean cost of the strong model alone.
    pub strong_cost: Option<f64>,
}

impl BinaryCurve {
    /// `(strong share, PGR)` pairs.
    pub fn pgr_points(&self) -> Vec<(f64, f64)> {
        self.points.iter().map(|p| (p.strong_share, p.pgr)).collect()
    }

    /// The APGR of the curve.
    pub fn apgr(&self) -> f64 {
        apgr(&self.pgr_points())
    }

    /// `CPT(target)`, e.g. `cpt(0.5)` for CPT(50%).
    pub fn cpt(&self, target: f64) -> Option<f64> {
        cpt(&self.pgr_points(), target)
    }

    /// The operating point of `threshold`: the queries with score `>= threshold` go strong, which is the point
    /// with the smallest threshold not below it (the all-weak point for a threshold above every score).
    pub fn at_threshold(&self, threshold: f64) -> Option<&CurvePoint> {
        self.points.iter().rev().find(|p| p.threshold >= threshold).or(self.points.first())
    }
}

/// `PGR` of a mean quality, given the weak and strong references (an error when they are equal).
pub fn pgr(quality: f64, weak_quality: f64, strong_quality: f64) -> Result<f64> {
    let gap = strong_quality - weak_quality;
    if gap.abs() < 1e-12 {
        return Err(LearnError::invalid("pgr", "weak and strong models have the same quality: no gap to recover"));
    }
    Ok((quality - weak_quality) / gap)
}

/// The area under `(strong share, PGR)` points by the trapezoid rule; points are sorted by share, and `(0, 0)`
/// and `(1, 1)` are added when the points do not already start at share 0 and end at share 1.
pub fn apgr(points: &[(f64, f64)]) -> f64 {
    let pts = with_endpoints(points);
    pts.windows(2).map(|w| (w[1].0 - w[0].0) * (w[0].1 + w[1].1) / 2.0).sum()
}

/// `CPT(target)`: the smallest strong share with `PGR >= target`, linearly interpolated between the points around
/// the first crossing; `None` if the curve never reaches it. Endpoints are added as for [`apgr`].
pub fn cpt(points: &[(f64, f64)], target: f64) -> Option<f64> {
    let pts = with_endpoints(points);
    let first = pts.iter().position(|p| p.1 >= target)?;
    if first == 0 {
        return Some(pts[0].0);
    }
    let (f0, p0) = pts[first - 1];
    let (f1, p1) = pts[first];
    Some(f0 + (target - p0) * (f1 - f0) / (p1 - p0))
}

fn with_endpoints(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut pts: Vec<(f64, f64)> = points.to_vec();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    if pts.first().is_none_or(|p| p.0 > 0.0) {
        pts.insert(0, (0.0, 0.0));
    }
    if pts.last().is_none_or(|p| p.0 < 1.0) {
        pts.push((1.0, 1.0));
    }
    pts
}

/// Per-query inputs of [`binary_sweep`].
#[derive(Debug, Clone, Copy)]
pub struct BinaryOutcome {
    /// Router score: higher means "send to the strong model".
    pub score: f64,
    /// Quality of the weak model's answer.
    pub weak_quality: f64,
    /// Quality of the strong model's answer.
    pub strong_quality: f64,
    /// Costs of the two answers, when known.
    pub costs: Option<(f64, f64)>,
}

/// Evaluates every distinct threshold of a binary router. Errors on empty input, a non-finite score, or equal
/// weak and strong mean qualities.
pub fn binary_sweep(outcomes: &[BinaryOutcome]) -> Result<BinaryCurve> {
    let n = outcomes.len();
    if n == 0 {
        return Err(LearnError::Empty { what: "no query to sweep".into() });
    }
    if outcomes.iter().any(|o| !o.score.is_finite()) {
        return Err(LearnError::invalid("score", "router scores must be finite"));
    }
    let nf = n as f64;
    let weak_quality = outcomes.iter().map(|o| o.weak_quality).sum::<f64>() / nf;
    let strong_quality = outcomes.iter().map(|o| o.strong_quality).sum::<f64>() / nf;
    let costed = outcomes.iter().all(|o| o.costs.is_some());
    let cost_of = |o: &BinaryOutcome| o.costs.unwrap_or((0.0, 0.0));
    let weak_cost = costed.then(|| outcomes.iter().map(|o| cost_of(o).0).sum::<f64>() / nf);
    let strong_cost = costed.then(|| outcomes.iter().map(|o| cost_of(o).1).sum::<f64>() / nf);

    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| outcomes[b].score.total_cmp(&outcomes[a].score));
    let mut quality_sum = weak_quality * nf;
    let mut cost_sum = weak_cost.unwrap_or(0.0) * nf;
    let point = |threshold: f64, k: usize, q: f64, c: f64| -> Result<CurvePoint> {
        let quality = q / nf;
        Ok(CurvePoint {
            threshold,
            strong_share: k as f64 / nf,
            quality,
            pgr: pgr(quality, weak_quality, strong_quality)?,
            cost: costed.then_some(c / nf),
        })
    };
    // The all-weak point's threshold is just above the largest score (finite, so reports serialise as JSON).
    let top = finite_above(outcomes[order[0]].score);
    let mut points = vec![point(top, 0, quality_sum, cost_sum)?];
    let mut k = 0;
    while k < n {
        let t = outcomes[order[k]].score;
        while k < n && outcomes[order[k]].score == t {
            let o = &outcomes[order[k]];
            quality_sum += o.strong_quality - o.weak_quality;
            let (cw, cs) = cost_of(o);
            cost_sum += cs - cw;
            k += 1;
        }
        points.push(point(t, k, quality_sum, cost_sum)?);
    }
    // Exact endpoints despite rounding: all-weak is PGR 0, all-strong is PGR 1.
    if let Some(last) = points.last_mut() {
        last.pgr = 1.0;
        last.quality = strong_quality;
    }
    Ok(BinaryCurve { points, weak_quality, strong_quality, weak_cost, strong_cost })
}

/// The threshold that sends `share` of these scores to the strong side (score `>=` threshold): the midpoint
/// between the `k`-th and `k+1`-th largest scores for `k = round(share * n)`, so a fresh sample from the same
/// distribution lands near the same share. `share` 0 gives the next float above the largest score (finite, so a
/// saved router stays valid JSON), 1 gives the smallest score.
pub fn threshold_for_share(scores: &[f64], share: f64) -> Result<f64> {
    if scores.is_empty() {
        return Err(LearnError::Empty { what: "no score to calibrate on".into() });
    }
    if !(0.0..=1.0).contains(&share) {
        return Err(LearnError::invalid("share", format!("{share} is not in [0, 1]")));
    }
    let mut sorted: Vec<f64> = scores.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let k = (share * sorted.len() as f64).round() as usize;
    Ok(match k {
        0 => finite_above(sorted[0]),
        k if k >= sorted.len() => sorted[sorted.len() - 1],
        // Halves first: the sum of two huge scores must not overflow.
        k => sorted[k - 1] / 2.0 + sorted[k] / 2.0,
    })
}

/// The next float above `x`, kept finite (`f64::MAX` stays `f64::MAX`).
fn finite_above(x: f64) -> f64 {
    let up = x.next_up();
    if up.is_finite() { up } else { f64::MAX }
}

/// A point of a quality/cost curve (N-way routers, single models).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostQualityPoint {
    /// What produced the point (a model's name, or a router setting such as `target=0.8`).
    pub label: String,
    /// Mean cost per query in USD.
    pub cost: f64,
    /// Mean quality.
    pub quality: f64,
}

/// The points not dominated by another (cheaper-or-equal and better-or-equal, one strictly), by increasing cost.
pub fn pareto_frontier(points: &[CostQualityPoint]) -> Vec<CostQualityPoint> {
    let mut sorted: Vec<&CostQualityPoint> = points.iter().collect();
    sorted.sort_by(|a, b| a.cost.total_cmp(&b.cost).then(b.quality.total_cmp(&a.quality)));
    let mut out: Vec<CostQualityPoint> = Vec::new();
    for p in sorted {
        if out.last().is_none_or(|last| p.quality > last.quality) {
            out.push(p.clone());
        }
    }
    out
}

/// The best quality a curve reaches at a mean cost of at most `budget` (`None` if every point costs more).
pub fn best_quality_within(points: &[CostQualityPoint], budget: f64) -> Option<f64> {
    points.iter().filter(|p| p.cost <= budget).map(|p| p.quality).max_by(f64::total_cmp)
}

/// The lowest mean cost at which a curve reaches `quality` (`None` if it never does).
pub fn cheapest_reaching(points: &[CostQualityPoint], quality: f64) -> Option<f64> {
    points.iter().filter(|p| p.quality >= quality).map(|p| p.cost).min_by(f64::total_cmp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    fn outcome(score: f64, w: f64, s: f64) -> BinaryOutcome {
        BinaryOutcome { score, weak_quality: w, strong_quality: s, costs: Some((1.0, 10.0)) }
    }

    #[test]
    fn apgr_of_hand_computed_curves() {
        // The diagonal is 0.5.
        assert!(close(apgr(&[]), 0.5));
        // A step at f = 0.5 to PGR 1: trapezoids 0.5*(0+1)/2 + 0.5*(1+1)/2 = 0.75.
        assert!(close(apgr(&[(0.5, 1.0)]), 0.75));
        // Unsorted input with explicit endpoints.
        assert!(close(apgr(&[(1.0, 1.0), (0.25, 0.5), (0.0, 0.0)]), 0.25 * 0.25 + 0.75 * 0.75));
    }

    #[test]
    fn cpt_interpolates_the_first_crossing() {
        let pts = [(0.0, 0.0), (0.2, 0.4), (0.4, 0.6), (0.6, 0.5), (1.0, 1.0)];
        // 0.5 is crossed between (0.2, 0.4) and (0.4, 0.6): f = 0.3.
        assert!(close(cpt(&pts, 0.5).unwrap_or(f64::NAN), 0.3));
        // 0.8 is crossed between (0.6, 0.5) and (1.0, 1.0): f = 0.6 + 0.3 * 0.4 / 0.5 = 0.84.
        assert!(close(cpt(&pts, 0.8).unwrap_or(f64::NAN), 0.84));
        assert!(close(cpt(&pts, 0.0).unwrap_or(f64::NAN), 0.0));
        assert_eq!(cpt(&pts, 1.5), None);
    }

    #[test]
    fn sweep_matches_hand_computation() {
        // Weak mean 0.25, strong mean 0.75, gap 0.5.
        let qs = [outcome(0.9, 0.0, 1.0), outcome(0.7, 0.0, 1.0), outcome(0.5, 1.0, 1.0), outcome(0.1, 0.0, 0.0)];
        let c = binary_sweep(&qs).expect("sweeps");
        let shares: Vec<f64> = c.points.iter().map(|p| p.strong_share).collect();
        assert_eq!(shares, [0.0, 0.25, 0.5, 0.75, 1.0]);
        let pgrs: Vec<f64> = c.points.iter().map(|p| p.pgr).collect();
        assert_eq!(pgrs, [0.0, 0.5, 1.0, 1.0, 1.0]);
        // Area: 0.25*0.25 + 0.25*0.75 + 0.25 + 0.25 = 0.75.
        assert!(close(c.apgr(), 0.75));
        assert!(close(c.cpt(0.5).unwrap_or(f64::NAN), 0.25));
        assert!(close(c.cpt(0.8).unwrap_or(f64::NAN), 0.25 + 0.25 * 0.3 / 0.5));
        // Costs: all weak 1.0, each strong call adds 9/4 to the mean.
        assert_eq!(c.points[2].cost, Some(1.0 + 2.0 * 9.0 / 4.0));
        assert_eq!(c.weak_cost, Some(1.0));
        assert_eq!(c.at_threshold(0.6).map(|p| p.strong_share), Some(0.5));
        assert_eq!(c.at_threshold(0.7).map(|p| p.strong_share), Some(0.5));
        assert_eq!(c.at_threshold(2.0).map(|p| p.strong_share), Some(0.0));
        assert_eq!(c.at_threshold(0.95).map(|p| p.strong_share), Some(0.0));
    }

    #[test]
    fn ties_move_together_and_bad_input_is_refused() {
        let qs = [outcome(0.5, 0.0, 1.0), outcome(0.5, 1.0, 1.0), outcome(0.2, 0.0, 0.0)];
        let c = binary_sweep(&qs).expect("sweeps");
        assert_eq!(c.points.len(), 3);
        assert!(close(c.points[1].strong_share, 2.0 / 3.0));
        assert!(binary_sweep(&[]).is_err());
        assert!(binary_sweep(&[outcome(f64::NAN, 0.0, 1.0)]).is_err());
        assert!(binary_sweep(&[outcome(0.1, 1.0, 1.0)]).is_err());
    }

    #[test]
    fn calibration_threshold_hits_the_share() {
        let scores: Vec<f64> = (0..100).map(f64::from).collect();
        let t = threshold_for_share(&scores, 0.3).expect("valid");
        assert_eq!(scores.iter().filter(|s| **s >= t).count(), 30);
        let none = threshold_for_share(&scores, 0.0).unwrap_or_default();
        assert!(none > 99.0 && none.is_finite());
        assert_eq!(threshold_for_share(&scores, 1.0).ok(), Some(0.0));
        assert!(threshold_for_share(&scores, 1.5).is_err());
    }

    #[test]
    fn frontier_and_budget_queries() {
        let p = |label: &str, cost, quality| CostQualityPoint { label: label.into(), cost, quality };
        let pts = [p("a", 1.0, 0.5), p("b", 2.0, 0.4), p("c", 3.0, 0.9), p("d", 0.5, 0.2)];
        let f: Vec<String> = pareto_frontier(&pts).into_iter().map(|x| x.label).collect();
        assert_eq!(f, ["d", "a", "c"]);
        assert_eq!(best_quality_within(&pts, 2.5), Some(0.5));
        assert_eq!(cheapest_reaching(&pts, 0.45), Some(1.0));
        assert_eq!(cheapest_reaching(&pts, 0.95), None);
    }
}
