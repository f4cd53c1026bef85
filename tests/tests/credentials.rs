//! Every way a node authenticates, end to end: to NATS with a token, a user and password, an nkey, a creds file
//! (operator mode), server TLS with a private CA and mutual TLS; to Redis as an ACL user over `rediss://` with a
//! client certificate.
//!
//! Each test starts its own server asking for the credential (configurations and material from
//! `switchyard_testkit::{secured, pki, nats_jwt}`), then a real node from a TOML configuration the way
//! `switchyard serve` does (secrets read first, then `switchyard_runtime::nats::connect`), and a client with the
//! same `[nats]` section, and shows a query answered by the mock provider. The negative case of each kind is a
//! wrong secret refused with a typed error. No secret, right or wrong, may appear in an error (its whole source
//! chain, `Display` and `Debug`) or in anything logged at debug level while the tests run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;

use switchyard_bus::{Bus, BusError, Message, NatsBus};
use switchyard_core::BreakerState;
use switchyard_e2e::{PRIMARY_MODEL, SECONDARY_MODEL, ask, reply};
use switchyard_mock::{MockConfig, MockServer};
use switchyard_protocol::client::{QueryOutcome, QueryReply};
use switchyard_protocol::subjects::Subjects;
use switchyard_runtime::nats::ConnectError;
use switchyard_runtime::{Node, NodeConfig};
use switchyard_state::{BreakerStore, RedisOptions, RedisStore, StateError};
use switchyard_testkit::nats_jwt::JwtTrust;
use switchyard_testkit::pki::TestPki;
use switchyard_testkit::secured::{NatsServerAuth, NatsServerTls, SecuredNats, SecuredRedis};
use switchyard_testkit::{TempDir, eventually};

/// Everything logged (debug and up) by every test of this binary.
fn logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer: &'static Mutex<Vec<u8>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
            .with_writer(move || LogWriter(buffer))
            .with_ansi(false)
            .try_init();
        buffer
    })
}

struct LogWriter(&'static Mutex<Vec<u8>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Asserts that none of `secrets` was logged so far (and that logging works at all).
fn never_logged(secrets: &[&str]) {
    let logged = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
    assert!(!logged.is_empty(), "the test subscriber captured nothing");
    for secret in secrets {
        assert!(!logged.contains(secret), "a secret was logged: {secret}");
    }
}

/// An error with its whole source chain, shown both ways.
fn shown(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = format!("{error} | {error:?}");
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(" | {cause} | {cause:?}"));
        source = cause.source();
    }
    text
}

fn assert_secret_free(error: &(dyn std::error::Error + 'static), secrets: &[&str]) {
    let text = shown(error);
    for secret in secrets {
        assert!(!text.contains(secret), "the error shows a secret: {text}");
    }
}

/// A node hosting `primary` (OpenAI wire) and `secondary` (Anthropic wire) and routing `chat` to them in that
/// order, with `sections` (its `[nats]`, `[redis]`) appended.
fn node_toml(mock: &MockServer, sections: &str) -> String {
    format!(
        r#"
        [node]
        name = "secured-node"
        namespace = "{namespace}"
        drain_timeout_ms = 2000
        [[providers]]
        name = "primary"
        kind = "openai"
        base_url = "{openai}"
        model = "{PRIMARY_MODEL}"
        api_key = "sk-test"
        [[providers]]
        name = "secondary"
        kind = "anthropic"
        base_url = "{anthropic}"
        model = "{SECONDARY_MODEL}"
        api_key = "sk-test"
        [[routes]]
        name = "chat"
        providers = ["primary", "secondary"]
        retry = {{ max_attempts = 1 }}
        [cluster]
        poll_interval_ms = 200
        {sections}
        "#,
        namespace = switchyard_e2e::unique_namespace(),
        openai = mock.openai_base_url(),
        anthropic = mock.base_url(),
    )
}

/// The configuration, its secrets read as `switchyard serve` reads them.
fn load(toml: &str) -> NodeConfig {
    let config = NodeConfig::from_toml(toml).unwrap();
    config.resolve_secrets().unwrap();
    config
}

/// A node started from `toml` and a client connected with the same `[nats]` section.
struct Served {
    node: Node,
    client: NatsBus,
    subjects: Subjects,
}

impl Served {
    async fn start(toml: &str) -> Served {
        let config = load(toml);
        let bus = switchyard_runtime::nats::connect(&config.nats, "node").await.unwrap();
        let shared = match &config.redis {
            Some(redis) => switchyard_runtime::state::connect(redis).await.unwrap(),
            None => switchyard_runtime::SharedState::default(),
        };
        let node = Node::start(&config, Arc::new(bus), shared).await.unwrap();
        let client = switchyard_runtime::nats::connect(&config.nats, "client").await.unwrap();
        Served { node, client, subjects: Subjects::new(&config.node.namespace) }
    }

    async fn ask(&self, text: &str) -> QueryReply {
        let payload = Bytes::from(serde_json::to_vec(&ask(text)).unwrap());
        let message = Message::new(self.subjects.query("chat"), payload);
        let answer = self.client.request(message, Duration::from_secs(10)).await.unwrap();
        reply(serde_json::from_slice::<QueryOutcome>(&answer.payload).unwrap())
    }

    async fn shutdown(self) {
        self.node.shutdown().await;
    }
}

/// Starts a node with `good` (a `[nats]` section), shows it answering, then connects with `bad` and returns the
/// error, checked free of `secrets`.
async fn answers_then_refuses(good: &str, bad: &str, secrets: &[&str]) -> BusError {
    logs();
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let served = Served::start(&node_toml(&mock, good)).await;
    let answer = served.ask("hello over a secured bus").await;
    assert_eq!((answer.provider.as_str(), answer.content.as_str()), ("primary", "echo: hello over a secured bus"));
    served.shutdown().await;
    mock.shutdown().await;

    let config = load(&node_toml_without_mock(bad));
    let error = switchyard_runtime::nats::connect(&config.nats, "node").await.expect_err("a wrong secret is refused");
    assert_secret_free(&error, secrets);
    never_logged(secrets);
    match error {
        ConnectError::Bus(error) => error,
        other => panic!("expected a bus error, got {other:?}"),
    }
}

/// A configuration whose providers are never called (only its `[nats]` section matters).
fn node_toml_without_mock(sections: &str) -> String {
    format!("[node]\nroles = [\"providers\"]\n{sections}\n")
}

fn path(file: &Path) -> String {
    file.display().to_string().replace('\\', "/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_from_a_file() {
    let (right, wrong) = ("tok-RIGHT-4f1d9c", "tok-WRONG-8a7e21");
    let nats = SecuredNats::start(NatsServerAuth::Token(right), NatsServerTls::Off).unwrap();
    let dir = TempDir::new("token").unwrap();
    let good = dir.write("token", &format!("{right}\n")).unwrap();
    let bad = dir.write("wrong", wrong).unwrap();
    let section = |file: &Path| format!("[nats]\nurl = \"{}\"\ntoken_file = \"{}\"", nats.url("nats"), path(file));
    let error = answers_then_refuses(&section(&good), &section(&bad), &[right, wrong]).await;
    assert!(matches!(error, BusError::Unauthorized { .. }), "{error:?}");
    assert!(error.to_string().contains("refused the credentials"), "{error}");

    // No token at all is refused the same way.
    let config = load(&node_toml_without_mock(&format!("[nats]\nurl = \"{}\"", nats.url("nats"))));
    let error = switchyard_runtime::nats::connect(&config.nats, "node").await.expect_err("a token is required");
    assert!(matches!(error, ConnectError::Bus(BusError::Unauthorized { .. })), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_password_from_a_file() {
    let (right, wrong) = ("pw-RIGHT-93bc0a", "pw-WRONG-11f0e4");
    let nats = SecuredNats::start(NatsServerAuth::User { user: "node", password: right }, NatsServerTls::Off).unwrap();
    let dir = TempDir::new("password").unwrap();
    let good = dir.write("password", right).unwrap();
    let bad = dir.write("wrong", wrong).unwrap();
    let section = |file: &Path| {
        format!("[nats]\nurl = \"{}\"\nuser = \"node\"\npassword_file = \"{}\"", nats.url("nats"), path(file))
    };
    let error = answers_then_refuses(&section(&good), &section(&bad), &[right, wrong]).await;
    assert!(matches!(error, BusError::Unauthorized { .. }), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nkey_seed_file() {
    let (user, stranger) = (nkeys::KeyPair::new_user(), nkeys::KeyPair::new_user());
    let (right, wrong) = (user.seed().unwrap(), stranger.seed().unwrap());
    let public = user.public_key();
    let nats = SecuredNats::start(NatsServerAuth::NKey(&public), NatsServerTls::Off).unwrap();
    let dir = TempDir::new("nkey").unwrap();
    let good = dir.write("user.nk", &right).unwrap();
    let bad = dir.write("stranger.nk", &wrong).unwrap();
    let section = |file: &Path| format!("[nats]\nurl = \"{}\"\nnkey_seed_file = \"{}\"", nats.url("nats"), path(file));
    let error = answers_then_refuses(&section(&good), &section(&bad), &[&right, &wrong]).await;
    assert!(matches!(error, BusError::Unauthorized { .. }), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creds_file_in_operator_mode() {
    let trust = JwtTrust::new("SWITCHYARD").unwrap();
    let (node, stranger) = (trust.user("node").unwrap(), trust.user("stranger").unwrap());
    let nats = SecuredNats::start(NatsServerAuth::Jwt(&trust), NatsServerTls::Off).unwrap();
    let dir = TempDir::new("creds").unwrap();
    let good = dir.write("node.creds", &node.file_text()).unwrap();
    // The node's (public) JWT with someone else's seed: the nonce signature does not match the JWT's key.
    let forged = switchyard_testkit::nats_jwt::UserCreds { jwt: node.jwt.clone(), seed: stranger.seed.clone() };
    let bad = dir.write("forged.creds", &forged.file_text()).unwrap();
    let section = |file: &Path| format!("[nats]\nurl = \"{}\"\ncreds_file = \"{}\"", nats.url("nats"), path(file));
    let error = answers_then_refuses(&section(&good), &section(&bad), &[&node.seed, &stranger.seed]).await;
    assert!(matches!(error, BusError::Unauthorized { .. }), "{error:?}");

    // A user of an account the operator never signed is refused too.
    let elsewhere = JwtTrust::new("ELSEWHERE").unwrap().user("node").unwrap();
    let foreign = dir.write("foreign.creds", &elsewhere.file_text()).unwrap();
    let config = load(&node_toml_without_mock(&section(&foreign)));
    let error = switchyard_runtime::nats::connect(&config.nats, "node").await.expect_err("unknown account");
    assert!(matches!(error, ConnectError::Bus(BusError::Unauthorized { .. })), "{error:?}");
    assert_secret_free(&error, &[&elsewhere.seed]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca() {
    let pki = TestPki::generate().unwrap();
    let nats = SecuredNats::start(NatsServerAuth::None, NatsServerTls::Server(&pki)).unwrap();
    let url = nats.url("tls");
    let good = format!("[nats]\nurl = \"{url}\"\ntls_required = true\ntls_ca_file = \"{}\"", path(&pki.ca()));
    // Without the private CA the server's certificate is checked against the system's roots, and fails.
    let bad = format!("[nats]\nurl = \"{url}\"\ntls_required = true");
    let error = answers_then_refuses(&good, &bad, &[]).await;
    assert!(matches!(error, BusError::Tls { .. }), "{error:?}");
    assert!(error.to_string().contains("TLS"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_a_client_certificate() {
    let pki = TestPki::generate().unwrap();
    let nats = SecuredNats::start(NatsServerAuth::None, NatsServerTls::Mutual(&pki)).unwrap();
    let section = |cert: &Path, key: &Path| {
        format!(
            "[nats]\nurl = \"{}\"\ntls_required = true\ntls_ca_file = \"{}\"\ntls_cert_file = \"{}\"\n\
             tls_key_file = \"{}\"",
            nats.url("tls"),
            path(&pki.ca()),
            path(cert),
            path(key)
        )
    };
    let good = section(&pki.client_cert(), &pki.client_key());
    // A certificate the server's CA did not issue.
    let bad = section(&pki.stranger_cert(), &pki.stranger_key());
    let key = std::fs::read_to_string(pki.stranger_key()).unwrap();
    let key_body = key.lines().nth(1).unwrap().to_owned();
    let error = answers_then_refuses(&good, &bad, &[&key_body]).await;
    assert!(matches!(error, BusError::Tls { .. }), "{error:?}");

    // No certificate at all.
    let config = load(&node_toml_without_mock(&format!(
        "[nats]\nurl = \"{}\"\ntls_required = true\ntls_ca_file = \"{}\"",
        nats.url("tls"),
        path(&pki.ca())
    )));
    let error = switchyard_runtime::nats::connect(&config.nats, "node").await.expect_err("a certificate is required");
    assert!(matches!(error, ConnectError::Bus(BusError::Tls { .. })), "{error:?}");
}

/// The store a test uses to steer the node's cluster breakers: the same server, user and TLS files.
fn tls_options(pki: &TestPki) -> RedisOptions {
    RedisOptions {
        tls_ca_file: Some(pki.ca()),
        tls_client_cert: Some(pki.client_cert()),
        tls_client_key: Some(pki.client_key()),
        connect_timeout: Duration::from_secs(2),
        ..RedisOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_acl_user_over_rediss_with_a_client_certificate() {
    logs();
    let (right, wrong) = ("redis-RIGHT-c0ffee", "redis-WRONG-decaf0");
    let pki = TestPki::generate().unwrap();
    let redis = SecuredRedis::start(&pki, true, "switchyard", right).unwrap();
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let redis_section = |password: &str| {
        format!(
            "[redis]\nurl = \"{}\"\ntls_ca_file = \"{}\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n\
             call_timeout_ms = 2000\n[nats]\nurl = \"{}\"",
            redis.url("switchyard", password),
            path(&pki.ca()),
            path(&pki.client_cert()),
            path(&pki.client_key()),
            switchyard_testkit::nats_url(),
        )
    };
    // The calls get the 2 s bound of the test's own store: this test is about credentials, and on a busy CI machine
    // a TLS round trip can outlast the default 50 ms, which would rightly mark the node degraded.
    let served = Served::start(&node_toml(&mock, &redis_section(right))).await;
    assert_eq!(served.ask("before the trip").await.provider, "primary");

    // The operator trips `primary` in Redis (over TLS, as the same ACL user): the node reads the cluster's breaker
    // back and routes to `secondary`, without ever being degraded.
    let store = RedisStore::connect(&redis.url("switchyard", right), tls_options(&pki)).await.unwrap();
    store.force_open("primary").await.unwrap();
    eventually("the node sees the cluster breaker open", Duration::from_secs(10), || async {
        let health = served.node.health().await;
        assert!(!health.degraded, "the node lost Redis");
        let primary = health.providers.iter().find(|p| p.name == "primary")?;
        (primary.cluster_breaker != Some(BreakerState::Closed)).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(served.ask("after the trip").await.provider, "secondary");
    store.reset("primary").await.unwrap();
    eventually("the node sees the reset", Duration::from_secs(10), || async {
        let health = served.node.health().await;
        (health.providers.iter().find(|p| p.name == "primary")?.cluster_breaker == Some(BreakerState::Closed))
            .then_some(())
    })
    .await
    .unwrap();
    assert_eq!(served.ask("after the reset").await.provider, "primary");
    assert!(store.get("primary").await.unwrap().epoch >= 2, "trip and reset are two transitions");
    assert!(!served.node.health().await.degraded, "the node reached Redis all along");
    served.shutdown().await;

    // A wrong password is a typed refusal that names the user, never the password.
    let error = RedisStore::connect(&redis.url("switchyard", wrong), tls_options(&pki)).await.expect_err("wrong");
    assert!(matches!(&error, StateError::Unauthorized { operation: "connect", .. }), "{error:?}");
    assert!(error.to_string().contains("switchyard:***@"), "{error}");
    assert_secret_free(&error, &[right, wrong]);

    // A node configured with it still starts and serves on its local breakers, reporting itself degraded.
    let degraded = Served::start(&node_toml(&mock, &redis_section(wrong))).await;
    assert_eq!(degraded.ask("with Redis refusing").await.provider, "primary");
    eventually("the node reports Redis degraded", Duration::from_secs(10), || async {
        degraded.node.health().await.degraded.then_some(())
    })
    .await
    .unwrap();
    degraded.shutdown().await;

    // Without a client certificate the server does not let the client in at all.
    let no_cert = RedisOptions { tls_client_cert: None, tls_client_key: None, ..tls_options(&pki) };
    let error = RedisStore::connect(&redis.url("switchyard", right), no_cert).await.expect_err("mutual TLS");
    assert_secret_free(&error, &[right]);
    never_logged(&[right, wrong]);
    mock.shutdown().await;
}
