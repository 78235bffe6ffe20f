//! Host-side bindings generated from `wit/`: the current contract (`v3`, `ludus:game`
//! 0.3.0) and the older one this host still runs (`v2`, 0.2.0, from `wit/v0_2/`). Both
//! share the plain types of the current one, which 0.2.0 has in the same shapes.

pub mod v3 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "game",
        // Host functions may trap the guest (a game flooding the host with messages).
        imports: { default: trappable },
    });
}

pub mod v2 {
    wasmtime::component::bindgen!({
        path: "../wit/v0_2",
        world: "game",
        imports: { default: trappable },
        with: { "ludus:game/types": super::v3::ludus::game::types },
    });
}

/// The contract this host speaks: the package name and version of `wit/game.wit`.
pub const CONTRACT: Contract = Contract {
    package: "ludus:game",
    version: "0.3.0",
};

/// Older contracts this host still runs, newest first.
pub const OLDER_CONTRACTS: [Contract; 1] = [Contract {
    package: "ludus:game",
    version: "0.2.0",
}];

/// A contract version.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Contract {
    pub package: &'static str,
    pub version: &'static str,
}

impl Contract {
    /// The name of the interface a game must export: `ludus:game/room@0.3.0`.
    pub fn room_export(&self) -> String {
        format!("{}/room@{}", self.package, self.version)
    }

    /// Every contract this host runs, the current one first.
    pub fn supported() -> impl Iterator<Item = Contract> {
        std::iter::once(CONTRACT).chain(OLDER_CONTRACTS)
    }

    /// "0.3.0 or 0.2.0", for messages.
    pub fn supported_versions() -> String {
        Self::supported()
            .map(|c| c.version)
            .collect::<Vec<_>>()
            .join(" or ")
    }
}

impl std::fmt::Display for Contract {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.package, self.version)
    }
}
