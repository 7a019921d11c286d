//! The heap threads share when their own is gone or busy: a real lock,
//! with re-entry detected (as every lock of the allocator detects it).

use std::ptr::NonNull;

use crate::arena::Arena;
use crate::support::sync::{Mutex, const_fn_unless_loom};

use super::*;

/// A heap for threads that cannot use one of their own: whose heap is gone
/// (thread-local destructors that run after the heap's) or busy (an
/// allocation from inside a slow path on the same thread, such as a
/// shrinker called by direct reclaim). A real lock: a thread that finds it
/// held waits, since contention is not out-of-memory. It is never held
/// across anything that allocates or reclaims (a new slab's block is taken
/// with the lock released), so no thread can re-enter it; an attempt is a
/// bug and fatal, never a deadlock (`sync::Mutex`).
pub(crate) struct SharedHeap<'a> {
    pub(super) heap: Mutex<Option<ThreadHeap<'a>>>,
}

// SAFETY: the heap is only used under the mutex; a heap's slabs may be used
// from any one thread at a time.
unsafe impl Sync for SharedHeap<'_> {}

/// The shared heap, locked.
pub(crate) struct SharedGuard<'s, 'a> {
    pub(super) heap: crate::support::sync::MutexGuard<'s, Option<ThreadHeap<'a>>>,
}

impl<'a> SharedHeap<'a> {
    const_fn_unless_loom! {
        pub(crate) fn new() -> Self {
            Self { heap: Mutex::new(None) }
        }
    }

    /// Locks it.
    #[track_caller]
    pub(crate) fn lock(&self) -> SharedGuard<'_, 'a> {
        SharedGuard { heap: self.heap.lock() }
    }

    /// An object of `class`; `None` only when
    /// `arena` is out of memory.
    pub(crate) fn alloc(&self, arena: &'a Arena, slabs: &'a Slabs, class: SizeClass) -> Option<NonNull<u8>> {
        {
            let mut shared = self.lock();
            let heap = shared.heap(arena, slabs);
            if let Some(object) =
                heap.alloc_cached(class).or_else(|| heap.alloc_from_ring(class)).or_else(|| heap.alloc_adopted(class))
            {
                return Some(object);
            }
        }
        // A new slab, its block taken without the lock (this may reclaim).
        let block = slab_block(arena, class)?;
        Some(self.lock().heap(arena, slabs).install(class, block))
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
