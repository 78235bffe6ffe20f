//! One WebSocket connection: decodes client frames (with size and rate limits) and
//! passes them to the player's session; writes what the session sends. Generic over
//! the socket's `Stream`/`Sink`, so a test can drive it without a network.

use axum::extract::ws::{CloseFrame, Message};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

use super::GatewayConfig;
use super::auth::Identity;
use super::frames::{self, Mode};
use super::pb::{self, ErrorCode, ServerFrame, server_frame::Body as Out};
use super::rate::RateLimit;
use super::session::{ConnLink, Sessions, ToConn, close_code};

const STRIKE_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

/// Everything a connection needs besides its socket.
pub struct ConnParams {
    pub id: u64,
    pub who: Identity,
    pub resume: Option<(String, u64)>,
    pub mode: Mode,
    pub sessions: Arc<Sessions>,
    pub cfg: Arc<GatewayConfig>,
}

fn encode(mode: Mode, frame: &ServerFrame) -> Message {
    match mode {
        Mode::Binary => Message::Binary(frames::encode_binary(frame).into()),
        Mode::Json => Message::Text(frames::encode_json(frame).into()),
    }
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.chars().take(120).collect::<String>().into(),
    }))
}

/// An error frame outside the numbered stream, for input the session never saw.
fn input_error(mode: Mode, code: ErrorCode, message: String) -> Message {
    let frame = ServerFrame {
        seq: 0,
        ack: 0,
        body: Some(Out::Error(pb::Error {
            code: code as i32,
            message,
            in_reply_to: 0,
        })),
    };
    encode(mode, &frame)
}

pub async fn run<S, E>(socket: S, p: ConnParams)
where
    S: Stream<Item = Result<Message, E>> + Sink<Message> + Unpin + Send,
{
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel(p.cfg.replay_frames + 64);
    let session = match p
        .sessions
        .connect(&p.who, p.resume.clone(), ConnLink { id: p.id, tx })
        .await
    {
        Ok(session) => session,
        Err(reason) => {
            let _ = sink
                .send(input_error(p.mode, ErrorCode::ResumeFailed, reason.clone()))
                .await;
            let _ = sink.send(close(close_code::RESUME_FAILED, &reason)).await;
            return;
        }
    };
    let mut rate = RateLimit::new(p.cfg.max_messages_per_second);
    // Error frames earned in the current window; the count starts over after a quiet
    // `STRIKE_WINDOW`, so a long session is not closed for rare mistakes.
    let mut strikes = 0u32;
    let mut window_start = Instant::now();
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(ToConn::Frame(frame)) => {
                    if sink.send(encode(p.mode, &frame)).await.is_err() {
                        break;
                    }
                }
                Some(ToConn::Close { code, reason }) => {
                    let _ = sink.send(close(code, &reason)).await;
                    return; // the session has already moved on from this connection
                }
                None => {
                    let _ = sink.send(close(close_code::SESSION_ENDED, "the session ended")).await;
                    return;
                }
            },
            incoming = stream.next() => {
                let message = match incoming {
                    Some(Ok(m @ (Message::Binary(_) | Message::Text(_)))) => m,
                    Some(Ok(Message::Close(Some(frame)))) if frame.code == 1000 => {
                        session.end(p.id).await;
                        return;
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => continue, // ping/pong: answered by the WebSocket layer
                };
                let mode = if matches!(message, Message::Text(_)) { Mode::Json } else { Mode::Binary };
                match admit(&message, &mut rate, &p.cfg) {
                    Ok(frame) => {
                        if !session.frame(p.id, frame).await {
                            break;
                        }
                    }
                    Err((code, reason)) => {
                        if window_start.elapsed() > STRIKE_WINDOW {
                            strikes = 0;
                            window_start = Instant::now();
                        }
                        strikes += 1;
                        if strikes > p.cfg.max_strikes {
                            let _ = sink.send(close(close_code::POLICY, "too many bad or excess frames")).await;
                            break;
                        }
                        if sink.send(input_error(mode, code, reason)).await.is_err() {
                            break;
                        }
                    }
                }
            }
        }
    }
    session.detach(p.id).await;
}

/// Checks a frame against the limits, then decodes it (a frame over the size limit is
/// never parsed).
fn admit(
    message: &Message,
    rate: &mut RateLimit,
    cfg: &GatewayConfig,
) -> Result<pb::ClientFrame, (ErrorCode, String)> {
    let len = match message {
        Message::Binary(b) => b.len(),
        Message::Text(t) => t.len(),
        _ => 0,
    };
    if len > cfg.max_frame_bytes {
        return Err((
            ErrorCode::TooLarge,
            format!(
                "frame of {len} bytes is over the limit of {}",
                cfg.max_frame_bytes
            ),
        ));
    }
    if !rate.allow(Instant::now()) {
        let limit = cfg.max_messages_per_second;
        return Err((
            ErrorCode::RateLimited,
            format!("over {limit} messages per second; frame dropped"),
        ));
    }
    let decoded = match message {
        Message::Binary(b) => frames::decode_binary(b),
        Message::Text(t) => frames::decode_json(t),
        _ => Err("not a data frame".to_owned()),
    };
    decoded.map_err(|e| (ErrorCode::Malformed, e))
}
