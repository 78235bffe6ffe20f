//! Locks that outlive a panic: a thread that panicked while holding a lock poisons it,
//! and the state behind it is still the last consistent one we wrote (every critical
//! section here is a few plain assignments), so every lock in the host is taken through
//! [`Recover`] instead of unwrapping or repeating the recovery inline.

use std::sync::{LockResult, PoisonError};

/// `m.lock().recover()`, `l.read().recover()`, `l.write().recover()`: the guard, even
/// if another thread panicked while holding the lock.
pub trait Recover<G> {
    fn recover(self) -> G;
}

impl<G> Recover<G> for LockResult<G> {
    fn recover(self) -> G {
        self.unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::Recover;
    use std::sync::{Arc, Mutex};

    #[test]
    fn a_poisoned_lock_still_gives_its_value() {
        let m = Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            panic!("poison it");
        })
        .join();
        assert!(m.is_poisoned());
        *m.lock().recover() += 1;
        assert_eq!(*m.lock().recover(), 2);
    }
}
