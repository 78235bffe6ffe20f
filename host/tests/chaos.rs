//! Chaos: three `ludus serve` processes share etcd and PostgreSQL while real WebSocket
//! clients play arena in rooms spread over them. For a minute, a node chosen at random
//! is ended (SIGKILL or SIGTERM, in turn) and started again a little later. The clients
//! know every node's address (as behind a load balancer) and follow their sessions.
//! Checked all along: a room's tick never goes back more than one checkpoint interval
//! and never jumps ahead; and at the end: every room runs on exactly one node and every
//! player is still playing in it.

mod common;

use common::cluster::{create_outcome, rooms_on, serve_process};
use common::postgres::Postgres;
use common::{Etcd, Proc, module_file};
use ludus::client::{Client, ClientOptions};
use ludus::gateway::pb::server_frame::Body as Out;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TTL: Duration = Duration::from_secs(2);
/// Ticks per checkpoint interval (1 s at arena's 20 Hz).
const INTERVAL_TICKS: u64 = 20;
const PLAY: Duration = Duration::from_secs(60);
const ROOMS: usize = 9;
const NODES: [&str; 3] = ["a", "b", "c"];

struct Cluster {
    etcd: Etcd,
    storage: String,
    module: String,
    data: std::path::PathBuf,
    addrs: BTreeMap<&'static str, SocketAddr>,
}

impl Cluster {
    fn start(&self, id: &'static str) -> Proc {
        let ttl = format!("{}s", TTL.as_secs());
        // Quieter than the other tests: nodes die on purpose here.
        let log = std::env::var("CHAOS_LOG").unwrap_or("error".into());
        let env = [
            ("LUDUS_CLUSTER__LEASE_TTL", ttl.as_str()),
            ("LUDUS_STORAGE__URL", self.storage.as_str()),
            ("LUDUS_GATEWAY__GRACE_PERIOD", "60s"),
            ("LUDUS_LOG", log.as_str()),
        ];
        serve_process(
            &self.etcd,
            "/ludus/chaos/",
            id,
            self.addrs[id],
            &self.data.join(id),
            &self.module,
            &env,
        )
    }
}

/// What a player saw, checked as it comes.
#[derive(Default)]
struct Seen {
    last_tick: Option<u64>,
    snapshots: u64,
    /// Violations: a tick far behind the last, or ahead by more than one.
    errors: Vec<String>,
}

/// Plays until `stop`: an input, then frames until the next snapshot of its room.
async fn play(
    mut client: Client,
    room: String,
    seen: Arc<Mutex<Seen>>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut seq = 0;
    while !*stop.borrow() {
        seq += 1;
        let input = json!({ "seq": seq, "dx": 1, "dy": 0 }).to_string();
        client.message(&room, input).await?;
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(30), client.recv()).await??;
            let Some(Out::Message(m)) = frame.body else {
                continue;
            };
            if m.room_id != room {
                continue;
            }
            let v: Value = serde_json::from_slice(&m.payload)?;
            let Some(tick) = v["tick"].as_u64() else {
                continue;
            };
            let mut seen = seen.lock().unwrap();
            if let Some(last) = seen.last_tick {
                if tick + INTERVAL_TICKS + 1 < last {
                    seen.errors
                        .push(format!("{room}: tick {tick} after {last} (back too far)"));
                }
                if tick > last + 1 {
                    seen.errors
                        .push(format!("{room}: tick {tick} after {last} (ahead)"));
                }
            }
            seen.last_tick = Some(tick);
            seen.snapshots += 1;
            break;
        }
    }
    Ok(())
}

/// A small deterministic random stream (xorshift), so a failing run can be replayed
/// with its seed (`CHAOS_SEED`).
struct Random(u64);

impl Random {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_killed_and_restarted_at_random_lose_no_room_and_run_none_twice() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster {
        etcd: Etcd::start().await,
        storage: pg.database("chaos").await,
        module: module_file(&dir, "arena"),
        data: dir.path().to_owned(),
        addrs: NODES
            .iter()
            .map(|id| {
                let addr = format!("127.0.0.1:{}", common::free_port());
                (*id, addr.parse().unwrap())
            })
            .collect(),
    };
    let mut procs: BTreeMap<&str, Option<Proc>> = NODES
        .iter()
        .map(|id| (*id, Some(cluster.start(id))))
        .collect();
    for addr in cluster.addrs.values() {
        common::node_answers(*addr, Duration::from_secs(20)).await;
    }
    let all: Vec<SocketAddr> = cluster.addrs.values().copied().collect();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let mut players = Vec::new();
    for i in 0..ROOMS {
        let home = all[i % all.len()];
        let opts = ClientOptions {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_millis(500),
            max_attempts: 200,
            also: all.iter().copied().filter(|a| *a != home).collect(),
            ..ClientOptions::default()
        };
        let mut client = Client::guest(home, &format!("p{i}"), opts).await.unwrap();
        let room = format!("chaos-{i}");
        client.create("arena", &room, "").await.unwrap();
        create_outcome(&mut client).await.unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let task = tokio::spawn(play(client, room.clone(), seen.clone(), stop.clone()));
        players.push((room, seen, task));
    }

    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1234_u64);
    eprintln!("chaos seed {seed} (CHAOS_SEED replays it)");
    let mut random = Random(seed);
    let started = Instant::now();
    let mut round = 0;
    while started.elapsed() < PLAY {
        round += 1;
        // Let a checkpoint interval pass with everyone up.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let victim = NODES[random.next(NODES.len() as u64) as usize];
        let mut proc = procs.get_mut(victim).unwrap().take().unwrap();
        if round % 2 == 1 {
            proc.kill();
            eprintln!("{:>5.1?}: SIGKILL {victim}", started.elapsed());
        } else {
            proc.signal("TERM");
            let status = proc.exited_within(Duration::from_secs(20)).await;
            assert!(status.is_some(), "{victim} did not stop on SIGTERM");
            eprintln!("{:>5.1?}: SIGTERM {victim}", started.elapsed());
        }
        drop(proc);
        // Down for longer than its lease: the others take its rooms over.
        tokio::time::sleep(TTL + Duration::from_millis(1000 + random.next(2000))).await;
        procs.insert(victim, Some(cluster.start(victim)));
        let addr = cluster.addrs[victim];
        common::node_answers(addr, Duration::from_secs(20)).await;
    }

    // Settled: every room on exactly one node, every player playing in it.
    let (token, _) = ludus::client::guest_login(all[0], "observer")
        .await
        .unwrap();
    let mut owners: BTreeMap<String, Vec<SocketAddr>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        owners.clear();
        for addr in &all {
            for room in rooms_on(*addr, &token).await {
                owners.entry(room).or_default().push(*addr);
            }
        }
        let settled = (0..ROOMS).all(|i| {
            owners
                .get(&format!("chaos-{i}"))
                .is_some_and(|o| o.len() == 1)
        });
        if settled {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not within 20 s: every room runs on one node; owners: {owners:?} (nodes {all:?})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let counts: Vec<u64> = players
        .iter()
        .map(|(_, s, _)| s.lock().unwrap().snapshots)
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    for ((room, seen, _), before) in players.iter().zip(counts) {
        let seen = seen.lock().unwrap();
        assert!(
            seen.snapshots > before,
            "{room}: the player is not playing any more"
        );
        assert!(seen.errors.is_empty(), "{:?}", seen.errors);
    }
    stop_tx.send(true).unwrap();
    for (room, _, task) in players {
        let result = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .unwrap_or_else(|_| panic!("{room}: the player did not stop"));
        result.unwrap().unwrap_or_else(|e| panic!("{room}: {e:#}"));
    }
    eprintln!("{round} rounds of chaos; owners at the end: {owners:?}");
}
