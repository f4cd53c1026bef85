//! The decision cost of the quality routers: how long one routing decision takes, per query, before any call.
//!
//! Three routers of `switchyard-quality`, each deciding on one thread with a warmed-up scratch:
//! - the rule router (`RuleRouter::decide`), six rules tried in order (metadata tier, code keywords, a proof
//!   regex gated on the system prompt, a token bound, a message count, a character bound) over queries whose
//!   message count, system prompt and user tier vary, so that every rule gets reached;
//! - the learned binary router (`BinaryRouter::decide`): featurize the prompt (hashed word and character
//!   n-grams), score it with the logistic model, apply the out-of-distribution guard, compare with the threshold;
//! - the learned N-way router (`NWayRouter::decide`): the same featurization, then every candidate's predicted
//!   quality and cost and the router's default policy.
//!
//! The learned routers are trained here, with the crate's own training functions and default options (those of
//! `switchyard router train`): the binary one on RouteLLM GSM8K, the N-way one on ZeroEval's priced models (less
//! the models `eval router` leaves out), each on the training side of `eval router`'s split (30 % of question ids
//! held out, seed 1). The data folder is `$SWITCHYARD_DATA`, else `../shared/data` beside the workspace; it is
//! read in place, never copied. Without it (or with `--synthetic`) both train on a generated outcome table: four
//! priced models, easy and hard prompts of 50 to 2,000 characters (log-uniform lengths). The output says which
//! data was used. Training time is reported apart (data loading excluded); it is not part of the decision cost.
//!
//! Every router decides on the held-out prompts (the rule router on the held-out prompts of both data sets),
//! cycling through them: first `--warmup` untimed decisions, then `--decisions` decisions each timed alone with
//! `Instant` and recorded in nanoseconds in an HDR histogram. A timed decision covers building the `Decision`
//! (shared names, reason); not building the `QueryInput` (borrowed, free) nor dropping the `Decision`. The floor
//! of the clock itself (an empty timed region) is measured and printed too. Prints the prompts' length
//! distribution, the training times, a table of p50/p90/p99/max in microseconds, and one JSON line.
//!
//! `cargo bench -p switchyard-benches --bench router_decision -- [--decisions N] [--warmup N] [--synthetic]`
//! Needs no service.

use std::collections::{BTreeMap, HashSet};
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;

use switchyard_benches::round3;
use switchyard_learn::OutcomeTable;
use switchyard_learn::dataset::routellm::RouteLlmSet;
use switchyard_learn::dataset::{ModelInfo, Price, QueryRecord, estimate_tokens};
use switchyard_learn::split::split_table;
use switchyard_quality::entry::DataSource;
use switchyard_quality::eval::{BinaryEvalOptions, NWayEvalOptions};
use switchyard_quality::rules::{RuleCondition, RuleConfig};
use switchyard_quality::train::{BinaryTrainOptions, NWayTrainOptions, train_binary, train_nway};
use switchyard_quality::{
    BinaryRouter, Decision, LiveView, NWayRouter, QueryInput, RouterScratch, RuleRouter, RuleRouterConfig,
};

/// Queries of the synthetic outcome table.
const SYNTHETIC_QUERIES: usize = 2_000;
/// Seed of the synthetic table: the same table on every run.
const SYNTHETIC_SEED: u64 = 0x5157_4348_0008;
/// Prompt lengths of the synthetic table, in characters (log-uniform between the two).
const SYNTHETIC_CHARS: (f64, f64) = (50.0, 2_000.0);
/// The synthetic candidates, cheapest first: name, USD per million input and output tokens, and the chance of a
/// good answer on an easy and on a hard prompt. The binary router uses `small` (weak) and `large` (strong).
const SYNTHETIC_MODELS: [(&str, f64, f64, f64, f64); 4] = [
    ("tiny", 0.1, 0.4, 0.85, 0.10),
    ("small", 0.5, 1.5, 0.90, 0.35),
    ("medium", 3.0, 12.0, 0.95, 0.65),
    ("large", 10.0, 30.0, 0.97, 0.90),
];
const SYNTHETIC_WEAK: usize = 1;
const SYNTHETIC_STRONG: usize = 3;
/// Topic words of easy and hard synthetic prompts (as in the crate's own tests), and the common words around them.
const EASY: [&str; 8] = ["add", "sum", "plus", "count", "list", "name", "copy", "echo"];
const HARD: [&str; 8] = ["prove", "derive", "optimize", "integral", "theorem", "lemma", "asymptotic", "proof"];
const FILLER: [&str; 32] = [
    "the", "a", "of", "and", "to", "in", "for", "with", "each", "every", "value", "number", "table", "order",
    "customer", "report", "result", "step", "between", "given", "first", "second", "items", "total", "price", "answer",
    "explain", "show", "then", "what", "how", "which",
];

struct Args {
    decisions: usize,
    warmup: usize,
    synthetic: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args { decisions: 50_000, warmup: 5_000, synthetic: false };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--decisions" => args.decisions = it.next().context("--decisions needs a value")?.parse()?,
            "--warmup" => args.warmup = it.next().context("--warmup needs a value")?.parse()?,
            "--synthetic" => args.synthetic = true,
            _ => {} // cargo bench passes --bench; ignore what is not ours
        }
    }
    if args.decisions == 0 {
        bail!("--decisions must be at least 1");
    }
    Ok(args)
}

/// Outcome data split for one learned router.
struct Split {
    /// What the data is, as printed.
    label: String,
    /// Whether it was generated here.
    synthetic: bool,
    train: OutcomeTable,
    /// The held-out prompts the router decides on.
    prompts: Vec<String>,
}

impl Split {
    fn new(
        label: String,
        synthetic: bool,
        table: &OutcomeTable,
        test_fraction: f64,
        seed: u64,
    ) -> anyhow::Result<Self> {
        let (train, test) = split_table(table, test_fraction, seed)?;
        Ok(Split { label, synthetic, train, prompts: test.queries.into_iter().map(|q| q.prompt).collect() })
    }
}

/// RouteLLM GSM8K (weak = column 0, strong = 1), if the data folder holds it.
fn routellm_gsm8k(data: Option<&Path>) -> anyhow::Result<Option<OutcomeTable>> {
    let Some(dir) = data.map(|d| d.join("routellm")).filter(|d| d.join("gsm8k").is_dir()) else {
        return Ok(None);
    };
    Ok(Some(DataSource::RouteLlm { dir, set: RouteLlmSet::Gsm8k }.load()?))
}

/// ZeroEval's candidates of `eval router`: every priced model (or one with a cost on every query), less the
/// models it leaves out; if the data folder holds ZeroEval.
fn zeroeval_priced(data: Option<&Path>) -> anyhow::Result<Option<OutcomeTable>> {
    let Some(dir) = data.map(|d| d.join("zeroeval")).filter(|d| d.join("outcomes.jsonl").is_file()) else {
        return Ok(None);
    };
    let table = DataSource::zeroeval(&dir).load()?;
    let exclude = NWayEvalOptions::default().exclude;
    let keep: Vec<String> = (0..table.models.len())
        .filter(|&m| table.models[m].is_priced() || table.queries.iter().all(|q| q.cost_usd[m].is_some()))
        .map(|m| table.models[m].name.clone())
        .filter(|name| !exclude.contains(name))
        .collect();
    Ok(Some(table.select_models(|m| keep.contains(&m.name))))
}

/// SplitMix64: a small deterministic generator for the synthetic table.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn pick<'a>(&mut self, words: &[&'a str]) -> &'a str {
        words[(self.next() % words.len() as u64) as usize]
    }
}

/// A synthetic prompt: a request about easy or hard topics, padded with common words (and more topic words) to a
/// log-uniform length in [`SYNTHETIC_CHARS`].
fn synthetic_prompt(rng: &mut SplitMix, hard: bool) -> String {
    let (lo, hi) = SYNTHETIC_CHARS;
    let length = (lo.ln() + rng.unit() * (hi / lo).ln()).exp().round() as usize;
    let topics = if hard { &HARD } else { &EASY };
    let mut prompt = format!("Please {} the {}", rng.pick(topics), rng.pick(topics));
    while prompt.len() < length {
        let word = if rng.unit() < 0.2 { rng.pick(topics) } else { rng.pick(&FILLER) };
        prompt.push(' ');
        prompt.push_str(word);
    }
    prompt.truncate(length); // ASCII only: any byte is a character boundary
    prompt
}

/// The synthetic outcome table: half the prompts hard; each model's answer good with its chance for the prompt's
/// difficulty; each cost its price on the prompt's estimated tokens and an answer of 50 to 600 tokens.
fn synthetic_table() -> OutcomeTable {
    let mut rng = SplitMix(SYNTHETIC_SEED);
    let prices: Vec<Price> = SYNTHETIC_MODELS
        .iter()
        .map(|&(_, input, output, _, _)| Price { input_usd_per_million: input, output_usd_per_million: output })
        .collect();
    let queries = (0..SYNTHETIC_QUERIES)
        .map(|i| {
            let hard = i % 2 == 0;
            let prompt = synthetic_prompt(&mut rng, hard);
            let output_tokens = if hard { 200 + rng.next() % 401 } else { 50 + rng.next() % 151 };
            let input_tokens = estimate_tokens(&prompt);
            QueryRecord {
                id: format!("s{i}"),
                group: None,
                quality: SYNTHETIC_MODELS
                    .iter()
                    .map(|&(_, _, _, easy, hard_chance)| {
                        f64::from(u8::from(rng.unit() < if hard { hard_chance } else { easy }))
                    })
                    .collect(),
                cost_usd: prices.iter().map(|p| Some(p.cost(input_tokens, output_tokens))).collect(),
                prompt,
            }
        })
        .collect();
    let models = SYNTHETIC_MODELS
        .iter()
        .zip(&prices)
        .map(|(&(name, ..), &price)| ModelInfo { name: name.into(), price: Some(price) })
        .collect();
    OutcomeTable { name: "synthetic".into(), models, queries }
}

fn synthetic_label() -> String {
    format!("synthetic, {SYNTHETIC_QUERIES} queries x {} models", SYNTHETIC_MODELS.len())
}

/// Six rules as an operator would write them; the default is the mid-size model.
fn rule_config() -> RuleRouterConfig {
    let rule =
        |name: &str, model: &str, when: RuleCondition| RuleConfig { name: name.into(), model: model.into(), when };
    let tier = BTreeMap::from([("tier".to_string(), vec!["gold".to_string(), "platinum".to_string()])]);
    RuleRouterConfig {
        name: "tiers".into(),
        rules: vec![
            rule("gold users", "large", RuleCondition { metadata: tier, ..RuleCondition::default() }),
            rule(
                "code",
                "coder",
                RuleCondition {
                    keywords: ["```", "Traceback", "def ", "fn ", "SELECT "].map(String::from).into(),
                    ..RuleCondition::default()
                },
            ),
            rule(
                "proof",
                "large",
                RuleCondition {
                    regex: Some(r"(?i)\b(prove|derive|theorem|lemma)\b".into()),
                    system_prompt: Some(false),
                    ..RuleCondition::default()
                },
            ),
            rule("long prompt", "large", RuleCondition { min_tokens: Some(300), ..RuleCondition::default() }),
            rule("long chat", "large", RuleCondition { min_messages: Some(6), ..RuleCondition::default() }),
            rule("short", "small", RuleCondition { max_chars: Some(200), ..RuleCondition::default() }),
        ],
        default: "medium".into(),
    }
}

/// Character counts of a prompt set.
struct PromptStats {
    count: usize,
    mean: f64,
    min: usize,
    p50: usize,
    max: usize,
}

impl PromptStats {
    fn of(prompts: &[String]) -> Self {
        let mut chars: Vec<usize> = prompts.iter().map(|p| p.chars().count()).collect();
        chars.sort_unstable();
        let count = chars.len();
        let mean = chars.iter().sum::<usize>() as f64 / count.max(1) as f64;
        let at = |i: usize| chars.get(i).copied().unwrap_or(0);
        PromptStats { count, mean, min: at(0), p50: at(count / 2), max: at(count.saturating_sub(1)) }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "count": self.count, "mean_chars": (self.mean * 10.0).round() / 10.0,
            "min_chars": self.min, "p50_chars": self.p50, "max_chars": self.max,
        })
    }
}

/// What one router's timed decisions measured.
struct Measured {
    decisions: u64,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    max_us: f64,
    /// How often each model was chosen.
    chosen: BTreeMap<Arc<str>, u64>,
}

fn nanos(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX).max(1)
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    // 1 ns to 60 s, three significant digits.
    Ok(Histogram::new_with_bounds(1, 60_000_000_000, 3)?)
}

/// Runs `decide` on query indices `0, 1, ..., queries - 1, 0, ...`: `warmup` times untimed, then `decisions` times
/// each timed alone.
fn measure(
    queries: usize,
    warmup: usize,
    decisions: usize,
    mut decide: impl FnMut(usize) -> Decision,
) -> anyhow::Result<Measured> {
    if queries == 0 {
        bail!("no prompt to decide on");
    }
    for i in 0..warmup {
        black_box(decide(i % queries));
    }
    let mut histogram = histogram()?;
    let mut chosen: BTreeMap<Arc<str>, u64> = BTreeMap::new();
    for i in 0..decisions {
        let started = Instant::now();
        let decision = black_box(decide(i % queries));
        histogram.saturating_record(nanos(started.elapsed()));
        *chosen.entry(decision.model).or_default() += 1;
    }
    let us = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    Ok(Measured {
        decisions: histogram.len(),
        p50_us: us(0.50),
        p90_us: us(0.90),
        p99_us: us(0.99),
        max_us: histogram.max() as f64 / 1000.0,
        chosen,
    })
}

/// The median duration of an empty timed region: the clock's own share of every figure.
fn clock_floor_ns(samples: usize) -> anyhow::Result<u64> {
    let mut histogram = histogram()?;
    for _ in 0..samples {
        let started = Instant::now();
        histogram.saturating_record(nanos(black_box(started).elapsed()));
    }
    Ok(histogram.value_at_quantile(0.5))
}

/// One line of the table.
struct Row {
    router: &'static str,
    data: String,
    synthetic: bool,
    prompts: PromptStats,
    measured: Measured,
}

/// One learned router's training.
struct Training {
    router: &'static str,
    data: String,
    queries: usize,
    candidates: usize,
    elapsed: Duration,
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let data_dir = if args.synthetic { None } else { switchyard_testkit::data_dir() };
    let data = data_dir.as_deref();
    let mut generated: Option<OutcomeTable> = None;
    let mut synthetic = || generated.get_or_insert_with(synthetic_table).clone();

    // Binary: RouteLLM GSM8K, else the synthetic table's small/large columns.
    let eval = BinaryEvalOptions::default();
    let (binary_split, weak, strong) = match routellm_gsm8k(data)? {
        Some(t) => (Split::new("RouteLLM GSM8K".into(), false, &t, eval.test_fraction, eval.seed)?, 0, 1),
        None => (
            Split::new(synthetic_label(), true, &synthetic(), eval.test_fraction, eval.seed)?,
            SYNTHETIC_WEAK,
            SYNTHETIC_STRONG,
        ),
    };
    // N-way: ZeroEval's priced models, else every synthetic model.
    let eval = NWayEvalOptions::default();
    let nway_split = match zeroeval_priced(data)? {
        Some(t) => {
            let label = format!("ZeroEval, {} priced models", t.models.len());
            Split::new(label, false, &t, eval.test_fraction, eval.seed)?
        }
        None => Split::new(synthetic_label(), true, &synthetic(), eval.test_fraction, eval.seed)?,
    };

    println!(
        "switchyard router decision benchmark: {} timed decisions per router after {} warm-up ones, one thread",
        args.decisions, args.warmup
    );
    let source = |s: &Split| if s.synthetic { "generated here" } else { "real data, read in place" };
    println!("binary router data: {} ({})", binary_split.label, source(&binary_split));
    println!("N-way router data:  {} ({})", nway_split.label, source(&nway_split));
    println!("training, not part of the decision cost (crate default options, data loading excluded):");
    let mut trainings = Vec::new();

    let started = Instant::now();
    let (file, _) = train_binary(&binary_split.train, weak, strong, &BinaryTrainOptions::default())?;
    trainings.push(Training {
        router: "learned binary",
        data: binary_split.label.clone(),
        queries: binary_split.train.queries.len(),
        candidates: 2,
        elapsed: started.elapsed(),
    });
    let binary = BinaryRouter::new(file)?;

    let started = Instant::now();
    let (file, _) = train_nway(&nway_split.train, &NWayTrainOptions::default())?;
    trainings.push(Training {
        router: "learned N-way",
        data: nway_split.label.clone(),
        queries: nway_split.train.queries.len(),
        candidates: nway_split.train.models.len(),
        elapsed: started.elapsed(),
    });
    let nway = NWayRouter::new(file)?;

    let started = Instant::now();
    let rules = RuleRouter::new(&rule_config())?;
    let compile = started.elapsed();
    for t in &trainings {
        println!(
            "  {:<15} {:>5} queries x {:>2} models  {:>9.2} s",
            t.router,
            t.queries,
            t.candidates,
            t.elapsed.as_secs_f64()
        );
    }
    println!("  {:<15} compiling 6 rules           {:>9.3} ms", "rule", compile.as_secs_f64() * 1000.0);

    // The rule router decides on the held-out prompts of both data sets, each once.
    let mut seen = HashSet::new();
    let rule_prompts: Vec<String> =
        binary_split.prompts.iter().chain(&nway_split.prompts).filter(|p| seen.insert(p.as_str())).cloned().collect();
    let rule_data = if binary_split.label == nway_split.label {
        binary_split.label.clone()
    } else {
        format!("{} + {}", binary_split.label, nway_split.label)
    };
    // Conversation shapes: a tenth of the users gold, a third of the queries with a system prompt, 1 to 8 messages.
    let tiers: Vec<BTreeMap<String, String>> =
        ["gold", "pro", "free"].iter().map(|t| BTreeMap::from([("tier".to_string(), (*t).to_string())])).collect();
    let rule_queries: Vec<QueryInput<'_>> = rule_prompts
        .iter()
        .enumerate()
        .map(|(i, prompt)| QueryInput {
            prompt,
            message_count: 1 + i % 8,
            has_system_prompt: i % 3 == 0,
            metadata: &tiers[match i % 10 {
                0 => 0,
                1..=3 => 1,
                _ => 2,
            }],
        })
        .collect();

    let live = LiveView::default();
    let mut rows = Vec::new();
    let measured = measure(rule_queries.len(), args.warmup, args.decisions, |i| rules.decide(&rule_queries[i]))?;
    rows.push(Row {
        router: "rule",
        data: rule_data,
        synthetic: binary_split.synthetic && nway_split.synthetic,
        prompts: PromptStats::of(&rule_prompts),
        measured,
    });
    let mut scratch = RouterScratch::default();
    let prompts = &binary_split.prompts;
    let measured = measure(prompts.len(), args.warmup, args.decisions, |i| {
        binary.decide(&QueryInput::prompt(&prompts[i]), None, &live, &mut scratch)
    })?;
    rows.push(Row {
        router: "learned binary",
        data: binary_split.label.clone(),
        synthetic: binary_split.synthetic,
        prompts: PromptStats::of(prompts),
        measured,
    });
    let mut scratch = RouterScratch::default();
    let prompts = &nway_split.prompts;
    let measured = measure(prompts.len(), args.warmup, args.decisions, |i| {
        nway.decide(&QueryInput::prompt(&prompts[i]), None, &live, &mut scratch)
    })?;
    rows.push(Row {
        router: "learned N-way",
        data: nway_split.label.clone(),
        synthetic: nway_split.synthetic,
        prompts: PromptStats::of(prompts),
        measured,
    });
    let floor = clock_floor_ns(args.decisions)?;

    println!("held-out prompts decided on (characters):");
    println!("  {:<15} {:>7} {:>8} {:>6} {:>6} {:>6}", "router", "prompts", "mean", "min", "p50", "max");
    for r in &rows {
        let p = &r.prompts;
        println!("  {:<15} {:>7} {:>8.1} {:>6} {:>6} {:>6}", r.router, p.count, p.mean, p.min, p.p50, p.max);
    }
    println!("decision cost per query (microseconds):");
    println!("  {:<15} {:>9} {:>9} {:>9} {:>9} {:>9}", "router", "decisions", "p50", "p90", "p99", "max");
    for r in &rows {
        let m = &r.measured;
        println!(
            "  {:<15} {:>9} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
            r.router, m.decisions, m.p50_us, m.p90_us, m.p99_us, m.max_us
        );
    }
    println!("clock floor (an empty timed region), included in every figure: p50 {floor} ns");
    for r in &rows {
        let chosen: Vec<String> = r.measured.chosen.iter().map(|(m, n)| format!("{m} {n}")).collect();
        println!("choices of {}: {}", r.router, chosen.join(", "));
    }

    let routers: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            let m = &r.measured;
            let chosen: BTreeMap<&str, u64> = m.chosen.iter().map(|(model, n)| (&**model, *n)).collect();
            serde_json::json!({
                "router": r.router, "data": r.data, "synthetic": r.synthetic, "prompts": r.prompts.json(),
                "decisions": m.decisions, "p50_us": round3(m.p50_us), "p90_us": round3(m.p90_us),
                "p99_us": round3(m.p99_us), "max_us": round3(m.max_us), "chosen": chosen,
            })
        })
        .collect();
    let training: Vec<serde_json::Value> = trainings
        .iter()
        .map(|t| {
            serde_json::json!({
                "router": t.router, "data": t.data, "train_queries": t.queries, "candidates": t.candidates,
                "seconds": round3(t.elapsed.as_secs_f64()),
            })
        })
        .collect();
    println!(
        "{}",
        serde_json::json!({
            "bench": "router_decision", "decisions": args.decisions, "warmup": args.warmup,
            "clock_floor_ns": floor, "routers": routers, "training": training,
            "rule_compile_ms": round3(compile.as_secs_f64() * 1000.0),
        })
    );
    Ok(())
}
