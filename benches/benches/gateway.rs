//! Switchyard against its floors and its peers, in one run, every party in its own process.
//!
//! Processes: the mock LLM (`switchyard-mock`), a Switchyard node (`switchyard serve`, roles router, providers and
//! http, shared state in Redis, calls to its own provider actors in process), a NATS echo responder (this binary
//! again, `--nats-echo`), the two proxy floors below (this binary again), and the client (this process). Each run
//! is a closed loop at each concurrency:
//!
//! - `direct-http`: POST /v1/chat/completions straight to the mock (the HTTP floor);
//! - `nats-floor`: NATS request/reply to the echo responder (the NATS floor);
//! - `proxy-floor` and `bridge-floor`: the least a gateway does, for context (no target): this binary again as an
//!   HTTP proxy (`--http-proxy`: axum in front of hyper's pooled client, the body forwarded unread) and as a NATS
//!   bridge (`--nats-bridge`: each request's payload POSTed to the mock, its answer the reply), each with the
//!   node's worker threads. The ratios the issue sets are printed for them too, so that what this machine allows
//!   any gateway stands beside what Switchyard achieves;
//! - `sy-nats`: a query on `switchyard.v1.query.<route>` through the node into the mock;
//! - `sy-http`: the same chat completion through the node's OpenAI-compatible door;
//! - one row per `--peer` (another gateway in front of the same mock; `benches/peers.sh` starts LiteLLM and
//!   Portkey and passes them here).
//!
//! Then it prints the ratios issue 10 judges (overheads over direct HTTP against the floors, throughput against
//! direct HTTP, peers against the door), the node's RSS idle and after the load, and the Redis commands the
//! node sent per query (`INFO commandstats` before and after each Switchyard run). The last line is one JSON
//! object with every figure.
//!
//! Every run is repeated `--rounds` times (3 by default), round after round, so that a slow spell of the machine
//! hits every path alike; each path's figures are the medians of its rounds (each figure on its own: the median
//! q/s, the median p50, the median p99), and the ratios are taken from those. On a 2-core machine one run's c=64
//! throughput moves by +-20 % from run to run, so a single run says little.
//!
//! `cargo bench -p switchyard-benches --bench gateway -- [--seconds S] [--rounds R] [--concurrency 1,16,64]
//!  [--mock-port P] [--node-workers N] [--peer NAME=BASE_URL]... [--peer-header 'NAME=Header: value']...` where BASE_URL is a
//! peer's OpenAI base URL (`http://127.0.0.1:4000/v1`; requests go to BASE_URL/chat/completions).
//! The node runs one worker thread (`node.worker_threads = 1`) unless `--node-workers N` says otherwise (0: the
//! node's default, one per core): on these 2 cores it shares the machine with the client, NATS and the mock, and in
//! three-round runs a second worker gave no steady gain (a lone worker is preempted by the processes its writes
//! wake, two hand each query between threads).
//! Builds `switchyard` and `switchyard-mock` (release) first; `SWITCHYARD_BENCH_NODE_BIN=path` runs another build
//! of the node instead (to compare two versions on the same machine, run after run). Needs NATS at
//! `SWITCHYARD_NATS_URL` (default nats://127.0.0.1:4222; `deploy/services.sh` starts it) and `redis-server` on the
//! PATH: the node gets a Redis of its own, so that the command count is the node's alone.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

use switchyard_benches::{Figures, closed_loop, concurrency_list, print_row, redis_commands, round3};
use switchyard_protocol::client::QueryOutcome;
use switchyard_protocol::subjects::Subjects;

/// The route, and the model name every HTTP client sends (the door's model is a route; the peers map it to the
/// mock's model of the same name).
const MODEL: &str = "bench-model";
const DOOR_KEY: &str = "sk-switchyard-bench";
const PROMPT: &str = "hello bench";

struct Peer {
    name: String,
    url: String,
    headers: Vec<(String, String)>,
}

struct Args {
    seconds: u64,
    concurrency: Vec<usize>,
    mock_port: u16,
    /// The node's runtime worker threads (`node.worker_threads`); 0 leaves the node's default (one per core).
    node_workers: usize,
    /// How many times every run is repeated (interleaved, round after round); the report takes the medians.
    rounds: usize,
    peers: Vec<Peer>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args =
        Args { seconds: 5, concurrency: vec![1, 16, 64], mock_port: 0, node_workers: 1, rounds: 3, peers: Vec::new() };
    let mut headers: Vec<(String, String, String)> = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |flag: &str| it.next().with_context(|| format!("{flag} needs a value"));
        match arg.as_str() {
            "--seconds" => args.seconds = value("--seconds")?.parse()?,
            "--mock-port" => args.mock_port = value("--mock-port")?.parse()?,
            "--node-workers" => args.node_workers = value("--node-workers")?.parse()?,
            "--rounds" => args.rounds = value("--rounds")?.parse()?,
            "--concurrency" => args.concurrency = concurrency_list("--concurrency", it.next())?,
            "--peer" => {
                let spec = value("--peer")?;
                let (name, url) = spec.split_once('=').context("--peer takes NAME=BASE_URL")?;
                let url = format!("{}/chat/completions", url.trim_end_matches('/'));
                args.peers.push(Peer { name: name.into(), url, headers: Vec::new() });
            }
            "--peer-header" => {
                let spec = value("--peer-header")?;
                let (name, header) = spec.split_once('=').context("--peer-header takes 'NAME=Header: value'")?;
                let (header, value) = header.split_once(':').context("--peer-header takes 'NAME=Header: value'")?;
                headers.push((name.into(), header.trim().into(), value.trim().into()));
            }
            _ => {} // cargo bench passes --bench; ignore what is not ours
        }
    }
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    for (name, header, value) in headers {
        let peer = args.peers.iter_mut().find(|p| p.name == name).with_context(|| format!("no --peer {name}"))?;
        peer.headers.push((header, value));
    }
    Ok(args)
}

fn main() -> anyhow::Result<()> {
    let _ = async_nats::rustls::crypto::aws_lc_rs::default_provider().install_default();
    // As the node builds its runtime: one worker is a current-thread runtime.
    let runtime = |workers| match workers {
        1 => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        n => tokio::runtime::Builder::new_multi_thread().worker_threads(n).enable_all().build(),
    };
    let mut argv = std::env::args().skip(1);
    let mut arg = |name: &str| argv.next().with_context(|| format!("{name} missing"));
    match arg("mode").ok().as_deref() {
        Some("--nats-echo") => {
            let (url, subject) = (arg("url")?, arg("subject")?);
            runtime(2)?.block_on(nats_echo(url, subject))
        }
        // The proxy floors run as the node does: one worker thread, or `--node-workers`.
        Some("--http-proxy") => {
            let (workers, listen, upstream) = (arg("workers")?.parse()?, arg("listen")?, arg("upstream")?);
            runtime(workers)?.block_on(http_proxy(listen, upstream))
        }
        Some("--nats-bridge") => {
            let (workers, url, subject, upstream) =
                (arg("workers")?.parse()?, arg("url")?, arg("subject")?, arg("upstream")?);
            runtime(workers)?.block_on(nats_bridge(url, subject, upstream))
        }
        _ => runtime(2)?.block_on(run(parse_args()?)),
    }
}

/// The NATS floor's responder: answers every request with its own payload.
async fn nats_echo(url: String, subject: String) -> anyhow::Result<()> {
    let client = async_nats::connect(url).await?;
    let mut requests = client.subscribe(subject).await?;
    client.flush().await?;
    println!("ready");
    while let Some(request) = requests.next().await {
        if let Some(reply) = request.reply {
            client.publish(reply, request.payload).await?;
        }
    }
    Ok(())
}

/// The proxy floors' upstream client: hyper's pooled HTTP/1 client, as the node's providers use.
type Upstream = hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn upstream_client() -> Upstream {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build(connector)
}

/// POSTs `body` to `uri` as JSON and returns the response's status and body, untouched.
async fn forward(client: &Upstream, uri: &hyper::Uri, body: Bytes) -> anyhow::Result<(hyper::StatusCode, Bytes)> {
    let request = hyper::Request::post(uri.clone()).header("content-type", "application/json").body(Full::new(body))?;
    let response = client.request(request).await?;
    let status = response.status();
    Ok((status, response.into_body().collect().await?.to_bytes()))
}

/// The HTTP proxy floor: the least an HTTP gateway does, on the door's server stack (axum) and the providers'
/// client (hyper's pool). It forwards every chat completion's body to the mock and its answer back, reading
/// neither, with no routing, no checks and no trace.
async fn http_proxy(listen: String, upstream: String) -> anyhow::Result<()> {
    use axum::response::IntoResponse;
    let (client, uri) = (upstream_client(), upstream.parse::<hyper::Uri>()?);
    let forwarded = move |body: Bytes| {
        let (client, uri) = (client.clone(), uri.clone());
        async move {
            match forward(&client, &uri, body).await {
                Ok((status, body)) => (status, [("content-type", "application/json")], body).into_response(),
                Err(error) => (hyper::StatusCode::BAD_GATEWAY, error.to_string()).into_response(),
            }
        }
    };
    let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(forwarded));
    // As the door's: Nagle's algorithm off on every connection.
    use axum::serve::ListenerExt;
    let listener = tokio::net::TcpListener::bind(listen).await?.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await?;
    Ok(())
}

/// The NATS gateway floor: the least a gateway on NATS does. Every request's payload is POSTed to the mock as it
/// is, in a task of its own, and the mock's answer is the reply.
async fn nats_bridge(url: String, subject: String, upstream: String) -> anyhow::Result<()> {
    let (client, uri) = (upstream_client(), upstream.parse::<hyper::Uri>()?);
    let nats = async_nats::connect(url).await?;
    let mut requests = nats.subscribe(subject).await?;
    nats.flush().await?;
    println!("ready");
    while let Some(request) = requests.next().await {
        let Some(reply) = request.reply else { continue };
        let (nats, client, uri) = (nats.clone(), client.clone(), uri.clone());
        tokio::spawn(async move {
            let answer = match forward(&client, &uri, request.payload).await {
                Ok((_, body)) => body,
                Err(error) => Bytes::from(error.to_string()),
            };
            let _ = nats.publish(reply, answer).await;
        });
    }
    Ok(())
}

/// A child process killed when dropped.
struct Process {
    name: &'static str,
    child: Child,
}

impl Process {
    /// CPU time the process has used so far (user and system), from `/proc/<pid>/stat`.
    fn cpu_time(&self) -> anyhow::Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // Fields after the command name (which may hold spaces) start at field 3; utime and stime are 14 and 15.
        let rest = stat.rsplit_once(')').context("odd /proc stat")?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 =
            fields.get(11..13).context("odd /proc stat")?.iter().map(|f| f.parse::<u64>()).sum::<Result<_, _>>()?;
        // The kernel's USER_HZ is 100 on every Linux this runs on.
        Ok(Duration::from_millis(ticks * 10))
    }

    /// Waits for a responder started with piped stdout to print `ready` (it subscribed).
    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let stdout = self.child.stdout.take().with_context(|| format!("{} has no stdout", self.name))?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        if line.trim() != "ready" {
            bail!("{} did not start", self.name);
        }
        Ok(())
    }

    fn rss_mib(&self) -> anyhow::Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no VmRSS for {}", self.name))?;
        Ok(kib / 1024.0)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let nats_url = std::env::var("SWITCHYARD_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let bin = build_binaries()?;
    // Another build of the node, for comparing two versions on the same machine in turn.
    let node_bin = std::env::var_os("SWITCHYARD_BENCH_NODE_BIN").map_or_else(|| bin.join("switchyard"), PathBuf::from);
    let work = std::env::temp_dir().join(format!("switchyard-gateway-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;

    // A Redis of its own, so that its command count is the node's alone.
    let redis_port = free_port()?;
    let _redis = spawn(
        "redis",
        Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &redis_port.to_string(), "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null()),
    )?;
    wait_for_port(([127, 0, 0, 1], redis_port).into(), Duration::from_secs(10)).await.context("redis-server")?;
    let redis_url = format!("redis://127.0.0.1:{redis_port}");

    let mock_port = if args.mock_port == 0 { free_port()? } else { args.mock_port };
    let mock_addr: SocketAddr = ([127, 0, 0, 1], mock_port).into();
    let _mock = spawn(
        "mock",
        Command::new(bin.join("switchyard-mock")).args(["--listen", &mock_addr.to_string()]).env("RUST_LOG", "warn"),
    )?;
    wait_for_port(mock_addr, Duration::from_secs(10)).await.context("the mock did not start")?;

    let namespace = format!("gwbench{}", std::process::id());
    let echo_subject = format!("{namespace}.echo");
    let mut echo = spawn(
        "nats-echo",
        Command::new(std::env::current_exe()?).args(["--nats-echo", &nats_url, &echo_subject]).stdout(Stdio::piped()),
    )?;
    echo.wait_ready()?;

    // The proxy floors, with as many worker threads as the node.
    let floor_workers = match args.node_workers {
        0 => std::thread::available_parallelism()?.get(),
        n => n,
    }
    .to_string();
    let mock_url = format!("http://{mock_addr}/v1/chat/completions");
    let proxy_addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    let proxy_floor = spawn(
        "http-proxy",
        Command::new(std::env::current_exe()?).args([
            "--http-proxy",
            &floor_workers,
            &proxy_addr.to_string(),
            &mock_url,
        ]),
    )?;
    wait_for_port(proxy_addr, Duration::from_secs(10)).await.context("the HTTP proxy floor did not start")?;
    let bridge_subject = format!("{namespace}.bridge");
    let mut bridge = spawn(
        "nats-bridge",
        Command::new(std::env::current_exe()?)
            .args(["--nats-bridge", &floor_workers, &nats_url, &bridge_subject, &mock_url])
            .stdout(Stdio::piped()),
    )?;
    bridge.wait_ready()?;

    let door_addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    let config = work.join("node.toml");
    std::fs::write(&config, node_config(&namespace, &nats_url, &redis_url, mock_addr, door_addr, args.node_workers))?;
    let node = spawn(
        "node",
        Command::new(&node_bin)
            .args(["serve", "--config"])
            .arg(&config)
            .env("SWITCHYARD_BENCH_DOOR_KEY", DOOR_KEY)
            .stderr(std::fs::File::create(work.join("node.log"))?),
    )?;

    let http = reqwest::Client::builder().tcp_nodelay(true).pool_max_idle_per_host(1024).build()?;
    let door = format!("http://{door_addr}");
    wait_ready(&http, &format!("{door}/readyz"), Duration::from_secs(20))
        .await
        .with_context(|| format!("the node did not become ready; see {}", work.join("node.log").display()))?;
    let nats = async_nats::connect(&nats_url).await?;
    let query_subject = Subjects::new(&namespace).query(MODEL);
    // One query through each path before measuring: connections, the provider's first call.
    let query = Bytes::from(serde_json::to_vec(&json!({"messages": [{"role": "user", "content": PROMPT}]}))?);
    let first = nats.request(query_subject.clone(), query.clone()).await.context("first query over NATS")?;
    check_reply(&first.payload).context("first query over NATS")?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_idle = node.rss_mib()?;

    let body = Bytes::from(serde_json::to_vec(&json!({
        "model": MODEL, "messages": [{"role": "user", "content": PROMPT}]
    }))?);
    let mut redis = redis::Client::open(redis_url.as_str())?.get_multiplexed_async_connection().await?;
    let warmup = Duration::from_secs(1);
    let duration = Duration::from_secs(args.seconds);

    let workers = match args.node_workers {
        0 => "one per core".to_owned(),
        n => n.to_string(),
    };
    println!(
        "switchyard gateway benchmark: {}s per run after 1s warm-up, {} round(s), medians reported; mock answers \
         instantly; every party in its own process; node worker threads: {workers}",
        args.seconds, args.rounds
    );
    println!(
        "{:>5} {:<12} {:>9} {:>7} {:>9} {:>9} {:>9}",
        "conc", "path", "requests", "errors", "qps", "p50 ms", "p99 ms"
    );
    // Every run of every round, by concurrency and path; the report takes each path's median over the rounds.
    let mut rounds: BTreeMap<usize, BTreeMap<String, Vec<Figures>>> = BTreeMap::new();
    let (mut redis_sent, mut switchyard_queries) = (0u64, 0u64);
    // The CPU time of the node (or of a proxy floor) and the queries it served in each run (summed over the rounds).
    let mut node_cpu: BTreeMap<String, (Duration, u64)> = BTreeMap::new();
    for round in 1..=args.rounds {
        if args.rounds > 1 {
            println!("round {round} of {}", args.rounds);
        }
        for &concurrency in &args.concurrency {
            let row = rounds.entry(concurrency).or_default();
            let mut record = |path: &str, name: &str, figures: Figures| {
                print_row(concurrency, name, &figures);
                row.entry(path.to_owned()).or_default().push(figures);
            };
            let direct = http_load(
                &http,
                &format!("http://{mock_addr}/v1/chat/completions"),
                &[],
                &body,
                concurrency,
                warmup,
                duration,
            )
            .await?;
            record("direct_http", "direct-http", direct);

            let echo_payload = query.clone();
            let floor = nats_load(&nats, &echo_subject, echo_payload, false, concurrency, warmup, duration).await?;
            record("nats_floor", "nats-floor", floor);

            let proxy_url = format!("http://{proxy_addr}/v1/chat/completions");
            let cpu = proxy_floor.cpu_time()?;
            let proxy = http_load(&http, &proxy_url, &[], &body, concurrency, warmup, duration).await?;
            let used = proxy_floor.cpu_time()? - cpu;
            record("proxy_floor", "proxy-floor", proxy);
            let spent = node_cpu.entry(format!("c{concurrency}_proxy_floor")).or_default();
            *spent = (spent.0 + used, spent.1 + sent(&proxy, duration, warmup));
            let cpu = bridge.cpu_time()?;
            let bridged = nats_load(&nats, &bridge_subject, body.clone(), false, concurrency, warmup, duration).await?;
            let used = bridge.cpu_time()? - cpu;
            record("bridge_floor", "bridge-floor", bridged);
            let spent = node_cpu.entry(format!("c{concurrency}_bridge_floor")).or_default();
            *spent = (spent.0 + used, spent.1 + sent(&bridged, duration, warmup));

            let before = redis_commands(&mut redis).await?;
            let cpu = node.cpu_time()?;
            let through = nats_load(&nats, &query_subject, query.clone(), true, concurrency, warmup, duration).await?;
            let used = node.cpu_time()? - cpu;
            record("switchyard_nats", "sy-nats", through);
            let spent = node_cpu.entry(format!("c{concurrency}_nats")).or_default();
            *spent = (spent.0 + used, spent.1 + sent(&through, duration, warmup));

            let door_headers = [("authorization".to_owned(), format!("Bearer {DOOR_KEY}"))];
            let url = format!("{door}/v1/chat/completions");
            let cpu = node.cpu_time()?;
            let through_door = http_load(&http, &url, &door_headers, &body, concurrency, warmup, duration).await?;
            let used = node.cpu_time()? - cpu;
            record("switchyard_http", "sy-http", through_door);
            let spent = node_cpu.entry(format!("c{concurrency}_http")).or_default();
            *spent = (spent.0 + used, spent.1 + sent(&through_door, duration, warmup));
            // INFO itself is one command; every query sent (warm-up included) may have cost commands.
            redis_sent += redis_commands(&mut redis).await?.saturating_sub(before + 1);
            switchyard_queries += sent(&through, duration, warmup) + sent(&through_door, duration, warmup);

            for peer in &args.peers {
                let figures = http_load(&http, &peer.url, &peer.headers, &body, concurrency, warmup, duration).await?;
                record(&peer.name, &peer.name, figures);
            }
        }
    }
    let runs: BTreeMap<usize, BTreeMap<String, Figures>> = rounds
        .iter()
        .map(|(&c, row)| (c, row.iter().map(|(path, runs)| (path.clone(), Figures::median(runs))).collect()))
        .collect();
    if args.rounds > 1 {
        println!("median of {} rounds (each figure on its own):", args.rounds);
        for (&concurrency, row) in &runs {
            for (path, figures) in row {
                print_row(concurrency, &path.replace("switchyard_", "sy-").replace('_', "-"), figures);
            }
        }
    }
    let cpu_per_query: BTreeMap<String, f64> = node_cpu
        .into_iter()
        .map(|(run, (cpu, queries))| (run, round3(cpu.as_secs_f64() * 1e6 / queries.max(1) as f64)))
        .collect();
    let rss_after = node.rss_mib()?;
    drop(node);

    let report = Report::new(&runs, &args.peers, rss_idle, rss_after, redis_sent, switchyard_queries);
    report.print();
    let shown: Vec<String> = cpu_per_query.iter().map(|(run, us)| format!("{run} {us:.0}")).collect();
    println!("CPU per query of the node (nats, http) and of the proxy floors (us): {}", shown.join(", "));
    let _ = std::fs::remove_dir_all(&work);
    let runs_json: BTreeMap<String, BTreeMap<String, Value>> = runs
        .iter()
        .map(|(c, row)| (c.to_string(), row.iter().map(|(path, f)| (path.clone(), f.json())).collect()))
        .collect();
    println!(
        "{}",
        json!({
            "bench": "gateway", "seconds": args.seconds, "rounds": args.rounds, "cpus": std::thread::available_parallelism()?.get(),
            "node_worker_threads": args.node_workers,
            "runs": runs_json, "ratios": report.ratios, "context": report.context, "node_rss_mib": {"idle": round3(rss_idle), "after_load": round3(rss_after)},
            "redis_commands_per_query": report.redis_per_query, "node_cpu_us_per_query": cpu_per_query,
        })
    );
    Ok(())
}

/// An estimate of the requests a run sent, warm-up included (the Redis count covers the warm-up too).
fn sent(f: &Figures, duration: Duration, warmup: Duration) -> u64 {
    let scale = (duration + warmup).as_secs_f64() / duration.as_secs_f64();
    ((f.requests + f.errors) as f64 * scale) as u64
}

/// The ratios the issue judges, each with its target; and, for context, the same ratios of the proxy floors.
struct Report {
    ratios: Vec<Value>,
    /// Figures without a target: what the least gateway (the proxy floors) achieves on this machine, and
    /// Switchyard against it.
    context: Vec<Value>,
    lines: Vec<String>,
    redis_per_query: f64,
}

impl Report {
    fn new(
        runs: &BTreeMap<usize, BTreeMap<String, Figures>>,
        peers: &[Peer],
        rss_idle: f64,
        rss_after: f64,
        redis_commands: u64,
        queries: u64,
    ) -> Self {
        let mut report = Self { ratios: Vec::new(), context: Vec::new(), lines: Vec::new(), redis_per_query: 0.0 };
        if let Some(row) = runs.get(&1) {
            let (direct, floor) = (&row["direct_http"], &row["nats_floor"]);
            let (nats, door) = (&row["switchyard_nats"], &row["switchyard_http"]);
            report.ratio("c1_nats_overhead_p50_over_nats_p50", nats.p50_ms - direct.p50_ms, floor.p50_ms, "<=", 1.5);
            report.ratio("c1_nats_overhead_p99_over_nats_p99", nats.p99_ms - direct.p99_ms, floor.p99_ms, "<=", 2.0);
            report.ratio("c1_http_overhead_p50_over_direct_p50", door.p50_ms - direct.p50_ms, direct.p50_ms, "<=", 2.0);
            report.ratio("c1_http_overhead_p99_over_direct_p99", door.p99_ms - direct.p99_ms, direct.p99_ms, "<=", 2.0);
            if let (Some(proxy), Some(bridge)) = (row.get("proxy_floor"), row.get("bridge_floor")) {
                report.context(
                    "c1_proxy_floor_overhead_p50_over_direct_p50",
                    proxy.p50_ms - direct.p50_ms,
                    direct.p50_ms,
                );
                report.context(
                    "c1_bridge_floor_overhead_p50_over_nats_p50",
                    bridge.p50_ms - direct.p50_ms,
                    floor.p50_ms,
                );
                let (proxy_p99, bridge_p99) = (proxy.p99_ms - direct.p99_ms, bridge.p99_ms - direct.p99_ms);
                report.context("c1_proxy_floor_overhead_p99_over_direct_p99", proxy_p99, direct.p99_ms);
                report.context("c1_bridge_floor_overhead_p99_over_nats_p99", bridge_p99, floor.p99_ms);
            }
            for peer in peers {
                let Some(figures) = row.get(&peer.name) else { continue };
                let target = if peer.name.contains("litellm") { 20.0 } else { 5.0 };
                let name = format!("c1_{}_overhead_over_switchyard_http_overhead", peer.name);
                report.ratio(&name, figures.p50_ms - direct.p50_ms, door.p50_ms - direct.p50_ms, ">=", target);
            }
        }
        if let Some(row) = runs.get(&64) {
            let direct = &row["direct_http"];
            let (nats, door) = (&row["switchyard_nats"], &row["switchyard_http"]);
            report.ratio("c64_nats_qps_over_direct_qps", nats.throughput, direct.throughput, ">=", 0.4);
            report.ratio("c64_http_qps_over_direct_qps", door.throughput, direct.throughput, ">=", 0.5);
            if let (Some(proxy), Some(bridge)) = (row.get("proxy_floor"), row.get("bridge_floor")) {
                report.context("c64_proxy_floor_qps_over_direct_qps", proxy.throughput, direct.throughput);
                report.context("c64_bridge_floor_qps_over_direct_qps", bridge.throughput, direct.throughput);
                report.context("c64_http_qps_over_proxy_floor_qps", door.throughput, proxy.throughput);
                report.context("c64_nats_qps_over_bridge_floor_qps", nats.throughput, bridge.throughput);
            }
            for peer in peers {
                let Some(figures) = row.get(&peer.name) else { continue };
                let target = if peer.name.contains("litellm") { 50.0 } else { 10.0 };
                let name = format!("c64_switchyard_http_qps_over_{}_qps", peer.name);
                report.ratio(&name, door.throughput, figures.throughput, ">=", target);
            }
        }
        report.value("node_rss_idle_mib", rss_idle, "<", 30.0);
        report.value("node_rss_after_load_mib", rss_after, "<", 100.0);
        report.redis_per_query = redis_commands as f64 / queries.max(1) as f64;
        report.value("redis_commands_per_query", report.redis_per_query, "<", 0.01);
        report
    }

    fn ratio(&mut self, name: &str, numerator: f64, denominator: f64, op: &str, target: f64) {
        let ratio = numerator / denominator.max(1e-9);
        self.record(name, ratio, op, target, format!("{numerator:.3} / {denominator:.3} = {ratio:.2}"));
    }

    fn context(&mut self, name: &str, numerator: f64, denominator: f64) {
        let ratio = numerator / denominator.max(1e-9);
        let shown = format!("{numerator:.3} / {denominator:.3} = {ratio:.2}");
        self.lines.push(format!("{name:<52} {shown:<28} (context: the least gateway)"));
        self.context.push(json!({"name": name, "value": round3(ratio)}));
    }

    fn value(&mut self, name: &str, value: f64, op: &str, target: f64) {
        self.record(name, value, op, target, format!("{value:.4}"));
    }

    fn record(&mut self, name: &str, value: f64, op: &str, target: f64, shown: String) {
        let met = match op {
            "<=" => value <= target,
            "<" => value < target,
            _ => value >= target,
        };
        let mark = if met { "met" } else { "MISSED" };
        self.lines.push(format!("{name:<52} {shown:<28} target {op} {target:<6} {mark}"));
        self.ratios.push(json!({"name": name, "value": round3(value), "target": format!("{op} {target}"), "met": met}));
    }

    fn print(&self) {
        println!("ratios (of the medians):");
        for line in &self.lines {
            println!("  {line}");
        }
    }
}

/// The node this bench measures; `benches/callgrind-door.sh` writes the same one (keep them alike).
fn node_config(namespace: &str, nats: &str, redis: &str, mock: SocketAddr, door: SocketAddr, workers: usize) -> String {
    let workers = match workers {
        0 => String::new(),
        n => format!("worker_threads = {n}"),
    };
    format!(
        r#"
[node]
name = "bench-node"
namespace = "{namespace}"
roles = ["router", "providers", "http"]
{workers}

[nats]
url = "{nats}"

[redis]
url = "{redis}"
key_prefix = "switchyard:gwbench:{pid}:"

[[providers]]
name = "mock"
kind = "openai"
base_url = "http://{mock}/v1"
model = "{MODEL}"
max_in_flight = 4096

[[routes]]
name = "{MODEL}"
providers = ["mock"]

[http]
listen = "{door}"
[[http.keys]]
name = "bench"
key_env = "SWITCHYARD_BENCH_DOOR_KEY"
routes = ["*"]
"#,
        pid = std::process::id()
    )
}

/// Builds the node and the mock (release, as this benchmark) and returns the directory holding them.
///
/// They get a target directory of their own (`target/gateway-bins`): built beside this benchmark, their shared
/// dependencies would be built with the benchmark's dev-dependency features, and each build would undo the other.
fn build_binaries() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // <target>/<profile>/deps/gateway-<hash>
    let target = exe.ancestors().nth(3).context("where is the target directory?")?.join("gateway-bins");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "switchyard", "-p", "switchyard-mock", "--bins", "--target-dir"])
        .arg(&target)
        .status()
        .context("cannot run cargo build")?;
    if !status.success() {
        bail!("cargo build of switchyard and switchyard-mock failed");
    }
    Ok(target.join("release"))
}

fn spawn(name: &'static str, command: &mut Command) -> anyhow::Result<Process> {
    let child = command.stdin(Stdio::null()).spawn().with_context(|| format!("cannot start the {name}"))?;
    Ok(Process { name, child })
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn wait_for_port(addr: SocketAddr, within: Duration) -> anyhow::Result<()> {
    let until = Instant::now() + within;
    while TcpStream::connect(addr).is_err() {
        if Instant::now() > until {
            bail!("nothing listens on {addr}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn wait_ready(http: &reqwest::Client, url: &str, within: Duration) -> anyhow::Result<()> {
    let until = Instant::now() + within;
    loop {
        if let Ok(response) = http.get(url).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > until {
            bail!("{url} did not answer 200");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A query's reply is an answer (not a refusal or an error).
fn check_reply(payload: &[u8]) -> anyhow::Result<()> {
    match serde_json::from_slice(payload) {
        Ok(QueryOutcome::Reply(_)) => Ok(()),
        _ => bail!("not an answer: {}", String::from_utf8_lossy(payload)),
    }
}

async fn http_load(
    http: &reqwest::Client,
    url: &str,
    headers: &[(String, String)],
    body: &Bytes,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Figures> {
    let (http, url, body) = (http.clone(), url.to_owned(), body.clone());
    let headers: Arc<[(String, String)]> = headers.into();
    closed_loop(concurrency, warmup, duration, move || {
        let mut request = http.post(&url).header("content-type", "application/json").body(body.clone());
        for (name, value) in headers.iter() {
            request = request.header(name, value);
        }
        async move {
            match request.send().await {
                Ok(response) => {
                    let ok = response.status().is_success();
                    response.bytes().await.is_ok() && ok
                }
                Err(_) => false,
            }
        }
    })
    .await
}

/// Requests on `subject`; `answer` checks that each reply is a Switchyard answer.
async fn nats_load(
    nats: &async_nats::Client,
    subject: &str,
    payload: Bytes,
    answer: bool,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Figures> {
    let (nats, subject) = (nats.clone(), subject.to_owned());
    closed_loop(concurrency, warmup, duration, move || {
        let (nats, subject, payload) = (nats.clone(), subject.clone(), payload.clone());
        async move {
            match nats.request(subject, payload).await {
                Ok(reply) => !answer || check_reply(&reply.payload).is_ok(),
                Err(_) => false,
            }
        }
    })
    .await
}
