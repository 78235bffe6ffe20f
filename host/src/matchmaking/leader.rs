//! The matchmaker leader: one per cluster (or the node itself when single). It holds the
//! queues of tickets, groups them into rooms by the game's rules, places each room on
//! the least loaded linked node and tells every matched ticket's node.
//!
//! Nodes talk to it over links (an in-process channel pair, or a gRPC `Queue` stream
//! adapted to one by `rpc::matchmaking`); the leader itself is one task that owns all
//! its state, so nothing here is shared or locked.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::MatchmakingConfig;
use crate::cluster::Cluster;
use crate::rpc::pb::{
    Dropped, Matched, Place, QueueDown, QueueUp, Ticket, queue_down::Body as Down,
    queue_up::Body as Up,
};

/// Messages queued on a link before its sender waits.
pub const LINK_QUEUE: usize = 4096;
/// How often the leader looks for groups whose wait is over.
const ROUND: Duration = Duration::from_millis(50);
/// A node that does not answer a placement in this time is passed over.
const PLACE_TIMEOUT: Duration = Duration::from_secs(5);
/// Nodes tried for one group before its tickets are dropped.
const PLACE_ATTEMPTS: usize = 3;
/// Seats placed on a node count toward its load for this long (until its own report
/// of players catches up).
const RECENT: Duration = Duration::from_secs(3);

enum ToLeader {
    Connect {
        node: String,
        link: u64,
        down: mpsc::Sender<QueueDown>,
    },
    Up {
        node: String,
        link: u64,
        up: QueueUp,
    },
    Gone {
        node: String,
        link: u64,
    },
}

/// A running leader. Dropping every clone does not stop it; [`LeaderHandle::stop`] does.
#[derive(Clone)]
pub struct LeaderHandle {
    tx: mpsc::UnboundedSender<ToLeader>,
    links: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl LeaderHandle {
    /// Starts a leader that places rooms on nodes of `cluster` by the rules of `cfg`.
    pub fn start(cfg: Arc<MatchmakingConfig>, cluster: Cluster) -> LeaderHandle {
        let (tx, rx) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let leader = Leader {
            cfg,
            cluster,
            links: HashMap::new(),
            tickets: HashMap::new(),
            by_player: HashMap::new(),
            queues: BTreeMap::new(),
            placing: HashMap::new(),
            recent: VecDeque::new(),
        };
        tokio::spawn(leader.run(rx, stop.clone()));
        LeaderHandle {
            tx,
            links: Arc::new(AtomicU64::new(1)),
            stop,
        }
    }

    /// Opens a link for `node`: send it tickets, cancels and placement results; receive
    /// placements, matches and drops. The link ends when either side drops its end (a
    /// later link of the same node replaces it).
    pub fn connect(&self, node: &str) -> (mpsc::Sender<QueueUp>, mpsc::Receiver<QueueDown>) {
        let link = self.links.fetch_add(1, Ordering::Relaxed);
        let (down, down_rx) = mpsc::channel(LINK_QUEUE);
        let (up_tx, mut up_rx) = mpsc::channel::<QueueUp>(LINK_QUEUE);
        let node = node.to_owned();
        let _ = self.tx.send(ToLeader::Connect {
            node: node.clone(),
            link,
            down,
        });
        let tx = self.tx.clone();
        tokio::spawn(async move {
            while let Some(up) = up_rx.recv().await {
                let node = node.clone();
                if tx.send(ToLeader::Up { node, link, up }).is_err() {
                    return;
                }
            }
            let _ = tx.send(ToLeader::Gone { node, link });
        });
        (up_tx, down_rx)
    }

    /// Stops leading: every link ends, so the nodes look for the next leader.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

/// Tickets that may share a room: same game, mode and properties.
type QueueKey = (String, String, Vec<(String, String)>);

struct Waiting {
    ticket: Ticket,
    node: String,
    since: Instant,
    key: QueueKey,
}

struct Placing {
    node: String,
    key: QueueKey,
    tickets: Vec<String>,
    tried: Vec<String>,
    asked: Instant,
}

struct Leader {
    cfg: Arc<MatchmakingConfig>,
    cluster: Cluster,
    /// Linked nodes: the link's number and its sending end.
    links: HashMap<String, (u64, mpsc::Sender<QueueDown>)>,
    /// Every ticket, queued or being placed, by id.
    tickets: HashMap<String, Waiting>,
    by_player: HashMap<u64, String>,
    /// Queued ticket ids, oldest first.
    queues: BTreeMap<QueueKey, VecDeque<String>>,
    /// Groups waiting for their room, by room id.
    placing: HashMap<String, Placing>,
    recent: VecDeque<(Instant, String, u32)>,
}

impl Leader {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<ToLeader>, stop: CancellationToken) {
        let mut round = tokio::time::interval(ROUND);
        round.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                msg = rx.recv() => match msg {
                    Some(msg) => self.handle(msg),
                    None => break,
                },
                _ = round.tick() => {
                    self.round();
                    let placing: usize = self.placing.values().map(|p| p.tickets.len()).sum();
                    metrics::gauge!("ludus_matchmaker_tickets").set(self.tickets.len() as f64);
                    metrics::gauge!("ludus_matchmaker_placing_tickets").set(placing as f64);
                }
            }
        }
        metrics::gauge!("ludus_matchmaker_tickets").set(0.0);
        metrics::gauge!("ludus_matchmaker_placing_tickets").set(0.0);
        tracing::info!(
            tickets = self.tickets.len(),
            "the matchmaker leader stopped; nodes submit their tickets to the next one"
        );
    }

    fn handle(&mut self, msg: ToLeader) {
        match msg {
            ToLeader::Connect { node, link, down } => {
                tracing::debug!(%node, "matchmaker link opened");
                if let Some((_, _)) = self.links.insert(node.clone(), (link, down)) {
                    // A newer link replaces the old one: the node re-submits what it holds.
                    self.forget_node(&node);
                }
            }
            ToLeader::Gone { node, link } => {
                if self.links.get(&node).is_some_and(|(l, _)| *l == link) {
                    tracing::debug!(%node, "matchmaker link closed");
                    self.links.remove(&node);
                    self.forget_node(&node);
                }
            }
            ToLeader::Up { node, link, up } => {
                if self.links.get(&node).is_none_or(|(l, _)| *l != link) {
                    return; // a replaced link
                }
                match up.body {
                    Some(Up::Submit(ticket)) => self.submit(node, ticket),
                    Some(Up::Cancel(id)) => {
                        if self.tickets.get(&id).is_some_and(|w| w.node == node) {
                            self.remove(&id);
                        }
                    }
                    Some(Up::Placed(placed)) => {
                        if placed.error.is_empty() {
                            self.matched(&placed.room);
                        } else {
                            self.place_failed(&placed.room, &placed.error);
                        }
                    }
                    Some(Up::Hello(_)) | None => {}
                }
            }
        }
        self.form_groups();
    }

    fn round(&mut self) {
        let now = Instant::now();
        let late: Vec<String> = self
            .placing
            .iter()
            .filter(|(_, p)| now.duration_since(p.asked) > PLACE_TIMEOUT)
            .map(|(room, _)| room.clone())
            .collect();
        for room in late {
            self.place_failed(&room, "the node did not answer in time");
        }
        while self
            .recent
            .front()
            .is_some_and(|(at, _, _)| now.duration_since(*at) > RECENT)
        {
            self.recent.pop_front();
        }
        self.form_groups();
    }

    fn submit(&mut self, node: String, ticket: Ticket) {
        if self.tickets.contains_key(&ticket.id) {
            return; // sent twice around a reconnect
        }
        // One ticket per player: a newer one replaces the older.
        if let Some(old) = self.by_player.get(&ticket.player).cloned() {
            self.remove(&old);
        }
        let mut properties: Vec<(String, String)> = ticket
            .properties
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        properties.sort();
        let key = (ticket.game.clone(), ticket.mode.clone(), properties);
        let now = Instant::now();
        let since = now
            .checked_sub(Duration::from_millis(ticket.waited_ms))
            .unwrap_or(now);
        let queue = self.queues.entry(key.clone()).or_default();
        // Keep the queue oldest first: a re-submitted ticket keeps its place in line.
        let at = queue.partition_point(|id| self.tickets.get(id).is_none_or(|w| w.since <= since));
        queue.insert(at, ticket.id.clone());
        self.by_player.insert(ticket.player, ticket.id.clone());
        self.tickets.insert(
            ticket.id.clone(),
            Waiting {
                ticket,
                node,
                since,
                key,
            },
        );
    }

    /// Forgets a ticket wherever it is.
    fn remove(&mut self, id: &str) -> Option<Waiting> {
        let waiting = self.tickets.remove(id)?;
        if self
            .by_player
            .get(&waiting.ticket.player)
            .map(String::as_str)
            == Some(id)
        {
            self.by_player.remove(&waiting.ticket.player);
        }
        if let Some(queue) = self.queues.get_mut(&waiting.key) {
            queue.retain(|t| t != id);
            if queue.is_empty() {
                self.queues.remove(&waiting.key);
            }
        }
        Some(waiting)
    }

    /// A node's link ended: its tickets go (it re-submits them on its next link), and
    /// rooms being placed on it are placed elsewhere.
    fn forget_node(&mut self, node: &str) {
        let ids: Vec<String> = self
            .tickets
            .iter()
            .filter(|(_, w)| w.node == node)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.remove(&id);
        }
        let rooms: Vec<String> = self
            .placing
            .iter()
            .filter(|(_, p)| p.node == node)
            .map(|(room, _)| room.clone())
            .collect();
        for room in rooms {
            self.place_failed(&room, &format!("node {node} went away"));
        }
    }

    /// Takes every group that is ready out of the queues and places it.
    fn form_groups(&mut self) {
        let now = Instant::now();
        let keys: Vec<QueueKey> = self.queues.keys().cloned().collect();
        for key in keys {
            let rules = self.cfg.rules(&key.0).clone();
            let (min, max) = (rules.min_players as usize, rules.max_players as usize);
            while let Some(queue) = self.queues.get_mut(&key) {
                let oldest = queue.front().and_then(|id| self.tickets.get(id));
                let waited = oldest.is_some_and(|w| now.duration_since(w.since) >= rules.wait);
                let take = if queue.len() >= max {
                    max
                } else if queue.len() >= min && waited {
                    queue.len()
                } else {
                    break;
                };
                let group: Vec<String> = queue.drain(..take).collect();
                if queue.is_empty() {
                    self.queues.remove(&key);
                }
                self.place(key.clone(), group, Vec::new());
            }
        }
    }

    /// The linked node with the least load that was not tried yet: players it reports
    /// plus seats placed on it lately, then fewer rooms, then its id.
    fn least_loaded(&self, tried: &[String]) -> Option<String> {
        let loads = self.cluster.node_loads();
        let mut recent: HashMap<&str, u64> = HashMap::new();
        for (_, node, seats) in &self.recent {
            *recent.entry(node.as_str()).or_default() += u64::from(*seats);
        }
        self.links
            .keys()
            .filter(|node| !tried.contains(node))
            .min_by_key(|node| {
                let (players, rooms) = loads.get(*node).copied().unwrap_or_default();
                let recent = recent.get(node.as_str()).copied().unwrap_or_default();
                (players as u64 + recent, rooms, (*node).clone())
            })
            .cloned()
    }

    fn place(&mut self, key: QueueKey, tickets: Vec<String>, mut tried: Vec<String>) {
        loop {
            let Some(node) = self
                .least_loaded(&tried)
                .filter(|_| tried.len() < PLACE_ATTEMPTS)
            else {
                let reason = "no node could start a room for the match; ask again";
                for id in tickets {
                    self.drop_ticket(&id, reason);
                }
                return;
            };
            let room = format!("match-{}", crate::csprng::hex::<8>());
            let players = tickets.len() as u32;
            let reserved = tickets
                .iter()
                .filter_map(|id| self.tickets.get(id).map(|w| w.ticket.player))
                .collect();
            let place = Place {
                room: room.clone(),
                game: key.0.clone(),
                mode: key.1.clone(),
                players,
                reserved,
                seats: self.cfg.rules(&key.0).max_players,
            };
            let sent = self.links.get(&node).is_some_and(|(_, down)| {
                down.try_send(QueueDown {
                    body: Some(Down::Place(place)),
                })
                .is_ok()
            });
            if !sent {
                tried.push(node);
                continue;
            }
            self.recent
                .push_back((Instant::now(), node.clone(), players));
            self.placing.insert(
                room,
                Placing {
                    node,
                    key,
                    tickets,
                    tried,
                    asked: Instant::now(),
                },
            );
            return;
        }
    }

    fn place_failed(&mut self, room: &str, error: &str) {
        let Some(mut p) = self.placing.remove(room) else {
            return;
        };
        tracing::warn!(node = %p.node, %room, "placing a matched room failed: {error}");
        p.tried.push(p.node.clone());
        let live: Vec<String> = p
            .tickets
            .into_iter()
            .filter(|id| self.tickets.contains_key(id))
            .collect();
        if !live.is_empty() {
            self.place(p.key, live, p.tried);
        }
    }

    /// The room of a group runs: tell each ticket's node.
    fn matched(&mut self, room: &str) {
        let Some(p) = self.placing.remove(room) else {
            return;
        };
        let mut by_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let live: Vec<Waiting> = p.tickets.iter().filter_map(|id| self.remove(id)).collect();
        for w in &live {
            by_node
                .entry(w.node.clone())
                .or_default()
                .push(w.ticket.id.clone());
        }
        let players = live.len() as u32;
        tracing::info!(%room, node = %p.node, players, game = %p.key.0, mode = %p.key.1, "match made");
        for (node, tickets) in by_node {
            let matched = Matched {
                tickets,
                room: room.to_owned(),
                node: p.node.clone(),
                game: p.key.0.clone(),
                mode: p.key.1.clone(),
                players,
            };
            self.send(&node, Down::Matched(matched));
        }
    }

    fn drop_ticket(&mut self, id: &str, reason: &str) {
        if let Some(w) = self.remove(id) {
            let dropped = Dropped {
                ticket: id.to_owned(),
                reason: reason.to_owned(),
            };
            self.send(&w.node, Down::Dropped(dropped));
        }
    }

    /// Sends to a node's link. A link that cannot take it is ended: the node opens a new
    /// one and submits its tickets again, so nothing waits forever on a lost message.
    fn send(&mut self, node: &str, body: Down) {
        if let Some((_, down)) = self.links.get(node)
            && down.try_send(QueueDown { body: Some(body) }).is_err()
        {
            tracing::warn!(%node, "matchmaker link full or closed; ending it");
            self.links.remove(node);
            self.forget_node(node);
        }
    }
}
