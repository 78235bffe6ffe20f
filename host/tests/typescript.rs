//! A TypeScript game on the host, beyond arena's rules (those are in `games.rs` and
//! `swap_and_faults.rs`, run against both builds): what the JS engine's WASI imports
//! reach (the room's seeded random stream, the host's clock, the room log), and that an
//! exception or a runaway loop is a failure of the game, restored like a Rust panic.
//! The fixture is `example-games/probe-ts`.

mod common;

use common::{install_as, join, rooms, rooms_with};
use ludus::rooms::{CreateRoom, RoomHandle, Rooms, RoomsConfig};
use std::io::Write;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const WAIT: Duration = Duration::from_secs(10);

async fn probe(rooms: &Rooms, seed: u64) -> RoomHandle {
    rooms
        .create(CreateRoom {
            game: "probe".into(),
            seed: Some(seed),
            ..Default::default()
        })
        .await
        .expect("creating a probe room")
}

/// Asks a probe room something as player 1 and returns the answer.
async fn ask(room: &RoomHandle, player: &mut common::Player, what: &str) -> serde_json::Value {
    room.message(player.id, what.as_bytes().to_vec());
    player.json().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn math_random_is_the_rooms_seeded_stream_and_date_is_the_hosts_clock() {
    let rooms = rooms();
    install_as(&rooms, "probe", "probe-ts").await;
    let mut answers = Vec::new();
    for seed in [7, 7, 8] {
        let room = probe(&rooms, seed).await;
        let mut p = join(&room, 1).await;
        answers.push(ask(&room, &mut p, "random").await);
    }
    let draws = answers[0]["math"].as_array().expect("three draws");
    assert_eq!(draws.len(), 3, "{}", answers[0]);
    assert!(
        draws
            .iter()
            .all(|d| d.as_f64().is_some_and(|d| (0.0..1.0).contains(&d))),
        "{}",
        answers[0]
    );
    assert_ne!(
        draws[0], draws[1],
        "Math.random repeats itself: {}",
        answers[0]
    );
    assert_eq!(
        answers[0], answers[1],
        "two rooms of the same seed draw the same numbers"
    );
    assert_ne!(
        answers[0]["math"], answers[2]["math"],
        "rooms of other seeds draw other numbers"
    );

    let room = probe(&rooms, 9).await;
    let mut p = join(&room, 1).await;
    let now = ask(&room, &mut p, "now").await;
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as f64;
    let (date, host) = (now["date"].as_f64().unwrap(), now["host"].as_f64().unwrap());
    assert!((date - host).abs() < 1000.0, "{now}");
    assert!(
        (date - wall).abs() < 5000.0,
        "Date.now() {date}, the host's clock {wall}"
    );
}

/// Everything `tracing` writes in this test binary.
static LOG: LazyLock<Arc<Mutex<Vec<u8>>>> = LazyLock::new(Arc::default);

struct Captured;

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_output_goes_to_the_room_log() {
    tracing_subscriber::fmt()
        .with_writer(|| Captured)
        .with_ansi(false)
        .with_env_filter("ludus::guest=info")
        .try_init()
        .expect("the only subscriber of this test binary");
    let rooms = rooms();
    install_as(&rooms, "probe", "probe-ts").await;
    let room = probe(&rooms, 1).await;
    let mut p = join(&room, 1).await;
    assert_eq!(ask(&room, &mut p, "log").await["logged"], true);
    let id = room.info().id.to_string();
    let log = || String::from_utf8_lossy(&LOG.lock().unwrap()).into_owned();
    let deadline = Instant::now() + WAIT;
    loop {
        let log = log();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(&id)).collect();
        let has =
            |text: &str, level: &str| lines.iter().any(|l| l.contains(text) && l.contains(level));
        if has(&format!("probe room {id} started"), "INFO")
            && has(&format!("console.log in room {id}"), "INFO")
            && has(&format!("console.error in room {id}"), "WARN")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the room log lacks the game's console lines:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exception_or_a_runaway_loop_is_a_failure_restored_from_the_checkpoint() {
    let rooms = rooms_with(RoomsConfig {
        max_restarts: 10,
        ..RoomsConfig::default()
    });
    install_as(&rooms, "probe", "probe-ts").await;
    let room = probe(&rooms, 1).await;
    let mut p = join(&room, 1).await;
    for n in 1..=3 {
        assert_eq!(ask(&room, &mut p, "hello").await["messages"], n);
    }
    // A checkpoint every 100 ms in the tests' config.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let cases = [
        ("throw", "the probe was asked to throw"),
        ("spin", "messages ran past its deadline"),
    ];
    for (restarts, (ask_for, expected)) in cases.into_iter().enumerate() {
        room.message(1, ask_for.as_bytes().to_vec());
        let deadline = Instant::now() + WAIT;
        while room.info().restarts <= restarts as u32 {
            assert!(Instant::now() < deadline, "no restart: {:?}", room.info());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let error = room.info().last_error.unwrap_or_default();
        assert!(error.contains(expected), "after {ask_for:?}: {error}");
        // Back from the checkpoint, with the player still in.
        p.drain();
        assert_eq!(
            ask(&room, &mut p, "hello").await["messages"],
            4 + restarts,
            "after {ask_for:?}"
        );
        assert_eq!(room.info().seats, 1);
        // Checkpointed before the next case.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
