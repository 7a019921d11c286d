//! The concurrency facade.
//!
//! Every atomic, lock, cell, thread-local and barrier the allocator's shared
//! protocols use comes from here, so that `--cfg loom` swaps in loom's
//! model-checked versions without touching the code that uses them
//! (the pattern of sharded-slab's and tokio's `loom` modules).
//!
//! The lock API is parking_lot-shaped (`lock()` returns the guard); under loom
//! it is a thin wrapper over `loom::sync::Mutex`. [`UnsafeCell`] has loom's
//! `with`/`with_mut` API so loom can see every access to data a protocol
//! hands between threads.

#[cfg(not(loom))]
mod imp {
    pub(crate) use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};

    pub(crate) use parking_lot::{Mutex, MutexGuard};

    pub(crate) use crate::barrier::{heavy as heavy_barrier, init as init_barriers, light as light_barrier};

    /// Pause inside a spin or retry loop.
    #[inline]
    pub(crate) fn spin_loop() {
        std::hint::spin_loop();
    }

    /// `core::cell::UnsafeCell` with loom's closure-based API.
    #[derive(Debug, Default)]
    #[repr(transparent)]
    pub(crate) struct UnsafeCell<T>(core::cell::UnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        /// Caches come zeroed from `calloc`; only loom builds them with `new`.
        #[allow(dead_code)]
        pub(crate) const fn new(value: T) -> Self {
            Self(core::cell::UnsafeCell::new(value))
        }

        /// Runs `f` with a pointer for writing.
        #[inline(always)]
        pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }
}

#[cfg(loom)]
mod imp {
    pub(crate) use loom::cell::UnsafeCell;
    pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};

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

    /// Pause inside a spin or retry loop; loom must be told, or it reports
    /// "exceeded maximum number of branches".
    pub(crate) fn spin_loop() {
        loom::thread::yield_now();
    }

    /// The asymmetric pair is modelled as a `SeqCst` fence on each side,
    /// which is the guarantee membarrier gives.
    pub(crate) fn light_barrier() {
        loom::sync::atomic::fence(Ordering::SeqCst);
    }

    pub(crate) fn heavy_barrier() {
        loom::sync::atomic::fence(Ordering::SeqCst);
    }

    pub(crate) fn init_barriers() -> bool {
        true
    }
}

pub(crate) use imp::*;
