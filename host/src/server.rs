//! A running node: runtime, rooms, gateway and module watcher, with one shutdown path.

use anyhow::{Context, anyhow};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;
use crate::config::Config;
use crate::gateway::Gateway;
use crate::gateway::auth::Auth;
use crate::matchmaking::Matchmaker;
use crate::reload::ModuleWatcher;
use crate::rooms::Rooms;
use crate::runtime::Runtime;

/// A started node. Stop it with [`Server::stop`].
pub struct Server {
    pub addr: SocketAddr,
    pub rooms: Rooms,
    pub gateway: Gateway,
    pub cluster: Cluster,
    pub matchmaker: Matchmaker,
    /// Links to other nodes' rooms (cluster only).
    pub peers: Option<Arc<crate::rpc::relay::Peers>>,
    shutdown: CancellationToken,
    http: JoinHandle<std::io::Result<()>>,
    grpc: Option<JoinHandle<()>>,
    _watcher: Option<ModuleWatcher>,
}

/// Loads the configured games, binds the gateway and starts watching module files.
pub async fn start(config: Config) -> anyhow::Result<Server> {
    let rt = Runtime::new(config.runtime.clone())?;
    let rooms = Rooms::new(rt.clone(), config.rooms.clone())?;
    let mut held = Vec::new();
    for (name, game) in &config.games {
        let bytes = tokio::fs::read(&game.module)
            .await
            .with_context(|| format!("game `{name}`: reading {}", game.module.display()))?;
        let module = rt
            .load(bytes.clone())
            .await
            .map_err(|e| anyhow!("game `{name}` ({}): {e}", game.module.display()))?;
        tracing::info!(game = %name, module = %module.label(), "game installed");
        held.push((module.sha256_hex(), bytes));
        rooms.install(name, module);
    }
    let watcher = if config.games.is_empty() {
        None
    } else {
        Some(ModuleWatcher::start(rooms.clone(), &config.games)?)
    };

    let (auth, generated) = Auth::new(&config.auth)?;
    if generated.is_some() {
        tracing::warn!(
            "no auth.secret configured: guest tokens are signed with a key generated for this run \
             (set LUDUS_AUTH__SECRET for tokens that outlive the process)"
        );
    }
    let shutdown = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding the gateway to {}", config.listen))?;
    let addr = listener.local_addr()?;
    config.matchmaking.check()?;
    let (cluster, grpc, peers, matchmaker) = if config.cluster.etcd.is_empty() {
        let cluster = Cluster::local(&addr.to_string());
        let matchmaker = Matchmaker::start(
            cluster.clone(),
            rooms.clone(),
            config.matchmaking.clone(),
            None,
            shutdown.clone(),
        );
        (cluster, None, None, matchmaker)
    } else {
        let secret = config.cluster.secret()?;
        let grpc = tokio::net::TcpListener::bind(config.cluster.grpc_listen)
            .await
            .with_context(|| format!("binding gRPC to {}", config.cluster.grpc_listen))?;
        let grpc_addr = grpc.local_addr()?;
        let cluster = Cluster::start(
            &config.cluster,
            &addr.to_string(),
            &grpc_addr.to_string(),
            rooms.clone(),
        )
        .await?;
        for (sha, bytes) in held {
            cluster.hold_module(&sha, Arc::new(bytes)).await?;
        }
        let matchmaker = Matchmaker::start(
            cluster.clone(),
            rooms.clone(),
            config.matchmaking.clone(),
            Some(secret.clone()),
            shutdown.clone(),
        );
        let stop = shutdown.clone();
        let serve = crate::rpc::serve(
            grpc,
            cluster.clone(),
            rt.clone(),
            rooms.clone(),
            matchmaker.clone(),
            secret.clone(),
            stop,
        );
        let task = tokio::spawn(async move {
            if let Err(e) = serve.await {
                tracing::error!("gRPC server: {e}");
            }
        });
        tracing::info!(node = cluster.node_id(), etcd = ?config.cluster.etcd, grpc = %grpc_addr, "joined the cluster");
        let peers = crate::rpc::relay::Peers::new(cluster.clone(), secret);
        (cluster, Some(task), Some(peers), matchmaker)
    };
    let gateway = Gateway::new(
        rooms.clone(),
        auth,
        config.gateway.clone(),
        shutdown.clone(),
        cluster.clone(),
        peers.clone(),
        matchmaker.clone(),
    );
    let app = gateway.router();
    let stop = shutdown.clone();
    let http = tokio::spawn(async move {
        // Game frames are small and latency matters: no Nagle delay on any socket.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!("could not set TCP_NODELAY: {e}");
            }
        });
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
    });
    tracing::info!(%addr, "gateway listening");
    Ok(Server {
        addr,
        rooms,
        gateway,
        cluster,
        matchmaker,
        peers,
        shutdown,
        http,
        grpc,
        _watcher: watcher,
    })
}

impl Server {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes every connection (code 1001) and room, and waits for the gateway to stop.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.http.await;
        let rooms = self.rooms.clone();
        let _ = tokio::task::spawn_blocking(move || rooms.shutdown("the server is shutting down"))
            .await;
        if let Some(mut grpc) = self.grpc {
            // Streams end with the shutdown; a peer that keeps one open is not waited for.
            if tokio::time::timeout(std::time::Duration::from_secs(2), &mut grpc)
                .await
                .is_err()
            {
                grpc.abort();
            }
        }
        self.cluster.leave().await;
    }

    /// A clone of the runtime, for tools that load modules next to the server.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.rooms.runtime().clone()
    }
}

/// Runs a node until `shutdown` resolves (the `ludus serve` command).
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
