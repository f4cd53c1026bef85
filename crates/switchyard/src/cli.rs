//! Command-line interface (clap only; the wiring lives in `main.rs`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Routes LLM queries across providers and keeps answering when they fail"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
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
        #[arg(long, env = "SWITCHYARD_NATS_URL", default_value = "nats://127.0.0.1:4222")]
        nats: String,
        /// Prefix of reply inboxes, for servers that allow each user only its own (`_INBOX_admin` with
        /// deploy/nats.conf).
        #[arg(long, env = "SWITCHYARD_NATS_INBOX_PREFIX")]
        inbox_prefix: Option<String>,
        /// Subject namespace of the cluster.
        #[arg(long, env = "SWITCHYARD_NAMESPACE", default_value = "switchyard")]
        namespace: String,
        #[command(subcommand)]
        command: AdminCommand,
    },
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
    /// Health of every node (or one), as JSON lines.
    Health {
        #[arg(long)]
        node: Option<String>,
        /// How long to gather answers.
        #[arg(long, default_value_t = 500)]
        wait_ms: u64,
    },
    /// Crash a provider's actor on every node hosting it (its supervisor restarts it).
    CrashProvider { provider: String },
}
