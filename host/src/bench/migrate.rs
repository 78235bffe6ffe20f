//! `ludus bench migrate`: three `ludus serve` nodes share an etcd; N arena rooms run on
//! node a (one real WebSocket player each, connected to a, 20 Hz), and node a is
//! drained: every room moves, live, to b and c. Measured: the drain's time, each room's
//! pause (from holding its players' sessions to the target having it), each player's
//! time without a snapshot, and, from the frames each player got, frame numbers
//! skipped and ticks lost or repeated (the promise is none).

use anyhow::{anyhow, bail};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::takeover::{Node, SECRET, Shared, running, serve};
use super::{Stats, human};
use crate::client::{Client, ClientOptions};
use crate::gateway::pb::server_frame::Body as Out;
use crate::lock::Recover;

#[derive(Clone, Debug, clap::Args)]
pub struct MigrateBench {
    /// Arena rooms on the node that is drained, one player each.
    #[arg(long, default_value_t = 200)]
    pub rooms: usize,
    /// etcd endpoint the nodes share.
    #[arg(long)]
    pub etcd: String,
}

/// What one room's player saw.
#[derive(Default)]
struct Seen {
    /// Numbered frames whose number was not the last one plus one.
    seq_gaps: u64,
    last_seq: u64,
    /// Snapshots whose tick was not the last one plus one: lost (ahead) or repeated.
    ticks_skipped: u64,
    ticks_repeated: u64,
    last_tick: Option<u64>,
    /// The longest time between two snapshots, and when the last came.
    longest_gap: Duration,
    last_at: Option<Instant>,
    moves: u32,
}

async fn play(mut client: Client, room: String, seen: Arc<Mutex<Seen>>) -> anyhow::Result<()> {
    loop {
        let frame = client.recv().await?;
        let mut seen = seen.lock().recover();
        seen.moves = client.moves;
        if frame.seq != 0 {
            if seen.last_seq != 0 && frame.seq != seen.last_seq + 1 {
                seen.seq_gaps += 1;
            }
            seen.last_seq = frame.seq;
        }
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
        let now = Instant::now();
        if let Some(last) = seen.last_tick {
            if tick <= last {
                seen.ticks_repeated += 1;
            } else if tick != last + 1 {
                seen.ticks_skipped += tick - last - 1;
            }
        }
        if let Some(at) = seen.last_at {
            seen.longest_gap = seen.longest_gap.max(now - at);
        }
        seen.last_tick = Some(tick);
        seen.last_at = Some(now);
    }
}

pub async fn run(args: MigrateBench) -> anyhow::Result<()> {
    let prefix = format!("/ludus/bench-migrate-{}/", std::process::id());
    let data = std::env::temp_dir().join(format!("ludus-bench-migrate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let shared = Shared {
        etcd: &args.etcd,
        storage: None,
        lease_ttl: Duration::from_secs(5),
    };
    let mut addrs = BTreeMap::new();
    let mut nodes: HashMap<&str, Node> = HashMap::new();
    for id in ["a", "b", "c"] {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        addrs.insert(id, addr);
        nodes.insert(id, serve(&shared, &prefix, &data, id, addr).await?);
    }
    let result = drain(&args, &prefix, &addrs).await;
    for node in nodes.values_mut() {
        let _ = node.child.kill().await;
    }
    let _ = std::fs::remove_dir_all(&data);
    result
}

async fn drain(
    args: &MigrateBench,
    prefix: &str,
    addrs: &BTreeMap<&str, SocketAddr>,
) -> anyhow::Result<()> {
    let a = addrs["a"];
    let mut seen = Vec::new();
    for i in 0..args.rooms {
        let opts = ClientOptions {
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_millis(200),
            max_attempts: 100,
            ..ClientOptions::default()
        };
        let mut c = Client::guest(a, &format!("p{i}"), opts).await?;
        let room = format!("migrate-{i}");
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
    let (token, _) = crate::client::guest_login(a, "observer").await?;
    let http = reqwest::Client::new();
    // Every room known to the cluster (each node registers its rooms within a second).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let link = crate::rpc::Link::plain(SECRET);
    let grpc = {
        let mut cfg = crate::cluster::ClusterConfig {
            etcd: vec![args.etcd.clone()],
            prefix: Some(prefix.to_owned()),
            ..Default::default()
        };
        cfg.secret = Some(SECRET.to_owned());
        let mut operator = crate::cluster::Operator::connect(&cfg).await?;
        let snap = operator.snapshot().await?;
        let on_a = snap.rooms.values().filter(|r| r.owner == "a").count();
        if on_a != args.rooms {
            bail!("etcd lists {on_a} rooms on a, not {}", args.rooms);
        }
        snap.nodes
            .get("a")
            .map(|n| n.grpc.clone())
            .ok_or_else(|| anyhow!("node a is not in etcd"))?
    };
    println!(
        "{} arena rooms (1 player each, 20 Hz) on node a of 3; draining a",
        args.rooms
    );
    let reply = crate::rpc::drain(&grpc, &link, false).await?;
    let took = Duration::from_nanos(reply.took_ns);
    // Players settle at their new nodes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let on = running(&http, addrs, &token).await;
    let on_a = on.values().filter(|n| n.iter().any(|n| n == "a")).count();
    let on_b = on.values().filter(|n| n.iter().any(|n| n == "b")).count();
    let on_c = on.values().filter(|n| n.iter().any(|n| n == "c")).count();
    let twice = on.values().filter(|n| n.len() > 1).count();
    let lost = seen.iter().filter(|(r, _)| !on.contains_key(r)).count();
    let pauses = Stats::of(
        reply
            .pauses_ns
            .iter()
            .map(|n| Duration::from_nanos(*n))
            .collect(),
    );
    let mut gaps = Vec::new();
    let (mut seq_gaps, mut skipped, mut repeated, mut not_moved) = (0, 0, 0, 0);
    for (_, s) in &seen {
        let s = s.lock().recover();
        gaps.push(s.longest_gap);
        seq_gaps += s.seq_gaps;
        skipped += s.ticks_skipped;
        repeated += s.ticks_repeated;
        if s.moves != 1 {
            not_moved += 1;
        }
    }
    let gaps = Stats::of(gaps);
    println!(
        "drain: {} rooms moved in {} ({} failed); now on a {on_a}, b {on_b}, c {on_c}",
        reply.moved,
        human(took.as_nanos() as u64),
        reply.failed.len()
    );
    println!(
        "pause per room: p50 {}  p99 {}  max {}",
        human(pauses.p50_ns),
        human(pauses.p99_ns),
        human(pauses.max_ns)
    );
    println!(
        "longest time without a snapshot, per player: p50 {}  p99 {}  max {} (50 ms between ticks)",
        human(gaps.p50_ns),
        human(gaps.p99_ns),
        human(gaps.max_ns)
    );
    println!(
        "frame numbers skipped: {seq_gaps}; ticks lost: {skipped}; ticks repeated: {repeated}; \
         players not moved once: {not_moved}; rooms lost: {lost}; running twice: {twice}"
    );
    for line in reply.failed.iter().take(5) {
        println!("not moved: {line}");
    }
    println!(
        "{}",
        serde_json::json!({
            "rooms": args.rooms, "moved": reply.moved, "failed": reply.failed.len(),
            "drain_ns": reply.took_ns,
            "pause_p50_ns": pauses.p50_ns, "pause_p99_ns": pauses.p99_ns,
            "pause_max_ns": pauses.max_ns,
            "gap_p50_ns": gaps.p50_ns, "gap_p99_ns": gaps.p99_ns, "gap_max_ns": gaps.max_ns,
            "seq_gaps": seq_gaps, "ticks_lost": skipped, "ticks_repeated": repeated,
            "rooms_lost": lost, "rooms_twice": twice, "players_not_moved": not_moved,
        })
    );
    if seq_gaps + skipped + repeated > 0 || lost + twice + on_a > 0 || !reply.failed.is_empty() {
        bail!("the drain lost or doubled something (see above)");
    }
    Ok(())
}
