//! The generic N-model outcome format of issue 8, and its real instance, ZeroEval.
//!
//! One query per line:
//!
//! ```json
//! {"id": "q1", "prompt": "...", "task": "gsm",
//!  "outcomes": {"model-a": {"score": 1, "cost_usd": 0.0002}, "model-b": {"score": 0.5, "input_tokens": 120, "output_tokens": 80}}}
//! ```
//!
//! - `id` (string) and `prompt` (string) are required; `task` (string) is optional and becomes the record's group.
//! - `outcomes` maps each model to its `score` in `[0, 1]` and, optionally, `cost_usd` (number or `null`),
//!   `input_tokens` and `output_tokens`. Every line must list the same models as the first line.
//! - Cost: `cost_usd` when present; otherwise computed from the model's price in the optional price file and the
//!   token counts (input estimated from the prompt when absent, output 0 when absent); otherwise unknown.
//!
//! The price file is `models.json` as ZeroEval ships it: `{"models": {"<model>": {"input_usd_per_million": x,
//! "output_usd_per_million": y, ...}}}`; a `null` price marks an unpriced model. Models absent from the price file
//! are unpriced too.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::{ModelInfo, OutcomeTable, Price, QueryRecord, estimate_tokens, read_text};
use crate::error::{LearnError, Result};

/// Per-model prices; `None` marks a model known to have no price.
pub type PriceTable = BTreeMap<String, Option<Price>>;

#[derive(Deserialize)]
struct PriceFile {
    models: BTreeMap<String, PriceEntry>,
}

#[derive(Deserialize)]
struct PriceEntry {
    input_usd_per_million: Option<f64>,
    output_usd_per_million: Option<f64>,
}

/// Reads a price file in ZeroEval's `models.json` shape.
pub fn load_prices(path: &Path) -> Result<PriceTable> {
    let text = read_text(path)?;
    let file: PriceFile =
        serde_json::from_str(&text).map_err(|source| LearnError::Json { path: path.to_path_buf(), source })?;
    Ok(file
        .models
        .into_iter()
        .map(|(name, e)| {
            let price = match (e.input_usd_per_million, e.output_usd_per_million) {
                (Some(i), Some(o)) => Some(Price { input_usd_per_million: i, output_usd_per_million: o }),
                _ => None,
            };
            (name, price)
        })
        .collect())
}

#[derive(Deserialize)]
struct Line {
    id: String,
    prompt: String,
    #[serde(default)]
    task: Option<String>,
    outcomes: BTreeMap<String, LineOutcome>,
}

#[derive(Deserialize)]
struct LineOutcome {
    score: f64,
    #[serde(default)]
    cost_usd: Option<f64>,
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
}

/// Parses the generic N-model JSONL text; `path` only names the source in errors.
pub fn parse_outcomes_jsonl(text: &str, path: &Path, prices: Option<&PriceTable>) -> Result<OutcomeTable> {
    let bad = |line: usize, reason: String| LearnError::BadRecord { path: path.to_path_buf(), line, reason };
    let mut models: Vec<ModelInfo> = Vec::new();
    let mut queries = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let line: Line = serde_json::from_str(raw).map_err(|source| LearnError::JsonLine {
            path: path.to_path_buf(),
            line: line_no,
            source,
        })?;
        if models.is_empty() {
            if line.outcomes.is_empty() {
                return Err(bad(line_no, "no outcome".into()));
            }
            models = line
                .outcomes
                .keys()
                .map(|name| ModelInfo {
                    name: name.clone(),
                    price: prices.and_then(|p| p.get(name).copied().flatten()),
                })
                .collect();
        }
        if line.outcomes.len() != models.len() {
            return Err(bad(line_no, format!("{} models, the first line has {}", line.outcomes.len(), models.len())));
        }
        let mut quality = Vec::with_capacity(models.len());
        let mut cost_usd = Vec::with_capacity(models.len());
        for m in &models {
            let Some(o) = line.outcomes.get(&m.name) else {
                return Err(bad(line_no, format!("no outcome for model {:?}", m.name)));
            };
            if !(0.0..=1.0).contains(&o.score) {
                return Err(bad(line_no, format!("score {} of {:?} is outside [0, 1]", o.score, m.name)));
            }
            if let Some(c) = o.cost_usd.filter(|c| !c.is_finite() || *c < 0.0) {
                return Err(bad(line_no, format!("cost_usd {c} of {:?} is negative or not finite", m.name)));
            }
            quality.push(o.score);
            cost_usd.push(o.cost_usd.or_else(|| {
                m.price.map(|p| {
                    p.cost(
                        o.input_tokens.unwrap_or_else(|| estimate_tokens(&line.prompt)),
                        o.output_tokens.unwrap_or(0),
                    )
                })
            }));
        }
        queries.push(QueryRecord { id: line.id, prompt: line.prompt, group: line.task, quality, cost_usd });
    }
    let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("outcomes").to_string();
    if queries.is_empty() {
        return Err(LearnError::Empty { what: format!("{}: no query", path.display()) });
    }
    let table = OutcomeTable { name, models, queries };
    table.validate()?;
    Ok(table)
}

/// Loads a generic N-model JSONL file, with prices for models whose lines carry no cost.
pub fn load_outcomes_jsonl(path: &Path, prices: Option<&PriceTable>) -> Result<OutcomeTable> {
    parse_outcomes_jsonl(&read_text(path)?, path, prices)
}

/// Loads the ZeroEval folder (`outcomes.jsonl` priced by `models.json`); the table is named `zeroeval`.
pub fn load_zeroeval(dir: &Path) -> Result<OutcomeTable> {
    let prices = load_prices(&dir.join("models.json"))?;
    let mut table = load_outcomes_jsonl(&dir.join("outcomes.jsonl"), Some(&prices))?;
    table.name = "zeroeval".into();
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prices() -> PriceTable {
        let mut p = PriceTable::new();
        p.insert("a".into(), Some(Price { input_usd_per_million: 1.0, output_usd_per_million: 2.0 }));
        p.insert("b".into(), None);
        p
    }

    #[test]
    fn parses_and_prices() {
        let text = r#"{"id":"1","prompt":"abcdefgh","task":"gsm","outcomes":{"a":{"score":1,"input_tokens":10,"output_tokens":5},"b":{"score":0,"cost_usd":null}}}
{"id":"2","prompt":"x","outcomes":{"b":{"score":0.5,"cost_usd":0.25},"a":{"score":0,"cost_usd":0.001}}}"#;
        let t = parse_outcomes_jsonl(text, Path::new("mem.jsonl"), Some(&prices())).expect("valid");
        assert_eq!(t.name, "mem");
        assert_eq!(t.models.iter().map(|m| m.is_priced()).collect::<Vec<_>>(), [true, false]);
        assert_eq!(t.queries[0].group.as_deref(), Some("gsm"));
        assert!((t.queries[0].cost_usd[0].unwrap_or_default() - 20.0 / 1e6).abs() < 1e-15);
        assert_eq!(t.queries[0].cost_usd[1], None);
        assert_eq!(t.queries[1].quality, vec![0.0, 0.5]);
        assert_eq!(t.queries[1].cost_usd, vec![Some(0.001), Some(0.25)]);
    }

    #[test]
    fn bad_lines_name_their_number() {
        let check = |text: &str, want_line: usize| {
            let err = parse_outcomes_jsonl(text, Path::new("x.jsonl"), None).err();
            match err {
                Some(LearnError::JsonLine { line, .. } | LearnError::BadRecord { line, .. }) => {
                    assert_eq!(line, want_line, "{text}")
                }
                other => panic!("expected a line error, got {other:?}"),
            }
        };
        let ok = r#"{"id":"1","prompt":"p","outcomes":{"a":{"score":1}}}"#;
        check(&format!("{ok}\n\n{{not json"), 3);
        check(&format!("{ok}\n{}", r#"{"id":"2","prompt":"p","outcomes":{"a":{"score":1.5}}}"#), 2);
        check(&format!("{ok}\n{}", r#"{"id":"2","prompt":"p","outcomes":{"z":{"score":1}}}"#), 2);
        check(r#"{"id":"2","outcomes":{"a":{"score":1}}}"#, 1);
    }
}
