//! Playing in a room on another node. The gateway node keeps one `Link` stream per peer
//! (opened on first use over the peer's HTTP/2 channel, with the cluster credential) and
//! multiplexes every player it forwards to that peer over it; the owner joins those
//! players to its room, and one pump per link relays the room's output back on the same
//! stream: output that went to several players of the link at once (a broadcast) goes
//! over the link once, with the list of players, and the gateway node fans it out.
//! When the link ends (the peer died, restarted, or left the cluster) every forwarded
//! player is told, per room, with a reason, and the link is opened again in the
//! background with backoff while the peer is in the cluster.

use futures_util::{FutureExt, Stream, StreamExt};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamMap;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::layers;
use super::pb::peer_frame::Body;
use super::pb::relay_client::RelayClient;
use super::pb::relay_server::{Relay, RelayServer};
use super::pb::room_output::Kind;
use super::pb::{JoinResult, JoinRoom, LeaveRoom, PeerFrame, RoomInput, RoomOutput};
use crate::cluster::{Cluster, ClusterEvent};
use crate::lock::Recover;
use crate::rooms::{LeaveReason, PlayerEvents, PlayerSink, RoomEvent, RoomHandle, Rooms};

/// Frames queued on a link before a sender waits.
const LINK_QUEUE: usize = 8192;
/// Room events queued per forwarded membership on the owner.
const PLAYER_QUEUE: usize = 1024;
/// Room events a link's pump takes at once before sending.
const PUMP_BATCH: usize = 1024;
/// Backoff between attempts to reopen a broken link.
const RELINK_MIN: std::time::Duration = std::time::Duration::from_millis(100);
const RELINK_MAX: std::time::Duration = std::time::Duration::from_secs(5);

// ---------------------------------------------------------------- owner side

/// The owner's end: joins forwarded players to local rooms and relays their output.
pub struct RelayService {
    rooms: Rooms,
    /// Ends every link when the node shuts down.
    stop: tokio_util::sync::CancellationToken,
}

impl RelayService {
    pub fn server(
        rooms: Rooms,
        secret: &str,
        stop: tokio_util::sync::CancellationToken,
    ) -> tonic::service::interceptor::InterceptedService<RelayServer<Self>, layers::CheckCredential>
    {
        tonic::service::interceptor::InterceptedService::new(
            RelayServer::new(RelayService { rooms, stop }),
            layers::CheckCredential::new(secret),
        )
    }
}

type FrameStream = Pin<Box<dyn Stream<Item = Result<PeerFrame, Status>> + Send>>;

fn frame(body: Body) -> PeerFrame {
    PeerFrame { body: Some(body) }
}

#[tonic::async_trait]
impl Relay for RelayService {
    type LinkStream = FrameStream;

    async fn link(
        &self,
        req: Request<Streaming<PeerFrame>>,
    ) -> Result<Response<FrameStream>, Status> {
        let mut inbound = req.into_inner();
        let (out, out_rx) = mpsc::channel::<PeerFrame>(LINK_QUEUE);
        let (rooms, stop) = (self.rooms.clone(), self.stop.clone());
        let (add, added) = mpsc::unbounded_channel();
        tokio::spawn(pump(added, out.clone()));
        tokio::spawn(async move {
            let mut members: HashMap<(u64, String), RoomHandle> = HashMap::new();
            loop {
                let f = tokio::select! {
                    _ = stop.cancelled() => break,
                    f = inbound.message() => match f {
                        Ok(Some(f)) => f,
                        _ => break,
                    },
                };
                match f.body {
                    Some(Body::Join(j)) => {
                        let result = join_here(&rooms, &j, &add).await;
                        let reply = match result {
                            Ok(room) => {
                                let info = room.info();
                                members.insert((j.player, j.room.clone()), room);
                                JoinResult {
                                    player: j.player,
                                    room: j.room,
                                    error: String::new(),
                                    game: info.game,
                                    version: info.version,
                                }
                            }
                            Err(error) => JoinResult {
                                player: j.player,
                                room: j.room,
                                error,
                                ..JoinResult::default()
                            },
                        };
                        if out.send(frame(Body::Joined(reply))).await.is_err() {
                            break;
                        }
                    }
                    Some(Body::Input(i)) => {
                        if let Some(room) = members.get(&(i.player, i.room)) {
                            room.message(i.player, i.payload);
                        }
                    }
                    Some(Body::Leave(l)) => {
                        if let Some(room) = members.remove(&(l.player, l.room)) {
                            room.leave(l.player, LeaveReason::Left);
                        }
                    }
                    _ => {}
                }
            }
            // The gateway node is gone (or restarted): its players leave.
            for ((player, _), room) in members {
                room.leave(player, LeaveReason::Disconnected);
            }
        });
        let stream = ReceiverStream::new(out_rx)
            .map(Ok)
            .take_until(self.stop.clone().cancelled_owned());
        Ok(Response::new(Box::pin(stream)))
    }
}

/// A forwarded member's room output, as the link's pump receives it.
type Member = ((u64, String), PlayerEvents);

/// Joins a forwarded player to a local room; its output goes to the link's pump.
async fn join_here(
    rooms: &Rooms,
    j: &JoinRoom,
    pump: &mpsc::UnboundedSender<Member>,
) -> Result<RoomHandle, String> {
    let room = rooms
        .get(&j.room)
        .ok_or_else(|| format!("no room `{}` on this node", j.room))?;
    let (sink, events) = crate::mailbox::channel::<RoomEvent>(PLAYER_QUEUE);
    room.join(j.player, &j.name, sink)
        .await
        .map_err(|e| e.to_string())?;
    let _ = pump.send(((j.player, j.room.clone()), events));
    Ok(room)
}

/// Relays the output of every member of one link: what is ready is taken together,
/// and output shared by several members (the same bytes, from the same room) is sent
/// once with every recipient. Each member's output keeps its order.
async fn pump(mut added: mpsc::UnboundedReceiver<Member>, out: mpsc::Sender<PeerFrame>) {
    let mut members: StreamMap<(u64, String), PlayerEvents> = StreamMap::new();
    loop {
        let first = tokio::select! {
            member = added.recv() => match member {
                Some((key, events)) => {
                    members.insert(key, events);
                    continue;
                }
                None if members.is_empty() => return,
                None => members.next().await,
            },
            Some(first) = members.next(), if !members.is_empty() => Some(first),
        };
        let Some(first) = first else { continue };
        let mut ready = vec![first];
        while ready.len() < PUMP_BATCH
            && let Some(Some(next)) = members.next().now_or_never()
        {
            ready.push(next);
        }
        for output in coalesce(ready) {
            if out.send(frame(Body::Output(output))).await.is_err() {
                return; // the link is gone
            }
        }
    }
}

/// Room events of several members as link frames: one per distinct output, with every
/// member that got it, in the order each first appeared. A member's kick or close ends
/// its stream (the room no longer sends to it).
fn coalesce(ready: Vec<((u64, String), RoomEvent)>) -> Vec<RoomOutput> {
    let mut outputs: Vec<RoomOutput> = Vec::new();
    for ((player, room), event) in ready {
        let kind = match event {
            RoomEvent::Message { bytes, .. } => Kind::Message(bytes),
            RoomEvent::Kicked { reason, .. } => Kind::Kicked(reason),
            RoomEvent::Closed { reason, .. } => Kind::Closed(reason),
        };
        let same = |o: &&mut RoomOutput| {
            o.room == room
                && match (&o.kind, &kind) {
                    // The room broadcasts one buffer to every member: compare it cheaply.
                    (Some(Kind::Message(a)), Kind::Message(b)) => {
                        a.as_ptr() == b.as_ptr() && a.len() == b.len()
                    }
                    (Some(Kind::Closed(a)), Kind::Closed(b)) => a == b,
                    _ => false,
                }
        };
        match outputs.iter_mut().find(|o| same(o)) {
            Some(o) => o.more_players.push(player),
            None => outputs.push(RoomOutput {
                player,
                room,
                kind: Some(kind),
                more_players: Vec::new(),
            }),
        }
    }
    outputs
}

// ---------------------------------------------------------------- gateway side

/// Why a player could not join a room on another node.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RelayError {
    #[error("node {0} is not in the cluster")]
    NotInCluster(String),
    #[error("node {node}: {error}")]
    Unreachable { node: String, error: String },
    #[error("the link to node {0} closed")]
    LinkClosed(String),
    #[error("node {node}, which holds room `{room}`, did not answer")]
    NoAnswer { node: String, room: String },
    /// The owner refused the join (its reason: no such room, the game said no, ...).
    #[error("{0}")]
    Refused(String),
}

/// This node's links to its peers, by node id.
pub struct Peers {
    cluster: Cluster,
    secret: String,
    links: Mutex<HashMap<String, Arc<PeerLink>>>,
}

/// One `Link` stream to a peer, shared by every player forwarded to it.
pub struct PeerLink {
    node: String,
    tx: mpsc::Sender<PeerFrame>,
    pending: Mutex<HashMap<(u64, String), oneshot::Sender<JoinResult>>>,
    players: Mutex<HashMap<(u64, String), PlayerSink>>,
}

/// A player's membership in a room on a peer.
#[derive(Clone)]
pub struct RemoteRoom {
    link: Arc<PeerLink>,
    room: String,
}

impl RemoteRoom {
    pub fn node(&self) -> &str {
        &self.link.node
    }

    pub fn message(&self, player: u64, payload: bytes::Bytes) {
        let input = RoomInput {
            player,
            room: self.room.clone(),
            payload,
        };
        // A full link means the peer is not reading: the input is dropped, like one
        // over a local room's queue.
        let _ = self.link.tx.try_send(frame(Body::Input(input)));
    }

    pub fn leave(&self, player: u64) {
        self.link
            .players
            .lock()
            .recover()
            .remove(&(player, self.room.clone()));
        let leave = LeaveRoom {
            player,
            room: self.room.clone(),
        };
        let _ = self.link.tx.try_send(frame(Body::Leave(leave)));
    }
}

impl Peers {
    /// Links to peers of `cluster`; a peer that leaves the cluster ends its link.
    pub fn new(cluster: Cluster, secret: String) -> Arc<Peers> {
        let peers = Arc::new(Peers {
            cluster: cluster.clone(),
            secret,
            links: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&peers);
        let mut events = cluster.subscribe();
        tokio::spawn(async move {
            loop {
                let event = match events.recv().await {
                    Ok(e) => e,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                };
                let Some(peers) = weak.upgrade() else { return };
                if let ClusterEvent::NodeLeft { node } = event
                    && let Some(link) = peers.links.lock().recover().remove(&node)
                {
                    link.end(&format!("node {node} left the cluster"));
                }
            }
        });
        peers
    }

    /// Joins `player` to `room` on `node`, delivering the room's events to `sink`.
    pub async fn join(
        self: &Arc<Self>,
        node: &str,
        player: u64,
        name: &str,
        room: &str,
        sink: PlayerSink,
    ) -> Result<(RemoteRoom, JoinResult), RelayError> {
        let link = self.link(node).await?;
        let key = (player, room.to_owned());
        let (reply, answer) = oneshot::channel();
        link.pending.lock().recover().insert(key.clone(), reply);
        link.players.lock().recover().insert(key.clone(), sink);
        let join = JoinRoom {
            player,
            name: name.to_owned(),
            room: room.to_owned(),
        };
        if link.tx.send(frame(Body::Join(join))).await.is_err() {
            link.players.lock().recover().remove(&key);
            link.pending.lock().recover().remove(&key);
            return Err(RelayError::LinkClosed(node.to_owned()));
        }
        match tokio::time::timeout(std::time::Duration::from_secs(10), answer).await {
            Ok(Ok(r)) if r.error.is_empty() => Ok((
                RemoteRoom {
                    link,
                    room: room.to_owned(),
                },
                r,
            )),
            Ok(Ok(r)) => {
                link.players.lock().recover().remove(&key);
                Err(RelayError::Refused(r.error))
            }
            _ => {
                link.players.lock().recover().remove(&key);
                link.pending.lock().recover().remove(&key);
                Err(RelayError::NoAnswer {
                    node: node.to_owned(),
                    room: room.to_owned(),
                })
            }
        }
    }

    /// The link to `node`, opened if there is none.
    async fn link(self: &Arc<Self>, node: &str) -> Result<Arc<PeerLink>, RelayError> {
        if let Some(link) = self.links.lock().recover().get(node)
            && !link.tx.is_closed()
        {
            return Ok(link.clone());
        }
        let addr = self
            .cluster
            .routing()
            .nodes
            .get(node)
            .map(|n| n.grpc.clone())
            .filter(|a| !a.is_empty())
            .ok_or_else(|| RelayError::NotInCluster(node.to_owned()))?;
        let unreachable = |error: String| RelayError::Unreachable {
            node: node.to_owned(),
            error,
        };
        let channel = super::channel(&addr, &self.secret)
            .await
            .map_err(|e| unreachable(format!("{e:#}")))?;
        let mut client = RelayClient::new(channel);
        let (tx, rx) = mpsc::channel::<PeerFrame>(LINK_QUEUE);
        let outbound = ReceiverStream::new(rx);
        let mut inbound = client
            .link(outbound)
            .await
            .map_err(|s| unreachable(format!("opening a link: {}", s.message())))?
            .into_inner();
        let link = Arc::new(PeerLink {
            node: node.to_owned(),
            tx,
            pending: Mutex::new(HashMap::new()),
            players: Mutex::new(HashMap::new()),
        });
        self.links
            .lock()
            .recover()
            .insert(node.to_owned(), link.clone());
        let (reader, peers) = (link.clone(), Arc::downgrade(self));
        tokio::spawn(async move {
            let ended = loop {
                match inbound.next().await {
                    Some(Ok(f)) => reader.deliver(f),
                    Some(Err(status)) => break status.message().to_owned(),
                    None => break "the link closed".to_owned(),
                }
            };
            if let Some(peers) = peers.upgrade() {
                let mut links = peers.links.lock().recover();
                if links
                    .get(&reader.node)
                    .is_some_and(|l| Arc::ptr_eq(l, &reader))
                {
                    links.remove(&reader.node);
                }
            }
            reader.end(&format!("lost the link to node {} ({ended})", reader.node));
            if let Some(peers) = peers.upgrade() {
                tokio::spawn(peers.relink(reader.node.clone()));
            }
        });
        Ok(link)
    }

    /// Opens the link to `node` again after it broke, with backoff, for as long as the
    /// node is in the cluster (a peer that restarts comes back under its id, maybe on a
    /// new address) and no join has opened one meanwhile.
    // Boxed: `link` spawns this, so its future type would otherwise contain itself.
    fn relink(
        self: Arc<Self>,
        node: String,
    ) -> Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(async move {
            let mut backoff = RELINK_MIN;
            loop {
                tokio::time::sleep(backoff).await;
                if !self.cluster.routing().nodes.contains_key(&node) || self.is_linked(&node) {
                    return;
                }
                match self.link(&node).await {
                    Ok(_) => {
                        tracing::info!(%node, "link to the peer open again");
                        return;
                    }
                    Err(e) => tracing::debug!(%node, "reopening the link: {e}"),
                }
                backoff = (backoff * 2).min(RELINK_MAX);
            }
        })
    }

    fn is_linked(&self, node: &str) -> bool {
        self.links
            .lock()
            .recover()
            .get(node)
            .is_some_and(|l| !l.tx.is_closed())
    }

    /// Peers with an open link.
    pub fn linked(&self) -> Vec<String> {
        let mut nodes: Vec<String> = self
            .links
            .lock()
            .recover()
            .iter()
            .filter(|(_, l)| !l.tx.is_closed())
            .map(|(n, _)| n.clone())
            .collect();
        nodes.sort();
        nodes
    }
}

impl PeerLink {
    fn deliver(&self, f: PeerFrame) {
        match f.body {
            Some(Body::Joined(r)) => {
                if let Some(reply) = self
                    .pending
                    .lock()
                    .recover()
                    .remove(&(r.player, r.room.clone()))
                {
                    let _ = reply.send(r);
                }
            }
            Some(Body::Output(o)) => {
                let room: Arc<str> = o.room.into();
                let (event, last) = match o.kind {
                    Some(Kind::Message(bytes)) => (RoomEvent::Message { room, bytes }, false),
                    Some(Kind::Kicked(reason)) => (RoomEvent::Kicked { room, reason }, true),
                    Some(Kind::Closed(reason)) => (RoomEvent::Closed { room, reason }, true),
                    None => return,
                };
                let room_id = match &event {
                    RoomEvent::Message { room, .. }
                    | RoomEvent::Kicked { room, .. }
                    | RoomEvent::Closed { room, .. } => room.to_string(),
                };
                let mut players = self.players.lock().recover();
                for player in std::iter::once(o.player).chain(o.more_players) {
                    let key = (player, room_id.clone());
                    if let Some(sink) = players.get(&key) {
                        // A full queue: the session is too slow; like a local room, drop it.
                        if sink.try_send(event.clone()).is_err() || last {
                            players.remove(&key);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// Tells every forwarded player its remote room is gone.
    fn end(&self, reason: &str) {
        self.pending.lock().recover().clear();
        for ((_, room), sink) in self.players.lock().recover().drain() {
            let _ = sink.try_send(RoomEvent::Kicked {
                room: room.into(),
                reason: reason.to_owned(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn message(room: &str, bytes: &Bytes) -> RoomEvent {
        RoomEvent::Message {
            room: room.into(),
            bytes: bytes.clone(),
        }
    }

    #[test]
    fn a_broadcast_crosses_the_link_once_with_every_recipient() {
        let snapshot = Bytes::from_static(b"{\"tick\":1}");
        // Equal bytes in another buffer: a send to one player, not the broadcast.
        let own = Bytes::from(b"{\"tick\":1}".to_vec());
        let next = Bytes::from_static(b"{\"tick\":2}");
        let key = |p: u64, r: &str| (p, r.to_owned());
        let ready = vec![
            (key(1, "r"), message("r", &snapshot)),
            (key(1, "r"), message("r", &next)),
            (key(2, "r"), message("r", &snapshot)),
            (key(3, "r"), message("r", &own)),
            (key(2, "r"), message("r", &next)),
            (key(4, "other"), message("other", &snapshot)),
        ];
        let outputs = coalesce(ready);
        let seen: Vec<(u64, Vec<u64>, &str)> = outputs
            .iter()
            .map(|o| (o.player, o.more_players.clone(), o.room.as_str()))
            .collect();
        assert_eq!(
            seen,
            vec![
                (1, vec![2], "r"),
                (1, vec![2], "r"),
                (3, vec![], "r"),
                (4, vec![], "other"),
            ]
        );
        // Each player's messages keep their order: tick 1, then tick 2.
        assert_eq!(outputs[0].kind, Some(Kind::Message(snapshot)));
        assert_eq!(outputs[1].kind, Some(Kind::Message(next)));
    }
}
