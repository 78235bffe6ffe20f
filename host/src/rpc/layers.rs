//! Tower layers on every node-to-node and operator call: the cluster credential (a shared
//! secret in the `authorization` metadata, checked in constant time) and a log line per
//! call with peer, method, duration and status.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;
use tonic::{Request, Status};

use super::status::RpcError;

/// Metadata key carrying the cluster credential.
const AUTHORIZATION: &str = "authorization";

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Server side: refuses a call without the cluster's credential.
#[derive(Clone)]
pub struct CheckCredential(Vec<u8>);

impl CheckCredential {
    pub fn new(secret: &str) -> Self {
        CheckCredential(format!("Bearer {secret}").into_bytes())
    }
}

impl tonic::service::Interceptor for CheckCredential {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        match req.metadata().get(AUTHORIZATION) {
            Some(value) if same(value.as_bytes(), &self.0) => Ok(req),
            Some(_) => Err(RpcError::WrongCredential.into()),
            None => Err(RpcError::NoCredential.into()),
        }
    }
}

/// A service that refuses calls without the cluster credential.
pub type Checked<S> = tonic::service::interceptor::InterceptedService<S, CheckCredential>;

/// `server`, refusing calls without the cluster credential `secret`.
pub fn checked<S>(server: S, secret: &str) -> Checked<S> {
    tonic::service::interceptor::InterceptedService::new(server, CheckCredential::new(secret))
}

/// Client side: adds the cluster credential to every call.
#[derive(Clone)]
pub struct AddCredential(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl AddCredential {
    pub fn new(secret: &str) -> Self {
        AddCredential(format!("Bearer {secret}").parse().ok())
    }
}

impl tonic::service::Interceptor for AddCredential {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let value = self.0.clone().ok_or(RpcError::SecretNotAscii)?;
        req.metadata_mut().insert(AUTHORIZATION, value);
        Ok(req)
    }
}

/// Logs each call: which side, peer, method, duration, status.
#[derive(Clone)]
pub struct CallLogLayer {
    pub side: &'static str,
    /// The peer's address on the client side (the server reads it from the connection).
    pub peer: Option<std::sync::Arc<str>>,
}

impl<S> tower::Layer<S> for CallLogLayer {
    type Service = CallLog<S>;
    fn layer(&self, inner: S) -> CallLog<S> {
        CallLog {
            inner,
            side: self.side,
            peer: self.peer.clone(),
        }
    }
}

#[derive(Clone)]
pub struct CallLog<S> {
    inner: S,
    side: &'static str,
    peer: Option<std::sync::Arc<str>>,
}

impl<S, ReqB, ResB> tower::Service<http::Request<ReqB>> for CallLog<S>
where
    S: tower::Service<http::Request<ReqB>, Response = http::Response<ResB>>,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqB>) -> Self::Future {
        let method = req.uri().path().to_owned();
        let peer = match &self.peer {
            Some(peer) => peer.to_string(),
            None => req
                .extensions()
                .get::<tonic::transport::server::TcpConnectInfo>()
                .and_then(|info| info.remote_addr())
                .map(|a| a.to_string())
                .unwrap_or_default(),
        };
        let side = self.side;
        let started = Instant::now();
        let call = self.inner.call(req);
        Box::pin(async move {
            let result = call.await;
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            match &result {
                Ok(resp) => {
                    // A refused call answers in the headers; a streamed one in trailers.
                    let status = resp
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("0")
                        .to_owned();
                    let message = resp
                        .headers()
                        .get("grpc-message")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    if status == "0" {
                        tracing::info!(target: "ludus::rpc", side, peer, method, ms, status, "call");
                    } else {
                        tracing::warn!(target: "ludus::rpc", side, peer, method, ms, status, message, "call refused");
                    }
                }
                Err(e) => {
                    tracing::warn!(target: "ludus::rpc", side, peer, method, ms, error = %e, "call failed")
                }
            }
            result
        })
    }
}
