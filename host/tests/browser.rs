//! The browser page in headless Chromium (Debian's `chromium`, driven by Playwright):
//! keys move the player, and the position carries across a live swap without a reload.

mod common;

use common::{replace_file, serve};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_moves_a_player_with_keys_across_a_live_swap() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "headless Chromium not found at {chromium}: install it with `apt-get install chromium` (or set CHROMIUM)"
    );
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("web/tests");
    assert!(
        tests.join("node_modules/playwright-core").exists(),
        "Playwright is not installed: run `npm ci --prefix {}`",
        tests.display()
    );

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
