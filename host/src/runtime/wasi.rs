//! What a game's WASI imports reach. A Rust guest imports `wasi:cli` and `wasi:io` even
//! when it uses neither; a JavaScript engine (a TypeScript game) also reads clocks and
//! random bytes and writes `console.log` to stdout. Each gets something harmless:
//!
//! - stdout and stderr: lines into the room log (target `ludus::guest`), under the same
//!   per-second cap as `host.log` (a budget of its own); stderr at `warn`, and its first line in a call is the
//!   failure's detail when that call traps (a JS engine writes an uncaught exception
//!   there before it traps);
//! - random (secure and insecure): the room's seeded stream, the one `host.random`
//!   draws from, so a room's randomness is the same whatever interface a game uses;
//! - clocks: the host's;
//! - no files, sockets, environment, arguments or stdin.

use bytes::Bytes;
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use super::limits::MAX_LOG_LINE_BYTES;
use super::room_data::Dropped;
use crate::lock::Recover;
use crate::rate::RateLimit;

/// The room's random stream, shared by `host.random` and WASI's random interfaces.
#[derive(Clone)]
pub(super) struct RoomRng(Arc<Mutex<fastrand::Rng>>);

impl RoomRng {
    pub(super) fn new(seed: u64) -> Self {
        RoomRng(Arc::new(Mutex::new(fastrand::Rng::with_seed(seed))))
    }

    pub(super) fn u64(&self) -> u64 {
        self.0.lock().recover().u64(..)
    }

    /// Where the stream is (a new instance of the room continues from here).
    pub(super) fn state(&self) -> u64 {
        self.0.lock().recover().get_seed()
    }

    pub(super) fn set_state(&self, state: u64) {
        *self.0.lock().recover() = fastrand::Rng::with_seed(state);
    }
}

impl rand_core::TryRng for RoomRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(self.0.lock().recover().u32(..))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.u64())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.0.lock().recover().fill(dst);
        Ok(())
    }
}

/// A game's stdout or stderr, written line by line into the room log.
#[derive(Clone)]
pub(super) struct Console {
    state: Arc<Mutex<ConsoleState>>,
    stderr: bool,
}

struct ConsoleState {
    room: Arc<str>,
    dropped: Arc<Dropped>,
    rate: RateLimit,
    /// The unfinished line of stdout and of stderr.
    partial: [Vec<u8>; 2],
    /// The first stderr line of the current call.
    first_error: Option<String>,
}

/// Both output streams of one instance.
pub(super) struct Consoles {
    pub stdout: Console,
    pub stderr: Console,
}

impl Consoles {
    pub(super) fn new(room: Arc<str>, dropped: Arc<Dropped>, lines_per_second: u32) -> Self {
        let state = Arc::new(Mutex::new(ConsoleState {
            room,
            dropped,
            rate: RateLimit::with_burst(
                f64::from(lines_per_second),
                lines_per_second,
                Instant::now(),
            ),
            partial: [Vec::new(), Vec::new()],
            first_error: None,
        }));
        Consoles {
            stdout: Console {
                state: state.clone(),
                stderr: false,
            },
            stderr: Console {
                state,
                stderr: true,
            },
        }
    }

    /// Called as a call starts: forget the last call's error line.
    pub(super) fn start_call(&self) {
        self.stdout.state.lock().recover().first_error = None;
    }

    /// The first line the game wrote to stderr during the current call, if any.
    pub(super) fn take_error(&self) -> Option<String> {
        let mut state = self.stdout.state.lock().recover();
        // A last line without its newline still counts.
        if state.first_error.is_none() && !state.partial[1].is_empty() {
            let line = std::mem::take(&mut state.partial[1]);
            state.line(true, &line);
        }
        state.first_error.take()
    }
}

impl ConsoleState {
    fn write(&mut self, stderr: bool, mut bytes: &[u8]) {
        let i = usize::from(stderr);
        while let Some(end) = bytes.iter().position(|b| *b == b'\n') {
            let mut line = std::mem::take(&mut self.partial[i]);
            line.extend_from_slice(&bytes[..end]);
            self.line(stderr, &line);
            bytes = &bytes[end + 1..];
        }
        self.partial[i].extend_from_slice(bytes);
        if self.partial[i].len() >= MAX_LOG_LINE_BYTES {
            let line = std::mem::take(&mut self.partial[i]);
            self.line(stderr, &line);
        }
    }

    fn line(&mut self, stderr: bool, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = super::limits::capped(text.trim_end().to_owned(), MAX_LOG_LINE_BYTES);
        if text.is_empty() {
            return;
        }
        if stderr && self.first_error.is_none() {
            self.first_error = Some(text.clone());
        }
        if self.rate.take(Instant::now()).is_err() {
            self.dropped.log_lines.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let room = &*self.room;
        if stderr {
            tracing::warn!(target: "ludus::guest", room, stream = "stderr", "{text}");
        } else {
            tracing::info!(target: "ludus::guest", room, stream = "stdout", "{text}");
        }
    }
}

impl Console {
    fn write(&self, bytes: &[u8]) {
        self.state.lock().recover().write(self.stderr, bytes);
    }
}

impl IsTerminal for Console {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Console {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for Console {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        Console::write(self, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 << 10)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Console {
    async fn ready(&mut self) {}
}

impl AsyncWrite for Console {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Console::write(&self, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
