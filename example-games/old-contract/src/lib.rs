//! Old-contract: a module built for `ludus:game@0.0.1`. The host must refuse it with a
//! message naming both contract versions.

wit_bindgen::generate!({ path: "wit", world: "game" });

struct OldGame;

impl exports::ludus::game::room::Guest for OldGame {
    fn init(_room_id: String) -> Result<(), String> {
        Ok(())
    }

    fn tick() {
        ludus::game::host::broadcast(b"tick");
    }
}

export!(OldGame);
