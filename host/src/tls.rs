//! Certificates and keys from PEM files, read once at start with errors that name the
//! file: the client listener's certificate (`gateway.tls`), the nodes' mutual TLS
//! (`cluster.tls`) and etcd's (`cluster.etcd_tls`) all come through here.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate chain and its private key, as PEM files.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CertFiles {
    /// The certificate chain (PEM), the leaf first.
    pub cert: PathBuf,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// A PEM file's bytes, after checking it holds at least one certificate.
pub fn certificate_pem(path: &Path) -> anyhow::Result<Vec<u8>> {
    certificates(path)?;
    read(path)
}

/// A PEM file's bytes, after checking it holds a private key.
pub fn key_pem(path: &Path) -> anyhow::Result<Vec<u8>> {
    private_key(path)?;
    read(path)
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// The certificates in a PEM file (at least one).
pub fn certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{}: not a PEM certificate file: {e}", path.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{}: no certificate in it (expected a PEM block `BEGIN CERTIFICATE`)",
        path.display()
    );
    Ok(certs)
}

/// The private key in a PEM file.
pub fn private_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        anyhow::anyhow!(
            "{}: no private key in it (expected a PEM block `BEGIN PRIVATE KEY`, \
             `BEGIN RSA PRIVATE KEY` or `BEGIN EC PRIVATE KEY`): {e}",
            path.display()
        )
    })
}

/// The rustls crypto provider Ludus uses, the same on every path: ring, which tonic's
/// TLS uses too and which builds without cmake (aws-lc-rs would add post-quantum key
/// exchange, the reason rustls 0.23.48 marks this deprecated, and minutes of C build).
#[allow(deprecated)]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS server configuration for `files` that offers `alpn` protocols.
pub fn server_config(files: &CertFiles, alpn: &[&[u8]]) -> anyhow::Result<rustls::ServerConfig> {
    let certs = certificates(&files.cert)?;
    let key = private_key(&files.key)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| {
            format!(
                "the key {} does not go with the certificate {}",
                files.key.display(),
                files.cert.display()
            )
        })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_that_are_missing_or_hold_no_pem_are_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let error = certificates(&missing).unwrap_err();
        assert!(format!("{error:#}").contains("missing.pem"), "{error:#}");

        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let error = certificates(&junk).unwrap_err().to_string();
        assert!(
            error.contains("junk.pem") && error.contains("no certificate"),
            "{error}"
        );
        let error = private_key(&junk).unwrap_err().to_string();
        assert!(
            error.contains("junk.pem") && error.contains("no private key"),
            "{error}"
        );
    }
}
