//! `ludus dev <game dir>`: the designer's loop. Builds the game (a Rust crate with the
//! quick `dev-quick` profile, or a TypeScript game: a directory with a `package.json`),
//! serves it with the browser page, watches its sources, rebuilds on save and hands the
//! rebuilt module to the node's rollout, which swaps it live into running rooms. A build
//! error or a refused module is printed and the running version stays. The designer
//! console (`/dev` on the admin port, `server/designer.rs`) shows the rooms, their state
//! and messages, the swaps and the builds.

use anyhow::Context;
use notify::{RecursiveMode, Watcher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::Config;
use crate::guest_build::{BuiltGame, Profile, build_game, is_typescript};
use crate::rollout::{Deployed, Source};
use crate::rooms::SwapPolicy;
use crate::server::Server;

/// Messages in and out of each room the designer console shows.
const TRACED_MESSAGES: usize = 50;

#[derive(Clone, Debug, clap::Args)]
pub struct DevArgs {
    /// The game: a Rust crate (e.g. example-games/arena) or a TypeScript game's
    /// directory, with its package.json (e.g. example-games/arena-ts).
    pub dir: PathBuf,
    /// Build Rust games with their `release` profile (as for a deploy) instead of the
    /// quicker `dev-quick`.
    #[arg(long)]
    pub release: bool,
    /// Where to serve.
    #[arg(long, default_value = "127.0.0.1:7350")]
    pub listen: SocketAddr,
}

async fn build(dir: &Path, profile: Profile) -> anyhow::Result<BuiltGame> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || build_game(&dir, profile)).await?
}

/// Hands a build to the node's rollout, under the name the game declares: installed the
/// first time, swapped live after.
async fn deploy(server: &Server, built: &BuiltGame) -> anyhow::Result<String> {
    let bytes = tokio::fs::read(&built.wasm)
        .await
        .with_context(|| format!("reading {}", built.wasm.display()))?;
    // Compiled once: the rollout finds the module by its hash.
    let module = server.runtime().load(bytes).await?;
    let source = Source::File(built.wasm.clone());
    let deployed = server
        .rollout
        .deploy(&module.name, source, SwapPolicy::AllRooms)
        .await?;
    Ok(match deployed {
        Deployed::Installed(m) => format!("installed {}", m.label()),
        Deployed::Unchanged(m) => format!("{} is already running (no change)", m.label()),
        Deployed::Swapped(_, report) => format!("swapped live: {}", report.summary()),
    })
}

pub async fn run(
    args: DevArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let dir = args
        .dir
        .canonicalize()
        .with_context(|| format!("game directory {}", args.dir.display()))?;
    let profile = if args.release {
        Profile::Release
    } else {
        Profile::Quick
    };
    let typescript = is_typescript(&dir);
    println!(
        "building {} ({}) ...",
        dir.display(),
        if typescript {
            "TypeScript"
        } else {
            "Rust, wasm32-wasip2"
        }
    );
    let started = std::time::Instant::now();
    let built = build(&dir, profile).await?;
    let first_build = started.elapsed();
    let mut config = Config::load(None)?;
    config.listen = args.listen;
    // The game comes through the rollout below, not from a watched file.
    config.games.clear();
    config.admin.designer_console = true;
    config.rooms.trace_messages = TRACED_MESSAGES;
    let server = crate::server::start(config).await?;
    let deployed = deploy(&server, &built).await?;
    let designer = server
        .designer
        .clone()
        .context("the designer console is on")?;
    designer.set_game(&built.package, &format!("{}/", server.url()));
    designer.record_build(first_build, Ok(deployed));
    println!(
        "serving {}: open {}/ in a browser to play",
        built.package,
        server.url()
    );
    println!(
        "designer console (rooms, state, messages, swaps, builds): http://{}/dev",
        server.admin_addr
    );
    println!(
        "watching {}/src: save a change to rebuild and swap it live",
        dir.display()
    );

    let (tx, mut changes) = tokio::sync::mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| e.kind.is_modify() || e.kind.is_create() || e.kind.is_remove()) {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(&dir.join("src"), RecursiveMode::Recursive)?;
    let manifest = if typescript {
        "package.json"
    } else {
        "Cargo.toml"
    };
    watcher.watch(&dir.join(manifest), RecursiveMode::NonRecursive)?;

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(()) = changes.recv() => {
                while let Ok(Some(())) = tokio::time::timeout(Duration::from_millis(200), changes.recv()).await {}
                println!("change seen, rebuilding ...");
                let started = std::time::Instant::now();
                let result = match build(&dir, profile).await {
                    Ok(built) => deploy(&server, &built).await,
                    Err(e) => Err(e),
                };
                let result = result.map_err(|e| format!("{e:#}"));
                match &result {
                    Ok(done) => println!("{done}"),
                    Err(e) => println!("{e}\nthe running version stays"),
                }
                designer.record_build(started.elapsed(), result);
            }
        }
    }
    server.stop().await;
    Ok(())
}
