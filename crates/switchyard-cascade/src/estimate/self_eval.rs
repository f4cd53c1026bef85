//! Self-evaluation: ask a model how confident it is in an answer, and read a score out of whatever it replies.
//!
//! Models answer such prompts in many shapes, so the parser accepts, in this order:
//! 1. a JSON object anywhere in the reply with a `confidence`, `score` or `probability` field (number or
//!    numeric string): `{"confidence": 0.8}`;
//! 2. otherwise the first number after the last `confidence` or `score` keyword, or the first number of the
//!    reply when there is no keyword, read as:
//!    `x%` → `x / 100`; `x/y` or `x out of y` → `x / y`; a bare `x` → `x` when `x ≤ 1`, `x / 10` when `x ≤ 10`,
//!    `x / 100` when `x ≤ 100` ("Confidence: 7" is seven out of ten).
//!
//! Anything else (an empty reply, no number, a negative number, a ratio above one) is a
//! [`SelfEvalParseError`]: the estimate is then unavailable, which counts as confidence `0`, and the error is in
//! the trace for the caller to log. The parser never panics.

use serde::{Deserialize, Serialize};

use crate::{CascadeError, InvalidField};

/// The default prompt; `{query}` and `{answer}` are replaced.
pub const DEFAULT_TEMPLATE: &str = "You are grading an answer to a question.\n\nQuestion:\n{query}\n\nProposed \
answer:\n{answer}\n\nHow likely is it that the proposed answer is correct? Reply with only a JSON object of the \
form {\"confidence\": p} where p is a number between 0 and 1.";

/// The self-evaluation estimator's parameters.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfEvalConfig {
    /// The model (provider or group) asked to grade; the stage's own target when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The prompt, with `{query}` and `{answer}` placeholders; [`DEFAULT_TEMPLATE`] when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
}

impl SelfEvalConfig {
    /// The grading prompt for `query` and `answer`.
    pub fn prompt(&self, query: &str, answer: &str) -> String {
        // Replace `{answer}` first: a query containing the text "{answer}" must not be substituted.
        let template = self.template.as_deref().unwrap_or(DEFAULT_TEMPLATE);
        let mut out = String::with_capacity(template.len() + query.len() + answer.len());
        let mut rest = template;
        while let Some(pos) = rest.find('{') {
            out.push_str(&rest[..pos]);
            let tail = &rest[pos..];
            if let Some(after) = tail.strip_prefix("{query}") {
                out.push_str(query);
                rest = after;
            } else if let Some(after) = tail.strip_prefix("{answer}") {
                out.push_str(answer);
                rest = after;
            } else {
                out.push('{');
                rest = &tail[1..];
            }
        }
        out.push_str(rest);
        out
    }

    /// Checks the template names the answer; `stage` names the stage in the error.
    pub fn validate(&self, stage: usize) -> Result<(), CascadeError> {
        match (&self.target, &self.template) {
            (Some(t), _) if t.is_empty() => Err(CascadeError::InvalidConfig(InvalidField {
                stage: Some(stage),
                field: "estimator.target",
                reason: "must not be empty",
            })),
            (_, Some(t)) if !t.contains("{answer}") => Err(CascadeError::InvalidConfig(InvalidField {
                stage: Some(stage),
                field: "estimator.template",
                reason: "must contain the {answer} placeholder",
            })),
            _ => Ok(()),
        }
    }
}

/// Why a self-evaluation reply is not a score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum SelfEvalParseError {
    /// The reply was empty or only whitespace.
    #[error("the self-evaluation reply is empty")]
    Empty,
    /// The reply holds no number where a score was expected.
    #[error("the self-evaluation reply holds no score")]
    NoNumber,
    /// The number cannot be a confidence (negative, above 100, or a ratio above one).
    #[error("the self-evaluation score {value} is out of range")]
    OutOfRange {
        /// The value as read.
        value: f64,
    },
}

/// The confidence in `[0, 1]` a self-evaluation reply states (rules in the module documentation).
pub fn parse_self_eval(reply: &str) -> Result<f64, SelfEvalParseError> {
    let reply = reply.trim();
    if reply.is_empty() {
        return Err(SelfEvalParseError::Empty);
    }
    if let Some(value) = json_score(reply) {
        return parse_text_score(&value);
    }
    let lower = reply.to_lowercase();
    let anchor = ["confidence", "score"].iter().filter_map(|k| lower.rfind(k).map(|p| p + k.len())).max();
    match anchor {
        Some(from) => parse_text_score(&lower[from..]).or_else(|_| parse_text_score(&lower)),
        None => parse_text_score(&lower),
    }
}

/// The `confidence`/`score`/`probability` value of the first JSON object in `reply` that has one, as text.
fn json_score(reply: &str) -> Option<String> {
    let bytes = reply.as_bytes();
    for (open, _) in reply.match_indices('{') {
        let mut depth = 0usize;
        let mut in_string = false;
        let mut escaped = false;
        let mut close = None;
        for (i, &b) in bytes.iter().enumerate().skip(open) {
            if in_string {
                match (escaped, b) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        close = Some(i);
                        break;
                    }
                }
                _ => {}
            }
        }
        let Some(close) = close else { continue };
        let Ok(serde_json::Value::Object(map)) = serde_json::from_str(&reply[open..=close]) else { continue };
        let field = map.iter().find(|(k, _)| {
            let k = k.to_ascii_lowercase();
            k == "confidence" || k == "score" || k == "probability"
        });
        match field.map(|(_, v)| v) {
            Some(serde_json::Value::Number(n)) => return Some(n.to_string()),
            Some(serde_json::Value::String(s)) => return Some(s.to_lowercase()),
            _ => {}
        }
    }
    None
}

/// A non-negative decimal number at the start of `s` and its length in bytes.
fn leading_number(s: &str) -> Option<(f64, usize)> {
    let bytes = s.as_bytes();
    let mut end = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    let int_len = end;
    if bytes.get(end) == Some(&b'.') && bytes.get(end + 1).is_some_and(u8::is_ascii_digit) {
        end += 1 + bytes[end + 1..].iter().take_while(|b| b.is_ascii_digit()).count();
    } else if int_len == 0 {
        return None;
    }
    s[..end].parse().ok().map(|v| (v, end))
}

fn parse_text_score(text: &str) -> Result<f64, SelfEvalParseError> {
    let bytes = text.as_bytes();
    let start = (0..bytes.len())
        .find(|&i| {
            let digit = bytes[i].is_ascii_digit();
            let dot_digit = bytes[i] == b'.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit);
            let continues = i > 0 && (bytes[i - 1].is_ascii_digit() || bytes[i - 1] == b'.');
            (digit || dot_digit) && !continues
        })
        .ok_or(SelfEvalParseError::NoNumber)?;
    let (value, len) = leading_number(&text[start..]).ok_or(SelfEvalParseError::NoNumber)?;
    if text[..start].trim_end_matches(' ').ends_with(['-', '−']) {
        return Err(SelfEvalParseError::OutOfRange { value: -value });
    }
    let rest = text[start + len..].trim_start();
    let ratio = |rest: &str| -> Option<f64> { leading_number(rest.trim_start()).map(|(d, _)| d) };
    let score = if rest.starts_with('%') {
        value / 100.0
    } else if let Some(denominator) = rest.strip_prefix('/').or_else(|| rest.strip_prefix("out of")).and_then(ratio) {
        if denominator <= 0.0 {
            return Err(SelfEvalParseError::OutOfRange { value });
        }
        if value > denominator {
            return Err(SelfEvalParseError::OutOfRange { value: value / denominator });
        }
        value / denominator
    } else if value <= 1.0 {
        value
    } else if value <= 10.0 {
        value / 10.0
    } else {
        value / 100.0
    };
    if (0.0..=1.0).contains(&score) { Ok(score) } else { Err(SelfEvalParseError::OutOfRange { value }) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(reply: &str, expected: Result<f64, SelfEvalParseError>) {
        let got = parse_self_eval(reply);
        match (&got, &expected) {
            (Ok(g), Ok(e)) => assert!((g - e).abs() < 1e-9, "{reply:?}: got {g}, expected {e}"),
            _ => assert_eq!(got, expected, "{reply:?}"),
        }
    }

    #[test]
    fn parses_the_usual_shapes() {
        for (reply, expected) in [
            ("0.8", 0.8),
            (".75", 0.75),
            ("80%", 0.8),
            ("I am 95 % sure.", 0.95),
            ("Confidence: 7/10", 0.7),
            ("8 out of 10", 0.8),
            ("I'd say 3 out of 4.", 0.75),
            ("Confidence: 7", 0.7),
            ("Score = 85", 0.85),
            ("1", 1.0),
            ("0", 0.0),
            (r#"{"confidence": 0.92}"#, 0.92),
            (r#"Sure! ```json\n{"reasoning": "the sum {is} right", "Confidence": "0.6"}``` "#, 0.6),
            (r#"{"confidence": "90%"}"#, 0.9),
            (r#"{"note": 3} then {"score": 0.4}"#, 0.4),
            ("Step 2 checks out. Confidence: 0.9", 0.9),
            ("After 3 steps my confidence is 60%", 0.6),
        ] {
            check(reply, Ok(expected));
        }
    }

    #[test]
    fn rejects_what_is_not_a_score() {
        check("", Err(SelfEvalParseError::Empty));
        check("   \n", Err(SelfEvalParseError::Empty));
        check("I am very confident.", Err(SelfEvalParseError::NoNumber));
        check("Confidence: high", Err(SelfEvalParseError::NoNumber));
        check("{\"confidence\": null", Err(SelfEvalParseError::NoNumber));
        check("{\"confidence\": true}", Err(SelfEvalParseError::NoNumber));
        check("150", Err(SelfEvalParseError::OutOfRange { value: 150.0 }));
        check("12/10", Err(SelfEvalParseError::OutOfRange { value: 1.2 }));
        check("Confidence: -0.5", Err(SelfEvalParseError::OutOfRange { value: -0.5 }));
        check("{\"confidence\": 2000}", Err(SelfEvalParseError::OutOfRange { value: 2000.0 }));
        check("3/0", Err(SelfEvalParseError::OutOfRange { value: 3.0 }));
        check("}{}}{{{", Err(SelfEvalParseError::NoNumber));
        check("\u{0}\u{fffd}é", Err(SelfEvalParseError::NoNumber));
    }

    #[test]
    fn prompt_substitutes_placeholders_once() {
        let config = SelfEvalConfig { target: None, template: Some("Q={query} A={answer} {other}".into()) };
        assert_eq!(config.prompt("what is {answer}?", "42"), "Q=what is {answer}? A=42 {other}");
        let default = SelfEvalConfig::default().prompt("2+2?", "4");
        assert!(default.contains("2+2?") && default.contains("\n4\n") && default.contains("{\"confidence\": p}"));
        assert!(SelfEvalConfig { target: None, template: Some("no placeholder".into()) }.validate(0).is_err());
        assert!(SelfEvalConfig { target: Some(String::new()), template: None }.validate(0).is_err());
        assert!(SelfEvalConfig::default().validate(0).is_ok());
    }
}
