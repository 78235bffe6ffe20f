//! Game clients over the gRPC `Play` stream, against a real node on 127.0.0.1: the same
//! login, sessions, resume, limits and error codes as the WebSocket, in the same rooms.

mod common;

use common::{arena_snapshot, avatar, input, serve};
use ludus::client::{Client, ClientOptions, Transport};
use ludus::gateway::pb::play_client::PlayClient;
use ludus::gateway::pb::{
    ClientFrame, ErrorCode, RoomMessage, ServerFrame, client_frame::Body as In,
    server_frame::Body as Out,
};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

const WAIT: Duration = Duration::from_secs(10);

fn opts(transport: Transport) -> ClientOptions {
    ClientOptions {
        transport,
        backoff_initial: Duration::from_millis(50),
        ..ClientOptions::default()
    }
}

/// The next frame matching `pred`, failing after `WAIT`.
async fn until(client: &mut Client, mut pred: impl FnMut(&ServerFrame) -> bool) -> ServerFrame {
    tokio::time::timeout(WAIT, async {
        loop {
            let frame = client.recv().await.expect("connected");
            if pred(&frame) {
                return frame;
            }
        }
    })
    .await
    .expect("no matching frame in time")
}

/// Waits until `watcher` sees `player`'s input `seq` applied in `room`.
async fn sees_input(watcher: &mut Client, room: &str, player: u64, seq: u64) {
    tokio::time::timeout(WAIT, async {
        loop {
            let s = arena_snapshot(watcher, room).await;
            if avatar(&s, player).is_some_and(|p| p["seq"] == seq) {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("input {seq} of player {player} not seen"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_and_websocket_players_share_a_room_and_a_grpc_player_resumes_and_says_goodbye() {
    let (server, _dir) = serve(&["arena"], |_| {}).await;
    let addr = server.addr;
    let room = "mixed";

    let mut ws = Client::guest(addr, "ws", opts(Transport::WebSocket))
        .await
        .expect("WebSocket login");
    ws.create("arena", room, "").await.unwrap();
    until(&mut ws, |f| matches!(f.body, Some(Out::Joined(_)))).await;

    let mut g = Client::guest(addr, "grpc", opts(Transport::Grpc))
        .await
        .expect("gRPC login and stream");
    assert_ne!(g.player_id, 0, "the welcome came over gRPC");
    g.join(room).await.unwrap();
    let joined = until(&mut g, |f| {
        matches!(f.body, Some(Out::Joined(_)) | Some(Out::Error(_)))
    })
    .await;
    assert!(
        matches!(&joined.body, Some(Out::Joined(j)) if j.room_id == room && j.game == "arena"),
        "{joined:?}"
    );
    assert_eq!(server.gateway.connections(), 2);

    // Each sees the other's input.
    g.message(room, input(1, 3, 0)).await.unwrap();
    sees_input(&mut ws, room, g.player_id, 1).await;
    ws.message(room, input(1, 0, 2)).await.unwrap();
    sees_input(&mut g, room, ws.player_id, 1).await;

    // The gRPC player's connection drops; frames sent meanwhile are replayed after the
    // resume, each once, in order, and its input after the drop arrives once.
    let before_drop = g.last_seen();
    g.drop_connection();
    tokio::time::sleep(Duration::from_millis(400)).await;
    g.message(room, input(2, 3, 0)).await.unwrap(); // resumes first
    let mut seqs = Vec::new();
    tokio::time::timeout(WAIT, async {
        loop {
            let f = g.recv().await.expect("resumed");
            seqs.push(f.seq);
            if let Some(Out::Message(m)) = &f.body
                && let Ok(s) = serde_json::from_slice::<serde_json::Value>(&m.payload)
                && avatar(&s, g.player_id).is_some_and(|p| p["seq"] == 2)
            {
                return;
            }
        }
    })
    .await
    .expect("the input after the resume is applied");
    assert!(
        seqs.len() >= 3,
        "snapshots of the gap were replayed: {seqs:?}"
    );
    assert_eq!(
        seqs[0],
        before_drop + 1,
        "replay starts after the last frame seen"
    );
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "no frame lost or doubled: {seqs:?}"
    );
    assert_eq!(g.restores, 0);
    sees_input(&mut ws, room, g.player_id, 2).await;

    // The same error codes as on a WebSocket.
    g.join("no-such-room").await.unwrap();
    let refused = until(&mut g, |f| matches!(f.body, Some(Out::Error(_)))).await;
    let Some(Out::Error(e)) = refused.body else {
        unreachable!()
    };
    assert_eq!(e.code, ErrorCode::RoomNotFound as i32, "{e:?}");

    // A goodbye ends the session at once: the player leaves the room (no grace period).
    let id = g.player_id;
    g.close().await;
    tokio::time::timeout(WAIT, async {
        loop {
            let s = arena_snapshot(&mut ws, room).await;
            if avatar(&s, id).is_none() {
                return;
            }
        }
    })
    .await
    .expect("the gRPC player left the room after its goodbye");
    common::eventually(WAIT, "the stream is no longer counted", async || {
        server.gateway.connections() == 1
    })
    .await;
    assert_eq!(server.gateway.sessions(), 1);
    server.stop().await;
}

/// A bare `Play` stream with `token` (if any): the sender of its client frames and the
/// call's answer.
async fn play(
    addr: SocketAddr,
    token: Option<&str>,
) -> (
    mpsc::Sender<ClientFrame>,
    Result<tonic::Streaming<ServerFrame>, tonic::Status>,
) {
    let mut client = PlayClient::connect(format!("http://{addr}"))
        .await
        .expect("an HTTP/2 connection");
    let (tx, rx) = mpsc::channel(8);
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().unwrap();
        request.metadata_mut().insert("authorization", value);
    }
    let answer = client.play(request).await.map(|r| r.into_inner());
    (tx, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_stream_needs_a_token_and_keeps_the_frame_limit() {
    let (server, _dir) = serve(&["arena"], |c| c.gateway.max_frame_bytes = 1024).await;
    let addr = server.addr;

    let (_, answer) = play(addr, None).await;
    let status = answer.expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("authorization"), "{status:?}");
    let (_, answer) = play(addr, Some("not.a.token")).await;
    assert_eq!(
        answer.expect_err("a bad token").code(),
        Code::Unauthenticated
    );

    let (token, _) = ludus::client::guest_login(addr, "big").await.unwrap();
    let (tx, answer) = play(addr, Some(&token)).await;
    let mut frames = answer.expect("a valid token opens the stream");
    let welcome = frames.message().await.unwrap().expect("a welcome");
    assert!(matches!(welcome.body, Some(Out::Welcome(_))), "{welcome:?}");

    // A frame over the limit: the same error frame as on a WebSocket, then the stream
    // ends as a WebSocket would close (1009).
    let big = ClientFrame {
        seq: 1,
        ack: 0,
        body: Some(In::Message(RoomMessage {
            room_id: "any".into(),
            payload: vec![7u8; 1500].into(),
        })),
    };
    tx.send(big).await.unwrap();
    let error = frames.message().await.unwrap().expect("an error frame");
    let Some(Out::Error(e)) = error.body else {
        panic!("expected an error frame, got {error:?}")
    };
    assert_eq!(e.code, ErrorCode::FrameTooLarge as i32, "{e:?}");
    assert!(e.message.contains("1024"), "the limit is named: {e:?}");
    let status = frames.message().await.expect_err("the stream ends");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let close = status.metadata().get(ludus::gateway::play::CLOSE_CODE);
    assert_eq!(close.and_then(|v| v.to_str().ok()), Some("1009"));
    server.stop().await;
}
