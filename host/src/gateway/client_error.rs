//! What a client is told when something fails: the one place inner errors (rooms,
//! cluster, matchmaking, relay) become an error frame's code and message, and the close
//! codes a connection may end with.

use super::pb::{self, ErrorCode, server_frame::Body as Out};
use crate::cluster::ClusterError;
use crate::matchmaking::TicketError;
use crate::rooms::{CreateError, JoinError};
use crate::rpc::relay::RelayError;

/// Close codes sent to a connection by its session.
pub mod close_code {
    pub const REPLACED: u16 = 4000;
    pub const RESUME_FAILED: u16 = 4001;
    /// The node cannot take the connection now (it lost touch with etcd).
    pub const UNAVAILABLE: u16 = 4005;
    /// The session is on another node now: resume at the address in the error frame.
    pub const MOVED: u16 = 4006;
    pub const SESSION_ENDED: u16 = 4002;
    pub const TOO_SLOW: u16 = 4003;
    /// The connection answered nothing (not even a pong) for the idle timeout.
    pub const IDLE: u16 = 4004;
    pub const SHUTTING_DOWN: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const INVALID_DATA: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const MESSAGE_TOO_BIG: u16 = 1009;
}

/// An error frame's content, before it is numbered and sent.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientError {
    pub code: ErrorCode,
    pub message: String,
    /// Where the session is now (with [`ErrorCode::Moved`]).
    pub address: String,
}

impl ClientError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ClientError {
            code,
            message: message.into(),
            address: String::new(),
        }
    }

    /// An error of ours (etcd, storage, a node link) the client cannot act on: it is
    /// told `internal` and an id; the node's log has the same id with the detail.
    pub fn internal(what: &str, detail: impl std::fmt::Display) -> Self {
        let id = crate::csprng::hex::<4>();
        tracing::error!(error_id = %id, "{what}: {detail}");
        ClientError::new(
            ErrorCode::Internal,
            format!("internal error while {what} (id {id}); try again later"),
        )
    }

    /// The error frame's body, answering the client frame `in_reply_to`.
    pub fn frame(self, in_reply_to: u64) -> Out {
        let code = super::json::error_code::name(self.code);
        metrics::counter!("ludus_error_frames_total", "code" => code).increment(1);
        Out::Error(pb::Error {
            code: self.code as i32,
            message: self.message,
            in_reply_to,
            address: self.address,
        })
    }
}

impl From<CreateError> for ClientError {
    fn from(e: CreateError) -> Self {
        let code = match e {
            CreateError::UnknownGame(_) => ErrorCode::NoSuchGame,
            CreateError::Quota(_) => ErrorCode::RoomQuota,
            CreateError::DuplicateId(_) => ErrorCode::RoomExists,
            CreateError::Draining => ErrorCode::Unavailable,
            _ => ErrorCode::Refused,
        };
        ClientError::new(code, e.to_string())
    }
}

impl From<JoinError> for ClientError {
    fn from(e: JoinError) -> Self {
        ClientError::new(ErrorCode::Refused, e.to_string())
    }
}

impl From<ClusterError> for ClientError {
    fn from(e: ClusterError) -> Self {
        match e {
            // Said as the rooms service says it, with where the room is.
            ClusterError::RoomExists { room, owner } => {
                let taken = CreateError::DuplicateId(room).to_string();
                ClientError::new(ErrorCode::RoomExists, format!("{taken} (on node {owner})"))
            }
            e @ ClusterError::SessionTaken { .. } => {
                ClientError::new(ErrorCode::Refused, e.to_string())
            }
            ClusterError::NoLease | ClusterError::Unavailable(_) => ClientError::new(
                ErrorCode::Unavailable,
                "this node cannot take new sessions or rooms right now (it has lost touch \
                 with the cluster's store); try again shortly or another node",
            ),
            e => ClientError::internal("asking the cluster", e),
        }
    }
}

impl From<TicketError> for ClientError {
    fn from(e: TicketError) -> Self {
        ClientError::new(ErrorCode::Malformed, e.to_string())
    }
}

impl From<RelayError> for ClientError {
    fn from(e: RelayError) -> Self {
        match e {
            // The owner's own answer (no such room, the game said no, ...).
            RelayError::Refused(reason) | RelayError::NotHeld(reason) => {
                ClientError::new(ErrorCode::Refused, reason)
            }
            e => ClientError::internal("reaching the room's node", e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// The node's log, as a test sees it.
    #[derive(Clone, Default)]
    struct Log(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Log {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn an_internal_error_shows_the_client_an_id_and_the_log_the_detail() {
        let log = Log::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let error = tracing::subscriber::with_default(subscriber, || {
            ClientError::from(ClusterError::Etcd("lease 7 not found at 10.1.2.3".into()))
        });
        assert_eq!(error.code, ErrorCode::Internal);
        let id = error
            .message
            .split("(id ")
            .nth(1)
            .and_then(|rest| rest.split(')').next())
            .expect("an id in the message");
        assert_eq!(id.len(), 8);
        assert!(!error.message.contains("10.1.2.3"), "{}", error.message);
        let log = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        let line = log
            .lines()
            .find(|l| l.contains(id))
            .expect("the id in the log");
        assert!(line.contains("lease 7 not found at 10.1.2.3"), "{line}");
    }

    #[test]
    fn inner_errors_map_to_the_codes_clients_rely_on() {
        let unknown = ClientError::from(CreateError::UnknownGame("chess".into()));
        assert_eq!(unknown.code, ErrorCode::NoSuchGame);
        assert!(unknown.message.contains("chess"));
        let taken = ClientError::from(ClusterError::RoomExists {
            room: "r1".into(),
            owner: "b".into(),
        });
        assert_eq!(taken.code, ErrorCode::RoomExists);
        assert!(taken.message.contains("already exists") && taken.message.contains("node b"));
        let etcd = ClusterError::Etcd("connection refused at 10.0.0.7:2379".into());
        let internal = ClientError::from(etcd);
        assert_eq!(internal.code, ErrorCode::Internal);
        assert!(internal.message.contains("(id "), "{}", internal.message);
        assert!(
            !internal.message.contains("10.0.0.7"),
            "{}",
            internal.message
        );
        let link = ClientError::from(RelayError::Unreachable {
            node: "b".into(),
            error: "tls handshake eof".into(),
        });
        assert_eq!(link.code, ErrorCode::Internal);
        assert!(!link.message.contains("eof"), "{}", link.message);
        let ticket = ClientError::from(TicketError::ModeTooLong);
        assert_eq!(ticket.code, ErrorCode::Malformed);
        match ticket.frame(7) {
            Out::Error(e) => assert_eq!(e.in_reply_to, 7),
            other => panic!("{other:?}"),
        }
    }
}
