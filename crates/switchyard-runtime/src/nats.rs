//! Connecting to NATS from the `[nats]` section of the configuration.
//!
//! Secrets are never in the file itself: the section names environment variables or files that hold them.

use secrecy::SecretString;

use switchyard_bus::{BusError, NatsAuth, NatsBus, NatsOptions};

use crate::config::NatsSection;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("environment variable `{var}` named by `{field}` is not set")]
    MissingEnv { field: &'static str, var: String },
    #[error("cannot read `{field}` file {path}: {source}")]
    ReadFile { field: &'static str, path: std::path::PathBuf, source: std::io::Error },
    #[error(transparent)]
    Bus(#[from] BusError),
}

fn env_secret(field: &'static str, var: &str) -> Result<SecretString, ConnectError> {
    std::env::var(var).map(SecretString::from).map_err(|_| ConnectError::MissingEnv { field, var: var.to_owned() })
}

/// Connects with everything the section configures: auth, TLS, and a client name.
pub async fn connect(section: &NatsSection, name: &str) -> Result<NatsBus, ConnectError> {
    let auth = if let Some(var) = &section.token_env {
        NatsAuth::Token(env_secret("nats.token_env", var)?)
    } else if let (Some(user), Some(var)) = (&section.user, &section.password_env) {
        NatsAuth::UserPassword { user: user.clone(), password: env_secret("nats.password_env", var)? }
    } else if let Some(path) = &section.nkey_seed_file {
        let seed = std::fs::read_to_string(path).map_err(|source| ConnectError::ReadFile {
            field: "nats.nkey_seed_file",
            path: path.clone(),
            source,
        })?;
        NatsAuth::NKey { seed: SecretString::from(seed.trim().to_owned()) }
    } else if let Some(path) = &section.creds_file {
        NatsAuth::CredsFile(path.clone())
    } else {
        NatsAuth::None
    };
    let options = NatsOptions {
        name: Some(format!("switchyard-{name}")),
        auth,
        tls_required: section.tls_required,
        tls_ca_file: section.tls_ca_file.clone(),
        tls_client_cert: section.tls_cert_file.clone(),
        tls_client_key: section.tls_key_file.clone(),
        ..NatsOptions::new(section.url.clone())
    };
    Ok(NatsBus::connect(options).await?)
}

/// Connects to `url` without credentials (or with those embedded in the URL): the clients' way.
pub async fn connect_url(url: &str) -> Result<NatsBus, BusError> {
    NatsBus::connect(NatsOptions { name: Some("switchyard-client".into()), ..NatsOptions::new(url) }).await
}
