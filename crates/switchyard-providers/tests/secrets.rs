//! An API key never reaches an error, a `Debug` or a log line, even when the upstream echoes it back.
//!
//! This is its own test binary with a single test, so the global tracing subscriber it installs sees every log
//! line of every task, and no other test races it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use switchyard_providers::{ProviderKind, ProviderSettings};

use common::canned::{Canned, json, sse};
use common::{collect, provider, request, settings};

/// A key with no recognisable prefix: only exact-key redaction can catch it.
const PLAIN_KEY: &str = "tgp_v1_PlainSecretValue0123456789";
const OPENAI_KEY: &str = "sk-proj-EchoedSecretValue0123456789";

/// Collects everything a tracing subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn assert_no_key(text: &str) {
    for secret in [PLAIN_KEY, OPENAI_KEY, "PlainSecretValue", "EchoedSecretValue"] {
        assert!(!text.contains(secret), "{secret} leaked in {text}");
    }
}

#[tokio::test]
async fn keys_stay_out_of_errors_debug_and_logs() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let echo = |key: &str| {
        format!(
            r#"{{"error":{{"message":"Incorrect API key provided: {key}. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}}}"#
        )
    };
    let stream_echo =
        format!("data: {{\"error\":{{\"message\":\"bad key {PLAIN_KEY}\",\"type\":\"server_error\"}}}}\n\n");
    let server = Canned::start(vec![
        json(401, &echo(PLAIN_KEY)),
        json(401, &echo(OPENAI_KEY)),
        sse(&stream_echo),
        json(200, &echo(PLAIN_KEY)),
    ])
    .await;

    let mut texts = Vec::new();
    let plain = settings(ProviderKind::OpenAi, &format!("{}/v1", server.base), Some(PLAIN_KEY));
    let echoed = ProviderSettings {
        name: "openai-echo".to_owned(),
        ..settings(ProviderKind::OpenAi, &format!("{}/v1", server.base), Some(OPENAI_KEY))
    };
    texts.push(format!("{plain:?} {echoed:?}"));

    let plain = provider(plain);
    let echoed = provider(echoed);
    let err = plain.complete(&request()).await.unwrap_err();
    assert!(err.message.contains("Incorrect API key provided: [redacted]"), "{err}");
    texts.push(format!("{err} {err:?}"));
    let err = echoed.complete(&request()).await.unwrap_err();
    assert!(err.message.contains("Incorrect API key provided: [redacted]"), "{err}");
    texts.push(format!("{err} {err:?}"));
    let (_, done) = collect(plain.stream(&request()).await.unwrap()).await;
    let err = done.unwrap_err();
    assert!(err.message.contains("bad key [redacted]"), "{err}");
    texts.push(format!("{err} {err:?}"));
    let err = plain.complete(&request()).await.unwrap_err();
    texts.push(format!("{err} {err:?}"));

    let anthropic = settings(ProviderKind::Anthropic, &server.base, Some(PLAIN_KEY));
    texts.push(format!("{anthropic:?}"));

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("test-provider") && logs.contains("upstream call failed"), "nothing captured: {logs}");
    eprintln!("{logs}");
    texts.push(logs);
    for text in &texts {
        assert_no_key(text);
    }
}
