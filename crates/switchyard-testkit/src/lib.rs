//! Helpers shared by Switchyard's tests: waiting on conditions, and throwaway servers.
//!
//! Tests never `sleep` and hope: they wait on a condition with [`eventually`]. Tests that kill or pause a
//! service start their own [`ServerProcess`] on a free port and never touch the shared ones. Tests of credentials
//! and TLS take their material from [`pki`] (certificates), [`nats_jwt`] (operator-mode JWTs and creds files) and
//! [`secured`] (server configurations that ask for them).

use std::future::Future;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub mod nats_jwt;
pub mod pki;
pub mod secured;

/// The shared NATS of the machine (`SWITCHYARD_NATS_URL`, default `nats://127.0.0.1:4222`).
pub fn nats_url() -> String {
    std::env::var("SWITCHYARD_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// The shared Redis of the machine (`SWITCHYARD_REDIS_URL`, default `redis://127.0.0.1:6379`).
pub fn redis_url() -> String {
    std::env::var("SWITCHYARD_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The Redis Cluster the tests share, if one is running: `SWITCHYARD_REDIS_CLUSTER_URLS`, comma-separated node
/// URLs (`deploy/test.sh` starts one with `deploy/redis-cluster.sh` and sets it).
pub fn redis_cluster_urls() -> Option<Vec<String>> {
    let urls = std::env::var("SWITCHYARD_REDIS_CLUSTER_URLS").ok()?;
    let urls: Vec<String> = urls.split(',').map(str::trim).filter(|url| !url.is_empty()).map(str::to_owned).collect();
    (!urls.is_empty()).then_some(urls)
}

/// Polls `check` until it returns `Some`, or fails after `timeout` with `what` in the message.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() >= until {
            bail!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A free TCP port on loopback (bound, then released; good enough for tests).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The workspace's root folder.
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The shared evaluation data (`$SWITCHYARD_DATA`, the name the learning crates and the commands read, else
/// `../shared/data` beside the workspace), if present.
pub fn data_dir() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("SWITCHYARD_DATA")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/data"));
    dir.is_dir().then_some(dir)
}

/// The RouteLLM folder of the shared data, or `None` after printing that the data-driven part is skipped.
pub fn routellm_dir() -> Option<std::path::PathBuf> {
    let dir = data_dir().map(|d| d.join("routellm")).filter(|d| d.join("gsm8k").is_dir());
    if dir.is_none() {
        println!("skipped: RouteLLM data not found (set SWITCHYARD_DATA, or put it in ../shared/data)");
    }
    dir
}

/// A server process owned by a test, killed when dropped.
pub struct ServerProcess {
    child: Child,
    pub port: u16,
}

impl ServerProcess {
    /// Starts a private `nats-server` on a free loopback port.
    pub fn nats() -> anyhow::Result<Self> {
        Self::nats_with(None, &[])
    }

    /// Starts a private `nats-server` on a free loopback port with the configuration file `config` (its listen
    /// address is overridden), with `env` added to its environment (e.g. the passwords a config names).
    pub fn nats_with_config(config: &std::path::Path, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::nats_with(Some(config), env)
    }

    fn nats_with(config: Option<&std::path::Path>, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let port = free_port()?;
        let bin = which("nats-server").unwrap_or_else(|| "/usr/sbin/nats-server".into());
        let mut command = Command::new(bin);
        if let Some(config) = config {
            command.arg("-c").arg(config);
        }
        let child = command
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start nats-server")?;
        Self::ready(child, port)
    }

    /// Starts a private `redis-server` on a free loopback port, keeping nothing on disk.
    pub fn redis() -> anyhow::Result<Self> {
        Self::redis_on(free_port()?)
    }

    /// Starts a private `redis-server` on `port` (to restart one that was killed, on the same address).
    pub fn redis_on(port: u16) -> anyhow::Result<Self> {
        Self::redis_with(port, &["--port", &port.to_string()])
    }

    /// Starts a private `redis-server` that keeps nothing on disk, with `args` (which must make it listen on
    /// `port`: `--port`, or `--port 0 --tls-port` for TLS only).
    pub fn redis_with(port: u16, args: &[&str]) -> anyhow::Result<Self> {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start redis-server")?;
        Self::ready(child, port)
    }

    /// Starts a `redis-server` listening on `port` with extra `args`.
    fn redis_listening(port: u16, args: &[String]) -> anyhow::Result<Self> {
        let port_text = port.to_string();
        let all: Vec<&str> =
            ["--port", port_text.as_str()].into_iter().chain(args.iter().map(String::as_str)).collect();
        Self::redis_with(port, &all)
    }

    fn ready(child: Child, port: u16) -> anyhow::Result<Self> {
        let server = Self { child, port };
        let until = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() >= until {
                bail!("server on port {port} did not come up");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`STOP`, `CONT`, `KILL`, ...) to the server.
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let status = Command::new("kill").args([&format!("-{signal}"), &self.pid().to_string()]).status()?;
        if !status.success() {
            bail!("kill -{signal} failed");
        }
        Ok(())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh folder under the system's temporary folder, removed with everything in it when dropped.
pub struct TempDir {
    path: std::path::PathBuf,
}

impl TempDir {
    /// Creates `switchyard-<label>-<pid>-<n>` (unique within the process, and across processes by the pid).
    pub fn new(label: &str) -> anyhow::Result<TempDir> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("switchyard-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(TempDir { path })
    }

    /// The path of `name` inside the folder.
    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.path.join(name)
    }

    /// Writes `contents` to `name` inside the folder and returns its path.
    pub fn write(&self, name: &str, contents: &str) -> anyhow::Result<std::path::PathBuf> {
        let path = self.path(name);
        std::fs::write(&path, contents).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A NATS cluster of three servers on free loopback ports (client, route and monitoring ports each), routes in a
/// full mesh, for a test; every server stopped when dropped.
pub struct NatsCluster {
    /// The client URL of every server, `nats://127.0.0.1:<port>`.
    pub urls: Vec<String>,
    servers: Vec<Option<ServerProcess>>,
}

impl NatsCluster {
    /// Starts the three servers; returns once each has its routes to the two others (well under a second).
    pub fn start() -> anyhow::Result<Self> {
        let bin = which("nats-server").unwrap_or_else(|| "/usr/sbin/nats-server".into());
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect::<anyhow::Result<_>>()?;
        let route_urls = routes.iter().map(|port| format!("nats://127.0.0.1:{port}")).collect::<Vec<_>>().join(",");
        let mut cluster = NatsCluster { urls: Vec::new(), servers: Vec::new() };
        let mut monitors = Vec::new();
        for route in &routes {
            let (port, monitor) = (free_port()?, free_port()?);
            let child = Command::new(&bin)
                .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-m", &monitor.to_string()])
                .args(["--cluster_name", "switchyard-test", "--cluster", &format!("nats://127.0.0.1:{route}")])
                .args(["--routes", &route_urls])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("cannot start nats-server")?;
            cluster.servers.push(Some(ServerProcess::ready(child, port)?));
            cluster.urls.push(format!("nats://127.0.0.1:{port}"));
            monitors.push(monitor);
        }
        let until = Instant::now() + Duration::from_secs(10);
        for monitor in monitors {
            loop {
                let routez = http_get(monitor, "/routez").unwrap_or_default();
                if routez.contains("\"num_routes\": 2") {
                    break;
                }
                if Instant::now() >= until {
                    bail!("the nats server monitored on {monitor} has no routes to the others: {routez}");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(cluster)
    }

    /// The client port of server `index`.
    pub fn port(&self, index: usize) -> Option<u16> {
        self.servers.get(index)?.as_ref().map(|server| server.port)
    }

    /// The index of the server listening on client port `port`.
    pub fn index_of(&self, port: u16) -> Option<usize> {
        self.servers.iter().position(|server| server.as_ref().is_some_and(|server| server.port == port))
    }

    /// Kills server `index` (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self, index: usize) {
        if let Some(server) = self.servers.get_mut(index) {
            server.take();
        }
    }
}

/// A plain HTTP/1.0 GET on loopback (for monitoring endpoints), the whole response as text.
fn http_get(port: u16, path: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

/// A Redis Cluster of three masters (no replicas) for a test: the shared one of `SWITCHYARD_REDIS_CLUSTER_URLS`
/// when set, else one started now on free loopback ports and stopped (its files removed) when dropped.
pub struct RedisCluster {
    /// The URL of every master.
    pub urls: Vec<String>,
    servers: Vec<ServerProcess>,
    dir: Option<std::path::PathBuf>,
}

impl RedisCluster {
    /// The shared cluster, or a private one (see the type).
    pub fn shared_or_start() -> anyhow::Result<Self> {
        match redis_cluster_urls() {
            Some(urls) => Ok(RedisCluster { urls, servers: Vec::new(), dir: None }),
            None => Self::start(),
        }
    }

    /// Starts a private cluster: three cluster-enabled servers, a third of the slots each, joined with `CLUSTER
    /// MEET`; returns once every node reports the cluster `ok` with all slots assigned (well under a second).
    pub fn start() -> anyhow::Result<Self> {
        let dir = temp_dir("redis-cluster")?;
        let mut cluster = RedisCluster { urls: Vec::new(), servers: Vec::new(), dir: Some(dir.clone()) };
        let mut buses = Vec::new();
        for _ in 0..3 {
            let (port, bus) = (free_port()?, free_port()?);
            let args = [
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                &bus.to_string(),
                "--cluster-config-file",
                &dir.join(format!("nodes-{port}.conf")).display().to_string(),
                "--cluster-node-timeout",
                "2000",
                "--dir",
                &dir.display().to_string(),
            ]
            .map(str::to_owned);
            cluster.servers.push(ServerProcess::redis_listening(port, &args)?);
            cluster.urls.push(format!("redis://127.0.0.1:{port}"));
            buses.push(bus);
        }
        let ports: Vec<u16> = cluster.servers.iter().map(|server| server.port).collect();
        let ranges = [("0", "5460"), ("5461", "10922"), ("10923", "16383")];
        for (port, (first, last)) in ports.iter().zip(ranges) {
            redis_cli(*port, &["CLUSTER", "ADDSLOTSRANGE", first, last])?;
        }
        for (port, bus) in ports.iter().zip(&buses).skip(1) {
            redis_cli(ports[0], &["CLUSTER", "MEET", "127.0.0.1", &port.to_string(), &bus.to_string()])?;
        }
        let until = Instant::now() + Duration::from_secs(20);
        for port in &ports {
            loop {
                let info = redis_cli(*port, &["CLUSTER", "INFO"])?;
                let ready = info.contains("cluster_state:ok")
                    && info.contains("cluster_slots_assigned:16384")
                    && info.contains("cluster_known_nodes:3");
                if ready {
                    break;
                }
                if Instant::now() >= until {
                    bail!("the redis cluster on {ports:?} did not become ready: {info}");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(cluster)
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.servers.clear();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A Redis master (and optionally a replica) and one Sentinel watching it (quorum 1, the master is considered
/// down after one second) on free loopback ports, for a test; all stopped when dropped.
pub struct RedisSentinel {
    /// The master.
    pub master: ServerProcess,
    /// The replica, when started with [`RedisSentinel::start_with_replica`]: the Sentinel promotes it when the
    /// master dies.
    pub replica: Option<ServerProcess>,
    /// The Sentinel's URL (`redis://127.0.0.1:<port>`).
    pub sentinel_url: String,
    /// The name the Sentinel monitors the master under.
    pub master_name: String,
    _sentinel: ServerProcess,
    dir: std::path::PathBuf,
}

impl RedisSentinel {
    /// Starts the master and the Sentinel; returns once the Sentinel names the master.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_inner(false)
    }

    /// Starts a master, a replica of it and the Sentinel; returns once the replica is in sync and the Sentinel
    /// knows both.
    pub fn start_with_replica() -> anyhow::Result<Self> {
        Self::start_inner(true)
    }

    fn start_inner(with_replica: bool) -> anyhow::Result<Self> {
        let dir = temp_dir("redis-sentinel")?;
        let (master_dir, replica_dir) = (dir.join("master"), dir.join("replica"));
        std::fs::create_dir_all(&master_dir)?;
        std::fs::create_dir_all(&replica_dir)?;
        // Without the delay a replica's first sync waits five seconds for more replicas to share the transfer. A
        // replica writes the master's snapshot to its `dir`: the test's own folder, not the working directory.
        let args = ["--repl-diskless-sync-delay", "0", "--dir", &master_dir.display().to_string()].map(str::to_owned);
        let master = ServerProcess::redis_listening(free_port()?, &args)?;
        let replica = if with_replica {
            let port = free_port()?;
            let master_port = master.port.to_string();
            let args = ["--replicaof", "127.0.0.1", &master_port, "--dir", &replica_dir.display().to_string()]
                .map(str::to_owned);
            let replica = ServerProcess::redis_listening(port, &args)?;
            let until = Instant::now() + Duration::from_secs(10);
            while !redis_cli(port, &["INFO", "replication"])?.contains("master_link_status:up") {
                if Instant::now() >= until {
                    bail!("the replica on {port} did not sync with its master");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Some(replica)
        } else {
            None
        };
        let port = free_port()?;
        let config = dir.join("sentinel.conf");
        let name = "switchyard-test";
        std::fs::write(
            &config,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor {name} 127.0.0.1 {} 1\n\
                 sentinel down-after-milliseconds {name} 1000\nsentinel failover-timeout {name} 3000\n",
                dir.display(),
                master.port
            ),
        )?;
        let child = Command::new("redis-server")
            .arg(&config)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start redis-server --sentinel")?;
        let sentinel = ServerProcess::ready(child, port)?;
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let answer = redis_cli(port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", name])?;
            let replicas_known = match &replica {
                None => true,
                Some(_) => redis_cli(port, &["SENTINEL", "REPLICAS", name])?.contains("slave"),
            };
            if answer.contains(&master.port.to_string()) && replicas_known {
                break;
            }
            if Instant::now() >= until {
                bail!("the sentinel on {port} does not name the master: {answer}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(RedisSentinel {
            master,
            replica,
            sentinel_url: format!("redis://127.0.0.1:{port}"),
            master_name: name.to_owned(),
            _sentinel: sentinel,
            dir,
        })
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `redis-cli -p <port> <args>` and returns its output (an error reply is an error).
pub fn redis_cli(port: u16, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .context("cannot run redis-cli")?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() || text.starts_with("ERR") || text.starts_with("(error)") {
        bail!("redis-cli -p {port} {args:?} failed: {text}{}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(text)
}

/// A fresh directory under the system's temporary folder.
fn temp_dir(what: &str) -> anyhow::Result<std::path::PathBuf> {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("switchyard-{what}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

fn which(name: &str) -> Option<String> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths).map(|p| p.join(name)).find(|p| p.is_file()).map(|p| p.display().to_string())
    })
}
