//! The cluster: which nodes exist, which node holds each player's session and each room.
//!
//! One interface, two backends. With no etcd configured the node is a cluster of one and
//! everything is decided in-process (nothing to install). With `--etcd URL[,URL…]` the
//! node registers under one etcd lease (kept alive) and every node watches the shared
//! keys, keeping a local routing table. Keys, under a prefix (default
//! `/ludus/<cluster name>/`):
//!
//! - `nodes/<node>`: the node's gateway address and load (JSON [`NodeInfo`]).
//! - `sessions/<player>`: the node holding the player's session; a newer login anywhere
//!   overwrites it and the older node closes its connection with a reason.
//! - `rooms/<room>`: owner, game, version, label, seats (JSON [`RoomEntry`]), created by
//!   transaction so the same room id cannot exist twice.
//! - `games/<game>`: the version the cluster should run (see `games.rs`).
//! - `modules/<sha256>/<node>`: which nodes hold a module's bytes (to fetch over gRPC).
//! - `status/<node>/<game>`: what each node runs, and its last error.
//!
//! The layout is written once, in [`keys`]. All of a node's keys live under its lease: when the node dies they vanish within the
//! lease TTL; a graceful shutdown revokes the lease so they vanish at once. A node that
//! cannot renew its lease refuses new rooms and sessions until it has a lease again, and
//! then registers everything it still holds.

mod election;
mod etcd;
mod games;
pub mod keys;
mod lease;
mod operator;
mod settings;
mod sync;
mod watch;

pub use election::Leadership;
pub use games::{Desired, GameEntry, GameStatus, GameVersion};
pub use keys::short_sha;
pub use operator::{Operator, Snapshot};
pub use settings::{SettingChange, SettingEntry};

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::lock::Recover;
use crate::rooms::Rooms;

/// `[cluster]` in the config file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// etcd endpoints (`http://127.0.0.1:2379`); empty: a single node, in-process. A
    /// list, or one string of comma-separated URLs (`LUDUS_CLUSTER__ETCD=http://a:2379,http://b:2379`).
    #[serde(deserialize_with = "endpoints")]
    pub etcd: Vec<String>,
    /// The cluster's name; the default key prefix is `/ludus/<name>/`.
    pub name: String,
    /// Key prefix in etcd (overrides the one derived from `name`).
    pub prefix: Option<String>,
    /// This node's id (default: random, new each start).
    pub node_id: Option<String>,
    /// TTL of the node's lease: how long a dead node's keys outlive it.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// The gateway address other nodes and clients should use for this node (default:
    /// the address it listens on).
    pub advertise: Option<String>,
    /// The cluster credential: a shared secret ([`ClusterConfig::MIN_SECRET_LEN`]+
    /// bytes) every node-to-node and operator call carries. Required with etcd.
    pub secret: Option<String>,
    /// Where the node's gRPC service (module fetches, uploads by `ludus deploy`)
    /// listens; port 0 picks a free one. Used with etcd only.
    pub grpc_listen: std::net::SocketAddr,
    /// The gRPC address other nodes should use for this node (default: the address it
    /// listens on), for a node behind NAT or a proxy.
    pub grpc_advertise: Option<String>,
    /// Mutual TLS between nodes (and for `ludus deploy`'s upload): every gRPC link is
    /// TLS, each end shows a certificate signed by the cluster's CA, and a peer whose
    /// certificate another CA signed is refused. The cluster credential is still sent.
    pub tls: Option<NodeTls>,
    /// TLS to etcd (`https://` endpoints): the CA that signed etcd's certificate, and
    /// this node's client certificate when etcd asks for one (`--client-cert-auth`).
    pub etcd_tls: Option<EtcdTls>,
    /// etcd user and password, when etcd has authentication enabled.
    pub etcd_user: Option<String>,
    pub etcd_password: Option<String>,
    /// On SIGTERM (or Ctrl-C), move every room live to the other nodes before stopping
    /// (as `ludus drain` does); rooms that cannot move are kept as without it.
    pub drain_on_stop: bool,
    /// How long that drain may take before the rooms left stop as without it.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

/// A list of endpoints, or one string of them separated by commas.
fn endpoints<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Endpoints {
        One(String),
        Many(Vec<String>),
    }
    let list = match Endpoints::deserialize(d)? {
        Endpoints::One(s) => s.split(',').map(str::to_owned).collect(),
        Endpoints::Many(list) => list,
    };
    Ok(list
        .into_iter()
        .map(|e| e.trim().to_owned())
        .filter(|e| !e.is_empty())
        .collect())
}

/// `[cluster.tls]`: this node's certificate and the CA every node's is signed by.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeTls {
    /// The cluster CA's certificate (PEM).
    pub ca: std::path::PathBuf,
    /// This node's certificate (PEM), naming the host of its gRPC address (its
    /// `grpc_advertise`, or the address it listens on) as a DNS or IP subject name.
    pub cert: std::path::PathBuf,
    /// This node's private key (PEM).
    pub key: std::path::PathBuf,
}

/// `[cluster.etcd_tls]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EtcdTls {
    /// The CA that signed etcd's server certificate (PEM).
    pub ca: std::path::PathBuf,
    /// A client certificate and key (PEM) for an etcd started with `--client-cert-auth`.
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            etcd: Vec::new(),
            name: "default".into(),
            prefix: None,
            node_id: None,
            lease_ttl: Duration::from_secs(10),
            advertise: None,
            secret: None,
            grpc_listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            grpc_advertise: None,
            tls: None,
            etcd_tls: None,
            etcd_user: None,
            etcd_password: None,
            drain_on_stop: false,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

impl ClusterConfig {
    /// The shortest cluster secret accepted.
    pub const MIN_SECRET_LEN: usize = 32;

    /// The cluster credential, or an error that says how to set one.
    pub fn secret(&self) -> anyhow::Result<String> {
        let min = Self::MIN_SECRET_LEN;
        match &self.secret {
            Some(s) if s.len() >= min => Ok(s.clone()),
            Some(s) => anyhow::bail!(
                "cluster.secret must be at least {min} bytes, it has {}; make one with \
                 `openssl rand -hex 32`",
                s.len()
            ),
            None => anyhow::bail!(
                "a cluster needs a shared secret for node-to-node calls: set cluster.secret \
                 (or LUDUS_CLUSTER__SECRET), the same on every node and for ludus deploy; make one \
                 with `openssl rand -hex 32`"
            ),
        }
    }

    pub fn prefix(&self) -> String {
        let mut prefix = self
            .prefix
            .clone()
            .unwrap_or_else(|| format!("/ludus/{}/", self.name));
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        prefix
    }
}

/// A node as the cluster sees it (`nodes/<node>`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct NodeInfo {
    pub id: String,
    /// Gateway address (host:port).
    pub gateway: String,
    /// gRPC address (host:port) for module fetches and operators.
    #[serde(default)]
    pub grpc: String,
    pub rooms: usize,
    pub players: usize,
    /// Live settings this node applied (key: value), as `ludus config` set them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, String>,
    /// Live settings this node refused or rolled back, with why.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub refused: BTreeMap<String, String>,
}

/// A room as the cluster sees it (`rooms/<room>`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RoomEntry {
    pub owner: String,
    pub game: String,
    pub version: String,
    pub label: String,
    pub seats: u32,
}

/// What a node learns from the cluster that it must act on.
#[derive(Clone, Debug, PartialEq)]
pub enum ClusterEvent {
    /// `player` logged in on `node`: a session for it here must end.
    SessionTaken { player: u64, node: String },
    /// A node left the cluster (its key was deleted or expired).
    NodeLeft { node: String },
    /// `games/<game>` changed (at etcd revision `revision`).
    GameChanged {
        game: String,
        entry: GameEntry,
        revision: i64,
    },
    /// `config/<key>` changed: [`Cluster::settings`] has the new entry.
    SettingChanged { key: String },
}

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum ClusterError {
    #[error("room `{room}` already exists in the cluster (on node {owner})")]
    RoomExists { room: String, owner: String },
    #[error(
        "this node has no lease in etcd (is etcd reachable?); it takes no new rooms or \
         sessions until it has one again"
    )]
    NoLease,
    #[error("etcd: {0}")]
    Etcd(String),
    #[error("the same player logged in on node {node} at the same moment, and that login won")]
    SessionTaken { node: String },
    #[error(
        "etcd did not answer within {0:?}; the node takes no new sessions or rooms until it does"
    )]
    Unavailable(Duration),
    #[error("{0} does not hold what it should (written by something else?)")]
    BadEntry(String),
    #[error(
        "games/{game} changed while {doing} (another operator?); look at `ludus status` and \
         run it again"
    )]
    Changed { game: String, doing: &'static str },
    #[error("no game `{0}` in the cluster")]
    NoGame(String),
    #[error("game `{0}` has no earlier version to roll back to")]
    NoHistory(String),
    #[error("room `{room}` or a session of its players changed hands during the move ({detail})")]
    MoveRaced { room: String, detail: String },
    #[error("moving rooms between nodes needs a cluster (etcd)")]
    NoCluster,
}

/// How long a player's request (a login, a create, a join) waits for etcd before it
/// is refused as unavailable: a hung etcd must not hang players.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(1);

/// `call`, or [`ClusterError::Unavailable`] if etcd takes longer than [`ANSWER_WITHIN`].
async fn within<T>(
    call: impl std::future::Future<Output = Result<T, ClusterError>>,
) -> Result<T, ClusterError> {
    let started = std::time::Instant::now();
    let answer = tokio::time::timeout(ANSWER_WITHIN, call)
        .await
        .unwrap_or(Err(ClusterError::Unavailable(ANSWER_WITHIN)));
    metrics::histogram!("ludus_etcd_operation_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    answer
}

/// Where things are, as this node last heard.
#[derive(Clone, Debug, Default)]
pub struct Routing {
    pub nodes: BTreeMap<String, NodeInfo>,
    pub rooms: BTreeMap<String, RoomEntry>,
    pub sessions: BTreeMap<u64, String>,
    /// Desired version per game, with the revision of its key.
    pub games: BTreeMap<String, (GameEntry, i64)>,
    /// What each node runs, by (node, game).
    pub status: BTreeMap<(String, String), GameStatus>,
    /// Nodes holding each module's bytes, by sha256.
    pub modules: BTreeMap<String, BTreeSet<String>>,
    /// Live host settings, with the revision of their key.
    pub settings: BTreeMap<String, (SettingEntry, i64)>,
}

/// What this node holds, so it can register it all again after losing its lease.
#[derive(Default)]
struct Held {
    node: NodeInfo,
    /// Sessions this node holds, with the revision of its claim (0 without etcd): a
    /// claim by another node at a later revision ends the session here.
    sessions: HashMap<u64, i64>,
    rooms: BTreeMap<String, RoomEntry>,
    modules: BTreeSet<String>,
}

/// This node's view of and part in the cluster. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: String,
    routing: RwLock<Routing>,
    held: Mutex<Held>,
    events: broadcast::Sender<ClusterEvent>,
    /// Module bytes this node holds, by sha256 (served to other nodes).
    modules: Mutex<HashMap<String, Arc<Vec<u8>>>>,
    /// False while the node has no valid lease (etcd backend only).
    leased: AtomicBool,
    etcd: Option<etcd::Etcd>,
    stop: CancellationToken,
}

impl Cluster {
    /// A cluster of one, decided in-process.
    pub fn local(gateway: &str) -> Cluster {
        Cluster::local_as(gateway, &crate::csprng::hex::<4>())
    }

    /// A cluster of one whose node is `id`.
    pub fn local_as(gateway: &str, id: &str) -> Cluster {
        let cluster = Cluster::new(id.to_owned(), None);
        cluster.set_node(gateway, "");
        cluster
    }

    /// Joins the etcd cluster of `cfg` (or makes a local one if it names no etcd), and
    /// keeps the node's keys in step with `rooms` until [`Cluster::leave`].
    pub async fn start(
        cfg: &ClusterConfig,
        gateway: &str,
        grpc: &str,
        rooms: Rooms,
    ) -> anyhow::Result<Cluster> {
        if cfg.etcd.is_empty() {
            return Ok(Cluster::local(gateway));
        }
        let id = cfg.node_id.clone().unwrap_or_else(crate::csprng::hex::<4>);
        let etcd = etcd::Etcd::connect(cfg).await?;
        let cluster = Cluster::new(id, Some(etcd));
        let grpc = cfg.grpc_advertise.as_deref().unwrap_or(grpc);
        cluster.set_node(cfg.advertise.as_deref().unwrap_or(gateway), grpc);
        lease::start(cluster.clone(), rooms).await?;
        Ok(cluster)
    }

    fn new(node_id: String, etcd: Option<etcd::Etcd>) -> Cluster {
        Cluster {
            inner: Arc::new(Inner {
                node_id,
                routing: RwLock::new(Routing::default()),
                held: Mutex::new(Held::default()),
                events: broadcast::channel(1024).0,
                modules: Mutex::new(HashMap::new()),
                leased: AtomicBool::new(true),
                etcd,
                stop: CancellationToken::new(),
            }),
        }
    }

    fn set_node(&self, gateway: &str, grpc: &str) {
        let node = NodeInfo {
            id: self.inner.node_id.clone(),
            gateway: gateway.to_owned(),
            grpc: grpc.to_owned(),
            rooms: 0,
            players: 0,
            settings: BTreeMap::new(),
            refused: BTreeMap::new(),
        };
        self.inner.held.lock().recover().node = node.clone();
        self.write_routing(|r| {
            r.nodes.insert(node.id.clone(), node);
        });
    }

    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    pub fn is_etcd(&self) -> bool {
        self.inner.etcd.is_some()
    }

    /// Waits until this node leads the election `name` (see [`keys`] for the names).
    /// A cluster of one leads at once, until it leaves; in etcd the candidates queue
    /// under their leases, so a leader that dies is followed within the lease TTL.
    pub async fn campaign(&self, name: &str) -> Leadership {
        if self.inner.etcd.is_some() {
            return election::campaign(self, name).await;
        }
        let (leadership, lost, resign) = Leadership::new();
        let stop = self.inner.stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = resign.cancelled() => {}
            }
            lost.cancel();
        });
        leadership
    }

    /// The node leading election `name`, if one does.
    pub async fn leader(&self, name: &str) -> Result<Option<String>, ClusterError> {
        if self.inner.etcd.is_some() {
            return election::leader(self, name).await;
        }
        Ok(Some(self.inner.node_id.clone()))
    }

    /// Writes what this node runs of `game` (`status/<node>/<game>`; etcd only).
    pub async fn put_status(&self, game: &str, status: &GameStatus) -> Result<(), ClusterError> {
        match &self.inner.etcd {
            Some(etcd) => etcd.put_status(&self.inner.node_id, game, status).await,
            None => Ok(()),
        }
    }

    /// Restores the previous version of `game` cluster-wide if its entry is still at
    /// `revision` (etcd only: a cluster of one has no desired versions).
    pub async fn rollback_game(
        &self,
        game: &str,
        revision: i64,
        note: String,
    ) -> Result<GameEntry, ClusterError> {
        match &self.inner.etcd {
            Some(etcd) => etcd.rollback_game(game, revision, note).await,
            None => Err(ClusterError::NoGame(game.to_owned())),
        }
    }

    /// Whether the node holds a valid lease (always true for a local cluster).
    pub fn is_leased(&self) -> bool {
        self.inner.leased.load(Ordering::Acquire)
    }

    /// Load of every node as last reported: (players, rooms) by node id. Cheaper than
    /// a copy of the whole table.
    pub fn node_loads(&self) -> HashMap<String, (usize, usize)> {
        self.inner
            .routing
            .read()
            .recover()
            .nodes
            .iter()
            .map(|(id, n)| (id.clone(), (n.players, n.rooms)))
            .collect()
    }

    /// Live host settings as this node last heard, with the revision of each key.
    pub fn settings(&self) -> BTreeMap<String, (SettingEntry, i64)> {
        self.inner.routing.read().recover().settings.clone()
    }

    /// What this node reports in its `nodes/` entry about the live settings: applied
    /// (key: value) and refused or rolled back (key: why). Written with the next load
    /// report.
    pub fn report_settings(
        &self,
        applied: BTreeMap<String, String>,
        refused: BTreeMap<String, String>,
    ) {
        let node = {
            let mut held = self.inner.held.lock().recover();
            held.node.settings = applied;
            held.node.refused = refused;
            held.node.clone()
        };
        self.write_routing(|r| {
            r.nodes.insert(node.id.clone(), node.clone());
        });
        if self.inner.etcd.is_some() && self.is_leased() {
            let c = self.clone();
            tokio::spawn(async move {
                if let Some(etcd) = &c.inner.etcd
                    && let Err(e) = etcd.put_node(&node).await
                {
                    tracing::warn!("reporting the applied settings: {e}");
                }
            });
        }
    }

    /// Sets live setting `key` for the cluster (`None`: unset), recording `by`.
    pub async fn set_setting(
        &self,
        key: &str,
        value: Option<String>,
        by: String,
    ) -> Result<SettingEntry, ClusterError> {
        let Some(etcd) = &self.inner.etcd else {
            return Err(ClusterError::Etcd("live settings need etcd".into()));
        };
        settings::set(&mut etcd.client(), &etcd.prefix, key, value, by).await
    }

    /// Makes `module` the desired version of `game` for every node (all rooms swap; a
    /// failure rolls it back), as `ludus deploy` does.
    pub async fn desire(
        &self,
        game: &str,
        module: &crate::runtime::Module,
    ) -> Result<GameEntry, ClusterError> {
        let Some(etcd) = &self.inner.etcd else {
            return Err(ClusterError::Etcd("desired versions need etcd".into()));
        };
        let desired = Desired {
            version: GameVersion {
                sha256: module.sha256_hex(),
                name: module.name.clone(),
                version: module.version.clone(),
                size: module.size as u64,
            },
            policy: crate::rooms::SwapPolicy::AllRooms,
            room_config: None,
            rollback_on_failure: true,
        };
        games::set_desired(&mut etcd.client(), &etcd.prefix, game, desired).await
    }

    /// Puts setting `key` back to its value before the last change, if it is still at
    /// `revision` (`Ok(false)`: it changed meanwhile; that change stands).
    pub async fn roll_back_setting(
        &self,
        key: &str,
        revision: i64,
        why: &str,
    ) -> Result<bool, ClusterError> {
        let Some(etcd) = &self.inner.etcd else {
            return Ok(false);
        };
        let by = format!("node {} rolled it back: {why}", self.inner.node_id);
        settings::roll_back(&mut etcd.client(), &etcd.prefix, key, revision, by).await
    }

    /// The node that owns room `id` as this node last heard (no copy of the table).
    pub fn room_owner(&self, id: &str) -> Option<String> {
        let routing = self.inner.routing.read().recover();
        routing.rooms.get(id).map(|r| r.owner.clone())
    }

    /// The node that owns room `id`: from the routing table, or, for a room this node
    /// has not heard of yet (created a moment ago elsewhere), from etcd itself.
    pub async fn find_room_owner(&self, id: &str) -> Result<Option<String>, ClusterError> {
        if let Some(owner) = self.room_owner(id) {
            return Ok(Some(owner));
        }
        match &self.inner.etcd {
            Some(etcd) => Ok(within(etcd.room(id)).await?.map(|r| r.owner)),
            None => Ok(None),
        }
    }

    /// The node holding `player`'s session, as this node last heard.
    pub fn session_owner(&self, player: u64) -> Option<String> {
        self.inner
            .routing
            .read()
            .recover()
            .sessions
            .get(&player)
            .cloned()
    }

    /// A node's entry, as this node last heard.
    pub fn node(&self, id: &str) -> Option<NodeInfo> {
        self.inner.routing.read().recover().nodes.get(id).cloned()
    }

    /// The nodes that hold module `sha256`, as this node last heard.
    pub fn module_holders(&self, sha256: &str) -> Vec<String> {
        let routing = self.inner.routing.read().recover();
        routing
            .modules
            .get(sha256)
            .map(|holders| holders.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// A copy of the routing table.
    pub fn routing(&self) -> Routing {
        self.inner.routing.read().recover().clone()
    }

    fn write_routing(&self, f: impl FnOnce(&mut Routing)) {
        f(&mut self.inner.routing.write().recover());
    }

    pub fn subscribe(&self) -> broadcast::Receiver<ClusterEvent> {
        self.inner.events.subscribe()
    }

    fn check_lease(&self) -> Result<(), ClusterError> {
        if self.is_leased() {
            Ok(())
        } else {
            Err(ClusterError::NoLease)
        }
    }

    /// Records that this node now holds `player`'s session; anywhere else it ends.
    /// Answers within [`ANSWER_WITHIN`] even if etcd hangs. Of two nodes claiming one
    /// player at once, the later write wins and the other is refused here (or, if it
    /// already answered, evicted by the watch).
    pub async fn claim_session(&self, player: u64) -> Result<(), ClusterError> {
        self.check_lease()?;
        let me = self.inner.node_id.clone();
        match &self.inner.etcd {
            Some(etcd) => {
                let revision = within(etcd.put_session(player, &me)).await?;
                self.inner
                    .held
                    .lock()
                    .recover()
                    .sessions
                    .insert(player, revision);
                // A claim written after ours and already seen by the watch would not
                // evict a session held only from now on: look once more.
                let now = within(etcd.session(player)).await;
                if let Ok(Some((node, at))) = &now
                    && *at != revision
                    && *node != me
                {
                    self.inner.held.lock().recover().sessions.remove(&player);
                    return Err(ClusterError::SessionTaken { node: node.clone() });
                }
            }
            None => {
                self.inner.held.lock().recover().sessions.insert(player, 0);
            }
        }
        self.write_routing(|r| {
            r.sessions.insert(player, me);
        });
        Ok(())
    }

    /// This node no longer holds `player`'s session (its key is removed if it is still
    /// this node's).
    pub async fn release_session(&self, player: u64) {
        self.inner.held.lock().recover().sessions.remove(&player);
        let me = self.inner.node_id.clone();
        self.write_routing(|r| {
            if r.sessions.get(&player) == Some(&me) {
                r.sessions.remove(&player);
            }
        });
        if let Some(etcd) = &self.inner.etcd
            && let Err(e) = etcd.delete_session_if(player, &me).await
        {
            tracing::warn!(player, "releasing the session key: {e}");
        }
    }

    /// Claims `room` for this node; fails if it exists anywhere in the cluster.
    pub async fn claim_room(&self, room: &str, game: &str) -> Result<(), ClusterError> {
        self.check_lease()?;
        let entry = RoomEntry {
            owner: self.inner.node_id.clone(),
            game: game.to_owned(),
            ..RoomEntry::default()
        };
        // On one node the rooms service alone keeps ids unique.
        let Some(etcd) = &self.inner.etcd else {
            return Ok(());
        };
        within(etcd.claim_room(room, &entry)).await?;
        self.inner
            .held
            .lock()
            .recover()
            .rooms
            .insert(room.to_owned(), entry.clone());
        self.write_routing(|r| {
            r.rooms.insert(room.to_owned(), entry);
        });
        Ok(())
    }

    /// Takes `room` and the sessions of `players` over from node `from` (a live
    /// migration) in one etcd transaction. It succeeds only if the room's key still
    /// names `from` (or is gone: `from` stopped the room for the move) and each
    /// session's key names `from`.
    pub async fn transfer(
        &self,
        room: &str,
        game: &str,
        from: &str,
        players: &[u64],
    ) -> Result<(), ClusterError> {
        self.check_lease()?;
        let me = self.inner.node_id.clone();
        let Some(etcd) = &self.inner.etcd else {
            return Err(ClusterError::NoCluster);
        };
        let entry = RoomEntry {
            owner: me.clone(),
            game: game.to_owned(),
            ..RoomEntry::default()
        };
        let revision = within(etcd.transfer(room, &entry, from, players)).await?;
        {
            let mut held = self.inner.held.lock().recover();
            held.rooms.insert(room.to_owned(), entry.clone());
            for &player in players {
                held.sessions.insert(player, revision);
            }
        }
        self.write_routing(|r| {
            r.rooms.insert(room.to_owned(), entry);
            for &player in players {
                r.sessions.insert(player, me.clone());
            }
        });
        Ok(())
    }

    /// Gives up a room this node claimed (its creation failed, or it closed).
    pub async fn release_room(&self, room: &str) {
        let held = self
            .inner
            .held
            .lock()
            .recover()
            .rooms
            .remove(room)
            .is_some();
        self.write_routing(|r| {
            r.rooms.remove(room);
        });
        if held
            && let Some(etcd) = &self.inner.etcd
            && let Err(e) = etcd.delete_room_if(room, &self.inner.node_id).await
        {
            tracing::warn!(room, "releasing the room key: {e}");
        }
    }

    /// The bytes of module `sha256` if this node holds them.
    pub fn module_bytes(&self, sha256: &str) -> Option<Arc<Vec<u8>>> {
        self.inner.modules.lock().recover().get(sha256).cloned()
    }

    /// Keeps a module's bytes and tells the cluster this node holds them, so other
    /// nodes can fetch them. A cluster of one keeps nothing: nobody would ask.
    pub async fn hold_module(&self, sha256: &str, bytes: Arc<Vec<u8>>) -> Result<(), ClusterError> {
        let Some(etcd) = &self.inner.etcd else {
            return Ok(());
        };
        self.inner
            .modules
            .lock()
            .recover()
            .insert(sha256.to_owned(), bytes);
        self.inner
            .held
            .lock()
            .recover()
            .modules
            .insert(sha256.to_owned());
        etcd.put_holder(sha256, &self.inner.node_id).await
    }

    /// Leaves the cluster: stops the node's tasks and revokes its lease, so every key
    /// it held vanishes at once.
    pub async fn leave(&self) {
        self.inner.stop.cancel();
        if let Some(etcd) = &self.inner.etcd {
            etcd.revoke().await;
        }
    }
}
