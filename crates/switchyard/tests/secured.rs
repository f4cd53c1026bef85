//! The binary under the shipped NATS permissions (`deploy/nats-accounts.conf`): `serve` as the `node` user with its
//! password from the environment, `query` as `client` and `admin` as `admin`, each with its own inbox prefix.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use switchyard_mock::{MockConfig, MockServer};
use switchyard_testkit::{ServerProcess, eventually, workspace_root};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

fn cli(url: &str, prefix: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut command = Command::new(BIN);
    command.args(args).env("SWITCHYARD_NATS_URL", url).env("RUST_LOG", "error").env_remove("SWITCHYARD_NAMESPACE");
    match prefix {
        Some(prefix) => command.env("SWITCHYARD_NATS_INBOX_PREFIX", prefix),
        None => command.env_remove("SWITCHYARD_NATS_INBOX_PREFIX"),
    };
    command.output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_query_and_admin_work_with_the_shipped_users() {
    let env = [("NODE_PASSWORD", "node-pw"), ("ADMIN_PASSWORD", "admin-pw"), ("CLIENT_PASSWORD", "client-pw")];
    let nats = ServerProcess::nats_with_config(&workspace_root().join("deploy/nats-accounts.conf"), &env).unwrap();
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let config = format!(
        "[node]\nname = \"secured-node\"\n[nats]\nurl = \"nats://127.0.0.1:{port}\"\nuser = \"node\"\n\
         password_env = \"SWITCHYARD_TEST_NODE_PASSWORD\"\n[[providers]]\nname = \"main\"\nkind = \"openai\"\n\
         base_url = \"{base}\"\nmodel = \"m-main\"\napi_key = \"sk-test\"\n[[routes]]\nname = \"chat\"\nproviders = [\"main\"]\n",
        port = nats.port,
        base = mock.openai_base_url(),
    );
    let path = std::env::temp_dir().join(format!("switchyard-{}-secured.toml", std::process::id()));
    std::fs::write(&path, config).unwrap();
    let mut node = Command::new(BIN)
        .args(["serve", "--config", path.to_str().unwrap()])
        .env("SWITCHYARD_TEST_NODE_PASSWORD", "node-pw")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let admin_url = format!("nats://admin:admin-pw@127.0.0.1:{}", nats.port);
    let client_url = format!("nats://client:client-pw@127.0.0.1:{}", nats.port);
    let url = admin_url.clone();
    eventually("the node answers the admin user", Duration::from_secs(20), || {
        let url = url.clone();
        async move {
            let out = tokio::task::spawn_blocking(move || {
                cli(&url, Some("_INBOX_admin"), &["admin", "health", "--wait-ms", "300"])
            })
            .await
            .ok()?;
            (out.status.success() && String::from_utf8_lossy(&out.stdout).contains("secured-node")).then_some(())
        }
    })
    .await
    .unwrap();

    let plain = cli(&client_url, Some("_INBOX_client"), &["query", "hello secured"]);
    assert!(plain.status.success(), "{}", String::from_utf8_lossy(&plain.stderr));
    assert_eq!(String::from_utf8_lossy(&plain.stdout).trim(), "echo: hello secured");
    let streamed = cli(&client_url, Some("_INBOX_client"), &["query", "--stream", "one two three"]);
    assert!(streamed.status.success(), "{}", String::from_utf8_lossy(&streamed.stderr));
    assert_eq!(String::from_utf8_lossy(&streamed.stdout).trim(), "echo: one two three");

    // Without its prefix the client may not read its replies: no answer.
    let refused = cli(&client_url, None, &["query", "--deadline-ms", "300", "no inbox"]);
    assert!(!refused.status.success(), "a client read replies outside its inbox prefix");
    // A client may not command the cluster.
    let crash = cli(&client_url, Some("_INBOX_client"), &["admin", "crash-provider", "main"]);
    assert!(!crash.status.success(), "a client reached the admin topic");

    let term = Command::new("kill").args(["-TERM", &node.id().to_string()]).status().unwrap();
    assert!(term.success());
    let status = tokio::task::spawn_blocking(move || node.wait()).await.unwrap().unwrap();
    assert!(status.success(), "node exited with {status}");
    let _ = std::fs::remove_file(&path);
    mock.shutdown().await;
}
