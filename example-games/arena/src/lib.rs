//! Arena: a real-time game. Players spawn at (500, 500) on a 1000 x 1000 field and move
//! by sending inputs; every tick each member gets a snapshot of everyone.
//!
//! Client -> room: `{"seq": 7, "dx": 3, "dy": -2}`. An input is applied only if its
//! `seq` is higher than the last one applied for that player (late or repeated inputs
//! are dropped); the step is clamped to `[-MAX_STEP, MAX_STEP]` on each axis and the
//! position to `[0, 1000]`.
//!
//! Room -> client, every tick:
//! `{"tick": 12, "rules": 1, "players": [{"id": 1, "x": 503, "y": 498, "seq": 7}]}`.
//! A malformed input gets `{"error": "..."}` back to its sender. Inputs are held until
//! the tick (`Room::hold_messages_until_tick`): each tick applies what came since the
//! last one, then sends the snapshot.
//!
//! Room config: `{"max_players": 8, "tick_hz": 20}` (defaults 8 and the host's rate).
//!
//! The same source builds version 2 (`../arena-v2`, feature `v2`): steps up to 20 per
//! axis, and each player carries a count of applied inputs (`moves`), a state field that
//! appears with its default when a running v1 room is swapped to v2.

use ludus_sdk::{Game, LeaveReason, Player, PlayerId, Reject, Room, export_game};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

#[cfg(not(feature = "v2"))]
const RULES: u32 = 1;
#[cfg(feature = "v2")]
const RULES: u32 = 2;

/// Largest step per input on each axis.
const MAX_STEP: i32 = if RULES == 1 { 10 } else { 20 };
const FIELD: i32 = 1000;
const SPAWN: i32 = 500;
const DEFAULT_MAX_PLAYERS: usize = 8;

#[derive(Default, Serialize, Deserialize)]
struct Arena {
    max_players: usize,
    tick: u64,
    players: BTreeMap<PlayerId, Avatar>,
}

#[derive(Serialize, Deserialize)]
struct Avatar {
    x: i32,
    y: i32,
    /// The last input sequence number applied.
    seq: u64,
    /// Inputs applied so far (v2). A v1 state has no such field: it starts at 0.
    #[cfg(feature = "v2")]
    #[serde(default)]
    moves: u64,
}

#[derive(Deserialize)]
struct Config {
    #[serde(default = "default_max_players")]
    max_players: usize,
    /// Ticks per second; the host's default when absent.
    #[serde(default)]
    tick_hz: Option<u32>,
}

fn default_max_players() -> usize {
    DEFAULT_MAX_PLAYERS
}

#[derive(Deserialize)]
struct Input {
    seq: u64,
    dx: i32,
    dy: i32,
}

#[derive(Serialize)]
struct Snapshot<'a> {
    tick: u64,
    rules: u32,
    players: Vec<PlayerView<'a>>,
}

#[derive(Serialize)]
struct PlayerView<'a> {
    id: PlayerId,
    #[serde(flatten)]
    avatar: &'a Avatar,
}

impl Game for Arena {
    fn init(room: &mut Room) -> Result<Self, String> {
        let config: Config = room.config_json()?;
        if config.max_players == 0 {
            return Err("max_players must be at least 1".into());
        }
        if let Some(hz) = config.tick_hz {
            room.set_tick_rate(hz);
        }
        // Inputs show only in the next snapshot: take them all just before the tick.
        room.hold_messages_until_tick(true);
        Ok(Arena {
            max_players: config.max_players,
            ..Arena::default()
        })
    }

    fn join(&mut self, _room: &mut Room, player: &Player) -> Result<(), Reject> {
        if self.players.len() >= self.max_players {
            return Err(format!("room is full ({} players)", self.max_players).into());
        }
        self.players.insert(
            player.id,
            Avatar {
                x: SPAWN,
                y: SPAWN,
                seq: 0,
                #[cfg(feature = "v2")]
                moves: 0,
            },
        );
        Ok(())
    }

    fn leave(&mut self, _room: &mut Room, player: PlayerId, _reason: LeaveReason) {
        self.players.remove(&player);
    }

    fn message(&mut self, room: &mut Room, from: PlayerId, msg: &[u8]) {
        let input: Input = match serde_json::from_slice(msg) {
            Ok(input) => input,
            Err(e) => {
                room.send_json(
                    from,
                    &serde_json::json!({ "error": format!("bad input: {e}") }),
                );
                return;
            }
        };
        let Some(avatar) = self.players.get_mut(&from) else {
            return;
        };
        if input.seq <= avatar.seq {
            return;
        }
        avatar.seq = input.seq;
        avatar.x = (avatar.x + input.dx.clamp(-MAX_STEP, MAX_STEP)).clamp(0, FIELD);
        avatar.y = (avatar.y + input.dy.clamp(-MAX_STEP, MAX_STEP)).clamp(0, FIELD);
        #[cfg(feature = "v2")]
        {
            avatar.moves += 1;
        }
    }

    fn tick(&mut self, room: &mut Room, _dt: Duration) {
        self.tick += 1;
        let players = self
            .players
            .iter()
            .map(|(&id, avatar)| PlayerView { id, avatar })
            .collect();
        room.broadcast_json(&Snapshot {
            tick: self.tick,
            rules: RULES,
            players,
        });
    }
}

#[cfg(not(feature = "v2"))]
export_game!(Arena, name = "arena", version = "1.0.0");
#[cfg(feature = "v2")]
export_game!(Arena, name = "arena", version = "2.0.0");
