//! Rooms that outlive their node. Each in-memory checkpoint a room takes (every
//! `checkpoint_interval`, and after every live swap) also goes to storage when it
//! changed: the game's saved state with the host's own record of the room
//! ([`RoomRecord`]). The room hands it to the [`Saver`] and plays on; the write happens
//! off the room's thread, and a failed one is logged, counted and tried again. A room
//! that closes takes its checkpoint with it; a node that stops keeps them, and the next
//! node started on the same data brings every room back ([`Rooms::restore`]).

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::events::PlayerSink;
use crate::runtime::Module;
use crate::storage::{SavedRoom, Saver};

/// Where a node's rooms keep their checkpoints. Cheap to clone.
#[derive(Clone)]
pub struct Checkpoints {
    pub(super) saver: Saver,
    pub(super) node: Arc<str>,
}

impl Checkpoints {
    /// Checkpoints written through `saver` under `node` (the id a restarted node finds
    /// them by).
    pub fn new(saver: Saver, node: &str) -> Self {
        Checkpoints {
            saver,
            node: node.into(),
        }
    }

    pub fn saver(&self) -> &Saver {
        &self.saver
    }

    pub fn node(&self) -> &str {
        &self.node
    }
}

/// The host's own record of a room, kept beside the game's state: everything needed to
/// run the room on from that state on another process.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RoomRecord {
    pub game: String,
    /// The module the room runs.
    pub version: String,
    pub module_sha256: String,
    /// The game version whose `save` made the state (differs from `version` right
    /// after a live swap).
    pub state_version: String,
    pub config: String,
    pub seed: u64,
    /// The random stream's position when the state was saved.
    pub random: u64,
    /// The last storage request id the room gave out.
    pub last_request: u64,
    pub tick_hz: u32,
    pub hold_messages: bool,
    pub keep_open: bool,
    pub private: bool,
    pub label: String,
    pub creator: Option<u64>,
    /// Members when the state was saved: id and name.
    pub members: Vec<(u64, String)>,
    /// Seats held for matched players: players, seats, until (ms since the Unix epoch).
    pub held: Option<(Vec<u64>, usize, i64)>,
}

impl RoomRecord {
    pub fn parse(text: &str) -> Result<RoomRecord, String> {
        serde_json::from_str(text).map_err(|e| format!("the room's record is damaged: {e}"))
    }
}

/// A room to bring back from its checkpoint.
pub struct RestoreRoom {
    pub id: String,
    /// The module to run it on (the one the record names, or the game's active one).
    pub module: Arc<Module>,
    pub record: RoomRecord,
    pub state: Vec<u8>,
    /// Where the members' events go (their restored sessions).
    pub sinks: HashMap<u64, PlayerSink>,
    /// How long a member without a sink is held for its session (on another node) to
    /// attach it again ([`super::RoomHandle::attach`]) before it leaves the game as
    /// `disconnected`; zero: it leaves at once.
    pub hold: std::time::Duration,
}

impl RestoreRoom {
    /// A checkpoint read from storage, to run on `module`.
    pub fn from_saved(saved: SavedRoom, module: Arc<Module>) -> Result<RestoreRoom, String> {
        Ok(RestoreRoom {
            record: RoomRecord::parse(&saved.record)?,
            id: saved.room_id,
            module,
            state: saved.state,
            sinks: HashMap::new(),
            hold: std::time::Duration::ZERO,
        })
    }
}

/// Milliseconds since the Unix epoch.
pub(super) fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// An `Instant` as milliseconds since the Unix epoch, and back.
pub(super) fn instant_to_unix_ms(at: Instant) -> i64 {
    let now = Instant::now();
    match at.checked_duration_since(now) {
        Some(ahead) => unix_ms() + ahead.as_millis() as i64,
        None => unix_ms() - now.duration_since(at).as_millis() as i64,
    }
}

pub(super) fn unix_ms_to_instant(ms: i64) -> Instant {
    let now = Instant::now();
    let delta = ms - unix_ms();
    if delta >= 0 {
        now + std::time::Duration::from_millis(delta as u64)
    } else {
        now.checked_sub(std::time::Duration::from_millis((-delta) as u64))
            .unwrap_or(now)
    }
}
