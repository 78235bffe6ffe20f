//! Data that outlives the process: accounts (device logins), objects, leaderboards,
//! the modules deployed with each game's history of versions, and the checkpoints of
//! rooms and records of sessions that let both outlive their node (`saver.rs`).
//! One interface over two backends through sqlx's `Any` driver: SQLite in the node's
//! data directory by default (WAL mode, nothing to install), PostgreSQL when
//! `storage.url` names one (what a cluster uses: every node sees the same data). The SQL
//! is written once for both (`$N` parameters, `ON CONFLICT`, `RETURNING`); the
//! migrations in `host/migrations/` are embedded and applied at start, and a database
//! a newer Ludus wrote is refused.

use serde::{Deserialize, Serialize};
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use std::path::Path;
use std::time::Duration;

mod accounts;
mod checkpoints;
mod leaderboards;
mod modules;
mod objects;
mod saver;

pub use checkpoints::{Saved, SavedRoom, SavedSession};
pub use leaderboards::{Leaderboard, Operator, Order, Record};
pub use modules::GameVersion;
pub use objects::{Caller, Condition, Object, ReadPerm, WriteObject, WritePerm};
pub use saver::{Done, SaveKey, Saver};

/// `[storage]` in the config file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// `postgres://user:password@host/db` for PostgreSQL; unset: SQLite in the data
    /// directory (`<data_dir>/ludus.db`). A `sqlite://` URL names another file.
    pub url: Option<String>,
    /// Connections the pool holds at most.
    pub max_connections: u32,
    /// How long a call waits for a free connection before it fails.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    /// A connection idle this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Largest object value or leaderboard metadata (JSON text), in bytes.
    pub max_value_bytes: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            url: None,
            max_connections: 8,
            acquire_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(600),
            max_value_bytes: 64 * 1024,
        }
    }
}

/// Why a storage call failed. `Unavailable` carries the database's own words, for the
/// log (clients get an `internal` id instead).
#[derive(Clone, Debug, thiserror::Error, PartialEq)]
pub enum StorageError {
    #[error("not found")]
    NotFound,
    #[error("version conflict: expected {expected}, the object is at {current}")]
    Conflict { expected: String, current: String },
    #[error("permission denied: {0}")]
    Denied(&'static str),
    #[error("the value is {size} bytes, over the limit of {limit} (storage.max_value_bytes)")]
    TooLarge { size: usize, limit: usize },
    #[error("{0}")]
    Invalid(String),
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

impl From<sqlx::Error> for StorageError {
    fn from(e: sqlx::Error) -> Self {
        StorageError::Unavailable(e.to_string())
    }
}

/// Which database is behind the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The node's storage. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Storage {
    pool: AnyPool,
    backend: Backend,
    max_value_bytes: usize,
}

/// The migrations, embedded.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

impl Storage {
    /// Opens (creating if need be) the database `cfg` names, or SQLite in `data_dir`,
    /// and brings its schema up to date. Errors say what to fix.
    pub async fn open(cfg: &StorageConfig, data_dir: &Path) -> anyhow::Result<Storage> {
        sqlx::any::install_default_drivers();
        let (url, backend) = match &cfg.url {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                (url.clone(), Backend::Postgres)
            }
            Some(url) if url.starts_with("sqlite:") => (url.clone(), Backend::Sqlite),
            Some(url) => anyhow::bail!(
                "storage.url must start with postgres:// or sqlite: (got {})",
                redact(url)
            ),
            None => {
                std::fs::create_dir_all(data_dir).map_err(|e| {
                    anyhow::anyhow!(
                        "creating the data directory {} (data_dir, --data-dir): {e}",
                        data_dir.display()
                    )
                })?;
                let file = data_dir.join("ludus.db");
                (
                    format!("sqlite://{}?mode=rwc", file.display()),
                    Backend::Sqlite,
                )
            }
        };
        let pool = AnyPoolOptions::new()
            .max_connections(cfg.max_connections.max(1))
            .acquire_timeout(cfg.acquire_timeout)
            .idle_timeout(cfg.idle_timeout)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL: readers never wait for the writer; a writer waits up
                        // to 5 s for another instead of failing at once.
                        for pragma in [
                            "PRAGMA journal_mode = WAL",
                            "PRAGMA synchronous = NORMAL",
                            "PRAGMA busy_timeout = 5000",
                            "PRAGMA foreign_keys = ON",
                        ] {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(|e| anyhow::anyhow!("opening storage at {}: {e}", redact(&url)))?;
        let storage = Storage {
            pool,
            backend,
            max_value_bytes: cfg.max_value_bytes,
        };
        storage.migrate(&url).await?;
        Ok(storage)
    }

    /// Applies the embedded migrations; refuses a database a newer Ludus wrote.
    async fn migrate(&self, url: &str) -> anyhow::Result<()> {
        let known = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        let applied: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success = TRUE")
                .fetch_one(&self.pool)
                .await
                .ok()
                .flatten();
        if let Some(applied) = applied
            && applied > known
        {
            anyhow::bail!(
                "the database at {} was written by a newer Ludus (schema version {applied}; \
                 this Ludus knows up to {known}): run that version, or point storage.url or \
                 --data-dir elsewhere",
                redact(url)
            );
        }
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| anyhow::anyhow!("migrating storage at {}: {e}", redact(url)))
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The newest schema version this Ludus applies.
    pub fn schema_version() -> i64 {
        MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
    }

    /// How long taking a connection from the pool takes now (a probe: the connection
    /// goes straight back). What a call waits before it can start under the current load.
    pub async fn pool_wait(&self) -> Result<std::time::Duration, StorageError> {
        let started = std::time::Instant::now();
        let conn = self.pool.acquire().await?;
        let waited = started.elapsed();
        drop(conn);
        Ok(waited)
    }

    /// Closes the pool (waits for calls in progress).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    fn check_size(&self, text: &str) -> Result<(), StorageError> {
        if text.len() > self.max_value_bytes {
            return Err(StorageError::TooLarge {
                size: text.len(),
                limit: self.max_value_bytes,
            });
        }
        Ok(())
    }
}

/// A URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Player ids and other u64s as the database keeps them (below 2^63).
fn db_id(id: u64) -> Result<i64, StorageError> {
    i64::try_from(id).map_err(|_| StorageError::Invalid(format!("id {id} is out of range")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_left_out_of_messages() {
        assert_eq!(
            redact("postgres://ludus:hunter2@db:5432/ludus"),
            "postgres://ludus:***@db:5432/ludus"
        );
        assert_eq!(redact("postgres://db/ludus"), "postgres://db/ludus");
        assert_eq!(redact("sqlite:///tmp/x.db"), "sqlite:///tmp/x.db");
    }
}
