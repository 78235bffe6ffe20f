//! A player's session: the rooms it is in, its numbered frame streams (`replay.rs`),
//! and its seat kept through a dropped connection for a grace period.
//!
//! Each session is a task (started by `sessions.rs`). Connections attach to it (a new
//! one, a resumed one, or one that takes over from an older connection) and detach when
//! they drop; while attached, the session task reads and writes the socket itself, so an
//! input reaches its room and a room's frame reaches the socket with no other task in
//! between. Frames that arrive together are written with one flush. While detached the
//! session keeps numbering and buffering the room's frames; a connection that resumes
//! with the last frame number it saw gets every later frame again, and client frames
//! the session already processed are dropped by their number. When the grace period runs
//! out the player leaves its rooms (the game sees `disconnected`) and the session ends.
//! What each client request does is in `handlers.rs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::auth::Identity;
use super::client_error::close_code;
use super::connection::{Conn, Incoming};
use super::pb::{self, server_frame::Body as Out};
use super::replay::Replay;
use super::sessions::AttachReply;
use crate::cluster::Cluster;
use crate::lock::Recover;
use crate::mailbox;
use crate::matchmaking::{MatchEvent, MatchSink, Matchmaker};
use crate::rooms::{LeaveReason, PlayerSink, RoomEvent, RoomHandle, Rooms};
use crate::rpc::relay::{Peers, RemoteRoom};

#[derive(Clone, Debug)]
pub struct SessionConfig {
    pub grace_period: Duration,
    /// Sent frames kept until the client acknowledges them, for replay after a resume.
    pub replay_frames: usize,
    /// Room events queued for the session before a room removes the player as too slow.
    pub player_queue: usize,
}

/// What every session of the node uses. Cheap to clone.
#[derive(Clone)]
pub(super) struct Services {
    pub rooms: Rooms,
    pub cluster: Cluster,
    /// Links to other nodes, for rooms that live there (cluster only).
    pub peers: Option<Arc<Peers>>,
    pub matchmaker: Matchmaker,
    pub cfg: SessionConfig,
    /// Sessions are kept in storage: one stopped by the node's shutdown keeps its rooms
    /// (they are restored with it) instead of leaving them.
    pub kept: bool,
    /// Where rooms keep their checkpoints (a room whose node is lost comes back only
    /// from one).
    pub storage: crate::storage::Storage,
}

/// What reaches a session besides its socket and its rooms' events.
pub(super) enum Control {
    /// `resume`: the resume token presented and the last server frame the client saw.
    Attach {
        conn: Conn,
        resume: Option<(Arc<str>, u64)>,
        reply: AttachReply,
    },
    /// The rooms brought back with a restored session.
    Rejoin(Vec<RoomHandle>),
    /// The player logged in elsewhere in the cluster: end this session.
    Evict { reason: String },
    /// News of the player's match ticket.
    Match(MatchEvent),
    /// The server is shutting down. (A message rather than a cancellation token the
    /// loop would poll: every source the loop selects on costs CPU on every wake-up.)
    Shutdown,
    /// A room of the player is moving to another node: stop reading the client's
    /// frames (they wait in the socket, unacknowledged, and the client sends them again
    /// to the new node), then answer.
    Freeze(oneshot::Sender<()>),
    /// The room has stopped: number what it sent last and hand over what the session
    /// is, to go on at the new node.
    Hand(oneshot::Sender<super::sessions::SessionMove>),
    /// The move failed: read the client's frames again.
    Thaw,
    /// The new node has the session: tell the client where to resume, leave the rooms
    /// that did not move, and end here without a word to the rooms that did.
    Moved {
        node: String,
        address: String,
        rooms: Vec<String>,
    },
    /// The session was made for a room that did not come here after all: end it
    /// without a word to any room.
    Drop,
    /// The player is back in a room that moved (or its place could not be found):
    /// see `reattach.rs`.
    Reattached {
        room: String,
        result: Result<Joined, String>,
    },
}

pub(super) struct Session {
    pub(super) who: Identity,
    id: Arc<str>,
    /// Unknown for a session brought back from storage until its player resumes.
    resume_token: Option<Arc<str>>,
    /// The resume token's hash, shared with the session's handle.
    token_sha256: Arc<std::sync::Mutex<[u8; 32]>>,
    pub(super) services: Services,
    pub(super) joined: HashMap<String, Joined>,
    /// The player's match ticket, while it waits.
    pub(super) ticket: Option<String>,
    /// The matchmaker tells this session about its ticket here (as `Control::Match`).
    pub(super) match_sink: MatchSink,
    /// Rooms deliver this player's events here; `events` is its other end.
    pub(super) sink: PlayerSink,
    events: mailbox::Receiver<RoomEvent>,
    /// The attached connection, read and written by this task.
    conn: Option<Conn>,
    pub(super) replay: Replay,
    ctl: Option<mailbox::Receiver<Control>>,
    /// This session's own control channel (for the tasks it starts to answer on).
    pub(super) me: mailbox::Sender<Control>,
    /// A room of the player is moving: the client's frames are not read meanwhile.
    frozen: bool,
}

impl Session {
    pub(super) fn new(
        who: Identity,
        id: Arc<str>,
        resume_token: Option<Arc<str>>,
        token_sha256: Arc<std::sync::Mutex<[u8; 32]>>,
        services: Services,
        match_sink: MatchSink,
        (me, ctl): (mailbox::Sender<Control>, mailbox::Receiver<Control>),
    ) -> Session {
        let (sink, events) = mailbox::channel(services.cfg.player_queue.max(1));
        Session {
            who,
            id,
            resume_token,
            token_sha256,
            replay: Replay::new(services.cfg.replay_frames),
            services,
            joined: HashMap::new(),
            ticket: None,
            match_sink,
            sink,
            events,
            conn: None,
            ctl: Some(ctl),
            me,
            frozen: false,
        }
    }

    /// A session that moved here from another node with its room: detached, its grace
    /// period starting now, its frame numbers going on from where they were.
    pub(super) fn moved_in(
        &mut self,
        grace: Duration,
        out_seq: u64,
        in_seq: u64,
        unacked: Vec<pb::ServerFrame>,
    ) {
        self.replay.import(out_seq, in_seq, unacked);
        self.replay.detach(grace);
    }

    /// A session brought back from storage: detached, its grace period starting now,
    /// and its frame numbers taken from the client that resumes it.
    pub(super) fn restored(&mut self, grace: Duration) {
        self.replay.restored();
        self.replay.detach(grace);
    }

    /// Runs the session until it ends; true if it was kept for the next node (stopped
    /// by the node's shutdown with sessions kept in storage: its rooms are left alone).
    pub(super) async fn run(mut self) -> bool {
        let Some(mut ctl) = self.ctl.take() else {
            return false;
        };
        let mut kept = false;
        let mut batch = Vec::new();
        loop {
            let expires = self.replay.held_until();
            let attached = self.conn.is_some() && !self.frozen;
            let room_for_events = self.room_for_events();
            tokio::select! {
                biased;
                command = ctl.recv() => match command {
                    Some(Control::Attach { conn, resume, reply }) => {
                        let _ = reply.send(self.attach(conn, resume));
                    }
                    Some(Control::Rejoin(rooms)) => {
                        for room in rooms {
                            self.joined.insert(room.id().to_owned(), Joined::Local(room));
                        }
                    }
                    Some(Control::Match(event)) => self.match_event(event),
                    Some(Control::Shutdown) => {
                        self.close_conn(close_code::SHUTTING_DOWN, "the server is shutting down");
                        kept = self.services.kept;
                        break;
                    }
                    Some(Control::Freeze(reply)) => {
                        self.frozen = true;
                        let _ = reply.send(());
                    }
                    Some(Control::Hand(reply)) => {
                        while let Some(event) = self.events.try_recv() {
                            self.room_event(event);
                        }
                        let _ = reply.send(self.hand());
                    }
                    Some(Control::Thaw) => {
                        self.frozen = false;
                        // A login elsewhere while the session was held for a move
                        // ends it now.
                        let cluster = &self.services.cluster;
                        if let Some(node) = cluster.session_owner(self.who.player_id)
                            && node != cluster.node_id()
                        {
                            let reason = format!("logged in on another node ({node})");
                            self.close_conn(close_code::REPLACED, &reason);
                            break;
                        }
                    }
                    // Held for a move: the new node takes the session (the cluster says
                    // so before this node hears of the move's end); see `Thaw`.
                    Some(Control::Evict { .. }) if self.frozen => {}
                    Some(Control::Moved { node, address, rooms }) => {
                        for room in &rooms {
                            self.joined.remove(room);
                        }
                        for (_, room) in self.joined.drain() {
                            room.leave(self.who.player_id, LeaveReason::Disconnected);
                        }
                        let reason = format!("the session moved to node {node}: resume at {address}");
                        let mut moved = super::ClientError::new(pb::ErrorCode::Moved, reason.clone());
                        moved.address = address;
                        self.send_unnumbered(moved.frame(0));
                        self.close_conn(close_code::MOVED, &reason);
                        kept = true;
                        break;
                    }
                    Some(Control::Reattached { room, result }) => self.reattached(room, result),
                    Some(Control::Drop) => {
                        self.joined.clear();
                        self.close_conn(close_code::SESSION_ENDED, "the session ended");
                        kept = true;
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
                    Incoming::Frame(frame) => {
                        if let Some(slow) = self.client_frame(frame) {
                            slow.await;
                        }
                    }
                    Incoming::Queued => {}
                    Incoming::Broken { code, reason } => {
                        self.close_conn(code, reason);
                        self.detach();
                    }
                    Incoming::Idle => {
                        tracing::debug!(player = self.who.player_id, "connection idle: dropped");
                        self.close_conn(close_code::IDLE, "no answer within the idle timeout");
                        self.detach();
                    }
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
        if !kept {
            for (_, room) in self.joined.drain() {
                room.leave(self.who.player_id, LeaveReason::Disconnected);
            }
        }
        if let Some(ticket) = self.ticket.take() {
            self.services.matchmaker.cancel(&ticket);
        }
        kept
    }

    /// What moves to another node with the session.
    fn hand(&self) -> super::sessions::SessionMove {
        let (out_seq, in_seq, unacked) = self.replay.export();
        super::sessions::SessionMove {
            player_id: self.who.player_id,
            name: self.who.name.clone(),
            session_id: self.id.to_string(),
            token_sha256: *self.token_sha256.lock().recover(),
            out_seq,
            in_seq,
            unacked,
        }
    }

    /// How many room events the session may take now: any number while a connection
    /// is attached, else as many as the replay buffer has room for; the rest wait in
    /// the player's queue.
    fn room_for_events(&self) -> usize {
        if self.conn.is_some() {
            usize::MAX
        } else {
            self.replay.room()
        }
    }

    // A refusal hands the socket back (moved once per connect; its size does not matter).
    #[allow(clippy::result_large_err)]
    fn attach(
        &mut self,
        mut conn: Conn,
        resume: Option<(Arc<str>, u64)>,
    ) -> Result<(), (Conn, String)> {
        if let Some((token, _)) = &resume
            && self.resume_token.is_none()
        {
            self.resume_token = Some(token.clone());
        }
        let token = match self.resume_token.clone() {
            Some(token) => token,
            None => {
                // A restored session taken over by a fresh connection (its client lost
                // the token): a new token, and the old one no longer resumes.
                let token: Arc<str> = crate::csprng::hex::<32>().into();
                *self.token_sha256.lock().recover() = super::sessions::token_hash(&token);
                self.resume_token = Some(token.clone());
                token
            }
        };
        let restored = self.replay.is_restored();
        let welcome = |resumed| {
            Out::Welcome(pb::Welcome {
                player_id: self.who.player_id,
                session_id: self.id.to_string(),
                resume_token: token.to_string(),
                resumed,
                restored,
            })
        };
        match resume.map(|(_, n)| n) {
            Some(n) => {
                let welcome = self.replay.unnumbered(welcome(true));
                let frames = match self.replay.resume(n) {
                    Ok(frames) => frames,
                    Err(e) => return Err((conn, e.to_string())),
                };
                conn.queue(&welcome);
                for frame in frames {
                    conn.queue(frame);
                }
                self.close_conn(
                    close_code::REPLACED,
                    "another connection took over this session",
                );
                self.conn = Some(conn);
            }
            None => {
                let welcome = welcome(false);
                self.close_conn(
                    close_code::REPLACED,
                    "another connection took over this session",
                );
                self.replay.restart();
                self.conn = Some(conn);
                self.send(welcome);
            }
        }
        Ok(())
    }

    fn detach(&mut self) {
        self.conn = None;
        self.replay.detach(self.services.cfg.grace_period);
    }

    fn close_conn(&mut self, code: u16, reason: &str) {
        if let Some(old) = self.conn.take() {
            old.close(code, reason);
        }
    }

    /// Numbers a frame, keeps it for replay, and sends it if a connection is attached.
    pub(super) fn send(&mut self, body: Out) {
        let frame = self.replay.number(body);
        if let Some(conn) = &mut self.conn {
            conn.queue(&frame);
        }
    }

    /// Sends outside the numbered stream (pongs).
    pub(super) fn send_unnumbered(&mut self, body: Out) {
        let frame = self.replay.unnumbered(body);
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
            RoomEvent::Moved { room, node, reason } => self.room_moved(room, node, reason),
        }
    }
}

/// A room the player is in: here, or on another node, or on its way to another node
/// (see `reattach.rs`).
pub(super) enum Joined {
    Local(RoomHandle),
    Remote(RemoteRoom),
    /// The player's messages for the room, kept until it is back.
    Moving(std::collections::VecDeque<bytes::Bytes>),
}

impl Joined {
    pub(super) fn message(&mut self, player: u64, payload: bytes::Bytes) {
        match self {
            Joined::Local(room) => room.message(player, payload),
            Joined::Remote(room) => room.message(player, payload),
            Joined::Moving(kept) => {
                if kept.len() == super::reattach::KEPT_MESSAGES {
                    kept.pop_front();
                }
                kept.push_back(payload);
            }
        }
    }

    pub(super) fn leave(&self, player: u64, reason: LeaveReason) {
        match self {
            Joined::Local(room) => room.leave(player, reason),
            Joined::Remote(room) => room.leave(player),
            // Left when it is back (see `Session::reattached`).
            Joined::Moving(_) => {}
        }
    }
}

async fn next_incoming(conn: &mut Option<Conn>) -> Incoming {
    match conn {
        Some(conn) => conn.next().await,
        None => std::future::pending().await,
    }
}

/// Boxed: a timer is large, and only a detached session (rare) waits on one; inline it
/// would sit in every session's future.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => Box::pin(tokio::time::sleep_until(at)).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn future_size<T, F>(_: impl Fn(T) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// A node holds one session task per player, idle or not, and a task stores its
    /// future inline: a large future awaited anywhere in the loop (a join awaiting etcd
    /// once made it 16 KiB) costs every idle player that much. Rare, large calls run
    /// boxed instead (`handlers.rs`, `sessions.rs`).
    #[test]
    fn the_session_loop_future_stays_small() {
        let size = future_size(Session::run);
        assert!(
            size <= 2048,
            "Session::run's future is {size} bytes; box the large call that grew it"
        );
    }
}
