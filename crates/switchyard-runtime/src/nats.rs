//! Connecting to NATS from the `[nats]` section of the configuration, or from a client's URL.
//!
//! Secrets are never in the file itself: the section names environment variables or files that hold them, read
//! through [`crate::secrets`] (so a missing one is a [`ConfigError`] naming its field). With the permissions of
//! `deploy/nats-accounts.conf` each user may read replies only under its own inbox prefix (`nats.inbox_prefix`,
//! `--inbox-prefix`).

use secrecy::SecretString;

use switchyard_bus::{BusError, NatsAuth, NatsBus, NatsOptions};

use crate::config::{ConfigError, NatsSection};

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// Connects with everything the section configures: auth, TLS, the inbox prefix, and a client name.
pub async fn connect(section: &NatsSection, name: &str) -> Result<NatsBus, ConnectError> {
    crate::secrets::nats_tls_files(section)?;
    let options = NatsOptions {
        name: Some(format!("switchyard-{name}")),
        auth: crate::secrets::nats_auth(section)?,
        tls_required: section.tls_required,
        tls_ca_file: section.tls_ca_file.clone(),
        tls_client_cert: section.tls_cert_file.clone(),
        tls_client_key: section.tls_key_file.clone(),
        inbox_prefix: section.inbox_prefix.clone(),
        servers: section.servers(),
        ..NatsOptions::default()
    };
    Ok(NatsBus::connect(options).await?)
}

/// Connects to `url` without credentials, or with those embedded in it (`nats://user:password@host:4222`, or
/// `nats://token@host:4222`): the clients' way. `url` may list several servers of one NATS cluster, separated by
/// commas (`nats://a:4222,nats://b:4222`); credentials are taken from the first that has some. `inbox_prefix`
/// replaces `_INBOX` for servers that allow each user only its own inboxes.
pub async fn connect_url(url: &str, inbox_prefix: Option<&str>) -> Result<NatsBus, BusError> {
    let mut servers = Vec::new();
    let mut auth = NatsAuth::None;
    for one in url.split(',').map(str::trim).filter(|one| !one.is_empty()) {
        let (server, found) = split_credentials(one);
        if matches!(auth, NatsAuth::None) {
            auth = found;
        }
        servers.push(server);
    }
    let options = NatsOptions {
        name: Some("switchyard-client".into()),
        auth,
        inbox_prefix: inbox_prefix.map(str::to_owned),
        servers,
        ..NatsOptions::default()
    };
    NatsBus::connect(options).await
}

/// Takes the credentials out of a server URL (`async-nats` does not send those of the URL itself). The user ends at
/// the first `:`, the password at the last `@`; nothing is percent-decoded.
fn split_credentials(url: &str) -> (String, NatsAuth) {
    let Some((scheme, rest)) = url.split_once("://") else { return (url.to_owned(), NatsAuth::None) };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else { return (url.to_owned(), NatsAuth::None) };
    let server = format!("{scheme}://{}", &rest[at + 1..]);
    let auth = match rest[..at].split_once(':') {
        Some((user, password)) => {
            NatsAuth::UserPassword { user: user.to_owned(), password: SecretString::from(password.to_owned()) }
        }
        None => NatsAuth::Token(SecretString::from(rest[..at].to_owned())),
    };
    (server, auth)
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn credentials_come_out_of_the_url() {
        let (server, auth) = split_credentials("nats://client:p%w:d@127.0.0.1:4222");
        assert_eq!(server, "nats://127.0.0.1:4222");
        match auth {
            NatsAuth::UserPassword { user, password } => {
                assert_eq!((user.as_str(), password.expose_secret()), ("client", "p%w:d"));
            }
            other => panic!("expected a user and password, got {other:?}"),
        }
        let (server, auth) = split_credentials("tls://s3cret@nats.example:4222");
        assert_eq!(server, "tls://nats.example:4222");
        assert!(matches!(auth, NatsAuth::Token(token) if token.expose_secret() == "s3cret"));
        let (server, auth) = split_credentials("nats://127.0.0.1:4222");
        assert_eq!(server, "nats://127.0.0.1:4222");
        assert!(matches!(auth, NatsAuth::None));
    }
}
