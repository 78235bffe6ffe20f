//! The gateway: HTTP and WebSocket for game clients (axum).
//!
//! - `POST /v1/auth/guest` issues a guest JWT; `auth.rs` also validates external ones.
//! - `GET /v1/ws?token=..` upgrades to a WebSocket (the token may instead come in
//!   `Sec-WebSocket-Protocol`); `connection.rs` reads and writes it, `sessions.rs` finds
//!   the player's session, `session.rs` keeps it through dropped connections (its frame
//!   numbers in `replay.rs`), `handlers.rs` answers its requests, and
//!   `client_error.rs` is the one place inner errors become what the client sees.
//! - `POST /ludus.client.v1.Play/Play` is the same connection for gRPC clients
//!   (`play.rs`), over HTTP/2 on the same port.
//! - `GET /v1/rooms` and `GET /v1/games` list rooms and games; `GET /` is the browser
//!   page that plays arena.
//!
//! Frames are `proto/client.proto` messages (`pb`), Protobuf in binary messages and JSON
//! in text ones (`frames.rs`, `json.rs`).

pub mod auth;
mod client_error;
mod connection;
pub mod edge;
pub mod frames;
mod handlers;
pub mod json;
pub mod play;
mod reattach;

mod replay;
mod session;
mod sessions;
mod storage_http;

pub use client_error::{ClientError, close_code};
pub use connection::{Traffic, traffic};
pub use session::SessionConfig;
pub use sessions::{SessionMove, Sessions};

/// Generated from `proto/client.proto`.
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/ludus.client.v1.rs"));
}

use crate::cluster::Cluster;
use crate::lock::Recover;
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
    /// Open TCP connections (counted from accept, HTTP and WebSocket alike); past it a
    /// new connection gets 503 and is closed.
    pub max_connections: usize,
    /// Open connections from one client IP address.
    pub max_connections_per_ip: usize,
    /// A request whose headers have not all arrived within this is dropped.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// A WebSocket that sends nothing (not even a pong to the server's pings, sent every
    /// third of this) for this long is dropped; its session keeps the grace period.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Guest logins per client IP: a bucket of `guest_login_burst` refilled at this rate;
    /// an empty bucket answers 429 with `Retry-After`.
    pub guest_logins_per_minute: u32,
    pub guest_login_burst: u32,
    /// How long a dropped player keeps its seat and session.
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
    /// Frames kept per session for replay after a resume.
    pub replay_frames: usize,
    /// Room events queued per session before the player counts as too slow.
    pub player_queue: usize,
    /// Serve HTTPS and `wss://` with this certificate and key (PEM files) instead of
    /// plain HTTP, so a node can face the internet without a proxy in front.
    pub tls: Option<crate::tls::CertFiles>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            max_frame_bytes: 64 * 1024,
            max_messages_per_second: 60,
            max_strikes: 20,
            max_connections: 20_000,
            max_connections_per_ip: 256,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            guest_logins_per_minute: 60,
            guest_login_burst: 20,
            grace_period: Duration::from_secs(30),
            replay_frames: 1024,
            player_queue: 1024,
            tls: None,
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
    storage: crate::storage::Storage,
    sessions: Arc<Sessions>,
    /// New connections take the settings in force when they come
    /// ([`Gateway::update_config`] changes them live).
    cfg: std::sync::RwLock<Arc<GatewayConfig>>,
    /// Upgraded WebSockets.
    connections: AtomicUsize,
    /// TCP connections, from accept (see `edge.rs`).
    edge: Arc<edge::Counts>,
    guest_logins: crate::rate::PerAddress,
    next_conn: AtomicU64,
}

impl Gateway {
    // The node's parts, wired once by `server::start`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        rooms: Rooms,
        auth: Auth,
        cfg: GatewayConfig,
        shutdown: CancellationToken,
        cluster: Cluster,
        peers: Option<Arc<crate::rpc::relay::Peers>>,
        matchmaker: crate::matchmaking::Matchmaker,
        storage: crate::storage::Storage,
        persist: Option<crate::rooms::Checkpoints>,
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
                    persist,
                    storage.clone(),
                ),
                rooms,
                auth,
                storage,
                guest_logins: crate::rate::PerAddress::new(
                    f64::from(cfg.guest_logins_per_minute) / 60.0,
                    cfg.guest_login_burst,
                ),
                cfg: std::sync::RwLock::new(Arc::new(cfg)),
                connections: AtomicUsize::new(0),
                edge: Arc::default(),
                next_conn: AtomicU64::new(1),
            }),
        }
    }

    pub fn auth(&self) -> &Auth {
        &self.inner.auth
    }

    /// Brings back the sessions this node kept in storage (before it serves); returns
    /// where each restored player's room events go. See [`Sessions::restore`].
    pub async fn restore_sessions(
        &self,
        saved: Vec<crate::storage::SavedSession>,
    ) -> std::collections::HashMap<u64, crate::rooms::PlayerSink> {
        self.inner.sessions.restore(saved).await
    }

    /// The node's sessions, for moving them with their rooms to another node.
    pub fn session_table(&self) -> &Arc<Sessions> {
        &self.inner.sessions
    }

    /// How long a detached session waits for its player (and a room brought back or
    /// moved holds a member whose session is on another node).
    pub fn grace_period(&self) -> std::time::Duration {
        self.config().grace_period
    }

    /// The settings in force.
    pub fn config(&self) -> Arc<GatewayConfig> {
        self.inner.cfg.read().recover().clone()
    }

    /// Changes the settings connections made from now on get (the live settings
    /// `gateway.max_messages_per_second` and `gateway.max_frame_bytes`).
    pub fn update_config(&self, change: impl FnOnce(&mut GatewayConfig)) {
        let mut cfg = self.inner.cfg.write().recover();
        let mut next = GatewayConfig::clone(&cfg);
        change(&mut next);
        *cfg = Arc::new(next);
    }

    /// Puts restored rooms in a restored player's session.
    pub fn rejoin(&self, player: u64, rooms: Vec<crate::rooms::RoomHandle>) {
        self.inner.sessions.rejoin(player, rooms);
    }

    /// Open WebSocket connections.
    pub fn connections(&self) -> usize {
        self.inner.connections.load(Ordering::Relaxed)
    }

    /// Open TCP connections to the public port (HTTP and WebSocket).
    pub fn tcp_connections(&self) -> usize {
        self.inner.edge.total()
    }

    /// Serves the gateway on `listener` until `stop` (see `edge.rs`).
    /// Serves the public port on `listener` until `stop`, over TLS with `tls`
    /// (see [`Gateway::tls`]).
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        stop: CancellationToken,
    ) {
        let cfg = self.config();
        let limits = edge::EdgeLimits {
            max_connections: cfg.max_connections,
            max_connections_per_ip: cfg.max_connections_per_ip,
            header_timeout: cfg.header_timeout,
        };
        edge::serve(
            listener,
            self.router(),
            limits,
            self.inner.edge.clone(),
            tls,
            stop,
        )
        .await;
        // Each session closes its socket on the shutdown notice. Wait for those closes
        // to be written and answered: a process that exits with a client's close reply
        // unread resets the connection, and the client may lose the close frame.
        let deadline = tokio::time::Instant::now() + connection::LINGER + Duration::from_secs(1);
        while self.connections() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The TLS acceptor for `gateway.tls`, or `None` for plain HTTP; an error names
    /// the file that is missing or wrong.
    pub fn tls(cfg: &GatewayConfig) -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
        let Some(files) = &cfg.tls else {
            return Ok(None);
        };
        // HTTP/1.1 first (browsers and WebSockets); gRPC clients offer only h2.
        let config = crate::tls::server_config(files, &[b"http/1.1", b"h2"])
            .map_err(|e| anyhow::anyhow!("gateway.tls: {e:#}"))?;
        Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
    }

    pub fn sessions(&self) -> usize {
        self.inner.sessions.count()
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/", get(page))
            .route("/ludus-client.js", get(client_js))
            .route("/v1/auth/guest", post(guest))
            .route("/v1/ws", get(websocket))
            .route(play::PATH, post(play::play))
            .route("/v1/rooms", get(rooms))
            .route("/v1/games", get(games))
            .route("/v1/storage/{collection}", get(storage_http::list_objects))
            .route(
                "/v1/storage/{collection}/{key}",
                get(storage_http::get_object)
                    .put(storage_http::put_object)
                    .delete(storage_http::delete_object),
            )
            .route("/v1/leaderboards/{id}", get(storage_http::leaderboard_top))
            .route(
                "/v1/leaderboards/{id}/around/{player}",
                get(storage_http::leaderboard_around),
            )
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

/// The TypeScript client (`clients/ts`) bundled for browsers; the page imports it.
async fn client_js() -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/javascript; charset=utf-8",
        )],
        include_str!("../../web/ludus-client.js"),
    )
}

#[derive(Deserialize, Default)]
struct GuestRequest {
    #[serde(default)]
    name: String,
    /// A secret the client keeps (16+ characters): the same secret logs in as the same
    /// player next time.
    #[serde(default)]
    device_secret: Option<String>,
}

#[derive(Serialize)]
struct GuestResponse {
    token: String,
    player_id: u64,
    name: String,
    expires_at: u64,
}

/// The longest guest name, in characters.
pub const MAX_NAME_CHARS: usize = 32;

/// The name a guest gets when it gives none.
pub const DEFAULT_GUEST_NAME: &str = "guest";

/// A guest's display name as given, or why it is refused.
fn guest_name(name: &str) -> Result<String, String> {
    let name = name.trim();
    let chars = name.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(format!(
            "name is {chars} characters long; at most {MAX_NAME_CHARS} are allowed"
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("name contains control characters".into());
    }
    Ok(match name {
        "" => DEFAULT_GUEST_NAME.to_owned(),
        name => name.to_owned(),
    })
}

/// The client's IP address, when the gateway is served by `edge.rs`.
struct ClientIp(Option<std::net::IpAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        let addr = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>();
        Ok(ClientIp(addr.map(|a| a.0.ip())))
    }
}

async fn guest(
    State(gw): State<Gateway>,
    ClientIp(ip): ClientIp,
    body: Option<Json<GuestRequest>>,
) -> Response {
    if let Some(ip) = ip
        && let Err(wait) = gw.inner.guest_logins.take(ip, std::time::Instant::now())
    {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        let mut response = refuse(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many guest logins from your address; retry in {secs} s"),
        );
        response
            .headers_mut()
            .insert(axum::http::header::RETRY_AFTER, secs.into());
        return response;
    }
    let (name, device) = match body {
        Some(Json(b)) => (b.name, b.device_secret),
        None => (String::new(), None),
    };
    let name = match guest_name(&name) {
        Ok(name) => name,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, e),
    };
    let player_id = match device {
        None => crate::csprng::id53(),
        Some(secret) => match gw
            .inner
            .storage
            .device_player(&secret, &name, crate::csprng::id53())
            .await
        {
            Ok(id) => id,
            Err(crate::storage::StorageError::Invalid(why)) => {
                return refuse(StatusCode::BAD_REQUEST, why);
            }
            Err(e) => {
                return refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ClientError::internal("looking up a device login", e).message,
                );
            }
        },
    };
    match gw.inner.auth.issue_guest_as(player_id, &name) {
        Ok((token, who, expires_at)) => Json(GuestResponse {
            token,
            player_id: who.player_id,
            name: who.name,
            expires_at,
        })
        .into_response(),
        Err(e) => refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            ClientError::internal("issuing a guest token", e).message,
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
    // A draining node takes no new players; its own players may still resume (their
    // sessions move with their rooms, and those told `moved` go where they are sent).
    if resume.is_none() && inner.rooms.draining() {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node is draining and takes no new connections: connect to another node"
                .to_owned(),
        );
    }
    inner.connections.fetch_add(1, Ordering::AcqRel);
    let guard = Box::new(ConnectionGuard(gw.clone()));
    let id = inner.next_conn.fetch_add(1, Ordering::Relaxed);
    let (sessions, cfg) = (inner.sessions.clone(), gw.config());
    // Game frames are small: small buffers instead of tungstenite's 128 KiB default keep
    // an idle connection cheap (larger frames still work, the buffer grows). The read
    // buffer is zero-filled up to this size on every read attempt, so 2 KiB rather
    // than 8 KiB saves a 6 KiB memset per wake-up of every session (~3% of the
    // server's CPU under the arena benchmark).
    // The WebSocket layer buffers no frame or message over the limit: it stops reading
    // and the connection answers `frame_too_large` and closes with 1009.
    let ws = ws
        .max_frame_size(cfg.max_frame_bytes)
        .max_message_size(cfg.max_frame_bytes)
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(8 * 1024)
        .max_write_buffer_size(write_limit(
            cfg.max_frame_bytes,
            inner.rooms.runtime().limits().max_message_bytes,
        ));
    let ws = if via_protocol.is_some() {
        ws.protocols(["ludus"])
    } else {
        ws
    };
    ws.on_upgrade(move |socket| async move {
        // The session owns the connection from here; a refused one is told why.
        let conn = connection::Conn::new(socket, id, mode, cfg, guard);
        if let Err((Some(conn), error)) = sessions.connect(&who, resume, conn).await {
            conn.refuse(error).await;
        }
    })
    .into_response()
}

/// What a connection's write buffer may hold: always at least one game message of the
/// largest size a game may send in its frame, so no game output can fail a write (and
/// make a resuming client fail on the same frame again).
fn write_limit(max_frame_bytes: usize, max_message_bytes: usize) -> usize {
    let one_message = crate::rpc::relay::frame_limit(max_message_bytes);
    max_frame_bytes
        .saturating_mul(64)
        .max(one_message)
        .max(1 << 20)
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

/// The rooms of this node a player may see: a valid player token is required (as
/// `Authorization: Bearer`, or `?token=`), and rooms their game made private are left
/// out.
async fn rooms(
    State(gw): State<Gateway>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = storage_http::player(&gw, &headers, q.token.as_deref()) {
        return refused.into_response();
    }
    let mut rooms = gw.inner.rooms.list();
    rooms.retain(|r| !r.private);
    Json(rooms).into_response()
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

async fn games(State(gw): State<Gateway>) -> impl IntoResponse {
    Json(gw.inner.rooms.games())
}
