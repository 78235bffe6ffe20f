//! gRPC between nodes and from operators (tonic): the generated code (`pb`), the
//! credential and call-log layers, the node's server, channels to peers, module bytes
//! (`Modules`: fetch and upload) and play in a room on another node (`relay.rs`). The
//! services of layers above (the matchmaker's queue) come in as routes to [`serve`].

use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Request, Response, Status, Streaming};

use crate::cluster::Cluster;
use crate::runtime::Runtime;

pub mod layers;
mod link;
pub mod relay;
mod status;

pub use link::{Link, server_tls};
pub use status::RpcError;

pub mod pb {
    tonic::include_proto!("ludus.cluster.v1");
}

use pb::modules_client::ModulesClient;
use pb::modules_server::{Modules, ModulesServer};
use pb::{Chunk, FetchRequest, Uploaded};

/// Size of the chunks module bytes travel in.
const CHUNK: usize = 64 * 1024;
/// The largest module a node accepts.
pub const MAX_MODULE_BYTES: usize = 64 * 1024 * 1024;

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn chunks(bytes: Arc<Vec<u8>>) -> impl Stream<Item = Chunk> + Send + 'static {
    let count = bytes.len().div_ceil(CHUNK).max(1);
    futures_util::stream::iter((0..count).map(move |i| {
        let end = ((i + 1) * CHUNK).min(bytes.len());
        Chunk {
            data: bytes::Bytes::copy_from_slice(&bytes[i * CHUNK..end]),
        }
    }))
}

/// The `Modules` service of a node.
pub struct ModulesService {
    cluster: Cluster,
    rt: Arc<Runtime>,
}

impl ModulesService {
    /// The service, refusing calls without the cluster credential `secret`.
    pub fn server(
        cluster: Cluster,
        rt: Arc<Runtime>,
        secret: &str,
    ) -> layers::Checked<ModulesServer<Self>> {
        let server =
            ModulesServer::new(ModulesService { cluster, rt }).max_decoding_message_size(2 * CHUNK);
        layers::checked(server, secret)
    }
}

/// The services of this layer: `Modules` and `Relay`, refusing calls without `secret`.
/// `hold`: how long a room holds the place of a player whose gateway node's link ends
/// (zero: the player leaves at once).
/// Add the services of other layers to the routes before [`serve`].
pub fn routes(
    cluster: Cluster,
    rt: Arc<Runtime>,
    rooms: crate::rooms::Rooms,
    secret: &str,
    hold: std::time::Duration,
    stop: tokio_util::sync::CancellationToken,
) -> tonic::service::Routes {
    tonic::service::Routes::new(ModulesService::server(cluster, rt, secret))
        .add_service(relay::RelayService::server(rooms, secret, hold, stop))
}

/// Serves `routes` on `listener` until `stop`, logging every call; over mutual TLS
/// with `tls` (see [`server_tls`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    routes: tonic::service::Routes,
    tls: Option<tonic::transport::ServerTlsConfig>,
    stop: tokio_util::sync::CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        server = server.tls_config(tls)?;
    }
    server
        // A peer that stops answering (packets dropped, not refused) is found out.
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .layer(layers::CallLogLayer {
            side: "server",
            peer: None,
        })
        .add_routes(routes)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            async move { stop.cancelled().await },
        )
        .await
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<Chunk, Status>> + Send>>;

#[tonic::async_trait]
impl Modules for ModulesService {
    type FetchStream = ChunkStream;

    async fn fetch(&self, req: Request<FetchRequest>) -> Result<Response<ChunkStream>, Status> {
        let sha = req.into_inner().sha256;
        let bytes = self
            .cluster
            .module_bytes(&sha)
            .ok_or(RpcError::NoModule(sha))?;
        Ok(Response::new(Box::pin(chunks(bytes).map(Ok))))
    }

    async fn upload(&self, req: Request<Streaming<Chunk>>) -> Result<Response<Uploaded>, Status> {
        let mut stream = req.into_inner();
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.message().await? {
            if bytes.len() + chunk.data.len() > MAX_MODULE_BYTES {
                return Err(RpcError::ModuleTooLarge.into());
            }
            bytes.extend_from_slice(&chunk.data);
        }
        let module = self.rt.load(bytes.clone()).await.map_err(RpcError::from)?;
        let sha = module.sha256_hex();
        self.cluster
            .hold_module(&sha, Arc::new(bytes))
            .await
            .map_err(RpcError::from)?;
        Ok(Response::new(Uploaded {
            sha256: sha,
            name: module.name.clone(),
            version: module.version.clone(),
            size: module.size as u64,
        }))
    }
}

/// A channel to a node's gRPC address, sending the cluster credential and logging
/// every call.
pub type PeerChannel = tonic::service::interceptor::InterceptedService<
    layers::CallLog<tonic::transport::Channel>,
    layers::AddCredential,
>;

/// How often each end of a link pings the other over HTTP/2, and how long it waits
/// for the answer before it drops the connection: a silent peer is found out within
/// their sum (5 s), its players told and their seats freed.
pub const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);
pub const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Connects to the node at `addr` (host:port) over `link` (the cluster credential on
/// every call, and mutual TLS when the cluster has it).
pub async fn channel(addr: &str, link: &Link) -> anyhow::Result<PeerChannel> {
    let (url, tls) = link.endpoint(addr);
    let mut endpoint = tonic::transport::Endpoint::from_shared(url.clone())?
        .connect_timeout(std::time::Duration::from_secs(3))
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls)?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("connecting to {url}: {}", error_chain(&e)))?;
    let layer = layers::CallLogLayer {
        side: "client",
        peer: Some(addr.into()),
    };
    let logged = tower::Layer::layer(&layer, channel);
    Ok(tonic::service::interceptor::InterceptedService::new(
        logged,
        layers::AddCredential::new(link.secret()),
    ))
}

/// An error with its sources (a transport error's own text is only "transport error").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// A call's status as text: its message, and the causes under a transport error.
fn status_text(status: &Status) -> String {
    let mut text = status.message().to_owned();
    let mut source = std::error::Error::source(status);
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

async fn client(addr: &str, link: &Link) -> anyhow::Result<ModulesClient<PeerChannel>> {
    let channel = channel(addr, link).await?;
    Ok(ModulesClient::new(channel).max_decoding_message_size(2 * CHUNK))
}

/// Fetches module `sha` from the node at `addr` and checks its hash.
pub async fn fetch(addr: &str, link: &Link, sha: &str) -> anyhow::Result<Vec<u8>> {
    let mut client = client(addr, link).await?;
    let mut stream = client
        .fetch(FetchRequest { sha256: sha.into() })
        .await
        .map_err(|s| anyhow::anyhow!("fetching {sha} from {addr}: {}", status_text(&s)))?
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream
        .message()
        .await
        .map_err(|s| anyhow::anyhow!("fetching {sha} from {addr}: {}", status_text(&s)))?
    {
        anyhow::ensure!(
            bytes.len() + chunk.data.len() <= MAX_MODULE_BYTES,
            "module {sha} from {addr} is over {MAX_MODULE_BYTES} bytes"
        );
        bytes.extend_from_slice(&chunk.data);
    }
    let got = sha256_hex(&bytes);
    anyhow::ensure!(
        got == sha,
        "module from {addr} has sha256 {got}, not the {sha} asked for"
    );
    Ok(bytes)
}

/// Uploads a module to the node at `addr`, which checks and keeps it.
pub async fn upload(addr: &str, link: &Link, bytes: Vec<u8>) -> anyhow::Result<Uploaded> {
    let mut client = client(addr, link).await?;
    let reply = client
        .upload(chunks(Arc::new(bytes)))
        .await
        .map_err(|s| anyhow::anyhow!("{}", status_text(&s)))?;
    Ok(reply.into_inner())
}

async fn migration(
    addr: &str,
    link: &Link,
) -> anyhow::Result<pb::migration_client::MigrationClient<PeerChannel>> {
    Ok(pb::migration_client::MigrationClient::new(
        channel(addr, link).await?,
    ))
}

/// Asks the node at `addr` (which runs room `room`) to move it to node `target`.
pub async fn move_room(
    addr: &str,
    link: &Link,
    room: &str,
    target: &str,
) -> anyhow::Result<pb::MoveReply> {
    let reply = migration(addr, link)
        .await?
        .r#move(pb::MoveRequest {
            room_id: room.to_owned(),
            target: target.to_owned(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("{}", status_text(&s)))?;
    Ok(reply.into_inner())
}

/// Asks the node at `addr` to take no new players or rooms and move all its rooms to
/// the other nodes; with `undo`, to take players and rooms again.
pub async fn drain(addr: &str, link: &Link, undo: bool) -> anyhow::Result<pb::DrainReply> {
    let reply = migration(addr, link)
        .await?
        .drain(pb::DrainRequest { undo })
        .await
        .map_err(|s| anyhow::anyhow!("{}", status_text(&s)))?;
    Ok(reply.into_inner())
}
