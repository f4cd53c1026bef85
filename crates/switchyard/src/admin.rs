//! `switchyard admin`: inspect and command a cluster on the admin topic, over NATS.
//!
//! Cluster-wide questions (`health`, `breakers`, `stats`, `routers`, `cascades`) gather every node's answer within
//! `--wait-ms`; `health` also pings the NATS service API and names the nodes that answered the ping but not the
//! health request. Commands (`trip`, `disable`, `reset`, `drain`, `reload`) carry the sender's name, which the
//! executing node logs, and print the resulting state. Tables by default, `--json` for scripts; the exit code is
//! non-zero when a command was refused or a node did not answer.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::bail;
use bytes::Bytes;
use serde::de::DeserializeOwned;

use switchyard_bus::{Bus, Message, NatsBus};
use switchyard_core::BreakerState;
use switchyard_protocol::admin::{AdminAck, AdminRequest, NodeBreakers, NodeHealth, NodeStats};
use switchyard_protocol::subjects::Subjects;
use switchyard_runtime::quality::{ReloadOutcome, RouterStatus};
use switchyard_runtime::service::PingResponse;

use crate::cli::AdminCommand;
use crate::client::Connection;

/// How long a single-node command waits for its acknowledgement.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn run(to: &Connection, sender: Option<String>, command: AdminCommand) -> anyhow::Result<()> {
    let bus = to.connect().await?;
    let subjects = Subjects::new(&to.namespace);
    let sender = sender.unwrap_or_else(default_sender);
    let body = Bytes::from(serde_json::to_vec(&AdminRequest { sender: Some(sender) })?);
    match command {
        AdminCommand::Health { node, wait_ms, expect, json } => {
            let subject = match &node {
                Some(node) => subjects.admin_node(node, "health"),
                None => subjects.admin_health(),
            };
            let wait = Duration::from_millis(wait_ms);
            let (health, pings) = tokio::join!(
                gather::<NodeHealth>(&bus, subject, Bytes::new(), wait),
                gather::<PingResponse>(&bus, format!("$SRV.PING.{}", to.namespace), Bytes::new(), wait),
            );
            let health = health?;
            let answered: BTreeSet<&str> = health.iter().map(|h| h.node.as_str()).collect();
            let pinged: BTreeSet<String> = pings.unwrap_or_default().into_iter().map(|p| p.id).collect();
            let silent: Vec<&String> = pinged
                .iter()
                .filter(|id| !answered.contains(id.as_str()) && node.as_ref().is_none_or(|n| n == *id))
                .collect();
            if json {
                for h in &health {
                    println!("{}", serde_json::to_string(h)?);
                }
            } else {
                print_health(&health);
            }
            if !silent.is_empty() {
                let names: Vec<&str> = silent.iter().map(|s| s.as_str()).collect();
                bail!(
                    "{} node(s) answered the service ping but not health within {wait_ms} ms: {}",
                    names.len(),
                    names.join(", ")
                );
            }
            if health.is_empty() {
                bail!("no node answered within {wait_ms} ms");
            }
            if let Some(expect) = expect
                && health.len() < expect
            {
                bail!("{} node(s) answered, {expect} expected", health.len());
            }
        }
        AdminCommand::Breakers { wait_ms, json } => {
            let nodes = gather::<NodeBreakers>(&bus, subjects.admin_breakers(), Bytes::new(), ms(wait_ms)).await?;
            require(&nodes, wait_ms)?;
            if json {
                println!("{}", serde_json::to_string(&nodes)?);
            } else {
                print_breakers(&nodes);
            }
        }
        AdminCommand::Stats { wait_ms, json } => {
            let nodes = gather::<NodeStats>(&bus, subjects.admin_stats(), Bytes::new(), ms(wait_ms)).await?;
            require(&nodes, wait_ms)?;
            if json {
                for n in &nodes {
                    println!("{}", serde_json::to_string(n)?);
                }
            } else {
                print_stats(&nodes);
            }
        }
        AdminCommand::Trip { provider } => breaker(&bus, &subjects, &provider, "trip", body).await?,
        AdminCommand::Disable { provider } => breaker(&bus, &subjects, &provider, "disable", body).await?,
        AdminCommand::Reset { provider } => breaker(&bus, &subjects, &provider, "reset", body).await?,
        AdminCommand::Drain { node } => {
            let ack: AdminAck = request(&bus, subjects.admin_node(&node, "drain"), body).await?;
            println!("{}: {}", ack.node, ack.message);
            if !ack.ok {
                bail!("{} refused to drain", ack.node);
            }
        }
        AdminCommand::CrashProvider { provider } => {
            let acks = gather::<AdminAck>(&bus, subjects.admin_provider(&provider, "crash"), body, ms(500)).await?;
            require(&acks, 500)?;
            for ack in acks {
                println!("{}: {}", ack.node, ack.message);
            }
        }
        AdminCommand::Cascades { wait_ms, json } => {
            let nodes = gather::<Vec<serde_json::Value>>(&bus, subjects.admin_cascades(), body, ms(wait_ms)).await?;
            require(&nodes, wait_ms)?;
            for statuses in &nodes {
                match json {
                    true => println!("{}", serde_json::to_string(statuses)?),
                    false => print_cascades(statuses),
                }
            }
        }
        AdminCommand::Routers { wait_ms, json } => {
            let nodes = gather::<Vec<RouterStatus>>(&bus, subjects.admin_routers(), body, ms(wait_ms)).await?;
            require(&nodes, wait_ms)?;
            for statuses in &nodes {
                match json {
                    true => println!("{}", serde_json::to_string(statuses)?),
                    false => print_routers(statuses),
                }
            }
        }
        AdminCommand::Reload { wait_ms } => {
            let outcomes = gather::<ReloadOutcome>(&bus, subjects.admin_routers_reload(), body, ms(wait_ms)).await?;
            require(&outcomes, wait_ms)?;
            let mut refused = 0;
            for outcome in &outcomes {
                let verdict = if outcome.ok { "reloaded" } else { "REFUSED" };
                println!("{} {verdict} (generation {}): {}", outcome.node, outcome.generation, outcome.message);
                refused += usize::from(!outcome.ok);
            }
            if refused > 0 {
                bail!("{refused} node(s) refused the reload");
            }
        }
    }
    Ok(())
}

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn default_sender() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_owned()).unwrap_or_default();
    if host.is_empty() { user } else { format!("{user}@{host}") }
}

fn require<T>(answers: &[T], wait_ms: u64) -> anyhow::Result<()> {
    if answers.is_empty() {
        bail!("no node answered within {wait_ms} ms");
    }
    Ok(())
}

/// Every answer to `subject` within `wait`, decoded (an answer that does not decode is an error: a node of
/// another version).
async fn gather<T: DeserializeOwned>(
    bus: &NatsBus,
    subject: String,
    body: Bytes,
    wait: Duration,
) -> anyhow::Result<Vec<T>> {
    let replies = switchyard_bus::gather(bus, Message::new(subject, body), wait, usize::MAX).await?;
    replies.iter().map(|m| Ok(serde_json::from_slice(&m.payload)?)).collect()
}

/// One node's answer to `subject`.
async fn request<T: DeserializeOwned>(bus: &NatsBus, subject: String, body: Bytes) -> anyhow::Result<T> {
    let reply = bus.request(Message::new(subject.clone(), body), COMMAND_TIMEOUT).await;
    match reply {
        Ok(reply) => Ok(serde_json::from_slice(&reply.payload)?),
        Err(switchyard_bus::BusError::NoResponders { .. }) => bail!("nobody answers on {subject}"),
        Err(error) => Err(error.into()),
    }
}

/// A breaker's state as printed: its name, or `-` when unknown (an actor that is not running, no command).
pub(crate) fn state_name(state: Option<BreakerState>) -> &'static str {
    state.map_or("-", |state| state.as_str())
}

/// A breaker command: executed by one node with the shared store; prints the resulting state.
async fn breaker(bus: &NatsBus, subjects: &Subjects, provider: &str, command: &str, body: Bytes) -> anyhow::Result<()> {
    let ack: AdminAck = request(bus, subjects.admin_breaker(provider, command), body).await?;
    let state = state_name(ack.state);
    let epoch = ack.epoch.map_or_else(|| "-".to_owned(), |e| e.to_string());
    println!("{}: {} (cluster breaker {state}, epoch {epoch})", ack.node, ack.message);
    if !ack.ok {
        bail!("{command} refused: {}", ack.message);
    }
    Ok(())
}

fn print_health(nodes: &[NodeHealth]) {
    for h in nodes {
        let flags: Vec<&str> =
            [(h.draining, "DRAINING"), (h.degraded, "REDIS DOWN"), (h.nats_disconnected, "NATS DOWN")]
                .into_iter()
                .filter_map(|(on, name)| on.then_some(name))
                .collect();
        println!(
            "node {} v{} roles {} up {:.0} s{}",
            h.node,
            h.version,
            h.roles.join(","),
            h.uptime_ms as f64 / 1000.0,
            if flags.is_empty() { String::new() } else { format!("  [{}]", flags.join(", ")) }
        );
        println!("  {:<24} {:<12} {:>8} {:>9}  last error", "actor", "status", "restarts", "in flight");
        for a in &h.actors {
            let in_flight = a.in_flight.map_or_else(|| "-".to_owned(), |n| n.to_string());
            let error = match (&a.last_error, a.last_error_at_ms) {
                (Some(e), Some(at)) => format!("{e} (at {at} ms)"),
                (Some(e), None) => e.clone(),
                _ => String::new(),
            };
            println!("  {:<24} {:<12} {:>8} {:>9}  {error}", a.actor, a.status, a.restarts, in_flight);
        }
        if !h.providers.is_empty() {
            println!(
                "  {:<16} {:<12} {:<12} {:>6} {:>8} {:>8}",
                "provider", "breaker", "cluster", "epoch", "calls", "failures"
            );
            for p in &h.providers {
                println!(
                    "  {:<16} {:<12} {:<12} {:>6} {:>8} {:>8}",
                    p.name,
                    state_name(p.breaker),
                    state_name(p.cluster_breaker),
                    p.cluster_epoch,
                    p.calls,
                    p.failures
                );
            }
        }
    }
}

fn print_breakers(nodes: &[NodeBreakers]) {
    // Per provider: the freshest store view any node read, then each node's beliefs.
    let mut by_provider: BTreeMap<&str, Vec<(&str, &switchyard_protocol::admin::BreakerBelief)>> = BTreeMap::new();
    for n in nodes {
        for b in &n.providers {
            by_provider.entry(b.provider.as_str()).or_default().push((n.node.as_str(), b));
        }
    }
    for (provider, beliefs) in by_provider {
        let store = beliefs.iter().filter_map(|(_, b)| b.store.as_ref()).max_by_key(|s| s.epoch);
        match store {
            Some(s) => {
                let open = s.open_remaining_ms.map(|ms| format!(", open for {ms} ms more")).unwrap_or_default();
                let probe = s.probe_owner.as_ref().map(|o| format!(", probe held by {o}")).unwrap_or_default();
                println!("provider {provider}: cluster {} (epoch {}{open}{probe})", s.state, s.epoch);
            }
            None => println!("provider {provider}: no shared store"),
        }
        for (node, b) in beliefs {
            let disagrees = store.is_some_and(|s| s.state != b.cluster || s.epoch != b.cluster_epoch);
            let mark = if disagrees { "  DISAGREES" } else { "" };
            let local = state_name(b.local);
            println!("  {node:<24} local {local:<12} cluster {:<12} epoch {}{mark}", b.cluster, b.cluster_epoch);
        }
    }
}

fn print_stats(nodes: &[NodeStats]) {
    for n in nodes {
        println!("node {} (up {:.0} s)", n.node, n.uptime_ms as f64 / 1000.0);
        if !n.providers.is_empty() {
            println!(
                "  {:<16} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10} {:>10} {:>10}",
                "provider",
                "calls",
                "per s",
                "fails",
                "429s",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "tokens in",
                "tokens out",
                "cost USD"
            );
            for p in &n.providers {
                println!(
                    "  {:<16} {:>8} {:>8.2} {:>8} {:>8} {:>8.2} {:>8.2} {:>8.2} {:>10} {:>10} {:>10.6}",
                    p.provider,
                    p.calls,
                    p.throughput,
                    p.failures,
                    p.rate_limited,
                    p.p50_ms,
                    p.p95_ms,
                    p.p99_ms,
                    p.input_tokens,
                    p.output_tokens,
                    p.cost_usd
                );
            }
        }
        if !n.routes.is_empty() {
            println!("  {:<16} {:>8} {:>8} {:>9} {:>8}", "route", "queries", "retries", "fallbacks", "hedges");
            for r in &n.routes {
                println!("  {:<16} {:>8} {:>8} {:>9} {:>8}", r.route, r.queries, r.retries, r.fallbacks, r.hedges);
            }
        }
    }
}

/// One router node's routers as a table: a line per router, then its models and its drift.
fn print_routers(statuses: &[RouterStatus]) {
    let pct = |x: Option<f64>| x.map_or_else(|| "-".to_owned(), |x| format!("{:.1}%", x * 100.0));
    for s in statuses {
        println!(
            "router {} ({}) on {}, generation {}: {} decisions, strong share {} (target {}), {} fallbacks, {} out of distribution",
            s.router,
            s.kind,
            s.node,
            s.generation,
            s.decisions,
            pct(s.strong_share),
            pct(s.target_strong_share),
            s.fallbacks,
            s.out_of_distribution
        );
        for (model, n) in &s.by_model {
            let share = (s.decisions > 0).then(|| *n as f64 / s.decisions as f64);
            println!("  {model:<32} {n:>8} {:>7}", pct(share));
        }
        if let Some(drift) = &s.drift {
            for line in drift.to_string().lines() {
                println!("  {line}");
            }
        }
    }
}

/// One coordinator's cascades as a table: a line per stage, then the cost and latency lines.
fn print_cascades(statuses: &[serde_json::Value]) {
    let num = |v: &serde_json::Value| v.as_f64().map_or_else(|| "-".to_owned(), |x| format!("{x:.6}"));
    let pct = |v: &serde_json::Value| v.as_f64().map_or_else(|| "-".to_owned(), |x| format!("{:.1}%", x * 100.0));
    for status in statuses {
        println!(
            "cascade {} on {} (cluster window {} s)",
            status["name"].as_str().unwrap_or("?"),
            status["node"].as_str().unwrap_or("?"),
            status["window_s"]
        );
        println!(
            "  {:>5} {:<16} {:>8} {:>9} {:>8} {:<8} {:>12}",
            "stage", "target", "direct", "escalated", "rate", "health", "cost/call"
        );
        for stage in status["stages"].as_array().into_iter().flatten() {
            println!(
                "  {:>5} {:<16} {:>8} {:>9} {:>8} {:<8} {:>12}",
                stage["stage"],
                stage["target"].as_str().unwrap_or("?"),
                stage["direct"],
                stage["escalated"],
                pct(&stage["escalation_rate"]),
                stage["health"].as_str().unwrap_or("-"),
                num(&stage["cost_usd"]),
            );
        }
        let cost = &status["cost"];
        let flag = if cost["costs_more_than_strong"] == true { "  COSTS MORE THAN THE STRONG MODEL ALONE" } else { "" };
        println!(
            "  cost per query: expected {} measured {} strong only {} (break-even escalation rate {}){flag}",
            num(&cost["expected_per_query"]),
            num(&cost["measured_per_query"]),
            num(&cost["strong_only_per_query"]),
            pct(&cost["break_even_rate"]),
        );
        let tail =
            |t: &serde_json::Value| format!("p50 {} p95 {} p99 {} ms (n={})", t["p50"], t["p95"], t["p99"], t["count"]);
        println!(
            "  latency direct {}; escalated {}",
            tail(&status["latency_ms"]["direct"]),
            tail(&status["latency_ms"]["escalated"])
        );
    }
}
