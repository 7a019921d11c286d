//! The progress event NOFAIL callers wait on: reclaim made progress or
//! memory was freed. A waiter registers before its last attempt, so a free
//! between that attempt and its sleep is never missed (the Dekker handshake
//! of `kswapd.rs`, with `waiters` as the flag).

use std::time::Duration;

use crate::support::sync::{AtomicUsize, Condvar, Mutex, MutexGuard, Ordering, fence};

/// How a NOFAIL caller waits when it cannot tell whether progress will be
/// signalled (pages freed into another thread's cache are not): it retries
/// at least this often. A wait, not a spin.
const NOFAIL_RECHECK: Duration = Duration::from_millis(10);

/// The progress event.
pub(crate) struct Progress {
    generation: Mutex<u64>,
    cond: Condvar,
    waiters: AtomicUsize,
}

impl Progress {
    pub(crate) fn new() -> Self {
        Self { generation: Mutex::new(0), cond: Condvar::new(), waiters: AtomicUsize::new(0) }
    }

    /// Registers a waiter *before* its last attempt, and returns the
    /// generation that attempt saw. The increment and `barrier`, the
    /// waiting side's (`Node::waiter_barrier`: membarrier where freers
    /// issue only a compiler barrier), pair with the freer's barrier before
    /// [`signal_after_fence`](Self::signal_after_fence)
    /// (`Node::freer_barrier`, or the fence in [`signal`](Self::signal)):
    /// either the signaller sees the waiter, or the attempt sees the memory
    /// the signaller freed.
    pub(crate) fn prepare(&self, barrier: impl FnOnce()) -> u64 {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        // The attempt's reads of the free counts are Relaxed: without this
        // barrier they could be satisfied before the increment is visible,
        // and a free in between would be missed by both sides (loom found
        // it: tests/loom.rs, nofail_waiter_is_woken_by_progress).
        barrier();
        *self.generation.lock()
    }

    /// Waits until the generation moves past `seen` (or, as a backstop for
    /// memory freed into per-thread caches, `NOFAIL_RECHECK` passes).
    pub(crate) fn wait(&self, seen: u64) {
        let mut generation = self.generation.lock();
        while *generation == seen {
            let (guard, timed_out) = self.cond.wait_timeout(generation, NOFAIL_RECHECK);
            generation = guard;
            if timed_out {
                break;
            }
        }
        drop(generation);
        self.waiters.fetch_sub(1, Ordering::SeqCst);
    }

    /// Undoes `prepare` when the attempt succeeded.
    pub(crate) fn cancel(&self) {
        self.waiters.fetch_sub(1, Ordering::SeqCst);
    }

    /// Memory was freed or reclaimed: wake NOFAIL waiters, if any.
    pub(crate) fn signal(&self) {
        fence(Ordering::SeqCst);
        self.signal_after_fence();
    }

    /// [`signal`](Self::signal) for a caller that has just issued the
    /// `SeqCst` fence itself.
    pub(crate) fn signal_after_fence(&self) {
        if self.waiters.load(Ordering::SeqCst) > 0 {
            *self.generation.lock() += 1;
            self.cond.notify_all();
        }
    }

    /// Takes the event's lock across `fork(2)`.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn lock_for_fork(&self) -> MutexGuard<'_, u64> {
        self.generation.lock()
    }
}
