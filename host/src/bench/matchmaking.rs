//! `ludus bench match`: matchmaker throughput. N clients (spread over one or more nodes
//! of a cluster) connect, then all ask for a match at once; the report gives tickets
//! matched per second and the time from asking to `match_found` per ticket.

use anyhow::bail;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, watch};

use crate::client::{Client, ClientOptions};
use crate::gateway::pb::server_frame::Body as Out;

#[derive(Clone, Debug, clap::Args)]
pub struct MatchBench {
    /// Nodes the clients connect to, round robin (127.0.0.1 only).
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:7350")]
    pub targets: Vec<SocketAddr>,
    /// Tickets (one client each).
    #[arg(long, default_value_t = 800)]
    pub tickets: usize,
    #[arg(long, default_value = "arena")]
    pub game: String,
    #[arg(long, default_value = "")]
    pub mode: String,
    /// Connections in flight at once while clients log in.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,
    /// Every ticket must be matched within this.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Default, Serialize)]
pub struct MatchReport {
    pub tickets: usize,
    pub nodes: usize,
    pub matched: usize,
    pub errors: usize,
    pub first_error: Option<String>,
    pub rooms: usize,
    /// From the moment every client asked until the last match arrived.
    pub elapsed_ms: f64,
    pub tickets_per_sec: f64,
    pub time_to_match_p50_ms: f64,
    pub time_to_match_p99_ms: f64,
    pub time_to_match_max_ms: f64,
}

pub async fn run(args: MatchBench) -> anyhow::Result<MatchReport> {
    for t in &args.targets {
        if !t.ip().is_loopback() {
            bail!("ludus bench match only loads 127.0.0.1 targets, not {t}");
        }
    }
    anyhow::ensure!(
        args.tickets > 0 && !args.targets.is_empty(),
        "need tickets and targets"
    );
    let slots = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let (go_tx, go_rx) = watch::channel(None::<Instant>);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(args.tickets);
    let mut tasks = Vec::new();
    for i in 0..args.tickets {
        let target = args.targets[i % args.targets.len()];
        let (slots, mut go, ready) = (slots.clone(), go_rx.clone(), ready_tx.clone());
        let (game, mode, timeout) = (args.game.clone(), args.mode.clone(), args.timeout);
        tasks.push(tokio::spawn(async move {
            let permit = slots.acquire().await;
            let client = Client::guest(target, &format!("m{i}"), ClientOptions::default()).await;
            drop(permit);
            let _ = ready.send(()).await;
            let mut client = client.map_err(|e| format!("connecting: {e:#}"))?;
            let asked = loop {
                if let Some(at) = *go.borrow_and_update() {
                    break at;
                }
                go.changed().await.map_err(|_| "stopped".to_owned())?;
            };
            client
                .find_match(&game, &mode, &[])
                .await
                .map_err(|e| format!("asking: {e:#}"))?;
            let found = tokio::time::timeout(timeout, async {
                loop {
                    match client.recv().await.map(|f| f.body) {
                        Ok(Some(Out::MatchFound(f))) => return Ok(f.room_id),
                        Ok(Some(Out::MatchCancelled(c))) => return Err(c.reason),
                        Ok(Some(Out::Error(e))) => return Err(e.message),
                        Ok(_) => {}
                        Err(e) => return Err(format!("{e:#}")),
                    }
                }
            })
            .await
            .map_err(|_| "no match in time".to_owned())??;
            let took = asked.elapsed();
            client.close().await;
            Ok::<_, String>((found, took, Instant::now()))
        }));
    }
    drop(ready_tx);
    let mut connected = 0;
    while connected < args.tickets && ready_rx.recv().await.is_some() {
        connected += 1;
    }
    let start = Instant::now();
    let _ = go_tx.send(Some(start));
    let mut report = MatchReport {
        tickets: args.tickets,
        nodes: args.targets.len(),
        ..MatchReport::default()
    };
    let mut rooms = std::collections::HashSet::new();
    let mut times = Vec::new();
    let mut last = start;
    for task in tasks {
        match task.await {
            Ok(Ok((room, took, at))) => {
                rooms.insert(room);
                times.push(took);
                last = last.max(at);
            }
            Ok(Err(e)) => {
                report.errors += 1;
                report.first_error.get_or_insert(e);
            }
            Err(e) => {
                report.errors += 1;
                report.first_error.get_or_insert(e.to_string());
            }
        }
    }
    times.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |q| crate::percentile::nearest_rank(&times, q).map_or(0.0, ms);
    report.matched = times.len();
    report.rooms = rooms.len();
    report.elapsed_ms = ms(times.last().copied().unwrap_or_default());
    report.tickets_per_sec = if report.elapsed_ms > 0.0 {
        report.matched as f64 / (report.elapsed_ms / 1000.0)
    } else {
        0.0
    };
    report.time_to_match_p50_ms = at(0.50);
    report.time_to_match_p99_ms = at(0.99);
    report.time_to_match_max_ms = at(1.0);
    println!(
        "match: {} tickets on {} node(s): {} matched into {} rooms, {} errors{}",
        report.tickets,
        report.nodes,
        report.matched,
        report.rooms,
        report.errors,
        report
            .first_error
            .as_ref()
            .map_or(String::new(), |e| format!(" (first: {e})"))
    );
    println!(
        "  {:.0} tickets/s matched; time to match p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        report.tickets_per_sec,
        report.time_to_match_p50_ms,
        report.time_to_match_p99_ms,
        report.time_to_match_max_ms
    );
    println!("{}", serde_json::to_string(&report)?);
    Ok(report)
}
