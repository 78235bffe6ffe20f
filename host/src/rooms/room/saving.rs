//! A room's side of outliving its node (see `rooms/persist.rs`): its record, and its
//! checkpoints handed to storage.

use std::hash::{Hash, Hasher};
use std::sync::atomic::Ordering;

use super::Room;
use crate::lock::Recover;
use crate::rooms::handle::CheckpointInfo;
use crate::rooms::persist::{RoomRecord, instant_to_unix_ms, unix_ms};
use crate::storage::{SaveKey, Saved, SavedRoom};

impl Room {
    /// The host's record of the room now, with the state `state_version` saved.
    pub(super) fn record(&self, state_version: &str, random: u64) -> RoomRecord {
        let (game, tick_hz, private, label) = {
            let i = self.shared.info.lock().recover();
            (i.game.clone(), i.tick_hz, i.private, i.label.clone())
        };
        RoomRecord {
            game,
            version: self.module.version.clone(),
            module_sha256: self.module.sha256_hex(),
            state_version: state_version.to_owned(),
            config: self.init.config.to_string(),
            seed: self.init.seed,
            random,
            last_request: self.init.requests.load(Ordering::Relaxed),
            tick_hz,
            hold_messages: self.hold_until_tick,
            keep_open: self.keep_open,
            private,
            label,
            creator: self.shared.creator,
            // Held members too: they are members wherever the room runs next.
            members: self
                .members
                .iter()
                .map(|(id, m)| (*id, &m.name))
                .chain(self.held.iter().map(|(id, h)| (*id, &h.name)))
                .map(|(id, name)| (id, name.clone()))
                .collect(),
            held: self
                .shared
                .held
                .as_ref()
                .map(|h| (h.players.clone(), h.seats, instant_to_unix_ms(h.until))),
        }
    }

    /// Hands the checkpoint just taken to storage, unless it is what was written last.
    pub(super) fn persist(&mut self, state: &[u8], state_version: &str, random: u64) {
        let Some(checkpoints) = self.persist.clone() else {
            return;
        };
        let record = self.record(state_version, random);
        let Ok(record_text) = serde_json::to_string(&record) else {
            return;
        };
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        state.hash(&mut hasher);
        record_text.hash(&mut hasher);
        let hash = hasher.finish();
        if self.persisted == Some(hash) {
            return;
        }
        // The first checkpoint of a room created here takes the id's row over.
        let fresh = self.persisted.is_none() && !self.restored;
        self.persisted = Some(hash);
        let bytes = state.len();
        let shared = self.shared.clone();
        let room = self.id.clone();
        let done: crate::storage::Done = Box::new(move |result| match result {
            Ok(()) => shared.update(|info| {
                info.checkpoint = Some(CheckpointInfo {
                    saved_ms: unix_ms(),
                    bytes,
                });
            }),
            Err(e) => {
                tracing::warn!(room = &*room, "writing the room's checkpoint failed: {e}");
                shared.update(|info| info.checkpoint_failures += 1);
            }
        });
        checkpoints.saver.put(
            SaveKey::Room(self.id.clone()),
            Saved::Room(Box::new(SavedRoom {
                room_id: self.id.to_string(),
                node: checkpoints.node.to_string(),
                game: record.game.clone(),
                version: record.version.clone(),
                module_sha256: record.module_sha256.clone(),
                record: record_text,
                state: state.to_vec(),
                saved_ms: 0,
                fresh,
            })),
            Some(done),
        );
    }

    /// The room closed for good: its checkpoint goes.
    /// Stops the room to run on another node (see `RoomHandle::hand_off`). Its
    /// checkpoint in storage is left for the node that takes it over.
    pub fn hand_off(
        &mut self,
        moving: &[u64],
        to: Option<&str>,
    ) -> Result<(RoomRecord, Vec<u8>), String> {
        if self.closed {
            return Err("the room is closed".to_owned());
        }
        self.deliver_messages();
        if self.closed {
            return Err("the room closed".to_owned());
        }
        let state = match self.instance().save() {
            Ok(Ok(state)) => state,
            Ok(Err(crate::runtime::Refusal(reason))) => {
                return Err(format!("the game refused to save: {reason}"));
            }
            Err(e) => {
                let text = format!("the game failed while saving: {e}");
                self.recover(e);
                return Err(text);
            }
        };
        let version = self.module.version.clone();
        let random = self.instance().random_state();
        let record = self.record(&version, random);
        self.suspended = true;
        // Members whose sessions do not move with the room (on another node's gateway)
        // are told where it goes: the room holds them there, and their sessions attach
        // them again.
        for (player, member) in std::mem::take(&mut self.members) {
            if !moving.contains(&player) {
                let _ = member.sink.try_send(super::RoomEvent::Moved {
                    room: self.id.clone(),
                    node: to.map(str::to_owned),
                    reason: format!(
                        "the room moved to {}, which could not take the player back",
                        to.map_or("another node".to_owned(), |n| format!("node {n}"))
                    ),
                });
            }
        }
        self.held.clear();
        self.close("the room moved to another node".to_owned());
        Ok((record, state))
    }

    pub(super) fn forget(&self) {
        if let Some(checkpoints) = &self.persist {
            checkpoints.saver.put(
                SaveKey::Room(self.id.clone()),
                Saved::RoomGone {
                    room_id: self.id.to_string(),
                    node: checkpoints.node.to_string(),
                },
                None,
            );
        }
    }
}
