//! `ludus bench takeover`: three `ludus serve` nodes share an etcd and a PostgreSQL
//! (given by URL), with arena rooms spread over them (one real WebSocket player each,
//! 20 Hz). Each round SIGKILLs one node; the others take its rooms over. Measured per
//! round: from the SIGKILL to every room of the dead node running on a survivor, and to
//! each of its players having a snapshot again (the client resumes at a survivor and is
//! sent where its session went); how far each room's tick counter went back; and, once
//! the round settles, rooms lost and rooms running on two nodes. The killed node is
//! then started again (same id and data directory) for the next round.

use anyhow::{Context, anyhow, bail};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::{Stats, human};
use crate::client::{Client, ClientOptions};
use crate::gateway::pb::server_frame::Body as Out;
use crate::lock::Recover;

#[derive(Clone, Debug, clap::Args)]
pub struct TakeoverBench {
    /// Arena rooms in all, one player each.
    #[arg(long, default_value_t = 100)]
    pub rooms: usize,
    /// Rounds: each kills one node (in turn) and starts it again.
    #[arg(long, default_value_t = 10)]
    pub rounds: usize,
    /// etcd endpoint the nodes share.
    #[arg(long)]
    pub etcd: String,
    /// PostgreSQL URL the nodes share (`postgres://user@host:port/db`).
    #[arg(long)]
    pub storage: String,
    /// The nodes' lease TTL: how long a dead node's keys outlive it.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub lease_ttl: Duration,
}

pub(super) const SECRET: &str = "ludus bench takeover: a shared secret of 32+ bytes";
const NODES: [&str; 3] = ["a", "b", "c"];

pub(super) struct Node {
    pub child: tokio::process::Child,
}

/// What the nodes of a bench's cluster share.
pub(super) struct Shared<'a> {
    pub etcd: &'a str,
    /// A PostgreSQL URL (else each node keeps SQLite in its data directory).
    pub storage: Option<&'a str>,
    pub lease_ttl: Duration,
}

/// Starts node `id` of the bench's cluster; returns it once it serves.
pub(super) async fn serve(
    args: &Shared<'_>,
    prefix: &str,
    data: &Path,
    id: &str,
    addr: SocketAddr,
) -> anyhow::Result<Node> {
    let arena = crate::guest_build::example_game("arena")?;
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["serve", "--admin", "127.0.0.1:0"])
        .args(["--listen", &addr.to_string(), "--game"])
        .arg(format!("arena={}", arena.display()))
        .args(["--etcd", args.etcd, "--node-id", id])
        .arg("--data-dir")
        .arg(data.join(id))
        .env("LUDUS_CLUSTER__PREFIX", prefix)
        .env(
            "LUDUS_CLUSTER__LEASE_TTL",
            humantime::format_duration(args.lease_ttl).to_string(),
        )
        .env("LUDUS_CLUSTER__SECRET", SECRET)
        .env("LUDUS_AUTH__SECRET", SECRET)
        .envs(args.storage.map(|url| ("LUDUS_STORAGE__URL", url)))
        .env("LUDUS_GATEWAY__MAX_CONNECTIONS_PER_IP", "100000")
        .env("LUDUS_GATEWAY__GUEST_LOGIN_BURST", "1000000")
        .env("LUDUS_ROOMS__MAX_ROOMS_PER_PLAYER", "0")
        .env("LUDUS_LOG", "error")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines =
        BufReader::new(child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?).lines();
    loop {
        let Some(line) = lines.next_line().await? else {
            bail!("node {id} stopped before serving")
        };
        if line.starts_with("ludus is serving on ") {
            return Ok(Node { child });
        }
    }
}

/// What one room's player saw: its last tick and, per restore, the tick it resumed at.
#[derive(Default)]
struct Seen {
    last: u64,
    /// (last tick before, first tick after, when) for each restore.
    restores: Vec<(u64, u64, Instant)>,
}

async fn play(mut client: Client, room: String, seen: Arc<Mutex<Seen>>) -> anyhow::Result<()> {
    let mut restores = 0;
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
        let mut seen = seen.lock().recover();
        if client.restores > restores {
            restores = client.restores;
            let before = seen.last;
            seen.restores.push((before, tick, Instant::now()));
        }
        seen.last = tick;
    }
}

/// Room ids each node runs (from its `/v1/rooms`), by node.
pub(super) async fn running(
    http: &reqwest::Client,
    nodes: &BTreeMap<&str, SocketAddr>,
    token: &str,
) -> BTreeMap<String, Vec<String>> {
    let mut on: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (id, addr) in nodes {
        let Ok(answer) = http
            .get(format!("http://{addr}/v1/rooms"))
            .bearer_auth(token)
            .send()
            .await
        else {
            continue;
        };
        let rooms: Vec<serde_json::Value> = answer.json().await.unwrap_or_default();
        for room in rooms.iter().filter(|r| r["closed"].is_null()) {
            if let Some(room) = room["id"].as_str() {
                on.entry(room.to_owned()).or_default().push(id.to_string());
            }
        }
    }
    on
}

impl TakeoverBench {
    fn shared(&self) -> Shared<'_> {
        Shared {
            etcd: &self.etcd,
            storage: Some(&self.storage),
            lease_ttl: self.lease_ttl,
        }
    }
}

pub async fn run(args: TakeoverBench) -> anyhow::Result<()> {
    let prefix = format!("/ludus/bench-takeover-{}/", std::process::id());
    let data = std::env::temp_dir().join(format!("ludus-bench-takeover-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let mut addrs = BTreeMap::new();
    let mut nodes: HashMap<&str, Node> = HashMap::new();
    for id in NODES {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        addrs.insert(id, addr);
        nodes.insert(id, serve(&args.shared(), &prefix, &data, id, addr).await?);
    }
    let result = rounds(&args, &prefix, &data, &addrs, &mut nodes).await;
    for node in nodes.values_mut() {
        let _ = node.child.kill().await;
    }
    let _ = std::fs::remove_dir_all(&data);
    result
}

async fn rounds(
    args: &TakeoverBench,
    prefix: &str,
    data: &Path,
    addrs: &BTreeMap<&str, SocketAddr>,
    nodes: &mut HashMap<&str, Node>,
) -> anyhow::Result<()> {
    let all: Vec<SocketAddr> = addrs.values().copied().collect();
    let mut seen = Vec::new();
    for i in 0..args.rooms {
        let addr = all[i % all.len()];
        let opts = ClientOptions {
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_millis(200),
            max_attempts: 1000,
            also: all.iter().copied().filter(|a| *a != addr).collect(),
            ..ClientOptions::default()
        };
        let mut c = Client::guest(addr, &format!("p{i}"), opts).await?;
        let room = format!("takeover-{i}");
        c.create("arena", &room, "").await?;
        loop {
            match c.recv().await?.body {
                Some(Out::Joined(_)) => break,
                Some(Out::Error(e)) => bail!("creating {room}: {}", e.message),
                _ => {}
            }
        }
        let s = Arc::new(Mutex::new(Seen::default()));
        tokio::spawn(play(c, room.clone(), s.clone()));
        seen.push((room, s));
    }
    let http = reqwest::Client::new();
    let (token, _) = crate::client::guest_login(all[0], "observer").await?;
    let (mut running_after, mut players_back, mut lost_ticks) =
        (Vec::new(), Vec::new(), Vec::new());
    let (mut rooms_lost, mut rooms_twice, mut players_missing) = (0, 0, 0);
    println!(
        "{} rooms (arena, 1 player each, 20 Hz) on 3 nodes, lease TTL {:?}, {} rounds",
        args.rooms, args.lease_ttl, args.rounds
    );
    for round in 0..args.rounds {
        let victim = NODES[round % NODES.len()];
        // Longer than the checkpoint interval: every room has a recent checkpoint.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let before = running(&http, addrs, &token).await;
        let doomed: Vec<String> = before
            .iter()
            .filter(|(_, on)| on.iter().any(|n| n == victim))
            .map(|(room, _)| room.clone())
            .collect();
        let restores_before: HashMap<String, usize> = seen
            .iter()
            .map(|(room, s)| (room.clone(), s.lock().recover().restores.len()))
            .collect();
        let node = nodes
            .get_mut(victim)
            .ok_or_else(|| anyhow!("no node {victim}"))?;
        node.child.start_kill().context("SIGKILL")?;
        let killed = Instant::now();
        node.child.wait().await?;
        let survivors: BTreeMap<&str, SocketAddr> = addrs
            .iter()
            .filter(|(id, _)| **id != victim)
            .map(|(id, a)| (*id, *a))
            .collect();
        // Every room of the dead node running elsewhere.
        let deadline = killed + args.lease_ttl + Duration::from_secs(20);
        let took = loop {
            let on = running(&http, &survivors, &token).await;
            if doomed.iter().all(|r| on.contains_key(r)) {
                break Some(killed.elapsed());
            }
            if Instant::now() > deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // Each of its players back with a snapshot.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut waiting: Vec<&(String, Arc<Mutex<Seen>>)> = seen
            .iter()
            .filter(|(room, _)| doomed.contains(room))
            .collect();
        let mut back_round = Vec::new();
        while !waiting.is_empty() && Instant::now() < deadline {
            waiting.retain(|(room, s)| {
                let s = s.lock().recover();
                match s.restores.get(restores_before[room]) {
                    Some((before, after, at)) => {
                        back_round.push(at.saturating_duration_since(killed));
                        lost_ticks.push(before.saturating_sub(*after));
                        false
                    }
                    None => true,
                }
            });
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        players_missing += waiting.len();
        // Settled: each room on exactly one node.
        let on = running(&http, &survivors, &token).await;
        let lost = seen.iter().filter(|(r, _)| !on.contains_key(r)).count();
        let twice = on.values().filter(|nodes| nodes.len() > 1).count();
        rooms_lost += lost;
        rooms_twice += twice;
        let max_back = back_round.iter().max().copied().unwrap_or_default();
        println!(
            "round {:>2}: killed {victim} with {:>3} rooms; all running elsewhere after {}; \
             players back within {} ({} missing); rooms lost {lost}, running twice {twice}",
            round + 1,
            doomed.len(),
            took.map(|d| human(d.as_nanos() as u64))
                .unwrap_or_else(|| "never".into()),
            human(max_back.as_nanos() as u64),
            waiting.len(),
        );
        if let Some(took) = took {
            running_after.push(took);
        } else {
            rooms_lost += doomed.len();
        }
        players_back.extend(back_round);
        // The node comes back (empty: its rooms are elsewhere now) for the next round.
        let again = serve(&args.shared(), prefix, data, victim, addrs[victim]).await?;
        nodes.insert(victim, again);
    }
    let running = Stats::of(running_after);
    let back = Stats::of(players_back);
    let max_lost = lost_ticks.iter().copied().max().unwrap_or(0);
    let mean_lost = lost_ticks.iter().sum::<u64>() as f64 / lost_ticks.len().max(1) as f64;
    println!(
        "SIGKILL → all its rooms running elsewhere: p50 {}  max {}",
        human(running.p50_ns),
        human(running.max_ns)
    );
    println!(
        "SIGKILL → each player back with a snapshot: p50 {}  p99 {}  max {}",
        human(back.p50_ns),
        human(back.p99_ns),
        human(back.max_ns)
    );
    println!(
        "ticks lost: mean {mean_lost:.1}  max {max_lost} (= {} ms at 20 Hz)",
        max_lost * 50
    );
    println!(
        "rooms lost: {rooms_lost}, rooms running twice: {rooms_twice}, players not back: \
         {players_missing}"
    );
    println!(
        "{}",
        serde_json::json!({
            "rooms": args.rooms, "rounds": args.rounds,
            "lease_ttl_ms": args.lease_ttl.as_millis() as u64,
            "running_p50_ns": running.p50_ns, "running_max_ns": running.max_ns,
            "back_p50_ns": back.p50_ns, "back_p99_ns": back.p99_ns, "back_max_ns": back.max_ns,
            "ticks_lost_max": max_lost, "ticks_lost_mean": mean_lost,
            "rooms_lost": rooms_lost, "rooms_twice": rooms_twice,
            "players_missing": players_missing,
        })
    );
    if rooms_lost + rooms_twice + players_missing > 0 {
        bail!(
            "{rooms_lost} rooms lost, {rooms_twice} running twice, {players_missing} players \
             not back"
        );
    }
    Ok(())
}
