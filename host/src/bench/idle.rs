//! `ludus bench idle`: idle, authenticated WebSocket sessions on one node, counted up to
//! 100,000 by default: the server's resident memory at each step, then the full count
//! held (the server pings every third of its idle timeout; every client answers) with
//! the server's CPU and any dropped session reported.
//!
//! Sockets are spread over loopback source addresses (127.0.0.2, 127.0.0.3, ...):
//! one address has about 28,000 ephemeral ports towards one server port. The bench
//! raises its open-file limit (inherited by the node it starts) to what the count
//! needs: the count plus 1000 in each process, which takes a hard limit that high
//! (`ulimit -Hn`) or the right to raise it (CAP_SYS_RESOURCE).

use anyhow::{Context, anyhow, bail};
use futures_util::StreamExt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::memory::{rss_bytes, start_node};
use super::mib;

#[derive(Clone, Debug, clap::Args)]
pub struct IdleBench {
    /// Connection counts at which the server's memory is read, ascending
    /// (comma-separated); the last is held.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
    pub steps: Vec<usize>,
    /// How long the full count is held with pings.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub hold: Duration,
    /// Loopback source addresses to spread the sockets over (127.0.0.2 onwards).
    #[arg(long, default_value_t = 8)]
    pub sources: u8,
    /// Logins and connects in flight at once.
    #[arg(long, default_value_t = 64)]
    pub parallel: usize,
}

/// Raises this process's open-file limit to `want` (children inherit it); returns the
/// limit in force.
fn raise_file_limit(want: u64) -> anyhow::Result<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let now = getrlimit(Resource::Nofile);
    let current = now.current.unwrap_or(u64::MAX);
    if current >= want {
        return Ok(current);
    }
    let hard = now.maximum.unwrap_or(u64::MAX);
    // Raising the hard limit needs root (CAP_SYS_RESOURCE); otherwise go up to it.
    let raised = Rlimit {
        current: Some(want),
        maximum: Some(hard.max(want)),
    };
    if setrlimit(Resource::Nofile, raised).is_ok() {
        return Ok(want);
    }
    let to_hard = Rlimit {
        current: Some(hard),
        maximum: Some(hard),
    };
    setrlimit(Resource::Nofile, to_hard).context("raising the open-file limit")?;
    Ok(hard)
}

/// Logs a guest in over the shared HTTP client: its token.
async fn login(http: &reqwest::Client, addr: SocketAddr, i: usize) -> anyhow::Result<String> {
    let body: serde_json::Value = http
        .post(format!("http://{addr}/v1/auth/guest"))
        .json(&serde_json::json!({ "name": format!("idle-{i}") }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    body["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("no token in {body}"))
}

/// Opens one session from `source` and waits for its welcome; then reads (answering
/// the server's pings) until `stop`, counting the session in `dropped` if it ends
/// before.
async fn hold_one(
    addr: SocketAddr,
    source: IpAddr,
    token: String,
    stop: CancellationToken,
    dropped: Arc<AtomicUsize>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let tcp = socket.connect(addr).await?;
    tcp.set_nodelay(true)?;
    let url = format!("ws://{addr}/v1/ws?token={token}");
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, tcp, Some(config)).await?;
    match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
        Ok(Some(Ok(Message::Binary(_)))) => {}
        other => bail!("no welcome: {other:?}"),
    }
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                read = ws.next() => match read {
                    // Pings are answered by the WebSocket layer as they are read.
                    Some(Ok(_)) => continue,
                    _ => {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                },
            }
        }
    }))
}

pub async fn run(args: IdleBench) -> anyhow::Result<()> {
    let mut steps = args.steps.clone();
    steps.sort_unstable();
    steps.dedup();
    let total = *steps.last().ok_or_else(|| anyhow!("--steps is empty"))?;
    anyhow::ensure!(args.sources >= 1, "--sources must be at least 1");
    // Each process holds one end of every socket (and some files and HTTP connections).
    let want = (total + 1000) as u64;
    let limit = raise_file_limit(want)?;
    anyhow::ensure!(
        limit >= want,
        "{total} connections need {want} open files in this process and in the node it \
         starts, but the limit is {limit} and may not be raised here (raising the hard \
         limit takes CAP_SYS_RESOURCE): run with a higher `ulimit -Hn`, or ask for at \
         most {} connections",
        limit.saturating_sub(1000)
    );
    let ports = 28_000 * usize::from(args.sources);
    anyhow::ensure!(
        total <= ports,
        "{total} connections need more than {} loopback source addresses (--sources; about 28,000 each)",
        args.sources
    );
    let (mut child, pid, addr) = start_node("idle", total, &[]).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let base = rss_bytes(pid)?;
    println!(
        "open-file limit {limit}; node {addr}, RSS at start {:.1} MiB",
        mib(base)
    );

    let http = reqwest::Client::new();
    let stop = CancellationToken::new();
    let dropped = Arc::new(AtomicUsize::new(0));
    let mut held = Vec::with_capacity(total);
    let mut rows = Vec::new();
    let started = Instant::now();
    let mut opened = 0;
    let mut last_rss = base;
    for &step in &steps {
        let mut connecting = futures_util::stream::iter(opened..step)
            .map(|i| {
                let (http, stop, dropped) = (&http, stop.clone(), dropped.clone());
                let source = IpAddr::V4(Ipv4Addr::new(
                    127,
                    0,
                    0,
                    2 + (i % usize::from(args.sources)) as u8,
                ));
                async move {
                    let token = login(http, addr, i).await.context("guest login")?;
                    hold_one(addr, source, token, stop, dropped)
                        .await
                        .with_context(|| format!("connection {i} from {source}"))
                }
            })
            .buffer_unordered(args.parallel);
        while let Some(task) = connecting.next().await {
            held.push(task?);
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let rss = rss_bytes(pid)?;
        let own = rss_bytes(std::process::id())?;
        let per = rss.saturating_sub(base) as f64 / step as f64;
        // The step's own sessions: what one more session costs once the node is warm.
        let marginal = rss.saturating_sub(last_rss) as f64 / (step - opened) as f64;
        println!(
            "{step:>7} sessions: node RSS {:>8.1} MiB, {:>5.2} KiB per session since start, \
             {:>5.2} KiB per session of this step; bench RSS {:>8.1} MiB; {:.0} s in",
            mib(rss),
            per / 1024.0,
            marginal / 1024.0,
            mib(own),
            started.elapsed().as_secs_f64()
        );
        rows.push(serde_json::json!({
            "sessions": step, "node_rss": rss, "bytes_per_session": per as u64,
            "bytes_per_session_of_step": marginal as u64, "bench_rss": own,
        }));
        last_rss = rss;
        opened = step;
    }

    // Hold the full count: the node pings every session; none may drop.
    let (cpu, held_for) = super::cpu_while(pid, args.hold).await?;
    let rss = rss_bytes(pid)?;
    let lost = dropped.load(Ordering::Relaxed);
    println!(
        "held {total} sessions for {held_for:.0} s: {lost} dropped, node RSS {:.1} MiB, node CPU {:.1}% of one core",
        mib(rss),
        100.0 * cpu / held_for
    );
    println!(
        "{}",
        serde_json::json!({
            "sessions": total, "rss_start": base, "steps": rows, "held_s": held_for,
            "dropped": lost, "rss_held": rss, "node_cpu_share_held": cpu / held_for,
            "sources": args.sources,
        })
    );
    stop.cancel();
    for task in held {
        let _ = task.await;
    }
    let _ = child.kill().await;
    if lost > 0 {
        bail!("{lost} sessions dropped while held");
    }
    Ok(())
}
