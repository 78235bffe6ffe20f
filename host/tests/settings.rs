//! Live host settings (`ludus config`): a node applies a setting from etcd without a
//! restart, refuses an invalid one (keeping the old value and saying why in
//! `ludus status`), and rolls back by itself a change under which its games fail.

mod common;

use common::cluster::{create_outcome, ludus, node_with};
use common::{Etcd, eventually};
use ludus::client::{Client, ClientOptions};
use serde_json::Value;
use std::time::Duration;

const PREFIX: &str = "/ludus/settings/";
const WAIT: Duration = Duration::from_secs(20);
const TOKEN: &str = "the admin token of the settings test";

/// `ludus <args> --etcd URL --prefix PREFIX`, off the async threads; (ok, stdout+stderr).
async fn cli(etcd: &Etcd, args: &[&str]) -> (bool, String) {
    let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    args.extend([
        "--etcd".into(),
        etcd.url.clone(),
        "--prefix".into(),
        PREFIX.into(),
    ]);
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, out, err) = ludus(&args);
        (ok, format!("{out}{err}"))
    })
    .await
    .unwrap()
}

/// The node's entry as `ludus status --json` shows it.
async fn node_status(etcd: &Etcd, node: &str) -> Value {
    let (ok, out) = cli(etcd, &["status", "--json"]).await;
    assert!(ok, "{out}");
    let status: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    status["nodes"][node].clone()
}

async fn create(client: &mut Client, room: &str) -> Result<(), String> {
    client.create("arena", room, "").await.unwrap();
    create_outcome(client).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_apply_live_invalid_ones_are_refused_and_harmful_ones_roll_back() {
    ludus::logs::init("warn", ludus::logs::Format::Text);
    let etcd = Etcd::start().await;
    let (node, _dir) = node_with(&etcd, PREFIX, "s", Duration::from_secs(2), |c| {
        c.admin.settings_window = Duration::from_secs(30);
        c.admin.token = Some(TOKEN.into());
    })
    .await;
    let opts = ClientOptions::default();
    let mut player = Client::guest(node.addr, "builder", opts.clone())
        .await
        .unwrap();

    // Applied live: the room quota drops to 1 and the log filter changes.
    let (ok, out) = cli(
        &etcd,
        &[
            "config",
            "set",
            "rooms.max_rooms_per_player=1",
            "log.level=info",
        ],
    )
    .await;
    assert!(ok, "{out}");
    eventually(WAIT, "the node applies both", async || {
        let n = node_status(&etcd, "s").await;
        n["settings"]["rooms.max_rooms_per_player"] == "1" && n["settings"]["log.level"] == "info"
    })
    .await;
    create(&mut player, "first").await.expect("one room");
    let refused = create(&mut player, "second").await.unwrap_err();
    assert!(refused.contains("1 open rooms"), "{refused}");

    // Refused by the command before it reaches etcd, naming the problem.
    let (ok, out) = cli(&etcd, &["config", "set", "rooms.checkpoint_interval=1ms"]).await;
    assert!(!ok && out.contains("out of range"), "{out}");
    let (ok, out) = cli(&etcd, &["config", "set", "gateway.grace_period=5s"]).await;
    assert!(!ok && out.contains("does not change live"), "{out}");

    // Refused by the node when it gets into etcd anyway: the old value holds.
    let cfg = ludus::cluster::ClusterConfig {
        etcd: vec![etcd.url.clone()],
        prefix: Some(PREFIX.into()),
        ..Default::default()
    };
    let mut operator = ludus::cluster::Operator::connect(&cfg).await.unwrap();
    operator
        .set_setting(
            "rooms.max_rooms_per_player",
            Some("lots".into()),
            "a test".into(),
        )
        .await
        .unwrap();
    eventually(WAIT, "the node refuses it", async || {
        let n = node_status(&etcd, "s").await;
        n["refused"]["rooms.max_rooms_per_player"]
            .as_str()
            .is_some_and(|why| why.contains("`lots` refused") && why.contains("not a whole number"))
    })
    .await;
    let n = node_status(&etcd, "s").await;
    assert_eq!(n["settings"]["rooms.max_rooms_per_player"], "1", "{n}");
    let refused = create(&mut player, "third").await.unwrap_err();
    assert!(refused.contains("1 open rooms"), "still 1: {refused}");
    let (ok, out) = cli(&etcd, &["config", "unset", "rooms.max_rooms_per_player"]).await;
    assert!(ok, "{out}");
    eventually(
        WAIT,
        "unset: the node's own quota (4) holds again",
        async || node_status(&etcd, "s").await["settings"]["rooms.max_rooms_per_player"].is_null(),
    )
    .await;
    create(&mut player, "second")
        .await
        .expect("the configured quota again");

    // Harmful: a tick budget of 1 ms is valid, but arena's ticks now and then cross an
    // epoch and trap. The node sees its games fail and puts the budget back, for the
    // whole cluster.
    let mut players = vec![player];
    for i in 0..6 {
        let mut p = Client::guest(node.addr, &format!("p{i}"), opts.clone())
            .await
            .unwrap();
        create(&mut p, &format!("busy-{i}")).await.unwrap();
        players.push(p);
    }
    let failures_before = node.runtime().failures();
    let (ok, out) = cli(&etcd, &["config", "set", "runtime.tick_deadline=1ms"]).await;
    assert!(ok, "{out}");
    eventually(
        Duration::from_secs(40),
        "the change is rolled back in etcd",
        async || {
            let (_, out) = cli(&etcd, &["config", "get", "runtime.tick_deadline"]).await;
            out.contains("runtime.tick_deadline unset") && out.contains("rolled back: games failed")
        },
    )
    .await;
    assert!(node.runtime().failures() >= failures_before + 3);
    assert_eq!(
        node.runtime().deadlines().tick(),
        ludus::runtime::RuntimeLimits::default().tick_deadline,
        "the node's own budget is back"
    );
    let (ok, history) = cli(&etcd, &["config", "history", "runtime.tick_deadline"]).await;
    assert!(ok, "{history}");
    assert!(
        history.contains("runtime.tick_deadline = 1ms (ludus config"),
        "{history}"
    );
    assert!(
        history.contains("node s rolled it back: games failed"),
        "{history}"
    );
    // Rooms play on under the old budget.
    let failures = node.runtime().failures();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        node.runtime().failures(),
        failures,
        "no failures once rolled back"
    );
    // The admin API (the admin page's) sets them too, with the same checks.
    let http = reqwest::Client::new();
    let api = format!("http://{}/api", node.admin_addr);
    let set = |key: &'static str, value: Option<&'static str>| {
        http.post(format!("{api}/settings"))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({ "key": key, "value": value }))
            .send()
    };
    let answer = set("rooms.checkpoint_interval", Some("forever"))
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    let body = answer.text().await.unwrap();
    assert!(body.contains("not a duration"), "{body}");
    let answer = set("rooms.checkpoint_interval", Some("2s")).await.unwrap();
    assert!(
        answer.status().is_success(),
        "{}",
        answer.text().await.unwrap()
    );
    eventually(WAIT, "the node applies the page's setting", async || {
        node_status(&etcd, "s").await["settings"]["rooms.checkpoint_interval"] == "2s"
    })
    .await;
    assert_eq!(
        node.rooms.config().checkpoint_interval(),
        Duration::from_secs(2)
    );
    let (_, history) = cli(&etcd, &["config", "history", "rooms.checkpoint_interval"]).await;
    assert!(history.contains("(the admin page)"), "{history}");

    // In a cluster a deploy from the page becomes the desired version, and its rollback
    // the previous one.
    let v2 = ludus::guest_build::example_game_bytes("arena-v2").unwrap();
    let answer = http
        .post(format!("{api}/games/arena/deploy"))
        .bearer_auth(TOKEN)
        .body(v2)
        .send()
        .await
        .unwrap();
    assert!(
        answer.status().is_success(),
        "{}",
        answer.text().await.unwrap()
    );
    let desired = async || {
        let (ok, out) = cli(&etcd, &["status", "--json"]).await;
        assert!(ok, "{out}");
        let status: Value = serde_json::from_str(&out).unwrap();
        status["games"]["arena"]["current"]["version"].clone()
    };
    assert_eq!(desired().await, "2.0.0");
    let answer = http
        .post(format!("{api}/games/arena/rollback"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert!(
        answer.status().is_success(),
        "{}",
        answer.text().await.unwrap()
    );
    assert_eq!(desired().await, "1.0.0");
    eventually(WAIT, "the node follows the rollback", async || {
        node.rooms
            .active_module("arena")
            .is_some_and(|m| m.version == "1.0.0")
    })
    .await;
    drop(players);
    node.stop().await;
}
