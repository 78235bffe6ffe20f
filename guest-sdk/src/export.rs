//! The glue between wit-bindgen's generated exports and a [`Game`]: what
//! [`export_game!`](crate::export_game) expands to calls these functions. Not public API.

use std::cell::RefCell;
use std::sync::Once;
use std::thread::LocalKey;
use std::time::Duration;

use crate::__private::bindings::ludus::game::{host, storage as wit_storage, types as wit};
use crate::storage::RequestId;
use crate::{Game, Player, PlayerId, Room};

/// A room's live game and its context, kept in a thread-local of the designer's crate.
pub struct Loaded<G> {
    game: G,
    room: Room,
}

pub type Slot<G> = LocalKey<RefCell<Option<Loaded<G>>>>;

fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        // A panic traps the instance; the host restores the room from its last good
        // state. Sending the message to the host log tells the designer why.
        std::panic::set_hook(Box::new(|info| {
            host::log(wit::LogLevel::Error, &format!("game panicked: {info}"));
        }));
    });
}

fn room_of(init: wit::RoomInit) -> Room {
    Room::new(init.id, init.config, init.seed)
}

/// Runs `f` on the loaded game. The host never calls a room before `init`/`restore`
/// succeeded, so an empty slot is a host bug and traps with a clear message.
fn with_game<G, R>(slot: &'static Slot<G>, f: impl FnOnce(&mut G, &mut Room) -> R) -> R {
    slot.with(|cell| {
        let mut cell = cell.borrow_mut();
        let loaded = cell
            .as_mut()
            .expect("ludus: room called before init or restore");
        f(&mut loaded.game, &mut loaded.room)
    })
}

pub fn describe(name: &str, version: &str) -> (String, String) {
    (name.to_owned(), version.to_owned())
}

pub fn init<G: Game>(slot: &'static Slot<G>, init: wit::RoomInit) -> Result<(), String> {
    install_panic_hook();
    let mut room = room_of(init);
    let game = G::init(&mut room)?;
    slot.with(|cell| *cell.borrow_mut() = Some(Loaded { game, room }));
    Ok(())
}

pub fn join<G: Game>(slot: &'static Slot<G>, player: wit::Player) -> Result<(), String> {
    let player = Player::from(player);
    with_game(slot, |game, room| game.join(room, &player)).map_err(|r| r.0)
}

pub fn leave<G: Game>(slot: &'static Slot<G>, player: u64, reason: wit::LeaveReason) {
    with_game(slot, |game, room| {
        game.leave(room, PlayerId(player), reason.into())
    })
}

pub fn messages<G: Game>(slot: &'static Slot<G>, batch: Vec<wit::Message>) {
    with_game(slot, |game, room| {
        for m in batch {
            game.message(room, PlayerId(m.from), &m.payload);
        }
    })
}

pub fn storage_results<G: Game>(slot: &'static Slot<G>, results: Vec<wit_storage::StorageResult>) {
    with_game(slot, |game, room| {
        for r in results {
            game.storage(room, RequestId(r.id), r.answer);
        }
    })
}

pub fn tick<G: Game>(slot: &'static Slot<G>, dt_micros: u64) {
    with_game(slot, |game, room| {
        game.tick(room, Duration::from_micros(dt_micros))
    })
}

pub fn save<G: Game>(slot: &'static Slot<G>) -> Result<Vec<u8>, String> {
    with_game(slot, |game, _| game.save())
}

pub fn restore<G: Game>(
    slot: &'static Slot<G>,
    init: wit::RoomInit,
    state: Vec<u8>,
    from_version: String,
) -> Result<(), String> {
    install_panic_hook();
    let mut room = room_of(init);
    let game = G::restore(&mut room, &state, &from_version)?;
    slot.with(|cell| *cell.borrow_mut() = Some(Loaded { game, room }));
    Ok(())
}
