//! The concurrency facade.
//!
//! Every atomic, lock, cell, thread-local and barrier the allocator's shared
//! protocols use comes from here, so that `--cfg loom` swaps in loom's
//! model-checked versions without touching the code that uses them
//! (the pattern of sharded-slab's and tokio's `loom` modules).
//!
//! The lock API is parking_lot-shaped (`lock()` returns the guard) over
//! std's futex locks, which never allocate (the arena may be the global
//! allocator); under loom it is a thin wrapper over `loom::sync::Mutex`. [`UnsafeCell`] has loom's
//! `with`/`with_mut` API so loom can see every access to data a protocol
//! hands between threads.

/// A constructor that is `const` except under loom, whose atomics and
/// locks have no `const fn new`: one body instead of a `cfg` twin.
macro_rules! const_fn_unless_loom {
    ($(#[$attr:meta])* $vis:vis fn $name:ident() -> $ret:ty $body:block) => {
        $(#[$attr])*
        #[cfg(not(loom))]
        $vis const fn $name() -> $ret $body

        $(#[$attr])*
        #[cfg(loom)]
        $vis fn $name() -> $ret $body
    };
}
pub(crate) use const_fn_unless_loom;

#[cfg(not(loom))]
mod imp {
    pub(crate) use std::sync::atomic::{
        AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
    };

    pub(crate) use crate::barrier::{heavy as heavy_barrier, init as init_barriers, light as light_barrier};

    use std::sync::PoisonError;

    /// A mutex with parking_lot's API (`lock()` returns the guard) over
    /// std's, which on Linux is a bare futex word: it never allocates,
    /// which the global allocator needs (parking_lot's slow path creates
    /// per-thread data and grows a hash table with the allocator that may be
    /// waiting for this very lock). A panic while a lock is held is already
    /// a bug; poisoning is ignored.
    #[derive(Debug, Default)]
    pub(crate) struct Mutex<T>(std::sync::Mutex<T>);

    pub(crate) type MutexGuard<'a, T> = std::sync::MutexGuard<'a, T>;

    impl<T> Mutex<T> {
        pub(crate) const fn new(value: T) -> Self {
            Self(std::sync::Mutex::new(value))
        }

        #[inline]
        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock().unwrap_or_else(PoisonError::into_inner)
        }

        /// The guard if the lock is free now.
        #[allow(dead_code)]
        pub(crate) fn try_lock(&self) -> Result<MutexGuard<'_, T>, ()> {
            match self.0.try_lock() {
                Ok(guard) => Ok(guard),
                Err(std::sync::TryLockError::Poisoned(e)) => Ok(e.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => Err(()),
            }
        }
    }

    /// A reader-writer lock with parking_lot's API over std's (futex based,
    /// never allocates), which a forked child can reset.
    #[derive(Debug, Default)]
    pub(crate) struct RwLock<T>(core::cell::UnsafeCell<std::sync::RwLock<T>>);

    // SAFETY: as std's RwLock; the cell is only written by `reset_in_child`,
    // whose contract excludes every other access.
    unsafe impl<T: Send + Sync> Sync for RwLock<T> {}

    impl<T> RwLock<T> {
        pub(crate) const fn new(value: T) -> Self {
            Self(core::cell::UnsafeCell::new(std::sync::RwLock::new(value)))
        }

        fn inner(&self) -> &std::sync::RwLock<T> {
            // SAFETY: only `reset_in_child` writes the cell, when no
            // reference to the inner lock can be used again.
            unsafe { &*self.0.get() }
        }

        pub(crate) fn read(&self) -> std::sync::RwLockReadGuard<'_, T> {
            self.inner().read().unwrap_or_else(PoisonError::into_inner)
        }

        pub(crate) fn write(&self) -> std::sync::RwLockWriteGuard<'_, T> {
            self.inner().write().unwrap_or_else(PoisonError::into_inner)
        }

        /// Replaces the lock with a fresh, unlocked one holding `value`
        /// (the old one is forgotten, not dropped): for a lock that may be
        /// held across user code, so `fork(2)` cannot wait for it, and that
        /// a forked child may find held by a thread it does not have.
        ///
        /// # Safety
        /// Only in a forked child, before it starts threads, with no guard
        /// of this lock alive on the calling thread.
        #[allow(dead_code)]
        pub(crate) unsafe fn reset_in_child(&self, value: T) {
            // SAFETY: per the contract, the guards that refer to the old
            // lock belong to threads that do not exist in this process.
            unsafe { self.0.get().write(std::sync::RwLock::new(value)) };
        }
    }

    /// std's condition variable (futex based) with the poison-free API.
    #[derive(Debug, Default)]
    pub(crate) struct Condvar(std::sync::Condvar);

    impl Condvar {
        pub(crate) const fn new() -> Self {
            Self(std::sync::Condvar::new())
        }

        pub(crate) fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
            self.0.wait(guard).unwrap_or_else(PoisonError::into_inner)
        }

        /// Waits at most `timeout`; also returns whether it timed out.
        pub(crate) fn wait_timeout<'a, T>(
            &self,
            guard: MutexGuard<'a, T>,
            timeout: std::time::Duration,
        ) -> (MutexGuard<'a, T>, bool) {
            let (guard, result) = self.0.wait_timeout(guard, timeout).unwrap_or_else(PoisonError::into_inner);
            (guard, result.timed_out())
        }

        pub(crate) fn notify_one(&self) {
            self.0.notify_one();
        }

        pub(crate) fn notify_all(&self) {
            self.0.notify_all();
        }
    }

    pub(crate) type JoinHandle = std::thread::JoinHandle<()>;

    /// Starts a named thread.
    pub(crate) fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> std::io::Result<JoinHandle> {
        std::thread::Builder::new().name(name.into()).spawn(f)
    }

    /// A thread-local `Cell<u32>` (see `memalloc::InReclaim`).
    macro_rules! thread_local_cell {
        ($name:ident) => {
            std::thread_local! {
                static $name: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
            }
        };
    }
    pub(crate) use thread_local_cell;

    pub(crate) use std::time::Instant;

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
    pub(crate) use loom::sync::atomic::{
        AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
    };

    /// A parking_lot-shaped mutex over loom's.
    #[derive(Debug)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

    /// A parking_lot-shaped reader-writer lock over loom's.
    #[derive(Debug)]
    pub(crate) struct RwLock<T>(loom::sync::RwLock<T>);

    impl<T> RwLock<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(loom::sync::RwLock::new(value))
        }

        pub(crate) fn read(&self) -> loom::sync::RwLockReadGuard<'_, T> {
            self.0.read().unwrap()
        }

        pub(crate) fn write(&self) -> loom::sync::RwLockWriteGuard<'_, T> {
            self.0.write().unwrap()
        }

        /// Loom models do not fork.
        #[allow(dead_code)]
        pub(crate) unsafe fn reset_in_child(&self, _value: T) {}
    }

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

    /// A std-shaped condition variable over loom's. Timed waits never time
    /// out under loom.
    #[derive(Debug)]
    pub(crate) struct Condvar(loom::sync::Condvar);

    impl Condvar {
        pub(crate) fn new() -> Self {
            Self(loom::sync::Condvar::new())
        }

        pub(crate) fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
            self.0.wait(guard).unwrap()
        }

        pub(crate) fn wait_timeout<'a, T>(
            &self,
            guard: MutexGuard<'a, T>,
            _timeout: std::time::Duration,
        ) -> (MutexGuard<'a, T>, bool) {
            (self.0.wait(guard).unwrap(), false)
        }

        pub(crate) fn notify_one(&self) {
            self.0.notify_one();
        }

        pub(crate) fn notify_all(&self) {
            self.0.notify_all();
        }
    }

    pub(crate) type JoinHandle = loom::thread::JoinHandle<()>;

    pub(crate) fn spawn(_name: &str, f: impl FnOnce() + Send + 'static) -> std::io::Result<JoinHandle> {
        Ok(loom::thread::spawn(f))
    }

    macro_rules! thread_local_cell {
        ($name:ident) => {
            loom::thread_local! {
                static $name: std::cell::Cell<u32> = std::cell::Cell::new(0);
            }
        };
    }
    pub(crate) use thread_local_cell;

    /// Loom models do not measure time.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Instant;

    impl Instant {
        pub(crate) fn now() -> Self {
            Self
        }

        pub(crate) fn elapsed(&self) -> std::time::Duration {
            std::time::Duration::ZERO
        }
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
