//! What a room's store holds: the effects a guest asked for during a call (drained by
//! the room after each call), its seeded random stream, its memory limiter and a WASI
//! context that grants nothing but the clocks, the room's random stream and the room
//! log (`wasi.rs`).
//!
//! Host functions never act directly: `send`, `kick`, `close`... append an [`Effect`],
//! and the room applies them in order once the call returns. A guest call therefore
//! cannot re-enter the room, and a trap mid-call leaves the room's members untouched.

use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;
use std::time::{SystemTime, UNIX_EPOCH};
use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::v2;
use super::bindings::v3::ludus::game::{host, storage, types};
use super::limits::{MAX_LABEL_BYTES, MAX_LOG_LINE_BYTES, MAX_REASON_BYTES, RuntimeLimits, capped};
use super::wasi::{Consoles, RoomRng};
use crate::rate::RateLimit;

/// Message bytes one guest call may queue. Past it the call traps: a game cannot make
/// the host buffer without bound inside one call's deadline.
pub const MAX_OUTPUT_PER_CALL: usize = 4 << 20;

/// A storage request a guest made (`ludus:game/storage`), in the contract's types; the
/// room hands it to storage off its thread and the answer comes back with its id.
#[derive(Clone, Debug)]
pub enum StorageRequest {
    Read(storage::ObjectKey),
    Write(storage::ObjectWrite),
    Delete(storage::ObjectKey, storage::Condition),
    List {
        collection: String,
        owner: Option<u64>,
        limit: u32,
        cursor: Option<String>,
    },
    DefineLeaderboard(storage::Leaderboard),
    SubmitScore {
        board: String,
        player: u64,
        score: i64,
        subscore: i64,
        metadata: Option<String>,
    },
    Top {
        board: String,
        limit: u32,
        cursor: Option<String>,
    },
    Around {
        board: String,
        player: u64,
        limit: u32,
    },
}

impl StorageRequest {
    /// Bytes the request carries (counted against the call's output cap).
    fn size(&self) -> usize {
        let key = |k: &storage::ObjectKey| k.collection.len() + k.key.len();
        match self {
            StorageRequest::Read(k) | StorageRequest::Delete(k, _) => key(k),
            StorageRequest::Write(w) => key(&w.at) + w.value.len(),
            StorageRequest::List {
                collection, cursor, ..
            } => collection.len() + cursor.as_ref().map_or(0, String::len),
            StorageRequest::DefineLeaderboard(b) => b.id.len(),
            StorageRequest::SubmitScore {
                board, metadata, ..
            } => board.len() + metadata.as_ref().map_or(0, String::len),
            StorageRequest::Top { board, cursor, .. } => {
                board.len() + cursor.as_ref().map_or(0, String::len)
            }
            StorageRequest::Around { board, .. } => board.len(),
        }
    }
}

/// Something a guest asked the host to do, in the order it asked.
#[derive(Clone, Debug)]
pub enum Effect {
    Send(u64, Bytes),
    Broadcast(Bytes),
    BroadcastExcept(u64, Bytes),
    Kick(u64, String),
    Close(String),
    SetTickRate(u32),
    SetLabel(String),
    HoldMessages(bool),
    KeepOpen(bool),
    SetPrivate(bool),
    /// A storage request and the id the guest was given for it.
    Storage(u64, StorageRequest),
}

/// What a room's games lost to the host's caps, over every instance the room had.
#[derive(Debug, Default)]
pub struct Dropped {
    /// Messages over `max_message_bytes`.
    pub messages: AtomicU64,
    /// Log lines over `max_log_lines_per_second`.
    pub log_lines: AtomicU64,
    /// The room's log already says that messages are being dropped.
    told: AtomicBool,
}

/// A room's identity as the guest sees it on `init` and `restore`.
#[derive(Clone, Debug)]
pub struct RoomInit {
    pub id: Arc<str>,
    /// JSON text; `{}` when the room was created without a config.
    pub config: Arc<str>,
    pub seed: u64,
    /// Shared by every instance of the room.
    pub dropped: Arc<Dropped>,
    /// The room's last storage request id, shared by every instance of the room so
    /// that an answer never goes to the wrong request after a swap or a restore.
    pub requests: Arc<AtomicU64>,
}

impl RoomInit {
    /// The room a module's trial instance believes it is in.
    pub(super) fn trial() -> Self {
        RoomInit {
            id: "trial".into(),
            config: "{}".into(),
            seed: 0,
            dropped: Arc::default(),
            requests: Arc::default(),
        }
    }

    pub(super) fn to_wit(&self) -> types::RoomInit {
        types::RoomInit {
            id: self.id.to_string(),
            config: self.config.to_string(),
            seed: self.seed,
        }
    }
}

pub struct RoomData {
    pub(super) effects: Vec<Effect>,
    /// Message bytes queued in `effects` during the current call.
    pub(super) output_bytes: usize,
    /// The last error-level line the guest logged during the current call: a panicking
    /// guest logs its panic message there just before it traps.
    pub(super) last_error_log: Option<String>,
    room_id: Arc<str>,
    requests: Arc<AtomicU64>,
    rng: RoomRng,
    /// The game's stdout and stderr, into the room log.
    pub(super) consoles: Consoles,
    dropped: Arc<Dropped>,
    max_message_bytes: usize,
    log_rate: RateLimit,
    pub(super) limits: StoreLimits,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl RoomData {
    pub(super) fn new(room: &RoomInit, limits: &RuntimeLimits) -> Self {
        let per_second = limits.max_log_lines_per_second;
        let rng = RoomRng::new(room.seed);
        let consoles = Consoles::new(room.id.clone(), room.dropped.clone(), per_second);
        // No preopened directories, environment, arguments, sockets or stdin: a game
        // reads the host's clocks and the room's random stream, and writes to the room
        // log (see `wasi.rs`).
        let wasi = WasiCtx::builder()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .stdout(consoles.stdout.clone())
            .stderr(consoles.stderr.clone())
            .secure_random(rng.clone())
            .insecure_random(rng.clone())
            .insecure_random_seed(u128::from(room.seed))
            .build();
        RoomData {
            effects: Vec::new(),
            output_bytes: 0,
            last_error_log: None,
            room_id: room.id.clone(),
            requests: room.requests.clone(),
            rng: rng.clone(),
            consoles,
            dropped: room.dropped.clone(),
            max_message_bytes: limits.max_message_bytes,
            log_rate: RateLimit::with_burst(f64::from(per_second), per_second, Instant::now()),
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.memory_bytes)
                .trap_on_grow_failure(true)
                .build(),
            wasi,
            table: ResourceTable::new(),
        }
    }
}

impl WasiView for RoomData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl RoomData {
    /// Where the room's random stream is: a new instance of the room continues from
    /// here (after a live swap or a restore), so a game never sees a number twice.
    pub(super) fn random_state(&self) -> u64 {
        self.rng.state()
    }

    pub(super) fn set_random_state(&mut self, state: u64) {
        self.rng.set_state(state);
    }

    /// Counts a message against the per-call output cap; `None` if it is over what a
    /// client can receive (dropped, counted, and logged once per room).
    fn output(&mut self, msg: Vec<u8>) -> wasmtime::Result<Option<Bytes>> {
        if msg.len() > self.max_message_bytes {
            let n = self.dropped.messages.fetch_add(1, Ordering::Relaxed) + 1;
            if !self.dropped.told.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    room = &*self.room_id,
                    "the game sent a message of {} bytes, over the limit of {}: dropped \
                     (this and later ones are counted in the room's `dropped_messages`; {n} so far)",
                    msg.len(),
                    self.max_message_bytes
                );
            }
            return Ok(None);
        }
        self.output_bytes += msg.len();
        if self.output_bytes > MAX_OUTPUT_PER_CALL {
            wasmtime::bail!(
                "the game queued more than {} MiB of messages in one call",
                MAX_OUTPUT_PER_CALL >> 20
            );
        }
        Ok(Some(Bytes::from(msg)))
    }

    /// Queues a storage request and gives its id. Its bytes count against the call's
    /// output cap, so one call cannot queue without bound.
    fn request(&mut self, request: StorageRequest) -> wasmtime::Result<u64> {
        self.output_bytes += request.size();
        if self.output_bytes > MAX_OUTPUT_PER_CALL {
            wasmtime::bail!(
                "the game queued more than {} MiB of messages and storage requests in one call",
                MAX_OUTPUT_PER_CALL >> 20
            );
        }
        let id = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        self.effects.push(Effect::Storage(id, request));
        Ok(id)
    }
}

impl storage::Host for RoomData {
    fn read(&mut self, at: storage::ObjectKey) -> wasmtime::Result<u64> {
        self.request(StorageRequest::Read(at))
    }

    fn write(&mut self, object: storage::ObjectWrite) -> wasmtime::Result<u64> {
        self.request(StorageRequest::Write(object))
    }

    fn delete(
        &mut self,
        at: storage::ObjectKey,
        condition: storage::Condition,
    ) -> wasmtime::Result<u64> {
        self.request(StorageRequest::Delete(at, condition))
    }

    fn list(
        &mut self,
        collection: String,
        owner: Option<u64>,
        limit: u32,
        cursor: Option<String>,
    ) -> wasmtime::Result<u64> {
        self.request(StorageRequest::List {
            collection,
            owner,
            limit,
            cursor,
        })
    }

    fn define_leaderboard(&mut self, board: storage::Leaderboard) -> wasmtime::Result<u64> {
        self.request(StorageRequest::DefineLeaderboard(board))
    }

    fn submit_score(
        &mut self,
        board: String,
        player: u64,
        score: i64,
        subscore: i64,
        metadata: Option<String>,
    ) -> wasmtime::Result<u64> {
        self.request(StorageRequest::SubmitScore {
            board,
            player,
            score,
            subscore,
            metadata,
        })
    }

    fn top(&mut self, board: String, limit: u32, cursor: Option<String>) -> wasmtime::Result<u64> {
        self.request(StorageRequest::Top {
            board,
            limit,
            cursor,
        })
    }

    fn around(&mut self, board: String, player: u64, limit: u32) -> wasmtime::Result<u64> {
        self.request(StorageRequest::Around {
            board,
            player,
            limit,
        })
    }
}

impl types::Host for RoomData {}

impl host::Host for RoomData {
    fn send(&mut self, to: u64, msg: Vec<u8>) -> wasmtime::Result<()> {
        if let Some(msg) = self.output(msg)? {
            self.effects.push(Effect::Send(to, msg));
        }
        Ok(())
    }

    fn broadcast(&mut self, msg: Vec<u8>) -> wasmtime::Result<()> {
        if let Some(msg) = self.output(msg)? {
            self.effects.push(Effect::Broadcast(msg));
        }
        Ok(())
    }

    fn broadcast_except(&mut self, except: u64, msg: Vec<u8>) -> wasmtime::Result<()> {
        if let Some(msg) = self.output(msg)? {
            self.effects.push(Effect::BroadcastExcept(except, msg));
        }
        Ok(())
    }

    fn kick(&mut self, player: u64, reason: String) -> wasmtime::Result<()> {
        let reason = capped(reason, MAX_REASON_BYTES);
        self.effects.push(Effect::Kick(player, reason));
        Ok(())
    }

    fn close(&mut self, reason: String) -> wasmtime::Result<()> {
        self.effects
            .push(Effect::Close(capped(reason, MAX_REASON_BYTES)));
        Ok(())
    }

    fn set_tick_rate(&mut self, hz: u32) -> wasmtime::Result<()> {
        self.effects.push(Effect::SetTickRate(hz));
        Ok(())
    }

    fn set_label(&mut self, label: String) -> wasmtime::Result<()> {
        self.effects
            .push(Effect::SetLabel(capped(label, MAX_LABEL_BYTES)));
        Ok(())
    }

    fn hold_messages(&mut self, until_tick: bool) -> wasmtime::Result<()> {
        self.effects.push(Effect::HoldMessages(until_tick));
        Ok(())
    }

    fn set_private(&mut self, private: bool) -> wasmtime::Result<()> {
        self.effects.push(Effect::SetPrivate(private));
        Ok(())
    }

    fn keep_open(&mut self, keep: bool) -> wasmtime::Result<()> {
        self.effects.push(Effect::KeepOpen(keep));
        Ok(())
    }

    fn now_micros(&mut self) -> wasmtime::Result<u64> {
        Ok(SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64))
    }

    fn random(&mut self) -> wasmtime::Result<u64> {
        Ok(self.rng.u64())
    }

    fn log(&mut self, level: types::LogLevel, msg: String) -> wasmtime::Result<()> {
        let msg = capped(msg, MAX_LOG_LINE_BYTES);
        // An error line is kept for the panic report even when it is not written.
        if matches!(level, types::LogLevel::Error) {
            self.last_error_log = Some(msg.clone());
        }
        if self.log_rate.take(Instant::now()).is_err() {
            self.dropped.log_lines.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let room = &*self.room_id;
        match level {
            types::LogLevel::Trace => tracing::trace!(target: "ludus::guest", room, "{msg}"),
            types::LogLevel::Debug => tracing::debug!(target: "ludus::guest", room, "{msg}"),
            types::LogLevel::Info => tracing::info!(target: "ludus::guest", room, "{msg}"),
            types::LogLevel::Warn => tracing::warn!(target: "ludus::guest", room, "{msg}"),
            types::LogLevel::Error => tracing::error!(target: "ludus::guest", room, "{msg}"),
        }
        Ok(())
    }
}

/// The 0.2.0 host interface: the same functions, answered by the current contract's.
impl v2::ludus::game::host::Host for RoomData {
    fn send(&mut self, to: u64, msg: Vec<u8>) -> wasmtime::Result<()> {
        host::Host::send(self, to, msg)
    }

    fn broadcast(&mut self, msg: Vec<u8>) -> wasmtime::Result<()> {
        host::Host::broadcast(self, msg)
    }

    fn broadcast_except(&mut self, except: u64, msg: Vec<u8>) -> wasmtime::Result<()> {
        host::Host::broadcast_except(self, except, msg)
    }

    fn kick(&mut self, player: u64, reason: String) -> wasmtime::Result<()> {
        host::Host::kick(self, player, reason)
    }

    fn close(&mut self, reason: String) -> wasmtime::Result<()> {
        host::Host::close(self, reason)
    }

    fn set_tick_rate(&mut self, hz: u32) -> wasmtime::Result<()> {
        host::Host::set_tick_rate(self, hz)
    }

    fn set_label(&mut self, label: String) -> wasmtime::Result<()> {
        host::Host::set_label(self, label)
    }

    fn set_private(&mut self, private: bool) -> wasmtime::Result<()> {
        host::Host::set_private(self, private)
    }

    fn hold_messages(&mut self, until_tick: bool) -> wasmtime::Result<()> {
        host::Host::hold_messages(self, until_tick)
    }

    fn keep_open(&mut self, keep: bool) -> wasmtime::Result<()> {
        host::Host::keep_open(self, keep)
    }

    fn now_micros(&mut self) -> wasmtime::Result<u64> {
        host::Host::now_micros(self)
    }

    fn random(&mut self) -> wasmtime::Result<u64> {
        host::Host::random(self)
    }

    fn log(&mut self, level: types::LogLevel, msg: String) -> wasmtime::Result<()> {
        host::Host::log(self, level, msg)
    }
}
