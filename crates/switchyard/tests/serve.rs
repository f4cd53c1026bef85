//! The `switchyard` binary as an operator runs it: `serve` on the real NATS, `query` and `admin` against it,
//! SIGTERM, trace-level logs that must not contain the API key, and a bad config's exit code.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use switchyard_mock::{Behavior, MockConfig, MockError, MockServer};
use switchyard_testkit::{eventually, nats_url};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
const KEY: &str = "sk-live-VERYSECRET-7f3a9c1d2e4b";

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("switchyard-{}-{name}", std::process::id()))
}

fn config(mock: &MockServer, namespace: &str) -> String {
    format!(
        r#"
        [node]
        name = "cli-node"
        namespace = "{namespace}"
        [nats]
        url = "{nats}"
        [[providers]]
        name = "main"
        kind = "openai"
        base_url = "{openai}"
        model = "m-main"
        api_key = "{KEY}"
        [[providers]]
        name = "denied"
        kind = "anthropic"
        base_url = "{anthropic}"
        model = "m-denied"
        api_key = "{KEY}"
        [[routes]]
        name = "chat"
        providers = ["main"]
        [[routes]]
        name = "denied"
        providers = ["denied"]
        "#,
        nats = nats_url(),
        openai = mock.openai_base_url(),
        anthropic = mock.base_url(),
    )
}

fn client(namespace: &str, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env("SWITCHYARD_NATS_URL", nats_url())
        .env("SWITCHYARD_NAMESPACE", namespace)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

/// Starts `switchyard serve` on `config`, its log lines (uncoloured, at `level`) going to `log`, with `env` set.
/// Runs the client with `args` until `done` accepts its output, for at most 20 s (`what` names the wait).
async fn until_client(namespace: &str, what: &str, args: &[&str], done: fn(&std::process::Output) -> bool) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    eventually(what, Duration::from_secs(20), || {
        let (ns, args) = (namespace.to_owned(), args.clone());
        async move {
            let out = tokio::task::spawn_blocking(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                client(&ns, &args)
            })
            .await
            .ok()?;
            done(&out).then_some(())
        }
    })
    .await
    .unwrap();
}

fn serve(config: &std::path::Path, log: &std::path::Path, level: &str, env: &[(&str, &str)]) -> std::process::Child {
    Command::new(BIN)
        .args(["serve", "--config", config.to_str().unwrap()])
        .env("RUST_LOG", level)
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Sends SIGTERM and asserts the node drains and exits cleanly.
async fn terminate(mut node: std::process::Child) {
    let term = Command::new("kill").args(["-TERM", &node.id().to_string()]).status().unwrap();
    assert!(term.success());
    let status = tokio::task::spawn_blocking(move || node.wait()).await.unwrap().unwrap();
    assert!(status.success(), "node exited with {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_the_cli_drains_on_sigterm_and_never_logs_the_key() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    mock.set_behavior(
        "m-denied",
        Behavior {
            errors: vec![switchyard_mock::ErrorRule { rate: 1.0, error: MockError::Auth }],
            ..Behavior::default()
        },
    );
    let namespace = format!("cli-{}", std::process::id());
    let config_path = temp_path("serve.toml");
    std::fs::write(&config_path, config(&mock, &namespace)).unwrap();
    let log_path = temp_path("serve.log");
    let node = serve(&config_path, &log_path, "trace", &[]);

    until_client(&namespace, "the node answers health", &["admin", "health", "--wait-ms", "300"], |out| {
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("cli-node")
    })
    .await;

    let plain = client(&namespace, &["query", "--route", "chat", "--trace", "hello cli"]);
    assert!(plain.status.success(), "{}", String::from_utf8_lossy(&plain.stderr));
    assert_eq!(String::from_utf8_lossy(&plain.stdout).trim(), "echo: hello cli");
    assert!(String::from_utf8_lossy(&plain.stderr).contains("main -> success"));

    let streamed = client(&namespace, &["query", "--route", "chat", "--stream", "one two three"]);
    assert!(streamed.status.success(), "{}", String::from_utf8_lossy(&streamed.stderr));
    assert_eq!(String::from_utf8_lossy(&streamed.stdout).trim(), "echo: one two three");

    // An upstream 401 travels back as a typed error; its body must not carry our key either.
    let denied = client(&namespace, &["query", "--route", "denied", "--trace", "let me in"]);
    assert!(!denied.status.success());
    let denied_err = String::from_utf8_lossy(&denied.stderr);
    assert!(denied_err.contains("auth"), "{denied_err}");
    assert!(!denied_err.contains(KEY));

    // SIGTERM: the node drains and exits cleanly.
    terminate(node).await;

    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(logs.contains("TRACE"), "trace logging was not on");
    assert!(logs.contains("node stopped"));
    assert!(!logs.contains(KEY), "the API key leaked into the logs");
    assert!(!logs.contains("VERYSECRET"), "part of the API key leaked into the logs");
    let _ = std::fs::remove_file(&config_path);
    let _ = std::fs::remove_file(&log_path);
    mock.shutdown().await;
}

#[test]
fn a_bad_config_exits_64_and_names_the_field() {
    let path = temp_path("bad.toml");
    std::fs::write(
        &path,
        "[node]\nname = \"x\"\nmax_payload_bytes = 12\n[[routes]]\nname = \"r\"\nproviders = [\"nope\"]\n",
    )
    .unwrap();
    let out = Command::new(BIN).args(["serve", "--config", path.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("node.max_payload_bytes"));

    std::fs::write(&path, "[node]\nnmae = \"typo\"\n").unwrap();
    let out = Command::new(BIN).args(["serve", "--config", path.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nmae"));
    let _ = std::fs::remove_file(&path);
}

/// Runs `serve` on `config` with `unset` removed from the environment; returns the exit code and stderr.
fn serve_with(name: &str, config: &str, unset: &str) -> (Option<i32>, String) {
    let path = temp_path(name);
    std::fs::write(&path, config).unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config", path.to_str().unwrap()])
        .env_remove(unset)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_missing_secret_or_bad_nats_setting_exits_64_and_names_the_field() {
    const UNSET: &str = "SWITCHYARD_TEST_UNSET_SECRET";
    let provider = |source: &str| {
        format!(
            "[nats]\nurl = \"{nats}\"\n[[providers]]\nname = \"p\"\nkind = \"openai\"\n\
             base_url = \"http://127.0.0.1:1/v1\"\nmodel = \"m\"\n{source}\n[[routes]]\nname = \"r\"\nproviders = [\"p\"]\n",
            nats = nats_url()
        )
    };
    let route = "[[providers]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:1/v1\"\nmodel = \"m\"\n\
                 api_key = \"sk-inline\"\n[[routes]]\nname = \"r\"\nproviders = [\"p\"]\n";
    let cases = [
        ("api-key-env", provider(&format!("api_key_env = \"{UNSET}\"")), "providers[0].api_key_env"),
        ("api-key-file", provider("api_key_file = \"/nonexistent/switchyard/key\""), "providers[0].api_key_file"),
        ("nats-password", format!("[nats]\nuser = \"node\"\npassword_env = \"{UNSET}\"\n{route}"), "nats.password_env"),
        ("nats-token", format!("[nats]\ntoken_env = \"{UNSET}\"\n{route}"), "nats.token_env"),
        ("nats-nkey", format!("[nats]\nnkey_seed_file = \"/nonexistent/seed\"\n{route}"), "nats.nkey_seed_file"),
        ("nats-creds", format!("[nats]\ncreds_file = \"/nonexistent/x.creds\"\n{route}"), "nats.creds_file"),
        ("nats-tls", format!("[nats]\ntls_ca_file = \"/nonexistent/ca.pem\"\n{route}"), "nats.tls_ca_file"),
        ("redis-url", format!("[redis]\nurl_env = \"{UNSET}\"\n{route}"), "redis.url_env"),
        ("nats-half-pair", format!("[nats]\nuser = \"node\"\n{route}"), "nats.password_env"),
        ("inbox-prefix", format!("[nats]\ninbox_prefix = \"bad prefix\"\n{route}"), "nats.inbox_prefix"),
        ("nats-url", format!("[nats]\nurl = \"http://127.0.0.1:4222\"\n{route}"), "nats.url"),
    ];
    for (name, config, field) in cases {
        let (code, stderr) = serve_with(name, &config, UNSET);
        assert_eq!(code, Some(64), "{name}: {stderr}");
        assert!(stderr.contains(field), "{name}: stderr does not name {field}: {stderr}");
        if field.ends_with("_env") && name != "nats-half-pair" {
            assert!(stderr.contains(UNSET), "{name}: stderr does not name the variable: {stderr}");
        }
    }
}

/// A stand-in OTLP/HTTP collector: answers every request 200 and hands over each request's body.
async fn collector() -> (String, tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (bodies, received) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let bodies = bodies.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    // One request at a time: headers, then as many body bytes as Content-Length says.
                    let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap()))
                        .unwrap_or(0);
                    while buffer.len() < end + 4 + length {
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let _ = bodies.send(buffer[end + 4..end + 4 + length].to_vec());
                    buffer.drain(..end + 4 + length);
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    if socket.write_all(ok).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, received)
}

/// A query's spans are at debug level, so the log lines at info leave them out; the span exporter must still get
/// them. Also runs the node on the one worker thread `node.worker_threads` asks for (tokio's current-thread runtime).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_exports_a_querys_spans_over_otlp_while_logging_at_info() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let (endpoint, mut bodies) = collector().await;
    let namespace = format!("otlp-{}", std::process::id());
    let config_path = temp_path("otlp.toml");
    let config = config(&mock, &namespace).replace("name = \"cli-node\"", "name = \"cli-node\"\nworker_threads = 1");
    std::fs::write(&config_path, config).unwrap();
    let log_path = temp_path("otlp.log");
    let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "100")];
    let node = serve(&config_path, &log_path, "info", &env);

    until_client(&namespace, "the node answers a query", &["query", "--route", "chat", "span me"], |out| {
        out.status.success()
    })
    .await;
    terminate(node).await;

    // The exporter flushes on its schedule and at exit: everything it sent is in by now.
    let mut exported = Vec::new();
    while let Ok(body) = bodies.try_recv() {
        exported.extend_from_slice(&body);
    }
    let has = |name: &[u8]| exported.windows(name.len()).any(|w| w == name);
    assert!(has(b"provider_call"), "no provider_call span exported ({} bytes)", exported.len());
    assert!(has(b"switchyard"), "the service name is not in the export");
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(logs.contains("node stopped"), "{logs}");
    assert!(!logs.contains("provider_call{"), "a debug span reached the info log lines: {logs}");
    let _ = std::fs::remove_file(&config_path);
    let _ = std::fs::remove_file(&log_path);
    mock.shutdown().await;
}
