//! Installed games: which module new rooms of a game get, and how the last swap went.

use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use super::error::SwapError;
use super::handle::{RoomInfo, SwapOutcome};
use crate::lock::Recover;
use crate::percentile::nearest_rank;
use crate::runtime::Module;

/// Which rooms a game-wide swap touches.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SwapPolicy {
    /// Every running room swaps at its next tick boundary; new rooms get the new version.
    AllRooms,
    /// Running rooms finish on their version; only new rooms get the new one.
    NewRoomsOnly,
    /// This percentage of running rooms (at least one, the first by id) swaps now; the
    /// others finish on their version; new rooms get the new one. `{ canary = 10 }`.
    Canary(u8),
}

impl SwapPolicy {
    /// How many of `rooms` running rooms this policy swaps.
    pub fn rooms_to_swap(self, rooms: usize) -> usize {
        match self {
            SwapPolicy::AllRooms => rooms,
            SwapPolicy::NewRoomsOnly => 0,
            SwapPolicy::Canary(percent) => {
                let share = (rooms * usize::from(percent.min(100))).div_ceil(100);
                share.max(1).min(rooms)
            }
        }
    }
}

/// One room's result in a game-wide swap.
#[derive(Clone, Debug)]
pub struct RoomSwapResult {
    pub room: Arc<str>,
    pub result: Result<SwapOutcome, SwapError>,
}

/// The result of [`Rooms::swap_game`](super::Rooms::swap_game).
#[derive(Clone, Debug)]
pub struct GameSwapReport {
    pub game: String,
    /// The swap failed in every room, so the previous version was kept active.
    pub rolled_back: bool,
    pub from: String,
    pub to: String,
    pub policy: SwapPolicy,
    pub results: Vec<RoomSwapResult>,
}

impl GameSwapReport {
    pub fn failures(&self) -> impl Iterator<Item = (&str, &SwapError)> {
        self.results
            .iter()
            .filter_map(|r| r.result.as_ref().err().map(|e| (&*r.room, e)))
    }

    /// One line for logs and listings: `arena 1.0.0 -> 2.0.0: 12 rooms swapped, 0 failed`.
    pub fn summary(&self) -> String {
        let failed = self.failures().count();
        let mut line = format!(
            "{} -> {}: {} rooms swapped, {failed} failed",
            self.from,
            self.to,
            self.results.len() - failed
        );
        let mut pauses: Vec<std::time::Duration> = self
            .results
            .iter()
            .filter_map(|r| r.result.as_ref().ok().map(|o| o.pause))
            .collect();
        if !pauses.is_empty() {
            pauses.sort_unstable();
            let at = |q: f64| nearest_rank(&pauses, q).unwrap_or_default();
            line.push_str(&format!(
                "; pause per room p50 {:?} p99 {:?} max {:?}",
                at(0.5),
                at(0.99),
                pauses[pauses.len() - 1]
            ));
        }
        if let Some((room, e)) = self.failures().next() {
            line.push_str(&format!(" (room {room}: {e})"));
        }
        if self.rolled_back {
            line.push_str("; rolled back: new rooms keep the previous version");
        }
        line
    }
}

/// A game as listed for operators.
#[derive(Clone, Debug, Serialize)]
pub struct GameInfo {
    pub name: String,
    pub version: String,
    pub module_sha256: String,
    /// Open rooms per game version.
    pub rooms_per_version: BTreeMap<String, usize>,
    pub last_swap: Option<String>,
    /// Why the last new version was refused, if it was (the active one kept running).
    pub last_error: Option<String>,
}

struct Entry {
    active: Arc<Module>,
    /// Config (JSON object) for new rooms created without one.
    default_config: Option<Arc<str>>,
    last_swap: Option<String>,
    /// Why the last attempt to replace the active module failed, if it did.
    last_error: Option<String>,
}

/// One attempt to put a new version of a game in its rooms, for the swap log.
#[derive(Clone, Debug, Serialize)]
pub struct SwapRecord {
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    pub game: String,
    /// The version it went to (or was refused), `name version (sha256 prefix)`.
    pub to: String,
    /// Rooms that swapped.
    pub rooms: usize,
    /// The longest pause of a room, in microseconds (none when no room swapped).
    pub pause_us: Option<u64>,
    /// Why the version was refused or rolled back; `None`: it runs.
    pub error: Option<String>,
}

/// Swap log entries kept per node.
const SWAP_LOG: usize = 50;

#[derive(Default)]
pub(super) struct Games {
    games: Mutex<HashMap<String, Entry>>,
    /// The last swaps and refusals, newest last.
    swaps: Mutex<std::collections::VecDeque<SwapRecord>>,
}

impl Games {
    pub fn install(&self, game: &str, module: Arc<Module>) {
        let mut games = self.games.lock().recover();
        let entry = games.entry(game.to_owned()).or_insert_with(|| Entry {
            active: module.clone(),
            default_config: None,
            last_swap: None,
            last_error: None,
        });
        entry.active = module;
        entry.last_error = None;
    }

    pub fn set_default_config(&self, game: &str, config: Option<Arc<str>>) {
        if let Some(entry) = self.games.lock().recover().get_mut(game) {
            entry.default_config = config;
        }
    }

    pub fn default_config(&self, game: &str) -> Option<Arc<str>> {
        self.games
            .lock()
            .recover()
            .get(game)
            .and_then(|e| e.default_config.clone())
    }

    /// Records why a new version of `game` was not taken (the active one stays).
    pub fn record_error(&self, game: &str, error: String) {
        if let Some(entry) = self.games.lock().recover().get_mut(game) {
            entry.last_error = Some(error.clone());
        }
        self.log(SwapRecord {
            at_ms: super::persist::unix_ms(),
            game: game.to_owned(),
            to: String::new(),
            rooms: 0,
            pause_us: None,
            error: Some(error),
        });
    }

    fn log(&self, record: SwapRecord) {
        let mut swaps = self.swaps.lock().recover();
        if swaps.len() == SWAP_LOG {
            swaps.pop_front();
        }
        swaps.push_back(record);
    }

    /// The last swaps and refusals, newest first.
    pub fn swap_log(&self) -> Vec<SwapRecord> {
        self.swaps.lock().recover().iter().rev().cloned().collect()
    }

    pub fn active(&self, game: &str) -> Option<Arc<Module>> {
        self.games
            .lock()
            .recover()
            .get(game)
            .map(|e| e.active.clone())
    }

    pub fn record(&self, report: &GameSwapReport) {
        if let Some(entry) = self.games.lock().recover().get_mut(&report.game) {
            entry.last_swap = Some(report.summary());
        }
        let swapped = report.results.iter().filter_map(|r| r.result.as_ref().ok());
        let error = report
            .failures()
            .next()
            .map(|(room, e)| format!("room {room}: {e}"));
        self.log(SwapRecord {
            at_ms: super::persist::unix_ms(),
            game: report.game.clone(),
            to: report.to.clone(),
            rooms: swapped.clone().count(),
            pause_us: swapped.map(|o| o.pause.as_micros() as u64).max(),
            error: match (report.rolled_back, error) {
                (true, e) => Some(format!(
                    "rolled back: {}",
                    e.unwrap_or_else(|| "the swap failed".into())
                )),
                (false, e) => e,
            },
        });
    }

    pub fn list(&self, rooms: &[RoomInfo]) -> Vec<GameInfo> {
        let games = self.games.lock().recover();
        let mut list: Vec<GameInfo> = games
            .iter()
            .map(|(name, entry)| {
                let mut rooms_per_version = BTreeMap::new();
                for room in rooms.iter().filter(|r| r.game == *name) {
                    *rooms_per_version.entry(room.version.clone()).or_insert(0) += 1;
                }
                GameInfo {
                    name: name.clone(),
                    version: entry.active.version.clone(),
                    module_sha256: entry.active.sha256_hex(),
                    rooms_per_version,
                    last_swap: entry.last_swap.clone(),
                    last_error: entry.last_error.clone(),
                }
            })
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }
}
