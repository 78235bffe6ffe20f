//! # Ludus: a game server host
//!
//! Game rules are WebAssembly components written against the `ludus:game` contract
//! (`wit/game.wit`); Ludus runs one instance per room, ticks it at the game's rate and
//! swaps new versions in live, keeping each room's state.
//!
//! ## Layout
//!
//! The modules form layers. A module uses modules of its own layer and of the layers
//! before it, never one after (`host/tests/layers.rs` reads this table and every file
//! under `host/src`, and fails on an import that points upward). Read it top to bottom.
//!
//! | layer | module | what it holds |
//! | --- | --- | --- |
//! | 0 | [`csprng`] | unguessable values (tokens, ids, keys) from the OS's random source |
//! | 0 | [`lock`] | one way to take a lock that a panic poisoned |
//! | 0 | [`mailbox`] | the bounded queue rooms deliver players' events through |
//! | 0 | [`rate`] | token buckets: per connection, per client address, per room log |
//! | 0 | [`percentile`] | nearest-rank percentiles for reports |
//! | 0 | [`tls`] | certificates and keys from PEM files, TLS server settings |
//! | 0 | [`logs`] | the process's log output (text or JSON) and its filter, changed live |
//! | 0 | [`procstat`] | a process's CPU time and resident memory, from `/proc` |
//! | 1 | [`runtime`] | the wasmtime engine, linker and module store; bounded guest calls |
//! | 1 | [`storage`] | accounts, objects and leaderboards in SQLite or PostgreSQL (sqlx) |
//! | 2 | [`rooms`] | rooms as actors on worker threads: ticks, members, live swap, recovery |
//! | 3 | [`cluster`] | membership, sessions, room ownership, elections, the etcd key layout |
//! | 4 | [`rpc`] | gRPC between nodes: credential, call log, module bytes, the room relay |
//! | 5 | [`rollout`] | the one path from module bytes to running rooms, and its feeders |
//! | 6 | [`matchmaking`] | tickets, the elected leader, placement of matched rooms |
//! | 7 | [`gateway`] | HTTP + WebSocket for clients: auth, frames, sessions, replay, requests |
//! | 8 | [`config`] | the node's TOML/env configuration |
//! | 8 | [`server`] | a running node: wiring and its one shutdown path |
//! | 9 | [`client`] | a Rust client (login, frames, resume with backoff) |
//! | 9 | [`ops`] | `ludus deploy`, `rollback`, `status` against a cluster |
//! | 9 | [`dev`] | `ludus dev`: build + serve + watch one game |
//! | 9 | [`demo`] | `ludus demo`: one arena room with bots, swapped live to v2 |
//! | 9 | [`check`] | `ludus check`: loads a module as a node would and reports on it |
//! | 9 | [`guest_build`] | builds guest crates for `wasm32-wasip2` (tests, benches, `ludus dev`) |
//! | 9 | [`bench`] | `ludus bench`: measurements printed as a table and a JSON line |
//!
//! `main.rs` is the `ludus` command line, which only parses flags and calls the above.

pub mod bench;
pub mod check;
pub mod client;
pub mod cluster;
pub mod config;
pub mod csprng;
pub mod demo;
pub mod dev;
pub mod gateway;
pub mod guest_build;
pub mod lock;
pub mod logs;
pub mod mailbox;
pub mod matchmaking;
pub mod ops;
pub mod percentile;
pub mod procstat;
pub mod rate;
pub mod rollout;
pub mod rooms;
pub mod rpc;
pub mod runtime;
pub mod server;
pub mod storage;
pub mod tls;
