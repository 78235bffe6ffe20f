//! The etcd backend: the node's lease and keep-alive, the watch that keeps the routing
//! table, and the loop that keeps this node's keys in step with its rooms.

use anyhow::Context;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, KeyValue, PutOptions, Txn,
    TxnOp, WatchOptions,
};
use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use super::keys::{Key, election_name};
use super::leadership::Leadership;
use super::{Cluster, ClusterConfig, ClusterError, ClusterEvent, NodeInfo, RoomEntry};
use crate::lock::Recover;
use crate::rooms::Rooms;

/// How often the node compares its rooms and load with what etcd says.
const SYNC_EVERY: Duration = Duration::from_secs(1);
/// Wait before retrying after etcd failed.
const RETRY: Duration = Duration::from_secs(1);

pub(super) struct Etcd {
    client: Client,
    pub prefix: String,
    pub ttl: Duration,
    lease: AtomicI64,
}

/// An etcd client error as the cluster reports it.
pub(super) fn etcd_error(e: etcd_client::Error) -> ClusterError {
    ClusterError::Etcd(e.to_string())
}

/// A value as stored: JSON (of types that always serialize).
pub(super) fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

impl Etcd {
    pub async fn connect(cfg: &ClusterConfig) -> anyhow::Result<Etcd> {
        // A cluster without its credential would refuse every node-to-node call.
        cfg.secret()?;
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(3));
        let client = Client::connect(&cfg.etcd, Some(options))
            .await
            .with_context(|| format!("connecting to etcd at {}", cfg.etcd.join(",")))?;
        Ok(Etcd {
            client,
            prefix: cfg.prefix(),
            ttl: cfg.lease_ttl.max(Duration::from_secs(1)),
            lease: AtomicI64::new(0),
        })
    }

    fn key(&self, key: Key) -> String {
        key.under(&self.prefix)
    }

    fn lease_opts(&self) -> PutOptions {
        PutOptions::new().with_lease(self.lease.load(Ordering::Acquire))
    }

    /// The current lease, if one was granted.
    pub fn lease_id(&self) -> Option<i64> {
        Some(self.lease.load(Ordering::Acquire)).filter(|&id| id != 0)
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Restores the previous version of `game` if its entry is still at `revision`.
    pub async fn rollback_game(
        &self,
        game: &str,
        revision: i64,
        note: String,
    ) -> Result<super::GameEntry, ClusterError> {
        let mut client = self.client();
        super::games::rollback(&mut client, &self.prefix, game, Some(revision), note).await
    }

    async fn grant(&self) -> Result<i64, ClusterError> {
        let ttl = self.ttl.as_secs().max(1) as i64;
        let lease = self
            .client()
            .lease_grant(ttl, None)
            .await
            .map_err(etcd_error)?;
        self.lease.store(lease.id(), Ordering::Release);
        Ok(lease.id())
    }

    /// Renews the lease once; `Ok(false)` if etcd says it has expired.
    async fn renew(&self) -> Result<bool, ClusterError> {
        let id = self.lease.load(Ordering::Acquire);
        let (mut keeper, mut stream) = self
            .client()
            .lease_keep_alive(id)
            .await
            .map_err(etcd_error)?;
        keeper.keep_alive().await.map_err(etcd_error)?;
        match stream.message().await.map_err(etcd_error)? {
            Some(resp) => Ok(resp.ttl() > 0),
            None => Err(ClusterError::Etcd("keep-alive stream ended".into())),
        }
    }

    pub async fn revoke(&self) {
        let id = self.lease.load(Ordering::Acquire);
        if id != 0 {
            let _ = self.client().lease_revoke(id).await;
        }
    }

    async fn put_node(&self, node: &NodeInfo) -> Result<(), ClusterError> {
        self.client()
            .put(
                self.key(Key::Node(node.id.clone())),
                json(node),
                Some(self.lease_opts()),
            )
            .await
            .map_err(etcd_error)?;
        Ok(())
    }

    pub async fn put_holder(&self, sha256: &str, node: &str) -> Result<(), ClusterError> {
        self.client()
            .put(
                self.key(Key::Module {
                    sha256: sha256.to_owned(),
                    node: node.to_owned(),
                }),
                "",
                Some(self.lease_opts()),
            )
            .await
            .map_err(etcd_error)?;
        Ok(())
    }

    pub async fn put_status(
        &self,
        node: &str,
        game: &str,
        status: &super::GameStatus,
    ) -> Result<(), ClusterError> {
        self.client()
            .put(
                self.key(Key::Status {
                    node: node.to_owned(),
                    game: game.to_owned(),
                }),
                json(status),
                Some(self.lease_opts()),
            )
            .await
            .map_err(etcd_error)?;
        Ok(())
    }

    pub async fn put_session(&self, player: u64, node: &str) -> Result<(), ClusterError> {
        self.client()
            .put(
                self.key(Key::Session(player)),
                node,
                Some(self.lease_opts()),
            )
            .await
            .map_err(etcd_error)?;
        Ok(())
    }

    /// Deletes `sessions/<player>` if it still names `node`.
    pub async fn delete_session_if(&self, player: u64, node: &str) -> Result<(), ClusterError> {
        let key = self.key(Key::Session(player));
        let txn = Txn::new()
            .when([Compare::value(key.clone(), CompareOp::Equal, node)])
            .and_then([TxnOp::delete(key, None)]);
        self.client().txn(txn).await.map_err(etcd_error)?;
        Ok(())
    }

    /// Creates `rooms/<room>` if no room of that id exists; or, if this node already
    /// owns it, updates it.
    pub async fn create_room(&self, room: &str, entry: &RoomEntry) -> Result<(), ClusterError> {
        let key = self.key(Key::Room(room.to_owned()));
        let value = json(entry);
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), value, Some(self.lease_opts()))])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.client().txn(txn).await.map_err(etcd_error)?;
        if resp.succeeded() {
            return Ok(());
        }
        let owner = resp
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                etcd_client::TxnOpResponse::Get(get) => get.kvs().first().map(owner_of),
                _ => None,
            })
            .unwrap_or_default();
        if owner == entry.owner {
            return self.update_room(room, entry).await;
        }
        Err(ClusterError::RoomExists {
            room: room.to_owned(),
            owner,
        })
    }

    /// Rewrites `rooms/<room>` if this node (`entry.owner`) owns it.
    async fn update_room(&self, room: &str, entry: &RoomEntry) -> Result<(), ClusterError> {
        let key = self.key(Key::Room(room.to_owned()));
        let value = json(entry);
        let resp = self
            .client()
            .get(key.clone(), None)
            .await
            .map_err(etcd_error)?;
        match resp.kvs().first() {
            Some(kv) if owner_of(kv) == entry.owner => {
                // Guarded by revision: a room that changed hands meanwhile is not overwritten.
                let txn = Txn::new()
                    .when([Compare::mod_revision(
                        key.clone(),
                        CompareOp::Equal,
                        kv.mod_revision(),
                    )])
                    .and_then([TxnOp::put(key, value, Some(self.lease_opts()))]);
                self.client().txn(txn).await.map_err(etcd_error)?;
                Ok(())
            }
            Some(kv) => Err(ClusterError::RoomExists {
                room: room.to_owned(),
                owner: owner_of(kv),
            }),
            None => Box::pin(self.create_room(room, entry)).await,
        }
    }

    /// Deletes `rooms/<room>` if `node` owns it.
    pub async fn delete_room_if(&self, room: &str, node: &str) -> Result<(), ClusterError> {
        let key = self.key(Key::Room(room.to_owned()));
        let resp = self
            .client()
            .get(key.clone(), None)
            .await
            .map_err(etcd_error)?;
        if let Some(kv) = resp.kvs().first()
            && owner_of(kv) == node
        {
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    kv.mod_revision(),
                )])
                .and_then([TxnOp::delete(key, None)]);
            self.client().txn(txn).await.map_err(etcd_error)?;
        }
        Ok(())
    }
}

fn owner_of(kv: &KeyValue) -> String {
    serde_json::from_slice::<RoomEntry>(kv.value())
        .map(|e| e.owner)
        .unwrap_or_default()
}

impl Cluster {
    fn etcd(&self) -> &Etcd {
        self.inner.etcd.as_ref().expect("an etcd cluster")
    }

    /// Registers everything this node holds under the current lease.
    async fn register(&self) -> Result<(), ClusterError> {
        let etcd = self.etcd();
        let (node, sessions, rooms, modules) = {
            let held = self.inner.held.lock().recover();
            let sessions: Vec<u64> = held.sessions.iter().copied().collect();
            (
                held.node.clone(),
                sessions,
                held.rooms.clone(),
                held.modules.clone(),
            )
        };
        etcd.put_node(&node).await?;
        for sha in modules {
            etcd.put_holder(&sha, &node.id).await?;
        }
        for player in sessions {
            etcd.put_session(player, &node.id).await?;
        }
        for (room, entry) in rooms {
            if let Err(e) = etcd.create_room(&room, &entry).await {
                tracing::warn!(room, "re-registering a room: {e}");
            }
        }
        Ok(())
    }
}

/// Takes the lease, registers the node, loads the routing table and starts the tasks.
pub(super) async fn start(cluster: Cluster, rooms: Rooms) -> anyhow::Result<()> {
    cluster.etcd().grant().await?;
    cluster.register().await?;
    let revision = load(&cluster).await?;
    tokio::spawn(keep_leased(cluster.clone()));
    tokio::spawn(watch(cluster.clone(), revision));
    tokio::spawn(sync(cluster, rooms));
    Ok(())
}

/// Renews the lease every third of its TTL. Without a renewal for a whole TTL the node
/// counts as unleased; once etcd answers again it takes a new lease and registers all.
async fn keep_leased(c: Cluster) {
    let etcd = c.etcd();
    let period = etcd.ttl / 3;
    let mut renewed = Instant::now();
    loop {
        tokio::select! {
            _ = c.inner.stop.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        let outcome = tokio::time::timeout(period, etcd.renew()).await;
        match outcome {
            Ok(Ok(true)) => {
                renewed = Instant::now();
                c.inner.leased.store(true, Ordering::Release);
                continue;
            }
            Ok(Ok(false)) => {
                tracing::warn!(
                    node = c.node_id(),
                    "the node's lease expired; taking a new one"
                );
                c.inner.leased.store(false, Ordering::Release);
            }
            Ok(Err(e)) => tracing::warn!(node = c.node_id(), "renewing the lease: {e}"),
            Err(_) => tracing::warn!(node = c.node_id(), "renewing the lease: timed out"),
        }
        if renewed.elapsed() >= etcd.ttl || !c.is_leased() {
            c.inner.leased.store(false, Ordering::Release);
            let again = async {
                etcd.grant().await?;
                c.register().await
            };
            match tokio::time::timeout(etcd.ttl, again).await {
                Ok(Ok(())) => {
                    tracing::info!(node = c.node_id(), "registered again under a new lease");
                    renewed = Instant::now();
                    c.inner.leased.store(true, Ordering::Release);
                }
                Ok(Err(e)) => tracing::warn!(node = c.node_id(), "taking a new lease: {e}"),
                Err(_) => tracing::warn!(node = c.node_id(), "taking a new lease: timed out"),
            }
        }
    }
}

/// Reads every key into a fresh routing table; returns the revision it reflects.
async fn load(c: &Cluster) -> Result<i64, ClusterError> {
    let etcd = c.etcd();
    let resp = etcd
        .client()
        .get(etcd.prefix.clone(), Some(GetOptions::new().with_prefix()))
        .await
        .map_err(etcd_error)?;
    let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
    c.write_routing(|r| *r = super::Routing::default());
    for kv in resp.kvs() {
        apply(c, kv, true);
    }
    Ok(revision)
}

/// A put of a value that parses becomes the entry; a delete, or a value that does not
/// parse, removes it.
fn put_or_remove<K: Ord, V: serde::de::DeserializeOwned>(
    map: &mut std::collections::BTreeMap<K, V>,
    key: K,
    put: bool,
    kv: &KeyValue,
) {
    match put
        .then(|| serde_json::from_slice::<V>(kv.value()).ok())
        .flatten()
    {
        Some(value) => {
            map.insert(key, value);
        }
        None => {
            map.remove(&key);
        }
    }
}

/// Applies one key's put (or delete) to the routing table.
fn apply(c: &Cluster, kv: &KeyValue, put: bool) {
    let Some(key) = Key::parse(&c.etcd().prefix, kv.key()) else {
        return;
    };
    match key {
        Key::Node(node) => {
            if !put {
                let _ = c
                    .inner
                    .events
                    .send(ClusterEvent::NodeLeft { node: node.clone() });
            }
            c.write_routing(|r| put_or_remove(&mut r.nodes, node, put, kv));
        }
        Key::Room(room) => c.write_routing(|r| put_or_remove(&mut r.rooms, room, put, kv)),
        Key::Session(player) => {
            let node = String::from_utf8_lossy(kv.value()).into_owned();
            if put && node != c.node_id() {
                let taken = c.inner.held.lock().recover().sessions.remove(&player);
                if taken {
                    let _ = c.inner.events.send(ClusterEvent::SessionTaken {
                        player,
                        node: node.clone(),
                    });
                }
            }
            c.write_routing(|r| {
                if put {
                    r.sessions.insert(player, node);
                } else {
                    r.sessions.remove(&player);
                }
            });
        }
        Key::Game(game) => {
            let entry = serde_json::from_slice::<super::GameEntry>(kv.value()).ok();
            let revision = kv.mod_revision();
            match (put, entry) {
                (true, Some(entry)) => {
                    c.write_routing(|r| {
                        r.games.insert(game.clone(), (entry.clone(), revision));
                    });
                    let _ = c.inner.events.send(ClusterEvent::GameChanged {
                        game,
                        entry,
                        revision,
                    });
                }
                (true, None) => {
                    tracing::warn!(key = %String::from_utf8_lossy(kv.key()), "not a game entry; ignored");
                }
                (false, _) => c.write_routing(|r| {
                    r.games.remove(&game);
                }),
            }
        }
        Key::Status { node, game } => {
            c.write_routing(|r| put_or_remove(&mut r.status, (node, game), put, kv));
        }
        Key::Module { sha256, node } => {
            c.write_routing(|r| {
                let holders = r.modules.entry(sha256.clone()).or_default();
                if put {
                    holders.insert(node);
                } else {
                    holders.remove(&node);
                    if holders.is_empty() {
                        r.modules.remove(&sha256);
                    }
                }
            });
        }
        Key::Candidate { .. } => {}
    }
}

/// Watches the prefix from `revision` on; after an error, reloads and watches again.
async fn watch(c: Cluster, mut revision: i64) {
    loop {
        let result = tokio::select! {
            _ = c.inner.stop.cancelled() => return,
            r = watch_from(&c, revision) => r,
        };
        if let Err(e) = result {
            tracing::warn!(node = c.node_id(), "watching etcd: {e}");
        }
        loop {
            tokio::select! {
                _ = c.inner.stop.cancelled() => return,
                _ = tokio::time::sleep(RETRY) => {}
            }
            match load(&c).await {
                Ok(r) => {
                    revision = r;
                    break;
                }
                Err(e) => tracing::debug!(node = c.node_id(), "reloading from etcd: {e}"),
            }
        }
    }
}

async fn watch_from(c: &Cluster, revision: i64) -> Result<(), ClusterError> {
    let etcd = c.etcd();
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(revision + 1);
    let mut stream = etcd
        .client()
        .watch(etcd.prefix.clone(), Some(options))
        .await
        .map_err(etcd_error)?;
    while let Some(resp) = stream.message().await.map_err(etcd_error)? {
        if resp.canceled() {
            return Err(ClusterError::Etcd(format!(
                "watch canceled: {}",
                resp.cancel_reason()
            )));
        }
        for event in resp.events() {
            if let Some(kv) = event.kv() {
                apply(c, kv, event.event_type() == EventType::Put);
            }
        }
    }
    Err(ClusterError::Etcd("watch stream ended".into()))
}

/// Keeps `rooms/` and `nodes/<me>` in step with the node's rooms and load.
async fn sync(c: Cluster, rooms: Rooms) {
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
    let held = c.inner.held.lock().recover().rooms.clone();
    for (room, entry) in &live {
        if held.get(room) != Some(entry) {
            etcd.create_room(room, entry).await?;
            c.inner
                .held
                .lock()
                .recover()
                .rooms
                .insert(room.clone(), entry.clone());
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

/// Campaigns in election `name` under the node's lease until this node leads (or the
/// node stops); a lease that changes meanwhile starts the campaign again under the new
/// one. While leading, the leader key is checked a few times per TTL: leadership ends
/// when the key is gone or is no longer this node's.
pub(super) async fn campaign(c: &Cluster, name: &str) -> Leadership {
    let etcd = c.etcd();
    let election = election_name(&etcd.prefix, name);
    let me = c.node_id().to_owned();
    loop {
        if c.inner.stop.is_cancelled() {
            return Leadership::ended();
        }
        let Some(lease) = etcd.lease_id().filter(|_| c.is_leased()) else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let mut client = etcd.client().election_client();
        let lease_changed = async {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if etcd.lease_id().filter(|_| c.is_leased()) != Some(lease) {
                    return;
                }
            }
        };
        let won = tokio::select! {
            _ = c.inner.stop.cancelled() => return Leadership::ended(),
            _ = lease_changed => continue,
            won = client.campaign(election.clone(), me.clone(), lease) => won,
        };
        let key = match won {
            Ok(resp) => resp.leader().cloned(),
            // etcd requests time out after a few seconds: campaigning again keeps this
            // node's place in line (the candidate key stays under its lease).
            Err(etcd_client::Error::GRpcStatus(s))
                if matches!(
                    s.code(),
                    tonic::Code::Cancelled | tonic::Code::DeadlineExceeded
                ) =>
            {
                continue;
            }
            Err(e) => {
                tracing::warn!(election = name, "campaign: {e}");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        let Some(key) = key else { continue };
        let (leadership, lost, resign) = Leadership::new();
        let check = (etcd.ttl / 4).clamp(Duration::from_millis(250), Duration::from_secs(1));
        let (c, election, name) = (c.clone(), election.clone(), name.to_owned());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = resign.cancelled() => break,
                    _ = c.inner.stop.cancelled() => break,
                    _ = tokio::time::sleep(check) => {}
                }
                match client.leader(election.clone()).await {
                    Ok(r) if r.kv().is_some_and(|kv| kv.key() == key.key()) => {}
                    Ok(_) => break,
                    Err(_) if !c.is_leased() => break,
                    Err(_) => {}
                }
            }
            lost.cancel();
            tracing::debug!(election = %name, "leadership ended; resigning");
            let options = etcd_client::ResignOptions::new().with_leader(key);
            let _ =
                tokio::time::timeout(Duration::from_secs(2), client.resign(Some(options))).await;
        });
        return leadership;
    }
}

/// The node id leading election `name`, if anyone does.
pub(super) async fn leader(c: &Cluster, name: &str) -> Result<Option<String>, ClusterError> {
    let etcd = c.etcd();
    let resp = etcd
        .client()
        .election_client()
        .leader(election_name(&etcd.prefix, name))
        .await;
    match resp {
        Ok(resp) => Ok(resp
            .kv()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())),
        // etcd answers "election: no leader" as an error.
        Err(etcd_client::Error::GRpcStatus(s)) if s.message().contains("no leader") => Ok(None),
        Err(e) => Err(etcd_error(e)),
    }
}
