//! The etcd backend's client: connecting, the lease, and every read and write of the
//! node's keys (each built by [`Key`]). The node's life in etcd is in `lease.rs`
//! (registration and keep-alive), `watch.rs` (the routing table), `sync.rs` (rooms and
//! load) and `election.rs` (leadership).

use anyhow::Context;
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, KeyValue, PutOptions, Txn, TxnOp};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use super::keys::Key;
use super::{ClusterConfig, ClusterError, NodeInfo, RoomEntry};

/// Wait before retrying after etcd failed.
pub(super) const RETRY: Duration = Duration::from_secs(1);

pub(super) struct Etcd {
    client: Client,
    pub prefix: String,
    pub ttl: Duration,
    lease: AtomicI64,
}

/// A client of the etcd `cfg` names (over TLS and with a user when it says so), whose
/// requests time out after `timeout`. Errors name the setting that is wrong.
pub(super) async fn connect(cfg: &ClusterConfig, timeout: Duration) -> anyhow::Result<Client> {
    let endpoints = &cfg.etcd;
    // Keepalive finds a connection to etcd that went silent (packets dropped), so the
    // client connects again instead of waiting on it for ever.
    let mut options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_timeout(timeout)
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(3))
        .with_keep_alive_while_idle(true);
    let https = endpoints
        .iter()
        .filter(|e| e.starts_with("https://"))
        .count();
    match &cfg.etcd_tls {
        Some(tls) => {
            anyhow::ensure!(
                https == endpoints.len(),
                "cluster.etcd_tls is set, so every etcd endpoint must start with https:// \
                 (got {})",
                endpoints.join(",")
            );
            let mut opts =
                etcd_client::TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(
                    crate::tls::certificate_pem(&tls.ca).context("cluster.etcd_tls.ca")?,
                ));
            match (&tls.cert, &tls.key) {
                (Some(cert), Some(key)) => {
                    opts = opts.identity(etcd_client::Identity::from_pem(
                        crate::tls::certificate_pem(cert).context("cluster.etcd_tls.cert")?,
                        crate::tls::key_pem(key).context("cluster.etcd_tls.key")?,
                    ));
                }
                (None, None) => {}
                _ => anyhow::bail!("cluster.etcd_tls: set both cert and key, or neither"),
            }
            options = options.with_tls(opts);
        }
        None => anyhow::ensure!(
            https == 0,
            "an https:// etcd endpoint needs cluster.etcd_tls.ca (the CA that signed \
             etcd's certificate)"
        ),
    }
    match (&cfg.etcd_user, &cfg.etcd_password) {
        (Some(user), Some(password)) => {
            options = options
                .with_user(user.clone(), password.clone())
                .with_auto_token_refresh(true);
        }
        (None, None) => {}
        _ => anyhow::bail!("set both cluster.etcd_user and cluster.etcd_password, or neither"),
    }
    let hint = match &cfg.etcd_tls {
        Some(_) => {
            " over TLS (does etcd trust this node's client certificate, and does its own \
             certificate name the host in the URL?)"
        }
        None => "",
    };
    Client::connect(endpoints, Some(options))
        .await
        .with_context(|| format!("connecting to etcd at {}{hint}", endpoints.join(",")))
}

/// An etcd client error as the cluster reports it.
pub(super) fn etcd_error(e: etcd_client::Error) -> ClusterError {
    ClusterError::Etcd(e.to_string())
}

/// Keys read per request of a whole-prefix read: a page of room entries (a few hundred
/// bytes each, labels capped at 256) stays far below a gRPC message's 4 MiB.
const PAGE: i64 = 500;

/// The first key after every key starting with `prefix` (etcd's range end).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // every key
}

/// Every key under `prefix`, read in pages at one revision (a consistent snapshot
/// however many keys there are); with that revision.
pub(super) async fn get_prefix(
    client: &mut Client,
    prefix: &str,
) -> Result<(Vec<KeyValue>, i64), ClusterError> {
    let end = prefix_end(prefix.as_bytes());
    let mut from = prefix.as_bytes().to_vec();
    let mut revision = 0;
    let mut all = Vec::new();
    loop {
        let mut options = etcd_client::GetOptions::new()
            .with_range(end.clone())
            .with_limit(PAGE);
        if revision > 0 {
            options = options.with_revision(revision);
        }
        let mut resp = client.get(from, Some(options)).await.map_err(etcd_error)?;
        if revision == 0 {
            revision = resp.header().map_or(0, |h| h.revision());
        }
        let more = resp.more();
        let page = resp.take_kvs();
        let Some(last) = page.last() else { break };
        from = last.key().to_vec();
        from.push(0);
        all.extend(page);
        if !more {
            break;
        }
    }
    Ok((all, revision))
}

/// A value as stored: JSON (of types that always serialize).
pub(super) fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// The JSON entry at `key` and its revision (`games/`, `config/`: the keys written by
/// revision-guarded transactions).
pub(super) async fn get_entry<T: serde::de::DeserializeOwned>(
    client: &mut Client,
    prefix: &str,
    key: Key,
) -> Result<Option<(T, i64)>, ClusterError> {
    let resp = client
        .get(key.under(prefix), None)
        .await
        .map_err(etcd_error)?;
    match resp.kvs().first() {
        Some(kv) => {
            let entry = serde_json::from_slice(kv.value())
                .map_err(|e| ClusterError::BadEntry(format!("{}: {e}", key.under(""))))?;
            Ok(Some((entry, kv.mod_revision())))
        }
        None => Ok(None),
    }
}

/// Writes `entry` at `key` if the key is still at `revision` (`None`: absent); `false`
/// when it is not.
pub(super) async fn put_entry_if<T: serde::Serialize>(
    client: &mut Client,
    prefix: &str,
    key: Key,
    entry: &T,
    revision: Option<i64>,
) -> Result<bool, ClusterError> {
    let k = key.under(prefix);
    let guard = match revision {
        Some(r) => Compare::mod_revision(k.clone(), CompareOp::Equal, r),
        None => Compare::create_revision(k.clone(), CompareOp::Equal, 0),
    };
    let txn = Txn::new()
        .when([guard])
        .and_then([TxnOp::put(k, json(entry), None)]);
    Ok(client.txn(txn).await.map_err(etcd_error)?.succeeded())
}

impl Etcd {
    pub async fn connect(cfg: &ClusterConfig) -> anyhow::Result<Etcd> {
        // A cluster without its credential would refuse every node-to-node call.
        cfg.secret()?;
        let client = connect(cfg, Duration::from_secs(3)).await?;
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

    pub async fn grant(&self) -> Result<i64, ClusterError> {
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
    pub async fn renew(&self) -> Result<bool, ClusterError> {
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

    pub async fn put_node(&self, node: &NodeInfo) -> Result<(), ClusterError> {
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

    /// Writes `sessions/<player>` = `node` (a login takes the session over from
    /// wherever it was); returns the revision of the write.
    pub async fn put_session(&self, player: u64, node: &str) -> Result<i64, ClusterError> {
        let resp = self
            .client()
            .put(
                self.key(Key::Session(player)),
                node,
                Some(self.lease_opts()),
            )
            .await
            .map_err(etcd_error)?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    /// `sessions/<player>` now: the node that holds it and the revision it was written.
    pub async fn session(&self, player: u64) -> Result<Option<(String, i64)>, ClusterError> {
        let resp = self
            .client()
            .get(self.key(Key::Session(player)), None)
            .await
            .map_err(etcd_error)?;
        Ok(resp.kvs().first().map(|kv| {
            (
                String::from_utf8_lossy(kv.value()).into_owned(),
                kv.mod_revision(),
            )
        }))
    }

    /// Writes `sessions/<player>` = `node` under the current lease only if no node holds
    /// it (or `node` itself does): a node coming back after losing its lease does not
    /// take back a session another node took meanwhile. Returns the holder otherwise.
    pub async fn keep_session(
        &self,
        player: u64,
        node: &str,
    ) -> Result<Option<String>, ClusterError> {
        let key = self.key(Key::Session(player));
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), node, Some(self.lease_opts()))])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.client().txn(txn).await.map_err(etcd_error)?;
        if resp.succeeded() {
            return Ok(None);
        }
        let holder = resp.op_responses().into_iter().find_map(|op| match op {
            etcd_client::TxnOpResponse::Get(get) => get
                .kvs()
                .first()
                .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
            _ => None,
        });
        match holder {
            Some(h) if h == node => self.put_session(player, node).await.map(|_| None),
            other => Ok(other),
        }
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

    /// Creates `rooms/<room>` if no room of that id exists; an existing key, whoever
    /// owns it, is left alone and answered with [`ClusterError::RoomExists`].
    pub async fn claim_room(&self, room: &str, entry: &RoomEntry) -> Result<(), ClusterError> {
        match self.create_room(room, entry).await? {
            None => Ok(()),
            Some(owner) => Err(ClusterError::RoomExists {
                room: room.to_owned(),
                owner,
            }),
        }
    }

    /// Writes `rooms/<room>` for a room this node runs: creates it if absent, updates it
    /// if this node owns it; another owner's key is left alone (an error).
    pub async fn put_room(&self, room: &str, entry: &RoomEntry) -> Result<(), ClusterError> {
        match self.create_room(room, entry).await? {
            None => Ok(()),
            Some(owner) if owner == entry.owner => self.update_room(room, entry).await,
            Some(owner) => Err(ClusterError::RoomExists {
                room: room.to_owned(),
                owner,
            }),
        }
    }

    /// Creates `rooms/<room>` if absent; else returns the owner of the existing key.
    async fn create_room(
        &self,
        room: &str,
        entry: &RoomEntry,
    ) -> Result<Option<String>, ClusterError> {
        let key = self.key(Key::Room(room.to_owned()));
        let value = json(entry);
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), value, Some(self.lease_opts()))])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.client().txn(txn).await.map_err(etcd_error)?;
        if resp.succeeded() {
            return Ok(None);
        }
        let owner = resp
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                etcd_client::TxnOpResponse::Get(get) => get.kvs().first().map(owner_of),
                _ => None,
            })
            .unwrap_or_default();
        Ok(Some(owner))
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
            None => Box::pin(self.put_room(room, entry)).await,
        }
    }

    /// Rewrites `rooms/<room>` as `entry` and `sessions/<p>` as `entry.owner` for each
    /// of `players`, under this node's lease, in one transaction: only if the room's
    /// key names `from` (unchanged since read) or is absent, and each session's key
    /// names `from`. Returns the revision written.
    pub async fn transfer(
        &self,
        room: &str,
        entry: &RoomEntry,
        from: &str,
        players: &[u64],
    ) -> Result<i64, ClusterError> {
        let key = self.key(Key::Room(room.to_owned()));
        let now = self
            .client()
            .get(key.clone(), None)
            .await
            .map_err(etcd_error)?;
        let mut when = match now.kvs().first() {
            Some(kv) if owner_of(kv) == from => vec![Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                kv.mod_revision(),
            )],
            Some(kv) => {
                return Err(ClusterError::MoveRaced {
                    room: room.to_owned(),
                    detail: format!("the room is on node {} now", owner_of(kv)),
                });
            }
            None => vec![Compare::create_revision(key.clone(), CompareOp::Equal, 0)],
        };
        let mut then = vec![TxnOp::put(key, json(entry), Some(self.lease_opts()))];
        for &player in players {
            let key = self.key(Key::Session(player));
            when.push(Compare::value(key.clone(), CompareOp::Equal, from));
            then.push(TxnOp::put(
                key,
                entry.owner.as_str(),
                Some(self.lease_opts()),
            ));
        }
        let resp = self
            .client()
            .txn(Txn::new().when(when).and_then(then))
            .await
            .map_err(etcd_error)?;
        if !resp.succeeded() {
            return Err(ClusterError::MoveRaced {
                room: room.to_owned(),
                detail: "a key changed between the read and the write".to_owned(),
            });
        }
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    /// `rooms/<room>`, read from etcd.
    pub async fn room(&self, room: &str) -> Result<Option<RoomEntry>, ClusterError> {
        let key = self.key(Key::Room(room.to_owned()));
        let resp = self.client().get(key, None).await.map_err(etcd_error)?;
        Ok(resp
            .kvs()
            .first()
            .and_then(|kv| serde_json::from_slice(kv.value()).ok()))
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

#[cfg(test)]
mod tests {
    #[test]
    fn a_prefix_ends_just_after_its_last_possible_key() {
        assert_eq!(super::prefix_end(b"/ludus/a/"), b"/ludus/a0");
        assert_eq!(super::prefix_end(b"a\xff"), b"b");
        assert_eq!(super::prefix_end(b"\xff\xff"), vec![0]);
    }
}
