//! Every live session of this node, by player: a new connection starts a session,
//! resumes one, or takes one over from an older connection. A login on another node of
//! the cluster ends the session here, and the server's shutdown reaches each session
//! as a control message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, oneshot};
use tokio_util::sync::CancellationToken;

use super::auth::Identity;
use super::client_error::ClientError;
use super::connection::Conn;
use super::pb::ErrorCode;
use super::session::{Control, Services, Session, SessionConfig};
use crate::cluster::{Cluster, ClusterEvent};
use crate::lock::Recover;
use crate::mailbox;
use crate::matchmaking::{MatchSink, Matchmaker};
use crate::rooms::{Checkpoints, PlayerSink, RoomHandle, Rooms};
use crate::rpc::relay::Peers;
use crate::storage::{SaveKey, Saved, SavedSession};

/// A connection's attach request; a refused one gets its socket back to say why.
pub(super) type AttachReply = oneshot::Sender<Result<(), (Conn, String)>>;

#[derive(Clone)]
pub(super) struct SessionHandle {
    id: Arc<str>,
    /// SHA-256 of the resume token (a session brought back from storage knows only it).
    token_sha256: Arc<Mutex<[u8; 32]>>,
    tx: mailbox::Sender<Control>,
    /// Where rooms deliver the player's events.
    sink: PlayerSink,
}

pub(super) fn token_hash(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

enum AttachError {
    Gone(Option<Conn>),
    Refused(Conn, String),
}

impl SessionHandle {
    async fn attach(&self, conn: Conn, resume: Option<(Arc<str>, u64)>) -> Result<(), AttachError> {
        let (reply, rx) = oneshot::channel();
        let request = Control::Attach {
            conn,
            resume,
            reply,
        };
        if let Err(
            mailbox::TrySendError::Closed(Control::Attach { conn, .. })
            | mailbox::TrySendError::Full(Control::Attach { conn, .. }),
        ) = self.tx.try_send(request)
        {
            return Err(AttachError::Gone(Some(conn)));
        }
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err((conn, reason))) => Err(AttachError::Refused(conn, reason)),
            Err(_) => Err(AttachError::Gone(None)),
        }
    }
}

/// A session on its way to another node with its room (see [`Sessions::hand`]).
#[derive(Clone, Debug)]
pub struct SessionMove {
    pub player_id: u64,
    pub name: String,
    pub session_id: String,
    pub token_sha256: [u8; 32],
    /// The last frame numbered, and the last client frame processed.
    pub out_seq: u64,
    pub in_seq: u64,
    /// Frames sent but not acknowledged, oldest first.
    pub unacked: Vec<Arc<super::pb::ServerFrame>>,
}

/// Every live session of this node, by player.
pub struct Sessions {
    map: Mutex<HashMap<u64, SessionHandle>>,
    services: Services,
    shutdown: CancellationToken,
    /// Where session records go, so sessions outlive the node with its rooms.
    persist: Option<Checkpoints>,
}

impl Sessions {
    // The node's parts, wired once by `Gateway::new`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        rooms: Rooms,
        cfg: SessionConfig,
        shutdown: CancellationToken,
        cluster: Cluster,
        peers: Option<Arc<Peers>>,
        matchmaker: Matchmaker,
        persist: Option<Checkpoints>,
        storage: crate::storage::Storage,
    ) -> Arc<Self> {
        let mut events = cluster.subscribe();
        let sessions = Arc::new(Sessions {
            map: Mutex::new(HashMap::new()),
            services: Services {
                rooms,
                cluster,
                peers,
                matchmaker,
                cfg,
                kept: persist.is_some(),
                storage,
            },
            shutdown,
            persist,
        });
        // Shutdown reaches each session as a control message.
        let (weak, token) = (Arc::downgrade(&sessions), sessions.shutdown.clone());
        tokio::spawn(async move {
            token.cancelled().await;
            let Some(sessions) = weak.upgrade() else {
                return;
            };
            let handles: Vec<SessionHandle> =
                sessions.map.lock().recover().values().cloned().collect();
            for session in handles {
                let _ = session.tx.try_send(Control::Shutdown);
            }
        });
        // A login on another node ends the session here.
        let weak = Arc::downgrade(&sessions);
        tokio::spawn(async move {
            loop {
                let event = events.recv().await;
                let Some(sessions) = weak.upgrade() else {
                    return;
                };
                let event = match event {
                    Ok(event) => event,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        // Events were dropped: compare every session with the routing
                        // table (which the watch kept whole) instead of missing one.
                        tracing::warn!(missed, "cluster events overflowed; resyncing sessions");
                        sessions.resync();
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let ClusterEvent::SessionTaken { player, node } = event else {
                    continue;
                };
                if let Some(session) = sessions.get(player) {
                    let reason = format!("logged in on another node ({node})");
                    let _ = session.tx.try_send(Control::Evict { reason });
                }
            }
        });
        sessions
    }

    /// Ends every session of this node that the cluster says another node holds.
    fn resync(&self) {
        let cluster = &self.services.cluster;
        let handles: Vec<(u64, SessionHandle)> = self
            .map
            .lock()
            .recover()
            .iter()
            .map(|(p, h)| (*p, h.clone()))
            .collect();
        for (player, session) in handles {
            if let Some(node) = cluster.session_owner(player)
                && node != cluster.node_id()
            {
                let reason = format!("logged in on another node ({node})");
                let _ = session.tx.try_send(Control::Evict { reason });
            }
        }
    }

    fn get(&self, player: u64) -> Option<SessionHandle> {
        self.map.lock().recover().get(&player).cloned()
    }

    pub fn count(&self) -> usize {
        self.map.lock().recover().len()
    }

    /// Attaches a connection to the player's session, which owns it from then on:
    /// resumes the session (`resume` = resume token and last server frame seen), takes
    /// it over from an older connection, or starts a new one. A refusal says why and
    /// returns the connection (if it still has it) so the caller can tell the client.
    pub async fn connect(
        self: &Arc<Self>,
        who: &Identity,
        resume: Option<(String, u64)>,
        conn: Conn,
    ) -> Result<(), (Option<Conn>, ClientError)> {
        let resume_failed = |reason: &str| ClientError::new(ErrorCode::ResumeFailed, reason);
        let existing = self.get(who.player_id);
        let (session, resume, gone) = match (resume, existing) {
            (Some((token, last_seen)), Some(session)) => {
                if *session.token_sha256.lock().recover() != token_hash(&token) {
                    let reason = "the resume token does not belong to this player's session";
                    return Err((Some(conn), resume_failed(reason)));
                }
                (
                    session,
                    Some((Arc::from(token), last_seen)),
                    "the session has ended; connect without resume",
                )
            }
            (Some(_), None) => {
                // Its node died and another took over its rooms, and the session with
                // them: the client is told where.
                let cluster = &self.services.cluster;
                if let Some(node) = cluster.session_owner(who.player_id)
                    && node != cluster.node_id()
                    && let Some(info) = cluster.node(&node)
                {
                    let mut moved = ClientError::new(
                        ErrorCode::Moved,
                        format!(
                            "the session is on node {node} now: resume at {}",
                            info.gateway
                        ),
                    );
                    moved.address = info.gateway;
                    return Err((Some(conn), moved));
                }
                let reason =
                    "no session to resume: it expired or never existed; connect without resume";
                return Err((Some(conn), resume_failed(reason)));
            }
            (None, Some(session)) => (
                session,
                None,
                "the session ended while connecting; try again",
            ),
            (None, None) => {
                if let Err(e) = self.services.cluster.claim_session(who.player_id).await {
                    return Err((Some(conn), ClientError::from(e)));
                }
                (self.start(who), None, "the new session could not start")
            }
        };
        match session.attach(conn, resume).await {
            Ok(()) => Ok(()),
            Err(AttachError::Refused(conn, reason)) => Err((Some(conn), resume_failed(&reason))),
            Err(AttachError::Gone(conn)) => Err((conn, resume_failed(gone))),
        }
    }

    fn start(self: &Arc<Self>, who: &Identity) -> SessionHandle {
        let token: Arc<str> = crate::csprng::hex::<32>().into();
        let (handle, session) = self.make(
            who,
            crate::csprng::hex::<8>().into(),
            token_hash(&token),
            Some(token),
        );
        self.spawn(who, handle.clone(), session);
        handle
    }

    /// A session's handle and task state (not started).
    fn make(
        &self,
        who: &Identity,
        id: Arc<str>,
        token_sha256: [u8; 32],
        token: Option<Arc<str>>,
    ) -> (SessionHandle, Session) {
        // Control messages are few and small: their queue is not bounded.
        let (tx, ctl) = mailbox::channel(usize::MAX);
        // Match outcomes come on the control channel: one channel fewer for the
        // session loop to poll on every wake-up.
        let to_session = tx.clone();
        let match_sink: MatchSink = Arc::new(move |event| {
            let _ = to_session.try_send(Control::Match(event));
        });
        let token_sha256 = Arc::new(Mutex::new(token_sha256));
        let session = Session::new(
            who.clone(),
            id.clone(),
            token,
            token_sha256.clone(),
            self.services.clone(),
            match_sink,
            (tx.clone(), ctl),
        );
        let handle = SessionHandle {
            id,
            token_sha256,
            tx,
            sink: session.sink.clone(),
        };
        (handle, session)
    }

    /// Brings back the sessions this node held when it stopped or died, each detached
    /// with a fresh grace period: a player who resumes with their token is back in
    /// their rooms (see [`Sessions::rejoin`]). A session another node took meanwhile is
    /// dropped. Returns where each player's room events go.
    pub async fn restore(
        self: &Arc<Self>,
        saved: Vec<crate::storage::SavedSession>,
    ) -> HashMap<u64, PlayerSink> {
        let mut sinks = HashMap::new();
        for s in saved {
            // Already here (restored with a room taken over earlier): the same session.
            if let Some(session) = self.get(s.player_id) {
                sinks.insert(s.player_id, session.sink.clone());
                continue;
            }
            let mut token_sha256 = [0u8; 32];
            if hex::decode_to_slice(&s.token_sha256, &mut token_sha256).is_err() {
                tracing::warn!(player = s.player_id, "a saved session is damaged; dropped");
                continue;
            }
            if let Err(e) = self.services.cluster.claim_session(s.player_id).await {
                tracing::info!(
                    player = s.player_id,
                    "a saved session was not restored: {e}"
                );
                continue;
            }
            let who = Identity {
                player_id: s.player_id,
                name: s.name.clone(),
            };
            let (handle, mut session) = self.make(&who, s.session_id.into(), token_sha256, None);
            session.restored(self.services.cfg.grace_period);
            sinks.insert(s.player_id, session.sink.clone());
            self.spawn(&who, handle, session);
        }
        if !sinks.is_empty() {
            tracing::info!(
                sessions = sinks.len(),
                "sessions restored; waiting for their players to resume"
            );
        }
        sinks
    }

    /// Puts the rooms brought back for a restored session in it.
    pub fn rejoin(&self, player: u64, rooms: Vec<RoomHandle>) {
        if let Some(session) = self.get(player) {
            let _ = session.tx.try_send(Control::Rejoin(rooms));
        }
    }

    /// Stops reading the client frames of these players' sessions (a room of theirs is
    /// about to move); returns the players whose session is here.
    pub async fn freeze(&self, players: &[u64]) -> Vec<u64> {
        let mut frozen = Vec::new();
        for &player in players {
            let Some(session) = self.get(player) else {
                continue;
            };
            let (reply, rx) = oneshot::channel();
            if session.tx.try_send(Control::Freeze(reply)).is_ok() && rx.await.is_ok() {
                frozen.push(player);
            }
        }
        frozen
    }

    /// What each frozen session is, to go on at another node (after its room stopped:
    /// the frames the room sent last are numbered first). A session that ended
    /// meanwhile is left out.
    pub async fn hand(&self, players: &[u64]) -> Vec<SessionMove> {
        let mut moves = Vec::new();
        for &player in players {
            let Some(session) = self.get(player) else {
                continue;
            };
            let (reply, rx) = oneshot::channel();
            if session.tx.try_send(Control::Hand(reply)).is_ok()
                && let Ok(moved) = rx.await
            {
                moves.push(moved);
            }
        }
        moves
    }

    /// Where the room events of these players' sessions go.
    pub fn sinks(&self, players: &[u64]) -> HashMap<u64, PlayerSink> {
        players
            .iter()
            .filter_map(|p| self.get(*p).map(|s| (*p, s.sink.clone())))
            .collect()
    }

    /// The move failed: these sessions read their clients again.
    pub fn thaw(&self, players: &[u64]) {
        for &player in players {
            if let Some(session) = self.get(player) {
                let _ = session.tx.try_send(Control::Thaw);
            }
        }
    }

    /// Node `node` (its gateway at `address`) has these sessions now, with `rooms`:
    /// each client is told where to resume, and its session ends here.
    pub fn moved(&self, players: &[u64], node: &str, address: &str, rooms: &[String]) {
        for &player in players {
            if let Some(session) = self.get(player) {
                let _ = session.tx.try_send(Control::Moved {
                    node: node.to_owned(),
                    address: address.to_owned(),
                    rooms: rooms.to_vec(),
                });
            }
        }
    }

    /// Starts the sessions that moved here with a room, detached (their clients
    /// resume here), before the cluster says they are here: the caller switches them
    /// over in etcd (see `Cluster::transfer`). Returns where each player's room events
    /// go. A player who already has a session here keeps it.
    pub fn adopt(self: &Arc<Self>, moves: Vec<SessionMove>) -> HashMap<u64, PlayerSink> {
        let mut sinks = HashMap::new();
        for m in moves {
            if let Some(session) = self.get(m.player_id) {
                sinks.insert(m.player_id, session.sink.clone());
                continue;
            }
            let who = Identity {
                player_id: m.player_id,
                name: m.name.clone(),
            };
            let (handle, mut session) = self.make(&who, m.session_id.into(), m.token_sha256, None);
            let unacked = m.unacked.iter().map(|f| (**f).clone()).collect();
            session.moved_in(self.services.cfg.grace_period, m.out_seq, m.in_seq, unacked);
            sinks.insert(m.player_id, session.sink.clone());
            self.spawn(&who, handle, session);
        }
        sinks
    }

    /// Ends sessions started by [`Sessions::adopt`] whose room did not come after all.
    pub fn drop_adopted(&self, players: &[u64]) {
        for &player in players {
            if let Some(session) = self.get(player) {
                let _ = session.tx.try_send(Control::Drop);
            }
        }
    }

    /// Starts a session's task; its record goes to storage (if kept) until it ends.
    fn spawn(self: &Arc<Self>, who: &Identity, handle: SessionHandle, session: Session) {
        if let Some(persist) = &self.persist {
            persist.saver().put(
                SaveKey::Session(who.player_id),
                Saved::Session(SavedSession {
                    player_id: who.player_id,
                    node: persist.node().to_owned(),
                    session_id: handle.id.to_string(),
                    token_sha256: hex::encode(*handle.token_sha256.lock().recover()),
                    name: who.name.clone(),
                }),
                None,
            );
        }
        self.map
            .lock()
            .recover()
            .insert(who.player_id, handle.clone());
        if self.shutdown.is_cancelled() {
            // Started after the shutdown notice went out (or while it did).
            let _ = handle.tx.try_send(Control::Shutdown);
        }
        let sessions = self.clone();
        let (player, id) = (who.player_id, handle.id.clone());
        // Every log line of the session names it and its player.
        let span = tracing::info_span!("session", id = &*id, player);
        // The task stores its future inline, and an idle node holds one per player: it
        // takes the session's future as made (not the session, which would be kept
        // beside it), and runs the rare etcd call at its end boxed.
        let run = tracing::Instrument::instrument(session.run(), span);
        tokio::spawn(async move {
            let kept = run.await;
            let ended = {
                let mut map = sessions.map.lock().recover();
                let ended = map.get(&player).is_some_and(|h| h.id == id);
                if ended {
                    map.remove(&player);
                }
                ended
            };
            if !kept && let Some(persist) = &sessions.persist {
                persist.saver().put(
                    SaveKey::Session(player),
                    Saved::SessionGone {
                        player_id: player,
                        session_id: id.to_string(),
                    },
                    None,
                );
            }
            if ended {
                Box::pin(sessions.services.cluster.release_session(player)).await;
            }
        });
    }
}
