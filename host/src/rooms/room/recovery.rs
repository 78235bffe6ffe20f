//! How a room survives its game failing: a checkpoint of the game's state (taken every
//! `checkpoint_interval`), and recovery on a fresh instance from it (the members who
//! came or went since are replayed), or closing the room when the game fails too often.

use std::collections::BTreeSet;
use std::time::Instant;

use super::{Checkpoint, Room};
use crate::lock::Recover;
use crate::runtime::{GuestError, LeaveReason, Refusal};

impl Room {
    /// Saves the game's state to rebuild from if it fails (skipped if it refuses), and
    /// hands it to storage when the room is kept there.
    pub(super) fn checkpoint(&mut self, now: Instant) {
        self.last_checkpoint = now;
        match self.instance().save() {
            Ok(Ok(state)) => {
                let members = self.member_ids().collect();
                let version = self.module.version.clone();
                let random = self.instance().random_state();
                self.persist(&state, &version, random);
                self.checkpoint = Some(Checkpoint {
                    state,
                    version: self.module.version.clone(),
                    members,
                });
            }
            Ok(Err(Refusal(reason))) => tracing::warn!(
                room = &*self.id,
                "checkpoint skipped: save refused: {reason}"
            ),
            Err(e) => self.recover(e),
        }
    }

    /// Brings the room back on a fresh instance after its game failed, or closes it if
    /// it fails too often or cannot be restored.
    pub(super) fn recover(&mut self, cause: GuestError) {
        // The failed instance's random stream goes on in the next one.
        let random = self.instance.take().map(|i| i.random_state());
        let now = Instant::now();
        let window = self.cfg.restart_window;
        self.failures.retain(|t| now.duration_since(*t) < window);
        self.failures.push_back(now);
        let cause = cause.to_string();
        self.shared
            .update(|info| info.last_error = Some(cause.clone()));
        tracing::warn!(room = &*self.id, game = %self.module.label(), "game failed: {cause}");
        self.rt.count_failure();
        let game = self.shared.info.lock().recover().game.clone();
        metrics::counter!("ludus_game_failures_total", "game" => game).increment(1);
        if self.failures.len() > self.cfg.max_restarts as usize {
            let n = self.failures.len();
            self.close(format!(
                "the game failed {n} times within {window:?}; last failure: {cause}"
            ));
            return;
        }
        match self.rebuild(random) {
            Ok(()) => {
                self.shared.update(|info| info.restarts += 1);
                tracing::info!(room = &*self.id, "room restored from its last checkpoint");
                self.apply_effects();
            }
            Err(e) => self.close(format!(
                "the game failed ({cause}) and the room could not be restored: {e}"
            )),
        }
    }

    /// A fresh instance from the checkpoint (or from `init` if none was taken yet), then
    /// the members who came or went since are replayed as joins and leaves.
    fn rebuild(&mut self, random: Option<u64>) -> Result<(), String> {
        let mut instance = self
            .rt
            .instantiate(&self.module, &self.init)
            .map_err(|e| e.to_string())?;
        if let Some(state) = random {
            instance.set_random_state(state);
        }
        let known = match &self.checkpoint {
            Some(cp) => {
                instance
                    .restore(&self.init, &cp.state, &cp.version)
                    .map_err(|e| e.to_string())?
                    .map_err(|r| r.0)?;
                cp.members.clone()
            }
            None => {
                instance
                    .init(&self.init)
                    .map_err(|e| e.to_string())?
                    .map_err(|r| r.0)?;
                BTreeSet::new()
            }
        };
        let here = |id: &u64| self.members.contains_key(id) || self.held.contains_key(id);
        for &gone in known.iter().filter(|id| !here(id)) {
            instance
                .leave(gone, LeaveReason::Left)
                .map_err(|e| e.to_string())?;
        }
        let mut refused = Vec::new();
        for (&id, member) in self.members.iter().filter(|(id, _)| !known.contains(id)) {
            if let Err(reason) = instance.join(id, &member.name).map_err(|e| e.to_string())? {
                refused.push((id, reason));
            }
        }
        self.instance = Some(instance);
        for (id, reason) in refused {
            self.remove(
                id,
                &format!("the restored room refused the player: {reason}"),
                None,
            );
        }
        Ok(())
    }
}
