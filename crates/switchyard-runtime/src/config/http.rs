//! The `[http]` section: where the OpenAI-compatible door listens, and which bearer keys it accepts.
//!
//! A key is a secret like every other one of the configuration: the file names an environment variable
//! (`key_env`) or a file (`key_file`) that holds it, read at start-up through [`crate::secrets`]. Each key names
//! the routes (models) it may ask, `"*"` for all, and metadata merged into every query it sends (over what the
//! request carries), so routing rules can tell tenants apart without trusting the client.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use switchyard_protocol::subjects::is_valid_token;

use super::{ConfigError, NodeConfig, Role, invalid};

/// The route list entry that allows every route.
pub const ALL_ROUTES: &str = "*";

/// The OpenAI-compatible door of a node with the `http` role.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// Where to listen, e.g. `0.0.0.0:8080` (port 0: any free port).
    pub listen: SocketAddr,
    /// The bearer keys accepted; at least one.
    #[serde(default)]
    pub keys: Vec<HttpKeySection>,
    /// Largest accepted request body in bytes (default 1 MiB); a query's own limit is `node.max_payload_bytes`.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
}

fn default_max_body_bytes() -> usize {
    1024 * 1024
}

/// One bearer key: where its value is, and what it may do.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpKeySection {
    /// The key's name, for logs and metrics (never the key itself).
    pub name: String,
    /// Environment variable holding the key.
    #[serde(default)]
    pub key_env: Option<String>,
    /// File holding the key (trimmed).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The routes this key may ask, `["*"]` for every one.
    pub routes: Vec<String>,
    /// Set on every query of this key, replacing what the request says for the same names.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

impl std::fmt::Debug for HttpKeySection {
    // Only the name of the secret's source is stored here; keep Debug short and obviously safe.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpKeySection").field("name", &self.name).field("routes", &self.routes).finish_non_exhaustive()
    }
}

impl HttpKeySection {
    /// Whether this key may ask `route`.
    pub fn allows(&self, route: &str) -> bool {
        self.routes.iter().any(|r| r == ALL_ROUTES || r == route)
    }
}

impl NodeConfig {
    /// Checks the `[http]` section: present with the role, keys with one source each, unique names, known routes.
    pub(super) fn validate_http(&self) -> Result<(), ConfigError> {
        let Some(http) = &self.http else {
            if self.has_role(Role::Http) {
                return Err(invalid("http", "a node with the http role needs an [http] section"));
            }
            return Ok(());
        };
        if !self.has_role(Role::Http) {
            return Err(invalid("node.roles", "an [http] section needs the http role"));
        }
        if self.routes.is_empty() {
            return Err(invalid("routes", "an http node needs the routes it serves (its models)"));
        }
        if http.keys.is_empty() {
            return Err(invalid("http.keys", "at least one key is needed"));
        }
        if http.max_body_bytes < 1024 {
            return Err(invalid("http.max_body_bytes", "must be at least 1024"));
        }
        let routes: HashSet<&str> = self.routes.iter().map(|r| r.name.as_str()).collect();
        let mut names = HashSet::new();
        for (i, key) in http.keys.iter().enumerate() {
            let field = |f: &str| format!("http.keys[{i}].{f}");
            if !is_valid_token(&key.name) {
                return Err(invalid(field("name"), "use 1 to 64 characters of [A-Za-z0-9_-]"));
            }
            if !names.insert(key.name.as_str()) {
                return Err(invalid(field("name"), format!("duplicate key `{}`", key.name)));
            }
            if key.key_env.is_some() == key.key_file.is_some() {
                return Err(invalid(field("key_env"), "set exactly one of key_env and key_file"));
            }
            if key.routes.is_empty() {
                return Err(invalid(field("routes"), "name the routes this key may ask, or \"*\""));
            }
            if let Some(unknown) = key.routes.iter().find(|r| *r != ALL_ROUTES && !routes.contains(r.as_str())) {
                return Err(invalid(field("routes"), format!("unknown route `{unknown}`")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
        [node]
        roles = ["router", "providers", "http"]
        [[providers]]
        name = "p"
        kind = "openai"
        base_url = "http://127.0.0.1:1/v1"
        model = "m"
        [[routes]]
        name = "chat"
        providers = ["p"]
    "#;

    fn check_err(extra: &str, field: &str) {
        match NodeConfig::from_toml(&format!("{BASE}{extra}")) {
            Err(ConfigError::Invalid { field: f, .. }) => assert_eq!(f, field, "{extra}"),
            other => panic!("{extra}: expected an error naming {field}, got {other:?}"),
        }
    }

    #[test]
    fn a_good_http_section_loads() {
        let extra = r#"
            [http]
            listen = "127.0.0.1:0"
            [[http.keys]]
            name = "team-a"
            key_env = "TEAM_A_KEY"
            routes = ["chat"]
            metadata = { tier = "gold" }
        "#;
        let config = NodeConfig::from_toml(&format!("{BASE}{extra}")).expect("valid");
        let http = config.http.as_ref().expect("an http section");
        assert!(http.keys[0].allows("chat") && !http.keys[0].allows("other"));
        assert!(!format!("{config:?}").contains("TEAM_A_KEY"), "Debug shows no key source");
    }

    #[test]
    fn a_missing_key_names_its_field_and_never_shows() {
        let extra = r#"
            [http]
            listen = "127.0.0.1:0"
            [[http.keys]]
            name = "a"
            key_env = "SWITCHYARD_TEST_SURELY_UNSET_VARIABLE"
            routes = ["*"]
        "#;
        let config = NodeConfig::from_toml(&format!("{BASE}{extra}")).expect("valid before its secrets are read");
        match config.resolve_secrets() {
            Err(ConfigError::MissingEnv { field, .. }) => assert_eq!(field, "http.keys[0].key_env"),
            other => panic!("expected a missing key, got {other:?}"),
        }
    }

    #[test]
    fn bad_http_sections_name_the_field() {
        check_err("", "http");
        let key = |body: &str| format!("[http]\nlisten = \"127.0.0.1:0\"\n[[http.keys]]\nname = \"k\"\n{body}\n");
        check_err("[http]\nlisten = \"127.0.0.1:0\"\n", "http.keys");
        check_err(&key("routes = [\"chat\"]"), "http.keys[0].key_env");
        check_err(&key("key_env = \"A\"\nkey_file = \"/k\"\nroutes = [\"chat\"]"), "http.keys[0].key_env");
        check_err(&key("key_env = \"A\"\nroutes = []"), "http.keys[0].routes");
        check_err(&key("key_env = \"A\"\nroutes = [\"nope\"]"), "http.keys[0].routes");
        let twice = format!(
            "{}[[http.keys]]\nname = \"k\"\nkey_env = \"B\"\nroutes = [\"*\"]\n",
            key("key_env = \"A\"\nroutes = [\"*\"]")
        );
        check_err(&twice, "http.keys[1].name");
    }
}
