//! Leadership in one of the cluster's elections ([`Cluster::campaign`](super::Cluster::campaign)).

use tokio_util::sync::CancellationToken;

/// This node leads an election until [`Leadership::lost`] resolves. Dropping it gives
/// the leadership up (the etcd backend resigns, so the next candidate leads at once).
pub struct Leadership {
    /// Cancelled when the leadership ends, for whatever reason.
    lost: CancellationToken,
    /// Cancelled on drop: tells the backend to resign.
    resign: CancellationToken,
}

impl Leadership {
    /// A leadership, the token that ends it and the token that asks to resign.
    pub(super) fn new() -> (Leadership, CancellationToken, CancellationToken) {
        let (lost, resign) = (CancellationToken::new(), CancellationToken::new());
        let leadership = Leadership {
            lost: lost.clone(),
            resign: resign.clone(),
        };
        (leadership, lost, resign)
    }

    /// A leadership that has already ended (the node stopped while campaigning).
    pub(super) fn ended() -> Leadership {
        let (leadership, lost, _) = Leadership::new();
        lost.cancel();
        leadership
    }

    /// Resolves when this node no longer leads.
    pub async fn lost(&self) {
        self.lost.cancelled().await
    }

    pub fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.resign.cancel();
    }
}
