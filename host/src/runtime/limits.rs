//! Limits on guest code: per-call deadlines and per-room memory.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How long each kind of guest call may run and how much memory a room may use.
/// A call past its deadline or a store past its memory cap traps that instance only.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeLimits {
    /// Deadline of `join`, `leave` and `message` calls.
    #[serde(with = "humantime_serde")]
    pub message_deadline: Duration,
    /// Deadline of a `tick` call: the tick budget.
    #[serde(with = "humantime_serde")]
    pub tick_deadline: Duration,
    /// Deadline of `init`, `save` and `restore`, which may do more work at once.
    #[serde(with = "humantime_serde")]
    pub lifecycle_deadline: Duration,
    /// Linear memory a room's instance may grow to, in bytes.
    pub memory_bytes: usize,
    /// Instances the engine can hold at once (rooms, plus one per swap in progress);
    /// the pooling allocator's totals of instances, memories and tables follow it.
    pub max_instances: u32,
    /// The largest message a game may `send` or `broadcast`: what a client and a node
    /// link are sure to take. A larger one is dropped at the call (counted, and logged
    /// once per room).
    pub max_message_bytes: usize,
    /// The largest state `save` may return; a larger one is refused like a failed
    /// save (no checkpoint, no swap).
    pub max_state_bytes: usize,
    /// Log lines a room may write per second (bursts up to the same number); excess
    /// lines are dropped and counted.
    pub max_log_lines_per_second: u32,
}

/// Longest room label, in bytes; a longer one is cut at a character boundary.
pub const MAX_LABEL_BYTES: usize = 256;
/// Longest close or kick reason a game may give, in bytes (cut likewise).
pub const MAX_REASON_BYTES: usize = 256;
/// Longest log line a game may write, in bytes (cut likewise).
pub const MAX_LOG_LINE_BYTES: usize = 4096;

/// `s` cut to at most `max` bytes at a character boundary, marked with `…` when cut.
pub fn capped(mut s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push('…');
    s
}

impl Default for RuntimeLimits {
    fn default() -> Self {
        RuntimeLimits {
            message_deadline: Duration::from_millis(5),
            tick_deadline: Duration::from_millis(20),
            lifecycle_deadline: Duration::from_millis(50),
            memory_bytes: 64 << 20,
            max_instances: 2000,
            max_message_bytes: 1 << 20,
            max_state_bytes: 16 << 20,
            max_log_lines_per_second: 100,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn capped_strings_end_on_a_character_boundary() {
        assert_eq!(super::capped("short".into(), 10), "short");
        let cut = super::capped("é".repeat(200), 101);
        assert!(cut.len() <= 101 && cut.ends_with('…'), "{cut}");
        assert!(cut.starts_with("éé"));
    }
}
