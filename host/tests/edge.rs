//! The public edge against a stranger: connection caps from accept, slow headers,
//! guest login limits, oversize and broken frames, idle sockets, and the names clients
//! see. Real nodes on 127.0.0.1, real WebSocket clients and raw TCP.

mod common;

use common::serve;
use futures_util::{SinkExt, StreamExt};
use ludus::gateway::close_code;
use ludus::gateway::pb::{ErrorCode, ServerFrame, server_frame::Body as Out};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

async fn socket(addr: SocketAddr, json: bool) -> Ws {
    let (token, _) = ludus::client::guest_login(addr, "edge").await.unwrap();
    let format = if json { "&format=json" } else { "" };
    let url = format!("ws://{addr}/v1/ws?token={token}{format}");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws.next().await.unwrap().unwrap(); // welcome
    ws
}

/// Reads until the server's close frame; returns its code and every data message
/// before it. A TCP reset or end of stream before the close fails the test.
async fn until_close(ws: &mut Ws) -> (u16, Vec<Message>) {
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => return (u16::from(frame.code), seen),
            Ok(Some(Ok(m @ (Message::Text(_) | Message::Binary(_))))) => seen.push(m),
            Ok(Some(Ok(_))) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

fn decode(m: &Message) -> ServerFrame {
    match m {
        Message::Binary(b) => prost::Message::decode(&b[..]).unwrap(),
        Message::Text(t) => serde_json::from_str(t).unwrap(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_the_limit_is_named_frame_too_large_then_closed_with_1009() {
    let (server, _dir) = serve(&["arena"], |c| c.gateway.max_frame_bytes = 1024).await;
    for json in [false, true] {
        let mut ws = socket(server.addr, json).await;
        // Well past the limit, as one frame: the server must not buffer it to look.
        let big = if json {
            Message::Text("x".repeat(64 * 1024).into())
        } else {
            Message::Binary(vec![7u8; 64 * 1024].into())
        };
        ws.send(big).await.unwrap();
        let (code, before) = until_close(&mut ws).await;
        assert_eq!(code, close_code::MESSAGE_TOO_BIG, "json: {json}");
        let error = before
            .iter()
            .find_map(|m| match decode(m).body {
                Some(Out::Error(e)) => Some((e.code, e.message, m.clone())),
                _ => None,
            })
            .expect("an error frame before the close");
        assert_eq!(error.0, ErrorCode::FrameTooLarge as i32, "{}", error.1);
        assert!(error.1.contains("1024"), "{}", error.1);
        if let Message::Text(text) = &error.2 {
            assert!(text.contains(r#""code":"frame_too_large""#), "{text}");
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_websocket_framing_is_closed_with_1002() {
    let (server, _dir) = serve(&["arena"], |_| {}).await;
    let mut ws = socket(server.addr, false).await;
    // A client frame without a mask breaks RFC 6455: an unmasked binary frame of 3 bytes.
    let tcp = match ws.get_mut() {
        tokio_tungstenite::MaybeTlsStream::Plain(tcp) => tcp,
        _ => unreachable!(),
    };
    tcp.write_all(&[0x82, 0x03, 1, 2, 3]).await.unwrap();
    let (code, _) = until_close(&mut ws).await;
    assert_eq!(code, close_code::PROTOCOL_ERROR);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_gets_its_1008_close_even_while_the_client_keeps_sending() {
    let (server, _dir) = serve(&["arena"], |c| {
        c.gateway.max_messages_per_second = 10;
        c.gateway.max_strikes = 5;
    })
    .await;
    let ws = socket(server.addr, true).await;
    let (mut tx, mut rx) = ws.split();
    // The client never stops sending: the server must still get its close across
    // (reading and discarding) rather than reset the connection.
    let flood = tokio::spawn(async move {
        while tx.send(Message::Text("{}".into())).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let code = loop {
        match tokio::time::timeout(WAIT, rx.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => break u16::from(frame.code),
            Ok(Some(Ok(_))) => {}
            other => panic!("expected the policy close, got {other:?}"),
        }
    };
    assert_eq!(code, close_code::POLICY);
    flood.abort();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_websocket_is_pinged_then_dropped_into_its_grace_period() {
    let (server, _dir) = serve(&["arena"], |c| {
        c.gateway.idle_timeout = Duration::from_millis(900);
        c.gateway.grace_period = Duration::from_secs(30);
    })
    .await;
    // An attentive client answers the pings (tungstenite does while it reads) and
    // stays connected well past the idle timeout without sending a frame.
    let mut attentive = socket(server.addr, false).await;
    let quiet = tokio::time::timeout(Duration::from_millis(2500), attentive.next()).await;
    match quiet {
        Err(_) => {}
        Ok(Some(Ok(Message::Ping(_)))) => {
            let more = tokio::time::timeout(Duration::from_millis(2500), async {
                loop {
                    match attentive.next().await {
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                        other => return other,
                    }
                }
            })
            .await;
            assert!(more.is_err(), "an answering client was dropped: {more:?}");
        }
        other => panic!("unexpected {other:?}"),
    }

    // A client that reads nothing answers no ping: dropped with 4004, and its session
    // waits out the grace period (a resume works).
    let (token, _) = ludus::client::guest_login(server.addr, "sleepy")
        .await
        .unwrap();
    let url = format!("ws://{}/v1/ws?token={token}", server.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let welcome = match decode(&ws.next().await.unwrap().unwrap()).body {
        Some(Out::Welcome(w)) => w,
        other => panic!("{other:?}"),
    };
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let mut pinged = false;
    let code = loop {
        match tokio::time::timeout(WAIT, ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => break u16::from(frame.code),
            Ok(Some(Ok(Message::Ping(_)))) => pinged = true,
            Ok(Some(Ok(_))) => {}
            other => panic!("expected the idle close, got {other:?}"),
        }
    };
    assert!(pinged, "the server pinged before giving up");
    assert_eq!(code, close_code::IDLE);
    let resume = format!("{url}&resume={}&last_seen=1", welcome.resume_token);
    let (mut back, _) = tokio_tungstenite::connect_async(&resume).await.unwrap();
    match decode(&back.next().await.unwrap().unwrap()).body {
        Some(Out::Welcome(w)) => assert!(w.resumed, "{w:?}"),
        other => panic!("{other:?}"),
    }
    server.stop().await;
}

/// Whether the server closes a raw TCP connection within `within`.
async fn closed_within(tcp: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(within, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    });
    read.await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_whose_headers_do_not_arrive_in_time_are_dropped() {
    let (server, _dir) = serve(&[], |c| {
        c.gateway.header_timeout = Duration::from_millis(500)
    })
    .await;
    let started = Instant::now();
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let mut partial = TcpStream::connect(server.addr).await.unwrap();
    partial
        .write_all(b"GET /v1/games HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert!(closed_within(&mut silent, WAIT).await);
    assert!(closed_within(&mut partial, WAIT).await);
    assert!(started.elapsed() >= Duration::from_millis(450));
    // A whole request in time is served.
    let rooms = reqwest::get(format!("{}/v1/games", server.url()))
        .await
        .unwrap();
    assert!(rooms.status().is_success());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_counted_from_accept_in_total_and_per_address() {
    let (server, _dir) = serve(&[], |c| {
        c.gateway.max_connections_per_ip = 3;
        c.gateway.max_connections = 5;
    })
    .await;
    let addr = server.addr;
    // Bare sockets that never send a byte count as much as WebSockets do.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    common::eventually(WAIT, "three connections counted", async || {
        server.gateway.tcp_connections() == 3
    })
    .await;
    let mut over = TcpStream::connect(addr).await.unwrap();
    let mut answer = String::new();
    let _ = tokio::time::timeout(WAIT, over.read_to_string(&mut answer)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    assert!(answer.contains("from your address"), "{answer}");

    // Another address has its own count, up to the total.
    let from = async |last: u8| {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(SocketAddr::from(([127, 0, 0, last], 0)))
            .unwrap();
        socket.connect(addr).await.unwrap()
    };
    let other = from(2).await;
    let another = from(3).await;
    let mut past_total = from(4).await;
    let mut answer = String::new();
    let _ = tokio::time::timeout(WAIT, past_total.read_to_string(&mut answer)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    assert!(answer.contains("too many connections"), "{answer}");
    drop((other, another));

    // A closed connection frees its place.
    held.pop();
    common::eventually(WAIT, "a place is free again", async || {
        reqwest::get(format!("http://{addr}/v1/games"))
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_logins_are_limited_per_address_with_retry_after() {
    let (server, _dir) = serve(&[], |c| {
        c.gateway.guest_login_burst = 3;
        c.gateway.guest_logins_per_minute = 6;
    })
    .await;
    let http = reqwest::Client::new();
    let login = async |name: &str| {
        http.post(format!("{}/v1/auth/guest", server.url()))
            .json(&serde_json::json!({ "name": name }))
            .send()
            .await
            .unwrap()
    };
    for i in 0..3 {
        assert!(login(&format!("p{i}")).await.status().is_success());
    }
    let refused = login("p4").await;
    assert_eq!(refused.status(), reqwest::StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&retry), "Retry-After: {retry}");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("too many guest logins")
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_names_are_refused_when_too_long_or_unprintable_never_cut() {
    let (server, _dir) = serve(&[], |_| {}).await;
    let http = reqwest::Client::new();
    let login = async |body: serde_json::Value| {
        let r = http
            .post(format!("{}/v1/auth/guest", server.url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status(), r.json::<serde_json::Value>().await.unwrap())
    };
    let (status, body) = login(serde_json::json!({ "name": "é".repeat(33) })).await;
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST);
    assert!(
        body["error"].as_str().unwrap().contains("at most 32"),
        "{body}"
    );
    let (status, body) = login(serde_json::json!({ "name": "bell\u{7}" })).await;
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = login(serde_json::json!({ "name": "é".repeat(32) })).await;
    assert!(status.is_success());
    assert_eq!(body["name"], "é".repeat(32));
    let (status, body) = login(serde_json::json!({})).await;
    assert!(status.is_success());
    assert_eq!(body["name"], ludus::gateway::DEFAULT_GUEST_NAME);
    server.stop().await;
}

/// The next error frame, or the room a `joined` frame names.
async fn create_answer(c: &mut ludus::client::Client) -> Result<String, (i32, String)> {
    loop {
        let frame = tokio::time::timeout(WAIT, c.recv()).await.unwrap().unwrap();
        match frame.body {
            Some(Out::Joined(j)) => return Ok(j.room_id),
            Some(Out::Error(e)) => return Err((e.code, e.message)),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_may_hold_only_so_many_open_rooms() {
    let (server, _dir) = serve(&["arena"], |c| {
        c.rooms.empty_timeout = Duration::from_millis(300);
    })
    .await;
    let opts = ludus::client::ClientOptions::default();
    let mut c = ludus::client::Client::guest(server.addr, "builder", opts.clone())
        .await
        .unwrap();
    let quota = ludus::rooms::RoomsConfig::default().max_rooms_per_player;
    assert_eq!(quota, 4);
    for i in 0..quota {
        c.create("arena", &format!("mine-{i}"), "").await.unwrap();
        assert_eq!(create_answer(&mut c).await, Ok(format!("mine-{i}")));
    }
    c.create("arena", "one-too-many", "").await.unwrap();
    let (code, message) = create_answer(&mut c).await.unwrap_err();
    assert_eq!(code, ErrorCode::RoomQuota as i32, "{message}");
    assert!(message.contains("4 open rooms"), "{message}");
    // Another player has a quota of their own.
    let mut other = ludus::client::Client::guest(server.addr, "other", opts)
        .await
        .unwrap();
    other.create("arena", "theirs", "").await.unwrap();
    assert_eq!(create_answer(&mut other).await, Ok("theirs".into()));
    // A room that closes (left, then empty past its idle time) frees its place.
    c.send(ludus::gateway::pb::client_frame::Body::Leave(
        ludus::gateway::pb::LeaveRoom {
            room_id: "mine-0".into(),
        },
    ))
    .await
    .unwrap();
    common::eventually(WAIT, "the empty room closes", async || {
        server.rooms.get("mine-0").is_none()
    })
    .await;
    c.create("arena", "after-one-closed", "").await.unwrap();
    assert_eq!(create_answer(&mut c).await, Ok("after-one-closed".into()));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_are_listed_only_to_players_and_never_private_ones() {
    let (server, _dir) = serve(&["faulty"], |_| {}).await;
    let url = format!("{}/v1/rooms", server.url());
    let anonymous = reqwest::get(&url).await.unwrap();
    assert_eq!(anonymous.status(), reqwest::StatusCode::UNAUTHORIZED);
    let forged = reqwest::Client::new()
        .get(&url)
        .bearer_auth("not.a.token")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), reqwest::StatusCode::UNAUTHORIZED);

    let opts = ludus::client::ClientOptions::default();
    let mut c = ludus::client::Client::guest(server.addr, "host", opts)
        .await
        .unwrap();
    for room in ["open", "secret"] {
        c.create("faulty", room, "").await.unwrap();
        assert_eq!(create_answer(&mut c).await, Ok(room.to_owned()));
    }
    c.message("secret", &b"private"[..]).await.unwrap();
    let (token, _) = ludus::client::guest_login(server.addr, "browser")
        .await
        .unwrap();
    common::eventually(WAIT, "only the open room is listed", async || {
        let listed: serde_json::Value = reqwest::Client::new()
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let ids: Vec<&str> = listed
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        ids == ["open"]
    })
    .await;
    assert!(server.rooms.get("secret").is_some(), "private, not closed");
    server.stop().await;
}
