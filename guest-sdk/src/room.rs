//! The typed room context: everything a game can ask of the host.

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

use crate::__private::bindings::ludus::game::{host, storage as wit_storage};
use crate::storage::{Condition, Leaderboard, RequestId, Write, key};
use crate::{LogLevel, PlayerId};

/// The room a game runs in. Every game callback gets it; its methods call the host.
///
/// Messages are opaque bytes for the host: `send`/`broadcast` take any bytes, the
/// `*_json` helpers encode a serde value as JSON (what the browser page and the JSON
/// client mode expect).
#[derive(Debug)]
pub struct Room {
    id: String,
    config: String,
    seed: u64,
}

impl Room {
    pub(crate) fn new(id: String, config: String, seed: u64) -> Self {
        Room { id, config, seed }
    }

    /// The room's id, unique within the cluster.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The room config as given at creation (JSON text, `{}` when none was given).
    pub fn config(&self) -> &str {
        &self.config
    }

    /// The room config decoded from JSON. Missing fields take their serde defaults.
    pub fn config_json<T: DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_str(&self.config).map_err(|e| format!("invalid room config: {e}"))
    }

    /// Seed of this room's random stream (see [`Room::random`]).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Send a message to one member. Unknown ids are ignored.
    pub fn send(&mut self, to: PlayerId, msg: impl AsRef<[u8]>) {
        host::send(to.0, msg.as_ref());
    }

    /// Send a value as JSON to one member.
    pub fn send_json<T: Serialize + ?Sized>(&mut self, to: PlayerId, value: &T) {
        if let Some(bytes) = to_json(value) {
            self.send(to, bytes);
        }
    }

    /// Send a message to every member.
    pub fn broadcast(&mut self, msg: impl AsRef<[u8]>) {
        host::broadcast(msg.as_ref());
    }

    /// Send a value as JSON to every member.
    pub fn broadcast_json<T: Serialize + ?Sized>(&mut self, value: &T) {
        if let Some(bytes) = to_json(value) {
            self.broadcast(bytes);
        }
    }

    /// Send a message to every member but one.
    pub fn broadcast_except(&mut self, except: PlayerId, msg: impl AsRef<[u8]>) {
        host::broadcast_except(except.0, msg.as_ref());
    }

    /// Send a value as JSON to every member but one.
    pub fn broadcast_except_json<T: Serialize + ?Sized>(&mut self, except: PlayerId, value: &T) {
        if let Some(bytes) = to_json(value) {
            self.broadcast_except(except, bytes);
        }
    }

    /// Remove a player; the game then gets `leave(player, LeaveReason::Kicked)`.
    pub fn kick(&mut self, player: PlayerId, reason: &str) {
        host::kick(player.0, reason);
    }

    /// Close the room: every member is told `reason`; no more callbacks follow.
    pub fn close(&mut self, reason: &str) {
        host::close(reason);
    }

    /// Ask for `hz` ticks per second (clamped by the host to 1..=120).
    pub fn set_tick_rate(&mut self, hz: u32) {
        host::set_tick_rate(hz);
    }

    /// Hold members' messages and hand them to [`Game::message`](crate::Game::message)
    /// just before the next tick (`true`), or as they arrive (`false`, the default).
    ///
    /// For a game that applies inputs and shows their effect only at its tick (a
    /// snapshot per tick), holding changes nothing players see and costs one call into
    /// the game per tick instead of one per input. A game that answers a message at once
    /// (a chat, a turn-based move) should not hold. The setting stays with the room
    /// across a live swap until a game changes it.
    pub fn hold_messages_until_tick(&mut self, hold: bool) {
        host::hold_messages(hold);
    }

    /// `true`: keep the room open while nobody is in it (a lobby, a persistent world).
    /// By default the host closes a room that has had no members for its idle time
    /// (`rooms.empty_timeout`, 60 s unless the operator changed it). The setting stays
    /// with the room across a live swap until a game changes it.
    pub fn keep_open(&mut self, keep: bool) {
        host::keep_open(keep);
    }

    /// `true`: leave the room out of room listings; players join it by its id (a
    /// friends' room, a match). Rooms are listed by default.
    pub fn set_private(&mut self, private: bool) {
        host::set_private(private);
    }

    /// Set the room's public label (room listings, matchmaking).
    pub fn set_label(&mut self, label: &str) {
        host::set_label(label);
    }

    /// Wall-clock time since the Unix epoch.
    pub fn now(&self) -> Duration {
        Duration::from_micros(host::now_micros())
    }

    /// Next number of the room's seeded random stream: the same seed gives the same
    /// numbers, so a room can be replayed.
    pub fn random(&mut self) -> u64 {
        host::random()
    }

    /// A number in `0..n` from the room's random stream (`n` must be > 0).
    pub fn random_below(&mut self, n: u64) -> u64 {
        // Lemire's multiply-shift: unbiased enough for games, no division.
        ((u128::from(self.random()) * u128::from(n.max(1))) >> 64) as u64
    }

    /// Write a line to the host's log, tagged with the room id.
    pub fn log(&self, level: LogLevel, msg: &str) {
        host::log(level.into(), msg);
    }

    // Storage: each call queues a request and returns at once; the answer comes to
    // `Game::storage` before a later tick (see the `storage` module).

    /// Read an object (`owner` `None`: the game's own). Answer: [`Answer::Object`](crate::storage::Answer::Object)
    /// or `NotFound`.
    pub fn read_object(&mut self, collection: &str, k: &str, owner: Option<PlayerId>) -> RequestId {
        RequestId(wit_storage::read(&key(collection, k, owner)))
    }

    /// Write an object. Answer: [`Answer::Written`](crate::storage::Answer::Written) with its
    /// new version, or `Conflict` if its condition did not hold. The writes of one tick
    /// commit together.
    pub fn write_object(&mut self, write: Write) -> RequestId {
        RequestId(wit_storage::write(&write.into_wit()))
    }

    /// Delete an object (at a version, with `Condition::Version`). Answer: `Deleted`.
    pub fn delete_object(
        &mut self,
        collection: &str,
        k: &str,
        owner: Option<PlayerId>,
        condition: Condition,
    ) -> RequestId {
        RequestId(wit_storage::delete(&key(collection, k, owner), condition))
    }

    /// Objects of a collection (of one owner when given), `limit` (1-100) at a time
    /// after `cursor`. Answer: `Objects` with the next page's cursor.
    pub fn list_objects(
        &mut self,
        collection: &str,
        owner: Option<PlayerId>,
        limit: u32,
        cursor: Option<&str>,
    ) -> RequestId {
        RequestId(wit_storage::list(
            collection,
            owner.map(|p| p.0),
            limit,
            cursor,
        ))
    }

    /// Make a leaderboard (or change how an existing one ranks; its records stay).
    /// Answer: `Defined`.
    pub fn define_leaderboard(&mut self, board: &Leaderboard) -> RequestId {
        RequestId(wit_storage::define_leaderboard(board))
    }

    /// Submit a score for a player (the board's operator decides what is kept; a
    /// member's name is recorded with it). Answer: `Scored` with the record and rank.
    pub fn submit_score(
        &mut self,
        board: &str,
        player: PlayerId,
        score: i64,
        subscore: i64,
        metadata: Option<&str>,
    ) -> RequestId {
        RequestId(wit_storage::submit_score(
            board, player.0, score, subscore, metadata,
        ))
    }

    /// The first `limit` (1-100) records of a board, after `cursor`. Answer: `Scores`.
    pub fn top_scores(&mut self, board: &str, limit: u32, cursor: Option<&str>) -> RequestId {
        RequestId(wit_storage::top(board, limit, cursor))
    }

    /// Up to `limit` (1-100) records around a player's. Answer: `Scores`.
    pub fn scores_around(&mut self, board: &str, player: PlayerId, limit: u32) -> RequestId {
        RequestId(wit_storage::around(board, player.0, limit))
    }
}

/// Encodes a message as JSON. Plain data cannot fail to encode; a `Serialize` impl that
/// reports an error gets its message dropped and logged rather than sent half-written.
fn to_json<T: Serialize + ?Sized>(value: &T) -> Option<Vec<u8>> {
    serde_json::to_vec(value)
        .map_err(|e| host::log(LogLevel::Error.into(), &format!("message not sent: {e}")))
        .ok()
}
