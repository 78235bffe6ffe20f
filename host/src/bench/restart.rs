//! `ludus bench restart`: a node with arena rooms (one player each, 20 Hz) is killed
//! (SIGKILL, or SIGTERM with `--signal term`) and started again on the same data
//! directory and address; every player's client resumes by itself. Measured from the
//! moment the new process serves: how long until each room's player has a snapshot of
//! the restored room, and how far each room's tick counter went back (state lost) or
//! ahead of what the player last saw.

use anyhow::{Context, anyhow, bail};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::{Stats, human};
use crate::client::{Client, ClientOptions};
use crate::gateway::pb::server_frame::Body as Out;

#[derive(Clone, Debug, clap::Args)]
pub struct RestartBench {
    /// Arena rooms, one player each.
    #[arg(long, default_value_t = 100)]
    pub rooms: usize,
    /// How the node ends: `kill` (SIGKILL) or `term` (SIGTERM).
    #[arg(long, default_value = "kill")]
    pub signal: String,
}

/// Starts `ludus serve` on `addr` with `data`; returns it once it serves.
async fn serve(data: &Path, addr: SocketAddr) -> anyhow::Result<(tokio::process::Child, Instant)> {
    let arena = crate::guest_build::example_game("arena")?;
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["serve", "--admin", "127.0.0.1:0"])
        .args(["--listen", &addr.to_string(), "--game"])
        .arg(format!("arena={}", arena.display()))
        .arg("--data-dir")
        .arg(data)
        .env("LUDUS_GATEWAY__MAX_CONNECTIONS_PER_IP", "100000")
        .env("LUDUS_GATEWAY__GUEST_LOGIN_BURST", "1000000")
        .env("LUDUS_ROOMS__MAX_ROOMS_PER_PLAYER", "0")
        .env("LUDUS_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines =
        BufReader::new(child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?).lines();
    loop {
        let Some(line) = lines.next_line().await? else {
            bail!("the server stopped before serving")
        };
        if line.starts_with("ludus is serving on ") {
            return Ok((child, Instant::now()));
        }
    }
}

/// What one room's player saw: the last tick before the node ended, and the first
/// tick after it came back with when it arrived.
struct Seen {
    before: u64,
    after: u64,
    at: Instant,
}

async fn play(mut client: Client, room: String) -> anyhow::Result<Seen> {
    let mut before = 0;
    loop {
        let frame = client.recv().await?;
        let Some(Out::Message(m)) = frame.body else {
            continue;
        };
        if m.room_id != room {
            continue;
        }
        let v: serde_json::Value = serde_json::from_slice(&m.payload)?;
        let Some(tick) = v["tick"].as_u64() else {
            continue;
        };
        if client.restores == 0 {
            before = tick;
        } else {
            return Ok(Seen {
                before,
                after: tick,
                at: Instant::now(),
            });
        }
    }
}

pub async fn run(args: RestartBench) -> anyhow::Result<()> {
    let signal = match args.signal.as_str() {
        "kill" => "KILL",
        "term" => "TERM",
        other => bail!("--signal must be kill or term, not {other}"),
    };
    let data = std::env::temp_dir().join(format!("ludus-bench-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let (mut node, _) = serve(&data, addr).await?;
    let opts = ClientOptions {
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        max_attempts: 400,
        ..ClientOptions::default()
    };
    let mut players = Vec::with_capacity(args.rooms);
    for i in 0..args.rooms {
        let mut c = Client::guest(addr, &format!("p{i}"), opts.clone()).await?;
        let room = format!("restart-{i}");
        c.create("arena", &room, "").await?;
        loop {
            match c.recv().await?.body {
                Some(Out::Joined(_)) => break,
                Some(Out::Error(e)) => bail!("creating {room}: {}", e.message),
                _ => {}
            }
        }
        players.push(tokio::spawn(play(c, room)));
    }
    // Longer than the checkpoint interval: every room has a checkpoint.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = node.id().ok_or_else(|| anyhow!("the node exited early"))?;
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .context("running kill")?;
    anyhow::ensure!(status.success(), "kill -{signal} {pid} failed");
    let ended = Instant::now();
    node.wait().await?;
    let exited = ended.elapsed();
    let (mut node, ready) = serve(&data, addr).await?;
    let down = ready - ended;

    let mut back = Vec::new();
    let (mut lost, mut ahead, mut missing) = (Vec::new(), 0u64, 0);
    for p in players {
        match tokio::time::timeout(Duration::from_secs(60), p).await {
            Ok(Ok(Ok(seen))) => {
                back.push(seen.at.saturating_duration_since(ready));
                lost.push(seen.before.saturating_sub(seen.after));
                ahead = ahead.max(seen.after.saturating_sub(seen.before));
            }
            _ => missing += 1,
        }
    }
    let _ = node.kill().await;
    let _ = std::fs::remove_dir_all(&data);
    let stats = Stats::of(back);
    let max_lost = lost.iter().copied().max().unwrap_or(0);
    let mean_lost = lost.iter().sum::<u64>() as f64 / lost.len().max(1) as f64;
    println!(
        "rooms: {} (arena, 1 player each, 20 Hz), node ended by SIG{signal}",
        args.rooms
    );
    println!(
        "old process exited after the signal:    {}",
        human(exited.as_nanos() as u64)
    );
    println!(
        "signal to new process serving:          {}",
        human(down.as_nanos() as u64)
    );
    println!(
        "rooms back (a player has a snapshot):   {}/{}",
        stats.samples, args.rooms
    );
    println!(
        "back after serving: p50 {}  p99 {}  max {}",
        human(stats.p50_ns),
        human(stats.p99_ns),
        human(stats.max_ns)
    );
    println!(
        "ticks lost (state older than the last seen): mean {mean_lost:.1}  max {max_lost} \
         (= {} ms at 20 Hz); ticks ahead: max {ahead}",
        max_lost * 50
    );
    println!(
        "{}",
        serde_json::json!({
            "rooms": args.rooms, "signal": signal, "back": stats.samples, "missing": missing,
            "down_ns": down.as_nanos() as u64, "back_p50_ns": stats.p50_ns,
            "back_p99_ns": stats.p99_ns, "back_max_ns": stats.max_ns,
            "ticks_lost_max": max_lost, "ticks_lost_mean": mean_lost, "ticks_ahead_max": ahead,
        })
    );
    if missing > 0 {
        bail!("{missing} rooms did not come back");
    }
    Ok(())
}
