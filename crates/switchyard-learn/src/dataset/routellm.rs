//! Loaders for RouteLLM's evaluation files (weak Mixtral-8x7B against strong GPT-4).
//!
//! The folder layout is the one of `routellm/evals/` in lm-sys/RouteLLM (see the data README): GSM8K as one CSV
//! with responses, MMLU as 57 CSVs named `mmlu_<subject>.csv`, MT-Bench as questions plus GPT-4 judge scores.
//! Prompts listed in each set's `contaminated_prompts.jsonl` (field `eval_prompt`, exact string match as in
//! RouteLLM's code) are dropped. Column 0 of the table is always the weak model, column 1 the strong model.
//!
//! Quality: GSM8K and MMLU use the recorded correctness (1 or 0). MT-Bench uses the GPT-4 judge score (1-10):
//! a question's quality for a model is the mean of its two turns' scores divided by 10, so a model that scored 9
//! and 10 has quality 0.95. PGR and APGR are invariant to that scaling.
//!
//! Cost: the files carry no cost, so it is estimated with [`estimate_tokens`] and the prices in
//! [`RouteLlmOptions`]: GSM8K counts the prompt and the recorded response; MMLU counts the prompt and a one-token
//! answer; MT-Bench counts both turns (the second turn resends the first and its answer) with the answers read
//! from the multi-turn judge prompt.
//!
//! Ids: the files have no question ids, so a question's id is `<set>-` followed by the stable hash of its prompt
//! with whitespace collapsed; MMLU repeats 105 prompts across rows and subjects, and this keeps the copies of one
//! question on the same side of a split. MT-Bench uses its `question_id`.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{ModelInfo, OutcomeTable, Price, QueryRecord, estimate_tokens, read_text};
use crate::error::{LearnError, Result};
use crate::hash::stable_hash;

/// The weak model of the RouteLLM files.
pub const WEAK_MODEL: &str = "mistralai/Mixtral-8x7B-Instruct-v0.1";
/// The strong model of the RouteLLM files.
pub const STRONG_MODEL: &str = "gpt-4-1106-preview";

/// One of the three RouteLLM evaluation sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RouteLlmSet {
    /// Grade-school maths, 1,319 questions (1,307 after decontamination).
    Gsm8k,
    /// 57 MMLU subjects, 14,042 questions (14,037 after decontamination).
    Mmlu,
    /// MT-Bench, 80 two-turn questions (72 after decontamination), judged by GPT-4.
    MtBench,
}

impl RouteLlmSet {
    /// Every set, in the order reports list them.
    pub const ALL: [RouteLlmSet; 3] = [RouteLlmSet::Gsm8k, RouteLlmSet::Mmlu, RouteLlmSet::MtBench];

    /// The set's short name (`gsm8k`, `mmlu`, `mt-bench`).
    pub fn name(self) -> &'static str {
        match self {
            RouteLlmSet::Gsm8k => "gsm8k",
            RouteLlmSet::Mmlu => "mmlu",
            RouteLlmSet::MtBench => "mt-bench",
        }
    }
}

impl std::fmt::Display for RouteLlmSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Prices used to estimate the cost of each recorded answer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RouteLlmOptions {
    /// Price of the weak model.
    pub weak_price: Price,
    /// Price of the strong model.
    pub strong_price: Price,
}

impl Default for RouteLlmOptions {
    /// GPT-4 Turbo (`gpt-4-1106-preview`) at its list price of 10 / 30 USD per million tokens; Mixtral-8x7B at
    /// a typical hosted price of 0.60 / 0.60.
    fn default() -> Self {
        Self {
            weak_price: Price { input_usd_per_million: 0.6, output_usd_per_million: 0.6 },
            strong_price: Price { input_usd_per_million: 10.0, output_usd_per_million: 30.0 },
        }
    }
}

/// Loads one set from the RouteLLM folder (the one holding `gsm8k/`, `mmlu/`, `mt_bench/`).
pub fn load(routellm_dir: &Path, set: RouteLlmSet, options: &RouteLlmOptions) -> Result<OutcomeTable> {
    match set {
        RouteLlmSet::Gsm8k => load_gsm8k(routellm_dir, options),
        RouteLlmSet::Mmlu => load_mmlu(routellm_dir, options),
        RouteLlmSet::MtBench => load_mt_bench(routellm_dir, options),
    }
}

fn models(options: &RouteLlmOptions) -> Vec<ModelInfo> {
    vec![
        ModelInfo { name: WEAK_MODEL.into(), price: Some(options.weak_price) },
        ModelInfo { name: STRONG_MODEL.into(), price: Some(options.strong_price) },
    ]
}

/// The stable id of a question without an id of its own: `<set>-<16 hex digits>` of the whitespace-collapsed
/// prompt.
pub fn prompt_id(set: &str, prompt: &str) -> String {
    let normalized: Vec<&str> = prompt.split_whitespace().collect();
    format!("{set}-{:016x}", stable_hash(0, normalized.join(" ").as_bytes()))
}

#[derive(Deserialize)]
struct Contaminated {
    eval_prompt: String,
}

/// Reads the `eval_prompt` of every line of a `contaminated_prompts.jsonl`.
pub fn load_contaminated(path: &Path) -> Result<HashSet<String>> {
    let text = read_text(path)?;
    let mut out = HashSet::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let c: Contaminated = serde_json::from_str(line).map_err(|source| LearnError::JsonLine {
            path: path.to_path_buf(),
            line: i + 1,
            source,
        })?;
        out.insert(c.eval_prompt);
    }
    Ok(out)
}

/// Column positions of a RouteLLM CSV.
struct Columns {
    prompt: usize,
    weak: usize,
    strong: usize,
    weak_response: Option<usize>,
    strong_response: Option<usize>,
}

fn columns(path: &Path, headers: &csv::StringRecord) -> Result<Columns> {
    let find = |name: &str| headers.iter().position(|h| h == name);
    let need = |name: &str| {
        find(name).ok_or_else(|| LearnError::MissingColumn { path: path.to_path_buf(), column: name.into() })
    };
    Ok(Columns {
        prompt: need("prompt")?,
        weak: need(WEAK_MODEL)?,
        strong: need(STRONG_MODEL)?,
        weak_response: find(&format!("{WEAK_MODEL}_response")),
        strong_response: find(&format!("{STRONG_MODEL}_response")),
    })
}

fn parse_bool(path: &Path, row: u64, column: &str, value: &str) -> Result<f64> {
    match value.trim() {
        "True" | "true" | "1" | "1.0" => Ok(1.0),
        "False" | "false" | "0" | "0.0" => Ok(0.0),
        other => Err(LearnError::BadCell {
            path: path.to_path_buf(),
            row,
            column: column.into(),
            reason: format!("expected True or False, found {other:?}"),
        }),
    }
}

/// Reads one RouteLLM CSV into records, dropping contaminated prompts. `answer_tokens` is the output size used
/// when the file has no response columns.
fn read_csv(
    path: &Path,
    set: &str,
    group: Option<&str>,
    contaminated: &HashSet<String>,
    options: &RouteLlmOptions,
    answer_tokens: u64,
) -> Result<Vec<QueryRecord>> {
    let csv_err = |source| LearnError::Csv { path: path.to_path_buf(), source };
    let mut reader = csv::Reader::from_path(path).map_err(csv_err)?;
    let headers = reader.headers().map_err(csv_err)?.clone();
    let cols = columns(path, &headers)?;
    let mut out = Vec::new();
    for (i, row) in reader.records().enumerate() {
        let row = row.map_err(csv_err)?;
        let n = i as u64 + 1;
        let cell = |c: usize| row.get(c).unwrap_or("");
        let prompt = cell(cols.prompt);
        if contaminated.contains(prompt) {
            continue;
        }
        let weak = parse_bool(path, n, WEAK_MODEL, cell(cols.weak))?;
        let strong = parse_bool(path, n, STRONG_MODEL, cell(cols.strong))?;
        let input = estimate_tokens(prompt);
        let out_tokens = |c: Option<usize>| c.map_or(answer_tokens, |c| estimate_tokens(cell(c)));
        out.push(QueryRecord {
            id: prompt_id(set, prompt),
            prompt: prompt.to_string(),
            group: group.map(str::to_string),
            quality: vec![weak, strong],
            cost_usd: vec![
                Some(options.weak_price.cost(input, out_tokens(cols.weak_response))),
                Some(options.strong_price.cost(input, out_tokens(cols.strong_response))),
            ],
        });
    }
    Ok(out)
}

/// Loads `gsm8k/gsm8k_responses.csv`, contaminated prompts removed.
pub fn load_gsm8k(routellm_dir: &Path, options: &RouteLlmOptions) -> Result<OutcomeTable> {
    let dir = routellm_dir.join("gsm8k");
    let contaminated = load_contaminated(&dir.join("contaminated_prompts.jsonl"))?;
    let queries = read_csv(&dir.join("gsm8k_responses.csv"), "gsm8k", None, &contaminated, options, 0)?;
    finish("gsm8k", options, queries)
}

/// The recorded response texts of `gsm8k/gsm8k_responses.csv` by question id ([`prompt_id`]), as
/// `[weak, strong]`, contaminated prompts dropped as in [`load_gsm8k`]. Cascade verifiers read the weak model's
/// answer, which the outcome table does not keep. A file without both response columns is an error.
pub fn load_gsm8k_responses(routellm_dir: &Path) -> Result<HashMap<String, [String; 2]>> {
    let dir = routellm_dir.join("gsm8k");
    let contaminated = load_contaminated(&dir.join("contaminated_prompts.jsonl"))?;
    let path = dir.join("gsm8k_responses.csv");
    let csv_err = |source| LearnError::Csv { path: path.clone(), source };
    let mut reader = csv::Reader::from_path(&path).map_err(csv_err)?;
    let headers = reader.headers().map_err(csv_err)?.clone();
    let cols = columns(&path, &headers)?;
    let missing = |model: &str| LearnError::MissingColumn { path: path.clone(), column: format!("{model}_response") };
    let weak = cols.weak_response.ok_or_else(|| missing(WEAK_MODEL))?;
    let strong = cols.strong_response.ok_or_else(|| missing(STRONG_MODEL))?;
    let mut out = HashMap::new();
    for row in reader.records() {
        let row = row.map_err(csv_err)?;
        let cell = |c: usize| row.get(c).unwrap_or("").to_string();
        let prompt = cell(cols.prompt);
        if !contaminated.contains(&prompt) {
            out.insert(prompt_id("gsm8k", &prompt), [cell(weak), cell(strong)]);
        }
    }
    Ok(out)
}

/// Loads the 57 `mmlu/responses/mmlu_<subject>.csv` files (subject as the record's group), contaminated prompts
/// removed.
pub fn load_mmlu(routellm_dir: &Path, options: &RouteLlmOptions) -> Result<OutcomeTable> {
    let dir = routellm_dir.join("mmlu");
    let contaminated = load_contaminated(&dir.join("contaminated_prompts.jsonl"))?;
    let responses = dir.join("responses");
    let mut files: Vec<(String, std::path::PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(&responses).map_err(|e| LearnError::io(&responses, e))? {
        let path = entry.map_err(|e| LearnError::io(&responses, e))?.path();
        let subject = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("mmlu_"))
            .and_then(|n| n.strip_suffix(".csv"))
            .map(str::to_string);
        if let Some(subject) = subject {
            files.push((subject, path));
        }
    }
    // Directory order is not stable across file systems; the table must be.
    files.sort();
    let mut queries = Vec::new();
    for (subject, path) in &files {
        queries.extend(read_csv(path, "mmlu", Some(subject), &contaminated, options, 1)?);
    }
    finish("mmlu", options, queries)
}

#[derive(Deserialize)]
struct MtQuestion {
    question_id: u64,
    category: String,
    turns: Vec<String>,
}

#[derive(Deserialize)]
struct MtJudgement {
    question_id: u64,
    model: String,
    turn: u8,
    score: f64,
    #[serde(default)]
    user_prompt: String,
}

fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let text = read_text(path)?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        out.push(serde_json::from_str(line).map_err(|source| LearnError::JsonLine {
            path: path.to_path_buf(),
            line: i + 1,
            source,
        })?);
    }
    Ok(out)
}

/// The assistant's answers in a multi-turn judge prompt (the text after each `### Assistant A:` header).
pub fn assistant_answers(judge_prompt: &str) -> Vec<&str> {
    const START: &str = "<|The Start of Assistant A's Conversation with User|>";
    const END: &str = "<|The End of Assistant A's Conversation with User|>";
    let Some(start) = judge_prompt.find(START) else { return Vec::new() };
    let body = &judge_prompt[start + START.len()..];
    let body = body.find(END).map_or(body, |end| &body[..end]);
    body.split("### Assistant A:")
        .skip(1)
        .map(|part| part.find("### User:").map_or(part, |end| &part[..end]).trim())
        .collect()
}

/// Loads MT-Bench: one record per question with the first turn as prompt and the category as group; quality is
/// the mean judge score of both turns divided by 10; questions whose first or second turn is contaminated are
/// dropped (as RouteLLM does).
pub fn load_mt_bench(routellm_dir: &Path, options: &RouteLlmOptions) -> Result<OutcomeTable> {
    let dir = routellm_dir.join("mt_bench");
    let contaminated = load_contaminated(&dir.join("contaminated_prompts.jsonl"))?;
    let questions: Vec<MtQuestion> = read_jsonl(&dir.join("question.jsonl"))?;
    let judge_path = dir.join("judgements.jsonl");
    let judgements: Vec<MtJudgement> = read_jsonl(&judge_path)?;
    // (question, model) -> [turn-1 score, turn-2 score] and the answers read from the turn-2 judge prompt.
    let mut scores: HashMap<(u64, &str), [Option<f64>; 2]> = HashMap::new();
    let mut answers: HashMap<(u64, &str), u64> = HashMap::new();
    for j in &judgements {
        let (Some(slot), true) = (j.turn.checked_sub(1), (1..=10).contains(&(j.score as i64))) else {
            return Err(LearnError::invalid(
                "judgement",
                format!("question {} model {} has turn {} score {}", j.question_id, j.model, j.turn, j.score),
            ));
        };
        if let Some(s) = scores.entry((j.question_id, j.model.as_str())).or_default().get_mut(usize::from(slot)) {
            *s = Some(j.score);
        }
        if j.turn == 2 {
            let tokens = assistant_answers(&j.user_prompt).iter().map(|a| estimate_tokens(a)).sum();
            answers.insert((j.question_id, j.model.as_str()), tokens);
        }
    }
    let mut queries = Vec::new();
    for q in &questions {
        if q.turns.iter().any(|t| contaminated.contains(t)) {
            continue;
        }
        let (Some(first), Some(second)) = (q.turns.first(), q.turns.get(1)) else {
            return Err(LearnError::invalid("question", format!("question {} has fewer than 2 turns", q.question_id)));
        };
        let mut quality = Vec::with_capacity(2);
        let mut cost = Vec::with_capacity(2);
        for (model, price) in [(WEAK_MODEL, options.weak_price), (STRONG_MODEL, options.strong_price)] {
            let Some([Some(s1), Some(s2)]) = scores.get(&(q.question_id, model)) else {
                return Err(LearnError::invalid(
                    "judgements",
                    format!("question {} lacks a judge score of {model} for both turns", q.question_id),
                ));
            };
            quality.push((s1 + s2) / 20.0);
            let output = answers.get(&(q.question_id, model)).copied();
            cost.push(output.map(|out| {
                // Turn 2 resends turn 1 and its answer (about half of the output) with the new question.
                let input = 2 * estimate_tokens(first) + out / 2 + estimate_tokens(second);
                price.cost(input, out)
            }));
        }
        queries.push(QueryRecord {
            id: format!("mt-bench-{}", q.question_id),
            prompt: first.clone(),
            group: Some(q.category.clone()),
            quality,
            cost_usd: cost,
        });
    }
    finish("mt-bench", options, queries)
}

fn finish(name: &str, options: &RouteLlmOptions, queries: Vec<QueryRecord>) -> Result<OutcomeTable> {
    if queries.is_empty() {
        return Err(LearnError::Empty { what: format!("{name}: no query left after decontamination") });
    }
    let table = OutcomeTable { name: name.into(), models: models(options), queries };
    table.validate()?;
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).ok();
        }
        std::fs::write(path, text).ok();
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("switchyard-learn-{name}-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        dir
    }

    #[test]
    fn gsm8k_fixture_drops_contaminated_and_reads_correctness() {
        let dir = temp_dir("gsm");
        let header = format!("prompt,{WEAK_MODEL},{STRONG_MODEL},{WEAK_MODEL}_response,{STRONG_MODEL}_response\n");
        write(
            &dir,
            "gsm8k/gsm8k_responses.csv",
            &format!("{header}\"two\nlines\",True,False,abcd,abcdefgh\nleaked,False,True,x,y\nthird,False,True,x,y\n"),
        );
        write(&dir, "gsm8k/contaminated_prompts.jsonl", "{\"eval_prompt\":\"leaked\",\"train_prompt\":\"x\"}\n");
        let t = load_gsm8k(&dir, &RouteLlmOptions::default()).expect("fixture loads");
        assert_eq!(t.queries.len(), 2);
        assert_eq!(t.queries[0].prompt, "two\nlines");
        assert_eq!(t.queries[0].quality, vec![1.0, 0.0]);
        assert_eq!(t.queries[1].quality, vec![0.0, 1.0]);
        // Strong: 3 input tokens ("two\nlines" is 9 chars) at 10/M and 2 output tokens at 30/M.
        let strong_cost = t.queries[0].cost_usd[1].unwrap_or_default();
        assert!((strong_cost - (3.0 * 10.0 + 2.0 * 30.0) / 1e6).abs() < 1e-15);
        assert_eq!(t.models[0].name, WEAK_MODEL);
        let responses = load_gsm8k_responses(&dir).expect("responses load");
        assert_eq!(responses.len(), 2, "the contaminated prompt is dropped");
        assert_eq!(responses.get(&t.queries[0].id), Some(&["abcd".to_string(), "abcdefgh".to_string()]));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn mmlu_fixture_takes_subject_from_file_name_and_names_bad_cells() {
        let dir = temp_dir("mmlu");
        let header = format!("prompt,{WEAK_MODEL},{STRONG_MODEL}\n");
        write(&dir, "mmlu/responses/mmlu_anatomy.csv", &format!("{header}q1,True,True\n"));
        write(&dir, "mmlu/responses/mmlu_virology.csv", &format!("{header}q2,False,True\nq1,True,False\n"));
        write(&dir, "mmlu/contaminated_prompts.jsonl", "");
        let t = load_mmlu(&dir, &RouteLlmOptions::default()).expect("fixture loads");
        let groups: Vec<_> = t.queries.iter().map(|q| q.group.as_deref().unwrap_or("")).collect();
        assert_eq!(groups, ["anatomy", "virology", "virology"]);
        // The same prompt in two files is one question.
        assert_eq!(t.queries[0].id, t.queries[2].id);
        assert_ne!(t.queries[0].id, t.queries[1].id);

        write(&dir, "mmlu/responses/mmlu_virology.csv", &format!("{header}q2,maybe,True\n"));
        let err = load_mmlu(&dir, &RouteLlmOptions::default()).err();
        assert!(matches!(err, Some(LearnError::BadCell { row: 1, .. })), "{err:?}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn mt_bench_fixture_averages_turns() {
        let dir = temp_dir("mtb");
        write(
            &dir,
            "mt_bench/question.jsonl",
            "{\"question_id\":1,\"category\":\"math\",\"turns\":[\"a?\",\"b?\"]}\n\
             {\"question_id\":2,\"category\":\"writing\",\"turns\":[\"bad\",\"c?\"]}\n",
        );
        write(&dir, "mt_bench/contaminated_prompts.jsonl", "{\"eval_prompt\":\"bad\"}\n");
        let mut lines = String::new();
        for (model, s1, s2) in [(WEAK_MODEL, 4, 6), (STRONG_MODEL, 10, 9)] {
            for (turn, s) in [(1, s1), (2, s2)] {
                for q in [1, 2] {
                    lines.push_str(&format!(
                        "{{\"question_id\":{q},\"model\":\"{model}\",\"turn\":{turn},\"score\":{s},\"user_prompt\":\
                         \"<|The Start of Assistant A's Conversation with User|>\\n### User:\\na?\\n### Assistant A:\\nabcd\\n### User:\\nb?\\n### Assistant A:\\nefgh\\n<|The End of Assistant A's Conversation with User|>\"}}\n"
                    ));
                }
            }
        }
        write(&dir, "mt_bench/judgements.jsonl", &lines);
        let t = load_mt_bench(&dir, &RouteLlmOptions::default()).expect("fixture loads");
        assert_eq!(t.queries.len(), 1);
        assert_eq!(t.queries[0].id, "mt-bench-1");
        assert_eq!(t.queries[0].quality, vec![0.5, 0.95]);
        assert!(t.queries[0].cost_usd.iter().all(Option::is_some));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn answers_are_read_from_the_judge_prompt() {
        let p = "ref ### Assistant A: no\n<|The Start of Assistant A's Conversation with User|>\n### User:\nq\n\
                 ### Assistant A:\none\n### User:\nq2\n### Assistant A:\ntwo\n\
                 <|The End of Assistant A's Conversation with User|>";
        assert_eq!(assistant_answers(p), vec!["one", "two"]);
        assert!(assistant_answers("nothing").is_empty());
    }
}
