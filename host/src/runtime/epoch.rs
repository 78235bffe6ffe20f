//! The epoch ticker: one thread that advances the engine's epoch every millisecond, so
//! a call's deadline (`Store::set_epoch_deadline`) is counted in milliseconds. It holds
//! only a weak handle and ends when the engine is dropped.

use std::time::Duration;
use wasmtime::{Engine, EngineWeak};

/// One epoch is this long; call deadlines are whole epochs.
pub const EPOCH: Duration = Duration::from_millis(1);

pub fn start_ticker(engine: &Engine) {
    let weak: EngineWeak = engine.weak();
    std::thread::Builder::new()
        .name("ludus-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH);
            }
        })
        .expect("spawning the epoch thread at start-up");
}

/// Epochs for a deadline: at least one, rounded up.
pub fn epochs(deadline: Duration) -> u64 {
    deadline.as_micros().div_ceil(EPOCH.as_micros()).max(1) as u64
}
