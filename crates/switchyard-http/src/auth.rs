//! API keys: which key a request carries, and what that key may do.
//!
//! OpenAI clients send a key as `Authorization: Bearer <key>`; Anthropic clients send it in `x-api-key` (or, with
//! an auth token, as a bearer key), so `/v1/messages` reads `x-api-key` when present and the bearer key otherwise.
//! Both are checked against the same configured keys.
//!
//! Keys are read once at start-up from where the configuration says ([`switchyard_runtime::secrets::http_key`])
//! and kept as [`SecretString`]s. A presented key is compared with every configured key through SHA-256 digests
//! and a comparison that looks at every byte, so neither the time taken nor an early exit tells how much of a key
//! matched or which key it was close to. A key is never logged: logs and traces name the key's `name`.

use std::collections::BTreeMap;

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use switchyard_runtime::config::HttpKeySection;
use switchyard_runtime::{ConfigError, secrets};

/// One accepted key.
pub struct Key {
    /// The configured name (for logs).
    pub name: String,
    digest: [u8; 32],
    section: HttpKeySection,
}

impl Key {
    /// Whether this key may ask `route`.
    pub fn allows(&self, route: &str) -> bool {
        self.section.allows(route)
    }

    /// The metadata set on every query of this key.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.section.metadata
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key").field("name", &self.name).finish_non_exhaustive()
    }
}

/// The keys a door accepts.
#[derive(Debug, Default)]
pub struct Keys {
    keys: Vec<Key>,
}

impl Keys {
    /// Reads every key the sections name; a missing one is a [`ConfigError`] naming its field.
    pub fn load(sections: &[HttpKeySection]) -> Result<Self, ConfigError> {
        let keys = sections
            .iter()
            .enumerate()
            .map(|(index, section)| {
                let secret = secrets::http_key(index, section)?;
                Ok(Key { name: section.name.clone(), digest: digest(&secret), section: section.clone() })
            })
            .collect::<Result<_, ConfigError>>()?;
        Ok(Self { keys })
    }

    /// The key of a request's `Authorization: Bearer <key>` header, if it is one of ours.
    pub fn authenticate(&self, headers: &HeaderMap) -> Option<&Key> {
        self.find(bearer(headers)?)
    }

    /// The key of a request's `x-api-key` header, or of its bearer key when it has no `x-api-key` (Anthropic's
    /// clients send one or the other), if it is one of ours.
    pub fn authenticate_api_key(&self, headers: &HeaderMap) -> Option<&Key> {
        match headers.get(X_API_KEY) {
            Some(presented) => self.find(presented.to_str().ok()?.trim()),
            None => self.authenticate(headers),
        }
    }

    /// The configured key `token` is.
    fn find(&self, token: &str) -> Option<&Key> {
        let presented = digest(&SecretString::from(token));
        // Every key is compared, whichever matches.
        let mut found = None;
        for key in &self.keys {
            if equal(&key.digest, &presented) {
                found = Some(key);
            }
        }
        found
    }
}

/// The header Anthropic's clients send their key in.
const X_API_KEY: &str = "x-api-key";

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let presented = headers.get(AUTHORIZATION)?.to_str().ok()?;
    Some(presented.strip_prefix("Bearer ").or_else(|| presented.strip_prefix("bearer "))?.trim())
}

fn digest(secret: &SecretString) -> [u8; 32] {
    Sha256::digest(secret.expose_secret().as_bytes()).into()
}

/// Compares every byte, whatever the first difference.
fn equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn only_a_configured_bearer_key_authenticates() {
        let dir = std::env::temp_dir().join(format!("switchyard-http-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        std::fs::write(&path, "sk-door-SECRET\n").unwrap();
        let section = HttpKeySection {
            name: "team".into(),
            key_env: None,
            key_file: Some(path),
            routes: vec!["chat".into()],
            metadata: BTreeMap::new(),
        };
        let keys = Keys::load(&[section]).unwrap();
        let headers = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(AUTHORIZATION, value.parse().unwrap());
            headers
        };
        assert_eq!(keys.authenticate(&headers("Bearer sk-door-SECRET")).map(|k| k.name.as_str()), Some("team"));
        assert!(keys.authenticate(&headers("Bearer sk-door-SECRE")).is_none());
        assert!(keys.authenticate(&headers("sk-door-SECRET")).is_none(), "the scheme is needed");
        assert!(keys.authenticate(&HeaderMap::new()).is_none());
        let api_key = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(X_API_KEY, value.parse().unwrap());
            headers
        };
        let name = |key: Option<&Key>| key.map(|k| k.name.clone());
        assert_eq!(name(keys.authenticate_api_key(&api_key("sk-door-SECRET"))), Some("team".into()));
        assert_eq!(name(keys.authenticate_api_key(&headers("Bearer sk-door-SECRET"))), Some("team".into()));
        assert!(keys.authenticate_api_key(&api_key("sk-door-SECRE")).is_none());
        assert!(keys.authenticate(&api_key("sk-door-SECRET")).is_none(), "x-api-key is for /v1/messages only");
        let mut both = api_key("sk-wrong");
        both.insert(AUTHORIZATION, "Bearer sk-door-SECRET".parse().unwrap());
        assert!(keys.authenticate_api_key(&both).is_none(), "x-api-key, when sent, is the key");
        assert!(keys.authenticate_api_key(&HeaderMap::new()).is_none());
        assert!(!format!("{keys:?}").contains("SECRET"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
