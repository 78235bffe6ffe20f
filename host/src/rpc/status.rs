//! The one mapping from what goes wrong in a gRPC call to the `Status` the caller gets.

use tonic::Status;

use super::MAX_MODULE_BYTES;
use crate::cluster::ClusterError;
use crate::runtime::ModuleError;

/// Why a node refused or failed a gRPC call.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("no cluster credential: node-to-node calls carry the cluster's shared secret")]
    NoCredential,
    #[error("wrong cluster credential")]
    WrongCredential,
    #[error("the cluster secret cannot be sent as metadata (non-ASCII?)")]
    SecretNotAscii,
    #[error("this node holds no module {0}")]
    NoModule(String),
    #[error("module over the limit of {MAX_MODULE_BYTES} bytes")]
    ModuleTooLarge,
    #[error("module refused: {0}")]
    ModuleRefused(#[from] ModuleError),
    #[error("{0}")]
    Cluster(#[from] ClusterError),
    #[error("node {0} is not the matchmaker leader")]
    NotLeader(String),
    #[error("a Queue stream starts with hello {{node}}")]
    NoHello,
}

impl From<RpcError> for Status {
    fn from(e: RpcError) -> Status {
        let message = e.to_string();
        match e {
            RpcError::NoCredential | RpcError::WrongCredential => Status::unauthenticated(message),
            RpcError::SecretNotAscii
            | RpcError::ModuleTooLarge
            | RpcError::ModuleRefused(_)
            | RpcError::NoHello => Status::invalid_argument(message),
            RpcError::NoModule(_) => Status::not_found(message),
            RpcError::Cluster(_) => Status::unavailable(message),
            RpcError::NotLeader(_) => Status::failed_precondition(message),
        }
    }
}
