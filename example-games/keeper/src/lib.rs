//! Keeper: a fixture for storage through the contract (the host's tests and
//! `ludus bench storage --rooms`).
//!
//! A member's message is one request, or a list of them sent in one call:
//! `{"op": "write", "collection": "c", "key": "k", "owner": 7, "value": {...},
//! "version": 0, "public": true}` (`version` 0: only if absent; none: always),
//! `read`, `delete` (with `version`), `list` (`limit`, `cursor`), `define` (`board`,
//! `order` "asc"/"desc", `operator` "best"/"set"/"increment"), `submit` (`board`,
//! `player`, `score`, `subscore`), `top` (`board`, `limit`, `cursor`), `around`
//! (`board`, `player`, `limit`). Each answer goes back to the sender as
//! `{"op": ..., "id": N, "ok": {...}}` or `{"op": ..., "id": N, "error": "..."}`.
//!
//! With the room config `{"writes_per_tick": N}` the room also writes N objects every
//! tick and, once a second, broadcasts `{"report": {"latency_us": [...], "errors": E,
//! "tick_us": [...], "dt_us": [...]}}`: each write's time from request to answer, its
//! own tick calls' wall time, and the intervals between ticks.

use ludus_sdk::storage::{
    Answer, Condition, Leaderboard, Object, ReadAccess, RequestId, Score, ScoreOperator, SortOrder,
    StorageError, Write,
};
use ludus_sdk::{Game, PlayerId, Room, export_game};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Default, Serialize, Deserialize)]
struct Keeper {
    /// Requests awaiting their answer: id -> who asked (none: the room's own write),
    /// what, and when (microseconds since the epoch).
    waiting: BTreeMap<u64, Asked>,
    writes_per_tick: u32,
    written: u64,
    report: Report,
    last_report_us: u64,
}

#[derive(Serialize, Deserialize)]
struct Asked {
    player: Option<PlayerId>,
    op: String,
    at_us: u64,
}

#[derive(Default, Serialize, Deserialize)]
struct Report {
    latency_us: Vec<u64>,
    errors: u64,
    tick_us: Vec<u64>,
    dt_us: Vec<u64>,
}

#[derive(Deserialize)]
struct Config {
    #[serde(default)]
    writes_per_tick: u32,
    #[serde(default)]
    hz: Option<u32>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Requests {
    One(Request),
    Many(Vec<Request>),
}

#[derive(Deserialize)]
struct Request {
    op: String,
    #[serde(default)]
    collection: String,
    #[serde(default)]
    key: String,
    owner: Option<u64>,
    #[serde(default)]
    value: Value,
    version: Option<u64>,
    #[serde(default)]
    public: bool,
    #[serde(default = "ten")]
    limit: u32,
    cursor: Option<String>,
    #[serde(default)]
    board: String,
    #[serde(default)]
    order: String,
    #[serde(default)]
    operator: String,
    #[serde(default)]
    player: u64,
    #[serde(default)]
    score: i64,
    #[serde(default)]
    subscore: i64,
}

fn ten() -> u32 {
    10
}

fn owner(id: Option<u64>) -> Option<PlayerId> {
    id.filter(|&id| id != 0).map(PlayerId)
}

/// Runs one request; `Err` for one the fixture cannot read.
fn ask(room: &mut Room, r: &Request) -> Result<RequestId, String> {
    let condition = |version: Option<u64>| match version {
        None => Condition::Any,
        Some(0) => Condition::Absent,
        Some(v) => Condition::Version(v),
    };
    Ok(match r.op.as_str() {
        "read" => room.read_object(&r.collection, &r.key, owner(r.owner)),
        "write" => {
            let mut write = Write::json(&r.collection, &r.key, &r.value)?
                .only_if(condition(r.version))
                .readable_by(if r.public {
                    ReadAccess::Public
                } else {
                    ReadAccess::Owner
                });
            if let Some(p) = owner(r.owner) {
                write = write.owner(p);
            }
            room.write_object(write)
        }
        "delete" => room.delete_object(&r.collection, &r.key, owner(r.owner), condition(r.version)),
        "list" => room.list_objects(&r.collection, owner(r.owner), r.limit, r.cursor.as_deref()),
        "define" => room.define_leaderboard(&Leaderboard {
            id: r.board.clone(),
            order: if r.order == "asc" {
                SortOrder::Ascending
            } else {
                SortOrder::Descending
            },
            operator: match r.operator.as_str() {
                "set" => ScoreOperator::Set,
                "increment" => ScoreOperator::Increment,
                _ => ScoreOperator::Best,
            },
            reset_every_seconds: None,
        }),
        "submit" => room.submit_score(&r.board, PlayerId(r.player), r.score, r.subscore, None),
        "top" => room.top_scores(&r.board, r.limit, r.cursor.as_deref()),
        "around" => room.scores_around(&r.board, PlayerId(r.player), r.limit),
        other => return Err(format!("unknown op `{other}`")),
    })
}

fn object(o: &Object) -> Value {
    json!({
        "collection": o.at.collection,
        "key": o.at.key,
        "owner": o.at.owner,
        "value": serde_json::from_str::<Value>(&o.value).unwrap_or(Value::Null),
        "version": o.version,
    })
}

fn scores(list: &[Score]) -> Value {
    list.iter()
        .map(|s| json!({ "rank": s.rank, "player": s.player, "score": s.score, "name": s.name }))
        .collect()
}

fn answer_json(answer: &Answer) -> Value {
    match answer {
        Answer::Object(o) | Answer::Written(o) => object(o),
        Answer::Deleted | Answer::Defined => json!({}),
        Answer::Objects(page) => json!({
            "objects": page.objects.iter().map(object).collect::<Vec<_>>(),
            "cursor": page.cursor,
        }),
        Answer::Scored(s) => json!({ "rank": s.rank, "score": s.score }),
        Answer::Scores(page) => json!({ "scores": scores(&page.scores), "cursor": page.cursor }),
    }
}

fn error_text(e: &StorageError) -> String {
    match e {
        StorageError::NotFound => "not_found".into(),
        StorageError::Conflict(what) => format!("conflict: {what}"),
        StorageError::TooLarge => "too_large".into(),
        StorageError::Invalid(what) => format!("invalid: {what}"),
        StorageError::Unavailable(what) => format!("unavailable: {what}"),
    }
}

fn now_us(room: &Room) -> u64 {
    room.now().as_micros() as u64
}

impl Game for Keeper {
    fn init(room: &mut Room) -> Result<Self, String> {
        let config: Config = room.config_json()?;
        room.set_tick_rate(config.hz.unwrap_or(20));
        Ok(Keeper {
            writes_per_tick: config.writes_per_tick,
            last_report_us: now_us(room),
            ..Keeper::default()
        })
    }

    fn message(&mut self, room: &mut Room, from: PlayerId, msg: &[u8]) {
        let requests = match serde_json::from_slice::<Requests>(msg) {
            Ok(Requests::One(r)) => vec![r],
            Ok(Requests::Many(rs)) => rs,
            Err(e) => return room.send_json(from, &json!({ "error": e.to_string() })),
        };
        for r in requests {
            match ask(room, &r) {
                Ok(id) => {
                    let at_us = now_us(room);
                    self.waiting.insert(
                        id.0,
                        Asked {
                            player: Some(from),
                            op: r.op,
                            at_us,
                        },
                    );
                }
                Err(e) => room.send_json(from, &json!({ "op": r.op, "error": e })),
            }
        }
    }

    fn storage(&mut self, room: &mut Room, id: RequestId, answer: Result<Answer, StorageError>) {
        let Some(asked) = self.waiting.remove(&id.0) else {
            return;
        };
        match asked.player {
            Some(player) => {
                let reply = match &answer {
                    Ok(a) => json!({ "op": asked.op, "id": id.0, "ok": answer_json(a) }),
                    Err(e) => json!({ "op": asked.op, "id": id.0, "error": error_text(e) }),
                };
                room.send_json(player, &reply);
            }
            None => {
                let latency = now_us(room).saturating_sub(asked.at_us);
                self.report.latency_us.push(latency);
                if answer.is_err() {
                    self.report.errors += 1;
                }
            }
        }
    }

    fn tick(&mut self, room: &mut Room, dt: Duration) {
        let started = now_us(room);
        for _ in 0..self.writes_per_tick {
            self.written += 1;
            let key = format!("{}-{}", room.id(), self.written % 64);
            let Ok(write) = Write::json("keeper.bench", &key, &json!({ "n": self.written })) else {
                continue;
            };
            let id = room.write_object(write);
            self.waiting.insert(
                id.0,
                Asked {
                    player: None,
                    op: "write".into(),
                    at_us: started,
                },
            );
        }
        let now = now_us(room);
        self.report.dt_us.push(dt.as_micros() as u64);
        self.report.tick_us.push(now.saturating_sub(started));
        if now.saturating_sub(self.last_report_us) >= 1_000_000 {
            self.last_report_us = now;
            let report = std::mem::take(&mut self.report);
            room.broadcast_json(&json!({ "report": report }));
        }
    }
}

export_game!(Keeper);
