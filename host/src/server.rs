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

/// How long the gateway's connections get to close after SIGTERM or Ctrl-C.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the node's other tasks get once the gateway and rooms have stopped.
const TASKS_TIMEOUT: Duration = Duration::from_secs(2);

/// A started node. Stop it with [`Server::stop`].
pub struct Server {
    pub addr: SocketAddr,
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
    shutdown: CancellationToken,
    tasks: TaskTracker,
    /// The gateway's task, awaited first: sessions close their sockets before rooms close.
    http: tokio::task::JoinHandle<()>,
    _watcher: Option<ModuleWatcher>,
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
    let (auth, generated) = Auth::new(&config.auth)?;
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
    let rooms = Rooms::with_storage(
        rt.clone(),
        config.rooms.clone(),
        Some(crate::rooms::RoomStorage::new(storage.clone())),
    )?;
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();

    let tls = Gateway::tls(&config.gateway)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding the gateway to {}", config.listen))?;
    let addr = listener.local_addr()?;
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
        None => Cluster::local(&addr.to_string()),
        Some(grpc_addr) => {
            let cluster = Cluster::start(
                &config.cluster,
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
    let peers = match (grpc, link) {
        (Some(grpc), Some(link)) => {
            let secret = link.secret();
            let stop = shutdown.child_token();
            let routes = crate::rpc::routes(
                cluster.clone(),
                rt.clone(),
                rooms.clone(),
                secret,
                stop.clone(),
            )
            .add_service(crate::matchmaking::remote::MatchmakingService::server(
                matchmaker.clone(),
                cluster.node_id().to_owned(),
                secret,
                stop.clone(),
            ));
            tasks.spawn(async move {
                if let Err(e) = crate::rpc::serve(grpc, routes, grpc_tls, stop).await {
                    tracing::error!("gRPC server: {e}");
                }
            });
            Some(Peers::new(
                cluster.clone(),
                link.clone(),
                rt.limits().max_message_bytes,
            ))
        }
        _ => None,
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
    );
    let stop = shutdown.child_token();
    let http = tasks.spawn({
        let gateway = gateway.clone();
        async move { gateway.serve(listener, tls, stop).await }
    });
    tracing::info!(%addr, "gateway listening");
    Ok(Server {
        addr,
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
        _watcher: watcher,
    })
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
        self.shutdown.cancel();
        self.tasks.close();
        // Sessions first: each closes its socket with 1001 and leaves its rooms.
        let _ = tokio::time::timeout(SHUTDOWN_TIMEOUT, self.http).await;
        let rooms = self.rooms.clone();
        let closing =
            tokio::task::spawn_blocking(move || rooms.shutdown("the server is shutting down"));
        if tokio::time::timeout(SHUTDOWN_TIMEOUT, closing)
            .await
            .is_err()
        {
            tracing::warn!("the room workers did not stop within {SHUTDOWN_TIMEOUT:?}");
        }
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
        if tokio::time::timeout(SHUTDOWN_TIMEOUT, self.cluster.leave())
            .await
            .is_err()
        {
            tracing::warn!(
                "leaving the cluster took over {SHUTDOWN_TIMEOUT:?}; its lease ends by TTL"
            );
        }
        // Writes of the rooms just closed are carried out before storage closes.
        self.rooms.settle_storage(SHUTDOWN_TIMEOUT).await;
        if tokio::time::timeout(SHUTDOWN_TIMEOUT, self.storage.close())
            .await
            .is_err()
        {
            tracing::warn!("closing storage took over {SHUTDOWN_TIMEOUT:?}");
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
