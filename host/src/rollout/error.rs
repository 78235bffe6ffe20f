//! Why a rollout did not happen. In every case the game keeps what it ran before.

use std::path::PathBuf;

use crate::cluster::short_sha;
use crate::rooms::{GameSwapError, SwapError};
use crate::runtime::ModuleError;

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("reading {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("no node holds module {}", short_sha(.0))]
    NotHeld(String),
    #[error("fetching module {}: {errors}", short_sha(sha))]
    Fetch { sha: String, errors: String },
    #[error("{origin} refused, the running version stays: {error}")]
    Refused { origin: String, error: ModuleError },
    #[error(
        "{origin} refused, the running version stays: it declares the game `{declared}`, \
         not `{game}` (export_game!(.., name = \"{game}\") in the game's crate)"
    )]
    WrongGame {
        origin: String,
        declared: String,
        game: String,
    },
    #[error(transparent)]
    Game(#[from] GameSwapError),
    #[error(
        "swap failed in {failed} of {rooms} rooms{}; first: room {room}: {error}",
        if *kept_previous { " (the node kept the previous version)" } else { "" }
    )]
    Swap {
        failed: usize,
        rooms: usize,
        /// The swap failed in every room, so new rooms keep the previous version too.
        kept_previous: bool,
        room: String,
        error: SwapError,
    },
}

impl DeployError {
    /// A file caught mid-replacement (an editor or a build writes it in steps): the next
    /// change brings the new file, so this one is not worth reporting.
    pub fn is_transient(&self) -> bool {
        matches!(self, DeployError::Read { error, .. } if error.kind() == std::io::ErrorKind::NotFound)
    }
}
