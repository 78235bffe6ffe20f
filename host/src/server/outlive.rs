//! Rooms and sessions that outlive their node (README: "Rooms that outlive their
//! node"). A node started again brings back what it kept in storage before it serves;
//! in a cluster whose nodes share PostgreSQL, the surviving nodes take over the rooms
//! of a node that died, with the sessions of their players.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use crate::cluster::{Cluster, ClusterError, ClusterEvent};
use crate::gateway::Gateway;
use crate::rooms::{RestoreRoom, RoomHandle, RoomRecord, Rooms};
use crate::storage::{Saved, SavedRoom, SavedSession, Storage};

/// How long a node waits per place it has in a room's order of candidates before it
/// claims the room: the first candidate claims at once, the second only if the room is
/// still unclaimed this long after (the first died too, or could not), and so on.
const CANDIDATE_STEP: Duration = Duration::from_secs(1);

/// What bringing rooms back needs.
#[derive(Clone)]
pub(super) struct Outlive {
    pub rooms: Rooms,
    pub gateway: Gateway,
    pub storage: Storage,
    pub cluster: Cluster,
}

impl Outlive {
    fn me(&self) -> String {
        self.cluster.node_id().to_owned()
    }

    /// Brings back the sessions and rooms this node kept in storage when it last
    /// stopped or died, before it serves anyone: sessions first (detached, each with a
    /// fresh grace period), then each room from its last checkpoint with its members'
    /// sessions, which then hold the rooms again. A room that cannot come back is
    /// logged and dropped.
    pub async fn restore(&self) {
        let started = Instant::now();
        let me = self.me();
        let sessions = match self.storage.saved_sessions(&me).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("reading the sessions kept in storage: {e}; none restored");
                Vec::new()
            }
        };
        let saved = match self.storage.saved_rooms(&me).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("reading the rooms kept in storage: {e}; none restored");
                Vec::new()
            }
        };
        if sessions.is_empty() && saved.is_empty() {
            return;
        }
        let (back, lost) = self.bring_back(saved, Some(sessions), &me).await;
        tracing::info!(
            rooms = back,
            lost,
            took = ?started.elapsed(),
            "rooms restored from their last checkpoints"
        );
    }

    /// Takes over the rooms of every node that leaves the cluster (its lease expired,
    /// or it stopped and kept its rooms), until `stop`.
    pub async fn take_over_dead_nodes(self, stop: CancellationToken) {
        let mut events = self.cluster.subscribe();
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => return,
                event = events.recv() => event,
            };
            match event {
                Ok(ClusterEvent::NodeLeft { node }) if node != self.cluster.node_id() => {
                    let this = self.clone();
                    let stop = stop.clone();
                    tokio::spawn(async move {
                        this.clone().take_over(node.clone(), stop).await;
                        this.take_over_players(&node).await;
                    });
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "cluster events overflowed: a node that left meanwhile is not taken \
                         over by this node"
                    );
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Takes over the sessions `dead` held for players in rooms of this node (their
    /// gateway died, their rooms did not): the rooms held their places when the links
    /// from `dead` ended; the sessions come back from storage, detached with a fresh
    /// grace period, and the players are attached again. Their clients resume at any
    /// node and are sent here (`moved`).
    async fn take_over_players(&self, dead: &str) {
        let me = self.me();
        let sessions = self.gateway.session_table();
        let mut rooms_of: HashMap<u64, Vec<RoomHandle>> = HashMap::new();
        for info in self.rooms.list() {
            if info.closed.is_some() {
                continue;
            }
            let Some(handle) = self.rooms.get(&info.id) else {
                continue;
            };
            for player in info.members {
                rooms_of.entry(player).or_default().push(handle.clone());
            }
        }
        let here = sessions.sinks(&rooms_of.keys().copied().collect::<Vec<u64>>());
        let players: Vec<u64> = rooms_of
            .keys()
            .filter(|p| !here.contains_key(p))
            .filter(|p| {
                self.cluster
                    .session_owner(**p)
                    .is_none_or(|n| n == dead || n == me)
            })
            .copied()
            .collect();
        if players.is_empty() {
            return;
        }
        let saved = match self.storage.saved_sessions_of(dead, &players).await {
            Ok(saved) => saved,
            Err(e) => {
                tracing::warn!(node = dead, "reading the sessions of its players: {e}");
                return;
            }
        };
        if saved.is_empty() {
            return;
        }
        let sinks = self.gateway.restore_sessions(saved).await;
        let mut back = 0;
        for (player, sink) in sinks {
            let mut attached = Vec::new();
            for handle in rooms_of.remove(&player).unwrap_or_default() {
                if handle.attach(player, sink.clone()).await.is_ok() {
                    attached.push(handle);
                }
            }
            if !attached.is_empty() {
                back += 1;
                self.gateway.rejoin(player, attached);
            }
        }
        tracing::info!(
            node = dead,
            players = back,
            "took over the sessions of players in rooms here whose node left"
        );
    }

    /// Claims and restores the rooms `dead` left in storage. Every surviving node runs
    /// this; each room has an order of candidates (rendezvous hashing weighted by the
    /// nodes' room counts, so the rooms spread and lighter nodes take more), and a node
    /// claims a room only when its turn comes and nobody has. The claim is one etcd
    /// transaction per room, so a room is taken once.
    async fn take_over(self, dead: String, stop: CancellationToken) {
        let started = Instant::now();
        let saved = match self.storage.saved_rooms(&dead).await {
            Ok(saved) => saved,
            Err(e) => {
                tracing::warn!(node = dead, "reading the rooms of a node that left: {e}");
                return;
            }
        };
        if saved.is_empty() {
            return;
        }
        let me = self.me();
        let loads = room_counts(&self.cluster, &dead);
        let mut turns: BTreeMap<usize, Vec<SavedRoom>> = BTreeMap::new();
        for room in saved {
            let order = candidates(&room.room_id, &loads);
            let turn = order.iter().position(|n| *n == me).unwrap_or(order.len());
            turns.entry(turn).or_default().push(room);
        }
        let (mut back, mut lost) = (0, 0);
        for (turn, rooms) in turns {
            let at = started + CANDIDATE_STEP * turn as u32;
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(at.into()) => {}
            }
            // Rooms another node claimed meanwhile are its own.
            let rooms: Vec<SavedRoom> = rooms
                .into_iter()
                .filter(|r| self.cluster.room_owner(&r.room_id).is_none())
                .collect();
            if rooms.is_empty() {
                continue;
            }
            let (b, l) = self.bring_back(rooms, None, &dead).await;
            back += b;
            lost += l;
        }
        if back + lost > 0 {
            tracing::info!(
                node = dead,
                rooms = back,
                lost,
                took = ?started.elapsed(),
                "took over rooms of a node that left the cluster"
            );
        }
    }

    /// Claims the rooms of `saved` (kept by node `from`) for this node, restores the
    /// sessions of their players (all of `sessions` when given, else those `from` kept
    /// for the rooms' members), then the rooms with their members. Returns rooms back
    /// and rooms lost.
    async fn bring_back(
        &self,
        saved: Vec<SavedRoom>,
        sessions: Option<Vec<SavedSession>>,
        from: &str,
    ) -> (usize, usize) {
        let me = self.me();
        let taking_over = from != me;
        let mut claimed = Vec::new();
        for mut room in saved {
            if self.cluster.is_etcd() {
                match self.cluster.claim_room(&room.room_id, &room.game).await {
                    Ok(()) => {}
                    // This node's own key from before it restarted, still under its
                    // old lease: the room is this node's.
                    Err(ClusterError::RoomExists { owner, .. }) if owner == me => {}
                    Err(e) => {
                        tracing::info!(room = room.room_id, "not brought back here: {e}");
                        continue;
                    }
                }
            }
            if taking_over {
                match self.storage.adopt_room(&room.room_id, from, &me).await {
                    Ok(true) => room.node = me.clone(),
                    Ok(false) => {
                        tracing::info!(room = room.room_id, "another node took the room first");
                        self.cluster.release_room(&room.room_id).await;
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(room = room.room_id, "taking the room's checkpoint: {e}");
                        self.cluster.release_room(&room.room_id).await;
                        continue;
                    }
                }
            }
            claimed.push(room);
        }
        let sessions = match sessions {
            Some(all) => all,
            None => {
                let members: Vec<u64> = claimed
                    .iter()
                    .filter_map(|r| RoomRecord::parse(&r.record).ok())
                    .flat_map(|r| r.members.into_iter().map(|(p, _)| p))
                    .collect::<HashSet<u64>>()
                    .into_iter()
                    .collect();
                match self.storage.saved_sessions_of(from, &members).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(node = from, "reading the sessions of its players: {e}");
                        Vec::new()
                    }
                }
            }
        };
        // A player who logged in on another live node since is that node's now.
        let sessions: Vec<SavedSession> = sessions
            .into_iter()
            .filter(|s| {
                self.cluster
                    .session_owner(s.player_id)
                    .is_none_or(|n| n == from || n == me)
            })
            .collect();
        let mut sinks = self.gateway.restore_sessions(sessions).await;
        let mut rejoin: HashMap<u64, Vec<RoomHandle>> = HashMap::new();
        let (mut back, mut lost) = (0, 0);
        for saved in claimed {
            let id = saved.room_id.clone();
            let restored = async {
                let module = module_for(&self.rooms, &self.storage, &saved).await?;
                let mut restore = RestoreRoom::from_saved(saved.clone(), module)
                    .map_err(|e| anyhow::anyhow!(e))?;
                // Members whose sessions are on other nodes are held for those nodes
                // to attach them again (`gateway/reattach.rs`).
                restore.hold = self.gateway.grace_period();
                let members: Vec<u64> = restore.record.members.iter().map(|(p, _)| *p).collect();
                for player in &members {
                    if let Some(sink) = sinks.get(player) {
                        restore.sinks.insert(*player, sink.clone());
                    }
                }
                let handle = self.rooms.restore(restore).await?;
                anyhow::Ok((handle, members))
            }
            .await;
            match restored {
                Ok((handle, members)) => {
                    back += 1;
                    for player in members {
                        if sinks.contains_key(&player) {
                            rejoin.entry(player).or_default().push(handle.clone());
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(room = id, "the room could not be restored: {e:#}");
                    storage_forget(&self.storage, &saved).await;
                    self.cluster.release_room(&id).await;
                    lost += 1;
                }
            }
        }
        for (player, handles) in rejoin {
            self.gateway.rejoin(player, handles);
        }
        sinks.clear();
        (back, lost)
    }
}

/// How many rooms each node of the cluster runs, leaving out node `without`.
pub(super) fn room_counts(cluster: &Cluster, without: &str) -> HashMap<String, usize> {
    cluster
        .node_loads()
        .into_iter()
        .filter(|(node, _)| node != without)
        .map(|(node, (_, rooms))| (node, rooms))
        .collect()
}

/// The nodes of `loads` (node → rooms it runs) in the order they should take room
/// `room`: weighted rendezvous hashing, the same order on every node that sees the same
/// loads, with a node's weight falling as its room count grows.
pub(super) fn candidates(room: &str, loads: &HashMap<String, usize>) -> Vec<String> {
    use sha2::Digest;
    let mut scored: Vec<(f64, &String)> = loads
        .iter()
        .map(|(node, rooms)| {
            let digest = sha2::Sha256::new()
                .chain_update(room.as_bytes())
                .chain_update([0])
                .chain_update(node.as_bytes())
                .finalize();
            let mut first = [0u8; 8];
            first.copy_from_slice(&digest[..8]);
            // Uniform in (0, 1].
            let u = ((u64::from_be_bytes(first) >> 11) + 1) as f64 / (1u64 << 53) as f64;
            let weight = 1.0 / (1.0 + *rooms as f64);
            (-u.ln() / weight, node)
        })
        .collect();
    scored.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(b.1)));
    scored.into_iter().map(|(_, n)| n.clone()).collect()
}

/// The module a saved room runs: the game's active one if it is that module, else the
/// module kept in storage; failing both, the game's active version (restoring the
/// state like a live swap would).
pub(super) async fn module_for(
    rooms: &Rooms,
    storage: &Storage,
    saved: &SavedRoom,
) -> anyhow::Result<Arc<crate::runtime::Module>> {
    let active = rooms.active_module(&saved.game);
    if let Some(m) = &active
        && m.sha256_hex() == saved.module_sha256
    {
        return Ok(m.clone());
    }
    match storage.module_bytes(&saved.module_sha256).await {
        Ok(bytes) => Ok(rooms.runtime().load(bytes).await?),
        Err(e) => match active {
            Some(m) => {
                tracing::warn!(
                    room = saved.room_id,
                    "module {} is not kept ({e}); restoring on {}",
                    saved.module_sha256,
                    m.label()
                );
                Ok(m)
            }
            None => anyhow::bail!("game {} is not installed on this node", saved.game),
        },
    }
}

/// Drops the checkpoint of a room that cannot come back (it would fail every start).
async fn storage_forget(storage: &Storage, saved: &SavedRoom) {
    let gone = Saved::RoomGone {
        room_id: saved.room_id.clone(),
        node: saved.node.clone(),
    };
    if let Err(e) = storage.save_batch(&[gone]).await {
        tracing::warn!(room = saved.room_id, "dropping its checkpoint: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_agree_spread_rooms_and_favour_light_nodes() {
        let even: HashMap<String, usize> = [("a", 0), ("b", 0), ("c", 0)]
            .map(|(n, r)| (n.to_owned(), r))
            .into();
        let mut first: HashMap<String, usize> = HashMap::new();
        for i in 0..3000 {
            let order = candidates(&format!("room-{i}"), &even);
            assert_eq!(order.len(), 3);
            assert_eq!(
                order,
                candidates(&format!("room-{i}"), &even),
                "deterministic"
            );
            *first.entry(order[0].clone()).or_default() += 1;
        }
        for node in ["a", "b", "c"] {
            let n = first[node];
            assert!((800..1200).contains(&n), "{node} is first for {n} of 3000");
        }
        // A node running many rooms is first for fewer.
        let uneven: HashMap<String, usize> = [("a", 0), ("b", 0), ("c", 30)]
            .map(|(n, r)| (n.to_owned(), r))
            .into();
        let c_first = (0..3000)
            .filter(|i| candidates(&format!("room-{i}"), &uneven)[0] == "c")
            .count();
        assert!(c_first < 200, "c (30 rooms) is first for {c_first} of 3000");
    }
}
