//! The cluster feeder: follows `games/` on this node, one deploy at a time, in the order
//! they were written. Each desired version goes down the rollout path (bytes fetched from
//! a holder when this node lacks them), the outcome is written to
//! `status/<node>/<game>`, and a failure rolls the game back cluster-wide when the entry
//! says so.

use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::{Rollout, Source};
use crate::cluster::{ClusterEvent, GameEntry, GameStatus, short_sha};

/// Runs until `stop`: catches up with what etcd already wants, then follows changes.
pub async fn follow(rollout: Rollout, stop: CancellationToken) {
    let cluster = rollout.cluster.clone();
    let mut events = cluster.subscribe();
    let desired = cluster.routing().games;
    // Games the node was started with and the cluster has no entry for yet: their
    // status says what runs, which a first deploy keeps as the version to roll back to.
    for game in rollout.rooms.games() {
        if !desired.contains_key(&game.name) {
            write_status(&rollout, &game.name, "", None).await;
        }
    }
    for (game, (entry, revision)) in desired {
        apply(&rollout, &game, &entry, revision).await;
    }
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            e = events.recv() => e,
        };
        match event {
            Ok(ClusterEvent::GameChanged {
                game,
                entry,
                revision,
            }) => apply(&rollout, &game, &entry, revision).await,
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => {
                for (game, (entry, revision)) in cluster.routing().games {
                    apply(&rollout, &game, &entry, revision).await;
                }
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// Brings `game` on this node to `entry`'s version and reports the outcome.
async fn apply(rollout: &Rollout, game: &str, entry: &GameEntry, revision: i64) {
    let (rooms, cluster) = (&rollout.rooms, &rollout.cluster);
    let want = &entry.current.sha256;
    let active = rooms.active_module(game);
    let outcome = if active.as_ref().is_some_and(|m| &m.sha256_hex() == want) {
        Ok(())
    } else {
        tracing::info!(game, version = %entry.current.version, sha256 = %want, "deploying");
        let source = Source::Held(want.clone());
        rollout.deploy(game, source, entry.policy).await.map(drop)
    };
    if rooms.has_game(game) {
        rooms.set_default_config(game, entry.room_config.clone());
    }
    let error = outcome.as_ref().err().map(ToString::to_string);
    write_status(rollout, game, want, error.clone()).await;
    if let Some(error) = error
        && entry.rollback_on_failure
        && !entry.history.is_empty()
    {
        let note = format!(
            "rolled back from {} ({}): node {} failed: {error}",
            entry.current.version,
            short_sha(want),
            cluster.node_id()
        );
        match cluster.rollback_game(game, revision, note).await {
            Ok(e) => tracing::warn!(game, to = %e.current.version, "rolled back cluster-wide"),
            Err(e) => tracing::info!(game, "not rolling back: {e}"),
        }
    }
}

async fn write_status(rollout: &Rollout, game: &str, desired: &str, error: Option<String>) {
    let active = rollout.rooms.active_module(game);
    let info = rollout.rooms.games().into_iter().find(|g| g.name == game);
    let status = GameStatus {
        sha256: active.as_ref().map(|m| m.sha256_hex()).unwrap_or_default(),
        version: active.map(|m| m.version.clone()).unwrap_or_default(),
        rooms: info.map(|g| g.rooms_per_version).unwrap_or_default(),
        desired: desired.to_owned(),
        ok: error.is_none(),
        error,
    };
    if let Err(e) = rollout.cluster.put_status(game, &status).await {
        tracing::warn!(game, "writing status: {e}");
    }
}
