//! `ludus bench runtime`: the cost of the runtime itself, with the arena game (its Rust
//! build, or with `--typescript` its TypeScript build, the same rules on a JS engine).
//!
//! - compile: a fresh compilation of the arena module (each sample has distinct bytes);
//! - create: a room's instantiate + `init`, directly on the runtime;
//! - create (service): `Rooms::create`, including the hop to a worker thread;
//! - message / tick: one guest call in an arena room of 8 players (tick includes the
//!   snapshot broadcast's effects being drained); message: a `messages` call with one
//!   input; messages x8: one call with an input from each of the 8 players (what a room
//!   that holds its messages until the tick makes at 20 Hz inputs and ticks);
//! - swap pause: save + instantiate + restore of an 8-player arena room, as the room
//!   measures it, alternating v1 and v2.

use anyhow::{Context, anyhow};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Stats, human};
use crate::rooms::{CreateRoom, Rooms, RoomsConfig};
use crate::runtime::{Message, Module, RoomInit, Runtime, RuntimeLimits};

#[derive(Clone, Debug, clap::Args)]
pub struct RuntimeBench {
    /// The arena module (default: build example-games/arena from this checkout).
    #[arg(long)]
    pub arena: Option<std::path::PathBuf>,
    /// Arena v2, for the swap measurement (default: build example-games/arena-v2).
    #[arg(long)]
    pub arena_v2: Option<std::path::PathBuf>,
    /// Measure arena's TypeScript build (example-games/arena-ts and arena-ts-v2) instead
    /// of its Rust one.
    #[arg(long)]
    pub typescript: bool,
    /// Samples of the cheap measurements (calls); the others scale from it.
    #[arg(long, default_value_t = 20_000)]
    pub samples: usize,
}

#[derive(Debug, Serialize)]
pub struct RuntimeReport {
    pub module_bytes: usize,
    pub compile: Stats,
    pub create: Stats,
    pub create_service: Stats,
    pub message: Stats,
    pub messages_8: Stats,
    pub tick: Stats,
    pub swap_pause: Stats,
}

fn read(path: Option<&std::path::Path>, example: &str) -> anyhow::Result<Vec<u8>> {
    match path {
        Some(p) => std::fs::read(p).with_context(|| format!("reading {}", p.display())),
        None => crate::guest_build::example_game_bytes(example),
    }
}

/// A room id and config as a designer's game sees them.
fn init(i: usize) -> RoomInit {
    RoomInit {
        id: format!("bench-{i}").into(),
        config: "{}".into(),
        seed: i as u64,
        dropped: Default::default(),
        requests: Default::default(),
    }
}

/// Distinct bytes with the same code: the module plus a custom section.
fn with_custom_section(bytes: &[u8], i: usize) -> Vec<u8> {
    let name = b"ludus-bench";
    let payload = (i as u64).to_le_bytes();
    let mut out = bytes.to_vec();
    out.push(0); // custom section id
    out.push((1 + name.len() + payload.len()) as u8);
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(&payload);
    out
}

pub async fn run(args: RuntimeBench) -> anyhow::Result<RuntimeReport> {
    let (v1_name, v2_name) = if args.typescript {
        ("arena-ts", "arena-ts-v2")
    } else {
        ("arena", "arena-v2")
    };
    let v1_bytes = read(args.arena.as_deref(), v1_name)?;
    let v2_bytes = read(args.arena_v2.as_deref(), v2_name)?;
    let rt = Runtime::new(RuntimeLimits::default())?;

    let mut compile = Vec::new();
    for i in 0..5 {
        let bytes = with_custom_section(&v1_bytes, i);
        let start = Instant::now();
        rt.load_blocking(&bytes)
            .map_err(|e| anyhow!("compiling arena: {e}"))?;
        compile.push(start.elapsed());
    }
    let v1 = rt
        .load_blocking(&v1_bytes)
        .map_err(|e| anyhow!("arena: {e}"))?;
    let v2 = rt
        .load_blocking(&v2_bytes)
        .map_err(|e| anyhow!("arena v2: {e}"))?;

    let create_samples = (args.samples / 10).max(100);
    let mut create = Vec::with_capacity(create_samples);
    for i in 0..create_samples {
        let room = init(i);
        let start = Instant::now();
        let mut instance = rt.instantiate(&v1, &room)?;
        instance.init(&room)??;
        create.push(start.elapsed());
        drop(instance);
    }

    let (message, messages_8, tick) = call_costs(&rt, &v1, args.samples)?;
    let (create_service, swap_pause) = service_costs(rt.clone(), v1, v2, create_samples).await?;
    Ok(RuntimeReport {
        module_bytes: v1_bytes.len(),
        compile: Stats::of(compile),
        create: Stats::of(create),
        create_service: Stats::of(create_service),
        message: Stats::of(message),
        messages_8: Stats::of(messages_8),
        tick: Stats::of(tick),
        swap_pause: Stats::of(swap_pause),
    })
}

fn call_costs(
    rt: &Arc<Runtime>,
    module: &Arc<Module>,
    samples: usize,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>, Vec<Duration>)> {
    let room = init(0);
    let mut instance = rt.instantiate(module, &room)?;
    instance.init(&room)??;
    for id in 1..=8 {
        instance.join(id, "bench")??;
    }
    let input = |seq: u64, from: u64| Message {
        from,
        payload: format!(
            r#"{{"seq":{seq},"dx":{},"dy":{}}}"#,
            (seq % 21) as i64 - 10,
            3
        )
        .into_bytes(),
    };
    let inputs: Vec<[Message; 1]> = (1..=samples as u64)
        .map(|seq| [input(seq, 1 + seq % 8)])
        .collect();
    let mut message = Vec::with_capacity(samples);
    for batch in &inputs {
        let start = Instant::now();
        instance.messages(batch)?;
        message.push(start.elapsed());
    }
    let first = samples as u64 + 1;
    let batches: Vec<Vec<Message>> = (0..samples as u64 / 8)
        .map(|b| (1..=8).map(|from| input(first + b, from)).collect())
        .collect();
    let mut messages_8 = Vec::with_capacity(batches.len());
    for batch in &batches {
        let start = Instant::now();
        instance.messages(batch)?;
        messages_8.push(start.elapsed());
    }
    let mut tick = Vec::with_capacity(samples);
    for _ in 0..samples {
        let start = Instant::now();
        instance.tick(Duration::from_millis(50))?;
        instance.drain_effects().for_each(drop);
        tick.push(start.elapsed());
    }
    Ok((message, messages_8, tick))
}

async fn service_costs(
    rt: Arc<Runtime>,
    v1: Arc<Module>,
    v2: Arc<Module>,
    samples: usize,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let rooms = Rooms::new(rt, RoomsConfig::default())?;
    rooms.install(&v1.name, v1.clone());
    let mut create = Vec::with_capacity(samples);
    for _ in 0..samples {
        let start = Instant::now();
        let room = rooms
            .create(CreateRoom {
                game: v1.name.clone(),
                ..Default::default()
            })
            .await?;
        create.push(start.elapsed());
        room.close("bench").await;
    }
    let room = rooms
        .create(CreateRoom {
            game: v1.name.clone(),
            ..Default::default()
        })
        .await?;
    let mut sinks = Vec::new();
    for id in 1..=8 {
        let (tx, rx) = crate::mailbox::channel(4096);
        room.join(id, "bench", tx).await?;
        room.message(id, format!(r#"{{"seq":1,"dx":{id},"dy":1}}"#).into_bytes());
        sinks.push(rx);
    }
    let mut pauses = Vec::new();
    for i in 0..(samples / 2).max(100) {
        let module = if i % 2 == 0 { v2.clone() } else { v1.clone() };
        pauses.push(room.swap(module).await?.pause);
        for rx in &mut sinks {
            while rx.try_recv().is_some() {}
        }
    }
    rooms.shutdown("bench done");
    Ok((create, pauses))
}

pub fn print(report: &RuntimeReport) {
    println!("arena module: {} bytes", report.module_bytes);
    println!(
        "{:<34} {:>10} {:>10} {:>10} {:>10} {:>8}",
        "measurement", "mean", "p50", "p99", "max", "samples"
    );
    let rows = [
        ("compile (cranelift, uncached)", &report.compile),
        ("room create: instantiate + init", &report.create),
        ("room create via Rooms (worker)", &report.create_service),
        ("message call (8 players)", &report.message),
        ("messages call, 8 inputs", &report.messages_8),
        ("tick call + snapshot (8 players)", &report.tick),
        ("swap pause (8 players)", &report.swap_pause),
    ];
    for (name, s) in rows {
        println!(
            "{:<34} {:>10} {:>10} {:>10} {:>10} {:>8}",
            name,
            human(s.mean_ns),
            human(s.p50_ns),
            human(s.p99_ns),
            human(s.max_ns),
            s.samples
        );
    }
    println!("{}", serde_json::to_string(report).unwrap_or_default());
}
