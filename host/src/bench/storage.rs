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
    /// Measure from rooms instead: this many rooms of the `keeper` fixture game, each
    /// writing `--writes-per-tick` objects every tick through the contract (the writers
    /// and batch flags are then unused).
    #[arg(long, default_value_t = 0)]
    pub rooms: usize,
    /// With `--rooms`: objects each room writes per tick (0: ticks alone, the baseline).
    #[arg(long, default_value_t = 1)]
    pub writes_per_tick: u32,
    /// With `--rooms`: the rooms' tick rate.
    #[arg(long, default_value_t = 20)]
    pub hz: u32,
}

/// What `--rooms` measures: from the game's side, each write's time from request to
/// answer, its own tick calls' wall time and the intervals between its ticks.
#[derive(Debug, Serialize)]
pub struct RoomsReport {
    pub backend: String,
    pub rooms: usize,
    pub writes_per_tick: u32,
    pub hz: u32,
    pub pool: u32,
    pub writes: u64,
    pub errors: u64,
    pub writes_per_sec: f64,
    /// From the request (in the tick) to the answer reaching the game (failed writes'
    /// answers included).
    pub request_to_answer: Stats,
    /// The game's tick call, its storage requests included (wall time seen by the game).
    pub tick: Stats,
    /// The interval between ticks (the period when no tick is late).
    pub tick_interval: Stats,
    /// Taking a connection from the pool, probed every 10 ms during the run.
    pub pool_wait: Stats,
    /// The host's whole work for one tick of a room on its worker thread (the tick call,
    /// its effects, answers due, the hand-over of its requests): each room's last tick,
    /// sampled every 10 ms.
    pub host_tick: Stats,
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

/// Runs the bench the flags ask for and prints its report.
pub async fn run(args: StorageBench) -> anyhow::Result<()> {
    if args.rooms > 0 {
        from_rooms(args).await.map(drop)
    } else {
        writers(args).await.map(drop)
    }
}

async fn writers(args: StorageBench) -> anyhow::Result<StorageReport> {
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

async fn from_rooms(args: StorageBench) -> anyhow::Result<RoomsReport> {
    use crate::rooms::{CreateRoom, RoomEvent, RoomStorage, Rooms, RoomsConfig};
    use crate::runtime::{Runtime, RuntimeLimits};

    let dir = std::env::temp_dir().join(format!("ludus-bench-storage-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = StorageConfig {
        url: args.url.clone(),
        max_connections: args.pool,
        ..StorageConfig::default()
    };
    let storage = Storage::open(&cfg, &dir).await?;
    let rt = Runtime::new(RuntimeLimits {
        max_instances: u32::try_from(args.rooms + 8).unwrap_or(u32::MAX),
        ..RuntimeLimits::default()
    })?;
    let bytes = crate::guest_build::example_game_bytes("keeper")?;
    let module = rt.load(bytes).await?;
    let rooms = Rooms::with_storage(
        rt,
        RoomsConfig::default(),
        Some(RoomStorage::new(storage.clone())),
    )?;
    rooms.install("keeper", module);
    let config = serde_json::json!({ "writes_per_tick": args.writes_per_tick, "hz": args.hz });
    let mut watchers = Vec::new();
    for i in 0..args.rooms {
        let room = rooms
            .create(CreateRoom {
                game: "keeper".into(),
                config: Some(config.to_string()),
                ..Default::default()
            })
            .await?;
        let (tx, rx) = crate::mailbox::channel(1024);
        room.join(i as u64 + 1, "watcher", tx).await?;
        watchers.push((room, rx));
    }
    // Reports of the first second include the start; they are left out.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for (_, rx) in &mut watchers {
        while rx.try_recv().is_some() {}
    }
    let start = Instant::now();
    let probe = {
        let (storage, until) = (storage.clone(), start + args.duration);
        let handles: Vec<_> = watchers.iter().map(|(room, _)| room.clone()).collect();
        tokio::spawn(async move {
            let (mut waits, mut ticks) = (Vec::new(), Vec::new());
            let mut last = vec![0u64; handles.len()];
            while Instant::now() < until {
                if let Ok(waited) = storage.pool_wait().await {
                    waits.push(waited);
                }
                // A room's last tick, once per tick it made since the last look.
                for (room, seen) in handles.iter().zip(&mut last) {
                    let n = room.ticks();
                    if n != *seen {
                        *seen = n;
                        ticks.push(room.last_tick_duration());
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (waits, ticks)
        })
    };
    tokio::time::sleep(args.duration).await;
    let elapsed = start.elapsed().as_secs_f64();
    let (pool_wait, host_tick) = probe.await?;
    let (mut latency, mut tick, mut interval, mut errors) =
        (Vec::new(), Vec::new(), Vec::new(), 0u64);
    let micros = |v: &serde_json::Value| {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(serde_json::Value::as_u64)
            .map(Duration::from_micros)
            .collect::<Vec<_>>()
    };
    for (_, rx) in &mut watchers {
        while let Some(event) = rx.try_recv() {
            let RoomEvent::Message { bytes, .. } = event else {
                continue;
            };
            let Ok(msg) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                continue;
            };
            let report = &msg["report"];
            latency.extend(micros(&report["latency_us"]));
            tick.extend(micros(&report["tick_us"]));
            interval.extend(micros(&report["dt_us"]));
            errors += report["errors"].as_u64().unwrap_or(0);
        }
    }
    let closing = rooms.clone();
    tokio::task::spawn_blocking(move || closing.shutdown("bench over")).await?;
    rooms.settle_storage(Duration::from_secs(10)).await;
    storage.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    // Failed writes have a time to their answer too; only the others count as writes.
    let writes = (latency.len() as u64).saturating_sub(errors);
    let report = RoomsReport {
        backend: format!("{:?}", storage.backend()).to_lowercase(),
        rooms: args.rooms,
        writes_per_tick: args.writes_per_tick,
        hz: args.hz,
        pool: args.pool,
        writes,
        errors,
        writes_per_sec: writes as f64 / elapsed,
        request_to_answer: Stats::of(latency),
        tick: Stats::of(tick),
        tick_interval: Stats::of(interval),
        pool_wait: Stats::of(pool_wait),
        host_tick: Stats::of(host_tick),
    };
    println!(
        "storage bench from rooms: {} rooms x {} writes per tick at {} Hz, pool {}, {} ({:.1} s)",
        report.rooms, report.writes_per_tick, report.hz, report.pool, report.backend, elapsed
    );
    println!(
        "  {:.0} writes/s answered ({} failed); request to answer p50 {}, p99 {}",
        report.writes_per_sec,
        report.errors,
        human(report.request_to_answer.p50_ns),
        human(report.request_to_answer.p99_ns),
    );
    println!(
        "  tick call p50 {}, p99 {}; tick interval p50 {}, p99 {}, max {}",
        human(report.tick.p50_ns),
        human(report.tick.p99_ns),
        human(report.tick_interval.p50_ns),
        human(report.tick_interval.p99_ns),
        human(report.tick_interval.max_ns),
    );
    println!(
        "  host tick work (sampled) p50 {}, p99 {}, max {}",
        human(report.host_tick.p50_ns),
        human(report.host_tick.p99_ns),
        human(report.host_tick.max_ns),
    );
    println!(
        "  pool wait (probed every 10 ms) p50 {}, p99 {}, max {}",
        human(report.pool_wait.p50_ns),
        human(report.pool_wait.p99_ns),
        human(report.pool_wait.max_ns),
    );
    println!("{}", serde_json::to_string(&report)?);
    Ok(report)
}
