//! `ludus bench rooms`: arena rooms on one node, counted up to 10,000 by default: the
//! node's resident memory per room and the time to create a room, at each step, so a
//! cost that grows with the number of rooms shows as a step costing more than the one
//! before.
//!
//! Clients create the rooms through the gateway (a create frame, timed until the
//! `joined` answer) and leave each at once: the rooms stay, empty and ticking at 20 Hz,
//! for the node's empty-room timeout (set to an hour here), at `--tick-hz`. So a step's memory is the
//! rooms' (instance, store, room state, tick timer), not their players', and the node's
//! CPU while the count is held is what that many ticking arena rooms cost.

use anyhow::{Context, bail};
use futures_util::StreamExt;
use std::time::{Duration, Instant};

use super::memory::{rss_bytes, start_node};
use super::{Stats, human, mib};
use crate::client::{Client, ClientOptions};
use crate::gateway::pb::{self, server_frame::Body as Out};

#[derive(Clone, Debug, clap::Args)]
pub struct RoomsBench {
    /// Room counts at which memory and create times are read, ascending
    /// (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1000,2000,5000,10000")]
    pub steps: Vec<usize>,
    /// Clients creating rooms at once (each creates its share one after another).
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Ticks per second of each room (arena's `tick_hz`); a low rate shows what a
    /// create costs apart from the load of the rooms already ticking.
    #[arg(long, default_value_t = 20)]
    pub tick_hz: u32,
    /// How long the node's CPU is measured with the full count ticking.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub hold: Duration,
}

pub async fn run(args: RoomsBench) -> anyhow::Result<()> {
    let mut steps = args.steps.clone();
    steps.sort_unstable();
    steps.dedup();
    let total = *steps.last().context("--steps is empty")?;
    anyhow::ensure!(args.clients > 0, "--clients must be at least 1");
    anyhow::ensure!(args.tick_hz > 0, "--tick-hz must be at least 1");
    let config = format!(r#"{{"tick_hz": {}}}"#, args.tick_hz);
    let env = [
        // Every room is an instance; a swap would take one more per room.
        ("LUDUS_RUNTIME__MAX_INSTANCES", (total + 100).to_string()),
        // Rooms stay while the bench runs, although their creators left.
        ("LUDUS_ROOMS__EMPTY_TIMEOUT", "1h".to_owned()),
        // A few clients create them all (the quota is still checked on each create).
        ("LUDUS_ROOMS__MAX_ROOMS_PER_PLAYER", total.to_string()),
        // A client sends a create, a leave and an ack per room, as fast as answered.
        (
            "LUDUS_GATEWAY__MAX_MESSAGES_PER_SECOND",
            "100000".to_owned(),
        ),
    ];
    let (mut child, pid, addr) = start_node("rooms", args.clients, &env).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let base = rss_bytes(pid)?;
    println!("node {addr}, RSS at start {:.1} MiB", mib(base));

    let mut clients = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        clients.push(Client::guest(addr, &format!("rooms-{i}"), ClientOptions::default()).await?);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut last_rss = rss_bytes(pid)?;
    let with_clients = last_rss;

    let started = Instant::now();
    let mut made = 0;
    let mut rows = Vec::new();
    for &step in &steps {
        // Each client takes every `clients`-th room of the step.
        let (n, config) = (args.clients, &config);
        let times: Vec<Vec<Duration>> = futures_util::stream::iter(clients.iter_mut().enumerate())
            .map(|(c, client)| async move {
                let mut times = Vec::new();
                for i in (made + c..step).step_by(n) {
                    times.push(
                        create_and_leave(client, &format!("bench-{i}"), config)
                            .await
                            .with_context(|| format!("room {i}"))?,
                    );
                }
                anyhow::Ok(times)
            })
            .buffer_unordered(n)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<_>>()?;
        let create = Stats::of(times.into_iter().flatten().collect());
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let rss = rss_bytes(pid)?;
        let per = rss.saturating_sub(with_clients) as f64 / step as f64;
        let marginal = rss.saturating_sub(last_rss) as f64 / (step - made) as f64;
        println!(
            "{step:>6} rooms: node RSS {:>8.1} MiB, {:>5.1} KiB per room since start, \
             {:>5.1} KiB per room of this step; create p50 {} p99 {} max {}; {:.0} s in",
            mib(rss),
            per / 1024.0,
            marginal / 1024.0,
            human(create.p50_ns),
            human(create.p99_ns),
            human(create.max_ns),
            started.elapsed().as_secs_f64()
        );
        rows.push(serde_json::json!({
            "rooms": step, "node_rss": rss, "bytes_per_room": per as u64,
            "bytes_per_room_of_step": marginal as u64, "create": create,
        }));
        last_rss = rss;
        made = step;
    }

    // The full count ticking, nobody in it: what the rooms alone cost the node.
    let (cpu, held_for) = super::cpu_while(pid, args.hold).await?;
    let (alive, tried) = rooms_alive(&mut clients[0], total).await?;
    println!(
        "held {total} rooms ticking at {} Hz for {held_for:.0} s: node CPU {:.1}% of one core \
         ({:.2} µs per room tick); {alive} of {tried} rooms sampled across all still there",
        args.tick_hz,
        100.0 * cpu / held_for,
        1e6 * cpu / (held_for * total as f64 * f64::from(args.tick_hz)),
    );
    println!(
        "{}",
        serde_json::json!({
            "rooms": total, "clients": args.clients, "tick_hz": args.tick_hz, "rss_start": base,
            "rss_with_clients": with_clients, "steps": rows, "held_s": held_for,
            "node_cpu_share_held": cpu / held_for, "sampled": tried, "sampled_alive": alive,
        })
    );
    for client in clients {
        client.close().await;
    }
    let _ = child.kill().await;
    if alive < tried {
        bail!("{} of {tried} sampled rooms were gone", tried - alive);
    }
    Ok(())
}

/// Creates room `id`, timed until the `joined` answer, then leaves it (waiting for
/// `left`, untimed).
async fn create_and_leave(client: &mut Client, id: &str, config: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let seq = client.create("arena", id, config).await?;
    let took = loop {
        match client.recv().await?.body {
            Some(Out::Joined(j)) if j.room_id == id => break started.elapsed(),
            Some(Out::Error(e)) if e.in_reply_to == seq => {
                bail!("create refused: {:?}: {}", e.code(), e.message)
            }
            _ => {}
        }
    };
    client
        .send(pb::client_frame::Body::Leave(pb::LeaveRoom {
            room_id: id.to_owned(),
        }))
        .await?;
    loop {
        match client.recv().await?.body {
            Some(Out::Left(l)) if l.room_id == id => break,
            Some(Out::Error(e)) => bail!("leave refused: {:?}: {}", e.code(), e.message),
            _ => {}
        }
    }
    client.ack().await?;
    Ok(took)
}

/// How many of a sample of about 100 rooms spread over all `total` are still there:
/// one client joins each (and leaves it again).
async fn rooms_alive(client: &mut Client, total: usize) -> anyhow::Result<(usize, usize)> {
    let every = (total / 100).max(1);
    let (mut alive, mut tried) = (0, 0);
    for i in (0..total).step_by(every) {
        let id = format!("bench-{i}");
        tried += 1;
        let seq = client.join(&id).await?;
        loop {
            match client.recv().await?.body {
                Some(Out::Joined(j)) if j.room_id == id => {
                    alive += 1;
                    client
                        .send(pb::client_frame::Body::Leave(pb::LeaveRoom {
                            room_id: id.clone(),
                        }))
                        .await?;
                    break;
                }
                Some(Out::Error(e)) if e.in_reply_to == seq => break,
                _ => {}
            }
        }
        client.ack().await?;
    }
    Ok((alive, tried))
}
