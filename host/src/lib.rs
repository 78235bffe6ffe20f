//! # Ludus: a game server host
//!
//! Game rules are WebAssembly components written against the `ludus:game` contract
//! (`wit/game.wit`); Ludus runs one instance per room, ticks it at the game's rate and
//! swaps new versions in live, keeping each room's state.
//!
//! ## Layout
//!
//! - [`runtime`]: the wasmtime engine, linker and module store; a [`runtime::GameInstance`]
//!   runs one bounded guest call at a time (deadline, memory cap, no WASI capabilities).
//! - [`rooms`]: rooms as actors on worker threads, their members, tick clock, checkpoints,
//!   recovery after a guest failure, and live swaps per room or per game.
//! - [`guest_build`]: builds guest crates for `wasm32-wasip2` (tests, benches, `ludus dev`).
//! - `main.rs`: the `ludus` command line.

pub mod guest_build;
pub mod rooms;
pub mod runtime;
