//! Token log-probabilities: how probable the model found its own answer.
//!
//! The confidence is `exp(mean logprob)` (the geometric mean of the token probabilities) or `exp(min logprob)`
//! (the least likely token), over all completion tokens or only the tokens of the extracted answer. Both map a
//! log-probability in `(-inf, 0]` monotonically onto `(0, 1]`.
//!
//! Missing log-probabilities (a provider that does not return them, or an empty list) are not guessed at: the
//! estimate is [`Unavailable::NoLogprobs`], which the cascade treats as confidence `0`, so the stage escalates.
//! An operator who sees these in the trace should pick another estimator for that provider.

use serde::{Deserialize, Serialize};

use crate::extract::Extractor;

use super::Unavailable;

/// One entry of an OpenAI-compatible `logprobs.content[]` array: the protocol's type, as providers hand it over.
pub use switchyard_protocol::TokenLogprob;

/// The `logprobs` object of an OpenAI-compatible choice: `{"content": [{"token", "logprob", …}, …]}`; `content`
/// may be `null`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChoiceLogprobs {
    /// The per-token entries, when present.
    #[serde(default)]
    pub content: Option<Vec<TokenLogprob>>,
}

/// How the token log-probabilities are folded into one number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogprobAggregate {
    /// `exp(mean)`: the geometric mean token probability.
    #[default]
    Mean,
    /// `exp(min)`: the probability of the least likely token.
    Min,
}

/// Which tokens count.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LogprobScope {
    /// Every completion token.
    #[default]
    All,
    /// Only the tokens that overlap the answer the extractor finds in the completion (the tokens' text, joined).
    Answer {
        /// How to find the answer.
        extractor: Extractor,
    },
}

/// The confidence of a completion from its token log-probabilities, and the extracted answer when the scope
/// uses one. `text` is the completion; the answer is located in the tokens' own text, which is what the
/// log-probabilities describe.
pub fn logprob_confidence(
    logprobs: Option<&[TokenLogprob]>,
    text: &str,
    aggregate: LogprobAggregate,
    scope: &LogprobScope,
) -> Result<(f64, Option<String>), Unavailable> {
    let tokens = logprobs.filter(|t| !t.is_empty()).ok_or(Unavailable::NoLogprobs)?;
    if tokens.iter().any(|t| (!t.logprob.is_finite() && t.logprob != f64::NEG_INFINITY) || t.logprob > 0.0) {
        return Err(Unavailable::InvalidLogprob);
    }
    let (selected, extracted): (Vec<f64>, Option<String>) = match scope {
        LogprobScope::All => (tokens.iter().map(|t| t.logprob).collect(), None),
        LogprobScope::Answer { extractor } => {
            let joined: String = tokens.iter().map(|t| t.token.as_str()).collect();
            // Prefer the tokens' text; fall back to the completion text only to report the answer.
            let Some((answer, (from, to))) = extractor.extract_span(&joined) else {
                return Err(if extractor.extract(text).is_some() {
                    Unavailable::NoLogprobs
                } else {
                    Unavailable::NoExtractableAnswer
                });
            };
            let mut offset = 0;
            let mut selected = Vec::new();
            for t in tokens {
                let end = offset + t.token.len();
                // A token overlaps the answer span (an empty span selects the token it sits in).
                if end > from && offset < to.max(from + 1) {
                    selected.push(t.logprob);
                }
                offset = end;
            }
            (selected, Some(answer))
        }
    };
    if selected.is_empty() {
        return Err(Unavailable::NoLogprobs);
    }
    let folded = match aggregate {
        LogprobAggregate::Mean => selected.iter().sum::<f64>() / selected.len() as f64,
        LogprobAggregate::Min => selected.iter().copied().fold(0.0, f64::min),
    };
    Ok((folded.exp(), extracted))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(pairs: &[(&str, f64)]) -> Vec<TokenLogprob> {
        pairs.iter().map(|(t, l)| TokenLogprob { token: (*t).into(), logprob: *l }).collect()
    }

    #[test]
    fn mean_and_min() {
        let t = tokens(&[("The", -0.1), (" answer", -0.3), (" is", -0.2)]);
        let (mean, _) = logprob_confidence(Some(&t), "", LogprobAggregate::Mean, &LogprobScope::All).unwrap();
        assert!((mean - (-0.2f64).exp()).abs() < 1e-12);
        let (min, _) = logprob_confidence(Some(&t), "", LogprobAggregate::Min, &LogprobScope::All).unwrap();
        assert!((min - (-0.3f64).exp()).abs() < 1e-12);
        let certain = tokens(&[("x", 0.0)]);
        assert_eq!(logprob_confidence(Some(&certain), "x", LogprobAggregate::Min, &LogprobScope::All).unwrap().0, 1.0);
        let impossible = tokens(&[("x", f64::NEG_INFINITY)]);
        let (zero, _) = logprob_confidence(Some(&impossible), "x", LogprobAggregate::Mean, &LogprobScope::All).unwrap();
        assert_eq!(zero, 0.0);
    }

    #[test]
    fn answer_scope_selects_the_answer_tokens() {
        let t = tokens(&[("We", -2.0), (" get", -2.0), (" ####", -0.5), (" 1", -0.1), (",", -0.2), ("200", -0.3)]);
        let scope = LogprobScope::Answer { extractor: Extractor::LastNumber };
        let (c, answer) = logprob_confidence(Some(&t), "", LogprobAggregate::Mean, &scope).unwrap();
        assert_eq!(answer.as_deref(), Some("1200"));
        assert!((c - (-0.2f64).exp()).abs() < 1e-12, "{c}");
        let (c, _) = logprob_confidence(Some(&t), "", LogprobAggregate::Min, &scope).unwrap();
        assert!((c - (-0.3f64).exp()).abs() < 1e-12);
        let no_number = tokens(&[("no", -0.1), (" idea", -0.1)]);
        assert_eq!(
            logprob_confidence(Some(&no_number), "no idea", LogprobAggregate::Mean, &scope),
            Err(Unavailable::NoExtractableAnswer)
        );
        // The completion has an answer but the tokens do not describe it: the logprobs are unusable.
        assert_eq!(
            logprob_confidence(Some(&no_number), "#### 4", LogprobAggregate::Mean, &scope),
            Err(Unavailable::NoLogprobs)
        );
    }

    #[test]
    fn missing_or_invalid_logprobs_are_unavailable() {
        let scope = LogprobScope::All;
        assert_eq!(logprob_confidence(None, "text", LogprobAggregate::Mean, &scope), Err(Unavailable::NoLogprobs));
        assert_eq!(logprob_confidence(Some(&[]), "text", LogprobAggregate::Min, &scope), Err(Unavailable::NoLogprobs));
        for bad in [f64::NAN, 0.5, f64::INFINITY] {
            let t = tokens(&[("a", -0.1), ("b", bad)]);
            assert_eq!(
                logprob_confidence(Some(&t), "ab", LogprobAggregate::Mean, &scope),
                Err(Unavailable::InvalidLogprob),
                "{bad}"
            );
        }
    }

    #[test]
    fn reads_the_openai_logprobs_object() {
        let json = r#"{"content":[{"token":"Hi","logprob":-0.01,"bytes":[72,105],"top_logprobs":[]}]}"#;
        let parsed: ChoiceLogprobs = serde_json::from_str(json).unwrap();
        assert_eq!(parsed.content, Some(tokens(&[("Hi", -0.01)])));
        let null: ChoiceLogprobs = serde_json::from_str(r#"{"content":null}"#).unwrap();
        assert_eq!(null.content, None);
    }
}
