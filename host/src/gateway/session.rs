//! A player's session: the rooms it is in, its numbered frame streams, and its seat kept
//! through a dropped connection for a grace period.
//!
//! Each session is a task. Connections attach to it (a new one, a resumed one, or one
//! that takes over from an older connection) and detach when they drop; while attached,
//! the session task reads and writes the socket itself, so an input reaches its room and
//! a room's frame reaches the socket with no other task in between. Frames that arrive
//! together are written with one flush. While detached
//! the session keeps numbering and buffering the room's frames; a connection that
//! resumes with the last frame number it saw gets every later frame again, and client
//! frames the session already processed are dropped by their number. When the grace
//! period runs out the player leaves its rooms (the game sees `disconnected`) and the
//! session ends.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::auth::Identity;
use super::connection::{Conn, Incoming};
use super::pb::{
    self, ClientFrame, ErrorCode, ServerFrame, client_frame::Body as In, server_frame::Body as Out,
};
use crate::cluster::{Cluster, ClusterError, ClusterEvent};
use crate::mailbox;
use crate::matchmaking::{MatchEvent, MatchSink, Matchmaker, check_request};
use crate::rooms::{
    CreateError, CreateRoom, LeaveReason, PlayerSink, RoomEvent, RoomHandle, Rooms, check_room_id,
};
use crate::rpc::relay::{Peers, RemoteRoom};

/// Close codes sent to a connection by its session.
pub mod close_code {
    pub const REPLACED: u16 = 4000;
    pub const RESUME_FAILED: u16 = 4001;
    pub const SESSION_ENDED: u16 = 4002;
    pub const TOO_SLOW: u16 = 4003;
    pub const SHUTTING_DOWN: u16 = 1001;
    pub const POLICY: u16 = 1008;
}

#[derive(Clone, Debug)]
pub struct SessionConfig {
    pub grace_period: Duration,
    /// Sent frames kept until the client acknowledges them, for replay after a resume.
    pub replay_frames: usize,
    /// Room events queued for the session before a room removes the player as too slow.
    pub player_queue: usize,
}

/// A connection's attach request; a refused one gets its socket back to say why.
type AttachReply = oneshot::Sender<Result<(), (Conn, String)>>;

enum Control {
    Attach {
        conn: Conn,
        last_seen: Option<u64>,
        reply: AttachReply,
    },
    /// The player logged in elsewhere in the cluster: end this session.
    Evict { reason: String },
    /// News of the player's match ticket.
    Match(MatchEvent),
    /// The server is shutting down. (A message rather than a cancellation token the
    /// loop would poll: every source the loop selects on costs CPU on every wake-up.)
    Shutdown,
}

#[derive(Clone)]
pub struct SessionHandle {
    id: Arc<str>,
    resume_token: Arc<str>,
    tx: mailbox::Sender<Control>,
}

impl SessionHandle {
    async fn attach(&self, conn: Conn, last_seen: Option<u64>) -> Result<(), AttachError> {
        let (reply, rx) = oneshot::channel();
        let request = Control::Attach {
            conn,
            last_seen,
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

enum AttachError {
    Gone(Option<Conn>),
    Refused(Conn, String),
}

/// Every live session of this node, by player.
pub struct Sessions {
    map: Mutex<HashMap<u64, SessionHandle>>,
    rooms: Rooms,
    cluster: Cluster,
    peers: Option<Arc<Peers>>,
    matchmaker: Matchmaker,
    cfg: SessionConfig,
    shutdown: CancellationToken,
}

impl Sessions {
    pub fn new(
        rooms: Rooms,
        cfg: SessionConfig,
        shutdown: CancellationToken,
        cluster: Cluster,
        peers: Option<Arc<Peers>>,
        matchmaker: Matchmaker,
    ) -> Arc<Self> {
        let mut events = cluster.subscribe();
        let sessions = Arc::new(Sessions {
            map: Mutex::new(HashMap::new()),
            rooms,
            cluster,
            peers,
            matchmaker,
            cfg,
            shutdown,
        });
        // Shutdown reaches each session as a control message.
        let (weak, token) = (Arc::downgrade(&sessions), sessions.shutdown.clone());
        tokio::spawn(async move {
            token.cancelled().await;
            let Some(sessions) = weak.upgrade() else {
                return;
            };
            let handles: Vec<SessionHandle> = sessions
                .map
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .cloned()
                .collect();
            for session in handles {
                let _ = session.tx.try_send(Control::Shutdown);
            }
        });
        // A login on another node ends the session here.
        let weak = Arc::downgrade(&sessions);
        tokio::spawn(async move {
            loop {
                let event = match events.recv().await {
                    Ok(event) => event,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let Some(sessions) = weak.upgrade() else {
                    return;
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

    fn get(&self, player: u64) -> Option<SessionHandle> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&player)
            .cloned()
    }

    pub fn count(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
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
    ) -> Result<(), (Option<Conn>, String)> {
        let existing = self.get(who.player_id);
        let (session, last_seen, gone) = match (resume, existing) {
            (Some((token, last_seen)), Some(session)) => {
                if *session.resume_token != token {
                    let reason = "the resume token does not belong to this player's session";
                    return Err((Some(conn), reason.into()));
                }
                (
                    session,
                    Some(last_seen),
                    "the session has ended; connect without resume",
                )
            }
            (Some(_), None) => {
                let reason =
                    "no session to resume: it expired or never existed; connect without resume";
                return Err((Some(conn), reason.into()));
            }
            (None, Some(session)) => (
                session,
                None,
                "the session ended while connecting; try again",
            ),
            (None, None) => {
                if let Err(e) = self.cluster.claim_session(who.player_id).await {
                    return Err((Some(conn), e.to_string()));
                }
                (self.start(who), None, "the new session could not start")
            }
        };
        match session.attach(conn, last_seen).await {
            Ok(()) => Ok(()),
            Err(AttachError::Refused(conn, reason)) => Err((Some(conn), reason)),
            Err(AttachError::Gone(conn)) => Err((conn, gone.into())),
        }
    }

    fn start(self: &Arc<Self>, who: &Identity) -> SessionHandle {
        // Control messages are few and small: their queue is not bounded.
        let (tx, ctl) = mailbox::channel(usize::MAX);
        let (sink, events) = mailbox::channel(self.cfg.player_queue.max(1));
        // Match outcomes come on the control channel: one channel fewer for the
        // session loop to poll on every wake-up.
        let to_session = tx.clone();
        let match_sink: MatchSink = Arc::new(move |event| {
            let _ = to_session.try_send(Control::Match(event));
        });
        let handle = SessionHandle {
            id: format!("{:016x}", fastrand::u64(..)).into(),
            resume_token: format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..)).into(),
            tx,
        };
        let session = Session {
            who: who.clone(),
            id: handle.id.clone(),
            resume_token: handle.resume_token.clone(),
            rooms: self.rooms.clone(),
            cluster: self.cluster.clone(),
            joined: HashMap::new(),
            peers: self.peers.clone(),
            matchmaker: self.matchmaker.clone(),
            ticket: None,
            match_sink,
            sink,
            events,
            conn: None,
            out_seq: 0,
            in_seq: 0,
            unacked: VecDeque::new(),
            expires: None,
            cfg: self.cfg.clone(),
        };
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(who.player_id, handle.clone());
        if self.shutdown.is_cancelled() {
            // Started after the shutdown notice went out (or while it did).
            let _ = handle.tx.try_send(Control::Shutdown);
        }
        let sessions = self.clone();
        tokio::spawn(async move {
            let (player, id) = (session.who.player_id, session.id.clone());
            session.run(ctl).await;
            let ended = {
                let mut map = sessions.map.lock().unwrap_or_else(|e| e.into_inner());
                let ended = map.get(&player).is_some_and(|h| h.id == id);
                if ended {
                    map.remove(&player);
                }
                ended
            };
            if ended {
                sessions.cluster.release_session(player).await;
            }
        });
        handle
    }
}

struct Session {
    who: Identity,
    id: Arc<str>,
    resume_token: Arc<str>,
    rooms: Rooms,
    cluster: Cluster,
    joined: HashMap<String, Joined>,
    /// Links to other nodes, for rooms that live there (cluster only).
    peers: Option<Arc<Peers>>,
    matchmaker: Matchmaker,
    /// The player's match ticket, while it waits.
    ticket: Option<String>,
    /// The matchmaker tells this session about its ticket here (as `Control::Match`).
    match_sink: MatchSink,
    /// Rooms deliver this player's events here; `events` is its other end.
    sink: PlayerSink,
    events: mailbox::Receiver<RoomEvent>,
    /// The attached connection, read and written by this task.
    conn: Option<Conn>,
    /// Number of the last frame sent to the client.
    out_seq: u64,
    /// Number of the last client frame processed.
    in_seq: u64,
    /// Frames sent but not yet acknowledged, oldest first.
    unacked: VecDeque<Arc<ServerFrame>>,
    /// When the grace period of a detached session ends.
    expires: Option<Instant>,
    cfg: SessionConfig,
}

fn error(code: ErrorCode, message: impl Into<String>, in_reply_to: u64) -> Out {
    Out::Error(pb::Error {
        code: code as i32,
        message: message.into(),
        in_reply_to,
    })
}

impl Session {
    async fn run(mut self, mut ctl: mailbox::Receiver<Control>) {
        let mut batch = Vec::new();
        loop {
            let expires = self.expires;
            let attached = self.conn.is_some();
            let room_for_events = self.room_for_events();
            tokio::select! {
                biased;
                command = ctl.recv() => match command {
                    Some(Control::Attach { conn, last_seen, reply }) => {
                        let _ = reply.send(self.attach(conn, last_seen));
                    }
                    Some(Control::Match(event)) => self.match_event(event),
                    Some(Control::Shutdown) => {
                        self.close_conn(close_code::SHUTTING_DOWN, "the server is shutting down");
                        break;
                    }
                    Some(Control::Evict { reason }) => {
                        tracing::info!(player = self.who.player_id, "{reason}");
                        self.close_conn(close_code::REPLACED, &reason);
                        break;
                    }
                    None => break,
                },
                incoming = next_incoming(&mut self.conn), if attached => match incoming {
                    Incoming::Frame(frame) => self.client_frame(frame).await,
                    Incoming::Rejected => {}
                    Incoming::Abusive => {
                        self.close_conn(close_code::POLICY, "too many bad or excess frames");
                        self.detach();
                    }
                    Incoming::Goodbye => {
                        tracing::debug!(player = self.who.player_id, "session ended by the client");
                        self.conn = None;
                        break;
                    }
                    Incoming::Gone => {
                        self.conn = None;
                        self.detach();
                    }
                },
                // Everything queued goes out with the same flush (while detached, only
                // what the replay buffer has room for).
                _ = self.events.recv_many(&mut batch, room_for_events), if room_for_events > 0 => {
                    for event in batch.drain(..) {
                        self.room_event(event);
                    }
                }
                _ = sleep_until(expires), if expires.is_some() => {
                    tracing::info!(player = self.who.player_id, "session expired after its grace period");
                    break;
                }
            }
            if let Some(conn) = &mut self.conn
                && !conn.flush().await
            {
                // The connection is gone or cannot keep up: drop it; the client may
                // resume and get the frames again.
                self.close_conn(close_code::TOO_SLOW, "the connection fell too far behind");
                self.detach();
            }
        }
        for (_, room) in self.joined.drain() {
            room.leave(self.who.player_id, LeaveReason::Disconnected);
        }
        if let Some(ticket) = self.ticket.take() {
            self.matchmaker.cancel(&ticket);
        }
    }

    fn match_event(&mut self, event: MatchEvent) {
        let body = match event {
            MatchEvent::Found {
                ticket,
                room,
                game,
                mode,
                players,
            } => {
                if self.ticket.as_deref() != Some(ticket.as_str()) {
                    return; // cancelled meanwhile
                }
                Out::MatchFound(pb::MatchFound {
                    ticket_id: ticket,
                    room_id: room,
                    game,
                    mode,
                    players,
                })
            }
            MatchEvent::Dropped { ticket, reason } => {
                if self.ticket.as_deref() != Some(ticket.as_str()) {
                    return;
                }
                Out::MatchCancelled(pb::MatchCancelled {
                    ticket_id: ticket,
                    reason,
                })
            }
        };
        self.ticket = None;
        self.send(body);
    }

    fn find_match(&mut self, find: pb::FindMatch, seq: u64) {
        if let Some(ticket) = &self.ticket {
            let e = format!("already looking for a match (ticket {ticket}); cancel it first");
            return self.send(error(ErrorCode::Refused, e, seq));
        }
        if !self.rooms.has_game(&find.game) {
            let e = CreateError::UnknownGame(find.game).to_string();
            return self.send(error(ErrorCode::NoSuchGame, e, seq));
        }
        if let Err(e) = check_request(&find.mode, &find.properties) {
            return self.send(error(ErrorCode::Malformed, e, seq));
        }
        let ticket = self.matchmaker.submit(
            self.who.player_id,
            &find.game,
            &find.mode,
            find.properties,
            self.match_sink.clone(),
        );
        self.ticket = Some(ticket.clone());
        self.send(Out::MatchQueued(pb::MatchQueued {
            ticket_id: ticket,
            game: find.game,
            mode: find.mode,
        }));
    }

    fn cancel_match(&mut self, seq: u64) {
        match self.ticket.take() {
            Some(ticket) => {
                self.matchmaker.cancel(&ticket);
                self.send(Out::MatchCancelled(pb::MatchCancelled {
                    ticket_id: ticket,
                    reason: "cancelled by the player".into(),
                }));
            }
            None => self.send(error(ErrorCode::NoTicket, "no match ticket to cancel", seq)),
        }
    }

    /// How many room events the session may take now: any number while a connection
    /// is attached, else as many as the replay buffer has room for; the rest wait in
    /// the player's queue.
    fn room_for_events(&self) -> usize {
        if self.conn.is_some() {
            usize::MAX
        } else {
            self.cfg.replay_frames.saturating_sub(self.unacked.len())
        }
    }

    // A refusal hands the socket back (moved once per connect; its size does not matter).
    #[allow(clippy::result_large_err)]
    fn attach(&mut self, mut conn: Conn, last_seen: Option<u64>) -> Result<(), (Conn, String)> {
        let replay = match last_seen {
            Some(n) => {
                if n > self.out_seq {
                    let reason = format!(
                        "last_seen {n} is ahead of the server, which sent up to {}",
                        self.out_seq
                    );
                    return Err((conn, reason));
                }
                self.acknowledged(n);
                let first_held = self.unacked.front().map_or(self.out_seq + 1, |f| f.seq);
                if first_held > n + 1 {
                    let reason = format!(
                        "frames {}..{} are no longer held for replay; connect without resume",
                        n + 1,
                        first_held - 1
                    );
                    return Err((conn, reason));
                }
                true
            }
            None => false,
        };
        self.close_conn(
            close_code::REPLACED,
            "another connection took over this session",
        );
        let welcome = |resumed| {
            Out::Welcome(pb::Welcome {
                player_id: self.who.player_id,
                session_id: self.id.to_string(),
                resume_token: self.resume_token.to_string(),
                resumed,
            })
        };
        self.expires = None;
        if replay {
            let frame = Arc::new(ServerFrame {
                seq: 0,
                ack: self.in_seq,
                body: Some(welcome(true)),
            });
            conn.queue(&frame);
            for frame in &self.unacked {
                conn.queue(frame);
            }
            self.conn = Some(conn);
        } else {
            // A fresh client: it numbers its frames from 1 and cannot resume older ones.
            self.in_seq = 0;
            self.unacked.clear();
            self.conn = Some(conn);
            self.send(welcome(false));
        }
        Ok(())
    }

    fn detach(&mut self) {
        self.conn = None;
        self.expires = Some(Instant::now() + self.cfg.grace_period);
    }

    fn close_conn(&mut self, code: u16, reason: &str) {
        if let Some(old) = self.conn.take() {
            old.close(code, reason);
        }
    }

    /// Drops frames the client has seen.
    fn acknowledged(&mut self, ack: u64) {
        while self.unacked.front().is_some_and(|f| f.seq <= ack) {
            self.unacked.pop_front();
        }
    }

    /// Numbers a frame, keeps it for replay, and sends it if a connection is attached.
    fn send(&mut self, body: Out) {
        self.out_seq += 1;
        let frame = Arc::new(ServerFrame {
            seq: self.out_seq,
            ack: self.in_seq,
            body: Some(body),
        });
        self.unacked.push_back(frame.clone());
        if self.unacked.len() > self.cfg.replay_frames {
            self.unacked.pop_front();
        }
        if let Some(conn) = &mut self.conn {
            conn.queue(&frame);
        }
    }

    /// Sends outside the numbered stream (pongs).
    fn send_unnumbered(&mut self, body: Out) {
        let frame = ServerFrame {
            seq: 0,
            ack: self.in_seq,
            body: Some(body),
        };
        if let Some(conn) = &mut self.conn {
            conn.queue(&frame);
        }
    }

    fn room_event(&mut self, event: RoomEvent) {
        match event {
            RoomEvent::Message { room, bytes } => self.send(Out::Message(pb::RoomMessage {
                room_id: room.to_string(),
                payload: bytes,
            })),
            RoomEvent::Kicked { room, reason } => {
                self.joined.remove(&*room);
                self.send(Out::Kicked(pb::Kicked {
                    room_id: room.to_string(),
                    reason,
                }));
            }
            RoomEvent::Closed { room, reason } => {
                self.joined.remove(&*room);
                self.send(Out::Closed(pb::Closed {
                    room_id: room.to_string(),
                    reason,
                }));
            }
        }
    }

    async fn client_frame(&mut self, frame: ClientFrame) {
        self.acknowledged(frame.ack);
        if frame.seq != 0 {
            if frame.seq <= self.in_seq {
                return; // already processed: a resend after a resume
            }
            self.in_seq = frame.seq;
        }
        let seq = frame.seq;
        match frame.body {
            None => {}
            Some(In::Ping(ping)) => self.send_unnumbered(Out::Pong(pb::Pong { nonce: ping.nonce })),
            Some(In::Message(msg)) => match self.joined.get(&msg.room_id) {
                Some(room) => room.message(self.who.player_id, msg.payload),
                None => self.send(error(
                    ErrorCode::NotInRoom,
                    format!("not in room `{}`", msg.room_id),
                    seq,
                )),
            },
            Some(In::Join(join)) => {
                let result = match self.rooms.get(&join.room_id) {
                    Some(room) => self.join(room).await,
                    None => match self.join_remote(&join.room_id).await {
                        Some(result) => result,
                        None => Err(error(
                            ErrorCode::NoSuchRoom,
                            format!("no room `{}`", join.room_id),
                            seq,
                        )),
                    },
                };
                self.reply(result, seq);
            }
            Some(In::Create(create)) => {
                let result = self.create(create).await;
                self.reply(result.map_err(|e| error(e.0, e.1, seq)), seq);
            }
            Some(In::FindMatch(find)) => self.find_match(find, seq),
            Some(In::CancelMatch(_)) => self.cancel_match(seq),
            Some(In::Leave(leave)) => match self.joined.remove(&leave.room_id) {
                Some(room) => {
                    room.leave(self.who.player_id, LeaveReason::Left);
                    self.send(Out::Left(pb::Left {
                        room_id: leave.room_id,
                    }));
                }
                None => self.send(error(
                    ErrorCode::NotInRoom,
                    format!("not in room `{}`", leave.room_id),
                    seq,
                )),
            },
        }
    }

    fn reply(&mut self, result: Result<Out, Out>, seq: u64) {
        let body = match result {
            Ok(body) => body,
            Err(Out::Error(mut e)) => {
                e.in_reply_to = seq;
                Out::Error(e)
            }
            Err(other) => other,
        };
        self.send(body);
    }

    /// Creates a room (claimed in the cluster first, so its id is unique cluster-wide)
    /// and joins it.
    async fn create(&mut self, create: pb::CreateRoom) -> Result<Out, (ErrorCode, String)> {
        let refused = |e: String| (ErrorCode::Refused, e);
        if !self.rooms.has_game(&create.game) {
            let e = CreateError::UnknownGame(create.game);
            return Err((ErrorCode::NoSuchGame, e.to_string()));
        }
        let id = match create.room_id {
            id if id.is_empty() => format!("{:016x}", fastrand::u64(..)),
            id => id,
        };
        check_room_id(&id).map_err(|e| refused(e.to_string()))?;
        match self.cluster.claim_room(&id, &create.game).await {
            Ok(()) => {}
            Err(e @ ClusterError::RoomExists { .. }) => {
                let e = CreateError::DuplicateId(id).to_string() + &format!(" ({e})");
                return Err(refused(e));
            }
            Err(e) => return Err(refused(e.to_string())),
        }
        let req = CreateRoom {
            game: create.game,
            id: Some(id.clone()),
            config: Some(create.config).filter(|c| !c.is_empty()),
            seed: None,
        };
        match self.rooms.create(req).await {
            Ok(room) => self.join(room).await.map_err(|e| match e {
                Out::Error(e) => (ErrorCode::Refused, e.message),
                _ => refused("could not join the new room".into()),
            }),
            Err(e) => {
                self.cluster.release_room(&id).await;
                let code = match e {
                    CreateError::UnknownGame(_) => ErrorCode::NoSuchGame,
                    _ => ErrorCode::Refused,
                };
                Err((code, e.to_string()))
            }
        }
    }

    /// Joins a room another node of the cluster owns, through the link to that node;
    /// `None` if no node has a room of that id.
    async fn join_remote(&mut self, id: &str) -> Option<Result<Out, Out>> {
        let peers = self.peers.clone()?;
        let owner = self.cluster.routing().rooms.get(id)?.owner.clone();
        if owner == self.cluster.node_id() {
            return None; // ours, but not open (yet, or any more)
        }
        if self.joined.contains_key(id) {
            let e = format!("already in room `{id}`");
            return Some(Err(error(ErrorCode::Refused, e, 0)));
        }
        let (player, name) = (self.who.player_id, self.who.name.clone());
        Some(
            match peers
                .join(&owner, player, &name, id, self.sink.clone())
                .await
            {
                Ok((remote, joined)) => {
                    self.joined.insert(id.to_owned(), Joined::Remote(remote));
                    Ok(Out::Joined(pb::Joined {
                        room_id: id.to_owned(),
                        game: joined.game,
                        version: joined.version,
                    }))
                }
                Err(e) => Err(error(ErrorCode::Refused, e, 0)),
            },
        )
    }

    async fn join(&mut self, room: RoomHandle) -> Result<Out, Out> {
        let id = room.id().to_owned();
        if self.joined.contains_key(&id) {
            return Err(error(
                ErrorCode::Refused,
                format!("already in room `{id}`"),
                0,
            ));
        }
        match room
            .join(self.who.player_id, &self.who.name, self.sink.clone())
            .await
        {
            Ok(()) => {
                let info = room.info();
                self.joined.insert(id.clone(), Joined::Local(room));
                Ok(Out::Joined(pb::Joined {
                    room_id: id,
                    game: info.game,
                    version: info.version,
                }))
            }
            Err(e) => Err(error(ErrorCode::Refused, e.to_string(), 0)),
        }
    }
}

/// A room the player is in: here, or on another node.
enum Joined {
    Local(RoomHandle),
    Remote(RemoteRoom),
}

impl Joined {
    fn message(&self, player: u64, payload: bytes::Bytes) {
        match self {
            Joined::Local(room) => room.message(player, payload),
            Joined::Remote(room) => room.message(player, payload),
        }
    }

    fn leave(&self, player: u64, reason: LeaveReason) {
        match self {
            Joined::Local(room) => room.leave(player, reason),
            Joined::Remote(room) => room.leave(player),
        }
    }
}

async fn next_incoming(conn: &mut Option<Conn>) -> Incoming {
    match conn {
        Some(conn) => conn.next().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
