//! The routing table, kept from etcd: every key under the prefix read once, then
//! watched from that revision on (reloaded after an error); events the node must act on
//! (a session taken, a node gone, a game changed) go out on the cluster's channel.

use etcd_client::{EventType, KeyValue, WatchOptions};

use super::etcd::{RETRY, etcd_error};
use super::keys::Key;
use super::{Cluster, ClusterError, ClusterEvent};
use crate::lock::Recover;

/// Reads every key into a fresh routing table; returns the revision it reflects.
pub(super) async fn load(c: &Cluster) -> Result<i64, ClusterError> {
    let etcd = c.etcd();
    let (kvs, revision) = super::etcd::get_prefix(&mut etcd.client(), &etcd.prefix).await?;
    c.write_routing(|r| *r = super::Routing::default());
    for kv in &kvs {
        apply(c, kv, true);
    }
    Ok(revision)
}

/// A put of a value that parses becomes the entry; a delete, or a value that does not
/// parse, removes it.
fn put_or_remove<K: Ord, V: serde::de::DeserializeOwned>(
    map: &mut std::collections::BTreeMap<K, V>,
    key: K,
    put: bool,
    kv: &KeyValue,
) {
    let value = match put.then(|| serde_json::from_slice::<V>(kv.value())) {
        Some(Ok(value)) => Some(value),
        Some(Err(e)) => {
            // Skipped and reported; the rest of the table is applied as usual.
            let key = String::from_utf8_lossy(kv.key());
            tracing::warn!(%key, "cannot read this key (skipped): {e}");
            None
        }
        None => None,
    };
    match value {
        Some(value) => {
            map.insert(key, value);
        }
        None => {
            map.remove(&key);
        }
    }
}

/// Applies one key's put (or delete) to the routing table.
fn apply(c: &Cluster, kv: &KeyValue, put: bool) {
    let Some(key) = Key::parse(&c.etcd().prefix, kv.key()) else {
        return;
    };
    match key {
        Key::Node(node) => {
            if !put {
                let _ = c
                    .inner
                    .events
                    .send(ClusterEvent::NodeLeft { node: node.clone() });
            }
            c.write_routing(|r| put_or_remove(&mut r.nodes, node, put, kv));
        }
        Key::Room(room) => c.write_routing(|r| put_or_remove(&mut r.rooms, room, put, kv)),
        Key::Session(player) => {
            let node = String::from_utf8_lossy(kv.value()).into_owned();
            if put && node != c.node_id() {
                // Only a claim written after this node's own ends the session here.
                let taken = {
                    let mut held = c.inner.held.lock().recover();
                    let ours = held.sessions.get(&player).copied();
                    let later = ours.is_some_and(|rev| kv.mod_revision() > rev);
                    if later {
                        held.sessions.remove(&player);
                    }
                    later
                };
                if taken {
                    let _ = c.inner.events.send(ClusterEvent::SessionTaken {
                        player,
                        node: node.clone(),
                    });
                }
            }
            c.write_routing(|r| {
                if put {
                    r.sessions.insert(player, node);
                } else {
                    r.sessions.remove(&player);
                }
            });
        }
        Key::Setting(key) => {
            let entry = put
                .then(|| serde_json::from_slice::<super::SettingEntry>(kv.value()))
                .transpose();
            match entry {
                Ok(entry) => {
                    c.write_routing(|r| match entry {
                        Some(entry) => {
                            r.settings.insert(key.clone(), (entry, kv.mod_revision()));
                        }
                        None => {
                            r.settings.remove(&key);
                        }
                    });
                    let _ = c.inner.events.send(ClusterEvent::SettingChanged { key });
                }
                Err(e) => {
                    tracing::warn!(key = %String::from_utf8_lossy(kv.key()), "not a setting entry; ignored: {e}");
                }
            }
        }
        Key::Game(game) => {
            let entry = serde_json::from_slice::<super::GameEntry>(kv.value()).ok();
            let revision = kv.mod_revision();
            match (put, entry) {
                (true, Some(entry)) => {
                    c.write_routing(|r| {
                        r.games.insert(game.clone(), (entry.clone(), revision));
                    });
                    let _ = c.inner.events.send(ClusterEvent::GameChanged {
                        game,
                        entry,
                        revision,
                    });
                }
                (true, None) => {
                    tracing::warn!(key = %String::from_utf8_lossy(kv.key()), "not a game entry; ignored");
                }
                (false, _) => c.write_routing(|r| {
                    r.games.remove(&game);
                }),
            }
        }
        Key::Status { node, game } => {
            c.write_routing(|r| put_or_remove(&mut r.status, (node, game), put, kv));
        }
        Key::Module { sha256, node } => {
            c.write_routing(|r| {
                let holders = r.modules.entry(sha256.clone()).or_default();
                if put {
                    holders.insert(node);
                } else {
                    holders.remove(&node);
                    if holders.is_empty() {
                        r.modules.remove(&sha256);
                    }
                }
            });
        }
        Key::Candidate { .. } => {}
    }
}

/// Watches the prefix from `revision` on; after an error, reloads and watches again.
pub(super) async fn watch(c: Cluster, mut revision: i64) {
    loop {
        let result = tokio::select! {
            _ = c.inner.stop.cancelled() => return,
            r = watch_from(&c, revision) => r,
        };
        if let Err(e) = result {
            tracing::warn!(node = c.node_id(), "watching etcd: {e}");
        }
        loop {
            tokio::select! {
                _ = c.inner.stop.cancelled() => return,
                _ = tokio::time::sleep(RETRY) => {}
            }
            match load(&c).await {
                Ok(r) => {
                    revision = r;
                    break;
                }
                Err(e) => tracing::debug!(node = c.node_id(), "reloading from etcd: {e}"),
            }
        }
    }
}

async fn watch_from(c: &Cluster, revision: i64) -> Result<(), ClusterError> {
    let etcd = c.etcd();
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(revision + 1);
    let mut stream = etcd
        .client()
        .watch(etcd.prefix.clone(), Some(options))
        .await
        .map_err(etcd_error)?;
    while let Some(resp) = stream.message().await.map_err(etcd_error)? {
        if resp.canceled() {
            return Err(ClusterError::Etcd(format!(
                "watch canceled: {}",
                resp.cancel_reason()
            )));
        }
        for event in resp.events() {
            if let Some(kv) = event.kv() {
                apply(c, kv, event.event_type() == EventType::Put);
            }
        }
    }
    Err(ClusterError::Etcd("watch stream ended".into()))
}
