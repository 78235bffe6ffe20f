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
    /// Log lines as text or as JSON objects (LUDUS_LOG sets the filter).
    #[arg(
        long,
        global = true,
        value_enum,
        env = "LUDUS_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: ludus::logs::Format,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: the gateway and the games in the config, swapped live when their
    /// module files change.
    Serve {
        /// TOML config file (every key can also be set as LUDUS_<SECTION>__<KEY>).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Gateway address (overrides `listen`).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// A game to serve, as NAME=FILE.wasm (repeatable; adds to the config's games).
        #[arg(long = "game", value_parser = parse_game)]
        games: Vec<(String, PathBuf)>,
        /// Join the cluster kept in etcd at these endpoints (comma-separated;
        /// overrides `cluster.etcd`).
        #[arg(long, value_delimiter = ',')]
        etcd: Vec<String>,
        /// This node's id in the cluster (overrides `cluster.node_id`).
        #[arg(long)]
        node_id: Option<String>,
        /// Where the node keeps its data (overrides `data_dir`; default `ludus-data`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Admin port: health, readiness, metrics (overrides `admin.listen`; default
        /// 127.0.0.1:7351).
        #[arg(long)]
        admin: Option<std::net::SocketAddr>,
    },
    /// Build a game, serve it with the browser page, rebuild and swap it live on save.
    Dev(ludus::dev::DevArgs),
    /// Deploy a module to every node of a cluster (etcd), live, and wait for them all.
    Deploy(ludus::ops::DeployArgs),
    /// Put a cluster's game back on its previous version.
    Rollback(ludus::ops::RollbackArgs),
    /// Nodes, their load, and which version of each game every node runs.
    Status(ludus::ops::StatusArgs),
    /// Run the arena game with bots in one room and swap it live to v2 halfway.
    Demo(ludus::demo::DemoArgs),
    /// Operate on the rooms of a cluster.
    #[command(subcommand)]
    Rooms(RoomsCommand),
    /// Move every room of a node, live, to the other nodes of the cluster.
    Drain(ludus::ops::DrainArgs),
    /// Live host settings of a cluster: set, unset, get, history.
    #[command(subcommand)]
    Config(ludus::ops::ConfigCommand),
    /// Check that a module is a game this host accepts, and show what it declares.
    Check {
        /// The game's .wasm file (built with --target wasm32-wasip2).
        module: PathBuf,
    },
    /// Build a game (a Rust crate or a TypeScript game's directory) into a .wasm, or
    /// every game of a guest workspace (default: this checkout's example-games).
    Build {
        /// A game or a guest workspace.
        dir: Option<PathBuf>,
        /// Build a Rust game with its `release` profile, as for a deploy (default: the
        /// quicker `dev-quick` that `ludus dev` uses). Workspaces always build `release`.
        #[arg(long)]
        release: bool,
    },
    /// Measure the host.
    #[command(subcommand)]
    Bench(Bench),
}

#[derive(Subcommand)]
enum RoomsCommand {
    /// Move a room, live, to another node: its players follow with nothing lost.
    Move(ludus::ops::MoveArgs),
}

#[derive(Subcommand)]
enum Bench {
    /// The designer's loop: a saved change to arena until it is live in a room.
    DevLoop(ludus::bench::devloop::DevLoopBench),
    /// Compile, room creation, call costs and swap pause with the arena game.
    Runtime(ludus::bench::runtime::RuntimeBench),
    /// The arena load test against a running node (127.0.0.1 only).
    Arena(ludus::bench::arena::ArenaBench),
    /// The arena workload's socket traffic alone (no server work): the CPU floor of a given N.
    Floor(ludus::bench::floor::FloorBench),
    /// Matchmaker throughput: N clients ask for a match at once; tickets matched per second.
    Match(ludus::bench::matchmaking::MatchBench),
    /// Server memory per idle connection and per arena room (starts `ludus serve`).
    Memory(ludus::bench::memory::MemoryBench),
    /// Idle sessions on one node up to 100,000: memory at each step, then held with
    /// pings (starts `ludus serve`; spreads sockets over 127.0.0.2 onwards).
    Idle(ludus::bench::idle::IdleBench),
    /// Arena rooms on one node up to 10,000: memory per room and create time at each
    /// step, then the node's CPU with them all ticking.
    Rooms(ludus::bench::rooms::RoomsBench),
    /// Rooms back after a node is killed and started again (starts `ludus serve` twice).
    Restart(ludus::bench::restart::RestartBench),
    /// Object writes per second and write latency, on SQLite or PostgreSQL.
    Storage(ludus::bench::storage::StorageBench),
    /// A node of three with N rooms drained live to the others (needs an etcd).
    Migrate(ludus::bench::migrate::MigrateBench),
    /// Rooms taken over when a node of three is killed, over rounds (needs an etcd and
    /// a PostgreSQL to share).
    Takeover(ludus::bench::takeover::TakeoverBench),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // A benchmark's rooms open and close by the thousand: their info lines would bury
    // its report. LUDUS_LOG still overrides.
    let default_filter = match cli.command {
        Command::Bench(_) => "warn",
        _ => "warn,ludus=info",
    };
    ludus::logs::init(default_filter, cli.log_format);
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            config,
            listen,
            games,
            etcd,
            node_id,
            data_dir,
            admin,
        } => {
            let mut config = ludus::config::Config::load(config.as_deref())?;
            if !etcd.is_empty() {
                config.cluster.etcd = etcd;
            }
            if node_id.is_some() {
                config.cluster.node_id = node_id;
            }
            if let Some(listen) = listen {
                config.listen = listen;
            }
            if let Some(dir) = data_dir {
                config.data_dir = dir;
            }
            if let Some(admin) = admin {
                config.admin.listen = admin;
            }
            for (name, module) in games {
                let game = ludus::config::GameConfig {
                    module,
                    policy: ludus::rooms::SwapPolicy::AllRooms,
                };
                config.games.insert(name, game);
            }
            ludus::server::run(config, ludus::server::shutdown_signal()).await
        }
        Command::Deploy(args) => ludus::ops::deploy(args).await,
        Command::Rollback(args) => ludus::ops::rollback(args).await,
        Command::Status(args) => ludus::ops::status(args).await,
        Command::Dev(args) => ludus::dev::run(args, ludus::server::shutdown_signal()).await,
        Command::Demo(args) => ludus::demo::run(args).await,
        Command::Check { module } => ludus::check::run(&module).await,
        Command::Build { dir, release } => {
            use ludus::guest_build::{Profile, build_game, build_workspace, is_game};
            let dir = dir.unwrap_or_else(ludus::guest_build::example_games_dir);
            if is_game(&dir) {
                let profile = if release {
                    Profile::Release
                } else {
                    Profile::Quick
                };
                let built = build_game(&dir, profile)?;
                println!("built {} into {}", built.package, built.wasm.display());
            } else {
                let out = build_workspace(&dir)?;
                println!("built into {}", out.display());
            }
            Ok(())
        }
        Command::Bench(Bench::Arena(args)) => ludus::bench::arena::run(args).await.map(drop),
        Command::Bench(Bench::Floor(args)) => {
            ludus::bench::floor::print(&ludus::bench::floor::run(args).await?);
            Ok(())
        }
        Command::Bench(Bench::Match(args)) => ludus::bench::matchmaking::run(args).await.map(drop),
        Command::Bench(Bench::Memory(args)) => ludus::bench::memory::run(args).await,
        Command::Bench(Bench::Idle(args)) => ludus::bench::idle::run(args).await,
        Command::Bench(Bench::Rooms(args)) => ludus::bench::rooms::run(args).await,
        Command::Bench(Bench::Restart(args)) => ludus::bench::restart::run(args).await,
        Command::Rooms(RoomsCommand::Move(args)) => ludus::ops::move_room(args).await,
        Command::Drain(args) => ludus::ops::drain(args).await,
        Command::Config(command) => ludus::ops::config(command).await,
        Command::Bench(Bench::Migrate(args)) => ludus::bench::migrate::run(args).await,
        Command::Bench(Bench::Takeover(args)) => ludus::bench::takeover::run(args).await,
        Command::Bench(Bench::Storage(args)) => ludus::bench::storage::run(args).await,
        Command::Bench(Bench::DevLoop(args)) => {
            ludus::bench::devloop::print(&ludus::bench::devloop::run(args).await?);
            Ok(())
        }
        Command::Bench(Bench::Runtime(args)) => {
            let report = ludus::bench::runtime::run(args).await?;
            ludus::bench::runtime::print(&report);
            Ok(())
        }
    }
}

fn parse_game(s: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=FILE.wasm, got `{s}`"))?;
    Ok((name.to_owned(), PathBuf::from(path)))
}
