//! The mock's notion of a token, shared by both wire formats.
//!
//! Real tokenizers are model specific and heavy; the router only needs counts that grow with the text and
//! streams whose pieces add up to the answer. So a token here is one whitespace-separated word together
//! with the whitespace that follows it ("hello world" streams as "hello " and "world"), usage counts words,
//! and OpenAI log-probabilities are a hash of the token, so every run reports the same numbers.

/// Number of whitespace-separated words in `text`.
pub(crate) fn count_words(text: &str) -> usize {
    text.split_whitespace().count()
}

/// The streamed pieces of `text`: each word with its trailing whitespace; leading whitespace, if any,
/// belongs to the first piece. Concatenating the pieces gives back `text`.
pub(crate) fn tokens(text: &str) -> Tokens<'_> {
    Tokens { rest: text }
}

/// Iterator returned by [`tokens`].
pub(crate) struct Tokens<'a> {
    rest: &'a str,
}

impl<'a> Iterator for Tokens<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.rest.is_empty() {
            return None;
        }
        let word_start = self.rest.find(|c: char| !c.is_whitespace()).unwrap_or(self.rest.len());
        let word_end = self.rest[word_start..].find(char::is_whitespace).map_or(self.rest.len(), |i| word_start + i);
        let token_end =
            self.rest[word_end..].find(|c: char| !c.is_whitespace()).map_or(self.rest.len(), |i| word_end + i);
        let (token, rest) = self.rest.split_at(token_end);
        self.rest = rest;
        Some(token)
    }
}

/// An answer after `max_tokens` was applied.
#[derive(Debug, PartialEq)]
pub(crate) struct Truncated<'a> {
    pub text: &'a str,
    pub words: usize,
    /// True when words were cut off, which reports as `finish_reason: "length"` / `"max_tokens"`.
    pub cut: bool,
}

/// Keeps the first `max` words of `text` (ending at the last kept word, without trailing whitespace).
pub(crate) fn truncate(text: &str, max: Option<u32>) -> Truncated<'_> {
    let words = count_words(text);
    let Some(max) = max.map(|m| m as usize).filter(|&m| m < words) else {
        return Truncated { text, words, cut: false };
    };
    let mut end = 0;
    for word in text.split_whitespace().take(max) {
        // `split_whitespace` yields subslices of `text`, so the offset is exact.
        end = word.as_ptr() as usize - text.as_ptr() as usize + word.len();
    }
    Truncated { text: &text[..end], words: max, cut: true }
}

/// A deterministic log-probability in `[-2.5, 0]` for `token` (FNV-1a of its bytes).
pub(crate) fn logprob(token: &str) -> f64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in token.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    // The top 53 bits give a uniform fraction in [0, 1).
    let fraction = (hash >> 11) as f64 / (1u64 << 53) as f64;
    -2.5 * fraction
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn tokens_keep_trailing_whitespace_and_add_up() {
        let check = |text: &str, expected: &[&str]| {
            let got: Vec<&str> = tokens(text).collect();
            assert_eq!(got, expected, "tokens of {text:?}");
            assert_eq!(got.concat(), text);
        };
        check("hello world", &["hello ", "world"]);
        check("echo: a  b\n", &["echo: ", "a  ", "b\n"]);
        check("  lead", &["  lead"]);
        check("", &[]);
        check("   ", &["   "]);
        check("one\n\ntwo three", &["one\n\n", "two ", "three"]);
    }

    #[test]
    fn truncate_cuts_at_word_boundaries() {
        let check = |text: &str, max: Option<u32>, expected: &str, words: usize, cut: bool| {
            assert_eq!(truncate(text, max), Truncated { text: expected, words, cut }, "truncate({text:?}, {max:?})");
        };
        check("a b c", None, "a b c", 3, false);
        check("a b c", Some(3), "a b c", 3, false);
        check("a b c", Some(10), "a b c", 3, false);
        check("a b c", Some(2), "a b", 2, true);
        check("  a\n b c", Some(1), "  a", 1, true);
        check("a b c", Some(0), "", 0, true);
    }

    #[test]
    fn logprobs_are_deterministic_and_bounded() {
        for token in ["hello ", "world", "", "é"] {
            let lp = logprob(token);
            assert!((-2.5..=0.0).contains(&lp), "{token:?} -> {lp}");
            assert_eq!(lp, logprob(token));
        }
        assert_ne!(logprob("a"), logprob("b"));
    }
}
