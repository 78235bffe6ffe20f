//! An operator's view of a cluster (`ludus deploy`, `ludus rollback`, `ludus status`):
//! a plain etcd client under the cluster's prefix, not a node (no lease, no keys).

use etcd_client::Client;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

use super::keys::Key;
use super::{ClusterConfig, ClusterError, Desired, GameEntry, GameStatus, NodeInfo};

/// Everything under a prefix that the operator commands read.
#[derive(Serialize, Default)]
pub struct Snapshot {
    pub nodes: BTreeMap<String, NodeInfo>,
    pub games: BTreeMap<String, GameEntry>,
    /// By game, then node.
    pub status: BTreeMap<String, BTreeMap<String, GameStatus>>,
    /// The node leading the matchmaker (the oldest candidate of its etcd election).
    pub matchmaker_leader: Option<String>,
    /// Every room of the cluster, by id.
    pub rooms: BTreeMap<String, super::RoomEntry>,
    /// Live host settings, by key.
    pub settings: BTreeMap<String, super::SettingEntry>,
}

/// A connection to a cluster's etcd for operator commands.
pub struct Operator {
    client: Client,
    prefix: String,
}

impl Operator {
    /// Connects to the etcd `cfg` names (an error says how to name one).
    pub async fn connect(cfg: &ClusterConfig) -> anyhow::Result<Operator> {
        if cfg.etcd.is_empty() {
            anyhow::bail!(
                "no etcd given: use --etcd URL[,URL...] or set cluster.etcd / LUDUS_CLUSTER__ETCD"
            );
        }
        let client = super::etcd::connect(cfg, Duration::from_secs(5)).await?;
        Ok(Operator {
            client,
            prefix: cfg.prefix(),
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Nodes, games, statuses and the matchmaker leader, as etcd has them now.
    pub async fn snapshot(&mut self) -> Result<Snapshot, ClusterError> {
        let (kvs, _) = super::etcd::get_prefix(&mut self.client, &self.prefix).await?;
        let mut snap = Snapshot::default();
        let mut oldest_candidate = i64::MAX;
        for kv in &kvs {
            let Some(key) = Key::parse(&self.prefix, kv.key()) else {
                continue;
            };
            match key {
                Key::Node(name) => {
                    if let Ok(node) = serde_json::from_slice(kv.value()) {
                        snap.nodes.insert(name, node);
                    }
                }
                Key::Game(name) => {
                    if let Ok(entry) = serde_json::from_slice(kv.value()) {
                        snap.games.insert(name, entry);
                    }
                }
                Key::Room(id) => {
                    if let Ok(entry) = serde_json::from_slice(kv.value()) {
                        snap.rooms.insert(id, entry);
                    }
                }
                Key::Setting(key) => {
                    if let Ok(entry) = serde_json::from_slice(kv.value()) {
                        snap.settings.insert(key, entry);
                    }
                }
                Key::Status { node, game } => {
                    if let Ok(status) = serde_json::from_slice(kv.value()) {
                        snap.status.entry(game).or_default().insert(node, status);
                    }
                }
                Key::Candidate { election }
                    if election == super::keys::MATCHMAKER
                        && kv.create_revision() < oldest_candidate =>
                {
                    oldest_candidate = kv.create_revision();
                    snap.matchmaker_leader = Some(String::from_utf8_lossy(kv.value()).into_owned());
                }
                _ => {}
            }
        }
        Ok(snap)
    }

    /// Makes `version` the desired version of `game`; the one it replaces goes to
    /// history.
    pub async fn set_desired(
        &mut self,
        game: &str,
        desired: Desired,
    ) -> Result<GameEntry, ClusterError> {
        super::games::set_desired(&mut self.client, &self.prefix, game, desired).await
    }

    /// Restores the previous version of `game`.
    pub async fn rollback(&mut self, game: &str, note: String) -> Result<GameEntry, ClusterError> {
        super::games::rollback(&mut self.client, &self.prefix, game, None, note).await
    }

    /// Sets live setting `key` to `value` (`None`: unset, the nodes' own configuration
    /// holds), recording `by`.
    pub async fn set_setting(
        &mut self,
        key: &str,
        value: Option<String>,
        by: String,
    ) -> Result<super::SettingEntry, ClusterError> {
        super::settings::set(&mut self.client, &self.prefix, key, value, by).await
    }
}
