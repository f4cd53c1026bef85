//! API keys: where they come from, and how they are kept out of every message.
//!
//! A key is read once, from the environment, a file or the configuration, into a [`SecretString`]; it is exposed
//! only to build a request header, and that header is marked sensitive. Upstream error bodies sometimes echo the
//! key back (OpenAI answers a bad key with "Incorrect API key provided: sk-proj-****abcd"), so every message that
//! leaves this crate passes through [`redact`] first: the exact key and anything shaped like an `sk-…` or
//! `sk-ant-…` token become `[redacted]`.

use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};

/// What a redacted secret is replaced with.
pub const REDACTED: &str = "[redacted]";

/// The longest message a [`crate::ProviderError`] carries; upstream bodies can be large.
const MAX_MESSAGE_CHARS: usize = 512;

/// Where a provider's API key comes from.
///
/// Deserializes from configuration as `{ env = "OPENAI_API_KEY" }`, `{ file = "/run/secrets/openai" }` or
/// `{ inline = "sk-…" }` (inline keys are meant for tests and local experiments).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiKeySource {
    /// The named environment variable.
    Env(String),
    /// A file that holds only the key; surrounding whitespace and the trailing newline are ignored.
    File(PathBuf),
    /// The key itself.
    Inline(SecretString),
}

/// Why an API key could not be loaded. Names the variable or the file, never the key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The environment variable is not set.
    #[error("environment variable {var} is not set")]
    EnvMissing {
        /// The variable's name.
        var: String,
    },
    /// The environment variable holds bytes that are not valid unicode.
    #[error("environment variable {var} is not valid unicode")]
    EnvNotUnicode {
        /// The variable's name.
        var: String,
    },
    /// The key file could not be read.
    #[error("cannot read api key file {}: {source}", path.display())]
    File {
        /// The file's path.
        path: PathBuf,
        /// Why reading failed.
        #[source]
        source: std::io::Error,
    },
    /// The source exists but holds nothing but whitespace.
    #[error("api key from {origin} is empty")]
    Empty {
        /// Where the key was looked for: `environment variable X`, `file /path` or `inline configuration`.
        origin: String,
    },
}

/// Loads an API key from its source, trimming surrounding whitespace (a key file usually ends with a newline).
pub fn load_api_key(source: &ApiKeySource) -> Result<SecretString, KeyError> {
    let (raw, origin) = match source {
        ApiKeySource::Env(var) => {
            let raw = std::env::var(var).map_err(|err| match err {
                std::env::VarError::NotPresent => KeyError::EnvMissing { var: var.clone() },
                std::env::VarError::NotUnicode(_) => KeyError::EnvNotUnicode { var: var.clone() },
            })?;
            (raw, format!("environment variable {var}"))
        }
        ApiKeySource::File(path) => {
            let raw = std::fs::read_to_string(path).map_err(|source| KeyError::File { path: path.clone(), source })?;
            (raw, format!("file {}", path.display()))
        }
        ApiKeySource::Inline(key) => (key.expose_secret().to_owned(), "inline configuration".to_owned()),
    };
    let key = raw.trim();
    if key.is_empty() {
        return Err(KeyError::Empty { origin });
    }
    Ok(SecretString::from(key))
}

/// Removes the exact `key` and every `sk-…`-shaped token from `text`, then caps its length.
///
/// Used on every message built from upstream output or transport errors before it reaches a
/// [`crate::ProviderError`] or a log line.
pub(crate) fn redact(text: &str, key: Option<&SecretString>) -> String {
    let without_key = match key.map(|key| key.expose_secret()) {
        Some(key) if !key.is_empty() => text.replace(key, REDACTED),
        _ => text.to_owned(),
    };
    truncate(&redact_key_like(&without_key), MAX_MESSAGE_CHARS)
}

/// Replaces tokens that look like API keys (`sk-`, `sk-proj-`, `sk-ant-api03-` followed by key characters, at a word
/// boundary) with [`REDACTED`]. Masked echoes such as `sk-proj-****abcd` count too: even a key's tail is a secret.
fn redact_key_like(text: &str) -> String {
    const PREFIX: &str = "sk-";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find(PREFIX) {
        let before = rest[..pos].chars().next_back().or_else(|| out.chars().next_back());
        let at_boundary = before.is_none_or(|c| !is_key_char(c));
        let tail = &rest[pos + PREFIX.len()..];
        let run = tail.find(|c: char| !is_key_char(c)).unwrap_or(tail.len());
        if at_boundary && run >= 4 {
            out.push_str(&rest[..pos]);
            out.push_str(REDACTED);
            rest = &tail[run..];
        } else {
            out.push_str(&rest[..pos + PREFIX.len()]);
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '*')
}

/// Cuts `text` to at most `max` characters, marking the cut.
fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn redaction_removes_keys_and_key_shaped_tokens() {
        let check = |text: &str, key: Option<&str>, expected: &str| {
            let key = key.map(SecretString::from);
            assert_eq!(redact(text, key.as_ref()), expected, "redacting {text:?}");
        };
        check(
            "Incorrect API key provided: sk-proj-****abcd. You can find your API key at https://x",
            None,
            "Incorrect API key provided: [redacted]. You can find your API key at https://x",
        );
        check("bad key sk-ant-api03-AbC_dEf-123", None, "bad key [redacted]");
        check("key=tgp_v1_secretvalue9876 rejected", Some("tgp_v1_secretvalue9876"), "key=[redacted] rejected");
        check("task-1234 and ask-me and sk-1", None, "task-1234 and ask-me and sk-1");
        check("(sk-abcdef)", None, "([redacted])");
        check("no secrets here", Some(""), "no secrets here");
        assert_eq!(redact(&"é".repeat(600), None).chars().count(), MAX_MESSAGE_CHARS + 1);
    }

    #[test]
    fn keys_load_trimmed_from_files_and_errors_name_the_source() {
        let dir = std::env::temp_dir().join(format!("switchyard-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        std::fs::write(&path, "  sk-file-key-123\n").unwrap();
        let key = load_api_key(&ApiKeySource::File(path.clone())).unwrap();
        assert_eq!(key.expose_secret(), "sk-file-key-123");

        std::fs::write(&path, "\n\n").unwrap();
        let err = load_api_key(&ApiKeySource::File(path.clone())).unwrap_err();
        assert!(matches!(err, KeyError::Empty { .. }), "{err}");
        assert!(err.to_string().contains(&path.display().to_string()));

        let missing = dir.join("missing");
        let err = load_api_key(&ApiKeySource::File(missing.clone())).unwrap_err();
        assert!(matches!(err, KeyError::File { .. }));
        assert!(err.to_string().contains(&missing.display().to_string()));
        std::fs::remove_dir_all(&dir).unwrap();

        let var = "SWITCHYARD_PROVIDERS_TEST_SURELY_UNSET_KEY";
        let err = load_api_key(&ApiKeySource::Env(var.to_owned())).unwrap_err();
        assert!(matches!(err, KeyError::EnvMissing { .. }));
        assert!(err.to_string().contains(var));

        let key = load_api_key(&ApiKeySource::Inline(SecretString::from(" sk-inline-1 "))).unwrap();
        assert_eq!(key.expose_secret(), "sk-inline-1");
        let err = load_api_key(&ApiKeySource::Inline(SecretString::from(" "))).unwrap_err();
        assert!(matches!(err, KeyError::Empty { .. }));
    }

    #[test]
    fn sources_deserialize_from_configuration() {
        let check = |json: &str, expected: &str| {
            let source: ApiKeySource = serde_json::from_str(json).unwrap();
            assert_eq!(format!("{source:?}"), expected);
        };
        check(r#"{"env":"OPENAI_API_KEY"}"#, r#"Env("OPENAI_API_KEY")"#);
        check(r#"{"file":"/run/secrets/openai"}"#, r#"File("/run/secrets/openai")"#);
        check(r#"{"inline":"sk-inline-secret"}"#, "Inline(SecretBox<str>([REDACTED]))");
    }
}
