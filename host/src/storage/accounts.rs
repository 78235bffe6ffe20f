//! Device logins: a guest who sends the same device secret gets the same player id.

use sha2::{Digest, Sha256};

use super::{Storage, StorageError, db_id, now_ms};

/// The shortest device secret accepted.
pub const MIN_DEVICE_SECRET: usize = 16;

impl Storage {
    /// The player id kept for `secret`, made (from `new_id`) on its first use. Only the
    /// secret's SHA-256 is stored.
    pub async fn device_player(
        &self,
        secret: &str,
        name: &str,
        new_id: u64,
    ) -> Result<u64, StorageError> {
        if secret.chars().count() < MIN_DEVICE_SECRET {
            return Err(StorageError::Invalid(format!(
                "device_secret must be at least {MIN_DEVICE_SECRET} characters"
            )));
        }
        let hash = hex::encode(Sha256::digest(secret.as_bytes()));
        // Insert if absent, then read what is there: two first logins racing end with
        // one id.
        sqlx::query(
            "INSERT INTO ludus_accounts (device_hash, player_id, name, created_ms) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (device_hash) DO NOTHING",
        )
        .bind(&hash)
        .bind(db_id(new_id)?)
        .bind(name)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        let id: i64 =
            sqlx::query_scalar("SELECT player_id FROM ludus_accounts WHERE device_hash = $1")
                .bind(&hash)
                .fetch_one(&self.pool)
                .await?;
        Ok(id as u64)
    }
}
