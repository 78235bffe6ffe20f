//! A running node: runtime, rooms, cluster, rollout, gRPC, matchmaker and gateway, wired
//! in that order, with one shutdown path: a root [`CancellationToken`] whose children
//! reach every part, and a [`TaskTracker`] holding the node's own tasks, so
//! [`Server::stop`] closes every WebSocket with 1001, lets rooms and tasks finish, and
//! returns.

use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::Cluster;
use crate::config::Config;
use crate::gateway::Gateway;
use crate::gateway::auth::Auth;
use crate::matchmaking::Matchmaker;
use crate::rollout::{ModuleWatcher, Rollout};
use crate::rooms::Rooms;
use crate::rpc::relay::Peers;
use crate::runtime::Runtime;

pub mod admin;
mod console;
pub mod designer;
mod migrate;
mod outlive;
pub mod settings;

/// How long the gateway's connections get to close after SIGTERM or Ctrl-C.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the node's other tasks get once the gateway and rooms have stopped.
const TASKS_TIMEOUT: Duration = Duration::from_secs(2);

/// A started node. Stop it with [`Server::stop`].
pub struct Server {
    pub addr: SocketAddr,
    /// The admin port (health, readiness, metrics).
    pub admin_addr: SocketAddr,
    /// `https` with `gateway.tls`, else `http`.
    scheme: &'static str,
    pub rooms: Rooms,
    pub rollout: Rollout,
    pub gateway: Gateway,
    /// Accounts, objects and leaderboards.
    pub storage: crate::storage::Storage,
    pub cluster: Cluster,
    pub matchmaker: Matchmaker,
    /// Links to other nodes' rooms (cluster only).
    pub peers: Option<Arc<Peers>>,
    /// The designer console's state, when `admin.designer_console` is on (`ludus dev`).
    pub designer: Option<Arc<designer::Designer>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    /// The gateway's task, awaited first: sessions close their sockets before rooms close.
    http: tokio::task::JoinHandle<()>,
    /// Writes rooms' checkpoints and session records.
    saver: crate::storage::Saver,
    _watcher: Option<ModuleWatcher>,
    /// Moves rooms to other nodes: on SIGTERM when `cluster.drain_on_stop`.
    drain_on_stop: Option<(migrate::Migrate, Duration)>,
    /// Held while the node runs: no other process runs as this node on its data.
    _node_lock: std::fs::File,
}

/// Starts a node: installs the configured games, binds the gateway (and gRPC in a
/// cluster) and starts watching module files.
pub async fn start(config: Config) -> anyhow::Result<Server> {
    config.check()?;
    // In a cluster: the credential and TLS of node links, checked before anything starts.
    let (link, grpc_tls) = match config.cluster.etcd.is_empty() {
        true => (None, None),
        false => (
            Some(crate::rpc::Link::new(&config.cluster)?),
            crate::rpc::server_tls(&config.cluster)?,
        ),
    };
    let (node_id, node_lock) = node_identity(&config)?;
    let mut auth_config = config.auth.clone();
    if auth_config.secret.is_none() && config.rooms.persist {
        auth_config.secret = Some(kept_signing_key(&config.data_dir)?);
        tracing::info!(
            "no auth.secret configured: guest tokens are signed with the key kept in {} \
             (set auth.secret, the same on every node, in a cluster)",
            config.data_dir.join("auth-secret").display()
        );
    }
    let (auth, generated) = Auth::new(&auth_config)?;
    if generated.is_some() {
        tracing::warn!(
            "no auth.secret configured: guest tokens are signed with a key generated for this run \
             (set LUDUS_AUTH__SECRET for tokens that outlive the process)"
        );
    }
    let storage = crate::storage::Storage::open(&config.storage, &config.data_dir).await?;
    for (id, board) in &config.leaderboards {
        let board = crate::storage::Leaderboard {
            id: id.clone(),
            ..board.clone()
        };
        storage
            .define_leaderboard(&board)
            .await
            .map_err(|e| anyhow::anyhow!("defining leaderboard {id}: {e}"))?;
    }
    let rt = Runtime::new(config.runtime.clone())?;
    let saver = crate::storage::Saver::new(storage.clone());
    let checkpoints = config
        .rooms
        .persist
        .then(|| crate::rooms::Checkpoints::new(saver.clone(), &node_id));
    let rooms = Rooms::with_services(
        rt.clone(),
        config.rooms.clone(),
        Some(crate::rooms::RoomStorage::new(storage.clone())),
        checkpoints.clone(),
    )?;
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();

    let tls = Gateway::tls(&config.gateway)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding the gateway to {}", config.listen))?;
    let addr = listener.local_addr()?;
    admin::install_recorder();
    let admin_listener = admin::Admin::bind(&config.admin).await?;
    let admin_addr = admin_listener.local_addr()?;
    let grpc = match &link {
        None => None,
        Some(_) => Some(
            tokio::net::TcpListener::bind(config.cluster.grpc_listen)
                .await
                .with_context(|| format!("binding gRPC to {}", config.cluster.grpc_listen))?,
        ),
    };
    let grpc_addr = grpc.as_ref().map(|l| l.local_addr()).transpose()?;
    let cluster = match grpc_addr {
        None => Cluster::local_as(&addr.to_string(), &node_id),
        Some(grpc_addr) => {
            let cluster_cfg = crate::cluster::ClusterConfig {
                node_id: Some(node_id.clone()),
                ..config.cluster.clone()
            };
            let cluster = Cluster::start(
                &cluster_cfg,
                &addr.to_string(),
                &grpc_addr.to_string(),
                rooms.clone(),
            )
            .await?;
            tracing::info!(node = cluster.node_id(), etcd = ?config.cluster.etcd, grpc = %grpc_addr, "joined the cluster");
            cluster
        }
    };

    let rollout = Rollout::new(
        rooms.clone(),
        cluster.clone(),
        link.clone(),
        storage.clone(),
    );
    let watcher = rollout.start(&config.games).await?;
    if cluster.is_etcd() {
        tasks.spawn(crate::rollout::follow(
            rollout.clone(),
            shutdown.child_token(),
        ));
    }

    let matchmaker = Matchmaker::start(
        cluster.clone(),
        rooms.clone(),
        config.matchmaking.clone(),
        link.clone(),
        shutdown.child_token(),
    );
    // The gRPC server starts once the gateway exists (migration needs its sessions).
    let (peers, grpc_serve) = match (grpc, link.clone()) {
        (Some(grpc), Some(link)) => {
            let secret = link.secret();
            let stop = shutdown.child_token();
            // A room holds the place of a player whose gateway node's link ends only
            // where the player can come back to it: rooms and sessions kept in storage
            // the nodes share.
            let shared =
                config.rooms.persist && storage.backend() == crate::storage::Backend::Postgres;
            let hold = match shared {
                true => config.gateway.grace_period,
                false => Duration::ZERO,
            };
            let routes = crate::rpc::routes(
                cluster.clone(),
                rt.clone(),
                rooms.clone(),
                secret,
                hold,
                stop.clone(),
            )
            .add_service(crate::matchmaking::remote::MatchmakingService::server(
                matchmaker.clone(),
                cluster.node_id().to_owned(),
                secret,
                stop.clone(),
            ));
            let peers = Peers::new(cluster.clone(), link.clone(), rt.limits().max_message_bytes);
            (Some(peers), Some((grpc, routes, stop, link)))
        }
        _ => (None, None),
    };

    let gateway = Gateway::new(
        rooms.clone(),
        auth,
        config.gateway.clone(),
        shutdown.child_token(),
        cluster.clone(),
        peers.clone(),
        matchmaker.clone(),
        storage.clone(),
        checkpoints.clone(),
    );
    let mut drain_on_stop = None;
    if let Some((grpc, routes, stop, link)) = grpc_serve {
        let migrate = migrate::Migrate {
            rooms: rooms.clone(),
            gateway: gateway.clone(),
            storage: storage.clone(),
            cluster: cluster.clone(),
            link: link.clone(),
            checkpoints: checkpoints.clone(),
        };
        if config.cluster.drain_on_stop {
            drain_on_stop = Some((migrate.clone(), config.cluster.drain_timeout));
        }
        let routes = routes.add_service(migrate.server(link.secret()));
        tasks.spawn(async move {
            if let Err(e) = crate::rpc::serve(grpc, routes, grpc_tls, stop).await {
                tracing::error!("gRPC server: {e}");
            }
        });
    }
    if checkpoints.is_some() {
        let outlive = outlive::Outlive {
            rooms: rooms.clone(),
            gateway: gateway.clone(),
            storage: storage.clone(),
            cluster: cluster.clone(),
        };
        outlive.restore().await;
        if cluster.is_etcd() {
            tasks.spawn(outlive.take_over_dead_nodes(shutdown.child_token()));
        }
    }
    let designer = config
        .admin
        .designer_console
        .then(|| Arc::new(designer::Designer::default()));
    let admin = admin::Admin {
        rooms: rooms.clone(),
        gateway: gateway.clone(),
        storage: storage.clone(),
        cluster: cluster.clone(),
        peers: peers.clone(),
        token: config.admin.token.as_deref().map(Arc::from),
        reported: Default::default(),
        rollout: rollout.clone(),
        config: Arc::new(config.clone()),
        gateway_addr: addr.to_string(),
        replaced: Default::default(),
        designer: designer.clone(),
    };
    if cluster.is_etcd() {
        let settings = settings::Settings::new(admin.clone());
        tasks.spawn(settings.run(shutdown.child_token()));
    }
    tasks.spawn(admin.serve(admin_listener, shutdown.child_token()));
    tracing::info!(%admin_addr, "admin port listening (health, readiness, metrics)");
    let stop = shutdown.child_token();
    let http = tasks.spawn({
        let gateway = gateway.clone();
        async move { gateway.serve(listener, tls, stop).await }
    });
    tracing::info!(%addr, "gateway listening");
    Ok(Server {
        addr,
        admin_addr,
        scheme,
        rooms,
        rollout,
        gateway,
        storage,
        cluster,
        matchmaker,
        peers,
        shutdown,
        tasks,
        http,
        saver,
        _watcher: watcher,
        drain_on_stop,
        _node_lock: node_lock,
        designer,
    })
}

/// The node's id: `cluster.node_id` when set, else the one kept in `<data_dir>/node-id`
/// (made at the first start), so a node started again on the same data is the same
/// node and finds its rooms and sessions. The id is locked in the data directory while
/// the node runs: two processes cannot be one node.
/// The guest-token signing key kept in `<dir>/auth-secret` (made on first use, readable
/// by this user only), so tokens, and the sessions they resume, outlive the process.
fn kept_signing_key(dir: &std::path::Path) -> anyhow::Result<String> {
    let file = dir.join("auth-secret");
    match std::fs::read_to_string(&file) {
        Ok(text) => {
            let key = text.trim().to_owned();
            if key.len() < crate::gateway::auth::MIN_SECRET_LEN {
                anyhow::bail!(
                    "{} holds {} bytes, a signing key needs {}: delete it to make a new one, \
                     or set auth.secret",
                    file.display(),
                    key.len(),
                    crate::gateway::auth::MIN_SECRET_LEN
                );
            }
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let key = crate::csprng::hex::<32>();
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&file)
                .with_context(|| format!("creating {}", file.display()))?;
            out.write_all(format!("{key}\n").as_bytes())
                .with_context(|| format!("writing {}", file.display()))?;
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", file.display())),
    }
}

fn node_identity(config: &Config) -> anyhow::Result<(String, std::fs::File)> {
    let dir = &config.data_dir;
    std::fs::create_dir_all(dir).with_context(|| {
        format!(
            "creating the data directory {} (data_dir, --data-dir)",
            dir.display()
        )
    })?;
    let valid = |id: &str| {
        !id.is_empty()
            && id.len() <= 64
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    let id = match &config.cluster.node_id {
        Some(id) => id.clone(),
        None => {
            let file = dir.join("node-id");
            match std::fs::read_to_string(&file) {
                Ok(text) => {
                    let id = text.trim().to_owned();
                    if !valid(&id) {
                        anyhow::bail!(
                            "{} does not hold a node id (letters, digits, - _ .): delete it to \
                             make a new one, or set cluster.node_id",
                            file.display()
                        );
                    }
                    id
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let id = crate::csprng::hex::<4>();
                    std::fs::write(&file, format!("{id}\n"))
                        .with_context(|| format!("writing {}", file.display()))?;
                    id
                }
                Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
            }
        }
    };
    if !valid(&id) {
        anyhow::bail!("cluster.node_id `{id}` must be 1 to 64 letters, digits, - _ or .");
    }
    let path = dir.join(format!("node-{id}.lock"));
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match lock.try_lock() {
        Ok(()) => Ok((id, lock)),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "node {id} already runs on the data directory {} (another process holds {}): give              each node its own --data-dir or --node-id",
            dir.display(),
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

impl Server {
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// Stops the node: every WebSocket is closed with 1001 (going away) and every room
    /// with a reason its players see; the node's tasks finish (a gRPC stream a peer
    /// keeps open is not waited for past [`SHUTDOWN_TIMEOUT`]) and the node leaves the
    /// cluster, so its keys vanish at once.
    pub async fn stop(self) {
        // Not ready from now on: load balancers stop sending players here, and new
        // connections and rooms are refused.
        self.rooms.set_draining(true);
        if let Some((migrate, timeout)) = &self.drain_on_stop {
            let started = std::time::Instant::now();
            match tokio::time::timeout(*timeout, migrate.drain()).await {
                Ok((moved, failed, _)) => {
                    tracing::info!(moved, failed = failed.len(), took = ?started.elapsed(), "drained before stopping");
                    for line in failed {
                        tracing::warn!("not moved: {line}");
                    }
                }
                Err(_) => tracing::warn!(
                    "the drain took over {timeout:?} (cluster.drain_timeout); the rooms left stop as without it"
                ),
            }
        }
        // Rooms kept for the next node stop first, with every member still in them (a
        // session that ended would otherwise leave its rooms as disconnected before
        // their last checkpoint); their players then get 1001 and resume on the next.
        if self.rooms.kept() {
            Self::stop_rooms(&self.rooms).await;
        }
        self.shutdown.cancel();
        self.tasks.close();
        // Sessions first: each closes its socket with 1001 and leaves its rooms.
        let _ = tokio::time::timeout(SHUTDOWN_TIMEOUT, self.http).await;
        Self::stop_rooms(&self.rooms).await;
        // gRPC streams end with the shutdown; a peer that keeps one open is not waited
        // for long.
        if tokio::time::timeout(TASKS_TIMEOUT, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                tasks = self.tasks.len(),
                "some tasks did not finish within {TASKS_TIMEOUT:?}; leaving them"
            );
        }
        // Writes of the rooms just closed are carried out before storage closes, and so
        // are their last checkpoints, before the node leaves: the nodes that take its
        // rooms over read them when its key goes.
        self.rooms.settle_storage(SHUTDOWN_TIMEOUT).await;
        if !self.saver.flush(SHUTDOWN_TIMEOUT).await {
            tracing::warn!(
                "the last checkpoints were not all written within {SHUTDOWN_TIMEOUT:?}: \
                 those rooms come back from older ones"
            );
        }
        if tokio::time::timeout(SHUTDOWN_TIMEOUT, self.cluster.leave())
            .await
            .is_err()
        {
            tracing::warn!(
                "leaving the cluster took over {SHUTDOWN_TIMEOUT:?}; its lease ends by TTL"
            );
        }
        if tokio::time::timeout(SHUTDOWN_TIMEOUT, self.storage.close())
            .await
            .is_err()
        {
            tracing::warn!("closing storage took over {SHUTDOWN_TIMEOUT:?}");
        }
    }

    /// Closes (or, kept in storage, suspends) every room and stops the room workers.
    async fn stop_rooms(rooms: &Rooms) {
        let rooms = rooms.clone();
        let closing =
            tokio::task::spawn_blocking(move || rooms.shutdown("the server is shutting down"));
        if tokio::time::timeout(SHUTDOWN_TIMEOUT, closing)
            .await
            .is_err()
        {
            tracing::warn!("the room workers did not stop within {SHUTDOWN_TIMEOUT:?}");
        }
    }

    /// A clone of the runtime, for tools that load modules next to the server.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.rooms.runtime().clone()
    }
}

/// Runs a node until `shutdown` resolves (the `ludus serve` command), then stops it.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let server = start(config).await?;
    println!(
        "ludus is serving on {} (browser page at {}/)",
        server.addr,
        server.url()
    );
    shutdown.await;
    tracing::info!("shutting down");
    server.stop().await;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
