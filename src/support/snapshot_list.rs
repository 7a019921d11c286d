//! A list of snapshots behind a mutex (copy on write, not the mm sense of
//! it: no page is shared here): readers take a snapshot (an `Arc`
//! clone) and use it without the lock; a writer builds the next list
//! *outside* the lock and swaps it in only if no other writer got there
//! first. Building allocates, and the allocator may be the arena whose
//! registry this is: holding the lock across an allocation could deadlock
//! on its own slow path. Shared by the shrinker and movable-owner
//! registries.

use std::sync::Arc;

use crate::support::sync::Mutex;

/// The list; `None` until the first write.
pub(crate) struct SnapshotList<T> {
    list: Mutex<Option<Arc<[T]>>>,
}

impl<T> SnapshotList<T> {
    pub(crate) fn new() -> Self {
        Self { list: Mutex::new(None) }
    }

    /// The current list.
    pub(crate) fn snapshot(&self) -> Option<Arc<[T]>> {
        self.list.lock().clone()
    }

    /// Replaces the list with `edit(current)`; the old list is dropped
    /// outside the lock.
    pub(crate) fn update(&self, mut edit: impl FnMut(&[T]) -> Vec<T>) {
        loop {
            let current = self.snapshot();
            let next: Arc<[T]> = edit(current.as_deref().unwrap_or(&[])).into();
            let mut list = self.list.lock();
            let unchanged = match (&*list, &current) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            };
            if unchanged {
                let old = list.replace(next);
                drop(list);
                drop(old);
                return;
            }
        }
    }

    /// Locks the list for `fork(2)` (it is only ever held for a moment).
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn lock(&self) -> crate::support::sync::MutexGuard<'_, Option<Arc<[T]>>> {
        self.list.lock()
    }
}
