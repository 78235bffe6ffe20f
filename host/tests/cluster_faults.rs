//! The cluster on its bad days, with a real etcd and real nodes: ids that must stay
//! unique, keys that cannot be applied, rooms a node has not heard of yet.

mod common;

use common::cluster::{create_outcome, node, node_with};
use common::{Etcd, eventually};
use ludus::client::{Client, ClientOptions};
use ludus::gateway::pb::{ErrorCode, server_frame::Body as Out};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);
const TTL: Duration = Duration::from_secs(10);

async fn guest(server: &ludus::server::Server, name: &str) -> Client {
    Client::guest(server.addr, name, ClientOptions::default())
        .await
        .unwrap()
}

/// The code and message of the next error, or `Ok(room)` for the next `joined`.
async fn answer(c: &mut Client) -> Result<String, (i32, String)> {
    loop {
        let frame = tokio::time::timeout(WAIT, c.recv()).await.unwrap().unwrap();
        match frame.body {
            Some(Out::Joined(j)) => return Ok(j.room_id),
            Some(Out::Error(e)) => return Err((e.code, e.message)),
            _ => {}
        }
    }
}

/// `rooms/<room>` as etcd holds it: (owner, create revision).
async fn room_key(etcd: &Etcd, prefix: &str, room: &str) -> Option<(String, i64)> {
    let resp = etcd
        .client()
        .await
        .get(format!("{prefix}rooms/{room}"), None)
        .await
        .unwrap();
    resp.kvs().first().map(|kv| {
        let entry: serde_json::Value = serde_json::from_slice(kv.value()).unwrap();
        (
            entry["owner"].as_str().unwrap().to_owned(),
            kv.create_revision(),
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_id_in_use_is_refused_everywhere_and_its_claim_is_left_alone() {
    let etcd = Etcd::start().await;
    let prefix = "/ludus/unique/";
    let (a, _da) = node(&etcd, prefix, "a", TTL).await;
    let (b, _db) = node(&etcd, prefix, "b", TTL).await;
    let mut first = guest(&a, "first").await;
    first.create("arena", "dup", "").await.unwrap();
    create_outcome(&mut first).await.unwrap();
    let claim = room_key(&etcd, prefix, "dup").await.expect("the claim");
    assert_eq!(claim.0, "a");

    // A second create on the owner node, then on the other node.
    for (node, name) in [(&a, "second"), (&b, "third")] {
        let mut c = guest(node, name).await;
        c.create("arena", "dup", "").await.unwrap();
        let (code, message) = answer(&mut c).await.unwrap_err();
        assert_eq!(code, ErrorCode::RoomExists as i32, "{message}");
        assert_eq!(room_key(&etcd, prefix, "dup").await, Some(claim.clone()));
    }
    // Still there a sync later, still one room, still playable.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(room_key(&etcd, prefix, "dup").await, Some(claim));
    assert!(b.rooms.get("dup").is_none());
    let mut joiner = guest(&b, "joiner").await;
    joiner.join("dup").await.unwrap();
    assert_eq!(answer(&mut joiner).await, Ok("dup".to_owned()));
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_key_that_cannot_be_written_does_not_hold_up_the_others() {
    let etcd = Etcd::start().await;
    let prefix = "/ludus/skip/";
    let unlimited = |c: &mut ludus::config::Config| c.rooms.max_rooms_per_player = 0;
    let (a, _da) = node_with(&etcd, prefix, "a", TTL, unlimited).await;
    let mut owner = guest(&a, "owner").await;
    for room in ["taken", "fine"] {
        owner.create("arena", room, "").await.unwrap();
        create_outcome(&mut owner).await.unwrap();
    }
    // Something else takes the key of a room a runs, and writes garbage beside it.
    let mut client = etcd.client().await;
    let forged =
        serde_json::json!({"owner": "z", "game": "arena", "version": "", "label": "", "seats": 0});
    client
        .put(format!("{prefix}rooms/taken"), forged.to_string(), None)
        .await
        .unwrap();
    client
        .put(format!("{prefix}rooms/garbage"), "not json", None)
        .await
        .unwrap();
    // a keeps syncing its other rooms: a second player in `fine` shows in etcd.
    let mut second = guest(&a, "second").await;
    second.join("fine").await.unwrap();
    assert_eq!(answer(&mut second).await, Ok("fine".to_owned()));
    eventually(WAIT, "the seats of `fine` reach etcd", async || {
        let resp = etcd
            .client()
            .await
            .get(format!("{prefix}rooms/fine"), None)
            .await
            .unwrap();
        resp.kvs().first().is_some_and(|kv| {
            serde_json::from_slice::<serde_json::Value>(kv.value()).unwrap()["seats"] == 2
        })
    })
    .await;
    // The forged claim is not overwritten by a's sync.
    assert_eq!(room_key(&etcd, prefix, "taken").await.unwrap().0, "z");
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_just_created_on_one_node_is_joinable_on_another_at_once() {
    let etcd = Etcd::start().await;
    let prefix = "/ludus/fresh/";
    let unlimited = |c: &mut ludus::config::Config| c.rooms.max_rooms_per_player = 0;
    let (a, _da) = node_with(&etcd, prefix, "a", TTL, unlimited).await;
    let (b, _db) = node_with(&etcd, prefix, "b", TTL, unlimited).await;
    let mut creator = guest(&a, "creator").await;
    let mut friend = guest(&b, "friend").await;
    for round in 0..5 {
        let room = format!("shared-{round}");
        creator.create("arena", &room, "").await.unwrap();
        create_outcome(&mut creator).await.unwrap();
        // The id goes to the friend at once; b may not have heard of the room yet.
        friend.join(&room).await.unwrap();
        assert_eq!(answer(&mut friend).await, Ok(room.clone()), "round {round}");
    }
    // An id nobody holds is `room_not_found`, after etcd was asked too.
    friend.join("nobody-has-this").await.unwrap();
    let (code, message) = answer(&mut friend).await.unwrap_err();
    assert_eq!(code, ErrorCode::RoomNotFound as i32, "{message}");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_more_keys_than_one_grpc_message_starts_syncs_and_reports() {
    let etcd = Etcd::start().await;
    let prefix = "/ludus/big/";
    // 20,000 rooms of another node, with full labels: about 7 MB, where one gRPC
    // message carries 4 MiB.
    let mut client = etcd.client().await;
    let label = "l".repeat(256);
    let rooms = 20_000;
    for batch in 0..rooms / 100 {
        let puts: Vec<etcd_client::TxnOp> = (0..100)
            .map(|i| {
                let entry = serde_json::json!({
                    "owner": "elsewhere", "game": "arena", "version": "1.0.0",
                    "label": label, "seats": 3,
                });
                let key = format!("{prefix}rooms/far-{:05}", batch * 100 + i);
                etcd_client::TxnOp::put(key, entry.to_string(), None)
            })
            .collect();
        client
            .txn(etcd_client::Txn::new().and_then(puts))
            .await
            .unwrap();
    }
    let (a, _da) = node(&etcd, prefix, "a", TTL).await;
    assert_eq!(
        a.cluster.routing().rooms.len(),
        rooms,
        "every room read at start"
    );
    let mut player = guest(&a, "p").await;
    player.create("arena", "near", "").await.unwrap();
    create_outcome(&mut player).await.unwrap();
    eventually(WAIT, "a's load reaches etcd", async || {
        let resp = etcd
            .client()
            .await
            .get(format!("{prefix}nodes/a"), None)
            .await
            .unwrap();
        resp.kvs().first().is_some_and(|kv| {
            serde_json::from_slice::<serde_json::Value>(kv.value()).unwrap()["rooms"] == 1
        })
    })
    .await;
    let (ok, out, err) =
        common::cluster::ludus(&["status", "--json", "--etcd", &etcd.url, "--prefix", prefix]);
    assert!(ok, "status over a big cluster: {err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(status["nodes"]["a"].is_object(), "{status}");
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_etcd_never_stalls_play_and_a_new_login_is_told_why_within_a_second() {
    let etcd = Etcd::start().await;
    let prefix = "/ludus/hung/";
    let (a, _da) = node(&etcd, prefix, "a", TTL).await;
    let mut player = guest(&a, "player").await;
    player.create("arena", "play", "").await.unwrap();
    create_outcome(&mut player).await.unwrap();

    etcd.signal("STOP");
    // Play goes on: snapshots keep coming at the room's 20 Hz.
    let watch = tokio::spawn(async move {
        let (started, mut last, mut worst) = (
            std::time::Instant::now(),
            std::time::Instant::now(),
            Duration::ZERO,
        );
        while started.elapsed() < Duration::from_secs(4) {
            let frame = tokio::time::timeout(WAIT, player.recv())
                .await
                .unwrap()
                .unwrap();
            if matches!(frame.body, Some(Out::Message(_))) {
                worst = worst.max(last.elapsed());
                last = std::time::Instant::now();
            }
        }
        worst
    });
    // A new login is refused within a second, with a code of its own.
    let (token, _) = ludus::client::guest_login(a.addr, "late").await.unwrap();
    let asked = std::time::Instant::now();
    let url = format!("ws://{}/v1/ws?token={token}", a.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut refused = None;
    let close = loop {
        match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(Message::Binary(b))) => {
                let frame: ludus::gateway::pb::ServerFrame =
                    prost::Message::decode(&b[..]).unwrap();
                if let Some(Out::Error(e)) = frame.body {
                    refused = Some((e.code, e.message));
                }
            }
            Some(Ok(Message::Close(Some(f)))) => break u16::from(f.code),
            other => panic!("expected a refusal, got {other:?}"),
        }
    };
    let waited = asked.elapsed();
    let (code, message) = refused.expect("an error frame before the close");
    assert_eq!(code, ErrorCode::Unavailable as i32, "{message}");
    assert_eq!(close, ludus::gateway::close_code::UNAVAILABLE);
    assert!(
        waited < Duration::from_millis(1800),
        "refused after {waited:?}"
    );
    let worst = watch.await.unwrap();
    assert!(
        worst < Duration::from_millis(500),
        "a snapshot gap of {worst:?}"
    );

    etcd.signal("CONT");
    eventually(WAIT, "logins work again", async || {
        // A connect returns once the welcome came.
        let connect = Client::guest(a.addr, "again", ClientOptions::default());
        matches!(
            tokio::time::timeout(Duration::from_secs(2), connect).await,
            Ok(Ok(_))
        )
    })
    .await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_is_found_out_its_players_told_and_fetches_fail_over() {
    let etcd = Etcd::start().await;
    let prefix = "/ludus/silent/";
    // a's gRPC is reached only through a proxy the test can black-hole.
    let a_grpc: std::net::SocketAddr = format!("127.0.0.1:{}", common::free_port())
        .parse()
        .unwrap();
    let proxy = common::cluster::Proxy::start(a_grpc).await;
    let proxied = proxy.addr.to_string();
    let (a, _da) = node_with(&etcd, prefix, "a", TTL, move |c| {
        c.cluster.grpc_listen = a_grpc;
        c.cluster.grpc_advertise = Some(proxied);
    })
    .await;
    let (b, _db) = node(&etcd, prefix, "b", TTL).await;
    let (c, _dc) = node(&etcd, prefix, "c", TTL).await;
    let mut host = guest(&a, "host").await;
    host.create("arena", "far", "").await.unwrap();
    create_outcome(&mut host).await.unwrap();
    let mut visitor = guest(&b, "visitor").await;
    visitor.join("far").await.unwrap();
    assert_eq!(answer(&mut visitor).await, Ok("far".to_owned()));
    eventually(WAIT, "a counts the visitor's seat", async || {
        a.rooms.get("far").is_some_and(|r| r.info().seats == 2)
    })
    .await;
    // A version only a and c hold, for b to fetch.
    let v2 = ludus::guest_build::example_game_bytes("arena-v2").unwrap();
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&v2));
    for n in [&a, &c] {
        n.cluster
            .hold_module(&sha, std::sync::Arc::new(v2.clone()))
            .await
            .unwrap();
    }
    eventually(WAIT, "b sees both holders", async || {
        b.cluster.module_holders(&sha) == ["a", "c"]
    })
    .await;

    proxy.black_hole();
    let silent = std::time::Instant::now();
    // The visitor is told, within 10 s, that the room is out of reach.
    let told = loop {
        let frame = tokio::time::timeout(Duration::from_secs(12), visitor.recv())
            .await
            .expect("told within 12 s")
            .unwrap();
        match frame.body {
            Some(Out::Closed(c)) if c.room_id == "far" => break c.reason,
            Some(Out::Kicked(k)) if k.room_id == "far" => break k.reason,
            _ => {}
        }
    };
    let detected = silent.elapsed();
    assert!(
        detected < Duration::from_secs(10),
        "told after {detected:?}: {told}"
    );
    assert!(told.contains("node a"), "{told}");
    // And a frees the seat it held for the visitor.
    eventually(WAIT, "a frees the visitor's seat", async || {
        a.rooms.get("far").is_some_and(|r| r.info().seats == 1)
    })
    .await;
    let freed = silent.elapsed();
    assert!(
        freed < Duration::from_secs(10),
        "seat freed after {freed:?}"
    );
    eprintln!("black-holed peer: players told after {detected:?}, seat freed after {freed:?}");

    // A fetch tries a first (silent) and fails over to c within the same bound.
    let fetching = std::time::Instant::now();
    let fetched = b
        .rollout
        .deploy(
            "arena",
            ludus::rollout::Source::Held(sha.clone()),
            ludus::rooms::SwapPolicy::NewRoomsOnly,
        )
        .await;
    let took = fetching.elapsed();
    assert!(fetched.is_ok(), "{fetched:?}");
    assert!(
        took < Duration::from_secs(10),
        "fetch failed over after {took:?}"
    );
    eprintln!("module fetch failed over after {took:?}");
    for n in [a, b, c] {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_after_the_first_deploy_returns_to_what_the_nodes_started_with() {
    let etcd = Etcd::start().await;
    let prefix = "/ludus/firstdeploy/";
    let (a, _da) = node(&etcd, prefix, "a", TTL).await;
    let (b, _db) = node(&etcd, prefix, "b", TTL).await;
    let mut players = Vec::new();
    for (n, room) in [(&a, "on-a"), (&b, "on-b")] {
        let mut c = guest(n, room).await;
        c.create("arena", room, "").await.unwrap();
        create_outcome(&mut c).await.unwrap();
        players.push(c);
    }
    let files = tempfile::tempdir().unwrap();
    let v2 = common::module_file(&files, "arena-v2");
    let target = ["--etcd", etcd.url.as_str(), "--prefix", prefix];
    let ludus = |args: &[&str]| common::cluster::ludus(&[args, &target[..]].concat());
    let (ok, out, err) = ludus(&["deploy", "arena", &v2]);
    assert!(ok, "{out}\n{err}");
    for room in [a.rooms.get("on-a").unwrap(), b.rooms.get("on-b").unwrap()] {
        assert_eq!(room.info().version, "2.0.0");
    }
    let (ok, out, err) = ludus(&["rollback", "arena"]);
    assert!(ok, "a rollback after the first deploy:\n{out}\n{err}");
    assert!(out.contains("1.0.0"), "{out}");
    for (n, room) in [(&a, "on-a"), (&b, "on-b")] {
        eventually(WAIT, "every room back on 1.0.0", async || {
            n.rooms
                .get(room)
                .is_some_and(|r| r.info().version == "1.0.0")
                && n.rooms
                    .active_module("arena")
                    .is_some_and(|m| m.version == "1.0.0")
        })
        .await;
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_first_connections_racing_on_two_nodes_end_with_exactly_one_session() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let etcd = Etcd::start().await;
    let prefix = "/ludus/fence/";
    let (a, _da) = node(&etcd, prefix, "a", TTL).await;
    let (b, _db) = node(&etcd, prefix, "b", TTL).await;
    for round in 0..10 {
        // One player, one token (both nodes share the signing key), two nodes at once.
        let (token, player) = ludus::client::guest_login(a.addr, &format!("racer-{round}"))
            .await
            .unwrap();
        let url = |n: &ludus::server::Server| format!("ws://{}/v1/ws?token={token}", n.addr);
        let (on_a, on_b) = tokio::join!(
            tokio_tungstenite::connect_async(url(&a)),
            tokio_tungstenite::connect_async(url(&b))
        );
        let mut sockets = [on_a.unwrap().0, on_b.unwrap().0];
        // Each socket either stays open or is closed with a reason; give it time.
        let mut open = Vec::new();
        for (i, ws) in sockets.iter_mut().enumerate() {
            let closed = tokio::time::timeout(Duration::from_millis(1500), async {
                loop {
                    match ws.next().await {
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return true,
                        Some(Ok(_)) => continue,
                    }
                }
            })
            .await
            .unwrap_or(false);
            if !closed {
                open.push(["a", "b"][i]);
            }
        }
        assert_eq!(open.len(), 1, "round {round}: open on {open:?}");
        let resp = etcd
            .client()
            .await
            .get(format!("{prefix}sessions/{player}"), None)
            .await
            .unwrap();
        let holder = String::from_utf8_lossy(resp.kvs()[0].value()).into_owned();
        assert_eq!(holder, open[0], "round {round}: etcd names the open one");
        eventually(WAIT, "one session between the nodes", async || {
            a.gateway.sessions() + b.gateway.sessions() == round + 1
        })
        .await;
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_back_from_losing_its_lease_does_not_take_back_a_session_taken_meanwhile() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let etcd = Etcd::start().await;
    let prefix = "/ludus/comeback/";
    let ttl = Duration::from_secs(2);
    // a reaches etcd only through a proxy the test can black-hole.
    let etcd_addr: std::net::SocketAddr = etcd.url.trim_start_matches("http://").parse().unwrap();
    let proxy = common::cluster::Proxy::start(etcd_addr).await;
    let via = format!("http://{}", proxy.addr);
    let (a, _da) = node_with(&etcd, prefix, "a", ttl, move |c| c.cluster.etcd = vec![via]).await;
    let (b, _db) = node(&etcd, prefix, "b", ttl).await;
    let (token, player) = ludus::client::guest_login(a.addr, "wanderer")
        .await
        .unwrap();
    let (mut on_a, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/v1/ws?token={token}", a.addr))
            .await
            .unwrap();
    on_a.next().await.unwrap().unwrap(); // welcome

    proxy.black_hole();
    let key = format!("{prefix}sessions/{player}");
    eventually(WAIT, "a's lease runs out in etcd", async || {
        etcd.client()
            .await
            .get(key.as_str(), None)
            .await
            .unwrap()
            .kvs()
            .is_empty()
    })
    .await;
    // Meanwhile the player logs in on b.
    let (mut on_b, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/v1/ws?token={token}", b.addr))
            .await
            .unwrap();
    on_b.next().await.unwrap().unwrap(); // welcome
    proxy.restore();
    // a comes back: it leaves b's session alone and ends its own.
    let code = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match on_a.next().await {
                Some(Ok(Message::Close(Some(f)))) => return u16::from(f.code),
                Some(Ok(_)) => continue,
                other => panic!("expected a's session to end, got {other:?}"),
            }
        }
    })
    .await
    .expect("a's session ends within 20 s");
    assert_eq!(code, ludus::gateway::close_code::REPLACED);
    eventually(WAIT, "a is registered again", async || {
        !etcd.keys(&format!("{prefix}nodes/a")).await.is_empty()
    })
    .await;
    let resp = etcd.client().await.get(key.as_str(), None).await.unwrap();
    assert_eq!(resp.kvs()[0].value(), b"b", "the session stays b's");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_cluster_events_loses_no_session_takeover() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let etcd = Etcd::start().await;
    let prefix = "/ludus/flood/";
    let (a, _da) = node(&etcd, prefix, "a", TTL).await;
    let (token, player) = ludus::client::guest_login(a.addr, "flooded").await.unwrap();
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/v1/ws?token={token}", a.addr))
            .await
            .unwrap();
    ws.next().await.unwrap().unwrap(); // welcome
    let mut client = etcd.client().await;
    for batch in 0..30 {
        let puts: Vec<etcd_client::TxnOp> = (0..100)
            .map(|i| {
                let key = format!("{prefix}nodes/fake-{:04}", batch * 100 + i);
                let node =
                    serde_json::json!({"id": "fake", "gateway": "", "rooms": 0, "players": 0});
                etcd_client::TxnOp::put(key, node.to_string(), None)
            })
            .collect();
        client
            .txn(etcd_client::Txn::new().and_then(puts))
            .await
            .unwrap();
    }
    // One revision: the player's session moves to node b, then 3,000 nodes leave. The
    // node's local event queue (1,024) overflows; the takeover must not be lost.
    let burst = etcd_client::Txn::new().and_then([
        etcd_client::TxnOp::put(format!("{prefix}sessions/{player}"), "b", None),
        etcd_client::TxnOp::delete(
            format!("{prefix}nodes/fake-"),
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        ),
    ]);
    client.txn(burst).await.unwrap();
    let code = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(Some(f)))) => return u16::from(f.code),
                Some(Ok(_)) => continue,
                other => panic!("expected the session to end, got {other:?}"),
            }
        }
    })
    .await
    .expect("the session ends within 10 s");
    assert_eq!(code, ludus::gateway::close_code::REPLACED);
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_seconds_without_etcd_are_survived() {
    let mut etcd = Etcd::start().await;
    let prefix = "/ludus/outage/";
    let (a, _da) = node(&etcd, prefix, "a", TTL).await;
    let (b, _db) = node(&etcd, prefix, "b", TTL).await;
    let mut players = Vec::new();
    for (n, room) in [(&a, "stays-a"), (&b, "stays-b")] {
        let mut c = guest(n, room).await;
        c.create("arena", room, "").await.unwrap();
        create_outcome(&mut c).await.unwrap();
        players.push(c);
    }

    etcd.kill();
    let down = std::time::Instant::now();
    // Rooms keep playing for the whole outage.
    let watchers: Vec<_> = players
        .into_iter()
        .map(|mut p| {
            tokio::spawn(async move {
                let mut worst = Duration::ZERO;
                let mut last = std::time::Instant::now();
                while down.elapsed() < Duration::from_secs(30) {
                    let frame = tokio::time::timeout(WAIT, p.recv()).await.unwrap().unwrap();
                    if matches!(frame.body, Some(Out::Message(_))) {
                        worst = worst.max(last.elapsed());
                        last = std::time::Instant::now();
                    }
                }
                (worst, p)
            })
        })
        .collect();
    // What cannot be recorded is refused, clearly and quickly.
    tokio::time::sleep(Duration::from_secs(12)).await; // past the lease TTL
    let (token, _) = ludus::client::guest_login(a.addr, "newcomer")
        .await
        .unwrap();
    let asked = std::time::Instant::now();
    let refused = Client::connect(
        a.addr,
        &token,
        ClientOptions {
            max_attempts: 1,
            ..ClientOptions::default()
        },
    )
    .await;
    assert!(refused.is_err(), "a new session while etcd is gone");
    assert!(asked.elapsed() < Duration::from_secs(3));
    let mut players = Vec::new();
    for w in watchers {
        let (worst, p) = w.await.unwrap();
        assert!(
            worst < Duration::from_millis(500),
            "a snapshot gap of {worst:?}"
        );
        players.push(p);
    }

    etcd.run().await;
    for (node, room) in [("a", "stays-a"), ("b", "stays-b")] {
        eventually(
            Duration::from_secs(20),
            "the node and its room are back",
            async || {
                !etcd.keys(&format!("{prefix}nodes/{node}")).await.is_empty()
                    && !etcd.keys(&format!("{prefix}rooms/{room}")).await.is_empty()
            },
        )
        .await;
    }
    eventually(
        WAIT,
        "ludus status shows each node with its room",
        async || {
            let (ok, out, _) = common::cluster::ludus(&[
                "status", "--json", "--etcd", &etcd.url, "--prefix", prefix,
            ]);
            let status: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
            ok && ["a", "b"]
                .iter()
                .all(|n| status["nodes"][n]["rooms"] == 1 && status["nodes"][n]["players"] == 1)
        },
    )
    .await;
    // And new sessions are taken again.
    eventually(WAIT, "logins work again", async || {
        let connect = Client::guest(a.addr, "after", ClientOptions::default());
        matches!(
            tokio::time::timeout(Duration::from_secs(2), connect).await,
            Ok(Ok(_))
        )
    })
    .await;
    drop(players);
    a.stop().await;
    b.stop().await;
}
