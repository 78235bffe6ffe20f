//! The admin port: `/healthz`, `/readyz` and `/metrics` answer without a token,
//! `/metrics` is read with a real Prometheus text parser and its values move when
//! clients play, a game is swapped live and errors are sent, `/readyz` says why a node
//! is not ready when it loses etcd or its database and comes back with them, and the
//! rest of the port asks for the admin token.

mod common;

use common::cluster::{create_outcome, ludus, node_with};
use common::{Etcd, eventually};
use ludus::client::{Client, ClientOptions};
use std::net::SocketAddr;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);
const TOKEN: &str = "an admin token for the test, long enough";

/// The samples of a scrape, parsed by `prometheus-parse`.
async fn scrape(admin: SocketAddr) -> prometheus_parse::Scrape {
    let text = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .expect("/metrics answers")
        .text()
        .await
        .unwrap();
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text")
}

/// The value of `name` with `labels` (a counter, a gauge, or a histogram's count).
fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    use prometheus_parse::Value;
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            Value::Summary(_) => 0.0,
        })
        .sum()
}

async fn get(url: String, token: Option<&str>) -> (u16, String) {
    let mut request = reqwest::Client::new().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let answer = request.send().await.expect("the admin port answers");
    (answer.status().as_u16(), answer.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_when_clients_play_games_swap_and_errors_are_sent() {
    let (server, _dir) = common::serve(&["arena"], |c| {
        c.admin.token = Some(TOKEN.into());
    })
    .await;
    let admin = server.admin_addr;
    assert_ne!(
        admin, server.addr,
        "the admin port is apart from the public one"
    );
    assert_eq!(
        get(format!("http://{admin}/healthz"), None).await,
        (200, "ok\n".into())
    );
    assert_eq!(
        get(format!("http://{admin}/readyz"), None).await,
        (200, "ready\n".into())
    );
    let before = scrape(admin).await;

    let mut player = Client::guest(server.addr, "counted", ClientOptions::default())
        .await
        .unwrap();
    player.create("arena", "metered", "").await.unwrap();
    create_outcome(&mut player).await.unwrap();
    for seq in 1..=10 {
        let input = format!(r#"{{"seq": {seq}, "dx": 1, "dy": 0}}"#);
        player.message("metered", input).await.unwrap();
    }
    // A join of a room that does not exist is answered with an error frame.
    player.join("nowhere").await.unwrap();
    assert!(create_outcome(&mut player).await.is_err());
    let v2 = common::load(&server.rooms, "arena-v2").await;
    server
        .rooms
        .swap_game("arena", v2, ludus::rooms::SwapPolicy::AllRooms)
        .await
        .expect("the live swap");

    let mut after = scrape(admin).await;
    eventually(WAIT, "ticks are recorded", async || {
        after = scrape(admin).await;
        value(
            &after,
            "ludus_tick_duration_seconds_count",
            &[("game", "arena")],
        ) > 0.0
    })
    .await;
    let moved = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    // 1 create, 10 messages, 1 join: at least 12 frames from the client.
    assert!(moved("ludus_client_frames_total", &[]) >= 12.0);
    assert!(moved("ludus_client_bytes_total", &[]) > 12.0 * 10.0);
    assert!(moved("ludus_server_frames_total", &[]) >= 3.0);
    assert!(moved("ludus_server_bytes_total", &[]) > 0.0);
    assert!(moved("ludus_error_frames_total", &[("code", "room_not_found")]) >= 1.0);
    assert!(moved("ludus_swaps_total", &[("result", "ok")]) >= 1.0);
    assert!(moved("ludus_swap_pause_seconds_count", &[]) >= 1.0);
    // Game calls are timed by call, and storage writes (checkpoints) by operation.
    assert!(moved("ludus_guest_call_seconds_count", &[("call", "tick")]) >= 1.0);
    assert!(moved("ludus_guest_call_seconds_count", &[("call", "join")]) >= 1.0);
    assert!(moved("ludus_guest_call_seconds_count", &[("call", "messages")]) >= 1.0);
    assert!(
        value(
            &after,
            "ludus_storage_operation_duration_seconds_count",
            &[("operation", "save_batch")]
        ) >= 1.0
    );
    assert!(value(&after, "ludus_connections", &[]) >= 1.0);
    assert!(value(&after, "ludus_sessions", &[]) >= 1.0);
    // The process's own CPU time grows while it plays, and its memory is real.
    assert!(moved("ludus_process_cpu_seconds", &[]) > 0.0);
    let rss = value(&after, "ludus_process_resident_memory_bytes", &[]);
    assert!(rss > 1048576.0, "resident memory {rss} bytes");
    assert_eq!(
        value(
            &after,
            "ludus_rooms",
            &[("game", "arena"), ("version", "2.0.0")]
        ),
        1.0,
        "the room runs v2 after the swap"
    );
    // Every sample is named by the conventions: the prefix, and units in the name.
    for sample in &after.samples {
        assert!(sample.metric.starts_with("ludus_"), "{}", sample.metric);
    }

    // The client goes: the close is counted, by code.
    player.close().await;
    eventually(WAIT, "the session ends", async || {
        value(&scrape(admin).await, "ludus_sessions", &[]) == 0.0
    })
    .await;

    // Health and metrics need no token; the rest of the port does.
    let api = format!("http://{admin}/v1/nodes");
    let (status, body) = get(api.clone(), None).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("admin token"), "{body}");
    let (status, _) = get(api.clone(), Some("a wrong token")).await;
    assert_eq!(status, 401);
    let (status, body) = get(api, Some(TOKEN)).await;
    assert_eq!(status, 404, "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_says_why_while_etcd_or_the_database_is_gone_and_recovers() {
    let mut etcd = Etcd::start().await;
    let mut pg = common::postgres::Postgres::start();
    let url = pg.database("ready").await;
    let (node, _dir) = node_with(&etcd, "/ludus/ready/", "r", Duration::from_secs(2), |c| {
        c.storage.url = Some(url);
        c.storage.acquire_timeout = Duration::from_millis(500);
    })
    .await;
    let readyz = format!("http://{}/readyz", node.admin_addr);
    let healthz = format!("http://{}/healthz", node.admin_addr);
    eventually(WAIT, "ready", async || {
        get(readyz.clone(), None).await.0 == 200
    })
    .await;

    etcd.kill();
    let mut last = (0, String::new());
    eventually(WAIT, "not ready without etcd", async || {
        last = get(readyz.clone(), None).await;
        last.0 == 503
    })
    .await;
    assert!(last.1.contains("no etcd session"), "{}", last.1);
    assert_eq!(
        get(healthz.clone(), None).await.0,
        200,
        "alive all the same"
    );
    etcd.run().await;
    eventually(
        Duration::from_secs(40),
        "ready with etcd back",
        async || get(readyz.clone(), None).await.0 == 200,
    )
    .await;

    pg.stop();
    eventually(WAIT, "not ready without the database", async || {
        last = get(readyz.clone(), None).await;
        last.0 == 503
    })
    .await;
    assert!(last.1.contains("storage unreachable"), "{}", last.1);
    pg.resume();
    eventually(WAIT, "ready with the database back", async || {
        get(readyz.clone(), None).await.0 == 200
    })
    .await;

    // Drained, the node is not ready and takes no new players; undone, it is and does.
    let (token, _) = ludus::client::guest_login(node.addr, "late").await.unwrap();
    let ws = format!("ws://{}/v1/ws?token={token}", node.addr);
    let drain = |undo: bool| {
        let url = etcd.url.clone();
        tokio::task::spawn_blocking(move || {
            let mut args = vec!["drain", "r", "--etcd", &url, "--prefix", "/ludus/ready/"];
            if undo {
                args.push("--undo");
            }
            let (ok, out, err) = ludus(&args);
            assert!(ok, "ludus {args:?}: {out}{err}");
            out
        })
    };
    let out = drain(false).await.unwrap();
    assert!(out.contains("0 rooms moved"), "{out}");
    let (status, body) = get(readyz.clone(), None).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("draining"), "{body}");
    match tokio_tungstenite::connect_async(&ws).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(answer)) => {
            assert_eq!(answer.status(), 503);
            let body = String::from_utf8_lossy(answer.body().as_deref().unwrap_or_default());
            assert!(body.contains("draining"), "{body}");
        }
        other => panic!("a new connection to a drained node is refused: {other:?}"),
    }
    let out = drain(true).await.unwrap();
    assert!(out.contains("takes new players and rooms again"), "{out}");
    assert_eq!(get(readyz.clone(), None).await.0, 200);
    tokio_tungstenite::connect_async(&ws)
        .await
        .expect("connects once the drain is undone");
    node.stop().await;
}

/// `--log-format json` writes one JSON object per line; a room's lines carry the span
/// `room{id, game}` and a session's `session{id, player}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_room_and_session_spans() {
    let dir = tempfile::tempdir().unwrap();
    let module = common::module_file(&dir, "arena");
    let addr: SocketAddr = format!("127.0.0.1:{}", common::free_port())
        .parse()
        .unwrap();
    let log_path = dir.path().join("ludus.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut node = common::Proc::new(
        std::process::Command::new(env!("CARGO_BIN_EXE_ludus"))
            .args([
                "serve",
                "--log-format",
                "json",
                "--listen",
                &addr.to_string(),
            ])
            .args(["--admin", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--game")
            .arg(format!("arena={module}"))
            .env("LUDUS_LOG", "warn,ludus=debug")
            .env("LUDUS_ROOMS__EMPTY_TIMEOUT", "200ms")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting ludus serve"),
    );
    let mut player = eventually_connect(addr).await;
    player.create("arena", "logged", "").await.unwrap();
    create_outcome(&mut player).await.expect("the room");
    let player_id = player.player_id;
    player.close().await;
    let mut lines: Vec<serde_json::Value> = Vec::new();
    eventually(WAIT, "the room's and the session's lines", async || {
        let text = std::fs::read_to_string(&log_path).unwrap();
        lines = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        let in_span = |name: &str, key: &str, value: &serde_json::Value| {
            lines.iter().any(|l| {
                l["spans"].as_array().is_some_and(|spans| {
                    spans.iter().any(|s| s["name"] == name && &s[key] == value)
                })
            })
        };
        in_span("room", "id", &"logged".into()) && in_span("session", "player", &player_id.into())
    })
    .await;
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["fields"].is_object())
    );
    node.signal("TERM");
    let status = node.exited_within(Duration::from_secs(15)).await;
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

async fn eventually_connect(addr: SocketAddr) -> Client {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match Client::guest(addr, "logger", ClientOptions::default()).await {
            Ok(c) => return c,
            Err(e) if std::time::Instant::now() > deadline => {
                panic!("the node never answered: {e:#}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
