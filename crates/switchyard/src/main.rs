//! The `switchyard` binary: tracing, configuration, exit codes. Subcommands live in their own modules.

mod admin;
mod cascade;
mod cli;
mod client;
mod demo;
mod router_cmd;
mod tracing_setup;

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tracing::{error, info};

use switchyard_bus::Bus;
use switchyard_runtime::{Node, NodeConfig, Role};

use crate::cli::{CascadeCommand, Cli, Command, EvalCommand, RouterCommand};

/// sysexits' EX_CONFIG-style code for a configuration that cannot be used.
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A node logs its life at info; the demo and the clients print their own output, so only problems interrupt it.
    let default_level = match cli.command {
        Command::Serve { .. } => "info",
        Command::Demo { .. } => "error",
        Command::Query { .. }
        | Command::Admin { .. }
        | Command::Eval { .. }
        | Command::Cascade { .. }
        | Command::Router { .. } => "warn",
    };
    let otel = tracing_setup::init(cli.log_format, default_level);
    // The offline cascade commands need neither a runtime nor TLS: they run on this thread and return.
    let offline = match &cli.command {
        Command::Eval { command: EvalCommand::Cascade(args) } => Some(cascade::eval(args)),
        Command::Cascade { command: CascadeCommand::TrainVerifier(args) } => Some(cascade::train_verifier(args)),
        Command::Eval { command: EvalCommand::Router(args) } => Some(router_cmd::eval(args)),
        Command::Router { command: RouterCommand::Train(args) } => Some(router_cmd::train(args)),
        Command::Router { command: RouterCommand::Calibrate(args) } => Some(router_cmd::calibrate(args)),
        _ => None,
    };
    if let Some(result) = offline {
        return exit(result);
    }
    let _otel = otel;
    // One rustls crypto provider for the whole process, before any TLS connection (NATS, Redis, HTTPS).
    let _ = async_nats::rustls::crypto::aws_lc_rs::default_provider().install_default();

    // A node's configuration is read before its runtime, which it sizes (`node.worker_threads`).
    let serving = match &cli.command {
        Command::Serve { config } => match NodeConfig::load(config) {
            Ok(config) => Some(config),
            Err(e) => return exit(Err(e.into())),
        },
        _ => None,
    };
    // One worker is a current-thread runtime: no work-stealing queues or cross-thread wake-ups to pay for.
    let mut builder = match serving.as_ref().and_then(|c| c.node.worker_threads) {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(threads) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(threads);
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            error!(%e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        if let Some(config) = serving {
            return serve(config).await;
        }
        match cli.command {
            Command::Demo { queries, nodes } => demo::run(queries, nodes).await,
            Command::Query { route, stream, trace, id, deadline_ms, nats, inbox_prefix, namespace, text } => {
                let options = client::QueryOptions { stream, trace, id, deadline_ms };
                let to = client::Connection { nats, inbox_prefix, namespace };
                client::query(&to, &route, &text, options).await
            }
            Command::Admin { nats, inbox_prefix, namespace, sender, command } => {
                admin::run(&client::Connection { nats, inbox_prefix, namespace }, sender, command).await
            }
            // Served above with its configuration; the offline commands ran before the runtime.
            Command::Serve { .. } | Command::Eval { .. } | Command::Cascade { .. } | Command::Router { .. } => Ok(()),
        }
    });
    exit(result)
}

/// The exit code of a command's result; the error, if any, is printed on stderr.
fn exit(result: anyhow::Result<()>) -> ExitCode {
    let Err(err) = result else { return ExitCode::SUCCESS };
    eprintln!("switchyard: {}", message(&err));
    if err.downcast_ref::<switchyard_runtime::ConfigError>().is_some()
        || err.downcast_ref::<cascade::UsageError>().is_some()
    {
        ExitCode::from(EXIT_CONFIG)
    } else if err.downcast_ref::<router_cmd::DataError>().is_some() {
        ExitCode::from(cascade::EXIT_DATA)
    } else if let Some(err) = err.downcast_ref::<switchyard_cascade::CascadeError>() {
        ExitCode::from(cascade::exit_code(err))
    } else {
        ExitCode::FAILURE
    }
}

async fn serve(mut config: NodeConfig) -> anyhow::Result<()> {
    // Named before connecting, so the NATS connection carries the node's name too.
    if config.node.name.is_empty() {
        config.node.name = switchyard_runtime::node::generated_name();
    }
    // Every secret the config names is read before anything connects: a missing one is a config error (exit 64).
    config.resolve_secrets()?;
    let bus = switchyard_runtime::nats::connect(&config.nats, &config.node.name).await.map_err(|e| match e {
        switchyard_runtime::nats::ConnectError::Config(e) => anyhow::Error::new(e),
        e => anyhow::Error::new(e).context("cannot connect to NATS"),
    })?;
    let shared = match &config.redis {
        Some(redis) => switchyard_runtime::state::connect(redis).await.map_err(|e| match e {
            switchyard_runtime::state::StateConnectError::Config(e) => anyhow::Error::new(e),
            e => anyhow::Error::new(e).context("cannot set up Redis"),
        })?,
        None => switchyard_runtime::SharedState::default(),
    };
    let bus: Arc<dyn Bus> = Arc::new(bus);
    let mut node = Node::start(&config, bus.clone(), shared).await?;
    let door = match config.has_role(Role::Http) {
        true => Some(start_door(&config, &node, bus).await?),
        false => None,
    };
    info!(node = node.name(), "serving; SIGTERM, Ctrl-C or `switchyard admin drain` drains and stops");
    let drain = node.drain_requested();
    tokio::select! {
        _ = async { tokio::select! { _ = shutdown_signal() => {}, _ = drain => {} } } => {
            // The door first: it stops taking requests and finishes those in flight, which the node then drains.
            if let Some(door) = door {
                let timeout = std::time::Duration::from_millis(config.node.drain_timeout_ms);
                if tokio::time::timeout(timeout, door.shutdown()).await.is_err() {
                    tracing::warn!("http requests still in flight at the drain timeout");
                }
            }
            let report = node.shutdown().await;
            if report.abandoned_queries > 0 {
                anyhow::bail!("{} queries were still in flight at the drain timeout", report.abandoned_queries);
            }
            Ok(())
        }
        _ = node.stopped() => anyhow::bail!("the node stopped after an actor failure"),
    }
}

/// Starts the OpenAI-compatible door: in process to this node's router when it has one, over NATS otherwise.
async fn start_door(
    config: &NodeConfig,
    node: &Node,
    bus: Arc<dyn Bus>,
) -> anyhow::Result<switchyard_http::HttpServer> {
    let door = switchyard_http::DoorConfig::from_node_config(config).map_err(|e| match e {
        switchyard_http::HttpError::Config(e) => anyhow::Error::new(e),
        e => anyhow::Error::new(e),
    })?;
    let dispatch = switchyard_http::dispatch::for_node(node, config, bus);
    Ok(switchyard_http::serve(door, dispatch).await?)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// The error and its causes, `: `-separated, leaving out a cause whose text the message already holds (errors
/// that print their source, as the data loaders' do, would otherwise say it twice).
fn message(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}
