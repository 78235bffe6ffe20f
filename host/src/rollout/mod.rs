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
    /// Where every module that goes live is kept, with its game's history.
    storage: crate::storage::Storage,
}

impl Rollout {
    pub fn new(
        rooms: Rooms,
        cluster: Cluster,
        link: Option<crate::rpc::Link>,
        storage: crate::storage::Storage,
    ) -> Rollout {
        Rollout {
            rooms,
            cluster,
            link,
            storage,
        }
    }

    /// Keeps a module that went live (in the background: a database that is slow or
    /// away never holds up a deploy; a failure is logged).
    fn keep(&self, module: &Arc<Module>, bytes: Arc<Vec<u8>>) {
        let (storage, module) = (self.storage.clone(), module.clone());
        tokio::spawn(async move {
            let sha = module.sha256_hex();
            if let Err(e) = storage
                .keep_module(&module.name, &module.version, &sha, &bytes)
                .await
            {
                tracing::warn!(game = %module.name, "keeping module {}: {e}", module.label());
            }
        });
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
        if let Err(e) = self
            .cluster
            .hold_module(&module.sha256_hex(), bytes.clone())
            .await
        {
            // The node runs it anyway; other nodes cannot fetch it from here.
            tracing::warn!(game, "announcing module {}: {e}", module.label());
        }
        let Some(active) = self.rooms.active_module(game) else {
            self.rooms.install(game, module.clone());
            tracing::info!(game, module = %module.label(), "game installed");
            self.keep(&module, bytes);
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
            None => {
                self.keep(&module, bytes);
                Ok(Deployed::Swapped(module, report))
            }
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
                if let Some(bytes) = self.cluster.module_bytes(&sha) {
                    return Ok((bytes, origin));
                }
                match self.fetch(&sha).await {
                    Ok(bytes) => Ok((Arc::new(bytes), origin)),
                    // No node holds it (a cluster started again from nothing): the
                    // module may be kept in storage.
                    Err(e) => match self.storage.module_bytes(&sha).await {
                        Ok(bytes) => Ok((Arc::new(bytes), origin)),
                        Err(_) => Err(e),
                    },
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

    /// Installs, for every game storage knows and the config does not name, the
    /// version that ran last. One that fails is logged and left out.
    async fn restore_kept(&self, configured: &std::collections::BTreeMap<String, GameConfig>) {
        let kept = match self.storage.current_games().await {
            Ok(kept) => kept,
            Err(e) => {
                tracing::warn!("reading the kept games: {e}");
                return;
            }
        };
        for game in kept {
            if configured.contains_key(&game.game) || self.rooms.active_module(&game.game).is_some()
            {
                continue;
            }
            let bytes = match self.storage.module_bytes(&game.sha256).await {
                Ok(bytes) => bytes,
                Err(e) => {
                    tracing::warn!(game = %game.game, "reading kept module {}: {e}", short_sha(&game.sha256));
                    continue;
                }
            };
            match self
                .deploy(&game.game, Source::Bytes(bytes), SwapPolicy::AllRooms)
                .await
            {
                Ok(_) => {
                    tracing::info!(game = %game.game, version = %game.version, "game restored from storage")
                }
                Err(e) => tracing::warn!(game = %game.game, "restoring the kept version: {e}"),
            }
        }
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
        self.restore_kept(games).await;
        if games.is_empty() {
            return Ok(None);
        }
        let files = games
            .iter()
            .map(|(name, g)| (g.module.clone(), (name.clone(), g.policy)));
        Ok(Some(ModuleWatcher::start(self.clone(), files)?))
    }
}
