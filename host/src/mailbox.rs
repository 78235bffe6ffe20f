//! A many-producer, single-consumer queue: a player's room events (`PlayerSink`) and a
//! session's control messages.
//!
//! The session loop waits on several sources at once and polls each of them on every
//! wake-up (20-40 times a second per player under a 20 Hz game), most of which are not
//! about a given source. For an empty tokio `mpsc` channel that poll walks the
//! channel's block list twice around registering the waker (about 5% of the server's
//! CPU in the arena benchmark), and re-registering an `AtomicWaker` each time (two
//! compare-and-swaps on a line the sender's thread writes) was later the largest
//! user-space item of the profile (3.6%). Here the waker is kept under the queue's
//! lock, and an `armed` flag says it is still there: an empty poll whose waker is
//! still armed is three loads and writes nothing shared. A poll that must register
//! takes the lock once; a non-empty one takes everything queued (up to a limit) under
//! one lock.

use crate::lock::Recover;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// Why a value was not queued; the value comes back.
#[derive(Debug, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The queue holds `capacity` values already.
    Full(T),
    /// The receiver is gone.
    Closed(T),
}

struct Queue<T> {
    values: VecDeque<T>,
    /// The receiver's waker, while `armed`.
    waker: Option<Waker>,
}

struct Shared<T> {
    queue: Mutex<Queue<T>>,
    /// The queue's length, readable without the lock.
    len: AtomicUsize,
    /// A waker is registered and no send has taken it yet (changed under the lock).
    armed: AtomicBool,
    capacity: usize,
    senders: AtomicUsize,
    receiver_gone: AtomicBool,
}

/// The sending side; cheap to clone.
pub struct Sender<T>(Arc<Shared<T>>);

/// The receiving side.
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
    /// A clone of the waker registered last (compared without touching `shared`).
    registered: Option<Waker>,
}

/// A queue that holds at most `capacity` values (at least one).
pub fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue {
            values: VecDeque::new(),
            waker: None,
        }),
        len: AtomicUsize::new(0),
        armed: AtomicBool::new(false),
        capacity: capacity.max(1),
        senders: AtomicUsize::new(1),
        receiver_gone: AtomicBool::new(false),
    });
    (
        Sender(shared.clone()),
        Receiver {
            shared,
            registered: None,
        },
    )
}

impl<T> Shared<T> {
    /// The registered waker, disarmed; call with the lock held, wake after releasing it.
    fn disarm(&self, queue: &mut Queue<T>) -> Option<Waker> {
        if self.armed.load(Ordering::Relaxed) {
            self.armed.store(false, Ordering::Release);
            queue.waker.take()
        } else {
            None
        }
    }
}

impl<T> Sender<T> {
    /// Queues `value` unless the queue is full or the receiver is gone; never waits.
    pub fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        if self.0.receiver_gone.load(Ordering::Acquire) {
            return Err(TrySendError::Closed(value));
        }
        let waker = {
            let mut queue = self.0.queue.lock().recover();
            if queue.values.len() >= self.0.capacity {
                return Err(TrySendError::Full(value));
            }
            queue.values.push_back(value);
            self.0.len.store(queue.values.len(), Ordering::Release);
            self.0.disarm(&mut queue)
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.0.senders.fetch_add(1, Ordering::Relaxed);
        Sender(self.0.clone())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if self.0.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The last sender: a waiting receiver learns that nothing more will come.
            let waker = self.0.disarm(&mut self.0.queue.lock().recover());
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}

impl<T> Receiver<T> {
    /// Moves up to `limit` queued values into `out`; 0 if none were queued.
    fn take(&self, out: &mut Vec<T>, limit: usize) -> usize {
        if limit == 0 || self.shared.len.load(Ordering::Acquire) == 0 {
            return 0;
        }
        let mut queue = self.shared.queue.lock().recover();
        let n = queue.values.len().min(limit);
        out.extend(queue.values.drain(..n));
        self.shared.len.store(queue.values.len(), Ordering::Release);
        n
    }

    /// Nothing could be taken: true if the task behind `cx` will be woken by the next
    /// send (its waker is still armed, or was armed now); false if a value arrived in
    /// the meantime (take it).
    fn wait_with(&mut self, cx: &Context<'_>) -> bool {
        if self.shared.armed.load(Ordering::Acquire)
            && self
                .registered
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
        {
            // Armed before the empty look, or armed by this task's last poll: a send
            // since then takes (and wakes) this very waker.
            return true;
        }
        let mut queue = self.shared.queue.lock().recover();
        if !queue.values.is_empty() {
            return false;
        }
        let waker = cx.waker().clone();
        queue.waker = Some(waker.clone());
        self.shared.armed.store(true, Ordering::Release);
        self.registered = Some(waker);
        true
    }

    /// Ready with the number of values moved into `out` (up to `limit`, at least one),
    /// or with 0 once every sender is gone and the queue is empty.
    pub fn poll_recv_many(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Vec<T>,
        limit: usize,
    ) -> Poll<usize> {
        loop {
            let n = self.take(out, limit);
            if n > 0 {
                return Poll::Ready(n);
            }
            if self.wait_with(cx) {
                break;
            }
        }
        if self.shared.senders.load(Ordering::Acquire) == 0 {
            // Every sender is gone: what they queued before going is still handed out.
            return Poll::Ready(self.take(out, limit));
        }
        Poll::Pending
    }

    /// Waits for values and moves up to `limit` of them into `out`; 0 when every
    /// sender is gone (cancel-safe: nothing is taken unless it returns).
    pub async fn recv_many(&mut self, out: &mut Vec<T>, limit: usize) -> usize {
        poll_fn(|cx| self.poll_recv_many(cx, out, limit)).await
    }

    fn take_one(&self) -> Option<T> {
        if self.shared.len.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut queue = self.shared.queue.lock().recover();
        let value = queue.values.pop_front();
        self.shared.len.store(queue.values.len(), Ordering::Release);
        value
    }

    /// The next queued value, without waiting.
    pub fn try_recv(&mut self) -> Option<T> {
        self.take_one()
    }

    /// Ready with the next value, or with `None` once every sender is gone.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        loop {
            if let Some(value) = self.take_one() {
                return Poll::Ready(Some(value));
            }
            if self.wait_with(cx) {
                break;
            }
        }
        if self.shared.senders.load(Ordering::Acquire) == 0 {
            return Poll::Ready(self.take_one());
        }
        Poll::Pending
    }

    /// The next value, or `None` once every sender is gone (cancel-safe).
    pub async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.shared.receiver_gone.store(true, Ordering::Release);
        // Values still queued are dropped now, not when the last sender goes.
        let mut queue = self.shared.queue.lock().recover();
        queue.values.clear();
        queue.waker = None;
    }
}

/// A receiver is a stream of its values (it ends once every sender is gone).
impl<T> futures_util::Stream for Receiver<T> {
    type Item = T;

    fn poll_next(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.get_mut().poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn values_arrive_in_order_up_to_capacity() {
        let (tx, mut rx) = channel(3);
        for i in 0..3 {
            assert_eq!(tx.try_send(i), Ok(()));
        }
        assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
        let mut out = Vec::new();
        assert_eq!(rx.recv_many(&mut out, 2).await, 2);
        assert_eq!(rx.recv_many(&mut out, 10).await, 1);
        assert_eq!(out, vec![0, 1, 2]);
        assert_eq!(tx.try_send(4), Ok(()));
        assert_eq!(rx.recv().await, Some(4));
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_by_another_thread() {
        let (tx, mut rx) = channel(8);
        let waiting = tokio::spawn(async move { rx.recv().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        std::thread::spawn(move || tx.try_send(7)).join().ok();
        let got = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        assert!(matches!(got, Ok(Ok(Some(7)))), "{got:?}");
    }

    #[tokio::test]
    async fn a_receiver_that_waits_again_without_a_send_is_still_woken() {
        // The second wait skips registering (the waker is still armed); the send must
        // still reach it, and a send after a wake-up must reach the next wait.
        let (tx, mut rx) = channel(8);
        let waiting = tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..3 {
                let first = tokio::time::timeout(Duration::from_millis(30), rx.recv()).await;
                assert!(first.is_err(), "nothing was sent yet");
                got.push(rx.recv().await);
            }
            got
        });
        for value in 1..=3 {
            tokio::time::sleep(Duration::from_millis(80)).await;
            let tx = tx.clone();
            std::thread::spawn(move || tx.try_send(value)).join().ok();
        }
        let got = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        assert!(
            matches!(&got, Ok(Ok(v)) if v == &[Some(1), Some(2), Some(3)]),
            "{got:?}"
        );
    }

    #[tokio::test]
    async fn ends_when_senders_go_and_refuses_when_receiver_goes() {
        let (tx, mut rx) = channel::<u8>(8);
        let tx2 = tx.clone();
        tx.try_send(1).ok();
        drop(tx);
        drop(tx2);
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.recv().await, None);

        let (tx, rx) = channel::<u8>(8);
        drop(rx);
        assert_eq!(tx.try_send(1), Err(TrySendError::Closed(1)));
    }
}
