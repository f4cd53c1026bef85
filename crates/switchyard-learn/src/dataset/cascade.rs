//! The generic cascade outcome format of issue 7 (item 6): recorded answers of each cascade stage, so that
//! anyone can replay their own logs through the cascade decision code.
//!
//! One query per line:
//!
//! ```json
//! {"id": "q1", "prompt": "What is 2+3?", "reference": "5",
//!  "stages": [{"model": "small", "cost_usd": 0.0001, "samples": [{"text": "5", "correct": true, "logprob": -0.2},
//!                                                                {"text": "6", "correct": false}]},
//!             {"model": "large", "cost_usd": 0.003, "samples": [{"text": "5", "correct": true}]}]}
//! ```
//!
//! - `id`, `prompt` (strings) and `stages` (non-empty, cheapest first) are required; `reference` is optional.
//! - A stage has its `model`, the `cost_usd` of one call (finite, non-negative) and at least one sample.
//! - A sample has the answer `text`, whether it was `correct` (boolean), and optionally the answer's total token
//!   `logprob` (a number, at most 0). Several samples allow self-consistency; one is enough for a verifier.
//!
//! A malformed line fails with [`LearnError::JsonLine`] or [`LearnError::BadRecord`], both naming the file and the
//! one-based line number.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{ModelInfo, OutcomeTable, QueryRecord, read_text};
use crate::error::{LearnError, Result};

/// One recorded answer of a stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CascadeSample {
    /// The answer text.
    pub text: String,
    /// Whether the answer was correct.
    pub correct: bool,
    /// The answer's token log-probability (sum over tokens), when the provider returned it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprob: Option<f64>,
}

/// One stage's recorded call(s) on a query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CascadeStage {
    /// The model of the stage.
    pub model: String,
    /// The cost of one call in USD.
    pub cost_usd: f64,
    /// The recorded samples, at least one.
    pub samples: Vec<CascadeSample>,
}

/// One query of the cascade format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CascadeRecord {
    /// The question's id.
    pub id: String,
    /// The prompt.
    pub prompt: String,
    /// The reference answer, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The stages, cheapest first.
    pub stages: Vec<CascadeStage>,
}

impl CascadeRecord {
    /// Checks the rules the serde shape cannot express; the reason names the offending stage or sample.
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.stages.is_empty() {
            return Err("no stage".into());
        }
        for (s, stage) in self.stages.iter().enumerate() {
            if !stage.cost_usd.is_finite() || stage.cost_usd < 0.0 {
                return Err(format!("stage {s} ({}) has cost_usd {}", stage.model, stage.cost_usd));
            }
            if stage.samples.is_empty() {
                return Err(format!("stage {s} ({}) has no sample", stage.model));
            }
            for (k, sample) in stage.samples.iter().enumerate() {
                if let Some(lp) = sample.logprob.filter(|lp| !lp.is_finite() || *lp > 0.0) {
                    return Err(format!("stage {s} ({}) sample {k} has logprob {lp} (must be <= 0)", stage.model));
                }
            }
        }
        Ok(())
    }
}

/// Parses cascade JSONL text; `path` only names the source in errors. Blank lines are skipped.
pub fn parse_cascade_jsonl(text: &str, path: &Path) -> Result<Vec<CascadeRecord>> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        let record: CascadeRecord = serde_json::from_str(raw).map_err(|source| LearnError::JsonLine {
            path: path.to_path_buf(),
            line: i + 1,
            source,
        })?;
        record.check().map_err(|reason| LearnError::BadRecord { path: path.to_path_buf(), line: i + 1, reason })?;
        out.push(record);
    }
    Ok(out)
}

/// Reads a cascade JSONL file.
pub fn load_cascade_jsonl(path: &Path) -> Result<Vec<CascadeRecord>> {
    parse_cascade_jsonl(&read_text(path)?, path)
}

/// The common shape of cascade records: one model column per stage (the stage models must be the same on every
/// record), quality = correctness of the stage's first sample, cost = the stage's `cost_usd`.
pub fn cascade_to_table(name: &str, records: &[CascadeRecord]) -> Result<OutcomeTable> {
    let Some(first) = records.first() else {
        return Err(LearnError::Empty { what: format!("{name}: no cascade record") });
    };
    let models: Vec<ModelInfo> =
        first.stages.iter().map(|s| ModelInfo { name: s.model.clone(), price: None }).collect();
    let mut queries = Vec::with_capacity(records.len());
    for r in records {
        let same = r.stages.len() == models.len() && r.stages.iter().zip(&models).all(|(s, m)| s.model == m.name);
        if !same {
            return Err(LearnError::invalid(
                "stages",
                format!("record {} has other stage models than record {}", r.id, first.id),
            ));
        }
        queries.push(QueryRecord {
            id: r.id.clone(),
            prompt: r.prompt.clone(),
            group: None,
            quality: r
                .stages
                .iter()
                .map(|s| if s.samples.first().is_some_and(|x| x.correct) { 1.0 } else { 0.0 })
                .collect(),
            cost_usd: r.stages.iter().map(|s| Some(s.cost_usd)).collect(),
        });
    }
    let table = OutcomeTable { name: name.into(), models, queries };
    table.validate()?;
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"id":"q1","prompt":"2+3?","reference":"5","stages":[{"model":"s","cost_usd":0.001,"samples":[{"text":"5","correct":true,"logprob":-0.5},{"text":"6","correct":false}]},{"model":"l","cost_usd":0.01,"samples":[{"text":"5","correct":true}]}]}"#;

    fn line_of(err: Option<LearnError>) -> Option<usize> {
        match err {
            Some(LearnError::JsonLine { line, .. } | LearnError::BadRecord { line, .. }) => Some(line),
            _ => None,
        }
    }

    #[test]
    fn parses_a_good_file_and_builds_a_table() {
        let text = format!(
            "{GOOD}\n\n{}",
            GOOD.replace("q1", "q2").replace("\"correct\":true,\"logprob\"", "\"correct\":false,\"logprob\"")
        );
        let records = parse_cascade_jsonl(&text, Path::new("c.jsonl")).expect("valid");
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].stages[0].samples[0].logprob, Some(-0.5));
        assert_eq!(records[0].stages[1].samples[0].logprob, None);
        let t = cascade_to_table("c", &records).expect("same stages");
        assert_eq!(t.queries[0].quality, vec![1.0, 1.0]);
        assert_eq!(t.queries[1].quality, vec![0.0, 1.0]);
        assert_eq!(t.queries[1].cost_usd, vec![Some(0.001), Some(0.01)]);
    }

    #[test]
    fn malformed_lines_are_typed_errors_with_their_line_number() {
        let cases = [
            (format!("{GOOD}\n{{\"id\":\"x\""), 2),
            (
                format!(
                    "{GOOD}\n{GOOD}\n{}",
                    GOOD.replace("\"correct\":true,\"logprob\"", "\"correct\":\"yes\",\"logprob\"")
                ),
                3,
            ),
            (GOOD.replace("\"reference\"", "\"unknown_field\""), 1),
            (format!("\n{}", GOOD.replace("\"cost_usd\":0.001", "\"cost_usd\":-1")), 2),
            (GOOD.replace("\"logprob\":-0.5", "\"logprob\":0.5"), 1),
            (
                GOOD.replace(",{\"text\":\"5\",\"correct\":true}]", "]")
                    .replace("[{\"text\":\"5\",\"correct\":true}]", "[]"),
                1,
            ),
            (r#"{"id":"q","prompt":"p","stages":[]}"#.to_string(), 1),
        ];
        for (text, want) in cases {
            let got = line_of(parse_cascade_jsonl(&text, Path::new("bad.jsonl")).err());
            assert_eq!(got, Some(want), "{text}");
        }
    }

    #[test]
    fn differing_stage_models_are_refused_for_the_table() {
        let mut records = parse_cascade_jsonl(&format!("{GOOD}\n{GOOD}"), Path::new("c")).expect("valid");
        records[1].stages[1].model = "other".into();
        assert!(cascade_to_table("c", &records).is_err());
        assert!(cascade_to_table("c", &[]).is_err());
    }
}
