//! Plain types a game sees: player ids, players, leave reasons, log levels, rejections.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::__private::bindings::ludus::game::types as wit;

/// A player's id: unique within the node, cheap to copy, usable as a map key.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PlayerId(pub u64);

impl fmt::Display for PlayerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A player asking to join a room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Player {
    pub id: PlayerId,
    /// Display name chosen at login; may be empty.
    pub name: String,
}

impl From<wit::Player> for Player {
    fn from(p: wit::Player) -> Self {
        Player {
            id: PlayerId(p.id),
            name: p.name,
        }
    }
}

/// Why a player left a room.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LeaveReason {
    /// The player asked to leave.
    Left,
    /// The connection dropped and did not come back in time.
    Disconnected,
    /// The game kicked the player.
    Kicked,
    /// The host removed the player (too slow to read, room shutting down, ...).
    Removed,
}

impl From<wit::LeaveReason> for LeaveReason {
    fn from(r: wit::LeaveReason) -> Self {
        match r {
            wit::LeaveReason::Left => LeaveReason::Left,
            wit::LeaveReason::Disconnected => LeaveReason::Disconnected,
            wit::LeaveReason::Kicked => LeaveReason::Kicked,
            wit::LeaveReason::Removed => LeaveReason::Removed,
        }
    }
}

/// Level of a line written with [`Room::log`](crate::Room::log).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl From<LogLevel> for wit::LogLevel {
    fn from(l: LogLevel) -> Self {
        match l {
            LogLevel::Trace => wit::LogLevel::Trace,
            LogLevel::Debug => wit::LogLevel::Debug,
            LogLevel::Info => wit::LogLevel::Info,
            LogLevel::Warn => wit::LogLevel::Warn,
            LogLevel::Error => wit::LogLevel::Error,
        }
    }
}

/// A refused join: the reason is sent to the player.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reject(pub String);

impl From<&str> for Reject {
    fn from(s: &str) -> Self {
        Reject(s.to_owned())
    }
}

impl From<String> for Reject {
    fn from(s: String) -> Self {
        Reject(s)
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
