//! The gateway: HTTP and WebSocket for game clients (axum).
//!
//! - `POST /v1/auth/guest` issues a guest JWT; `auth.rs` also validates external ones.
//! - `GET /v1/ws?token=..` upgrades to a WebSocket (the token may instead come in
//!   `Sec-WebSocket-Protocol`); `connection.rs` reads and writes it, `sessions.rs` finds
//!   the player's session, `session.rs` keeps it through dropped connections (its frame
//!   numbers in `replay.rs`), `handlers.rs` answers its requests, and
//!   `client_error.rs` is the one place inner errors become what the client sees.
//! - `GET /v1/rooms` and `GET /v1/games` list rooms and games; `GET /` is the browser
//!   page that plays arena.
//!
//! Frames are `proto/client.proto` messages (`pb`), Protobuf in binary messages and JSON
//! in text ones (`frames.rs`, `json.rs`).

pub mod auth;
mod client_error;
mod connection;
pub mod frames;
mod handlers;
pub mod json;
mod rate;
mod replay;
mod session;
mod sessions;

pub use client_error::{ClientError, close_code};
pub use session::SessionConfig;
pub use sessions::Sessions;

/// Generated from `proto/client.proto`.
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/ludus.client.v1.rs"));
}

use crate::cluster::Cluster;
use axum::Json;
use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use crate::rooms::Rooms;
use auth::{Auth, AuthError};
use frames::Mode;

/// Limits and timings of the gateway.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Largest client frame accepted; a larger one gets an error frame.
    pub max_frame_bytes: usize,
    /// Client frames per second per connection (bursts up to the same number).
    pub max_messages_per_second: u32,
    /// Error frames (oversize, malformed, over the rate) a connection may earn within
    /// 10 s before it is closed with code 1008.
    pub max_strikes: u32,
    pub max_connections: usize,
    /// How long a dropped player keeps its seat and session.
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
    /// Frames kept per session for replay after a resume.
    pub replay_frames: usize,
    /// Room events queued per session before the player counts as too slow.
    pub player_queue: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            max_frame_bytes: 64 * 1024,
            max_messages_per_second: 60,
            max_strikes: 20,
            max_connections: 20_000,
            grace_period: Duration::from_secs(30),
            replay_frames: 1024,
            player_queue: 1024,
        }
    }
}

/// Shared state of the HTTP handlers. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    rooms: Rooms,
    auth: Auth,
    sessions: Arc<Sessions>,
    cfg: Arc<GatewayConfig>,
    connections: AtomicUsize,
    next_conn: AtomicU64,
}

impl Gateway {
    pub fn new(
        rooms: Rooms,
        auth: Auth,
        cfg: GatewayConfig,
        shutdown: CancellationToken,
        cluster: Cluster,
        peers: Option<Arc<crate::rpc::relay::Peers>>,
        matchmaker: crate::matchmaking::Matchmaker,
    ) -> Self {
        let session_cfg = SessionConfig {
            grace_period: cfg.grace_period,
            replay_frames: cfg.replay_frames,
            player_queue: cfg.player_queue,
        };
        Gateway {
            inner: Arc::new(Inner {
                sessions: Sessions::new(
                    rooms.clone(),
                    session_cfg,
                    shutdown,
                    cluster,
                    peers,
                    matchmaker,
                ),
                rooms,
                auth,
                cfg: Arc::new(cfg),
                connections: AtomicUsize::new(0),
                next_conn: AtomicU64::new(1),
            }),
        }
    }

    pub fn auth(&self) -> &Auth {
        &self.inner.auth
    }

    /// Open WebSocket connections.
    pub fn connections(&self) -> usize {
        self.inner.connections.load(Ordering::Relaxed)
    }

    pub fn sessions(&self) -> usize {
        self.inner.sessions.count()
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/", get(page))
            .route("/v1/auth/guest", post(guest))
            .route("/v1/ws", get(websocket))
            .route("/v1/rooms", get(rooms))
            .route("/v1/games", get(games))
            .with_state(self.clone())
    }
}

/// An HTTP error with a plain message.
fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

async fn page() -> Html<&'static str> {
    Html(include_str!("../../web/index.html"))
}

#[derive(Deserialize, Default)]
struct GuestRequest {
    #[serde(default)]
    name: String,
}

#[derive(Serialize)]
struct GuestResponse {
    token: String,
    player_id: u64,
    name: String,
    expires_at: u64,
}

async fn guest(State(gw): State<Gateway>, body: Option<Json<GuestRequest>>) -> Response {
    let name: String = body.map(|Json(b)| b.name).unwrap_or_default();
    let name: String = name.chars().filter(|c| !c.is_control()).take(32).collect();
    match gw.inner.auth.issue_guest(&name) {
        Ok((token, who, expires_at)) => Json(GuestResponse {
            token,
            player_id: who.player_id,
            name: who.name,
            expires_at,
        })
        .into_response(),
        Err(e) => refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot issue a token: {e}"),
        ),
    }
}

#[derive(Deserialize)]
struct WsQuery {
    token: Option<String>,
    resume: Option<String>,
    last_seen: Option<u64>,
    /// `json` for text frames; Protobuf binary frames otherwise.
    format: Option<String>,
}

/// Browsers cannot set headers on a WebSocket: they may pass the token as a
/// subprotocol, `new WebSocket(url, ["ludus", token])`.
fn token_from_protocols(headers: &HeaderMap) -> Option<String> {
    let protocols = headers.get("sec-websocket-protocol")?.to_str().ok()?;
    protocols
        .split(',')
        .map(str::trim)
        .find(|p| p.matches('.').count() == 2)
        .map(str::to_owned)
}

async fn websocket(
    State(gw): State<Gateway>,
    Query(q): Query<WsQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let via_protocol = token_from_protocols(&headers);
    let Some(token) = q.token.clone().or_else(|| via_protocol.clone()) else {
        return refuse(StatusCode::UNAUTHORIZED, AuthError::Missing.to_string());
    };
    let who = match gw.inner.auth.validate(&token) {
        Ok(who) => who,
        Err(e) => return refuse(StatusCode::UNAUTHORIZED, e.to_string()),
    };
    let mode = match q.format.as_deref() {
        None | Some("binary") | Some("protobuf") => Mode::Binary,
        Some("json") => Mode::Json,
        Some(other) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("unknown format `{other}` (binary or json)"),
            );
        }
    };
    let resume = match (q.resume, q.last_seen) {
        (Some(token), Some(last_seen)) => Some((token, last_seen)),
        (Some(token), None) => Some((token, 0)),
        (None, _) => None,
    };
    let inner = &gw.inner;
    if inner.connections.fetch_add(1, Ordering::AcqRel) >= inner.cfg.max_connections {
        inner.connections.fetch_sub(1, Ordering::AcqRel);
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "too many connections");
    }
    let guard = Box::new(ConnectionGuard(gw.clone()));
    let id = inner.next_conn.fetch_add(1, Ordering::Relaxed);
    let (sessions, cfg) = (inner.sessions.clone(), inner.cfg.clone());
    // Game frames are small: small buffers instead of tungstenite's 128 KiB default keep
    // an idle connection cheap (larger frames still work, the buffer grows). The read
    // buffer is zero-filled up to this size on every read attempt, so 2 KiB rather
    // than 8 KiB saves a 6 KiB memset per wake-up of every session (~3% of the
    // server's CPU under the arena benchmark).
    let ws = ws
        .max_message_size(inner.cfg.max_frame_bytes.saturating_mul(4).max(1024))
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(8 * 1024)
        .max_write_buffer_size(inner.cfg.max_frame_bytes.saturating_mul(64).max(1 << 20));
    let ws = if via_protocol.is_some() {
        ws.protocols(["ludus"])
    } else {
        ws
    };
    ws.on_upgrade(move |socket| async move {
        // The session owns the connection from here; a refused one is told why.
        let conn = connection::Conn::new(socket, id, mode, cfg, guard);
        if let Err((Some(conn), reason)) = sessions.connect(&who, resume, conn).await {
            conn.refuse(&reason).await;
        }
    })
    .into_response()
}

/// Bytes read from a socket at most per read (see `upgrade`).
pub const READ_BUFFER_BYTES: usize = 2 * 1024;

/// Counts a connection until it ends.
struct ConnectionGuard(Gateway);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.inner.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn rooms(State(gw): State<Gateway>) -> impl IntoResponse {
    Json(gw.inner.rooms.list())
}

async fn games(State(gw): State<Gateway>) -> impl IntoResponse {
    Json(gw.inner.rooms.games())
}
