//! How a node (or an operator) speaks to other nodes: the cluster credential on every
//! call, and mutual TLS when `cluster.tls` is set — each end shows a certificate the
//! cluster's CA signed, and a peer whose certificate another CA signed is refused.

use anyhow::Context;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::cluster::ClusterConfig;

/// The client side of node links. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Link {
    secret: String,
    tls: Option<(Certificate, Identity)>,
}

impl Link {
    /// The links `cfg` asks for: its credential (an error says how to set one) and its
    /// certificates when `cluster.tls` is set (an error names the file).
    pub fn new(cfg: &ClusterConfig) -> anyhow::Result<Link> {
        let secret = cfg.secret()?;
        let tls = match &cfg.tls {
            None => None,
            Some(tls) => {
                let (ca, identity) = files(tls)?;
                Some((ca, identity))
            }
        };
        Ok(Link { secret, tls })
    }

    /// Links with the credential only (no TLS).
    pub fn plain(secret: impl Into<String>) -> Link {
        Link {
            secret: secret.into(),
            tls: None,
        }
    }

    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The URL of the node at `addr` (host:port) and the TLS settings to reach it: its
    /// certificate must name `addr`'s host.
    pub(super) fn endpoint(&self, addr: &str) -> (String, Option<ClientTlsConfig>) {
        match &self.tls {
            None => (format!("http://{addr}"), None),
            Some((ca, identity)) => {
                let tls = ClientTlsConfig::new()
                    .ca_certificate(ca.clone())
                    .identity(identity.clone())
                    .domain_name(host(addr));
                (format!("https://{addr}"), Some(tls))
            }
        }
    }
}

/// The server side of node links: `None` without `cluster.tls`; with it, TLS that
/// requires a client certificate the cluster's CA signed.
pub fn server_tls(cfg: &ClusterConfig) -> anyhow::Result<Option<ServerTlsConfig>> {
    let Some(tls) = &cfg.tls else {
        return Ok(None);
    };
    let (ca, identity) = files(tls)?;
    Ok(Some(
        ServerTlsConfig::new()
            .identity(identity)
            .client_ca_root(ca)
            .client_auth_optional(false),
    ))
}

fn files(tls: &crate::cluster::NodeTls) -> anyhow::Result<(Certificate, Identity)> {
    let ca = crate::tls::certificate_pem(&tls.ca).context("cluster.tls.ca")?;
    let cert = crate::tls::certificate_pem(&tls.cert).context("cluster.tls.cert")?;
    let key = crate::tls::key_pem(&tls.key).context("cluster.tls.key")?;
    // Checked here, with the files' names, rather than at the first link.
    crate::tls::server_config(
        &crate::tls::CertFiles {
            cert: tls.cert.clone(),
            key: tls.key.clone(),
        },
        &[],
    )
    .context("cluster.tls")?;
    Ok((Certificate::from_pem(ca), Identity::from_pem(cert, key)))
}

/// The host part of `host:port` (`[::1]:7352` gives `::1`).
fn host(addr: &str) -> String {
    let host = match addr.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => addr,
    };
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_is_what_a_peer_certificate_must_name() {
        assert_eq!(host("127.0.0.1:7352"), "127.0.0.1");
        assert_eq!(host("node-3.ludus:7352"), "node-3.ludus");
        assert_eq!(host("[::1]:7352"), "::1");
        assert_eq!(host("node-3"), "node-3");
    }
}
