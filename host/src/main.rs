//! The `ludus` command line: parses flags, sets up logging, calls the library.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "ludus",
    version,
    about = "Ludus: a game server host for WebAssembly game rules"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the arena game with bots in one room and swap it live to v2 halfway.
    Demo(ludus::demo::DemoArgs),
    /// Check that a module is a game this host accepts, and show what it declares.
    Check {
        /// The game's .wasm file (built with --target wasm32-wasip2).
        module: PathBuf,
    },
    /// Build the example games (or the game workspace at DIR) for wasm32-wasip2.
    Build {
        /// A guest workspace (default: this checkout's example-games).
        dir: Option<PathBuf>,
    },
    /// Measure the host.
    #[command(subcommand)]
    Bench(Bench),
}

#[derive(Subcommand)]
enum Bench {
    /// Compile, room creation, call costs and swap pause with the arena game.
    Runtime(ludus::bench::runtime::RuntimeBench),
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LUDUS_LOG")
                .unwrap_or_else(|_| "warn,ludus=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo(args) => ludus::demo::run(args).await,
        Command::Check { module } => ludus::check::run(&module).await,
        Command::Build { dir } => {
            let dir = dir.unwrap_or_else(ludus::guest_build::example_games_dir);
            let out = ludus::guest_build::build_workspace(&dir)?;
            println!("built into {}", out.display());
            Ok(())
        }
        Command::Bench(Bench::Runtime(args)) => {
            let report = ludus::bench::runtime::run(args).await?;
            ludus::bench::runtime::print(&report);
            Ok(())
        }
    }
}
