//! The HTTP side shared by both clients: one connection pool, one way to send a request, one way to turn a
//! transport failure or an error response into a [`ProviderError`].
//!
//! Every provider of a node shares one [`reqwest::Client`] from [`http_client`], so connections (TLS sessions,
//! HTTP/1 keep-alive, HTTP/2 streams) are reused across calls. The per-provider timeout covers the whole call,
//! response body and stream included. Nothing here logs a header or a URL; only provider names, statuses,
//! timings and already-redacted messages reach tracing.

use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};
use secrecy::ExposeSecret;
use switchyard_core::FailureClass;
use switchyard_protocol::Usage;
use tracing::debug;

use crate::classify::{classify_response, classify_stream_error};
use crate::secret::redact;
use crate::{HttpClientError, ProviderError, ProviderSettings};

/// How long to wait for a TCP (and TLS) connection before the attempt counts as failed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an idle pooled connection is kept for reuse.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per upstream host. A burst of thousands of concurrent calls must not leave thousands of
/// idle connections (and their buffers) behind; steady traffic above this many concurrent calls per host opens
/// new connections, which costs little next to an LLM call.
pub const POOL_MAX_IDLE_PER_HOST: usize = 256;
/// TCP keep-alive probes on pooled connections, so dead peers are noticed.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

/// Builds the HTTP client every provider of a node shares.
///
/// rustls for TLS, `TCP_NODELAY` (small requests and SSE events go out at once), a 2 s connect timeout, idle
/// connections kept 90 s (at most 256 per host), HTTP/1 keep-alive (hyper's default) and HTTP/2 where the server offers it. Redirects are
/// not followed: a redirected POST would change method or lose its key, so a 3xx is reported as a wrong base URL.
/// No client-wide timeout: each provider applies its own to the whole call.
pub fn http_client() -> Result<reqwest::Client, HttpClientError> {
    let client = reqwest::Client::builder()
        .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")))
        .tcp_nodelay(true)
        .tcp_keepalive(TCP_KEEPALIVE)
        .connect_timeout(CONNECT_TIMEOUT)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    Ok(client)
}

/// One configured provider endpoint: its settings, the shared client, the URL to POST to and the key's header.
///
/// The URL is parsed and the key's header value built once, not on every call. Held behind an `Arc` so a response
/// stream can outlive the call that opened it.
#[derive(Debug)]
pub(crate) struct Upstream {
    pub(crate) settings: ProviderSettings,
    http: reqwest::Client,
    /// `None` when the base URL does not parse: every call then fails as a request that cannot be built.
    url: Option<reqwest::Url>,
    /// The key's header, marked sensitive so it is never printed; `None` without a key, `Some(Err)` when the key
    /// cannot be a header value.
    key: Option<Result<(HeaderName, HeaderValue), ()>>,
}

impl Upstream {
    /// `path` is appended to the configured base URL (without its trailing slash); the key goes in header `key`,
    /// after `key_prefix` (`Bearer `, or nothing).
    pub(crate) fn new(
        settings: ProviderSettings,
        http: reqwest::Client,
        path: &str,
        key: HeaderName,
        key_prefix: &str,
    ) -> Upstream {
        let url = reqwest::Url::parse(&format!("{}{path}", settings.base_url.trim_end_matches('/'))).ok();
        let key = settings.api_key.as_ref().map(|secret| {
            let mut value =
                HeaderValue::from_str(&format!("{key_prefix}{}", secret.expose_secret())).map_err(|_| ())?;
            value.set_sensitive(true);
            Ok((key, value))
        });
        Upstream { settings, http, url, key }
    }

    /// The key's header; `None` without a key.
    pub(crate) fn key_header(&self) -> Result<Option<(HeaderName, HeaderValue)>, ProviderError> {
        match &self.key {
            None => Ok(None),
            Some(Ok(header)) => Ok(Some(header.clone())),
            Some(Err(())) => {
                Err(self.error(FailureClass::Fatal { auth: true }, None, "api key is not a valid header value"))
            }
        }
    }

    /// POSTs `body` as JSON; returns the response when its status is 2xx, else the classified error.
    pub(crate) async fn post(
        &self,
        headers: HeaderMap,
        body: &impl serde::Serialize,
        stream: bool,
    ) -> Result<reqwest::Response, ProviderError> {
        let started = Instant::now();
        debug!(provider = %self.settings.name, model = %self.settings.model, stream, "sending upstream request");
        let Some(url) = &self.url else {
            return Err(self.error(
                FailureClass::Fatal { auth: false },
                None,
                "invalid request: the base URL does not parse",
            ));
        };
        let mut builder = self.http.post(url.clone()).headers(headers).json(body);
        if let Some(limit) = if stream { self.settings.stream_timeout } else { Some(self.settings.timeout) } {
            builder = builder.timeout(limit);
        }
        let sent = builder.send().await;
        let response = sent.map_err(|err| self.transport_error(&err))?;
        let status = response.status().as_u16();
        debug!(
            provider = %self.settings.name,
            status,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "upstream responded"
        );
        if response.status().is_success() {
            return Ok(response);
        }
        let headers = response.headers().clone();
        // The body of an error response is best effort: if it cannot be read, the status alone decides.
        let text = response.text().await.unwrap_or_default();
        Err(self.error_response(status, &headers, &text))
    }

    /// POSTs `body` for a non-streaming answer and reads it whole: `(status, headers, body)` of a 2xx response.
    pub(crate) async fn post_whole(
        &self,
        headers: HeaderMap,
        body: &impl serde::Serialize,
    ) -> Result<(u16, HeaderMap, bytes::Bytes), ProviderError> {
        let response = self.post(headers, body, false).await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.map_err(|err| self.transport_error(&err))?;
        Ok((status, headers, bytes))
    }

    /// Classifies an error response (or a 2xx whose body is not an answer) into a [`ProviderError`].
    pub(crate) fn error_response(&self, status: u16, headers: &HeaderMap, body: &str) -> ProviderError {
        let key = self.settings.api_key.as_ref();
        let (class, message) = classify_response(status, headers, body, self.settings.kind, key, SystemTime::now());
        let status = (!(200..300).contains(&status)).then_some(status);
        self.failed(class, status, message)
    }

    /// Classifies the payload of an error event inside a stream into a [`ProviderError`].
    pub(crate) fn stream_error(&self, data: &str) -> ProviderError {
        let (class, message) = classify_stream_error(data, self.settings.kind, self.settings.api_key.as_ref());
        self.failed(class, None, message)
    }

    /// Classifies a transport failure: timeouts, refused or reset connections and bodies cut short are all
    /// retryable; only a request that could not even be built (a malformed base URL) is fatal.
    pub(crate) fn transport_error(&self, err: &reqwest::Error) -> ProviderError {
        let (class, what) = if err.is_timeout() {
            let timeout = self.settings.timeout.max(self.settings.stream_timeout.unwrap_or_default()).as_secs_f64();
            (FailureClass::Retryable, format!("timed out after {timeout}s"))
        } else if err.is_builder() {
            (FailureClass::Fatal { auth: false }, "invalid request".to_owned())
        } else if err.is_connect() {
            (FailureClass::Retryable, "connection failed".to_owned())
        } else if err.is_body() || err.is_decode() {
            (FailureClass::Retryable, "response body failed mid-way".to_owned())
        } else {
            (FailureClass::Retryable, "request failed".to_owned())
        };
        self.error(class, None, &format!("{what}: {}", error_chain(err)))
    }

    /// A [`ProviderError`] from this provider; `message` is redacted here.
    pub(crate) fn error(&self, class: FailureClass, status: Option<u16>, message: &str) -> ProviderError {
        self.failed(class, status, redact(message, self.settings.api_key.as_ref()))
    }

    /// Builds the error from an already redacted message and records it at debug level.
    fn failed(&self, class: FailureClass, status: Option<u16>, message: String) -> ProviderError {
        debug!(provider = %self.settings.name, class = class.as_str(), status, error = %message, "upstream call failed");
        ProviderError { class, status, message, provider: self.settings.name.clone() }
    }

    /// What `usage` cost at the configured prices.
    pub(crate) fn cost(&self, usage: Usage) -> f64 {
        self.settings.price.cost_usd(usage.input_tokens, usage.output_tokens)
    }
}

/// An error and its sources, joined with ": " (reqwest's own message hides the cause, such as "connection reset").
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
