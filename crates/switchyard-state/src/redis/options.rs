//! How a [`RedisStore`](crate::RedisStore) reaches Redis: options, URLs, TLS material, and redaction.
//!
//! A node's configuration becomes [`RedisOptions`] plus a URL; this module turns them into a `redis::Client`.
//! The URL may carry an ACL user and password (`redis://user:password@host:6379`) and ask for TLS
//! (`rediss://`), so it is never stored or printed as given: [`redact_url`] replaces the password with `***`
//! for `Debug` output and errors.

use std::path::PathBuf;
use std::time::Duration;

use redis::RedisError;

use crate::StateError;
use crate::types::ms;

/// The key prefix of production deployments; every key lives under it.
pub const DEFAULT_KEY_PREFIX: &str = "switchyard:v1:";

/// How long one store call may take by default before it fails with [`StateError::Timeout`].
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_millis(50);

/// How long [`RedisStore::connect`](crate::RedisStore::connect) and each reconnection attempt may take by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How a [`RedisStore`](crate::RedisStore) connects and bounds its calls. The URL is passed separately, to
/// [`RedisStore::connect`](crate::RedisStore::connect), because it may hold a password.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// Prepended to every key; must not contain braces or whitespace. Default [`DEFAULT_KEY_PREFIX`]; tests use a
    /// unique prefix each.
    pub key_prefix: String,
    /// The bound on every store call, connection wait included. Default [`DEFAULT_CALL_TIMEOUT`].
    pub call_timeout: Duration,
    /// The bound on [`RedisStore::connect`](crate::RedisStore::connect) and on each background reconnection attempt.
    pub connect_timeout: Duration,
    /// The longest pause between background reconnection attempts (they back off exponentially from 50 ms).
    pub reconnect_max_delay: Duration,
    /// A PEM file of the CA(s) to trust for `rediss://` instead of the system's roots.
    pub tls_ca_file: Option<PathBuf>,
    /// A PEM client certificate for mutual TLS (with `tls_client_key`).
    pub tls_client_cert: Option<PathBuf>,
    /// The PEM private key of `tls_client_cert`.
    pub tls_client_key: Option<PathBuf>,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            call_timeout: DEFAULT_CALL_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            reconnect_max_delay: Duration::from_millis(500),
            tls_ca_file: None,
            tls_client_cert: None,
            tls_client_key: None,
        }
    }
}

impl RedisOptions {
    /// Rejects options that cannot work, naming the field.
    pub fn validate(&self) -> Result<(), StateError> {
        if self.key_prefix.contains(['{', '}']) || self.key_prefix.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(StateError::config("key_prefix", "must not contain braces, whitespace or control characters"));
        }
        for (field, value) in [
            ("call_timeout", self.call_timeout),
            ("connect_timeout", self.connect_timeout),
            ("reconnect_max_delay", self.reconnect_max_delay),
        ] {
            if ms(value) == 0 {
                return Err(StateError::config(field, "must be at least 1 ms"));
            }
        }
        if self.tls_client_cert.is_some() != self.tls_client_key.is_some() {
            return Err(StateError::config("tls_client_key", "a client certificate and its key go together"));
        }
        Ok(())
    }
}

/// A Redis client for `url` with the TLS material of `options`.
pub(super) fn client(url: &str, options: &RedisOptions) -> Result<redis::Client, StateError> {
    options.validate()?;
    let tls = url.starts_with("rediss://");
    if tls {
        install_crypto_provider();
    }
    let invalid = |error: RedisError| StateError::config("url", format!("{}: {error}", redact_url(url)));
    match tls_certificates(options, tls)? {
        None => redis::Client::open(url).map_err(invalid),
        Some(certificates) => redis::Client::build_with_tls(url, certificates).map_err(invalid),
    }
}

/// The CA and client certificate of `options`, read from their files; `None` when none is configured. They need
/// TLS (`tls`: the URLs are `rediss://`).
pub(super) fn tls_certificates(
    options: &RedisOptions,
    tls: bool,
) -> Result<Option<redis::TlsCertificates>, StateError> {
    if options.tls_ca_file.is_none() && options.tls_client_cert.is_none() {
        return Ok(None);
    }
    if !tls {
        return Err(StateError::config("tls_ca_file", "TLS files need a rediss:// URL"));
    }
    let read = |field: &'static str, path: &PathBuf| {
        std::fs::read(path)
            .map_err(|error| StateError::config(field, format!("cannot read {}: {error}", path.display())))
    };
    let root_cert = options.tls_ca_file.as_ref().map(|path| read("tls_ca_file", path)).transpose()?;
    let client_tls = match (&options.tls_client_cert, &options.tls_client_key) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: read("tls_client_cert", cert)?,
            client_key: read("tls_client_key", key)?,
        }),
        _ => None,
    };
    Ok(Some(redis::TlsCertificates { client_tls, root_cert }))
}

/// rustls needs a process-wide crypto provider and cannot choose one when several are compiled in (the workspace
/// has both `ring` and `aws-lc-rs`); install `ring` unless the binary installed one already.
pub(super) fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing the race to another installer is fine: a provider is installed either way.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// `redis://user:secret@host:6379/0` becomes `redis://user:***@host:6379/0`, and a `password=` or `pass=` query
/// value becomes `***`; URLs without credentials are unchanged.
pub(crate) fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").map_or(("", url), |(scheme, rest)| (scheme, rest));
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) if matches!(name, "password" | "pass") => format!("{name}=***"),
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    if scheme.is_empty() { format!("{authority}{tail}") } else { format!("{scheme}://{authority}{tail}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction() {
        let check = |url: &str, expected: &str| assert_eq!(redact_url(url), expected);
        check("redis://127.0.0.1:6379", "redis://127.0.0.1:6379");
        check("redis://alice:s3cret@10.0.0.1:6379/2", "redis://alice:***@10.0.0.1:6379/2");
        check("rediss://:s3cret@cache.internal", "rediss://:***@cache.internal");
        check("redis://alice@host", "redis://alice@host");
        check("redis+unix:///run/redis.sock?db=1&pass=s3cret", "redis+unix:///run/redis.sock?db=1&pass=***");
        check("redis://u:p@ss@host", "redis://u:***@host");
    }

    #[test]
    fn options_validation_names_the_field() {
        let check = |options: RedisOptions, field: &str| match options.validate() {
            Err(StateError::Config { field: got, .. }) => assert_eq!(got, field),
            other => panic!("expected a config error on {field}, got {other:?}"),
        };
        assert!(RedisOptions::default().validate().is_ok());
        check(RedisOptions { key_prefix: "a{b}:".into(), ..RedisOptions::default() }, "key_prefix");
        check(RedisOptions { call_timeout: Duration::ZERO, ..RedisOptions::default() }, "call_timeout");
        check(RedisOptions { tls_client_cert: Some("c.pem".into()), ..RedisOptions::default() }, "tls_client_key");
    }
}
