//! Live host settings: `config/<key>` holds a setting's value with its history, every
//! node applies it (see `server/settings.rs`), and `status/`-like reports of what each
//! node applied ride in its `nodes/<node>` entry. Writes are transactions guarded by
//! revision, as `games/` writes are: an operator and a node rolling a change back cannot
//! overwrite each other.

use etcd_client::Client;
use serde::{Deserialize, Serialize};

use super::ClusterError;
use super::etcd::{get_entry, put_entry_if};
use super::keys::Key;

/// Changes kept in a setting's entry.
const HISTORY: usize = 20;

/// A setting as etcd holds it (`config/<key>`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SettingEntry {
    /// `None`: unset, each node uses its own configuration.
    pub value: Option<String>,
    /// The changes that led here, oldest first; the last one made `value`.
    pub history: Vec<SettingChange>,
}

/// One change of a setting.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SettingChange {
    pub value: Option<String>,
    /// Who made it: `ludus config set`, or the node that rolled a change back and why.
    pub by: String,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
}

impl SettingEntry {
    /// The value before the last change (`None`: the node's own configuration).
    pub fn previous(&self) -> Option<String> {
        let n = self.history.len();
        n.checked_sub(2)
            .and_then(|i| self.history.get(i))
            .and_then(|c| c.value.clone())
    }

    /// Makes `value` the setting's value, recording who did (the oldest changes past
    /// the kept history go).
    fn record(&mut self, value: Option<String>, by: String) {
        self.value = value.clone();
        self.history.push(SettingChange {
            value,
            by,
            at_ms: now_ms(),
        });
        let drop = self.history.len().saturating_sub(HISTORY);
        self.history.drain(..drop);
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The entry of `key` and its revision.
async fn get(
    client: &mut Client,
    prefix: &str,
    key: &str,
) -> Result<Option<(SettingEntry, i64)>, ClusterError> {
    get_entry(client, prefix, Key::Setting(key.to_owned())).await
}

/// Writes `entry` as `config/<key>` if the key is still at `revision` (`None`: absent).
async fn put_if(
    client: &mut Client,
    prefix: &str,
    key: &str,
    entry: &SettingEntry,
    revision: Option<i64>,
) -> Result<bool, ClusterError> {
    put_entry_if(
        client,
        prefix,
        Key::Setting(key.to_owned()),
        entry,
        revision,
    )
    .await
}

/// Sets `key` to `value` (`None`: unset), recording who did.
pub(super) async fn set(
    client: &mut Client,
    prefix: &str,
    key: &str,
    value: Option<String>,
    by: String,
) -> Result<SettingEntry, ClusterError> {
    let (mut entry, revision) = match get(client, prefix, key).await? {
        Some((entry, revision)) => (entry, Some(revision)),
        None => (SettingEntry::default(), None),
    };
    entry.record(value, by);
    if !put_if(client, prefix, key, &entry, revision).await? {
        return Err(ClusterError::BadEntry(format!(
            "config/{key} changed while this change was being written; try again"
        )));
    }
    Ok(entry)
}

/// Puts `key` back to the value before its last change, if it is still at `revision`
/// (`Ok(false)`: someone changed it meanwhile, and that change stands).
pub(super) async fn roll_back(
    client: &mut Client,
    prefix: &str,
    key: &str,
    revision: i64,
    by: String,
) -> Result<bool, ClusterError> {
    let Some((mut entry, at)) = get(client, prefix, key).await? else {
        return Ok(false);
    };
    if at != revision {
        return Ok(false);
    }
    entry.record(entry.previous(), by);
    put_if(client, prefix, key, &entry, Some(at)).await
}
