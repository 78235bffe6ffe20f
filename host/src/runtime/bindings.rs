//! Host-side bindings generated from `wit/` (the `ludus:game` world).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "game",
    // Host functions may trap the guest (a game flooding the host with messages).
    imports: { default: trappable },
});

/// The contract this host speaks: the package name and version of `wit/game.wit`.
pub const CONTRACT: Contract = Contract {
    package: "ludus:game",
    version: "0.2.0",
};

/// A contract version.
#[derive(Copy, Clone, Debug)]
pub struct Contract {
    pub package: &'static str,
    pub version: &'static str,
}

impl Contract {
    /// The name of the interface a game must export: `ludus:game/room@0.2.0`.
    pub fn room_export(&self) -> String {
        format!("{}/room@{}", self.package, self.version)
    }
}

impl std::fmt::Display for Contract {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.package, self.version)
    }
}
