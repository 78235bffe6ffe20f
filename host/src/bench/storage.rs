//! `ludus bench storage`: object writes per second and the time a write call takes,
//! from many concurrent writers (as rooms will write), on SQLite or PostgreSQL. Each
//! writer sends `batch` writes per call, in one transaction (a room's writes of one
//! tick), and waits for the answer before the next call.

use serde::Serialize;
use std::time::{Duration, Instant};

use super::{Stats, human};
use crate::storage::{Caller, Condition, ReadPerm, Storage, StorageConfig, WriteObject, WritePerm};

#[derive(Clone, Debug, clap::Args)]
pub struct StorageBench {
    /// `postgres://…` to measure PostgreSQL; default: SQLite in a fresh temp directory.
    #[arg(long)]
    pub url: Option<String>,
    /// Concurrent writers (rooms).
    #[arg(long, default_value_t = 64)]
    pub writers: usize,
    /// Writes per call, in one transaction.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// The pool's size (`storage.max_connections`).
    #[arg(long, default_value_t = 8)]
    pub pool: u32,
    /// How long to write.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
}

#[derive(Debug, Serialize)]
pub struct StorageReport {
    pub backend: String,
    pub writers: usize,
    pub batch: usize,
    pub pool: u32,
    pub writes: u64,
    pub errors: u64,
    pub writes_per_sec: f64,
    /// From a call to its answer (pool wait included).
    pub call: Stats,
}

pub async fn run(args: StorageBench) -> anyhow::Result<StorageReport> {
    anyhow::ensure!(
        args.writers > 0 && args.batch > 0,
        "need writers and a batch"
    );
    let dir = std::env::temp_dir().join(format!("ludus-bench-storage-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = StorageConfig {
        url: args.url.clone(),
        max_connections: args.pool,
        ..StorageConfig::default()
    };
    let storage = Storage::open(&cfg, &dir).await?;
    let value =
        serde_json::json!({ "x": 1.5, "y": -2.25, "hp": 100, "name": "a player" }).to_string();
    let start = Instant::now();
    let deadline = start + args.duration;
    let mut writers = Vec::new();
    for w in 0..args.writers {
        let (storage, value, batch) = (storage.clone(), value.clone(), args.batch);
        writers.push(tokio::spawn(async move {
            let mut times = Vec::new();
            let (mut writes, mut errors, mut n) = (0u64, 0u64, 0usize);
            while Instant::now() < deadline {
                let calls: Vec<WriteObject> = (0..batch)
                    .map(|_| {
                        n += 1;
                        WriteObject {
                            collection: "bench".into(),
                            key: format!("k{}", n % 100),
                            owner: w as u64 + 1,
                            value: value.clone(),
                            condition: Condition::Any,
                            read: ReadPerm::Owner,
                            write: WritePerm::Owner,
                        }
                    })
                    .collect();
                let t = Instant::now();
                let ok = if batch == 1 {
                    let one = calls.into_iter().next().expect("one write");
                    storage.write_object(Caller::Game, one).await.is_ok()
                } else {
                    storage
                        .write_objects(Caller::Game, calls)
                        .await
                        .is_ok_and(|r| r.iter().all(Result::is_ok))
                };
                times.push(t.elapsed());
                if ok {
                    writes += batch as u64;
                } else {
                    errors += 1;
                }
            }
            (times, writes, errors)
        }));
    }
    let (mut times, mut writes, mut errors) = (Vec::new(), 0, 0);
    for w in writers {
        let (t, n, e) = w.await?;
        times.extend(t);
        writes += n;
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    storage.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    let report = StorageReport {
        backend: format!("{:?}", storage.backend()).to_lowercase(),
        writers: args.writers,
        batch: args.batch,
        pool: args.pool,
        writes,
        errors,
        writes_per_sec: writes as f64 / elapsed,
        call: Stats::of(times),
    };
    println!(
        "storage bench: {} writers x {} writes per call, pool {}, {} ({:.1} s)",
        report.writers, report.batch, report.pool, report.backend, elapsed
    );
    println!(
        "  {:.0} writes/s ({} writes, {} failed calls); call p50 {}, p99 {}, max {}",
        report.writes_per_sec,
        report.writes,
        report.errors,
        human(report.call.p50_ns),
        human(report.call.p99_ns),
        human(report.call.max_ns)
    );
    println!("{}", serde_json::to_string(&report)?);
    Ok(report)
}
