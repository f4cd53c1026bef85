//! The door's errors: [`HttpError`] for starting it, [`ApiError`] for what a request receives.
//!
//! An [`ApiError`] is one error, written in the [`Wire`] format of the endpoint that answers it. OpenAI's format
//! is `{"error": {"message", "type", "param", "code"}}` with the status the official SDKs map to their exception
//! classes: 400 invalid, 401 bad key, 403 model not allowed for the key, 404 unknown model, 409 idempotency
//! conflict, 413 too large, 429 overloaded (with `Retry-After` and `retry-after-ms`), 502 upstream failure, 503 no
//! provider or no router, 504 deadline. Anthropic's format is `{"type": "error", "error": {"type", "message",
//! "details": {"error_code"}}}` (the SDK reads `details.error_code` as the exception's `error_code`; the message
//! names the field) with the same statuses but one: the node being overloaded is Anthropic's own 529
//! `overloaded_error`, as Anthropic answers when it is short of capacity (its 429 means an account's rate limit,
//! which the door has none of). The Anthropic types follow the status: `invalid_request_error` (400, 409),
//! `authentication_error`, `permission_error`, `not_found_error`, `request_too_large`, `overloaded_error`,
//! `api_error` (502, 503), `timeout_error` (504). Errors a retry cannot fix say so with `x-should-retry: false`,
//! which both SDKs honour. Messages never carry a key.

use std::net::SocketAddr;

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use switchyard_client::ClientError;
use switchyard_protocol::client::{ErrorReply, ErrorType};
use switchyard_runtime::ConfigError;

/// Why the door could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The `[http]` section is missing or one of its keys cannot be read.
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// The wire format an answer is written in: the one of the endpoint that answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// `/v1/chat/completions`, `/v1/models`, and anything else.
    OpenAi,
    /// `/v1/messages`.
    Anthropic,
}

/// An error answer, written in either wire format.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// The status in OpenAI's format ([`ApiError::status_in`] gives each format's).
    pub status: StatusCode,
    pub message: String,
    /// OpenAI's `type`: `invalid_request_error`, `authentication_error`, `rate_limit_error`, `api_error`, ...
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<String>,
    /// For 429: how long to wait.
    pub retry_after_ms: Option<u64>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct AnthropicBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: AnthropicInner<'a>,
}

#[derive(Serialize)]
struct AnthropicInner<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<Details<'a>>,
}

#[derive(Serialize)]
struct Details<'a> {
    error_code: &'a str,
}

#[derive(Serialize)]
struct Inner<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), kind, param: None, code: None, retry_after_ms: None }
    }

    /// A 400 naming the offending parameter.
    pub fn invalid(message: impl Into<String>, param: impl Into<String>) -> Self {
        Self::malformed(message).with_param(Some(param.into()))
    }

    /// A 400 about the request as a whole.
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message).with_code("invalid_request")
    }

    pub fn with_param(mut self, param: Option<String>) -> Self {
        self.param = param;
        self
    }

    pub fn with_code(mut self, code: &str) -> Self {
        self.code = Some(code.to_owned());
        self
    }

    /// A missing or unknown key; the message says how `wire`'s clients send one.
    pub fn unauthorized(wire: Wire) -> Self {
        let message = match wire {
            Wire::OpenAi => "invalid API key: send `Authorization: Bearer <key>` with a key this gateway knows",
            Wire::Anthropic => {
                "invalid x-api-key: send `x-api-key: <key>` (or `Authorization: Bearer <key>`) with a key this \
                 gateway knows"
            }
        };
        Self::new(StatusCode::UNAUTHORIZED, "invalid_request_error", message).with_code("invalid_api_key")
    }

    pub fn unknown_model(model: &str) -> Self {
        let message = format!("the model `{model}` does not exist");
        Self::new(StatusCode::NOT_FOUND, "invalid_request_error", message)
            .with_param(Some("model".into()))
            .with_code("model_not_found")
    }

    pub fn model_not_allowed(model: &str) -> Self {
        let message = format!("this key may not use the model `{model}`");
        Self::new(StatusCode::FORBIDDEN, "permission_error", message)
            .with_param(Some("model".into()))
            .with_code("model_not_allowed")
    }

    /// The status and the error `type` in `wire`'s format.
    pub fn status_in(&self, wire: Wire) -> (StatusCode, &'static str) {
        match wire {
            Wire::OpenAi => (self.status, self.kind),
            Wire::Anthropic => match self.status.as_u16() {
                401 => (self.status, "authentication_error"),
                403 => (self.status, "permission_error"),
                404 => (self.status, "not_found_error"),
                413 => (self.status, "request_too_large"),
                // The door's only 429 is the node's admission gate: Anthropic's "overloaded".
                429 => (StatusCode::from_u16(529).unwrap_or(self.status), "overloaded_error"),
                504 => (self.status, "timeout_error"),
                status if status >= 500 => (self.status, "api_error"),
                _ => (self.status, "invalid_request_error"),
            },
        }
    }

    /// The body in `wire`'s format, as JSON text (also the data of the SSE event that ends a stream that failed
    /// after it started).
    pub fn body(&self, wire: Wire) -> String {
        let json = match wire {
            Wire::OpenAi => serde_json::to_string(&Body {
                error: Inner {
                    message: &self.message,
                    kind: self.kind,
                    param: self.param.as_deref(),
                    code: self.code.as_deref(),
                },
            }),
            Wire::Anthropic => serde_json::to_string(&AnthropicBody {
                kind: "error",
                error: AnthropicInner {
                    kind: self.status_in(wire).1,
                    message: &self.message,
                    details: self.code.as_deref().map(|error_code| Details { error_code }),
                },
            }),
        };
        json.unwrap_or_default()
    }

    /// The HTTP response in `wire`'s format.
    pub fn into_response_in(self, wire: Wire) -> Response {
        let status = self.status_in(wire).0;
        let mut response = (status, [(header::CONTENT_TYPE, "application/json")], self.body(wire)).into_response();
        let headers = response.headers_mut();
        if let Some(ms) = self.retry_after_ms {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(ms.div_ceil(1000).max(1)));
            headers.insert(HeaderName::from_static("retry-after-ms"), HeaderValue::from(ms));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        let retry = if self.retryable() { "true" } else { "false" };
        headers.insert(HeaderName::from_static("x-should-retry"), HeaderValue::from_static(retry));
        response
    }

    /// Whether a retry of the same request may succeed.
    fn retryable(&self) -> bool {
        self.status == StatusCode::TOO_MANY_REQUESTS || self.status.is_server_error()
    }
}

/// The OpenAI form of an error a node answered.
impl From<&ErrorReply> for ApiError {
    fn from(reply: &ErrorReply) -> Self {
        let error = &reply.error;
        let (status, kind) = match (error.kind, error.code.as_str()) {
            (ErrorType::InvalidRequest, "unknown_route") => (StatusCode::NOT_FOUND, "invalid_request_error"),
            (ErrorType::InvalidRequest, "payload_too_large") => {
                (StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error")
            }
            (ErrorType::InvalidRequest, "idempotency_conflict") => (StatusCode::CONFLICT, "invalid_request_error"),
            (ErrorType::InvalidRequest, _) => (StatusCode::BAD_REQUEST, "invalid_request_error"),
            (ErrorType::Overloaded, _) => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error"),
            (ErrorType::NoProviderAvailable, _) => (StatusCode::SERVICE_UNAVAILABLE, "service_unavailable_error"),
            (ErrorType::UpstreamError, _) => (StatusCode::BAD_GATEWAY, "api_error"),
            (ErrorType::DeadlineExceeded, _) => (StatusCode::GATEWAY_TIMEOUT, "timeout_error"),
        };
        let param = match error.code.as_str() {
            "unknown_route" => Some("model".to_owned()),
            _ => error.field.clone(),
        };
        let code = match error.code.as_str() {
            "unknown_route" => "model_not_found",
            code => code,
        };
        let mut api = ApiError::new(status, kind, error.message.clone()).with_param(param).with_code(code);
        api.retry_after_ms = error.retry_after_ms.or((status == StatusCode::TOO_MANY_REQUESTS).then_some(100));
        api
    }
}

impl From<&ClientError> for ApiError {
    fn from(error: &ClientError) -> Self {
        match error {
            ClientError::Server { reply } | ClientError::InvalidRequest { reply } => ApiError::from(reply.as_ref()),
            ClientError::InvalidRoute { route } => ApiError::unknown_model(route),
            ClientError::NoResponders { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "service_unavailable_error", "no router node is serving")
                    .with_code("no_router")
            }
            ClientError::DeadlineExceeded { .. } => {
                ApiError::new(StatusCode::GATEWAY_TIMEOUT, "timeout_error", "no answer within the deadline")
                    .with_code("deadline_exceeded")
            }
            ClientError::Gap { .. } => {
                ApiError::new(StatusCode::BAD_GATEWAY, "api_error", "chunks of the stream were lost")
                    .with_code("stream_gap")
            }
            ClientError::Decode { .. } | ClientError::Encode { .. } | ClientError::Closed { .. } => {
                ApiError::new(StatusCode::BAD_GATEWAY, "api_error", error.to_string()).with_code("bad_reply")
            }
            ClientError::Bus(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "service_unavailable_error", "the message bus failed")
                    .with_code("bus_error")
            }
        }
    }
}

/// OpenAI's format, the door's default.
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.into_response_in(Wire::OpenAi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(kind: ErrorType, code: &str, status: u16) {
        let api = ApiError::from(&ErrorReply::new(kind, code, "m"));
        assert_eq!(api.status.as_u16(), status, "{kind:?} {code}");
    }

    #[test]
    fn switchyard_errors_get_openai_statuses() {
        check(ErrorType::InvalidRequest, "invalid_field", 400);
        check(ErrorType::InvalidRequest, "unknown_route", 404);
        check(ErrorType::InvalidRequest, "idempotency_conflict", 409);
        check(ErrorType::InvalidRequest, "payload_too_large", 413);
        check(ErrorType::Overloaded, "overloaded", 429);
        check(ErrorType::UpstreamError, "all_providers_failed", 502);
        check(ErrorType::NoProviderAvailable, "no_provider_available", 503);
        check(ErrorType::DeadlineExceeded, "deadline_exceeded", 504);
    }

    fn check_anthropic(kind: ErrorType, code: &str, status: u16, anthropic_type: &str) {
        let api = ApiError::from(&ErrorReply::new(kind, code, "m"));
        assert_eq!(api.status_in(Wire::Anthropic), (StatusCode::from_u16(status).unwrap(), anthropic_type), "{code}");
    }

    #[test]
    fn switchyard_errors_get_anthropic_statuses_and_types() {
        check_anthropic(ErrorType::InvalidRequest, "invalid_field", 400, "invalid_request_error");
        check_anthropic(ErrorType::InvalidRequest, "unknown_route", 404, "not_found_error");
        check_anthropic(ErrorType::InvalidRequest, "idempotency_conflict", 409, "invalid_request_error");
        check_anthropic(ErrorType::InvalidRequest, "payload_too_large", 413, "request_too_large");
        check_anthropic(ErrorType::Overloaded, "overloaded", 529, "overloaded_error");
        check_anthropic(ErrorType::UpstreamError, "all_providers_failed", 502, "api_error");
        check_anthropic(ErrorType::NoProviderAvailable, "no_provider_available", 503, "api_error");
        check_anthropic(ErrorType::DeadlineExceeded, "deadline_exceeded", 504, "timeout_error");
        assert_eq!(ApiError::unauthorized(Wire::Anthropic).status_in(Wire::Anthropic).1, "authentication_error");
        assert_eq!(ApiError::model_not_allowed("m").status_in(Wire::Anthropic).1, "permission_error");
    }

    #[test]
    fn bodies_in_both_formats() {
        let api = ApiError::invalid("top_k is not supported", "top_k");
        let openai: serde_json::Value = serde_json::from_str(&api.body(Wire::OpenAi)).unwrap();
        assert_eq!(
            openai,
            serde_json::json!({"error": {"message": "top_k is not supported", "type": "invalid_request_error",
                "param": "top_k", "code": "invalid_request"}})
        );
        let anthropic: serde_json::Value = serde_json::from_str(&api.body(Wire::Anthropic)).unwrap();
        assert_eq!(
            anthropic,
            serde_json::json!({"type": "error", "error": {"type": "invalid_request_error",
                "message": "top_k is not supported", "details": {"error_code": "invalid_request"}}})
        );
        let bare = ApiError::new(StatusCode::BAD_GATEWAY, "api_error", "x");
        assert!(!bare.body(Wire::Anthropic).contains("details"), "no code, no details");
    }

    #[test]
    fn overloaded_is_529_with_retry_headers_for_anthropic() {
        let reply = ErrorReply::new(ErrorType::Overloaded, "overloaded", "busy").with_retry_after_ms(1500);
        let response = ApiError::from(&reply).into_response_in(Wire::Anthropic);
        assert_eq!(response.status().as_u16(), 529);
        assert_eq!(response.headers()["retry-after-ms"], "1500");
        assert_eq!(response.headers()["x-should-retry"], "true");
        let response = ApiError::invalid("x", "y").into_response_in(Wire::Anthropic);
        assert_eq!(response.headers()["x-should-retry"], "false");
    }

    #[test]
    fn overloaded_says_when_to_retry() {
        let reply = ErrorReply::new(ErrorType::Overloaded, "overloaded", "busy").with_retry_after_ms(1500);
        let response = ApiError::from(&reply).into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        assert_eq!(response.headers()["retry-after-ms"], "1500");
        assert_eq!(response.headers()["x-should-retry"], "true");
    }
}
