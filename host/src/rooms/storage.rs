//! A room's storage requests (`ludus:game/storage`), carried out off the room's thread.
//!
//! A room queues what its game asks for; right after each tick the worker hands the
//! queue to [`RoomStorage::submit`], which runs it on the async runtime: the object
//! writes of the batch in one transaction (each with its own answer), then the rest in
//! the order asked. The answers come back to the room's worker as one command and reach
//! the game at once (or before its next tick, if it holds its messages until the tick).
//! A room never waits for the database.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::task::TaskTracker;

use super::inbox::Inbox;
use super::worker::Command;
use crate::runtime::StorageRequest;
use crate::runtime::wit_storage as wit;
use crate::storage::{
    Caller, Condition, Leaderboard, Object, Operator, Order, ReadPerm, Record, Storage,
    StorageError, WriteObject, WritePerm,
};

/// Requests one room may have queued or in flight; past it a request is answered at
/// once with `unavailable`.
pub const MAX_REQUESTS_IN_FLIGHT: usize = 1024;

/// One request as the room hands it over: its id, what it asks, and the display name of
/// the player a score is submitted for (when a member).
pub(super) type Queued = (u64, StorageRequest, Option<String>);

/// The node's storage as rooms reach it: a handle of the async runtime to run requests
/// on, and a tracker to wait for those still running at shutdown.
#[derive(Clone)]
pub struct RoomStorage {
    storage: Storage,
    runtime: tokio::runtime::Handle,
    tracker: TaskTracker,
}

impl RoomStorage {
    /// Rooms' requests run on the current tokio runtime.
    pub fn new(storage: Storage) -> Self {
        RoomStorage {
            storage,
            runtime: tokio::runtime::Handle::current(),
            tracker: TaskTracker::new(),
        }
    }

    /// Runs a room's batch; its answers go to the room's worker as one command.
    pub(super) fn submit(&self, room: u64, batch: Vec<Queued>, inbox: Arc<Inbox>) {
        let storage = self.storage.clone();
        self.tracker.spawn_on(
            async move {
                let started = std::time::Instant::now();
                let results = run(&storage, batch).await;
                metrics::histogram!(
                    "ludus_storage_operation_duration_seconds",
                    "operation" => "room_requests"
                )
                .record(started.elapsed().as_secs_f64());
                // A worker that has stopped has no room to answer.
                let _ = inbox.send(Command::StorageResults { room, results });
            },
            &self.runtime,
        );
    }

    /// Waits (up to `limit`) for every batch still running: writes a closing room
    /// queued are not cut off by the node's stop.
    pub async fn settle(&self, limit: Duration) {
        self.tracker.close();
        if tokio::time::timeout(limit, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "rooms' storage requests still running after {limit:?}; stopping without them"
            );
        }
    }
}

/// An answer for a request the host did not send to storage.
pub(super) fn refused(id: u64, why: &str) -> wit::StorageResult {
    wit::StorageResult {
        id,
        answer: Err(wit::StorageError::Unavailable(why.to_owned())),
    }
}

async fn run(storage: &Storage, batch: Vec<Queued>) -> Vec<wit::StorageResult> {
    let mut answers: HashMap<u64, Result<wit::StorageAnswer, wit::StorageError>> =
        HashMap::with_capacity(batch.len());
    let mut order = Vec::with_capacity(batch.len());
    let mut writes = Vec::new();
    let mut rest = Vec::new();
    for (id, request, name) in batch {
        order.push(id);
        match request {
            StorageRequest::Write(w) => match write_of(w) {
                Ok(w) => writes.push((id, w)),
                Err(e) => {
                    answers.insert(id, Err(e));
                }
            },
            other => rest.push((id, other, name)),
        }
    }
    if !writes.is_empty() {
        let (ids, writes): (Vec<u64>, Vec<WriteObject>) = writes.into_iter().unzip();
        match storage.write_objects(Caller::Game, writes).await {
            Ok(results) => {
                for (id, result) in ids.into_iter().zip(results) {
                    answers.insert(
                        id,
                        result
                            .map(|o| wit::StorageAnswer::Written(object(o)))
                            .map_err(error),
                    );
                }
            }
            Err(e) => {
                let e = error(e);
                for id in ids {
                    answers.insert(id, Err(e.clone()));
                }
            }
        }
    }
    for (id, request, name) in rest {
        answers.insert(id, one(storage, request, name).await);
    }
    order
        .into_iter()
        .filter_map(|id| {
            answers
                .remove(&id)
                .map(|answer| wit::StorageResult { id, answer })
        })
        .collect()
}

async fn one(
    storage: &Storage,
    request: StorageRequest,
    name: Option<String>,
) -> Result<wit::StorageAnswer, wit::StorageError> {
    use wit::StorageAnswer as A;
    Ok(match request {
        StorageRequest::Read(at) => A::Object(object(
            storage
                .read_object(Caller::Game, &at.collection, &at.key, at.owner)
                .await
                .map_err(error)?,
        )),
        StorageRequest::Write(w) => A::Written(object(
            storage
                .write_object(Caller::Game, write_of(w)?)
                .await
                .map_err(error)?,
        )),
        StorageRequest::Delete(at, condition) => {
            storage
                .delete_object(
                    Caller::Game,
                    &at.collection,
                    &at.key,
                    at.owner,
                    match condition_of(condition)? {
                        Condition::Any => None,
                        Condition::Version(v) => Some(v),
                        Condition::Absent => {
                            return Err(wit::StorageError::Invalid(
                                "a delete takes `any` or a version, not `absent`".into(),
                            ));
                        }
                    },
                )
                .await
                .map_err(error)?;
            A::Deleted
        }
        StorageRequest::List {
            collection,
            owner,
            limit,
            cursor,
        } => {
            let (objects, cursor) = storage
                .list_objects(
                    Caller::Game,
                    &collection,
                    owner,
                    limit as usize,
                    cursor.as_deref(),
                )
                .await
                .map_err(error)?;
            A::Objects(wit::ObjectPage {
                objects: objects.into_iter().map(object).collect(),
                cursor,
            })
        }
        StorageRequest::DefineLeaderboard(board) => {
            storage
                .define_leaderboard(&Leaderboard {
                    id: board.id,
                    order: match board.order {
                        wit::SortOrder::Descending => Order::Descending,
                        wit::SortOrder::Ascending => Order::Ascending,
                    },
                    operator: match board.operator {
                        wit::ScoreOperator::Best => Operator::Best,
                        wit::ScoreOperator::Set => Operator::Set,
                        wit::ScoreOperator::Increment => Operator::Increment,
                    },
                    reset_every: board.reset_every_seconds.map(Duration::from_secs),
                })
                .await
                .map_err(error)?;
            A::Defined
        }
        StorageRequest::SubmitScore {
            board,
            player,
            score,
            subscore,
            metadata,
        } => A::Scored(record(
            storage
                .submit_score(
                    &board,
                    player,
                    name.as_deref().unwrap_or(""),
                    score,
                    subscore,
                    metadata.as_deref(),
                )
                .await
                .map_err(error)?,
        )),
        StorageRequest::Top {
            board,
            limit,
            cursor,
        } => {
            let (scores, cursor) = storage
                .top(&board, limit as usize, cursor.as_deref())
                .await
                .map_err(error)?;
            A::Scores(wit::ScorePage {
                scores: scores.into_iter().map(record).collect(),
                cursor,
            })
        }
        StorageRequest::Around {
            board,
            player,
            limit,
        } => {
            let scores = storage
                .around(&board, player, limit as usize)
                .await
                .map_err(error)?;
            A::Scores(wit::ScorePage {
                scores: scores.into_iter().map(record).collect(),
                cursor: None,
            })
        }
    })
}

fn condition_of(c: wit::Condition) -> Result<Condition, wit::StorageError> {
    Ok(match c {
        wit::Condition::Any => Condition::Any,
        wit::Condition::Absent => Condition::Absent,
        wit::Condition::Version(v) => Condition::Version(i64::try_from(v).map_err(|_| {
            wit::StorageError::Invalid(format!("version {v} is past the largest there is"))
        })?),
    })
}

fn write_of(w: wit::ObjectWrite) -> Result<WriteObject, wit::StorageError> {
    Ok(WriteObject {
        collection: w.at.collection,
        key: w.at.key,
        owner: w.at.owner,
        value: w.value,
        condition: condition_of(w.condition)?,
        read: match w.read {
            wit::ReadAccess::None => ReadPerm::None,
            wit::ReadAccess::Owner => ReadPerm::Owner,
            wit::ReadAccess::Public => ReadPerm::Public,
        },
        write: match w.write {
            wit::WriteAccess::None => WritePerm::None,
            wit::WriteAccess::Owner => WritePerm::Owner,
        },
    })
}

fn object(o: Object) -> wit::Object {
    wit::Object {
        at: wit::ObjectKey {
            collection: o.collection,
            key: o.key,
            owner: o.owner,
        },
        value: o.value.to_string(),
        version: o.version.max(0) as u64,
        read: match o.read {
            ReadPerm::None => wit::ReadAccess::None,
            ReadPerm::Owner => wit::ReadAccess::Owner,
            ReadPerm::Public => wit::ReadAccess::Public,
        },
        write: match o.write {
            WritePerm::None => wit::WriteAccess::None,
            WritePerm::Owner => wit::WriteAccess::Owner,
        },
        updated_ms: o.updated_ms.max(0) as u64,
    }
}

fn record(r: Record) -> wit::Score {
    wit::Score {
        rank: r.rank,
        player: r.owner,
        name: r.username,
        score: r.score,
        subscore: r.subscore,
        metadata: r.metadata.to_string(),
        submissions: r.submissions.max(0) as u64,
        updated_ms: r.updated_ms.max(0) as u64,
    }
}

fn error(e: StorageError) -> wit::StorageError {
    match e {
        StorageError::NotFound => wit::StorageError::NotFound,
        e @ StorageError::Conflict { .. } => wit::StorageError::Conflict(e.to_string()),
        StorageError::TooLarge { .. } => wit::StorageError::TooLarge,
        e @ (StorageError::Denied(_) | StorageError::Invalid(_)) => {
            wit::StorageError::Invalid(e.to_string())
        }
        StorageError::Unavailable(detail) => {
            // The database's own words go to the node's log, not into the game.
            let id = crate::csprng::hex::<6>();
            tracing::warn!(error_id = %id, "a room's storage request failed: {detail}");
            wit::StorageError::Unavailable(format!("storage is unavailable (error id {id})"))
        }
    }
}
