//! Settings of the rooms subsystem.

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoomsConfig {
    /// Threads that run rooms (guest code never runs on the network's async runtime).
    /// 0 means half the CPU cores (at least one): the network runtime uses the rest.
    pub workers: usize,
    /// Tick rate of a room until its game asks for another.
    pub default_tick_hz: u32,
    /// How often a running room saves a checkpoint it can be restored from after a trap
    /// (and, with `persist`, after a restart of its node).
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// Checkpoints that changed also go to storage, with the node's sessions, so a node
    /// stopped or killed and started again on the same data brings its rooms back.
    pub persist: bool,
    /// A room that fails this many times within `restart_window` is closed instead of
    /// restored again.
    pub max_restarts: u32,
    #[serde(with = "humantime_serde")]
    pub restart_window: Duration,
    /// A room that has had no members this long closes (unless its game asked to stay
    /// open with `keep-open`).
    #[serde(with = "humantime_serde")]
    pub empty_timeout: Duration,
    /// Rooms one player may have created and still open on this node; past it,
    /// `create` is refused with `room_quota`. 0: no limit.
    pub max_rooms_per_player: usize,
    /// Messages into and out of each room kept for the designer console (`ludus dev`
    /// sets it); 0 keeps none.
    pub trace_messages: usize,
    /// The settings above that change while the node runs (`ludus config set`), shared
    /// by every room of the node: read them through [`RoomsConfig::live`].
    #[serde(skip)]
    pub live: Arc<LiveRooms>,
}

/// Rooms' settings that change live. `UNSET`: the configured value holds.
#[derive(Debug)]
pub struct LiveRooms {
    checkpoint_interval_ms: AtomicU64,
    max_rooms_per_player: AtomicU64,
}

const UNSET: u64 = u64::MAX;

impl Default for LiveRooms {
    fn default() -> Self {
        LiveRooms {
            checkpoint_interval_ms: AtomicU64::new(UNSET),
            max_rooms_per_player: AtomicU64::new(UNSET),
        }
    }
}

impl RoomsConfig {
    /// The checkpoint interval in force.
    pub fn checkpoint_interval(&self) -> Duration {
        match self.live.checkpoint_interval_ms.load(Ordering::Relaxed) {
            UNSET => self.checkpoint_interval,
            ms => Duration::from_millis(ms),
        }
    }

    /// The per-player room quota in force.
    pub fn max_rooms_per_player(&self) -> usize {
        match self.live.max_rooms_per_player.load(Ordering::Relaxed) {
            UNSET => self.max_rooms_per_player,
            quota => quota as usize,
        }
    }

    /// Changes the checkpoint interval of every room sharing this config.
    pub fn set_checkpoint_interval(&self, interval: Duration) {
        let ms = (interval.as_millis() as u64).clamp(1, UNSET - 1);
        self.live
            .checkpoint_interval_ms
            .store(ms, Ordering::Relaxed);
    }

    /// Changes the per-player room quota (0: no limit).
    pub fn set_max_rooms_per_player(&self, quota: usize) {
        let quota = (quota as u64).min(UNSET - 1);
        self.live
            .max_rooms_per_player
            .store(quota, Ordering::Relaxed);
    }
}

impl Default for RoomsConfig {
    fn default() -> Self {
        RoomsConfig {
            workers: 0,
            default_tick_hz: 20,
            checkpoint_interval: Duration::from_secs(1),
            persist: true,
            max_restarts: 3,
            restart_window: Duration::from_secs(60),
            empty_timeout: Duration::from_secs(60),
            max_rooms_per_player: 4,
            trace_messages: 0,
            live: Default::default(),
        }
    }
}

impl RoomsConfig {
    pub(crate) fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            // Measured on 2 cores under the arena benchmark: one room thread instead of
            // two used 10% less CPU for the same load (fewer threads waking to share
            // the cores with the network runtime); see bench/README.md.
            std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
        }
    }
}

/// Tick rates a game may ask for.
pub const TICK_HZ_RANGE: std::ops::RangeInclusive<u32> = 1..=120;
