//! What the cluster should run and what each node runs: `games/<game>` holds the desired
//! version with its history (for rollback), `status/<node>/<game>` each node's answer.
//! Writes to `games/` are transactions guarded by revision, so two operators (or an
//! operator and a node rolling back) cannot silently overwrite each other. Following
//! the desired version on a node is `rollout`'s job.

use etcd_client::Client;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::ClusterError;
use super::etcd::{get_entry, put_entry_if};

use super::keys::Key;
use crate::rooms::SwapPolicy;

/// Earlier versions kept in a game's entry for rollback.
const HISTORY: usize = 10;

/// One version of a game's module.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct GameVersion {
    pub sha256: String,
    pub name: String,
    pub version: String,
    pub size: u64,
}

/// `games/<game>`: what the cluster should run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GameEntry {
    pub current: GameVersion,
    pub policy: SwapPolicy,
    /// Config (a JSON object) for new rooms created without one.
    #[serde(default)]
    pub room_config: Option<String>,
    /// Restore the previous version cluster-wide when a node fails to swap.
    pub rollback_on_failure: bool,
    /// Earlier versions, oldest first.
    pub history: Vec<GameVersion>,
    /// Why the entry last changed, when it was not a plain deploy (a rollback).
    pub note: Option<String>,
}

/// What an operator asks the cluster to run (see [`GameEntry`] for each field).
#[derive(Clone, Debug)]
pub struct Desired {
    pub version: GameVersion,
    pub policy: SwapPolicy,
    pub room_config: Option<String>,
    pub rollback_on_failure: bool,
}

/// `status/<node>/<game>`: what a node runs.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct GameStatus {
    /// The module the node's new rooms get.
    pub sha256: String,
    pub version: String,
    /// Open rooms per version.
    pub rooms: BTreeMap<String, usize>,
    /// The desired version (sha256) this status answers.
    pub desired: String,
    /// Whether the node reached the desired version.
    pub ok: bool,
    pub error: Option<String>,
}

/// Reads `games/<game>` with its revision.
pub(super) async fn get_game(
    client: &mut Client,
    prefix: &str,
    game: &str,
) -> Result<Option<(GameEntry, i64)>, ClusterError> {
    get_entry(client, prefix, Key::Game(game.to_owned())).await
}

/// Writes `entry` as `games/<game>` if the key is still at `revision` (`None`: absent).
async fn put_game_if(
    client: &mut Client,
    prefix: &str,
    game: &str,
    entry: &GameEntry,
    revision: Option<i64>,
) -> Result<bool, ClusterError> {
    put_entry_if(client, prefix, Key::Game(game.to_owned()), entry, revision).await
}

/// Makes `version` the desired version of `game`; the one it replaces goes to history.
pub(super) async fn set_desired(
    client: &mut Client,
    prefix: &str,
    game: &str,
    desired: Desired,
) -> Result<GameEntry, ClusterError> {
    let Desired {
        version,
        policy,
        room_config,
        rollback_on_failure,
    } = desired;
    let existing = get_game(client, prefix, game).await?;
    let (history, revision) = match &existing {
        Some((old, revision)) => {
            let mut history = old.history.clone();
            if old.current.sha256 != version.sha256 {
                history.push(old.current.clone());
            }
            let drop = history.len().saturating_sub(HISTORY);
            history.drain(..drop);
            (history, Some(*revision))
        }
        // The first deploy of a game the nodes were started with: what they run now is
        // the version a rollback returns to.
        None => (running(client, prefix, game, &version.sha256).await?, None),
    };
    let entry = GameEntry {
        current: version,
        policy,
        room_config,
        rollback_on_failure,
        history,
        note: None,
    };
    if !put_game_if(client, prefix, game, &entry, revision).await? {
        return Err(ClusterError::Changed {
            game: game.to_owned(),
            doing: "this deploy was being written",
        });
    }
    Ok(entry)
}

/// What most nodes run of `game` (from their status) when it is not `except`: the
/// history of a game's first deploy.
async fn running(
    client: &mut Client,
    prefix: &str,
    game: &str,
    except: &str,
) -> Result<Vec<GameVersion>, ClusterError> {
    let (kvs, _) = super::etcd::get_prefix(client, &format!("{prefix}status/")).await?;
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    for kv in &kvs {
        let Some(Key::Status { game: g, .. }) = Key::parse(prefix, kv.key()) else {
            continue;
        };
        let Ok(status) = serde_json::from_slice::<GameStatus>(kv.value()) else {
            continue;
        };
        if g == game && !status.sha256.is_empty() && status.sha256 != except {
            *counts.entry((status.sha256, status.version)).or_default() += 1;
        }
    }
    let most = counts.into_iter().max_by_key(|(_, n)| *n);
    Ok(most
        .map(|((sha256, version), _)| GameVersion {
            sha256,
            name: game.to_owned(),
            version,
            size: 0,
        })
        .into_iter()
        .collect())
}

/// Restores the previous version of `game`, if the entry is still at `revision` (any
/// revision when `None`). Returns the new entry.
pub(super) async fn rollback(
    client: &mut Client,
    prefix: &str,
    game: &str,
    revision: Option<i64>,
    note: String,
) -> Result<GameEntry, ClusterError> {
    let (mut entry, at) = get_game(client, prefix, game)
        .await?
        .ok_or_else(|| ClusterError::NoGame(game.to_owned()))?;
    let changed = || ClusterError::Changed {
        game: game.to_owned(),
        doing: "rolling back",
    };
    if revision.is_some_and(|r| r != at) {
        return Err(changed());
    }
    let previous = entry
        .history
        .pop()
        .ok_or_else(|| ClusterError::NoHistory(game.to_owned()))?;
    entry.current = previous;
    entry.note = Some(note);
    if !put_game_if(client, prefix, game, &entry, Some(at)).await? {
        return Err(changed());
    }
    Ok(entry)
}
