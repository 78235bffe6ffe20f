//! A session's numbered frame streams, without sockets or tasks: the server's frames are
//! numbered and held until the client acknowledges them (at most `capacity`), client
//! frames already processed are recognised by their number and dropped, and a client
//! that resumes after frame N gets every held frame after N again. A detached session's
//! frames are held until its grace period ends.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use super::pb::{ServerFrame, server_frame::Body as Out};

/// Why a resume was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResumeError {
    #[error("last_seen {last_seen} is ahead of the server, which sent up to {sent}")]
    Ahead { last_seen: u64, sent: u64 },
    #[error("frames {first}..{last} are no longer held for replay; connect without resume")]
    Lost { first: u64, last: u64 },
}

pub struct Replay {
    /// Number of the last frame sent to the client.
    out_seq: u64,
    /// Number of the last client frame processed.
    in_seq: u64,
    /// Frames sent but not yet acknowledged, oldest first.
    unacked: VecDeque<Arc<ServerFrame>>,
    capacity: usize,
    /// When the grace period of a detached session ends.
    held_until: Option<Instant>,
    /// Brought back from storage after a restart: numbers go on from the client's.
    restored: bool,
}

impl Replay {
    /// Holds up to `capacity` unacknowledged frames.
    pub fn new(capacity: usize) -> Self {
        Replay {
            out_seq: 0,
            in_seq: 0,
            unacked: VecDeque::new(),
            capacity,
            held_until: None,
            restored: false,
        }
    }

    /// The session came back from storage after its node restarted: the numbers it
    /// used are lost, so the first resume takes the client's last seen frame as the
    /// last one sent, and the frames held since are numbered on from it.
    pub fn restored(&mut self) {
        self.restored = true;
    }

    /// Whether the next resume is the first since the session came back from storage.
    pub fn is_restored(&self) -> bool {
        self.restored
    }

    /// Numbers a frame and holds it for replay (the oldest held frame goes when full).
    pub fn number(&mut self, body: Out) -> Arc<ServerFrame> {
        self.out_seq += 1;
        let frame = Arc::new(ServerFrame {
            seq: self.out_seq,
            ack: self.in_seq,
            body: Some(body),
        });
        self.unacked.push_back(frame.clone());
        if self.unacked.len() > self.capacity {
            self.unacked.pop_front();
        }
        frame
    }

    /// A frame outside the numbered stream (pongs, the welcome of a resume).
    pub fn unnumbered(&self, body: Out) -> ServerFrame {
        ServerFrame {
            seq: 0,
            ack: self.in_seq,
            body: Some(body),
        }
    }

    /// The client has seen every frame up to `ack`: they are no longer held.
    pub fn acknowledged(&mut self, ack: u64) {
        while self.unacked.front().is_some_and(|f| f.seq <= ack) {
            self.unacked.pop_front();
        }
    }

    /// Takes a client frame's number: false if it was processed already (a resend
    /// after a resume). Unnumbered frames (0) are always new.
    pub fn accept(&mut self, seq: u64) -> bool {
        if seq == 0 {
            return true;
        }
        if seq <= self.in_seq {
            return false;
        }
        self.in_seq = seq;
        true
    }

    /// A client resumes having seen frames up to `last_seen`: the frames to send again,
    /// oldest first, or why that cannot be done.
    pub fn resume(
        &mut self,
        last_seen: u64,
    ) -> Result<impl Iterator<Item = &Arc<ServerFrame>>, ResumeError> {
        if self.restored {
            self.restored = false;
            self.in_seq = 0;
            self.out_seq = last_seen;
            for frame in self.unacked.iter_mut() {
                self.out_seq += 1;
                *frame = Arc::new(ServerFrame {
                    seq: self.out_seq,
                    ack: 0,
                    body: frame.body.clone(),
                });
            }
            self.held_until = None;
            return Ok(self.unacked.iter());
        }
        if last_seen > self.out_seq {
            return Err(ResumeError::Ahead {
                last_seen,
                sent: self.out_seq,
            });
        }
        self.acknowledged(last_seen);
        let first_held = self.unacked.front().map_or(self.out_seq + 1, |f| f.seq);
        if first_held > last_seen + 1 {
            return Err(ResumeError::Lost {
                first: last_seen + 1,
                last: first_held - 1,
            });
        }
        self.held_until = None;
        Ok(self.unacked.iter())
    }

    /// A fresh client: it numbers its frames from 1 and cannot resume older ones.
    pub fn restart(&mut self) {
        self.restored = false;
        self.in_seq = 0;
        self.unacked.clear();
        self.held_until = None;
    }

    /// What moves with the session to another node: the last frame numbered, the last
    /// client frame processed, and the frames not yet acknowledged.
    pub fn export(&self) -> (u64, u64, Vec<Arc<ServerFrame>>) {
        (
            self.out_seq,
            self.in_seq,
            self.unacked.iter().cloned().collect(),
        )
    }

    /// A session that moved here from another node: numbering goes on where it was
    /// there, so the client resumes as after any dropped connection.
    pub fn import(&mut self, out_seq: u64, in_seq: u64, unacked: Vec<ServerFrame>) {
        self.restored = false;
        self.out_seq = out_seq;
        self.in_seq = in_seq;
        self.unacked = unacked.into_iter().map(Arc::new).collect();
        while self.unacked.len() > self.capacity {
            self.unacked.pop_front();
        }
    }

    /// How many more frames can be held before the oldest is dropped.
    pub fn room(&self) -> usize {
        self.capacity.saturating_sub(self.unacked.len())
    }

    /// The connection dropped: frames are held for `grace` from now.
    pub fn detach(&mut self, grace: Duration) {
        self.held_until = Some(Instant::now() + grace);
    }

    /// When the grace period of a detached session ends (`None` while attached).
    pub fn held_until(&self) -> Option<Instant> {
        self.held_until
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::pb::Pong;

    fn pong(n: u64) -> Out {
        Out::Pong(Pong { nonce: n })
    }

    fn seqs<'a>(frames: impl Iterator<Item = &'a Arc<ServerFrame>>) -> Vec<u64> {
        frames.map(|f| f.seq).collect()
    }

    #[test]
    fn frames_are_numbered_from_one_and_carry_the_last_client_frame() {
        let mut r = Replay::new(8);
        assert!(r.accept(1) && r.accept(2));
        let a = r.number(pong(1));
        let b = r.number(pong(2));
        assert_eq!((a.seq, a.ack, b.seq, b.ack), (1, 2, 2, 2));
        assert_eq!(r.unnumbered(pong(3)).seq, 0);
    }

    #[test]
    fn a_resume_replays_everything_after_last_seen() {
        let mut r = Replay::new(8);
        for n in 1..=5 {
            r.number(pong(n));
        }
        r.acknowledged(1);
        assert_eq!(seqs(r.resume(3).unwrap()), vec![4, 5]);
        // Acknowledged by the resume: a second one cannot go back.
        assert_eq!(
            r.resume(1).err(),
            Some(ResumeError::Lost { first: 2, last: 3 })
        );
        assert_eq!(seqs(r.resume(5).unwrap()), Vec::<u64>::new());
    }

    #[test]
    fn a_resume_ahead_of_the_server_or_past_the_buffer_is_refused() {
        let mut r = Replay::new(2);
        for n in 1..=4 {
            r.number(pong(n));
        }
        assert_eq!(
            r.resume(9).err(),
            Some(ResumeError::Ahead {
                last_seen: 9,
                sent: 4
            })
        );
        // Only frames 3 and 4 are held.
        assert_eq!(
            r.resume(1).err(),
            Some(ResumeError::Lost { first: 2, last: 2 })
        );
        assert_eq!(seqs(r.resume(2).unwrap()), vec![3, 4]);
        assert_eq!(r.room(), 0);
    }

    #[test]
    fn client_frames_already_processed_are_dropped() {
        let mut r = Replay::new(4);
        assert!(r.accept(1));
        assert!(r.accept(2));
        assert!(!r.accept(2), "a resend of 2");
        assert!(!r.accept(1));
        assert!(r.accept(0) && r.accept(0), "unnumbered frames always pass");
        assert!(r.accept(3));
        r.restart();
        assert!(r.accept(1), "a fresh client numbers from 1 again");
    }

    #[test]
    fn a_restored_session_numbers_on_from_the_client_and_replays_what_it_held() {
        let mut r = Replay::new(8);
        r.restored();
        assert!(r.is_restored());
        // Frames the restored rooms sent before the player came back.
        r.number(pong(1));
        r.number(pong(2));
        assert_eq!(seqs(r.resume(500).unwrap()), vec![501, 502]);
        assert!(!r.is_restored());
        assert_eq!(r.number(pong(3)).seq, 503);
        assert!(r.accept(1), "the client's frames are numbered afresh");
        // From now on resumes are checked as usual.
        assert!(matches!(r.resume(900), Err(ResumeError::Ahead { .. })));
    }

    #[test]
    fn a_moved_session_resumes_where_it_was_on_the_other_node() {
        let mut there = Replay::new(8);
        assert!(there.accept(1) && there.accept(2));
        for n in 1..=4 {
            there.number(pong(n));
        }
        there.acknowledged(2);
        let (out_seq, in_seq, unacked) = there.export();
        let mut here = Replay::new(8);
        here.import(
            out_seq,
            in_seq,
            unacked.iter().map(|f| (**f).clone()).collect(),
        );
        assert!(
            !here.accept(2),
            "a client frame processed there is not processed again"
        );
        assert_eq!(seqs(here.resume(3).unwrap()), vec![4]);
        assert_eq!(here.number(pong(5)).seq, 5, "numbers go on");
    }

    #[tokio::test(start_paused = true)]
    async fn frames_are_held_for_the_grace_period_after_a_drop() {
        let mut r = Replay::new(4);
        assert_eq!(r.held_until(), None);
        let dropped = Instant::now();
        r.detach(Duration::from_secs(30));
        let until = r.held_until().expect("held while detached");
        assert_eq!(until - dropped, Duration::from_secs(30));
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(Instant::now() < until);
        tokio::time::sleep_until(until).await;
        assert_eq!(Instant::now() - dropped, Duration::from_secs(30));
        r.number(pong(1));
        assert!(r.resume(0).is_ok());
        assert_eq!(r.held_until(), None, "a resume ends the grace period");
    }
}
