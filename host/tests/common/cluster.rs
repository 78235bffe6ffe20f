//! Nodes of a test cluster: real servers on 127.0.0.1 sharing a test etcd.

use super::{Etcd, serve};
use ludus::client::Client;
use ludus::gateway::pb::server_frame::Body as Out;
use ludus::server::Server;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

pub const SECRET: &str = "the test cluster's shared secret, 32+ bytes";

/// A node of the cluster at `etcd` under `prefix`, serving arena.
pub async fn node(
    etcd: &Etcd,
    prefix: &str,
    id: &str,
    ttl: Duration,
) -> (Server, tempfile::TempDir) {
    node_with(etcd, prefix, id, ttl, |_| {}).await
}

pub async fn node_with(
    etcd: &Etcd,
    prefix: &str,
    id: &str,
    ttl: Duration,
    tweak: impl FnOnce(&mut ludus::config::Config),
) -> (Server, tempfile::TempDir) {
    node_serving(etcd, prefix, id, ttl, &["arena"], tweak).await
}

pub async fn node_serving(
    etcd: &Etcd,
    prefix: &str,
    id: &str,
    ttl: Duration,
    games: &[&str],
    tweak: impl FnOnce(&mut ludus::config::Config),
) -> (Server, tempfile::TempDir) {
    let (url, prefix, id) = (etcd.url.clone(), prefix.to_owned(), id.to_owned());
    serve(games, move |c| {
        c.cluster.etcd = vec![url];
        c.cluster.prefix = Some(prefix);
        c.cluster.node_id = Some(id);
        c.cluster.lease_ttl = ttl;
        c.cluster.secret = Some(SECRET.into());
        tweak(c);
    })
    .await
}

/// Waits for the answer to a create: `Ok(())` when joined, `Err(message)` when refused.
pub async fn create_outcome(client: &mut Client) -> Result<(), String> {
    loop {
        let frame = tokio::time::timeout(WAIT, client.recv())
            .await
            .expect("an answer in time")
            .expect("connected");
        match frame.body {
            Some(Out::Joined(_)) => return Ok(()),
            Some(Out::Error(e)) => return Err(e.message),
            _ => {}
        }
    }
}

/// Runs `ludus <args>` against the cluster; returns (success, stdout, stderr).
pub fn ludus(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ludus"))
        .args(args)
        .env("LUDUS_LOG", "warn")
        .env("LUDUS_CLUSTER__SECRET", SECRET)
        .output()
        .expect("running ludus");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A TCP forwarder the test controls: it passes bytes both ways until it is told to
/// black-hole, then it keeps every connection open and drops whatever arrives (a peer
/// that stops answering without closing, as a broken network does).
pub struct Proxy {
    pub addr: std::net::SocketAddr,
    black: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: std::net::SocketAddr) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let black = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = black.clone();
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let flag = flag.clone();
                tokio::spawn(async move {
                    let outbound = if flag.load(Ordering::Relaxed) {
                        None
                    } else {
                        tokio::net::TcpStream::connect(target).await.ok()
                    };
                    let (mut in_read, mut in_write) = inbound.into_split();
                    let Some(outbound) = outbound else {
                        // Swallow everything, answer nothing, never close.
                        let mut buf = vec![0u8; 16 << 10];
                        while matches!(
                            tokio::io::AsyncReadExt::read(&mut in_read, &mut buf).await,
                            Ok(n) if n > 0
                        ) {}
                        drop(in_write);
                        return;
                    };
                    let (mut out_read, mut out_write) = outbound.into_split();
                    let up = pump(&mut in_read, &mut out_write, &flag);
                    let down = pump(&mut out_read, &mut in_write, &flag);
                    tokio::join!(up, down);
                });
            }
        });
        Proxy { addr, black, task }
    }

    /// From now on nothing passes, in either direction, on any connection.
    pub fn black_hole(&self) {
        self.black.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Bytes pass again (on connections opened from now on; older ones lost bytes and
    /// are broken for good).
    pub fn restore(&self) {
        self.black
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

async fn pump(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    black: &std::sync::atomic::AtomicBool,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if black.load(std::sync::atomic::Ordering::Relaxed) {
            continue; // dropped on the floor
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    if !black.load(std::sync::atomic::Ordering::Relaxed) {
        let _ = to.shutdown().await;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A `ludus serve` process of a test cluster sharing `etcd` under `prefix`, serving
/// arena from `module` on `addr`, with its data in `data`; `env` adds or overrides
/// settings (`LUDUS_STORAGE__URL`, `LUDUS_CLUSTER__LEASE_TTL`, `LUDUS_LOG` (default
/// `warn`), ...). SIGKILLed when dropped.
pub fn serve_process(
    etcd: &Etcd,
    prefix: &str,
    id: &str,
    addr: std::net::SocketAddr,
    data: &std::path::Path,
    module: &str,
    env: &[(&str, &str)],
) -> super::Proc {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_ludus"));
    command
        .args(["serve", "--listen", &addr.to_string()])
        .args(["--admin", "127.0.0.1:0"])
        .args(["--etcd", &etcd.url, "--node-id", id])
        .arg("--data-dir")
        .arg(data)
        .arg("--game")
        .arg(format!("arena={module}"))
        .env("LUDUS_CLUSTER__PREFIX", prefix)
        .env("LUDUS_CLUSTER__SECRET", SECRET)
        .env(
            "LUDUS_AUTH__SECRET",
            "a test secret of enough length: 32 bytes or more",
        )
        .env("LUDUS_ROOMS__MAX_ROOMS_PER_PLAYER", "0")
        .env("LUDUS_LOG", "warn")
        .stdout(std::process::Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    super::Proc::new(command.spawn().expect("starting ludus serve"))
}

/// The ids of the open rooms `node` runs, from its `/v1/rooms` (none if it does not
/// answer).
pub async fn rooms_on(node: std::net::SocketAddr, token: &str) -> Vec<String> {
    let Ok(answer) = reqwest::Client::new()
        .get(format!("http://{node}/v1/rooms"))
        .bearer_auth(token)
        .send()
        .await
    else {
        return Vec::new();
    };
    let rooms: Vec<serde_json::Value> = answer.json().await.unwrap_or_default();
    rooms
        .iter()
        .filter(|r| r["closed"].is_null())
        .filter_map(|r| r["id"].as_str().map(str::to_owned))
        .collect()
}
