//! Real LLM provider clients that classify every failure once.
//!
//! Switchyard talks to upstream models through [`LlmProvider`]: OpenAI's chat completions API (and the servers that
//! copy it: vLLM, llama.cpp server, Ollama, Together) and Anthropic's Messages API, each non-streaming and streaming
//! (SSE). A call returns a [`Completion`] with usage, finish reason, cost from the configured [`Price`] and, for
//! OpenAI-compatible servers, token log-probs; or a [`ProviderError`] whose [`FailureClass`] is the only thing the
//! rest of the system looks at. Classification happens exactly once, in [`classify`] (error responses and stream
//! error events) and in the transport layer (timeouts, resets: always retryable).
//!
//! API keys stay in [`SecretString`]s; they go out only in sensitive headers and are redacted from every error
//! message, even when a provider echoes them back. Nothing here logs headers.
//!
//! Modules: `classify` (the failure rules), `http` (shared client and request path), `sse` (stream plumbing),
//! `openai` and `anthropic` (wire formats), `secret` (key loading and redaction), `error` (error types).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use secrecy::SecretString;

mod anthropic;
mod classify;
mod error;
mod http;
mod openai;
mod secret;
mod sse;

pub use self::http::{CONNECT_TIMEOUT, HttpClient, POOL_IDLE_TIMEOUT, http_client};
pub use classify::classify;
pub use error::{HttpClientError, ProviderError};
pub use secret::{ApiKeySource, KeyError, REDACTED, load_api_key};
pub use switchyard_core::{FailureClass, Price};
pub use switchyard_protocol::{ChatRequest, Completion};

/// The default `anthropic-version` header.
pub const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";
/// The `max_tokens` sent to Anthropic when a query sets none (Anthropic requires one).
pub const DEFAULT_MAX_TOKENS: u32 = 1024;
/// The default timeout of a whole non-streaming call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// One upstream model behind one API endpoint.
///
/// Implementations are cheap to share (`Arc<dyn LlmProvider>`) and safe to call concurrently; each call honours the
/// provider's configured timeout. Dropping a returned future or stream cancels the call.
#[async_trait::async_trait]
pub trait LlmProvider: Send + Sync + 'static {
    /// The configured provider name, such as `"openai-main"`; used in errors, logs and traces.
    fn name(&self) -> &str;

    /// The upstream model id sent in requests, such as `"gpt-4o-mini"`.
    fn model(&self) -> &str;

    /// Asks for a whole answer at once.
    async fn complete(&self, request: &ChatRequest) -> Result<Completion, ProviderError>;

    /// Asks for a streamed answer. The outer error covers everything up to the response headers; errors after that
    /// (an error event, a cut connection, a stream without its terminal event) arrive as the stream's last item.
    async fn stream(&self, request: &ChatRequest) -> Result<CompletionStream, ProviderError>;
}

/// A streamed answer: [`StreamEvent::Delta`]s, then exactly one [`StreamEvent::Done`] or one error, then nothing.
pub type CompletionStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, ProviderError>> + Send>>;

/// One item of a [`CompletionStream`].
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// The next piece of the answer's text (never empty).
    Delta(String),
    /// The last item: the full content (all deltas joined), usage, finish reason, cost and log-probs.
    Done(Completion),
}

/// Which wire format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI chat completions, and compatible servers (vLLM, llama.cpp server, Ollama, Together).
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
}

impl ProviderKind {
    /// A stable lowercase name: `"openai"` or `"anthropic"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Anthropic => "anthropic",
        }
    }
}

/// Everything a provider client needs. `Debug` never shows the key.
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    /// The configured provider name, such as `"openai-main"`.
    pub name: String,
    /// The wire format.
    pub kind: ProviderKind,
    /// OpenAI: the API root including `/v1` (`https://api.openai.com/v1`, `http://localhost:8000/v1`); requests go
    /// to `{base_url}/chat/completions`. Anthropic: `https://api.anthropic.com`; requests go to
    /// `{base_url}/v1/messages`. A trailing slash is ignored.
    pub base_url: String,
    /// The upstream model id sent in requests.
    pub model: String,
    /// The API key, if the endpoint needs one (local servers often do not).
    pub api_key: Option<SecretString>,
    /// Prices per million tokens, for [`Completion::cost_usd`].
    pub price: Price,
    /// The limit on a whole non-streaming call: connecting, waiting, and reading the body.
    pub timeout: Duration,
    /// The limit on a whole stream; `None` (the default): a long answer is not a failure, and the caller bounds
    /// the first token and the gaps between chunks instead.
    pub stream_timeout: Option<Duration>,
    /// The `anthropic-version` header (Anthropic only).
    pub anthropic_version: String,
    /// The `max_tokens` sent when a query sets none (Anthropic only, which requires it).
    pub default_max_tokens: u32,
}

impl ProviderSettings {
    /// Settings with no key, zero prices and the default timeout, Anthropic version and `max_tokens`.
    pub fn new(
        name: impl Into<String>,
        kind: ProviderKind,
        base_url: impl Into<String>,
        model: impl Into<String>,
    ) -> ProviderSettings {
        ProviderSettings {
            name: name.into(),
            kind,
            base_url: base_url.into(),
            model: model.into(),
            api_key: None,
            price: Price::default(),
            timeout: DEFAULT_TIMEOUT,
            stream_timeout: None,
            anthropic_version: DEFAULT_ANTHROPIC_VERSION.to_owned(),
            default_max_tokens: DEFAULT_MAX_TOKENS,
        }
    }
}

/// Builds the client for `settings.kind`, sharing `http` (see [`http_client`]) with every other provider.
pub fn build(settings: ProviderSettings, http: HttpClient) -> Arc<dyn LlmProvider> {
    match settings.kind {
        ProviderKind::OpenAi => Arc::new(openai::OpenAiProvider::new(settings, http)),
        ProviderKind::Anthropic => Arc::new(anthropic::AnthropicProvider::new(settings, http)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn debug_output_never_shows_the_key() {
        let key = "sk-proj-debugsecret0123456789";
        let settings = ProviderSettings {
            api_key: Some(SecretString::from(key)),
            ..ProviderSettings::new("openai-main", ProviderKind::OpenAi, "https://api.openai.com/v1", "gpt-4o-mini")
        };
        let http = http_client().unwrap();
        let openai = openai::OpenAiProvider::new(settings.clone(), http.clone());
        let anthropic = anthropic::AnthropicProvider::new(
            ProviderSettings { kind: ProviderKind::Anthropic, ..settings.clone() },
            http,
        );
        for debug in [format!("{settings:?}"), format!("{openai:?}"), format!("{anthropic:?}")] {
            assert!(debug.contains("openai-main"), "{debug}");
            assert!(!debug.contains("debugsecret"), "{debug}");
        }
    }

    #[test]
    fn kinds_have_stable_names() {
        assert_eq!(ProviderKind::OpenAi.as_str(), "openai");
        assert_eq!(ProviderKind::Anthropic.as_str(), "anthropic");
        let kind: ProviderKind = serde_json::from_str("\"anthropic\"").unwrap();
        assert_eq!(kind, ProviderKind::Anthropic);
    }
}
