//! `ludus demo`: the arena game in one room with bot players, swapped live from v1 to v2
//! halfway through. Shows the core loop with nothing but this checkout.

use anyhow::anyhow;
use std::time::{Duration, Instant};

use crate::guest_build::example_game_bytes;
use crate::rooms::{CreateRoom, RoomEvent, Rooms, RoomsConfig, SwapPolicy};
use crate::runtime::{Runtime, RuntimeLimits};

#[derive(Clone, Debug, clap::Args)]
pub struct DemoArgs {
    /// Bot players in the room (the arena holds 8 by default).
    #[arg(long, default_value_t = 8)]
    pub bots: u64,
    /// How long to run; the swap to v2 happens halfway.
    #[arg(long, default_value = "6s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    println!("building the example games for wasm32-wasip2 ...");
    let v1_bytes = tokio::task::spawn_blocking(|| example_game_bytes("arena")).await??;
    let v2_bytes = example_game_bytes("arena-v2")?;
    let rt = Runtime::new(RuntimeLimits::default())?;
    let v1 = rt.load(v1_bytes).await.map_err(|e| anyhow!("arena: {e}"))?;
    let v2 = rt
        .load(v2_bytes)
        .await
        .map_err(|e| anyhow!("arena v2: {e}"))?;
    println!("loaded {} and {}", v1.label(), v2.label());

    let rooms = Rooms::new(rt, RoomsConfig::default())?;
    rooms.install("arena", v1);
    let config = format!(r#"{{"max_players": {}}}"#, args.bots.max(1));
    let room = rooms
        .create(CreateRoom {
            game: "arena".into(),
            config: Some(config),
            ..Default::default()
        })
        .await?;
    println!(
        "room {} is ticking at {} Hz",
        room.id(),
        room.info().tick_hz
    );

    let (tx, mut watcher) = crate::mailbox::channel(1024);
    room.join(1, "bot-1", tx).await?;
    let mut others = Vec::new();
    for id in 2..=args.bots {
        let (tx, rx) = crate::mailbox::channel(1024);
        room.join(id, &format!("bot-{id}"), tx).await?;
        others.push(rx);
    }

    let start = Instant::now();
    let mut swapped = false;
    let mut seq = 0;
    let mut inputs = tokio::time::interval(Duration::from_millis(50));
    let mut report = tokio::time::interval(Duration::from_secs(1));
    let mut last = serde_json::Value::Null;
    while start.elapsed() < args.duration {
        tokio::select! {
            _ = inputs.tick() => {
                seq += 1;
                for id in 1..=args.bots {
                    let (dx, dy) = (fastrand::i32(-15..=15), fastrand::i32(-15..=15));
                    room.message(id, format!(r#"{{"seq":{seq},"dx":{dx},"dy":{dy}}}"#).into_bytes());
                }
                for rx in &mut others {
                    while rx.try_recv().is_some() {}
                }
            }
            _ = report.tick() => {
                if let Some(p) = last["players"].as_array().and_then(|p| p.first()) {
                    println!(
                        "tick {:>4}  rules v{}  players {}  bot-1 at ({}, {}) seq {}",
                        last["tick"], last["rules"], room.info().seats, p["x"], p["y"], p["seq"]
                    );
                }
                if !swapped && start.elapsed() >= args.duration / 2 {
                    swapped = true;
                    let report = rooms.swap_game("arena", v2.clone(), SwapPolicy::AllRooms).await?;
                    for r in &report.results {
                        match &r.result {
                            Ok(o) => println!("live swap: {} -> {} in {:?}, nobody dropped", o.from, o.to, o.pause),
                            Err(e) => println!("live swap failed in room {}: {e}", r.room),
                        }
                    }
                }
            }
            event = watcher.recv() => match event {
                Some(RoomEvent::Message { bytes, .. }) => last = serde_json::from_slice(&bytes).unwrap_or_default(),
                Some(other) => return Err(anyhow!("bot-1 left the room: {other:?}")),
                None => return Err(anyhow!("the room stopped")),
            },
        }
    }
    rooms.shutdown("demo over");
    Ok(())
}
