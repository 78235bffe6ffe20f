//! The example games played through the rooms API with real built guests.

mod common;

use common::{avatar, input, install, install_as, join, rooms};
use ludus::rooms::{CreateRoom, JoinError, RoomEvent};
use serde_json::json;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(5);

/// Arena's rules are built twice: in Rust (`arena`) and in TypeScript (`arena-ts`). Each
/// arena test runs against both, installed as the game `arena`: `<test>::rust` and
/// `<test>::typescript`.
macro_rules! for_each_arena {
    ($($test:ident),* $(,)?) => {$(
        mod $test {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn rust() {
                super::$test("arena").await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn typescript() {
                super::$test("arena-ts").await
            }
        }
    )*};
}

for_each_arena!(
    arena_moves_clamps_drops_stale_inputs_and_snapshots_every_tick,
    arena_refuses_players_past_its_configured_size,
    arena_takes_its_inputs_just_before_the_tick,
);

async fn arena_moves_clamps_drops_stale_inputs_and_snapshots_every_tick(build: &str) {
    let rooms = rooms();
    install_as(&rooms, "arena", build).await;
    let room = common::room(&rooms, "arena").await;
    let mut a = join(&room, 1).await;
    let mut b = join(&room, 2).await;

    let snap = a.until(WAIT, |s| avatar(s, 2).is_some()).await;
    assert_eq!(
        avatar(&snap, 1).unwrap()["x"],
        500,
        "spawn at (500, 500): {snap}"
    );
    assert_eq!(avatar(&snap, 2).unwrap()["y"], 500);

    // A step is clamped to 10 per axis.
    room.message(1, input(1, 3, -4));
    room.message(1, input(2, 100, -100));
    let snap = b
        .until(WAIT, |s| avatar(s, 1).is_some_and(|p| p["seq"] == 2))
        .await;
    assert_eq!(avatar(&snap, 1).unwrap()["x"], 513, "{snap}");
    assert_eq!(avatar(&snap, 1).unwrap()["y"], 486, "{snap}");

    // A stale or repeated seq is dropped.
    room.message(1, input(2, 10, 10));
    room.message(1, input(1, 10, 10));
    room.message(1, input(3, 0, 1));
    let snap = b
        .until(WAIT, |s| avatar(s, 1).is_some_and(|p| p["seq"] == 3))
        .await;
    assert_eq!(
        (
            avatar(&snap, 1).unwrap()["x"].clone(),
            avatar(&snap, 1).unwrap()["y"].clone()
        ),
        (json!(513), json!(487))
    );

    // The position is clamped to the field.
    for seq in 4..=60 {
        room.message(2, input(seq, 10, -10));
    }
    let snap = a
        .until(WAIT, |s| avatar(s, 2).is_some_and(|p| p["seq"] == 60))
        .await;
    assert_eq!(avatar(&snap, 2).unwrap()["x"], 1000, "{snap}");
    assert_eq!(avatar(&snap, 2).unwrap()["y"], 0, "{snap}");

    // Malformed input gets an error back to its sender only.
    room.message(1, b"not json".to_vec());
    let err = a.until(WAIT, |m| m.get("error").is_some()).await;
    assert!(
        err["error"].as_str().unwrap().contains("bad input"),
        "{err}"
    );

    // Every member gets one snapshot per tick, at 20 Hz on the wall clock.
    a.drain();
    let start = Instant::now();
    let mut ticks = Vec::new();
    while start.elapsed() < Duration::from_millis(1000) {
        let s = a.json().await;
        if let Some(t) = s["tick"].as_u64() {
            ticks.push(t);
        }
    }
    assert!(
        (16..=24).contains(&ticks.len()),
        "{} snapshots in 1 s at 20 Hz",
        ticks.len()
    );
    assert!(
        ticks.windows(2).all(|w| w[1] == w[0] + 1),
        "one snapshot per tick, in order: {ticks:?}"
    );

    // Leaving removes the player from the snapshots.
    room.leave(2, ludus::rooms::LeaveReason::Left);
    a.until(WAIT, |s| avatar(s, 1).is_some() && avatar(s, 2).is_none())
        .await;
    assert_eq!(room.info().seats, 1);
}

async fn arena_refuses_players_past_its_configured_size(build: &str) {
    let rooms = rooms();
    install_as(&rooms, "arena", build).await;
    let room = common::room_with(&rooms, "arena", Some(r#"{"max_players": 2}"#)).await;
    join(&room, 1).await;
    join(&room, 2).await;
    let (tx, _rx) = ludus::mailbox::channel(8);
    match room.join(3, "third", tx).await {
        Err(JoinError::Rejected(reason)) => assert!(reason.contains("full"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let (tx, _rx) = ludus::mailbox::channel(8);
    assert!(matches!(
        room.join(1, "again", tx).await,
        Err(JoinError::AlreadyJoined(1))
    ));

    let bad = rooms
        .create(CreateRoom {
            game: "arena".into(),
            config: Some("[1, 2]".into()),
            ..Default::default()
        })
        .await;
    assert!(bad.unwrap_err().to_string().contains("not a JSON object"));
    let slash = rooms
        .create(CreateRoom {
            game: "arena".into(),
            id: Some("a/b".into()),
            ..Default::default()
        })
        .await;
    assert!(
        slash
            .unwrap_err()
            .to_string()
            .contains("`/` is not allowed")
    );
    let empty = rooms
        .create(CreateRoom {
            game: "arena".into(),
            id: Some(String::new()),
            ..Default::default()
        })
        .await;
    assert!(matches!(empty, Err(ludus::rooms::CreateError::BadId(_))));
    let none = rooms
        .create(CreateRoom {
            game: "chess".into(),
            ..Default::default()
        })
        .await;
    assert!(
        none.unwrap_err()
            .to_string()
            .contains("no game named `chess`")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tictactoe_is_played_to_a_win_with_illegal_moves_refused() {
    let rooms = rooms();
    install(&rooms, "tictactoe").await;
    let room = common::room(&rooms, "tictactoe").await;
    assert_eq!(room.info().label, "waiting");
    assert_eq!(room.info().tick_hz, 1, "the game asked for 1 Hz");
    let mut x = join(&room, 10).await;
    let mut o = join(&room, 20).await;
    let start = x.json().await;
    assert_eq!(start["board"], ".........");
    assert_eq!(start["next"], 10);
    o.json().await;

    let (tx, _rx) = ludus::mailbox::channel(8);
    assert!(matches!(
        room.join(30, "third", tx).await,
        Err(JoinError::Rejected(_))
    ));

    let mv = |cell: i64| serde_json::to_vec(&json!({ "cell": cell })).unwrap();
    room.message(20, mv(4));
    assert_eq!(o.json().await["error"], "not your turn");
    room.message(10, mv(9));
    assert_eq!(x.json().await["error"], "cell must be 0..=8");
    room.message(10, b"{\"cell\": \"middle\"}".to_vec());
    assert!(
        x.json().await["error"]
            .as_str()
            .unwrap()
            .contains("a move is")
    );

    room.message(10, mv(0));
    assert_eq!(x.json().await["board"], "X........");
    room.message(20, mv(0));
    assert_eq!(
        o.until(WAIT, |m| m.get("error").is_some()).await["error"],
        "cell is taken"
    );
    for (player, cell) in [(20, 3), (10, 1), (20, 4), (10, 2)] {
        room.message(player, mv(cell));
    }
    let end = x.until(WAIT, |m| m["winner"].is_u64()).await;
    assert_eq!(end["board"], "XXXOO....");
    assert_eq!(end["winner"], 10);
    assert_eq!(end["next"], serde_json::Value::Null);
    room.message(20, mv(8));
    assert_eq!(
        o.until(WAIT, |m| m.get("error").is_some()).await["error"],
        "the game is over"
    );
    assert_eq!(room.info().label, "finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tictactoe_draw_is_detected() {
    let rooms = rooms();
    install(&rooms, "tictactoe").await;
    let room = common::room(&rooms, "tictactoe").await;
    let mut x = join(&room, 1).await;
    let _o = join(&room, 2).await;
    // X O X / X O O / O X X
    for (p, cell) in [
        (1, 0),
        (2, 1),
        (1, 2),
        (2, 4),
        (1, 3),
        (2, 5),
        (1, 7),
        (2, 6),
        (1, 8),
    ] {
        room.message(p, serde_json::to_vec(&json!({ "cell": cell })).unwrap());
    }
    let end = x.until(WAIT, |m| m["draw"] == true).await;
    assert_eq!(end["board"], "XOXXOOOXX");
    assert_eq!(end["winner"], serde_json::Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_room_tells_its_players() {
    let rooms = rooms();
    install(&rooms, "arena").await;
    let room = rooms
        .create(CreateRoom {
            game: "arena".into(),
            id: Some("r1".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let dup = rooms
        .create(CreateRoom {
            game: "arena".into(),
            id: Some("r1".into()),
            ..Default::default()
        })
        .await;
    assert!(matches!(
        dup,
        Err(ludus::rooms::CreateError::DuplicateId(_))
    ));
    let mut p = join(&room, 1).await;
    room.close("maintenance").await;
    loop {
        match p.event(WAIT).await {
            RoomEvent::Closed { reason, .. } => break assert_eq!(reason, "maintenance"),
            RoomEvent::Message { .. } => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        rooms.get("r1").is_none(),
        "a closed room leaves the directory"
    );
}

/// Arena holds its inputs until the tick (`hold-messages`): nothing reaches the game
/// between ticks, then everything that came is handed over, in order, just before the
/// tick's snapshot.
async fn arena_takes_its_inputs_just_before_the_tick(build: &str) {
    let rooms = rooms();
    install_as(&rooms, "arena", build).await;
    let room = common::room_with(&rooms, "arena", Some(r#"{"tick_hz": 2}"#)).await;
    let mut a = join(&room, 1).await;
    // A snapshot: a tick just ran, the next is 500 ms away.
    a.until(WAIT, |s| s["tick"].is_u64()).await;
    room.message(1, input(1, 5, 5));
    room.message(1, b"not json".to_vec());
    room.message(1, input(2, 5, 5));
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        a.rx.try_recv().is_none(),
        "a held input was answered before the tick"
    );
    // The malformed input's answer comes first, then the snapshot with both inputs.
    let err = a.json().await;
    assert!(
        err["error"]
            .as_str()
            .is_some_and(|e| e.contains("bad input")),
        "{err}"
    );
    let snap = a.json().await;
    let me = avatar(&snap, 1).expect("in the snapshot");
    assert_eq!(
        (me["seq"].clone(), me["x"].clone()),
        (json!(2), json!(510)),
        "{snap}"
    );
}
