//! What a room sends to its players, and how it reaches them.

use bytes::Bytes;
use std::sync::Arc;
use tokio::sync::mpsc::{self, error::TrySendError};

/// An event for one player from one room.
#[derive(Clone, Debug, PartialEq)]
pub enum RoomEvent {
    /// A message from the game (opaque bytes; JSON for the example games).
    Message { room: Arc<str>, bytes: Bytes },
    /// The game kicked the player, or the host removed it; it is no longer a member.
    Kicked { room: Arc<str>, reason: String },
    /// The room closed; nobody is a member any more.
    Closed { room: Arc<str>, reason: String },
}

/// Where a room delivers a player's events. Bounded: a player whose queue is full is
/// too slow to follow the game and is removed from the room with a reason. A session
/// gives a [`crate::mailbox`] (cheap to wait on next to its socket); anything else
/// (the relay, tools, tests) may give a tokio channel.
#[derive(Clone)]
pub enum PlayerSink {
    Channel(mpsc::Sender<RoomEvent>),
    Mailbox(crate::mailbox::Sender<RoomEvent>),
}

impl PlayerSink {
    /// Queues an event without waiting.
    pub fn try_send(&self, event: RoomEvent) -> Result<(), TrySendError<RoomEvent>> {
        match self {
            PlayerSink::Channel(tx) => tx.try_send(event),
            PlayerSink::Mailbox(tx) => tx.try_send(event).map_err(|e| match e {
                crate::mailbox::TrySendError::Full(e) => TrySendError::Full(e),
                crate::mailbox::TrySendError::Closed(e) => TrySendError::Closed(e),
            }),
        }
    }
}

impl From<mpsc::Sender<RoomEvent>> for PlayerSink {
    fn from(tx: mpsc::Sender<RoomEvent>) -> Self {
        PlayerSink::Channel(tx)
    }
}

impl From<crate::mailbox::Sender<RoomEvent>> for PlayerSink {
    fn from(tx: crate::mailbox::Sender<RoomEvent>) -> Self {
        PlayerSink::Mailbox(tx)
    }
}
