//! Recorded model outputs, so the mock can answer like the real models did.
//!
//! Routing quality can only be measured on real outcomes. The RouteLLM evaluation data records, for each
//! prompt, what a weak and a strong model answered and whether that was correct; replaying it lets the
//! whole system be benchmarked offline. Two formats load:
//!
//! * **RouteLLM CSV**: a `prompt` column, one column per model holding its correctness label
//!   (`True`/`False`), and optionally `<model>_response` columns with the full answer. When a model has a
//!   response column (GSM8K) the mock answers with it; when it has none (the MMLU files) the mock answers
//!   with the correctness label itself, `"True"` or `"False"`, which is enough to score a routing decision.
//! * **JSONL**: one `{"model": …, "prompt": …, "response": …}` object per line.
//!
//! Lookups are by (model, prompt), where the prompt is the content of the last user message; prompts are
//! compared after trimming surrounding whitespace.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use serde::Deserialize;

use crate::MockServerError;

/// Recorded responses keyed by model, then by prompt.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReplayData {
    by_model: HashMap<String, HashMap<String, String>>,
}

/// One line of the JSONL format.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonlRecord {
    model: String,
    prompt: String,
    response: String,
}

impl ReplayData {
    /// An empty set of recordings.
    pub fn new() -> Self {
        Self::default()
    }

    /// Loads a RouteLLM CSV file or a JSONL file: `.jsonl`/`.json` files, and files whose first
    /// non-blank character is `{`, are JSONL; everything else is CSV.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, MockServerError> {
        let path = path.as_ref();
        let text = fs::read_to_string(path)
            .map_err(|source| MockServerError::ReplayIo { path: path.to_path_buf(), source })?;
        let by_extension = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("jsonl") || e.eq_ignore_ascii_case("json"));
        if by_extension || text.trim_start().starts_with('{') {
            Self::from_jsonl(&text, path)
        } else {
            Self::from_csv(&text, path)
        }
    }

    /// Parses the RouteLLM CSV format; `origin` only names the source in errors.
    pub fn from_csv(text: &str, origin: &Path) -> Result<Self, MockServerError> {
        let csv_error = |source| MockServerError::ReplayCsv { path: origin.to_path_buf(), source };
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let headers = reader.headers().map_err(csv_error)?.clone();
        let prompt_column =
            headers.iter().position(|h| h == "prompt").ok_or_else(|| MockServerError::ReplayFormat {
                path: origin.to_path_buf(),
                reason: "the CSV header has no `prompt` column".to_owned(),
            })?;
        // For each model: the column to answer from (its response if recorded, else its label).
        let mut sources: Vec<(String, usize)> = Vec::new();
        for (i, header) in headers.iter().enumerate() {
            if i == prompt_column || header.ends_with("_response") {
                continue;
            }
            let response = format!("{header}_response");
            let column = headers.iter().position(|h| h == response).unwrap_or(i);
            sources.push((header.to_owned(), column));
        }
        for (i, header) in headers.iter().enumerate() {
            if let Some(model) = header.strip_suffix("_response")
                && !headers.iter().any(|h| h == model)
            {
                sources.push((model.to_owned(), i));
            }
        }
        if sources.is_empty() {
            return Err(MockServerError::ReplayFormat {
                path: origin.to_path_buf(),
                reason: "the CSV header names no model column".to_owned(),
            });
        }
        let mut data = Self::new();
        for record in reader.records() {
            let record = record.map_err(csv_error)?;
            let Some(prompt) = record.get(prompt_column) else {
                continue;
            };
            for (model, column) in &sources {
                if let Some(answer) = record.get(*column) {
                    data.insert(model, prompt, answer);
                }
            }
        }
        Ok(data)
    }

    /// Parses JSONL, skipping blank lines; `origin` only names the source in errors.
    pub fn from_jsonl(text: &str, origin: &Path) -> Result<Self, MockServerError> {
        let mut data = Self::new();
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let record: JsonlRecord = serde_json::from_str(line).map_err(|source| MockServerError::ReplayJson {
                path: origin.to_path_buf(),
                line: index + 1,
                source,
            })?;
            data.insert(&record.model, &record.prompt, record.response);
        }
        Ok(data)
    }

    /// Records `response` for (model, prompt); a later record for the same pair wins.
    pub fn insert(&mut self, model: &str, prompt: &str, response: impl Into<String>) {
        self.by_model.entry(model.to_owned()).or_default().insert(prompt.trim().to_owned(), response.into());
    }

    /// Adds all recordings of `other`, which win over existing ones.
    pub fn extend(&mut self, other: ReplayData) {
        for (model, prompts) in other.by_model {
            self.by_model.entry(model).or_default().extend(prompts);
        }
    }

    /// The recorded response of `model` to `prompt`.
    pub fn get(&self, model: &str, prompt: &str) -> Option<&str> {
        self.by_model.get(model)?.get(prompt.trim()).map(String::as_str)
    }

    /// Whether any recording exists for `model`.
    pub fn has_model(&self, model: &str) -> bool {
        self.by_model.contains_key(model)
    }

    /// The models with recordings, in no particular order.
    pub fn models(&self) -> impl Iterator<Item = &str> {
        self.by_model.keys().map(String::as_str)
    }

    /// The prompts recorded for `model`, in no particular order.
    pub fn prompts(&self, model: &str) -> impl Iterator<Item = &str> {
        self.by_model.get(model).into_iter().flat_map(|prompts| prompts.keys().map(String::as_str))
    }

    /// Total number of (model, prompt) recordings.
    pub fn len(&self) -> usize {
        self.by_model.values().map(HashMap::len).sum()
    }

    /// True when nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const WEAK: &str = "mistralai/Mixtral-8x7B-Instruct-v0.1";
    const STRONG: &str = "gpt-4-1106-preview";

    #[test]
    fn csv_with_responses_answers_with_them() {
        let csv = format!(
            "prompt,{WEAK},{STRONG},{WEAK}_response,{STRONG}_response\n\
             \"What is 2+2?\nThink.\",False,True,\" It is 5.\n#### 5\",\"4\"\n"
        );
        let data = ReplayData::from_csv(&csv, Path::new("inline.csv")).unwrap();
        assert_eq!(data.len(), 2);
        assert_eq!(data.get(WEAK, "What is 2+2?\nThink."), Some(" It is 5.\n#### 5"));
        assert_eq!(data.get(STRONG, "  What is 2+2?\nThink.\n"), Some("4"));
        assert_eq!(data.get(STRONG, "What is 3+3?"), None);
        assert_eq!(data.get("other", "What is 2+2?\nThink."), None);
    }

    #[test]
    fn csv_without_responses_answers_with_the_label() {
        let csv = format!("prompt,{WEAK},{STRONG}\n\"Q?\nA. 1\nAnswer:\",True,False\n");
        let data = ReplayData::from_csv(&csv, Path::new("mmlu.csv")).unwrap();
        assert_eq!(data.get(WEAK, "Q?\nA. 1\nAnswer:"), Some("True"));
        assert_eq!(data.get(STRONG, "Q?\nA. 1\nAnswer:"), Some("False"));
        let mut models: Vec<&str> = data.models().collect();
        models.sort_unstable();
        assert_eq!(models, [STRONG, WEAK]);
    }

    #[test]
    fn csv_without_prompt_column_is_rejected() {
        let err = ReplayData::from_csv("question,a\nq,1\n", Path::new("x.csv")).unwrap_err();
        assert!(err.to_string().contains("prompt"), "{err}");
    }

    #[test]
    fn jsonl_loads_and_reports_the_bad_line() {
        let jsonl = "{\"model\":\"m\",\"prompt\":\"p\",\"response\":\"r\"}\n\n\
                     {\"model\":\"n\",\"prompt\":\"p\",\"response\":\"s\"}\n";
        let data = ReplayData::from_jsonl(jsonl, Path::new("x.jsonl")).unwrap();
        assert_eq!(data.get("m", "p"), Some("r"));
        assert_eq!(data.get("n", "p"), Some("s"));
        let err = ReplayData::from_jsonl("{\"model\":\"m\"}\n{", Path::new("x.jsonl")).unwrap_err();
        assert!(matches!(err, MockServerError::ReplayJson { line: 1, .. }), "{err:?}");
    }

    #[test]
    fn load_detects_the_format() {
        let dir = std::env::temp_dir().join(format!("switchyard-mock-replay-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let jsonl = dir.join("records.txt");
        fs::write(&jsonl, "{\"model\":\"m\",\"prompt\":\"p\",\"response\":\"r\"}\n").unwrap();
        let csv = dir.join("records.csv");
        fs::write(&csv, "prompt,m\np,True\n").unwrap();
        let mut data = ReplayData::load(&jsonl).unwrap();
        data.extend(ReplayData::load(&csv).unwrap());
        assert_eq!(data.get("m", "p"), Some("True"));
        assert!(ReplayData::load(dir.join("missing.csv")).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
