//! Objects: `(collection, key, owner)` → a JSON value with a version, read and write
//! permissions and the time of the last write. A player reads what they own (unless
//! it is readable by nobody) and what is public; writes and deletes only their own
//! objects that are writable. The game itself (`Caller::Game`) may do anything.

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{Storage, StorageError, db_id, now_ms};

/// Who asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    /// The game (a room's module) or the node: every permission.
    Game,
    /// A player, through the HTTP API.
    Player(u64),
}

/// Who may read an object.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ReadPerm {
    /// Only the game.
    None,
    /// The owner (and the game).
    #[default]
    Owner,
    /// Everyone.
    Public,
}

/// Who may write an object.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WritePerm {
    /// Only the game.
    None,
    /// The owner (and the game).
    #[default]
    Owner,
}

impl ReadPerm {
    fn code(self) -> i64 {
        match self {
            ReadPerm::None => 0,
            ReadPerm::Owner => 1,
            ReadPerm::Public => 2,
        }
    }
    fn from_code(code: i64) -> ReadPerm {
        match code {
            2 => ReadPerm::Public,
            1 => ReadPerm::Owner,
            _ => ReadPerm::None,
        }
    }
}

impl WritePerm {
    fn code(self) -> i64 {
        match self {
            WritePerm::None => 0,
            WritePerm::Owner => 1,
        }
    }
    fn from_code(code: i64) -> WritePerm {
        match code {
            1 => WritePerm::Owner,
            _ => WritePerm::None,
        }
    }
}

/// When a write goes ahead.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Condition {
    /// Always (last writer wins).
    #[default]
    Any,
    /// Only if no such object exists.
    Absent,
    /// Only if the object is at this version.
    Version(i64),
}

/// A stored object.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Object {
    pub collection: String,
    pub key: String,
    pub owner: u64,
    pub value: serde_json::Value,
    pub version: i64,
    pub read: ReadPerm,
    pub write: WritePerm,
    pub updated_ms: i64,
}

/// A write request.
#[derive(Clone, Debug, PartialEq)]
pub struct WriteObject {
    pub collection: String,
    pub key: String,
    pub owner: u64,
    /// JSON text.
    pub value: String,
    pub condition: Condition,
    pub read: ReadPerm,
    pub write: WritePerm,
}

const MAX_NAME: usize = 128;

pub(super) fn check_name(what: &str, name: &str) -> Result<(), StorageError> {
    if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(StorageError::Invalid(format!(
            "{what} must be 1 to {MAX_NAME} bytes without control characters"
        )));
    }
    Ok(())
}

fn object(row: &sqlx::any::AnyRow) -> Result<Object, StorageError> {
    let value: String = row.try_get("value")?;
    Ok(Object {
        collection: row.try_get("collection")?,
        key: row.try_get("key")?,
        owner: row.try_get::<i64, _>("owner")? as u64,
        value: serde_json::from_str(&value)
            .map_err(|e| StorageError::Unavailable(format!("a stored value is not JSON: {e}")))?,
        version: row.try_get("version")?,
        read: ReadPerm::from_code(row.try_get::<i64, _>("read_perm")?),
        write: WritePerm::from_code(row.try_get::<i64, _>("write_perm")?),
        updated_ms: row.try_get("updated_ms")?,
    })
}

const COLUMNS: &str = "collection, key, owner, value, version, read_perm, write_perm, updated_ms";

impl Storage {
    /// Writes an object under `w.condition`; returns it as stored (with its version).
    pub async fn write_object(
        &self,
        caller: Caller,
        w: WriteObject,
    ) -> Result<Object, StorageError> {
        let mut conn = self.pool.acquire().await?;
        self.write_on(&mut conn, caller, w).await
    }

    /// Writes a batch in one transaction (what a room's writes of one tick become):
    /// each write gets its own result (a conditional write that does not go ahead
    /// leaves the others be), and all that went ahead are committed together. An
    /// `Err` of the whole batch means none of it was kept.
    pub async fn write_objects(
        &self,
        caller: Caller,
        writes: Vec<WriteObject>,
    ) -> Result<Vec<Result<Object, StorageError>>, StorageError> {
        let mut tx = self.pool.begin().await?;
        let mut results = Vec::with_capacity(writes.len());
        for w in writes {
            let result = self.write_on(&mut tx, caller, w).await;
            if let Err(StorageError::Unavailable(e)) = result {
                return Err(StorageError::Unavailable(e));
            }
            results.push(result);
        }
        tx.commit().await?;
        Ok(results)
    }

    async fn write_on(
        &self,
        conn: &mut sqlx::AnyConnection,
        caller: Caller,
        w: WriteObject,
    ) -> Result<Object, StorageError> {
        check_name("collection", &w.collection)?;
        check_name("key", &w.key)?;
        self.check_size(&w.value)?;
        serde_json::from_str::<serde_json::Value>(&w.value)
            .map_err(|e| StorageError::Invalid(format!("the value is not JSON: {e}")))?;
        if let Caller::Player(p) = caller
            && p != w.owner
        {
            return Err(StorageError::Denied(
                "a player writes only their own objects",
            ));
        }
        let game = caller == Caller::Game;
        let owner = db_id(w.owner)?;
        let now = now_ms();
        let (read, write) = (w.read.code(), w.write.code());
        let row =
            match w.condition {
                Condition::Absent => sqlx::query(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO ludus_objects ({COLUMNS}) VALUES ($1, $2, $3, $4, 1, $5, $6, $7) \
                     ON CONFLICT (collection, owner, key) DO NOTHING RETURNING {COLUMNS}"
                )))
                .bind(&w.collection)
                .bind(&w.key)
                .bind(owner)
                .bind(&w.value)
                .bind(read)
                .bind(write)
                .bind(now)
                .fetch_optional(&mut *conn)
                .await?,
                Condition::Version(expected) => sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE ludus_objects SET value = $4, version = version + 1, read_perm = $5, \
                     write_perm = $6, updated_ms = $7 \
                     WHERE collection = $1 AND key = $2 AND owner = $3 AND version = $8 \
                     AND (write_perm = 1 OR $9 = 1) RETURNING {COLUMNS}"
                )))
                .bind(&w.collection)
                .bind(&w.key)
                .bind(owner)
                .bind(&w.value)
                .bind(read)
                .bind(write)
                .bind(now)
                .bind(expected)
                .bind(i64::from(game))
                .fetch_optional(&mut *conn)
                .await?,
                Condition::Any => sqlx::query(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO ludus_objects ({COLUMNS}) VALUES ($1, $2, $3, $4, 1, $5, $6, $7) \
                     ON CONFLICT (collection, owner, key) DO UPDATE SET value = excluded.value, \
                     version = ludus_objects.version + 1, read_perm = excluded.read_perm, \
                     write_perm = excluded.write_perm, updated_ms = excluded.updated_ms \
                     WHERE ludus_objects.write_perm = 1 OR $8 = 1 RETURNING {COLUMNS}"
                )))
                .bind(&w.collection)
                .bind(&w.key)
                .bind(owner)
                .bind(&w.value)
                .bind(read)
                .bind(write)
                .bind(now)
                .bind(i64::from(game))
                .fetch_optional(&mut *conn)
                .await?,
            };
        if let Some(row) = row {
            return object(&row);
        }
        // Nothing written: say why.
        let current = stored(&mut *conn, &w.collection, &w.key, owner).await?;
        Err(match (w.condition, current) {
            (_, Some(o)) if !game && o.write == WritePerm::None => {
                StorageError::Denied("the object is not writable by players")
            }
            (Condition::Absent, Some(o)) => StorageError::Conflict {
                expected: "no object".into(),
                current: format!("version {}", o.version),
            },
            (Condition::Version(v), Some(o)) => StorageError::Conflict {
                expected: format!("version {v}"),
                current: format!("version {}", o.version),
            },
            (Condition::Version(v), None) => StorageError::Conflict {
                expected: format!("version {v}"),
                current: "no object".into(),
            },
            _ => StorageError::Unavailable("the write took no effect".into()),
        })
    }

    async fn stored(
        &self,
        collection: &str,
        key: &str,
        owner: i64,
    ) -> Result<Option<Object>, StorageError> {
        let mut conn = self.pool.acquire().await?;
        stored(&mut conn, collection, key, owner).await
    }

    /// Reads one object. A player gets `NotFound` for an object they may not read, as
    /// for one that does not exist.
    pub async fn read_object(
        &self,
        caller: Caller,
        collection: &str,
        key: &str,
        owner: u64,
    ) -> Result<Object, StorageError> {
        let object = self
            .stored(collection, key, db_id(owner)?)
            .await?
            .ok_or(StorageError::NotFound)?;
        if readable(caller, &object) {
            Ok(object)
        } else {
            Err(StorageError::NotFound)
        }
    }

    /// Deletes one object (only at `if_version`, when given).
    pub async fn delete_object(
        &self,
        caller: Caller,
        collection: &str,
        key: &str,
        owner: u64,
        if_version: Option<i64>,
    ) -> Result<(), StorageError> {
        let current = self
            .stored(collection, key, db_id(owner)?)
            .await?
            .ok_or(StorageError::NotFound)?;
        if let Caller::Player(p) = caller {
            if p != owner {
                return Err(if readable(caller, &current) {
                    StorageError::Denied("a player deletes only their own objects")
                } else {
                    StorageError::NotFound
                });
            }
            if current.write == WritePerm::None {
                return Err(StorageError::Denied(
                    "the object is not writable by players",
                ));
            }
        }
        let expected = if_version.unwrap_or(current.version);
        let done = sqlx::query(
            "DELETE FROM ludus_objects WHERE collection = $1 AND key = $2 AND owner = $3 \
             AND version = $4",
        )
        .bind(collection)
        .bind(key)
        .bind(db_id(owner)?)
        .bind(expected)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StorageError::Conflict {
                expected: format!("version {expected}"),
                current: "another version".into(),
            });
        }
        Ok(())
    }

    /// Objects of `collection` the caller may read (of `owner` only, when given), in
    /// (owner, key) order, `limit` at a time; the cursor of the next page, if any.
    pub async fn list_objects(
        &self,
        caller: Caller,
        collection: &str,
        owner: Option<u64>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<(Vec<Object>, Option<String>), StorageError> {
        let limit = limit.clamp(1, 100);
        let (after_owner, after_key) = match cursor {
            None => (-1, String::new()),
            Some(c) => decode_cursor(c)?,
        };
        let (player, game) = match caller {
            Caller::Game => (-1, 1),
            Caller::Player(p) => (db_id(p)?, 0),
        };
        let owner = owner.map(db_id).transpose()?.unwrap_or(-1);
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM ludus_objects WHERE collection = $1 \
             AND ($2 = -1 OR owner = $2) \
             AND (owner > $3 OR (owner = $3 AND key > $4)) \
             AND ($5 = 1 OR read_perm = 2 OR (owner = $6 AND read_perm = 1)) \
             ORDER BY owner, key LIMIT $7"
        )))
        .bind(collection)
        .bind(owner)
        .bind(after_owner)
        .bind(&after_key)
        .bind(game)
        .bind(player)
        .bind(limit as i64 + 1)
        .fetch_all(&self.pool)
        .await?;
        let mut objects = rows.iter().map(object).collect::<Result<Vec<_>, _>>()?;
        let next = if objects.len() > limit {
            objects.truncate(limit);
            objects
                .last()
                .map(|o| encode_cursor(o.owner as i64, &o.key))
        } else {
            None
        };
        Ok((objects, next))
    }
}

async fn stored(
    conn: &mut sqlx::AnyConnection,
    collection: &str,
    key: &str,
    owner: i64,
) -> Result<Option<Object>, StorageError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM ludus_objects WHERE collection = $1 AND key = $2 AND owner = $3"
    )))
    .bind(collection)
    .bind(key)
    .bind(owner)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(object).transpose()
}

fn readable(caller: Caller, o: &Object) -> bool {
    match caller {
        Caller::Game => true,
        Caller::Player(p) => {
            o.read == ReadPerm::Public || (o.owner == p && o.read == ReadPerm::Owner)
        }
    }
}

fn encode_cursor(owner: i64, key: &str) -> String {
    hex::encode(format!("{owner}\n{key}"))
}

fn decode_cursor(cursor: &str) -> Result<(i64, String), StorageError> {
    let bad = || StorageError::Invalid("the cursor is not one this server gave".into());
    let bytes = hex::decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (owner, key) = text.split_once('\n').ok_or_else(bad)?;
    Ok((owner.parse().map_err(|_| bad())?, key.to_owned()))
}
