//! One game instance: a store and the guest's exports, called one bounded call at a time.
//!
//! Every call gets an epoch deadline; the store has a memory cap. A call that traps,
//! runs out of time or out of memory returns a [`GuestError`] and poisons the instance:
//! a trapped instance is never entered again, the room builds a fresh one.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::{Store, Trap};

use super::bindings::v3::ludus::game::storage::StorageResult;
use super::bindings::v3::ludus::game::types::{LeaveReason, Message, Player};
use super::bindings::{v2, v3};
use super::epoch::{Ticker, epochs};
use super::module::{Module, Pre};
use super::room_data::{Effect, RoomData, RoomInit};
use super::runtime::Runtime;

/// Which export was called.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Call {
    Instantiate,
    Describe,
    Init,
    Join,
    Leave,
    Messages,
    StorageResults,
    Tick,
    Save,
    Restore,
}

impl Call {
    const ALL: [Call; 10] = [
        Call::Instantiate,
        Call::Describe,
        Call::Init,
        Call::Join,
        Call::Leave,
        Call::Messages,
        Call::StorageResults,
        Call::Tick,
        Call::Save,
        Call::Restore,
    ];

    /// `ludus_guest_call_seconds{call}` for this call, registered once per process.
    fn histogram(self) -> &'static metrics::Histogram {
        static HISTOGRAMS: std::sync::LazyLock<Vec<metrics::Histogram>> = std::sync::LazyLock::new(
            || {
                Call::ALL
                    .iter()
                    .map(|c| metrics::histogram!("ludus_guest_call_seconds", "call" => c.to_string()))
                    .collect()
            },
        );
        &HISTOGRAMS[self as usize]
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Call::Instantiate => "instantiate",
            Call::Describe => "describe",
            Call::Init => "init",
            Call::Join => "join",
            Call::Leave => "leave",
            Call::Messages => "messages",
            Call::StorageResults => "storage-results",
            Call::Tick => "tick",
            Call::Save => "save",
            Call::Restore => "restore",
        })
    }
}

/// How a guest call failed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum GuestErrorKind {
    /// The call ran past its deadline.
    Deadline,
    /// The instance tried to grow its memory past the room's cap.
    Memory,
    /// The game panicked (its message is in the error's detail).
    Panic,
    /// Any other trap.
    Trap,
    /// The instance had already failed and cannot be entered again.
    Poisoned,
}

/// A failed guest call. The instance it came from is dead.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{call} {}", self.describe())]
pub struct GuestError {
    pub call: Call,
    pub kind: GuestErrorKind,
    pub detail: String,
}

impl GuestError {
    fn describe(&self) -> String {
        match self.kind {
            GuestErrorKind::Deadline => format!("ran past its deadline ({})", self.detail),
            GuestErrorKind::Memory => format!("exceeded the room's memory cap ({})", self.detail),
            GuestErrorKind::Panic => format!("panicked: {}", self.detail),
            GuestErrorKind::Trap => format!("trapped: {}", self.detail),
            GuestErrorKind::Poisoned => "called on an instance that already failed".to_owned(),
        }
    }

    fn classify(
        call: Call,
        err: wasmtime::Error,
        panic_log: Option<String>,
        deadline: Duration,
    ) -> Self {
        // The full error carries the guest's wasm backtrace: log it, and keep the root
        // cause (the trap or the host's reason) for the message people see.
        tracing::debug!(%call, "guest call failed: {err:?}");
        let cause = err.root_cause().to_string();
        let (kind, detail) = match err.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => (
                GuestErrorKind::Deadline,
                format!("{} ms", deadline.as_millis()),
            ),
            _ if cause.contains("growing memory") => (GuestErrorKind::Memory, cause),
            _ => match panic_log {
                Some(msg) => (GuestErrorKind::Panic, msg),
                None => (GuestErrorKind::Trap, cause),
            },
        };
        GuestError { call, kind, detail }
    }
}

/// A game's exports, by the contract it was built for.
enum Exports {
    V3(v3::Game),
    V2(v2::Game),
}

/// Calls the same export on either contract's bindings (their signatures agree: 0.2.0
/// shares the current contract's types).
macro_rules! either {
    ($game:expr, $store:expr, $method:ident ( $($arg:expr),* )) => {
        match $game {
            Exports::V3(g) => g.ludus_game_room().$method($store $(, $arg)*),
            Exports::V2(g) => g.ludus_game_room().$method($store $(, $arg)*),
        }
    };
}

/// A live game instance of one module, owned by one room.
pub struct GameInstance {
    store: Store<RoomData>,
    game: Exports,
    module: Arc<Module>,
    deadlines: Deadlines,
    poisoned: bool,
    max_state_bytes: usize,
}

#[derive(Clone)]
struct Deadlines {
    /// The message and tick deadlines, which may change while the instance lives.
    live: Arc<super::runtime::LiveDeadlines>,
    lifecycle: Duration,
    /// Counts each call as running, so the epoch advances while it does.
    ticker: Arc<Ticker>,
}

impl GameInstance {
    pub(super) fn new(
        rt: &Runtime,
        module: &Arc<Module>,
        room: &RoomInit,
    ) -> Result<Self, GuestError> {
        let limits = rt.limits();
        let data = RoomData::new(room, limits);
        let mut store = Store::new(rt.engine(), data);
        store.limiter(|data| &mut data.limits);
        store.epoch_deadline_trap();
        // Instantiating runs the module's start code: a call like any other.
        let running = rt.ticker().enter();
        store.set_epoch_deadline(epochs(limits.lifecycle_deadline));
        let game = match &module.pre {
            Pre::V3(pre) => pre.instantiate(&mut store).map(Exports::V3),
            Pre::V2(pre) => pre.instantiate(&mut store).map(Exports::V2),
        };
        drop(running);
        let game = game.map_err(|e| {
            if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
                .is_some()
            {
                return GuestError {
                    call: Call::Instantiate,
                    kind: GuestErrorKind::Trap,
                    detail: format!(
                        "the node runs as many game instances as it may: \
                         runtime.max_instances ({}); {e}",
                        limits.max_instances
                    ),
                };
            }
            GuestError::classify(Call::Instantiate, e, None, limits.lifecycle_deadline)
        })?;
        Ok(GameInstance {
            store,
            game,
            module: module.clone(),
            deadlines: Deadlines {
                live: rt.deadlines().clone(),
                lifecycle: limits.lifecycle_deadline,
                ticker: rt.ticker().clone(),
            },
            poisoned: false,
            max_state_bytes: limits.max_state_bytes,
        })
    }

    /// Where the room's random stream is in this instance (readable after a failure).
    pub fn random_state(&self) -> u64 {
        self.store.data().random_state()
    }

    /// Continues the room's random stream from `state` (another instance's position).
    pub fn set_random_state(&mut self, state: u64) {
        self.store.data_mut().set_random_state(state);
    }

    pub fn module(&self) -> &Arc<Module> {
        &self.module
    }

    /// Runs one export under its deadline. On failure the instance is poisoned.
    fn call<R>(
        &mut self,
        call: Call,
        f: impl FnOnce(&Exports, &mut Store<RoomData>) -> wasmtime::Result<R>,
    ) -> Result<R, GuestError> {
        self.call_within(call, self.deadline(call, 1), f)
    }

    /// A call's deadline; a `messages` call carrying `messages` messages gets the
    /// message deadline for each (at most the lifecycle deadline, at least one message's).
    fn deadline(&self, call: Call, messages: u32) -> Duration {
        let d = &self.deadlines;
        match call {
            Call::Join | Call::Leave => d.live.message(),
            Call::Messages | Call::StorageResults => {
                let message = d.live.message();
                message
                    .saturating_mul(messages.max(1))
                    .min(d.lifecycle)
                    .max(message)
            }
            Call::Tick => d.live.tick(),
            _ => d.lifecycle,
        }
    }

    fn call_within<R>(
        &mut self,
        call: Call,
        deadline: Duration,
        f: impl FnOnce(&Exports, &mut Store<RoomData>) -> wasmtime::Result<R>,
    ) -> Result<R, GuestError> {
        if self.poisoned {
            return Err(GuestError {
                call,
                kind: GuestErrorKind::Poisoned,
                detail: String::new(),
            });
        }
        let running = self.deadlines.ticker.enter();
        self.store.set_epoch_deadline(epochs(deadline));
        let data = self.store.data_mut();
        data.last_error_log = None;
        data.consoles.start_call();
        data.output_bytes = 0;
        let started = std::time::Instant::now();
        let result = f(&self.game, &mut self.store);
        drop(running);
        call.histogram().record(started.elapsed().as_secs_f64());
        result.map_err(|err| {
            self.poisoned = true;
            let data = self.store.data_mut();
            let panic_log = data
                .last_error_log
                .take()
                .or_else(|| data.consoles.take_error());
            GuestError::classify(call, err, panic_log, deadline)
        })
    }

    /// The game's `(name, version)`.
    pub fn describe(&mut self) -> Result<(String, String), GuestError> {
        self.call(Call::Describe, |g, s| either!(g, s, call_describe()))
    }

    pub fn init(&mut self, room: &RoomInit) -> Result<Result<(), Refusal>, GuestError> {
        let room = room.to_wit();
        self.call(Call::Init, |g, s| either!(g, s, call_init(&room)))
            .map(refused)
    }

    pub fn join(&mut self, id: u64, name: &str) -> Result<Result<(), Refusal>, GuestError> {
        let player = Player {
            id,
            name: name.to_owned(),
        };
        self.call(Call::Join, |g, s| either!(g, s, call_join(&player)))
            .map(refused)
    }

    pub fn leave(&mut self, id: u64, reason: LeaveReason) -> Result<(), GuestError> {
        self.call(Call::Leave, |g, s| either!(g, s, call_leave(id, reason)))
    }

    /// Delivers a batch of members' messages in one call (see [`Self::deadline`]).
    pub fn messages(&mut self, batch: &[Message]) -> Result<(), GuestError> {
        let n = u32::try_from(batch.len()).unwrap_or(u32::MAX);
        let deadline = self.deadline(Call::Messages, n);
        self.call_within(Call::Messages, deadline, |g, s| {
            either!(g, s, call_messages(batch))
        })
    }

    /// Delivers answers to the room's storage requests in one call. A game built for
    /// 0.2.0 makes no requests; answers to another instance's requests are dropped.
    pub fn storage_results(&mut self, results: &[StorageResult]) -> Result<(), GuestError> {
        let n = u32::try_from(results.len()).unwrap_or(u32::MAX);
        let deadline = self.deadline(Call::StorageResults, n);
        self.call_within(Call::StorageResults, deadline, |g, s| match g {
            Exports::V3(g) => g.ludus_game_room().call_storage_results(s, results),
            Exports::V2(_) => Ok(()),
        })
    }

    pub fn tick(&mut self, dt: Duration) -> Result<(), GuestError> {
        let micros = dt.as_micros().min(u128::from(u64::MAX)) as u64;
        self.call(Call::Tick, |g, s| either!(g, s, call_tick(micros)))
    }

    /// The game's state; a state over `max_state_bytes` counts as a refusal.
    pub fn save(&mut self) -> Result<Result<Vec<u8>, Refusal>, GuestError> {
        let max = self.max_state_bytes;
        let saved = self
            .call(Call::Save, |g, s| either!(g, s, call_save()))
            .map(refused)?;
        Ok(saved.and_then(|state| match state.len() {
            n if n > max => Err(Refusal(format!(
                "the saved state is {n} bytes, over the limit of {max}"
            ))),
            _ => Ok(state),
        }))
    }

    pub fn restore(
        &mut self,
        room: &RoomInit,
        state: &[u8],
        from_version: &str,
    ) -> Result<Result<(), Refusal>, GuestError> {
        let room = room.to_wit();
        self.call(Call::Restore, |g, s| {
            either!(g, s, call_restore(&room, state, from_version))
        })
        .map(refused)
    }

    /// The effects the guest asked for since the last drain, in order.
    pub fn drain_effects(&mut self) -> std::vec::Drain<'_, Effect> {
        self.store.data_mut().effects.drain(..)
    }
}

/// A game's own "no" (`result<_, string>` in the contract): it ran fine and declined,
/// with its reason (a full room, state it cannot read, ...).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

fn refused<T>(answer: Result<T, String>) -> Result<T, Refusal> {
    answer.map_err(Refusal)
}
