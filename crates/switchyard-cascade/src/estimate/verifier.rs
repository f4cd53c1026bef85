//! The verifier estimator: a scorer of (query, answer) → P(correct).
//!
//! Two sources sit behind one narrow trait, [`Scorer`]: a lightweight model trained offline
//! ([`VerifierModel`](crate::VerifierModel), scored in-process in microseconds) and an external HTTP scoring
//! endpoint, whose wire types are [`ScoreRequest`] and [`ScoreResponse`]. The HTTP client belongs to the
//! runtime (this crate performs no I/O); it hands the score back through
//! [`FollowUpResult::Score`](super::FollowUpResult::Score).

use serde::{Deserialize, Serialize};

use crate::CascadeError;

/// Anything that scores an answer: returns P(the answer to the query is correct), in `[0, 1]`.
pub trait Scorer {
    /// The probability that `answer` correctly answers `query`.
    fn score(&self, query: &str, answer: &str) -> Result<f64, CascadeError>;
}

/// The JSON body POSTed to an external scoring endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreRequest {
    /// The user's query (the last user message).
    pub query: String,
    /// The stage's answer (the extracted answer when the stage configures an extractor).
    pub answer: String,
}

/// The JSON reply of an external scoring endpoint: `{"score": 0.87}`; other fields are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScoreResponse {
    /// P(correct) in `[0, 1]`.
    pub score: f64,
}

impl ScoreResponse {
    /// The score, checked to be a probability.
    pub fn probability(&self) -> Result<f64, CascadeError> {
        if (0.0..=1.0).contains(&self.score) {
            Ok(self.score)
        } else {
            Err(CascadeError::InvalidScore { value: self.score })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_types() {
        let request = ScoreRequest { query: "2+2?".into(), answer: "4".into() };
        assert_eq!(serde_json::to_string(&request).unwrap(), r#"{"query":"2+2?","answer":"4"}"#);
        let reply: ScoreResponse = serde_json::from_str(r#"{"score":0.25,"model":"v3"}"#).unwrap();
        assert_eq!(reply.probability().unwrap(), 0.25);
        let bad: ScoreResponse = serde_json::from_str(r#"{"score":1.5}"#).unwrap();
        assert!(matches!(bad.probability(), Err(CascadeError::InvalidScore { value }) if value == 1.5));
        assert!(serde_json::from_str::<ScoreResponse>(r#"{"p":0.5}"#).is_err());
    }
}
