//! The HTTP side shared by both clients: one connection pool, one way to send a request, one way to turn a
//! transport failure or an error response into a [`ProviderError`].
//!
//! Every provider of a node shares one [`HttpClient`] from [`http_client`], so connections (TLS sessions,
//! HTTP/1 keep-alive, HTTP/2 streams) are reused across calls. It is hyper's pooled client (`hyper-util`'s
//! `legacy::Client`) with rustls, used directly: the layers a general-purpose client adds on top (redirect
//! policy, URL re-parsing on every request and response, per-request boxing) measured ~10 % of a node's CPU per
//! query, and providers need none of them. The per-provider timeout covers the whole call, response body and
//! stream included. Nothing here logs a header or a URL; only provider names, statuses, timings and
//! already-redacted messages reach tracing.

use std::future::Future;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use secrecy::ExposeSecret;
use switchyard_core::FailureClass;
use switchyard_protocol::Usage;
use tokio::time::Instant;
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
/// The `User-Agent` of every upstream request.
const USER_AGENT: &str = concat!("switchyard/", env!("CARGO_PKG_VERSION"));

/// The HTTP client every provider of a node shares: a pool of connections. Cheap to clone.
#[derive(Clone, Debug)]
pub struct HttpClient(Client<HttpsConnector<HttpConnector>, Full<Bytes>>);

/// A response whose head has arrived; its body is read (or streamed) by the caller.
pub(crate) type Response = http::Response<hyper::body::Incoming>;

/// Builds the HTTP client every provider of a node shares.
///
/// rustls (ring, the platform's certificate verifier) for TLS, `TCP_NODELAY` (small requests and SSE events go
/// out at once), a 2 s connect timeout, idle connections kept 90 s (at most 256 per host), HTTP/1 keep-alive and
/// HTTP/2 where the server offers it (ALPN). Redirects are not followed: a redirected POST would change method or
/// lose its key, so a 3xx is reported as a wrong base URL. No client-wide timeout: each provider applies its own
/// to the whole call.
pub fn http_client() -> Result<HttpClient, HttpClientError> {
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    tcp.set_keepalive(Some(TCP_KEEPALIVE));
    tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_platform_verifier(rustls::crypto::ring::default_provider())?
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(tcp);
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(https);
    Ok(HttpClient(client))
}

/// How a call failed below HTTP.
pub(crate) enum Transport<'a> {
    /// The provider's timeout passed.
    TimedOut,
    /// The request could not be sent or its response head not read.
    Send(&'a hyper_util::client::legacy::Error),
    /// The response body broke off.
    Body(&'a hyper::Error),
}

/// Runs `work` until `deadline`, if there is one; `None` when the deadline passed first.
pub(crate) async fn within<F: Future>(deadline: Option<Instant>, work: F) -> Option<F::Output> {
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, work).await.ok(),
        None => Some(work.await),
    }
}

/// One configured provider endpoint: its settings, the shared client, the URI to POST to and the key's header.
///
/// The URI is parsed and the key's header value built once, not on every call. Held behind an `Arc` so a response
/// stream can outlive the call that opened it.
#[derive(Debug)]
pub(crate) struct Upstream {
    pub(crate) settings: ProviderSettings,
    http: HttpClient,
    /// `None` when the base URL is not an absolute http(s) URL: every call then fails as a request that cannot be
    /// built.
    uri: Option<Uri>,
    /// The key's header, marked sensitive so it is never printed; `None` without a key, `Some(Err)` when the key
    /// cannot be a header value.
    key: Option<Result<(HeaderName, HeaderValue), ()>>,
}

impl Upstream {
    /// `path` is appended to the configured base URL (without its trailing slash); the key goes in header `key`,
    /// after `key_prefix` (`Bearer `, or nothing).
    pub(crate) fn new(
        settings: ProviderSettings,
        http: HttpClient,
        path: &str,
        key: HeaderName,
        key_prefix: &str,
    ) -> Upstream {
        let uri = format!("{}{path}", settings.base_url.trim_end_matches('/'))
            .parse::<Uri>()
            .ok()
            .filter(|uri| matches!(uri.scheme_str(), Some("http" | "https")) && uri.authority().is_some());
        let key = settings.api_key.as_ref().map(|secret| {
            let mut value =
                HeaderValue::from_str(&format!("{key_prefix}{}", secret.expose_secret())).map_err(|_| ())?;
            value.set_sensitive(true);
            Ok((key, value))
        });
        Upstream { settings, http, uri, key }
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

    /// The deadline of a call starting now: the provider's timeout, or its stream timeout (if any) for a stream.
    pub(crate) fn deadline(&self, stream: bool) -> Option<Instant> {
        let limit = if stream { self.settings.stream_timeout } else { Some(self.settings.timeout) };
        limit.map(|limit| Instant::now() + limit)
    }

    /// POSTs `body` as JSON; returns the response when its status is 2xx, else the classified error. Fails as
    /// timed out when `deadline` passes first.
    pub(crate) async fn post(
        &self,
        headers: HeaderMap,
        body: &impl serde::Serialize,
        deadline: Option<Instant>,
    ) -> Result<Response, ProviderError> {
        let started = Instant::now();
        debug!(provider = %self.settings.name, model = %self.settings.model, "sending upstream request");
        let Some(uri) = &self.uri else {
            return Err(self.error(
                FailureClass::Fatal { auth: false },
                None,
                "invalid request: the base URL does not parse",
            ));
        };
        let body = serde_json::to_vec(body)
            .map_err(|err| self.error(FailureClass::Fatal { auth: false }, None, &format!("invalid request: {err}")))?;
        let mut request = Request::new(Full::new(Bytes::from(body)));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri.clone();
        *request.headers_mut() = headers;
        let fixed = request.headers_mut();
        fixed.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        fixed.insert(http::header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        let response = match within(deadline, self.http.0.request(request)).await {
            None => return Err(self.transport_error(Transport::TimedOut)),
            Some(Err(err)) => return Err(self.transport_error(Transport::Send(&err))),
            Some(Ok(response)) => response,
        };
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
        let (head, body) = response.into_parts();
        // The body of an error response is best effort: if it cannot be read, the status alone decides.
        let text = match within(deadline, body.collect()).await {
            Some(Ok(body)) => String::from_utf8_lossy(&body.to_bytes()).into_owned(),
            _ => String::new(),
        };
        Err(self.error_response(status, &head.headers, &text))
    }

    /// POSTs `body` for a non-streaming answer and reads it whole within the provider's timeout: `(status,
    /// headers, body)` of a 2xx response.
    pub(crate) async fn post_whole(
        &self,
        headers: HeaderMap,
        body: &impl serde::Serialize,
    ) -> Result<(u16, HeaderMap, Bytes), ProviderError> {
        let deadline = self.deadline(false);
        let response = self.post(headers, body, deadline).await?;
        let (head, body) = response.into_parts();
        let bytes = self.read_body(body, deadline).await?;
        Ok((head.status.as_u16(), head.headers, bytes))
    }

    /// Reads a whole response body before `deadline`.
    pub(crate) async fn read_body(
        &self,
        body: hyper::body::Incoming,
        deadline: Option<Instant>,
    ) -> Result<Bytes, ProviderError> {
        match within(deadline, body.collect()).await {
            None => Err(self.transport_error(Transport::TimedOut)),
            Some(Err(err)) => Err(self.transport_error(Transport::Body(&err))),
            Some(Ok(body)) => Ok(body.to_bytes()),
        }
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
    /// retryable.
    pub(crate) fn transport_error(&self, failure: Transport<'_>) -> ProviderError {
        let message = match failure {
            Transport::TimedOut => {
                let timeout = self.settings.timeout.max(self.settings.stream_timeout.unwrap_or_default());
                format!("timed out after {}s", timeout.as_secs_f64())
            }
            Transport::Send(err) if err.is_connect() => format!("connection failed: {}", error_chain(err)),
            Transport::Send(err) => format!("request failed: {}", error_chain(err)),
            Transport::Body(err) => format!("response body failed mid-way: {}", error_chain(err)),
        };
        self.error(FailureClass::Retryable, None, &message)
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
