//! A compiled, validated game module: its hash, what the game says it is, and its
//! pre-instantiation (imports resolved once, so a room instantiates in microseconds).

use std::fmt;

use wasmtime::component::Component;

use super::bindings::{CONTRACT, Contract, v2, v3};
use super::room_data::RoomData;

/// Why a module was refused. Nothing is replaced when loading fails.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("not a WebAssembly component ({0}); build the game with `--target wasm32-wasip2`")]
    NotAComponent(String),
    #[error("module does not compile: {0}")]
    Compile(String),
    #[error(
        "module was built for contract {found}, this host runs {} {}; rebuild the game against ludus-sdk for {CONTRACT}",
        CONTRACT.package,
        Contract::supported_versions()
    )]
    ContractMismatch { found: String },
    #[error("module is not a Ludus game: it exports no `{}` interface (exports: {exports})", CONTRACT.room_export())]
    NotAGame { exports: String },
    #[error("module needs imports this host does not provide: {0}")]
    Link(String),
    #[error("module failed its trial run: {0}")]
    Trial(String),
}

/// A game module ready to instantiate. Cheap to share: rooms hold an `Arc<Module>`.
pub struct Module {
    /// sha256 of the module's bytes: its identity everywhere (module store, room
    /// listings, cluster keys).
    pub sha256: [u8; 32],
    /// The game's name and version, as its `describe` export reports them.
    pub name: String,
    pub version: String,
    pub size: usize,
    /// The contract the module was built for (this host's, or an older one it runs).
    pub contract: Contract,
    pub(super) pre: Pre,
}

/// A module's pre-instantiation, by the contract it was built for.
pub(super) enum Pre {
    V3(v3::GamePre<RoomData>),
    V2(v2::GamePre<RoomData>),
}

impl Module {
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }

    /// `name version (sha256 prefix)`, for logs and error messages.
    pub fn label(&self) -> String {
        format!(
            "{} {} ({})",
            self.name,
            self.version,
            self.sha256_hex().get(..12).unwrap_or_default()
        )
    }
}

impl fmt::Debug for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Module")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("sha256", &self.sha256_hex())
            .finish()
    }
}

/// Checks that a component exports the room interface of a contract this host runs, and
/// says which. A game built for another version is refused with the versions named.
pub(super) fn check_contract(component: &Component) -> Result<Contract, ModuleError> {
    let engine = component.engine();
    let ty = component.component_type();
    let exports: Vec<String> = ty
        .exports(engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    if let Some(contract) = Contract::supported().find(|c| exports.contains(&c.room_export())) {
        return Ok(contract);
    }
    let room_prefix = format!("{}/room", CONTRACT.package);
    if let Some(found) = exports.iter().find(|e| e.starts_with(&room_prefix)) {
        let version = found
            .split_once('@')
            .map_or("an unversioned contract", |(_, v)| v);
        return Err(ModuleError::ContractMismatch {
            found: format!("{}@{version}", CONTRACT.package),
        });
    }
    let exports = if exports.is_empty() {
        "none".to_owned()
    } else {
        exports.join(", ")
    };
    Err(ModuleError::NotAGame { exports })
}
