//! Game clients over gRPC: the `Play` service of `proto/client.proto`, one bidirectional
//! stream per connection, on the public port beside the WebSocket.
//!
//! The stream is adapted to the socket a WebSocket session reads and writes
//! ([`GrpcSocket`]), so everything behind it — sessions, resume, limits, error frames —
//! is the same code. Frames pass through as bytes (a raw codec, no decode here): a
//! client frame reaches [`connection::Conn`] as a binary message, checked and decoded
//! there once, and a server frame is written as `Conn` encoded it.
//!
//! - Login: `authorization: Bearer <token>` metadata (UNAUTHENTICATED without a valid
//!   one). Resume: `ludus-resume` and `ludus-last-seen` metadata.
//! - Where a WebSocket closes with a code, the stream ends with a status carrying that
//!   code as `ludus-close-code` metadata (and the same error frame before it).
//! - A `Goodbye` frame ends the session; a stream that ends without one is a dropped
//!   connection, and the session waits the grace period for a resume.
//! - Pings are not sent: HTTP/2 keep-alive (see `edge.rs`) finds a dead peer.

use axum::extract::ws::{CloseFrame, Message};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::{Buf, BufMut, Bytes};
use futures_util::{Sink, Stream};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::PollSender;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::MetadataMap;
use tonic::{Code, Status, Streaming};

use super::client_error::close_code;
use super::connection::{self, ReadFailure};
use super::frames::Mode;
use super::{ConnectionGuard, Gateway};

/// The path of `ludus.client.v1.Play/Play`.
pub const PATH: &str = "/ludus.client.v1.Play/Play";

/// The metadata key of the close code a stream ends with.
pub const CLOSE_CODE: &str = "ludus-close-code";

/// Server frames queued on a stream before a write waits for the client.
const STREAM_QUEUE: usize = 64;

/// Frames pass through as bytes: [`connection::Conn`] decodes and encodes them.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

/// Game frames are small: small buffers keep an idle stream cheap (they grow for a
/// larger frame).
fn buffers() -> BufferSettings {
    BufferSettings::new(2 * 1024, 32 * 1024)
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
    fn buffer_settings(&self) -> BufferSettings {
        buffers()
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
    fn buffer_settings(&self) -> BufferSettings {
        buffers()
    }
}

/// The largest message the gRPC layer buffers: twice the frame limit (the limit is
/// read per connection, and may be raised live). A frame over the connection's limit
/// gets `frame_too_large` and a 1009 end either way, as on a WebSocket: `GrpcSocket`
/// refuses it, or the gRPC layer does (OUT_OF_RANGE) without buffering it.
fn buffer_limit(max_frame_bytes: usize) -> usize {
    max_frame_bytes.saturating_mul(2).max(4096)
}

/// `POST /ludus.client.v1.Play/Play`.
pub(super) async fn play(State(gw): State<Gateway>, req: Request) -> Response {
    let limit = buffer_limit(gw.config().max_frame_bytes);
    let service = tower::service_fn(move |req: tonic::Request<Streaming<Bytes>>| {
        let gw = gw.clone();
        async move { open(gw, req) }
    });
    tonic::server::Grpc::new(RawCodec)
        .max_decoding_message_size(limit)
        .streaming(service, req)
        .await
        .into_response()
}

type Frames = ReceiverStream<Result<Bytes, Status>>;

/// Logs the client in and hands the stream to its session.
fn open(
    gw: Gateway,
    req: tonic::Request<Streaming<Bytes>>,
) -> Result<tonic::Response<Frames>, Status> {
    let metadata = req.metadata();
    let text = |key: &str| {
        metadata
            .get(key)
            .map(|v| {
                v.to_str()
                    .map_err(|_| format!("{key} metadata is not text"))
            })
            .transpose()
    };
    let token = text("authorization")
        .map_err(Status::invalid_argument)?
        .and_then(|v| v.strip_prefix("Bearer ").map(str::to_owned))
        .ok_or_else(|| {
            Status::unauthenticated(format!(
                "{} (send `authorization: Bearer <token>` metadata)",
                super::AuthError::Missing
            ))
        })?;
    let who = gw
        .inner
        .auth
        .validate(&token)
        .map_err(|e| Status::unauthenticated(e.to_string()))?;
    let resume = text("ludus-resume").map_err(Status::invalid_argument)?;
    let last_seen = match text("ludus-last-seen").map_err(Status::invalid_argument)? {
        None => 0,
        Some(n) => n.trim().parse::<u64>().map_err(|_| {
            Status::invalid_argument(format!("ludus-last-seen `{n}` is not a frame number"))
        })?,
    };
    let resume = resume.map(|token| (token.to_owned(), last_seen));
    let inner = &gw.inner;
    if resume.is_none() && inner.rooms.draining() {
        return Err(Status::unavailable(
            "this node is draining and takes no new connections: connect to another node",
        ));
    }
    inner.connections.fetch_add(1, Ordering::AcqRel);
    let guard = Box::new(ConnectionGuard(gw.clone()));
    let id = inner.next_conn.fetch_add(1, Ordering::Relaxed);
    let (sessions, cfg) = (inner.sessions.clone(), gw.config());
    let (tx, rx) = tokio::sync::mpsc::channel(STREAM_QUEUE);
    let socket = GrpcSocket {
        max_frame_bytes: cfg.max_frame_bytes,
        incoming: req.into_inner(),
        outgoing: Some(PollSender::new(tx)),
        pong_due: false,
    };
    tokio::spawn(async move {
        let conn = connection::Conn::new(socket, id, Mode::Binary, cfg, guard);
        if let Err((Some(conn), error)) = sessions.connect(&who, resume, conn).await {
            conn.refuse(error).await;
        }
    });
    Ok(tonic::Response::new(ReceiverStream::new(rx)))
}

/// A gRPC stream as the WebSocket a [`connection::Conn`] reads and writes.
struct GrpcSocket {
    /// A larger frame breaks the connection, as the WebSocket layer's limit does.
    max_frame_bytes: usize,
    incoming: Streaming<Bytes>,
    /// `None` once the stream ended with a status.
    outgoing: Option<PollSender<Result<Bytes, Status>>>,
    /// The connection pinged: it hears a pong next (HTTP/2 keep-alive does the real
    /// check), so it does not take the client for idle.
    pong_due: bool,
}

impl Stream for GrpcSocket {
    type Item = Result<Message, ReadFailure>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if std::mem::take(&mut self.pong_due) {
            return Poll::Ready(Some(Ok(Message::Pong(Bytes::new()))));
        }
        if self.outgoing.is_none() {
            return Poll::Ready(None); // closed: nothing more is read
        }
        let limit = self.max_frame_bytes;
        Pin::new(&mut self.incoming)
            .poll_next(cx)
            .map(|item| match item? {
                Ok(bytes) if bytes.len() > limit => Some(Err(ReadFailure::TooLarge)),
                Ok(bytes) => Some(Ok(Message::Binary(bytes))),
                Err(status) if status.code() == Code::OutOfRange => {
                    Some(Err(ReadFailure::TooLarge))
                }
                Err(_) => Some(Err(ReadFailure::Broken)),
            })
    }
}

impl Sink<Message> for GrpcSocket {
    type Error = ();
    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), ()>> {
        match &mut self.outgoing {
            Some(tx) => tx.poll_reserve(cx).map_err(|_| ()),
            None => Poll::Ready(Err(())),
        }
    }
    fn start_send(mut self: Pin<&mut Self>, message: Message) -> Result<(), ()> {
        let item = match message {
            Message::Binary(bytes) => Ok(bytes),
            Message::Close(frame) => Err(closed(frame)),
            // Only binary frames are written to a gRPC stream (it is never in JSON
            // mode); HTTP/2 keep-alive stands in for pings.
            other => {
                self.pong_due |= matches!(other, Message::Ping(_));
                if let Some(tx) = &mut self.outgoing {
                    tx.abort_send();
                }
                return Ok(());
            }
        };
        let ends = item.is_err();
        let tx = self.outgoing.as_mut().ok_or(())?;
        tx.send_item(item).map_err(|_| ())?;
        if ends {
            self.outgoing = None;
        }
        Ok(())
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), ()>> {
        // The channel hands frames to tonic as they are sent; HTTP/2 flow control
        // pushes back through `poll_ready`.
        Poll::Ready(Ok(()))
    }
    fn poll_close(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), ()>> {
        self.outgoing = None;
        Poll::Ready(Ok(()))
    }
}

/// The status a stream ends with where a WebSocket would close with `frame`.
fn closed(frame: Option<CloseFrame>) -> Status {
    let (code, reason) = match frame {
        Some(f) => (f.code, f.reason.to_string()),
        None => (close_code::SHUTTING_DOWN, String::new()),
    };
    let grpc = match code {
        close_code::SHUTTING_DOWN | close_code::UNAVAILABLE | close_code::MOVED => {
            Code::Unavailable
        }
        close_code::MESSAGE_TOO_BIG | close_code::POLICY | close_code::TOO_SLOW => {
            Code::ResourceExhausted
        }
        close_code::PROTOCOL_ERROR | close_code::INVALID_DATA => Code::InvalidArgument,
        close_code::IDLE => Code::DeadlineExceeded,
        close_code::REPLACED => Code::Aborted,
        close_code::RESUME_FAILED | close_code::SESSION_ENDED => Code::FailedPrecondition,
        _ => Code::Unknown,
    };
    let mut metadata = MetadataMap::new();
    metadata.insert(CLOSE_CODE, code.into());
    Status::with_metadata(grpc, reason, metadata)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_close_becomes_a_status_with_its_code() {
        let status = closed(Some(CloseFrame {
            code: close_code::MESSAGE_TOO_BIG,
            reason: "frame too large".into(),
        }));
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.message(), "frame too large");
        let code = status.metadata().get(CLOSE_CODE).unwrap().to_str().unwrap();
        assert_eq!(code, "1009");
        assert_eq!(closed(None).code(), Code::Unavailable);
    }
}
