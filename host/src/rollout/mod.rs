//! Rollout: the one path from a module's bytes to running rooms. Check and compile the
//! module (`runtime`), keep its bytes for other nodes (`cluster`), install it for a game
//! that has none, or swap it into the game's rooms by policy (`rooms`), and report how it
//! went (the game's listing; the cluster's status when a feeder asks for it).
//!
//! The feeders bring bytes here and do nothing else: start-up ([`Rollout::start`], the
//! configured games), the file watch (`watch.rs`: a configured module file rewritten on
//! disk), the cluster (`follow.rs`: `games/<game>` changed in etcd; bytes this node lacks
//! are fetched from a peer that holds them, over `rpc`) and `ludus dev` (each build).

mod error;
mod follow;
mod watch;

pub use error::DeployError;
pub use follow::follow;
pub use watch::ModuleWatcher;

use std::path::PathBuf;
use std::sync::Arc;

use crate::cluster::{Cluster, short_sha};
use crate::rooms::{GameSwapReport, Rooms, SwapPolicy};
use crate::runtime::Module;

/// A game served from a file (`[games.<name>]` in the config file).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GameConfig {
    /// The game's `.wasm` file. It is watched: a changed file is compiled in the
    /// background and swapped into the game's rooms; a broken one is refused.
    pub module: PathBuf,
    /// Which rooms a new version reaches.
    #[serde(default = "default_policy")]
    pub policy: SwapPolicy,
}

fn default_policy() -> SwapPolicy {
    SwapPolicy::AllRooms
}

/// Where a module's bytes come from.
#[derive(Clone, Debug)]
pub enum Source {
    /// Bytes in hand.
    Bytes(Vec<u8>),
    /// A `.wasm` file.
    File(PathBuf),
    /// The module with this sha256: held here, or fetched from a node that holds it.
    Held(String),
}

/// What a successful rollout did.
#[derive(Debug)]
pub enum Deployed {
    /// The game had no module: this one is installed for new rooms.
    Installed(Arc<Module>),
    /// The game already runs this module.
    Unchanged(Arc<Module>),
    /// The module was swapped in by policy; the report has each room's result.
    Swapped(Arc<Module>, GameSwapReport),
}

impl Deployed {
    pub fn module(&self) -> &Arc<Module> {
        match self {
            Deployed::Installed(m) | Deployed::Unchanged(m) | Deployed::Swapped(m, _) => m,
        }
    }
}

/// The node's rollout. Cheap to clone.
#[derive(Clone)]
pub struct Rollout {
    rooms: Rooms,
    cluster: Cluster,
    /// The links to peers, for fetching bytes from them (cluster only).
    link: Option<crate::rpc::Link>,
}

impl Rollout {
    pub fn new(rooms: Rooms, cluster: Cluster, link: Option<crate::rpc::Link>) -> Rollout {
        Rollout {
            rooms,
            cluster,
            link,
        }
    }

    pub fn rooms(&self) -> &Rooms {
        &self.rooms
    }

    /// Brings `game` to the module from `source`: checked and compiled first; then
    /// installed (a new game), left alone (already running it) or swapped into the
    /// game's rooms by `policy`. Any failure keeps what runs now, is recorded in the
    /// game's listing (`/v1/games`) and is returned.
    pub async fn deploy(
        &self,
        game: &str,
        source: Source,
        policy: SwapPolicy,
    ) -> Result<Deployed, DeployError> {
        let result = self.deploy_inner(game, source, policy).await;
        if let Err(e) = &result
            && !e.is_transient()
        {
            tracing::warn!(game, "{e}");
            self.rooms.record_game_error(game, e.to_string());
        }
        result
    }

    async fn deploy_inner(
        &self,
        game: &str,
        source: Source,
        policy: SwapPolicy,
    ) -> Result<Deployed, DeployError> {
        let (bytes, origin) = self.bytes(source).await?;
        let module = self
            .rooms
            .runtime()
            .load(bytes.to_vec())
            .await
            .map_err(|error| DeployError::Refused {
                origin: origin.clone(),
                error,
            })?;
        if module.name != game {
            return Err(DeployError::WrongGame {
                origin,
                declared: module.name.clone(),
                game: game.to_owned(),
            });
        }
        if let Err(e) = self.cluster.hold_module(&module.sha256_hex(), bytes).await {
            // The node runs it anyway; other nodes cannot fetch it from here.
            tracing::warn!(game, "announcing module {}: {e}", module.label());
        }
        let Some(active) = self.rooms.active_module(game) else {
            self.rooms.install(game, module.clone());
            tracing::info!(game, module = %module.label(), "game installed");
            return Ok(Deployed::Installed(module));
        };
        if active.sha256 == module.sha256 {
            return Ok(Deployed::Unchanged(module));
        }
        let report = self.rooms.swap_game(game, module.clone(), policy).await?;
        let first = report
            .failures()
            .next()
            .map(|(room, error)| (room.to_owned(), error.clone()));
        match first {
            None => Ok(Deployed::Swapped(module, report)),
            Some((room, error)) => Err(DeployError::Swap {
                failed: report.failures().count(),
                rooms: report.results.len(),
                kept_previous: report.rolled_back,
                room,
                error,
            }),
        }
    }

    /// The bytes of `source`, and how to name them in messages.
    async fn bytes(&self, source: Source) -> Result<(Arc<Vec<u8>>, String), DeployError> {
        match source {
            Source::Bytes(bytes) => Ok((Arc::new(bytes), "the module".into())),
            Source::File(path) => match tokio::fs::read(&path).await {
                Ok(bytes) => Ok((Arc::new(bytes), path.display().to_string())),
                Err(error) => Err(DeployError::Read { path, error }),
            },
            Source::Held(sha) => {
                let origin = format!("module {}", short_sha(&sha));
                match self.cluster.module_bytes(&sha) {
                    Some(bytes) => Ok((bytes, origin)),
                    None => Ok((Arc::new(self.fetch(&sha).await?), origin)),
                }
            }
        }
    }

    /// Module `sha` from a node that holds it, trying each holder in turn.
    async fn fetch(&self, sha: &str) -> Result<Vec<u8>, DeployError> {
        let holders: Vec<String> = self
            .cluster
            .module_holders(sha)
            .into_iter()
            .filter(|n| n != self.cluster.node_id())
            .filter_map(|n| self.cluster.node(&n).map(|info| info.grpc))
            .filter(|addr| !addr.is_empty())
            .collect();
        if holders.is_empty() {
            return Err(DeployError::NotHeld(sha.to_owned()));
        }
        let link = self
            .link
            .clone()
            .unwrap_or_else(|| crate::rpc::Link::plain(""));
        let mut errors = Vec::new();
        for addr in holders {
            match crate::rpc::fetch(&addr, &link, sha).await {
                Ok(bytes) => return Ok(bytes),
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
        Err(DeployError::Fetch {
            sha: sha.to_owned(),
            errors: errors.join("; "),
        })
    }

    /// Installs the configured games at start-up (each must load: a node does not
    /// start without its games) and watches their files for new versions.
    pub async fn start(
        &self,
        games: &std::collections::BTreeMap<String, GameConfig>,
    ) -> anyhow::Result<Option<ModuleWatcher>> {
        for (name, game) in games {
            let source = Source::File(game.module.clone());
            match self.deploy(name, source, game.policy).await {
                Ok(_) => {}
                // Nothing runs yet, so nothing "stays": name the file and the reason.
                Err(DeployError::Refused { origin, error }) => {
                    anyhow::bail!("game `{name}` ({origin}): {error}")
                }
                Err(e) => anyhow::bail!("game `{name}`: {e}"),
            }
        }
        if games.is_empty() {
            return Ok(None);
        }
        let files = games
            .iter()
            .map(|(name, g)| (g.module.clone(), (name.clone(), g.policy)));
        Ok(Some(ModuleWatcher::start(self.clone(), files)?))
    }
}
