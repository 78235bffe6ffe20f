//! The node's lease in etcd: taken at start, renewed every third of its TTL, and taken
//! again after it was lost, with everything the node holds registered under it again.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::etcd::Etcd;
use super::{Cluster, ClusterError};
use crate::lock::Recover;
use crate::rooms::Rooms;

impl Cluster {
    pub(super) fn etcd(&self) -> &Etcd {
        self.inner.etcd.as_ref().expect("an etcd cluster")
    }

    /// Registers everything this node holds under the current lease.
    async fn register(&self) -> Result<(), ClusterError> {
        let etcd = self.etcd();
        let (node, sessions, rooms, modules) = {
            let held = self.inner.held.lock().recover();
            let sessions: Vec<u64> = held.sessions.keys().copied().collect();
            (
                held.node.clone(),
                sessions,
                held.rooms.clone(),
                held.modules.clone(),
            )
        };
        etcd.put_node(&node).await?;
        for sha in modules {
            etcd.put_holder(&sha, &node.id).await?;
        }
        // Sessions are kept only where nobody took them while this node was away: no
        // last writer wins on the way back.
        for player in sessions {
            if let Some(holder) = etcd.keep_session(player, &node.id).await? {
                self.inner.held.lock().recover().sessions.remove(&player);
                let _ = self.inner.events.send(super::ClusterEvent::SessionTaken {
                    player,
                    node: holder,
                });
            }
        }
        for (room, entry) in rooms {
            if let Err(e) = etcd.put_room(&room, &entry).await {
                tracing::warn!(room, "re-registering a room: {e}");
            }
        }
        Ok(())
    }
}

/// Takes the lease, registers the node, loads the routing table and starts the tasks.
pub(super) async fn start(cluster: Cluster, rooms: Rooms) -> anyhow::Result<()> {
    cluster.etcd().grant().await?;
    cluster.register().await?;
    let revision = super::watch::load(&cluster).await?;
    tokio::spawn(keep_leased(cluster.clone()));
    tokio::spawn(super::watch::watch(cluster.clone(), revision));
    tokio::spawn(super::sync::sync(cluster, rooms));
    Ok(())
}

/// Renews the lease every third of its TTL. Without a renewal for a whole TTL the node
/// counts as unleased; once etcd answers again it takes a new lease and registers all.
pub(super) async fn keep_leased(c: Cluster) {
    let etcd = c.etcd();
    let period = etcd.ttl / 3;
    let mut renewed = Instant::now();
    loop {
        tokio::select! {
            _ = c.inner.stop.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        let outcome = tokio::time::timeout(period, etcd.renew()).await;
        match outcome {
            Ok(Ok(true)) => {
                renewed = Instant::now();
                c.inner.leased.store(true, Ordering::Release);
                continue;
            }
            Ok(Ok(false)) => {
                tracing::warn!(
                    node = c.node_id(),
                    "the node's lease expired; taking a new one"
                );
                c.inner.leased.store(false, Ordering::Release);
            }
            Ok(Err(e)) => tracing::warn!(node = c.node_id(), "renewing the lease: {e}"),
            Err(_) => tracing::warn!(node = c.node_id(), "renewing the lease: timed out"),
        }
        if renewed.elapsed() >= etcd.ttl || !c.is_leased() {
            c.inner.leased.store(false, Ordering::Release);
            let again = async {
                etcd.grant().await?;
                c.register().await
            };
            match tokio::time::timeout(etcd.ttl, again).await {
                Ok(Ok(())) => {
                    tracing::info!(node = c.node_id(), "registered again under a new lease");
                    renewed = Instant::now();
                    c.inner.leased.store(true, Ordering::Release);
                }
                Ok(Err(e)) => tracing::warn!(node = c.node_id(), "taking a new lease: {e}"),
                Err(_) => tracing::warn!(node = c.node_id(), "taking a new lease: timed out"),
            }
        }
    }
}
