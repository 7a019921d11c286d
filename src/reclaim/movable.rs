//! Blocks with an owner that can move them: the [`Movable`] trait (the
//! kernel's `movable_operations` with its `migrate_folio`) and the registry
//! of owners. An owner allocates through a `MovableHandle` (`arena/movable_handle.rs`).
//!
//! The arena records each owned block's owner in the block's metadata (the
//! kernel's `page->mapping`), so compaction can ask the right owner to
//! move it. How a free and compaction settle who gets an owned block is at
//! `release_owned` in the free path; how compaction uses the owner is in
//! `compaction.rs`.

use std::ptr::NonNull;
use std::sync::Arc;

use crate::memalloc::InReclaim;
use crate::support::snapshot_list::SnapshotList;
use crate::support::sync::{AtomicU32, Ordering, RwLock};

/// An owner of movable blocks: moves one when compaction asks.
///
/// ```
/// use std::ptr::NonNull;
/// use std::sync::{Arc, Mutex};
/// use zonealloc::{AllocFlags, Arena, Movable};
///
/// /// One page whose address the owner keeps, and may change.
/// struct Slot(Mutex<Option<NonNull<u8>>>);
/// // SAFETY: the pointer is only used under the mutex.
/// unsafe impl Send for Slot {}
/// // SAFETY: as above.
/// unsafe impl Sync for Slot {}
///
/// impl Movable for Slot {
///     fn migrate(&self, from: NonNull<u8>, to: NonNull<u8>, order: u32) -> bool {
///         let mut slot = self.0.lock().unwrap();
///         if *slot != Some(from) {
///             return false; // not ours any more
///         }
///         // SAFETY: `from` is our block and `to` a fresh one of the same size.
///         unsafe { std::ptr::copy_nonoverlapping(from.as_ptr(), to.as_ptr(), 4096 << order) };
///         *slot = Some(to);
///         true
///     }
/// }
///
/// let arena = Arena::builder().region_size(64 << 20).build()?;
/// let slot = Arc::new(Slot(Mutex::new(None)));
/// let handle = arena.register_movable(slot.clone());
/// let page = handle.alloc_pages(0, AllocFlags::empty())?;
/// *slot.0.lock().unwrap() = Some(page);
/// arena.compact();
/// let page = slot.0.lock().unwrap().take().unwrap(); // wherever it is now
/// // SAFETY: ours, order 0, not used again.
/// unsafe { arena.free_pages(page, 0)? };
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Movable: Send + Sync {
    /// Move the block at `from` (allocated through this owner's handle,
    /// `order`) to `to`: copy what must survive, repoint every reference,
    /// return true. Return false if the block is pinned now; it stays
    /// where it is.
    ///
    /// On true the arena frees `from`, and `to` is the owner's, as if
    /// allocated through its handle; on false it frees `to`. A free of
    /// `from` that races with the move (the owner dropping the block while
    /// compaction picked it) is not refused: `from` is freed when the move
    /// ends, and if `migrate` returned true, `to` stays the owner's.
    fn migrate(&self, from: NonNull<u8>, to: NonNull<u8>, order: u32) -> bool;
}

/// A registered owner.
#[derive(Clone)]
struct Owner {
    id: u32,
    movable: Arc<dyn Movable>,
}

/// The owners' list, held across `fork(2)`.
#[cfg_attr(loom, allow(dead_code))]
pub(crate) struct MovableForkGuard<'a> {
    _list: crate::support::sync::MutexGuard<'a, Option<Arc<[Owner]>>>,
}

/// The owners of an arena's movable blocks.
pub(crate) struct MovableRegistry {
    owners: SnapshotList<Owner>,
    /// Calls of `migrate` in progress hold it for reading; unregistering
    /// waits for them.
    calls: RwLock<()>,
    /// Ids are never reused: a block whose owner is gone names no one.
    next_id: AtomicU32,
}

impl MovableRegistry {
    pub(crate) fn new() -> Self {
        Self { owners: SnapshotList::new(), calls: RwLock::new(()), next_id: AtomicU32::new(1) }
    }

    /// Registers `movable`; its id.
    pub(crate) fn register(&self, movable: Arc<dyn Movable>) -> u32 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let owner = Owner { id, movable };
        self.owners.update(|current| current.iter().cloned().chain([owner.clone()]).collect());
        id
    }

    /// Unregisters owner `id` and waits for a `migrate` call in progress,
    /// unless this thread is in one (a `migrate` dropping a handle).
    pub(crate) fn unregister(&self, id: u32) {
        self.owners.update(|current| current.iter().filter(|o| o.id != id).cloned().collect());
        if !InReclaim::active() {
            drop(self.calls.write());
        }
    }

    /// The owner registered as `id`, if it still is.
    pub(crate) fn get(&self, id: u32) -> Option<Arc<dyn Movable>> {
        let owners = self.owners.snapshot()?;
        owners.iter().find(|o| o.id == id).map(|o| Arc::clone(&o.movable))
    }

    /// Whether any owner is registered.
    pub(crate) fn is_empty(&self) -> bool {
        self.owners.snapshot().is_none_or(|owners| owners.is_empty())
    }

    /// Holds off unregistering while a `migrate` call runs.
    pub(super) fn call_guard(&self) -> impl Sized + '_ {
        self.calls.read()
    }

    /// Locks the owners' list for `fork(2)` (it is only ever held for a
    /// moment).
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn lock_for_fork(&self) -> MovableForkGuard<'_> {
        MovableForkGuard { _list: self.owners.lock() }
    }

    /// In a forked child: calls in progress belong to threads that were
    /// not copied.
    ///
    /// # Safety
    /// Only in a forked child, before it starts threads, with no call in
    /// progress on this thread.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) unsafe fn forget_calls_in_progress(&self) {
        // SAFETY: the caller's contract.
        unsafe { self.calls.reset_in_child(()) };
    }
}
