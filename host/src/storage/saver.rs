//! The writer of checkpoints and session records: callers hand it the latest word on a
//! room or a session and go on at once; a task writes what is pending in batches, one
//! transaction each. Only the latest word per room or session is kept while it waits, so
//! a slow database costs writes, never memory or the caller's time. A batch that fails
//! is kept (unless a newer word came meanwhile) and tried again a second later.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::checkpoints::Saved;
use super::{Storage, StorageError};
use crate::lock::Recover;

/// What a pending write is about: one room or one player's session.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum SaveKey {
    Room(Arc<str>),
    Session(u64),
}

/// Called once the write lands or fails (not when a newer word replaced it).
pub type Done = Box<dyn FnOnce(Result<(), StorageError>) + Send>;

/// Most bytes one batch writes (a checkpoint larger than this is written alone).
const BATCH_BYTES: usize = 4 << 20;
/// Most writes in one batch.
const BATCH_WRITES: usize = 256;
/// How long a failed batch waits before it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Cheap to clone; the writer task ends when the last clone is dropped.
#[derive(Clone)]
pub struct Saver {
    inner: Arc<Inner>,
}

struct Inner {
    storage: Storage,
    state: Mutex<State>,
    wake: tokio::sync::mpsc::UnboundedSender<()>,
    failures: AtomicU64,
    written: AtomicU64,
}

#[derive(Default)]
struct State {
    pending: HashMap<SaveKey, (Saved, Option<Done>)>,
    /// Writes taken by the task and not finished yet.
    writing: usize,
}

impl Saver {
    /// A saver writing to `storage` (starts its task: call within a Tokio runtime).
    pub fn new(storage: Storage) -> Saver {
        let (wake, rx) = tokio::sync::mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            storage,
            state: Mutex::new(State::default()),
            wake,
            failures: AtomicU64::new(0),
            written: AtomicU64::new(0),
        });
        tokio::spawn(write_loop(Arc::downgrade(&inner), rx));
        Saver { inner }
    }

    pub fn storage(&self) -> &Storage {
        &self.inner.storage
    }

    /// Queues `item` as the latest word on `key` (replacing one not written yet).
    pub fn put(&self, key: SaveKey, item: Saved, done: Option<Done>) {
        self.inner
            .state
            .lock()
            .recover()
            .pending
            .insert(key, (item, done));
        let _ = self.inner.wake.send(());
    }

    /// Batches that failed so far.
    pub fn failures(&self) -> u64 {
        self.inner.failures.load(Ordering::Relaxed)
    }

    /// Writes landed so far.
    pub fn written(&self) -> u64 {
        self.inner.written.load(Ordering::Relaxed)
    }

    /// Waits (up to `limit`) until everything queued so far is written; false if some
    /// was not (the database is down or slow).
    pub async fn flush(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            {
                let state = self.inner.state.lock().recover();
                if state.pending.is_empty() && state.writing == 0 {
                    return true;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

async fn write_loop(inner: Weak<Inner>, mut wake: tokio::sync::mpsc::UnboundedReceiver<()>) {
    while wake.recv().await.is_some() {
        while wake.try_recv().is_ok() {}
        loop {
            let Some(inner) = inner.upgrade() else {
                return;
            };
            let batch = take_batch(&inner);
            if batch.is_empty() {
                break;
            }
            let items: Vec<Saved> = batch.iter().map(|(_, (item, _))| item.clone()).collect();
            let started = std::time::Instant::now();
            let result = inner.storage.save_batch(&items).await;
            metrics::histogram!("ludus_storage_operation_duration_seconds", "operation" => "save_batch")
                .record(started.elapsed().as_secs_f64());
            let failed = result.is_err();
            {
                let mut state = inner.state.lock().recover();
                state.writing -= batch.len();
                for (key, (item, done)) in batch {
                    match &result {
                        Ok(()) => {
                            inner.written.fetch_add(1, Ordering::Relaxed);
                            if let Some(done) = done {
                                done(Ok(()));
                            }
                        }
                        Err(e) => {
                            if let Some(done) = done {
                                done(Err(e.clone()));
                            }
                            // Tried again later, unless a newer word came meanwhile.
                            state.pending.entry(key).or_insert((item, None));
                        }
                    }
                }
            }
            if let Err(e) = result {
                let n = inner.failures.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(
                    failures = n,
                    "writing checkpoints and sessions failed (tried again in {RETRY_AFTER:?}): {e}"
                );
            }
            drop(inner);
            if failed {
                tokio::time::sleep(RETRY_AFTER).await;
            }
        }
    }
}

/// Takes pending writes up to the batch limits (at least one).
fn take_batch(inner: &Inner) -> Vec<(SaveKey, (Saved, Option<Done>))> {
    let mut state = inner.state.lock().recover();
    let mut keys = Vec::new();
    let mut bytes = 0;
    for (key, (item, _)) in &state.pending {
        if !keys.is_empty() && (bytes + item.size() > BATCH_BYTES || keys.len() >= BATCH_WRITES) {
            break;
        }
        bytes += item.size();
        keys.push(key.clone());
    }
    let batch: Vec<_> = keys
        .into_iter()
        .filter_map(|k| state.pending.remove(&k).map(|v| (k, v)))
        .collect();
    state.writing += batch.len();
    batch
}
