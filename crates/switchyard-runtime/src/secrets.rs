//! Secrets the configuration names, resolved at start-up.
//!
//! The configuration holds no secret of its own (an inline `api_key` aside, meant for tests): it names an
//! environment variable or a file. [`NodeConfig::resolve_secrets`] reads every one the node will need before
//! anything connects, so a missing variable or an unreadable file is a [`ConfigError`] naming its field (the binary
//! exits 64) rather than a connection failure later. The connect functions read secrets through the same resolvers,
//! and no error carries a secret's value.

use std::path::Path;

use secrecy::{ExposeSecret, SecretString};

use switchyard_bus::NatsAuth;
use switchyard_providers::{ApiKeySource, KeyError};

use crate::config::{ConfigError, HttpKeySection, NatsSection, NodeConfig, ProviderSection, RedisSection, Role};

/// The value of environment variable `var`, named by config field `field`; set and not blank.
pub fn env_secret(field: &str, var: &str) -> Result<SecretString, ConfigError> {
    match std::env::var(var) {
        Ok(value) if value.trim().is_empty() => Err(ConfigError::Invalid {
            field: field.to_owned(),
            reason: format!("environment variable `{var}` is empty"),
        }),
        Ok(value) => Ok(SecretString::from(value)),
        Err(std::env::VarError::NotPresent) => {
            Err(ConfigError::MissingEnv { field: field.to_owned(), var: var.to_owned() })
        }
        Err(std::env::VarError::NotUnicode(_)) => Err(ConfigError::Invalid {
            field: field.to_owned(),
            reason: format!("environment variable `{var}` is not valid unicode"),
        }),
    }
}

/// The trimmed content of the file at `path`, named by config field `field`; readable and not blank.
pub fn file_secret(field: &str, path: &Path) -> Result<SecretString, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| unreadable(field, path, source))?;
    let text = text.trim();
    if text.is_empty() {
        return Err(ConfigError::Invalid { field: field.to_owned(), reason: format!("{} is empty", path.display()) });
    }
    Ok(SecretString::from(text))
}

/// Fails unless the file at `path` (a certificate, a creds file) can be opened for reading.
fn readable(field: &str, path: &Path) -> Result<(), ConfigError> {
    std::fs::File::open(path).map(drop).map_err(|source| unreadable(field, path, source))
}

fn unreadable(field: &str, path: &Path, source: std::io::Error) -> ConfigError {
    ConfigError::Unreadable { field: field.to_owned(), path: path.to_owned(), source }
}

/// How to authenticate to NATS, with every secret the `[nats]` section names read.
pub fn nats_auth(section: &NatsSection) -> Result<NatsAuth, ConfigError> {
    if let Some(var) = &section.token_env {
        return Ok(NatsAuth::Token(env_secret("nats.token_env", var)?));
    }
    if let Some(path) = &section.token_file {
        return Ok(NatsAuth::Token(file_secret("nats.token_file", path)?));
    }
    if let Some(user) = &section.user {
        let password = match (&section.password_env, &section.password_file) {
            (Some(var), _) => env_secret("nats.password_env", var)?,
            (None, Some(path)) => file_secret("nats.password_file", path)?,
            // Validation makes a user come with a password source.
            (None, None) => {
                let reason = "`nats.user` needs `nats.password_env` or `nats.password_file`".into();
                return Err(ConfigError::Invalid { field: "nats.password_env".into(), reason });
            }
        };
        return Ok(NatsAuth::UserPassword { user: user.clone(), password });
    }
    if let Some(path) = &section.nkey_seed_file {
        return Ok(NatsAuth::NKey { seed: file_secret("nats.nkey_seed_file", path)? });
    }
    if let Some(path) = &section.creds_file {
        readable("nats.creds_file", path)?;
        return Ok(NatsAuth::CredsFile(path.clone()));
    }
    Ok(NatsAuth::None)
}

/// Checks that the TLS files the `[nats]` section names can be read.
pub fn nats_tls_files(section: &NatsSection) -> Result<(), ConfigError> {
    for (field, path) in [
        ("nats.tls_ca_file", &section.tls_ca_file),
        ("nats.tls_cert_file", &section.tls_cert_file),
        ("nats.tls_key_file", &section.tls_key_file),
    ] {
        if let Some(path) = path {
            readable(field, path)?;
        }
    }
    Ok(())
}

/// Checks that the TLS files the `[redis]` section names can be read.
pub fn redis_tls_files(section: &RedisSection) -> Result<(), ConfigError> {
    for (field, path) in [
        ("redis.tls_ca_file", &section.tls_ca_file),
        ("redis.tls_cert_file", &section.tls_cert_file),
        ("redis.tls_key_file", &section.tls_key_file),
    ] {
        if let Some(path) = path {
            readable(field, path)?;
        }
    }
    Ok(())
}

/// The Redis URL, from the file or from the environment variable `redis.url_env` names.
pub fn redis_url(section: &RedisSection) -> Result<Option<SecretString>, ConfigError> {
    match (&section.url, &section.url_env) {
        (Some(url), _) => Ok(Some(SecretString::from(url.clone()))),
        (None, Some(var)) => {
            let url = env_secret("redis.url_env", var)?;
            let scheme_ok = ["redis://", "rediss://"].iter().any(|s| url.expose_secret().starts_with(s));
            if !scheme_ok {
                let reason = format!("environment variable `{var}` must hold a redis:// or rediss:// URL");
                return Err(ConfigError::Invalid { field: "redis.url_env".into(), reason });
            }
            Ok(Some(url))
        }
        (None, None) => Ok(None),
    }
}

/// The API key of provider `index`, from wherever its section says, if it has one.
pub fn api_key(index: usize, provider: &ProviderSection) -> Result<Option<SecretString>, ConfigError> {
    let (source, field) = match (&provider.api_key, &provider.api_key_env, &provider.api_key_file) {
        (Some(key), _, _) => (ApiKeySource::Inline(key.clone()), "api_key"),
        (_, Some(var), _) => (ApiKeySource::Env(var.clone()), "api_key_env"),
        (_, _, Some(path)) => (ApiKeySource::File(path.clone()), "api_key_file"),
        _ => return Ok(None),
    };
    let field = format!("providers[{index}].{field}");
    switchyard_providers::load_api_key(&source).map(Some).map_err(|error| match error {
        KeyError::EnvMissing { var } => ConfigError::MissingEnv { field, var },
        KeyError::File { path, source } => ConfigError::Unreadable { field, path, source },
        other => ConfigError::Invalid { field, reason: other.to_string() },
    })
}

/// The bearer key `index` of the `[http]` section, from its environment variable or file.
pub fn http_key(index: usize, key: &HttpKeySection) -> Result<SecretString, ConfigError> {
    match (&key.key_env, &key.key_file) {
        (Some(var), _) => env_secret(&format!("http.keys[{index}].key_env"), var),
        (None, Some(path)) => file_secret(&format!("http.keys[{index}].key_file"), path),
        (None, None) => Err(ConfigError::Invalid {
            field: format!("http.keys[{index}].key_env"),
            reason: "set exactly one of key_env and key_file".into(),
        }),
    }
}

impl NodeConfig {
    /// Reads every secret this node will need (NATS credentials and TLS files, the Redis URL, the API keys of
    /// the providers it hosts, the bearer keys of its HTTP door), so that a missing one fails the start with the field that names it.
    pub fn resolve_secrets(&self) -> Result<(), ConfigError> {
        nats_auth(&self.nats)?;
        nats_tls_files(&self.nats)?;
        if let Some(redis) = &self.redis {
            redis_url(redis)?;
            redis_tls_files(redis)?;
        }
        if self.has_role(Role::Providers) {
            for (index, provider) in self.providers.iter().enumerate() {
                api_key(index, provider)?;
            }
        }
        if let Some(http) = self.http.as_ref().filter(|_| self.has_role(Role::Http)) {
            for (index, key) in http.keys.iter().enumerate() {
                http_key(index, key)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> NodeConfig {
        let toml = format!(
            r#"
            [node]
            roles = ["providers"]
            {extra}
            "#
        );
        NodeConfig::from_toml(&toml).expect("valid before its secrets are read")
    }

    fn field_of(error: ConfigError) -> String {
        match error {
            ConfigError::Invalid { field, .. }
            | ConfigError::MissingEnv { field, .. }
            | ConfigError::Unreadable { field, .. } => field,
            other => panic!("no field in {other:?}"),
        }
    }

    fn check(extra: &str, field: &str) {
        let error = config(extra).resolve_secrets().expect_err(extra);
        let text = error.to_string();
        assert_eq!(field_of(error), field, "{text}");
        assert!(text.contains(field), "{text}");
    }

    const PROVIDER: &str = r#"
        [[providers]]
        name = "p"
        kind = "openai"
        base_url = "http://127.0.0.1:1/v1"
        model = "m"
    "#;

    #[test]
    fn every_missing_secret_names_its_field() {
        let unset = "SWITCHYARD_TEST_SURELY_UNSET_VARIABLE";
        check(&format!("[nats]\ntoken_env = \"{unset}\""), "nats.token_env");
        check(&format!("[nats]\nuser = \"node\"\npassword_env = \"{unset}\""), "nats.password_env");
        check("[nats]\nnkey_seed_file = \"/nonexistent/seed\"", "nats.nkey_seed_file");
        check("[nats]\ncreds_file = \"/nonexistent/x.creds\"", "nats.creds_file");
        check("[nats]\ntls_ca_file = \"/nonexistent/ca.pem\"", "nats.tls_ca_file");
        check("[nats]\ntoken_file = \"/nonexistent/token\"", "nats.token_file");
        check("[nats]\nuser = \"node\"\npassword_file = \"/nonexistent/pw\"", "nats.password_file");
        check("[redis]\nurl = \"rediss://h\"\ntls_ca_file = \"/nonexistent/ca.pem\"", "redis.tls_ca_file");
        check(&format!("[redis]\nurl_env = \"{unset}\""), "redis.url_env");
        check(&format!("{PROVIDER}api_key_env = \"{unset}\""), "providers[0].api_key_env");
        check(&format!("{PROVIDER}api_key_file = \"/nonexistent/key\""), "providers[0].api_key_file");
    }

    #[test]
    fn a_router_only_node_needs_no_provider_keys() {
        let toml = format!(
            "[node]\nroles = [\"router\"]\n{PROVIDER}api_key_env = \"SWITCHYARD_TEST_SURELY_UNSET_VARIABLE\"\n\
             [[routes]]\nname = \"r\"\nproviders = [\"p\"]\n"
        );
        let config = NodeConfig::from_toml(&toml).expect("valid");
        assert!(config.resolve_secrets().is_ok());
    }

    #[test]
    fn present_secrets_resolve_and_never_show_in_errors() {
        let dir = std::env::temp_dir().join(format!("switchyard-secrets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let key = dir.join("key");
        std::fs::write(&key, "sk-file-SECRET\n").expect("write");
        let blank = dir.join("blank");
        std::fs::write(&blank, "  \n").expect("write");
        let config = config(&format!("{PROVIDER}api_key_file = \"{}\"", key.display()));
        assert!(config.resolve_secrets().is_ok());
        let resolved = api_key(0, &config.providers[0]).expect("readable").expect("a key");
        assert_eq!(resolved.expose_secret(), "sk-file-SECRET");
        check(&format!("{PROVIDER}api_key_file = \"{}\"", blank.display()), "providers[0].api_key_file");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn nats_auth_needs_a_complete_pair_and_one_method() {
        for (extra, field) in [
            ("[nats]\nuser = \"node\"", "nats.password_env"),
            ("[nats]\npassword_env = \"X\"", "nats.user"),
            ("[nats]\ntoken_env = \"T\"\ncreds_file = \"/x\"", "nats"),
            ("[nats]\ntls_cert_file = \"/x\"", "nats.tls_key_file"),
            ("[nats]\ntoken_env = \"T\"\ntoken_file = \"/x\"", "nats.token_file"),
            ("[nats]\nuser = \"u\"\npassword_env = \"P\"\npassword_file = \"/x\"", "nats.password_file"),
            ("[nats]\npassword_file = \"/x\"", "nats.user"),
            ("[nats]\ntoken_file = \"/x\"\nnkey_seed_file = \"/y\"", "nats"),
            ("[redis]\nurl = \"rediss://h\"\ntls_cert_file = \"/x\"", "redis.tls_key_file"),
            ("[redis]\nurl = \"redis://h\"\ntls_ca_file = \"/x\"", "redis.url"),
            ("[nats]\ninbox_prefix = \"_INBOX.>\"", "nats.inbox_prefix"),
        ] {
            let toml = format!("[node]\nroles = [\"providers\"]\n{extra}\n");
            match NodeConfig::from_toml(&toml) {
                Err(ConfigError::Invalid { field: f, .. }) => assert_eq!(f, field, "{extra}"),
                other => panic!("{extra}: expected an error naming {field}, got {other:?}"),
            }
        }
    }
}
