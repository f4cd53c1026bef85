//! The client subcommands: `query` (through the `switchyard-client` library, which re-sends by id and puts
//! streams back together) and `admin`, over NATS.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};

use switchyard_bus::Bus;
use switchyard_client::{Client, ClientError, ClientOptions, StreamEvent};
use switchyard_protocol::ChatMessage;
use switchyard_protocol::client::{QueryReply, QueryRequest, Trace};
use switchyard_protocol::subjects::{Subjects, is_valid_token};

use crate::cli::IdempotencyArgs;

/// Where the cluster is: the NATS URL (credentials may be in it), the inbox prefix, the subject namespace.
pub struct Connection {
    pub nats: String,
    pub inbox_prefix: Option<String>,
    pub namespace: String,
}

impl Connection {
    pub async fn connect(&self) -> anyhow::Result<switchyard_bus::NatsBus> {
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
    /// The idempotency key and the re-send interval.
    pub id: IdempotencyArgs,
    pub deadline_ms: u64,
}

pub async fn query(to: &Connection, route: &str, text: &str, options: QueryOptions) -> anyhow::Result<()> {
    if !is_valid_token(route) {
        bail!("route must be 1 to 64 characters of [A-Za-z0-9_-]");
    }
    let namespace = &to.namespace;
    let bus: Arc<dyn Bus> = Arc::new(to.connect().await?);
    let client_options =
        ClientOptions { resend_after: Duration::from_millis(options.id.resend_after_ms), ..ClientOptions::default() };
    let client = Client::new(bus, Subjects::new(namespace), client_options);
    let mut request = QueryRequest::new(vec![ChatMessage::user(text)]);
    request.id = options.id.id;
    request.deadline_ms = Some(options.deadline_ms);

    if !options.stream {
        let reply = client.query(route, request).await.map_err(|e| failure(e, options.trace, namespace))?;
        println!("{}", reply.content);
        if options.trace {
            print_summary(&reply);
        }
        return Ok(());
    }

    let mut events = client.stream(route, request).await.map_err(|e| failure(e, options.trace, namespace))?;
    let mut stdout = std::io::stdout();
    while let Some(event) = events.next().await {
        match event {
            Ok(StreamEvent::Delta { text, .. }) => {
                write!(stdout, "{text}")?;
                stdout.flush()?;
            }
            Ok(StreamEvent::Restart { attempt }) => {
                println!();
                eprintln!("-- attempt {attempt} answered instead of the one above; its text follows");
            }
            Ok(StreamEvent::Done(done)) => {
                println!();
                if options.trace {
                    print_summary(&done.reply);
                }
                return Ok(());
            }
            // The chunks printed are incomplete, but the final frame holds the whole answer: print that.
            Err(ClientError::Gap { attempt, expected, got, reply, .. }) => {
                println!();
                eprintln!("-- {got} of {expected} chunks of attempt {attempt} arrived; the full answer follows");
                println!("{}", reply.content);
                if options.trace {
                    print_summary(&reply);
                }
                return Ok(());
            }
            Err(error) => {
                println!();
                return Err(failure(error, options.trace, namespace));
            }
        }
    }
    bail!("the stream ended without an answer")
}

/// The error to exit with, after printing the trace of a typed error when asked.
fn failure(error: ClientError, trace: bool, namespace: &str) -> anyhow::Error {
    if trace && let Some(trace) = error.server_reply().and_then(|reply| reply.trace.as_ref()) {
        print_trace(trace);
    }
    match error {
        ClientError::NoResponders { .. } => anyhow!("no node serves namespace `{namespace}`"),
        error => anyhow::Error::new(error),
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
    if let Some(d) = &trace.decision {
        let num = |x: Option<f64>| x.map_or_else(|| "-".to_owned(), |x| format!("{x:.3}"));
        let why = d.reason.get("kind").and_then(|k| k.as_str()).unwrap_or("?");
        eprintln!(
            "   router {} chose {} (target {}): score {} threshold {}, {why}",
            d.router,
            d.model,
            d.target,
            num(d.score),
            num(d.threshold)
        );
    }
    if let Some(e) = &trace.ensemble {
        for p in &e.proposers {
            let by = p.provider.as_deref().unwrap_or("-");
            eprintln!("   ensemble {} proposer {} ({by}) -> {} in {:.1} ms", e.name, p.target, p.outcome, p.latency_ms);
        }
        if let Some(a) = &e.aggregator {
            eprintln!("   ensemble {} aggregator {} -> {} in {:.1} ms", e.name, a.target, a.outcome, a.latency_ms);
        }
    }
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
