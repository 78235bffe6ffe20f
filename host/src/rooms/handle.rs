//! The cheap, cloneable face of a room: send it commands, read its public info.

use bytes::Bytes;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

use super::error::{JoinError, SwapError};
use super::events::PlayerSink;
use super::inbox::Inbox;
use super::worker::Command;
use crate::lock::Recover;
use crate::runtime::{GameInstance, Module, RoomInit};

pub use crate::runtime::LeaveReason;

/// What anyone may know about a room (room listings, tests, operators).
#[derive(Clone, Debug, Serialize)]
pub struct RoomInfo {
    pub id: Arc<str>,
    /// The game's name as installed (the key of `Rooms::install`).
    pub game: String,
    /// The game version running in the room, as the game declares it.
    pub version: String,
    pub module_sha256: String,
    pub label: String,
    /// The game left the room out of listings (`set-private`); joined by id only.
    pub private: bool,
    pub seats: usize,
    pub tick_hz: u32,
    /// Times the room came back on a fresh instance after its game failed.
    pub restarts: u32,
    pub last_error: Option<String>,
    /// Set once the room has closed, with the reason its players were given.
    pub closed: Option<String>,
    /// Messages the game sent over `runtime.max_message_bytes` (dropped).
    pub dropped_messages: u64,
    /// Log lines the game wrote over `runtime.max_log_lines_per_second` (dropped).
    pub dropped_log_lines: u64,
    /// The room's last checkpoint in storage (`None`: none written yet, or the room is
    /// not kept in storage).
    pub checkpoint: Option<CheckpointInfo>,
    /// Checkpoint writes that failed (each is tried again; the room plays on).
    pub checkpoint_failures: u64,
    /// The players in the room (for the host: moving it moves their sessions).
    #[serde(skip)]
    pub members: Vec<u64>,
}

/// A checkpoint written to storage.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct CheckpointInfo {
    /// When it was written, in milliseconds since the Unix epoch.
    pub saved_ms: i64,
    /// Size of the game's saved state.
    pub bytes: usize,
}

/// State a room shares with its handles.
pub(super) struct RoomShared {
    pub info: Mutex<RoomInfo>,
    pub ticks: AtomicU64,
    /// How long the room's last tick took on its worker, in nanoseconds: messages and
    /// answers due before it, the tick call, its effects and the hand-over of its
    /// storage requests.
    pub last_tick_nanos: AtomicU64,
    /// What the room was created with (a swap prepares the new instance from it).
    pub init: RoomInit,
    /// The player who asked for the room (counted against their quota).
    pub creator: Option<u64>,
    /// Seats held for matched players.
    pub held: Option<super::HeldSeats>,
    /// The room's last messages, when the node keeps them (`rooms.trace_messages`).
    pub trace: Option<super::trace::Trace>,
}

impl RoomShared {
    pub fn new(
        init: RoomInit,
        game: &str,
        module: &Module,
        tick_hz: u32,
        creator: Option<u64>,
        held: Option<super::HeldSeats>,
        trace_messages: usize,
    ) -> Self {
        let id = init.id.clone();
        RoomShared {
            init,
            creator,
            held,
            trace: super::trace::Trace::new(trace_messages),
            info: Mutex::new(RoomInfo {
                id,
                game: game.to_owned(),
                version: module.version.clone(),
                module_sha256: module.sha256_hex(),
                label: String::new(),
                private: false,
                seats: 0,
                tick_hz,
                restarts: 0,
                last_error: None,
                closed: None,
                dropped_messages: 0,
                dropped_log_lines: 0,
                checkpoint: None,
                checkpoint_failures: 0,
                members: Vec::new(),
            }),
            ticks: AtomicU64::new(0),
            last_tick_nanos: AtomicU64::new(0),
        }
    }

    pub fn update(&self, f: impl FnOnce(&mut RoomInfo)) {
        f(&mut self.info.lock().recover());
    }
}

/// The result of a successful live swap in one room.
#[derive(Clone, Debug, Serialize)]
pub struct SwapOutcome {
    pub room: Arc<str>,
    /// `name version (sha256 prefix)` before and after.
    pub from: String,
    pub to: String,
    /// How long the room was paused: save, instantiate, restore.
    #[serde(with = "humantime_serde")]
    pub pause: Duration,
}

/// A handle on a room. Cloning is cheap; every method is non-blocking or async.
#[derive(Clone)]
pub struct RoomHandle {
    pub(super) key: u64,
    pub(super) id: Arc<str>,
    pub(super) tx: Arc<Inbox>,
    pub(super) shared: Arc<RoomShared>,
}

impl std::fmt::Debug for RoomHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomHandle").field("id", &self.id).finish()
    }
}

impl RoomHandle {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn info(&self) -> RoomInfo {
        let mut info = self.shared.info.lock().recover().clone();
        let dropped = &self.shared.init.dropped;
        info.dropped_messages = dropped.messages.load(Ordering::Relaxed);
        info.dropped_log_lines = dropped.log_lines.load(Ordering::Relaxed);
        info
    }

    /// The room's last messages in and out, newest first (empty unless the node keeps
    /// them: `rooms.trace_messages`).
    pub fn messages(&self) -> Vec<super::trace::TracedMessage> {
        self.shared
            .trace
            .as_ref()
            .map(super::trace::Trace::list)
            .unwrap_or_default()
    }

    /// Ticks run so far.
    pub fn ticks(&self) -> u64 {
        self.shared.ticks.load(Ordering::Relaxed)
    }

    /// How long the room's last tick took on its worker thread (everything the worker
    /// did for that tick, storage hand-over included).
    pub fn last_tick_duration(&self) -> Duration {
        Duration::from_nanos(self.shared.last_tick_nanos.load(Ordering::Relaxed))
    }

    pub fn is_closed(&self) -> bool {
        self.info().closed.is_some()
    }

    fn send(&self, command: Command) -> bool {
        self.tx.send(command)
    }

    /// Adds a player; the game may refuse it. Events for the player go to `sink`.
    pub async fn join(&self, player: u64, name: &str, sink: PlayerSink) -> Result<(), JoinError> {
        let (reply, rx) = oneshot::channel();
        let command = Command::Join {
            room: self.key,
            player,
            name: name.to_owned(),
            sink,
            attach: false,
            reply,
        };
        if !self.send(command) {
            return Err(JoinError::Closed("the room host stopped".into()));
        }
        rx.await
            .unwrap_or_else(|_| Err(JoinError::Closed("the room host stopped".into())))
    }

    /// Gives a member the room holds (it came back from a checkpoint or a move while
    /// the member's session was on another node) its place back, its events going to
    /// `sink`; the game hears nothing (for it the player never left). A player the room
    /// does not hold gets [`JoinError::NotHeld`].
    pub async fn attach(&self, player: u64, sink: PlayerSink) -> Result<(), JoinError> {
        let (reply, rx) = oneshot::channel();
        let command = Command::Join {
            room: self.key,
            player,
            name: String::new(),
            sink,
            attach: true,
            reply,
        };
        if !self.send(command) {
            return Err(JoinError::Closed("the room host stopped".into()));
        }
        rx.await
            .unwrap_or_else(|_| Err(JoinError::Closed("the room host stopped".into())))
    }

    /// Removes a player; unknown players are ignored.
    pub fn leave(&self, player: u64, reason: LeaveReason) {
        self.send(Command::Leave {
            room: self.key,
            player,
            reason,
        });
    }

    /// Holds a member's place for `hold` (its session's node is gone, and another node
    /// may take the session over and [`RoomHandle::attach`] it): for the game it stays;
    /// not attached in time, it leaves as `disconnected`.
    pub fn hold(&self, player: u64, hold: Duration) {
        self.send(Command::Hold {
            room: self.key,
            player,
            until: std::time::Instant::now() + hold,
        });
    }

    /// Delivers a player's message to the game. Messages from non-members are dropped.
    pub fn message(&self, player: u64, bytes: impl Into<Bytes>) {
        self.send(Command::Message {
            room: self.key,
            player,
            bytes: bytes.into(),
        });
    }

    /// Swaps the room's game for `module` at the next tick boundary, keeping its state.
    /// The request is queued at once; await the returned future for the outcome, so
    /// many rooms can be asked before any answer is awaited.
    pub fn swap(
        &self,
        module: Arc<Module>,
    ) -> impl std::future::Future<Output = Result<SwapOutcome, SwapError>> + Send + 'static {
        self.swap_prepared(module, None)
    }

    /// Like [`RoomHandle::swap`], with the new instance already made (off the room's
    /// thread), so the room pauses only to save and restore.
    pub(super) fn swap_prepared(
        &self,
        module: Arc<Module>,
        prepared: Option<GameInstance>,
    ) -> impl std::future::Future<Output = Result<SwapOutcome, SwapError>> + Send + 'static {
        let (reply, rx) = oneshot::channel();
        let sent = self.send(Command::Swap {
            room: self.key,
            module,
            prepared: prepared.map(Box::new),
            reply,
        });
        async move {
            if !sent {
                return Err(SwapError::RoomClosed);
            }
            rx.await.unwrap_or(Err(SwapError::RoomClosed))
        }
    }

    /// Closes the room, telling every member `reason`. Returns once it is closed.
    /// Makes the room's worker panic while handling this room, as a bug in the host's
    /// room code would. For tests that a host fault stays inside its room.
    #[doc(hidden)]
    pub fn inject_host_fault(&self) {
        self.send(Command::Fault { room: self.key });
    }

    /// Stops the room to run on another node: messages that came reach the game, its
    /// state is saved at a tick boundary, and it stops without a word to its members
    /// (the sessions of `moving` move with it; the other members are told it moves to
    /// node `to`, which holds them for their sessions to attach them again).
    /// Returns the host's record of the room and the game's state, or why not (the game
    /// refused or failed to save: it plays on).
    pub async fn hand_off(
        &self,
        moving: Vec<u64>,
        to: Option<&str>,
    ) -> Result<(super::RoomRecord, Vec<u8>), String> {
        let (reply, rx) = oneshot::channel();
        if !self.send(Command::HandOff {
            room: self.key,
            moving,
            to: to.map(str::to_owned),
            reply,
        }) {
            return Err("the room is closed".to_owned());
        }
        rx.await
            .unwrap_or_else(|_| Err("the room's worker stopped".to_owned()))
    }

    pub async fn close(&self, reason: &str) {
        let (reply, rx) = oneshot::channel();
        if self.send(Command::Close {
            room: self.key,
            reason: reason.to_owned(),
            reply: Some(reply),
        }) {
            let _ = rx.await;
        }
    }
}
