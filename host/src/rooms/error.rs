//! Errors a caller of the rooms API must decide on.

use crate::runtime::{GuestError, ModuleError};

/// Why a room was not created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("no game named `{0}` is installed")]
    UnknownGame(String),
    #[error("invalid room id: {0}")]
    BadId(String),
    #[error("a room with id `{0}` already exists")]
    DuplicateId(String),
    #[error("room config is not a JSON object: {0}")]
    BadConfig(String),
    #[error("the game refused to start the room: {0}")]
    Refused(String),
    #[error("the game failed to start the room: {0}")]
    Guest(GuestError),
    #[error("the room host is shutting down")]
    ShuttingDown,
    #[error("this node is draining and takes no new rooms; create the room on another node")]
    Draining,
    #[error(
        "you already have {0} open rooms here, the most a player may create; close or leave one first"
    )]
    Quota(usize),
}

/// Why a player could not join a room.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("the room is closed: {0}")]
    Closed(String),
    #[error("player {0} is already in the room")]
    AlreadyJoined(u64),
    #[error("the room's free seats are held for the players matched into it")]
    SeatsHeld,
    #[error("the game refused the player: {0}")]
    Rejected(String),
    #[error("the game failed while the player joined: {0}")]
    Guest(GuestError),
    /// An attach ([`super::RoomHandle::attach`]) for a player the room does not hold.
    #[error("player {0} is not held in the room (its seat was given up)")]
    NotHeld(u64),
}

/// Why a live swap did not happen. In every case the room keeps running its old
/// version (or, if the old instance itself failed while saving, its last checkpoint).
#[derive(Debug, Clone, thiserror::Error)]
pub enum SwapError {
    #[error("the room is closed")]
    RoomClosed,
    #[error("save on the old instance failed: {0}")]
    Save(String),
    #[error("instantiating the new module failed: {0}")]
    Instantiate(String),
    #[error("restore on the new instance failed: {0}")]
    Restore(String),
}

impl SwapError {
    /// The step that failed: `save`, `instantiate`, `restore` or `room`.
    pub fn step(&self) -> &'static str {
        match self {
            SwapError::RoomClosed => "room",
            SwapError::Save(_) => "save",
            SwapError::Instantiate(_) => "instantiate",
            SwapError::Restore(_) => "restore",
        }
    }
}

/// Why a game-wide swap did not start (per-room results are in the report).
#[derive(Debug, thiserror::Error)]
pub enum GameSwapError {
    #[error("no game named `{0}` is installed")]
    UnknownGame(String),
    #[error("the new module was refused: {0}")]
    Module(#[from] ModuleError),
}
