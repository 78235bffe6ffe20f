//! Real WebSocket clients against a real node on 127.0.0.1.

mod common;

use common::{Proc, module_file, replace_file, serve};
use futures_util::{SinkExt, StreamExt};
use ludus::client::{Client, ClientOptions};
use ludus::gateway::frames::Mode;
use ludus::gateway::pb::{ErrorCode, ServerFrame, server_frame::Body as Out};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

fn opts(mode: Mode) -> ClientOptions {
    ClientOptions {
        mode,
        backoff_initial: Duration::from_millis(50),
        ..ClientOptions::default()
    }
}

/// A new guest's bare WebSocket in JSON text mode (no client library in between).
async fn raw_json_socket(
    addr: SocketAddr,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let (token, _) = ludus::client::guest_login(addr, "raw").await.unwrap();
    let url = format!("ws://{addr}/v1/ws?token={token}&format=json");
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

/// The next frame matching `pred`, failing after `WAIT`.
async fn until(client: &mut Client, mut pred: impl FnMut(&ServerFrame) -> bool) -> ServerFrame {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = tokio::time::timeout(left, client.recv())
            .await
            .expect("no matching frame in time")
            .expect("connection failed");
        if pred(&frame) {
            return frame;
        }
    }
}

fn snapshot(frame: &ServerFrame) -> Option<Value> {
    match &frame.body {
        Some(Out::Message(m)) => serde_json::from_slice::<Value>(&m.payload)
            .ok()
            .filter(|v| v.get("tick").is_some()),
        _ => None,
    }
}

fn me(snap: &Value, id: u64) -> Option<&Value> {
    snap["players"].as_array()?.iter().find(|p| p["id"] == id)
}

async fn joined_arena(addr: SocketAddr, mode: Mode, room: &str) -> Client {
    let mut c = Client::guest(addr, "tester", opts(mode))
        .await
        .expect("login + connect");
    c.create("arena", room, "").await.unwrap();
    let frame = until(&mut c, |f| {
        matches!(f.body, Some(Out::Joined(_)) | Some(Out::Error(_)))
    })
    .await;
    if let Some(Out::Error(e)) = &frame.body {
        assert_eq!(e.code, ErrorCode::RoomExists as i32, "{e:?}");
        c.join(room).await.unwrap();
        until(&mut c, |f| matches!(f.body, Some(Out::Joined(_)))).await;
    }
    c
}

fn input(seq: u64, dx: i64, dy: i64) -> Vec<u8> {
    serde_json::to_vec(&json!({ "seq": seq, "dx": dx, "dy": dy })).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_join_move_and_see_snapshots_in_binary_and_json_modes() {
    let (server, _dir) = serve(&["arena"], |_| {}).await;
    for (mode, room) in [(Mode::Binary, "bin"), (Mode::Json, "json")] {
        let mut c = joined_arena(server.addr, mode, room).await;
        let id = c.player_id;
        c.message(room, input(1, 7, -3)).await.unwrap();
        let snap = until(&mut c, |f| {
            snapshot(f).is_some_and(|s| me(&s, id).is_some_and(|p| p["seq"] == 1))
        })
        .await;
        let snap = snapshot(&snap).unwrap();
        assert_eq!(
            (
                me(&snap, id).unwrap()["x"].as_i64(),
                me(&snap, id).unwrap()["y"].as_i64()
            ),
            (Some(507), Some(497))
        );
    }
    let (token, _) = ludus::client::guest_login(server.addr, "lister")
        .await
        .unwrap();
    let rooms: Value = reqwest::get(format!("{}/v1/rooms?token={token}", server.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rooms.as_array().unwrap().len(), 2, "{rooms}");
    assert!(
        rooms
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["game"] == "arena" && r["seats"] == 1),
        "{rooms}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_text_frames_embed_the_game_payload_as_json() {
    let (server, _dir) = serve(&["arena"], |_| {}).await;
    let mut ws = raw_json_socket(server.addr).await;
    let welcome: Value = match ws.next().await.unwrap().unwrap() {
        Message::Text(t) => serde_json::from_str(&t).unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(welcome["seq"], 1);
    assert!(
        welcome["body"]["welcome"]["resume_token"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "{welcome}"
    );
    let create = json!({ "seq": 1, "body": { "create": { "game": "arena", "room_id": "text" } } });
    ws.send(Message::Text(create.to_string().into()))
        .await
        .unwrap();
    let mv = json!({ "seq": 2, "body": { "message": { "room_id": "text", "payload": { "seq": 1, "dx": 2, "dy": 2 } } } });
    ws.send(Message::Text(mv.to_string().into())).await.unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "no snapshot with the move");
        let Message::Text(t) = ws.next().await.unwrap().unwrap() else {
            continue;
        };
        let frame: Value = serde_json::from_str(&t).unwrap();
        let payload = &frame["body"]["message"]["payload"];
        if payload["players"][0]["seq"] == 1 {
            assert_eq!(
                payload["players"][0]["x"], 502,
                "payload is embedded JSON: {frame}"
            );
            break;
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewriting_the_module_file_swaps_live_under_eight_players() {
    let (server, dir) = serve(&["arena"], |_| {}).await;
    let mut clients = Vec::new();
    for i in 0..8 {
        let mode = if i % 2 == 0 { Mode::Binary } else { Mode::Json };
        clients.push(joined_arena(server.addr, mode, "live").await);
    }
    for (i, c) in clients.iter_mut().enumerate() {
        c.message("live", input(1, i as i64 + 1, 1)).await.unwrap();
    }
    let ids: Vec<u64> = clients.iter().map(|c| c.player_id).collect();
    let before = until(&mut clients[0], |f| {
        snapshot(f).is_some_and(|s| {
            ids.iter()
                .all(|id| me(&s, *id).is_some_and(|p| p["seq"] == 1))
        })
    })
    .await;
    let before = snapshot(&before).unwrap();

    let v2 = ludus::guest_build::example_game_bytes("arena-v2").unwrap();
    replace_file(&dir.path().join("arena.wasm"), &v2);

    for c in &mut clients {
        let after = until(c, |f| snapshot(f).is_some_and(|s| s["rules"] == 2)).await;
        let after = snapshot(&after).unwrap();
        for id in &ids {
            let (b, a) = (me(&before, *id).unwrap(), me(&after, *id).unwrap());
            assert_eq!((&a["x"], &a["y"], &a["seq"]), (&b["x"], &b["y"], &b["seq"]));
        }
    }
    // The new rule: steps of 20.
    let first = ids[0];
    clients[0].message("live", input(2, 20, 0)).await.unwrap();
    let moved = until(&mut clients[0], |f| {
        snapshot(f).is_some_and(|s| me(&s, first).is_some_and(|p| p["seq"] == 2))
    })
    .await;
    let x0 = me(&before, first).unwrap()["x"].as_i64().unwrap();
    assert_eq!(
        me(&snapshot(&moved).unwrap(), first).unwrap()["x"].as_i64(),
        Some(x0 + 20)
    );

    assert_eq!(
        server.gateway.connections(),
        8,
        "no client was disconnected"
    );
    let games: Value = reqwest::get(format!("{}/v1/games", server.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(games[0]["version"], "2.0.0", "{games}");
    assert!(
        games[0]["last_swap"]
            .as_str()
            .unwrap()
            .contains("1 rooms swapped, 0 failed"),
        "{games}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_module_file_leaves_the_old_version_running_and_is_reported() {
    let (server, dir) = serve(&["arena"], |_| {}).await;
    let mut c = joined_arena(server.addr, Mode::Binary, "r").await;
    replace_file(
        &dir.path().join("arena.wasm"),
        b"\0asm this is not a module",
    );
    let deadline = Instant::now() + WAIT;
    let games = loop {
        let games: Value = reqwest::get(format!("{}/v1/games", server.url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if games[0]["last_error"].is_string() {
            break games;
        }
        assert!(Instant::now() < deadline, "no error reported: {games}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        games[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("refused, the running version stays"),
        "{games}"
    );
    assert_eq!(games[0]["version"], "1.0.0");
    let id = c.player_id;
    c.message("r", input(1, 1, 1)).await.unwrap();
    let snap = until(&mut c, |f| {
        snapshot(f).is_some_and(|s| me(&s, id).is_some_and(|p| p["seq"] == 1))
    })
    .await;
    assert_eq!(snapshot(&snap).unwrap()["rules"], 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_a_dropped_connection_replays_every_missed_frame_exactly_once() {
    let (server, _dir) = serve(&["arena"], |_| {}).await;
    let mut c = joined_arena(server.addr, Mode::Binary, "resume").await;
    let mut seen = Vec::new();
    for _ in 0..10 {
        seen.push(c.recv().await.unwrap().seq);
    }
    let before_drop = c.last_seen();
    c.drop_connection();
    // Frames keep coming while nobody is connected; send an input meanwhile too.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let id = c.player_id;
    c.message("resume", input(1, 3, 3)).await.unwrap(); // reconnects and resumes
    let mut after = Vec::new();
    let frame = loop {
        let f = c.recv().await.unwrap();
        after.push(f.seq);
        if snapshot(&f).is_some_and(|s| me(&s, id).is_some_and(|p| p["seq"] == 1)) {
            break f;
        }
    };
    assert!(
        after.len() >= 5,
        "the ~8 snapshots sent while dropped were replayed: {after:?}"
    );
    assert_eq!(
        after[0],
        before_drop + 1,
        "replay starts right after the last frame seen"
    );
    assert!(
        after.windows(2).all(|w| w[1] == w[0] + 1),
        "no frame lost or doubled: {after:?}"
    );
    assert_eq!(
        me(&snapshot(&frame).unwrap(), id).unwrap()["x"],
        503,
        "the input was applied once"
    );
    assert_eq!(server.gateway.sessions(), 1, "the same session carried on");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_replaces_the_first_with_a_reason() {
    let (server, _dir) = serve(&["arena"], |_| {}).await;
    let (token, _) = ludus::client::guest_login(server.addr, "twice")
        .await
        .unwrap();
    let mut first = Client::connect(server.addr, &token, opts(Mode::Binary))
        .await
        .unwrap();
    let _second = Client::connect(server.addr, &token, opts(Mode::Binary))
        .await
        .unwrap();
    let err = tokio::time::timeout(WAIT, first.recv())
        .await
        .unwrap()
        .unwrap_err();
    let closed = err
        .downcast_ref::<ludus::client::Closed>()
        .expect("closed by the server");
    assert_eq!(closed.code, ludus::gateway::close_code::REPLACED);
    assert!(
        closed.reason.contains("another connection took over"),
        "{closed}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_forged_and_missing_tokens_are_refused() {
    let (server, _dir) = serve(&["arena"], |_| {}).await;
    let expired = server.gateway.auth().sign_for_test("42", 1_000);
    let (good, _) = ludus::client::guest_login(server.addr, "x").await.unwrap();
    let mut parts: Vec<&str> = good.split('.').collect();
    let forged_claims =
        "eyJzdWIiOiIxIiwiaXNzIjoibHVkdXMiLCJhdWQiOiJsdWR1cyIsImV4cCI6OTk5OTk5OTk5OX0";
    parts[1] = forged_claims;
    let forged = parts.join(".");
    for (token, why) in [
        (expired.as_str(), "ExpiredSignature"),
        (forged.as_str(), "InvalidSignature"),
        ("nonsense", "invalid token"),
    ] {
        let url = format!("ws://{}/v1/ws?token={token}", server.addr);
        match tokio_tungstenite::connect_async(url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 401);
                let body =
                    String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).to_string();
                assert!(body.contains(why), "{why}: {body}");
            }
            other => panic!("{why}: expected 401, got {other:?}"),
        }
    }
    let url = format!("ws://{}/v1/ws", server.addr);
    assert!(tokio_tungstenite::connect_async(url).await.is_err());
    server.stop().await;
}

/// Decodes a raw WebSocket message as a server frame, in either mode.
fn server_frame(
    msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
) -> ServerFrame {
    match msg {
        Some(Ok(Message::Binary(b))) => {
            prost::Message::decode(&b[..]).expect("a Protobuf ServerFrame")
        }
        Some(Ok(Message::Text(t))) => serde_json::from_str(&t).expect("a JSON ServerFrame"),
        other => panic!("expected a server frame, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_flooding_input_is_answered_while_others_keep_playing() {
    let (server, _dir) = serve(&["arena"], |c| {
        c.gateway.max_frame_bytes = 1024;
        c.gateway.max_messages_per_second = 50;
        c.gateway.max_strikes = 30;
    })
    .await;
    let mut bystander = joined_arena(server.addr, Mode::Binary, "shared").await;
    let (token, _) = ludus::client::guest_login(server.addr, "abuser")
        .await
        .unwrap();
    let url = format!("ws://{}/v1/ws?token={token}", server.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws.next().await.unwrap().unwrap(); // welcome

    // Errors come back in the mode of the frame they answer.
    let error = async |ws: &mut tokio_tungstenite::WebSocketStream<_>| -> (i32, String) {
        loop {
            if let Some(Out::Error(e)) = server_frame(ws.next().await).body {
                return (e.code, e.message);
            }
        }
    };
    ws.send(Message::Binary(vec![0xff, 0x01, 0x02].into()))
        .await
        .unwrap();
    let (code, msg) = error(&mut ws).await;
    assert_eq!(code, ErrorCode::Malformed as i32, "{msg}");
    ws.send(Message::Text("{\"seq\": \"one\"}".into()))
        .await
        .unwrap();
    let (code, msg) = error(&mut ws).await;
    assert_eq!(code, ErrorCode::Malformed as i32, "{msg}");

    // Flooding: rate-limited errors, then the connection is closed with 1008.
    for _ in 0..200 {
        if ws.send(Message::Text("{}".into())).await.is_err() {
            break;
        }
    }
    let mut rate_limited = 0;
    let close_code = loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("server answered the flood")
        {
            Some(Ok(Message::Close(Some(frame)))) => break u16::from(frame.code),
            m @ Some(Ok(Message::Text(_) | Message::Binary(_))) => {
                if let Some(Out::Error(e)) = server_frame(m).body {
                    rate_limited += usize::from(e.code == ErrorCode::RateLimited as i32);
                }
            }
            Some(Ok(_)) => {}
            other => panic!("expected a close, got {other:?}"),
        }
    };
    assert!(rate_limited > 0);
    assert_eq!(close_code, 1008);

    // The bystander kept playing throughout.
    let id = bystander.player_id;
    bystander.message("shared", input(1, 4, 0)).await.unwrap();
    until(&mut bystander, |f| {
        snapshot(f).is_some_and(|s| me(&s, id).is_some_and(|p| p["x"] == 504))
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_game_learns_of_a_drop_only_when_the_grace_period_ends() {
    let (server, _dir) = serve(&["arena"], |c| {
        c.gateway.grace_period = Duration::from_millis(600)
    })
    .await;
    let mut watcher = joined_arena(server.addr, Mode::Binary, "grace").await;
    let mut leaver = joined_arena(server.addr, Mode::Binary, "grace").await;
    let gone = leaver.player_id;
    leaver.drop_connection();
    let dropped_at = Instant::now();
    until(&mut watcher, |f| {
        snapshot(f).is_some_and(|s| me(&s, gone).is_none())
    })
    .await;
    assert!(
        dropped_at.elapsed() >= Duration::from_millis(550),
        "left after {:?}",
        dropped_at.elapsed()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_a_configured_external_issuer_are_accepted_in_the_subprotocol_header() {
    let (server, _dir) = serve(&["arena"], |c| {
        c.auth.external.push(ludus::gateway::auth::ExternalIssuer {
            issuer: "https://id.example".into(),
            audience: "my-game".into(),
            algorithm: "HS256".into(),
            secret: Some("the identity provider's shared secret".into()),
            public_key_pem: None,
        });
    })
    .await;
    let sign = |aud: &str| {
        let claims = json!({ "sub": "user-7", "name": "Ada", "iss": "https://id.example", "aud": aud, "exp": 4_000_000_000u64 });
        let key = jsonwebtoken::EncodingKey::from_secret(b"the identity provider's shared secret");
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
    };
    let connect = |token: String| {
        let mut req =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                format!("ws://{}/v1/ws", server.addr),
            )
            .unwrap();
        req.headers_mut().insert(
            "sec-websocket-protocol",
            format!("ludus, {token}").parse().unwrap(),
        );
        tokio_tungstenite::connect_async(req)
    };
    let (mut ws, resp) = connect(sign("my-game"))
        .await
        .expect("an external token is accepted");
    assert_eq!(resp.headers()["sec-websocket-protocol"], "ludus");
    let welcome = server_frame(ws.next().await);
    assert!(matches!(welcome.body, Some(Out::Welcome(w)) if w.player_id > 0));
    match connect(sign("another-game")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("a token for another audience must be refused, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_normal_close_ends_the_session_at_once() {
    let (server, _dir) = serve(&["arena"], |_| {}).await; // grace period 30 s
    let mut watcher = joined_arena(server.addr, Mode::Binary, "bye").await;
    let leaver = joined_arena(server.addr, Mode::Binary, "bye").await;
    let gone = leaver.player_id;
    leaver.close().await;
    let started = Instant::now();
    until(&mut watcher, |f| {
        snapshot(f).is_some_and(|s| me(&s, gone).is_none())
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "left without waiting out the grace period"
    );
    assert_eq!(server.gateway.sessions(), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_server_shutdown_tells_each_player_why_with_code_1001() {
    let (server, _dir) = serve(&["arena"], |_| {}).await;
    let mut ws = raw_json_socket(server.addr).await;
    assert!(matches!(ws.next().await, Some(Ok(Message::Text(_)))));
    let create = json!({ "seq": 1, "body": { "create": { "game": "arena", "room_id": "down" } } });
    ws.send(Message::Text(create.to_string().into()))
        .await
        .unwrap();
    let stopping = tokio::spawn(server.stop());
    let close = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => break frame,
                Some(Ok(_)) => continue,
                other => panic!("the socket ended without a close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("a close frame within the wait");
    let close = close.expect("a close frame with a code");
    assert_eq!(u16::from(close.code), 1001);
    assert_eq!(close.reason.as_str(), "the server is shutting down");
    tokio::time::timeout(WAIT, stopping)
        .await
        .expect("the server stops")
        .unwrap();
}

/// `ludus serve` as an operator runs it: SIGTERM (what Kubernetes and systemd send) and
/// Ctrl-C (SIGINT) each close every WebSocket with 1001 and the process exits 0 within
/// 5 s, with a room open and a player in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ludus_serve_closes_sockets_with_1001_and_exits_0_on_sigterm_or_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let module = module_file(&dir, "arena");
    for signal in ["TERM", "INT"] {
        let port = common::free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut node = Proc::new(
            std::process::Command::new(env!("CARGO_BIN_EXE_ludus"))
                .args(["serve", "--listen", &addr.to_string()])
                .args(["--admin", "127.0.0.1:0"])
                .arg("--data-dir")
                .arg(dir.path().join(format!("data-{signal}")))
                .arg("--game")
                .arg(format!("arena={module}"))
                .env(
                    "LUDUS_AUTH__SECRET",
                    "a test secret of enough length: 32 bytes or more",
                )
                .env("LUDUS_LOG", "warn")
                // What Kubernetes sets for a Service named ludus: not settings.
                .env("LUDUS_PORT", "tcp://10.0.0.1:7350")
                .env("LUDUS_SERVICE_HOST", "10.0.0.1")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("starting ludus serve"),
        );
        common::node_answers(addr, WAIT).await;
        let mut ws = raw_json_socket(addr).await;
        assert!(matches!(ws.next().await, Some(Ok(Message::Text(_)))));
        let create =
            json!({ "seq": 1, "body": { "create": { "game": "arena", "room_id": "stays" } } });
        ws.send(Message::Text(create.to_string().into()))
            .await
            .unwrap();
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) if t.contains("joined") => break,
                Some(Ok(_)) => continue,
                other => panic!("no joined frame: {other:?}"),
            }
        }
        let signalled = Instant::now();
        node.signal(signal);
        let close = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Close(frame))) => break frame,
                    Some(Ok(_)) => continue,
                    other => panic!("SIG{signal}: the socket ended without a close: {other:?}"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("SIG{signal}: no close frame within 5 s"))
        .expect("a close frame with a code");
        assert_eq!(u16::from(close.code), 1001, "SIG{signal}");
        let left = Duration::from_secs(5).saturating_sub(signalled.elapsed());
        let status = node
            .exited_within(left)
            .await
            .unwrap_or_else(|| panic!("SIG{signal}: still running 5 s after the signal"));
        assert!(status.success(), "SIG{signal}: exit status {status}");
    }
}

/// A short `ludus bench arena` run of `clients` in rooms of 8 against `server`; where the
/// server's figures come from is left to the test.
fn arena_bench(
    server: &ludus::server::Server,
    clients: usize,
    label: &str,
) -> ludus::bench::arena::ArenaBench {
    ludus::bench::arena::ArenaBench {
        target: server.addr,
        clients,
        workload: ludus::bench::Workload {
            room_size: 8,
            input_hz: 20,
            tick_hz: 20,
        },
        warmup: Duration::from_millis(300),
        duration: Duration::from_secs(1),
        join_concurrency: 8,
        join_timeout: Duration::from_secs(60),
        server_pid: None,
        server_metrics: None,
        find_max: false,
        p99_bound: Duration::from_millis(100),
        step: 1000,
        swap: None,
        swap_with: None,
        rooms_on: None,
        label: label.into(),
    }
}

/// `ludus bench arena` against a real node: every client joins, plays and measures; the
/// join phase ends as soon as every client has joined (not at its timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_arena_benchmark_joins_plays_and_reports() {
    let (server, _dir) = serve(&["arena"], |_| {}).await;
    let args = ludus::bench::arena::ArenaBench {
        server_pid: Some(std::process::id()),
        ..arena_bench(&server, 20, "test")
    };
    let started = Instant::now();
    let reports = ludus::bench::arena::run(args).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    let r = &reports[0];
    assert_eq!(
        (r.joined, r.join_errors, r.disconnects),
        (20, 0, 0),
        "{r:?}"
    );
    assert!(r.inputs_sent >= 20, "{r:?}");
    // 20 clients, 20 snapshots per second each, over about a second.
    assert!(
        r.latency_samples > 100 && r.snapshots_per_sec > 100.0,
        "{r:?}"
    );
    assert!(
        r.latency_p50_ms > 0.0 && r.latency_p50_ms <= r.latency_p99_ms,
        "{r:?}"
    );
    assert!(r.latency_p99_ms <= r.latency_max_ms, "{r:?}");
    assert!(r.server_rss_mib.is_some_and(|m| m > 0.0), "{r:?}");
    server.stop().await;
}

/// `ludus bench arena --server-metrics`: the node's CPU time and memory read from its
/// admin port's `/metrics`, as for a node on another machine (this one is in-process,
/// so its figures are this test process's own, which /proc gives as well).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_arena_benchmark_reads_a_nodes_cpu_and_memory_from_its_metrics() {
    let (server, _dir) = serve(&["arena"], |_| {}).await;
    let args = ludus::bench::arena::ArenaBench {
        server_metrics: Some(format!("http://{}/metrics", server.admin_addr)),
        ..arena_bench(&server, 8, "metrics")
    };
    let reports = ludus::bench::arena::run(args.clone()).await.unwrap();
    let r = &reports[0];
    assert_eq!((r.joined, r.disconnects), (8, 0), "{r:?}");
    // The node plays 8 clients for a second: some CPU, and tens of MiB resident at least.
    let cpu = r.server_cpu_pct.expect("the server's CPU was measured");
    assert!(cpu > 0.0, "{r:?}");
    let rss = r.server_rss_mib.expect("the server's memory was measured");
    let own = ludus::procstat::rss_bytes("self").unwrap() as f64 / 1048576.0;
    assert!(
        rss > 1.0 && rss <= own * 2.0,
        "{rss} MiB against {own} MiB here: {r:?}"
    );

    // An endpoint that is not a Ludus node's metrics is refused with a clear error.
    let wrong = ludus::bench::arena::ArenaBench {
        server_metrics: Some(format!("http://{}/healthz", server.admin_addr)),
        ..args
    };
    let err = ludus::bench::arena::run(wrong).await.unwrap_err();
    assert!(
        format!("{err:#}").contains("has no ludus_process_cpu_seconds"),
        "{err:#}"
    );
    server.stop().await;
}
