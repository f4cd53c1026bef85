//! The pure part of the escalation counters every node of the cluster shares.
//!
//! Each stage of each cascade counts, per time bucket, how many queries it answered directly and how many it
//! escalated. Nodes never send a counter update per query: a [`CounterBatch`] accumulates local increments and
//! the runtime flushes it in one store command per flush interval. Reading the cluster's rate is a sum over the
//! last `k` buckets ([`window`]), which works the same on the buckets a store returns and on a node's own
//! [`LocalCounters`] (the in-memory twin).
//!
//! A bucket is identified by its start in Unix seconds, a multiple of the bucket width: the same convention as
//! the shared store's escalation keys, so a batch entry maps onto one key without conversion. Time comes in as an
//! argument (`now_ms`, Unix milliseconds).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::CascadeError;
use crate::plan::{CascadeOutcome, Verdict};

/// The default bucket width, the shared store's.
pub const DEFAULT_BUCKET_SECS: u64 = 10;

/// How time is cut into buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Buckets {
    /// The width of one bucket in seconds (at least 1).
    pub width_secs: u64,
}

impl Default for Buckets {
    fn default() -> Self {
        Buckets { width_secs: DEFAULT_BUCKET_SECS }
    }
}

impl Buckets {
    /// A bucket layout `width_secs` wide.
    pub fn new(width_secs: u64) -> Result<Self, CascadeError> {
        if width_secs == 0 {
            return Err(CascadeError::invalid(None, "counters.width_secs", "must be at least 1"));
        }
        Ok(Buckets { width_secs })
    }

    /// The start (Unix seconds) of the bucket that holds `now_ms`.
    pub fn bucket_of(&self, now_ms: u64) -> u64 {
        let width = self.width_secs.max(1);
        now_ms / 1000 / width * width
    }

    /// The starts of the `k` buckets ending with the one that holds `now_ms`, newest first (fewer near the epoch).
    pub fn window(&self, now_ms: u64, k: u64) -> Vec<u64> {
        let width = self.width_secs.max(1);
        let current = self.bucket_of(now_ms);
        (0..k).map_while(|i| current.checked_sub(i * width)).collect()
    }

    /// How many buckets cover `window_secs` (rounded up, at least one).
    pub fn count_for(&self, window_secs: u64) -> u64 {
        window_secs.div_ceil(self.width_secs.max(1)).max(1)
    }
}

/// What one stage did with the queries that reached it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StageCounts {
    /// Answered by this stage.
    pub direct: u64,
    /// Passed on to the next stage.
    pub escalated: u64,
}

impl StageCounts {
    /// Queries the stage decided on.
    pub fn total(&self) -> u64 {
        self.direct + self.escalated
    }

    /// The escalation rate; `None` before any query.
    pub fn rate(&self) -> Option<f64> {
        let total = self.total();
        (total > 0).then(|| self.escalated as f64 / total as f64)
    }

    /// Adds `other` (saturating).
    pub fn add(&mut self, other: StageCounts) {
        self.direct = self.direct.saturating_add(other.direct);
        self.escalated = self.escalated.saturating_add(other.escalated);
    }
}

/// One counter increment of a flush: stage, bucket, counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchEntry {
    /// The stage index.
    pub stage: usize,
    /// The bucket start (Unix seconds).
    pub bucket: u64,
    /// The increments.
    pub counts: StageCounts,
}

/// Local increments of one cascade's counters, waiting for the next flush.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterBatch {
    /// The cascade the counters belong to.
    pub cascade: String,
    buckets: Buckets,
    pending: BTreeMap<(usize, u64), StageCounts>,
}

impl CounterBatch {
    /// An empty batch for `cascade`.
    pub fn new(cascade: impl Into<String>, buckets: Buckets) -> Self {
        CounterBatch { cascade: cascade.into(), buckets, pending: BTreeMap::new() }
    }

    /// Counts one decision of `stage` at `now_ms`.
    pub fn record(&mut self, now_ms: u64, stage: usize, escalated: bool) {
        let counts = self.pending.entry((stage, self.buckets.bucket_of(now_ms))).or_default();
        if escalated {
            counts.escalated = counts.escalated.saturating_add(1);
        } else {
            counts.direct = counts.direct.saturating_add(1);
        }
    }

    /// Counts every decided stage of a finished run (skipped stages decide nothing and are not counted).
    pub fn record_outcome(&mut self, now_ms: u64, outcome: &CascadeOutcome) {
        for trace in &outcome.trace {
            match trace.verdict {
                Verdict::Stopped { .. } => self.record(now_ms, trace.stage, false),
                Verdict::Escalated { .. } => self.record(now_ms, trace.stage, true),
                Verdict::Skipped { .. } => {}
            }
        }
    }

    /// Whether there is nothing to flush.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The pending increments, ordered by stage then bucket, leaving the batch empty. If the flush fails, the
    /// runtime puts them back with [`restore`](Self::restore) so nothing is lost.
    pub fn take(&mut self) -> Vec<BatchEntry> {
        std::mem::take(&mut self.pending)
            .into_iter()
            .map(|((stage, bucket), counts)| BatchEntry { stage, bucket, counts })
            .collect()
    }

    /// Puts entries back (after a failed flush), adding to whatever was recorded meanwhile.
    pub fn restore(&mut self, entries: impl IntoIterator<Item = BatchEntry>) {
        for e in entries {
            self.pending.entry((e.stage, e.bucket)).or_default().add(e.counts);
        }
    }
}

/// Sums `entries` per stage over the `k` buckets ending at `now_ms`; the result has `stages` elements (entries
/// of higher stages are ignored).
pub fn window<'e>(
    entries: impl IntoIterator<Item = &'e BatchEntry>,
    buckets: Buckets,
    now_ms: u64,
    k: u64,
    stages: usize,
) -> Vec<StageCounts> {
    let newest = buckets.bucket_of(now_ms);
    let oldest = newest.saturating_sub(k.saturating_sub(1).saturating_mul(buckets.width_secs));
    let mut sums = vec![StageCounts::default(); stages];
    if k == 0 {
        return sums;
    }
    for e in entries {
        if e.stage < stages && (oldest..=newest).contains(&e.bucket) {
            sums[e.stage].add(e.counts);
        }
    }
    sums
}

/// A node's own counters (the in-memory twin of the shared store's), with expiry.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LocalCounters {
    entries: BTreeMap<(usize, u64), StageCounts>,
}

impl LocalCounters {
    /// Adds a flushed batch.
    pub fn merge(&mut self, entries: &[BatchEntry]) {
        for e in entries {
            self.entries.entry((e.stage, e.bucket)).or_default().add(e.counts);
        }
    }

    /// Per-stage sums over the `k` buckets ending at `now_ms`.
    pub fn window(&self, buckets: Buckets, now_ms: u64, k: u64, stages: usize) -> Vec<StageCounts> {
        let entries: Vec<BatchEntry> =
            self.entries.iter().map(|(&(stage, bucket), &counts)| BatchEntry { stage, bucket, counts }).collect();
        window(&entries, buckets, now_ms, k, stages)
    }

    /// Drops buckets older than the `retain` buckets ending at `now_ms`.
    pub fn prune(&mut self, buckets: Buckets, now_ms: u64, retain: u64) {
        let oldest = buckets.bucket_of(now_ms).saturating_sub(retain.saturating_sub(1) * buckets.width_secs);
        self.entries.retain(|&(_, bucket), _| bucket >= oldest);
    }

    /// How many (stage, bucket) cells are held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{AppliedOverride, SkipReason, StageTrace, StopReason};

    const B: Buckets = Buckets { width_secs: 10 };

    #[test]
    fn buckets_align_on_the_width() {
        assert_eq!(B.bucket_of(0), 0);
        assert_eq!(B.bucket_of(9_999), 0);
        assert_eq!(B.bucket_of(10_000), 10);
        assert_eq!(B.bucket_of(1_700_000_012_345), 1_700_000_010);
        assert_eq!(B.window(25_000, 3), vec![20, 10, 0]);
        assert_eq!(B.window(15_000, 5), vec![10, 0], "no bucket before the epoch");
        assert_eq!(B.count_for(60), 6);
        assert_eq!(B.count_for(61), 7);
        assert_eq!(B.count_for(0), 1);
        assert!(Buckets::new(0).is_err());
        assert_eq!(Buckets::default(), Buckets::new(10).unwrap());
    }

    #[test]
    fn batches_accumulate_and_drain() {
        let mut batch = CounterBatch::new("math", B);
        for (t, stage, esc) in
            [(1_000, 0, true), (2_000, 0, false), (3_000, 0, true), (12_000, 0, false), (12_000, 1, false)]
        {
            batch.record(t, stage, esc);
        }
        let entries = batch.take();
        assert!(batch.is_empty());
        assert_eq!(
            entries,
            vec![
                BatchEntry { stage: 0, bucket: 0, counts: StageCounts { direct: 1, escalated: 2 } },
                BatchEntry { stage: 0, bucket: 10, counts: StageCounts { direct: 1, escalated: 0 } },
                BatchEntry { stage: 1, bucket: 10, counts: StageCounts { direct: 1, escalated: 0 } },
            ]
        );
        // A failed flush is restored and merges with new increments.
        batch.record(12_500, 0, true);
        batch.restore(entries.clone());
        let again = batch.take();
        assert_eq!(again[1], BatchEntry { stage: 0, bucket: 10, counts: StageCounts { direct: 1, escalated: 1 } });
        let json = serde_json::to_string(&entries).unwrap();
        assert_eq!(serde_json::from_str::<Vec<BatchEntry>>(&json).unwrap(), entries);
    }

    #[test]
    fn windows_sum_the_last_k_buckets() {
        let mut local = LocalCounters::default();
        let e =
            |stage, bucket, direct, escalated| BatchEntry { stage, bucket, counts: StageCounts { direct, escalated } };
        local.merge(&[e(0, 0, 5, 5), e(0, 10, 3, 1), e(0, 20, 2, 2), e(1, 20, 4, 0), e(2, 20, 1, 0)]);
        let w = local.window(B, 25_000, 2, 2);
        assert_eq!(w, vec![StageCounts { direct: 5, escalated: 3 }, StageCounts { direct: 4, escalated: 0 }]);
        assert_eq!(w[0].rate(), Some(3.0 / 8.0));
        assert_eq!(local.window(B, 25_000, 3, 1)[0], StageCounts { direct: 10, escalated: 8 });
        assert_eq!(local.window(B, 25_000, 0, 1)[0].rate(), None);
        local.prune(B, 25_000, 2);
        assert_eq!(local.len(), 4);
        assert_eq!(local.window(B, 25_000, 10, 1)[0], StageCounts { direct: 5, escalated: 3 });
    }

    #[test]
    fn outcomes_count_decided_stages_only() {
        let trace = |stage, verdict| StageTrace {
            stage,
            target: "t".into(),
            provider: None,
            estimator: None,
            threshold: 0.5,
            confidence: None,
            unavailable: None,
            cost_usd: None,
            latency_ms: None,
            verdict,
        };
        let outcome = CascadeOutcome {
            cascade: "math".into(),
            answer: None,
            trace: vec![
                trace(0, Verdict::Skipped { reason: SkipReason::AllTripped }),
                trace(1, Verdict::Escalated { reason: crate::plan::EscalateReason::BelowThreshold }),
                trace(2, Verdict::Stopped { reason: StopReason::LastStage }),
            ],
            applied: AppliedOverride::default(),
        };
        let mut batch = CounterBatch::new("math", B);
        batch.record_outcome(0, &outcome);
        let entries = batch.take();
        assert_eq!(entries.len(), 2);
        assert_eq!((entries[0].stage, entries[0].counts.escalated), (1, 1));
        assert_eq!((entries[1].stage, entries[1].counts.direct), (2, 1));
    }
}
