//! Throwaway TLS material for tests: a private CA, a server certificate for loopback, and client certificates.
//!
//! Everything is generated in memory with `rcgen` (no `openssl` command needed) and written as PEM files into a
//! [`TempDir`] that is removed when the [`TestPki`] is dropped. A second, unrelated CA signs a "stranger" client
//! certificate, so a test can show that a server verifying clients refuses a certificate it did not issue.

use std::path::PathBuf;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

use crate::TempDir;

/// A private CA with a server certificate (for `127.0.0.1` and `localhost`) and two client certificates: one
/// issued by the CA, one by a stranger CA.
pub struct TestPki {
    dir: TempDir,
}

impl TestPki {
    /// Generates the CAs and certificates and writes them into a fresh folder.
    pub fn generate() -> anyhow::Result<TestPki> {
        let dir = TempDir::new("pki")?;
        let (ca_pem, ca) = new_ca("switchyard-test-ca")?;
        dir.write("ca.pem", &ca_pem)?;
        let server =
            leaf(&ca, "switchyard-test-server", &["127.0.0.1", "localhost"], ExtendedKeyUsagePurpose::ServerAuth)?;
        dir.write("server.pem", &server.0)?;
        dir.write("server-key.pem", &server.1)?;
        let client = leaf(&ca, "switchyard-node", &[], ExtendedKeyUsagePurpose::ClientAuth)?;
        dir.write("client.pem", &client.0)?;
        dir.write("client-key.pem", &client.1)?;
        let (_, stranger_ca) = new_ca("someone-elses-ca")?;
        let stranger = leaf(&stranger_ca, "stranger", &[], ExtendedKeyUsagePurpose::ClientAuth)?;
        dir.write("stranger.pem", &stranger.0)?;
        dir.write("stranger-key.pem", &stranger.1)?;
        Ok(TestPki { dir })
    }

    /// The CA certificate (PEM) that issued the server and client certificates.
    pub fn ca(&self) -> PathBuf {
        self.dir.path("ca.pem")
    }

    /// The server certificate, valid for `127.0.0.1` and `localhost`.
    pub fn server_cert(&self) -> PathBuf {
        self.dir.path("server.pem")
    }

    pub fn server_key(&self) -> PathBuf {
        self.dir.path("server-key.pem")
    }

    /// A client certificate issued by [`TestPki::ca`].
    pub fn client_cert(&self) -> PathBuf {
        self.dir.path("client.pem")
    }

    pub fn client_key(&self) -> PathBuf {
        self.dir.path("client-key.pem")
    }

    /// A client certificate issued by another CA, which no server of the test trusts.
    pub fn stranger_cert(&self) -> PathBuf {
        self.dir.path("stranger.pem")
    }

    pub fn stranger_key(&self) -> PathBuf {
        self.dir.path("stranger-key.pem")
    }
}

fn new_ca(name: &str) -> anyhow::Result<(String, Issuer<'static, KeyPair>)> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate().context("CA key")?;
    let certificate = params.self_signed(&key).context("self-signed CA")?;
    Ok((certificate.pem(), Issuer::new(params, key)))
}

/// A certificate signed by `issuer` and its PEM private key.
fn leaf(
    issuer: &Issuer<'static, KeyPair>,
    name: &str,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> anyhow::Result<(String, String)> {
    let mut params = CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().context("leaf key")?;
    let certificate = params.signed_by(&key, issuer).with_context(|| format!("certificate for {name}"))?;
    Ok((certificate.pem(), key.serialize_pem()))
}
