//! `ludus bench`: measurements of the host, printed as a table and as one JSON line.

pub mod arena;
pub mod floor;
pub mod matchmaking;
pub mod memory;
pub mod runtime;

use serde::Serialize;
use std::time::Duration;

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
