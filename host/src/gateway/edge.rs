//! The public port: accepts TCP connections and serves HTTP/1.1 (WebSocket upgrades
//! included) and HTTP/2 (gRPC game clients, `play.rs`) on them under the limits a port
//! open to strangers needs. A plain connection speaks HTTP/2 when its first bytes are
//! the HTTP/2 preface; under TLS, when ALPN chose `h2`. Connections are
//! counted from accept, not from the upgrade, in total and per client IP, and a
//! connection over either cap is refused at once; a request whose headers do not
//! arrive within `header_timeout` is dropped (a slow-loris client cannot hold a socket).
//! With `gateway.tls`, every connection speaks TLS (the handshake bounded by the same
//! timeout). Handlers see the client's address as `ConnectInfo<SocketAddr>`.

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;

use crate::lock::Recover;

/// The caps of the public port (from [`super::GatewayConfig`]).
#[derive(Clone, Debug)]
pub struct EdgeLimits {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub header_timeout: Duration,
}

/// Open connections, in total and per client IP.
#[derive(Default)]
pub struct Counts {
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

impl Counts {
    /// Open connections from every address.
    pub fn total(&self) -> usize {
        self.per_ip.lock().recover().values().sum()
    }

    /// Counts a new connection from `ip`, or says which cap it is over.
    fn admit(self: &Arc<Self>, ip: IpAddr, limits: &EdgeLimits) -> Result<Admitted, &'static str> {
        let mut per_ip = self.per_ip.lock().recover();
        // Distinct addresses are few next to connections: summing is cheap enough.
        if per_ip.values().sum::<usize>() >= limits.max_connections {
            return Err("too many connections");
        }
        let n = per_ip.entry(ip).or_default();
        if *n >= limits.max_connections_per_ip {
            return Err("too many connections from your address");
        }
        *n += 1;
        Ok(Admitted {
            counts: self.clone(),
            ip,
        })
    }
}

/// One counted connection; dropping it (with the socket) uncounts it.
struct Admitted {
    counts: Arc<Counts>,
    ip: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut per_ip = self.counts.per_ip.lock().recover();
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

/// A socket that stays counted as long as it lives, through a WebSocket upgrade.
struct Counted {
    tcp: TcpStream,
    _admitted: Admitted,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

/// Serves `app` on `listener` until `stop`, over TLS when `tls` is given; then open
/// HTTP requests finish (upgraded WebSockets belong to their sessions, which the
/// gateway stops itself).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: EdgeLimits,
    counts: Arc<Counts>,
    tls: Option<TlsAcceptor>,
    stop: CancellationToken,
) {
    let connections = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let admitted = match counts.admit(peer.ip(), &limits) {
            Ok(admitted) => admitted,
            Err(why) => {
                refuse(&tcp, why);
                tracing::debug!(%peer, "connection refused: {why}");
                continue;
            }
        };
        // Game frames are small and latency matters: no Nagle delay on any socket.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("could not set TCP_NODELAY: {e}");
        }
        let io = Counted {
            tcp,
            _admitted: admitted,
        };
        let service = hyper::service::service_fn({
            let app = app.clone();
            move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                app.clone().call(req)
            }
        });
        let (stop, header_timeout) = (stop.clone(), limits.header_timeout);
        match tls.clone() {
            None => connections.spawn(async move {
                // A client that opens a socket and stays silent does not hold it.
                let h2 = tokio::select! {
                    h2 = sniff(&io.tcp, header_timeout) => h2,
                    _ = stop.cancelled() => return,
                };
                match h2 {
                    Some(h2) => http(io, h2, service, peer, header_timeout, stop).await,
                    None => tracing::debug!(%peer, "nothing sent within the header timeout"),
                }
            }),
            Some(acceptor) => connections.spawn(async move {
                // The handshake is bounded like the headers: a client that opens a
                // socket and stays silent does not hold it.
                let accepted = tokio::select! {
                    accepted = tokio::time::timeout(header_timeout, acceptor.accept(io)) => accepted,
                    _ = stop.cancelled() => return,
                };
                match accepted {
                    Ok(Ok(io)) => {
                        let h2 = io.get_ref().1.alpn_protocol() == Some(b"h2");
                        http(io, h2, service, peer, header_timeout, stop).await
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            }),
        };
    }
    connections.close();
    connections.wait().await;
}

/// The HTTP/2 connection preface, the first bytes of every HTTP/2 client without TLS.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether a plain connection speaks HTTP/2 (it starts with the preface) or HTTP/1.1
/// (anything else), by peeking at its first bytes; `None` if it sends nothing within
/// `wait` or closes.
async fn sniff(tcp: &TcpStream, wait: Duration) -> Option<bool> {
    let mut buf = [0u8; PREFACE.len()];
    let peek = async {
        loop {
            let n = tcp.peek(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            if buf[..n] != PREFACE[..n] {
                return Some(false);
            }
            if n == PREFACE.len() {
                return Some(true);
            }
            // Part of the preface: the rest is on its way (peeking again at once
            // would see the same bytes).
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    tokio::time::timeout(wait, peek).await.ok().flatten()
}

/// HTTP/2 pings a quiet connection this often, and drops it when a ping goes
/// unanswered this long: a gRPC game client's stream sends no pings of its own.
const H2_KEEP_ALIVE: Duration = Duration::from_secs(10);
const H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Streams one HTTP/2 connection may have open (a game client needs one, plus a few
/// requests).
const H2_MAX_STREAMS: u32 = 16;

/// Serves HTTP/1.1 (and WebSocket upgrades), or HTTP/2 with `h2`, on one connection
/// until it ends; at `stop`, a request in progress finishes first.
async fn http<I, S>(
    io: I,
    h2: bool,
    service: S,
    peer: std::net::SocketAddr,
    header_timeout: Duration,
    stop: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<hyper::Request<Incoming>, Response = axum::response::Response>
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: std::error::Error + Send + Sync + 'static,
{
    if h2 {
        let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(H2_KEEP_ALIVE)
            .keep_alive_timeout(H2_KEEP_ALIVE_TIMEOUT)
            .max_concurrent_streams(H2_MAX_STREAMS)
            .serve_connection(TokioIo::new(io), service);
        let mut conn = std::pin::pin!(conn);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, "HTTP/2 connection: {e}");
                }
                return;
            }
            _ = stop.cancelled() => conn.as_mut().graceful_shutdown(),
        }
        let _ = conn.await;
        return;
    }
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(%peer, "HTTP connection: {e}");
            }
            return;
        }
        _ = stop.cancelled() => conn.as_mut().graceful_shutdown(),
    }
    let _ = conn.await;
}

/// Answers a connection over a cap with 503 (if the socket takes it at once) and drops it.
fn refuse(tcp: &TcpStream, why: &str) {
    let body = format!("{{\"error\":\"{why}\"}}");
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tcp.try_write(response.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_count_in_total_and_per_address_and_free_on_drop() {
        let counts = Arc::new(Counts::default());
        let limits = EdgeLimits {
            max_connections: 3,
            max_connections_per_ip: 2,
            header_timeout: Duration::from_secs(1),
        };
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let a1 = counts.admit(a, &limits).unwrap();
        let _a2 = counts.admit(a, &limits).unwrap();
        assert_eq!(
            counts.admit(a, &limits).err(),
            Some("too many connections from your address")
        );
        let _b1 = counts.admit(b, &limits).unwrap();
        assert_eq!(counts.admit(b, &limits).err(), Some("too many connections"));
        assert_eq!(counts.total(), 3);
        drop(a1);
        assert_eq!(counts.total(), 2);
        assert!(counts.admit(b, &limits).is_ok());
    }
}
