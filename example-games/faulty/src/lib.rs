//! Faulty: a small game that misbehaves on request, to test that a room survives its
//! game's faults and that its neighbours never notice.
//!
//! Every tick it broadcasts `{"tick": n, "messages": m, "players": [ids]}`. Messages
//! (raw text):
//! - `panic`: panics (the instance traps);
//! - `spin`: loops forever inside the message call (the call deadline stops it);
//! - `spin-tick`: the next tick loops forever (the tick budget stops it);
//! - `hog`: allocates memory without bound (the room's memory cap stops it);
//! - `flood`: the next tick broadcasts without end (the host's per-call output cap
//!   stops it);
//! - `random`: answers `{"random": n}` with the next number of the room's stream;
//! - `keep-open`: asks the host to keep the room open while it is empty;
//! - `private`: leaves the room out of room listings;
//! - `huge-send`: sends its sender one message of 2 MiB (over what a client may receive),
//!   then `{"echo": "after huge-send"}`;
//! - `huge-label`, `huge-close`, `huge-kick`: a 100 KiB label, close reason or kick
//!   reason (for the sender);
//! - `huge-log`: one log line of 1 MiB; `log-flood`: 10,000 log lines in one call;
//! - `huge-save`: from now on `save` returns 2 MiB of state;
//! - anything else is counted and echoed back to its sender as `{"echo": text}`.
//!
//! Room config: `{"trap_in_init": true}` panics in `init`; `{"spin_every_tick": true}`
//! loops in every tick, so restoring the room never helps and the host gives up on it.

use ludus_sdk::{Game, LeaveReason, LogLevel, Player, PlayerId, Reject, Room, export_game};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::time::Duration;

#[derive(Default, Serialize, Deserialize)]
struct Faulty {
    ticks: u64,
    messages: u64,
    players: BTreeSet<PlayerId>,
    spin_every_tick: bool,
    /// Never saved: a restored room does not inherit the fault.
    #[serde(skip)]
    spin_next_tick: bool,
    #[serde(skip)]
    flood_next_tick: bool,
    #[serde(skip)]
    huge_save: bool,
}

#[derive(Default, Deserialize)]
struct Config {
    #[serde(default)]
    trap_in_init: bool,
    #[serde(default)]
    spin_every_tick: bool,
}

/// Loops until the host's deadline interrupts it; `black_box` keeps it from being
/// optimised into a plain trap.
fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

impl Game for Faulty {
    fn save(&self) -> Result<Vec<u8>, String> {
        let mut state = serde_json::to_vec(self).map_err(|e| e.to_string())?;
        if self.huge_save {
            // JSON with trailing spaces: still a state `restore` could read.
            state.resize(2 << 20, b' ');
        }
        Ok(state)
    }

    fn init(room: &mut Room) -> Result<Self, String> {
        let config: Config = room.config_json()?;
        if config.trap_in_init {
            panic!("asked to trap in init");
        }
        Ok(Faulty {
            spin_every_tick: config.spin_every_tick,
            ..Faulty::default()
        })
    }

    fn join(&mut self, _room: &mut Room, player: &Player) -> Result<(), Reject> {
        self.players.insert(player.id);
        Ok(())
    }

    fn leave(&mut self, _room: &mut Room, player: PlayerId, _reason: LeaveReason) {
        self.players.remove(&player);
    }

    fn message(&mut self, room: &mut Room, from: PlayerId, msg: &[u8]) {
        match msg {
            b"panic" => panic!("asked to panic on a message"),
            b"spin" => spin(),
            b"spin-tick" => self.spin_next_tick = true,
            b"hog" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    // Reserved, not written: memory grows fast enough to reach the cap
                    // long before the call's deadline.
                    hoard.push(Vec::with_capacity(4 << 20));
                    std::hint::black_box(&hoard);
                }
            }
            b"flood" => self.flood_next_tick = true,
            b"random" => {
                let n = room.random();
                room.send_json(from, &serde_json::json!({ "random": n }));
            }
            b"keep-open" => room.keep_open(true),
            b"private" => room.set_private(true),
            b"huge-send" => {
                room.send(from, vec![b'x'; 2 << 20]);
                room.send_json(from, &serde_json::json!({ "echo": "after huge-send" }));
            }
            b"huge-label" => room.set_label(&"l".repeat(100 << 10)),
            b"huge-close" => room.close(&"c".repeat(100 << 10)),
            b"huge-kick" => room.kick(from, &"k".repeat(100 << 10)),
            b"huge-log" => room.log(LogLevel::Info, &"g".repeat(1 << 20)),
            b"log-flood" => {
                for i in 0..10_000 {
                    room.log(LogLevel::Info, &format!("line {i}"));
                }
            }
            b"huge-save" => self.huge_save = true,
            other => {
                self.messages += 1;
                let echo = String::from_utf8_lossy(other);
                room.send_json(from, &serde_json::json!({ "echo": echo }));
            }
        }
    }

    fn tick(&mut self, room: &mut Room, _dt: Duration) {
        if self.spin_every_tick || self.spin_next_tick {
            spin();
        }
        if self.flood_next_tick {
            // Messages a client may receive, without end: the host's 4 MiB per-call cap
            // stops the call long before the tick's deadline even on a busy machine.
            let chunk = vec![b'x'; 512 << 10];
            loop {
                room.broadcast(&chunk);
            }
        }
        self.ticks += 1;
        let (ticks, messages, players) = (self.ticks, self.messages, &self.players);
        room.broadcast_json(
            &serde_json::json!({ "tick": ticks, "messages": messages, "players": players }),
        );
    }
}

export_game!(Faulty);
