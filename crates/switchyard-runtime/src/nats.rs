//! Connecting to NATS from the `[nats]` section of the configuration, or from a client's URL.
//!
//! Secrets are never in the file itself: the section names environment variables or files that hold them, read
//! through [`crate::secrets`] (so a missing one is a [`ConfigError`] naming its field). With the permissions of
//! `deploy/nats-accounts.conf` each user may read replies only under its own inbox prefix (`nats.inbox_prefix`,
//! `--inbox-prefix`).

use switchyard_bus::{BusError, NatsBus, NatsOptions};

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
        ..NatsOptions::new(section.url.clone())
    };
    Ok(NatsBus::connect(options).await?)
}

/// Connects to `url` without credentials, or with those embedded in the URL (`nats://user:password@host`): the
/// clients' way. `inbox_prefix` replaces `_INBOX` for servers that allow each user only its own inboxes.
pub async fn connect_url(url: &str, inbox_prefix: Option<&str>) -> Result<NatsBus, BusError> {
    let options = NatsOptions {
        name: Some("switchyard-client".into()),
        inbox_prefix: inbox_prefix.map(str::to_owned),
        ..NatsOptions::new(url)
    };
    NatsBus::connect(options).await
}
