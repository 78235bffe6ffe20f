#![doc = include_str!("../README.md")]

// The generated bindings name the runtime as `::ludus_sdk::...` so that they resolve in
// the designer's crate, where `export_game!` expands; this makes them resolve here too.
extern crate self as ludus_sdk;

mod export;
mod room;
pub mod storage;
mod types;

pub use room::Room;
pub use types::{LeaveReason, LogLevel, Player, PlayerId, Reject};

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// The rules of a game. Every method but the state bounds has a default, so a game
/// implements only what it needs.
///
/// Methods that take `&mut self` run in one room; the value *is* the room's state.
pub trait Game: Default + Serialize + DeserializeOwned + 'static {
    /// Create the state of a new room. `room.config()` holds the room config.
    /// An error refuses the room. Default: `Self::default()`.
    fn init(room: &mut Room) -> Result<Self, String> {
        let _ = room;
        Ok(Self::default())
    }

    /// A player asks to join. `Err` refuses it with that reason. Default: accept.
    fn join(&mut self, room: &mut Room, player: &Player) -> Result<(), Reject> {
        let _ = (room, player);
        Ok(())
    }

    /// A member left (or was kicked, or disconnected for good).
    fn leave(&mut self, room: &mut Room, player: PlayerId, reason: LeaveReason) {
        let _ = (room, player, reason);
    }

    /// A member sent a message (opaque bytes; JSON if you use the `*_json` helpers).
    /// Messages come in the order they arrived, as they arrive, or all just before the
    /// next tick if the room asked for that with [`Room::hold_messages_until_tick`].
    fn message(&mut self, room: &mut Room, from: PlayerId, msg: &[u8]) {
        let _ = (room, from, msg);
    }

    /// The answer to a storage request this room made (see [`storage`]), in the order
    /// answers came. Default: failures are logged at `warn`, answers ignored.
    fn storage(
        &mut self,
        room: &mut Room,
        id: storage::RequestId,
        answer: Result<storage::Answer, storage::StorageError>,
    ) {
        if let Err(e) = answer {
            room.log(
                LogLevel::Warn,
                &format!("storage request {} failed: {e}", id.0),
            );
        }
    }

    /// Time passed: `dt` since the previous tick, on the wall clock.
    fn tick(&mut self, room: &mut Room, dt: Duration) {
        let _ = (room, dt);
    }

    /// Serialize the state for a live swap or a checkpoint. Default: JSON.
    fn save(&self) -> Result<Vec<u8>, String> {
        serde_json::to_vec(self).map_err(|e| format!("cannot save state: {e}"))
    }

    /// Rebuild the state saved by `save` of version `from_version` (this build or an
    /// older one). An error keeps the room on its old instance. Default: JSON, where new
    /// fields take their serde default.
    fn restore(room: &mut Room, state: &[u8], from_version: &str) -> Result<Self, String> {
        let _ = room;
        serde_json::from_slice(state)
            .map_err(|e| format!("cannot restore state saved by version {from_version}: {e}"))
    }
}

/// Export a type implementing [`Game`] as this crate's Ludus game.
///
/// `export_game!(MyGame)` declares the game under the crate's package name and version;
/// `export_game!(MyGame, version = "2.0.0")` sets the version passed to `restore`, and
/// `export_game!(MyGame, name = "arena", version = "2.0.0")` both. Use it once per crate.
///
/// The type must implement [`Game`]:
///
/// ```compile_fail
/// #[derive(Default, serde::Serialize, serde::Deserialize)]
/// struct NotAGame;
/// ludus_sdk::export_game!(NotAGame);
/// ```
///
/// and the macro takes a type, not an expression:
///
/// ```compile_fail
/// ludus_sdk::export_game!("arena");
/// ```
#[macro_export]
macro_rules! export_game {
    ($game:ty $(,)?) => {
        $crate::export_game!($game, version = ::core::env!("CARGO_PKG_VERSION"));
    };
    ($game:ty, version = $version:expr $(,)?) => {
        $crate::export_game!(
            $game,
            name = ::core::env!("CARGO_PKG_NAME"),
            version = $version
        );
    };
    ($game:ty, name = $name:expr, version = $version:expr $(,)?) => {
        const _: () = {
            ::std::thread_local! {
                static LUDUS_GAME: ::core::cell::RefCell<
                    ::core::option::Option<$crate::__private::Loaded<$game>>,
                > = const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }

            struct LudusExport;

            impl $crate::__private::RoomGuest for LudusExport {
                fn describe() -> ($crate::__private::String, $crate::__private::String) {
                    $crate::__private::describe($name, $version)
                }
                fn init(
                    room: $crate::__private::RoomInit,
                ) -> ::core::result::Result<(), $crate::__private::String> {
                    $crate::__private::init::<$game>(&LUDUS_GAME, room)
                }
                fn join(
                    player: $crate::__private::WitPlayer,
                ) -> ::core::result::Result<(), $crate::__private::String> {
                    $crate::__private::join::<$game>(&LUDUS_GAME, player)
                }
                fn leave(player: u64, reason: $crate::__private::WitLeaveReason) {
                    $crate::__private::leave::<$game>(&LUDUS_GAME, player, reason)
                }
                fn messages(batch: $crate::__private::Vec<$crate::__private::WitMessage>) {
                    $crate::__private::messages::<$game>(&LUDUS_GAME, batch)
                }
                fn storage_results(
                    results: $crate::__private::Vec<$crate::__private::WitStorageResult>,
                ) {
                    $crate::__private::storage_results::<$game>(&LUDUS_GAME, results)
                }
                fn tick(dt_micros: u64) {
                    $crate::__private::tick::<$game>(&LUDUS_GAME, dt_micros)
                }
                fn save()
                -> ::core::result::Result<$crate::__private::Vec<u8>, $crate::__private::String>
                {
                    $crate::__private::save::<$game>(&LUDUS_GAME)
                }
                fn restore(
                    room: $crate::__private::RoomInit,
                    state: $crate::__private::Vec<u8>,
                    from_version: $crate::__private::String,
                ) -> ::core::result::Result<(), $crate::__private::String> {
                    $crate::__private::restore::<$game>(&LUDUS_GAME, room, state, from_version)
                }
            }

    $crate::__private::export_room!(LudusExport with_types_in $crate::__private::bindings);
        };
    };
}

#[doc(hidden)]
pub mod __private {
    pub mod bindings {
        wit_bindgen::generate!({
            path: "../wit",
            world: "game",
            pub_export_macro: true,
            export_macro_name: "export_room",
            runtime_path: "::ludus_sdk::__private::wit_bindgen::rt",
        });
    }

    pub use crate::export::{
        Loaded, describe, init, join, leave, messages, restore, save, storage_results, tick,
    };
    pub use bindings::export_room;
    pub use bindings::exports::ludus::game::room::Guest as RoomGuest;
    pub use bindings::ludus::game::storage::StorageResult as WitStorageResult;
    pub use bindings::ludus::game::types::{
        LeaveReason as WitLeaveReason, Message as WitMessage, Player as WitPlayer, RoomInit,
    };
    pub use std::string::String;
    pub use std::vec::Vec;
    pub use wit_bindgen;
}
