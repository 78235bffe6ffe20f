//! Live swaps and misbehaving games, with real built guests: the room keeps its state
//! across a swap, a failed swap leaves the old version running, and a failing game is
//! restored or closed while a neighbouring room keeps ticking on time.

mod common;

use common::{Player, avatar, input, install, install_as, join, load, rooms};
use ludus::rooms::{
    CreateError, CreateRoom, RoomEvent, RoomHandle, Rooms, RoomsConfig, SwapError, SwapPolicy,
};
use ludus::runtime::{GuestErrorKind, ModuleError};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(5);

/// Arena v1 to v2 in Rust, in TypeScript, and from the Rust build to the TypeScript one:
/// their saved states are the same JSON.
mod swapping_arena_v1_to_v2_keeps_every_position_and_seq_and_applies_the_new_rule {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rust_to_rust() {
        super::swap_arena_v1_to_v2("arena", "arena-v2").await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn typescript_to_typescript() {
        super::swap_arena_v1_to_v2("arena-ts", "arena-ts-v2").await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rust_to_typescript() {
        super::swap_arena_v1_to_v2("arena", "arena-ts-v2").await
    }
}

async fn swap_arena_v1_to_v2(from: &str, to: &str) {
    let rooms = rooms();
    install_as(&rooms, "arena", from).await;
    let v2 = load(&rooms, to).await;
    let room = common::room(&rooms, "arena").await;
    let mut players = Vec::new();
    for id in 1..=8u64 {
        players.push(join(&room, id).await);
    }
    for id in 1..=8u64 {
        room.message(id, input(id, id as i64, -(id as i64)));
    }
    let before = players[0]
        .until(WAIT, |s| {
            (1..=8).all(|id| avatar(s, id).is_some_and(|p| p["seq"] == id))
        })
        .await;
    assert_eq!(before["rules"], 1);

    let report = rooms
        .swap_game("arena", v2.clone(), SwapPolicy::AllRooms)
        .await
        .unwrap();
    assert_eq!(report.results.len(), 1);
    let outcome = report.results[0].result.as_ref().expect("swap succeeds");
    assert!(outcome.to.contains("2.0.0"), "{}", outcome.to);
    assert_eq!(room.info().version, "2.0.0");

    let after = players[0].until(WAIT, |s| s["rules"] == 2).await;
    for id in 1..=8u64 {
        let (b, a) = (avatar(&before, id).unwrap(), avatar(&after, id).unwrap());
        assert_eq!(
            (&a["x"], &a["y"], &a["seq"]),
            (&b["x"], &b["y"], &b["seq"]),
            "player {id} kept its state"
        );
        assert_eq!(a["moves"], 0, "the new v2 field appears with its default");
    }
    // v2 allows steps of 20.
    room.message(3, input(100, 50, 0));
    let moved = players[2]
        .until(WAIT, |s| avatar(s, 3).is_some_and(|p| p["seq"] == 100))
        .await;
    assert_eq!(
        avatar(&moved, 3).unwrap()["x"],
        avatar(&before, 3).unwrap()["x"].as_i64().unwrap() + 20
    );
    assert_eq!(avatar(&moved, 3).unwrap()["moves"], 1);
    // Nobody was dropped.
    assert_eq!(room.info().seats, 8);
    for p in &mut players {
        p.drain();
        assert!(matches!(p.event(WAIT).await, RoomEvent::Message { .. }));
    }
    // New rooms get v2 too.
    assert_eq!(common::room(&rooms, "arena").await.info().version, "2.0.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_rooms_only_policy_leaves_running_rooms_on_their_version() {
    let rooms = rooms();
    install(&rooms, "arena").await;
    let old = common::room(&rooms, "arena").await;
    let v2 = load(&rooms, "arena-v2").await;
    let report = rooms
        .swap_game("arena", v2, SwapPolicy::NewRoomsOnly)
        .await
        .unwrap();
    assert!(report.results.is_empty());
    assert_eq!(old.info().version, "1.0.0");
    assert_eq!(common::room(&rooms, "arena").await.info().version, "2.0.0");
    let games = rooms.games();
    assert_eq!(games[0].rooms_per_version.get("1.0.0"), Some(&1));
    assert_eq!(games[0].rooms_per_version.get("2.0.0"), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_swaps_its_share_of_rooms_and_new_rooms_get_the_game_default_config() {
    let rooms = rooms();
    install(&rooms, "arena").await;
    let mut running = Vec::new();
    for i in 0..4 {
        let req = ludus::rooms::CreateRoom {
            game: "arena".into(),
            id: Some(format!("room-{i}")),
            ..Default::default()
        };
        running.push(rooms.create(req).await.unwrap());
    }
    let v2 = load(&rooms, "arena-v2").await;
    let report = rooms
        .swap_game("arena", v2, SwapPolicy::Canary(25))
        .await
        .unwrap();
    // 25% of 4 rooms: one, the first by id.
    assert_eq!(report.results.len(), 1);
    assert_eq!(&*report.results[0].room, "room-0");
    let versions: Vec<String> = running.iter().map(|r| r.info().version).collect();
    assert_eq!(versions, ["2.0.0", "1.0.0", "1.0.0", "1.0.0"]);
    assert_eq!(SwapPolicy::Canary(10).rooms_to_swap(0), 0);
    assert_eq!(SwapPolicy::Canary(10).rooms_to_swap(3), 1);
    assert_eq!(SwapPolicy::Canary(50).rooms_to_swap(5), 3);

    // A default room config applies to rooms created without one, and a bad one is
    // refused at creation with the problem named.
    rooms.set_default_config("arena", Some(r#"{"max_players": 1}"#.into()));
    let small = common::room(&rooms, "arena").await;
    assert_eq!(small.info().version, "2.0.0");
    join(&small, 1).await;
    let (tx, _rx) = ludus::mailbox::channel(8);
    assert!(
        small.join(2, "second", tx).await.is_err(),
        "the room holds one player"
    );
    rooms.set_default_config("arena", Some("[1, 2]".into()));
    let req = ludus::rooms::CreateRoom {
        game: "arena".into(),
        ..Default::default()
    };
    let err = rooms.create(req).await.unwrap_err();
    assert!(err.to_string().contains("expected an object"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_whose_restore_fails_keeps_the_old_version_running() {
    let rooms = rooms();
    install(&rooms, "arena").await;
    let bad = load(&rooms, "bad-restore").await;
    let room = common::room(&rooms, "arena").await;
    let mut p = join(&room, 1).await;
    room.message(1, input(1, 5, 5));
    p.until(WAIT, |s| avatar(s, 1).is_some_and(|a| a["seq"] == 1))
        .await;

    match room.swap(bad).await {
        Err(e @ SwapError::Restore(_)) => {
            assert_eq!(e.step(), "restore");
            assert!(
                e.to_string()
                    .contains("refuses state saved by version 1.0.0"),
                "{e}"
            );
        }
        other => panic!("expected a restore failure, got {other:?}"),
    }
    assert_eq!(room.info().version, "1.0.0");
    // Game-wide, a version that fails in every room is rolled back for new rooms too.
    let bad = load(&rooms, "bad-restore").await;
    let report = rooms
        .swap_game("arena", bad, SwapPolicy::AllRooms)
        .await
        .unwrap();
    assert!(report.rolled_back, "{}", report.summary());
    assert!(
        report.summary().contains("0 rooms swapped, 1 failed"),
        "{}",
        report.summary()
    );
    assert_eq!(rooms.active_module("arena").unwrap().version, "1.0.0");
    room.message(1, input(2, 5, 5));
    let s = p
        .until(WAIT, |s| avatar(s, 1).is_some_and(|a| a["seq"] == 2))
        .await;
    assert_eq!(s["rules"], 1);
    assert_eq!(
        avatar(&s, 1).unwrap()["x"],
        510,
        "the old instance kept its state"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_for_another_contract_or_not_components_are_refused_by_name() {
    let rooms = rooms();
    let rt = rooms.runtime();
    let old = ludus::guest_build::example_game_bytes("old-contract").unwrap();
    match rt.load(old).await {
        Err(e @ ModuleError::ContractMismatch { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("ludus:game@0.0.1")
                    && msg.contains(&ludus::runtime::CONTRACT.to_string()),
                "{msg}"
            );
        }
        other => panic!("expected a contract mismatch, got {other:?}"),
    }
    let garbage = rt.load(b"definitely not wasm".to_vec()).await.unwrap_err();
    assert!(
        matches!(garbage, ModuleError::NotAComponent(_)),
        "{garbage}"
    );
    let core = rt.load(b"\0asm\x01\0\0\0".to_vec()).await.unwrap_err();
    assert!(core.to_string().contains("core module"), "{core}");
    let mut truncated = ludus::guest_build::example_game_bytes("arena").unwrap();
    truncated.truncate(truncated.len() / 2);
    assert!(matches!(
        rt.load(truncated).await,
        Err(ModuleError::Compile(_))
    ));
    assert_eq!(rt.module_count(), 0, "nothing refused is kept");
}

/// A module built for the older contract 0.2.0 still loads and plays beside games of
/// the current one, and keeps its state across a live swap to itself; `ludus check`
/// names its contract.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_game_built_for_contract_0_2_plays_beside_games_of_the_current_one() {
    let rooms = rooms();
    let old = install(&rooms, "contract-0-2").await;
    let new = install(&rooms, "arena").await;
    assert_eq!(old.contract.version, "0.2.0");
    assert_eq!(new.contract, ludus::runtime::CONTRACT);
    assert_eq!(ludus::runtime::CONTRACT.version, "0.3.0");

    let echo = common::room(&rooms, "contract-0-2").await;
    let arena = common::room(&rooms, "arena").await;
    let mut a = join(&echo, 1).await;
    let mut b = join(&arena, 2).await;
    let reply = |event: RoomEvent| match event {
        RoomEvent::Message { bytes, .. } => String::from_utf8(bytes.to_vec()).unwrap(),
        other => panic!("expected an echo, got {other:?}"),
    };
    echo.message(1, b"hello".to_vec());
    assert_eq!(reply(a.event(WAIT).await), "1:hello");
    arena.message(2, input(1, 1, 0));
    b.until(WAIT, |s| avatar(s, 2).is_some_and(|p| p["seq"] == 1))
        .await;

    // A live swap between two instances of the 0.2.0 game keeps its count.
    let report = rooms
        .swap_game("contract-0-2", old.clone(), SwapPolicy::AllRooms)
        .await
        .unwrap();
    assert!(report.failures().next().is_none(), "{}", report.summary());
    echo.message(1, b"again".to_vec());
    assert_eq!(reply(a.event(WAIT).await), "2:again");

    let path = ludus::guest_build::example_games_dir()
        .join("target/wasm32-wasip2/release/contract_0_2.wasm");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ludus"))
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("contract: ludus:game@0.2.0 (older"), "{text}");
}

/// A room whose snapshots a test watches, to check it ticks on time meanwhile.
struct Neighbour {
    player: Player,
    _room: RoomHandle,
}

impl Neighbour {
    async fn start(rooms: &Rooms) -> Self {
        let room = common::room(rooms, "arena").await;
        let player = join(&room, 1000).await;
        Neighbour {
            player,
            _room: room,
        }
    }

    /// Reads snapshots for `span` and asserts they kept coming at 20 Hz.
    async fn assert_on_time(&mut self, span: Duration) {
        self.player.drain();
        let start = Instant::now();
        let mut last = Instant::now();
        let mut count = 0;
        let mut worst = Duration::ZERO;
        while start.elapsed() < span {
            self.player.json().await;
            worst = worst.max(last.elapsed());
            last = Instant::now();
            count += 1;
        }
        let expected = (span.as_millis() / 50) as usize;
        assert!(
            count + 3 >= expected,
            "neighbour ticked {count} times in {span:?}, expected ~{expected}"
        );
        assert!(
            worst < Duration::from_millis(120),
            "neighbour's longest gap between ticks: {worst:?}"
        );
    }
}

async fn faulty_room(rooms: &Rooms, config: &str) -> Result<RoomHandle, CreateError> {
    rooms
        .create(CreateRoom {
            game: "faulty".into(),
            config: Some(config.into()),
            ..Default::default()
        })
        .await
}

/// Sends `n` counted messages and waits until a checkpoint has surely been taken.
async fn count_and_checkpoint(room: &RoomHandle, p: &mut Player, n: u64) {
    for _ in 0..n {
        room.message(p.id, b"hello".to_vec());
    }
    p.until(WAIT, |m| m["messages"] == n).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
}

async fn wait_for_restart(room: &RoomHandle, restarts: u32) {
    let deadline = Instant::now() + WAIT;
    while room.info().restarts < restarts {
        assert!(
            Instant::now() < deadline,
            "room did not restart: {:?}",
            room.info()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_in_init_refuses_the_room_only() {
    let rooms = rooms();
    install(&rooms, "faulty").await;
    install(&rooms, "arena").await;
    let mut neighbour = Neighbour::start(&rooms).await;
    match faulty_room(&rooms, r#"{"trap_in_init": true}"#).await {
        Err(CreateError::Guest(e)) => {
            assert_eq!(e.kind, GuestErrorKind::Panic);
            assert!(e.to_string().contains("asked to trap in init"), "{e}");
        }
        other => panic!("expected the game to fail in init, got {other:?}"),
    }
    assert_eq!(rooms.list().len(), 1, "only the neighbour exists");
    neighbour.assert_on_time(Duration::from_millis(500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_deadline_and_memory_failures_restore_the_room_from_its_checkpoint() {
    let rooms = common::rooms_with(RoomsConfig {
        max_restarts: 10,
        ..RoomsConfig::default()
    });
    install(&rooms, "faulty").await;
    install(&rooms, "arena").await;
    let mut neighbour = Neighbour::start(&rooms).await;
    let room = faulty_room(&rooms, "{}").await.unwrap();
    let mut p = join(&room, 1).await;
    count_and_checkpoint(&room, &mut p, 3).await;

    let cases: [(&[u8], &str); 5] = [
        (b"panic", "asked to panic on a message"),
        (b"spin", "messages ran past its deadline (5 ms)"),
        (b"spin-tick", "tick ran past its deadline (20 ms)"),
        (b"hog", "exceeded the room's memory cap"),
        (
            b"flood",
            "tick trapped: the game queued more than 4 MiB of messages in one call",
        ),
    ];
    for (i, (msg, expected)) in cases.into_iter().enumerate() {
        room.message(1, msg.to_vec());
        wait_for_restart(&room, i as u32 + 1).await;
        let info = room.info();
        let error = info.last_error.unwrap();
        assert!(
            error.contains(expected),
            "after {:?}: {error}",
            String::from_utf8_lossy(msg)
        );
        assert!(info.closed.is_none());
        // Back from the checkpoint: the counted messages survived, the player is still in.
        let s = p.until(WAIT, |m| m["tick"].is_u64()).await;
        assert_eq!(
            s["messages"],
            3,
            "state after {:?}: {s}",
            String::from_utf8_lossy(msg)
        );
        assert_eq!(info.seats, 1);
    }
    neighbour.assert_on_time(Duration::from_millis(500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_who_came_and_went_since_the_checkpoint_are_replayed_after_a_restore() {
    let rooms = rooms();
    install(&rooms, "faulty").await;
    let room = faulty_room(&rooms, "{}").await.unwrap();
    let mut a = join(&room, 1).await;
    let _b = join(&room, 2).await;
    count_and_checkpoint(&room, &mut a, 1).await; // the checkpoint holds players 1 and 2
    room.leave(2, ludus::rooms::LeaveReason::Left);
    let _c = join(&room, 3).await;
    room.message(1, b"panic".to_vec());
    wait_for_restart(&room, 1).await;
    a.drain();
    let s = a.until(WAIT, |m| m["tick"].is_u64()).await;
    assert_eq!(
        s["players"],
        serde_json::json!([1, 3]),
        "the game sees who is really in the room: {s}"
    );
    assert_eq!(s["messages"], 1);
    assert_eq!(room.info().seats, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_game_that_fails_on_every_tick_is_closed_with_the_reason_while_its_neighbour_ticks_on() {
    let rooms = rooms();
    install(&rooms, "faulty").await;
    install(&rooms, "arena").await;
    let mut neighbour = Neighbour::start(&rooms).await;
    let room = faulty_room(&rooms, r#"{"spin_every_tick": true}"#)
        .await
        .unwrap();
    let mut p = join(&room, 1).await;
    let watch = tokio::spawn(async move {
        neighbour.assert_on_time(Duration::from_millis(600)).await;
    });
    // The game never finishes a tick, so the only event the player gets is the close.
    let reason = match p.event(WAIT).await {
        RoomEvent::Closed { reason, .. } => reason,
        other => panic!("unexpected {other:?}"),
    };
    assert!(
        reason.contains("failed 4 times") && reason.contains("tick ran past its deadline"),
        "{reason}"
    );
    assert!(room.is_closed());
    watch.await.expect("the neighbour kept ticking on time");
}

/// A node does not start without its games, and says which game, which file and why.
#[tokio::test]
async fn a_node_refuses_to_start_with_a_broken_or_missing_game() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.wasm");
    std::fs::write(&broken, b"definitely not wasm").unwrap();
    let missing = dir.path().join("missing.wasm");
    for (path, why) in [
        (&broken, "not a WebAssembly component"),
        (&missing, "reading"),
    ] {
        let mut config = ludus::config::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..ludus::config::Config::default()
        };
        config.admin.listen = "127.0.0.1:0".parse().unwrap();
        config.games.insert(
            "broken".into(),
            ludus::config::GameConfig {
                module: path.clone(),
                policy: ludus::rooms::SwapPolicy::AllRooms,
            },
        );
        let Err(err) = ludus::server::start(config).await else {
            panic!("a node started with {}", path.display());
        };
        let err = format!("{err:#}");
        assert!(err.contains("game `broken`"), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains(why), "{err}");
    }
}
