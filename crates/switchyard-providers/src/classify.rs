//! The one place that turns an upstream failure into a [`FailureClass`].
//!
//! Everything downstream (retries, fallback chains, circuit breakers) decides from the class alone; nothing else in
//! Switchyard matches on HTTP codes or provider error types. The rules, in order:
//!
//! 1. 401 and 403 are `Fatal { auth: true }`: the provider is misconfigured, another one may answer.
//! 2. 429 is `RateLimited` with the provider's retry hint (`retry-after-ms`, then `retry-after` in seconds or as an
//!    HTTP date), except an exhausted quota or billing problem (OpenAI `insufficient_quota`), which is
//!    `Fatal { auth: false }`: waiting will not help.
//! 3. 408, 409, every 5xx and Anthropic's 529 are `Retryable`.
//! 4. Otherwise the error body decides: a prompt longer than the context window is `ContextWindowExceeded`, a
//!    refusal by a content filter is `ContentPolicy`, and any other 4xx is `Fatal { auth: false }`. So is a 3xx:
//!    redirects are not followed (a POST must not silently become a GET elsewhere), so one means a wrong base URL.
//!
//! Errors that arrive without a meaningful status (an `error` event inside a 200 stream, an error object in a 200
//! body) get the status their error type implies (`overloaded_error` is 529, `rate_limit_error` 429, …) and then
//! follow the same rules; an unknown type is `Retryable`, as is a body that cannot be understood at all.
//! Transport failures (timeouts, refused or reset connections, bodies cut short) are classified in `http.rs`; they
//! are always `Retryable`.

use std::time::{Duration, SystemTime};

use http::HeaderMap;
use secrecy::SecretString;
use switchyard_core::FailureClass;

use crate::ProviderKind;
use crate::secret::redact;

/// Classifies an error response from its status, headers and body; returns the class and a redacted message.
///
/// `kind` says whose error format the body is in; both formats are understood either way, so an OpenAI-compatible
/// server with slightly different error bodies (vLLM, llama.cpp, Ollama) is still classified correctly.
/// A 2xx status is accepted for bodies that carry an error object despite a success status.
pub fn classify(status: u16, headers: &HeaderMap, body: &str, kind: ProviderKind) -> (FailureClass, String) {
    classify_response(status, headers, body, kind, None, SystemTime::now())
}

/// [`classify`] with the provider's own key (redacted from the body before anything else) and the current time
/// (to turn an HTTP-date `retry-after` into a delay).
pub(crate) fn classify_response(
    status: u16,
    headers: &HeaderMap,
    body: &str,
    kind: ProviderKind,
    key: Option<&SecretString>,
    now: SystemTime,
) -> (FailureClass, String) {
    let body = redact_full(body, key);
    let detail = ErrorDetail::parse(&body);
    let success = (200..300).contains(&status);
    let class = decide((!success).then_some(status), detail.as_ref(), retry_after(headers, now), kind);
    let message = describe(&format!("http {status}"), detail.as_ref(), &body);
    (class, redact(&message, key))
}

/// Classifies the payload of an error event inside a stream (Anthropic `event: error`, OpenAI `data: {"error":…}`).
pub(crate) fn classify_stream_error(
    data: &str,
    kind: ProviderKind,
    key: Option<&SecretString>,
) -> (FailureClass, String) {
    let data = redact_full(data, key);
    let detail = ErrorDetail::parse(&data);
    let class = decide(None, detail.as_ref(), None, kind);
    let message = describe("stream error", detail.as_ref(), &data);
    (class, redact(&message, key))
}

/// Redacts the exact key from a whole body before it is cut, so no prefix of a key survives truncation.
fn redact_full(body: &str, key: Option<&SecretString>) -> String {
    use secrecy::ExposeSecret;
    match key.map(|key| key.expose_secret()) {
        Some(key) if !key.is_empty() => body.replace(key, crate::secret::REDACTED),
        _ => body.to_owned(),
    }
}

/// The class of a failure; `status` is `None` when no HTTP error status speaks for it.
fn decide(
    status: Option<u16>,
    detail: Option<&ErrorDetail>,
    retry_after: Option<Duration>,
    kind: ProviderKind,
) -> FailureClass {
    let status = status.or_else(|| detail.and_then(|detail| detail.implied_status(kind)));
    match status {
        Some(401 | 403) => return FailureClass::Fatal { auth: true },
        Some(429) if detail.is_some_and(ErrorDetail::is_quota) => return FailureClass::Fatal { auth: false },
        Some(429) => return FailureClass::RateLimited { retry_after },
        Some(408 | 409 | 500..) => return FailureClass::Retryable,
        _ => {}
    }
    if detail.is_some_and(ErrorDetail::is_context_window) {
        return FailureClass::ContextWindowExceeded;
    }
    if detail.is_some_and(ErrorDetail::is_content_policy) {
        return FailureClass::ContentPolicy;
    }
    match status {
        Some(300..=499) => FailureClass::Fatal { auth: false },
        _ => FailureClass::Retryable,
    }
}

/// The fields of a provider error body that classification looks at.
///
/// OpenAI: `{"error":{"message","type","param","code"}}`; Anthropic: `{"type":"error","error":{"type","message"}}`;
/// vLLM: `{"object":"error","message","type","code"}`; Ollama sometimes `{"error":"message"}`.
#[derive(Debug, Default, PartialEq)]
struct ErrorDetail {
    error_type: Option<String>,
    code: Option<String>,
    message: Option<String>,
}

impl ErrorDetail {
    fn parse(body: &str) -> Option<ErrorDetail> {
        let value: serde_json::Value = serde_json::from_str(body).ok()?;
        let object = match value.get("error") {
            Some(serde_json::Value::String(message)) => {
                return Some(ErrorDetail { message: Some(message.clone()), ..ErrorDetail::default() });
            }
            Some(error @ serde_json::Value::Object(_)) => error,
            _ if value.get("message").is_some_and(serde_json::Value::is_string) => &value,
            _ => return None,
        };
        let text = |field: &str| match object.get(field) {
            Some(serde_json::Value::String(text)) => Some(text.clone()),
            Some(serde_json::Value::Number(number)) => Some(number.to_string()),
            _ => None,
        };
        Some(ErrorDetail { error_type: text("type"), code: text("code"), message: text("message") })
    }

    /// The status an error type stands for, for errors that arrive without one (inside streams or 2xx bodies).
    fn implied_status(&self, kind: ProviderKind) -> Option<u16> {
        let by_name = |name: &str| -> Option<u16> {
            Some(match name {
                "invalid_request_error" => 400,
                "authentication_error" | "invalid_api_key" => 401,
                "billing_error" | "insufficient_quota" => 402,
                "permission_error" => 403,
                "not_found_error" => 404,
                "request_too_large" => 413,
                "rate_limit_error" | "rate_limit_exceeded" | "requests" | "tokens" => 429,
                "api_error" | "server_error" => 500,
                "service_unavailable" => 503,
                "timeout_error" => 504,
                "overloaded_error" => 529,
                _ => return None,
            })
        };
        let numeric = || {
            // llama.cpp and vLLM put the HTTP status in `code`; OpenAI and Anthropic never use numeric codes.
            let code: u16 = self.code.as_deref()?.parse().ok()?;
            (kind == ProviderKind::OpenAi && (400..600).contains(&code)).then_some(code)
        };
        self.code.as_deref().and_then(by_name).or_else(|| self.error_type.as_deref().and_then(by_name)).or_else(numeric)
    }

    fn is_quota(&self) -> bool {
        self.has_label(&["insufficient_quota", "billing_error"])
            || self.message_mentions(&["exceeded your current quota", "billing", "credit balance"])
    }

    fn is_context_window(&self) -> bool {
        self.has_label(&["context_length_exceeded", "exceed_context_size_error"])
            || self.message_mentions(&[
                "maximum context length",
                "context_length_exceeded",
                "prompt is too long",
                "exceed context limit",
                "exceeds the available context size",
                "context window",
            ])
    }

    fn is_content_policy(&self) -> bool {
        self.has_label(&["content_policy_violation", "content_filter"])
            || self.message_mentions(&[
                "content filtering policy",
                "content management policy",
                "content policy",
                "output blocked",
                "safety system",
                "flagged as potentially violating",
            ])
    }

    fn has_label(&self, labels: &[&str]) -> bool {
        [&self.code, &self.error_type].into_iter().flatten().any(|label| labels.contains(&label.as_str()))
    }

    fn message_mentions(&self, phrases: &[&str]) -> bool {
        let Some(message) = &self.message else { return false };
        let message = message.to_lowercase();
        phrases.iter().any(|phrase| message.contains(phrase))
    }
}

/// A message for the error: the upstream message with its type and code when the body had one, else the body.
fn describe(prefix: &str, detail: Option<&ErrorDetail>, body: &str) -> String {
    let Some(detail) = detail else {
        let body = body.trim();
        return if body.is_empty() { format!("{prefix} with an empty body") } else { format!("{prefix}: {body}") };
    };
    let mut labels = String::new();
    for label in [&detail.error_type, &detail.code].into_iter().flatten() {
        if !labels.contains(label.as_str()) {
            labels.push(' ');
            labels.push_str(label);
        }
    }
    let message = detail.message.as_deref().unwrap_or("(no message)");
    format!("{prefix}{labels}: {message}")
}

/// The provider's hint of when to retry: `retry-after-ms` (milliseconds, OpenAI), else `retry-after` (seconds or an
/// HTTP date). Malformed, negative or past values are ignored.
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok()).map(str::trim);
    let seconds = |text: &str| text.parse::<f64>().ok().and_then(|secs| Duration::try_from_secs_f64(secs).ok());
    if let Some(millis) = header("retry-after-ms").and_then(|text| seconds(text).map(|d| d / 1000)) {
        return Some(millis);
    }
    let value = header("retry-after")?;
    seconds(value).or_else(|| {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).ok()
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use http::{HeaderName, HeaderValue};

    use FailureClass::{ContentPolicy, ContextWindowExceeded, Fatal, RateLimited, Retryable};
    use ProviderKind::{Anthropic, OpenAi};

    /// 2026-01-01T00:00:00Z, the "now" of these tests.
    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600)
    }

    fn check(
        kind: ProviderKind,
        status: u16,
        headers: &[(&str, &str)],
        body: &str,
        expected: FailureClass,
        message_has: &str,
    ) {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
        }
        let (class, message) = classify_response(status, &map, body, kind, None, now());
        assert_eq!(class, expected, "class of {kind:?} {status} {body}");
        assert!(message.contains(message_has), "message {message:?} lacks {message_has:?}");
        assert!(!message.contains("sk-"), "message {message:?} leaks a key");
    }

    fn rate_limited(millis: u64) -> FailureClass {
        RateLimited { retry_after: Some(Duration::from_millis(millis)) }
    }

    #[test]
    fn openai_errors() {
        let rate_limit = r#"{
    "error": {
        "message": "Rate limit reached for gpt-4o-mini in organization org-abc123 on requests per min (RPM): Limit 500, Used 500, Requested 1. Please try again in 120ms. Visit https://platform.openai.com/account/rate-limits to learn more.",
        "type": "requests",
        "param": null,
        "code": "rate_limit_exceeded"
    }
}"#;
        let headers = [
            ("retry-after-ms", "120"),
            ("retry-after", "1"),
            ("x-ratelimit-limit-requests", "500"),
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "120ms"),
        ];
        check(
            OpenAi,
            429,
            &headers,
            rate_limit,
            rate_limited(120),
            "http 429 requests rate_limit_exceeded: Rate limit",
        );
        check(OpenAi, 429, &[("retry-after", "2")], rate_limit, rate_limited(2000), "Rate limit reached");
        check(
            OpenAi,
            429,
            &[("retry-after-ms", "12.5")],
            rate_limit,
            RateLimited { retry_after: Some(Duration::from_micros(12_500)) },
            "Rate limit",
        );
        check(OpenAi, 429, &[], rate_limit, RateLimited { retry_after: None }, "Rate limit");

        let quota = r#"{
    "error": {
        "message": "You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.",
        "type": "insufficient_quota",
        "param": null,
        "code": "insufficient_quota"
    }
}"#;
        check(OpenAi, 429, &[("retry-after", "20")], quota, Fatal { auth: false }, "exceeded your current quota");

        let bad_key = r#"{
    "error": {
        "message": "Incorrect API key provided: sk-proj-****abcd. You can find your API key at https://platform.openai.com/account/api-keys.",
        "type": "invalid_request_error",
        "param": null,
        "code": "invalid_api_key"
    }
}"#;
        check(OpenAi, 401, &[], bad_key, Fatal { auth: true }, "Incorrect API key provided: [redacted]. You can");

        let context = r#"{
  "error": {
    "message": "This model's maximum context length is 128000 tokens. However, your messages resulted in 130417 tokens. Please reduce the length of the messages.",
    "type": "invalid_request_error",
    "param": "messages",
    "code": "context_length_exceeded"
  }
}"#;
        check(OpenAi, 400, &[], context, ContextWindowExceeded, "maximum context length is 128000");

        let policy = r#"{
  "error": {
    "message": "Your request was rejected as a result of our safety system. Your prompt may contain text that is not allowed by our safety system.",
    "type": "invalid_request_error",
    "param": null,
    "code": "content_policy_violation"
  }
}"#;
        check(OpenAi, 400, &[], policy, ContentPolicy, "content_policy_violation");

        let azure_filter = r#"{"error":{"message":"The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify your prompt and retry.","type":null,"param":"prompt","code":"content_filter","status":400}}"#;
        check(OpenAi, 400, &[], azure_filter, ContentPolicy, "content management policy");

        let server_error = r#"{
  "error": {
    "message": "The server had an error while processing your request. Sorry about that!",
    "type": "server_error",
    "param": null,
    "code": null
  }
}"#;
        check(OpenAi, 500, &[], server_error, Retryable, "http 500 server_error: The server had an error");

        let unavailable = "<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n<body>\r\n<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n</body>\r\n</html>\r\n";
        check(OpenAi, 503, &[], unavailable, Retryable, "http 503: <html>");
        check(OpenAi, 502, &[], "", Retryable, "http 502 with an empty body");

        let bad_request = r#"{"error":{"message":"Unrecognized request argument supplied: frobnicate","type":"invalid_request_error","param":null,"code":null}}"#;
        check(OpenAi, 400, &[], bad_request, Fatal { auth: false }, "Unrecognized request argument");
        let no_model = r#"{"error":{"message":"The model `gpt-9` does not exist or you do not have access to it.","type":"invalid_request_error","param":null,"code":"model_not_found"}}"#;
        check(OpenAi, 404, &[], no_model, Fatal { auth: false }, "model_not_found");
        check(OpenAi, 408, &[], "", Retryable, "http 408");
        check(OpenAi, 409, &[], "", Retryable, "http 409");
        check(OpenAi, 422, &[], r#"{"detail":"unprocessable"}"#, Fatal { auth: false }, "unprocessable");
        let moved = [("location", "https://api.example.com/v1/chat/completions")];
        check(OpenAi, 301, &moved, "", Fatal { auth: false }, "http 301 with an empty body");
    }

    #[test]
    fn openai_compatible_servers() {
        let vllm = r#"{"object":"error","message":"This model's maximum context length is 4096 tokens. However, you requested 5000 tokens (4000 in the messages, 1000 in the completion). Please reduce the length of the messages or completion.","type":"BadRequestError","param":null,"code":400}"#;
        check(OpenAi, 400, &[], vllm, ContextWindowExceeded, "maximum context length is 4096");
        let llama_cpp = r#"{"error":{"code":400,"message":"the request exceeds the available context size, try increasing it","type":"exceed_context_size_error","n_prompt_tokens":5000,"n_ctx":4096}}"#;
        check(OpenAi, 400, &[], llama_cpp, ContextWindowExceeded, "exceeds the available context size");
        let ollama = r#"{"error":"model \"llama9\" not found, try pulling it first"}"#;
        check(OpenAi, 404, &[], ollama, Fatal { auth: false }, "not found, try pulling it first");
        let llama_busy = r#"{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}"#;
        check(OpenAi, 503, &[], llama_busy, Retryable, "Loading model");
        // An error object in a 200 body: the code in it decides.
        check(OpenAi, 200, &[], llama_busy, Retryable, "http 200 unavailable_error 503: Loading model");
        check(OpenAi, 200, &[], "not json at all", Retryable, "http 200: not json at all");
    }

    #[test]
    fn anthropic_errors() {
        let overloaded = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_011CSHoEeqs5C35K2UUqR7Fy"}"#;
        check(
            Anthropic,
            529,
            &[("x-should-retry", "true")],
            overloaded,
            Retryable,
            "http 529 overloaded_error: Overloaded",
        );

        let rate_limit = r#"{"type":"error","error":{"type":"rate_limit_error","message":"This request would exceed the rate limit for your organization (a1b2c3) of 50 input tokens per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits. You can see the response headers for current usage. Please reduce the prompt length or the maximum tokens requested, or try again later. You may also contact sales at https://www.anthropic.com/contact-sales to discuss your options for a rate limit increase."},"request_id":"req_011CRr3kBn2W7C9ZtwpXFcdD"}"#;
        let headers = [
            ("retry-after", "15"),
            ("anthropic-ratelimit-input-tokens-limit", "50"),
            ("anthropic-ratelimit-input-tokens-remaining", "0"),
            ("anthropic-ratelimit-input-tokens-reset", "2026-01-01T00:00:15Z"),
        ];
        check(
            Anthropic,
            429,
            &headers,
            rate_limit,
            rate_limited(15_000),
            "rate_limit_error: This request would exceed",
        );
        let date = [("retry-after", "Thu, 01 Jan 2026 00:00:30 GMT")];
        check(Anthropic, 429, &date, rate_limit, rate_limited(30_000), "rate_limit_error");
        let past = [("retry-after", "Wed, 31 Dec 2025 23:59:00 GMT")];
        check(Anthropic, 429, &past, rate_limit, RateLimited { retry_after: None }, "rate_limit_error");

        let auth = r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"},"request_id":"req_011CSHnbf2iNk9PBRVvqJ2pY"}"#;
        check(Anthropic, 401, &[], auth, Fatal { auth: true }, "authentication_error: invalid x-api-key");
        let permission = r#"{"type":"error","error":{"type":"permission_error","message":"Your API key does not have permission to use the specified resource."}}"#;
        check(Anthropic, 403, &[], permission, Fatal { auth: true }, "permission_error");

        let too_long = r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 208310 tokens > 200000 maximum"},"request_id":"req_011CRsYaVpNqhGgTkL9zbFkH"}"#;
        check(Anthropic, 400, &[], too_long, ContextWindowExceeded, "prompt is too long: 208310 tokens");
        let budget = r#"{"type":"error","error":{"type":"invalid_request_error","message":"input length and `max_tokens` exceed context limit: 197626 + 8192 > 200000, decrease input length or `max_tokens` and try again"}}"#;
        check(Anthropic, 400, &[], budget, ContextWindowExceeded, "exceed context limit");
        let blocked = r#"{"type":"error","error":{"type":"invalid_request_error","message":"Output blocked by content filtering policy"}}"#;
        check(Anthropic, 400, &[], blocked, ContentPolicy, "Output blocked by content filtering policy");

        let too_large = r#"{"type":"error","error":{"type":"request_too_large","message":"Request exceeds the maximum allowed number of bytes."}}"#;
        check(Anthropic, 413, &[], too_large, Fatal { auth: false }, "request_too_large");
        let not_found = r#"{"type":"error","error":{"type":"not_found_error","message":"model: claude-9-opus"},"request_id":"req_011CSHp6zgBRRnEdqdmuPq1a"}"#;
        check(Anthropic, 404, &[], not_found, Fatal { auth: false }, "not_found_error: model: claude-9-opus");
        let api_error = r#"{"type":"error","error":{"type":"api_error","message":"Internal server error"}}"#;
        check(Anthropic, 500, &[], api_error, Retryable, "api_error: Internal server error");
        let credit = r#"{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits."}}"#;
        check(Anthropic, 400, &[], credit, Fatal { auth: false }, "credit balance is too low");
    }

    #[test]
    fn stream_error_events_imply_their_status() {
        let check_stream = |kind: ProviderKind, data: &str, expected: FailureClass| {
            let (class, message) = classify_stream_error(data, kind, None);
            assert_eq!(class, expected, "class of {data}");
            assert!(message.starts_with("stream error"), "{message}");
        };
        let error = |kind: &str, message: &str| {
            format!(r#"{{"type":"error","error":{{"type":"{kind}","message":"{message}"}}}}"#)
        };
        check_stream(Anthropic, &error("overloaded_error", "Overloaded"), Retryable);
        check_stream(Anthropic, &error("api_error", "Internal server error"), Retryable);
        check_stream(Anthropic, &error("rate_limit_error", "slow down"), RateLimited { retry_after: None });
        check_stream(
            Anthropic,
            &error("invalid_request_error", "prompt is too long: 3 tokens > 2 maximum"),
            ContextWindowExceeded,
        );
        check_stream(Anthropic, &error("something_new", "?"), Retryable);
        let openai = r#"{"error":{"message":"The server had an error while processing your request. Sorry about that!","type":"server_error","param":null,"code":null}}"#;
        check_stream(OpenAi, openai, Retryable);
        let filtered = r#"{"error":{"message":"filtered","type":null,"param":null,"code":"content_filter"}}"#;
        check_stream(OpenAi, filtered, ContentPolicy);
        check_stream(OpenAi, "garbage", Retryable);
    }

    #[test]
    fn the_exact_key_is_redacted_even_when_it_looks_like_nothing() {
        let key = SecretString::from("tgp_v1_0123456789abcdef");
        let body = r#"{"error":{"message":"Invalid API key provided: tgp_v1_0123456789abcdef","type":"invalid_request_error","code":"invalid_api_key"}}"#;
        let (class, message) = classify_response(401, &HeaderMap::new(), body, OpenAi, Some(&key), now());
        assert_eq!(class, Fatal { auth: true });
        assert_eq!(message, "http 401 invalid_request_error invalid_api_key: Invalid API key provided: [redacted]");
    }
}
