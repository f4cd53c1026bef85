//! Servers that ask for credentials: a `nats-server` for each kind of NATS auth, with or without TLS, and a
//! TLS-only `redis-server` with an ACL user.
//!
//! Each server is private to its test (a free port, a configuration in a [`TempDir`]) and is killed when dropped.

use std::path::PathBuf;

use crate::nats_jwt::JwtTrust;
use crate::pki::TestPki;
use crate::{ServerProcess, TempDir, free_port};

/// How a test's `nats-server` authenticates clients.
pub enum NatsServerAuth<'a> {
    /// Anyone may connect (TLS tests).
    None,
    /// One shared token.
    Token(&'a str),
    /// One user with a password.
    User { user: &'a str, password: &'a str },
    /// One user known by its public nkey (`U…`).
    NKey(&'a str),
    /// Operator mode: users present JWTs signed by the account of `trust`.
    Jwt(&'a JwtTrust),
}

/// Whether a test's `nats-server` speaks TLS, and whether it verifies client certificates.
pub enum NatsServerTls<'a> {
    Off,
    /// The server presents `pki`'s server certificate.
    Server(&'a TestPki),
    /// The same, and every client must present a certificate issued by `pki`'s CA (`verify: true`).
    Mutual(&'a TestPki),
}

/// A private `nats-server` with auth and TLS as asked, killed when dropped.
pub struct SecuredNats {
    pub server: ServerProcess,
    _dir: TempDir,
}

impl SecuredNats {
    pub fn start(auth: NatsServerAuth<'_>, tls: NatsServerTls<'_>) -> anyhow::Result<SecuredNats> {
        let dir = TempDir::new("nats-conf")?;
        let mut config = match auth {
            NatsServerAuth::None => String::new(),
            NatsServerAuth::Token(token) => format!("authorization {{ token: {} }}\n", quoted(token)),
            NatsServerAuth::User { user, password } => format!(
                "authorization {{ users = [ {{ user: {}, password: {} }} ] }}\n",
                quoted(user),
                quoted(password)
            ),
            NatsServerAuth::NKey(public) => format!("authorization {{ users = [ {{ nkey: {} }} ] }}\n", quoted(public)),
            NatsServerAuth::Jwt(trust) => trust.server_config(&dir.path("operator.jwt"))?,
        };
        let (pki, verify) = match tls {
            NatsServerTls::Off => (None, false),
            NatsServerTls::Server(pki) => (Some(pki), false),
            NatsServerTls::Mutual(pki) => (Some(pki), true),
        };
        if let Some(pki) = pki {
            config.push_str(&format!(
                "tls {{\n  cert_file: {}\n  key_file: {}\n  ca_file: {}\n  verify: {verify}\n  timeout: 2\n}}\n",
                quoted_path(pki.server_cert()),
                quoted_path(pki.server_key()),
                quoted_path(pki.ca()),
            ));
        }
        let path = dir.write("nats.conf", &config)?;
        let server = ServerProcess::nats_with_config(&path, &[])?;
        Ok(SecuredNats { server, _dir: dir })
    }

    /// The server's URL with `scheme` (`nats` or `tls`), without credentials.
    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://127.0.0.1:{}", self.server.port)
    }
}

/// A private `redis-server` that listens only with TLS (`--port 0 --tls-port`), has its default user switched
/// off, and knows one ACL user allowed every non-dangerous command on keys under `switchyard:` only.
pub struct SecuredRedis {
    pub server: ServerProcess,
}

impl SecuredRedis {
    /// `mutual`: clients must present a certificate issued by `pki`'s CA (`--tls-auth-clients yes`); otherwise
    /// they may (`optional`).
    pub fn start(pki: &TestPki, mutual: bool, user: &str, password: &str) -> anyhow::Result<SecuredRedis> {
        let port = free_port()?;
        let (port_arg, cert, key, ca) = (
            port.to_string(),
            pki.server_cert().display().to_string(),
            pki.server_key().display().to_string(),
            pki.ca().display().to_string(),
        );
        let password_rule = format!(">{password}");
        let args = [
            "--port",
            "0",
            "--tls-port",
            &port_arg,
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            if mutual { "yes" } else { "optional" },
            "--user",
            "default",
            "off",
            "--user",
            user,
            "on",
            &password_rule,
            "~switchyard:*",
            "+@all",
            "-@dangerous",
        ];
        Ok(SecuredRedis { server: ServerProcess::redis_with(port, &args)? })
    }

    /// `rediss://user:password@127.0.0.1:port`.
    pub fn url(&self, user: &str, password: &str) -> String {
        format!("rediss://{user}:{password}@127.0.0.1:{}", self.server.port)
    }
}

/// A string in the configuration language of `nats-server`, double-quoted.
fn quoted(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

fn quoted_path(path: PathBuf) -> String {
    quoted(&path.display().to_string())
}
