//! Leadership in one of the cluster's elections ([`Cluster::campaign`]): the
//! [`Leadership`] a winner holds, and the etcd side (etcd's election API, candidates
//! under their node's lease).

use std::time::Duration;
use tokio_util::sync::CancellationToken;

use super::etcd::{RETRY, etcd_error};
use super::keys::election_name;
use super::{Cluster, ClusterError};

/// This node leads an election until [`Leadership::lost`] resolves. Dropping it gives
/// the leadership up (the etcd backend resigns, so the next candidate leads at once).
pub struct Leadership {
    /// Cancelled when the leadership ends, for whatever reason.
    lost: CancellationToken,
    /// Cancelled on drop: tells the backend to resign.
    resign: CancellationToken,
}

impl Leadership {
    /// A leadership, the token that ends it and the token that asks to resign.
    pub(super) fn new() -> (Leadership, CancellationToken, CancellationToken) {
        let (lost, resign) = (CancellationToken::new(), CancellationToken::new());
        let leadership = Leadership {
            lost: lost.clone(),
            resign: resign.clone(),
        };
        (leadership, lost, resign)
    }

    /// A leadership that has already ended (the node stopped while campaigning).
    pub(super) fn ended() -> Leadership {
        let (leadership, lost, _) = Leadership::new();
        lost.cancel();
        leadership
    }

    /// Resolves when this node no longer leads.
    pub async fn lost(&self) {
        self.lost.cancelled().await
    }

    pub fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.resign.cancel();
    }
}

/// Campaigns in election `name` under the node's lease until this node leads (or the
/// node stops); a lease that changes meanwhile starts the campaign again under the new
/// one. While leading, the leader key is checked a few times per TTL: leadership ends
/// when the key is gone or is no longer this node's.
pub(super) async fn campaign(c: &Cluster, name: &str) -> Leadership {
    let etcd = c.etcd();
    let election = election_name(&etcd.prefix, name);
    let me = c.node_id().to_owned();
    loop {
        if c.inner.stop.is_cancelled() {
            return Leadership::ended();
        }
        let Some(lease) = etcd.lease_id().filter(|_| c.is_leased()) else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let mut client = etcd.client().election_client();
        let lease_changed = async {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if etcd.lease_id().filter(|_| c.is_leased()) != Some(lease) {
                    return;
                }
            }
        };
        let won = tokio::select! {
            _ = c.inner.stop.cancelled() => return Leadership::ended(),
            _ = lease_changed => continue,
            won = client.campaign(election.clone(), me.clone(), lease) => won,
        };
        let key = match won {
            Ok(resp) => resp.leader().cloned(),
            // etcd requests time out after a few seconds: campaigning again keeps this
            // node's place in line (the candidate key stays under its lease).
            Err(etcd_client::Error::GRpcStatus(s))
                if matches!(
                    s.code(),
                    tonic::Code::Cancelled | tonic::Code::DeadlineExceeded
                ) =>
            {
                continue;
            }
            Err(e) => {
                tracing::warn!(election = name, "campaign: {e}");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        let Some(key) = key else { continue };
        let (leadership, lost, resign) = Leadership::new();
        let check = (etcd.ttl / 4).clamp(Duration::from_millis(250), Duration::from_secs(1));
        let (c, election, name) = (c.clone(), election.clone(), name.to_owned());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = resign.cancelled() => break,
                    _ = c.inner.stop.cancelled() => break,
                    _ = tokio::time::sleep(check) => {}
                }
                match client.leader(election.clone()).await {
                    Ok(r) if r.kv().is_some_and(|kv| kv.key() == key.key()) => {}
                    Ok(_) => break,
                    Err(_) if !c.is_leased() => break,
                    Err(_) => {}
                }
            }
            lost.cancel();
            tracing::debug!(election = %name, "leadership ended; resigning");
            let options = etcd_client::ResignOptions::new().with_leader(key);
            let _ =
                tokio::time::timeout(Duration::from_secs(2), client.resign(Some(options))).await;
        });
        return leadership;
    }
}

/// The node id leading election `name`, if anyone does.
pub(super) async fn leader(c: &Cluster, name: &str) -> Result<Option<String>, ClusterError> {
    let etcd = c.etcd();
    let resp = etcd
        .client()
        .election_client()
        .leader(election_name(&etcd.prefix, name))
        .await;
    match resp {
        Ok(resp) => Ok(resp
            .kv()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())),
        // etcd answers "election: no leader" as an error.
        Err(etcd_client::Error::GRpcStatus(s)) if s.message().contains("no leader") => Ok(None),
        Err(e) => Err(etcd_error(e)),
    }
}
