//! Operator commands against a cluster: `ludus deploy`, `ludus rollback`, `ludus status`.

use anyhow::{Context, anyhow, bail};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::cluster::{Desired, GameVersion, Operator, short_sha as short};
use crate::config::Config;
use crate::rooms::SwapPolicy;

/// Which cluster to talk to.
#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// etcd endpoints, comma-separated (default: `cluster.etcd` of the config).
    #[arg(long, value_delimiter = ',')]
    pub etcd: Vec<String>,
    /// Key prefix in etcd (default: `cluster.prefix`, or `/ludus/<cluster.name>/`).
    #[arg(long)]
    pub prefix: Option<String>,
    /// TOML config file (its `[cluster]` section names etcd and the prefix).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

impl Target {
    /// The cluster, and its settings (the credential and TLS for uploads).
    async fn connect(&self) -> anyhow::Result<(Operator, crate::cluster::ClusterConfig)> {
        let mut cfg = Config::load(self.config.as_deref())?.cluster;
        if !self.etcd.is_empty() {
            cfg.etcd = self.etcd.clone();
        }
        if self.prefix.is_some() {
            cfg.prefix = self.prefix.clone();
        }
        let operator = Operator::connect(&cfg).await?;
        Ok((operator, cfg))
    }
}

#[derive(clap::Args, Debug)]
pub struct DeployArgs {
    /// The game's name in the cluster.
    pub game: String,
    /// The module (.wasm) to run.
    pub module: PathBuf,
    /// all-rooms (running rooms swap live), new-rooms-only, or canary:PERCENT (that
    /// share of running rooms swaps, the rest finish on their version).
    #[arg(long, default_value = "all-rooms", value_parser = parse_policy)]
    pub policy: SwapPolicy,
    /// Config (a JSON object) for new rooms created without one.
    #[arg(long, value_parser = parse_room_config)]
    pub room_config: Option<String>,
    /// Keep a failed version instead of rolling the cluster back to the previous one.
    #[arg(long)]
    pub no_rollback: bool,
    /// How long to wait for every node to report.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub target: Target,
}

fn parse_policy(s: &str) -> Result<SwapPolicy, String> {
    if let Some(percent) = s.strip_prefix("canary:") {
        return match percent.parse::<u8>() {
            Ok(p) if (1..=100).contains(&p) => Ok(SwapPolicy::Canary(p)),
            _ => Err(format!(
                "canary needs a percentage from 1 to 100, not `{percent}`"
            )),
        };
    }
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|_| format!("unknown policy `{s}` (all-rooms, new-rooms-only or canary:PERCENT)"))
}

fn parse_room_config(s: &str) -> Result<String, String> {
    match serde_json::from_str::<serde_json::Value>(s) {
        Ok(serde_json::Value::Object(_)) => Ok(s.to_owned()),
        Ok(other) => Err(format!("room config must be a JSON object, not `{other}`")),
        Err(e) => Err(format!("room config is not JSON: {e}")),
    }
}

#[derive(clap::Args, Debug)]
pub struct RollbackArgs {
    pub game: String,
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub target: Target,
}

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
    /// List every room: its owner, and its last checkpoint's age and size (read from
    /// the storage the config names: `storage.url`, or SQLite in `data_dir`).
    #[arg(long)]
    pub rooms: bool,
    #[command(flatten)]
    pub target: Target,
}

pub async fn deploy(args: DeployArgs) -> anyhow::Result<()> {
    let bytes = std::fs::read(&args.module)
        .with_context(|| format!("reading {}", args.module.display()))?;
    let (mut cluster, cfg) = args.target.connect().await?;
    let prefix = cluster.prefix().to_owned();
    let link = crate::rpc::Link::new(&cfg).context("uploading needs the cluster's settings")?;
    let snap = cluster.snapshot().await?;
    let node = snap
        .nodes
        .values()
        .find(|n| !n.grpc.is_empty())
        .ok_or_else(|| anyhow!("no node is up in the cluster at {prefix}"))?;
    let uploaded = crate::rpc::upload(&node.grpc, &link, bytes)
        .await
        .with_context(|| format!("uploading {} to node {}", args.module.display(), node.id))?;
    println!(
        "uploaded {} {} ({}, {} bytes) to node {}",
        uploaded.name,
        uploaded.version,
        short(&uploaded.sha256),
        uploaded.size,
        node.id
    );
    anyhow::ensure!(
        uploaded.name == args.game,
        "{} declares the game `{}`, not `{}`: nothing was deployed (a module is deployed \
         over the game it declares; see export_game! in the game's crate)",
        args.module.display(),
        uploaded.name,
        args.game
    );
    let version = GameVersion {
        sha256: uploaded.sha256.clone(),
        name: uploaded.name,
        version: uploaded.version,
        size: uploaded.size,
    };
    cluster
        .set_desired(
            &args.game,
            Desired {
                version: version.clone(),
                policy: args.policy,
                room_config: args.room_config.clone(),
                rollback_on_failure: !args.no_rollback,
            },
        )
        .await?;
    println!("{} desired version is now {}", args.game, version.version);
    wait_for(&mut cluster, &args.game, &version, args.timeout).await
}

pub async fn rollback(args: RollbackArgs) -> anyhow::Result<()> {
    let (mut cluster, _) = args.target.connect().await?;
    let entry = cluster
        .rollback(&args.game, "rolled back by an operator".into())
        .await?;
    println!(
        "{} desired version is now {} ({})",
        args.game,
        entry.current.version,
        short(&entry.current.sha256)
    );
    wait_for(&mut cluster, &args.game, &entry.current, args.timeout).await
}

/// Shows each node's progress until all run `version`, one fails, or time runs out.
async fn wait_for(
    cluster: &mut Operator,
    game: &str,
    version: &GameVersion,
    timeout: Duration,
) -> anyhow::Result<()> {
    let written = Instant::now();
    let deadline = written + timeout;
    let mut shown: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let snap = cluster.snapshot().await?;
        if let Some(entry) = snap.games.get(game)
            && entry.current.sha256 != version.sha256
        {
            let why = entry
                .note
                .clone()
                .unwrap_or_else(|| "changed by someone else".into());
            bail!(
                "{game} {} ({}) did not hold: the cluster is back on {} ({}): {why}",
                version.version,
                short(&version.sha256),
                entry.current.version,
                short(&entry.current.sha256)
            );
        }
        let statuses = snap.status.get(game).cloned().unwrap_or_default();
        let mut done = 0;
        let mut failed = None;
        for id in snap.nodes.keys() {
            let line = match statuses.get(id) {
                Some(s) if s.desired == version.sha256 && s.ok && s.sha256 == version.sha256 => {
                    done += 1;
                    format!("runs {} (rooms per version: {:?})", s.version, s.rooms)
                }
                Some(s) if s.desired == version.sha256 && !s.ok => {
                    let error = s.error.clone().unwrap_or_default();
                    failed = Some(format!("node {id}: {error}"));
                    format!("FAILED: {error}")
                }
                _ => "working".into(),
            };
            if shown.get(id) != Some(&line) {
                println!("  node {id}: {line}");
                shown.insert(id.clone(), line);
            }
        }
        if !snap.nodes.is_empty() && done == snap.nodes.len() {
            println!(
                "all {done} nodes run {game} {} ({:.0} ms after the etcd write)",
                version.version,
                written.elapsed().as_secs_f64() * 1000.0
            );
            return Ok(());
        }
        if let Some(failed) = failed {
            // Give a rollback by the failing node a moment to show.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let after = cluster.snapshot().await?;
            let note = after
                .games
                .get(game)
                .filter(|e| e.current.sha256 != version.sha256)
                .map(|e| {
                    let (v, sha) = (&e.current.version, short(&e.current.sha256));
                    format!("; the cluster is back on {v} ({sha})")
                })
                .unwrap_or_default();
            bail!(
                "deploy of {game} {} failed: {failed}{note}",
                version.version
            );
        }
        if Instant::now() > deadline {
            let waiting: Vec<&String> = snap
                .nodes
                .keys()
                .filter(|id| shown.get(*id).is_none_or(|l| l == "working"))
                .collect();
            bail!("timed out after {timeout:?}: nodes still working: {waiting:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The rooms of the cluster with their checkpoints (`ludus status --rooms`).
async fn print_rooms(args: &StatusArgs, snap: &crate::cluster::Snapshot) -> anyhow::Result<()> {
    let config = Config::load(args.target.config.as_deref())?;
    let sqlite = config.data_dir.join("ludus.db");
    let checkpoints: HashMap<String, (i64, i64)> = if config.storage.url.is_some()
        || sqlite.exists()
    {
        let storage = crate::storage::Storage::open(&config.storage, &config.data_dir).await?;
        let rows = storage.checkpoint_summaries().await?;
        storage.close().await;
        rows.into_iter()
            .map(|(room, _node, size, saved)| (room, (size, saved)))
            .collect()
    } else {
        println!("(no storage configured here: set storage.url or --config to see checkpoints)");
        HashMap::new()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    println!();
    println!(
        "{:<24} {:<16} {:<12} {:<10} {:>5} {:>12} {:>10}",
        "room", "owner", "game", "version", "seats", "checkpoint", "size"
    );
    for (id, room) in &snap.rooms {
        let (age, size) = match checkpoints.get(id) {
            Some((size, saved)) => (
                format!("{:.1} s ago", (now - saved).max(0) as f64 / 1000.0),
                format!("{size} B"),
            ),
            None => ("-".to_owned(), "-".to_owned()),
        };
        println!(
            "{:<24} {:<16} {:<12} {:<10} {:>5} {:>12} {:>10}",
            id, room.owner, room.game, room.version, room.seats, age, size
        );
    }
    Ok(())
}

pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let (mut cluster, _) = args.target.connect().await?;
    let prefix = cluster.prefix().to_owned();
    let snap = cluster.snapshot().await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&snap)?);
        return Ok(());
    }
    println!(
        "cluster at {prefix}: {} nodes; matchmaker leader: {}",
        snap.nodes.len(),
        snap.matchmaker_leader.as_deref().unwrap_or("none")
    );
    println!(
        "{:<16} {:<22} {:<22} {:>6} {:>8}",
        "node", "gateway", "grpc", "rooms", "players"
    );
    for n in snap.nodes.values() {
        println!(
            "{:<16} {:<22} {:<22} {:>6} {:>8}",
            n.id, n.gateway, n.grpc, n.rooms, n.players
        );
    }
    for n in snap.nodes.values() {
        for (key, value) in &n.settings {
            println!("  {} applies {key} = {value}", n.id);
        }
        for (key, why) in &n.refused {
            println!("  {} refused {key}: {why}", n.id);
        }
    }
    if args.rooms {
        print_rooms(&args, &snap).await?;
    }
    let mut games: Vec<&String> = snap.games.keys().chain(snap.status.keys()).collect();
    games.sort();
    games.dedup();
    for game in games {
        println!();
        match snap.games.get(game) {
            Some(e) => println!(
                "game {game}: desired {} ({}), policy {}{}",
                e.current.version,
                short(&e.current.sha256),
                serde_json::to_string(&e.policy)
                    .unwrap_or_default()
                    .trim_matches('"'),
                e.note
                    .as_ref()
                    .map(|n| format!(" — {n}"))
                    .unwrap_or_default()
            ),
            None => println!("game {game}: no desired version in etcd (nodes run their own)"),
        }
        println!(
            "  {:<16} {:<12} {:<14} {:<24} error",
            "node", "version", "sha256", "rooms"
        );
        for (node, s) in snap.status.get(game).into_iter().flatten() {
            let rooms: Vec<String> = s.rooms.iter().map(|(v, n)| format!("{v}:{n}")).collect();
            println!(
                "  {:<16} {:<12} {:<14} {:<24} {}",
                node,
                s.version,
                short(&s.sha256),
                rooms.join(","),
                s.error.as_deref().unwrap_or("-")
            );
        }
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct MoveArgs {
    /// The room to move.
    pub room: String,
    /// The node to move it to.
    pub node: String,
    #[command(flatten)]
    pub target: Target,
}

/// `ludus rooms move`: asks the node running the room to move it, live, to another.
pub async fn move_room(args: MoveArgs) -> anyhow::Result<()> {
    let (mut cluster, cfg) = args.target.connect().await?;
    let link = crate::rpc::Link::new(&cfg).context("moving a room needs the cluster's settings")?;
    let snap = cluster.snapshot().await?;
    let owner = snap
        .rooms
        .get(&args.room)
        .map(|r| r.owner.clone())
        .ok_or_else(|| anyhow!("no room `{}` in the cluster", args.room))?;
    if !snap.nodes.contains_key(&args.node) {
        bail!(
            "no node `{}` in the cluster (nodes: {})",
            args.node,
            snap.nodes.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    let from = snap.nodes.get(&owner).ok_or_else(|| {
        anyhow!(
            "room `{}` is owned by node {owner}, which is not up",
            args.room
        )
    })?;
    let reply = crate::rpc::move_room(&from.grpc, &link, &args.room, &args.node)
        .await
        .with_context(|| {
            format!(
                "moving room `{}` from node {owner} to {}",
                args.room, args.node
            )
        })?;
    println!(
        "moved room {} from node {owner} to node {} (paused {:.1} ms)",
        args.room,
        reply.target,
        reply.pause_ns as f64 / 1e6
    );
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct DrainArgs {
    /// The node whose rooms move to the other nodes.
    pub node: String,
    /// Let the node take new players and rooms again (a drained node refuses them).
    #[arg(long)]
    pub undo: bool,
    #[command(flatten)]
    pub target: Target,
}

/// `ludus drain`: the node takes no new players or rooms (its `/readyz` says so) and
/// moves every room, live, to the other nodes. `--undo` ends that.
pub async fn drain(args: DrainArgs) -> anyhow::Result<()> {
    let (mut cluster, cfg) = args.target.connect().await?;
    let link = crate::rpc::Link::new(&cfg).context("draining needs the cluster's settings")?;
    let snap = cluster.snapshot().await?;
    let node = snap.nodes.get(&args.node).ok_or_else(|| {
        anyhow!(
            "no node `{}` in the cluster (nodes: {})",
            args.node,
            snap.nodes.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    })?;
    let reply = crate::rpc::drain(&node.grpc, &link, args.undo)
        .await
        .with_context(|| format!("draining node {}", args.node))?;
    if args.undo {
        println!("node {}: takes new players and rooms again", args.node);
        return Ok(());
    }
    let mut pauses: Vec<u64> = reply.pauses_ns.clone();
    pauses.sort_unstable();
    let p = |q: f64| {
        pauses
            .get(((pauses.len() as f64 - 1.0) * q).round() as usize)
            .map_or(0.0, |n| *n as f64 / 1e6)
    };
    println!(
        "node {}: {} rooms moved in {:.2} s (pause p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms)",
        args.node,
        reply.moved,
        reply.took_ns as f64 / 1e9,
        p(0.5),
        p(0.99),
        p(1.0)
    );
    for line in &reply.failed {
        println!("not moved: {line}");
    }
    if !reply.failed.is_empty() {
        bail!(
            "{} rooms were not moved (they play on where they were)",
            reply.failed.len()
        );
    }
    Ok(())
}

/// `ludus config`: live host settings of a cluster.
#[derive(clap::Subcommand, Debug)]
pub enum ConfigCommand {
    /// Set live settings on every node: KEY=VALUE ... (checked here first, then by each
    /// node; a change that harms a node within admin.settings_window is rolled back).
    Set {
        /// e.g. log.level=debug rooms.checkpoint_interval=2s
        #[arg(required = true)]
        settings: Vec<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Return settings to each node's own configuration.
    Unset {
        #[arg(required = true)]
        keys: Vec<String>,
        #[command(flatten)]
        target: Target,
    },
    /// The settings the cluster holds, what each node applied and refused, and the
    /// settings that can change live.
    Get {
        /// Only this setting.
        key: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Every change of the settings, oldest first, with who made it.
    History {
        /// Only this setting.
        key: Option<String>,
        #[command(flatten)]
        target: Target,
    },
}

/// Runs a `ludus config` command.
pub async fn config(command: ConfigCommand) -> anyhow::Result<()> {
    let by = || {
        let user = std::env::var("USER").unwrap_or_else(|_| "someone".to_owned());
        format!("ludus config, by {user}")
    };
    match command {
        ConfigCommand::Set { settings, target } => {
            let file = Config::load(target.config.as_deref())?;
            let mut pairs = Vec::new();
            for pair in &settings {
                let (key, value) = pair
                    .split_once('=')
                    .ok_or_else(|| anyhow!("`{pair}`: write KEY=VALUE, e.g. log.level=debug"))?;
                let (key, value) = (key.trim(), value.trim());
                crate::server::settings::check(key, value, &file)
                    .map_err(|e| anyhow!("{key}: {e}"))?;
                pairs.push((key.to_owned(), value.to_owned()));
            }
            let (mut cluster, _) = target.connect().await?;
            for (key, value) in pairs {
                cluster
                    .set_setting(&key, Some(value.clone()), by())
                    .await
                    .with_context(|| format!("setting {key}"))?;
                println!(
                    "{key} = {value} (every node applies it now; `ludus config get` shows them)"
                );
            }
        }
        ConfigCommand::Unset { keys, target } => {
            let (mut cluster, _) = target.connect().await?;
            for key in keys {
                cluster
                    .set_setting(&key, None, by())
                    .await
                    .with_context(|| format!("unsetting {key}"))?;
                println!("{key} unset (each node's own configuration holds)");
            }
        }
        ConfigCommand::Get { key, target } => {
            let (mut cluster, _) = target.connect().await?;
            let snap = cluster.snapshot().await?;
            let wanted = |k: &str| key.as_deref().is_none_or(|want| want == k);
            for (k, entry) in snap.settings.iter().filter(|(k, _)| wanted(k)) {
                match &entry.value {
                    Some(v) => println!("{k} = {v}"),
                    None => println!("{k} unset"),
                }
            }
            for n in snap.nodes.values() {
                for (k, v) in n.settings.iter().filter(|(k, _)| wanted(k)) {
                    println!("  node {} applies {k} = {v}", n.id);
                }
                for (k, why) in n.refused.iter().filter(|(k, _)| wanted(k)) {
                    println!("  node {} refused {k}: {why}", n.id);
                }
            }
            if key.is_none() {
                println!("settings that change live:");
                for (k, what) in crate::server::settings::LIVE {
                    println!("  {k}: {what}");
                }
            }
        }
        ConfigCommand::History { key, target } => {
            let (mut cluster, _) = target.connect().await?;
            let snap = cluster.snapshot().await?;
            let mut changes: Vec<(u64, &String, &crate::cluster::SettingChange)> = snap
                .settings
                .iter()
                .filter(|(k, _)| key.as_deref().is_none_or(|want| want == k.as_str()))
                .flat_map(|(k, e)| e.history.iter().map(move |c| (c.at_ms, k, c)))
                .collect();
            changes.sort_by_key(|(at, ..)| *at);
            for (at, k, c) in changes {
                let when = humantime::format_rfc3339_millis(
                    std::time::UNIX_EPOCH + std::time::Duration::from_millis(at),
                );
                let value = c
                    .value
                    .as_deref()
                    .map_or("unset".to_owned(), |v| format!("= {v}"));
                println!("{when} {k} {value} ({})", c.by);
            }
        }
    }
    Ok(())
}
