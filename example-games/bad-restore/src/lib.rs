//! Bad-restore: a version of arena whose `restore` refuses every saved state. Swapping it
//! into a running room must fail at the restore step and leave the room on its old
//! version. (It declares the name `arena`: a module for another game is refused before
//! any room sees it.)

use ludus_sdk::{Game, Room, export_game};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Default, Serialize, Deserialize)]
struct BadRestore {
    ticks: u64,
}

impl Game for BadRestore {
    fn tick(&mut self, room: &mut Room, _dt: Duration) {
        self.ticks += 1;
        room.broadcast_json(&serde_json::json!({ "tick": self.ticks }));
    }

    fn restore(_room: &mut Room, _state: &[u8], from_version: &str) -> Result<Self, String> {
        Err(format!(
            "bad-restore refuses state saved by version {from_version}"
        ))
    }
}

export_game!(BadRestore, name = "arena", version = "0.0.1-bad-restore");
