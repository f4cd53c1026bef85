//! How to reach and authenticate to NATS, with secrets kept out of logs.
//!
//! A node's configuration is turned into [`NatsOptions`] by the binary; this module turns those
//! into `async_nats::ConnectOptions`. Tokens, passwords and nkey seeds are [`SecretString`]s and
//! credentials embedded in server URLs are redacted, so printing the options (`{:?}`) or a
//! connection error never leaks a secret.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::BusError;

/// The NATS server a node connects to when none is configured.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// How long one connection attempt may take by default: short, so a bad URL fails fast.
pub const DEFAULT_CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);

/// How long `flush`, `subscribe` and `drain` wait by default for the server to confirm.
pub const DEFAULT_SYNC_TIMEOUT: Duration = Duration::from_secs(5);

/// How the client authenticates to the server.
#[derive(Clone, Default)]
pub enum NatsAuth {
    /// No credentials (or credentials embedded in the server URL).
    #[default]
    None,
    /// A shared token.
    Token(SecretString),
    /// A user name and password.
    UserPassword {
        /// The user name.
        user: String,
        /// The password.
        password: SecretString,
    },
    /// An nkey seed (`SU…`); the client signs the server's nonce with it.
    NKey {
        /// The seed.
        seed: SecretString,
    },
    /// A `.creds` file holding a user JWT and its nkey seed (decentralised auth).
    CredsFile(PathBuf),
}

impl fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NatsAuth::None => f.write_str("None"),
            NatsAuth::Token(_) => f.write_str("Token([REDACTED])"),
            NatsAuth::UserPassword { user, .. } => {
                f.debug_struct("UserPassword").field("user", user).field("password", &"[REDACTED]").finish()
            }
            NatsAuth::NKey { .. } => f.write_str("NKey { seed: [REDACTED] }"),
            NatsAuth::CredsFile(path) => f.debug_tuple("CredsFile").field(path).finish(),
        }
    }
}

/// Everything [`crate::NatsBus::connect`] needs.
///
/// Build it with [`NatsOptions::new`] and struct-update syntax:
/// `NatsOptions { name: Some("node-1".into()), ..NatsOptions::new("nats://nats:4222") }`.
#[derive(Clone)]
pub struct NatsOptions {
    /// Server URLs (`nats://host:4222`, `tls://host:4222`); the client picks among them and
    /// fails over between them.
    pub servers: Vec<String>,
    /// The client name shown by the server's monitoring.
    pub name: Option<String>,
    /// Credentials.
    pub auth: NatsAuth,
    /// Refuse to talk to a server that does not offer TLS.
    pub tls_required: bool,
    /// A PEM file of CA certificates to trust instead of the system roots.
    pub tls_ca_file: Option<PathBuf>,
    /// A PEM client certificate for mutual TLS; needs [`NatsOptions::tls_client_key`].
    pub tls_client_cert: Option<PathBuf>,
    /// The PEM private key of [`NatsOptions::tls_client_cert`].
    pub tls_client_key: Option<PathBuf>,
    /// How long one connection attempt may take (default 2 s).
    pub connection_timeout: Duration,
    /// How long `flush`, `subscribe` and `drain` wait for the server to confirm it has
    /// processed everything sent before (default 5 s); see [`crate::NatsBus`].
    pub sync_timeout: Duration,
    /// Keep retrying in the background when the first connection fails, instead of failing
    /// (default `false`: a bad URL or a down server is reported at once).
    pub retry_on_initial_connect: bool,
    /// Give up after this many failed reconnections in a row; `None` (the default) never gives
    /// up, which is what a long-running node wants.
    pub max_reconnects: Option<usize>,
    /// Prefix of reply inboxes instead of `_INBOX`, for servers whose permissions allow each
    /// user only its own inbox subjects.
    pub inbox_prefix: Option<String>,
}

impl NatsOptions {
    /// Options for one server URL, no auth, no TLS requirement, defaults elsewhere.
    pub fn new(server: impl Into<String>) -> Self {
        NatsOptions {
            servers: vec![server.into()],
            name: None,
            auth: NatsAuth::None,
            tls_required: false,
            tls_ca_file: None,
            tls_client_cert: None,
            tls_client_key: None,
            connection_timeout: DEFAULT_CONNECTION_TIMEOUT,
            sync_timeout: DEFAULT_SYNC_TIMEOUT,
            retry_on_initial_connect: false,
            max_reconnects: None,
            inbox_prefix: None,
        }
    }

    /// The server URLs with any password or token replaced by `***`, comma-separated.
    pub fn redacted_servers(&self) -> String {
        self.servers.iter().map(|server| redact_url(server)).collect::<Vec<_>>().join(",")
    }

    /// Rejects options that cannot work, naming the field.
    pub fn validate(&self) -> Result<(), BusError> {
        if self.servers.is_empty() {
            return Err(config("servers", "at least one server URL is required"));
        }
        if self.servers.iter().any(|server| server.trim().is_empty()) {
            return Err(config("servers", "a server URL is empty"));
        }
        if self.connection_timeout.is_zero() {
            return Err(config("connection_timeout", "must be positive"));
        }
        if self.sync_timeout.is_zero() {
            return Err(config("sync_timeout", "must be positive"));
        }
        match (&self.tls_client_cert, &self.tls_client_key) {
            (Some(_), None) => {
                return Err(config("tls_client_key", "a client certificate needs its private key"));
            }
            (None, Some(_)) => {
                return Err(config("tls_client_cert", "a client key needs its certificate"));
            }
            _ => {}
        }
        if let Some(prefix) = &self.inbox_prefix
            && !crate::subject::is_valid_subject(prefix)
        {
            return Err(config("inbox_prefix", "not a valid subject"));
        }
        match &self.auth {
            NatsAuth::Token(token) if token.expose_secret().is_empty() => Err(config("auth.token", "empty")),
            NatsAuth::UserPassword { user, .. } if user.is_empty() => Err(config("auth.user", "empty")),
            NatsAuth::NKey { seed } if seed.expose_secret().is_empty() => Err(config("auth.nkey_seed", "empty")),
            _ => Ok(()),
        }
    }

    /// The `async-nats` options these stand for (the server list is passed separately).
    pub(crate) async fn to_connect_options(&self) -> Result<async_nats::ConnectOptions, BusError> {
        let options = match &self.auth {
            NatsAuth::None => async_nats::ConnectOptions::new(),
            NatsAuth::Token(token) => async_nats::ConnectOptions::with_token(token.expose_secret().to_owned()),
            NatsAuth::UserPassword { user, password } => {
                async_nats::ConnectOptions::with_user_and_password(user.clone(), password.expose_secret().to_owned())
            }
            NatsAuth::NKey { seed } => async_nats::ConnectOptions::with_nkey(seed.expose_secret().to_owned()),
            NatsAuth::CredsFile(path) => {
                async_nats::ConnectOptions::with_credentials_file(path).await.map_err(|error| BusError::Config {
                    field: "auth.creds_file",
                    reason: format!("cannot read {}: {error}", path.display()),
                })?
            }
        };
        let mut options = options
            .connection_timeout(self.connection_timeout)
            .require_tls(self.tls_required)
            .max_reconnects(self.max_reconnects);
        if let Some(name) = &self.name {
            options = options.name(name);
        }
        if let Some(ca_file) = &self.tls_ca_file {
            options = options.add_root_certificates(ca_file.clone());
        }
        if let (Some(cert), Some(key)) = (&self.tls_client_cert, &self.tls_client_key) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if self.retry_on_initial_connect {
            options = options.retry_on_initial_connect();
        }
        if let Some(prefix) = &self.inbox_prefix {
            options = options.custom_inbox_prefix(prefix);
        }
        Ok(options)
    }
}

impl Default for NatsOptions {
    fn default() -> Self {
        Self::new(DEFAULT_NATS_URL)
    }
}

impl fmt::Debug for NatsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsOptions")
            .field("servers", &self.redacted_servers())
            .field("name", &self.name)
            .field("auth", &self.auth)
            .field("tls_required", &self.tls_required)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_client_cert", &self.tls_client_cert)
            .field("tls_client_key", &self.tls_client_key)
            .field("connection_timeout", &self.connection_timeout)
            .field("sync_timeout", &self.sync_timeout)
            .field("retry_on_initial_connect", &self.retry_on_initial_connect)
            .field("max_reconnects", &self.max_reconnects)
            .field("inbox_prefix", &self.inbox_prefix)
            .finish()
    }
}

fn config(field: &'static str, reason: &str) -> BusError {
    BusError::Config { field, reason: reason.to_owned() }
}

/// `nats://user:secret@host:4222` becomes `nats://user:***@host:4222`, and
/// `nats://token@host` becomes `nats://***@host`; URLs without credentials are unchanged.
pub(crate) fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let authority_len = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_len].rfind('@') else {
        return url.to_owned();
    };
    let userinfo = match rest[..at].split_once(':') {
        Some((user, _secret)) => format!("{user}:***"),
        None => "***".to_owned(),
    };
    let host = &rest[at + 1..];
    match scheme {
        Some(scheme) => format!("{scheme}://{userinfo}@{host}"),
        None => format!("{userinfo}@{host}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        let table = [
            ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
            ("nats://alice:s3cret@host:4222", "nats://alice:***@host:4222"),
            ("tls://t0ken@host:4222", "tls://***@host:4222"),
            ("alice:s3cret@host", "alice:***@host"),
            ("nats://a:b@c@host/path@x", "nats://a:***@host/path@x"),
            ("host:4222", "host:4222"),
        ];
        for (url, expected) in table {
            assert_eq!(redact_url(url), expected, "{url}");
        }
    }

    #[test]
    fn debug_output_has_no_secrets() {
        let cases = [
            NatsAuth::Token("tok-SECRET".into()),
            NatsAuth::UserPassword { user: "alice".into(), password: "pw-SECRET".into() },
            NatsAuth::NKey { seed: "SU-SECRET".into() },
        ];
        for auth in cases {
            let options =
                NatsOptions { auth, servers: vec!["nats://bob:url-SECRET@host:4222".into()], ..NatsOptions::default() };
            let printed = format!("{options:?} {:#?}", options.auth);
            assert!(!printed.contains("SECRET"), "{printed}");
            assert!(printed.contains("[REDACTED]"), "{printed}");
        }
    }

    #[test]
    fn validation_names_the_field() {
        let check = |options: NatsOptions, field: &str| match options.validate() {
            Err(BusError::Config { field: actual, .. }) => assert_eq!(actual, field),
            other => panic!("expected a config error on {field}, got {other:?}"),
        };
        check(NatsOptions { servers: vec![], ..NatsOptions::default() }, "servers");
        check(NatsOptions { tls_client_cert: Some("cert.pem".into()), ..NatsOptions::default() }, "tls_client_key");
        check(NatsOptions { connection_timeout: Duration::ZERO, ..NatsOptions::default() }, "connection_timeout");
        check(NatsOptions { auth: NatsAuth::Token(String::new().into()), ..NatsOptions::default() }, "auth.token");
        check(NatsOptions { inbox_prefix: Some("bad prefix".into()), ..NatsOptions::default() }, "inbox_prefix");
        assert!(NatsOptions::default().validate().is_ok());
    }
}
