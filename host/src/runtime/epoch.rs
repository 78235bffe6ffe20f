//! The epoch ticker: one thread that advances the engine's epoch every millisecond while
//! guest code runs, so a call's deadline (`Store::set_epoch_deadline`) is counted in
//! milliseconds. It holds only a weak handle and ends when the engine is dropped.
//!
//! A node with no call running has nothing to interrupt: after `IDLE` without a call the
//! ticker sleeps instead of waking 1,000 times a second. Every call is made inside
//! [`Ticker::enter`], which counts it as running and wakes a sleeping ticker. The count
//! and the ticker's sleep are checked in one order (each side writes its own flag, then
//! reads the other's, all sequentially consistent), so a call never starts unseen: the
//! ticker either sees it before it sleeps or is woken by it. Under load calls come more
//! often than `IDLE` and the ticker never sleeps.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Duration;
use wasmtime::{Engine, EngineWeak};

/// One epoch is this long; call deadlines are whole epochs.
pub const EPOCH: Duration = Duration::from_millis(1);

/// How long without a call before the ticker sleeps.
const IDLE: Duration = Duration::from_millis(10);

/// How often a sleeping ticker looks whether its engine is gone.
const IDLE_WAKE: Duration = Duration::from_secs(5);

/// The ticker of one engine, shared by everything that calls into its instances.
#[derive(Default)]
pub struct Ticker {
    /// Calls begun and calls finished; running = entered - left.
    entered: AtomicU64,
    left: AtomicU64,
    asleep: AtomicBool,
    thread: OnceLock<Thread>,
    /// Epochs advanced so far.
    ticks: AtomicU64,
}

/// A call in progress (see [`Ticker::enter`]); the call ends when it is dropped.
pub struct Running<'a>(&'a Ticker);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.left.fetch_add(1, Ordering::SeqCst);
    }
}

impl Ticker {
    /// Counts a call that runs guest code until the guard is dropped, and wakes the
    /// ticker if it sleeps.
    pub fn enter(&self) -> Running<'_> {
        self.entered.fetch_add(1, Ordering::SeqCst);
        if self.asleep.load(Ordering::SeqCst)
            && self.asleep.swap(false, Ordering::SeqCst)
            && let Some(thread) = self.thread.get()
        {
            thread.unpark();
        }
        Running(self)
    }

    /// Epochs advanced since the ticker started.
    pub fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::SeqCst)
    }

    /// Whether the ticker sleeps (no call has run for `IDLE`).
    pub fn is_asleep(&self) -> bool {
        self.asleep.load(Ordering::SeqCst)
    }

    fn running(&self) -> bool {
        self.entered.load(Ordering::SeqCst) != self.left.load(Ordering::SeqCst)
    }

    /// Sleeps while no call runs (true), or returns at once if one started since
    /// `seen` calls were entered or is running (false).
    fn sleep_if_idle(&self, seen: u64) -> bool {
        self.asleep.store(true, Ordering::SeqCst);
        if self.running() || self.entered.load(Ordering::SeqCst) != seen {
            self.asleep.store(false, Ordering::SeqCst);
            return false;
        }
        // A call that starts now finds `asleep` set, clears it and unparks.
        std::thread::park_timeout(IDLE_WAKE);
        self.asleep.store(false, Ordering::SeqCst);
        true
    }
}

pub fn start_ticker(engine: &Engine) -> Arc<Ticker> {
    let ticker = Arc::new(Ticker::default());
    let weak: EngineWeak = engine.weak();
    let shared = ticker.clone();
    let handle = std::thread::Builder::new()
        .name("ludus-epoch".into())
        .spawn(move || {
            let idle_epochs = (IDLE.as_micros() / EPOCH.as_micros()) as u32;
            let mut quiet = 0u32;
            let mut seen = shared.entered.load(Ordering::SeqCst);
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                shared.ticks.fetch_add(1, Ordering::SeqCst);
                let entered = shared.entered.load(Ordering::SeqCst);
                if entered == seen && !shared.running() {
                    quiet += 1;
                } else {
                    quiet = 0;
                    seen = entered;
                }
                if quiet >= idle_epochs && shared.sleep_if_idle(seen) {
                    quiet = 0;
                    seen = shared.entered.load(Ordering::SeqCst);
                }
                std::thread::sleep(EPOCH);
            }
        })
        .expect("spawning the epoch thread at start-up");
    let _ = ticker.thread.set(handle.thread().clone());
    ticker
}

/// Epochs for a deadline: at least one, rounded up.
pub fn epochs(deadline: Duration) -> u64 {
    deadline.as_micros().div_ceil(EPOCH.as_micros()).max(1) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use wasmtime::{Config, Instance, Module, Store, Trap};

    /// `(module (func (export "spin") (loop (br 0))))`, encoded by hand.
    const SPIN: &[u8] = &[
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
        0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // types: () -> ()
        0x03, 0x02, 0x01, 0x00, // functions: one of type 0
        0x07, 0x08, 0x01, 0x04, b's', b'p', b'i', b'n', 0x00, 0x00, // export "spin"
        0x0a, 0x09, 0x01, 0x07, 0x00, 0x03, 0x40, 0x0c, 0x00, 0x0b, 0x0b, // loop br 0
    ];

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn an_idle_ticker_sleeps_and_a_call_that_starts_wakes_it_in_time_for_its_deadline() {
        let engine = Engine::new(Config::new().epoch_interruption(true)).unwrap();
        let ticker = start_ticker(&engine);
        wait_until("the idle ticker sleeps", || ticker.is_asleep());
        let ticks = ticker.ticks();
        std::thread::sleep(IDLE * 5);
        assert_eq!(
            ticker.ticks(),
            ticks,
            "a sleeping ticker advanced the epoch"
        );

        let module = Module::new(&engine, SPIN).unwrap();
        let mut store = Store::new(&engine, ());
        store.epoch_deadline_trap();
        let instance = Instance::new(&mut store, &module, &[]).unwrap();
        let spin = instance
            .get_typed_func::<(), ()>(&mut store, "spin")
            .unwrap();
        assert!(ticker.is_asleep());
        let started = Instant::now();
        let running = ticker.enter();
        assert!(!ticker.is_asleep(), "a call did not wake the ticker");
        store.set_epoch_deadline(epochs(Duration::from_millis(5)));
        let err = spin.call(&mut store, ()).unwrap_err();
        drop(running);
        assert_eq!(
            err.downcast_ref::<Trap>(),
            Some(&Trap::Interrupt),
            "{err:?}"
        );
        // Well before the sleeping ticker's own wake-up: the call woke it.
        let took = started.elapsed();
        assert!(took < IDLE_WAKE / 2, "the 5 ms deadline took {took:?}");

        // And it sleeps again once calls stop.
        wait_until("the ticker sleeps again", || ticker.is_asleep());
    }

    #[test]
    fn a_long_call_keeps_the_ticker_awake() {
        let engine = Engine::new(Config::new().epoch_interruption(true)).unwrap();
        let ticker = start_ticker(&engine);
        let running = ticker.enter();
        let ticks = ticker.ticks();
        std::thread::sleep(IDLE * 5);
        assert!(!ticker.is_asleep(), "the ticker slept during a call");
        assert!(
            ticker.ticks() > ticks + 5,
            "the epoch stopped during a call"
        );
        drop(running);
        wait_until("the ticker sleeps after the call", || ticker.is_asleep());
    }
}
