//! The file-watch feeder: watches every game's module file; a changed file goes down the
//! rollout path (compiled in the background, swapped into the game's rooms by its
//! policy). A file that does not load is refused: the running version stays and
//! `/v1/games` shows why.

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

use super::{Deployed, Rollout, Source};
use crate::rooms::SwapPolicy;

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
    /// Watches `files` (module file -> game and policy) until dropped.
    pub fn start(
        rollout: Rollout,
        files: impl IntoIterator<Item = (PathBuf, (String, SwapPolicy))>,
    ) -> anyhow::Result<Self> {
        let files: HashMap<PathBuf, (String, SwapPolicy)> = files
            .into_iter()
            .map(|(path, game)| (absolute(&path), game))
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
        tokio::spawn(reload_loop(rollout, files, rx));
        Ok(ModuleWatcher { _watcher: watcher })
    }
}

async fn reload_loop(
    rollout: Rollout,
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
                let source = Source::File(path.clone());
                // Failures are logged and recorded by the rollout itself.
                if let Ok(Deployed::Swapped(_, report)) =
                    rollout.deploy(game, source, *policy).await
                {
                    tracing::debug!(game, "{}", report.summary());
                }
            }
        }
    }
}
