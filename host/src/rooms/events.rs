//! What a room sends to its players, and how it reaches them.

use bytes::Bytes;
use std::sync::Arc;

/// An event for one player from one room.
#[derive(Clone, Debug, PartialEq)]
pub enum RoomEvent {
    /// A message from the game (opaque bytes; JSON for the example games).
    Message { room: Arc<str>, bytes: Bytes },
    /// The game kicked the player, or the host removed it; it is no longer a member.
    Kicked { room: Arc<str>, reason: String },
    /// The room closed; nobody is a member any more.
    Closed { room: Arc<str>, reason: String },
    /// The room is no longer reachable through this membership but goes on elsewhere:
    /// it moved to node `node` (`None`: not known yet — the link to its node broke and
    /// another node may take it over). The player is held in the room there and is
    /// attached again by its session ([`super::RoomHandle::attach`]); `reason` is what
    /// the player is told if that fails.
    Moved {
        room: Arc<str>,
        node: Option<String>,
        reason: String,
    },
}

impl RoomEvent {
    /// The room the event comes from.
    pub fn room(&self) -> &Arc<str> {
        match self {
            RoomEvent::Message { room, .. }
            | RoomEvent::Kicked { room, .. }
            | RoomEvent::Closed { room, .. }
            | RoomEvent::Moved { room, .. } => room,
        }
    }
}

/// Where a room delivers a player's events (make one with [`crate::mailbox::channel`]).
/// Bounded: a player whose queue is full is too slow to follow the game and is removed
/// from the room with a reason.
pub type PlayerSink = crate::mailbox::Sender<RoomEvent>;

/// The other end of a [`PlayerSink`].
pub type PlayerEvents = crate::mailbox::Receiver<RoomEvent>;
