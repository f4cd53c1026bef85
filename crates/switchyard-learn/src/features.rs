//! Deterministic in-process features of a prompt.
//!
//! A router must turn a prompt into numbers in microseconds, without a download or a Python process, and a saved
//! model must see exactly the features it was trained on. This module does it with feature hashing: word
//! unigrams, word bigrams and character n-grams are hashed with the frozen [`stable_hash`] into one block of
//! `2^hash_bits` buckets per kind (signed hashing: one hash bit chooses +1 or -1, so collisions cancel on average),
//! counted, damped with `ln(1 + count)` and L2-normalised per block so that a long prompt does not outweigh a
//! short one. A last block of [`PromptStats`] (length, estimated tokens, digits, lines, question marks, code and
//! maths markers, ...) is appended on fixed scales that keep every value near `[0, 1]`.
//!
//! Layout of the vector: `[word unigrams | word bigrams | char n-grams | stats]`, each hashed block `2^hash_bits`
//! wide whether enabled or not, so [`Featurizer::group_of`] can tell a feature's group from its index (the drift
//! monitor and the out-of-distribution measure use that). [`FeatureConfig`] is serialisable and stored with every
//! model.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::error::{LearnError, Result};
use crate::hash::{mix64, stable_hash};

/// How prompts become features; stored with every model so that a reloaded model reproduces them exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureConfig {
    /// Buckets per hashed block: `2^hash_bits` (10 to 24).
    pub hash_bits: u8,
    /// Seed of the feature hash.
    pub seed: u64,
    /// Hash words (lowercased; runs of digits become a `#<digit count>` token).
    pub word_unigrams: bool,
    /// Hash pairs of adjacent words.
    pub word_bigrams: bool,
    /// Smallest character n-gram (over the lowercased, whitespace-collapsed prompt); 0 disables n-grams.
    pub char_ngram_min: u8,
    /// Largest character n-gram.
    pub char_ngram_max: u8,
    /// Append the prompt statistics block.
    pub prompt_stats: bool,
}

impl Default for FeatureConfig {
    fn default() -> Self {
        Self {
            hash_bits: 18,
            seed: 0x5157_4348_5941_5244,
            word_unigrams: true,
            word_bigrams: true,
            char_ngram_min: 3,
            char_ngram_max: 5,
            prompt_stats: true,
        }
    }
}

impl FeatureConfig {
    /// Checks the ranges of the settings.
    pub fn validate(&self) -> Result<()> {
        if !(10..=24).contains(&self.hash_bits) {
            return Err(LearnError::invalid("hash_bits", format!("{} is not in 10..=24", self.hash_bits)));
        }
        if self.char_ngram_min > 0 && (self.char_ngram_max < self.char_ngram_min || self.char_ngram_max > 8) {
            return Err(LearnError::invalid(
                "char_ngram_max",
                format!("{} must be in {}..=8", self.char_ngram_max, self.char_ngram_min),
            ));
        }
        Ok(())
    }
}

/// The kinds of features, each with its own index range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureGroup {
    /// Hashed words.
    WordUnigram,
    /// Hashed word pairs.
    WordBigram,
    /// Hashed character n-grams.
    CharNgram,
    /// Prompt statistics.
    Stats,
}

impl FeatureGroup {
    /// All groups in layout order.
    pub const ALL: [FeatureGroup; 4] =
        [FeatureGroup::WordUnigram, FeatureGroup::WordBigram, FeatureGroup::CharNgram, FeatureGroup::Stats];

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            FeatureGroup::WordUnigram => "word_unigram",
            FeatureGroup::WordBigram => "word_bigram",
            FeatureGroup::CharNgram => "char_ngram",
            FeatureGroup::Stats => "stats",
        }
    }
}

/// A sparse feature vector: strictly increasing indices with their values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SparseVec {
    indices: Vec<u32>,
    values: Vec<f32>,
}

impl SparseVec {
    /// An empty vector.
    pub fn new() -> Self {
        Self::default()
    }

    /// A vector from `(index, value)` pairs in any order; values of repeated indices are added, zeros dropped.
    pub fn from_pairs(mut pairs: Vec<(u32, f32)>) -> Self {
        pairs.sort_unstable_by_key(|p| p.0);
        let mut v = SparseVec::new();
        for (i, x) in pairs {
            match v.indices.last() {
                Some(&last) if last == i => {
                    if let Some(acc) = v.values.last_mut() {
                        *acc += x;
                    }
                }
                _ => {
                    v.indices.push(i);
                    v.values.push(x);
                }
            }
        }
        v.retain_nonzero();
        v
    }

    fn retain_nonzero(&mut self) {
        let mut w = 0;
        for r in 0..self.indices.len() {
            if self.values[r] != 0.0 {
                self.indices[w] = self.indices[r];
                self.values[w] = self.values[r];
                w += 1;
            }
        }
        self.indices.truncate(w);
        self.values.truncate(w);
    }

    /// The indices, strictly increasing.
    pub fn indices(&self) -> &[u32] {
        &self.indices
    }

    /// The values, in index order.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// The number of stored entries.
    pub fn nnz(&self) -> usize {
        self.indices.len()
    }

    /// `(index, value)` pairs in index order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, f32)> + '_ {
        self.indices.iter().copied().zip(self.values.iter().copied())
    }

    /// The dot product with a dense vector; indices beyond `dense` count as zero.
    pub fn dot(&self, dense: &[f32]) -> f32 {
        self.iter().map(|(i, x)| dense.get(i as usize).map_or(0.0, |w| w * x)).sum()
    }

    /// Removes every entry, keeping the allocations.
    pub fn clear(&mut self) {
        self.indices.clear();
        self.values.clear();
    }
}

/// Counted statistics of a prompt, the raw material of the stats block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PromptStats {
    /// Characters.
    pub chars: usize,
    /// Estimated tokens, `ceil(chars / 4)`.
    pub est_tokens: usize,
    /// Words (runs of letters or digits).
    pub words: usize,
    /// Lines.
    pub lines: usize,
    /// Decimal digits.
    pub digits: usize,
    /// Upper-case letters.
    pub uppercase: usize,
    /// Characters outside ASCII.
    pub non_ascii: usize,
    /// ASCII punctuation.
    pub punctuation: usize,
    /// `?` characters.
    pub question_marks: usize,
    /// Code markers: backticks, braces, semicolons, `def `, `fn `, `=>`, `::`, `()`.
    pub code_markers: usize,
    /// Maths markers: `+ - * / = ^ < > % \ $`.
    pub math_markers: usize,
    /// Runs of digits (numbers).
    pub numbers: usize,
    /// Lines that start like a multiple-choice option (`A.`, `B)`, `(C)` ...).
    pub choice_lines: usize,
}

impl PromptStats {
    /// Counts the statistics of `text`.
    pub fn of(text: &str) -> Self {
        let mut s = PromptStats { lines: 1, ..PromptStats::default() };
        let mut in_word = false;
        let mut in_number = false;
        for c in text.chars() {
            s.chars += 1;
            match c {
                '\n' => s.lines += 1,
                '?' => s.question_marks += 1,
                '`' | '{' | '}' | ';' => s.code_markers += 1,
                '+' | '-' | '*' | '/' | '=' | '^' | '<' | '>' | '%' | '\\' | '$' => s.math_markers += 1,
                _ => {}
            }
            if c.is_ascii_digit() {
                s.digits += 1;
            }
            if c.is_uppercase() {
                s.uppercase += 1;
            }
            if !c.is_ascii() {
                s.non_ascii += 1;
            }
            if c.is_ascii_punctuation() {
                s.punctuation += 1;
            }
            let word_char = c.is_alphanumeric();
            if word_char && !in_word {
                s.words += 1;
            }
            in_word = word_char;
            let digit = c.is_ascii_digit();
            if digit && !in_number {
                s.numbers += 1;
            }
            in_number = digit;
        }
        s.est_tokens = s.chars.div_ceil(4);
        for marker in ["def ", "fn ", "=>", "::", "()"] {
            s.code_markers += text.matches(marker).count();
        }
        s.choice_lines = text.lines().filter(|l| is_choice_line(l)).count();
        s
    }

    /// The stats block: fixed transforms that keep every value near `[0, 1]`.
    pub fn block(&self) -> [f32; STATS_LEN] {
        let share = |n: usize| if self.chars == 0 { 0.0 } else { n as f32 / self.chars as f32 };
        let log = |n: usize, scale: f32| (1.0 + n as f32).ln() / scale;
        let mean_word = if self.words == 0 { 0.0 } else { (self.chars as f32 / self.words as f32) / 10.0 };
        [
            log(self.chars, 8.0),
            log(self.est_tokens, 7.0),
            log(self.words, 7.0),
            log(self.lines, 4.0),
            share(self.digits),
            share(self.uppercase),
            share(self.non_ascii),
            share(self.punctuation),
            log(self.question_marks, 2.0),
            log(self.code_markers, 3.0),
            log(self.math_markers, 4.0),
            log(self.numbers, 3.0),
            log(self.choice_lines, 2.0),
            mean_word,
            1.0,
        ]
    }
}

/// Number of values in the stats block (the last one is a constant 1, an extra bias the regulariser sees).
pub const STATS_LEN: usize = 15;

/// Names of the stats block values, in order.
pub const STATS_NAMES: [&str; STATS_LEN] = [
    "ln_chars",
    "ln_tokens",
    "ln_words",
    "ln_lines",
    "digit_share",
    "upper_share",
    "non_ascii_share",
    "punct_share",
    "ln_question_marks",
    "ln_code_markers",
    "ln_math_markers",
    "ln_numbers",
    "ln_choice_lines",
    "mean_word_len",
    "constant",
];

fn is_choice_line(line: &str) -> bool {
    let t = line.trim_start().trim_start_matches('(');
    let mut chars = t.chars();
    matches!((chars.next(), chars.next()), (Some('A'..='J'), Some('.' | ')')))
}

/// Reusable buffers of [`Featurizer::featurize_into`], so that a hot path featurises without allocating once
/// warmed up.
#[derive(Debug, Default)]
pub struct FeatureScratch {
    text: String,
    char_starts: Vec<usize>,
    words: Vec<(usize, usize)>,
    pairs: Vec<(u32, f32)>,
}

/// Turns prompts into [`SparseVec`]s according to a [`FeatureConfig`].
#[derive(Debug, Clone, PartialEq)]
pub struct Featurizer {
    config: FeatureConfig,
    block: u32,
}

/// Domain separators of the hashed groups (frozen).
const SALT_UNIGRAM: u64 = 0x7531;
const SALT_BIGRAM: u64 = 0xb16a;
const SALT_CHAR: u64 = 0xc4a2;

impl Featurizer {
    /// A featurizer for a validated `config`.
    pub fn new(config: FeatureConfig) -> Result<Self> {
        config.validate()?;
        let block = 1u32 << config.hash_bits;
        Ok(Self { config, block })
    }

    /// The configuration.
    pub fn config(&self) -> &FeatureConfig {
        &self.config
    }

    /// The vector length: three hashed blocks and the stats block.
    pub fn dim(&self) -> usize {
        3 * self.block as usize + STATS_LEN
    }

    /// The index range of `group`.
    pub fn group_range(&self, group: FeatureGroup) -> Range<usize> {
        let b = self.block as usize;
        match group {
            FeatureGroup::WordUnigram => 0..b,
            FeatureGroup::WordBigram => b..2 * b,
            FeatureGroup::CharNgram => 2 * b..3 * b,
            FeatureGroup::Stats => 3 * b..3 * b + STATS_LEN,
        }
    }

    /// The group of feature `index`.
    pub fn group_of(&self, index: u32) -> FeatureGroup {
        match index / self.block {
            0 => FeatureGroup::WordUnigram,
            1 => FeatureGroup::WordBigram,
            2 => FeatureGroup::CharNgram,
            _ => FeatureGroup::Stats,
        }
    }

    /// The features of `text` (allocating; see [`Featurizer::featurize_into`] for the hot path).
    pub fn featurize(&self, text: &str) -> SparseVec {
        let mut out = SparseVec::new();
        self.featurize_into(text, &mut FeatureScratch::default(), &mut out);
        out
    }

    /// Writes the features of `text` into `out`, reusing `scratch`'s buffers.
    pub fn featurize_into(&self, text: &str, scratch: &mut FeatureScratch, out: &mut SparseVec) {
        out.clear();
        scratch.pairs.clear();
        normalize(text, &mut scratch.text);
        let norm = scratch.text.as_str();
        let seed = self.config.seed;

        scratch.words.clear();
        let mut start = None;
        for (i, c) in norm.char_indices() {
            match (c.is_alphanumeric(), start) {
                (true, None) => start = Some(i),
                (false, Some(s)) => {
                    scratch.words.push((s, i));
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            scratch.words.push((s, norm.len()));
        }
        let word_hash = |&(s, e): &(usize, usize)| {
            let w = &norm[s..e];
            if w.bytes().all(|b| b.is_ascii_digit()) {
                let marker = [b'#', b'0' + w.len().min(9) as u8];
                stable_hash(seed ^ SALT_UNIGRAM, &marker)
            } else {
                stable_hash(seed ^ SALT_UNIGRAM, w.as_bytes())
            }
        };

        let first = scratch.pairs.len();
        if self.config.word_unigrams {
            for w in &scratch.words {
                scratch.pairs.push(self.bucket(0, word_hash(w)));
            }
        }
        finish_block(&mut scratch.pairs, first);

        let first = scratch.pairs.len();
        if self.config.word_bigrams {
            for pair in scratch.words.windows(2) {
                let h = mix64(word_hash(&pair[0]) ^ word_hash(&pair[1]).rotate_left(17) ^ SALT_BIGRAM);
                scratch.pairs.push(self.bucket(1, h));
            }
        }
        finish_block(&mut scratch.pairs, first);

        let first = scratch.pairs.len();
        let (lo, hi) = (usize::from(self.config.char_ngram_min), usize::from(self.config.char_ngram_max));
        if lo > 0 {
            scratch.char_starts.clear();
            scratch.char_starts.extend(norm.char_indices().map(|(i, _)| i));
            scratch.char_starts.push(norm.len());
            let n_chars = scratch.char_starts.len() - 1;
            for n in lo..=hi {
                for s in 0..n_chars.saturating_sub(n - 1) {
                    let bytes = &norm.as_bytes()[scratch.char_starts[s]..scratch.char_starts[s + n]];
                    scratch.pairs.push(self.bucket(2, stable_hash(seed ^ SALT_CHAR ^ n as u64, bytes)));
                }
            }
        }
        finish_block(&mut scratch.pairs, first);

        // Blocks come in index order and each block is sorted, so the whole vector is sorted.
        for &(i, x) in &scratch.pairs {
            out.indices.push(i);
            out.values.push(x);
        }
        if self.config.prompt_stats {
            let base = 3 * self.block;
            for (k, v) in PromptStats::of(text).block().into_iter().enumerate() {
                if v != 0.0 {
                    out.indices.push(base + k as u32);
                    out.values.push(v);
                }
            }
        }
    }

    /// The signed bucket of hash `h` in hashed block `block`.
    fn bucket(&self, block: u32, h: u64) -> (u32, f32) {
        let index = block * self.block + (h as u32 & (self.block - 1));
        let sign = if h >> 63 == 0 { 1.0 } else { -1.0 };
        (index, sign)
    }
}

/// Lowercases and collapses whitespace runs into one space.
fn normalize(text: &str, out: &mut String) {
    out.clear();
    let mut space = false;
    for c in text.trim().chars() {
        if c.is_whitespace() {
            space = true;
            continue;
        }
        if space {
            out.push(' ');
            space = false;
        }
        out.extend(c.to_lowercase());
    }
}

/// Sorts and merges the pairs from `first` on, damps counts with `ln(1 + |count|)` keeping the sign, drops zeros
/// and L2-normalises the block.
fn finish_block(pairs: &mut Vec<(u32, f32)>, first: usize) {
    let block = &mut pairs[first..];
    block.sort_unstable_by_key(|p| p.0);
    let mut w = first;
    let mut r = first;
    while r < pairs.len() {
        let (i, mut x) = pairs[r];
        r += 1;
        while r < pairs.len() && pairs[r].0 == i {
            x += pairs[r].1;
            r += 1;
        }
        if x != 0.0 {
            pairs[w] = (i, x.signum() * x.abs().ln_1p());
            w += 1;
        }
    }
    pairs.truncate(w);
    let norm = pairs[first..].iter().map(|p| p.1 * p.1).sum::<f32>().sqrt();
    if norm > 0.0 {
        for p in &mut pairs[first..] {
            p.1 /= norm;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Featurizer {
        Featurizer::new(FeatureConfig { hash_bits: 12, ..FeatureConfig::default() }).expect("valid config")
    }

    #[test]
    fn features_are_deterministic_sorted_and_grouped() {
        let f = small();
        let a = f.featurize("What is 12 + 30?\nExplain.");
        assert_eq!(a, f.featurize("What is 12 + 30?\nExplain."));
        assert!(a.indices().windows(2).all(|w| w[0] < w[1]));
        for g in [FeatureGroup::WordUnigram, FeatureGroup::WordBigram, FeatureGroup::CharNgram] {
            let r = f.group_range(g);
            let norm: f32 =
                a.iter().filter(|(i, _)| r.contains(&(*i as usize))).map(|(_, x)| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "{g:?} block norm {norm}");
        }
        assert!(a.iter().all(|(i, _)| (i as usize) < f.dim()));
        assert_eq!(f.group_of(f.group_range(FeatureGroup::Stats).start as u32), FeatureGroup::Stats);
    }

    #[test]
    fn case_whitespace_and_number_values_do_not_matter_for_words() {
        let f = Featurizer::new(FeatureConfig {
            hash_bits: 12,
            word_bigrams: false,
            char_ngram_min: 0,
            prompt_stats: false,
            ..FeatureConfig::default()
        })
        .expect("valid");
        assert_eq!(f.featurize("Add  12 apples"), f.featurize("add 57\napples"));
        assert_ne!(f.featurize("add 12 apples"), f.featurize("add 123 apples"));
    }

    #[test]
    fn featurize_into_reuses_buffers_and_matches() {
        let f = small();
        let mut scratch = FeatureScratch::default();
        let mut out = SparseVec::new();
        f.featurize_into("first prompt", &mut scratch, &mut out);
        f.featurize_into("second, longer prompt?", &mut scratch, &mut out);
        assert_eq!(out, f.featurize("second, longer prompt?"));
    }

    #[test]
    fn stats_count_what_they_say() {
        let s = PromptStats::of("Q: 2+2?\nA. 4\nB. 5\n```fn x() {}```");
        assert_eq!(s.lines, 4);
        assert_eq!(s.question_marks, 1);
        assert_eq!(s.choice_lines, 2);
        assert_eq!(s.numbers, 4);
        assert!(s.code_markers >= 8);
        assert_eq!(PromptStats::of("").block()[0], 0.0);
    }

    #[test]
    fn sparse_vectors_merge_and_dot() {
        let v = SparseVec::from_pairs(vec![(3, 1.0), (1, 2.0), (3, 0.5), (2, 1.0), (2, -1.0)]);
        assert_eq!(v.indices(), &[1, 3]);
        assert_eq!(v.values(), &[2.0, 1.5]);
        assert_eq!(v.dot(&[0.0, 1.0, 0.0, 2.0]), 5.0);
        assert_eq!(v.dot(&[1.0]), 0.0);
    }

    #[test]
    fn bad_configs_are_refused() {
        assert!(Featurizer::new(FeatureConfig { hash_bits: 4, ..FeatureConfig::default() }).is_err());
        let c = FeatureConfig { char_ngram_min: 4, char_ngram_max: 3, ..FeatureConfig::default() };
        assert!(c.validate().is_err());
    }
}
