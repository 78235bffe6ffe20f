//! Matchmaking: a player asks for a match (`{game, mode, properties}`); the cluster's
//! matchmaker leader groups tickets that share game, mode and properties into rooms of
//! the size the game's rules declare, places each room on the least loaded node and
//! tells the players' nodes, which tell the clients which room to join.
//!
//! Every node runs a [`Matchmaker`]: it holds its players' tickets and keeps one link
//! to the leader, in-process when this node leads (always, for a single node), else a
//! gRPC `Queue` stream (`remote.rs`). The leader is elected with
//! [`Cluster::campaign`]: in etcd under the node's lease, so when the leader dies its
//! lease runs out, another node wins, and every node submits its pending tickets to the
//! new leader.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub mod leader;
pub mod remote;

use crate::cluster::{Cluster, keys};
use crate::lock::Recover;
use crate::rooms::{CreateRoom, HeldSeats, Rooms};
use crate::rpc::pb::{
    Place, Placed, QueueDown, QueueUp, Ticket, queue_down::Body as Down, queue_up::Body as Up,
};
use leader::LeaderHandle;

/// Room size and patience for one game's matches.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MatchRules {
    /// Fewest players a room starts with (once the oldest ticket has waited `wait`).
    pub min_players: u32,
    /// A room starts at once when this many players wait.
    pub max_players: u32,
    /// How long the oldest ticket waits for a full room before a room starts with
    /// `min_players` or more.
    #[serde(with = "humantime_serde")]
    pub wait: Duration,
}

impl Default for MatchRules {
    fn default() -> Self {
        MatchRules {
            min_players: 2,
            max_players: 8,
            wait: Duration::from_secs(10),
        }
    }
}

/// `[matchmaking]` in the config file. In a cluster the leader's rules apply: give
/// every node the same section.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MatchmakingConfig {
    /// Rules of games without their own entry.
    pub default: MatchRules,
    /// Rules by game name.
    pub games: BTreeMap<String, MatchRules>,
    /// A room the matchmaker made closes when it is empty this long after it started
    /// (none of its players came) or at any later check (all of them left).
    #[serde(with = "humantime_serde")]
    pub empty_room_grace: Duration,
}

impl Default for MatchmakingConfig {
    fn default() -> Self {
        MatchmakingConfig {
            default: MatchRules::default(),
            games: BTreeMap::new(),
            empty_room_grace: Duration::from_secs(30),
        }
    }
}

impl MatchmakingConfig {
    pub fn rules(&self, game: &str) -> &MatchRules {
        self.games.get(game).unwrap_or(&self.default)
    }

    /// Refuses rules no room could be made from, naming the game.
    pub fn check(&self) -> anyhow::Result<()> {
        let all = std::iter::once(("default", &self.default))
            .chain(self.games.iter().map(|(g, r)| (g.as_str(), r)));
        for (game, r) in all {
            anyhow::ensure!(
                r.min_players >= 1 && r.min_players <= r.max_players && r.max_players <= 1000,
                "matchmaking rules of `{game}`: need 1 <= min_players ({}) <= max_players ({}) <= 1000",
                r.min_players,
                r.max_players
            );
        }
        Ok(())
    }
}

/// What a player's session hears about its ticket.
#[derive(Clone, Debug, PartialEq)]
pub enum MatchEvent {
    Found {
        ticket: String,
        room: String,
        game: String,
        mode: String,
        players: u32,
    },
    Dropped {
        ticket: String,
        reason: String,
    },
}

/// Where a ticket's outcome goes (the player's session); called once per ticket.
pub type MatchSink = Arc<dyn Fn(MatchEvent) + Send + Sync>;

/// Limits on a ticket's fields.
pub const MAX_MODE_LEN: usize = 64;
pub const MAX_PROPERTIES: usize = 16;
pub const MAX_PROPERTY_LEN: usize = 64;

/// Why a match request was refused; each names the problem.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TicketError {
    #[error("mode is longer than {MAX_MODE_LEN} bytes")]
    ModeTooLong,
    #[error("{0} properties; at most {MAX_PROPERTIES}")]
    TooManyProperties(usize),
    #[error("property `{0}` (key or value) is longer than {MAX_PROPERTY_LEN} bytes")]
    PropertyTooLong(String),
}

/// Checks a match request's mode and properties.
pub fn check_request(mode: &str, properties: &HashMap<String, String>) -> Result<(), TicketError> {
    if mode.len() > MAX_MODE_LEN {
        return Err(TicketError::ModeTooLong);
    }
    if properties.len() > MAX_PROPERTIES {
        return Err(TicketError::TooManyProperties(properties.len()));
    }
    if let Some((k, _)) = properties
        .iter()
        .find(|(k, v)| k.len() > MAX_PROPERTY_LEN || v.len() > MAX_PROPERTY_LEN)
    {
        let shown = k.chars().take(MAX_PROPERTY_LEN).collect();
        return Err(TicketError::PropertyTooLong(shown));
    }
    Ok(())
}

struct Pending {
    ticket: Ticket,
    since: Instant,
    sink: MatchSink,
}

/// This node's matchmaker: its players' tickets and its link to the leader.
#[derive(Clone)]
pub struct Matchmaker {
    inner: Arc<Inner>,
}

struct Inner {
    cluster: Cluster,
    rooms: Rooms,
    cfg: Arc<MatchmakingConfig>,
    /// How to reach a leader on another node (gRPC).
    peer_link: Option<crate::rpc::Link>,
    pending: Mutex<HashMap<String, Pending>>,
    /// The link to the leader while one is open.
    link: Mutex<Option<mpsc::Sender<QueueUp>>>,
    /// The leader this node runs while it leads.
    leading: Mutex<Option<LeaderHandle>>,
    stop: CancellationToken,
}

/// The seats of a placed room held for its matched players.
fn held_seats(place: &Place, grace: Duration) -> HeldSeats {
    HeldSeats {
        players: place.reserved.clone(),
        seats: place.seats.max(place.players) as usize,
        until: Instant::now() + grace,
    }
}

/// How often a matched room is checked for players after its grace period.
const MATCHED_ROOM_CHECK: Duration = Duration::from_secs(5);

/// Backoff between attempts to reach the leader.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

impl Matchmaker {
    /// Starts the node's matchmaker: the in-process leader for a single node, the
    /// election for a cluster, and the link to whoever leads. Stops with `stop`.
    pub fn start(
        cluster: Cluster,
        rooms: Rooms,
        cfg: MatchmakingConfig,
        link: Option<crate::rpc::Link>,
        stop: CancellationToken,
    ) -> Matchmaker {
        let cfg = Arc::new(cfg);
        let mm = Matchmaker {
            inner: Arc::new(Inner {
                cluster: cluster.clone(),
                rooms,
                cfg: cfg.clone(),
                peer_link: link,
                pending: Mutex::new(HashMap::new()),
                link: Mutex::new(None),
                leading: Mutex::new(None),
                stop: stop.clone(),
            }),
        };
        tokio::spawn(mm.clone().campaign());
        tokio::spawn(mm.clone().keep_linked());
        mm
    }

    /// The leader this node runs, if it leads.
    pub fn leading(&self) -> Option<LeaderHandle> {
        self.inner.leading.lock().recover().clone()
    }

    /// Queues a ticket for `player`; its outcome goes to `sink`. Returns the ticket id.
    pub fn submit(
        &self,
        player: u64,
        game: &str,
        mode: &str,
        properties: HashMap<String, String>,
        sink: MatchSink,
    ) -> String {
        let id = crate::csprng::hex::<8>();
        let ticket = Ticket {
            id: id.clone(),
            player,
            game: game.to_owned(),
            mode: mode.to_owned(),
            properties,
            waited_ms: 0,
        };
        self.inner.pending.lock().recover().insert(
            id.clone(),
            Pending {
                ticket: ticket.clone(),
                since: Instant::now(),
                sink,
            },
        );
        // Without a link the ticket goes with the others when the next one opens.
        self.up(Up::Submit(ticket));
        id
    }

    /// Withdraws a ticket (a no-op for one already matched or dropped).
    pub fn cancel(&self, ticket: &str) {
        if self.inner.pending.lock().recover().remove(ticket).is_some() {
            self.up(Up::Cancel(ticket.to_owned()));
        }
    }

    fn up(&self, body: Up) {
        let Some(link) = self.inner.link.lock().recover().clone() else {
            return;
        };
        if let Err(mpsc::error::TrySendError::Full(msg)) =
            link.try_send(QueueUp { body: Some(body) })
        {
            // A burst: wait for room rather than lose the ticket (a closed link is
            // fine to skip: the next one gets every pending ticket).
            tokio::spawn(async move {
                let _ = link.send(msg).await;
            });
        }
    }

    /// Keeps a link to the leader open, re-submitting every pending ticket on each new
    /// one, with backoff between failed attempts.
    async fn keep_linked(self) {
        let mut backoff = BACKOFF_MIN;
        loop {
            if self.inner.stop.is_cancelled() {
                return;
            }
            match self.open().await {
                Ok((leader, tx, mut rx)) => {
                    backoff = BACKOFF_MIN;
                    *self.inner.link.lock().recover() = Some(tx.clone());
                    let tickets: Vec<Ticket> = self
                        .inner
                        .pending
                        .lock()
                        .recover()
                        .values()
                        .map(|p| Ticket {
                            waited_ms: p.since.elapsed().as_millis() as u64,
                            ..p.ticket.clone()
                        })
                        .collect();
                    if !tickets.is_empty() {
                        tracing::info!(%leader, tickets = tickets.len(), "submitting pending tickets to the matchmaker leader");
                    }
                    for ticket in tickets {
                        let _ = tx
                            .send(QueueUp {
                                body: Some(Up::Submit(ticket)),
                            })
                            .await;
                    }
                    tracing::debug!(%leader, "linked to the matchmaker leader");
                    loop {
                        tokio::select! {
                            _ = self.inner.stop.cancelled() => return,
                            down = rx.recv() => match down {
                                Some(down) => self.down(down, &tx),
                                None => break,
                            },
                        }
                    }
                    *self.inner.link.lock().recover() = None;
                    tracing::info!(%leader, "the link to the matchmaker leader ended");
                }
                Err(e) => tracing::debug!("reaching the matchmaker leader: {e}"),
            }
            tokio::select! {
                _ = self.inner.stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Opens a link to the current leader: (leader's node id, up, down).
    async fn open(
        &self,
    ) -> anyhow::Result<(String, mpsc::Sender<QueueUp>, mpsc::Receiver<QueueDown>)> {
        let me = self.inner.cluster.node_id().to_owned();
        let leader = self
            .inner
            .cluster
            .leader(keys::MATCHMAKER)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no matchmaker leader elected yet"))?;
        if leader == me {
            let handle = self.leading().ok_or_else(|| {
                anyhow::anyhow!("elected here, but the leader is not running yet")
            })?;
            let (tx, rx) = handle.connect(&me);
            return Ok((leader, tx, rx));
        }
        let addr = self
            .inner
            .cluster
            .node(&leader)
            .map(|n| n.grpc)
            .filter(|a| !a.is_empty())
            .ok_or_else(|| anyhow::anyhow!("the leader {leader} is not in the routing table"))?;
        let link = self
            .inner
            .peer_link
            .clone()
            .unwrap_or_else(|| crate::rpc::Link::plain(""));
        let (tx, rx) = remote::link(&addr, &link, &me).await?;
        Ok((leader, tx, rx))
    }

    fn down(&self, down: QueueDown, tx: &mpsc::Sender<QueueUp>) {
        match down.body {
            Some(Down::Place(place)) => {
                let (mm, tx) = (self.clone(), tx.clone());
                tokio::spawn(async move {
                    let error = match mm.place_here(&place).await {
                        Ok(()) => String::new(),
                        Err(e) => e,
                    };
                    let placed = Placed {
                        room: place.room,
                        error,
                    };
                    let _ = tx
                        .send(QueueUp {
                            body: Some(Up::Placed(placed)),
                        })
                        .await;
                });
            }
            Some(Down::Matched(m)) => {
                let mut pending = self.inner.pending.lock().recover();
                for ticket in m.tickets {
                    if let Some(p) = pending.remove(&ticket) {
                        (p.sink)(MatchEvent::Found {
                            ticket,
                            room: m.room.clone(),
                            game: m.game.clone(),
                            mode: m.mode.clone(),
                            players: m.players,
                        });
                    }
                }
            }
            Some(Down::Dropped(d)) => {
                if let Some(p) = self.inner.pending.lock().recover().remove(&d.ticket) {
                    (p.sink)(MatchEvent::Dropped {
                        ticket: d.ticket,
                        reason: d.reason,
                    });
                }
            }
            None => {}
        }
    }

    /// Starts a room the leader placed here (claimed in the cluster first), with the
    /// matched players' seats held for them.
    async fn place_here(&self, place: &Place) -> Result<(), String> {
        let (room, game) = (place.room.as_str(), place.game.as_str());
        let (cluster, rooms) = (&self.inner.cluster, &self.inner.rooms);
        if !rooms.has_game(game) {
            return Err(format!("node {} has no game `{game}`", cluster.node_id()));
        }
        cluster
            .claim_room(room, game)
            .await
            .map_err(|e| e.to_string())?;
        let req = CreateRoom {
            game: game.to_owned(),
            id: Some(room.to_owned()),
            config: None,
            seed: None,
            creator: None,
            held: Some(held_seats(place, self.inner.cfg.empty_room_grace)),
        };
        let handle = match rooms.create(req).await {
            Ok(handle) => handle,
            Err(e) => {
                cluster.release_room(room).await;
                return Err(e.to_string());
            }
        };
        // A matched room is for its players: once empty (or if none of them came) it
        // closes, rather than tick for nobody.
        let stop = self.inner.stop.clone();
        let grace = self.inner.cfg.empty_room_grace;
        let check = MATCHED_ROOM_CHECK.min(grace).max(Duration::from_millis(50));
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(grace) => {}
            }
            loop {
                if handle.is_closed() {
                    return;
                }
                if handle.info().seats == 0 {
                    handle.close("every matched player has left").await;
                    return;
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(check) => {}
                }
            }
        });
        Ok(())
    }

    /// Leads whenever the cluster's election says so: runs the leader while this node
    /// leads, then campaigns again.
    async fn campaign(self) {
        let cluster = self.inner.cluster.clone();
        let me = cluster.node_id().to_owned();
        loop {
            let leadership = tokio::select! {
                _ = self.inner.stop.cancelled() => return,
                l = cluster.campaign(keys::MATCHMAKER) => l,
            };
            if leadership.is_lost() {
                if self.inner.stop.is_cancelled() {
                    return;
                }
                continue;
            }
            let handle = LeaderHandle::start(self.inner.cfg.clone(), cluster.clone());
            *self.inner.leading.lock().recover() = Some(handle.clone());
            tracing::info!(node = %me, "this node is the matchmaker leader");
            tokio::select! {
                _ = self.inner.stop.cancelled() => {}
                _ = leadership.lost() => {}
            }
            *self.inner.leading.lock().recover() = None;
            handle.stop();
            tracing::info!(node = %me, "no longer the matchmaker leader");
            drop(leadership);
            if self.inner.stop.is_cancelled() {
                return;
            }
        }
    }
}
