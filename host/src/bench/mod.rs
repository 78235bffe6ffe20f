//! `ludus bench`: measurements of the host, printed as a table and as one JSON line.

pub mod arena;
pub mod devloop;
pub mod floor;
pub mod idle;
pub mod matchmaking;
pub mod memory;
pub mod migrate;
pub mod restart;
pub mod rooms;
pub mod runtime;
pub mod storage;
pub mod takeover;

use crate::procstat::cpu_secs;
use serde::Serialize;
use std::time::Duration;

/// The arena workload's shape, shared by `bench arena` and `bench floor` so the floor
/// always moves what the arena benchmark moves.
#[derive(Clone, Debug, clap::Args)]
pub struct Workload {
    /// Players per room (R).
    #[arg(long, default_value_t = 8)]
    pub room_size: usize,
    /// Inputs per second per client (I).
    #[arg(long, default_value_t = 20)]
    pub input_hz: u32,
    /// Ticks per second of each room (T): a snapshot to every player per tick.
    #[arg(long, default_value_t = 20)]
    pub tick_hz: u32,
}

/// The CPU time `pid` spends while this task sleeps `hold`, and how long the sleep
/// really took, both in seconds.
pub async fn cpu_while(pid: u32, hold: Duration) -> anyhow::Result<(f64, f64)> {
    let before = cpu_secs(&pid.to_string())?;
    let from = std::time::Instant::now();
    tokio::time::sleep(hold).await;
    let cpu = cpu_secs(&pid.to_string())? - before;
    Ok((cpu, from.elapsed().as_secs_f64()))
}

/// Bytes in MiB, for the tables.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}

/// Percentiles of a set of timings.
#[derive(Clone, Debug, Serialize)]
pub struct Stats {
    pub samples: usize,
    pub mean_ns: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
}

impl Stats {
    pub fn of(mut samples: Vec<Duration>) -> Stats {
        samples.sort_unstable();
        let n = samples.len().max(1);
        let at = |q: f64| crate::percentile::nearest_rank(&samples, q).unwrap_or_default();
        let total: Duration = samples.iter().sum();
        Stats {
            samples: samples.len(),
            mean_ns: (total / n as u32).as_nanos() as u64,
            p50_ns: at(0.50).as_nanos() as u64,
            p99_ns: at(0.99).as_nanos() as u64,
            max_ns: samples.last().copied().unwrap_or_default().as_nanos() as u64,
        }
    }
}

/// `1.23 µs`-style formatting for the table.
pub fn human(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns} ns"),
        1_000..1_000_000 => format!("{:.2} µs", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2} ms", ns as f64 / 1e6),
        _ => format!("{:.2} s", ns as f64 / 1e9),
    }
}
