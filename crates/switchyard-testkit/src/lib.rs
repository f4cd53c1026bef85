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

fn which(name: &str) -> Option<String> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths).map(|p| p.join(name)).find(|p| p.is_file()).map(|p| p.display().to_string())
    })
}
