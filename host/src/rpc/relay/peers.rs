//! The gateway node's end: one link per peer, shared by every player forwarded there;
//! opened on first use, reopened in the background after it breaks.

use futures_util::StreamExt;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

use super::{LINK_QUEUE, frame};
use crate::cluster::{Cluster, ClusterEvent};
use crate::lock::Recover;
use crate::rooms::{PlayerSink, RoomEvent};
use crate::rpc::pb::peer_frame::Body;
use crate::rpc::pb::relay_client::RelayClient;
use crate::rpc::pb::room_output::Kind;
use crate::rpc::pb::{JoinResult, JoinRoom, LeaveRoom, PeerFrame, RoomInput};

/// Backoff between attempts to reopen a broken link.
const RELINK_MIN: std::time::Duration = std::time::Duration::from_millis(100);
const RELINK_MAX: std::time::Duration = std::time::Duration::from_secs(5);

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
    /// The owner refused an attach for good: its room does not hold the player.
    #[error("{0}")]
    NotHeld(String),
}

/// This node's links to its peers, by node id.
pub struct Peers {
    cluster: Cluster,
    link: crate::rpc::Link,
    frame_limit: usize,
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
    /// Links to peers; `max_message_bytes` is the runtime's (see [`super::frame_limit`]).
    pub fn new(cluster: Cluster, link: crate::rpc::Link, max_message_bytes: usize) -> Arc<Peers> {
        let peers = Arc::new(Peers {
            cluster: cluster.clone(),
            link,
            frame_limit: super::frame_limit(max_message_bytes),
            links: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&peers);
        let mut events = cluster.subscribe();
        tokio::spawn(async move {
            loop {
                let event = events.recv().await;
                let Some(peers) = weak.upgrade() else { return };
                let event = match event {
                    Ok(e) => e,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        // Events were dropped: end links to nodes no longer listed.
                        let gone: Vec<String> = peers
                            .links
                            .lock()
                            .recover()
                            .keys()
                            .filter(|n| peers.cluster.node(n).is_none())
                            .cloned()
                            .collect();
                        for node in gone {
                            if let Some(link) = peers.links.lock().recover().remove(&node) {
                                link.end(&format!("node {node} left the cluster"));
                            }
                        }
                        continue;
                    }
                    Err(_) => return,
                };
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
        self.ask(node, player, name, room, sink, false).await
    }

    /// Gives `player` back its place in `room` on `node`, which holds it (the room came
    /// back there from a checkpoint or moved there; see `RoomHandle::attach`); the
    /// room's events go to `sink`.
    pub async fn attach(
        self: &Arc<Self>,
        node: &str,
        player: u64,
        room: &str,
        sink: PlayerSink,
    ) -> Result<RemoteRoom, RelayError> {
        Ok(self.ask(node, player, "", room, sink, true).await?.0)
    }

    async fn ask(
        self: &Arc<Self>,
        node: &str,
        player: u64,
        name: &str,
        room: &str,
        sink: PlayerSink,
        attach: bool,
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
            attach,
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
                Err(match r.not_held {
                    true => RelayError::NotHeld(r.error),
                    false => RelayError::Refused(r.error),
                })
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
            .node(node)
            .map(|n| n.grpc)
            .filter(|a| !a.is_empty())
            .ok_or_else(|| RelayError::NotInCluster(node.to_owned()))?;
        let unreachable = |error: String| RelayError::Unreachable {
            node: node.to_owned(),
            error,
        };
        let channel = crate::rpc::channel(&addr, &self.link)
            .await
            .map_err(|e| unreachable(format!("{e:#}")))?;
        let mut client = RelayClient::new(channel)
            .max_decoding_message_size(self.frame_limit)
            .max_encoding_message_size(self.frame_limit);
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
                if self.cluster.node(&node).is_none() || self.is_linked(&node) {
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

    /// Frames queued for the peers' links, not yet written to their streams.
    pub fn queued(&self) -> usize {
        self.links
            .lock()
            .recover()
            .values()
            .map(|l| l.tx.max_capacity() - l.tx.capacity())
            .sum()
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
                    Some(Kind::Moved(m)) => {
                        let node = Some(m.node).filter(|n| !n.is_empty());
                        let reason = m.reason;
                        (RoomEvent::Moved { room, node, reason }, true)
                    }
                    None => return,
                };
                let room_id = event.room().to_string();
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

    /// Tells every forwarded player its remote room cannot be reached here any more:
    /// another node may take it over (its session finds out, and attaches the player
    /// there or tells it `reason`).
    fn end(&self, reason: &str) {
        self.pending.lock().recover().clear();
        for ((_, room), sink) in self.players.lock().recover().drain() {
            let _ = sink.try_send(RoomEvent::Moved {
                room: room.into(),
                node: None,
                reason: reason.to_owned(),
            });
        }
    }
}
