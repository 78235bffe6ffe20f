//! `ludus bench dev-loop`: the designer's loop, from a saved change to the new build live
//! in a running room. A copy of arena (its own workspace in a temporary directory, on
//! this checkout's SDK) runs in a room; the bench changes arena's step rule as a designer
//! saving the file would, then does what `ludus dev` does on a save: build (the quick
//! `dev-quick` profile, or `--release`), compile and validate the module, swap it into the
//! room. Each save gets a new value, so every build is a real one. The first build (cold)
//! is not counted.

use anyhow::{Context, anyhow, bail};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{Stats, human};
use crate::guest_build::{Profile, build_game, example_games_dir, typescript_sdk_dir};
use crate::rooms::{CreateRoom, Rooms, RoomsConfig, SwapPolicy};
use crate::runtime::{Runtime, RuntimeLimits};

#[derive(Clone, Debug, clap::Args)]
pub struct DevLoopBench {
    /// Saves to time.
    #[arg(long, default_value_t = 5)]
    pub saves: usize,
    /// Build with the `release` profile (LTO, one codegen unit) instead of `dev-quick`.
    #[arg(long)]
    pub release: bool,
    /// Time arena's TypeScript build (example-games/arena-ts) instead of the Rust one.
    #[arg(long)]
    pub typescript: bool,
}

#[derive(Debug, Serialize)]
pub struct DevLoopReport {
    pub game: &'static str,
    pub profile: &'static str,
    pub module_bytes: usize,
    /// Build: the saved source to a `.wasm`.
    pub build: Stats,
    /// Compile and validate the module (what a node does before a swap).
    pub load: Stats,
    /// The live swap of the running room.
    pub swap: Stats,
    /// Save to live: the three together.
    pub total: Stats,
}

/// The copy of the game the bench edits, and the text it changes.
struct Copy {
    dir: PathBuf,
    source: PathBuf,
    /// The text just before the number the bench changes.
    rule: &'static str,
}

impl Copy {
    fn save(&self, step: u32) -> anyhow::Result<()> {
        let text = std::fs::read_to_string(&self.source)?;
        let (head, rest) = text
            .split_once(self.rule)
            .ok_or_else(|| anyhow!("{} no longer has `{}`", self.source.display(), self.rule))?;
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        let changed = format!("{head}{}{step}{}", self.rule, &rest[digits..]);
        std::fs::write(&self.source, changed)?;
        Ok(())
    }
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if name == "target" || name == "dist" || name == "node_modules" {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            copy_dir(&path, &to.join(&name))?;
        } else {
            std::fs::copy(&path, to.join(&name))?;
        }
    }
    Ok(())
}

/// Arena in its own workspace under `root`: the example games' workspace settings and
/// lockfile, this checkout's SDK.
fn rust_copy(root: &Path) -> anyhow::Result<Copy> {
    let games = example_games_dir();
    let sdk = games.join("../guest-sdk").canonicalize()?;
    let manifest = std::fs::read_to_string(games.join("Cargo.toml"))?;
    let members = manifest
        .lines()
        .find(|l| l.starts_with("members"))
        .context("example-games/Cargo.toml has no members line")?;
    let manifest = manifest.replace(members, r#"members = ["arena"]"#).replace(
        r#"path = "../guest-sdk""#,
        &format!("path = {:?}", sdk.display().to_string()),
    );
    std::fs::write(root.join("Cargo.toml"), manifest)?;
    std::fs::copy(games.join("Cargo.lock"), root.join("Cargo.lock"))?;
    copy_dir(&games.join("arena"), &root.join("arena"))?;
    Ok(Copy {
        dir: root.join("arena"),
        source: root.join("arena/src/lib.rs"),
        rule: "if RULES == 1 { ",
    })
}

/// Arena's TypeScript build under `root`.
fn typescript_copy(root: &Path) -> anyhow::Result<Copy> {
    let from = example_games_dir().join("arena-ts");
    copy_dir(&from, &root.join("arena-ts"))?;
    // The game names the SDK by a path relative to the repository.
    let package = std::fs::read_to_string(from.join("package.json"))?.replace(
        "file:../../guest-sdk-ts",
        &format!("file:{}", typescript_sdk_dir().canonicalize()?.display()),
    );
    std::fs::write(root.join("arena-ts/package.json"), package)?;
    Ok(Copy {
        dir: root.join("arena-ts"),
        source: root.join("arena-ts/src/arena.ts"),
        rule: "rules === 1 ? ",
    })
}

pub async fn run(args: DevLoopBench) -> anyhow::Result<DevLoopReport> {
    let root = tempfile::tempdir()?;
    let copy = if args.typescript {
        typescript_copy(root.path())?
    } else {
        rust_copy(root.path())?
    };
    let profile = if args.release {
        Profile::Release
    } else {
        Profile::Quick
    };
    let build = |dir: PathBuf| async move {
        tokio::task::spawn_blocking(move || build_game(&dir, profile)).await?
    };

    // The cold build and the running room.
    let rt = Runtime::new(RuntimeLimits::default())?;
    let rooms = Rooms::new(rt.clone(), RoomsConfig::default())?;
    let first = build(copy.dir.clone()).await?;
    let bytes = std::fs::read(&first.wasm)?;
    let module_bytes = bytes.len();
    let module = rt.load(bytes).await?;
    rooms.install(&module.name, module.clone());
    let room = rooms
        .create(CreateRoom {
            game: module.name.clone(),
            ..Default::default()
        })
        .await?;

    let (mut builds, mut loads, mut swaps, mut totals) = (vec![], vec![], vec![], vec![]);
    for save in 0..args.saves {
        // Steps of 11, 12, ...: a new build each time.
        copy.save(11 + save as u32)?;
        let saved = Instant::now();
        let built = build(copy.dir.clone()).await?;
        let built_at = Instant::now();
        let module = rt.load(std::fs::read(&built.wasm)?).await?;
        let loaded_at = Instant::now();
        let report = rooms
            .swap_game(&module.name, module.clone(), SwapPolicy::AllRooms)
            .await
            .map_err(|e| anyhow!("swap: {e}"))?;
        if let Some(failed) = report.results.iter().find_map(|r| r.result.as_ref().err()) {
            bail!("the swap failed: {failed}");
        }
        let live = Instant::now();
        if room.info().module_sha256 != module.sha256_hex() {
            bail!("the room does not run the new build after the swap");
        }
        builds.push(built_at - saved);
        loads.push(loaded_at - built_at);
        swaps.push(live - loaded_at);
        totals.push(live - saved);
    }
    room.close("bench").await;
    Ok(DevLoopReport {
        game: if args.typescript { "arena-ts" } else { "arena" },
        profile: match (args.typescript, args.release) {
            (true, _) => "esbuild + componentize-js",
            (false, true) => "release",
            (false, false) => "dev-quick",
        },
        module_bytes,
        build: Stats::of(builds),
        load: Stats::of(loads),
        swap: Stats::of(swaps),
        total: Stats::of(totals),
    })
}

pub fn print(report: &DevLoopReport) {
    println!(
        "{} ({}): module {} bytes",
        report.game, report.profile, report.module_bytes
    );
    println!(
        "{:<28} {:>10} {:>10} {:>10} {:>8}",
        "save -> live", "mean", "p50", "max", "samples"
    );
    for (name, s) in [
        ("build", &report.build),
        ("compile + validate", &report.load),
        ("live swap", &report.swap),
        ("total: save -> live", &report.total),
    ] {
        println!(
            "{:<28} {:>10} {:>10} {:>10} {:>8}",
            name,
            human(s.mean_ns),
            human(s.p50_ns),
            human(s.max_ns),
            s.samples
        );
    }
}
