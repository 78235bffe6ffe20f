//! Keeps `rooms/` and `nodes/<me>` in etcd in step with the node's rooms and load.

use std::collections::HashSet;
use std::time::Duration;

use super::{Cluster, ClusterError, NodeInfo, RoomEntry};
use crate::lock::Recover;
use crate::rooms::Rooms;

/// How often the node compares its rooms and load with what etcd says.
const SYNC_EVERY: Duration = Duration::from_secs(1);

/// Keeps `rooms/` and `nodes/<me>` in step with the node's rooms and load.
pub(super) async fn sync(c: Cluster, rooms: Rooms) {
    let mut written: Option<NodeInfo> = None;
    let mut live = HashSet::new();
    loop {
        tokio::select! {
            _ = c.inner.stop.cancelled() => return,
            _ = tokio::time::sleep(SYNC_EVERY) => {}
        }
        if !c.is_leased() {
            continue;
        }
        if let Err(e) = sync_once(&c, &rooms, &mut written, &mut live).await {
            tracing::debug!(node = c.node_id(), "syncing with etcd: {e}");
        }
    }
}

async fn sync_once(
    c: &Cluster,
    rooms: &Rooms,
    written: &mut Option<NodeInfo>,
    was_live: &mut HashSet<String>,
) -> Result<(), ClusterError> {
    let etcd = c.etcd();
    let me = c.node_id().to_owned();
    let live: Vec<(String, RoomEntry)> = rooms
        .list()
        .into_iter()
        .filter(|info| info.closed.is_none())
        .map(|info| {
            let entry = RoomEntry {
                owner: me.clone(),
                game: info.game,
                version: info.version,
                label: info.label,
                seats: info.seats as u32,
            };
            (info.id.to_string(), entry)
        })
        .collect();
    let mut held = c.inner.held.lock().recover().rooms.clone();
    // A room this node held whose key now names another owner was taken over while
    // this node was cut off from etcd (its lease expired): the other copy is the room
    // now, so this one closes, and is never registered again.
    let taken: Vec<(String, String)> = live
        .iter()
        .filter(|(room, _)| held.contains_key(room))
        .filter_map(|(room, _)| {
            let owner = c.room_owner(room)?;
            (owner != me).then(|| (room.clone(), owner))
        })
        .collect();
    for (room, owner) in taken {
        tracing::warn!(
            room,
            owner,
            "the room was taken over by another node while this one was cut off; closing \
             this copy"
        );
        c.inner.held.lock().recover().rooms.remove(&room);
        held.remove(&room);
        if let Some(handle) = rooms.get(&room) {
            handle
                .close(&format!("the room moved to node {owner}"))
                .await;
        }
    }
    let live: Vec<(String, RoomEntry)> = live
        .into_iter()
        .filter(|(room, _)| rooms.get(room).is_some_and(|h| h.info().closed.is_none()))
        .collect();
    for (room, entry) in &live {
        if held.get(room) == Some(entry) {
            continue;
        }
        match etcd.put_room(room, entry).await {
            Ok(()) => {
                c.inner
                    .held
                    .lock()
                    .recover()
                    .rooms
                    .insert(room.clone(), entry.clone());
            }
            // One room's key that cannot be written (another node's claim on the id)
            // must not hold up the others: reported, skipped, tried again next time.
            Err(e @ ClusterError::RoomExists { .. }) => {
                tracing::warn!(node = %me, room, "room key not written: {e}");
            }
            Err(e) => return Err(e),
        }
    }
    // Rooms that ran here and are gone now. (A room claimed but not created yet has
    // never been seen running, so it is left alone.)
    let now_live: HashSet<String> = live.iter().map(|(id, _)| id.clone()).collect();
    for room in was_live.difference(&now_live) {
        c.release_room(room).await;
    }
    *was_live = now_live;
    let node = {
        let mut held = c.inner.held.lock().recover();
        held.node.rooms = live.len();
        held.node.players = held.sessions.len();
        held.node.clone()
    };
    if written.as_ref() != Some(&node) {
        etcd.put_node(&node).await?;
        *written = Some(node);
    }
    Ok(())
}
