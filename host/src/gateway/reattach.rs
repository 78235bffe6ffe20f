//! A player whose room goes on elsewhere stays in it. When a room the player is in on
//! another node moves (a live migration), or the link to its node breaks (the node
//! died or stopped, and another node takes the room over from its checkpoint), the
//! room on its new node holds the player's place (`RoomHandle::attach`). The session
//! finds where the room runs now and gives the player its place back there, here or
//! through the link to that node, without a word to the game or to the client: the
//! room's frames simply go on. Messages the client sends meanwhile are kept and
//! delivered once the player is back. If the room does not come back within the grace
//! period (or cannot: it was kept in no storage the nodes share), the client is told it
//! is no longer in the room, with the reason.

use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use super::pb::{self, server_frame::Body as Out};
use super::session::{Control, Joined, Services, Session};
use crate::rooms::{JoinError, LeaveReason, PlayerSink};
use crate::rpc::relay::RelayError;

/// A player's messages kept for a room on its way to another node; past this the
/// oldest go (a room's own queue delivers at most this many at once).
pub(super) const KEPT_MESSAGES: usize = 256;
/// Between attempts to find the room and attach the player there.
const RETRY_MIN: Duration = Duration::from_millis(10);
const RETRY_MAX: Duration = Duration::from_millis(250);

impl Session {
    /// A room of the player moved, or its node cannot be reached: attach the player
    /// where it goes on (in the background; the session keeps serving meanwhile).
    pub(super) fn room_moved(&mut self, room: Arc<str>, node: Option<String>, reason: String) {
        let Some(joined) = self.joined.get_mut(&*room) else {
            return; // left meanwhile
        };
        *joined = Joined::Moving(Default::default());
        let (services, me) = (self.services.clone(), self.me.clone());
        let (player, sink) = (self.who.player_id, self.sink.clone());
        let room = room.to_string();
        tokio::spawn(async move {
            let result = find_and_attach(&services, player, &room, node, sink, &reason).await;
            let _ = me.try_send(Control::Reattached { room, result });
        });
    }

    /// The outcome of [`Session::room_moved`]: the player is back in the room (and
    /// what it sent meanwhile goes there now), or is told it is no longer in it.
    pub(super) fn reattached(&mut self, room: String, result: Result<Joined, String>) {
        let player = self.who.player_id;
        match (self.joined.remove(&room), result) {
            (Some(Joined::Moving(kept)), Ok(mut back)) => {
                for payload in kept {
                    back.message(player, payload);
                }
                tracing::debug!(player, room, "back in the room on its new node");
                self.joined.insert(room, back);
            }
            (Some(Joined::Moving(_)), Err(reason)) => {
                tracing::info!(player, room, "not back in the room: {reason}");
                self.send(Out::Kicked(pb::Kicked {
                    room_id: room,
                    reason,
                }));
            }
            // The player left meanwhile (or joined again): leave where it came back.
            (other, result) => {
                if let Ok(back) = result {
                    back.leave(player, LeaveReason::Left);
                }
                if let Some(other) = other {
                    self.joined.insert(room, other);
                }
            }
        }
    }
}

/// Finds the node that runs `room` now (`node` when the room said where it went) and
/// attaches `player` there, trying again until the grace period runs out: the room may
/// not be claimed or restored yet. `reason` is what the player is told if it fails.
async fn find_and_attach(
    services: &Services,
    player: u64,
    room: &str,
    node: Option<String>,
    sink: PlayerSink,
    reason: &str,
) -> Result<Joined, String> {
    let Some(peers) = services.peers.clone() else {
        return Err(reason.to_owned());
    };
    if node.is_none() {
        // The link to the room's node ended: the room is waited for only if it can go
        // on without that link, from a checkpoint in storage the nodes share (taken
        // over by another node, or held by its node for the player's return).
        let kept = services.kept && matches!(services.storage.saved_room(room).await, Ok(Some(_)));
        if !kept {
            return Err(reason.to_owned());
        }
    }
    let cluster = &services.cluster;
    let grace = services.cfg.grace_period;
    let deadline = Instant::now() + grace;
    let mut hint = node;
    let mut retry = RETRY_MIN;
    let mut last = String::from("no node runs the room yet");
    loop {
        let owner = match hint.take() {
            Some(node) => Some(node),
            None => cluster.find_room_owner(room).await.ok().flatten(),
        };
        match owner {
            Some(owner) if owner == cluster.node_id() => match services.rooms.get(room) {
                Some(handle) => match handle.attach(player, sink.clone()).await {
                    Ok(()) => return Ok(Joined::Local(handle)),
                    Err(e @ JoinError::NotHeld(_)) => return Err(format!("{reason}: {e}")),
                    Err(e) => last = e.to_string(),
                },
                None => last = format!("room `{room}` is not running here yet"),
            },
            Some(owner) => match peers.attach(&owner, player, room, sink.clone()).await {
                Ok(remote) => return Ok(Joined::Remote(remote)),
                Err(RelayError::NotHeld(e)) => return Err(format!("{reason}: {e}")),
                Err(e) => last = e.to_string(),
            },
            None => {}
        }
        if Instant::now() + retry >= deadline {
            return Err(format!(
                "{reason}; the room was not back within {grace:?} ({last})"
            ));
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(RETRY_MAX);
    }
}
