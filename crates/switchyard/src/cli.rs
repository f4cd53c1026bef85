//! Command-line interface (clap only; the wiring lives in `main.rs`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Routes LLM queries across providers and keeps answering when they fail"
)]
pub struct Cli {
    /// Log lines as `text` or `json` (one JSON object per line, for log shippers).
    #[arg(long, global = true, env = "SWITCHYARD_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node: join the cluster on NATS and serve the routes and providers of the config.
    Serve {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run a 3-node cluster in this process with mock providers and a scripted outage; needs no server.
    Demo {
        /// Queries per phase.
        #[arg(long, default_value_t = 12)]
        queries: usize,
        #[arg(long, default_value_t = 3)]
        nodes: usize,
    },
    /// Send one query over NATS and print the answer.
    Query {
        #[arg(long, short, default_value = "chat")]
        route: String,
        /// Print chunks as they arrive.
        #[arg(long)]
        stream: bool,
        /// Print the trace: which providers were tried, with what outcome.
        #[arg(long)]
        trace: bool,
        /// The idempotency key, and how often the query is re-sent by it.
        #[command(flatten)]
        id: IdempotencyArgs,
        #[arg(long, default_value_t = 30_000)]
        deadline_ms: u64,
        /// NATS server URL; several servers of one NATS cluster separated by commas.
        #[arg(long, env = "SWITCHYARD_NATS_URL", default_value = "nats://127.0.0.1:4222")]
        nats: String,
        /// Prefix of reply inboxes, for servers that allow each user only its own (`_INBOX_client` with
        /// deploy/nats.conf).
        #[arg(long, env = "SWITCHYARD_NATS_INBOX_PREFIX")]
        inbox_prefix: Option<String>,
        /// Subject namespace of the cluster.
        #[arg(long, env = "SWITCHYARD_NAMESPACE", default_value = "switchyard")]
        namespace: String,
        /// The user message.
        text: String,
    },
    /// Inspect or command the cluster on the admin topic.
    Admin {
        /// NATS server URL; several servers of one NATS cluster separated by commas.
        #[arg(long, env = "SWITCHYARD_NATS_URL", default_value = "nats://127.0.0.1:4222")]
        nats: String,
        /// Prefix of reply inboxes, for servers that allow each user only its own (`_INBOX_admin` with
        /// deploy/nats.conf).
        #[arg(long, env = "SWITCHYARD_NATS_INBOX_PREFIX")]
        inbox_prefix: Option<String>,
        /// Subject namespace of the cluster.
        #[arg(long, env = "SWITCHYARD_NAMESPACE", default_value = "switchyard")]
        namespace: String,
        /// Who sends commands, logged by the node that executes them (default: `$USER@<host>`).
        #[arg(long, env = "SWITCHYARD_OPERATOR")]
        sender: Option<String>,
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Offline evaluations on recorded outcomes; need no server.
    Eval {
        #[command(subcommand)]
        command: EvalCommand,
    },
    /// Offline tools of the cascade strategy; need no server.
    Cascade {
        #[command(subcommand)]
        command: CascadeCommand,
    },
    /// Offline tools of quality routing (learned routers); need no server.
    Router {
        #[command(subcommand)]
        command: RouterCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum RouterCommand {
    /// Train a learned router (binary weak/strong, or N-way) on outcome data and save it as JSON.
    Train(RouterTrainArgs),
    /// Set a binary router's threshold so that a target share of a prompt sample goes to the strong model.
    Calibrate(RouterCalibrateArgs),
}

/// Outcome data for the router commands: a RouteLLM set, or an N-model JSONL (ZeroEval's format) with prices.
#[derive(Debug, Clone, Args)]
pub struct RouterDataArgs {
    /// A RouteLLM set (weak = Mixtral-8x7B, strong = GPT-4 Turbo).
    #[arg(long, value_enum, conflicts_with_all = ["outcomes", "zeroeval"])]
    pub set: Option<RouterSetArg>,
    /// The RouteLLM folder; `$SWITCHYARD_DATA/routellm` or ../shared/data/routellm when absent.
    #[arg(long, value_name = "DIR", requires = "set")]
    pub routellm: Option<PathBuf>,
    /// An N-model outcomes JSONL (one query per line with each model's quality), for N-way routing.
    #[arg(long, value_name = "FILE", conflicts_with = "zeroeval")]
    pub outcomes: Option<PathBuf>,
    /// The models' prices for `--outcomes` (ZeroEval's `models.json` format).
    #[arg(long, value_name = "FILE", requires = "outcomes")]
    pub prices: Option<PathBuf>,
    /// The ZeroEval folder (`outcomes.jsonl` priced by `models.json`).
    #[arg(long, value_name = "DIR")]
    pub zeroeval: Option<PathBuf>,
    /// Share of the question ids held out as the test side (never trained on).
    #[arg(long, default_value_t = 0.3)]
    pub test_fraction: f64,
    /// Seed of the split.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Models left out of N-way routing (repeatable), e.g. one whose cost misses hidden tokens.
    #[arg(long, value_name = "MODEL")]
    pub exclude: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RouterSetArg {
    Gsm8k,
    Mmlu,
    MtBench,
}

#[derive(Debug, Clone, Args)]
pub struct RouterTrainArgs {
    #[command(flatten)]
    pub data: RouterDataArgs,
    /// Train on every question instead of holding the test side out.
    #[arg(long)]
    pub all: bool,
    /// Where to write the router (versioned JSON).
    #[arg(long, value_name = "ROUTER.json")]
    pub out: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct RouterCalibrateArgs {
    /// The binary router to calibrate.
    #[arg(long, value_name = "ROUTER.json")]
    pub router: PathBuf,
    /// A JSONL file of calibration prompts (a `prompt` or `question` field per line).
    #[arg(long, value_name = "FILE")]
    pub prompts: PathBuf,
    /// The share of queries the strong model should get.
    #[arg(long, default_value_t = 0.5)]
    pub target: f64,
    /// Where to write the calibrated router (may be `--router`).
    #[arg(long, value_name = "ROUTER.json")]
    pub out: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct EvalRouterArgs {
    #[command(flatten)]
    pub data: RouterDataArgs,
    /// Write the quality plot (against strong-call share, or against cost for N-way) here.
    #[arg(long, value_name = "OUT.svg")]
    pub svg: Option<PathBuf>,
    /// Calibration prompts for the binary router's 50 % operating point (default: a half of the test side).
    #[arg(long, value_name = "FILE")]
    pub calibration_prompts: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Replay recorded outcomes through the cascade decision code over a sweep of thresholds: strong-call share,
    /// quality, PGR, measured cost against the formula, APGR and CPT(50 %), CPT(80 %), with the random and
    /// prompt-length baselines.
    Cascade(EvalCascadeArgs),
    /// Train on one side of an explicit split and test on the other (contaminated prompts removed): APGR, CPT(50 %),
    /// CPT(80 %), strong-call share and cost of random, the prompt-length rule and the learned router (binary), or
    /// the quality-cost curve against every single model (N-way).
    Router(EvalRouterArgs),
}

#[derive(Debug, Subcommand)]
pub enum CascadeCommand {
    /// Train the local verifier on the training side of the data (never its test questions) and save it; the
    /// model records the ids it was trained on, which `eval cascade --verifier` then leaves out.
    TrainVerifier(TrainVerifierArgs),
}

#[derive(Debug, Clone, Args)]
pub struct EvalCascadeArgs {
    #[command(flatten)]
    pub data: CascadeDataArgs,
    /// The confidence estimator of the weak stage(s).
    #[arg(long, value_enum, default_value_t = EstimatorArg::Verifier)]
    pub estimator: EstimatorArg,
    /// A verifier saved by `switchyard cascade train-verifier` (with `--estimator verifier`); without it, a
    /// verifier is trained on the train side of this run.
    #[arg(long, value_name = "MODEL.json")]
    pub verifier: Option<PathBuf>,
    /// Most thresholds swept (evenly spaced ranks of the observed confidences).
    #[arg(long, default_value_t = 400)]
    pub thresholds: usize,
    /// Rows of the printed table.
    #[arg(long, default_value_t = 11)]
    pub rows: usize,
    /// Leave out the random and prompt-length baselines.
    #[arg(long)]
    pub no_baselines: bool,
    /// Write the quality-against-cost plot here.
    #[arg(long, value_name = "OUT.svg")]
    pub svg: Option<PathBuf>,
    /// Print the whole report as one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct TrainVerifierArgs {
    #[command(flatten)]
    pub data: CascadeDataArgs,
    /// Where to write the model (versioned JSON).
    #[arg(long, value_name = "VERIFIER.json")]
    pub out: PathBuf,
    /// Print what training did as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Where recorded outcomes come from, how they are split, and how answers are read.
#[derive(Debug, Clone, Args)]
pub struct CascadeDataArgs {
    /// A RouteLLM set: Mixtral-8x7B first, GPT-4 Turbo second, documented constant costs.
    #[arg(long, value_enum, conflicts_with_all = ["jsonl", "train", "test"])]
    pub set: Option<SetArg>,
    /// The RouteLLM folder (holding gsm8k/ and mmlu/); `$SWITCHYARD_DATA/routellm` or ../shared/data/routellm
    /// when absent.
    #[arg(long, value_name = "DIR", requires = "set")]
    pub routellm: Option<PathBuf>,
    /// A cascade JSONL file (`--data` too), split by question id with `--test-fraction` and `--seed`.
    #[arg(long, visible_alias = "data", value_name = "FILE", conflicts_with_all = ["train", "test"])]
    pub jsonl: Option<PathBuf>,
    /// A cascade JSONL file to train on (with `--test`, or alone for `train-verifier`).
    #[arg(long, value_name = "FILE")]
    pub train: Option<PathBuf>,
    /// A cascade JSONL file to evaluate on; its questions that are also in `--train` are left out.
    #[arg(long, value_name = "FILE", requires = "train")]
    pub test: Option<PathBuf>,
    /// Share of the distinct question ids on the test side of a seeded split.
    #[arg(long, default_value_t = 0.5)]
    pub test_fraction: f64,
    /// Seed of the split (and of the random baseline).
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// How answers are read for self-consistency and the verifier's answer checks; default: last-number, except
    /// RouteLLM MMLU (no answer text: none for the verifier, choice for self-consistency).
    #[arg(long, value_enum)]
    pub extractor: Option<ExtractorArg>,
    /// Fix the verifier's L2 strength instead of choosing it by 3-fold cross-validation on the train side.
    #[arg(long)]
    pub l2: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SetArg {
    Gsm8k,
    Mmlu,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EstimatorArg {
    /// The trained local verifier, P(correct | query, answer).
    Verifier,
    /// Majority share over the recorded samples (needs several samples per stage).
    SelfConsistency,
    /// The recorded answer logprob of the first sample (needs `logprob`).
    Logprobs,
    /// Baseline: a longer prompt is less confident.
    PromptLength,
    /// Baseline: a seeded uniform score.
    Random,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExtractorArg {
    /// The number after the last `####`, otherwise the last number.
    LastNumber,
    /// A multiple-choice letter A-D.
    Choice,
    /// The whole reply, lower-cased, punctuation dropped, whitespace collapsed.
    Normalized,
    /// No extraction (the verifier sees query and answer n-grams only).
    None,
}

/// A query's idempotency key and its re-sending: a query that gets no reply is re-sent with the same id, which
/// the nodes answer once.
#[derive(Debug, Clone, Args)]
pub struct IdempotencyArgs {
    /// Idempotency key (a uuid when absent): copies of the query with this id are answered once.
    #[arg(long)]
    pub id: Option<String>,
    /// Re-send the query (same id) when no reply came within this many milliseconds (doubling each time); for
    /// `--stream`, when no frame came. 0 never re-sends.
    #[arg(long, default_value_t = 2_000)]
    pub resend_after_ms: u64,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Every node's health (or one node's): actors, roles, version, degraded flags, and per provider its own
    /// breaker and the cluster's. Nodes that answer the NATS service ping but not health are named, and make the
    /// command fail.
    Health {
        #[arg(long)]
        node: Option<String>,
        /// How long to gather answers.
        #[arg(long, default_value_t = 500)]
        wait_ms: u64,
        /// Fail unless at least this many nodes answered.
        #[arg(long)]
        expect: Option<usize>,
        /// One JSON document per node instead of the tables.
        #[arg(long)]
        json: bool,
    },
    /// Each provider's cluster breaker as the shared store holds it, next to what every node believes; a node
    /// that disagrees with the store is marked.
    Breakers {
        #[arg(long, default_value_t = 500)]
        wait_ms: u64,
        #[arg(long)]
        json: bool,
    },
    /// Per node: each provider's throughput, latency quantiles, errors, rate limits, tokens and cost; each route's
    /// retries, fallbacks and hedges.
    Stats {
        #[arg(long, default_value_t = 500)]
        wait_ms: u64,
        #[arg(long)]
        json: bool,
    },
    /// Force a provider's cluster breaker open: no node calls it until `reset`.
    Trip { provider: String },
    /// Switch a provider's cluster breaker off: calls always flow, failures never trip it.
    Disable { provider: String },
    /// Close a provider's cluster breaker and forget its history.
    Reset { provider: String },
    /// Ask a node to drain: it stops taking queries, answers those in flight, and leaves.
    Drain { node: String },
    /// Crash a provider's actor on every node hosting it (its supervisor restarts it).
    CrashProvider { provider: String },
    /// Every cascade coordinator's view of its cascades: the cluster's escalation rate and its health per stage,
    /// expected against measured and strong-only cost, latency of direct and escalated answers.
    Cascades {
        /// How long to gather answers.
        #[arg(long, default_value_t = 500)]
        wait_ms: u64,
        /// One JSON array per node instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Every router node's quality routers: decisions per model, the realised strong share of a binary router
    /// next to its calibration target, fallbacks, out-of-distribution queries, drift against the training data.
    Routers {
        /// How long to gather answers.
        #[arg(long, default_value_t = 500)]
        wait_ms: u64,
        /// One JSON array per node instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Every router node reloads its quality routers from its configuration file (a file that does not validate
    /// is refused and the routers in use stay; the command then exits non-zero).
    Reload {
        /// How long to gather answers.
        #[arg(long, default_value_t = 2000)]
        wait_ms: u64,
    },
}
