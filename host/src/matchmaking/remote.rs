//! The matchmaker's `Queue` stream between a node and the leader on another node: the
//! same link as an in-process one ([`LeaderHandle::connect`](super::leader::LeaderHandle::connect)),
//! over gRPC with the cluster credential (`rpc::channel`, `rpc::layers`).

use futures_util::{Stream, StreamExt};
use std::pin::Pin;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::Matchmaker;
use super::leader::LINK_QUEUE;
use crate::rpc::pb::matchmaking_client::MatchmakingClient;
use crate::rpc::pb::matchmaking_server::{Matchmaking, MatchmakingServer};
use crate::rpc::pb::{Hello, QueueDown, QueueUp, queue_up::Body as Up};
use crate::rpc::{RpcError, layers};

/// The leader's end: served by every node, answered only by the one that leads.
pub struct MatchmakingService {
    matchmaker: Matchmaker,
    node: String,
    stop: tokio_util::sync::CancellationToken,
}

impl MatchmakingService {
    pub fn server(
        matchmaker: Matchmaker,
        node: String,
        secret: &str,
        stop: tokio_util::sync::CancellationToken,
    ) -> layers::Checked<MatchmakingServer<Self>> {
        let service = MatchmakingService {
            matchmaker,
            node,
            stop,
        };
        layers::checked(MatchmakingServer::new(service), secret)
    }
}

type DownStream = Pin<Box<dyn Stream<Item = Result<QueueDown, Status>> + Send>>;

#[tonic::async_trait]
impl Matchmaking for MatchmakingService {
    type QueueStream = DownStream;

    async fn queue(
        &self,
        req: Request<Streaming<QueueUp>>,
    ) -> Result<Response<DownStream>, Status> {
        let leader = self
            .matchmaker
            .leading()
            .ok_or_else(|| RpcError::NotLeader(self.node.clone()))?;
        let mut inbound = req.into_inner();
        let node = match inbound.message().await? {
            Some(QueueUp {
                body: Some(Up::Hello(hello)),
            }) if !hello.node.is_empty() => hello.node,
            _ => {
                return Err(RpcError::NoHello.into());
            }
        };
        let (up, down) = leader.connect(&node);
        tokio::spawn(async move {
            // Ends (and so ends the link) when the node's stream does.
            while let Ok(Some(msg)) = inbound.message().await {
                if up.send(msg).await.is_err() {
                    break;
                }
            }
        });
        let stream = ReceiverStream::new(down)
            .map(Ok)
            .take_until(self.stop.clone().cancelled_owned());
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Opens `node`'s `Queue` stream to the leader at `addr` as an (up, down) channel pair.
pub async fn link(
    addr: &str,
    link: &crate::rpc::Link,
    node: &str,
) -> anyhow::Result<(mpsc::Sender<QueueUp>, mpsc::Receiver<QueueDown>)> {
    let mut client = MatchmakingClient::new(crate::rpc::channel(addr, link).await?);
    let (up, up_rx) = mpsc::channel::<QueueUp>(LINK_QUEUE);
    let hello = Up::Hello(Hello {
        node: node.to_owned(),
    });
    up.send(QueueUp { body: Some(hello) }).await?;
    let outbound = ReceiverStream::new(up_rx);
    let mut inbound = client
        .queue(outbound)
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();
    let (down_tx, down) = mpsc::channel::<QueueDown>(LINK_QUEUE);
    tokio::spawn(async move {
        while let Some(Ok(msg)) = inbound.next().await {
            if down_tx.send(msg).await.is_err() {
                break;
            }
        }
    });
    Ok((up, down))
}
