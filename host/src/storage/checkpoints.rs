//! What lets rooms and sessions outlive their node: each room's last checkpoint (the
//! game's saved state and the host's record of the room) and each session's owner and
//! resume-token hash, both under the node that holds them. Written in batches by the
//! [`Saver`](super::Saver), read back when a node starts.

use sqlx::Row;

use super::{Storage, StorageError, db_id, now_ms};

/// A room's last checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedRoom {
    pub room_id: String,
    pub node: String,
    pub game: String,
    pub version: String,
    pub module_sha256: String,
    /// The host's record of the room (JSON; its shape belongs to the rooms layer).
    pub record: String,
    /// What the game's `save` returned.
    pub state: Vec<u8>,
    /// When it was written (ms since the Unix epoch; set by the write).
    pub saved_ms: i64,
    /// (Writes only.) The room was just created on `node`: its first write replaces a
    /// checkpoint left under the same id by any node. Every other write lands only if
    /// `node` still holds the room's checkpoint, so a node that lost a room to a
    /// takeover (see [`Storage::adopt_room`]) cannot overwrite the new owner's.
    pub fresh: bool,
}

/// A session a node holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedSession {
    pub player_id: u64,
    pub node: String,
    pub session_id: String,
    /// SHA-256 of the resume token, hex.
    pub token_sha256: String,
    pub name: String,
}

/// One write of a batch: the latest word on one room or session.
#[derive(Clone, Debug)]
pub enum Saved {
    Room(Box<SavedRoom>),
    /// The room closed: its checkpoint goes (only if `node` still holds it).
    RoomGone {
        room_id: String,
        node: String,
    },
    Session(SavedSession),
    /// The session ended: its record goes (only if it is still this session's).
    SessionGone {
        player_id: u64,
        session_id: String,
    },
}

impl Saved {
    /// Bytes this write puts in the database (for batching).
    pub fn size(&self) -> usize {
        match self {
            Saved::Room(r) => r.state.len() * 2 + r.record.len(),
            _ => 64,
        }
    }
}

impl Storage {
    /// Writes a batch of checkpoints and session records in one transaction.
    pub async fn save_batch(&self, batch: &[Saved]) -> Result<(), StorageError> {
        let mut tx = self.pool.begin().await?;
        let now = now_ms();
        for item in batch {
            match item {
                Saved::Room(r) => {
                    sqlx::query(
                        "INSERT INTO ludus_room_checkpoints \
                         (room_id, node, game, version, module_sha256, record, state_hex, size, saved_ms) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                         ON CONFLICT (room_id) DO UPDATE SET node = excluded.node, \
                         game = excluded.game, version = excluded.version, \
                         module_sha256 = excluded.module_sha256, record = excluded.record, \
                         state_hex = excluded.state_hex, size = excluded.size, \
                         saved_ms = excluded.saved_ms \
                         WHERE $10 OR ludus_room_checkpoints.node = excluded.node",
                    )
                    .bind(&r.room_id)
                    .bind(&r.node)
                    .bind(&r.game)
                    .bind(&r.version)
                    .bind(&r.module_sha256)
                    .bind(&r.record)
                    .bind(hex::encode(&r.state))
                    .bind(r.state.len() as i64)
                    .bind(now)
                    .bind(r.fresh)
                    .execute(&mut *tx)
                    .await?;
                }
                Saved::RoomGone { room_id, node } => {
                    sqlx::query(
                        "DELETE FROM ludus_room_checkpoints WHERE room_id = $1 AND node = $2",
                    )
                    .bind(room_id)
                    .bind(node)
                    .execute(&mut *tx)
                    .await?;
                }
                Saved::Session(s) => {
                    sqlx::query(
                        "INSERT INTO ludus_sessions \
                         (player_id, node, session_id, token_sha256, name, saved_ms) \
                         VALUES ($1, $2, $3, $4, $5, $6) \
                         ON CONFLICT (player_id) DO UPDATE SET node = excluded.node, \
                         session_id = excluded.session_id, token_sha256 = excluded.token_sha256, \
                         name = excluded.name, saved_ms = excluded.saved_ms",
                    )
                    .bind(db_id(s.player_id)?)
                    .bind(&s.node)
                    .bind(&s.session_id)
                    .bind(&s.token_sha256)
                    .bind(&s.name)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                Saved::SessionGone {
                    player_id,
                    session_id,
                } => {
                    sqlx::query(
                        "DELETE FROM ludus_sessions WHERE player_id = $1 AND session_id = $2",
                    )
                    .bind(db_id(*player_id)?)
                    .bind(session_id)
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// The last checkpoint of every room `node` holds, by room id.
    pub async fn saved_rooms(&self, node: &str) -> Result<Vec<SavedRoom>, StorageError> {
        self.rooms_where(
            "SELECT room_id, node, game, version, module_sha256, record, state_hex, saved_ms \
             FROM ludus_room_checkpoints WHERE node = $1 ORDER BY room_id",
            node,
        )
        .await
    }

    /// The checkpoints `query` selects, with `value` bound to its `$1`.
    async fn rooms_where(
        &self,
        query: &'static str,
        value: &str,
    ) -> Result<Vec<SavedRoom>, StorageError> {
        let rows = sqlx::query(query).bind(value).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                let room_id: String = row.try_get("room_id")?;
                let state = hex::decode(row.try_get::<String, _>("state_hex")?).map_err(|e| {
                    StorageError::Unavailable(format!(
                        "the checkpoint of room {room_id} is stored damaged: {e}"
                    ))
                })?;
                Ok(SavedRoom {
                    room_id,
                    node: row.try_get("node")?,
                    game: row.try_get("game")?,
                    version: row.try_get("version")?,
                    module_sha256: row.try_get("module_sha256")?,
                    record: row.try_get("record")?,
                    state,
                    saved_ms: row.try_get("saved_ms")?,
                    fresh: false,
                })
            })
            .collect()
    }

    /// Moves room `room_id`'s checkpoint from `from` (a node that died) to `to` (the
    /// node that took the room over); false if `from` no longer holds it.
    pub async fn adopt_room(
        &self,
        room_id: &str,
        from: &str,
        to: &str,
    ) -> Result<bool, StorageError> {
        let done = sqlx::query(
            "UPDATE ludus_room_checkpoints SET node = $3 WHERE room_id = $1 AND node = $2",
        )
        .bind(room_id)
        .bind(from)
        .bind(to)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The checkpoint of room `room_id`, whoever holds it.
    pub async fn saved_room(&self, room_id: &str) -> Result<Option<SavedRoom>, StorageError> {
        Ok(self
            .rooms_where(
                "SELECT room_id, node, game, version, module_sha256, record, state_hex, \
                 saved_ms FROM ludus_room_checkpoints WHERE room_id = $1",
                room_id,
            )
            .await?
            .pop())
    }

    /// The sessions of `players` that `node` holds.
    pub async fn saved_sessions_of(
        &self,
        node: &str,
        players: &[u64],
    ) -> Result<Vec<SavedSession>, StorageError> {
        let mut out = self.saved_sessions(node).await?;
        out.retain(|s| players.contains(&s.player_id));
        Ok(out)
    }

    /// What every kept checkpoint is, without its state: room id, node, size in bytes
    /// and when it was written (ms since the Unix epoch).
    pub async fn checkpoint_summaries(
        &self,
    ) -> Result<Vec<(String, String, i64, i64)>, StorageError> {
        let rows = sqlx::query(
            "SELECT room_id, node, size, saved_ms FROM ludus_room_checkpoints ORDER BY room_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get("room_id")?,
                    row.try_get("node")?,
                    row.try_get("size")?,
                    row.try_get("saved_ms")?,
                ))
            })
            .collect()
    }

    /// Every session `node` holds.
    pub async fn saved_sessions(&self, node: &str) -> Result<Vec<SavedSession>, StorageError> {
        let rows = sqlx::query(
            "SELECT player_id, node, session_id, token_sha256, name FROM ludus_sessions \
             WHERE node = $1 ORDER BY player_id",
        )
        .bind(node)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(SavedSession {
                    player_id: row.try_get::<i64, _>("player_id")? as u64,
                    node: row.try_get("node")?,
                    session_id: row.try_get("session_id")?,
                    token_sha256: row.try_get("token_sha256")?,
                    name: row.try_get("name")?,
                })
            })
            .collect()
    }
}
