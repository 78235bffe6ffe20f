//! Live deploys across the cluster. `games/<game>` holds the desired version; every node
//! watches it, fetches bytes it lacks from a holder over gRPC, checks the hash, compiles,
//! swaps per policy and writes `status/<node>/<game>`. A failed swap rolls the game back
//! cluster-wide when the entry says so. Writes to `games/` are transactions guarded by
//! revision, so two operators cannot silently overwrite each other.

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Cluster, ClusterEvent, key, short_sha as short};
use crate::rooms::{Rooms, SwapPolicy};

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
pub async fn get_game(
    client: &mut Client,
    prefix: &str,
    game: &str,
) -> anyhow::Result<Option<(GameEntry, i64)>> {
    let resp = client.get(key(prefix, "games", game), None).await?;
    match resp.kvs().first() {
        Some(kv) => {
            let entry = serde_json::from_slice(kv.value())
                .map_err(|e| anyhow::anyhow!("games/{game} is not a game entry: {e}"))?;
            Ok(Some((entry, kv.mod_revision())))
        }
        None => Ok(None),
    }
}

/// Writes `entry` as `games/<game>` if the key is still at `revision` (`None`: absent).
async fn put_game_if(
    client: &mut Client,
    prefix: &str,
    game: &str,
    entry: &GameEntry,
    revision: Option<i64>,
) -> anyhow::Result<bool> {
    let k = key(prefix, "games", game);
    let guard = match revision {
        Some(r) => Compare::mod_revision(k.clone(), CompareOp::Equal, r),
        None => Compare::create_revision(k.clone(), CompareOp::Equal, 0),
    };
    let txn = Txn::new()
        .when([guard])
        .and_then([TxnOp::put(k, serde_json::to_vec(entry)?, None)]);
    Ok(client.txn(txn).await?.succeeded())
}

/// Makes `version` the desired version of `game`; the one it replaces goes to history.
pub async fn set_desired(
    client: &mut Client,
    prefix: &str,
    game: &str,
    version: GameVersion,
    policy: SwapPolicy,
    room_config: Option<String>,
    rollback_on_failure: bool,
) -> anyhow::Result<GameEntry> {
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
        None => (Vec::new(), None),
    };
    let entry = GameEntry {
        current: version,
        policy,
        room_config,
        rollback_on_failure,
        history,
        note: None,
    };
    anyhow::ensure!(
        put_game_if(client, prefix, game, &entry, revision).await?,
        "games/{game} changed while this deploy was being written (another operator?); \
         look at `ludus status` and run it again"
    );
    Ok(entry)
}

/// Restores the previous version of `game`, if the entry is still at `revision` (any
/// revision when `None`). Returns the new entry.
pub async fn rollback(
    client: &mut Client,
    prefix: &str,
    game: &str,
    revision: Option<i64>,
    note: String,
) -> anyhow::Result<GameEntry> {
    let (mut entry, at) = get_game(client, prefix, game)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no game `{game}` in the cluster"))?;
    if let Some(r) = revision {
        anyhow::ensure!(r == at, "games/{game} changed meanwhile; not rolling back");
    }
    let previous = entry
        .history
        .pop()
        .ok_or_else(|| anyhow::anyhow!("game `{game}` has no earlier version to roll back to"))?;
    entry.current = previous;
    entry.note = Some(note);
    anyhow::ensure!(
        put_game_if(client, prefix, game, &entry, Some(at)).await?,
        "games/{game} changed while rolling back (another operator?); look at `ludus status`"
    );
    Ok(entry)
}

/// Follows `games/` on this node: one deploy at a time, in the order they were written.
pub(super) async fn follow(c: Cluster, rooms: Rooms) {
    let mut events = c.subscribe();
    // Catch up with what etcd already wants.
    for (game, (entry, revision)) in c.routing().games {
        apply(&c, &rooms, &game, &entry, revision).await;
    }
    loop {
        let event = tokio::select! {
            _ = c.inner.stop.cancelled() => return,
            e = events.recv() => e,
        };
        match event {
            Ok(ClusterEvent::GameChanged {
                game,
                entry,
                revision,
            }) => apply(&c, &rooms, &game, &entry, revision).await,
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                for (game, (entry, revision)) in c.routing().games {
                    apply(&c, &rooms, &game, &entry, revision).await;
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Brings `game` on this node to `entry`'s version and reports the outcome.
async fn apply(c: &Cluster, rooms: &Rooms, game: &str, entry: &GameEntry, revision: i64) {
    let want = &entry.current.sha256;
    let active = rooms.active_module(game);
    if active.is_some() {
        rooms.set_default_config(game, entry.room_config.clone());
    }
    let outcome = if active.as_ref().is_some_and(|m| &m.sha256_hex() == want) {
        Ok(())
    } else {
        tracing::info!(game, version = %entry.current.version, sha256 = %want, "deploying");
        swap_in(c, rooms, game, entry).await
    };
    if let Err(error) = &outcome {
        tracing::warn!(game, sha256 = %want, "deploy failed: {error}");
    }
    write_status(c, rooms, game, want, outcome.as_ref().err().cloned()).await;
    if let Err(error) = outcome
        && entry.rollback_on_failure
        && !entry.history.is_empty()
        && let Some(etcd) = &c.inner.etcd
    {
        let note = format!(
            "rolled back from {} ({}): node {} failed: {error}",
            entry.current.version,
            short(want),
            c.node_id()
        );
        let mut client = etcd.client();
        match rollback(&mut client, &etcd.prefix, game, Some(revision), note).await {
            Ok(e) => tracing::warn!(game, to = %e.current.version, "rolled back cluster-wide"),
            Err(e) => tracing::info!(game, "not rolling back: {e}"),
        }
    }
}

async fn swap_in(c: &Cluster, rooms: &Rooms, game: &str, entry: &GameEntry) -> Result<(), String> {
    let want = &entry.current.sha256;
    let bytes = match c.module_bytes(want) {
        Some(bytes) => bytes,
        None => Arc::new(fetch(c, want).await?),
    };
    let module = rooms
        .runtime()
        .load(bytes.to_vec())
        .await
        .map_err(|e| format!("module {} refused: {e}", short(want)))?;
    if let Err(e) = c.hold_module(want, bytes).await {
        tracing::warn!(game, "announcing the module: {e}");
    }
    if rooms.active_module(game).is_none() {
        rooms.install(game, module);
        rooms.set_default_config(game, entry.room_config.clone());
        return Ok(());
    }
    let report = rooms
        .swap_game(game, module, entry.policy)
        .await
        .map_err(|e| e.to_string())?;
    match report.failures().next() {
        None => Ok(()),
        Some((room, error)) => Err(format!(
            "swap failed in {} of {} rooms{}; first: room {room}: {error}",
            report.failures().count(),
            report.results.len(),
            if report.rolled_back {
                " (the node kept the previous version)"
            } else {
                ""
            }
        )),
    }
}

/// The module's bytes from a node that holds them.
async fn fetch(c: &Cluster, sha: &str) -> Result<Vec<u8>, String> {
    let routing = c.routing();
    let holders: Vec<&str> = routing
        .modules
        .get(sha)
        .into_iter()
        .flatten()
        .filter(|n| *n != c.node_id())
        .filter_map(|n| routing.nodes.get(n).map(|info| info.grpc.as_str()))
        .filter(|addr| !addr.is_empty())
        .collect();
    if holders.is_empty() {
        return Err(format!("no node holds module {}", short(sha)));
    }
    let mut errors = Vec::new();
    for addr in holders {
        let secret = c
            .inner
            .etcd
            .as_ref()
            .map(|e| e.secret.as_str())
            .unwrap_or("");
        match crate::rpc::fetch(addr, secret, sha).await {
            Ok(bytes) => return Ok(bytes),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    Err(format!(
        "fetching module {}: {}",
        short(sha),
        errors.join("; ")
    ))
}

async fn write_status(
    c: &Cluster,
    rooms: &Rooms,
    game: &str,
    desired: &str,
    error: Option<String>,
) {
    let active = rooms.active_module(game);
    let info = rooms.games().into_iter().find(|g| g.name == game);
    let status = GameStatus {
        sha256: active.as_ref().map(|m| m.sha256_hex()).unwrap_or_default(),
        version: active.map(|m| m.version.clone()).unwrap_or_default(),
        rooms: info.map(|g| g.rooms_per_version).unwrap_or_default(),
        desired: desired.to_owned(),
        ok: error.is_none(),
        error,
    };
    if let Some(etcd) = &c.inner.etcd
        && let Err(e) = etcd.put_status(c.node_id(), game, &status).await
    {
        tracing::warn!(game, "writing status: {e}");
    }
}
