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
//! - [`gateway`]: axum HTTP + WebSocket for clients: auth, frames, sessions that survive
//!   a dropped connection, room and game listings, the browser page.
//! - [`matchmaking`]: tickets, the leader (elected through etcd in a cluster) that groups
//!   them into rooms on the least loaded node.
//! - [`server`]: a running node (runtime, rooms, gateway, [`reload`] watcher) and its
//!   one shutdown path; [`config`] is its TOML/env configuration.
//! - [`dev`]: `ludus dev`, build + serve + watch one game.
//! - [`client`]: a Rust client (login, frames, resume with backoff).
//! - [`guest_build`]: builds guest crates for `wasm32-wasip2` (tests, benches, `ludus dev`).
//! - [`bench`]: `ludus bench`, measurements printed as a table and a JSON line.
//! - [`demo`]: `ludus demo`, one arena room with bots, swapped live to v2.
//! - [`check`]: `ludus check`, loads a module as a node would and reports on it.
//! - `main.rs`: the `ludus` command line, which only parses flags and calls the above.

pub mod bench;
pub mod check;
pub mod client;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod dev;
pub mod gateway;
pub mod guest_build;
pub mod lock;
pub mod mailbox;
pub mod matchmaking;
pub mod ops;
pub mod percentile;
pub mod rollout;
pub mod rooms;
pub mod rpc;
pub mod runtime;
pub mod server;
