//! `ludus bench memory`: the server's resident memory per idle connection and per arena
//! room, read from /proc of a `ludus serve` child process.

use anyhow::{Context, anyhow, bail};
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::client::{Client, ClientOptions};

#[derive(Clone, Debug, clap::Args)]
pub struct MemoryBench {
    /// Idle connections to open.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Arena rooms to create (one player each, from the connections above).
    #[arg(long, default_value_t = 200)]
    pub rooms: usize,
}

/// Resident set size of a process, in bytes.
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    crate::procstat::rss_bytes(&pid.to_string()).context("reading /proc")
}

async fn settle() {
    tokio::time::sleep(Duration::from_millis(1500)).await;
}

/// Starts `ludus serve` with arena on a free 127.0.0.1 port, with room for
/// `connections` connections from this machine, in a fresh data directory named
/// after `bench`, with `env` set besides: the child, its pid and its gateway address.
pub async fn start_node(
    bench: &str,
    connections: usize,
    env: &[(&str, String)],
) -> anyhow::Result<(tokio::process::Child, u32, SocketAddr)> {
    let arena = crate::guest_build::example_game("arena")?;
    // A fresh node each run: no rooms or sessions kept from the last one.
    let data_dir = std::env::temp_dir().join(format!("ludus-bench-{bench}"));
    let _ = std::fs::remove_dir_all(&data_dir);
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--game",
        ])
        .arg(format!("arena={}", arena.display()))
        .arg("--data-dir")
        .arg(&data_dir)
        // Room for the sessions and the logins' HTTP connections besides.
        .env(
            "LUDUS_GATEWAY__MAX_CONNECTIONS",
            (connections + 1000).to_string(),
        )
        // Every client logs in from 127.0.0.1.
        .env(
            "LUDUS_GATEWAY__MAX_CONNECTIONS_PER_IP",
            (connections + 1000).to_string(),
        )
        .env("LUDUS_LOG", "warn")
        .env("LUDUS_GATEWAY__GUEST_LOGIN_BURST", "100000000")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().ok_or_else(|| anyhow!("server exited at once"))?;
    let mut lines =
        BufReader::new(child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?).lines();
    let addr: SocketAddr = loop {
        let Some(line) = lines.next_line().await? else {
            bail!("the server stopped before listening")
        };
        if let Some(rest) = line.strip_prefix("ludus is serving on ") {
            break rest.split_whitespace().next().unwrap_or_default().parse()?;
        }
    };
    // Keep reading what it prints, so its writes never fail on a closed pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, pid, addr))
}

pub async fn run(args: MemoryBench) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.rooms <= args.connections,
        "--rooms must not exceed --connections"
    );
    let (mut child, pid, addr) = start_node("memory", args.connections, &[]).await?;
    settle().await;
    let base = rss_bytes(pid)?;

    let opts = ClientOptions::default();
    let mut clients = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        clients.push(Client::guest(addr, &format!("idle-{i}"), opts.clone()).await?);
    }
    settle().await;
    let connected = rss_bytes(pid)?;

    for (i, c) in clients.iter_mut().take(args.rooms).enumerate() {
        c.create("arena", &format!("mem-{i}"), "").await?;
    }
    settle().await;
    let with_rooms = rss_bytes(pid)?;

    let per_conn = connected.saturating_sub(base) as f64 / args.connections as f64;
    let per_room = with_rooms.saturating_sub(connected) as f64 / args.rooms.max(1) as f64;
    println!(
        "server RSS at start:              {:>8.1} MiB",
        super::mib(base)
    );
    println!(
        "after {:>5} idle connections:     {:>8.1} MiB",
        args.connections,
        super::mib(connected)
    );
    println!(
        "after {:>5} arena rooms:          {:>8.1} MiB",
        args.rooms,
        super::mib(with_rooms)
    );
    println!(
        "per idle connection (+session):   {:>8.1} KiB",
        per_conn / 1024.0
    );
    println!(
        "per arena room (1 player, 20 Hz): {:>8.1} KiB",
        per_room / 1024.0
    );
    println!(
        "{}",
        serde_json::json!({
            "connections": args.connections, "rooms": args.rooms, "rss_start": base,
            "rss_connected": connected, "rss_rooms": with_rooms,
            "bytes_per_idle_connection": per_conn as u64, "bytes_per_room": per_room as u64,
        })
    );
    drop(clients);
    let _ = child.kill().await;
    Ok(())
}
