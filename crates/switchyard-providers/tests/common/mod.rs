//! Shared by the integration tests: the canned server and helpers to build providers and read streams.

#![allow(dead_code)]

pub mod canned;

use std::time::Duration;

use futures::StreamExt;
use secrecy::SecretString;
use switchyard_protocol::{ChatMessage, ChatRequest, Completion, Role};
use switchyard_providers::{
    CompletionStream, LlmProvider, Price, ProviderError, ProviderKind, ProviderSettings, StreamEvent, build,
    http_client,
};

/// Settings pointing at a canned server, with a short timeout so silent servers fail fast.
pub fn settings(kind: ProviderKind, base_url: &str, key: Option<&str>) -> ProviderSettings {
    ProviderSettings {
        api_key: key.map(SecretString::from),
        price: Price { input_per_mtok: 2.0, output_per_mtok: 10.0 },
        timeout: Duration::from_millis(500),
        stream_timeout: Some(Duration::from_millis(500)),
        ..ProviderSettings::new("test-provider", kind, base_url, "configured-model")
    }
}

pub fn provider(settings: ProviderSettings) -> std::sync::Arc<dyn LlmProvider> {
    build(settings, http_client().unwrap())
}

pub fn request() -> ChatRequest {
    ChatRequest {
        messages: vec![
            ChatMessage { role: Role::System, content: "Be brief.".to_owned() },
            ChatMessage { role: Role::System, content: "Answer in English.".to_owned() },
            ChatMessage::user("Say hello"),
        ],
        max_tokens: Some(64),
        temperature: Some(0.5),
        logprobs: false,
        stop: vec!["\n\n".to_owned()],
        top_p: Some(0.5),
    }
}

/// Reads a stream to its end: the deltas, and the final item (a completion or an error).
/// Fails if anything follows the final item.
pub async fn collect(mut stream: CompletionStream) -> (Vec<String>, Result<Completion, ProviderError>) {
    let mut deltas = Vec::new();
    let last = loop {
        match stream.next().await {
            Some(Ok(StreamEvent::Delta(text))) => {
                assert!(!text.is_empty(), "empty delta");
                deltas.push(text);
            }
            Some(Ok(StreamEvent::Done(completion))) => break Ok(completion),
            Some(Err(err)) => break Err(err),
            None => panic!("stream ended without a final item"),
        }
    };
    assert!(stream.next().await.is_none(), "items after the final one");
    (deltas, last)
}

/// Asserts `cost` is what the test price makes of the token counts.
pub fn assert_cost(completion: &Completion) {
    let expected = (completion.usage.input_tokens as f64 * 2.0 + completion.usage.output_tokens as f64 * 10.0) / 1e6;
    assert!((completion.cost_usd - expected).abs() < 1e-15, "{} != {expected}", completion.cost_usd);
    assert!(completion.cost_usd > 0.0);
}
