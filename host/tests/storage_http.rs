//! Storage through a real node: device logins, objects and leaderboards over HTTP with
//! player tokens, every denied case, and data that outlives the node.

mod common;

use common::serve;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::net::SocketAddr;

async fn login(addr: SocketAddr, body: Value) -> (StatusCode, Value) {
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}/v1/auth/guest"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

struct Player {
    token: String,
    id: u64,
    addr: SocketAddr,
}

impl Player {
    async fn new(addr: SocketAddr, name: &str, device: Option<&str>) -> Player {
        let mut body = json!({ "name": name });
        if let Some(device) = device {
            body["device_secret"] = json!(device);
        }
        let (status, body) = login(addr, body).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        Player {
            token: body["token"].as_str().unwrap().to_owned(),
            id: body["player_id"].as_u64().unwrap(),
            addr,
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = reqwest::Client::new()
            .request(method, format!("http://{}{path}", self.addr))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_keep_their_objects_and_see_only_what_they_may() {
    let (server, _dir) = serve(&["arena"], |_| {}).await;
    let addr = server.addr;
    use reqwest::Method;
    let ann = Player::new(addr, "ann", None).await;
    let bob = Player::new(addr, "bob", None).await;

    // Without a token: 401.
    let resp = reqwest::get(format!("http://{addr}/v1/storage/stats/me"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // Write, read back, conditional writes.
    let (status, obj) = ann
        .call(
            Method::PUT,
            "/v1/storage/stats/me",
            Some(json!({ "value": { "wins": 1 }, "version": 0 })),
        )
        .await;
    assert_eq!(
        (status, obj["version"].as_i64()),
        (StatusCode::OK, Some(1)),
        "{obj}"
    );
    let (status, _) = ann
        .call(
            Method::PUT,
            "/v1/storage/stats/me",
            Some(json!({ "value": {}, "version": 0 })),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "if absent, when present");
    let (status, _) = ann
        .call(
            Method::PUT,
            "/v1/storage/stats/me",
            Some(json!({ "value": { "wins": 2 }, "version": 1 })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, err) = ann
        .call(
            Method::PUT,
            "/v1/storage/stats/me",
            Some(json!({ "value": { "wins": 3 }, "version": 1 })),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert!(
        err["error"].as_str().unwrap().contains("version 2"),
        "{err}"
    );
    let (status, obj) = ann.call(Method::GET, "/v1/storage/stats/me", None).await;
    assert_eq!((status, &obj["value"]["wins"]), (StatusCode::OK, &json!(2)));

    // Bob cannot read, write or delete Ann's private object.
    let path = format!("/v1/storage/stats/me?owner={}", ann.id);
    let (status, _) = bob.call(Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = bob
        .call(Method::PUT, &path, Some(json!({ "value": { "wins": 99 } })))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = bob.call(Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A public object: Bob reads it, still cannot delete it.
    let (status, _) = ann
        .call(
            Method::PUT,
            "/v1/storage/profile/card",
            Some(json!({ "value": { "title": "champion" }, "read": "public" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let card = format!("/v1/storage/profile/card?owner={}", ann.id);
    let (status, obj) = bob.call(Method::GET, &card, None).await;
    assert_eq!(
        (status, &obj["value"]["title"]),
        (StatusCode::OK, &json!("champion"))
    );
    let (status, _) = bob.call(Method::DELETE, &card, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, page) = bob.call(Method::GET, "/v1/storage/profile", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["objects"].as_array().unwrap().len(), 1, "{page}");
    let (status, page) = bob.call(Method::GET, "/v1/storage/stats", None).await;
    assert_eq!(
        (status, page["objects"].as_array().unwrap().len()),
        (StatusCode::OK, 0),
        "{page}"
    );

    // Bad input: a body without a value, a value over the limit.
    let (status, err) = ann
        .call(
            Method::PUT,
            "/v1/storage/stats/me",
            Some(json!({ "wins": 1 })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    let (status, err) = ann
        .call(
            Method::PUT,
            "/v1/storage/stats/big",
            Some(json!({ "value": "x".repeat(70 * 1024) })),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{err}");

    // Ann deletes her own.
    let (status, _) = ann
        .call(Method::DELETE, "/v1/storage/stats/me?version=2", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = ann.call(Method::GET, "/v1/storage/stats/me", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaderboards_from_the_config_are_read_with_a_cursor_and_around_a_player() {
    let (server, _dir) = serve(&["arena"], |c| {
        c.leaderboards
            .insert("wins".into(), ludus::storage::Leaderboard::default());
    })
    .await;
    let addr = server.addr;
    let players = [
        Player::new(addr, "a", None).await,
        Player::new(addr, "b", None).await,
        Player::new(addr, "c", None).await,
    ];
    for (i, p) in players.iter().enumerate() {
        server
            .storage
            .submit_score("wins", p.id, "p", 10 * (i as i64 + 1), 0, None)
            .await
            .unwrap();
    }
    use reqwest::Method;
    let (status, top) = players[0]
        .call(Method::GET, "/v1/leaderboards/wins?limit=2", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{top}");
    let ids: Vec<u64> = top["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["owner"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [players[2].id, players[1].id]);
    assert_eq!(top["mine"]["rank"], 3, "{top}");
    let cursor = top["cursor"].as_str().unwrap();
    let (_, rest) = players[0]
        .call(
            Method::GET,
            &format!("/v1/leaderboards/wins?limit=2&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(rest["records"][0]["owner"], players[0].id, "{rest}");
    assert_eq!(rest["records"][0]["rank"], 3, "{rest}");
    assert!(rest["cursor"].is_null());
    let (status, around) = players[0]
        .call(
            Method::GET,
            &format!("/v1/leaderboards/wins/around/{}?limit=3", players[1].id),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let ranks: Vec<u64> = around["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rank"].as_u64().unwrap())
        .collect();
    assert_eq!(ranks, [1, 2, 3], "{around}");
    let (status, _) = players[0]
        .call(Method::GET, "/v1/leaderboards/nope", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_login_is_the_same_player_with_the_same_data_after_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_owned();
    let (server, _games) = serve(&["arena"], |c| c.data_dir = dir.clone()).await;
    let secret = "my phone's own secret, 16+ chars";
    let first = Player::new(server.addr, "ann", Some(secret)).await;
    let again = Player::new(server.addr, "ann", Some(secret)).await;
    assert_eq!(first.id, again.id, "the same secret is the same player");
    let other = Player::new(server.addr, "ann", Some("another phone's secret")).await;
    assert_ne!(other.id, first.id);
    let (status, err) = login(
        server.addr,
        json!({ "name": "x", "device_secret": "short" }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert!(err["error"].as_str().unwrap().contains("16"), "{err}");
    let (status, _) = first
        .call(
            reqwest::Method::PUT,
            "/v1/storage/progress/level",
            Some(json!({ "value": { "level": 7 } })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await;

    let (server, _games) = serve(&["arena"], |c| c.data_dir = dir.clone()).await;
    let back = Player::new(server.addr, "ann", Some(secret)).await;
    assert_eq!(back.id, first.id, "the player id outlives the node");
    let (status, obj) = back
        .call(reqwest::Method::GET, "/v1/storage/progress/level", None)
        .await;
    assert_eq!(
        (status, &obj["value"]["level"]),
        (StatusCode::OK, &json!(7))
    );
    server.stop().await;
}

/// How a test points a node at its storage.
type Setting = dyn Fn(&mut ludus::config::Config) + Send + Sync;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_from_nothing_comes_back_with_the_games_it_ran() {
    let pg = common::postgres::Postgres::start();
    let url = pg.database("modules").await;
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_owned();
    // SQLite in a data dir the next node reuses; PostgreSQL that a fresh node shares.
    let settings: [(&str, Box<Setting>); 2] = [
        ("sqlite", Box::new(move |c| c.data_dir = dir.clone())),
        (
            "postgres",
            Box::new(move |c| c.storage.url = Some(url.clone())),
        ),
    ];
    for (name, set) in &settings {
        let (first, _games) = serve(&["arena"], |c| set(c)).await;
        let v2 = ludus::guest_build::example_game_bytes("arena_v2").unwrap();
        first
            .rollout
            .deploy(
                "arena",
                ludus::rollout::Source::Bytes(v2),
                ludus::rooms::SwapPolicy::AllRooms,
            )
            .await
            .unwrap();
        common::eventually(
            std::time::Duration::from_secs(10),
            "the deployed version is kept",
            async || {
                first
                    .storage
                    .current_games()
                    .await
                    .is_ok_and(|g| g.iter().any(|g| g.game == "arena" && g.version == "2.0.0"))
            },
        )
        .await;
        first.stop().await;

        // No game configured: the node installs what ran last.
        let (second, _none) = serve(&[], |c| set(c)).await;
        let active = second
            .rooms
            .active_module("arena")
            .unwrap_or_else(|| panic!("{name}: arena was not restored"));
        assert_eq!(active.version, "2.0.0", "{name}");
        let history: Vec<String> = second
            .storage
            .game_history("arena")
            .await
            .unwrap()
            .into_iter()
            .map(|g| g.version)
            .collect();
        assert_eq!(history, ["1.0.0", "2.0.0"], "{name}");
        let mut player =
            ludus::client::Client::guest(second.addr, "p", ludus::client::ClientOptions::default())
                .await
                .unwrap();
        player.create("arena", "again", "").await.unwrap();
        common::cluster::create_outcome(&mut player)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        second.stop().await;
    }
}
