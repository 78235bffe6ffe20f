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
    /// Instances the engine can hold at once (rooms, plus one per swap in progress).
    pub max_instances: u32,
}

impl Default for RuntimeLimits {
    fn default() -> Self {
        RuntimeLimits {
            message_deadline: Duration::from_millis(5),
            tick_deadline: Duration::from_millis(20),
            lifecycle_deadline: Duration::from_millis(50),
            memory_bytes: 64 << 20,
            max_instances: 2000,
        }
    }
}
