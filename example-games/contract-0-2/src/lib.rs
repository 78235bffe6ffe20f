//! A game built for the older contract `ludus:game@0.2.0` (`wit/v0_2/`), straight on
//! wit-bindgen as a module built before 0.3.0 would be. The host must go on running it
//! beside games built for 0.3.0. It echoes each message to its sender, prefixed with
//! the number of messages it has seen, and keeps that count across a live swap.

wit_bindgen::generate!({ path: "../../wit/v0_2", world: "game" });

use exports::ludus::game::room::Guest;
use ludus::game::host;
use ludus::game::types::{LeaveReason, Message, Player, RoomInit};
use std::cell::Cell;

thread_local! {
    static SEEN: Cell<u64> = const { Cell::new(0) };
}

struct Echo;

impl Guest for Echo {
    fn describe() -> (String, String) {
        ("contract-0-2".into(), "1.0.0".into())
    }

    fn init(_room: RoomInit) -> Result<(), String> {
        Ok(())
    }

    fn join(_player: Player) -> Result<(), String> {
        Ok(())
    }

    fn leave(_player: u64, _reason: LeaveReason) {}

    fn messages(batch: Vec<Message>) {
        for m in batch {
            let seen = SEEN.get() + 1;
            SEEN.set(seen);
            let mut reply = format!("{seen}:").into_bytes();
            reply.extend_from_slice(&m.payload);
            host::send(m.from, &reply);
        }
    }

    fn tick(_dt_micros: u64) {}

    fn save() -> Result<Vec<u8>, String> {
        Ok(SEEN.get().to_le_bytes().to_vec())
    }

    fn restore(_room: RoomInit, state: Vec<u8>, _from_version: String) -> Result<(), String> {
        let bytes: [u8; 8] = state
            .as_slice()
            .try_into()
            .map_err(|_| format!("expected 8 bytes of state, got {}", state.len()))?;
        SEEN.set(u64::from_le_bytes(bytes));
        Ok(())
    }
}

export!(Echo);
