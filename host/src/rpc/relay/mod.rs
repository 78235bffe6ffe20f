//! Playing in a room on another node. The gateway node keeps one `Link` stream per peer
//! (opened on first use over the peer's HTTP/2 channel, with the cluster credential) and
//! multiplexes every player it forwards to that peer over it; the owner joins those
//! players to its room, and one pump per link relays the room's output back on the same
//! stream: output that went to several players of the link at once (a broadcast) goes
//! over the link once, with the list of players, and the gateway node fans it out.
//! When the link ends (the peer died, restarted, or left the cluster) every forwarded
//! player's session hears, per room, that the room may go on elsewhere (`Moved`), and
//! the link is opened again in the background with backoff while the peer is in the
//! cluster. A room that moves (or comes back on another node) holds its forwarded
//! players' places, and their sessions attach them there (`JoinRoom.attach`; see
//! `gateway/reattach.rs`).

mod owner;
mod peers;

pub use owner::RelayService;
pub use peers::{PeerLink, Peers, RelayError, RemoteRoom};

/// Room for a relay frame's envelope (room id, recipients) around one message.
pub const ENVELOPE_BYTES: usize = 64 << 10;

/// The largest relay frame either end encodes or decodes: one message of the largest
/// size a game may send (`runtime.max_message_bytes`, which also bounds a player's
/// frame) and its envelope. Every node of a cluster uses the same limits.
pub fn frame_limit(max_message_bytes: usize) -> usize {
    max_message_bytes.saturating_add(ENVELOPE_BYTES)
}

use super::pb::PeerFrame;
use super::pb::peer_frame::Body;

/// Frames queued on a link before a sender waits.
const LINK_QUEUE: usize = 8192;

fn frame(body: Body) -> PeerFrame {
    PeerFrame { body: Some(body) }
}
