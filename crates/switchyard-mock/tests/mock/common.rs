//! Helpers shared by the mock's integration tests: a started server, a client, SSE collection, and the
//! location of the shared RouteLLM data.

use std::path::PathBuf;
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::Value;
use switchyard_mock::{Behavior, MockConfig, MockServer};

pub async fn start() -> MockServer {
    start_with(MockConfig::default()).await
}

pub async fn start_with(config: MockConfig) -> MockServer {
    MockServer::start(config).await.unwrap()
}

pub async fn start_scripted(model: &str, behavior: Behavior) -> MockServer {
    let server = start().await;
    server.set_behavior(model, behavior);
    server
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

pub fn openai_body(model: &str, prompt: &str) -> Value {
    serde_json::json!({
        "model": model,
        "messages": [
            {"role": "system", "content": "you are terse"},
            {"role": "user", "content": prompt}
        ],
        "temperature": 0.0
    })
}

pub fn anthropic_body(model: &str, prompt: &str) -> Value {
    serde_json::json!({
        "model": model,
        "max_tokens": 100,
        "system": "you are terse",
        "messages": [{"role": "user", "content": prompt}]
    })
}

pub async fn post_openai(server: &MockServer, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}/chat/completions", server.openai_base_url()))
        .bearer_auth("sk-test")
        .json(body)
        .send()
        .await
        .unwrap()
}

pub async fn post_anthropic(server: &MockServer, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}/v1/messages", server.base_url()))
        .header("x-api-key", "sk-ant-test")
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .unwrap()
}

/// One parsed server-sent event: its name (empty when unnamed) and data.
#[derive(Debug)]
pub struct Sse {
    pub event: String,
    pub data: String,
}

impl Sse {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap()
    }
}

/// Reads a whole event stream the way the provider clients do.
pub async fn collect_sse(response: reqwest::Response) -> Vec<Sse> {
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(content_type.starts_with("text/event-stream"), "{content_type}");
    let mut events = Vec::new();
    let mut stream = response.bytes_stream().eventsource();
    while let Some(event) = stream.next().await {
        let event = event.unwrap();
        let name = if event.event == "message" { String::new() } else { event.event };
        events.push(Sse { event: name, data: event.data });
    }
    events
}

/// The shared RouteLLM data folder, or `None` (with a note) when this machine does not have it.
pub fn data_dir() -> Option<PathBuf> {
    let candidate = std::env::var_os("SWITCHYARD_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
    if candidate.join("routellm").is_dir() {
        Some(candidate)
    } else {
        eprintln!("skipping: RouteLLM data not found at {} (set SWITCHYARD_DATA)", candidate.display());
        None
    }
}

/// Waits until `condition` holds, failing the test after five seconds.
pub async fn eventually(mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(std::time::Instant::now() < deadline, "condition not met in time");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
