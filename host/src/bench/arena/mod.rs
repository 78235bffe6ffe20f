//! `ludus bench arena`: the arena load test against a running node (Ludus or the native
//! baseline; both speak `proto/client.proto`).
//!
//! N clients join rooms of R (the first of each room creates it), then each sends arena
//! inputs `{seq, dx, dy}` at I Hz, open loop with a random phase, never waiting for
//! replies. Phases: join (bounded concurrency), warm-up, measurement, drain. Measured:
//! input-to-visible latency (from sending seq n until that client first sees a snapshot
//! showing its own last-applied seq >= n), snapshots received per second, joins and
//! disconnects, server CPU and RSS and this process's own CPU. The server's figures come
//! from /proc of its pid when it runs on this machine, or from its `/metrics`
//! (`--server-metrics`) when it runs on another; without either they are left out.

use anyhow::{Context, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, watch};

use super::Workload;
use crate::percentile::nearest_rank;
use crate::procstat::cpu_secs;

mod client;
use client::client;

#[derive(Clone, Debug, clap::Args)]
pub struct ArenaBench {
    /// The node to load. On another machine, pass --server-metrics to measure its CPU
    /// and memory too.
    #[arg(long, default_value = "127.0.0.1:7350")]
    pub target: SocketAddr,
    /// Clients (N).
    #[arg(long, default_value_t = 500)]
    pub clients: usize,
    /// Room size and rates (the tick rate is passed in the room config).
    #[command(flatten)]
    pub workload: Workload,
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Joins in flight at once.
    #[arg(long, default_value_t = 64)]
    pub join_concurrency: usize,
    /// The whole join phase must finish within this.
    #[arg(long, default_value = "90s", value_parser = humantime::parse_duration)]
    pub join_timeout: Duration,
    /// The server's pid (found from the listening port when omitted and the target is
    /// on this machine).
    #[arg(long, conflicts_with = "server_metrics")]
    pub server_pid: Option<u32>,
    /// Read the server's CPU time and memory from this Ludus node's metrics endpoint
    /// (its admin port, e.g. http://10.0.0.5:7351/metrics) instead of /proc: for a node
    /// on another machine.
    #[arg(long)]
    pub server_metrics: Option<String>,
    /// Step N up until p99 passes --p99-bound or errors appear; report the largest N held.
    #[arg(long)]
    pub find_max: bool,
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub p99_bound: Duration,
    /// N of the first find-max step, and the step.
    #[arg(long, default_value_t = 1000)]
    pub step: usize,
    /// Swap under load: halfway through the measurement, replace this module file (the
    /// one the server watches) with the bytes of --swap-with.
    #[arg(long, requires = "swap_with")]
    pub swap: Option<PathBuf>,
    #[arg(long)]
    pub swap_with: Option<PathBuf>,
    /// Cross-node play: rooms are created on this node (same cluster as
    /// --target) by their first player, and the other players join them through
    /// --target, which relays them to this node. Only those relayed players' latency is
    /// measured (the creators still play, so the load is the same).
    #[arg(long)]
    pub rooms_on: Option<SocketAddr>,
    /// A label for the report (e.g. `ludus` or `native`).
    #[arg(long, default_value = "ludus")]
    pub label: String,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub label: String,
    pub clients: usize,
    pub joined: usize,
    pub join_errors: usize,
    pub first_join_error: Option<String>,
    pub disconnects: usize,
    pub inputs_sent: u64,
    pub latency_samples: usize,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
    pub snapshots_per_sec: f64,
    /// The server's figures; absent when they could not be measured (a node on another
    /// machine without --server-metrics).
    pub server_cpu_pct: Option<f64>,
    pub server_cpu_pct_per_1000_clients: Option<f64>,
    pub server_rss_mib: Option<f64>,
    pub server_rss_kib_per_client: Option<f64>,
    pub loadgen_cpu_pct: f64,
    /// Swap under load: latency p99 and max within 1 s after the swap, and the server's
    /// own summary of the swap (rooms, pause per room).
    pub swap_latency_p99_ms: Option<f64>,
    pub swap_latency_max_ms: Option<f64>,
    pub swap_summary: Option<String>,
}

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const DRAIN: u8 = 2;

pub(super) struct Shared {
    pub(super) target: SocketAddr,
    /// Where rooms are created (the target unless --rooms-on).
    pub(super) rooms_on: SocketAddr,
    pub(super) room_size: usize,
    pub(super) tick_hz: u32,
    pub(super) input_period: Duration,
    pub(super) phase: AtomicU8,
    pub(super) joined: AtomicUsize,
    /// Clients whose join failed (the join phase ends when joined + failed = N).
    pub(super) failed: AtomicUsize,
    pub(super) join_slots: Semaphore,
    /// When the measurement started, for timestamps of latency samples.
    pub(super) epoch: Instant,
}

#[derive(Default)]
pub(super) struct ClientStats {
    pub(super) join_error: Option<String>,
    pub(super) disconnected: bool,
    pub(super) inputs: u64,
    pub(super) snapshots: u64,
    /// (ms since the shared epoch, latency in µs), measurement phase only.
    pub(super) latencies: Vec<(u32, u32)>,
}

/// The pid listening on `port`, from /proc/net/tcp and the processes' fds.
pub fn pid_listening_on(port: u16) -> anyhow::Result<u32> {
    let mut inode = None;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = f
                .get(1)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) && f.get(3) == Some(&"0A") {
                inode = f.get(9).map(|s| s.to_string());
            }
        }
    }
    let inode = inode.ok_or_else(|| anyhow!("nothing listens on port {port}"))?;
    let wanted = format!("socket:[{inode}]");
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == wanted) {
                return Ok(pid);
            }
        }
    }
    bail!("no process of ours holds the socket on port {port}; pass --server-pid")
}

/// Where the server's CPU time and memory are read.
enum Probe {
    /// /proc of a process on this machine.
    Pid(u32),
    /// A Ludus node's metrics endpoint.
    Metrics(String),
    /// Nowhere: the figures are left out.
    Absent,
}

impl Probe {
    fn choose(args: &ArenaBench) -> anyhow::Result<Probe> {
        Ok(match (&args.server_metrics, args.server_pid) {
            (Some(url), _) => Probe::Metrics(url.clone()),
            (None, Some(pid)) => Probe::Pid(pid),
            (None, None) if args.target.ip().is_loopback() => {
                Probe::Pid(pid_listening_on(args.target.port())?)
            }
            (None, None) => {
                eprintln!(
                    "{} is not on this machine: its CPU and memory are not measured (for a \
                     Ludus node, pass --server-metrics http://ADMIN_ADDR/metrics)",
                    args.target
                );
                Probe::Absent
            }
        })
    }

    /// The server's CPU seconds so far and its resident bytes now.
    async fn read(&self) -> anyhow::Result<Option<(f64, u64)>> {
        match self {
            Probe::Pid(pid) => {
                let read = || {
                    let pid = pid.to_string();
                    Ok::<_, std::io::Error>((cpu_secs(&pid)?, crate::procstat::rss_bytes(&pid)?))
                };
                let figures = read()
                    .with_context(|| format!("reading /proc/{pid} (the server's process)"))?;
                Ok(Some(figures))
            }
            Probe::Metrics(url) => read_metrics(url).await.map(Some),
            Probe::Absent => Ok(None),
        }
    }
}

/// A Ludus node's own CPU seconds and resident bytes, from its metrics endpoint.
async fn read_metrics(url: &str) -> anyhow::Result<(f64, u64)> {
    let text = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("reading the server's metrics at {url}"))?
        .text()
        .await
        .with_context(|| format!("reading the server's metrics at {url}"))?;
    let value = |name: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .ok_or_else(|| {
                anyhow!(
                    "{url} has no {name} (is it the admin port of a Ludus node on Linux, \
                     of this version or later?)"
                )
            })
    };
    let cpu = value("ludus_process_cpu_seconds")?;
    let rss = value("ludus_process_resident_memory_bytes")?;
    Ok((cpu, rss as u64))
}

pub async fn run(args: ArenaBench) -> anyhow::Result<Vec<Report>> {
    anyhow::ensure!(
        args.workload.room_size > 0 && args.clients > 0 && args.workload.input_hz > 0,
        "clients, room size and rate must be > 0"
    );
    let probe = Probe::choose(&args)?;
    // A wrong endpoint or pid fails here, before any client connects.
    probe.read().await?;
    if !args.find_max {
        let report = run_once(&args, args.clients, &probe).await?;
        print(&report);
        return Ok(vec![report]);
    }
    let mut reports = Vec::new();
    let mut n = args.step;
    let mut best = None;
    loop {
        let report = run_once(&args, n, &probe).await?;
        print(&report);
        let held = report.join_errors == 0
            && report.disconnects == 0
            && report.latency_samples > 0
            && report.latency_p99_ms <= args.p99_bound.as_secs_f64() * 1000.0;
        reports.push(report);
        if !held {
            break;
        }
        best = Some(n);
        n += args.step;
        // Let the server close the previous step's sessions and rooms.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let line = serde_json::json!({ "label": args.label, "find_max": best, "p99_bound_ms": args.p99_bound.as_millis() });
    println!(
        "find-max ({}): largest N that held p99 <= {:?} without errors: {}",
        args.label,
        args.p99_bound,
        best.map_or("none".into(), |n| n.to_string())
    );
    println!("{line}");
    Ok(reports)
}

async fn run_once(args: &ArenaBench, n: usize, probe: &Probe) -> anyhow::Result<Report> {
    let shared = Arc::new(Shared {
        target: args.target,
        rooms_on: args.rooms_on.unwrap_or(args.target),
        room_size: args.workload.room_size,
        tick_hz: args.workload.tick_hz,
        input_period: Duration::from_secs(1) / args.workload.input_hz,
        phase: AtomicU8::new(WARMUP),
        joined: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        join_slots: Semaphore::new(args.join_concurrency.max(1)),
        epoch: Instant::now(),
    });
    let (start_tx, start_rx) = watch::channel(false);
    let bar = ProgressBar::new(n as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(format!("{} N={n}: join", args.label));
    let run_tag = fastrand::u32(..);
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let room = format!("bench-{run_tag:08x}-{}", i / args.workload.room_size);
        tasks.push(tokio::spawn(client(
            i,
            room,
            i % args.workload.room_size == 0,
            shared.clone(),
            start_rx.clone(),
        )));
    }
    // Join phase, bounded in time.
    let join_deadline = Instant::now() + args.join_timeout;
    loop {
        let joined = shared.joined.load(Ordering::Relaxed);
        let settled = joined + shared.failed.load(Ordering::Relaxed);
        bar.set_position(joined as u64);
        if settled >= n || Instant::now() > join_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = start_tx.send(true);
    bar.set_message(format!("{} N={n}: warm-up", args.label));
    tokio::time::sleep(args.warmup).await;

    let (server0, self0, t0) = (probe.read().await?, cpu_secs("self")?, Instant::now());
    shared.phase.store(MEASURE, Ordering::Relaxed);
    bar.set_message(format!("{} N={n}: measure", args.label));
    let mut swap_at = None;
    if let (Some(path), Some(with)) = (&args.swap, &args.swap_with) {
        tokio::time::sleep(args.duration / 2).await;
        let bytes = std::fs::read(with).with_context(|| format!("reading {}", with.display()))?;
        let tmp = path.with_extension("swap-tmp");
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)?;
        swap_at = Some(shared.epoch.elapsed());
        tokio::time::sleep(args.duration - args.duration / 2).await;
    } else {
        tokio::time::sleep(args.duration).await;
    }
    let (self1, elapsed) = (cpu_secs("self")?, t0.elapsed().as_secs_f64());
    let server1 = probe.read().await?;
    shared.phase.store(DRAIN, Ordering::Relaxed);
    bar.finish_and_clear();

    let mut report = Report {
        label: args.label.clone(),
        clients: n,
        ..Report::default()
    };
    let mut latencies: Vec<(u32, u32)> = Vec::new();
    let mut snapshots = 0;
    for task in tasks {
        let stats = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_else(|| ClientStats {
                join_error: Some("client task did not finish".into()),
                ..ClientStats::default()
            });
        match stats.join_error {
            Some(e) => {
                report.join_errors += 1;
                report.first_join_error.get_or_insert(e);
            }
            None => report.joined += 1,
        }
        report.disconnects += usize::from(stats.disconnected);
        report.inputs_sent += stats.inputs;
        snapshots += stats.snapshots;
        latencies.extend(stats.latencies);
    }
    report.latency_samples = latencies.len();
    let mut all: Vec<u32> = latencies.iter().map(|l| l.1).collect();
    all.sort_unstable();
    let pct = |v: &[u32], q: f64| nearest_rank(v, q).map_or(0.0, |us| f64::from(us) / 1000.0);
    report.latency_p50_ms = pct(&all, 0.5);
    report.latency_p99_ms = pct(&all, 0.99);
    report.latency_max_ms = all.last().map_or(0.0, |us| f64::from(*us) / 1000.0);
    report.snapshots_per_sec = snapshots as f64 / elapsed;
    if let (Some((cpu0, _)), Some((cpu1, rss))) = (server0, server1) {
        let pct = (cpu1 - cpu0) / elapsed * 100.0;
        report.server_cpu_pct = Some(pct);
        report.server_cpu_pct_per_1000_clients = Some(pct / (n as f64 / 1000.0));
        report.server_rss_mib = Some(crate::bench::mib(rss));
        report.server_rss_kib_per_client = Some(rss as f64 / 1024.0 / n as f64);
    }
    report.loadgen_cpu_pct = (self1 - self0) / elapsed * 100.0;
    if let Some(at) = swap_at {
        let from = at.as_millis() as u32;
        let mut window: Vec<u32> = latencies
            .iter()
            .filter(|(t, _)| *t >= from && *t < from + 1000)
            .map(|l| l.1)
            .collect();
        window.sort_unstable();
        report.swap_latency_p99_ms = Some(pct(&window, 0.99));
        report.swap_latency_max_ms = Some(window.last().map_or(0.0, |us| f64::from(*us) / 1000.0));
        report.swap_summary = swap_summary(args.target).await;
    }
    // Let the clients' sockets close before the next step.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(report)
}

async fn swap_summary(target: SocketAddr) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(resp) = reqwest::get(format!("http://{target}/v1/games")).await
            && let Ok(games) = resp.json::<serde_json::Value>().await
            && let Some(s) = games.get(0).and_then(|g| g["last_swap"].as_str())
        {
            return Some(s.to_owned());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A server figure for the table: `-` when it was not measured.
fn shown(value: Option<f64>, decimals: usize, unit: &str) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{v:.decimals$}{unit}"))
}

pub fn print(r: &Report) {
    println!(
        "{:<10} {:>6} {:>7} {:>6} {:>5} {:>8} {:>8} {:>8} {:>9} {:>8} {:>9} {:>8} {:>8} {:>8}",
        "label",
        "N",
        "joined",
        "errors",
        "disc",
        "p50 ms",
        "p99 ms",
        "max ms",
        "snaps/s",
        "srv CPU",
        "/1000 cl",
        "RSS MiB",
        "KiB/cl",
        "gen CPU"
    );
    println!(
        "{:<10} {:>6} {:>7} {:>6} {:>5} {:>8.1} {:>8.1} {:>8.1} {:>9.0} {:>8} {:>9} {:>8} {:>8} {:>7.0}%",
        r.label,
        r.clients,
        r.joined,
        r.join_errors,
        r.disconnects,
        r.latency_p50_ms,
        r.latency_p99_ms,
        r.latency_max_ms,
        r.snapshots_per_sec,
        shown(r.server_cpu_pct, 0, "%"),
        shown(r.server_cpu_pct_per_1000_clients, 1, "%"),
        shown(r.server_rss_mib, 0, ""),
        shown(r.server_rss_kib_per_client, 1, ""),
        r.loadgen_cpu_pct
    );
    if let Some(e) = &r.first_join_error {
        println!("  first join error: {e}");
    }
    if let Some(s) = &r.swap_summary {
        println!(
            "  swap under load: {s}; latency in the second after it: p99 {:.1} ms, max {:.1} ms",
            r.swap_latency_p99_ms.unwrap_or_default(),
            r.swap_latency_max_ms.unwrap_or_default()
        );
    }
    println!("{}", serde_json::to_string(r).unwrap_or_default());
}
