//! The door's errors: [`HttpError`] for starting it, [`ApiError`] for what a request receives.
//!
//! An [`ApiError`] is written in OpenAI's format (`{"error": {"message", "type", "param", "code"}}`) with the
//! status the official SDKs map to their exception classes: 400 invalid, 401 bad key, 403 model not allowed for
//! the key, 404 unknown model, 409 idempotency conflict, 413 too large, 429 overloaded (with `Retry-After` and
//! `retry-after-ms`), 502 upstream failure, 503 no provider or no router, 504 deadline. Errors a retry cannot
//! fix say so with `x-should-retry: false`, which the SDKs honour. Messages never carry a key.

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

/// An error answer in OpenAI's format.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
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

    pub fn unauthorized() -> Self {
        let message = "invalid API key: send `Authorization: Bearer <key>` with a key this gateway knows";
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

    /// The body, as JSON text (also an SSE `data:` line of a stream that failed after it started).
    pub fn body(&self) -> String {
        let body = Body {
            error: Inner {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code.as_deref(),
            },
        };
        serde_json::to_string(&body).unwrap_or_default()
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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, [(header::CONTENT_TYPE, "application/json")], self.body()).into_response();
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

    #[test]
    fn overloaded_says_when_to_retry() {
        let reply = ErrorReply::new(ErrorType::Overloaded, "overloaded", "busy").with_retry_after_ms(1500);
        let response = ApiError::from(&reply).into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        assert_eq!(response.headers()["retry-after-ms"], "1500");
        assert_eq!(response.headers()["x-should-retry"], "true");
    }
}
