//! One simulated arena player of `ludus bench arena`: joins (or creates) its room,
//! sends inputs open loop, and measures how long each takes to show in a snapshot.

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use super::{ClientStats, DRAIN, MEASURE, Shared, Ws};
use crate::gateway::pb::{
    self, ClientFrame, ErrorCode, ServerFrame, client_frame::Body as In, server_frame::Body as Out,
};

async fn next_frame(ws: &mut Ws) -> anyhow::Result<ServerFrame> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => return Ok(ServerFrame::decode(&b[..])?),
            Some(Ok(Message::Close(c))) => bail!("closed: {c:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => bail!(e),
            None => bail!("connection ended"),
        }
    }
}

fn frame(seq: u64, ack: u64, body: In) -> Message {
    Message::Binary(
        ClientFrame {
            seq,
            ack,
            body: Some(body),
        }
        .encode_to_vec()
        .into(),
    )
}

/// The load generator's sockets: small buffers (tungstenite zero-fills its read buffer,
/// 128 KiB by default, on every read attempt: that memset was a fifth of this
/// process's CPU), and no Nagle delay, as a game client would have.
fn ws_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
}

/// Logs in, connects and joins; returns the socket, the player id and the last seq seen.
async fn join(room: &str, creator: bool, s: &Shared) -> anyhow::Result<(Ws, u64, u64, u64)> {
    let node = if creator { s.rooms_on } else { s.target };
    let (token, _) = crate::client::guest_login(node, "bench").await?;
    let url = format!("ws://{node}/v1/ws?token={token}");
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(ws_config()), true)
        .await
        .context("connecting")?;
    let welcome = next_frame(&mut ws).await?;
    let Some(Out::Welcome(w)) = welcome.body else {
        bail!("expected a welcome")
    };
    let mut out_seq = 0;
    let config = format!(
        r#"{{"max_players": {}, "tick_hz": {}}}"#,
        s.room_size, s.tick_hz
    );
    let started = Instant::now();
    loop {
        out_seq += 1;
        let body = if creator {
            In::Create(pb::CreateRoom {
                game: "arena".into(),
                room_id: room.to_owned(),
                config: config.clone(),
            })
        } else {
            In::Join(pb::JoinRoom {
                room_id: room.to_owned(),
            })
        };
        ws.send(frame(out_seq, 0, body)).await?;
        loop {
            let f = next_frame(&mut ws).await?;
            match f.body {
                Some(Out::Joined(_)) => return Ok((ws, w.player_id, f.seq, out_seq)),
                Some(Out::Error(e))
                    if e.code == ErrorCode::RoomNotFound as i32
                        && started.elapsed() < Duration::from_secs(30) =>
                {
                    // The room's creator has not got there yet.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    break;
                }
                Some(Out::Error(e)) => bail!("join refused: {}", e.message),
                _ => {}
            }
        }
    }
}

/// The last-applied seq a snapshot shows for `me`, found without parsing the JSON:
/// arena writes each player as `{"id":N,"x":..,"y":..,"seq":S`.
fn seq_in_snapshot(payload: &[u8], me_pattern: &[u8]) -> Option<u64> {
    let at = memchr::memmem::find(payload, me_pattern)?;
    let rest = &payload[at..];
    let seq_at = memchr::memmem::find(rest, b"\"seq\":")? + 6;
    let digits = rest[seq_at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(digits)
}

pub(super) async fn client(
    _i: usize,
    room: String,
    creator: bool,
    s: Arc<Shared>,
    mut start: watch::Receiver<bool>,
) -> ClientStats {
    let mut stats = ClientStats::default();
    // Joiners wait for a join slot; a room's creator does not: joiners of a room whose
    // creator has not got there yet hold their slots while they wait for it, so with
    // every slot taken by them the creator would never get one (until they time out).
    let permit = match creator {
        true => None,
        false => s.join_slots.acquire().await.ok(),
    };
    let joined = join(&room, creator, &s).await;
    drop(permit);
    let (mut ws, me, mut last_seen, mut out_seq) = match joined {
        Ok(j) => j,
        Err(e) => {
            stats.join_error = Some(format!("{e:#}"));
            s.failed.fetch_add(1, Ordering::Relaxed);
            return stats;
        }
    };
    s.joined.fetch_add(1, Ordering::Relaxed);
    // Until every client has joined, keep reading (the room is already ticking): a
    // client that stopped reading would fall behind and be dropped as too slow.
    let waiting = start.wait_for(|go| *go);
    tokio::pin!(waiting);
    loop {
        tokio::select! {
            _ = &mut waiting => break,
            msg = ws.next() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    if let Ok(f) = ServerFrame::decode(&b[..]) {
                        last_seen = last_seen.max(f.seq);
                    }
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => {
                    stats.disconnected = true;
                    return stats;
                }
                Some(Ok(_)) => {}
            },
        }
    }
    let me_pattern = format!("{{\"id\":{me},").into_bytes();
    let phase_offset = s.input_period.mul_f64(fastrand::f64());
    let mut inputs =
        tokio::time::interval_at(tokio::time::Instant::now() + phase_offset, s.input_period);
    inputs.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut input_seq = 0u64;
    let mut pending: VecDeque<(u64, Instant)> = VecDeque::new();
    loop {
        let phase = s.phase.load(Ordering::Relaxed);
        if phase == DRAIN {
            break;
        }
        tokio::select! {
            _ = inputs.tick() => {
                input_seq += 1;
                out_seq += 1;
                let (dx, dy) = (fastrand::i32(-10..=10), fastrand::i32(-10..=10));
                let payload = format!(r#"{{"seq":{input_seq},"dx":{dx},"dy":{dy}}}"#);
                let body = In::Message(pb::RoomMessage { room_id: room.clone(), payload: payload.into() });
                pending.push_back((input_seq, Instant::now()));
                if ws.send(frame(out_seq, last_seen, body)).await.is_err() {
                    stats.disconnected = true;
                    break;
                }
                stats.inputs += 1;
            }
            msg = ws.next() => {
                let f = match msg {
                    Some(Ok(Message::Binary(b))) => match ServerFrame::decode(&b[..]) { Ok(f) => f, Err(_) => continue },
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                    _ => { stats.disconnected = true; break; }
                };
                last_seen = last_seen.max(f.seq);
                let Some(Out::Message(m)) = f.body else { continue };
                let Some(shown) = seq_in_snapshot(&m.payload, &me_pattern) else { continue };
                let now = Instant::now();
                // With --rooms-on, a room's creator plays on the room's own node.
                let measuring = phase == MEASURE && !(creator && s.rooms_on != s.target);
                if measuring {
                    stats.snapshots += 1;
                }
                while pending.front().is_some_and(|(seq, _)| *seq <= shown) {
                    let (_, sent) = pending.pop_front().unwrap_or((0, now));
                    if measuring {
                        let t = now.duration_since(s.epoch).as_millis() as u32;
                        stats.latencies.push((t, now.duration_since(sent).as_micros() as u32));
                    }
                }
            }
        }
    }
    let _ = ws.close(Some(crate::client::normal_close())).await;
    stats
}
