//! The client subcommands: `query` and `admin`, over NATS.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;

use switchyard_bus::{Bus, Message};
use switchyard_protocol::ChatMessage;
use switchyard_protocol::client::{QueryOutcome, QueryReply, QueryRequest, StreamFrame, Trace};
use switchyard_protocol::subjects::{Subjects, is_valid_token};

use crate::cli::AdminCommand;

/// Where the cluster is: the NATS URL (credentials may be in it), the inbox prefix, the subject namespace.
pub struct Connection {
    pub nats: String,
    pub inbox_prefix: Option<String>,
    pub namespace: String,
}

impl Connection {
    async fn connect(&self) -> anyhow::Result<switchyard_bus::NatsBus> {
        if !is_valid_token(&self.namespace) {
            bail!("namespace must be 1 to 64 characters of [A-Za-z0-9_-]");
        }
        switchyard_runtime::nats::connect_url(&self.nats, self.inbox_prefix.as_deref())
            .await
            .context("cannot connect to NATS")
    }
}

pub struct QueryOptions {
    pub stream: bool,
    pub trace: bool,
    pub id: Option<String>,
    pub deadline_ms: u64,
}

pub async fn query(to: &Connection, route: &str, text: &str, options: QueryOptions) -> anyhow::Result<()> {
    if !is_valid_token(route) {
        bail!("route must be 1 to 64 characters of [A-Za-z0-9_-]");
    }
    let bus = to.connect().await?;
    let namespace = &to.namespace;
    let subjects = Subjects::new(namespace);
    let mut request = QueryRequest::new(vec![ChatMessage::user(text)]);
    request.id = options.id;
    request.stream = options.stream;
    request.deadline_ms = Some(options.deadline_ms);
    let payload = Bytes::from(serde_json::to_vec(&request)?);
    let wait = Duration::from_millis(options.deadline_ms + 1_000);

    if !options.stream {
        let reply = bus.request(Message::new(subjects.query(route), payload), wait).await?;
        match serde_json::from_slice::<QueryOutcome>(&reply.payload)? {
            QueryOutcome::Reply(reply) => {
                println!("{}", reply.content);
                if options.trace {
                    print_summary(&reply);
                }
                return Ok(());
            }
            QueryOutcome::Error(error) => {
                if options.trace
                    && let Some(trace) = &error.trace
                {
                    print_trace(trace);
                }
                bail!("{}: {} ({})", serde_json::to_string(&error.error.kind)?, error.error.message, error.error.code);
            }
        }
    }

    let mut frames = switchyard_bus::request_many(&bus, Message::new(subjects.query(route), payload)).await?;
    let mut stdout = std::io::stdout();
    loop {
        let message = tokio::time::timeout(wait, frames.next()).await.context("no answer before the deadline")?;
        let Some(message) = message else { bail!("the reply subscription closed") };
        if message.is_no_responders() {
            bail!("no node serves namespace `{namespace}`");
        }
        match serde_json::from_slice::<StreamFrame>(&message.payload)? {
            StreamFrame::Chunk { delta, .. } => {
                write!(stdout, "{delta}")?;
                stdout.flush()?;
            }
            StreamFrame::Done { reply, .. } => {
                println!();
                if options.trace {
                    print_summary(&reply);
                }
                return Ok(());
            }
            StreamFrame::Error { error, .. } => {
                println!();
                if options.trace
                    && let Some(trace) = &error.trace
                {
                    print_trace(trace);
                }
                bail!("{} ({})", error.error.message, error.error.code);
            }
        }
    }
}

fn print_summary(reply: &QueryReply) {
    eprintln!(
        "-- provider {} model {} | {} in / {} out tokens | ${:.6} | {:.1} ms",
        reply.provider,
        reply.model,
        reply.usage.input_tokens,
        reply.usage.output_tokens,
        reply.cost_usd,
        reply.latency_ms
    );
    print_trace(&reply.trace);
}

fn print_trace(trace: &Trace) {
    eprintln!("-- trace: node {} route {}", trace.node, trace.route);
    for (i, attempt) in trace.attempts.iter().enumerate() {
        let status = attempt.status.map(|s| format!(" HTTP {s}")).unwrap_or_default();
        let message = attempt.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default();
        eprintln!(
            "   {}. {} -> {}{} in {:.1} ms{}",
            i + 1,
            attempt.provider,
            attempt.outcome,
            status,
            attempt.latency_ms,
            message
        );
    }
}

pub async fn admin(to: &Connection, command: AdminCommand) -> anyhow::Result<()> {
    let bus = to.connect().await?;
    let subjects = Subjects::new(&to.namespace);
    let (subject, wait_ms) = match &command {
        AdminCommand::Health { node: Some(node), wait_ms } => (subjects.admin_node(node, "health"), *wait_ms),
        AdminCommand::Health { node: None, wait_ms } => (subjects.admin_health(), *wait_ms),
        AdminCommand::CrashProvider { provider } => (subjects.admin_provider(provider, "crash"), 500),
    };
    let wait = Duration::from_millis(wait_ms);
    let replies = switchyard_bus::gather(&bus, Message::new(subject, Bytes::new()), wait, usize::MAX).await?;
    for message in &replies {
        println!("{}", String::from_utf8_lossy(&message.payload));
    }
    if replies.is_empty() {
        bail!("no node answered within {wait_ms} ms");
    }
    Ok(())
}
