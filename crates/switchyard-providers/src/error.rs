//! The errors this crate returns.
//!
//! A [`ProviderError`] is a failed upstream call, already classified: callers decide on retries, fallbacks and
//! breakers from its [`FailureClass`] alone and never look at HTTP codes. Its message is redacted before it is
//! built, so it can be logged and sent across the cluster as it is.

use switchyard_core::FailureClass;

/// One failed upstream call, classified once.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{} from {provider}{}: {message}", .class.as_str(), StatusSuffix(*.status))]
pub struct ProviderError {
    /// What the failure means for retries, fallbacks and breakers.
    pub class: FailureClass,
    /// The HTTP status of an error response; `None` when the failure arrived otherwise (a transport error, an
    /// error event inside a stream, a malformed or filtered answer).
    pub status: Option<u16>,
    /// What went wrong, with API keys redacted and long upstream bodies cut.
    pub message: String,
    /// The configured name of the provider that failed.
    pub provider: String,
}

/// Renders ` (http 429)` after the provider name when there is a status.
struct StatusSuffix(Option<u16>);

impl std::fmt::Display for StatusSuffix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(status) => write!(f, " (http {status})"),
            None => Ok(()),
        }
    }
}

/// The shared HTTP client could not be built (the platform's certificate verifier could not be set up).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the http client: {source}")]
pub struct HttpClientError {
    #[from]
    source: std::io::Error,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_class_provider_and_status() {
        let check = |status: Option<u16>, expected: &str| {
            let err = ProviderError {
                class: FailureClass::Fatal { auth: true },
                status,
                message: "invalid x-api-key".to_owned(),
                provider: "anthropic-main".to_owned(),
            };
            assert_eq!(err.to_string(), expected);
        };
        check(Some(401), "auth from anthropic-main (http 401): invalid x-api-key");
        check(None, "auth from anthropic-main: invalid x-api-key");
    }
}
