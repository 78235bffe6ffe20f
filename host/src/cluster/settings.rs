//! Live host settings: `config/<key>` holds a setting's value with its history, every
//! node applies it (see `server/settings.rs`), and `status/`-like reports of what each
//! node applied ride in its `nodes/<node>` entry. Writes are transactions guarded by
//! revision, as `games/` writes are: an operator and a node rolling a change back cannot
//! overwrite each other.

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use serde::{Deserialize, Serialize};

use super::ClusterError;
use super::etcd::{etcd_error, json};
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
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The entry of `key` and its revision.
pub(super) async fn get(
    client: &mut Client,
    prefix: &str,
    key: &str,
) -> Result<Option<(SettingEntry, i64)>, ClusterError> {
    let resp = client
        .get(Key::Setting(key.to_owned()).under(prefix), None)
        .await
        .map_err(etcd_error)?;
    match resp.kvs().first() {
        Some(kv) => {
            let entry = serde_json::from_slice(kv.value())
                .map_err(|e| ClusterError::BadEntry(format!("config/{key}: {e}")))?;
            Ok(Some((entry, kv.mod_revision())))
        }
        None => Ok(None),
    }
}

/// Writes `entry` as `config/<key>` if the key is still at `revision` (`None`: absent).
async fn put_if(
    client: &mut Client,
    prefix: &str,
    key: &str,
    entry: &SettingEntry,
    revision: Option<i64>,
) -> Result<bool, ClusterError> {
    let k = Key::Setting(key.to_owned()).under(prefix);
    let guard = match revision {
        Some(r) => Compare::mod_revision(k.clone(), CompareOp::Equal, r),
        None => Compare::create_revision(k.clone(), CompareOp::Equal, 0),
    };
    let txn = Txn::new()
        .when([guard])
        .and_then([TxnOp::put(k, json(entry), None)]);
    Ok(client.txn(txn).await.map_err(etcd_error)?.succeeded())
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
    entry.value = value.clone();
    entry.history.push(SettingChange {
        value,
        by,
        at_ms: now_ms(),
    });
    let drop = entry.history.len().saturating_sub(HISTORY);
    entry.history.drain(..drop);
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
    let previous = entry.previous();
    entry.value = previous.clone();
    entry.history.push(SettingChange {
        value: previous,
        by,
        at_ms: now_ms(),
    });
    let drop = entry.history.len().saturating_sub(HISTORY);
    entry.history.drain(..drop);
    put_if(client, prefix, key, &entry, Some(at)).await
}
