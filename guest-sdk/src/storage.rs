//! Storage for a game: objects (JSON values by collection, key and owner) and
//! leaderboards, kept by the node (SQLite, or PostgreSQL shared by a cluster).
//!
//! Every call on [`Room`](crate::Room) only queues a request and returns its
//! [`RequestId`] at once; the room never waits for the database. The requests of one
//! tick are handed over after it, and the object writes among them commit together, in
//! one transaction, each with its own answer. The answers come to
//! [`Game::storage`](crate::Game::storage) as they are ready (just before the tick for
//! a room that holds its messages until the tick), in the order they were answered.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::__private::bindings::ludus::game::storage as wit;
use crate::PlayerId;

pub use wit::{
    Condition, Leaderboard, Object, ObjectKey, ObjectPage, ReadAccess, Score, ScoreOperator,
    ScorePage, SortOrder, StorageAnswer as Answer, StorageError, WriteAccess,
};

/// Names a storage request; unique within a room, across live swaps and restores.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// An object to write: where, the value (JSON text), when the write goes ahead and
/// who may read and write it over the players' HTTP API. The game itself may always
/// read and write every object.
#[derive(Clone, Debug)]
pub struct Write {
    pub collection: String,
    pub key: String,
    /// The player who owns it; `None`: the game's own.
    pub owner: Option<PlayerId>,
    /// JSON text.
    pub value: String,
    pub condition: Condition,
    pub read: ReadAccess,
    pub write: WriteAccess,
}

impl Write {
    /// A value encoded as JSON, owned by the game, written whatever is there, readable
    /// by its owner and written only by games.
    pub fn json<T: Serialize + ?Sized>(
        collection: &str,
        key: &str,
        value: &T,
    ) -> Result<Write, String> {
        Ok(Write {
            collection: collection.to_owned(),
            key: key.to_owned(),
            owner: None,
            value: serde_json::to_string(value).map_err(|e| format!("cannot encode: {e}"))?,
            condition: Condition::Any,
            read: ReadAccess::Owner,
            write: WriteAccess::None,
        })
    }

    /// Owned by `player` (their data: they may read it, and write it if allowed).
    pub fn owner(mut self, player: PlayerId) -> Self {
        self.owner = Some(player);
        self
    }

    /// Goes ahead only if the object is absent, or at a version.
    pub fn only_if(mut self, condition: Condition) -> Self {
        self.condition = condition;
        self
    }

    /// Who may read it over HTTP.
    pub fn readable_by(mut self, read: ReadAccess) -> Self {
        self.read = read;
        self
    }

    /// Who may write it over HTTP.
    pub fn writable_by(mut self, write: WriteAccess) -> Self {
        self.write = write;
        self
    }

    pub(crate) fn into_wit(self) -> wit::ObjectWrite {
        wit::ObjectWrite {
            at: key(&self.collection, &self.key, self.owner),
            value: self.value,
            condition: self.condition,
            read: self.read,
            write: self.write,
        }
    }
}

pub(crate) fn key(collection: &str, key: &str, owner: Option<PlayerId>) -> ObjectKey {
    ObjectKey {
        collection: collection.to_owned(),
        key: key.to_owned(),
        owner: owner.map_or(0, |p| p.0),
    }
}

impl Object {
    /// The value decoded from JSON.
    pub fn value_json<T: DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_str(&self.value).map_err(|e| {
            format!(
                "object {}/{} is not what was expected: {e}",
                self.at.collection, self.at.key
            )
        })
    }

    /// Its owner; `None` for the game's own.
    pub fn owner(&self) -> Option<PlayerId> {
        (self.at.owner != 0).then_some(PlayerId(self.at.owner))
    }
}

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageError::NotFound => f.write_str("not found"),
            StorageError::Conflict(what) => write!(f, "conflict: {what}"),
            StorageError::TooLarge => f.write_str("over the node's size limit"),
            StorageError::Invalid(what) => write!(f, "invalid: {what}"),
            StorageError::Unavailable(what) => write!(f, "unavailable: {what}"),
        }
    }
}
