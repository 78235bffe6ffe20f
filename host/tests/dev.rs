//! `ludus dev` with a TypeScript game, as a designer uses it: a copy of arena-ts is
//! built (its `package.json` makes it TypeScript), served, played; a saved change is
//! rebuilt and swapped live into the running room, where the player keeps its position
//! and the new rule applies; a save that does not build prints the error with its file
//! and line, and the running version stays.

mod common;

use common::{Proc, arena_snapshot, eventually, free_port};
use ludus::client::{Client, ClientOptions};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BUILD_WAIT: Duration = Duration::from_secs(240);

/// Appended to the output when `ludus dev` exits (a wait then fails at once).
const EXITED: &str = "[ludus dev exited]\n";

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
                Instant::now() < deadline && !text.ends_with(EXITED),
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
    let applied = async {
        loop {
            let snapshot = arena_snapshot(client, room).await;
            if let Some(me) = common::avatar(&snapshot, client.player_id)
                && me["seq"] == seq
            {
                return me["x"].as_i64().unwrap();
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), applied)
        .await
        .unwrap_or_else(|_| panic!("input {seq} not applied within 30 s"))
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
            output.0.lock().unwrap().push_str(EXITED);
        }
    });
    let _node = Proc::new(child);
    let text = output.wait_for("designer console", 0).await;
    assert!(text.contains("serving arena-ts"), "{text}");
    let console = text
        .lines()
        .find(|l| l.starts_with("designer console"))
        .and_then(|l| l.split_whitespace().last())
        .expect("the console's address")
        .to_owned();
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

    // The designer console in Chromium watches the room while the game changes.
    use tokio::io::AsyncBufReadExt;
    let (chromium, tests) = common::browser_tools();
    let mut watcher = tokio::process::Command::new("node")
        .arg(tests.join("console.mjs"))
        .args([&console, room, &player.player_id.to_string()])
        .env("CHROMIUM", &chromium)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs (install Node.js)");
    let mut said = tokio::io::BufReader::new(watcher.stdout.take().unwrap()).lines();
    let mut next_said = async || {
        tokio::time::timeout(BUILD_WAIT, said.next_line())
            .await
            .expect("the console script said something in time")
            .unwrap()
            .unwrap_or_else(|| "(the console script ended: see FAIL above)".into())
    };
    assert_eq!(next_said().await, "READY");

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
    assert_eq!(next_said().await, "SWAPPED");

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
    let done = next_said().await;
    assert!(done.starts_with("DONE"), "{done}");
    let status = tokio::time::timeout(Duration::from_secs(30), watcher.wait())
        .await
        .expect("the console script ended")
        .unwrap();
    assert!(
        status.success(),
        "the console checks failed (see FAIL above)"
    );
}
