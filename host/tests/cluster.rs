//! Nodes in one cluster through a real etcd (started by the test on free ports): nodes
//! in this process with real sockets, and a real `ludus serve` process where a node must
//! die by SIGKILL.

mod common;

use common::cluster::{SECRET, create_outcome, ludus, node, node_serving, node_with};
use common::{Etcd, Proc, eventually, module_file, next_answer};
use ludus::client::{Client, ClientOptions};
use ludus::gateway::pb::server_frame::Body as Out;
use ludus::server::Server;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);
/// The cluster credential every node (and `ludus deploy`) here shares.
fn node_ids(server: &Server) -> Vec<String> {
    server.cluster.routing().nodes.into_keys().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_see_each_other_and_a_stopped_node_vanishes_at_once() {
    let etcd = Etcd::start().await;
    let prefix = "/ludus/members/";
    let ttl = Duration::from_secs(10);
    let (a, _da) = node(&etcd, prefix, "a", ttl).await;
    let (b, _db) = node(&etcd, prefix, "b", ttl).await;
    let (c, _dc) = node(&etcd, prefix, "c", ttl).await;
    for n in [&a, &b, &c] {
        eventually(WAIT, "every node sees all three", async || {
            node_ids(n) == ["a", "b", "c"]
        })
        .await;
    }
    // Each node's entry names its gateway.
    let routing = a.cluster.routing();
    assert_eq!(routing.nodes["b"].gateway, b.addr.to_string());

    // A graceful stop revokes the lease: gone well before the 10 s TTL.
    let stopped = std::time::Instant::now();
    c.stop().await;
    for n in [&a, &b] {
        eventually(Duration::from_secs(3), "the others drop c", async || {
            node_ids(n) == ["a", "b"]
        })
        .await;
    }
    assert!(stopped.elapsed() < Duration::from_secs(5));
    assert_eq!(
        etcd.keys(&format!("{prefix}nodes/")).await,
        [format!("{prefix}nodes/a"), format!("{prefix}nodes/b")]
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_in_on_another_node_closes_the_older_connection_with_a_reason() {
    let etcd = Etcd::start().await;
    let prefix = "/ludus/logins/";
    let ttl = Duration::from_secs(10);
    let (a, _da) = node(&etcd, prefix, "a", ttl).await;
    let (b, _db) = node(&etcd, prefix, "b", ttl).await;
    let (token, player) = ludus::client::guest_login(a.addr, "roamer").await.unwrap();
    let mut first = Client::connect(a.addr, &token, ClientOptions::default())
        .await
        .unwrap();
    let key = format!("{prefix}sessions/{player}");
    let holder = async || {
        let mut client = etcd.client().await;
        let resp = client.get(key.as_str(), None).await.unwrap();
        resp.kvs()
            .first()
            .map(|kv| kv.value_str().unwrap().to_owned())
    };
    assert_eq!(holder().await.as_deref(), Some("a"));

    // The same player (same token: the nodes share the auth secret) logs in on b.
    let _second = Client::connect(b.addr, &token, ClientOptions::default())
        .await
        .unwrap();
    let err = tokio::time::timeout(WAIT, first.recv())
        .await
        .expect("the first connection is closed in time")
        .unwrap_err();
    let closed = err
        .downcast_ref::<ludus::client::Closed>()
        .expect("closed by the server");
    assert_eq!(closed.code, ludus::gateway::close_code::REPLACED);
    assert!(closed.reason.contains("another node (b)"), "{closed}");
    assert_eq!(holder().await.as_deref(), Some("b"));
    eventually(WAIT, "node a forgets the session", async || {
        a.gateway.sessions() == 0
    })
    .await;
    assert_eq!(b.gateway.sessions(), 1);
    // a's session ending did not remove b's claim.
    assert_eq!(holder().await.as_deref(), Some("b"));
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_racing_to_create_one_room_id_make_exactly_one_room() {
    let etcd = Etcd::start().await;
    let prefix = "/ludus/race/";
    let ttl = Duration::from_secs(10);
    // Each client creates eight rooms: no quota here.
    let unlimited = |c: &mut ludus::config::Config| c.rooms.max_rooms_per_player = 0;
    let (a, _da) = node_with(&etcd, prefix, "a", ttl, unlimited).await;
    let (b, _db) = node_with(&etcd, prefix, "b", ttl, unlimited).await;
    let mut on_a = Client::guest(a.addr, "left", ClientOptions::default())
        .await
        .unwrap();
    let mut on_b = Client::guest(b.addr, "right", ClientOptions::default())
        .await
        .unwrap();
    for round in 0..8 {
        let room = format!("duel-{round}");
        on_a.create("arena", &room, "").await.unwrap();
        on_b.create("arena", &room, "").await.unwrap();
        let (ra, rb) = tokio::join!(create_outcome(&mut on_a), create_outcome(&mut on_b));
        assert!(
            ra.is_ok() != rb.is_ok(),
            "round {round}: exactly one creation succeeds: a {ra:?}, b {rb:?}"
        );
        let refusal = ra.err().or(rb.err()).unwrap();
        assert!(refusal.contains("already exists"), "{refusal}");
        let here = [&a, &b]
            .iter()
            .filter(|n| n.rooms.get(&room).is_some())
            .count();
        assert_eq!(here, 1, "round {round}: the room lives on one node");
        assert_eq!(etcd.keys(&format!("{prefix}rooms/{room}")).await.len(), 1);
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_vanishes_within_its_lease_ttl() {
    let etcd = Etcd::start().await;
    let prefix = "/ludus/kill/";
    let (a, _da) = node(&etcd, prefix, "a", Duration::from_secs(2)).await;
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("arena.wasm");
    std::fs::write(
        &module,
        ludus::guest_build::example_game_bytes("arena").unwrap(),
    )
    .unwrap();
    let port = common::free_port();
    let mut victim = std::process::Command::new(env!("CARGO_BIN_EXE_ludus"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin", "127.0.0.1:0"])
        .args(["--etcd", &etcd.url, "--node-id", "k"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--game")
        .arg(format!("arena={}", module.display()))
        .env("LUDUS_CLUSTER__PREFIX", prefix)
        .env("LUDUS_CLUSTER__LEASE_TTL", "2s")
        .env("LUDUS_CLUSTER__SECRET", SECRET)
        .env(
            "LUDUS_AUTH__SECRET",
            "a test secret of enough length: 32 bytes or more",
        )
        .env("LUDUS_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("starting ludus serve");
    eventually(Duration::from_secs(20), "a sees k", async || {
        node_ids(&a).contains(&"k".to_owned())
    })
    .await;
    // A player on k, in a room on k.
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut player = Client::guest(addr, "doomed", ClientOptions::default())
        .await
        .unwrap();
    player.create("arena", "on-k", "").await.unwrap();
    create_outcome(&mut player).await.unwrap();
    eventually(WAIT, "a sees k's session and room", async || {
        let r = a.cluster.routing();
        r.sessions.get(&player.player_id).map(String::as_str) == Some("k")
            && r.rooms.get("on-k").is_some_and(|e| e.owner == "k")
    })
    .await;

    victim.kill().expect("SIGKILL");
    let killed = std::time::Instant::now();
    let _ = victim.wait();
    eventually(
        Duration::from_secs(8),
        "k's keys expire with its lease",
        async || {
            let r = a.cluster.routing();
            !r.nodes.contains_key("k") && r.sessions.is_empty() && r.rooms.is_empty()
        },
    )
    .await;
    eprintln!(
        "killed node: its keys gone after {:?} (lease_ttl 2 s)",
        killed.elapsed()
    );
    assert!(killed.elapsed() < Duration::from_secs(2 + 5));
    let left = etcd.keys(prefix).await;
    assert!(
        left.iter().all(|k| !k.ends_with("/k")) && left.contains(&format!("{prefix}nodes/a")),
        "k's keys are gone, a's stay: {left:?}"
    );
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_keep_ticking_while_etcd_is_down_and_nodes_register_again_after() {
    let mut etcd = Etcd::start().await;
    let prefix = "/ludus/outage/";
    let (a, _da) = node(&etcd, prefix, "a", Duration::from_secs(2)).await;
    let mut player = Client::guest(a.addr, "steady", ClientOptions::default())
        .await
        .unwrap();
    player.create("arena", "steady-room", "").await.unwrap();
    create_outcome(&mut player).await.unwrap();
    eventually(WAIT, "the room is registered", async || {
        etcd.keys(&format!("{prefix}rooms/steady-room")).await.len() == 1
    })
    .await;

    etcd.kill();
    let ticks_before = a.rooms.get("steady-room").unwrap().ticks();
    let outage = Duration::from_secs(20);
    let mut snapshots = 0;
    let until = std::time::Instant::now() + outage;
    while std::time::Instant::now() < until {
        if let Ok(Ok(frame)) = tokio::time::timeout(Duration::from_secs(1), player.recv()).await
            && matches!(frame.body, Some(Out::Message(_)))
        {
            snapshots += 1;
        }
    }
    let ticks = a.rooms.get("steady-room").unwrap().ticks() - ticks_before;
    // 20 Hz for 20 s: allow for a slow machine, but the room must not have stalled.
    assert!(
        ticks >= 300,
        "the room ticked {ticks} times during the outage"
    );
    assert!(snapshots >= 300, "the player got {snapshots} snapshots");
    assert!(!a.cluster.is_leased(), "the node knows its lease is gone");

    etcd.run().await;
    let wanted = [
        format!("{prefix}nodes/a"),
        format!("{prefix}rooms/steady-room"),
        format!("{prefix}sessions/{}", player.player_id),
    ];
    let registered = async || {
        let keys = etcd.keys(prefix).await;
        a.cluster.is_leased() && wanted.iter().all(|k| keys.contains(k))
    };
    eventually(
        Duration::from_secs(15),
        "the node is leased again",
        registered,
    )
    .await;

    // etcd restores leases on restart; make this one expire for real (as after a longer
    // outage): the node must take a new lease and register everything it holds again.
    let mut client = etcd.client().await;
    for lease in client.leases().await.unwrap().leases() {
        client.lease_revoke(lease.id()).await.unwrap();
    }
    assert!(etcd.keys(&format!("{prefix}rooms/")).await.is_empty());
    eventually(
        Duration::from_secs(15),
        "the node registers again",
        registered,
    )
    .await;
    assert!(a.rooms.get("steady-room").is_some());
    a.stop().await;
}

/// Writes an example game's module into `dir` and returns its path.
fn rules_of(frame: &ludus::gateway::pb::ServerFrame) -> Option<u64> {
    match &frame.body {
        Some(Out::Message(m)) => serde_json::from_slice::<serde_json::Value>(&m.payload)
            .ok()?
            .get("rules")?
            .as_u64(),
        _ => None,
    }
}

/// A player in its own arena room on `node`.
async fn player_on(node: &Server, room: &str) -> Client {
    let mut c = Client::guest(node.addr, room, ClientOptions::default())
        .await
        .unwrap();
    c.create("arena", room, "").await.unwrap();
    create_outcome(&mut c).await.unwrap();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ludus_deploy_swaps_every_node_live_while_clients_play() {
    let etcd = Etcd::start().await;
    let prefix = "/ludus/deploy/";
    let ttl = Duration::from_secs(10);
    let (a, _da) = node(&etcd, prefix, "a", ttl).await;
    let (b, _db) = node(&etcd, prefix, "b", ttl).await;
    let (c, _dc) = node(&etcd, prefix, "c", ttl).await;
    let nodes = [&a, &b, &c];
    let mut players = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        players.push(player_on(n, &format!("play-{i}")).await);
    }
    let files = tempfile::tempdir().unwrap();
    let v2 = module_file(&files, "arena-v2");

    let (ok, out, err) = ludus(&[
        "deploy",
        "arena",
        &v2,
        "--room-config",
        r#"{"max_players": 4}"#,
        "--etcd",
        &etcd.url,
        "--prefix",
        prefix,
    ]);
    assert!(ok, "deploy failed:\n{out}\n{err}");
    assert!(out.contains("all 3 nodes run arena 2.0.0"), "{out}");

    // Every player sees the v2 rules on the same connection, in the same room.
    for p in &mut players {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let frame = tokio::time::timeout(WAIT, p.recv()).await.unwrap().unwrap();
            if rules_of(&frame) == Some(2) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no v2 snapshot");
        }
    }
    for n in nodes {
        assert_eq!(n.gateway.connections(), 1, "no client reconnected");
        assert_eq!(n.gateway.sessions(), 1);
        assert_eq!(n.rooms.active_module("arena").unwrap().version, "2.0.0");
    }

    let (ok, out, err) = ludus(&["status", "--json", "--etcd", &etcd.url, "--prefix", prefix]);
    assert!(ok, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["games"]["arena"]["current"]["version"], "2.0.0");
    assert_eq!(
        status["games"]["arena"]["room_config"],
        r#"{"max_players": 4}"#
    );
    for id in ["a", "b", "c"] {
        let s = &status["status"]["arena"][id];
        assert_eq!(s["version"], "2.0.0", "{id}: {s}");
        assert_eq!(s["rooms"]["2.0.0"], 1, "{id}: {s}");
        assert_eq!(s["ok"], true);
    }
    // The table for people names every node.
    let (ok, table, _) = ludus(&["status", "--etcd", &etcd.url, "--prefix", prefix]);
    assert!(
        ok && table.contains("desired 2.0.0") && table.contains("\n  c "),
        "{table}"
    );
    for n in [a, b, c] {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_whose_restore_fails_rolls_back_everywhere_and_status_names_the_error() {
    let etcd = Etcd::start().await;
    let prefix = "/ludus/rollback/";
    let ttl = Duration::from_secs(10);
    let (a, _da) = node(&etcd, prefix, "a", ttl).await;
    let (b, _db) = node(&etcd, prefix, "b", ttl).await;
    let mut players = vec![player_on(&a, "keep-a").await, player_on(&b, "keep-b").await];
    let files = tempfile::tempdir().unwrap();
    let v1 = module_file(&files, "arena");
    let bad = module_file(&files, "bad-restore");
    let target = ["--etcd", etcd.url.as_str(), "--prefix", prefix];

    // v1 becomes the cluster's desired version (the nodes already run it).
    let (ok, out, err) = ludus(&[&["deploy", "arena", &v1][..], &target[..]].concat());
    assert!(ok, "{out}\n{err}");

    let (ok, out, err) = ludus(&[&["deploy", "arena", &bad][..], &target[..]].concat());
    assert!(!ok, "a deploy whose restore fails must fail:\n{out}");
    assert!(err.contains("bad-restore refuses state"), "{err}");
    assert!(err.contains("back on 1.0.0"), "{err}");

    let (ok, out, _) = ludus(&[&["status", "--json"][..], &target[..]].concat());
    assert!(ok);
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    let game = &status["games"]["arena"];
    assert_eq!(game["current"]["version"], "1.0.0", "{game}");
    let note = game["note"].as_str().unwrap();
    assert!(
        note.contains("rolled back") && note.contains("bad-restore refuses state"),
        "{note}"
    );
    eventually(WAIT, "every node reports v1 again", async || {
        let (_, out, _) = ludus(&[&["status", "--json"][..], &target[..]].concat());
        let s: serde_json::Value = serde_json::from_str(&out).unwrap();
        ["a", "b"].iter().all(|id| {
            s["status"]["arena"][id]["version"] == "1.0.0" && s["status"]["arena"][id]["ok"] == true
        })
    })
    .await;
    // The players never left their rooms and still play v1.
    for p in &mut players {
        let frame = loop {
            let f = tokio::time::timeout(WAIT, p.recv()).await.unwrap().unwrap();
            if rules_of(&f).is_some() {
                break f;
            }
        };
        assert_eq!(rules_of(&frame), Some(1));
    }
    assert_eq!(a.gateway.connections() + b.gateway.connections(), 2);

    // Bad operator input is refused before anything is written.
    let bad_policy = ["deploy", "arena", &v1, "--policy", "canary:0"];
    let (ok, _, err) = ludus(&[&bad_policy[..], &target[..]].concat());
    assert!(!ok && err.contains("percentage from 1 to 100"), "{err}");
    let missing = ["deploy", "arena", "/no/such.wasm"];
    let (ok, _, err) = ludus(&[&missing[..], &target[..]].concat());
    assert!(!ok && err.contains("/no/such.wasm"), "{err}");

    // And by hand: rollback with no earlier version says so.
    let (ok, _, err) = ludus(&[&["rollback", "arena"][..], &target[..]].concat());
    assert!(!ok && err.contains("no earlier version"), "{err}");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_to_node_calls_without_the_cluster_credential_are_refused() {
    use ludus::rpc::pb::{FetchRequest, modules_client::ModulesClient};
    let etcd = Etcd::start().await;
    let (a, _da) = node(&etcd, "/ludus/creds/", "a", Duration::from_secs(10)).await;
    let grpc = a.cluster.routing().nodes["a"].grpc.clone();
    let sha = a.rooms.active_module("arena").unwrap().sha256_hex();

    // No credential at all.
    let mut bare = ModulesClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    let status = bare
        .fetch(FetchRequest {
            sha256: sha.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(
        status.message().contains("no cluster credential"),
        "{status}"
    );

    // A wrong one.
    let err = ludus::rpc::fetch(
        &grpc,
        &ludus::rpc::Link::plain("not the cluster's secret at all"),
        &sha,
    )
    .await
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("wrong cluster credential"),
        "{err:#}"
    );

    // The right one gets the bytes, checked against their hash.
    let bytes = ludus::rpc::fetch(&grpc, &ludus::rpc::Link::plain(SECRET), &sha)
        .await
        .unwrap();
    assert_eq!(ludus::rpc::sha256_hex(&bytes), sha);

    // A node without a secret does not join at all, and says why.
    let url = etcd.url.clone();
    let mut config = ludus::config::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    };
    config.runtime.max_instances = 8;
    config.admin.listen = "127.0.0.1:0".parse().unwrap();
    config.cluster.etcd = vec![url];
    let err = ludus::server::start(config).await.err().expect("refused");
    assert!(
        format!("{err:#}").contains("LUDUS_CLUSTER__SECRET"),
        "{err:#}"
    );
    a.stop().await;
}

/// The next room message on `c` as (tick, payload), skipping other frames.
async fn next_snapshot(c: &mut Client) -> (u64, Vec<u8>) {
    loop {
        let frame = tokio::time::timeout(WAIT, c.recv())
            .await
            .expect("a snapshot in time")
            .expect("connected");
        if let Some(Out::Message(m)) = &frame.body {
            let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            if let Some(tick) = v["tick"].as_u64() {
                return (tick, m.payload.to_vec());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_on_one_node_plays_in_a_room_on_another_and_sees_the_same_snapshots() {
    let etcd = Etcd::start().await;
    let prefix = "/ludus/remote/";
    let ttl = Duration::from_secs(10);
    let (a, _da) = node(&etcd, prefix, "a", ttl).await;
    let (b, _db) = node(&etcd, prefix, "b", ttl).await;
    let mut host = player_on(&b, "far").await;
    eventually(WAIT, "a learns where room `far` lives", async || {
        a.cluster
            .routing()
            .rooms
            .get("far")
            .is_some_and(|e| e.owner == "b")
    })
    .await;

    let mut guest = Client::guest(a.addr, "guest", ClientOptions::default())
        .await
        .unwrap();
    guest.join("far").await.unwrap();
    match create_outcome(&mut guest).await {
        Ok(()) => {}
        Err(e) => panic!("joining the remote room: {e}"),
    }
    assert!(a.rooms.get("far").is_none(), "the room lives on b only");
    assert_eq!(b.rooms.get("far").unwrap().info().seats, 2);

    // The guest's inputs reach the room on b, in order.
    for seq in 1..=5u64 {
        let input = serde_json::json!({ "seq": seq, "dx": 1, "dy": 0 });
        guest
            .message("far", serde_json::to_vec(&input).unwrap())
            .await
            .unwrap();
    }
    let me = guest.player_id;
    let shows_all = |payload: &[u8]| {
        let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
        v["players"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["id"] == me && p["seq"] == 5)
    };
    for c in [&mut guest, &mut host] {
        loop {
            let (_, payload) = next_snapshot(c).await;
            if shows_all(&payload) {
                break;
            }
        }
    }

    // Both see the same snapshots, in the same order.
    let (mut seen_by_guest, mut seen_by_host) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        seen_by_guest.push(next_snapshot(&mut guest).await);
        seen_by_host.push(next_snapshot(&mut host).await);
    }
    for seen in [&seen_by_guest, &seen_by_host] {
        assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "ticks in order");
    }
    let host_by_tick: std::collections::HashMap<u64, &Vec<u8>> =
        seen_by_host.iter().map(|(t, p)| (*t, p)).collect();
    let common: Vec<&(u64, Vec<u8>)> = seen_by_guest
        .iter()
        .filter(|(t, _)| host_by_tick.contains_key(t))
        .collect();
    assert!(common.len() >= 10, "{} ticks in common", common.len());
    for (tick, payload) in common {
        assert_eq!(payload, host_by_tick[tick], "tick {tick}");
    }

    // Node b goes away: the guest is told, with a reason, and can play elsewhere.
    b.stop().await;
    let kicked = loop {
        let frame = tokio::time::timeout(WAIT, guest.recv())
            .await
            .expect("told in time")
            .expect("still connected to a");
        if let Some(Out::Kicked(k)) = frame.body {
            break k;
        }
    };
    assert_eq!(kicked.room_id, "far");
    assert!(kicked.reason.contains("node b"), "{}", kicked.reason);
    guest.create("arena", "nearby", "").await.unwrap();
    create_outcome(&mut guest).await.unwrap();
    assert_eq!(a.gateway.connections(), 1, "the guest never reconnected");
    a.stop().await;
}

/// Matches of exactly `n` arena players (no waiting for fewer).
fn full_rooms_of(n: u32) -> impl FnOnce(&mut ludus::config::Config) {
    move |c| {
        let rules = ludus::matchmaking::MatchRules {
            min_players: n,
            max_players: n,
            wait: Duration::from_secs(600),
        };
        c.matchmaking.games.insert("arena".into(), rules);
    }
}

/// Asks for an arena match and waits until the ticket is queued.
async fn ask_for_match(c: &mut Client) {
    c.find_match("arena", "", &[]).await.unwrap();
    match next_answer(c, WAIT).await {
        Out::MatchQueued(_) => {}
        other => panic!("expected match_queued, got {other:?}"),
    }
}

/// Waits for the match, joins its room (wherever it lives) and returns the room id.
async fn join_match(c: &mut Client, wait: Duration) -> String {
    let found = match next_answer(c, wait).await {
        Out::MatchFound(f) => f,
        other => panic!("expected match_found, got {other:?}"),
    };
    c.join(&found.room_id).await.unwrap();
    match next_answer(c, WAIT).await {
        Out::Joined(j) => assert_eq!(j.room_id, found.room_id),
        other => panic!("joining {}: {other:?}", found.room_id),
    }
    found.room_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_players_on_three_nodes_end_up_in_five_full_rooms_spread_over_the_nodes() {
    let etcd = Etcd::start().await;
    let prefix = "/ludus/matches/";
    let ttl = Duration::from_secs(10);
    let (a, _da) = node_with(&etcd, prefix, "a", ttl, full_rooms_of(8)).await;
    let (b, _db) = node_with(&etcd, prefix, "b", ttl, full_rooms_of(8)).await;
    let (c, _dc) = node_with(&etcd, prefix, "c", ttl, full_rooms_of(8)).await;
    let nodes = [&a, &b, &c];
    for n in nodes {
        eventually(WAIT, "every node sees all three", async || {
            node_ids(n) == ["a", "b", "c"]
        })
        .await;
    }
    let mut clients = Vec::new();
    for i in 0..40 {
        let node = nodes[i % 3];
        let c = Client::guest(node.addr, &format!("p{i}"), ClientOptions::default())
            .await
            .unwrap();
        clients.push(c);
    }
    for c in &mut clients {
        ask_for_match(c).await;
    }
    let mut members: std::collections::BTreeMap<String, usize> = Default::default();
    for c in &mut clients {
        *members.entry(join_match(c, WAIT).await).or_default() += 1;
    }
    assert_eq!(members.len(), 5, "{members:?}");
    assert!(members.values().all(|&n| n == 8), "{members:?}");
    // Each room is full where it lives, and the rooms are spread: 2, 2, 1.
    let mut per_node = Vec::new();
    for n in nodes {
        let here: Vec<&String> = members
            .keys()
            .filter(|r| n.rooms.get(r).is_some())
            .collect();
        for room in &here {
            assert_eq!(n.rooms.get(room).unwrap().info().seats, 8);
        }
        per_node.push(here.len());
    }
    per_node.sort();
    assert_eq!(per_node, [1, 2, 2], "rooms per node");
    for n in [a, b, c] {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_mid_queue_still_matches_everyone_and_ends_remote_memberships() {
    let etcd = Etcd::start().await;
    let prefix = "/ludus/leader-kill/";
    let ttl = Duration::from_secs(2);
    // The first node to campaign leads: a `ludus serve` process that can die by SIGKILL.
    let dir = tempfile::tempdir().unwrap();
    let module = module_file(&dir, "arena");
    let port = common::free_port();
    let mut leader = serve_process(&etcd, prefix, "l", port, &module);
    let mut election = etcd.client().await.election_client();
    let name = ludus::cluster::keys::election_name(prefix, ludus::cluster::keys::MATCHMAKER);
    eventually(
        Duration::from_secs(20),
        "l leads the matchmaker",
        async || {
            election
                .leader(name.clone())
                .await
                .ok()
                .and_then(|r| r.kv().map(|kv| kv.value().to_vec()))
                .as_deref()
                == Some(b"l")
        },
    )
    .await;
    let (a, _da) = node_with(&etcd, prefix, "a", ttl, full_rooms_of(8)).await;
    let (b, _db) = node_with(&etcd, prefix, "b", ttl, full_rooms_of(8)).await;
    for n in [&a, &b] {
        eventually(WAIT, "every node sees all three", async || {
            node_ids(n) == ["a", "b", "l"]
        })
        .await;
    }

    // A player on a plays in a room on l.
    let l_addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut host = Client::guest(l_addr, "host", ClientOptions::default())
        .await
        .unwrap();
    host.create("arena", "on-l", "").await.unwrap();
    create_outcome(&mut host).await.unwrap();
    let mut visitor = Client::guest(a.addr, "visitor", ClientOptions::default())
        .await
        .unwrap();
    eventually(WAIT, "a knows room on-l", async || {
        a.cluster.routing().rooms.contains_key("on-l")
    })
    .await;
    visitor.join("on-l").await.unwrap();
    create_outcome(&mut visitor).await.unwrap();

    // Five players queue with the leader on l; seven are needed.
    let mut clients = Vec::new();
    for i in 0..7 {
        let node = if i % 2 == 0 { &a } else { &b };
        let c = Client::guest(node.addr, &format!("q{i}"), ClientOptions::default())
            .await
            .unwrap();
        clients.push(c);
    }
    for c in &mut clients[..5] {
        ask_for_match(c).await;
    }

    leader.kill();
    let killed = std::time::Instant::now();

    // The visitor's room is gone with its node: told why, still connected to a.
    let kicked = loop {
        match next_answer(&mut visitor, WAIT).await {
            Out::Kicked(k) => break k,
            _ => continue,
        }
    };
    assert_eq!(kicked.room_id, "on-l");
    assert!(kicked.reason.contains("node l"), "{}", kicked.reason);

    // The rest ask while there is no leader; the visitor too: eight in all.
    for c in &mut clients[5..] {
        ask_for_match(c).await;
    }
    ask_for_match(&mut visitor).await;
    clients.push(visitor);
    let mut rooms = std::collections::BTreeSet::new();
    for c in &mut clients {
        rooms.insert(join_match(c, ttl + Duration::from_secs(8)).await);
    }
    let took = killed.elapsed();
    assert!(
        took < ttl + Duration::from_secs(5),
        "matched {took:?} after the kill"
    );
    assert_eq!(rooms.len(), 1, "{rooms:?}");
    let room = rooms.into_iter().next().unwrap();
    let owner = [&a, &b]
        .into_iter()
        .find(|n| n.rooms.get(&room).is_some())
        .expect("the room lives on a or b");
    assert_eq!(owner.rooms.get(&room).unwrap().info().seats, 8);
    // `ludus status` names the new leader.
    let (ok, out, err) = ludus(&["status", "--json", "--etcd", &etcd.url, "--prefix", prefix]);
    assert!(ok, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    let leader = status["matchmaker_leader"].as_str().unwrap_or_default();
    assert!(leader == "a" || leader == "b", "{out}");
    a.stop().await;
    b.stop().await;
}

/// A `ludus serve` process, killed (SIGKILL) when dropped, so a failing test leaves
/// none behind.
fn serve_process(etcd: &Etcd, prefix: &str, id: &str, port: u16, module: &str) -> Proc {
    // Each node its own data, beside its module in the test's temp dir.
    let data = std::path::Path::new(module)
        .parent()
        .expect("the module's directory")
        .join(format!("data-{id}-{port}"));
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_ludus"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin", "127.0.0.1:0"])
        .args(["--etcd", &etcd.url, "--node-id", id])
        .arg("--data-dir")
        .arg(data)
        .arg("--game")
        .arg(format!("arena={module}"))
        .env("LUDUS_CLUSTER__PREFIX", prefix)
        .env("LUDUS_CLUSTER__LEASE_TTL", "2s")
        .env("LUDUS_CLUSTER__SECRET", SECRET)
        .env(
            "LUDUS_AUTH__SECRET",
            "a test secret of enough length: 32 bytes or more",
        )
        .env("LUDUS_MATCHMAKING__GAMES__ARENA__MIN_PLAYERS", "8")
        .env("LUDUS_MATCHMAKING__GAMES__ARENA__MAX_PLAYERS", "8")
        .env("LUDUS_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting ludus serve");
    Proc::new(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_to_a_peer_that_restarts_is_opened_again_in_the_background() {
    let etcd = Etcd::start().await;
    let prefix = "/ludus/relink/";
    let (a, _da) = node(&etcd, prefix, "a", Duration::from_secs(2)).await;
    let dir = tempfile::tempdir().unwrap();
    let module = module_file(&dir, "arena");
    let port = common::free_port();
    let mut b = serve_process(&etcd, prefix, "b", port, &module);
    eventually(Duration::from_secs(20), "a sees b", async || {
        node_ids(&a).contains(&"b".to_owned())
    })
    .await;
    let b_addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut host = Client::guest(b_addr, "host", ClientOptions::default())
        .await
        .unwrap();
    host.create("arena", "on-b", "").await.unwrap();
    create_outcome(&mut host).await.unwrap();
    eventually(WAIT, "a knows room on-b", async || {
        a.cluster.routing().rooms.contains_key("on-b")
    })
    .await;
    let mut guest = Client::guest(a.addr, "guest", ClientOptions::default())
        .await
        .unwrap();
    guest.join("on-b").await.unwrap();
    create_outcome(&mut guest).await.unwrap();
    let peers = a.peers.clone().expect("a cluster node has peers");
    assert_eq!(peers.linked(), ["b"]);

    // b crashes and comes back under its id (its gRPC port is a new one).
    b.kill();
    match next_answer(&mut guest, WAIT).await {
        Out::Kicked(k) => assert!(k.reason.contains("node b"), "{}", k.reason),
        other => panic!("expected kicked, got {other:?}"),
    }
    let mut b = serve_process(&etcd, prefix, "b", port, &module);
    eventually(
        Duration::from_secs(15),
        "a links to the new b by itself",
        async || peers.linked() == ["b"],
    )
    .await;
    // And the guest plays on the new b over that link.
    let mut host = Client::guest(b_addr, "host", ClientOptions::default())
        .await
        .unwrap();
    host.create("arena", "on-b-again", "").await.unwrap();
    create_outcome(&mut host).await.unwrap();
    eventually(WAIT, "a knows room on-b-again", async || {
        a.cluster.routing().rooms.contains_key("on-b-again")
    })
    .await;
    guest.join("on-b-again").await.unwrap();
    create_outcome(&mut guest).await.unwrap();
    b.kill();
    a.stop().await;
}

/// The next room message (JSON) that is not one of faulty's tick broadcasts.
async fn next_echo(c: &mut Client) -> serde_json::Value {
    loop {
        let frame = tokio::time::timeout(WAIT, c.recv()).await.unwrap().unwrap();
        if let Some(Out::Message(m)) = frame.body {
            assert!(
                m.payload.len() < 1 << 20,
                "{} bytes crossed",
                m.payload.len()
            );
            let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            if v.get("tick").is_none() {
                return v;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn game_output_cannot_break_a_node_link_and_an_empty_room_leaves_etcd() {
    let etcd = Etcd::start().await;
    let prefix = "/ludus/edge/";
    let ttl = Duration::from_secs(10);
    let idle = |c: &mut ludus::config::Config| c.rooms.empty_timeout = Duration::from_secs(1);
    let (a, _da) = node_serving(&etcd, prefix, "a", ttl, &["arena", "faulty"], idle).await;
    let (b, _db) = node_serving(&etcd, prefix, "b", ttl, &["arena", "faulty"], idle).await;
    a.rooms
        .create(ludus::rooms::CreateRoom {
            game: "faulty".into(),
            id: Some("loud".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    eventually(WAIT, "b routes to the room on a", async || {
        b.cluster.routing().rooms.contains_key("loud")
    })
    .await;
    let mut c = Client::guest(b.addr, "far", ClientOptions::default())
        .await
        .unwrap();
    c.join("loud").await.unwrap();
    // Messages over what a client may receive stay in the room; the link carries on.
    for _ in 0..3 {
        c.message("loud", &b"huge-send"[..]).await.unwrap();
        assert_eq!(next_echo(&mut c).await["echo"], "after huge-send");
    }
    c.message("loud", &b"still linked"[..]).await.unwrap();
    assert_eq!(next_echo(&mut c).await["echo"], "still linked");
    assert_eq!(a.rooms.get("loud").unwrap().info().dropped_messages, 3);

    // Left empty, the room closes after its idle time and leaves etcd and routing.
    c.send(ludus::gateway::pb::client_frame::Body::Leave(
        ludus::gateway::pb::LeaveRoom {
            room_id: "loud".into(),
        },
    ))
    .await
    .unwrap();
    eventually(WAIT, "the empty room leaves etcd", async || {
        etcd.keys(&format!("{prefix}rooms/loud")).await.is_empty()
    })
    .await;
    eventually(WAIT, "and the routing tables", async || {
        !a.cluster.routing().rooms.contains_key("loud")
            && !b.cluster.routing().rooms.contains_key("loud")
    })
    .await;
    a.stop().await;
    b.stop().await;
}
