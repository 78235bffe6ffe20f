//! Live swap on file change: watches every game's module file; a changed file is
//! compiled in the background and swapped into the game's rooms by its policy. A file
//! that does not load is refused: the running version stays and `/v1/games` shows why.

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

use crate::config::GameConfig;
use crate::rooms::{Rooms, SwapPolicy};

/// Quiet time after the last change before a file is read (editors and cargo write in
/// several steps).
const SETTLE: Duration = Duration::from_millis(150);

/// Keeps the watch alive; dropping it stops watching.
pub struct ModuleWatcher {
    _watcher: RecommendedWatcher,
}

/// The absolute form of a path, for comparing watcher events with configured files.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

impl ModuleWatcher {
    pub fn start(rooms: Rooms, games: &BTreeMap<String, GameConfig>) -> anyhow::Result<Self> {
        let files: HashMap<PathBuf, (String, SwapPolicy)> = games
            .iter()
            .map(|(name, g)| (absolute(&g.module), (name.clone(), g.policy)))
            .collect();
        let (tx, rx) = mpsc::unbounded_channel::<PathBuf>();
        let watched: HashSet<PathBuf> = files.keys().cloned().collect();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if let Ok(event) = event {
                    for path in event.paths {
                        if watched.contains(&absolute(&path)) {
                            let _ = tx.send(absolute(&path));
                        }
                    }
                }
            })?;
        // Watch the directories: an editor or a build may replace the file itself.
        let dirs: HashSet<PathBuf> = files
            .keys()
            .filter_map(|p| p.parent().map(Path::to_path_buf))
            .collect();
        for dir in dirs {
            watcher.watch(&dir, RecursiveMode::NonRecursive)?;
        }
        tokio::spawn(reload_loop(rooms, files, rx));
        Ok(ModuleWatcher { _watcher: watcher })
    }
}

async fn reload_loop(
    rooms: Rooms,
    files: HashMap<PathBuf, (String, SwapPolicy)>,
    mut rx: mpsc::UnboundedReceiver<PathBuf>,
) {
    while let Some(first) = rx.recv().await {
        let mut changed = HashSet::from([first]);
        // Wait until the files stop changing.
        while let Ok(Some(path)) = tokio::time::timeout(SETTLE, rx.recv()).await {
            changed.insert(path);
        }
        for path in changed {
            if let Some((game, policy)) = files.get(&path) {
                reload(&rooms, game, &path, *policy).await;
            }
        }
    }
}

/// Loads the file and swaps it in if it is a new, valid version of the game.
pub async fn reload(rooms: &Rooms, game: &str, path: &Path, policy: SwapPolicy) {
    let bytes = match tokio::fs::read(path).await {
        Ok(bytes) => bytes,
        // Mid-replacement: the next event brings the new file.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            let error = format!("reading {}: {e}", path.display());
            tracing::warn!(game, "{error}");
            rooms.record_game_error(game, error);
            return;
        }
    };
    let module = match rooms.runtime().load(bytes).await {
        Ok(module) => module,
        Err(e) => {
            let error = format!("{} refused, the running version stays: {e}", path.display());
            tracing::warn!(game, "{error}");
            rooms.record_game_error(game, error);
            return;
        }
    };
    if rooms
        .active_module(game)
        .is_some_and(|active| active.sha256 == module.sha256)
    {
        return;
    }
    match rooms.swap_game(game, module, policy).await {
        Ok(report) => {
            if let Some((room, e)) = report.failures().next() {
                tracing::warn!(game, %room, "swap failed in a room, which keeps its version: {e}");
            }
        }
        Err(e) => tracing::warn!(game, "swap refused: {e}"),
    }
}
