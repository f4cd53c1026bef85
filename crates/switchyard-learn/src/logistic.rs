//! L2-regularised logistic regression on sparse features.
//!
//! Routers and verifiers need a probability from a few thousand hashed features, trained offline on tens of
//! thousands of examples and evaluated in microseconds. Training minimises the weighted mean log loss plus
//! `l2 / 2 * |w|^2` (the bias is not penalised) with full-batch L-BFGS and a backtracking line search. Targets may
//! be soft (any value in `[0, 1]`): the minimiser then estimates the expected target, which is what a router
//! scoring "expected gain of the strong model" needs. The procedure has no randomness: the same data in the same
//! order gives the same model, bit for bit, on a given platform.
//!
//! Only features that occur in the training data can get a non-zero weight, so training runs in a compact space
//! of those features and the model stores them sparsely; [`LogisticModel`] saves as JSON with a format version.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{LearnError, Result};
use crate::features::SparseVec;

/// Settings of [`train`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Strength of the L2 penalty on the weights (not the bias), relative to the mean loss.
    pub l2: f64,
    /// Most L-BFGS iterations.
    pub max_iter: usize,
    /// Stop when the largest gradient component falls below this.
    pub tolerance: f64,
    /// L-BFGS memory (pairs of past steps).
    pub history: usize,
    /// Stop when an iteration lowers the objective by less than this fraction of its value.
    pub relative_tolerance: f64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self { l2: 1e-3, max_iter: 300, tolerance: 1e-6, history: 10, relative_tolerance: 1e-6 }
    }
}

/// What training did, for logs and reports.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrainSummary {
    /// Iterations run.
    pub iterations: usize,
    /// Final objective (mean log loss plus penalty).
    pub objective: f64,
    /// Final largest gradient component.
    pub gradient_norm: f64,
    /// Features with a weight (those present in the training data).
    pub active_features: usize,
}

/// A trained model: `P(y = 1 | x) = sigmoid(bias + w . x)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "LogisticFile", into = "LogisticFile")]
pub struct LogisticModel {
    weights: Vec<f32>,
    bias: f32,
    l2: f64,
}

/// The version of the saved form; bump on any change of meaning.
pub const LOGISTIC_FORMAT_VERSION: u32 = 1;

/// The saved form: sparse non-zero weights.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogisticFile {
    format_version: u32,
    dim: usize,
    l2: f64,
    bias: f32,
    indices: Vec<u32>,
    weights: Vec<f32>,
}

impl From<LogisticModel> for LogisticFile {
    fn from(m: LogisticModel) -> Self {
        let (indices, weights) =
            m.weights.iter().enumerate().filter(|(_, w)| **w != 0.0).map(|(i, w)| (i as u32, *w)).unzip();
        LogisticFile {
            format_version: LOGISTIC_FORMAT_VERSION,
            dim: m.weights.len(),
            l2: m.l2,
            bias: m.bias,
            indices,
            weights,
        }
    }
}

impl TryFrom<LogisticFile> for LogisticModel {
    type Error = LearnError;

    fn try_from(f: LogisticFile) -> Result<Self> {
        if f.format_version != LOGISTIC_FORMAT_VERSION {
            return Err(LearnError::FormatVersion {
                what: "logistic model",
                found: f.format_version,
                expected: LOGISTIC_FORMAT_VERSION,
            });
        }
        if f.indices.len() != f.weights.len() {
            return Err(LearnError::invalid("weights", "indices and weights differ in length"));
        }
        let mut weights = vec![0.0; f.dim];
        for (&i, &w) in f.indices.iter().zip(&f.weights) {
            let slot = weights
                .get_mut(i as usize)
                .ok_or_else(|| LearnError::invalid("indices", format!("index {i} is beyond dim {}", f.dim)))?;
            *slot = w;
        }
        Ok(LogisticModel { weights, bias: f.bias, l2: f.l2 })
    }
}

impl LogisticModel {
    /// The log-odds `bias + w . x`.
    pub fn logit(&self, x: &SparseVec) -> f64 {
        f64::from(self.bias + x.dot(&self.weights))
    }

    /// `P(y = 1 | x)`.
    pub fn predict_proba(&self, x: &SparseVec) -> f64 {
        sigmoid(self.logit(x))
    }

    /// The feature dimension the model was trained for.
    pub fn dim(&self) -> usize {
        self.weights.len()
    }

    /// The bias.
    pub fn bias(&self) -> f32 {
        self.bias
    }

    /// The weight of feature `index` (0 beyond the dimension).
    pub fn weight(&self, index: usize) -> f32 {
        self.weights.get(index).copied().unwrap_or(0.0)
    }

    /// The L2 strength it was trained with.
    pub fn l2(&self) -> f64 {
        self.l2
    }

    /// Writes the model as JSON.
    pub fn save_json(&self, path: &Path) -> Result<()> {
        let text =
            serde_json::to_string(self).map_err(|source| LearnError::Json { path: path.to_path_buf(), source })?;
        std::fs::write(path, text).map_err(|e| LearnError::io(path, e))
    }

    /// Reads a model written by [`LogisticModel::save_json`].
    pub fn load_json(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| LearnError::io(path, e))?;
        serde_json::from_str(&text).map_err(|source| LearnError::Json { path: path.to_path_buf(), source })
    }
}

/// The logistic function, without overflow.
pub fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 { 1.0 / (1.0 + (-z).exp()) } else { z.exp() / (1.0 + z.exp()) }
}

/// `ln(1 + e^z)` without overflow.
fn softplus(z: f64) -> f64 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

/// The training data in the compact space of the features it uses.
struct Compact {
    /// Global index of each compact feature.
    global: Vec<u32>,
    /// CSR rows.
    offsets: Vec<usize>,
    cols: Vec<u32>,
    vals: Vec<f64>,
}

impl Compact {
    fn new(xs: &[SparseVec]) -> Self {
        let mut global: Vec<u32> = xs.iter().flat_map(|x| x.indices().iter().copied()).collect();
        global.sort_unstable();
        global.dedup();
        let mut offsets = Vec::with_capacity(xs.len() + 1);
        offsets.push(0);
        let mut cols = Vec::new();
        let mut vals = Vec::new();
        for x in xs {
            for (i, v) in x.iter() {
                // Present by construction.
                let c = global.binary_search(&i).unwrap_or(0);
                cols.push(c as u32);
                vals.push(f64::from(v));
            }
            offsets.push(cols.len());
        }
        Compact { global, offsets, cols, vals }
    }

    fn row(&self, r: usize) -> impl Iterator<Item = (usize, f64)> + '_ {
        let (a, b) = (self.offsets[r], self.offsets[r + 1]);
        self.cols[a..b].iter().map(|&c| c as usize).zip(self.vals[a..b].iter().copied())
    }
}

/// Objective and gradient at `theta` (weights then bias).
fn objective(data: &Compact, ys: &[f64], ws: &[f64], total_w: f64, l2: f64, theta: &[f64], grad: &mut [f64]) -> f64 {
    let d = data.global.len();
    grad.iter_mut().for_each(|g| *g = 0.0);
    let mut loss = 0.0;
    for r in 0..ys.len() {
        let z = theta[d] + data.row(r).map(|(c, v)| theta[c] * v).sum::<f64>();
        loss += ws[r] * (softplus(z) - ys[r] * z);
        let residual = ws[r] * (sigmoid(z) - ys[r]);
        for (c, v) in data.row(r) {
            grad[c] += residual * v;
        }
        grad[d] += residual;
    }
    let mut penalty = 0.0;
    for c in 0..d {
        grad[c] = grad[c] / total_w + l2 * theta[c];
        penalty += theta[c] * theta[c];
    }
    grad[d] /= total_w;
    loss / total_w + 0.5 * l2 * penalty
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Trains on `xs` with targets `ys` in `[0, 1]` and optional non-negative sample weights, for feature vectors of
/// length `dim`.
pub fn train(
    xs: &[SparseVec],
    ys: &[f64],
    weights: Option<&[f64]>,
    dim: usize,
    config: &TrainConfig,
) -> Result<(LogisticModel, TrainSummary)> {
    if xs.is_empty() {
        return Err(LearnError::Empty { what: "no training example".into() });
    }
    if ys.len() != xs.len() || weights.is_some_and(|w| w.len() != xs.len()) {
        return Err(LearnError::invalid("targets", "examples, targets and weights differ in length"));
    }
    if let Some(y) = ys.iter().find(|y| !(0.0..=1.0).contains(*y)) {
        return Err(LearnError::invalid("targets", format!("target {y} is outside [0, 1]")));
    }
    if !(config.l2 >= 0.0 && config.l2.is_finite()) || config.history == 0 {
        return Err(LearnError::invalid("train config", format!("{config:?}")));
    }
    let ws: Vec<f64> = weights.map_or_else(|| vec![1.0; xs.len()], <[f64]>::to_vec);
    if ws.iter().any(|w| !(*w >= 0.0 && w.is_finite())) {
        return Err(LearnError::invalid("weights", "sample weights must be finite and non-negative"));
    }
    let total_w: f64 = ws.iter().sum();
    if total_w <= 0.0 {
        return Err(LearnError::Empty { what: "all sample weights are zero".into() });
    }
    let data = Compact::new(xs);
    if data.global.last().is_some_and(|&i| i as usize >= dim) {
        return Err(LearnError::invalid("dim", format!("features reach beyond dim {dim}")));
    }
    let n = data.global.len() + 1;
    let mut theta = vec![0.0; n];
    let mut grad = vec![0.0; n];
    let mut f = objective(&data, ys, &ws, total_w, config.l2, &theta, &mut grad);
    let mut s_hist: Vec<Vec<f64>> = Vec::new();
    let mut y_hist: Vec<Vec<f64>> = Vec::new();
    let mut iterations = 0;
    let mut new_theta = vec![0.0; n];
    let mut new_grad = vec![0.0; n];
    while iterations < config.max_iter {
        let gmax = grad.iter().fold(0.0f64, |m, g| m.max(g.abs()));
        if gmax < config.tolerance {
            break;
        }
        iterations += 1;
        // Two-loop recursion: direction = -H * grad.
        let mut q = grad.clone();
        let mut alphas = Vec::with_capacity(s_hist.len());
        for (s, y) in s_hist.iter().zip(&y_hist).rev() {
            let a = dot(s, &q) / dot(y, s);
            q.iter_mut().zip(y).for_each(|(qi, yi)| *qi -= a * yi);
            alphas.push(a);
        }
        let gamma = match (s_hist.last(), y_hist.last()) {
            (Some(s), Some(y)) => dot(s, y) / dot(y, y),
            _ => 1.0 / gmax.max(1e-12),
        };
        q.iter_mut().for_each(|qi| *qi *= gamma);
        for ((s, y), a) in s_hist.iter().zip(&y_hist).zip(alphas.iter().rev()) {
            let b = dot(y, &q) / dot(y, s);
            q.iter_mut().zip(s).for_each(|(qi, si)| *qi += (a - b) * si);
        }
        let mut dir: Vec<f64> = q.iter().map(|v| -v).collect();
        let mut slope = dot(&grad, &dir);
        if slope >= 0.0 {
            // Not a descent direction (numerical trouble): forget the history, take steepest descent.
            s_hist.clear();
            y_hist.clear();
            dir = grad.iter().map(|g| -g / gmax).collect();
            slope = dot(&grad, &dir);
        }
        // Backtracking line search (Armijo).
        let mut step = 1.0;
        let mut accepted = false;
        for _ in 0..40 {
            for i in 0..n {
                new_theta[i] = theta[i] + step * dir[i];
            }
            let f_new = objective(&data, ys, &ws, total_w, config.l2, &new_theta, &mut new_grad);
            if f_new <= f + 1e-4 * step * slope {
                let s: Vec<f64> = new_theta.iter().zip(&theta).map(|(a, b)| a - b).collect();
                let y: Vec<f64> = new_grad.iter().zip(&grad).map(|(a, b)| a - b).collect();
                if dot(&s, &y) > 1e-12 {
                    if s_hist.len() == config.history {
                        s_hist.remove(0);
                        y_hist.remove(0);
                    }
                    s_hist.push(s);
                    y_hist.push(y);
                }
                let decrease = f - f_new;
                std::mem::swap(&mut theta, &mut new_theta);
                std::mem::swap(&mut grad, &mut new_grad);
                f = f_new;
                accepted = decrease > config.relative_tolerance * f.abs().max(1e-12);
                break;
            }
            step *= 0.5;
        }
        if !accepted {
            break;
        }
    }
    let mut weights = vec![0.0f32; dim];
    for (c, &g) in data.global.iter().enumerate() {
        weights[g as usize] = theta[c] as f32;
    }
    let summary = TrainSummary {
        iterations,
        objective: f,
        gradient_norm: grad.iter().fold(0.0f64, |m, g| m.max(g.abs())),
        active_features: data.global.len(),
    };
    Ok((LogisticModel { weights, bias: theta[n - 1] as f32, l2: config.l2 }, summary))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::SplitMix64;

    fn toy(n: usize, seed: u64) -> (Vec<SparseVec>, Vec<f64>) {
        // Label 1 iff feature 0 is present; features 1..20 are noise.
        let mut rng = SplitMix64::new(seed);
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        for _ in 0..n {
            let positive = rng.below(2) == 1;
            let mut pairs = vec![(1 + rng.below(20) as u32, 1.0), (1 + rng.below(20) as u32, 1.0)];
            if positive {
                pairs.push((0, 1.0));
            }
            xs.push(SparseVec::from_pairs(pairs));
            ys.push(if positive { 1.0 } else { 0.0 });
        }
        (xs, ys)
    }

    #[test]
    fn learns_a_separable_problem() {
        let (xs, ys) = toy(400, 1);
        let (m, summary) =
            train(&xs, &ys, None, 32, &TrainConfig { l2: 1e-4, ..TrainConfig::default() }).expect("trains");
        assert!(summary.iterations > 0);
        let (tx, ty) = toy(200, 2);
        let correct = tx.iter().zip(&ty).filter(|(x, y)| (m.predict_proba(x) > 0.5) == (**y > 0.5)).count();
        assert_eq!(correct, 200);
        assert!(m.weight(0) > 1.0);
    }

    #[test]
    fn deterministic_and_regularisation_shrinks() {
        let (xs, ys) = toy(300, 3);
        let cfg = TrainConfig { l2: 1e-3, ..TrainConfig::default() };
        let (a, _) = train(&xs, &ys, None, 32, &cfg).expect("trains");
        let (b, _) = train(&xs, &ys, None, 32, &cfg).expect("trains");
        assert_eq!(a, b);
        let (c, _) = train(&xs, &ys, None, 32, &TrainConfig { l2: 1.0, ..cfg }).expect("trains");
        assert!(c.weight(0).abs() < a.weight(0).abs());
    }

    #[test]
    fn soft_targets_estimate_the_mean() {
        // One constant feature, targets averaging 0.3: the optimum predicts 0.3.
        let xs = vec![SparseVec::from_pairs(vec![(0, 1.0)]); 10];
        let ys = [0.0, 0.0, 0.5, 0.5, 0.5, 0.5, 0.0, 0.0, 1.0, 0.0];
        let (m, _) = train(&xs, &ys, None, 1, &TrainConfig { l2: 0.0, ..TrainConfig::default() }).expect("trains");
        assert!((m.predict_proba(&xs[0]) - 0.3).abs() < 1e-4, "{}", m.predict_proba(&xs[0]));
    }

    #[test]
    fn json_round_trip_and_version_check() {
        let (xs, ys) = toy(100, 4);
        let (m, _) = train(&xs, &ys, None, 64, &TrainConfig::default()).expect("trains");
        let text = serde_json::to_string(&m).expect("serialises");
        let back: LogisticModel = serde_json::from_str(&text).expect("parses");
        assert_eq!(back, m);
        let wrong = text.replace("\"format_version\":1", "\"format_version\":99");
        let err = serde_json::from_str::<LogisticModel>(&wrong).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("format version 99"), "{err}");
    }

    #[test]
    fn bad_inputs_are_refused() {
        let (xs, ys) = toy(10, 5);
        assert!(train(&[], &[], None, 8, &TrainConfig::default()).is_err());
        assert!(train(&xs, &ys[..5], None, 32, &TrainConfig::default()).is_err());
        assert!(train(&xs, &ys, None, 4, &TrainConfig::default()).is_err());
        let mut bad = ys.clone();
        bad[0] = 2.0;
        assert!(train(&xs, &bad, None, 32, &TrainConfig::default()).is_err());
    }
}
