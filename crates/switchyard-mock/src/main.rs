//! The `switchyard-mock` binary: runs the fake LLM server standalone, for manual runs and for tests
//! and benchmarks that drive it from another process.
//!
//! Kept thin: parse flags, load the behaviour and replay files, serve until Ctrl-C. Bad input exits
//! with 64 (`EX_USAGE`). Logging follows `RUST_LOG` (default `info`); request headers are never logged,
//! since they carry API keys.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use switchyard_mock::{BehaviorFile, MockConfig, MockServer, ReplayData};
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

/// An OpenAI- and Anthropic-compatible fake LLM server with fault injection and replay.
#[derive(Debug, Parser)]
#[command(name = "switchyard-mock", version)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8081", env = "SWITCHYARD_MOCK_LISTEN")]
    listen: SocketAddr,
    /// Seed of all randomness, for reproducible runs.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Recorded responses (RouteLLM CSV or JSONL); repeat to load several files.
    #[arg(long)]
    replay: Vec<PathBuf>,
    /// Behaviour file: {"default": Behavior, "models": {"<model>": Behavior}}.
    #[arg(long)]
    config: Option<PathBuf>,
}

const EX_USAGE: u8 = 64;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let cli = Cli::parse();
    let config = match build_config(&cli) {
        Ok(config) => config,
        Err(err) => {
            error!(%err, "bad configuration");
            return ExitCode::from(EX_USAGE);
        }
    };
    let server = match MockServer::start(config).await {
        Ok(server) => server,
        Err(err) => {
            error!(%err, "cannot start the mock server");
            return ExitCode::from(EX_USAGE);
        }
    };
    info!(
        openai = %server.openai_base_url(),
        anthropic = %server.base_url(),
        "serving; ctrl-c to stop"
    );
    if let Err(err) = tokio::signal::ctrl_c().await {
        error!(%err, "cannot wait for ctrl-c; stopping");
    }
    server.shutdown().await;
    info!("stopped");
    ExitCode::SUCCESS
}

fn build_config(cli: &Cli) -> Result<MockConfig, switchyard_mock::MockServerError> {
    let behaviors = match &cli.config {
        Some(path) => BehaviorFile::load(path)?,
        None => BehaviorFile::default(),
    };
    let replay = if cli.replay.is_empty() {
        None
    } else {
        let mut data = ReplayData::new();
        for path in &cli.replay {
            let loaded = ReplayData::load(path)?;
            info!(path = %path.display(), records = loaded.len(), "loaded replay data");
            data.extend(loaded);
        }
        Some(data)
    };
    Ok(MockConfig {
        listen: cli.listen,
        seed: cli.seed,
        default_behavior: behaviors.default,
        models: behaviors.models,
        replay,
    })
}
