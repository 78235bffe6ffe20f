//! A Rust client for Ludus: guest login, a WebSocket in binary or JSON mode or a gRPC
//! `Play` stream, numbered frames, and automatic resume with exponential backoff after
//! a dropped connection. Tests and the load generator use it.

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::gateway::frames::Mode;
use crate::gateway::pb::{
    self, ClientFrame, ServerFrame, client_frame::Body as In, server_frame::Body as Out,
};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How a client reaches its node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// `GET /v1/ws`, in the client's [`Mode`].
    #[default]
    WebSocket,
    /// The gRPC `Play` stream over HTTP/2 (always Protobuf).
    Grpc,
}

/// An open connection.
enum Link {
    Ws(Ws),
    Grpc {
        /// Client frames to the request stream; dropping it ends the stream.
        out: tokio::sync::mpsc::Sender<ClientFrame>,
        incoming: tonic::Streaming<ServerFrame>,
    },
}

#[derive(Clone, Debug)]
pub struct ClientOptions {
    pub mode: Mode,
    pub transport: Transport,
    /// First reconnect delay; doubled after each failure up to `backoff_max`.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Give up resuming after this many failed attempts in a row.
    pub max_attempts: u32,
    /// Other nodes of the cluster to try, in turn, when the one the client uses cannot
    /// be reached (as a load balancer in front of the nodes would).
    pub also: Vec<SocketAddr>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            mode: Mode::Binary,
            transport: Transport::WebSocket,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            max_attempts: 8,
            also: Vec::new(),
        }
    }
}

/// Logs in as a guest: `(token, player id)`.
pub async fn guest_login(addr: SocketAddr, name: &str) -> anyhow::Result<(String, u64)> {
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}/v1/auth/guest"))
        .json(&serde_json::json!({ "name": name }))
        .send()
        .await
        .context("guest login")?;
    if !resp.status().is_success() {
        bail!(
            "guest login refused: {} {}",
            resp.status(),
            resp.text().await.unwrap_or_default()
        );
    }
    let body: serde_json::Value = resp.json().await?;
    let token = body["token"]
        .as_str()
        .ok_or_else(|| anyhow!("no token in {body}"))?
        .to_owned();
    Ok((token, body["player_id"].as_u64().unwrap_or_default()))
}

pub struct Client {
    /// The node this client connects to now.
    addr: SocketAddr,
    /// Where it first connected (or was last pointed with [`Client::set_addr`]): a
    /// node that said the session moved and then cannot be reached sends it back here,
    /// or to the next of `opts.also` when this one cannot be reached either.
    entry: SocketAddr,
    /// Which of `entry` and `opts.also` is the entry now.
    turn: usize,
    /// The entry of turn 0.
    first: SocketAddr,
    token: String,
    opts: ClientOptions,
    link: Option<Link>,
    pub player_id: u64,
    pub session_id: String,
    resume_token: String,
    /// Highest server frame number seen.
    last_seen: u64,
    /// Number of the last frame sent.
    out_seq: u64,
    /// Sent frames the server has not acknowledged yet, resent after a resume.
    unacked: VecDeque<ClientFrame>,
    /// Frames received while resuming, delivered before anything newer.
    pending: VecDeque<ServerFrame>,
    /// Resumes whose welcome said `restored`: the session came back from the node's
    /// storage after a restart, and frames after the rooms' last checkpoints may be
    /// missing.
    pub restores: u32,
    /// Times the server said the session moved to another node (and where, so the
    /// client went there).
    pub moves: u32,
}

impl Client {
    /// Guest login and connect.
    pub async fn guest(
        addr: SocketAddr,
        name: &str,
        opts: ClientOptions,
    ) -> anyhow::Result<Client> {
        let (token, _) = guest_login(addr, name).await?;
        Client::connect(addr, &token, opts).await
    }

    /// Connects with a token and waits for the welcome.
    pub async fn connect(
        addr: SocketAddr,
        token: &str,
        opts: ClientOptions,
    ) -> anyhow::Result<Client> {
        let mut client = Client {
            addr,
            entry: addr,
            turn: 0,
            first: addr,
            token: token.to_owned(),
            opts,
            link: None,
            player_id: 0,
            session_id: String::new(),
            resume_token: String::new(),
            last_seen: 0,
            out_seq: 0,
            unacked: VecDeque::new(),
            pending: VecDeque::new(),
            restores: 0,
            moves: 0,
        };
        client.open(false).await?;
        Ok(client)
    }

    /// The node this client connects (and resumes) to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Resumes at `addr` from now on (another node of the cluster, as a load balancer
    /// would pick after the client's node died).
    pub fn set_addr(&mut self, addr: SocketAddr) {
        self.addr = addr;
        self.entry = addr;
        self.first = addr;
        self.turn = 0;
    }

    pub fn last_seen(&self) -> u64 {
        self.last_seen
    }

    fn url(&self, resume: bool) -> String {
        let format = match self.opts.mode {
            Mode::Binary => "binary",
            Mode::Json => "json",
        };
        let mut url = format!(
            "ws://{}/v1/ws?token={}&format={format}",
            self.addr, self.token
        );
        if resume {
            url.push_str(&format!(
                "&resume={}&last_seen={}",
                self.resume_token, self.last_seen
            ));
        }
        url
    }

    /// Opens a connection of the client's transport.
    async fn link(&self, resume: bool) -> anyhow::Result<Link> {
        match self.opts.transport {
            Transport::WebSocket => {
                // Without TCP_NODELAY, a frame written right after another (an ack,
                // then a create) waits for the server's delayed ACK: 40 ms here.
                let (ws, _) =
                    tokio_tungstenite::connect_async_with_config(self.url(resume), None, true)
                        .await?;
                Ok(Link::Ws(ws))
            }
            Transport::Grpc => {
                use crate::gateway::pb::play_client::PlayClient;
                let channel =
                    tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))?
                        .connect_timeout(Duration::from_secs(10))
                        .connect()
                        .await?;
                let (out, rx) = tokio::sync::mpsc::channel(64);
                let mut request =
                    tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
                let metadata = request.metadata_mut();
                metadata.insert("authorization", format!("Bearer {}", self.token).parse()?);
                if resume {
                    metadata.insert("ludus-resume", self.resume_token.parse()?);
                    metadata.insert("ludus-last-seen", self.last_seen.into());
                }
                let incoming = PlayClient::new(channel)
                    .max_decoding_message_size(usize::MAX)
                    .play(request)
                    .await
                    .map_err(closed)?
                    .into_inner();
                Ok(Link::Grpc { out, incoming })
            }
        }
    }

    async fn open(&mut self, resume: bool) -> anyhow::Result<()> {
        let link = match self.link(resume).await {
            Ok(link) => link,
            Err(e) => {
                // A node we were sent to is gone: ask where we came in again. The entry
                // itself is gone: try the next node we know.
                if self.addr == self.entry && !self.opts.also.is_empty() {
                    self.turn = (self.turn + 1) % (self.opts.also.len() + 1);
                    self.entry = match self.turn {
                        0 => self.first,
                        n => self.opts.also[n - 1],
                    };
                }
                self.addr = self.entry;
                return Err(e).context("connecting");
            }
        };
        self.link = Some(link);
        let welcome = self.read_frame().await?;
        match welcome.body {
            Some(Out::Welcome(w)) => {
                self.player_id = w.player_id;
                self.session_id = w.session_id;
                self.resume_token = w.resume_token;
                if w.restored {
                    self.restores += 1;
                }
                if welcome.seq != 0 {
                    self.last_seen = welcome.seq;
                }
                // Drop what the server processed; resend the rest, in order.
                self.acknowledged(welcome.ack);
                let resend: Vec<ClientFrame> = self.unacked.iter().cloned().collect();
                for frame in resend {
                    self.write(&frame).await?;
                }
                Ok(())
            }
            Some(Out::Error(e)) => {
                // The session is on another node now: the next attempt goes there.
                if e.code == crate::gateway::pb::ErrorCode::Moved as i32
                    && let Ok(addr) = e.address.parse()
                {
                    self.addr = addr;
                    self.moves += 1;
                }
                bail!("connection refused: {}", e.message)
            }
            other => bail!("expected a welcome, got {other:?}"),
        }
    }

    fn acknowledged(&mut self, ack: u64) {
        while self.unacked.front().is_some_and(|f| f.seq <= ack) {
            self.unacked.pop_front();
        }
    }

    async fn write(&mut self, frame: &ClientFrame) -> anyhow::Result<()> {
        let ws = match self.link.as_mut().ok_or_else(|| anyhow!("not connected"))? {
            Link::Ws(ws) => ws,
            Link::Grpc { out, .. } => {
                return out
                    .send(frame.clone())
                    .await
                    .map_err(|_| anyhow!("sending: the stream ended"));
            }
        };
        let msg = match self.opts.mode {
            Mode::Binary => Message::Binary(frame.encode_to_vec().into()),
            Mode::Json => Message::Text(serde_json::to_string(frame)?.into()),
        };
        ws.send(msg).await.context("sending")
    }

    /// Reads one frame from the socket as it comes (no dedupe, no resume).
    async fn read_frame(&mut self) -> anyhow::Result<ServerFrame> {
        let ws = match self.link.as_mut().ok_or_else(|| anyhow!("not connected"))? {
            Link::Ws(ws) => ws,
            Link::Grpc { incoming, .. } => {
                return match incoming.message().await {
                    Ok(Some(frame)) => Ok(frame),
                    Ok(None) => Err(Closed {
                        code: 0,
                        reason: "the stream ended".into(),
                    }
                    .into()),
                    Err(status) => Err(closed(status)),
                };
            }
        };
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) => {
                    return ServerFrame::decode(&b[..]).context("decoding a server frame");
                }
                Some(Ok(Message::Text(t))) => {
                    return serde_json::from_str(&t).context("decoding a JSON server frame");
                }
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame.map_or((0, String::new()), |f| {
                        (u16::from(f.code), f.reason.to_string())
                    });
                    return Err(Closed { code, reason }.into());
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(anyhow!(e).context("reading")),
                None => {
                    return Err(Closed {
                        code: 0,
                        reason: "connection ended".into(),
                    }
                    .into());
                }
            }
        }
    }

    /// Sends a numbered frame; returns its number. Kept until the server acknowledges
    /// it, and resent after a resume.
    pub async fn send(&mut self, body: In) -> anyhow::Result<u64> {
        self.out_seq += 1;
        let frame = ClientFrame {
            seq: self.out_seq,
            ack: self.last_seen,
            body: Some(body),
        };
        self.unacked.push_back(frame.clone());
        if let Err(e) = self.write(&frame).await {
            self.resume_after(e).await?;
        }
        Ok(frame.seq)
    }

    pub async fn join(&mut self, room: &str) -> anyhow::Result<u64> {
        self.send(In::Join(pb::JoinRoom {
            room_id: room.to_owned(),
        }))
        .await
    }

    pub async fn create(&mut self, game: &str, room: &str, config: &str) -> anyhow::Result<u64> {
        let create = pb::CreateRoom {
            game: game.to_owned(),
            room_id: room.to_owned(),
            config: config.to_owned(),
        };
        self.send(In::Create(create)).await
    }

    /// Asks the matchmaker for a match; `properties` must match other players' exactly.
    pub async fn find_match(
        &mut self,
        game: &str,
        mode: &str,
        properties: &[(&str, &str)],
    ) -> anyhow::Result<u64> {
        let find = pb::FindMatch {
            game: game.to_owned(),
            mode: mode.to_owned(),
            properties: properties
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        self.send(In::FindMatch(find)).await
    }

    pub async fn cancel_match(&mut self) -> anyhow::Result<u64> {
        self.send(In::CancelMatch(pb::CancelMatch {})).await
    }

    pub async fn message(&mut self, room: &str, payload: impl Into<Bytes>) -> anyhow::Result<u64> {
        self.send(In::Message(pb::RoomMessage {
            room_id: room.to_owned(),
            payload: payload.into(),
        }))
        .await
    }

    /// Tells the server which frames arrived (it then stops holding them for replay).
    pub async fn ack(&mut self) -> anyhow::Result<()> {
        let frame = ClientFrame {
            seq: 0,
            ack: self.last_seen,
            body: None,
        };
        self.write(&frame).await
    }

    /// The next new server frame. After a dropped connection it resumes (with backoff)
    /// and carries on: every frame arrives once, in order.
    pub async fn recv(&mut self) -> anyhow::Result<ServerFrame> {
        loop {
            let frame = match self.pending.pop_front() {
                Some(frame) => frame,
                None => match self.read_frame().await {
                    Ok(frame) => frame,
                    Err(e) => {
                        self.resume_after(e).await?;
                        continue;
                    }
                },
            };
            self.acknowledged(frame.ack);
            if frame.seq == 0 {
                // The session moved to another node with its room (a live migration):
                // the close that follows sends the client there.
                if let Some(Out::Error(e)) = &frame.body
                    && e.code == crate::gateway::pb::ErrorCode::Moved as i32
                    && let Ok(addr) = e.address.parse()
                {
                    self.addr = addr;
                    self.moves += 1;
                    continue;
                }
                return Ok(frame);
            }
            if frame.seq <= self.last_seen {
                continue; // already delivered
            }
            self.last_seen = frame.seq;
            return Ok(frame);
        }
    }

    /// Drops the connection abruptly, as a network failure would (for tests).
    pub fn drop_connection(&mut self) {
        // A gRPC stream: the response side first, so the server sees a reset rather
        // than an orderly end of the client's frames.
        if let Some(Link::Grpc { out, incoming }) = self.link.take() {
            drop(incoming);
            drop(out);
        }
    }

    /// Reconnects with resume after `cause`, unless the server closed the session for
    /// good (replaced, expired).
    async fn resume_after(&mut self, cause: anyhow::Error) -> anyhow::Result<()> {
        if let Some(closed) = cause.downcast_ref::<Closed>()
            && (closed.code == crate::gateway::close_code::REPLACED
                || closed.code == crate::gateway::close_code::SESSION_ENDED)
        {
            return Err(cause);
        }
        // Sent to another node: go at once.
        let moved = cause
            .downcast_ref::<Closed>()
            .is_some_and(|c| c.code == crate::gateway::close_code::MOVED);
        let mut delay = if moved {
            Duration::ZERO
        } else {
            self.opts.backoff_initial
        };
        let mut attempts = 0;
        loop {
            attempts += 1;
            tokio::time::sleep(delay).await;
            match self.open(true).await {
                Ok(()) => return Ok(()),
                Err(e) if attempts >= self.opts.max_attempts => {
                    return Err(
                        e.context(format!("resume failed {attempts} times after: {cause:#}"))
                    );
                }
                Err(_) if delay.is_zero() => delay = self.opts.backoff_initial,
                Err(_) => delay = (delay * 2).min(self.opts.backoff_max),
            }
        }
    }

    /// Says goodbye (close code 1000, or a `Goodbye` frame on a gRPC stream): the
    /// server ends the session at once and the player leaves its rooms.
    pub async fn close(mut self) {
        match self.link.take() {
            Some(Link::Ws(mut ws)) => {
                let _ = ws.close(Some(normal_close())).await;
            }
            Some(Link::Grpc { out, mut incoming }) => {
                let goodbye = ClientFrame {
                    seq: 0,
                    ack: self.last_seen,
                    body: Some(In::Goodbye(pb::Goodbye {})),
                };
                if out.send(goodbye).await.is_ok() {
                    // The server ends the stream once the session is over.
                    let _ = tokio::time::timeout(Duration::from_secs(2), async {
                        while let Ok(Some(_)) = incoming.message().await {}
                    })
                    .await;
                }
            }
            None => {}
        }
    }
}

/// The server closed the connection.
#[derive(Debug, thiserror::Error)]
#[error("closed by the server ({code}): {reason}")]
pub struct Closed {
    pub code: u16,
    pub reason: String,
}

/// A gRPC status the stream ended with, as the close it stands for (its
/// `ludus-close-code` metadata).
fn closed(status: tonic::Status) -> anyhow::Error {
    let code = status
        .metadata()
        .get(crate::gateway::play::CLOSE_CODE)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    match code {
        Some(code) => Closed {
            code,
            reason: status.message().to_owned(),
        }
        .into(),
        None => anyhow!(status).context("the gRPC stream failed"),
    }
}

/// A normal closure (1000), which ends the session on the server at once.
pub fn normal_close() -> tokio_tungstenite::tungstenite::protocol::CloseFrame {
    tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
        reason: "bye".into(),
    }
}
