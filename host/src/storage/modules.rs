//! Deployed modules and each game's history of versions: what a node started from
//! nothing installs again.

use sqlx::Row;

use super::{Storage, StorageError, now_ms};

/// One entry of a game's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GameVersion {
    pub game: String,
    pub sha256: String,
    pub version: String,
    pub deployed_ms: i64,
}

impl Storage {
    /// Keeps a module's bytes (once per sha256) and makes it the game's current version
    /// (a new history entry, unless it already is).
    pub async fn keep_module(
        &self,
        game: &str,
        version: &str,
        sha256: &str,
        bytes: &[u8],
    ) -> Result<(), StorageError> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO ludus_modules (sha256, game, version, size, bytes_hex, stored_ms) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (sha256) DO NOTHING",
        )
        .bind(sha256)
        .bind(game)
        .bind(version)
        .bind(bytes.len() as i64)
        .bind(hex::encode(bytes))
        .bind(now)
        .execute(&self.pool)
        .await?;
        let latest = sqlx::query(
            "SELECT seq, sha256 FROM ludus_game_history WHERE game = $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(game)
        .fetch_optional(&self.pool)
        .await?;
        let next = match latest {
            Some(row) if row.try_get::<String, _>("sha256")? == sha256 => return Ok(()),
            Some(row) => row.try_get::<i64, _>("seq")? + 1,
            None => 1,
        };
        // Nodes sharing a database record the same deploy: the first one wins.
        sqlx::query(
            "INSERT INTO ludus_game_history (game, seq, sha256, version, deployed_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (game, seq) DO NOTHING",
        )
        .bind(game)
        .bind(next)
        .bind(sha256)
        .bind(version)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A kept module's bytes.
    pub async fn module_bytes(&self, sha256: &str) -> Result<Vec<u8>, StorageError> {
        let text: String =
            sqlx::query_scalar("SELECT bytes_hex FROM ludus_modules WHERE sha256 = $1")
                .bind(sha256)
                .fetch_optional(&self.pool)
                .await?
                .ok_or(StorageError::NotFound)?;
        hex::decode(text).map_err(|e| {
            StorageError::Unavailable(format!("module {sha256} is stored damaged: {e}"))
        })
    }

    /// Each game's current version (the last entry of its history).
    pub async fn current_games(&self) -> Result<Vec<GameVersion>, StorageError> {
        let rows = sqlx::query(
            "SELECT h.game, h.sha256, h.version, h.deployed_ms FROM ludus_game_history h \
             WHERE h.seq = (SELECT MAX(seq) FROM ludus_game_history WHERE game = h.game) \
             ORDER BY h.game",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(version).collect()
    }

    /// A game's history, oldest first.
    pub async fn game_history(&self, game: &str) -> Result<Vec<GameVersion>, StorageError> {
        let rows = sqlx::query(
            "SELECT game, sha256, version, deployed_ms FROM ludus_game_history \
             WHERE game = $1 ORDER BY seq",
        )
        .bind(game)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(version).collect()
    }
}

fn version(row: &sqlx::any::AnyRow) -> Result<GameVersion, StorageError> {
    Ok(GameVersion {
        game: row.try_get("game")?,
        sha256: row.try_get("sha256")?,
        version: row.try_get("version")?,
        deployed_ms: row.try_get("deployed_ms")?,
    })
}
