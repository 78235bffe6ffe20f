//! Live migration: two `ludus serve` processes share etcd; real WebSocket clients play
//! arena in rooms on node a while `ludus rooms move` and `ludus drain` move the rooms
//! to node b. Each player follows its room (told where by the node it was on), and
//! the frames it gets go on with no number skipped and no tick lost or repeated,
//! while the inputs it sends during the move all arrive.

mod common;

use common::cluster::{SECRET, create_outcome, rooms_on, serve_process};
use common::{Etcd, Proc, eventually, module_file};
use ludus::client::{Client, ClientOptions};
use ludus::gateway::pb::server_frame::Body as Out;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);
const PREFIX: &str = "/ludus/migration/";

struct Node {
    addr: SocketAddr,
    proc: Proc,
}

/// Node `id`; with `drain_on_stop`, SIGTERM moves its rooms to the others.
fn serve(etcd: &Etcd, id: &'static str, module: &str, drain_on_stop: bool) -> Node {
    let addr: SocketAddr = format!("127.0.0.1:{}", common::free_port())
        .parse()
        .unwrap();
    let data = std::path::Path::new(module)
        .parent()
        .expect("the module's directory")
        .join(format!("data-{id}"));
    let drain = drain_on_stop.to_string();
    let log = std::env::var("MIGRATION_LOG").unwrap_or("warn".into());
    let env = [
        ("LUDUS_CLUSTER__DRAIN_ON_STOP", drain.as_str()),
        ("LUDUS_LOG", log.as_str()),
    ];
    let proc = serve_process(etcd, PREFIX, id, addr, &data, module, &env);
    Node { addr, proc }
}

/// Runs `ludus ARGS --etcd … --prefix …` (the operator's CLI); its output and success.
async fn ludus(etcd: &Etcd, args: &[&str]) -> (String, bool) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ludus"))
        .args(args)
        .args(["--etcd", &etcd.url, "--prefix", PREFIX])
        .env("LUDUS_CLUSTER__SECRET", SECRET)
        .output()
        .await
        .expect("running ludus");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (text, out.status.success())
}

/// A player and what it saw: the number of every numbered frame and the tick of
/// every snapshot of its room.
struct Player {
    client: Client,
    room: String,
    seqs: Vec<u64>,
    ticks: Vec<u64>,
    inputs: u64,
}

impl Player {
    /// Reads frames until the next snapshot of its room; returns it.
    async fn snapshot(&mut self) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = tokio::time::timeout(left, self.client.recv())
                .await
                .expect("a snapshot in time")
                .expect("connected (or resumed)");
            if frame.seq != 0 {
                self.seqs.push(frame.seq);
            }
            if let Some(Out::Message(m)) = frame.body
                && m.room_id == self.room
            {
                let v: Value = serde_json::from_slice(&m.payload).expect("arena sends JSON");
                if let Some(tick) = v["tick"].as_u64() {
                    self.ticks.push(tick);
                    return v;
                }
            }
        }
    }

    /// One more input (dx 1, dy 2).
    async fn input(&mut self) {
        self.inputs += 1;
        let input = json!({ "seq": self.inputs, "dx": 1, "dy": 2 }).to_string();
        self.client.message(&self.room, input).await.unwrap();
    }

    fn position(&self, snapshot: &Value) -> Option<(i64, i64)> {
        snapshot["players"]
            .as_array()?
            .iter()
            .find(|p| p["id"].as_u64() == Some(self.client.player_id))
            .map(|p| (p["x"].as_i64().unwrap(), p["y"].as_i64().unwrap()))
    }

    /// Plays (an input, then a snapshot) until `done` says so; then until every input
    /// is in the position.
    async fn play_until(&mut self, done: &tokio::sync::watch::Receiver<bool>) {
        while !*done.borrow() {
            self.input().await;
            self.snapshot().await;
        }
        let expected = (500 + self.inputs as i64, 500 + 2 * self.inputs as i64);
        loop {
            let s = self.snapshot().await;
            if self.position(&s) == Some(expected) {
                break;
            }
        }
    }

    /// Nothing skipped or repeated: frame numbers and ticks go up by one each time.
    fn check_continuity(&self) {
        for w in self.seqs.windows(2) {
            assert_eq!(
                w[1],
                w[0] + 1,
                "{}: frame numbers {:?}",
                self.room,
                self.seqs
            );
        }
        for w in self.ticks.windows(2) {
            assert_eq!(w[1], w[0] + 1, "{}: ticks {:?}", self.room, self.ticks);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_move_live_to_another_node_and_their_players_follow_with_nothing_lost() {
    let etcd = Etcd::start().await;
    let dir = tempfile::tempdir().unwrap();
    let module = module_file(&dir, "arena");
    let a = serve(&etcd, "a", &module, false);
    let mut b = serve(&etcd, "b", &module, true);
    for node in [&a, &b] {
        common::node_answers(node.addr, WAIT).await;
    }
    let (out, ok) = ludus(&etcd, &["status"]).await;
    assert!(ok, "{out}");
    let opts = ClientOptions {
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_secs(1),
        max_attempts: 30,
        ..ClientOptions::default()
    };
    const ROOMS: usize = 4;
    let mut players = Vec::new();
    for i in 0..ROOMS {
        let mut client = Client::guest(a.addr, &format!("p{i}"), opts.clone())
            .await
            .unwrap();
        let room = format!("moving-{i}");
        client.create("arena", &room, "").await.unwrap();
        create_outcome(&mut client).await.unwrap();
        players.push(Player {
            client,
            room,
            seqs: Vec::new(),
            ticks: Vec::new(),
            inputs: 0,
        });
    }
    let (token, _) = ludus::client::guest_login(b.addr, "observer")
        .await
        .unwrap();
    eventually(WAIT, "the cluster knows the rooms", async || {
        ludus(&etcd, &["status", "--json"])
            .await
            .0
            .contains("moving-3")
    })
    .await;

    // Mistakes are refused with what is wrong, and nothing moves.
    let (out, ok) = ludus(&etcd, &["rooms", "move", "moving-0", "nowhere"]).await;
    assert!(!ok && out.contains("no node `nowhere`"), "{out}");
    let (out, ok) = ludus(&etcd, &["rooms", "move", "no-such-room", "b"]).await;
    assert!(!ok && out.contains("no room `no-such-room`"), "{out}");
    let (out, ok) = ludus(&etcd, &["rooms", "move", "moving-0", "a"]).await;
    assert!(!ok && out.contains("on node a already"), "{out}");

    // One room moves while its player keeps playing.
    let (done_tx, done) = tokio::sync::watch::channel(false);
    let mut first = players.remove(0);
    let playing = tokio::spawn(async move {
        first.play_until(&done).await;
        first
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (out, ok) = ludus(&etcd, &["rooms", "move", "moving-0", "b"]).await;
    assert!(ok, "{out}");
    assert!(
        out.contains("moved room moving-0 from node a to node b"),
        "{out}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    done_tx.send(true).unwrap();
    let first = tokio::time::timeout(Duration::from_secs(60), playing)
        .await
        .expect("the player follows its room in time")
        .unwrap();
    assert_eq!(first.client.moves, 1, "told once where the room went");
    assert_eq!(first.client.addr(), b.addr);
    assert_eq!(
        first.client.restores, 0,
        "a move is not a restore: nothing was lost"
    );
    first.check_continuity();
    assert!(
        rooms_on(b.addr, &token)
            .await
            .contains(&"moving-0".to_owned())
    );
    assert!(
        !rooms_on(a.addr, &token)
            .await
            .contains(&"moving-0".to_owned())
    );

    // The node drains: the other rooms move, with their players playing.
    let (done_tx, done) = tokio::sync::watch::channel(false);
    let mut playing = Vec::new();
    for mut p in players {
        let done = done.clone();
        playing.push(tokio::spawn(async move {
            p.play_until(&done).await;
            p
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (out, ok) = ludus(&etcd, &["drain", "a"]).await;
    assert!(ok, "{out}");
    assert!(out.contains("3 rooms moved"), "{out}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    done_tx.send(true).unwrap();
    let mut players = vec![first];
    for p in playing {
        let p = tokio::time::timeout(Duration::from_secs(60), p)
            .await
            .expect("each player follows its room in time")
            .unwrap();
        assert_eq!(p.client.moves, 1, "{}", p.room);
        assert_eq!(p.client.addr(), b.addr);
        p.check_continuity();
        players.push(p);
    }
    assert!(rooms_on(a.addr, &token).await.is_empty());
    let on_b = rooms_on(b.addr, &token).await;
    for i in 0..ROOMS {
        assert!(on_b.contains(&format!("moving-{i}")), "{on_b:?}");
    }
    // The cluster says so too.
    let (out, _) = ludus(&etcd, &["status", "--json"]).await;
    let status: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    for i in 0..ROOMS {
        assert_eq!(
            status["rooms"][format!("moving-{i}")]["owner"],
            "b",
            "{out}"
        );
    }

    // Node b stops with SIGTERM and drain on: its rooms move back to a, live, and it
    // exits cleanly.
    let (done_tx, done) = tokio::sync::watch::channel(false);
    let mut playing = Vec::new();
    for mut p in players {
        let done = done.clone();
        playing.push(tokio::spawn(async move {
            p.play_until(&done).await;
            p
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.proc.signal("TERM");
    let status = b.proc.exited_within(Duration::from_secs(30)).await;
    assert!(status.is_some_and(|s| s.success()), "b exits 0: {status:?}");
    done_tx.send(true).unwrap();
    for p in playing {
        let p = tokio::time::timeout(Duration::from_secs(60), p)
            .await
            .expect("each player follows its room in time")
            .unwrap();
        assert_eq!(p.client.moves, 2, "{}", p.room);
        assert_eq!(p.client.addr(), a.addr);
        assert_eq!(p.client.restores, 0, "moved, not restored: {}", p.room);
        p.check_continuity();
    }
    let (token_a, _) = ludus::client::guest_login(a.addr, "observer-a")
        .await
        .unwrap();
    let on_a = rooms_on(a.addr, &token_a).await;
    for i in 0..ROOMS {
        assert!(on_a.contains(&format!("moving-{i}")), "{on_a:?}");
    }
}
