//! Builds games into components: Rust crates for `wasm32-wasip2` with cargo, and
//! TypeScript games (a directory with a `package.json`) with the TypeScript SDK's build
//! (`guest-sdk-ts/build.mjs`: esbuild, then componentize-js). The one place that runs
//! those commands: tests, benches and `ludus dev` all come here.
//!
//! A missing `wasm32-wasip2` target is added with rustup first, and a TypeScript SDK
//! without its npm packages gets them with `npm ci`: neither tool installs them by itself.

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
/// `arena-v2`, `tictactoe`, `faulty`, `bad-restore`, `old-contract`) or the TypeScript
/// game's directory (`arena-ts`, `arena-ts-v2`).
pub fn example_game(name: &str) -> anyhow::Result<PathBuf> {
    let dir = example_games_dir().join(name);
    if is_typescript(&dir) {
        return example_ts_game(name, &dir);
    }
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

/// A game built by [`build_game`].
#[derive(Clone, Debug)]
pub struct BuiltGame {
    /// The package name (the crate's, or the `name` in `package.json`).
    pub package: String,
    pub wasm: PathBuf,
}

/// How `ludus dev` builds: quickly, for the designer's loop, or as for a deploy.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Profile {
    /// Rust: the `release` profile of the game's workspace (what a deploy ships).
    Release,
    /// Rust: the `dev-quick` profile when the game's workspace defines one (optimised,
    /// without LTO, many codegen units, incremental), else `release`.
    Quick,
}

/// A game directory whose `package.json` makes it a TypeScript (or JavaScript) game.
pub fn is_typescript(dir: &Path) -> bool {
    dir.join("package.json").is_file() && !dir.join("Cargo.toml").exists()
}

/// A single game (a crate with a `[package]`, or a TypeScript game), not a workspace.
pub fn is_game(dir: &Path) -> bool {
    is_typescript(dir)
        || std::fs::read_to_string(dir.join("Cargo.toml")).is_ok_and(|t| t.contains("[package]"))
}

/// Builds the game at `dir`: a Rust crate or a TypeScript game. On failure the error
/// holds the compiler's messages.
pub fn build_game(dir: &Path, profile: Profile) -> anyhow::Result<BuiltGame> {
    if is_typescript(dir) {
        build_typescript(dir, None)
    } else {
        build_crate(dir, profile)
    }
}

/// The TypeScript SDK of this repository (`guest-sdk-ts/`).
pub fn typescript_sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk-ts")
}

/// Checks for Node and installs the TypeScript SDK's npm packages (from its lockfile)
/// if they are missing.
pub fn ensure_typescript_sdk() -> anyhow::Result<PathBuf> {
    static CHECKED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    CHECKED
        .get_or_init(|| {
            let sdk = typescript_sdk_dir();
            if !sdk.join("build.mjs").exists() {
                return Err(format!(
                    "the TypeScript SDK is not at {}: TypeScript games build from the Ludus repository",
                    sdk.display()
                ));
            }
            match Command::new("node").arg("--version").output() {
                Ok(out) if out.status.success() => {}
                _ => {
                    return Err("TypeScript games need Node.js 20 or newer (`node` was not found): \
                         install it (Debian: `apt-get install nodejs npm`)"
                        .to_owned());
                }
            }
            if sdk
                .join("node_modules/@bytecodealliance/componentize-js")
                .exists()
            {
                return Ok(sdk);
            }
            let out = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--prefix"])
                .arg(&sdk)
                .output()
                .map_err(|e| format!("running `npm ci` for the TypeScript SDK: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "`npm ci --prefix {}` failed:\n{}",
                    sdk.display(),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(sdk)
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// Builds the TypeScript game at `dir` with the SDK's build script, into `out` (default
/// `dir/dist/<package>.wasm`).
pub fn build_typescript(dir: &Path, out: Option<&Path>) -> anyhow::Result<BuiltGame> {
    let sdk = ensure_typescript_sdk()?;
    let mut command = Command::new("node");
    command.arg(sdk.join("build.mjs")).arg(dir).arg("--json");
    if let Some(out) = out {
        command.arg("--out").arg(out);
    }
    let output = command
        .output()
        .with_context(|| format!("running node for {}", dir.display()))?;
    if !output.status.success() {
        bail!("build failed:\n{}", String::from_utf8_lossy(&output.stderr));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: serde_json::Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .with_context(|| format!("the TypeScript build printed no report: {stdout}"))?;
    Ok(BuiltGame {
        package: report["package"].as_str().unwrap_or_default().to_owned(),
        wasm: PathBuf::from(report["wasm"].as_str().unwrap_or_default()),
    })
}

/// An example TypeScript game, built once per process and kept on disk between
/// processes (`example-games/target/ts/`) while its sources, the SDK and the contract
/// are unchanged: componentizing takes seconds.
fn example_ts_game(name: &str, dir: &Path) -> anyhow::Result<PathBuf> {
    static BUILT: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, path)) = built.iter().find(|(n, _)| n == name) {
        return Ok(path.clone());
    }
    let stamp = inputs_digest(&[
        dir.to_path_buf(),
        // An example may import another's sources (arena-ts-v2 builds arena-ts's).
        example_games_dir().join("arena-ts/src"),
        typescript_sdk_dir().join("src"),
        typescript_sdk_dir().join("build.mjs"),
        typescript_sdk_dir().join("package-lock.json"),
        example_games_dir().join("../wit/game.wit"),
    ])?;
    let cache = example_games_dir().join("target/ts");
    std::fs::create_dir_all(&cache)?;
    let path = cache.join(format!("{}-{}.wasm", name, &stamp[..16]));
    if !path.exists() {
        // Built beside, then renamed: a test binary running at the same time never
        // reads half a file.
        let partial = cache.join(format!("{name}.{}.partial", std::process::id()));
        build_typescript(dir, Some(&partial))?;
        std::fs::rename(&partial, &path)?;
    }
    built.push((name.to_owned(), path.clone()));
    Ok(path)
}

/// sha256 over the paths and contents of the files under `roots` (skipping
/// `node_modules` and `dist`), hex.
fn inputs_digest(roots: &[PathBuf]) -> anyhow::Result<String> {
    use sha2::{Digest, Sha256};
    fn walk(path: &Path, hasher: &mut Sha256) -> anyhow::Result<()> {
        if path.is_dir() {
            let mut entries: Vec<_> = std::fs::read_dir(path)?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    !p.file_name()
                        .is_some_and(|n| n == "node_modules" || n == "dist")
                })
                .collect();
            entries.sort();
            for entry in entries {
                walk(&entry, hasher)?;
            }
        } else if path.is_file() {
            hasher.update(path.to_string_lossy().as_bytes());
            hasher.update(std::fs::read(path)?);
        }
        Ok(())
    }
    let mut hasher = Sha256::new();
    for root in roots {
        walk(root, &mut hasher)?;
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Builds the guest crate at `dir` (`wasm32-wasip2`) and returns its `.wasm`.
/// On failure the error holds the compiler's messages.
pub fn build_crate(dir: &Path, profile: Profile) -> anyhow::Result<BuiltGame> {
    ensure_target()?;
    let manifest = dir.join("Cargo.toml");
    if !manifest.exists() {
        bail!("{} is not a crate (no Cargo.toml)", dir.display());
    }
    let manifest = manifest.canonicalize()?;
    let profile = match profile {
        Profile::Quick if defines_quick_profile(dir) => "dev-quick",
        _ => "release",
    };
    let output = guest_cargo(dir)
        .args([
            "build",
            "--profile",
            profile,
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
            return Ok(BuiltGame {
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

/// Whether the workspace holding the crate at `dir` defines a `dev-quick` profile.
fn defines_quick_profile(dir: &Path) -> bool {
    dir.ancestors().any(|d| {
        std::fs::read_to_string(d.join("Cargo.toml"))
            .is_ok_and(|t| t.contains("[profile.dev-quick]"))
    })
}
