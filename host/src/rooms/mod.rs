//! Rooms: a room runs one game instance for its members, ticking at the game's rate on
//! the wall clock, and can have its game swapped live.
//!
//! [`Rooms`] is the service: it knows the installed games (name -> active module),
//! creates rooms on worker threads (`worker.rs`), finds them by id and swaps a game in
//! all its rooms. A [`RoomHandle`] talks to one room. Guest calls and their failures are
//! handled in `room.rs`; players receive [`RoomEvent`]s on the sink they joined with.

mod config;
mod error;
mod events;
mod games;
mod handle;
mod inbox;
mod persist;
mod room;
mod storage;
mod trace;
mod worker;

pub use config::RoomsConfig;
pub use error::{CreateError, GameSwapError, JoinError, SwapError};
pub use events::{PlayerEvents, PlayerSink, RoomEvent};
pub use games::SwapRecord;
pub use games::{GameInfo, GameSwapReport, RoomSwapResult, SwapPolicy};
pub use handle::{CheckpointInfo, LeaveReason, RoomHandle, RoomInfo, SwapOutcome};
pub use persist::{Checkpoints, RestoreRoom, RoomRecord};
pub use storage::{MAX_REQUESTS_IN_FLIGHT, RoomStorage};
pub use trace::{Direction, TracedMessage};

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::lock::Recover;
use crate::runtime::{Module, RoomInit, Runtime};
use games::Games;
use handle::RoomShared;
use inbox::Inbox;
use worker::{Command, Directory, Worker};

/// What to create: a room of `game`, optionally with an id, a JSON config and a seed.
#[derive(Clone, Debug, Default)]
pub struct CreateRoom {
    pub game: String,
    /// Generated when `None`.
    pub id: Option<String>,
    /// A JSON object; `{}` when `None`.
    pub config: Option<String>,
    /// Seed of the room's random stream; random when `None`.
    pub seed: Option<u64>,
    /// The player asking for the room, counted against `max_rooms_per_player`; `None`
    /// for rooms the host makes (matches).
    pub creator: Option<u64>,
    /// Seats held for matched players (rooms the matchmaker starts).
    pub held: Option<HeldSeats>,
}

/// Seats of a room held for the players a match put in it: until `until`, a player not
/// among `players` may join only while members plus the players still to come leave a
/// seat of `seats` free.
#[derive(Clone, Debug)]
pub struct HeldSeats {
    pub players: Vec<u64>,
    pub seats: usize,
    pub until: std::time::Instant,
}

/// The rooms of this node. Cheap to clone.
#[derive(Clone)]
pub struct Rooms {
    inner: Arc<Inner>,
}

struct Inner {
    rt: Arc<Runtime>,
    cfg: Arc<RoomsConfig>,
    workers: Vec<Arc<Inbox>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    directory: Arc<Directory>,
    games: Games,
    next_key: AtomicU64,
    next_worker: AtomicUsize,
    storage: Option<RoomStorage>,
    /// Rooms' checkpoints go to storage.
    kept: bool,
    /// New rooms are refused: the node drains (rooms restored or moved here still come).
    draining: std::sync::atomic::AtomicBool,
}

impl Rooms {
    /// Rooms whose games get `unavailable` for every storage request.
    pub fn new(rt: Arc<Runtime>, cfg: RoomsConfig) -> std::io::Result<Self> {
        Self::with_storage(rt, cfg, None)
    }

    /// Rooms whose games' storage requests go to `storage`.
    pub fn with_storage(
        rt: Arc<Runtime>,
        cfg: RoomsConfig,
        storage: Option<RoomStorage>,
    ) -> std::io::Result<Self> {
        Self::with_services(rt, cfg, storage, None)
    }

    /// Rooms whose games' storage requests go to `storage` and whose checkpoints go to
    /// `checkpoints` (when `cfg.persist`), so they outlive the node.
    pub fn with_services(
        rt: Arc<Runtime>,
        cfg: RoomsConfig,
        storage: Option<RoomStorage>,
        checkpoints: Option<Checkpoints>,
    ) -> std::io::Result<Self> {
        let checkpoints = checkpoints.filter(|_| cfg.persist);
        let cfg = Arc::new(cfg);
        let directory: Arc<Directory> = Arc::new(Mutex::new(Default::default()));
        let mut workers = Vec::new();
        let mut threads = Vec::new();
        for i in 0..cfg.worker_count() {
            let (tx, thread) = Worker::spawn(
                i,
                rt.clone(),
                cfg.clone(),
                directory.clone(),
                storage.clone(),
                checkpoints.clone(),
            )?;
            workers.push(tx);
            threads.push(thread);
        }
        Ok(Rooms {
            inner: Arc::new(Inner {
                rt,
                cfg,
                workers,
                threads: Mutex::new(threads),
                directory,
                games: Games::default(),
                next_key: AtomicU64::new(1),
                next_worker: AtomicUsize::new(0),
                kept: checkpoints.is_some(),
                storage,
                draining: Default::default(),
            }),
        })
    }

    /// Refuses new rooms from now on ([`CreateError::Draining`]), or takes them again.
    /// Rooms restored or moved here are not refused.
    pub fn set_draining(&self, draining: bool) {
        self.inner.draining.store(draining, Ordering::Relaxed);
    }

    /// Whether the node drains: it takes no new rooms or players.
    pub fn draining(&self) -> bool {
        self.inner.draining.load(Ordering::Relaxed)
    }

    /// Whether rooms are kept in storage (they outlive the node).
    pub fn kept(&self) -> bool {
        self.inner.kept
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.inner.rt
    }

    pub fn config(&self) -> &RoomsConfig {
        &self.inner.cfg
    }

    /// Installs `module` as the active version of `game` for rooms created from now on.
    /// Running rooms are untouched; use [`Rooms::swap_game`] to change them.
    pub fn install(&self, game: &str, module: Arc<Module>) {
        self.inner.games.install(game, module);
    }

    /// Records that a new version of `game` was refused (shown in [`Rooms::games`]).
    pub fn record_game_error(&self, game: &str, error: String) {
        self.inner.games.record_error(game, error);
    }

    /// The active module of a game.
    pub fn active_module(&self, game: &str) -> Option<Arc<Module>> {
        self.inner.games.active(game)
    }

    /// The config new rooms of `game` get when created without one (a JSON object;
    /// `None`: `{}`). Checked when a room is created.
    pub fn set_default_config(&self, game: &str, config: Option<String>) {
        self.inner
            .games
            .set_default_config(game, config.map(Into::into));
    }

    /// Whether a game of this name is installed.
    pub fn has_game(&self, game: &str) -> bool {
        self.inner.games.active(game).is_some()
    }

    /// Installed games with their active version and rooms per version.
    pub fn games(&self) -> Vec<GameInfo> {
        self.inner.games.list(&self.list())
    }

    /// The node's last swaps and refused versions, newest first.
    pub fn swap_log(&self) -> Vec<SwapRecord> {
        self.inner.games.swap_log()
    }

    /// Creates a room running the active version of `req.game`.
    pub async fn create(&self, req: CreateRoom) -> Result<RoomHandle, CreateError> {
        if self.draining() {
            return Err(CreateError::Draining);
        }
        let module = self
            .active_module(&req.game)
            .ok_or_else(|| CreateError::UnknownGame(req.game.clone()))?;
        let default = self.inner.games.default_config(&req.game);
        let given = req
            .config
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty());
        let config = match given.or(default.as_deref()) {
            None => "{}".to_owned(),
            Some(text) => match serde_json::from_str::<serde_json::Value>(text) {
                Ok(serde_json::Value::Object(_)) => text.to_owned(),
                Ok(other) => {
                    return Err(CreateError::BadConfig(format!(
                        "expected an object, got `{other}`"
                    )));
                }
                Err(e) => return Err(CreateError::BadConfig(e.to_string())),
            },
        };
        if let Some(id) = &req.id {
            check_room_id(id)?;
        }
        let key = self.inner.next_key.fetch_add(1, Ordering::Relaxed);
        let id: Arc<str> = req.id.unwrap_or_else(crate::csprng::hex::<8>).into();
        let init = RoomInit {
            id: id.clone(),
            config: config.into(),
            seed: req.seed.unwrap_or_else(crate::csprng::u64),
            dropped: Default::default(),
            requests: Default::default(),
        };
        let shared = Arc::new(RoomShared::new(
            init.clone(),
            &req.game,
            &module,
            self.inner.cfg.default_tick_hz,
            req.creator,
            req.held,
            self.inner.cfg.trace_messages,
        ));
        let worker =
            self.inner.next_worker.fetch_add(1, Ordering::Relaxed) % self.inner.workers.len();
        let handle = RoomHandle {
            key,
            id: id.clone(),
            tx: self.inner.workers[worker].clone(),
            shared,
        };
        let (reply, rx) = tokio::sync::oneshot::channel();
        let sent = {
            let mut directory = self.inner.directory.lock().recover();
            if directory.contains_key(&id) {
                return Err(CreateError::DuplicateId(id.to_string()));
            }
            let quota = self.inner.cfg.max_rooms_per_player();
            if let Some(player) = req.creator
                && quota > 0
            {
                let open = directory.open_rooms_of(player);
                if open >= quota {
                    return Err(CreateError::Quota(quota));
                }
            }
            directory.insert(id.clone(), handle.clone());
            // Queued under the lock: whoever finds the room in the directory queues its
            // commands on the same worker after this one.
            handle.tx.send(Command::Create {
                key,
                module,
                init,
                shared: handle.shared.clone(),
                reply,
            })
        };
        let result = if sent {
            rx.await.unwrap_or(Err(CreateError::ShuttingDown))
        } else {
            Err(CreateError::ShuttingDown)
        };
        match result {
            Ok(()) => Ok(handle),
            Err(e) => {
                self.inner.directory.lock().recover().remove(&id);
                Err(e)
            }
        }
    }

    /// Brings a room back from its checkpoint (a node started on the data of one that
    /// stopped or died): same id, game state, members, random stream, tick rate and
    /// label. See [`RestoreRoom`].
    pub async fn restore(&self, saved: RestoreRoom) -> Result<RoomHandle, CreateError> {
        check_room_id(&saved.id)?;
        let record = &saved.record;
        let key = self.inner.next_key.fetch_add(1, Ordering::Relaxed);
        let id: Arc<str> = saved.id.as_str().into();
        let init = RoomInit {
            id: id.clone(),
            config: record.config.as_str().into(),
            seed: record.seed,
            dropped: Default::default(),
            requests: Arc::new(AtomicU64::new(record.last_request)),
        };
        let held = record
            .held
            .as_ref()
            .map(|(players, seats, until)| HeldSeats {
                players: players.clone(),
                seats: *seats,
                until: persist::unix_ms_to_instant(*until),
            });
        let shared = Arc::new(RoomShared::new(
            init.clone(),
            &record.game,
            &saved.module,
            record.tick_hz,
            record.creator,
            held,
            self.inner.cfg.trace_messages,
        ));
        let worker =
            self.inner.next_worker.fetch_add(1, Ordering::Relaxed) % self.inner.workers.len();
        let handle = RoomHandle {
            key,
            id: id.clone(),
            tx: self.inner.workers[worker].clone(),
            shared,
        };
        let (reply, rx) = tokio::sync::oneshot::channel();
        let sent = {
            let mut directory = self.inner.directory.lock().recover();
            if directory.contains_key(&id) {
                return Err(CreateError::DuplicateId(id.to_string()));
            }
            directory.insert(id.clone(), handle.clone());
            handle.tx.send(Command::Restore {
                key,
                init,
                shared: handle.shared.clone(),
                saved: Box::new(saved),
                reply,
            })
        };
        let result = if sent {
            rx.await.unwrap_or(Err(CreateError::ShuttingDown))
        } else {
            Err(CreateError::ShuttingDown)
        };
        match result {
            Ok(()) => Ok(handle),
            Err(e) => {
                self.inner.directory.lock().recover().remove(&id);
                Err(e)
            }
        }
    }

    /// The open room with this id.
    pub fn get(&self, id: &str) -> Option<RoomHandle> {
        self.inner.directory.lock().recover().get(id).cloned()
    }

    /// Every open room.
    pub fn list(&self) -> Vec<RoomInfo> {
        let handles: Vec<RoomHandle> = self
            .inner
            .directory
            .lock()
            .recover()
            .values()
            .cloned()
            .collect();
        handles
            .iter()
            .map(RoomHandle::info)
            .filter(|info| info.closed.is_none())
            .collect()
    }

    /// Swaps `module` in as the active version of its game. With
    /// [`SwapPolicy::AllRooms`] every running room of the game is swapped at its next
    /// tick boundary (rooms on different workers in parallel) and the report holds each
    /// room's result; a room whose swap fails keeps its version, and if the swap failed
    /// in every room the previous version stays active for new rooms too (`rolled_back`).
    /// With [`SwapPolicy::NewRoomsOnly`] running rooms keep their version.
    pub async fn swap_game(
        &self,
        game: &str,
        module: Arc<Module>,
        policy: SwapPolicy,
    ) -> Result<GameSwapReport, GameSwapError> {
        let game = game.to_owned();
        let previous = self
            .inner
            .games
            .active(&game)
            .ok_or_else(|| GameSwapError::UnknownGame(game.clone()))?;
        self.inner.games.install(&game, module.clone());
        let mut results = Vec::new();
        if policy != SwapPolicy::NewRoomsOnly {
            let mut handles: Vec<RoomHandle> = {
                let directory = self.inner.directory.lock().recover();
                directory
                    .values()
                    .filter(|h| h.info().game == game)
                    .cloned()
                    .collect()
            };
            // Canary: the first rooms by id (a stable choice, the same on every retry).
            handles.sort_by(|a, b| a.id.cmp(&b.id));
            handles.truncate(policy.rooms_to_swap(handles.len()));
            // New instances are made here, off the rooms' threads, so each room pauses
            // only to save and restore. One that cannot be made here is made by the room.
            let rt = self.inner.rt.clone();
            let (m, inits) = (
                module.clone(),
                handles
                    .iter()
                    .map(|h| h.shared.init.clone())
                    .collect::<Vec<_>>(),
            );
            let prepared = tokio::task::spawn_blocking(move || {
                inits
                    .iter()
                    .map(|init| rt.instantiate(&m, init).ok())
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            let mut prepared = prepared.into_iter();
            let pending: Vec<_> = handles
                .iter()
                .map(|h| {
                    let instance = prepared.next().flatten();
                    (h.id.clone(), h.swap_prepared(module.clone(), instance))
                })
                .collect();
            for (room, swap) in pending {
                results.push(RoomSwapResult {
                    room,
                    result: swap.await,
                });
            }
        }
        // A version that failed in every room it reached is not kept for new rooms.
        let rolled_back = !results.is_empty() && results.iter().all(|r| r.result.is_err());
        if rolled_back {
            self.inner.games.install(&game, previous.clone());
        }
        let report = GameSwapReport {
            game,
            rolled_back,
            from: previous.label(),
            to: module.label(),
            policy,
            results,
        };
        tracing::info!(game = %report.game, ?policy, "game swapped: {}", report.summary());
        self.inner.games.record(&report);
        Ok(report)
    }

    /// Closes every room (telling players `reason`) and stops the workers. Rooms kept in
    /// storage take a last checkpoint instead and are left there for the next node.
    pub fn shutdown(&self, reason: &str) {
        for tx in &self.inner.workers {
            let _ = tx.send(Command::Shutdown {
                reason: reason.to_owned(),
            });
        }
        let threads = std::mem::take(&mut *self.inner.threads.lock().recover());
        for thread in threads {
            let _ = thread.join();
        }
    }

    /// Waits (up to `limit`) for the storage requests rooms handed over, those of rooms
    /// closed by [`Rooms::shutdown`] included.
    pub async fn settle_storage(&self, limit: std::time::Duration) {
        if let Some(storage) = &self.inner.storage {
            storage.settle(limit).await;
        }
    }
}

/// Room ids appear in URLs, logs and etcd keys: 1 to 128 characters from
/// `[A-Za-z0-9._:-]`.
pub fn check_room_id(id: &str) -> Result<(), CreateError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-');
    if id.is_empty() || id.len() > 128 {
        return Err(CreateError::BadId(format!(
            "must be 1 to 128 characters, got {}",
            id.len()
        )));
    }
    if let Some(c) = id.chars().find(|c| !ok_char(*c)) {
        return Err(CreateError::BadId(format!(
            "`{}` is not allowed (use letters, digits, . _ : -)",
            c.escape_debug()
        )));
    }
    Ok(())
}

impl Drop for Inner {
    fn drop(&mut self) {
        for tx in &self.workers {
            let _ = tx.send(Command::Shutdown {
                reason: "the room host stopped".to_owned(),
            });
        }
    }
}
