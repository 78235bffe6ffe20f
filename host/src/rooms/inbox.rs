//! A worker's inbox: commands from any thread, with wake-ups coalesced.
//!
//! A worker that had messages within the last `LINGER` does not sleep deeply: it polls
//! its inbox every `POLL`, and player inputs and leaves do not wake it. Under load that
//! turns one futex wake per player input into a timer wake every `POLL` per worker (an
//! input waits at most `POLL` longer; a 20 Hz game never notices). A command someone
//! awaits a reply to (create, join, swap, close, shutdown) wakes it at once, and so
//! does the first command to an idle worker, which parks until its next tick.

use crate::lock::Recover;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use super::worker::Command;

/// How long a worker keeps polling after its last command.
const LINGER: Duration = Duration::from_millis(10);
/// How often a lingering worker looks at its inbox. 2 ms rather than 0.5 ms: a quarter
/// of the wake-ups, which cost the server about 5% of its CPU under the arena
/// benchmark at N=2000 (bench/README.md); an input still reaches the game within 2 ms,
/// far inside a 20-60 Hz tick.
const POLL: Duration = Duration::from_millis(2);

const AWAKE: u8 = 0;
const PARKED: u8 = 1;

pub(super) struct Inbox {
    queue: Mutex<Vec<Command>>,
    state: AtomicU8,
    thread: OnceLock<Thread>,
    closed: AtomicBool,
}

impl Inbox {
    pub fn new() -> Self {
        Inbox {
            queue: Mutex::new(Vec::new()),
            state: AtomicU8::new(AWAKE),
            thread: OnceLock::new(),
            closed: AtomicBool::new(false),
        }
    }

    /// Queues a command; false if the worker has stopped.
    pub fn send(&self, command: Command) -> bool {
        let urgent = !matches!(command, Command::Message { .. } | Command::Leave { .. });
        {
            // Checked under the lock: nothing is queued after `close` (it would never be
            // handled, and its caller would wait for an answer forever).
            let mut queue = self.queue.lock().recover();
            if self.closed.load(Ordering::Acquire) {
                return false;
            }
            queue.push(command);
        }
        let parked = self.state.load(Ordering::SeqCst) == PARKED
            && self
                .state
                .compare_exchange(PARKED, AWAKE, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok();
        if (parked || urgent)
            && let Some(thread) = self.thread.get()
        {
            // Also ends a lingering worker's `park_timeout` early.
            thread.unpark();
        }
        true
    }

    /// Called once by the worker thread before it receives.
    pub fn bind_current_thread(&self) {
        let _ = self.thread.set(std::thread::current());
    }

    /// Takes everything queued.
    pub fn drain(&self, into: &mut Vec<Command>) {
        let mut queue = self.queue.lock().recover();
        std::mem::swap(&mut *queue, into);
    }

    /// Waits until `deadline` (the next tick) or a command, as described above.
    pub fn wait(&self, deadline: Option<Instant>, last_command: Instant) {
        let now = Instant::now();
        let until_deadline = deadline.map(|d| d.saturating_duration_since(now));
        if now.duration_since(last_command) < LINGER {
            std::thread::park_timeout(until_deadline.map_or(POLL, |d| d.min(POLL)));
            return;
        }
        self.state.store(PARKED, Ordering::SeqCst);
        let pending = !self.queue.lock().recover().is_empty();
        if !pending {
            match until_deadline {
                Some(d) => std::thread::park_timeout(d),
                None => std::thread::park(),
            }
        }
        self.state.store(AWAKE, Ordering::SeqCst);
    }

    /// The worker stopped: later sends fail, and what was queued since its last look is
    /// dropped (each caller waiting for an answer hears that the worker stopped).
    pub fn close(&self) {
        let late = {
            let mut queue = self.queue.lock().recover();
            self.closed.store(true, Ordering::Release);
            std::mem::take(&mut *queue)
        };
        drop(late);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_inbox_answers_every_waiting_caller_and_takes_nothing_more() {
        let inbox = Inbox::new();
        let (reply, mut queued) = tokio::sync::oneshot::channel();
        assert!(inbox.send(Command::Close {
            room: 1,
            reason: "queued before the close".into(),
            reply: Some(reply),
        }));
        inbox.close();
        // The worker never looked: the caller hears it stopped instead of waiting.
        assert!(matches!(
            queued.try_recv(),
            Err(tokio::sync::oneshot::error::TryRecvError::Closed)
        ));
        let (reply, _late) = tokio::sync::oneshot::channel();
        assert!(!inbox.send(Command::Close {
            room: 1,
            reason: "after the close".into(),
            reply: Some(reply),
        }));
        let mut left = Vec::new();
        inbox.drain(&mut left);
        assert!(left.is_empty());
    }
}
