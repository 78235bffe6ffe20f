//! The admin page and the admin API it uses, on the admin port behind the admin token:
//! nodes and their load, games with their versions per node and last error, rooms
//! (by game and node) with one room's saved state, deploy and rollback of a game, and
//! the live settings. The page (`web/admin.html`) asks for the token and keeps it in the
//! tab's session storage; every call sends it as a bearer token.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::admin::Admin;
use crate::rollout::{Deployed, Source};
use crate::rooms::SwapPolicy;

/// The largest module the page may deploy.
const MAX_MODULE_BYTES: usize = 64 << 20;

/// The admin page and API routes (the token is checked by each API handler).
pub(super) fn routes() -> axum::Router<Admin> {
    axum::Router::new()
        .route("/", get(page))
        .route("/api/overview", get(overview))
        .route("/api/rooms", get(rooms))
        .route("/api/rooms/{id}/state", get(room_state))
        .route(
            "/api/games/{game}/deploy",
            post(deploy).layer(axum::extract::DefaultBodyLimit::max(MAX_MODULE_BYTES)),
        )
        .route("/api/games/{game}/rollback", post(rollback))
        .route("/api/settings", post(set_setting))
}

async fn page() -> Html<&'static str> {
    Html(include_str!("../../web/admin.html"))
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// The node's games with their active version, rooms per version and last error.
fn games(admin: &Admin) -> Vec<Value> {
    admin
        .rooms
        .games()
        .into_iter()
        .map(|g| {
            json!({
                "name": g.name,
                "version": g.version,
                "sha256": g.module_sha256,
                "rooms_per_version": g.rooms_per_version,
                "last_swap": g.last_swap,
                "last_error": g.last_error,
                "previous": admin.history(&g.name).last().cloned(),
            })
        })
        .collect()
}

async fn overview(State(admin): State<Admin>, headers: HeaderMap) -> Response {
    if let Some(refused) = admin.refusal(&headers) {
        return refused;
    }
    let me = admin.cluster.node_id().to_owned();
    let routing = admin.cluster.routing();
    let mut nodes: Vec<Value> = routing
        .nodes
        .values()
        .map(|n| {
            json!({
                "id": n.id, "gateway": n.gateway, "rooms": n.rooms, "players": n.players,
                "settings": n.settings, "refused": n.refused,
            })
        })
        .collect();
    if !routing.nodes.contains_key(&me) {
        nodes.push(json!({
            "id": me, "gateway": admin.gateway_addr, "rooms": admin.rooms.list().iter().filter(|r| r.closed.is_none()).count(),
            "players": admin.gateway.session_table().count(),
            "settings": {}, "refused": {},
        }));
    }
    // What each node runs of each game (a cluster's nodes report it in etcd).
    let versions: Vec<Value> = routing
        .status
        .iter()
        .map(|((node, game), s)| json!({ "node": node, "game": game, "status": s }))
        .collect();
    let settings: serde_json::Map<String, Value> = admin
        .cluster
        .settings()
        .into_iter()
        .map(|(k, (e, _))| (k, json!(e.value)))
        .collect();
    let live: Vec<Value> = super::settings::LIVE
        .iter()
        .map(|(k, what)| json!({ "key": k, "takes": what }))
        .collect();
    Json(json!({
        "node": me,
        "cluster": admin.cluster.is_etcd(),
        "not_ready": admin.not_ready().await,
        "nodes": nodes,
        "games": games(&admin),
        "versions": versions,
        "settings": settings,
        "live": live,
    }))
    .into_response()
}

#[derive(Deserialize)]
struct RoomFilter {
    game: Option<String>,
    node: Option<String>,
}

#[derive(Serialize)]
struct RoomRow {
    id: String,
    game: String,
    version: String,
    node: String,
    label: String,
    players: Option<usize>,
    restarts: Option<u32>,
    last_error: Option<String>,
}

async fn rooms(
    State(admin): State<Admin>,
    headers: HeaderMap,
    Query(filter): Query<RoomFilter>,
) -> Response {
    if let Some(refused) = admin.refusal(&headers) {
        return refused;
    }
    let me = admin.cluster.node_id().to_owned();
    let mut rows: Vec<RoomRow> = admin
        .rooms
        .list()
        .into_iter()
        .filter(|r| r.closed.is_none())
        .map(|r| RoomRow {
            id: r.id.to_string(),
            game: r.game,
            version: r.version,
            node: me.clone(),
            label: r.label,
            players: Some(r.members.len()),
            restarts: Some(r.restarts),
            last_error: r.last_error,
        })
        .collect();
    // Rooms on the other nodes, as the cluster knows them.
    for (id, entry) in admin.cluster.routing().rooms {
        if entry.owner != me {
            rows.push(RoomRow {
                id,
                game: entry.game,
                version: entry.version,
                node: entry.owner,
                label: entry.label,
                players: None,
                restarts: None,
                last_error: None,
            });
        }
    }
    rows.retain(|r| {
        filter
            .game
            .as_deref()
            .is_none_or(|g| g.is_empty() || g == r.game)
            && filter
                .node
                .as_deref()
                .is_none_or(|n| n.is_empty() || n == r.node)
    });
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    Json(rows).into_response()
}

/// A room's last saved state (its checkpoint), as JSON when the game's state is JSON.
async fn room_state(
    State(admin): State<Admin>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(refused) = admin.refusal(&headers) {
        return refused;
    }
    let saved = match admin.storage.saved_room(&id).await {
        Ok(Some(saved)) => saved,
        Ok(None) => {
            let why = if admin.rooms.kept() {
                format!("room `{id}` has no checkpoint yet (or no such room)")
            } else {
                "rooms are not checkpointed to storage on this node (rooms.persist is off)".into()
            };
            return error(StatusCode::NOT_FOUND, why);
        }
        Err(e) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("reading storage: {e}"),
            );
        }
    };
    let state = match serde_json::from_slice::<Value>(&saved.state) {
        Ok(value) => json!({ "json": value }),
        Err(_) => json!({ "bytes": saved.state.len() }),
    };
    Json(json!({
        "room": saved.room_id,
        "node": saved.node,
        "game": saved.game,
        "version": saved.version,
        "saved_ms": saved.saved_ms,
        "state": state,
    }))
    .into_response()
}

/// Deploys the module in the body over `game` on this node (all rooms swap live); in a
/// cluster it also becomes the desired version, so every node follows.
async fn deploy(
    State(admin): State<Admin>,
    headers: HeaderMap,
    Path(game): Path<String>,
    body: Bytes,
) -> Response {
    if let Some(refused) = admin.refusal(&headers) {
        return refused;
    }
    if body.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "send the game's .wasm file as the body",
        );
    }
    let before = admin.rooms.active_module(&game).map(|m| m.sha256_hex());
    match admin
        .rollout
        .deploy(&game, Source::Bytes(body.to_vec()), SwapPolicy::AllRooms)
        .await
    {
        Ok(deployed) => {
            let module = deployed.module().clone();
            if let Some(before) = before.filter(|b| *b != module.sha256_hex()) {
                admin.remember(&game, before);
            }
            if admin.cluster.is_etcd()
                && let Err(e) = admin.cluster.desire(&game, &module).await
            {
                return error(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "deployed here, but the cluster's desired version was not written: {e}"
                    ),
                );
            }
            let what = match deployed {
                Deployed::Installed(_) => "installed",
                Deployed::Unchanged(_) => "unchanged",
                Deployed::Swapped(..) => "swapped",
            };
            Json(json!({ "game": game, "version": module.version, "result": what })).into_response()
        }
        Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    }
}

/// Puts `game` back on the version it ran before the last deploy from this page (in a
/// cluster: the previous desired version, for every node).
async fn rollback(
    State(admin): State<Admin>,
    headers: HeaderMap,
    Path(game): Path<String>,
) -> Response {
    if let Some(refused) = admin.refusal(&headers) {
        return refused;
    }
    if admin.cluster.is_etcd() {
        let Some((_, revision)) = admin.cluster.routing().games.get(&game).cloned() else {
            return error(
                StatusCode::NOT_FOUND,
                format!("no desired version of `{game}` in the cluster"),
            );
        };
        return match admin
            .cluster
            .rollback_game(&game, revision, "rolled back from the admin page".into())
            .await
        {
            Ok(entry) => Json(
                json!({ "game": game, "version": entry.current.version, "result": "rolled back" }),
            )
            .into_response(),
            Err(e) => error(StatusCode::CONFLICT, e.to_string()),
        };
    }
    let Some(previous) = admin.history(&game).last().cloned() else {
        return error(
            StatusCode::CONFLICT,
            format!("no earlier version of `{game}` was deployed from here to go back to"),
        );
    };
    match admin
        .rollout
        .deploy(&game, Source::Held(previous.clone()), SwapPolicy::AllRooms)
        .await
    {
        Ok(deployed) => {
            admin.forget_last(&game);
            let version = deployed.module().version.clone();
            Json(json!({ "game": game, "version": version, "result": "rolled back" }))
                .into_response()
        }
        Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    }
}

#[derive(Deserialize)]
struct SetSetting {
    key: String,
    /// `None`: unset.
    value: Option<String>,
}

/// Sets a live setting for the cluster (as `ludus config set` does).
async fn set_setting(
    State(admin): State<Admin>,
    headers: HeaderMap,
    Json(req): Json<SetSetting>,
) -> Response {
    if let Some(refused) = admin.refusal(&headers) {
        return refused;
    }
    if !admin.cluster.is_etcd() {
        return error(
            StatusCode::CONFLICT,
            "live settings need a cluster (etcd); a node alone reads its config file at start",
        );
    }
    if let Some(value) = &req.value
        && let Err(e) = super::settings::check(&req.key, value, &admin.config)
    {
        return error(StatusCode::BAD_REQUEST, format!("{}: {e}", req.key));
    }
    match admin
        .cluster
        .set_setting(&req.key, req.value.clone(), "the admin page".into())
        .await
    {
        Ok(_) => Json(json!({ "key": req.key, "value": req.value })).into_response(),
        Err(e) => error(StatusCode::BAD_GATEWAY, e.to_string()),
    }
}
