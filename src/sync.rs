//! The concurrency facade.
//!
//! Every atomic, lock, thread-local and thread the allocator's shared
//! protocols use comes from here, so that `--cfg loom` swaps in loom's
//! model-checked versions without touching the code that uses them
//! (the pattern of sharded-slab's and tokio's `loom` modules).
//!
//! The lock API is parking_lot-shaped (`lock()` returns the guard); under loom
//! it is a thin wrapper over `loom::sync::Mutex`.

#[cfg(not(loom))]
mod imp {
    pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

    pub(crate) use parking_lot::{Mutex, MutexGuard};
}

#[cfg(loom)]
mod imp {
    pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

    /// A parking_lot-shaped mutex over loom's.
    #[derive(Debug)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(loom::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            // A panic while holding a zone lock is already a bug; loom reports it.
            self.0.lock().unwrap()
        }
    }
}

pub(crate) use imp::*;
