//! Self-consistency: ask for several samples and trust the answer most of them agree on.
//!
//! The confidence is the majority answer's share of **all** samples, so a sample whose answer cannot be
//! extracted counts against confidence (three agreeing samples out of five give 0.6, whatever the other two
//! said). Ties between equally frequent answers go to the answer that appeared first, which makes the result
//! independent of hashing and identical on every node.

use crate::extract::Extractor;

use super::Sample;

/// The majority answer of a set of samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Majority {
    /// The extracted majority answer.
    pub answer: String,
    /// The index of the first sample that gave it (the reply to return).
    pub first_index: usize,
    /// How many samples gave it.
    pub votes: usize,
    /// `votes / samples.len()`, samples without an answer included.
    pub share: f64,
}

/// The majority answer of `samples` under `extractor`, or `None` when no sample has an extractable answer.
pub fn majority(samples: &[Sample], extractor: &Extractor) -> Option<Majority> {
    // (answer, first index, votes), in order of first appearance; N is small (at most 64), so a linear scan wins.
    let mut tally: Vec<(String, usize, usize)> = Vec::new();
    for (index, sample) in samples.iter().enumerate() {
        let Some(answer) = extractor.extract(&sample.text) else { continue };
        match tally.iter_mut().find(|(a, _, _)| *a == answer) {
            Some((_, _, votes)) => *votes += 1,
            None => tally.push((answer, index, 1)),
        }
    }
    // `max_by_key` keeps the last maximum; reversing first keeps the earliest one.
    let (answer, first_index, votes) = tally.into_iter().rev().max_by_key(|(_, _, votes)| *votes)?;
    Some(Majority { answer, first_index, votes, share: votes as f64 / samples.len() as f64 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(texts: &[&str], extractor: &Extractor, expected: Option<(&str, usize, usize, f64)>) {
        let samples: Vec<Sample> = texts.iter().copied().map(Sample::text).collect();
        let got = majority(&samples, extractor).map(|m| (m.answer, m.first_index, m.votes, m.share));
        let expected = expected.map(|(a, i, v, s)| (a.to_owned(), i, v, s));
        assert_eq!(got, expected, "{texts:?}");
    }

    #[test]
    fn majority_share_and_ties() {
        let n = Extractor::LastNumber;
        check(&["#### 18", "18 dollars", "#### 18.0"], &n, Some(("18", 0, 3, 1.0)));
        check(&["is 3", "is 4", "is 4", "is 3", "is 5"], &n, Some(("3", 0, 2, 0.4)));
        check(&["is 4", "is 3", "is 3", "is 4"], &n, Some(("4", 0, 2, 0.5)));
        check(&["nothing", "is 7", "garbage"], &n, Some(("7", 1, 1, 1.0 / 3.0)));
        check(&["nothing", "", "\u{0}\u{fffd}"], &n, None);
        check(&[], &n, None);
        let c = Extractor::Choice { letters: "ABCD".into() };
        check(&["The answer is (B)", "B", "answer: c", "(B)."], &c, Some(("B", 0, 3, 0.75)));
    }
}
