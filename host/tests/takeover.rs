//! Rooms that outlive their node, in a cluster: three `ludus serve` processes share
//! etcd and PostgreSQL; one is killed (SIGKILL) and the other two take its rooms over
//! from their last checkpoints, each room on exactly one of them. Real WebSocket
//! clients playing arena, whose node died, resume at a surviving node (as a load
//! balancer would send them), are told where their session went, and land in their
//! room with their position.

mod common;

use common::cluster::{SECRET, create_outcome, rooms_on, serve_process};
use common::postgres::Postgres;
use common::{Etcd, Proc, eventually, module_file};
use ludus::client::{Client, ClientOptions};
use ludus::gateway::pb::server_frame::Body as Out;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);
const TTL: Duration = Duration::from_secs(2);
/// Arena's tick rate (the host's default).
const HZ: u64 = 20;

struct Node {
    id: &'static str,
    addr: SocketAddr,
    proc: Proc,
}

fn serve(etcd: &Etcd, prefix: &str, storage: &str, id: &'static str, module: &str) -> Node {
    let addr: SocketAddr = format!("127.0.0.1:{}", common::free_port())
        .parse()
        .unwrap();
    let data = std::path::Path::new(module)
        .parent()
        .expect("the module's directory")
        .join(format!("data-{id}"));
    let ttl = format!("{}s", TTL.as_secs());
    let log = std::env::var("TAKEOVER_LOG").unwrap_or("warn".into());
    let env = [
        ("LUDUS_CLUSTER__LEASE_TTL", ttl.as_str()),
        ("LUDUS_STORAGE__URL", storage),
        ("LUDUS_LOG", log.as_str()),
    ];
    let proc = serve_process(etcd, prefix, id, addr, &data, module, &env);
    Node { id, addr, proc }
}

/// Nodes a, b and c, once each answers.
async fn three_nodes(etcd: &Etcd, prefix: &str, storage: &str, module: &str) -> [Node; 3] {
    let nodes = ["a", "b", "c"].map(|id| serve(etcd, prefix, storage, id, module));
    for node in &nodes {
        common::node_answers(node.addr, WAIT).await;
    }
    nodes
}

/// Clients that keep trying to resume while a node is taken over.
fn patient() -> ClientOptions {
    ClientOptions {
        backoff_initial: Duration::from_millis(200),
        backoff_max: Duration::from_secs(1),
        max_attempts: 60,
        ..ClientOptions::default()
    }
}

/// The next arena snapshot of `room`.
async fn snapshot(client: &mut Client, room: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = tokio::time::timeout(left, client.recv())
            .await
            .expect("a snapshot in time")
            .expect("connected (or resumed)");
        if let Some(Out::Message(m)) = frame.body
            && m.room_id == room
        {
            let v: Value = serde_json::from_slice(&m.payload).expect("arena sends JSON");
            if v.get("tick").is_some() {
                return v;
            }
        }
    }
}

fn position(snapshot: &Value, player: u64) -> Option<(i64, i64)> {
    snapshot["players"]
        .as_array()?
        .iter()
        .find(|p| p["id"].as_u64() == Some(player))
        .map(|p| (p["x"].as_i64().unwrap(), p["y"].as_i64().unwrap()))
}

fn tick(snapshot: &Value) -> u64 {
    snapshot["tick"].as_u64().expect("a tick number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rooms_of_a_killed_node_are_taken_over_by_the_others_with_their_players() {
    let etcd = Etcd::start().await;
    let pg = Postgres::start();
    let storage = pg.database("takeover").await;
    let prefix = "/ludus/takeover/";
    let dir = tempfile::tempdir().unwrap();
    let module = module_file(&dir, "arena");
    let [mut a, b, c] = three_nodes(&etcd, prefix, &storage, &module).await;
    let opts = patient();
    // Eight rooms on a, one player each, connected to a; each player moves a
    // different distance.
    const ROOMS: usize = 8;
    let mut players = Vec::new();
    for i in 0..ROOMS {
        let mut client = Client::guest(a.addr, &format!("p{i}"), opts.clone())
            .await
            .unwrap();
        let room = format!("kept-{i}");
        client.create("arena", &room, "").await.unwrap();
        create_outcome(&mut client).await.unwrap();
        for seq in 1..=(i as u64 + 1) {
            let input = json!({ "seq": seq, "dx": 5, "dy": 2 }).to_string();
            client.message(&room, input).await.unwrap();
        }
        let expected = (500 + 5 * (i as i64 + 1), 500 + 2 * (i as i64 + 1));
        players.push((client, room, expected));
    }
    for (client, room, expected) in &mut players {
        loop {
            let s = snapshot(client, room).await;
            if position(&s, client.player_id) == Some(*expected) {
                break;
            }
        }
    }
    // Quiet for longer than the checkpoint interval: every position is checkpointed.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let mut before = BTreeMap::new();
    for (client, room, _) in &mut players {
        before.insert(room.clone(), tick(&snapshot(client, room).await));
    }

    a.proc.kill();
    let killed = Instant::now();
    // The players' clients find a dead node; like a load balancer, send them to b.
    for (client, _, _) in &mut players {
        client.set_addr(b.addr);
    }
    let (token, _) = ludus::client::guest_login(b.addr, "observer")
        .await
        .unwrap();
    let mut owners: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    eventually(
        Duration::from_secs(30),
        "every room runs again",
        async || {
            owners.clear();
            for node in [&b, &c] {
                for room in rooms_on(node.addr, &token).await {
                    owners.entry(room).or_default().push(node.id);
                }
            }
            (0..ROOMS).all(|i| owners.contains_key(&format!("kept-{i}")))
        },
    )
    .await;
    let back_after = killed.elapsed();
    eprintln!("every room ran again {back_after:.2?} after SIGKILL (lease TTL {TTL:?})");
    assert!(
        back_after < TTL + Duration::from_secs(8),
        "the rooms took {back_after:?} to come back"
    );
    for (room, on) in &owners {
        assert_eq!(on.len(), 1, "{room} runs on {on:?}");
    }

    // Every player resumes (told where its session went, if b does not hold it), is
    // told its session was restored, and finds its position.
    for (client, room, expected) in &mut players {
        let after = loop {
            let s = snapshot(client, room).await;
            if client.restores > 0 {
                break s;
            }
        };
        assert_eq!(
            position(&after, client.player_id),
            Some(*expected),
            "{room}: the position came back from the checkpoint: {after}"
        );
        let last = before[room.as_str()];
        assert!(
            tick(&after) + HZ + 2 >= last,
            "{room}: tick {} went back more than one checkpoint interval from {last}",
            tick(&after)
        );
        let owner = owners[room.as_str()][0];
        let home = if owner == "b" { b.addr } else { c.addr };
        assert_eq!(client.addr(), home, "{room} runs on {owner}");
        assert_eq!(client.moves, u32::from(owner == "c"), "{room} on {owner}");
        // Play goes on.
        let input = json!({ "seq": 100, "dx": 1, "dy": 1 }).to_string();
        client.message(room, input).await.unwrap();
        let moved = (expected.0 + 1, expected.1 + 1);
        loop {
            let s = snapshot(client, room).await;
            if position(&s, client.player_id) == Some(moved) {
                break;
            }
        }
    }

    // `ludus status --rooms` shows each room's owner and checkpoint.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ludus"))
        .args(["status", "--rooms", "--etcd", &etcd.url, "--prefix", prefix])
        .env("LUDUS_STORAGE__URL", &storage)
        .env("LUDUS_CLUSTER__SECRET", SECRET)
        .output()
        .expect("running ludus status");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{table}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (room, on) in &owners {
        let line = table
            .lines()
            .find(|l| l.starts_with(room.as_str()))
            .unwrap_or_else(|| panic!("{room} is not in\n{table}"));
        assert!(line.contains(on[0]) && line.contains(" s ago"), "{line}");
    }
    drop((b, c));
}

/// A node cut off from etcd (its lease runs out) while its room plays on: another
/// node takes the room over from the shared checkpoint, the cut-off node's checkpoint
/// writes are refused from then on, and when it reaches etcd again it closes its own
/// copy: the room runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_etcd_closes_its_copy_of_a_room_taken_over_meanwhile() {
    use common::cluster::{Proxy, node_with};
    let etcd = Etcd::start().await;
    let pg = Postgres::start();
    let storage = pg.database("zombie").await;
    let prefix = "/ludus/zombie/";
    // a reaches etcd only through a proxy the test can black-hole.
    let etcd_addr: SocketAddr = etcd.url.trim_start_matches("http://").parse().unwrap();
    let proxy = Proxy::start(etcd_addr).await;
    let via = format!("http://{}", proxy.addr);
    let url = storage.clone();
    let (a, _da) = node_with(&etcd, prefix, "a", TTL, move |c| {
        c.cluster.etcd = vec![via];
        c.storage.url = Some(url);
    })
    .await;
    let url = storage.clone();
    let (b, _db) = node_with(&etcd, prefix, "b", TTL, move |c| c.storage.url = Some(url)).await;
    let mut player = Client::guest(a.addr, "cut-off", ClientOptions::default())
        .await
        .unwrap();
    player.create("arena", "zombie", "").await.unwrap();
    create_outcome(&mut player).await.unwrap();
    let copy = a.rooms.get("zombie").expect("the room runs on a");
    eventually(WAIT, "the room's checkpoint is in storage", async || {
        a.storage
            .saved_room("zombie")
            .await
            .is_ok_and(|r| r.is_some_and(|r| r.node == "a"))
    })
    .await;

    proxy.black_hole();
    eventually(
        Duration::from_secs(30),
        "b takes the room over",
        async || b.rooms.get("zombie").is_some_and(|h| !h.is_closed()),
    )
    .await;
    assert!(
        !copy.is_closed(),
        "a's copy plays on while a cannot reach etcd"
    );
    // The checkpoint is b's now, and stays b's while a's copy still runs and saves.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let row = b.storage.saved_room("zombie").await.unwrap().unwrap();
    assert_eq!(row.node, "b", "a's checkpoints of its copy are refused");

    proxy.restore();
    eventually(
        Duration::from_secs(30),
        "a closes its copy once it hears the room is b's",
        async || copy.is_closed(),
    )
    .await;
    let reason = copy.info().closed.unwrap_or_default();
    assert!(reason.contains("moved to node b"), "{reason}");
    assert!(b.rooms.get("zombie").is_some_and(|h| !h.is_closed()));
    drop(player);
}

/// Reads `room`'s snapshots for `client` until `done` says so; returns their ticks.
/// The player must stay in the room: a `kicked` or `closed` for it fails the test.
async fn follow(client: &mut Client, room: &str, done: impl Fn(&Value) -> bool) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut ticks = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = tokio::time::timeout(left, client.recv())
            .await
            .unwrap_or_else(|_| panic!("{room}: snapshots stopped; ticks so far {ticks:?}"))
            .expect("connected (or resumed)");
        match frame.body {
            Some(Out::Message(m)) if m.room_id == room => {
                let v: Value = serde_json::from_slice(&m.payload).expect("arena sends JSON");
                if let Some(t) = v["tick"].as_u64() {
                    ticks.push(t);
                    if done(&v) {
                        return ticks;
                    }
                }
            }
            Some(Out::Kicked(k)) if k.room_id == room => panic!("kicked: {}", k.reason),
            Some(Out::Closed(c)) if c.room_id == room => panic!("closed: {}", c.reason),
            _ => {}
        }
    }
}

/// Runs `ludus ARGS --etcd … --prefix …` (the operator's CLI); its output and success.
fn ludus(etcd: &Etcd, prefix: &str, args: &[&str]) -> (String, bool) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ludus"))
        .args(args)
        .args(["--etcd", &etcd.url, "--prefix", prefix])
        .env("LUDUS_CLUSTER__SECRET", SECRET)
        .output()
        .expect("running ludus");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (text, out.status.success())
}

/// Players connected to other nodes than the room's stay in it when it moves and when
/// its node dies: the room's new node holds their places, and their own nodes attach
/// them there (here, or through the link to that node) without a word to the game or
/// to the client. Across a move they miss nothing; across a takeover the room goes back
/// at most one checkpoint interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_on_other_nodes_stay_in_a_room_that_moves_or_whose_node_dies() {
    let etcd = Etcd::start().await;
    let pg = Postgres::start();
    let storage = pg.database("reattach").await;
    let prefix = "/ludus/reattach/";
    let dir = tempfile::tempdir().unwrap();
    let module = module_file(&dir, "arena");
    let [a, mut b, c] = three_nodes(&etcd, prefix, &storage, &module).await;
    let opts = patient();
    let room = "shared";
    let mut host = Client::guest(a.addr, "host", opts.clone()).await.unwrap();
    host.create("arena", room, "").await.unwrap();
    create_outcome(&mut host).await.unwrap();
    eventually(WAIT, "the cluster knows the room", async || {
        ludus(&etcd, prefix, &["status", "--json"]).0.contains(room)
    })
    .await;
    // Two visitors: one connected to b (where the room goes), one to c.
    let mut on_b = Client::guest(b.addr, "on-b", opts.clone()).await.unwrap();
    let mut on_c = Client::guest(c.addr, "on-c", opts.clone()).await.unwrap();
    for v in [&mut on_b, &mut on_c] {
        v.join(room).await.unwrap();
        create_outcome(v).await.unwrap();
    }

    // The room moves from a to b while the visitors play.
    let (on_b_id, on_c_id) = (on_b.player_id, on_c.player_id);
    let mover = {
        let etcd_url = etcd.url.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ludus"))
                .args(["rooms", "move", "shared", "b"])
                .args(["--etcd", &etcd_url, "--prefix", "/ludus/reattach/"])
                .env("LUDUS_CLUSTER__SECRET", SECRET)
                .output()
                .await
                .expect("running ludus");
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            assert!(out.status.success(), "{text}");
            text
        })
    };
    let moved_at = Instant::now() + Duration::from_millis(500);
    // Past the move by two seconds, each visitor's snapshots went on tick by tick.
    let mut ticks = Vec::new();
    for v in [&mut on_b, &mut on_c] {
        let t = follow(v, room, |_| {
            Instant::now() > moved_at + Duration::from_secs(2)
        })
        .await;
        ticks.push(t);
    }
    let out = mover.await.unwrap();
    assert!(
        out.contains("moved room shared from node a to node b"),
        "{out}"
    );
    for (who, t) in ["on-b", "on-c"].iter().zip(&ticks) {
        for w in t.windows(2) {
            assert_eq!(w[1], w[0] + 1, "{who}: ticks {t:?}");
        }
    }
    let (token, _) = ludus::client::guest_login(c.addr, "observer")
        .await
        .unwrap();
    assert_eq!(rooms_on(b.addr, &token).await, [room]);
    assert!(rooms_on(a.addr, &token).await.is_empty());
    // Their inputs reach the room on b: through b itself, and through c's link to b.
    for (v, id) in [(&mut on_b, on_b_id), (&mut on_c, on_c_id)] {
        let input = json!({ "seq": 1, "dx": 7, "dy": 3 }).to_string();
        v.message(room, input).await.unwrap();
        follow(v, room, |s| position(s, id) == Some((507, 503))).await;
    }
    // Quiet for longer than the checkpoint interval: the positions are checkpointed.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let before = *follow(&mut on_c, room, |_| true).await.last().unwrap();

    // b dies. The room comes back on a or c from its checkpoint; c attaches its
    // visitor there, which never hears of it.
    b.proc.kill();
    let killed = Instant::now();
    let after = follow(&mut on_c, room, |_| killed.elapsed() > TTL).await;
    let back = follow(&mut on_c, room, |s| {
        position(s, on_b_id).is_some() && killed.elapsed() > TTL + Duration::from_secs(2)
    })
    .await;
    let first_back = after.iter().chain(&back).find(|t| **t + HZ + 2 < before);
    assert!(
        first_back.is_none(),
        "the room went back more than one checkpoint interval from {before}: {after:?} {back:?}"
    );
    let mut owners = Vec::new();
    for node in [&a, &c] {
        if rooms_on(node.addr, &token).await == [room] {
            owners.push(node.id);
        }
    }
    assert_eq!(owners.len(), 1, "the room runs once: {owners:?}");
    eprintln!("after b died the room runs on {owners:?}");
    let input = json!({ "seq": 2, "dx": 1, "dy": 1 }).to_string();
    on_c.message(room, input).await.unwrap();
    follow(&mut on_c, room, |s| {
        position(s, on_c_id) == Some((508, 504))
    })
    .await;

    // The players whose node died resume elsewhere and find their room.
    for v in [&mut host, &mut on_b] {
        v.set_addr(c.addr);
    }
    for v in [&mut host, &mut on_b] {
        let id = v.player_id;
        let deadline = Instant::now() + Duration::from_secs(30);
        while v.restores == 0 {
            assert!(Instant::now() < deadline, "player {id} did not resume");
            follow(v, room, |_| true).await;
        }
        follow(v, room, |s| position(s, id).is_some()).await;
    }

    // Now the node of a visitor dies, not the room's: the room holds its place, its
    // owner takes the session over, and the visitor resumes there, still in the room.
    let (home, other) = match owners[0] {
        "a" => (a, c),
        _ => (c, a),
    };
    let mut visitor = Client::guest(other.addr, "visitor", opts.clone())
        .await
        .unwrap();
    visitor.join(room).await.unwrap();
    create_outcome(&mut visitor).await.unwrap();
    let id = visitor.player_id;
    let input = json!({ "seq": 1, "dx": 9, "dy": 9 }).to_string();
    visitor.message(room, input).await.unwrap();
    follow(&mut visitor, room, |s| position(s, id) == Some((509, 509))).await;
    let mut other = other;
    other.proc.kill();
    visitor.set_addr(home.addr);
    let deadline = Instant::now() + Duration::from_secs(30);
    while visitor.restores == 0 {
        assert!(Instant::now() < deadline, "the visitor did not resume");
        follow(&mut visitor, room, |_| true).await;
    }
    assert_eq!(visitor.addr(), home.addr);
    let input = json!({ "seq": 2, "dx": 1, "dy": 1 }).to_string();
    visitor.message(room, input).await.unwrap();
    follow(&mut visitor, room, |s| position(s, id) == Some((510, 510))).await;
    drop(home);
}
