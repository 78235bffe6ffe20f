//! `ludus bench floor`: what the arena workload's socket traffic alone costs this machine.
//!
//! N loopback TCP connections carry the arena benchmark's messages at its rates and
//! sizes (each client writes an input of `--input-bytes` at I Hz with a random phase;
//! the server end writes a snapshot of `--snapshot-bytes` to every member of each room
//! of R at T Hz), with no WebSocket, protobuf, session, room or game on either side:
//! one thread per end, each a single-threaded tokio runtime doing nothing but the
//! reads, writes and timers. It reports the CPU of each end and the messages actually
//! delivered per second against those offered. Whatever a game server and a load
//! generator do on top of this, they cannot use less CPU than this on the same machine,
//! so it bounds the N any server can hold with both ends on the same cores.

use anyhow::{Context, anyhow};
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::Workload;
use crate::procstat::cpu_secs;

#[derive(Clone, Debug, clap::Args)]
pub struct FloorBench {
    /// Connections (N).
    #[arg(long, default_value_t = 5000)]
    pub clients: usize,
    /// Room size and rates (the server end writes a room's snapshots in one go).
    #[command(flatten)]
    pub workload: Workload,
    /// Bytes of one input on the wire (an arena input in a binary WebSocket frame).
    #[arg(long, default_value_t = 70)]
    pub input_bytes: usize,
    /// Bytes of one snapshot on the wire (an 8-player arena snapshot, framed).
    #[arg(long, default_value_t = 390)]
    pub snapshot_bytes: usize,
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
}

#[derive(Debug, Serialize)]
pub struct FloorReport {
    pub clients: usize,
    pub inputs_offered_per_sec: f64,
    pub inputs_delivered_per_sec: f64,
    pub snapshots_offered_per_sec: f64,
    pub snapshots_delivered_per_sec: f64,
    pub server_end_cpu_pct: f64,
    pub client_end_cpu_pct: f64,
    pub total_cpu_pct: f64,
    /// CPU of both ends per delivered message (input or snapshot), in µs.
    pub cpu_us_per_message: f64,
}

/// Bytes received by each end; messages are counted from them.
#[derive(Default)]
struct Counters {
    server_in: AtomicU64,
    client_in: AtomicU64,
}

/// The soft limit on open files, from /proc/self/limits.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn this_thread_id() -> anyhow::Result<String> {
    let link = std::fs::read_link("/proc/thread-self").context("reading /proc/thread-self")?;
    link.file_name()
        .map(|t| t.to_string_lossy().into_owned())
        .ok_or_else(|| anyhow!("odd /proc/thread-self"))
}

/// One end on its own thread and single-threaded runtime; sends its thread id first.
fn spawn_end<F>(
    name: &str,
    tids: std::sync::mpsc::Sender<anyhow::Result<String>>,
    body: impl FnOnce() -> F + Send + 'static,
) -> anyhow::Result<()>
where
    F: Future<Output = anyhow::Result<()>>,
{
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let _ = tids.send(this_thread_id());
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return eprintln!("floor: no runtime: {e}"),
            };
            if let Err(e) = rt.block_on(body()) {
                eprintln!("floor: {e:#}");
            }
        })?;
    Ok(())
}

async fn server_end(
    listener: std::net::TcpListener,
    a: FloorBench,
    counters: Arc<Counters>,
) -> anyhow::Result<()> {
    let listener = TcpListener::from_std(listener)?;
    let mut rooms: Vec<Vec<tokio::net::tcp::OwnedWriteHalf>> = Vec::new();
    let mut room = Vec::new();
    for _ in 0..a.clients {
        let (socket, _) = listener.accept().await?;
        socket.set_nodelay(true)?;
        let (mut read, write) = socket.into_split();
        let counters = counters.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            while let Ok(n @ 1..) = read.read(&mut buf).await {
                counters.server_in.fetch_add(n as u64, Ordering::Relaxed);
            }
        });
        room.push(write);
        if room.len() == a.workload.room_size {
            rooms.push(std::mem::take(&mut room));
        }
    }
    if !room.is_empty() {
        rooms.push(room);
    }
    let period = Duration::from_secs(1) / a.workload.tick_hz;
    let count = rooms.len() as u32;
    for (i, mut room) in rooms.into_iter().enumerate() {
        let snapshot = vec![b's'; a.snapshot_bytes];
        let start = tokio::time::Instant::now() + period * i as u32 / count;
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(start, period);
            loop {
                ticks.tick().await;
                for socket in &mut room {
                    if socket.write_all(&snapshot).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
    std::future::pending().await
}

async fn client_end(
    addr: std::net::SocketAddr,
    a: FloorBench,
    counters: Arc<Counters>,
    connected: tokio::sync::oneshot::Sender<()>,
) -> anyhow::Result<()> {
    let period = Duration::from_secs(1) / a.workload.input_hz;
    for _ in 0..a.clients {
        let socket = TcpStream::connect(addr).await.context("connecting")?;
        socket.set_nodelay(true)?;
        let (mut read, mut write) = socket.into_split();
        let counters = counters.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok(n @ 1..) = read.read(&mut buf).await {
                counters.client_in.fetch_add(n as u64, Ordering::Relaxed);
            }
        });
        let input = vec![b'i'; a.input_bytes];
        let start = tokio::time::Instant::now() + period.mul_f64(fastrand::f64());
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(start, period);
            loop {
                ticks.tick().await;
                if write.write_all(&input).await.is_err() {
                    return;
                }
            }
        });
    }
    let _ = connected.send(());
    std::future::pending().await
}

pub async fn run(a: FloorBench) -> anyhow::Result<FloorReport> {
    anyhow::ensure!(
        a.clients > 0
            && a.workload.room_size > 0
            && a.workload.input_hz > 0
            && a.workload.tick_hz > 0,
        "clients, room size and rates must be > 0"
    );
    anyhow::ensure!(
        a.input_bytes > 0 && a.snapshot_bytes > 0,
        "message sizes must be > 0"
    );
    // Both ends are in this process: two descriptors per connection.
    if let Some(limit) = open_files_limit() {
        let needed = 2 * a.clients as u64 + 64;
        anyhow::ensure!(
            needed <= limit,
            "{} connections need about {needed} open files in this process, and its limit is {limit} (raise it with `ulimit -n`)",
            a.clients
        );
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let counters = Arc::new(Counters::default());
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let (connected_tx, connected_rx) = tokio::sync::oneshot::channel();
    let (args, c) = (a.clone(), counters.clone());
    spawn_end("floor-server", tid_tx.clone(), move || {
        server_end(listener, args, c)
    })?;
    let (args, c) = (a.clone(), counters.clone());
    spawn_end("floor-client", tid_tx, move || {
        client_end(addr, args, c, connected_tx)
    })?;
    let server_tid = tid_rx.recv()??;
    let client_tid = tid_rx.recv()??;
    tokio::time::timeout(Duration::from_secs(120), connected_rx)
        .await
        .context("connecting took over 2 minutes")?
        .context("the client end failed (see above)")?;
    tokio::time::sleep(a.warmup).await;

    let cpu = || -> anyhow::Result<(f64, f64)> {
        Ok((
            cpu_secs(&format!("self/task/{server_tid}"))?,
            cpu_secs(&format!("self/task/{client_tid}"))?,
        ))
    };
    let bytes = || {
        (
            counters.server_in.load(Ordering::Relaxed),
            counters.client_in.load(Ordering::Relaxed),
        )
    };
    let (cpu0, bytes0, t0) = (cpu()?, bytes(), Instant::now());
    tokio::time::sleep(a.duration).await;
    let (cpu1, bytes1, secs) = (cpu()?, bytes(), t0.elapsed().as_secs_f64());

    let inputs = (bytes1.0 - bytes0.0) as f64 / a.input_bytes as f64 / secs;
    let snapshots = (bytes1.1 - bytes0.1) as f64 / a.snapshot_bytes as f64 / secs;
    let server_cpu = (cpu1.0 - cpu0.0) / secs * 100.0;
    let client_cpu = (cpu1.1 - cpu0.1) / secs * 100.0;
    let delivered = inputs + snapshots;
    Ok(FloorReport {
        clients: a.clients,
        inputs_offered_per_sec: a.clients as f64 * f64::from(a.workload.input_hz),
        inputs_delivered_per_sec: inputs,
        snapshots_offered_per_sec: a.clients as f64 * f64::from(a.workload.tick_hz),
        snapshots_delivered_per_sec: snapshots,
        server_end_cpu_pct: server_cpu,
        client_end_cpu_pct: client_cpu,
        total_cpu_pct: server_cpu + client_cpu,
        cpu_us_per_message: if delivered > 0.0 {
            (server_cpu + client_cpu) / 100.0 / delivered * 1e6
        } else {
            0.0
        },
    })
}

pub fn print(r: &FloorReport) {
    println!(
        "floor N={}: inputs {:.0}/s of {:.0} offered, snapshots {:.0}/s of {:.0} offered; CPU server end {:.0}%, client end {:.0}%, total {:.0}% ({:.2} µs per message)",
        r.clients,
        r.inputs_delivered_per_sec,
        r.inputs_offered_per_sec,
        r.snapshots_delivered_per_sec,
        r.snapshots_offered_per_sec,
        r.server_end_cpu_pct,
        r.client_end_cpu_pct,
        r.total_cpu_pct,
        r.cpu_us_per_message
    );
    println!("{}", serde_json::to_string(r).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small floor run delivers what it offers and measures both ends.
    #[tokio::test]
    async fn a_small_floor_run_delivers_what_it_offers() {
        let report = run(FloorBench {
            clients: 40,
            workload: Workload {
                room_size: 8,
                input_hz: 20,
                tick_hz: 20,
            },
            input_bytes: 70,
            snapshot_bytes: 390,
            warmup: Duration::from_millis(300),
            duration: Duration::from_secs(1),
        })
        .await
        .unwrap();
        assert_eq!(report.inputs_offered_per_sec, 800.0);
        for (delivered, offered) in [
            (report.inputs_delivered_per_sec, 800.0),
            (report.snapshots_delivered_per_sec, 800.0),
        ] {
            assert!(
                (delivered - offered).abs() / offered < 0.15,
                "{delivered} of {offered}: {report:?}"
            );
        }
        assert!(report.total_cpu_pct >= 0.0 && report.cpu_us_per_message >= 0.0);
    }
}
