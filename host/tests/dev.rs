//! `ludus dev` with a TypeScript game, as a designer uses it: a copy of arena-ts is
//! built (its `package.json` makes it TypeScript), served, played; a saved change is
//! rebuilt and swapped live into the running room, where the player keeps its position
//! and the new rule applies; a save that does not build prints the error with its file
//! and line, and the running version stays.

mod common;

use common::{Proc, eventually, free_port};
use ludus::client::{Client, ClientOptions};
use ludus::gateway::pb::server_frame::Body as Out;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BUILD_WAIT: Duration = Duration::from_secs(240);

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "dist" || name == "node_modules" {
            continue;
        }
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &to.join(&name));
        } else {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

/// What the dev process printed so far.
#[derive(Clone, Default)]
struct Output(Arc<Mutex<String>>);

impl Output {
    fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }

    async fn wait_for(&self, what: &str, after: usize) -> String {
        let deadline = Instant::now() + BUILD_WAIT;
        loop {
            let text = self.text();
            if text.get(after..).is_some_and(|t| t.contains(what)) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "`ludus dev` did not print {what:?}; it printed:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn arena_module(addr: SocketAddr) -> String {
    let games: Value = reqwest::get(format!("http://{addr}/v1/games"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    games
        .as_array()
        .and_then(|g| g.iter().find(|g| g["name"] == "arena"))
        .map(|g| g["module_sha256"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_default()
}

/// The next snapshot in which this player's input `seq` is applied: its x.
async fn x_after(client: &mut Client, room: &str, seq: u64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = tokio::time::timeout(left, client.recv())
            .await
            .expect("a snapshot in time")
            .expect("connected");
        if let Some(Out::Message(m)) = frame.body
            && m.room_id == room
        {
            let v: Value = serde_json::from_slice(&m.payload).expect("arena sends JSON");
            let me = v["players"]
                .as_array()
                .and_then(|p| p.iter().find(|p| p["id"] == client.player_id).cloned());
            if let Some(me) = me
                && me["seq"] == seq
            {
                return me["x"].as_i64().unwrap();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ludus_dev_builds_serves_and_swaps_a_typescript_game_live_on_save() {
    let dir = tempfile::tempdir().unwrap();
    let game = dir.path().join("arena-ts");
    copy_dir(
        &ludus::guest_build::example_games_dir().join("arena-ts"),
        &game,
    );
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ludus"))
        .arg("dev")
        .arg(&game)
        .args(["--listen", &addr.to_string()])
        .env("LUDUS_ADMIN__LISTEN", "127.0.0.1:0")
        .env("LUDUS_DATA_DIR", dir.path().join("data"))
        .env("LUDUS_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("starting ludus dev");
    let output = Output::default();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn({
        let output = output.clone();
        move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let mut text = output.0.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        }
    });
    let _node = Proc::new(child);
    output.wait_for("serving arena-ts", 0).await;
    eventually(Duration::from_secs(10), "the node answers", async || {
        !arena_module(addr).await.is_empty()
    })
    .await;
    let first = arena_module(addr).await;

    // A player moves by 10 (arena's step, clamped) in a room.
    let mut player = Client::guest(addr, "designer", ClientOptions::default())
        .await
        .unwrap();
    let room = "dev-room";
    player.create("arena", room, "").await.unwrap();
    player
        .message(room, json!({"seq": 1, "dx": 50, "dy": 0}).to_string())
        .await
        .unwrap();
    assert_eq!(x_after(&mut player, room, 1).await, 510);

    // Save a new rule: steps of up to 40.
    let source = game.join("src/arena.ts");
    let text = std::fs::read_to_string(&source).unwrap();
    let rule = "const maxStep = rules === 1 ? 10 : 20;";
    assert!(text.contains(rule), "arena.ts changed: update this test");
    let printed = output.text().len();
    std::fs::write(
        &source,
        text.replace(rule, "const maxStep = rules === 1 ? 40 : 20;"),
    )
    .unwrap();
    output.wait_for("swapped live", printed).await;
    let second = arena_module(addr).await;
    assert_ne!(first, second, "a new module runs");
    // The same room, the same player, its position kept, the new rule in force.
    player
        .message(room, json!({"seq": 2, "dx": 50, "dy": 0}).to_string())
        .await
        .unwrap();
    assert_eq!(x_after(&mut player, room, 2).await, 550);

    // A save that does not build: the error names the file and line, the game stays.
    let printed = output.text().len();
    let broken = std::fs::read_to_string(&source)
        .unwrap()
        .replace("state.tick += 1;", "state.tick += ;");
    std::fs::write(&source, broken).unwrap();
    let text = output.wait_for("the running version stays", printed).await;
    assert!(
        text[printed..].contains("arena.ts:"),
        "the build error names the file: {}",
        &text[printed..]
    );
    assert_eq!(arena_module(addr).await, second);
    player
        .message(room, json!({"seq": 3, "dx": -50, "dy": 0}).to_string())
        .await
        .unwrap();
    assert_eq!(x_after(&mut player, room, 3).await, 510);
}
