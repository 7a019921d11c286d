//! A slab's header, kept out of band in the side table: its local free
//! list, the remote-free stack, and the counts of objects out.

use std::ptr::{self, NonNull};

use crate::sync::{AtomicPtr, AtomicU64, Ordering, UnsafeCell};

use super::*;

/// A slab's header, out of band: in the arena's side table, in the slot of
/// the slab's first page (64 bytes, one cache line). Never borrowed whole:
/// other threads use its atomics while the owner changes its cells.
#[repr(C)]
pub(super) struct Slab {
    /// Objects freed by other threads (a Treiber stack; only the owner pops,
    /// and it pops everything at once, so there is no ABA).
    pub(super) remote: AtomicPtr<FreeObject>,
    /// The owning heap's id, or 0 for an orphan.
    pub(super) owner: AtomicU64,
    /// [`SLAB_MAGIC`] with the class, while the slot holds a live slab;
    /// 0 once the slab is returned.
    pub(super) key: AtomicU64,
    /// The owner's free list.
    pub(super) local: UnsafeCell<*mut FreeObject>,
    /// The owner's ring of slabs of this class, or the orphan list.
    pub(super) prev: UnsafeCell<*mut Slab>,
    pub(super) next: UnsafeCell<*mut Slab>,
    /// The slab's block; set before the slab is published, never changed.
    pub(super) base: usize,
    /// Objects handed out and not yet back on `local` (remote frees count
    /// until collected).
    pub(super) used: UnsafeCell<u32>,
    /// Objects never handed out start at `bump`.
    pub(super) bump: UnsafeCell<u32>,
}

const _: () = assert!(std::mem::size_of::<Slab>() <= crate::page::SIDE_SLOT_BYTES);

#[inline(always)]
pub(super) const fn slab_key(class: usize) -> u64 {
    SLAB_MAGIC | class as u64
}

/// Reads a cell of a slab this thread has the right to (see [`Slab`]).
///
/// # Safety
/// The caller owns the slab (its heap's id is in `owner`, or it holds the
/// orphan list the slab is on, or the slab is not yet published).
#[inline(always)]
pub(super) unsafe fn get<T: Copy>(cell: &UnsafeCell<T>) -> T {
    // SAFETY: the caller's contract: no other thread accesses the cell.
    cell.with_mut(|p| unsafe { *p })
}

/// Writes a cell of a slab this thread has the right to.
///
/// # Safety
/// As for [`get`].
#[inline(always)]
pub(super) unsafe fn set<T>(cell: &UnsafeCell<T>, value: T) {
    // SAFETY: as for `get`.
    cell.with_mut(|p| unsafe { *p = value });
}

impl Slab {
    /// Pops a free object (local list, then the bump area). Owner only.
    ///
    /// # Safety
    /// `this` is a live slab of `class` the caller owns (see [`get`]).
    #[inline(always)]
    pub(super) unsafe fn pop(this: *mut Slab, class: usize, words: ObjectWords) -> Option<NonNull<u8>> {
        // SAFETY: the caller owns the slab: its cells and free objects are
        // its own; `this` is only used as a place, never borrowed whole.
        unsafe {
            let local = get(&(*this).local);
            let object = if !local.is_null() {
                set(&(*this).local, words.next(local));
                local
            } else {
                let bump = get(&(*this).bump);
                if bump >= CLASS_INFO[class].capacity {
                    return None;
                }
                set(&(*this).bump, bump + 1);
                ((*this).base + bump as usize * CLASS_INFO[class].size as usize) as *mut FreeObject
            };
            set(&(*this).used, get(&(*this).used) + 1);
            // Every object is at least 16 bytes; a stale tag is cleared so
            // that a first free is never taken for a second.
            words.set_tag(object, false);
            NonNull::new(object.cast())
        }
    }

    /// Moves the remote stack onto the local list. Owner only; returns how
    /// many objects came back (already counted as freed by their freers).
    ///
    /// # Safety
    /// As for [`pop`](Self::pop).
    pub(super) unsafe fn collect(this: *mut Slab, words: ObjectWords) -> usize {
        // SAFETY: the caller owns the slab; `remote` is an atomic.
        unsafe {
            let remote = &(*this).remote;
            if remote.load(Ordering::Relaxed).is_null() {
                return 0;
            }
            // Acquire: the pushers' writes of the objects' words happen
            // before we read them.
            let mut object = remote.swap(ptr::null_mut(), Ordering::Acquire);
            let mut local = get(&(*this).local);
            let mut n = 0;
            while !object.is_null() {
                // Objects on the remote stack are free; we took them all.
                let next = words.next(object);
                words.set_next(object, local);
                local = object;
                object = next;
                n += 1;
            }
            set(&(*this).local, local);
            set(&(*this).used, get(&(*this).used) - n);
            n as usize
        }
    }

    /// Whether `object` (an object boundary of this slab) is free: on the
    /// local list, on the remote stack, or never handed out. What confirms
    /// a suspected double free on the owner's path; O(free objects).
    ///
    /// # Safety
    /// As for [`pop`](Self::pop).
    #[cold]
    pub(super) unsafe fn holds_free(
        this: *mut Slab,
        class: usize,
        object: *mut FreeObject,
        words: ObjectWords,
    ) -> bool {
        // SAFETY: the caller owns the slab. Objects on the remote stack are
        // only unlinked by the owner (us), so their links are stable while
        // we walk them.
        unsafe {
            let offset = object as usize - (*this).base;
            if offset >= get(&(*this).bump) as usize * CLASS_INFO[class].size as usize {
                return true;
            }
            let mut cursor = get(&(*this).local);
            while !cursor.is_null() {
                if cursor == object {
                    return true;
                }
                cursor = words.next(cursor);
            }
            let mut cursor = (*this).remote.load(Ordering::Acquire);
            while !cursor.is_null() {
                if cursor == object {
                    return true;
                }
                cursor = words.next(cursor);
            }
        }
        false
    }

    /// Whether every object is back.
    ///
    /// # Safety
    /// As for [`pop`](Self::pop).
    pub(super) unsafe fn is_empty(this: *mut Slab) -> bool {
        // SAFETY: the caller's contract.
        unsafe { get(&(*this).used) == 0 }
    }

    /// Whether an allocation could take an object from it (after
    /// collecting its remote frees).
    ///
    /// # Safety
    /// As for [`pop`](Self::pop).
    pub(super) unsafe fn has_free(this: *mut Slab, class: usize) -> bool {
        // SAFETY: the caller's contract.
        unsafe {
            !get(&(*this).local).is_null()
                || get(&(*this).bump) < CLASS_INFO[class].capacity
                || !(*this).remote.load(Ordering::Relaxed).is_null()
        }
    }

    /// # Safety
    /// As for [`pop`](Self::pop).
    pub(super) unsafe fn next(this: *mut Slab) -> *mut Slab {
        // SAFETY: the caller's contract.
        unsafe { get(&(*this).next) }
    }
}

/// Why a free was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlabFreeError {
    /// The pointer is not an object of a slab of this class (or of this
    /// heap's arena).
    NotAnObject,
    /// The object is already free.
    DoubleFree,
}
