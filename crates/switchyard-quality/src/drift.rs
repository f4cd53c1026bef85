//! Cold start and drift: the out-of-distribution guard and the population-stability drift monitor.
//!
//! A learned router is only as good as the resemblance between a query and its training data. Two measures watch
//! that resemblance, both computed from the same per-query [`QuerySignals`]:
//!
//! - **Out-of-distribution guard** (one query): the *unseen share* is the share of the query's hashed n-gram
//!   features (word unigrams, bigrams and character n-grams together, counted by entry) that are not in the
//!   router's [`Vocabulary`]; a prompt with no n-gram at all has share 1. A query whose unseen share is above
//!   [`OodGuard::max_unseen_share`] goes to the safe side (the strong model, or the N-way router's most accurate
//!   candidate). The vocabulary is the set of features of the training queries of the first cross-validation
//!   fold, and the limit is the 99th percentile of the unseen share of that fold's held-out queries, so about 1 %
//!   of in-distribution queries trip it. (Measuring live queries against the whole training vocabulary instead
//!   would make them look more familiar than the held-out queries the limit was set on.)
//! - **Drift monitor** (a window of queries): the population stability index, `PSI = sum_b (live_b - base_b) *
//!   ln(live_b / base_b)` over the bins `b` of each signal, with bin edges at the deciles of the baseline (held-out
//!   training queries) and bin shares floored at `1e-4`. A group's PSI is the largest PSI of its signals (the
//!   hashed groups have one signal each, their own unseen share; the stats group has one per statistic). Usual
//!   reading: below 0.1 stable, 0.1 to 0.25 moderate, above 0.25 significant drift.

use serde::{Deserialize, Serialize};
use switchyard_learn::features::{STATS_LEN, STATS_NAMES};
use switchyard_learn::split::Split;
use switchyard_learn::{FeatureGroup, Featurizer, SparseVec};

use crate::error::{QualityError, Result};

/// Number of drift signals: three unseen shares and the statistics (without the constant).
pub const SIGNALS: usize = 3 + STATS_LEN - 1;

/// The name of drift signal `i`.
pub fn signal_name(i: usize) -> &'static str {
    match i {
        0 => "word_unigram_unseen",
        1 => "word_bigram_unseen",
        2 => "char_ngram_unseen",
        i => STATS_NAMES.get(i - 3).copied().unwrap_or("?"),
    }
}

/// The feature group drift signal `i` belongs to.
pub fn signal_group(i: usize) -> FeatureGroup {
    match i {
        0 => FeatureGroup::WordUnigram,
        1 => FeatureGroup::WordBigram,
        2 => FeatureGroup::CharNgram,
        _ => FeatureGroup::Stats,
    }
}

/// What the guard and the monitor read from one query.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct QuerySignals {
    /// Share of all hashed n-gram entries unseen in training (the OOD measure).
    pub unseen_share: f64,
    /// The drift signals (see [`signal_name`]).
    pub values: [f64; SIGNALS],
}

/// The set of hashed features seen in a sample of training queries, as a bitset (saved as hex).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "VocabularyFile", into = "VocabularyFile")]
pub struct Vocabulary {
    dim: usize,
    bits: Vec<u64>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VocabularyFile {
    dim: usize,
    hex: String,
}

impl From<Vocabulary> for VocabularyFile {
    fn from(v: Vocabulary) -> Self {
        let hex = v.bits.iter().map(|w| format!("{w:016x}")).collect();
        VocabularyFile { dim: v.dim, hex }
    }
}

impl TryFrom<VocabularyFile> for Vocabulary {
    type Error = QualityError;

    fn try_from(f: VocabularyFile) -> Result<Self> {
        let words = f.dim.div_ceil(64);
        if f.hex.len() != 16 * words || !f.hex.is_ascii() {
            return Err(QualityError::invalid("vocabulary", "hex length does not match dim"));
        }
        let bits = (0..words)
            .map(|w| u64::from_str_radix(&f.hex[16 * w..16 * (w + 1)], 16))
            .collect::<std::result::Result<Vec<u64>, _>>()
            .map_err(|e| QualityError::invalid("vocabulary", e.to_string()))?;
        Ok(Vocabulary { dim: f.dim, bits })
    }
}

impl std::fmt::Debug for Vocabulary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Vocabulary {{ dim: {}, features: {} }}", self.dim, self.len())
    }
}

impl Vocabulary {
    /// The features present in `xs` (indices below `dim`).
    pub fn from_vectors<'a>(dim: usize, xs: impl IntoIterator<Item = &'a SparseVec>) -> Self {
        let mut bits = vec![0u64; dim.div_ceil(64)];
        for x in xs {
            for &i in x.indices() {
                if let Some(w) = bits.get_mut(i as usize / 64) {
                    *w |= 1 << (i % 64);
                }
            }
        }
        Vocabulary { dim, bits }
    }

    /// Whether feature `i` is in the vocabulary.
    pub fn contains(&self, i: u32) -> bool {
        self.bits.get(i as usize / 64).is_some_and(|w| w >> (i % 64) & 1 == 1)
    }

    /// Number of features in the vocabulary.
    pub fn len(&self) -> usize {
        self.bits.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether the vocabulary is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The dimension it covers.
    pub fn dim(&self) -> usize {
        self.dim
    }
}

/// Computes the signals of a featurised query against a vocabulary.
pub fn signals(featurizer: &Featurizer, x: &SparseVec, vocabulary: &Vocabulary) -> QuerySignals {
    let mut seen = [0usize; 3];
    let mut total = [0usize; 3];
    let mut out = QuerySignals::default();
    let stats_start = featurizer.group_range(FeatureGroup::Stats).start;
    for (i, v) in x.iter() {
        let g = featurizer.group_of(i) as usize;
        if g < 3 {
            total[g] += 1;
            if vocabulary.contains(i) {
                seen[g] += 1;
            }
        } else if let Some(slot) = (i as usize).checked_sub(stats_start).filter(|k| *k < STATS_LEN - 1) {
            out.values[3 + slot] = f64::from(v);
        }
    }
    let share = |s: usize, t: usize| if t == 0 { 1.0 } else { 1.0 - s as f64 / t as f64 };
    for g in 0..3 {
        out.values[g] = share(seen[g], total[g]);
    }
    out.unseen_share = share(seen.iter().sum(), total.iter().sum());
    out
}

/// What the guard and the monitor of a router are built from: the vocabulary of one cross-validation fold's
/// training queries, and the signals of that fold's held-out queries against it.
pub fn fold_baseline(featurizer: &Featurizer, xs: &[SparseVec], fold: &Split) -> (Vocabulary, Vec<QuerySignals>) {
    let vocabulary = Vocabulary::from_vectors(featurizer.dim(), fold.train.iter().filter_map(|&i| xs.get(i)));
    let held: Vec<QuerySignals> =
        fold.test.iter().filter_map(|&i| xs.get(i)).map(|x| signals(featurizer, x, &vocabulary)).collect();
    (vocabulary, held)
}

/// Fewest held-out queries a drift baseline is built from.
pub const MIN_BASELINE: usize = 20;

/// [`fold_baseline`] of the first fold; when its held-out queries are too few for a baseline (a small data set,
/// such as MT-Bench's 80 questions), the held-out queries of the next folds are added, each measured against its
/// own fold's vocabulary (so every signal is that of a query unseen in training, as live queries are). The
/// vocabulary is the first fold's.
pub fn folds_baseline(featurizer: &Featurizer, xs: &[SparseVec], folds: &[Split]) -> (Vocabulary, Vec<QuerySignals>) {
    let Some((first, rest)) = folds.split_first() else {
        return (Vocabulary::from_vectors(featurizer.dim(), std::iter::empty()), Vec::new());
    };
    let (vocabulary, mut held) = fold_baseline(featurizer, xs, first);
    for fold in rest {
        if held.len() >= MIN_BASELINE {
            break;
        }
        held.extend(fold_baseline(featurizer, xs, fold).1);
    }
    (vocabulary, held)
}

/// The out-of-distribution guard of a learned router.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OodGuard {
    /// Whether the guard routes out-of-distribution queries to the safe side.
    pub enabled: bool,
    /// Queries with a larger unseen share are out of distribution.
    pub max_unseen_share: f64,
}

impl OodGuard {
    /// Whether `signals` are out of distribution.
    pub fn trips(&self, signals: &QuerySignals) -> bool {
        self.enabled && signals.unseen_share > self.max_unseen_share
    }
}

/// The `q`-quantile of `values` (nearest rank, `q` in `[0, 1]`).
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((q.clamp(0.0, 1.0) * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

/// The baseline distribution of one signal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalBaseline {
    /// Ascending interior bin edges; bin `b` holds values `<= edges[b]` (and above the previous edge).
    pub edges: Vec<f64>,
    /// Share of baseline queries per bin (`edges.len() + 1` bins).
    pub shares: Vec<f64>,
}

impl SignalBaseline {
    fn bin(&self, v: f64) -> usize {
        self.edges.partition_point(|e| *e < v)
    }
}

/// The training-time distribution of every drift signal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftBaseline {
    /// Number of queries the baseline was built from.
    pub queries: usize,
    /// One baseline per signal, in signal order.
    pub signals: Vec<SignalBaseline>,
}

/// Bin shares are floored at this before the PSI logarithm.
const PSI_FLOOR: f64 = 1e-4;

impl DriftBaseline {
    /// Builds the baseline from held-out queries' signals (decile edges).
    pub fn from_signals(samples: &[QuerySignals]) -> Result<Self> {
        if samples.len() < MIN_BASELINE {
            return Err(QualityError::invalid(
                "drift baseline",
                format!("{} queries, need at least {MIN_BASELINE}", samples.len()),
            ));
        }
        let mut signals = Vec::with_capacity(SIGNALS);
        for s in 0..SIGNALS {
            let values: Vec<f64> = samples.iter().map(|q| q.values[s]).collect();
            let mut edges: Vec<f64> = (1..10).filter_map(|d| quantile(&values, f64::from(d) / 10.0)).collect();
            edges.dedup();
            let mut base = SignalBaseline { shares: vec![0.0; edges.len() + 1], edges };
            for v in &values {
                let b = base.bin(*v);
                base.shares[b] += 1.0 / values.len() as f64;
            }
            signals.push(base);
        }
        Ok(DriftBaseline { queries: samples.len(), signals })
    }
}

/// How strong a drift is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftStatus {
    /// PSI below 0.1.
    Stable,
    /// PSI from 0.1 to 0.25.
    Moderate,
    /// PSI above 0.25.
    Significant,
}

impl DriftStatus {
    /// The status of a PSI value.
    pub fn of(psi: f64) -> Self {
        if psi > 0.25 {
            DriftStatus::Significant
        } else if psi >= 0.1 {
            DriftStatus::Moderate
        } else {
            DriftStatus::Stable
        }
    }
}

/// Drift of one feature group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupDrift {
    /// The group.
    pub group: FeatureGroup,
    /// The largest PSI among the group's signals.
    pub psi: f64,
    /// The signal with that PSI.
    pub worst_signal: String,
    /// The reading of the PSI.
    pub status: DriftStatus,
}

/// A drift report over one live window: data for the admin topic and the logs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftReport {
    /// Queries in the live window.
    pub window: u64,
    /// Queries in the baseline.
    pub baseline: usize,
    /// Share of the window the OOD guard flagged.
    pub ood_share: f64,
    /// Per feature group.
    pub groups: Vec<GroupDrift>,
    /// The worst group status.
    pub status: DriftStatus,
}

impl std::fmt::Display for DriftReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "drift over {} live queries against {} baseline queries: {:?} (ood share {:.3})",
            self.window, self.baseline, self.status, self.ood_share
        )?;
        writeln!(f, "{:<14} {:>8}  {:<12} worst signal", "group", "psi", "status")?;
        for g in &self.groups {
            writeln!(f, "{:<14} {:>8.4}  {:<12} {}", g.group.name(), g.psi, format!("{:?}", g.status), g.worst_signal)?;
        }
        Ok(())
    }
}

/// Accumulates a live window of query signals and compares it with a baseline.
#[derive(Debug, Clone)]
pub struct DriftMonitor {
    baseline: DriftBaseline,
    counts: Vec<Vec<u64>>,
    window: u64,
    ood: u64,
}

impl DriftMonitor {
    /// A monitor with an empty window.
    pub fn new(baseline: DriftBaseline) -> Self {
        let counts = baseline.signals.iter().map(|s| vec![0; s.shares.len()]).collect();
        DriftMonitor { baseline, counts, window: 0, ood: 0 }
    }

    /// Adds one query to the window; `out_of_distribution` is what the guard said about it.
    pub fn observe(&mut self, signals: &QuerySignals, out_of_distribution: bool) {
        for (s, (base, counts)) in self.baseline.signals.iter().zip(&mut self.counts).enumerate() {
            let b = base.bin(signals.values[s]);
            if let Some(c) = counts.get_mut(b) {
                *c += 1;
            }
        }
        self.window += 1;
        self.ood += u64::from(out_of_distribution);
    }

    /// Starts a new window.
    pub fn reset(&mut self) {
        self.counts.iter_mut().for_each(|c| c.iter_mut().for_each(|x| *x = 0));
        self.window = 0;
        self.ood = 0;
    }

    /// Queries in the current window.
    pub fn window(&self) -> u64 {
        self.window
    }

    /// The PSI of every signal over the current window (0 for an empty window).
    pub fn signal_psi(&self) -> Vec<f64> {
        self.baseline
            .signals
            .iter()
            .zip(&self.counts)
            .map(|(base, counts)| {
                if self.window == 0 {
                    return 0.0;
                }
                base.shares
                    .iter()
                    .zip(counts)
                    .map(|(&e, &c)| {
                        let e = e.max(PSI_FLOOR);
                        let a = (c as f64 / self.window as f64).max(PSI_FLOOR);
                        (a - e) * (a / e).ln()
                    })
                    .sum()
            })
            .collect()
    }

    /// The report of the current window.
    pub fn report(&self) -> DriftReport {
        let psi = self.signal_psi();
        let groups: Vec<GroupDrift> = FeatureGroup::ALL
            .iter()
            .filter_map(|&group| {
                let (i, &p) = psi
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| signal_group(*i) == group)
                    .max_by(|a, b| a.1.total_cmp(b.1))?;
                Some(GroupDrift { group, psi: p, worst_signal: signal_name(i).to_string(), status: DriftStatus::of(p) })
            })
            .collect();
        let status = groups.iter().map(|g| g.status).max().unwrap_or(DriftStatus::Stable);
        DriftReport {
            window: self.window,
            baseline: self.baseline.queries,
            ood_share: if self.window == 0 { 0.0 } else { self.ood as f64 / self.window as f64 },
            groups,
            status,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(unseen: f64, len: f64) -> QuerySignals {
        let mut s = QuerySignals { unseen_share: unseen, values: [0.0; SIGNALS] };
        s.values[0] = unseen;
        s.values[2] = unseen;
        s.values[3] = len;
        s
    }

    #[test]
    fn same_distribution_is_stable_and_shift_is_significant() {
        let base: Vec<QuerySignals> =
            (0..500).map(|i| sig(f64::from(i % 10) / 100.0, f64::from(i % 50) / 50.0)).collect();
        let baseline = DriftBaseline::from_signals(&base).expect("enough samples");
        let mut m = DriftMonitor::new(baseline);
        for s in base.iter().take(200) {
            m.observe(s, false);
        }
        let r = m.report();
        assert_eq!(r.status, DriftStatus::Stable, "{r}");
        m.reset();
        assert_eq!(m.window(), 0);
        for i in 0..200 {
            m.observe(&sig(0.5, f64::from(i % 50) / 50.0), true);
        }
        let r = m.report();
        assert_eq!(r.status, DriftStatus::Significant, "{r}");
        let word = r.groups.iter().find(|g| g.group == FeatureGroup::WordUnigram).map(|g| g.status);
        assert_eq!(word, Some(DriftStatus::Significant));
        let stats = r.groups.iter().find(|g| g.group == FeatureGroup::Stats).map(|g| g.status);
        assert_eq!(stats, Some(DriftStatus::Stable));
        assert_eq!(r.ood_share, 1.0);
        assert!(r.to_string().contains("word_unigram"));
    }

    #[test]
    fn guard_and_quantile() {
        let g = OodGuard { enabled: true, max_unseen_share: 0.3 };
        assert!(g.trips(&sig(0.31, 0.0)));
        assert!(!g.trips(&sig(0.3, 0.0)));
        assert!(!OodGuard { enabled: false, ..g }.trips(&sig(0.9, 0.0)));
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.99), Some(99.0));
        assert_eq!(quantile(&v, 0.0), Some(1.0));
        assert_eq!(quantile(&[], 0.5), None);
        assert!(DriftBaseline::from_signals(&[sig(0.0, 0.0)]).is_err());
    }

    #[test]
    fn vocabulary_round_trips_as_hex() {
        let x = SparseVec::from_pairs(vec![(3, 1.0), (64, 1.0), (129, 2.0)]);
        let v = Vocabulary::from_vectors(130, [&x]);
        assert!(v.contains(3) && v.contains(64) && v.contains(129) && !v.contains(4) && !v.contains(9999));
        assert_eq!(v.len(), 3);
        let text = serde_json::to_string(&v).expect("serialises");
        let back: Vocabulary = serde_json::from_str(&text).expect("parses");
        assert!(back == v);
        assert!(serde_json::from_str::<Vocabulary>(r#"{"dim":130,"hex":"00"}"#).is_err());
    }

    #[test]
    fn psi_statuses() {
        assert_eq!(DriftStatus::of(0.05), DriftStatus::Stable);
        assert_eq!(DriftStatus::of(0.1), DriftStatus::Moderate);
        assert_eq!(DriftStatus::of(0.3), DriftStatus::Significant);
    }
}
