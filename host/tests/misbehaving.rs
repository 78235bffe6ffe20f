//! Games that misbehave, and host code that fails: every cap holds at the call, the
//! room's random stream never repeats, a module for another game is refused, a panic
//! in the host's room code stays in its room, and empty rooms do not pile up.

mod common;

use common::{Player, install, join, rooms_with};
use ludus::rooms::{CreateRoom, RoomEvent, RoomHandle, Rooms, RoomsConfig, SwapError};
use ludus::runtime::{MAX_LABEL_BYTES, MAX_REASON_BYTES};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

async fn faulty(rooms: &Rooms, seed: Option<u64>) -> RoomHandle {
    rooms
        .create(CreateRoom {
            game: "faulty".into(),
            seed,
            ..Default::default()
        })
        .await
        .expect("a faulty room")
}

/// The next event that is not one of faulty's tick broadcasts; fails after `WAIT` even
/// while ticks keep coming.
async fn next_non_tick(p: &mut Player) -> RoomEvent {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            panic!("player {}: only tick broadcasts within {WAIT:?}", p.id);
        }
        match p.event(left).await {
            RoomEvent::Message { bytes, .. } if bytes.starts_with(b"{\"messages\"") => continue,
            RoomEvent::Message { bytes, .. } if bytes.starts_with(b"{\"tick\"") => continue,
            other => return other,
        }
    }
}

async fn next_json(p: &mut Player) -> serde_json::Value {
    match next_non_tick(p).await {
        RoomEvent::Message { bytes, .. } => {
            assert!(
                bytes.len() < 1 << 20,
                "a message of {} bytes came through",
                bytes.len()
            );
            serde_json::from_slice(&bytes).unwrap()
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_larger_than_a_client_may_receive_is_dropped_at_the_call_and_counted() {
    // Making 2 MiB and handing it over takes more than the 5 ms message deadline on a
    // busy machine with an unoptimised host; this test is about the size cap, not the
    // deadline, so the call gets all the time it needs.
    let limits = ludus::runtime::RuntimeLimits {
        message_deadline: Duration::from_secs(2),
        max_instances: 16,
        ..Default::default()
    };
    let rt = ludus::runtime::Runtime::new(limits).unwrap();
    let rooms = Rooms::new(rt, RoomsConfig::default()).unwrap();
    install(&rooms, "faulty").await;
    let room = faulty(&rooms, None).await;
    let mut p = join(&room, 1).await;
    room.message(1, b"huge-send".to_vec());
    // The 2 MiB message never reaches the player; the call goes on.
    assert_eq!(next_json(&mut p).await["echo"], "after huge-send");
    room.message(1, b"huge-send".to_vec());
    assert_eq!(next_json(&mut p).await["echo"], "after huge-send");
    let info = room.info();
    assert_eq!(info.dropped_messages, 2);
    assert_eq!(info.restarts, 0, "dropping is not a failure");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_reasons_and_log_lines_are_capped_and_a_log_flood_is_counted() {
    let rooms = rooms_with(RoomsConfig::default());
    install(&rooms, "faulty").await;
    let room = faulty(&rooms, None).await;
    let mut p = join(&room, 1).await;
    room.message(1, b"huge-label".to_vec());
    room.message(1, b"huge-log".to_vec());
    room.message(1, b"log-flood".to_vec());
    room.message(1, b"huge-kick".to_vec());
    match next_non_tick(&mut p).await {
        RoomEvent::Kicked { reason, .. } => {
            assert!(reason.len() <= MAX_REASON_BYTES, "{} bytes", reason.len());
            assert!(reason.starts_with("kkk"));
        }
        other => panic!("expected the kick, got {other:?}"),
    }
    let info = room.info();
    assert!(info.label.len() <= MAX_LABEL_BYTES && info.label.starts_with("lll"));
    assert!(
        info.dropped_log_lines >= 9_000,
        "10,000 lines in one call, 100 a second allowed: {} dropped",
        info.dropped_log_lines
    );
    assert_eq!(info.restarts, 0);

    let other = faulty(&rooms, None).await;
    let mut q = join(&other, 2).await;
    other.message(2, b"huge-close".to_vec());
    match next_non_tick(&mut q).await {
        RoomEvent::Closed { reason, .. } => assert!(reason.len() <= MAX_REASON_BYTES),
        other => panic!("expected the close, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_state_over_the_cap_is_refused_like_a_failed_save() {
    // faulty's huge state is 2 MiB: over a 1 MiB cap, and quick to make on a busy machine.
    let limits = ludus::runtime::RuntimeLimits {
        max_state_bytes: 1 << 20,
        max_instances: 16,
        ..Default::default()
    };
    let rt = ludus::runtime::Runtime::new(limits).unwrap();
    let rooms = Rooms::new(rt, RoomsConfig::default()).unwrap();
    let module = install(&rooms, "faulty").await;
    let room = faulty(&rooms, None).await;
    let mut p = join(&room, 1).await;
    room.message(1, b"huge-save".to_vec());
    room.message(1, b"ping".to_vec());
    assert_eq!(next_json(&mut p).await["echo"], "ping");
    match room.swap(module).await {
        Err(e @ SwapError::Save(_)) => assert!(e.to_string().contains("over the limit"), "{e}"),
        other => panic!("expected the save to be refused, got {other:?}"),
    }
    assert!(room.info().closed.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_random_stream_goes_on_across_a_restore_after_a_panic_and_a_live_swap() {
    let rooms = rooms_with(RoomsConfig::default());
    let module = install(&rooms, "faulty").await;
    let seed = 0x5eed;
    let room = faulty(&rooms, Some(seed)).await;
    let mut p = join(&room, 1).await;
    let mut drawn = Vec::new();
    let draw = async |p: &mut Player, drawn: &mut Vec<u64>| {
        for _ in 0..3 {
            room.message(1, b"random".to_vec());
            drawn.push(next_json(p).await["random"].as_u64().unwrap());
        }
    };
    draw(&mut p, &mut drawn).await;
    room.message(1, b"panic".to_vec());
    common::eventually(WAIT, "the room is restored", async || {
        room.info().restarts == 1
    })
    .await;
    draw(&mut p, &mut drawn).await;
    room.swap(module).await.expect("a live swap");
    draw(&mut p, &mut drawn).await;
    let mut stream = fastrand::Rng::with_seed(seed);
    let expected: Vec<u64> = (0..9).map(|_| stream.u64(..)).collect();
    assert_eq!(
        drawn, expected,
        "the room's seeded stream, without a repeat"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_room_closes_after_its_idle_time_unless_its_game_keeps_it_open() {
    let rooms = rooms_with(RoomsConfig {
        empty_timeout: Duration::from_millis(400),
        ..RoomsConfig::default()
    });
    install(&rooms, "faulty").await;
    let never_joined = faulty(&rooms, None).await;
    let kept = faulty(&rooms, None).await;
    let occupied = faulty(&rooms, None).await;
    let p = join(&kept, 1).await;
    kept.message(1, b"keep-open".to_vec());
    let _q = join(&occupied, 2).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    kept.leave(p.id, ludus::rooms::LeaveReason::Left);
    common::eventually(WAIT, "the never-joined room closes", async || {
        rooms.get(never_joined.id()).is_none()
    })
    .await;
    let reason = never_joined.info().closed.unwrap();
    assert!(reason.contains("nobody was in the room"), "{reason}");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        rooms.get(kept.id()).is_some(),
        "keep-open holds an empty room"
    );
    assert!(
        rooms.get(occupied.id()).is_some(),
        "a room with a member stays"
    );
    assert_eq!(rooms.list().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_hosts_room_code_closes_that_room_only() {
    let rooms = rooms_with(RoomsConfig {
        workers: 1,
        ..RoomsConfig::default()
    });
    install(&rooms, "faulty").await;
    let broken = faulty(&rooms, None).await;
    let neighbour = faulty(&rooms, None).await;
    let mut p = join(&broken, 1).await;
    let mut n = join(&neighbour, 2).await;
    broken.inject_host_fault();
    match next_non_tick(&mut p).await {
        RoomEvent::Closed { reason, .. } => {
            assert!(reason.contains("server error (id "), "{reason}")
        }
        other => panic!("expected the room to close, got {other:?}"),
    }
    assert!(rooms.get(broken.id()).is_none());
    let (tx, _rx) = ludus::mailbox::channel(8);
    let joined = tokio::time::timeout(Duration::from_secs(1), broken.join(3, "late", tx)).await;
    assert!(
        matches!(joined, Ok(Err(_))),
        "a join fails at once: {joined:?}"
    );
    // The worker and its other room go on.
    n.drain();
    neighbour.message(2, b"still here".to_vec());
    assert_eq!(next_json(&mut n).await["echo"], "still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_declaring_another_game_is_refused_before_any_room_sees_it() {
    let (server, dir) = common::serve(&["arena"], |_| {}).await;
    let room = server
        .rooms
        .create(CreateRoom {
            game: "arena".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let faulty = ludus::guest_build::example_game_bytes("faulty").unwrap();
    common::replace_file(&dir.path().join("arena.wasm"), &faulty);
    let url = format!("{}/v1/games", server.url());
    let mut games = serde_json::Value::Null;
    common::eventually(WAIT, "the refusal is reported", async || {
        games = reqwest::get(&url).await.unwrap().json().await.unwrap();
        games[0]["last_error"].is_string()
    })
    .await;
    let error = games[0]["last_error"].as_str().unwrap();
    assert!(
        error.contains("declares the game `faulty`, not `arena`"),
        "{error}"
    );
    assert_eq!(games[0]["version"], "1.0.0", "{games}");
    assert_eq!(room.info().game, "arena");
    assert_eq!(room.info().version, "1.0.0");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_past_the_instance_limit_are_refused_with_the_limit_named() {
    let limits = ludus::runtime::RuntimeLimits {
        max_instances: 3,
        ..Default::default()
    };
    let rt = ludus::runtime::Runtime::new(limits).unwrap();
    let rooms = Rooms::new(rt, RoomsConfig::default()).unwrap();
    install(&rooms, "faulty").await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(faulty(&rooms, None).await);
    }
    let refused = rooms
        .create(CreateRoom {
            game: "faulty".into(),
            ..Default::default()
        })
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("runtime.max_instances (3)"), "{refused}");
    open.pop().unwrap().close("making room").await;
    common::eventually(WAIT, "a closed room frees its instance", async || {
        rooms
            .create(CreateRoom {
                game: "faulty".into(),
                ..Default::default()
            })
            .await
            .is_ok()
    })
    .await;
}
