//! Live host settings: `config/<key>` in etcd (`ludus config set KEY=VALUE`) changes a
//! setting on every node without a restart. Each node checks a new value before it
//! applies it (an invalid one is refused and the old value kept), reports what it
//! applied and refused in its `nodes/` entry (`ludus status`), and rolls a change back
//! by itself, for the whole cluster, when the node turns unready or its games fail
//! within `admin.settings_window` after it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use super::admin::Admin;
use crate::cluster::ClusterEvent;
use crate::config::Config;

/// Games' failures within the window that roll a change back.
const FAILURES: u64 = 3;
/// How often a change in its window is checked.
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// The settings that change live, with what they take.
pub const LIVE: &[(&str, &str)] = &[
    (
        "log.level",
        "a log filter, e.g. `info` or `warn,ludus=debug`",
    ),
    (
        "gateway.max_messages_per_second",
        "client frames per second per connection, 1 to 100000 (new connections)",
    ),
    (
        "gateway.max_frame_bytes",
        "largest client frame, 64 bytes to runtime.max_message_bytes (new connections)",
    ),
    (
        "rooms.max_rooms_per_player",
        "rooms one player may have open on a node, 0 (no limit) to 10000",
    ),
    (
        "rooms.checkpoint_interval",
        "how often rooms checkpoint, 100ms to 10m",
    ),
    (
        "runtime.tick_deadline",
        "a tick call's budget, 1ms to 10s (every room, from its next tick)",
    ),
    (
        "runtime.message_deadline",
        "a join, leave or message call's budget, 1ms to 10s",
    ),
];

/// A checked value, ready to apply.
#[derive(Clone, Debug, PartialEq)]
enum Value {
    Filter(String),
    Count(u64),
    Span(Duration),
}

fn count(value: &str, range: std::ops::RangeInclusive<u64>) -> Result<Value, String> {
    let n: u64 = value
        .trim()
        .parse()
        .map_err(|_| format!("`{value}` is not a whole number"))?;
    if !range.contains(&n) {
        return Err(format!(
            "{n} is out of range ({} to {})",
            range.start(),
            range.end()
        ));
    }
    Ok(Value::Count(n))
}

fn span(value: &str, min: Duration, max: Duration) -> Result<Value, String> {
    let d = humantime::parse_duration(value.trim())
        .map_err(|e| format!("`{value}` is not a duration (e.g. 500ms, 2s): {e}"))?;
    if d < min || d > max {
        return Err(format!(
            "{value} is out of range ({} to {})",
            humantime::format_duration(min),
            humantime::format_duration(max)
        ));
    }
    Ok(Value::Span(d))
}

/// Checks `value` for setting `key` as a node of `config` would; the error says what is
/// wrong, or that the key does not change live.
pub fn check(key: &str, value: &str, config: &Config) -> Result<(), String> {
    parse(key, value, config).map(|_| ())
}

fn parse(key: &str, value: &str, config: &Config) -> Result<Value, String> {
    let ms = Duration::from_millis;
    match key {
        "log.level" => crate::logs::check_filter(value).map(|()| Value::Filter(value.to_owned())),
        "gateway.max_messages_per_second" => count(value, 1..=100_000),
        "gateway.max_frame_bytes" => count(value, 64..=config.runtime.max_message_bytes as u64),
        "rooms.max_rooms_per_player" => count(value, 0..=10_000),
        "rooms.checkpoint_interval" => span(value, ms(100), Duration::from_secs(600)),
        "runtime.tick_deadline" | "runtime.message_deadline" => {
            span(value, ms(1), Duration::from_secs(10))
        }
        other if is_config_key(other) => Err(format!(
            "`{other}` does not change live: set it in the config file (or its LUDUS_* \
             variable) and restart the node. Live: {}",
            live_keys()
        )),
        other => Err(format!("no setting `{other}`. Live: {}", live_keys())),
    }
}

fn live_keys() -> String {
    LIVE.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
}

/// Whether `key` (`section.name`) names a setting of the config file.
fn is_config_key(key: &str) -> bool {
    let Ok(serde_json::Value::Object(top)) = serde_json::to_value(Config::default()) else {
        return false;
    };
    let mut parts = key.splitn(2, '.');
    let (section, name) = (parts.next().unwrap_or_default(), parts.next());
    match (top.get(section), name) {
        (Some(serde_json::Value::Object(fields)), Some(name)) => fields.contains_key(name),
        (Some(_), None) => true,
        _ => false,
    }
}

/// What the node's own configuration says for `key` (the value an unset key returns to).
fn configured(key: &str, config: &Config) -> Value {
    let c = config;
    match key {
        "log.level" => Value::Filter(crate::logs::start_filter().unwrap_or_default()),
        "gateway.max_messages_per_second" => {
            Value::Count(u64::from(c.gateway.max_messages_per_second))
        }
        "gateway.max_frame_bytes" => Value::Count(c.gateway.max_frame_bytes as u64),
        "rooms.max_rooms_per_player" => Value::Count(c.rooms.max_rooms_per_player as u64),
        "rooms.checkpoint_interval" => Value::Span(c.rooms.checkpoint_interval),
        "runtime.tick_deadline" => Value::Span(c.runtime.tick_deadline),
        "runtime.message_deadline" => Value::Span(c.runtime.message_deadline),
        _ => Value::Count(0),
    }
}

/// A change applied lately, watched for harm until `until`.
struct Watched {
    key: String,
    revision: i64,
    until: Instant,
    failures_before: u64,
    /// What the node had before (applied again on a rollback).
    before: Option<String>,
}

pub(super) struct Settings {
    /// The node's parts, and its configuration (what an unset setting returns to).
    pub admin: Admin,
    /// Applied values, by key (absent: the node's configuration).
    applied: BTreeMap<String, String>,
    /// Refused or rolled back, by key: the revision and why.
    refused: BTreeMap<String, (i64, String)>,
    watched: Vec<Watched>,
}

impl Settings {
    pub fn new(admin: Admin) -> Self {
        Settings {
            admin,
            applied: BTreeMap::new(),
            refused: BTreeMap::new(),
            watched: Vec::new(),
        }
    }

    /// Applies the cluster's settings now, then follows their changes until `stop`.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut events = self.admin.cluster.subscribe();
        self.reconcile();
        let mut check = tokio::time::interval(CHECK_EVERY);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                event = events.recv() => match event {
                    Ok(ClusterEvent::SettingChanged { .. }) => self.reconcile(),
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => self.reconcile(),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                _ = check.tick(), if !self.watched.is_empty() => self.check_health().await,
            }
        }
    }

    /// Brings every setting to what etcd says, refusing what does not check.
    fn reconcile(&mut self) {
        let settings = self.admin.cluster.settings();
        let mut keys: Vec<String> = settings.keys().cloned().collect();
        keys.extend(self.applied.keys().cloned());
        keys.sort();
        keys.dedup();
        for key in keys {
            let (wanted, revision) = match settings.get(&key) {
                Some((entry, revision)) => (entry.value.clone(), *revision),
                None => (None, 0),
            };
            if wanted.as_ref() == self.applied.get(&key) {
                continue;
            }
            if self.refused.get(&key).is_some_and(|(r, _)| *r == revision) {
                continue;
            }
            let value = match &wanted {
                Some(text) => match parse(&key, text, &self.admin.config) {
                    Ok(value) => value,
                    Err(e) => {
                        tracing::warn!(setting = %key, "live setting refused, old value kept: {e}");
                        self.refused
                            .insert(key.clone(), (revision, format!("`{text}` refused: {e}")));
                        continue;
                    }
                },
                None => configured(&key, &self.admin.config),
            };
            if let Err(e) = self.apply(&key, &value) {
                tracing::warn!(setting = %key, "live setting not applied: {e}");
                self.refused.insert(key.clone(), (revision, e));
                continue;
            }
            tracing::info!(setting = %key, value = ?wanted, "live setting applied");
            self.refused.remove(&key);
            let before = match &wanted {
                Some(v) => self.applied.insert(key.clone(), v.clone()),
                None => self.applied.remove(&key),
            };
            self.watched.retain(|w| w.key != key);
            if wanted.is_some() {
                self.watched.push(Watched {
                    key: key.clone(),
                    revision,
                    until: Instant::now() + self.admin.config.admin.settings_window,
                    failures_before: self.admin.rooms.runtime().failures(),
                    before,
                });
            }
        }
        self.report();
    }

    fn report(&self) {
        let refused = self
            .refused
            .iter()
            .map(|(k, (_, why))| (k.clone(), why.clone()))
            .collect();
        self.admin
            .cluster
            .report_settings(self.applied.clone(), refused);
    }

    fn apply(&self, key: &str, value: &Value) -> Result<(), String> {
        let a = &self.admin;
        match (key, value) {
            ("log.level", Value::Filter(f)) => crate::logs::set_filter(Some(f)),
            ("gateway.max_messages_per_second", Value::Count(n)) => {
                let n = u32::try_from(*n).map_err(|e| e.to_string())?;
                a.gateway.update_config(|c| c.max_messages_per_second = n);
                Ok(())
            }
            ("gateway.max_frame_bytes", Value::Count(n)) => {
                a.gateway.update_config(|c| c.max_frame_bytes = *n as usize);
                Ok(())
            }
            ("rooms.max_rooms_per_player", Value::Count(n)) => {
                a.rooms.config().set_max_rooms_per_player(*n as usize);
                Ok(())
            }
            ("rooms.checkpoint_interval", Value::Span(d)) => {
                a.rooms.config().set_checkpoint_interval(*d);
                Ok(())
            }
            ("runtime.tick_deadline", Value::Span(d)) => {
                a.rooms.runtime().deadlines().set_tick(*d);
                Ok(())
            }
            ("runtime.message_deadline", Value::Span(d)) => {
                a.rooms.runtime().deadlines().set_message(*d);
                Ok(())
            }
            (key, value) => Err(format!("cannot apply {value:?} to `{key}`")),
        }
    }

    /// Rolls back each watched change under which the node turned unready or its games
    /// failed; forgets those whose window has passed.
    async fn check_health(&mut self) {
        let now = Instant::now();
        self.watched.retain(|w| w.until > now);
        if self.watched.is_empty() {
            return;
        }
        let mut why: Vec<String> = self
            .admin
            .not_ready()
            .await
            .into_iter()
            .filter(|r| !r.starts_with("draining"))
            .collect();
        let failures = self.admin.rooms.runtime().failures();
        let earliest = self.watched.iter().map(|w| w.failures_before).min();
        if let Some(before) = earliest
            && failures.saturating_sub(before) >= FAILURES
        {
            why.push(format!(
                "games failed {} times since the change",
                failures - before
            ));
        }
        if why.is_empty() {
            return;
        }
        let why = why.join("; ");
        for w in std::mem::take(&mut self.watched) {
            let value = match &w.before {
                Some(text) => parse(&w.key, text, &self.admin.config)
                    .unwrap_or_else(|_| configured(&w.key, &self.admin.config)),
                None => configured(&w.key, &self.admin.config),
            };
            if let Err(e) = self.apply(&w.key, &value) {
                tracing::error!(setting = %w.key, "rolling back: {e}");
                continue;
            }
            tracing::warn!(setting = %w.key, before = ?w.before, "live setting rolled back: {why}");
            match &w.before {
                Some(v) => self.applied.insert(w.key.clone(), v.clone()),
                None => self.applied.remove(&w.key),
            };
            self.refused
                .insert(w.key.clone(), (w.revision, format!("rolled back: {why}")));
            match self
                .admin
                .cluster
                .roll_back_setting(&w.key, w.revision, &why)
                .await
            {
                Ok(true) => {}
                Ok(false) => tracing::info!(
                    setting = %w.key,
                    "the setting changed again meanwhile; that change stands"
                ),
                Err(e) => tracing::warn!(
                    setting = %w.key,
                    "rolled back here, but writing it to etcd failed: {e}"
                ),
            }
        }
        self.report();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked_and_non_live_keys_say_so() {
        let config = Config::default();
        for (key, good) in [
            ("log.level", "warn,ludus=debug"),
            ("gateway.max_messages_per_second", "120"),
            ("gateway.max_frame_bytes", "4096"),
            ("rooms.max_rooms_per_player", "0"),
            ("rooms.checkpoint_interval", "250ms"),
            ("runtime.tick_deadline", "30ms"),
            ("runtime.message_deadline", "2s"),
        ] {
            check(key, good, &config).unwrap_or_else(|e| panic!("{key}={good}: {e}"));
            assert!(LIVE.iter().any(|(k, _)| *k == key), "{key} is documented");
        }
        for (key, bad, says) in [
            ("log.level", "ludus=loud", "not a log filter"),
            ("gateway.max_messages_per_second", "0", "out of range"),
            (
                "gateway.max_messages_per_second",
                "many",
                "not a whole number",
            ),
            ("gateway.max_frame_bytes", "999999999999", "out of range"),
            ("rooms.checkpoint_interval", "1ms", "out of range"),
            ("runtime.tick_deadline", "soon", "not a duration"),
            ("gateway.grace_period", "10s", "does not change live"),
            ("gateway.speed", "10", "no setting"),
        ] {
            let e = check(key, bad, &config).unwrap_err();
            assert!(e.contains(says), "{key}={bad}: {e}");
        }
    }
}
