//! The last messages into and out of each room, for the designer console of `ludus dev`
//! (`rooms.trace_messages`). Off by default: when on, each message costs a lock and a
//! copy of its first bytes.

use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Mutex;

use crate::lock::Recover;

/// Bytes of a message kept as text.
const TEXT_BYTES: usize = 240;

/// Which way a message went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From a player to the game.
    In,
    /// From the game to players.
    Out,
}

/// One message, as the console shows it.
#[derive(Clone, Debug, Serialize)]
pub struct TracedMessage {
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    pub dir: Direction,
    /// In: the sender. Out: `player N`, `everyone` or `everyone but N`.
    pub player: String,
    /// The message's size.
    pub bytes: usize,
    /// Its first bytes as (lossy UTF-8) text.
    pub text: String,
}

/// A room's last messages, newest last.
pub(super) struct Trace {
    keep: usize,
    messages: Mutex<VecDeque<TracedMessage>>,
}

impl Trace {
    /// A trace keeping `keep` messages; `None` when `keep` is 0 (tracing off).
    pub fn new(keep: usize) -> Option<Trace> {
        (keep > 0).then(|| Trace {
            keep,
            messages: Mutex::new(VecDeque::with_capacity(keep.min(64))),
        })
    }

    pub fn record(&self, dir: Direction, player: String, bytes: &[u8]) {
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(TEXT_BYTES)]).into_owned();
        let message = TracedMessage {
            at_ms: super::persist::unix_ms(),
            dir,
            player,
            bytes: bytes.len(),
            text,
        };
        let mut messages = self.messages.lock().recover();
        if messages.len() == self.keep {
            messages.pop_front();
        }
        messages.push_back(message);
    }

    /// The kept messages, newest first.
    pub fn list(&self) -> Vec<TracedMessage> {
        self.messages
            .lock()
            .recover()
            .iter()
            .rev()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_messages_newest_first_and_cuts_long_ones() {
        assert!(Trace::new(0).is_none());
        let trace = Trace::new(2).unwrap();
        trace.record(Direction::In, "1".into(), b"first");
        trace.record(Direction::Out, "everyone".into(), b"second");
        trace.record(Direction::Out, "player 1".into(), &[b'x'; 1000]);
        let list = trace.list();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].bytes, 1000);
        assert_eq!(list[0].text.len(), TEXT_BYTES);
        assert_eq!(list[1].text, "second");
        assert_eq!(list[1].dir, Direction::Out);
    }
}
