//! Builds guest crates for `wasm32-wasip2`: the one place that runs that cargo command
//! (tests, benches and `ludus dev` all come here).
//!
//! A missing `wasm32-wasip2` target is added with rustup first: cargo does not install a
//! target on an existing toolchain by itself.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub const TARGET: &str = "wasm32-wasip2";

/// The repository's `example-games/` workspace.
pub fn example_games_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../example-games")
}

/// `cargo` run in `dir`, without the flags meant for the host build (they must not leak
/// into a guest build).
fn guest_cargo(dir: &Path) -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    command
        .current_dir(dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET");
    command
}

/// Adds the `wasm32-wasip2` target with rustup if the toolchain lacks it.
pub fn ensure_target() -> anyhow::Result<()> {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    CHECKED
        .get_or_init(|| {
            let sysroot = Command::new("rustc")
                .args(["--print", "sysroot"])
                .output()
                .map_err(|e| format!("running rustc: {e}"))?;
            let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_owned();
            if Path::new(&sysroot)
                .join("lib/rustlib")
                .join(TARGET)
                .exists()
            {
                return Ok(());
            }
            let status = Command::new("rustup")
                .args(["target", "add", TARGET])
                .status()
                .map_err(|e| {
                    format!("the {TARGET} target is missing and rustup could not run: {e}")
                })?;
            if status.success() {
                Ok(())
            } else {
                Err(format!("`rustup target add {TARGET}` failed ({status})"))
            }
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// Builds every crate of the guest workspace at `dir` in release mode and returns the
/// directory holding the `.wasm` files.
pub fn build_workspace(dir: &Path) -> anyhow::Result<PathBuf> {
    ensure_target()?;
    let target_dir = dir.join("target");
    let output = guest_cargo(dir)
        .args([
            "build",
            "--release",
            "--workspace",
            "--target",
            TARGET,
            "--target-dir",
        ])
        .arg(&target_dir)
        .output()
        .with_context(|| format!("running cargo in {}", dir.display()))?;
    if !output.status.success() {
        bail!(
            "building the guests in {} failed:\n{}",
            dir.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(target_dir.join(TARGET).join("release"))
}

/// The example games, built once per process. `name` is the crate name (`arena`,
/// `arena-v2`, `tictactoe`, `faulty`, `bad-restore`, `old-contract`).
pub fn example_game(name: &str) -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT
        .get_or_init(|| build_workspace(&example_games_dir()).map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)?;
    let path = dir.join(format!("{}.wasm", name.replace('-', "_")));
    if !path.exists() {
        bail!("no example game `{name}` (looked for {})", path.display());
    }
    Ok(path)
}

/// The bytes of an example game.
pub fn example_game_bytes(name: &str) -> anyhow::Result<Vec<u8>> {
    let path = example_game(name)?;
    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
}

/// A guest crate built by [`build_crate`].
#[derive(Clone, Debug)]
pub struct BuiltCrate {
    /// The package name (the game's name by default).
    pub package: String,
    pub wasm: PathBuf,
}

/// Builds the guest crate at `dir` (release, `wasm32-wasip2`) and returns its `.wasm`.
/// On failure the error holds the compiler's messages.
pub fn build_crate(dir: &Path) -> anyhow::Result<BuiltCrate> {
    ensure_target()?;
    let manifest = dir.join("Cargo.toml");
    if !manifest.exists() {
        bail!("{} is not a crate (no Cargo.toml)", dir.display());
    }
    let manifest = manifest.canonicalize()?;
    let output = guest_cargo(dir)
        .args([
            "build",
            "--release",
            "--target",
            TARGET,
            "--message-format=json-render-diagnostics",
        ])
        .output()
        .with_context(|| format!("running cargo in {}", dir.display()))?;
    if !output.status.success() {
        bail!("build failed:\n{}", String::from_utf8_lossy(&output.stderr));
    }
    for line in output.stdout.split(|b| *b == b'\n') {
        let Ok(msg) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact"
            || msg["manifest_path"].as_str().map(Path::new) != Some(&manifest)
        {
            continue;
        }
        let wasm = msg["filenames"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str())
            .find(|f| f.ends_with(".wasm"));
        if let Some(wasm) = wasm {
            let package = msg["target"]["name"]
                .as_str()
                .unwrap_or_default()
                .replace('_', "-");
            return Ok(BuiltCrate {
                package,
                wasm: PathBuf::from(wasm),
            });
        }
    }
    bail!(
        "{} built no .wasm: is its crate-type `cdylib`?",
        dir.display()
    )
}
