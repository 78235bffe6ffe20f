//! The admin listener (README: "Operating a node"): a port of its own, apart from the
//! public one, for the people and systems that run the node. `/healthz` says the process
//! answers, `/readyz` whether the node should get traffic (and why not), and `/metrics`
//! gives the node's metrics in Prometheus text format. These three need no token, so
//! probes and scrapers can reach them; everything else on the port asks for the admin
//! token (`admin.token`) as a bearer token.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;
use crate::gateway::Gateway;
use crate::lock::Recover;
use crate::rooms::Rooms;
use crate::storage::Storage;

/// `[admin]` in the config file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Where the admin port listens (`ludus serve --admin`). Keep it off the public
    /// network: behind it is how the node is steered.
    pub listen: SocketAddr,
    /// The bearer token the admin API asks for (health and metrics need none). Unset:
    /// the admin API is closed, health and metrics still answer.
    pub token: Option<String>,
    /// A live setting (`ludus config set`) that leaves the node unready, or during which
    /// games fail 3 times, within this long after it was applied is rolled back.
    #[serde(with = "humantime_serde")]
    pub settings_window: Duration,
    /// The designer console at `/dev` (`ludus dev` turns it on). It needs no token:
    /// keep the admin port on loopback.
    #[serde(skip)]
    pub designer_console: bool,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7351)),
            token: None,
            settings_window: Duration::from_secs(60),
            designer_console: false,
        }
    }
}

/// How long `/readyz` waits for storage to answer before it says it does not.
const STORAGE_PROBE: Duration = Duration::from_secs(1);
/// How often histograms are folded (they are also folded at each scrape).
const UPKEEP: Duration = Duration::from_secs(5);

/// Buckets of the duration histograms, in seconds: 50 µs to 2.5 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5,
];

/// The process's metrics recorder, installed once (every node of a process shares it).
fn recorder() -> Option<&'static metrics_exporter_prometheus::PrometheusHandle> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    static HANDLE: std::sync::OnceLock<Option<metrics_exporter_prometheus::PrometheusHandle>> =
        std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .ok()?;
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => {
                    describe();
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!("metrics are not recorded: {e}");
                    None
                }
            }
        })
        .as_ref()
}

/// What each metric means, for `# HELP` lines.
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!("ludus_connections", "Open WebSocket connections");
    describe_gauge!(
        "ludus_tcp_connections",
        "Open TCP connections to the public port"
    );
    describe_gauge!(
        "ludus_sessions",
        "Player sessions (attached or in their grace period)"
    );
    describe_gauge!("ludus_rooms", "Open rooms, by game and version");
    describe_gauge!(
        "ludus_checkpoint_max_age_seconds",
        Unit::Seconds,
        "Age of the oldest last checkpoint of a room kept in storage"
    );
    describe_gauge!(
        "ludus_checkpoint_max_size_bytes",
        Unit::Bytes,
        "Size of the largest last checkpoint of a room kept in storage"
    );
    describe_gauge!("ludus_relay_streams", "Open links to other nodes");
    describe_gauge!("ludus_draining", "1 while the node drains before it stops");
    describe_gauge!(
        "ludus_relay_queued_frames",
        "Frames queued for links to other nodes, not yet written"
    );
    describe_gauge!(
        "ludus_matchmaker_tickets",
        "Tickets the matchmaker holds (on its leader; 0 elsewhere)"
    );
    describe_gauge!(
        "ludus_matchmaker_placing_tickets",
        "Matched tickets whose room a node is being asked to start"
    );
    describe_counter!(
        "ludus_game_failures_total",
        "Games' failures (traps, deadlines, limits), by game"
    );
    describe_histogram!(
        "ludus_guest_call_seconds",
        Unit::Seconds,
        "Time of one call into a game, by call (join, messages, tick, save, ...)"
    );
    describe_histogram!(
        "ludus_storage_operation_duration_seconds",
        Unit::Seconds,
        "Time of a storage operation: save_batch (checkpoints and sessions), room_requests"
    );
    describe_counter!("ludus_client_frames_total", "Frames received from clients");
    describe_counter!(
        "ludus_client_bytes_total",
        Unit::Bytes,
        "Bytes of frames received from clients"
    );
    describe_counter!("ludus_server_frames_total", "Frames sent to clients");
    describe_counter!(
        "ludus_server_bytes_total",
        Unit::Bytes,
        "Bytes of frames sent to clients"
    );
    describe_counter!("ludus_error_frames_total", "Error frames sent, by code");
    describe_counter!("ludus_closes_total", "WebSocket closes sent, by close code");
    describe_counter!("ludus_swaps_total", "Live swaps of a room, by result");
    describe_histogram!(
        "ludus_swap_pause_seconds",
        Unit::Seconds,
        "How long a room paused for a live swap"
    );
    describe_histogram!(
        "ludus_etcd_operation_duration_seconds",
        Unit::Seconds,
        "Time etcd took to answer a call of this node"
    );
    describe_gauge!(
        "ludus_storage_pool_wait_seconds",
        Unit::Seconds,
        "How long taking a database connection from the pool takes now (probed at scrape)"
    );
    describe_histogram!(
        "ludus_tick_duration_seconds",
        Unit::Seconds,
        "Time a room's tick took on its worker, by game"
    );
}

/// What the admin listener reads from the node. Cheap to clone.
#[derive(Clone)]
pub(super) struct Admin {
    pub rooms: Rooms,
    pub gateway: Gateway,
    pub storage: Storage,
    pub cluster: Cluster,
    pub peers: Option<Arc<crate::rpc::relay::Peers>>,
    pub token: Option<Arc<str>>,
    /// The (game, version) pairs `ludus_rooms` has reported.
    pub reported: Arc<std::sync::Mutex<BTreeSet<(String, String)>>>,
    pub rollout: crate::rollout::Rollout,
    pub config: Arc<crate::config::Config>,
    /// The public port, as the admin page shows it.
    pub gateway_addr: String,
    /// Modules replaced by deploys from the admin page, by game (newest last): what a
    /// rollback from the page goes back to on a node alone.
    pub replaced: Arc<std::sync::Mutex<BTreeMap<String, Vec<String>>>>,
    /// The designer console's state, under `ludus dev`.
    pub designer: Option<Arc<super::designer::Designer>>,
}

impl Admin {
    /// Binds the admin port; the error names the setting.
    pub async fn bind(cfg: &AdminConfig) -> anyhow::Result<tokio::net::TcpListener> {
        tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "binding the admin port {} (admin.listen, ludus serve --admin): {e}",
                    cfg.listen
                )
            })
    }

    /// Serves the admin port on `listener` until `stop`.
    pub async fn serve(self, listener: tokio::net::TcpListener, stop: CancellationToken) {
        if let Some(handle) = recorder() {
            let handle = handle.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(UPKEEP) => handle.run_upkeep(),
                    }
                }
            });
        }
        let app = axum::Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics_text))
            .merge(super::console::routes())
            .merge(super::designer::routes())
            .fallback(get(admin_api))
            .with_state(self);
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!("admin port: {e}");
        }
    }

    /// The answer to give when `headers` do not carry the admin token (`None`: they do).
    pub(super) fn refusal(&self, headers: &HeaderMap) -> Option<Response> {
        let Some(token) = &self.token else {
            let why = "the admin API is closed: set admin.token (LUDUS_ADMIN__TOKEN) to open it";
            return Some((StatusCode::FORBIDDEN, why).into_response());
        };
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let matches = given.is_some_and(|g| {
            use sha2::Digest;
            // Compared as hashes: the time taken says nothing about the token.
            sha2::Sha256::digest(g.as_bytes()) == sha2::Sha256::digest(token.as_bytes())
        });
        (!matches).then(|| {
            (
                StatusCode::UNAUTHORIZED,
                "the admin API needs the admin token: Authorization: Bearer <admin.token>",
            )
                .into_response()
        })
    }

    /// Modules of `game` replaced by deploys from the admin page, oldest first.
    pub(super) fn history(&self, game: &str) -> Vec<String> {
        self.replaced
            .lock()
            .recover()
            .get(game)
            .cloned()
            .unwrap_or_default()
    }

    pub(super) fn remember(&self, game: &str, sha256: String) {
        let mut replaced = self.replaced.lock().recover();
        let list = replaced.entry(game.to_owned()).or_default();
        list.push(sha256);
        let drop = list.len().saturating_sub(10);
        list.drain(..drop);
    }

    pub(super) fn forget_last(&self, game: &str) {
        if let Some(list) = self.replaced.lock().recover().get_mut(game) {
            list.pop();
        }
    }

    /// Why the node should not get traffic now; empty when it should.
    pub(super) async fn not_ready(&self) -> Vec<String> {
        let mut why = Vec::new();
        if self.rooms.draining() {
            why.push(
                "draining: the node takes no new players or rooms (it is stopping, or was \
                 drained with `ludus drain`)"
                    .to_owned(),
            );
        }
        if self.cluster.is_etcd() && !self.cluster.is_leased() {
            why.push("no etcd session: the node has lost touch with the cluster's store".into());
        }
        match tokio::time::timeout(STORAGE_PROBE, self.storage.pool_wait()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => why.push(format!("storage unreachable: {e}")),
            Err(_) => why.push(format!(
                "storage unreachable: no connection within {STORAGE_PROBE:?}"
            )),
        }
        why
    }

    /// Sets the gauges that are read off the node's state rather than counted.
    fn refresh_gauges(&self) {
        use metrics::gauge;
        gauge!("ludus_connections").set(self.gateway.connections() as f64);
        gauge!("ludus_tcp_connections").set(self.gateway.tcp_connections() as f64);
        gauge!("ludus_sessions").set(self.gateway.session_table().count() as f64);
        gauge!("ludus_draining").set(f64::from(u8::from(self.rooms.draining())));
        // The traffic counters are plain atomics on the hot path (see `gateway::traffic`).
        let traffic = crate::gateway::traffic();
        metrics::counter!("ludus_client_frames_total").absolute(traffic.client_frames);
        metrics::counter!("ludus_client_bytes_total").absolute(traffic.client_bytes);
        metrics::counter!("ludus_server_frames_total").absolute(traffic.server_frames);
        metrics::counter!("ludus_server_bytes_total").absolute(traffic.server_bytes);
        // The process's own CPU time and memory (what `ludus bench` reads from a node on
        // another machine); absent where there is no /proc.
        if let Ok(cpu) = crate::procstat::cpu_secs("self") {
            gauge!("ludus_process_cpu_seconds").set(cpu);
        }
        if let Ok(rss) = crate::procstat::rss_bytes("self") {
            gauge!("ludus_process_resident_memory_bytes").set(rss as f64);
        }
        let links = self.peers.as_ref().map_or(0, |p| p.linked().len());
        gauge!("ludus_relay_streams").set(links as f64);
        let queued = self.peers.as_ref().map_or(0, |p| p.queued());
        gauge!("ludus_relay_queued_frames").set(queued as f64);
        // Versions reported before and gone now (swapped away) show 0, not their last
        // count; so does the active version once its rooms close.
        let mut counts: BTreeMap<(String, String), usize> = self
            .reported
            .lock()
            .recover()
            .iter()
            .map(|key| (key.clone(), 0))
            .collect();
        for game in self.rooms.games() {
            counts.entry((game.name.clone(), game.version)).or_default();
            for (version, n) in game.rooms_per_version {
                counts.insert((game.name.clone(), version), n);
            }
        }
        for ((game, version), n) in &counts {
            let labels = [("game", game.clone()), ("version", version.clone())];
            gauge!("ludus_rooms", &labels).set(*n as f64);
        }
        *self.reported.lock().recover() = counts.into_keys().collect();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let (mut oldest, mut largest) = (0i64, 0usize);
        for info in self.rooms.list() {
            if let (None, Some(cp)) = (&info.closed, info.checkpoint) {
                oldest = oldest.max(now - cp.saved_ms);
                largest = largest.max(cp.bytes);
            }
        }
        gauge!("ludus_checkpoint_max_age_seconds").set(oldest.max(0) as f64 / 1000.0);
        gauge!("ludus_checkpoint_max_size_bytes").set(largest as f64);
    }
}

async fn readyz(State(admin): State<Admin>) -> Response {
    let why = admin.not_ready().await;
    if why.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        let body = format!("not ready:\n{}\n", why.join("\n"));
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

async fn metrics_text(State(admin): State<Admin>) -> Response {
    let Some(handle) = recorder() else {
        let why = "metrics are not recorded in this process (another recorder was installed)";
        return (StatusCode::SERVICE_UNAVAILABLE, why).into_response();
    };
    admin.refresh_gauges();
    match tokio::time::timeout(STORAGE_PROBE, admin.storage.pool_wait()).await {
        Ok(Ok(wait)) => metrics::gauge!("ludus_storage_pool_wait_seconds").set(wait.as_secs_f64()),
        _ => metrics::gauge!("ludus_storage_pool_wait_seconds").set(STORAGE_PROBE.as_secs_f64()),
    }
    handle.run_upkeep();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response()
}

/// Everything else: the admin API, behind the admin token.
async fn admin_api(State(admin): State<Admin>, headers: HeaderMap) -> Response {
    if let Some(refused) = admin.refusal(&headers) {
        return refused;
    }
    (StatusCode::NOT_FOUND, "no such admin endpoint").into_response()
}

/// Makes sure the process records metrics (a node does this when it starts, so counts
/// from its first moments are kept).
pub(super) fn install_recorder() {
    let _ = recorder();
}
