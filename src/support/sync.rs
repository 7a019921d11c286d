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

    pub(crate) use crate::support::barrier::{heavy as heavy_barrier, init as init_barriers, light as light_barrier};

    use std::sync::PoisonError;

    /// A mutex with parking_lot's API (`lock()` returns the guard) over
    /// std's, which on Linux is a bare futex word: it never allocates,
    /// which the global allocator needs (parking_lot's slow path creates
    /// per-thread data and grows a hash table with the allocator that may be
    /// waiting for this very lock). Poisoning is ignored: a panic while one
    /// of these is held aborts the process first.
    ///
    /// **Failing without hanging.** A panic inside the allocator with a lock
    /// held would otherwise hang the process: formatting the panic message
    /// allocates, and the allocation waits for the lock its own thread
    /// holds. So the lock records its holder (`pthread_self`, cleared before
    /// the release), and two things abort with one line instead, written
    /// without allocating ([`fatal`](crate::support::report::fatal)): a thread that
    /// finds the lock held *by itself* (re-entered: waiting would be a
    /// self-deadlock), and a guard dropped by a panic that began while it
    /// was held (unwinding out of the allocator leaves its structures half
    /// changed). A panic that began before the lock was taken (a program's
    /// own, whose unwinding frees memory) is no business of the lock's.
    #[derive(Debug, Default)]
    pub(crate) struct Mutex<T> {
        lock: std::sync::Mutex<T>,
        /// The holder's `pthread_self`, 0 when free (set after acquiring,
        /// cleared before releasing: only the holder writes its own).
        owner: AtomicUsize,
    }

    /// The guard of a [`Mutex`].
    pub(crate) struct MutexGuard<'a, T> {
        guard: std::sync::MutexGuard<'a, T>,
        owner: &'a AtomicUsize,
        /// Whether the thread was already panicking when it took the lock.
        panicking: bool,
    }

    /// A panic that began while a lock was held is unwinding out of its
    /// section: the structures it guards are half changed. (The panic's
    /// own message, printed before the unwinding, says where.)
    #[cold]
    #[inline(never)]
    fn panic_in_locked_section() -> ! {
        crate::support::report::fatal(format_args!("a panic inside the allocator, in a section that holds a lock"))
    }

    /// This thread's identity for [`Mutex`]'s holder: never 0. On x86-64
    /// Linux the thread pointer, the first word of the thread's control
    /// block (`%fs:0`, what `pthread_self` returns, without the call);
    /// elsewhere `pthread_self`.
    #[inline(always)]
    fn thread_id() -> usize {
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        {
            let id: usize;
            // SAFETY: on x86-64 Linux (glibc and musl alike) `%fs` points
            // at the thread's control block, whose first word points at
            // itself; a load, no side effect.
            unsafe {
                std::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) id, options(nostack, readonly, preserves_flags, pure));
            }
            id
        }
        #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
        // SAFETY: pthread_self has no preconditions.
        unsafe {
            libc::pthread_self() as usize
        }
    }

    impl<T> Mutex<T> {
        pub(crate) const fn new(value: T) -> Self {
            Self { lock: std::sync::Mutex::new(value), owner: AtomicUsize::new(0) }
        }

        #[inline]
        #[track_caller]
        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            let guard = match self.lock.try_lock() {
                Ok(guard) => guard,
                Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => self.lock_contended(),
            };
            self.guard(guard)
        }

        #[cold]
        #[track_caller]
        fn lock_contended(&self) -> std::sync::MutexGuard<'_, T> {
            if self.owner.load(Ordering::Relaxed) == thread_id() {
                crate::support::report::fatal(format_args!(
                    "the allocator was re-entered on a thread that holds one of its locks (a panic inside it?)"
                ));
            }
            self.lock.lock().unwrap_or_else(PoisonError::into_inner)
        }

        #[inline(always)]
        fn guard<'a>(&'a self, guard: std::sync::MutexGuard<'a, T>) -> MutexGuard<'a, T> {
            self.owner.store(thread_id(), Ordering::Relaxed);
            MutexGuard { guard, owner: &self.owner, panicking: std::thread::panicking() }
        }

        /// The guard if the lock is free now.
        #[allow(dead_code)]
        pub(crate) fn try_lock(&self) -> Result<MutexGuard<'_, T>, ()> {
            match self.lock.try_lock() {
                Ok(guard) => Ok(self.guard(guard)),
                Err(std::sync::TryLockError::Poisoned(e)) => Ok(self.guard(e.into_inner())),
                Err(std::sync::TryLockError::WouldBlock) => Err(()),
            }
        }
    }

    impl<T> std::ops::Deref for MutexGuard<'_, T> {
        type Target = T;

        #[inline(always)]
        fn deref(&self) -> &T {
            &self.guard
        }
    }

    impl<T> std::ops::DerefMut for MutexGuard<'_, T> {
        #[inline(always)]
        fn deref_mut(&mut self) -> &mut T {
            &mut self.guard
        }
    }

    impl<T> Drop for MutexGuard<'_, T> {
        #[inline]
        fn drop(&mut self) {
            if !self.panicking && std::thread::panicking() {
                panic_in_locked_section();
            }
            self.owner.store(0, Ordering::Relaxed);
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
            self.wait_timeout_inner(guard, None).0
        }

        /// Waits at most `timeout`; also returns whether it timed out.
        pub(crate) fn wait_timeout<'a, T>(
            &self,
            guard: MutexGuard<'a, T>,
            timeout: std::time::Duration,
        ) -> (MutexGuard<'a, T>, bool) {
            self.wait_timeout_inner(guard, Some(timeout))
        }

        /// The holder is cleared while the lock is given up for the wait.
        fn wait_timeout_inner<'a, T>(
            &self,
            guard: MutexGuard<'a, T>,
            timeout: Option<std::time::Duration>,
        ) -> (MutexGuard<'a, T>, bool) {
            let guard = std::mem::ManuallyDrop::new(guard);
            // SAFETY: `guard` is never used or dropped again; its parts are
            // moved out once.
            let (inner, owner, panicking) = unsafe { (std::ptr::read(&guard.guard), guard.owner, guard.panicking) };
            owner.store(0, Ordering::Relaxed);
            let (inner, timed_out) = match timeout {
                None => (self.0.wait(inner).unwrap_or_else(PoisonError::into_inner), false),
                Some(timeout) => {
                    let (inner, result) = self.0.wait_timeout(inner, timeout).unwrap_or_else(PoisonError::into_inner);
                    (inner, result.timed_out())
                }
            };
            owner.store(thread_id(), Ordering::Relaxed);
            (MutexGuard { guard: inner, owner, panicking }, timed_out)
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

    #[cfg(test)]
    mod tests {
        /// The holder id the locks record is `pthread_self`, on every
        /// thread, and differs between threads.
        #[test]
        fn thread_id_is_pthread_self() {
            let ids: Vec<usize> = (0..4)
                .map(|_| {
                    std::thread::spawn(|| {
                        // SAFETY: no preconditions.
                        assert_eq!(super::thread_id(), unsafe { libc::pthread_self() } as usize);
                        super::thread_id()
                    })
                })
                .map(|t| t.join().unwrap())
                .chain([super::thread_id()])
                .collect();
            assert!(ids.iter().all(|&id| id != 0));
            // Threads that have exited may share an id with later ones; the
            // main thread's is never another live thread's.
            assert!(ids[..4].iter().all(|&id| id != ids[4]));
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
