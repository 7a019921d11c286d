//! The heap threads share when their own is gone or busy: a real lock,
//! with re-entry detected.

use std::ptr::NonNull;

use crate::arena::Arena;
use crate::sync::{AtomicUsize, Mutex, Ordering, const_fn_unless_loom};

use super::*;

/// A heap for threads that cannot use one of their own: whose heap is gone
/// (thread-local destructors that run after the heap's) or busy (an
/// allocation from inside a slow path on the same thread, such as a
/// shrinker called by direct reclaim). A real lock: a thread that finds it
/// held waits, since contention is not out-of-memory. It is never held
/// across anything that allocates or reclaims (a new slab's block is taken
/// with the lock released), so no thread can re-enter it; an attempt is a
/// bug and fatal, never a deadlock.
pub(crate) struct SharedHeap<'a> {
    pub(super) heap: Mutex<Option<ThreadHeap<'a>>>,
    /// The holder's thread token, 0 when free.
    pub(super) owner: AtomicUsize,
}

// SAFETY: the heap is only used under the mutex; a heap's slabs may be used
// from any one thread at a time.
unsafe impl Sync for SharedHeap<'_> {}

/// The shared heap, locked.
pub(crate) struct SharedGuard<'s, 'a> {
    pub(super) shared: &'s SharedHeap<'a>,
    pub(super) heap: crate::sync::MutexGuard<'s, Option<ThreadHeap<'a>>>,
}

impl<'a> SharedHeap<'a> {
    const_fn_unless_loom! {
        pub(crate) fn new() -> Self {
            Self { heap: Mutex::new(None), owner: AtomicUsize::new(0) }
        }
    }

    /// Locks it for the thread named by `token` (non-zero, unique among
    /// live threads).
    pub(crate) fn lock(&self, token: usize) -> SharedGuard<'_, 'a> {
        // Only this thread ever stores its own token, and clears it before
        // unlocking: seeing it means this thread holds the lock.
        if self.owner.load(Ordering::Relaxed) == token {
            crate::report::fatal("the shared heap was re-entered on the thread that holds it");
        }
        let heap = self.heap.lock();
        self.owner.store(token, Ordering::Relaxed);
        SharedGuard { shared: self, heap }
    }

    /// An object of `class` for the thread `token`; `None` only when
    /// `arena` is out of memory.
    pub(crate) fn alloc(&self, arena: &'a Arena, slabs: &'a Slabs, class: usize, token: usize) -> Option<NonNull<u8>> {
        {
            let mut shared = self.lock(token);
            let heap = shared.heap(arena, slabs);
            if let Some(object) =
                heap.alloc_cached(class).or_else(|| heap.alloc_from_ring(class)).or_else(|| heap.alloc_adopted(class))
            {
                return Some(object);
            }
        }
        // A new slab, its block taken without the lock (this may reclaim).
        let block = slab_block(arena, class)?;
        Some(self.lock(token).heap(arena, slabs).install(class, block))
    }
}

impl<'a> SharedGuard<'_, 'a> {
    /// The heap, made on first use.
    pub(crate) fn heap(&mut self, arena: &'a Arena, slabs: &'a Slabs) -> &mut ThreadHeap<'a> {
        self.heap.get_or_insert_with(|| ThreadHeap::new(arena, slabs))
    }

    /// The heap if it was ever made.
    #[cfg_attr(loom, allow(dead_code))] // used by `global` only
    pub(crate) fn existing(&mut self) -> Option<&mut ThreadHeap<'a>> {
        self.heap.as_mut()
    }
}

impl Drop for SharedGuard<'_, '_> {
    fn drop(&mut self) {
        self.shared.owner.store(0, Ordering::Relaxed);
    }
}
