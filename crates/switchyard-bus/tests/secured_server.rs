//! Authentication and TLS against private `nats-server`s this test starts and stops.
//!
//! The shared NATS has neither auth nor TLS, so each test here runs its own server on a free
//! port with the option under test: tokens, user/password, server TLS with a private CA, and
//! mutual TLS. They need `nats-server` (PATH or /usr/sbin); a missing one fails the test with a
//! message rather than skipping it. Certificates come from the test kit's `TestPki`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests panic on failure")]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use switchyard_testkit::pki::TestPki;

use switchyard_bus::conformance::{recv, unique_prefix};
use switchyard_bus::{Bus, BusError, Message, NatsAuth, NatsBus, NatsOptions};

/// A `nats-server` owned by one test, killed when dropped.
struct PrivateNats {
    child: Child,
    port: u16,
}

impl PrivateNats {
    fn start(args: &[&str]) -> PrivateNats {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let binary = if Path::new("/usr/sbin/nats-server").exists() { "/usr/sbin/nats-server" } else { "nats-server" };
        let child = Command::new(binary)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {binary}: {error}"));
        let server = PrivateNats { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen on {port} within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn url(&self, scheme: &str) -> String {
        format!("{scheme}://127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Publishes through `bus` and reads the message back, proving the connection works.
async fn round_trip(bus: &NatsBus) {
    let subject = format!("{}.ping", unique_prefix("secured"));
    let mut subscription = bus.subscribe(&subject).await.unwrap();
    bus.publish(Message::new(subject, "pong")).await.unwrap();
    assert_eq!(recv(&mut subscription).await.payload, "pong");
}

fn arg(path: PathBuf) -> String {
    path.display().to_string()
}

async fn connect_err(options: NatsOptions) -> BusError {
    match NatsBus::connect(options).await {
        Ok(_) => panic!("connecting should have failed"),
        Err(error) => error,
    }
}

#[tokio::test]
async fn token_auth() {
    let server = PrivateNats::start(&["--auth", "right-token"]);
    let good = NatsOptions { auth: NatsAuth::Token("right-token".into()), ..NatsOptions::new(server.url("nats")) };
    round_trip(&NatsBus::connect(good).await.unwrap()).await;

    let bad = NatsOptions { auth: NatsAuth::Token("wrong-SECRET".into()), ..NatsOptions::new(server.url("nats")) };
    let error = connect_err(bad).await;
    assert!(matches!(error, BusError::Unauthorized { .. }), "{error:?}");
    assert!(!format!("{error} {error:?}").contains("SECRET"), "{error:?}");

    let error = connect_err(NatsOptions::new(server.url("nats"))).await;
    assert!(matches!(error, BusError::Unauthorized { .. }), "{error:?}");
}

#[tokio::test]
async fn user_password_auth() {
    let server = PrivateNats::start(&["--user", "alice", "--pass", "right-password"]);
    let auth = NatsAuth::UserPassword { user: "alice".into(), password: "right-password".into() };
    let good = NatsOptions { auth, ..NatsOptions::new(server.url("nats")) };
    round_trip(&NatsBus::connect(good).await.unwrap()).await;

    let auth = NatsAuth::UserPassword { user: "alice".into(), password: "wrong-SECRET".into() };
    let error = connect_err(NatsOptions { auth, ..NatsOptions::new(server.url("nats")) }).await;
    assert!(matches!(error, BusError::Unauthorized { .. }), "{error:?}");
    assert!(!format!("{error} {error:?}").contains("SECRET"), "{error:?}");
}

#[tokio::test]
async fn tls_with_a_private_ca() {
    let pki = TestPki::generate().unwrap();
    let server =
        PrivateNats::start(&["--tls", "--tlscert", &arg(pki.server_cert()), "--tlskey", &arg(pki.server_key())]);

    let trusted =
        NatsOptions { tls_required: true, tls_ca_file: Some(pki.ca()), ..NatsOptions::new(server.url("tls")) };
    round_trip(&NatsBus::connect(trusted).await.unwrap()).await;

    // Without the private CA the server's certificate is not trusted.
    let untrusted = NatsOptions { tls_required: true, ..NatsOptions::new(server.url("tls")) };
    let error = connect_err(untrusted).await;
    assert!(matches!(error, BusError::Tls { .. }), "{error:?}");
}

#[tokio::test]
async fn mutual_tls() {
    let pki = TestPki::generate().unwrap();
    let server = PrivateNats::start(&[
        "--tlsverify",
        "--tlscert",
        &arg(pki.server_cert()),
        "--tlskey",
        &arg(pki.server_key()),
        "--tlscacert",
        &arg(pki.ca()),
    ]);

    let with_certificate = NatsOptions {
        tls_required: true,
        tls_ca_file: Some(pki.ca()),
        tls_client_cert: Some(pki.client_cert()),
        tls_client_key: Some(pki.client_key()),
        ..NatsOptions::new(server.url("tls"))
    };
    round_trip(&NatsBus::connect(with_certificate).await.unwrap()).await;

    let without_certificate =
        NatsOptions { tls_required: true, tls_ca_file: Some(pki.ca()), ..NatsOptions::new(server.url("tls")) };
    let error = connect_err(without_certificate).await;
    assert!(matches!(error, BusError::Tls { .. }), "{error:?}");
}
