//! The WebAssembly runtime: one wasmtime engine and linker for the process, a store of
//! compiled modules keyed by the sha256 of their bytes, and game instances that run one
//! bounded call at a time.
//!
//! Rooms (`crate::rooms`) own [`GameInstance`]s; nothing here knows about players or
//! ticks. Compilation ([`Runtime::load`]) is CPU-heavy and runs off the tick path.

mod bindings;
mod epoch;
mod instance;
mod limits;
mod module;
mod module_store;
mod room_data;
#[allow(clippy::module_inception)] // `runtime::Runtime`, the engine and its pools
mod runtime;
mod wasi;

pub use bindings::v3::ludus::game::storage as wit_storage;
pub use bindings::v3::ludus::game::types::{LeaveReason, Message};
pub use bindings::{CONTRACT, Contract};
pub use epoch::Ticker;
pub use instance::{Call, GameInstance, GuestError, GuestErrorKind, Refusal};
pub use limits::{MAX_LABEL_BYTES, MAX_LOG_LINE_BYTES, MAX_REASON_BYTES, RuntimeLimits, capped};
pub use module::{Module, ModuleError};
pub use room_data::{Dropped, Effect, RoomInit, StorageRequest};
pub use runtime::Runtime;
