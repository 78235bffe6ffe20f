//! A room: one game instance, its members, its tick clock and its last checkpoint.
//!
//! A `Room` is owned by one worker thread (see `worker.rs`) and only ever touched there,
//! so it needs no locks. Every guest call goes through here; a failed call never
//! escapes: the room restores itself from its checkpoint on a fresh instance, or closes
//! and tells its players why.

use crate::lock::Recover;
use crate::mailbox::TrySendError;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::config::{RoomsConfig, TICK_HZ_RANGE};
use super::error::{CreateError, JoinError, SwapError};
use super::events::{PlayerSink, RoomEvent};
use super::handle::{RoomShared, SwapOutcome};
use super::persist::{Checkpoints, RestoreRoom};
use super::storage::{MAX_REQUESTS_IN_FLIGHT, Queued, refused};
use super::trace::Direction;
mod recovery;
mod saving;

use crate::runtime::{
    Effect, GameInstance, GuestError, LeaveReason, Message, Module, Refusal, RoomInit, Runtime,
    StorageRequest, wit_storage,
};

/// Most messages one `messages` call carries; a fuller queue is delivered at once.
pub const MAX_MESSAGES_PER_CALL: usize = 256;

struct Member {
    name: String,
    sink: PlayerSink,
}

/// A member the room came back with but cannot reach yet (its session is on another
/// node, which attaches it again): still a member for the game until it is attached or
/// `until` passes (then it leaves as `disconnected`). What the game sends it meanwhile
/// is kept (the last [`HELD_MESSAGES`]) and delivered when it is attached.
struct Held {
    name: String,
    until: Instant,
    kept: VecDeque<bytes::Bytes>,
}

/// Messages kept for a held member: at 20 ticks a second, 12.8 s of snapshots.
const HELD_MESSAGES: usize = 256;

impl Held {
    fn keep(&mut self, bytes: bytes::Bytes) {
        if self.kept.len() == HELD_MESSAGES {
            self.kept.pop_front();
        }
        self.kept.push_back(bytes);
    }
}

/// A state the room can be rebuilt from: what `save` returned, which game version
/// saved it, and who was a member then.
struct Checkpoint {
    state: Vec<u8>,
    version: String,
    members: BTreeSet<u64>,
}

pub(super) struct Room {
    pub id: Arc<str>,
    init: RoomInit,
    module: Arc<Module>,
    /// `None` only once the room is closed.
    instance: Option<GameInstance>,
    members: BTreeMap<u64, Member>,
    /// Members held for their sessions to attach them again (see [`Held`]).
    held: BTreeMap<u64, Held>,
    checkpoint: Option<Checkpoint>,
    shared: Arc<RoomShared>,
    rt: Arc<Runtime>,
    cfg: Arc<RoomsConfig>,
    tick_period: Duration,
    /// When the next tick is due; the worker's timer queue is keyed by it.
    pub next_tick: Instant,
    /// The tick time the worker has queued for this room, if any.
    pub scheduled: Option<Instant>,
    last_tick: Instant,
    last_checkpoint: Instant,
    /// When the game failed recently, to give up on a room that keeps failing.
    failures: VecDeque<Instant>,
    closed: bool,
    /// Reused between calls so applying effects does not allocate.
    effects: Vec<Effect>,
    /// Members' messages not yet given to the game, in arrival order.
    queued: Vec<Message>,
    /// The game asked for its messages just before each tick (`hold-messages`).
    hold_until_tick: bool,
    /// The game asked to stay open with no members (`keep-open`).
    keep_open: bool,
    /// Since when the room has had no members (it starts empty).
    empty_since: Option<Instant>,
    /// Storage requests the game made since the last tick, handed over after the next.
    requests: Vec<Queued>,
    /// Requests handed over and not answered yet.
    in_flight: usize,
    /// Answers to give the game just before its next tick.
    answers: Vec<wit_storage::StorageResult>,
    /// Where checkpoints also go, so the room outlives its node (`persist.rs`).
    pub(super) persist: Option<Checkpoints>,
    /// Hash of the checkpoint last handed to storage (an unchanged one is not written).
    pub(super) persisted: Option<u64>,
    /// Stopped with its node, to be restored: its checkpoint stays in storage.
    suspended: bool,
    /// Brought back from a checkpoint (not created here).
    pub(super) restored: bool,
    /// Where the room's tick durations are recorded (`/metrics`, by game).
    tick_histogram: metrics::Histogram,
    /// `room{id, game}`: the worker enters it for everything it does for the room, so
    /// every log line of the room names it.
    pub(super) span: tracing::Span,
}

fn period(hz: u32) -> Duration {
    Duration::from_secs(1) / hz.clamp(*TICK_HZ_RANGE.start(), *TICK_HZ_RANGE.end())
}

impl Room {
    /// Instantiates the game and runs `init`. Effects of `init` (tick rate, label) apply.
    pub fn create(
        rt: Arc<Runtime>,
        cfg: Arc<RoomsConfig>,
        module: Arc<Module>,
        init: RoomInit,
        shared: Arc<RoomShared>,
        persist: Option<Checkpoints>,
    ) -> Result<Room, CreateError> {
        let mut instance = rt.instantiate(&module, &init).map_err(CreateError::Guest)?;
        match instance.init(&init) {
            Ok(Ok(())) => {}
            Ok(Err(Refusal(reason))) => return Err(CreateError::Refused(reason)),
            Err(e) => return Err(CreateError::Guest(e)),
        }
        let mut room = Room::new(rt, cfg, module, init, shared, instance, persist);
        room.apply_effects();
        Ok(room)
    }

    /// Brings a room back from its checkpoint (see `persist.rs`): a fresh instance
    /// restores the saved state with the random stream where it was; members with a
    /// sink are members again without a join, the others are held for `saved.hold`
    /// for their sessions to attach them (or, with no hold, leave as `disconnected`).
    pub fn restore(
        rt: Arc<Runtime>,
        cfg: Arc<RoomsConfig>,
        init: RoomInit,
        shared: Arc<RoomShared>,
        persist: Option<Checkpoints>,
        mut saved: RestoreRoom,
    ) -> Result<Room, CreateError> {
        let module = saved.module.clone();
        let record = &saved.record;
        let mut instance = rt.instantiate(&module, &init).map_err(CreateError::Guest)?;
        instance.set_random_state(record.random);
        match instance.restore(&init, &saved.state, &record.state_version) {
            Ok(Ok(())) => {}
            Ok(Err(Refusal(reason))) => return Err(CreateError::Refused(reason)),
            Err(e) => return Err(CreateError::Guest(e)),
        }
        let mut room = Room::new(rt, cfg, module, init, shared, instance, persist);
        room.restored = true;
        room.hold_until_tick = record.hold_messages;
        room.keep_open = record.keep_open;
        let mut gone = Vec::new();
        for (id, name) in &record.members {
            match saved.sinks.remove(id) {
                Some(sink) => {
                    room.members.insert(
                        *id,
                        Member {
                            name: name.clone(),
                            sink,
                        },
                    );
                }
                None if saved.hold.is_zero() => gone.push(*id),
                None => {
                    room.held.insert(
                        *id,
                        Held {
                            name: name.clone(),
                            until: Instant::now() + saved.hold,
                            kept: VecDeque::new(),
                        },
                    );
                }
            }
        }
        room.checkpoint = Some(Checkpoint {
            state: std::mem::take(&mut saved.state),
            version: record.state_version.clone(),
            members: record.members.iter().map(|(id, _)| *id).collect(),
        });
        room.shared.update(|info| {
            info.label = record.label.clone();
            info.private = record.private;
        });
        room.set_tick_rate(record.tick_hz);
        room.seats_changed();
        room.apply_effects();
        for player in gone {
            if room.closed {
                break;
            }
            let result = room.instance().leave(player, LeaveReason::Disconnected);
            room.after_call(result);
        }
        Ok(room)
    }

    fn new(
        rt: Arc<Runtime>,
        cfg: Arc<RoomsConfig>,
        module: Arc<Module>,
        init: RoomInit,
        shared: Arc<RoomShared>,
        instance: GameInstance,
        persist: Option<Checkpoints>,
    ) -> Room {
        let now = Instant::now();
        let tick_period = period(cfg.default_tick_hz);
        let game = shared.info.lock().recover().game.clone();
        let span = tracing::info_span!("room", id = &*init.id, game = %game);
        let tick_histogram = metrics::histogram!("ludus_tick_duration_seconds", "game" => game);
        Room {
            span,
            id: init.id.clone(),
            init,
            module,
            instance: Some(instance),
            members: BTreeMap::new(),
            held: BTreeMap::new(),
            checkpoint: None,
            shared,
            rt,
            cfg,
            tick_period,
            next_tick: now + tick_period,
            scheduled: None,
            last_tick: now,
            last_checkpoint: now,
            failures: VecDeque::new(),
            closed: false,
            effects: Vec::new(),
            queued: Vec::new(),
            hold_until_tick: false,
            keep_open: false,
            empty_since: Some(now),
            requests: Vec::new(),
            in_flight: 0,
            answers: Vec::new(),
            persist,
            persisted: None,
            suspended: false,
            restored: false,
            tick_histogram,
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    fn instance(&mut self) -> &mut GameInstance {
        self.instance
            .as_mut()
            .expect("an open room always has an instance")
    }

    pub fn join(&mut self, player: u64, name: String, sink: PlayerSink) -> Result<(), JoinError> {
        if self.closed {
            return Err(JoinError::Closed("the room is closed".into()));
        }
        if self.members.contains_key(&player) || self.held.contains_key(&player) {
            return Err(JoinError::AlreadyJoined(player));
        }
        if let Some(held) = &self.shared.held
            && Instant::now() < held.until
            && !held.players.contains(&player)
        {
            let coming = held
                .players
                .iter()
                .filter(|p| !self.members.contains_key(p))
                .count();
            if self.members.len() + coming >= held.seats {
                return Err(JoinError::SeatsHeld);
            }
        }
        match self.instance().join(player, &name) {
            Ok(Ok(())) => {
                self.members.insert(player, Member { name, sink });
                self.seats_changed();
                self.apply_effects();
                Ok(())
            }
            Ok(Err(Refusal(reason))) => {
                self.apply_effects();
                Err(JoinError::Rejected(reason))
            }
            Err(e) => {
                self.recover(e.clone());
                Err(JoinError::Guest(e))
            }
        }
    }

    /// Gives a held member (see [`Held`]) its place back, with `sink` for its events,
    /// without a word to the game: for the game it never left.
    pub fn attach(&mut self, player: u64, sink: PlayerSink) -> Result<(), JoinError> {
        if self.closed {
            return Err(JoinError::Closed("the room is closed".into()));
        }
        if self.members.contains_key(&player) {
            return Err(JoinError::AlreadyJoined(player));
        }
        let held = self
            .held
            .remove(&player)
            .ok_or(JoinError::NotHeld(player))?;
        for bytes in held.kept {
            let _ = sink.try_send(RoomEvent::Message {
                room: self.id.clone(),
                bytes,
            });
        }
        self.members.insert(
            player,
            Member {
                name: held.name,
                sink,
            },
        );
        Ok(())
    }

    /// Holds a member's place until `until` (its session's node is gone; another node
    /// may attach it again): for the game it stays, and what it is sent is kept.
    pub fn hold(&mut self, player: u64, until: Instant) {
        if let Some(member) = self.members.remove(&player) {
            let kept = VecDeque::new();
            let name = member.name;
            self.held.insert(player, Held { name, until, kept });
        }
    }

    /// Every member for the game: attached ones and held ones.
    fn member_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.members.keys().chain(self.held.keys()).copied()
    }

    /// Held members whose time ran out leave the game as `disconnected`.
    fn release_held(&mut self, now: Instant) {
        if self.held.values().all(|h| h.until > now) {
            return;
        }
        let expired: Vec<u64> = self
            .held
            .iter()
            .filter(|(_, h)| h.until <= now)
            .map(|(id, _)| *id)
            .collect();
        for player in expired {
            if self.closed {
                return;
            }
            self.leave(player, LeaveReason::Disconnected);
        }
    }

    pub fn leave(&mut self, player: u64, reason: LeaveReason) {
        if self.closed
            || (self.members.remove(&player).is_none() && self.held.remove(&player).is_none())
        {
            return;
        }
        self.seats_changed();
        let result = self.instance().leave(player, reason);
        self.after_call(result);
    }

    /// Queues a member's message for the game. Returns true when the worker should
    /// deliver the queue once its current batch of commands is done (the first message
    /// queued by a room that does not hold messages until its tick); a full queue is
    /// delivered at once.
    pub fn queue_message(&mut self, player: u64, bytes: &[u8]) -> bool {
        if self.closed || !self.members.contains_key(&player) {
            return false;
        }
        if let Some(trace) = &self.shared.trace {
            trace.record(Direction::In, player.to_string(), bytes);
        }
        self.queued.push(Message {
            from: player,
            payload: bytes.to_vec(),
        });
        if self.queued.len() >= MAX_MESSAGES_PER_CALL {
            self.deliver_messages();
            return false;
        }
        !self.hold_until_tick && self.queued.len() == 1
    }

    /// Gives the queued messages to the game in one call. The worker calls it before
    /// any other command for the room and the room before each tick, so the game sees
    /// messages, joins and leaves in the order they came.
    pub fn deliver_messages(&mut self) {
        if self.queued.is_empty() {
            return;
        }
        let mut batch = std::mem::take(&mut self.queued);
        // The sender may have been removed since (kicked by a call, or too slow).
        batch.retain(|m| self.members.contains_key(&m.from));
        if !batch.is_empty() && !self.closed {
            let result = self.instance().messages(&batch);
            self.after_call(result);
        }
        // Nothing queues during a call (the worker is this thread): keep the allocation.
        batch.clear();
        self.queued = batch;
    }

    /// Runs a due tick and schedules the next one a period after it was due (not
    /// after the work), skipping ticks the room fell a whole period behind on.
    pub fn tick(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        let dt = now.saturating_duration_since(self.last_tick);
        self.last_tick = now;
        self.next_tick += self.tick_period;
        if self.next_tick <= now {
            self.next_tick = now + self.tick_period;
        }
        self.deliver_messages();
        if self.closed {
            return;
        }
        self.deliver_answers();
        if self.closed {
            return;
        }
        if !self.held.is_empty() {
            self.release_held(now);
            if self.closed {
                return;
            }
        }
        let result = self.instance().tick(dt);
        self.shared.ticks.fetch_add(1, Ordering::Relaxed);
        self.after_call(result);
        if !self.closed {
            self.close_if_idle(now);
        }
        if !self.closed
            && now.duration_since(self.last_checkpoint) >= self.cfg.checkpoint_interval()
        {
            self.checkpoint(now);
        }
    }

    /// Records how long the worker spent on the room's last tick.
    pub fn tick_took(&self, took: Duration) {
        self.tick_histogram.record(took.as_secs_f64());
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.shared.last_tick_nanos.store(nanos, Ordering::Relaxed);
    }

    fn after_call(&mut self, result: Result<(), GuestError>) {
        match result {
            Ok(()) => self.apply_effects(),
            Err(e) => self.recover(e),
        }
    }

    /// Swaps the game for `module`: save on the old instance, instantiate the new one
    /// (unless `prepared` already is one), restore with the old version. On failure the
    /// old instance keeps running.
    pub fn swap(
        &mut self,
        module: Arc<Module>,
        prepared: Option<GameInstance>,
    ) -> Result<SwapOutcome, SwapError> {
        if self.closed {
            return Err(SwapError::RoomClosed);
        }
        let started = Instant::now();
        let state = match self.instance().save() {
            Ok(Ok(state)) => state,
            Ok(Err(Refusal(reason))) => return Err(SwapError::Save(reason)),
            Err(e) => {
                let err = SwapError::Save(e.to_string());
                self.recover(e);
                return Err(err);
            }
        };
        let old_version = self.module.version.clone();
        let mut new = match prepared {
            Some(instance) => instance,
            None => self
                .rt
                .instantiate(&module, &self.init)
                .map_err(|e| SwapError::Instantiate(e.to_string()))?,
        };
        // The new version draws the numbers the old one would have drawn next.
        new.set_random_state(self.instance().random_state());
        match new.restore(&self.init, &state, &old_version) {
            Ok(Ok(())) => {}
            Ok(Err(Refusal(reason))) => return Err(SwapError::Restore(reason)),
            Err(e) => return Err(SwapError::Restore(e.to_string())),
        }
        let from = self.module.label();
        let to = module.label();
        self.instance = Some(new);
        self.module = module;
        let members = self.member_ids().collect();
        let random = self.instance().random_state();
        self.persist(&state, &old_version, random);
        self.checkpoint = Some(Checkpoint {
            state,
            version: old_version,
            members,
        });
        let pause = started.elapsed();
        self.shared.update(|info| {
            info.version = self.module.version.clone();
            info.module_sha256 = self.module.sha256_hex();
        });
        self.apply_effects();
        tracing::debug!(room = &*self.id, %from, %to, ?pause, "swapped");
        Ok(SwapOutcome {
            room: self.id.clone(),
            from,
            to,
            pause,
        })
    }

    /// Applies what the guest asked for, in order. Removing a member calls the game's
    /// `leave`, whose own effects are applied in turn.
    fn apply_effects(&mut self) {
        let mut effects = std::mem::take(&mut self.effects);
        while let Some(instance) = self.instance.as_mut() {
            effects.extend(instance.drain_effects());
            if effects.is_empty() || self.closed {
                break;
            }
            let mut gone: Vec<(u64, String, LeaveReason)> = Vec::new();
            for effect in effects.drain(..) {
                if self.closed {
                    // What a closing game asked of storage is still carried out.
                    if let Effect::Storage(id, request) = effect {
                        self.queue_request(id, request);
                    }
                    continue;
                }
                if let Some(trace) = &self.shared.trace {
                    trace_output(trace, &effect);
                }
                match effect {
                    Effect::Send(to, bytes) => {
                        if let Some(m) = self.members.get(&to) {
                            deliver(&self.id, to, m, bytes, &mut gone);
                        } else if let Some(h) = self.held.get_mut(&to) {
                            h.keep(bytes);
                        }
                    }
                    Effect::Broadcast(bytes) => {
                        for (&id, m) in &self.members {
                            deliver(&self.id, id, m, bytes.clone(), &mut gone);
                        }
                        for h in self.held.values_mut() {
                            h.keep(bytes.clone());
                        }
                    }
                    Effect::BroadcastExcept(except, bytes) => {
                        for (&id, m) in self.members.iter().filter(|(id, _)| **id != except) {
                            deliver(&self.id, id, m, bytes.clone(), &mut gone);
                        }
                        for (_, h) in self.held.iter_mut().filter(|(id, _)| **id != except) {
                            h.keep(bytes.clone());
                        }
                    }
                    Effect::Kick(player, reason) => {
                        gone.push((player, reason, LeaveReason::Kicked))
                    }
                    Effect::Close(reason) => self.close(reason),
                    Effect::Storage(id, request) => self.queue_request(id, request),
                    Effect::SetTickRate(hz) => self.set_tick_rate(hz),
                    Effect::SetLabel(label) => self.shared.update(|info| info.label = label),
                    Effect::HoldMessages(hold) => self.hold_until_tick = hold,
                    Effect::KeepOpen(keep) => self.keep_open = keep,
                    Effect::SetPrivate(private) => self.shared.update(|i| i.private = private),
                }
            }
            effects.clear();
            for (player, reason, why) in gone {
                if self.closed {
                    break;
                }
                self.remove(player, &reason, Some(why));
            }
        }
        effects.clear();
        self.effects = effects;
    }

    /// Queues a storage request for the next hand-over, or answers it at once when the
    /// room has too many in flight.
    fn queue_request(&mut self, id: u64, request: StorageRequest) {
        if self.requests.len() + self.in_flight >= MAX_REQUESTS_IN_FLIGHT {
            self.answers.push(refused(
                id,
                &format!("the room has {MAX_REQUESTS_IN_FLIGHT} storage requests in flight"),
            ));
            return;
        }
        let name = match &request {
            StorageRequest::SubmitScore { player, .. } => {
                self.members.get(player).map(|m| m.name.clone())
            }
            _ => None,
        };
        self.requests.push((id, request, name));
    }

    /// The storage requests to hand over now (they count as in flight until answered).
    pub fn take_requests(&mut self) -> Vec<Queued> {
        self.in_flight += self.requests.len();
        std::mem::take(&mut self.requests)
    }

    /// Answers to the room's storage requests: given to the game at once (the worker
    /// runs one thing at a time, so never inside another call), or just before the next
    /// tick for a game that holds its messages until the tick.
    pub fn answered(&mut self, results: Vec<wit_storage::StorageResult>) {
        self.in_flight = self.in_flight.saturating_sub(results.len());
        if self.closed {
            return;
        }
        self.answers.extend(results);
        if !self.hold_until_tick {
            self.deliver_answers();
        }
    }

    /// Gives the game the answers that came, in one call.
    fn deliver_answers(&mut self) {
        if self.answers.is_empty() || self.closed {
            return;
        }
        let answers = std::mem::take(&mut self.answers);
        let result = self.instance().storage_results(&answers);
        self.after_call(result);
    }

    /// Removes a member the host or the game threw out, tells it why, and (if `leave`
    /// says so) tells the game.
    fn remove(&mut self, player: u64, reason: &str, leave: Option<LeaveReason>) {
        match self.members.remove(&player) {
            Some(member) => {
                let _ = member.sink.try_send(RoomEvent::Kicked {
                    room: self.id.clone(),
                    reason: reason.to_owned(),
                });
            }
            // A held member kicked meanwhile is not attached again.
            None if self.held.remove(&player).is_some() => {}
            None => return,
        }
        self.seats_changed();
        if let Some(why) = leave {
            let result = self.instance().leave(player, why);
            if let Err(e) = result {
                self.recover(e);
            }
        }
    }

    fn set_tick_rate(&mut self, hz: u32) {
        let hz = hz.clamp(*TICK_HZ_RANGE.start(), *TICK_HZ_RANGE.end());
        self.tick_period = period(hz);
        self.next_tick = self.last_tick + self.tick_period;
        self.shared.update(|info| info.tick_hz = hz);
    }

    fn seats_changed(&mut self) {
        let seats = self.members.len() + self.held.len();
        self.empty_since = match (seats, self.empty_since) {
            (0, None) => Some(Instant::now()),
            (0, since) => since,
            _ => None,
        };
        let members = self.member_ids().collect();
        self.shared.update(|info| {
            info.seats = seats;
            info.members = members;
        });
    }

    /// Closes the room if it has been empty for its idle time and its game did not ask
    /// to stay open.
    fn close_if_idle(&mut self, now: Instant) {
        let timeout = self.cfg.empty_timeout;
        if let Some(since) = self.empty_since
            && !self.keep_open
            && now.saturating_duration_since(since) >= timeout
        {
            self.close(format!("nobody was in the room for {timeout:?}"));
        }
    }

    /// Stops the room with its node, to be restored by the next one: messages that came
    /// reach the game, a last checkpoint is taken (and handed to storage if it changed),
    /// and the room stops without a word to its members, whose sessions are kept too.
    pub fn suspend(&mut self, reason: &str) {
        if self.closed {
            return;
        }
        if self.persist.is_none() {
            self.close(reason.to_owned());
            return;
        }
        self.deliver_messages();
        if self.closed {
            return;
        }
        self.checkpoint(Instant::now());
        if self.closed {
            return;
        }
        self.suspended = true;
        self.members.clear();
        self.held.clear();
        self.close(reason.to_owned());
    }

    /// Closes the room: every member is told `reason`; the instance is dropped.
    pub fn close(&mut self, reason: String) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.instance = None;
        self.held.clear();
        if !self.suspended {
            self.forget();
        }
        tracing::info!(room = &*self.id, "room closed: {reason}");
        // Public info first: whoever hears of the close from the event sees it there too.
        self.shared.update(|info| {
            info.seats = 0;
            info.members.clear();
            info.closed = Some(reason.clone());
        });
        for (_, member) in std::mem::take(&mut self.members) {
            let _ = member.sink.try_send(RoomEvent::Closed {
                room: self.id.clone(),
                reason: reason.clone(),
            });
        }
    }
}

/// Records a game's message in the room's trace.
fn trace_output(trace: &super::trace::Trace, effect: &Effect) {
    let (to, bytes) = match effect {
        Effect::Send(to, bytes) => (format!("player {to}"), bytes),
        Effect::Broadcast(bytes) => ("everyone".to_owned(), bytes),
        Effect::BroadcastExcept(except, bytes) => (format!("everyone but {except}"), bytes),
        _ => return,
    };
    trace.record(Direction::Out, to, bytes);
}

/// Queues one event for a member; a full queue (a player too slow to follow) or a gone
/// receiver marks the member for removal.
fn deliver(
    room: &Arc<str>,
    id: u64,
    member: &Member,
    bytes: bytes::Bytes,
    gone: &mut Vec<(u64, String, LeaveReason)>,
) {
    match member.sink.try_send(RoomEvent::Message {
        room: room.clone(),
        bytes,
    }) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => gone.push((
            id,
            "too slow: the player's queue is full".into(),
            LeaveReason::Removed,
        )),
        Err(TrySendError::Closed(_)) => {
            gone.push((id, "disconnected".into(), LeaveReason::Disconnected))
        }
    }
}
