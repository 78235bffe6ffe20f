//! Rooms that outlive their node: a `ludus serve` process killed (SIGKILL) or stopped
//! (SIGTERM) and started again on the same data directory and address brings back
//! every room from its last checkpoint and every session; real WebSocket clients
//! playing arena resume into their room, and arena's tick counter and positions are
//! the evidence. In-process tests cover what is written and when.

mod common;

use common::cluster::create_outcome;
use common::{Proc, arena_snapshot as snapshot, eventually, module_file};
use ludus::client::{Client, ClientOptions};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);
/// Arena's tick rate (the host's default).
const HZ: f64 = 20.0;

fn serve(addr: SocketAddr, data: &std::path::Path, module: &str) -> Proc {
    Proc::new(
        std::process::Command::new(env!("CARGO_BIN_EXE_ludus"))
            .args(["serve", "--listen", &addr.to_string()])
            .args(["--admin", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data)
            .arg("--game")
            .arg(format!("arena={module}"))
            // No auth.secret: the node keeps its signing key in the data directory, so
            // the players' tokens still work after the restart.
            .env_remove("LUDUS_AUTH__SECRET")
            .env("LUDUS_GATEWAY__GRACE_PERIOD", "4s")
            .env(
                "LUDUS_LOG",
                std::env::var("RESTART_LOG").unwrap_or("warn".into()),
            )
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("starting ludus serve"),
    )
}

async fn answers(addr: SocketAddr) {
    common::node_answers(addr, WAIT).await;
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

/// One round for each way a node ends: the room, its state and both sessions come
/// back; the player who resumes is in the room at once (no leave/join), is told the
/// session was restored, and plays on; the one who never comes back leaves after the
/// grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_or_stopped_and_started_again_brings_back_its_rooms_and_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let module = module_file(&dir, "arena");
    for signal in ["KILL", "TERM"] {
        let data = dir.path().join(format!("data-{signal}"));
        let addr: SocketAddr = format!("127.0.0.1:{}", common::free_port())
            .parse()
            .unwrap();
        let mut node = serve(addr, &data, &module);
        answers(addr).await;
        let opts = ClientOptions {
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(1),
            max_attempts: 40,
            ..ClientOptions::default()
        };
        let mut stays = Client::guest(addr, "stays", opts.clone()).await.unwrap();
        let mut leaves = Client::guest(addr, "leaves", opts).await.unwrap();
        let room = "kept";
        stays.create("arena", room, "").await.unwrap();
        create_outcome(&mut stays).await.unwrap();
        leaves.join(room).await.unwrap();
        create_outcome(&mut leaves).await.unwrap();
        // Moves, then a quiet time longer than the checkpoint interval (1 s): the
        // position is in the last checkpoint.
        for seq in 1..=6 {
            let input = json!({ "seq": seq, "dx": 7, "dy": -3 }).to_string();
            stays.message(room, input).await.unwrap();
        }
        let expected = (500 + 6 * 7, 500 - 6 * 3);
        loop {
            let s = snapshot(&mut stays, room).await;
            if position(&s, stays.player_id) == Some(expected) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(1600)).await;
        let mut before = snapshot(&mut stays, room).await;
        assert_eq!(position(&before, stays.player_id), Some(expected));
        assert!(position(&before, leaves.player_id).is_some());

        node.signal(signal);
        let status = node
            .exited_within(Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("SIG{signal}: still running"));
        if signal == "TERM" {
            assert!(status.success(), "SIGTERM: exit status {status}");
        }
        let mut node = serve(addr, &data, &module);
        answers(addr).await;
        let ready = Instant::now();

        // The player who stays resumes by itself (its client retries) into the room;
        // snapshots the old process sent before it ended come first.
        let after = loop {
            let s = snapshot(&mut stays, room).await;
            if stays.restores == 0 {
                before = s;
            } else {
                break s;
            }
        };
        let since_ready = ready.elapsed().as_secs_f64();
        eprintln!(
            "SIG{signal}: last tick before {}, first after {} ({since_ready:.2} s after the new \
             process answered)",
            tick(&before),
            tick(&after)
        );
        assert_eq!(stays.restores, 1, "SIG{signal}: the welcome says restored");
        assert_eq!(
            position(&after, stays.player_id),
            Some(expected),
            "SIG{signal}: the position came back from the checkpoint: {after}"
        );
        assert!(
            tick(&after) + (HZ as u64) + 2 >= tick(&before),
            "SIG{signal}: tick {} went back more than one checkpoint interval from {}",
            tick(&after),
            tick(&before)
        );
        assert!(
            (tick(&after) as f64) <= tick(&before) as f64 + 2.0 + HZ * since_ready,
            "SIG{signal}: tick {} jumped ahead of {} ({since_ready:.2} s since the restart)",
            tick(&after),
            tick(&before)
        );
        assert!(
            position(&after, leaves.player_id).is_some(),
            "SIG{signal}: the other member is held for its grace period: {after}"
        );
        // Play goes on.
        let input = json!({ "seq": 7, "dx": 1, "dy": 1 }).to_string();
        stays.message(room, input).await.unwrap();
        let moved = (expected.0 + 1, expected.1 + 1);
        loop {
            let s = snapshot(&mut stays, room).await;
            if position(&s, stays.player_id) == Some(moved) {
                break;
            }
        }
        // The player who never came back leaves after the grace period (4 s).
        let restarted = Instant::now();
        loop {
            let s = snapshot(&mut stays, room).await;
            if position(&s, leaves.player_id).is_none() {
                break;
            }
            assert!(
                restarted.elapsed() < Duration::from_secs(15),
                "SIG{signal}: the absent player is still in the room"
            );
        }
        assert!(
            ready.elapsed() >= Duration::from_secs(3),
            "SIG{signal}: the absent player left before its grace period ended"
        );
        drop(leaves);
        node.kill();
    }
}

/// Rooms kept in `saver`'s storage under `node`.
fn kept_rooms(saver: &ludus::storage::Saver, node: &str) -> ludus::rooms::Rooms {
    let rt = ludus::runtime::Runtime::new(ludus::runtime::RuntimeLimits {
        max_instances: 8,
        ..Default::default()
    })
    .unwrap();
    let cfg = ludus::rooms::RoomsConfig {
        workers: 1,
        checkpoint_interval: Duration::from_millis(100),
        ..Default::default()
    };
    let checkpoints = ludus::rooms::Checkpoints::new(saver.clone(), node);
    ludus::rooms::Rooms::with_services(rt, cfg, None, Some(checkpoints)).unwrap()
}

/// A checkpoint is written when its room changed and skipped when it did not; with
/// PostgreSQL stopped, writes fail and are counted while the room plays on, and the
/// checkpoint lands once the database is back. A new set of rooms (as a new node would)
/// restores the room from it: board, members, turn, tick rate and label. A member
/// without a session there is held: attached later, it gets what the game sent it
/// meanwhile; not attached within the hold, it leaves the game.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_are_written_when_rooms_change_counted_when_they_fail_and_restore_them() {
    use ludus::storage::{Saver, Storage, StorageConfig};
    let mut pg = common::postgres::Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = StorageConfig {
        url: Some(pg.database("checkpoints").await),
        acquire_timeout: Duration::from_secs(1),
        ..StorageConfig::default()
    };
    let storage = Storage::open(&cfg, dir.path()).await.unwrap();
    let saver = Saver::new(storage.clone());
    let rooms = kept_rooms(&saver, "n1");
    common::install(&rooms, "tictactoe").await;
    let room = rooms
        .create(ludus::rooms::CreateRoom {
            game: "tictactoe".into(),
            id: Some("t1".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut x = common::join(&room, 10).await;
    let mut o = common::join(&room, 20).await;
    eventually(WAIT, "the first checkpoint is written", async || {
        room.info().checkpoint.is_some()
    })
    .await;
    // Nothing changes between moves: ticks (1 Hz) write nothing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let written = saver.written();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        saver.written(),
        written,
        "an unchanged room is not written again"
    );
    room.message(10, br#"{"cell": 0}"#.to_vec());
    eventually(WAIT, "a move is written", async || {
        saver.written() > written
    })
    .await;

    pg.stop();
    room.message(20, br#"{"cell": 4}"#.to_vec());
    let ticks = room.ticks();
    eventually(
        Duration::from_secs(20),
        "a failed write is counted",
        async || room.info().checkpoint_failures > 0,
    )
    .await;
    assert!(room.ticks() > ticks, "the room plays on");
    assert!(saver.failures() > 0);
    pg.resume();
    eventually(
        Duration::from_secs(30),
        "the checkpoint lands",
        async || {
            storage.saved_rooms("n1").await.is_ok_and(|rooms| {
                rooms.len() == 1
                    && board_of(&rooms[0].state).get(4) == Some(&serde_json::json!("O"))
            })
        },
    )
    .await;
    let saved = storage.saved_rooms("n1").await.unwrap().remove(0);
    assert!(storage.saved_rooms("n2").await.unwrap().is_empty());
    let record = ludus::rooms::RoomRecord::parse(&saved.record).unwrap();
    assert_eq!(record.game, "tictactoe");
    assert_eq!(record.tick_hz, 1);
    assert_eq!(record.label, "playing");
    assert_eq!(
        record.members,
        vec![(10, "player-10".to_owned()), (20, "player-20".to_owned())]
    );
    // The room moves: closed here (its checkpoint goes with it), restored on a new
    // node's rooms from the copy read above, with both players in it and X to move.
    room.close("moved").await;
    eventually(WAIT, "a closed room's checkpoint goes", async || {
        storage.saved_rooms("n1").await.is_ok_and(|r| r.is_empty())
    })
    .await;
    let again = kept_rooms(&saver, "n2");
    let module = common::install(&again, "tictactoe").await;
    let mut restore = ludus::rooms::RestoreRoom::from_saved(saved.clone(), module).unwrap();
    let (tx10, rx10) = ludus::mailbox::channel(64);
    let (tx20, rx20) = ludus::mailbox::channel(64);
    restore.sinks.insert(10, tx10);
    // Player 20's session is elsewhere: its place is held.
    restore.hold = Duration::from_secs(60);
    let back = again.restore(restore).await.expect("restored");
    let info = back.info();
    assert_eq!((info.seats, info.tick_hz), (2, 1));
    assert_eq!(info.label, "playing");
    x.rx = rx10;
    back.message(10, br#"{"cell": 1}"#.to_vec());
    let board = x.until(WAIT, |m| m.get("board").is_some()).await;
    assert_eq!(board["board"], "XX..O....", "{board}");
    assert_eq!(board["next"], 20);
    let (stranger, _) = ludus::mailbox::channel(4);
    assert!(matches!(
        back.attach(99, stranger).await,
        Err(ludus::rooms::JoinError::NotHeld(99))
    ));
    back.attach(20, tx20)
        .await
        .expect("a held player is attached");
    o.rx = rx20;
    let kept = o.until(WAIT, |m| m.get("board").is_some()).await;
    assert_eq!(
        kept["board"], "XX..O....",
        "what the game sent meanwhile: {kept}"
    );
    back.message(20, br#"{"cell": 5}"#.to_vec());
    let board = x.until(WAIT, |m| m["board"] == "XX..OO...").await;
    assert_eq!(board["next"], 10, "O moved without joining again: {board}");
    // Nobody attaches within the hold: the members leave the game.
    let third = kept_rooms(&saver, "n3");
    let module = common::install(&third, "tictactoe").await;
    let mut restore = ludus::rooms::RestoreRoom::from_saved(saved, module).unwrap();
    restore.id = "t2".into();
    restore.hold = Duration::from_millis(200);
    let alone = third.restore(restore).await.expect("restored");
    assert_eq!(alone.info().seats, 2, "both held");
    eventually(WAIT, "the held members leave", async || {
        alone.is_closed() || alone.info().seats == 0
    })
    .await;
    let (late, _) = ludus::mailbox::channel(4);
    assert!(alone.attach(10, late).await.is_err(), "too late");
    rooms.shutdown("done");
    again.shutdown("done");
    third.shutdown("done");
}

/// The cells of a saved tictactoe state (its JSON: `{"board": ["X", null, ...], ...}`).
fn board_of(state: &[u8]) -> Vec<serde_json::Value> {
    serde_json::from_slice::<serde_json::Value>(state)
        .ok()
        .and_then(|v| v["board"].as_array().cloned())
        .unwrap_or_default()
}
