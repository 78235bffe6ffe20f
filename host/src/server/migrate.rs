//! Live migration (README: "Moving rooms between nodes"). A node moves a room to
//! another node with no state lost: the sessions of the room's players here stop
//! reading their clients, the room stops at a tick boundary and is saved, and the room
//! goes with those sessions (their frame numbers and the frames not yet acknowledged)
//! to the target's `Adopt`. The target restores the room, starts the sessions, and
//! switches the room and the sessions to itself in etcd in one transaction. Then each
//! client here is told where to resume (`moved`, with the address), and it resumes there
//! as after a dropped connection: nothing lost, nothing doubled. Client frames that came
//! during the move were not read here; the client sends them again to the target, which
//! takes them because it knows the last one processed. Members whose sessions are on
//! other nodes are told where the room goes; the target holds their places and their
//! nodes attach them there (`gateway/reattach.rs`). If any step fails, the room comes
//! back here from what it saved, and its sessions read their clients again.
//!
//! `ludus rooms move` calls `Move` on the node that runs the room, and `ludus drain`
//! calls `Drain`, which moves every room of the node, spread over the other nodes as
//! a takeover would spread them.

use anyhow::{Context, anyhow};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::{Request, Response, Status};

use super::outlive::{candidates, module_for, room_counts};
use crate::cluster::Cluster;
use crate::gateway::{Gateway, SessionMove};
use crate::rooms::{Checkpoints, RestoreRoom, RoomRecord, Rooms};
use crate::rpc::pb::migration_client::MigrationClient;
use crate::rpc::pb::migration_server::{Migration, MigrationServer};
use crate::rpc::pb::{
    AdoptReply, AdoptRequest, DrainReply, DrainRequest, MoveReply, MoveRequest, MovedSession,
};
use crate::rpc::{Link, PeerChannel};
use crate::storage::{SaveKey, Saved, SavedRoom, Storage};

/// Rooms a drain moves at once.
const DRAIN_PARALLEL: usize = 4;
/// The largest room (state and frames) a move carries.
const MAX_MOVE_BYTES: usize = 64 * 1024 * 1024;

/// What moving rooms needs. Cheap to clone.
#[derive(Clone)]
pub(super) struct Migrate {
    pub rooms: Rooms,
    pub gateway: Gateway,
    pub storage: Storage,
    pub cluster: Cluster,
    pub link: Link,
    pub checkpoints: Option<Checkpoints>,
}

impl Migrate {
    /// The `Migration` service, refusing calls without the cluster credential.
    pub fn server(self, secret: &str) -> crate::rpc::layers::Checked<MigrationServer<Self>> {
        let server = MigrationServer::new(self)
            .max_decoding_message_size(MAX_MOVE_BYTES)
            .max_encoding_message_size(MAX_MOVE_BYTES);
        crate::rpc::layers::checked(server, secret)
    }

    async fn channel(&self, node: &str) -> anyhow::Result<MigrationClient<PeerChannel>> {
        let info = self
            .cluster
            .node(node)
            .ok_or_else(|| anyhow!("no node `{node}` in the cluster"))?;
        let channel = crate::rpc::channel(&info.grpc, &self.link).await?;
        Ok(MigrationClient::new(channel)
            .max_decoding_message_size(MAX_MOVE_BYTES)
            .max_encoding_message_size(MAX_MOVE_BYTES))
    }

    /// Moves room `room_id` of this node to node `target`; returns how long the room
    /// was paused.
    pub async fn move_room(&self, room_id: &str, target: &str) -> anyhow::Result<Duration> {
        let mut client = self.channel(target).await?;
        self.move_over(room_id, target, &mut client).await
    }

    async fn move_over(
        &self,
        room_id: &str,
        target: &str,
        client: &mut MigrationClient<PeerChannel>,
    ) -> anyhow::Result<Duration> {
        let me = self.cluster.node_id().to_owned();
        anyhow::ensure!(target != me, "room `{room_id}` is on node {me} already");
        let address = self
            .cluster
            .node(target)
            .ok_or_else(|| anyhow!("no node `{target}` in the cluster"))?
            .gateway;
        let handle = self
            .rooms
            .get(room_id)
            .filter(|h| !h.is_closed())
            .ok_or_else(|| anyhow!("room `{room_id}` does not run on node {me}"))?;
        let sessions = self.gateway.session_table().clone();
        let started = Instant::now();
        let members = handle.info().members;
        let frozen = sessions.freeze(&members).await;
        let (record, state) = match handle.hand_off(frozen.clone(), Some(target)).await {
            Ok(saved) => saved,
            Err(e) => {
                sessions.thaw(&frozen);
                anyhow::bail!("room `{room_id}` could not be stopped for the move: {e}");
            }
        };
        let moves = sessions.hand(&frozen).await;
        let request = adopt_request(&me, room_id, &record, &state, &moves)?;
        match client.adopt(request).await {
            Ok(_) => {
                let pause = started.elapsed();
                let players: Vec<u64> = moves.iter().map(|m| m.player_id).collect();
                sessions.moved(&players, target, &address, &[room_id.to_owned()]);
                self.cluster.release_room(room_id).await;
                // This node's checkpoint of the room goes (the target's is the room now;
                // with a shared database the row is the target's already and stays).
                if let Some(checkpoints) = &self.checkpoints {
                    checkpoints.saver().put(
                        SaveKey::Room(room_id.into()),
                        Saved::RoomGone {
                            room_id: room_id.to_owned(),
                            node: me.clone(),
                        },
                        None,
                    );
                }
                tracing::info!(
                    room = room_id,
                    target,
                    ?pause,
                    players = players.len(),
                    "room moved"
                );
                Ok(pause)
            }
            Err(status) => {
                let why = status.message().to_owned();
                // Back here from what it saved, with its sessions.
                let back = self.restore_here(room_id, record, state, &frozen).await;
                sessions.thaw(&frozen);
                match back {
                    Ok(()) => anyhow::bail!(
                        "node {target} did not take room `{room_id}` ({why}); it plays on here"
                    ),
                    Err(e) => anyhow::bail!(
                        "node {target} did not take room `{room_id}` ({why}), and it could not \
                         start here again: {e:#}"
                    ),
                }
            }
        }
    }

    /// A room whose move failed runs here again from the state it saved for the move.
    async fn restore_here(
        &self,
        room_id: &str,
        record: RoomRecord,
        state: Vec<u8>,
        players: &[u64],
    ) -> anyhow::Result<()> {
        let saved = self.saved_here(
            room_id,
            &record.game,
            &record.module_sha256,
            serde_json::to_string(&record)?,
            state,
        );
        let module = module_for(&self.rooms, &self.storage, &saved).await?;
        let mut restore = RestoreRoom::from_saved(saved, module).map_err(|e| anyhow!(e))?;
        let sinks = self.gateway.session_table().sinks(players);
        restore.sinks = sinks;
        restore.hold = self.gateway.grace_period();
        let handle = self.rooms.restore(restore).await?;
        for &player in players {
            self.gateway.rejoin(player, vec![handle.clone()]);
        }
        Ok(())
    }

    /// A room's saved state and record, to run here (as a checkpoint read from storage).
    fn saved_here(
        &self,
        room_id: &str,
        game: &str,
        module_sha256: &str,
        record: String,
        state: Vec<u8>,
    ) -> SavedRoom {
        SavedRoom {
            room_id: room_id.to_owned(),
            node: self.cluster.node_id().to_owned(),
            game: game.to_owned(),
            version: String::new(),
            module_sha256: module_sha256.to_owned(),
            record,
            state,
            saved_ms: 0,
            fresh: false,
        }
    }

    /// Takes a room another node moves here (the target's side of a move).
    async fn adopt(&self, req: AdoptRequest) -> anyhow::Result<()> {
        let saved = self.saved_here(
            &req.room_id,
            &req.game,
            &req.module_sha256,
            req.record.clone(),
            req.state.to_vec(),
        );
        let module = module_for(&self.rooms, &self.storage, &saved).await?;
        let mut moves = Vec::with_capacity(req.sessions.len());
        for s in req.sessions {
            moves.push(session_move(s)?);
        }
        let players: Vec<u64> = moves.iter().map(|m| m.player_id).collect();
        let sessions = self.gateway.session_table().clone();
        let sinks = sessions.adopt(moves);
        let mut restore = RestoreRoom::from_saved(saved, module).map_err(|e| anyhow!(e))?;
        restore.sinks = sinks;
        restore.hold = self.gateway.grace_period();
        let handle = match self.rooms.restore(restore).await {
            Ok(handle) => handle,
            Err(e) => {
                sessions.drop_adopted(&players);
                return Err(e).context("restoring the room");
            }
        };
        if let Err(e) = self
            .cluster
            .transfer(&req.room_id, &req.game, &req.from, &players)
            .await
        {
            handle.close("the move to this node failed").await;
            sessions.drop_adopted(&players);
            return Err(e.into());
        }
        for &player in &players {
            self.gateway.rejoin(player, vec![handle.clone()]);
        }
        // With a shared database the room's checkpoint row is this node's from now on
        // (off the pause: the room's first checkpoint here is an interval away).
        if self.checkpoints.is_some() {
            let (storage, me) = (self.storage.clone(), self.cluster.node_id().to_owned());
            tokio::spawn(async move {
                if let Err(e) = storage.adopt_room(&req.room_id, &req.from, &me).await {
                    tracing::warn!(room = req.room_id, "taking the room's checkpoint over: {e}");
                }
            });
        }
        Ok(())
    }

    /// Moves every room of this node to the other nodes, spread by load as a takeover
    /// would spread them. Returns rooms moved, the failures, and each room's pause.
    pub async fn drain(&self) -> (usize, Vec<String>, Vec<Duration>) {
        let mut loads = room_counts(&self.cluster, self.cluster.node_id());
        let rooms: Vec<String> = self
            .rooms
            .list()
            .into_iter()
            .filter(|r| r.closed.is_none())
            .map(|r| r.id.to_string())
            .collect();
        if loads.is_empty() {
            let failed = rooms
                .iter()
                .map(|r| format!("{r}: no other node to move it to"))
                .collect();
            return (0, failed, Vec::new());
        }
        // Each room's target, counting the rooms already sent there.
        let mut plan: Vec<(String, String)> = Vec::new();
        for room in rooms {
            let target = candidates(&room, &loads).remove(0);
            *loads.entry(target.clone()).or_default() += 1;
            plan.push((room, target));
        }
        let mut clients: HashMap<String, MigrationClient<PeerChannel>> = HashMap::new();
        let mut failed = Vec::new();
        for target in loads.keys() {
            match self.channel(target).await {
                Ok(c) => {
                    clients.insert(target.clone(), c);
                }
                Err(e) => failed.push(format!("node {target}: {e:#}")),
            }
        }
        let plan: Vec<(String, String)> = plan
            .into_iter()
            .filter(|(_, t)| clients.contains_key(t))
            .collect();
        let results =
            futures_util::StreamExt::collect::<Vec<_>>(futures_util::StreamExt::buffer_unordered(
                futures_util::stream::iter(plan.into_iter().map(|(room, target)| {
                    let mut client = clients[&target].clone();
                    let this = self.clone();
                    async move {
                        let r = this.move_over(&room, &target, &mut client).await;
                        (room, r)
                    }
                })),
                DRAIN_PARALLEL,
            ))
            .await;
        let mut pauses = Vec::new();
        for (room, result) in results {
            match result {
                Ok(pause) => pauses.push(pause),
                Err(e) => failed.push(format!("{room}: {e:#}")),
            }
        }
        (pauses.len(), failed, pauses)
    }
}

fn adopt_request(
    from: &str,
    room_id: &str,
    record: &RoomRecord,
    state: &[u8],
    moves: &[SessionMove],
) -> anyhow::Result<AdoptRequest> {
    use prost::Message;
    Ok(AdoptRequest {
        from: from.to_owned(),
        room_id: room_id.to_owned(),
        game: record.game.clone(),
        module_sha256: record.module_sha256.clone(),
        record: serde_json::to_string(record)?,
        state: state.to_vec().into(),
        sessions: moves
            .iter()
            .map(|m| MovedSession {
                player_id: m.player_id,
                name: m.name.clone(),
                session_id: m.session_id.clone(),
                token_sha256: m.token_sha256.to_vec().into(),
                out_seq: m.out_seq,
                in_seq: m.in_seq,
                unacked: m.unacked.iter().map(|f| f.encode_to_vec().into()).collect(),
            })
            .collect(),
    })
}

fn session_move(s: MovedSession) -> anyhow::Result<SessionMove> {
    use prost::Message;
    let token_sha256: [u8; 32] = s
        .token_sha256
        .as_ref()
        .try_into()
        .map_err(|_| anyhow!("player {}: the token hash is not 32 bytes", s.player_id))?;
    let mut unacked = Vec::with_capacity(s.unacked.len());
    for bytes in &s.unacked {
        let frame = crate::gateway::pb::ServerFrame::decode(bytes.as_ref())
            .with_context(|| format!("player {}: a held frame", s.player_id))?;
        unacked.push(Arc::new(frame));
    }
    Ok(SessionMove {
        player_id: s.player_id,
        name: s.name,
        session_id: s.session_id,
        token_sha256,
        out_seq: s.out_seq,
        in_seq: s.in_seq,
        unacked,
    })
}

fn status(e: anyhow::Error) -> Status {
    Status::failed_precondition(format!("{e:#}"))
}

#[tonic::async_trait]
impl Migration for Migrate {
    async fn adopt(&self, req: Request<AdoptRequest>) -> Result<Response<AdoptReply>, Status> {
        let req = req.into_inner();
        let room = req.room_id.clone();
        match Migrate::adopt(self, req).await {
            Ok(()) => Ok(Response::new(AdoptReply {})),
            Err(e) => {
                tracing::warn!(room, "a room moved here could not be taken: {e:#}");
                Err(status(e))
            }
        }
    }

    async fn r#move(&self, req: Request<MoveRequest>) -> Result<Response<MoveReply>, Status> {
        let req = req.into_inner();
        let pause = self
            .move_room(&req.room_id, &req.target)
            .await
            .map_err(status)?;
        Ok(Response::new(MoveReply {
            target: req.target,
            pause_ns: pause.as_nanos() as u64,
        }))
    }

    async fn drain(&self, req: Request<DrainRequest>) -> Result<Response<DrainReply>, Status> {
        let started = Instant::now();
        if req.into_inner().undo {
            self.rooms.set_draining(false);
            tracing::info!("drain undone: taking new players and rooms again");
            return Ok(Response::new(DrainReply::default()));
        }
        // No new players or rooms come while the rooms leave (and after: the node is
        // being emptied, e.g. before it stops).
        self.rooms.set_draining(true);
        let (moved, failed, pauses) = Migrate::drain(self).await;
        Ok(Response::new(DrainReply {
            moved: moved as u32,
            failed,
            took_ns: started.elapsed().as_nanos() as u64,
            pauses_ns: pauses.iter().map(|p| p.as_nanos() as u64).collect(),
        }))
    }
}
