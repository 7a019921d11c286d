//! The "this thread is reclaiming" mark, the kernel's `PF_MEMALLOC`: while
//! a shrinker runs, its own allocations ignore the watermarks and never
//! enter reclaim again (no recursion into a shrinker on one thread).

use crate::support::sync::thread_local_cell;

thread_local_cell!(IN_RECLAIM);

/// The "this thread is reclaiming" mark (`PF_MEMALLOC`).
pub(crate) struct InReclaim;

impl InReclaim {
    /// Marks the thread until the guard drops (nests).
    pub(crate) fn enter() -> InReclaimGuard {
        let _ = IN_RECLAIM.try_with(|depth| depth.set(depth.get() + 1));
        InReclaimGuard
    }

    /// Whether this thread is inside reclaim (a shrinker is running on it).
    pub(crate) fn active() -> bool {
        IN_RECLAIM.try_with(|depth| depth.get() > 0).unwrap_or(false)
    }
}

pub(crate) struct InReclaimGuard;

impl Drop for InReclaimGuard {
    fn drop(&mut self) {
        let _ = IN_RECLAIM.try_with(|depth| depth.set(depth.get() - 1));
    }
}
