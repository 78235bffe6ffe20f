//! The browser page in headless Chromium (Debian's `chromium`, driven by Playwright):
//! keys move the player, and the position carries across a live swap without a reload.

mod common;

use common::{replace_file, serve};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_moves_a_player_with_keys_across_a_live_swap() {
    let (chromium, tests) = common::browser_tools();

    let (server, dir) = serve(&["arena"], |_| {}).await;
    let mut node = tokio::process::Command::new("node")
        .arg(tests.join("browser.mjs"))
        .arg(format!("{}/?room=browser", server.url()))
        .env("CHROMIUM", &chromium)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs (install Node.js)");
    let mut lines = BufReader::new(node.stdout.take().unwrap()).lines();
    let mut done = None;
    let run = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line == "SWAP" {
                let v2 = ludus::guest_build::example_game_bytes("arena-v2").unwrap();
                replace_file(&dir.path().join("arena.wasm"), &v2);
            } else if line.starts_with("DONE") {
                done = Some(line);
            }
        }
        node.wait().await.unwrap()
    };
    let status = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("browser test finished in time");
    assert!(
        status.success(),
        "the browser checks failed (see FAIL above)"
    );
    let done = done.expect("the script reported its result");
    assert!(done.contains("rules v2"), "{done}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_page_shows_rooms_deploys_and_rolls_back() {
    const TOKEN: &str = "an admin token for the page test";
    let (chromium, tests) = common::browser_tools();
    let (server, _dir) = serve(&["arena"], |c| {
        c.admin.token = Some(TOKEN.into());
        c.rooms.checkpoint_interval = Duration::from_millis(200);
    })
    .await;
    // A player in a room, so the room has a saved state to show.
    let mut player = ludus::client::Client::guest(server.addr, "watcher", Default::default())
        .await
        .unwrap();
    player.create("arena", "watched", "").await.unwrap();
    common::eventually(
        Duration::from_secs(10),
        "the room is checkpointed",
        async || {
            server
                .storage
                .saved_room("watched")
                .await
                .ok()
                .flatten()
                .is_some()
        },
    )
    .await;
    // Apart from the served module's directory, which the node watches.
    let upload = tempfile::tempdir().unwrap();
    let v2 = upload.path().join("arena-v2.wasm");
    std::fs::write(
        &v2,
        ludus::guest_build::example_game_bytes("arena-v2").unwrap(),
    )
    .unwrap();

    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("node")
            .arg(tests.join("admin.mjs"))
            .arg(format!("http://{}/", server.admin_addr))
            .arg(TOKEN)
            .arg(&v2)
            .env("CHROMIUM", &chromium)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the admin page test finished in time")
    .expect("node runs (install Node.js)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the admin page checks failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("DEPLOYED") && stdout.contains("DONE"),
        "{stdout}"
    );
    // The node agrees: arena went to v2 and back, and the room runs v1 again.
    let arena = server
        .rooms
        .games()
        .into_iter()
        .find(|g| g.name == "arena")
        .unwrap();
    assert_eq!(arena.version, "1.0.0");
    assert!(arena.last_swap.is_some(), "{arena:?}");
    let room = server.rooms.get("watched").expect("the room lives on");
    assert_eq!(room.info().version, "1.0.0");
    drop(player);
    server.stop().await;
}
