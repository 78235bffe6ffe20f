//! The TypeScript client (`clients/ts`) against a real node: its own tests
//! (`clients/ts/test/*.test.mjs`, Node's test runner) play arena in both formats, drop
//! and resume a connection, log in with a device, use storage, leaderboards and the
//! matchmaker. The play page's use of it is checked in Chromium by `browser.rs`.

mod common;

use common::serve;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// `clients/ts`, with its npm packages installed and its TypeScript compiled to `dist`.
fn typescript_client() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../clients/ts");
    let run = |program: &str, args: &[&str]| {
        let out = Command::new(program)
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap_or_else(|e| {
                panic!("{program} does not run ({e}): install Node.js and npm (`apt-get install nodejs npm`)")
            });
        assert!(
            out.status.success(),
            "{program} {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    if !dir.join("node_modules/@bufbuild/protobuf").exists() {
        run("npm", &["ci", "--no-audit", "--no-fund"]);
    }
    run("npx", &["tsc", "-p", "tsconfig.json"]);
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_client_plays_resumes_and_uses_storage_against_a_real_node() {
    let dir = tokio::task::spawn_blocking(typescript_client)
        .await
        .unwrap();
    let (server, _games) = serve(&["arena"], |c| {
        c.leaderboards
            .insert("ts.wins".into(), ludus::storage::Leaderboard::default());
        c.matchmaking.default.wait = Duration::from_millis(200);
    })
    .await;
    let run = tokio::process::Command::new("node")
        .args(["--test", "--test-timeout=60000", "test/client.test.mjs"])
        .current_dir(&dir)
        .env("LUDUS_URL", server.url())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the TypeScript client's tests finished within 3 minutes")
        .expect("node runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "node --test failed:\n{report}");
    // Every test ran and passed (none skipped, cancelled or left out).
    let count = |what: &str| {
        report
            .lines()
            .find_map(|l| l.strip_prefix(&format!("# {what} ")))
            .and_then(|n| n.trim().parse::<u32>().ok())
            .unwrap_or_else(|| panic!("no `# {what}` count in the report:\n{report}"))
    };
    assert!(count("pass") >= 7, "{report}");
    for what in ["fail", "cancelled", "skipped", "todo"] {
        assert_eq!(count(what), 0, "{what}:\n{report}");
    }
    server.stop().await;
}
