//! Decentralised NATS auth for tests: an operator, an account and users as signed JWTs, and `.creds` files.
//!
//! No maintained crate on crates.io writes all three kinds of NATS JWT (operator JWTs are missing from `nats-jwt`,
//! `nats-io-jwt` calls itself a work in progress), so the claims are written here as JSON and signed with the
//! `nkeys` crate `async-nats` already depends on. The format is that of the Go `nats-io/jwt` v2 library: a header
//! `{"typ":"JWT","alg":"ed25519-nkey"}`, the claims, and an ed25519 signature by the issuer's nkey over
//! `header.claims`, each part base64url without padding. Limits are `-1` (none), as `nsc` writes by default.
//!
//! [`JwtTrust::server_config`] is what the server needs (`operator`, `resolver: MEMORY`, `resolver_preload`).

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use data_encoding::{BASE32_NOPAD, BASE64URL_NOPAD};
use nkeys::KeyPair;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// One operator and one account it signed; users are signed by the account.
pub struct JwtTrust {
    operator_jwt: String,
    account: KeyPair,
    account_jwt: String,
}

/// A user's credentials: its JWT (public) and its nkey seed (the secret).
pub struct UserCreds {
    pub jwt: String,
    pub seed: String,
}

impl UserCreds {
    /// The text of a `.creds` file, as `nsc` writes it.
    pub fn file_text(&self) -> String {
        format!(
            "-----BEGIN NATS USER JWT-----\n{}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\
             NKEYs are sensitive and should be treated as secrets.\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n\n\
             *************************************************************\n",
            self.jwt, self.seed
        )
    }
}

impl JwtTrust {
    /// A fresh operator and account `account_name`.
    pub fn new(account_name: &str) -> anyhow::Result<JwtTrust> {
        let operator = KeyPair::new_operator();
        let operator_claims = json!({"type": "operator", "version": 2});
        let operator_jwt = encode(&operator, &operator.public_key(), "switchyard-test-operator", operator_claims)?;
        let account = KeyPair::new_account();
        let account_claims = json!({
            "limits": {
                "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                "wildcards": true, "conn": -1, "leaf": -1
            },
            "default_permissions": {"pub": {}, "sub": {}},
            "type": "account",
            "version": 2
        });
        let account_jwt = encode(&operator, &account.public_key(), account_name, account_claims)?;
        Ok(JwtTrust { operator_jwt, account, account_jwt })
    }

    /// A new user of the account, allowed everything the account allows.
    pub fn user(&self, name: &str) -> anyhow::Result<UserCreds> {
        let user = KeyPair::new_user();
        let claims = json!({
            "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
            "type": "user", "version": 2
        });
        let jwt = encode(&self.account, &user.public_key(), name, claims)?;
        let seed = user.seed().map_err(|error| anyhow::anyhow!("user seed: {error}"))?;
        Ok(UserCreds { jwt, seed })
    }

    /// The server configuration of operator mode, with the operator JWT written to `operator_jwt_file` and the
    /// account preloaded into a memory resolver.
    pub fn server_config(&self, operator_jwt_file: &Path) -> anyhow::Result<String> {
        std::fs::write(operator_jwt_file, &self.operator_jwt).context("operator JWT")?;
        Ok(format!(
            "operator: \"{}\"\nresolver: MEMORY\nresolver_preload: {{\n  {}: \"{}\"\n}}\n",
            operator_jwt_file.display(),
            self.account.public_key(),
            self.account_jwt
        ))
    }
}

/// A JWT about `subject` issued (and signed) by `issuer`, with `nats` as its NATS-specific claims.
fn encode(issuer: &KeyPair, subject: &str, name: &str, nats: Value) -> anyhow::Result<String> {
    let issued_at = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let mut claims = json!({
        "jti": "",
        "iat": issued_at,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    // Like the Go library: the id is the hash of the claims without it.
    let id = BASE32_NOPAD.encode(&Sha256::digest(serde_json::to_vec(&claims)?));
    claims["jti"] = Value::String(id);
    let header = BASE64URL_NOPAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = BASE64URL_NOPAD.encode(&serde_json::to_vec(&claims)?);
    let signed = format!("{header}.{body}");
    let signature = issuer.sign(signed.as_bytes()).map_err(|error| anyhow::anyhow!("signing a JWT: {error}"))?;
    Ok(format!("{signed}.{}", BASE64URL_NOPAD.encode(&signature)))
}
