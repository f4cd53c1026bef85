//! Answer extraction: turning a model's free text into a short, canonical answer that can be compared.
//!
//! Self-consistency counts agreeing samples, the token-logprob estimator can restrict itself to the answer's
//! tokens, and the verifier looks at whether an answer was found at all: all of them need "the answer" out of a
//! reply that may be a page of reasoning. An [`Extractor`] is chosen per stage in the cascade config. Extraction
//! never panics and never guesses: text it cannot read yields `None`, which the estimators count against
//! confidence.

use serde::{Deserialize, Serialize};

/// How to pull a comparable answer out of a model's reply (serde: `{"kind": "last_number"}`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Extractor {
    /// The final number: the one after the last `####` (GSM8K style) if there is one, otherwise the last number
    /// in the text. Thousands separators are dropped, a leading minus is kept, decimals are canonicalised
    /// (`18.00` → `18`), and units around the number (`$18`, `18 km`, `40%`) are ignored.
    LastNumber,
    /// A multiple-choice letter (`(C)`, `Answer: C`, `the answer is c`, a bare `C.`).
    Choice {
        /// The letters that are valid options, upper case; `ABCD` when absent.
        #[serde(default = "default_choices")]
        letters: String,
    },
    /// The text between the last `start` marker and the next `end` marker (to the end of the text when `end` is
    /// empty or absent after `start`), normalised as [`Extractor::Normalized`] does.
    Between {
        /// The opening marker, e.g. `<answer>`.
        start: String,
        /// The closing marker, e.g. `</answer>`; may be empty.
        #[serde(default)]
        end: String,
    },
    /// The whole reply, lower-cased, without punctuation, whitespace collapsed.
    Normalized,
}

fn default_choices() -> String {
    "ABCD".to_owned()
}

impl Extractor {
    /// The canonical answer in `text`, or `None` when there is none.
    pub fn extract(&self, text: &str) -> Option<String> {
        self.extract_span(text).map(|(answer, _)| answer)
    }

    /// The canonical answer in `text` and the byte span of `text` it was read from.
    pub fn extract_span(&self, text: &str) -> Option<(String, (usize, usize))> {
        match self {
            Extractor::LastNumber => last_number(text),
            Extractor::Choice { letters } => choice_letter(text, letters).map(|(c, at)| (c.to_string(), (at, at + 1))),
            Extractor::Between { start, end } => between(text, start, end),
            Extractor::Normalized => normalize_text(text).map(|n| (n, trimmed_span(text, 0, text.len()))),
        }
    }

    /// The extractor's name as used in traces and config (`last_number`, `choice`, `between`, `normalized`).
    pub fn name(&self) -> &'static str {
        match self {
            Extractor::LastNumber => "last_number",
            Extractor::Choice { .. } => "choice",
            Extractor::Between { .. } => "between",
            Extractor::Normalized => "normalized",
        }
    }
}

/// A number found in a text: its canonical form and the byte span it occupied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundNumber {
    /// Canonical decimal form: no thousands separators, no leading zeros, no trailing fractional zeros, `-` sign.
    pub canonical: String,
    /// Byte offsets of the number (sign included) in the text.
    pub span: (usize, usize),
}

/// Every number in `text`, in order of appearance.
pub fn numbers(text: &str) -> Vec<FoundNumber> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        // A number starts here (digits are ASCII, so `i` is a char boundary).
        let start = i;
        let mut int_digits = String::new();
        while i < bytes.len() {
            let b = bytes[i];
            if b.is_ascii_digit() {
                int_digits.push(b as char);
                i += 1;
            } else if b == b','
                && bytes.get(i + 1..i + 4).is_some_and(|g| g.iter().all(u8::is_ascii_digit))
                && !bytes.get(i + 4).is_some_and(u8::is_ascii_digit)
            {
                // A thousands separator: exactly three digits follow.
                i += 1;
            } else {
                break;
            }
        }
        let mut frac_digits = String::new();
        if bytes.get(i) == Some(&b'.') && bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
            i += 1;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                frac_digits.push(bytes[i] as char);
                i += 1;
            }
        }
        let negative_at = negative_sign_before(text, start);
        let span_start = negative_at.unwrap_or(start);
        found.push(FoundNumber {
            canonical: canonical_number(negative_at.is_some(), &int_digits, &frac_digits),
            span: (span_start, i),
        });
    }
    found
}

/// The byte offset of a minus sign that belongs to the number starting at `digit_start`, if any. A `-` counts as
/// a sign only when it does not follow a word or a number (`3-4` is a range or a subtraction, `= -4` is negative).
fn negative_sign_before(text: &str, digit_start: usize) -> Option<usize> {
    let before = &text[..digit_start];
    let mut chars = before.char_indices().rev();
    let (sign_at, sign) = chars.next()?;
    if sign != '-' && sign != '−' {
        return None;
    }
    match chars.next() {
        None => Some(sign_at),
        Some((_, c)) if c.is_alphanumeric() || c == ')' || c == '.' => None,
        Some(_) => Some(sign_at),
    }
}

fn canonical_number(negative: bool, int_digits: &str, frac_digits: &str) -> String {
    let int = int_digits.trim_start_matches('0');
    let frac = frac_digits.trim_end_matches('0');
    let mut out = String::new();
    let zero = int.is_empty() && frac.is_empty();
    if negative && !zero {
        out.push('-');
    }
    out.push_str(if int.is_empty() { "0" } else { int });
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    out
}

fn last_number(text: &str) -> Option<(String, (usize, usize))> {
    if let Some(pos) = text.rfind("####") {
        let tail = &text[pos + 4..];
        // The answer is the first number after the marker (what follows it may be a unit or a note).
        if let Some(first) = numbers(tail).into_iter().next() {
            let (a, b) = first.span;
            return Some((first.canonical, (pos + 4 + a, pos + 4 + b)));
        }
    }
    numbers(text).pop().map(|n| (n.canonical, n.span))
}

/// Words that may stand between "answer" and the letter: `the answer is: option (C)`.
const CHOICE_FILLERS: [&str; 6] = ["is", "would", "be", "option", "choice", "correct"];

/// The chosen letter (upper case) and its byte offset.
fn choice_letter(text: &str, letters: &str) -> Option<(char, usize)> {
    let valid = |c: char| c.is_ascii_alphabetic() && letters.contains(c.to_ascii_uppercase());
    let lower = text.to_ascii_lowercase();
    // 1. After the last "answer" keyword.
    let mut search_end = lower.len();
    while let Some(pos) = lower[..search_end].rfind("answer") {
        let after = pos + "answer".len();
        if let Some((letter, at)) = letter_after_keyword(&text[after..], &valid) {
            return Some((letter.to_ascii_uppercase(), after + at));
        }
        search_end = pos;
    }
    // 2. The whole reply is a letter: "C", "(C)", "C.", "C) paralysis ...".
    let trimmed = text.trim_start().trim_start_matches(['(', '[', '*']);
    let at = text.len() - trimmed.len();
    let mut chars = trimmed.chars();
    if let Some(first) = chars.next()
        && first.is_ascii_uppercase()
        && valid(first)
    {
        match chars.next() {
            None | Some(')' | ']' | '.' | ':' | '*') => return Some((first, at)),
            Some(c) if c.is_whitespace() && trimmed.trim().len() == 1 => return Some((first, at)),
            _ => {}
        }
    }
    // 3. The last parenthesised letter: "... so (B)".
    let bytes = text.as_bytes();
    (1..bytes.len().saturating_sub(1)).rev().find_map(|i| {
        let c = bytes[i] as char;
        (bytes[i - 1] == b'(' && bytes[i + 1] == b')' && c.is_ascii_uppercase() && valid(c)).then_some((c, i))
    })
}

/// The letter that follows an "answer" keyword in `rest`, with its byte offset in `rest`.
fn letter_after_keyword(rest: &str, valid: &impl Fn(char) -> bool) -> Option<(char, usize)> {
    let mut s = rest;
    loop {
        s = s.trim_start_matches(|c: char| c.is_whitespace() || matches!(c, ':' | '(' | '[' | '*' | '"' | '\'' | '='));
        let lower = s.to_ascii_lowercase();
        let filler = CHOICE_FILLERS.iter().find(|w| {
            lower.starts_with(**w) && !lower[w.len()..].chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        });
        match filler {
            Some(w) => s = &s[w.len()..],
            None => break,
        }
    }
    let at = rest.len() - s.len();
    let mut chars = s.chars();
    let letter = chars.next()?;
    let boundary = chars.next().is_none_or(|c| !c.is_alphanumeric());
    (boundary && valid(letter)).then_some((letter, at))
}

fn between(text: &str, start: &str, end: &str) -> Option<(String, (usize, usize))> {
    if start.is_empty() {
        return None;
    }
    let from = text.rfind(start)? + start.len();
    let inner = &text[from..];
    let to = if end.is_empty() { text.len() } else { inner.find(end).map_or(text.len(), |close| from + close) };
    normalize_text(&text[from..to]).map(|n| (n, trimmed_span(text, from, to)))
}

/// The span `from..to` of `text` without its leading and trailing whitespace.
fn trimmed_span(text: &str, from: usize, to: usize) -> (usize, usize) {
    let slice = &text[from..to];
    let start = from + (slice.len() - slice.trim_start().len());
    (start, (start + slice.trim().len()).max(start))
}

/// `text` lower-cased, without punctuation, whitespace collapsed to single spaces; `None` if nothing is left.
pub fn normalize_text(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            pending_space = !out.is_empty();
        } else if is_punctuation(c) {
            continue;
        } else {
            if pending_space {
                out.push(' ');
                pending_space = false;
            }
            out.extend(c.to_lowercase());
        }
    }
    (!out.is_empty()).then_some(out)
}

fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation() || matches!(c, '‘' | '’' | '“' | '”' | '–' | '—' | '…' | '«' | '»' | '¿' | '¡' | '·')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(extractor: &Extractor, text: &str, expected: Option<&str>) {
        assert_eq!(extractor.extract(text).as_deref(), expected, "{} on {text:?}", extractor.name());
    }

    #[test]
    fn last_number() {
        let e = Extractor::LastNumber;
        for (text, expected) in [
            ("She sells 9 eggs for 9 * $2 = $<<9*2=18>>18.\n#### 18", Some("18")),
            ("#### 1,234,567 dollars\n\nNote: 5 more", Some("1234567")),
            ("The answer is -42.", Some("-42")),
            ("x = −7", Some("-7")),
            ("3-4 = ... so about 10-3", Some("3")),
            ("it costs $3.50", Some("3.5")),
            ("it costs 18.00 dollars.", Some("18")),
            ("total 40% of 0.250", Some("0.25")),
            ("007 agents", Some("7")),
            ("1,2 and 3", Some("3")),
            ("-0", Some("0")),
            ("The answer is 12km", Some("12")),
            ("####", None),
            ("#### none\nbut earlier 5", Some("5")),
            ("no digits here", None),
            ("", None),
            ("ünïcödé −", None),
            ("a.5", Some("5")),
        ] {
            check(&e, text, expected);
        }
    }

    #[test]
    fn spans_point_at_the_answer() {
        let check_span = |e: Extractor, text: &str, expected: &str| {
            let (_, (a, b)) = e.extract_span(text).unwrap();
            assert_eq!(&text[a..b], expected, "{text:?}");
        };
        check_span(Extractor::LastNumber, "5 apples\n#### 1,200 total", "1,200");
        check_span(Extractor::LastNumber, "it is -3", "-3");
        check_span(Extractor::Choice { letters: "ABCD".into() }, "so the answer is (C).", "C");
        check_span(Extractor::Choice { letters: "ABCD".into() }, "  (B)", "B");
        check_span(Extractor::Choice { letters: "ABCD".into() }, "x (D) y", "D");
        check_span(Extractor::Between { start: "<a>".into(), end: "</a>".into() }, "<a> Yes </a>", "Yes");
        check_span(Extractor::Normalized, "  Hi there \n", "Hi there");
    }

    #[test]
    fn numbers_report_spans() {
        let found = numbers("a -12,000.50 b");
        assert_eq!(found, vec![FoundNumber { canonical: "-12000.5".into(), span: (2, 12) }]);
    }

    #[test]
    fn choice_letter() {
        let e = Extractor::Choice { letters: "ABCD".into() };
        for (text, expected) in [
            ("The answer is (C).", Some("C")),
            ("Answer: B", Some("B")),
            ("the correct answer is option d, because", Some("D")),
            ("**Answer:** (A) paralysis", Some("A")),
            ("C", Some("C")),
            ("(B)", Some("B")),
            ("D. 42", Some("D")),
            ("I think it is (A), no wait (B)", Some("B")),
            ("The answer is E", None),
            ("A lot of thought went into this", None),
            ("answer is abc", None),
            ("", None),
            ("(", None),
        ] {
            check(&e, text, expected);
        }
        let wide = Extractor::Choice { letters: "ABCDE".into() };
        check(&wide, "The answer is E", Some("E"));
    }

    #[test]
    fn between_markers() {
        let e = Extractor::Between { start: "<answer>".into(), end: "</answer>".into() };
        check(&e, "think... <answer> Paris, France. </answer> done", Some("paris france"));
        check(&e, "<answer>first</answer> <answer>Second</answer>", Some("second"));
        check(&e, "<answer>unterminated Tail", Some("unterminated tail"));
        check(&e, "no markers", None);
        check(&e, "<answer>  </answer>", None);
        let open = Extractor::Between { start: "Final:".into(), end: String::new() };
        check(&open, "Final: Yes!", Some("yes"));
        let empty = Extractor::Between { start: String::new(), end: String::new() };
        check(&empty, "anything", None);
    }

    #[test]
    fn normalized_whole_text() {
        let e = Extractor::Normalized;
        check(&e, "  Hello,   WORLD!\n", Some("hello world"));
        check(&e, "“Quoted” — text…", Some("quoted text"));
        check(&e, "?!.", None);
    }

    #[test]
    fn config_round_trips_and_rejects_unknown_fields() {
        let parsed: Extractor = serde_json::from_str(r#"{"kind":"choice"}"#).unwrap();
        assert_eq!(parsed, Extractor::Choice { letters: "ABCD".into() });
        let parsed: Extractor = serde_json::from_str(r#"{"kind":"last_number"}"#).unwrap();
        assert_eq!(parsed, Extractor::LastNumber);
        let between = Extractor::Between { start: "[".into(), end: "]".into() };
        let json = serde_json::to_string(&between).unwrap();
        assert_eq!(serde_json::from_str::<Extractor>(&json).unwrap(), between);
        assert!(serde_json::from_str::<Extractor>(r#"{"kind":"choice","letterz":"AB"}"#).is_err());
    }
}
