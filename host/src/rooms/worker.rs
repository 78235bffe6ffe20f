//! Room worker threads. Each owns a set of rooms and runs them on its own OS thread:
//! commands arrive on a channel, ticks come due from a timer queue. Guest code runs
//! only here, never on the async runtime that serves the network, and a runaway call
//! is cut off by its epoch deadline.

use bytes::Bytes;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::oneshot;

use super::config::RoomsConfig;
use super::error::{CreateError, JoinError, SwapError};
use super::events::PlayerSink;
use super::handle::{RoomHandle, RoomShared, SwapOutcome};
use super::inbox::Inbox;
use super::persist::RoomRecord;
use super::persist::{Checkpoints, RestoreRoom};
use super::room::Room;
use super::storage::{RoomStorage, refused};
use crate::lock::Recover;
use crate::runtime::{GameInstance, LeaveReason, Module, RoomInit, Runtime, wit_storage};

pub(super) enum Command {
    Create {
        key: u64,
        module: Arc<Module>,
        init: RoomInit,
        shared: Arc<RoomShared>,
        reply: oneshot::Sender<Result<(), CreateError>>,
    },
    /// Bring a room back from its checkpoint.
    Restore {
        key: u64,
        init: RoomInit,
        shared: Arc<RoomShared>,
        saved: Box<RestoreRoom>,
        reply: oneshot::Sender<Result<(), CreateError>>,
    },
    Join {
        room: u64,
        player: u64,
        name: String,
        sink: PlayerSink,
        /// Attach a held member (no word to the game) instead of joining.
        attach: bool,
        reply: oneshot::Sender<Result<(), JoinError>>,
    },
    Leave {
        room: u64,
        player: u64,
        reason: LeaveReason,
    },
    /// Hold a member's place (its node is gone) until `until`.
    Hold {
        room: u64,
        player: u64,
        until: std::time::Instant,
    },
    Message {
        room: u64,
        player: u64,
        bytes: Bytes,
    },
    Swap {
        room: u64,
        module: Arc<Module>,
        prepared: Option<Box<GameInstance>>,
        reply: oneshot::Sender<Result<SwapOutcome, SwapError>>,
    },
    Close {
        room: u64,
        reason: String,
        reply: Option<oneshot::Sender<()>>,
    },
    Shutdown {
        reason: String,
    },
    /// Stop the room to run on another node: its record and saved state, or why not.
    HandOff {
        room: u64,
        /// Members whose sessions move with the room.
        moving: Vec<u64>,
        /// The node it goes to, for the members that stay behind.
        to: Option<String>,
        reply: oneshot::Sender<Result<(RoomRecord, Vec<u8>), String>>,
    },
    /// A panic in the host's own room code (tests of fault containment).
    Fault {
        room: u64,
    },
    /// Answers to a batch of the room's storage requests.
    StorageResults {
        room: u64,
        results: Vec<wit_storage::StorageResult>,
    },
}

impl Command {
    /// The room a command is about.
    fn room(&self) -> Option<u64> {
        match self {
            Command::Create { key, .. } | Command::Restore { key, .. } => Some(*key),
            Command::Join { room, .. }
            | Command::Leave { room, .. }
            | Command::Hold { room, .. }
            | Command::Message { room, .. }
            | Command::Swap { room, .. }
            | Command::Close { room, .. }
            | Command::HandOff { room, .. }
            | Command::Fault { room }
            | Command::StorageResults { room, .. } => Some(*room),
            Command::Shutdown { .. } => None,
        }
    }
}

/// Room ids to handles, shared by the `Rooms` service and its workers (which remove a
/// room once it has closed).
pub(super) type Directory = Mutex<RoomDirectory>;

/// The node's rooms by id, and the ids of the rooms each player created, so the room
/// quota is checked without a pass over every room of the node on each create.
#[derive(Default)]
pub(super) struct RoomDirectory {
    rooms: HashMap<Arc<str>, RoomHandle>,
    by_creator: HashMap<u64, Vec<Arc<str>>>,
}

impl RoomDirectory {
    pub(super) fn get(&self, id: &str) -> Option<&RoomHandle> {
        self.rooms.get(id)
    }

    pub(super) fn contains_key(&self, id: &str) -> bool {
        self.rooms.contains_key(id)
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &RoomHandle> {
        self.rooms.values()
    }

    /// Adds a room (its id is not in the directory: callers check first).
    pub(super) fn insert(&mut self, id: Arc<str>, handle: RoomHandle) {
        if let Some(creator) = handle.shared.creator {
            self.by_creator.entry(creator).or_default().push(id.clone());
        }
        if let Some(old) = self.rooms.insert(id.clone(), handle) {
            self.forget_creator(&id, &old);
        }
    }

    pub(super) fn remove(&mut self, id: &str) -> Option<RoomHandle> {
        let handle = self.rooms.remove(id)?;
        self.forget_creator(id, &handle);
        Some(handle)
    }

    fn forget_creator(&mut self, id: &str, handle: &RoomHandle) {
        let Some(creator) = handle.shared.creator else {
            return;
        };
        if let Some(ids) = self.by_creator.get_mut(&creator) {
            if let Some(at) = ids.iter().position(|i| &**i == id) {
                ids.swap_remove(at);
            }
            if ids.is_empty() {
                self.by_creator.remove(&creator);
            }
        }
    }

    /// Rooms `player` created that are still open.
    pub(super) fn open_rooms_of(&self, player: u64) -> usize {
        self.by_creator.get(&player).map_or(0, |ids| {
            ids.iter()
                .filter_map(|id| self.rooms.get(id))
                .filter(|h| h.shared.info.lock().recover().closed.is_none())
                .count()
        })
    }
}

/// How early a tick may run to share a wake-up with another (see `run_due_ticks`).
const TICK_SLACK: std::time::Duration = std::time::Duration::from_millis(1);

pub(super) struct Worker {
    inbox: Arc<Inbox>,
    rooms: HashMap<u64, Room>,
    /// Due ticks: (when, room key). An entry whose time is not the room's `scheduled`
    /// is stale (the tick rate changed) and is skipped.
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    rt: Arc<Runtime>,
    cfg: Arc<RoomsConfig>,
    directory: Arc<Directory>,
    /// Rooms with messages to deliver once the current batch of commands is handled.
    to_deliver: Vec<u64>,
    /// Where rooms' storage requests go (`None`: answered `unavailable`).
    storage: Option<RoomStorage>,
    /// Where rooms' checkpoints go (`None`: rooms end with the node).
    persist: Option<Checkpoints>,
}

impl Worker {
    pub fn spawn(
        index: usize,
        rt: Arc<Runtime>,
        cfg: Arc<RoomsConfig>,
        directory: Arc<Directory>,
        storage: Option<RoomStorage>,
        persist: Option<Checkpoints>,
    ) -> std::io::Result<(Arc<Inbox>, std::thread::JoinHandle<()>)> {
        let inbox = Arc::new(Inbox::new());
        let worker = Worker {
            inbox: inbox.clone(),
            rooms: HashMap::new(),
            timers: BinaryHeap::new(),
            rt,
            cfg,
            directory,
            to_deliver: Vec::new(),
            storage,
            persist,
        };
        let thread = std::thread::Builder::new()
            .name(format!("ludus-rooms-{index}"))
            .spawn(move || worker.run())?;
        Ok((inbox, thread))
    }

    fn run(mut self) {
        self.inbox.bind_current_thread();
        let mut batch = Vec::new();
        let mut last_command = Instant::now();
        loop {
            self.inbox.drain(&mut batch);
            if !batch.is_empty() {
                last_command = Instant::now();
            }
            for command in batch.drain(..) {
                let room = command.room();
                if !self.contained(room, |w| w.handle(command)).unwrap_or(true) {
                    self.inbox.close();
                    return;
                }
            }
            self.deliver_messages();
            self.run_due_ticks();
            let next_tick = self.timers.peek().map(|Reverse((at, _))| *at);
            self.inbox.wait(next_tick, last_command);
        }
    }

    /// Runs every tick due now or within `TICK_SLACK`: rooms whose ticks fall close
    /// together share one wake-up of the worker instead of one each (with hundreds of
    /// rooms at 20 Hz the worker would otherwise wake thousands of times a second).
    fn run_due_ticks(&mut self) {
        let now = Instant::now();
        let cutoff = now + TICK_SLACK;
        while let Some(&Reverse((at, key))) = self.timers.peek() {
            if at > cutoff {
                break;
            }
            self.timers.pop();
            let Some(room) = self.rooms.get_mut(&key) else {
                continue;
            };
            if room.scheduled != Some(at) {
                continue;
            }
            room.scheduled = None;
            self.contained(Some(key), |w| {
                let started = Instant::now();
                if let Some(room) = w.rooms.get_mut(&key) {
                    room.tick(now);
                }
                w.hand_over_requests(key);
                if let Some(room) = w.rooms.get_mut(&key) {
                    room.tick_took(started.elapsed());
                }
                w.settle(key);
            });
        }
    }

    /// Runs `f`; if the host's own code panics in it (a bug in Ludus, never the game:
    /// guest faults are errors), the room it was about is closed with a reason its
    /// members receive, and the worker goes on with its other rooms.
    fn contained<R>(&mut self, room: Option<u64>, f: impl FnOnce(&mut Self) -> R) -> Option<R> {
        let span = room
            .and_then(|key| self.rooms.get(&key))
            .map_or_else(tracing::Span::none, |r| r.span.clone());
        let _in_room = span.enter();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self))) {
            Ok(r) => Some(r),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                self.abandon(room, &what);
                None
            }
        }
    }

    /// Closes a room after a host panic and forgets it (joins to it fail at once).
    fn abandon(&mut self, key: Option<u64>, what: &str) {
        let error_id = crate::csprng::hex::<4>();
        let Some(mut room) = key.and_then(|key| self.rooms.remove(&key)) else {
            tracing::error!(%error_id, "host error in a room worker: {what}");
            return;
        };
        let id = room.id.clone();
        tracing::error!(%error_id, room = &*id, "host error; the room is closed: {what}");
        // Out of the directory first: whoever hears of the close finds no room to join.
        {
            let mut directory = self.directory.lock().recover();
            if directory.get(&id).is_some_and(|h| Some(h.key) == key) {
                directory.remove(&id);
            }
        }
        let reason = format!("the room stopped on a server error (id {error_id})");
        let closed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| room.close(reason)));
        if closed.is_err() {
            tracing::error!(%error_id, room = &*id, "closing the room failed too");
        }
    }

    /// Hands each room the messages that came in the last batch of commands, in one
    /// call per room (rooms that hold messages until their tick are not listed).
    fn deliver_messages(&mut self) {
        let mut keys = std::mem::take(&mut self.to_deliver);
        for key in keys.drain(..) {
            self.contained(Some(key), |w| {
                if let Some(room) = w.rooms.get_mut(&key) {
                    room.deliver_messages();
                    w.settle(key);
                }
            });
        }
        self.to_deliver = keys;
    }

    /// Hands a room's storage requests to storage, off this thread: the room's requests
    /// of one tick go together (their object writes in one transaction).
    fn hand_over_requests(&mut self, key: u64) {
        let Some(room) = self.rooms.get_mut(&key) else {
            return;
        };
        let batch = room.take_requests();
        if batch.is_empty() {
            return;
        }
        match &self.storage {
            Some(storage) => storage.submit(key, batch, self.inbox.clone()),
            None => room.answered(
                batch
                    .into_iter()
                    .map(|(id, ..)| refused(id, "this node has no storage"))
                    .collect(),
            ),
        }
    }

    /// After anything happened to a room: drop it if it closed, else make sure its next
    /// tick is queued.
    fn settle(&mut self, key: u64) {
        let Some(room) = self.rooms.get_mut(&key) else {
            return;
        };
        if room.is_closed() {
            // What the game asked of storage before it closed is still carried out.
            self.hand_over_requests(key);
            let Some(room) = self.rooms.get_mut(&key) else {
                return;
            };
            let id = room.id.clone();
            self.rooms.remove(&key);
            let mut directory = self.directory.lock().recover();
            if directory.get(&id).is_some_and(|h| h.key == key) {
                directory.remove(&id);
            }
            return;
        }
        if room.scheduled != Some(room.next_tick) {
            room.scheduled = Some(room.next_tick);
            self.timers.push(Reverse((room.next_tick, key)));
        }
    }

    /// Returns false when the worker must stop.
    fn handle(&mut self, command: Command) -> bool {
        // Messages queued before a join, leave, swap or close reach the game first.
        let other_for = match &command {
            Command::Join { room, .. }
            | Command::Leave { room, .. }
            | Command::Hold { room, .. }
            | Command::Swap { room, .. }
            | Command::Close { room, .. }
            | Command::HandOff { room, .. } => Some(*room),
            Command::Create { .. }
            | Command::Restore { .. }
            | Command::Message { .. }
            | Command::Shutdown { .. }
            | Command::Fault { .. }
            | Command::StorageResults { .. } => None,
        };
        if let Some(key) = other_for
            && let Some(room) = self.rooms.get_mut(&key)
        {
            room.deliver_messages();
        }
        match command {
            Command::Create {
                key,
                module,
                init,
                shared,
                reply,
            } => {
                let result = Room::create(
                    self.rt.clone(),
                    self.cfg.clone(),
                    module,
                    init,
                    shared,
                    self.persist.clone(),
                );
                self.place(key, result, reply);
            }
            Command::Restore {
                key,
                init,
                shared,
                saved,
                reply,
            } => {
                let result = Room::restore(
                    self.rt.clone(),
                    self.cfg.clone(),
                    init,
                    shared,
                    self.persist.clone(),
                    *saved,
                );
                self.place(key, result, reply);
            }
            Command::Join {
                room,
                player,
                name,
                sink,
                attach,
                reply,
            } => {
                let result = match self.rooms.get_mut(&room) {
                    Some(r) if attach => r.attach(player, sink),
                    Some(r) => r.join(player, name, sink),
                    None => Err(JoinError::Closed("the room is closed".into())),
                };
                let _ = reply.send(result);
                self.settle(room);
            }
            Command::Leave {
                room,
                player,
                reason,
            } => {
                if let Some(r) = self.rooms.get_mut(&room) {
                    r.leave(player, reason);
                    self.settle(room);
                }
            }
            Command::Hold {
                room,
                player,
                until,
            } => {
                if let Some(r) = self.rooms.get_mut(&room) {
                    r.hold(player, until);
                }
            }
            Command::Message {
                room,
                player,
                bytes,
            } => {
                if let Some(r) = self.rooms.get_mut(&room) {
                    if r.queue_message(player, &bytes) {
                        self.to_deliver.push(room);
                    }
                    // A full queue was delivered at once, and the game may have closed.
                    self.settle(room);
                }
            }
            Command::Swap {
                room,
                module,
                prepared,
                reply,
            } => {
                let result = match self.rooms.get_mut(&room) {
                    Some(r) => r.swap(module, prepared.map(|p| *p)),
                    None => Err(SwapError::RoomClosed),
                };
                match &result {
                    Ok(outcome) => {
                        metrics::counter!("ludus_swaps_total", "result" => "ok").increment(1);
                        metrics::histogram!("ludus_swap_pause_seconds")
                            .record(outcome.pause.as_secs_f64());
                    }
                    Err(_) => {
                        metrics::counter!("ludus_swaps_total", "result" => "failed").increment(1)
                    }
                }
                let _ = reply.send(result);
                self.settle(room);
            }
            Command::Close {
                room,
                reason,
                reply,
            } => {
                if let Some(r) = self.rooms.get_mut(&room) {
                    r.close(reason);
                    self.settle(room);
                }
                if let Some(reply) = reply {
                    let _ = reply.send(());
                }
            }
            Command::HandOff {
                room,
                moving,
                to,
                reply,
            } => {
                let result = match self.rooms.get_mut(&room) {
                    Some(r) => r.hand_off(&moving, to.as_deref()),
                    None => Err("the room is closed".to_owned()),
                };
                let _ = reply.send(result);
                self.settle(room);
            }
            Command::Shutdown { reason } => {
                self.shutdown(&reason);
                return false;
            }
            Command::StorageResults { room, results } => {
                if let Some(r) = self.rooms.get_mut(&room) {
                    r.answered(results);
                    self.settle(room);
                }
            }
            Command::Fault { room } => {
                if self.rooms.contains_key(&room) {
                    panic!("a fault injected into room {room}'s host code");
                }
            }
        }
        true
    }

    /// A room made or brought back joins the worker's rooms.
    fn place(
        &mut self,
        key: u64,
        result: Result<Room, CreateError>,
        reply: oneshot::Sender<Result<(), CreateError>>,
    ) {
        match result {
            Ok(room) => {
                self.rooms.insert(key, room);
                let _ = reply.send(Ok(()));
                self.settle(key);
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// Closes every room; rooms kept in storage are suspended instead (a last
    /// checkpoint, kept for the next node on the same data).
    fn shutdown(&mut self, reason: &str) {
        let keys: Vec<u64> = self.rooms.keys().copied().collect();
        for key in keys {
            self.contained(Some(key), |w| {
                if let Some(room) = w.rooms.get_mut(&key) {
                    room.suspend(reason);
                }
                w.settle(key);
            });
        }
    }
}
