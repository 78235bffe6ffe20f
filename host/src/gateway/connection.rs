//! One WebSocket connection. After the handshake it is handed to the player's session,
//! which reads and writes it directly (no task between them): [`Conn`] decodes client
//! frames under the size and rate limits and batches outgoing frames until the session
//! flushes. Generic over the socket's `Stream`/`Sink`, so a test can drive it without a
//! network. It knows nothing of sessions: the gateway hands it to one.

use axum::extract::ws::{CloseFrame, Message};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Error as WsError;

use super::GatewayConfig;
use super::client_error::close_code;
use super::frames::{self, Mode};
use super::pb::{self, ErrorCode, ServerFrame};
use crate::lock::Recover;
use crate::rate::RateLimit;

const STRIKE_WINDOW: Duration = Duration::from_secs(10);

/// How long a write to the client may take before the connection counts as too slow
/// (it is dropped; the session keeps the frames for a resume).
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a closing connection waits for the client's answer to its close frame,
/// reading and discarding what the client still sends, so that the close arrives
/// instead of a TCP reset.
pub(super) const LINGER: Duration = Duration::from_secs(2);

/// Why reading a socket failed, as far as the client is told.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ReadFailure {
    /// A frame or message over the size limit (close 1009).
    TooLarge,
    /// Bad WebSocket framing (close 1002).
    Protocol,
    /// A text message that is not UTF-8 (close 1007).
    NotUtf8,
    /// The connection broke.
    Broken,
}

/// An error of the socket's stream, classified.
pub trait SocketError {
    fn failure(self) -> ReadFailure;
}

impl SocketError for WsError {
    fn failure(self) -> ReadFailure {
        match self {
            WsError::Capacity(_) => ReadFailure::TooLarge,
            WsError::Protocol(_) => ReadFailure::Protocol,
            WsError::Utf8(_) => ReadFailure::NotUtf8,
            _ => ReadFailure::Broken,
        }
    }
}

/// A socket that classifies its own errors (the gRPC stream, `play.rs`).
impl SocketError for ReadFailure {
    fn failure(self) -> ReadFailure {
        self
    }
}

impl SocketError for axum::Error {
    fn failure(self) -> ReadFailure {
        match self.into_inner().downcast::<WsError>() {
            Ok(e) => e.failure(),
            Err(_) => ReadFailure::Broken,
        }
    }
}

/// A WebSocket as the session uses it: read and written from one task, so not split.
trait Socket: Stream<Item = Result<Message, ReadFailure>> + Sink<Message, Error = ()> + Send {}
impl<T: Stream<Item = Result<Message, ReadFailure>> + Sink<Message, Error = ()> + Send> Socket
    for T
{
}

/// Classifies a socket's read errors and drops its write errors (the session only needs
/// to know that a write failed). Unlike `SinkExt::sink_map_err`, it may be used again
/// after an error.
struct Plain<S>(S);

impl<S: Stream<Item = Result<Message, E>> + Unpin, E: SocketError> Stream for Plain<S> {
    type Item = Result<Message, ReadFailure>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.0)
            .poll_next(cx)
            .map(|item| item.map(|r| r.map_err(SocketError::failure)))
    }
}

impl<S: Sink<Message> + Unpin> Sink<Message> for Plain<S> {
    type Error = ();
    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), ()>> {
        Pin::new(&mut self.0).poll_ready(cx).map_err(|_| ())
    }
    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), ()> {
        Pin::new(&mut self.0).start_send(item).map_err(|_| ())
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), ()>> {
        Pin::new(&mut self.0).poll_flush(cx).map_err(|_| ())
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), ()>> {
        Pin::new(&mut self.0).poll_close(cx).map_err(|_| ())
    }
}

/// What the client sent, as the session sees it.
pub enum Incoming {
    Frame(pb::ClientFrame),
    /// A frame over a limit or malformed, or a ping due: a frame is queued for the
    /// client, nothing else to do.
    Queued,
    /// Too many rejected frames: a policy close is due.
    Abusive,
    /// The client broke the WebSocket protocol or its size limit: the connection must
    /// close with `code` (an error frame is queued when the client can read one).
    Broken {
        code: u16,
        reason: &'static str,
    },
    /// The client answered nothing for the idle timeout.
    Idle,
    /// The client said goodbye (a `Goodbye` frame, or a WebSocket close with code
    /// 1000): the session ends now.
    Goodbye,
    /// The connection dropped.
    Gone,
}

/// A client's socket, owned by its session while attached.
pub struct Conn {
    pub id: u64,
    mode: Mode,
    socket: Pin<Box<dyn Socket>>,
    rate: RateLimit,
    /// Error frames earned in the current window; the count starts over after a quiet
    /// `STRIKE_WINDOW`, so a long session is not closed for rare mistakes.
    strikes: u32,
    window_start: Instant,
    cfg: Arc<GatewayConfig>,
    /// Encoded frames waiting for the next flush.
    outbox: Vec<Message>,
    /// When the client last sent anything (a frame, a pong, a close).
    last_heard: tokio::time::Instant,
    /// A ping goes out every third of the idle timeout.
    ping: tokio::time::Interval,
    /// Whether the socket's read side (or the ping timer) has anything for us.
    read_gate: ReadGate,
    _guard: Box<dyn Send + Sync>,
}

/// The session's task wakes 20-40 times a second under a 20 Hz game, for a room's
/// frames as often as for the client's, and a `select!` polls every source each time.
/// Polling the socket's read side costs a waker registration in the WebSocket layer,
/// a readiness check and a look at its read buffer (about 6% of the server's CPU in the
/// arena benchmark at N=2000). The socket and the ping timer are therefore polled with
/// a waker of their own, which marks the gate open before it wakes the task: while the
/// gate is shut, nothing on the read side can have changed, and [`Conn::next`] answers
/// `Pending` without touching them.
struct ReadGate {
    shared: Arc<GateShared>,
    /// The waker the socket and the timer are polled with (it wakes `shared.task`).
    waker: Waker,
    /// A clone of the task's waker in `shared.task`, compared without the lock.
    task: Option<Waker>,
}

struct GateShared {
    open: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for GateShared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.open.store(true, Ordering::SeqCst);
        let task = self.task.lock().recover().clone();
        if let Some(task) = task {
            task.wake();
        }
    }
}

impl ReadGate {
    fn new() -> Self {
        let shared = Arc::new(GateShared {
            // Open: the socket has not been polled yet.
            open: AtomicBool::new(true),
            task: Mutex::new(None),
        });
        ReadGate {
            waker: Waker::from(shared.clone()),
            shared,
            task: None,
        }
    }

    /// True if the read side must be polled now (and shuts the gate until the socket or
    /// the timer wakes it); false if nothing there has woken since the last poll.
    /// Records `cx`'s task as the one to wake either way.
    fn enter(&mut self, cx: &Context<'_>) -> bool {
        if !self.task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
            let task = cx.waker().clone();
            *self.shared.task.lock().recover() = Some(task.clone());
            self.task = Some(task);
        }
        self.shared.open.swap(false, Ordering::SeqCst)
    }

    /// Something was read: the next look must poll again (the WebSocket layer may hold
    /// more frames already read from the socket, which no wake-up would announce).
    fn keep_open(&self) {
        self.shared.open.store(true, Ordering::SeqCst);
    }
}

/// What the read side had: a message (or the end of the stream), or a ping is due.
enum ReadSide {
    Read(Option<Result<Message, ReadFailure>>),
    PingDue,
}

fn encode(mode: Mode, frame: &ServerFrame) -> Message {
    match mode {
        Mode::Binary => Message::Binary(frames::encode_binary(frame).into()),
        Mode::Json => Message::Text(frames::encode_json(frame).into()),
    }
}

fn close_message(code: u16, reason: &str) -> Message {
    metrics::counter!("ludus_closes_total", "code" => code.to_string()).increment(1);
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.chars().take(120).collect::<String>().into(),
    }))
}

/// Counters of the public port's traffic, counted on every frame. Plain process-wide
/// atomics: a `metrics` counter costs two atomic writes and a call through its handle
/// per increment (1.5% of the server's CPU in the arena benchmark); the admin port
/// copies these into `/metrics` when it is read ([`traffic`]).
mod counters {
    use std::sync::atomic::AtomicU64;
    pub static CLIENT_FRAMES: AtomicU64 = AtomicU64::new(0);
    pub static CLIENT_BYTES: AtomicU64 = AtomicU64::new(0);
    pub static SERVER_FRAMES: AtomicU64 = AtomicU64::new(0);
    pub static SERVER_BYTES: AtomicU64 = AtomicU64::new(0);
}

/// Frames and bytes received from and sent to clients by this process so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    pub client_frames: u64,
    pub client_bytes: u64,
    pub server_frames: u64,
    pub server_bytes: u64,
}

/// The public port's traffic so far (every gateway in the process).
pub fn traffic() -> Traffic {
    use std::sync::atomic::Ordering::Relaxed;
    Traffic {
        client_frames: counters::CLIENT_FRAMES.load(Relaxed),
        client_bytes: counters::CLIENT_BYTES.load(Relaxed),
        server_frames: counters::SERVER_FRAMES.load(Relaxed),
        server_bytes: counters::SERVER_BYTES.load(Relaxed),
    }
}

fn count(counter: &std::sync::atomic::AtomicU64, n: u64) {
    counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
}

/// An error frame outside the numbered stream, for input the session never saw.
fn input_error(mode: Mode, code: ErrorCode, message: String) -> Message {
    error_message(mode, super::ClientError::new(code, message))
}

fn error_message(mode: Mode, error: super::ClientError) -> Message {
    let frame = ServerFrame {
        seq: 0,
        ack: 0,
        body: Some(error.frame(0)),
    };
    encode(mode, &frame)
}

impl Conn {
    /// A connection over `socket`, speaking `mode`; `guard` is held as long as the
    /// socket is open (it counts the connection).
    pub fn new<S, E>(
        socket: S,
        id: u64,
        mode: Mode,
        cfg: Arc<GatewayConfig>,
        guard: Box<dyn Send + Sync>,
    ) -> Conn
    where
        S: Stream<Item = Result<Message, E>> + Sink<Message> + Unpin + Send + 'static,
        E: SocketError + 'static,
    {
        let every = (cfg.idle_timeout / 3).max(Duration::from_millis(100));
        let now = tokio::time::Instant::now();
        let mut ping = tokio::time::interval_at(now + every, every);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Conn {
            id,
            mode,
            socket: Box::pin(Plain(socket)),
            rate: RateLimit::new(cfg.max_messages_per_second),
            strikes: 0,
            window_start: Instant::now(),
            cfg,
            outbox: Vec::new(),
            last_heard: now,
            ping,
            read_gate: ReadGate::new(),
            _guard: guard,
        }
    }

    /// Tells the client why its session could not take it (an error frame, then a
    /// close: [`close_code::UNAVAILABLE`] when the node cannot take sessions now, else
    /// [`close_code::RESUME_FAILED`]) and drops the socket.
    pub async fn refuse(mut self, error: super::ClientError) {
        let code = match error.code {
            ErrorCode::Unavailable => close_code::UNAVAILABLE,
            ErrorCode::Moved => close_code::MOVED,
            // A login elsewhere won the session (see `Cluster::claim_session`).
            ErrorCode::Refused => close_code::REPLACED,
            _ => close_code::RESUME_FAILED,
        };
        self.outbox.push(close_message(code, &error.message));
        let frame = error_message(self.mode, error);
        self.outbox.insert(0, frame);
        self.finish().await;
    }

    /// Queues a frame; it is written at the next [`Conn::flush`].
    pub fn queue(&mut self, frame: &ServerFrame) {
        self.outbox.push(encode(self.mode, frame));
    }

    /// Writes the queued frames with one flush; false if the connection failed or
    /// could not take them within `WRITE_TIMEOUT`.
    pub async fn flush(&mut self) -> bool {
        if self.outbox.is_empty() {
            return true;
        }
        let (mut frames, mut bytes) = (0, 0);
        for message in &self.outbox {
            match message {
                Message::Binary(b) => (frames, bytes) = (frames + 1, bytes + b.len()),
                Message::Text(t) => (frames, bytes) = (frames + 1, bytes + t.len()),
                _ => {}
            }
        }
        count(&counters::SERVER_FRAMES, frames);
        count(&counters::SERVER_BYTES, bytes as u64);
        let (socket, outbox) = (&mut self.socket, &mut self.outbox);
        let write = async move {
            for message in outbox.drain(..) {
                socket.feed(message).await?;
            }
            socket.flush().await
        };
        let mut write = std::pin::pin!(write);
        // Almost every write completes at once: the timer (and the clock read it
        // takes) is set up only for one that has to wait for the socket.
        if let Some(done) = futures_util::FutureExt::now_or_never(write.as_mut()) {
            return done.is_ok();
        }
        // Boxed: the timer is large and would otherwise sit in every idle session's
        // future (see `session::tests::the_session_loop_future_stays_small`).
        let wait = Box::pin(tokio::time::timeout(WRITE_TIMEOUT, write));
        matches!(wait.await, Ok(Ok(())))
    }

    /// Sends what is queued, then a close frame, in the background, and drops the
    /// socket once the client answers the close (or after [`LINGER`]).
    pub fn close(mut self, code: u16, reason: &str) {
        self.outbox.push(close_message(code, reason));
        tokio::spawn(self.finish());
    }

    /// Flushes what is queued (a close frame last), then reads and discards what the
    /// client still sends until its close or end of stream, for at most [`LINGER`].
    async fn finish(mut self) {
        if !self.flush().await {
            return;
        }
        let _ = tokio::time::timeout(LINGER, async {
            while let Some(Ok(message)) = self.socket.next().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }

    /// The next thing the client sent (cancel-safe: nothing is lost when a caller's
    /// `select!` drops the future).
    pub async fn next(&mut self) -> Incoming {
        let message = loop {
            let read = match std::future::poll_fn(|cx| self.poll_read_side(cx)).await {
                ReadSide::Read(read) => read,
                ReadSide::PingDue => {
                    if self.last_heard.elapsed() >= self.cfg.idle_timeout {
                        return Incoming::Idle;
                    }
                    self.outbox.push(Message::Ping(bytes::Bytes::new()));
                    return Incoming::Queued;
                }
            };
            self.last_heard = tokio::time::Instant::now();
            match read {
                Some(Ok(m @ (Message::Binary(_) | Message::Text(_)))) => break m,
                Some(Ok(Message::Close(Some(frame)))) if frame.code == 1000 => {
                    return Incoming::Goodbye;
                }
                Some(Ok(Message::Close(_))) | None => return Incoming::Gone,
                Some(Err(failure)) => return self.failed(failure),
                Some(Ok(_)) => continue, // ping/pong: answered by the WebSocket layer
            }
        };
        let mode = if matches!(message, Message::Text(_)) {
            Mode::Json
        } else {
            Mode::Binary
        };
        match admit(&message, &mut self.rate, &self.cfg) {
            Ok(pb::ClientFrame {
                body: Some(pb::client_frame::Body::Goodbye(_)),
                ..
            }) => Incoming::Goodbye,
            Ok(frame) => Incoming::Frame(frame),
            Err((code, reason)) => {
                if self.window_start.elapsed() > STRIKE_WINDOW {
                    self.strikes = 0;
                    self.window_start = Instant::now();
                }
                self.strikes += 1;
                if self.strikes > self.cfg.max_strikes {
                    return Incoming::Abusive;
                }
                self.outbox.push(input_error(mode, code, reason));
                Incoming::Queued
            }
        }
    }

    /// The socket's next message or a due ping, polled only when the read gate is open
    /// (see [`ReadGate`]); the socket comes first, as before.
    fn poll_read_side(&mut self, cx: &mut Context<'_>) -> Poll<ReadSide> {
        if !self.read_gate.enter(cx) {
            return Poll::Pending;
        }
        let mut gated = Context::from_waker(&self.read_gate.waker);
        if let Poll::Ready(read) = self.socket.poll_next_unpin(&mut gated) {
            self.read_gate.keep_open();
            return Poll::Ready(ReadSide::Read(read));
        }
        if self.ping.poll_tick(&mut gated).is_ready() {
            self.read_gate.keep_open();
            return Poll::Ready(ReadSide::PingDue);
        }
        Poll::Pending
    }

    /// What a failed read means for the connection.
    fn failed(&mut self, failure: ReadFailure) -> Incoming {
        match failure {
            ReadFailure::TooLarge => {
                let limit = self.cfg.max_frame_bytes;
                self.outbox.push(input_error(
                    self.mode,
                    ErrorCode::FrameTooLarge,
                    format!("a frame or message over the limit of {limit} bytes"),
                ));
                Incoming::Broken {
                    code: close_code::MESSAGE_TOO_BIG,
                    reason: "frame too large",
                }
            }
            ReadFailure::Protocol => Incoming::Broken {
                code: close_code::PROTOCOL_ERROR,
                reason: "bad WebSocket framing",
            },
            ReadFailure::NotUtf8 => Incoming::Broken {
                code: close_code::INVALID_DATA,
                reason: "a text message that is not UTF-8",
            },
            ReadFailure::Broken => Incoming::Gone,
        }
    }
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
    count(&counters::CLIENT_FRAMES, 1);
    count(&counters::CLIENT_BYTES, len as u64);
    if len > cfg.max_frame_bytes {
        return Err((
            ErrorCode::FrameTooLarge,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A session writes to a socket again after a failed write (a close frame after a
    /// timeout); that must be an error each time, never a panic.
    #[tokio::test]
    async fn a_failed_socket_keeps_failing_without_panicking() {
        /// A socket whose peer reset the connection after it accepted one message.
        struct Reset(bool);
        impl Sink<Message> for Reset {
            type Error = &'static str;
            fn poll_ready(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Result<(), &'static str>> {
                Poll::Ready(if self.0 { Err("reset") } else { Ok(()) })
            }
            fn start_send(mut self: Pin<&mut Self>, _: Message) -> Result<(), &'static str> {
                self.0 = true;
                Ok(())
            }
            fn poll_flush(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Result<(), &'static str>> {
                Poll::Ready(Err("reset"))
            }
            fn poll_close(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Result<(), &'static str>> {
                Poll::Ready(Err("reset"))
            }
        }
        let mut socket = Plain(Reset(false));
        assert_eq!(socket.feed(Message::Text("a".into())).await, Ok(()));
        assert_eq!(socket.flush().await, Err(()));
        assert_eq!(socket.send(Message::Text("b".into())).await, Err(()));
        assert_eq!(socket.send(Message::Text("c".into())).await, Err(()));
    }
}
