//! A slab's header, kept out of band in the side table: which objects are
//! free (the owner's bitmap and the bitmap other threads free into), the
//! ring links and the count of objects out.

use std::ptr::NonNull;

use crate::sync::{AtomicU32, AtomicU64, Ordering, UnsafeCell};

use super::*;

/// Words in each of a slab's bitmaps.
pub(super) const BITMAP_WORDS: usize = 4;

/// The most objects a slab can hold: a bit each.
pub(super) const MAX_OBJECTS: usize = 64 * BITMAP_WORDS;

/// A slab's header, out of band: in the arena's side table, in the slot of
/// the slab's first page, two cache lines. The first is the owner's (its
/// bitmap and count change on every allocation and free of its own) and
/// holds what every free reads (key, owner, the owner's bitmap); the
/// second holds the bits other threads' frees set, so that the owner's
/// frees need not load it and the `fetch_or`s do not take the owner's
/// line (a remote free still reads the first line, and sets `pending` on
/// it when that is clear). Never borrowed whole: other threads use its
/// atomics while the owner changes its cells.
///
/// An object's state is two bits, never a word in the object: free on the
/// owner's bitmap (`free`), free on the remote one (`remote`, until the
/// owner collects it), or neither (in use). `pending` says whether the
/// remote bitmap may hold anything, so that a slab nobody else frees into
/// costs its owner one cache line. So a free is checked exactly
/// (a bit already set is a double free, whatever the object holds), the
/// allocator never touches an object's memory (an allocation that is never
/// written is never faulted in), and a stray write into a freed object
/// cannot corrupt a free list.
#[repr(C, align(64))]
pub(super) struct Slab {
    /// [`SLAB_MAGIC`] with the class, while the slot holds a live slab;
    /// 0 once the slab is returned.
    pub(super) key: AtomicU64,
    /// The owning heap's id, or 0 for an orphan.
    pub(super) owner: AtomicU64,
    /// The slab's block; set before the slab is published, never changed.
    pub(super) base: usize,
    /// Objects handed out and not yet back on `free` (remote frees count
    /// until collected).
    pub(super) used: UnsafeCell<u32>,
    /// Non-zero when `remote` may have bits set: set by a remote free
    /// after its bit (unless already set), cleared by the owner's collect
    /// before it takes the words. A remote free whose bit the collect
    /// missed sees the clear (the collect's swap of that word is ordered
    /// before its `fetch_or`) and sets it again, so no bit is stranded.
    pub(super) pending: AtomicU32,
    /// The owner's free objects, a bit per object. Only the owner writes
    /// it (loads and stores, no read-modify-write); other threads read it
    /// to refuse a double free.
    pub(super) free: [AtomicU64; BITMAP_WORDS],
    /// Objects freed by other threads, set with `fetch_or`; the owner
    /// takes each word whole with a swap.
    pub(super) remote: [AtomicU64; BITMAP_WORDS],
    /// The owner's ring of slabs of this class, or the orphan list.
    pub(super) prev: UnsafeCell<*mut Slab>,
    pub(super) next: UnsafeCell<*mut Slab>,
}

const _: () = assert!(std::mem::size_of::<Slab>() <= crate::page::SIDE_SLOT_BYTES);
#[cfg(not(loom))]
const _: () = assert!(std::mem::offset_of!(Slab, remote) == 64, "the remote bitmap starts the second line");

/// An object's place in its slab: its index, as a bitmap word and bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ObjectBit {
    word: usize,
    mask: u64,
}

impl ObjectBit {
    #[inline(always)]
    pub(super) fn new(index: usize) -> Self {
        debug_assert!(index < MAX_OBJECTS);
        // Masked, so that the word index needs no bounds check.
        Self { word: (index >> 6) & (BITMAP_WORDS - 1), mask: 1 << (index & 63) }
    }

    /// The object's index in its slab.
    #[cfg_attr(not(loom), allow(dead_code))]
    fn index(self) -> usize {
        self.word * 64 + self.mask.trailing_zeros() as usize
    }
}

/// The bitmap words of a fresh slab of `class`: every object free.
fn full_bitmap(class: usize) -> [u64; BITMAP_WORDS] {
    let capacity = CLASS_INFO[class].capacity as usize;
    std::array::from_fn(|w| match capacity.saturating_sub(w * 64) {
        0 => 0,
        n if n >= 64 => u64::MAX,
        n => (1 << n) - 1,
    })
}

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
    /// Makes the slot `this` a fresh slab of `class` over the block at
    /// `base`, every object free, owned by the heap `owner`, on a ring of
    /// its own, before the slab is published (its key written last).
    ///
    /// The atomics are stored into, not the slot overwritten: a remote
    /// freer of the slot's previous slab may still be finishing (its
    /// object was collected, the slab returned, and it has yet to set
    /// `pending`, which then reads as a spurious pending free: harmless).
    /// A slot never written is zero, a valid header. Loom's atomics cannot
    /// come from zeroed memory: there the slot is written whole.
    ///
    /// # Safety
    /// `this` is the side-table slot of a block the caller owns, nobody
    /// else reads or writes its cells, and no free of the block's objects
    /// can be under way but such a late `pending`.
    pub(super) unsafe fn init(this: *mut Slab, class: usize, base: usize, owner: u64) {
        let free = full_bitmap(class);
        #[cfg(not(loom))]
        // SAFETY: the caller's contract; the slot holds a valid header
        // (zero, or a returned slab's).
        unsafe {
            (*this).owner.store(owner, Ordering::Relaxed);
            std::ptr::addr_of_mut!((*this).base).write(base);
            set(&(*this).used, 0);
            (*this).pending.store(0, Ordering::Relaxed);
            for ((word, bits), remote) in (*this).free.iter().zip(free).zip(&(*this).remote) {
                word.store(bits, Ordering::Relaxed);
                remote.store(0, Ordering::Relaxed);
            }
            set(&(*this).prev, this);
            set(&(*this).next, this);
            (*this).key.store(slab_key(class), Ordering::Relaxed);
        }
        #[cfg(loom)]
        // SAFETY: the caller's contract.
        unsafe {
            this.write(Slab {
                key: AtomicU64::new(slab_key(class)),
                owner: AtomicU64::new(owner),
                base,
                used: UnsafeCell::new(0),
                pending: AtomicU32::new(0),
                free: std::array::from_fn(|w| AtomicU64::new(free[w])),
                remote: std::array::from_fn(|_| AtomicU64::new(0)),
                prev: UnsafeCell::new(this),
                next: UnsafeCell::new(this),
            });
        }
    }

    /// Hands out the free object with the lowest address. Owner only.
    ///
    /// # Safety
    /// `this` is a live slab of `class` the caller owns (see [`get`]).
    #[inline(always)]
    pub(super) unsafe fn pop(this: *mut Slab, class: usize, objects: ObjectMemory) -> Option<NonNull<u8>> {
        // SAFETY: the caller owns the slab: only it writes `free` and the
        // cells; `this` is only used as a place, never borrowed whole.
        unsafe {
            for w in 0..BITMAP_WORDS {
                let free = &(*this).free[w];
                let bits = free.load(Ordering::Relaxed);
                if bits != 0 {
                    free.store(bits & (bits - 1), Ordering::Relaxed);
                    set(&(*this).used, get(&(*this).used) + 1);
                    let index = w * 64 + bits.trailing_zeros() as usize;
                    let object = (*this).base + index * CLASS_INFO[class].size as usize;
                    objects.touch(object);
                    // A slab's block is never at address 0.
                    return Some(NonNull::new_unchecked(object as *mut u8));
                }
            }
            None
        }
    }

    /// Whether the object at `bit` is free (on either bitmap). The remote
    /// bitmap is read only if a remote free is pending: a free by another
    /// thread that happened before this one set `pending` before it.
    ///
    /// # Safety
    /// `this` is a live slab (any thread may ask).
    #[inline(always)]
    pub(super) unsafe fn is_free(this: *mut Slab, bit: ObjectBit) -> bool {
        // SAFETY: the caller's contract; all three are atomics.
        unsafe {
            (*this).free[bit.word].load(Ordering::Relaxed) & bit.mask != 0
                || ((*this).pending.load(Ordering::Relaxed) != 0
                    && (*this).remote[bit.word].load(Ordering::Relaxed) & bit.mask != 0)
        }
    }

    /// Puts the object at `bit`, in use, back on the owner's bitmap.
    ///
    /// # Safety
    /// As for [`pop`](Self::pop); the object is in use (checked with
    /// [`is_free`](Self::is_free)).
    #[inline(always)]
    pub(super) unsafe fn push_local(this: *mut Slab, bit: ObjectBit, objects: ObjectMemory) {
        // SAFETY: the caller's contract.
        unsafe {
            Self::touch(this, bit, objects);
            let free = &(*this).free[bit.word];
            free.store(free.load(Ordering::Relaxed) | bit.mask, Ordering::Relaxed);
            set(&(*this).used, get(&(*this).used) - 1);
        }
    }

    /// Frees the object at `bit` from a thread that does not own the slab:
    /// onto the remote bitmap, unless it is free already (a double free).
    ///
    /// One window is open: a second free whose load of `free` comes just
    /// before a collect moves the first free's bit there, and whose
    /// `fetch_or` comes just after that collect's swap, sees the object on
    /// neither bitmap and passes. Looking at `free` again after the
    /// `fetch_or` would close it but refuse legitimate frees whose own bit
    /// a collect took in between (loom found that); closing it needs the
    /// two bitmaps moved in one atomic step.
    ///
    /// # Safety
    /// `this` is a live slab, and the object at `bit` counts as in use in
    /// it (so the slab stays live until it is collected).
    #[inline(always)]
    pub(super) unsafe fn push_remote(
        this: *mut Slab,
        bit: ObjectBit,
        objects: ObjectMemory,
    ) -> Result<(), SlabFreeError> {
        // SAFETY: the caller's contract; both are atomics. A legitimate
        // free reads the bit clear on `free`: the owner cleared it before
        // the object was handed out, and only a free of the same object
        // sets it again.
        unsafe {
            if (*this).free[bit.word].load(Ordering::Relaxed) & bit.mask != 0 {
                return Err(SlabFreeError::DoubleFree);
            }
            Self::touch(this, bit, objects);
            // Release: the freer's last writes to the object happen before
            // the owner's swap, and so before the object's next user has
            // it. Acquire: a bit set after the owner's swap sees the clear
            // of `pending` that came before that swap.
            let before = (*this).remote[bit.word].fetch_or(bit.mask, Ordering::AcqRel);
            if before & bit.mask != 0 {
                return Err(SlabFreeError::DoubleFree);
            }
            // A read first: a flag already set is not written again, so
            // frees into a slab with pending ones share its line.
            if (*this).pending.load(Ordering::Relaxed) == 0 {
                (*this).pending.store(1, Ordering::Relaxed);
            }
            Ok(())
        }
    }

    /// Moves the remote bitmap onto the owner's. Owner only (or the holder
    /// of the orphan list the slab is on); returns how many objects came
    /// back (already counted as freed by their freers).
    ///
    /// # Safety
    /// As for [`pop`](Self::pop).
    pub(super) unsafe fn collect(
        this: *mut Slab,
        #[cfg_attr(not(loom), allow(unused))] objects: ObjectMemory,
    ) -> usize {
        let mut n = 0;
        // SAFETY: the caller owns the slab; the bitmaps are atomics.
        unsafe {
            if (*this).pending.load(Ordering::Relaxed) == 0 {
                return 0;
            }
            // Cleared before the words are taken (see `pending`).
            (*this).pending.store(0, Ordering::Relaxed);
            let class = ((*this).key.load(Ordering::Relaxed) ^ SLAB_MAGIC) as usize;
            // Every word is swapped, none skipped on a plain load: a load
            // may miss a bit whose freer saw `pending` still set and left
            // it so, which would strand the bit.
            for w in 0..(CLASS_INFO[class].capacity as usize).div_ceil(64) {
                let remote = &(*this).remote[w];
                // AcqRel: Acquire for the freers' writes to the objects,
                // Release for the clear of `pending` before it.
                let bits = remote.swap(0, Ordering::AcqRel);
                let free = (*this).free[w].load(Ordering::Relaxed);
                // A bit on both was freed twice by two threads at once, or
                // by a second free that read `free` just before this
                // collect set the bit there (see `push_remote`): it is one
                // free object, counted once, so `used` stays exact.
                let fresh = bits & !free;
                (*this).free[w].store(free | bits, Ordering::Relaxed);
                n += fresh.count_ones();
                #[cfg(loom)]
                {
                    // The owner may hand these out from now on.
                    let mut rest = fresh;
                    while rest != 0 {
                        Self::touch(this, ObjectBit::new(w * 64 + rest.trailing_zeros() as usize), objects);
                        rest &= rest - 1;
                    }
                }
            }
            set(&(*this).used, get(&(*this).used) - n);
        }
        n as usize
    }

    /// Whether every object is back.
    ///
    /// # Safety
    /// As for [`pop`](Self::pop).
    pub(super) unsafe fn is_empty(this: *mut Slab) -> bool {
        // SAFETY: the caller's contract.
        unsafe { get(&(*this).used) == 0 }
    }

    /// Whether an allocation could take an object from it now (its
    /// remote frees collected first, where they count).
    ///
    /// # Safety
    /// As for [`pop`](Self::pop).
    pub(super) unsafe fn has_free(this: *mut Slab) -> bool {
        // SAFETY: the caller's contract; the bitmap is atomics.
        unsafe { (0..BITMAP_WORDS).any(|w| (*this).free[w].load(Ordering::Relaxed) != 0) }
    }

    /// [`ObjectMemory::touch`] for the object at `bit`: under loom, a use
    /// of the object's cell; nothing otherwise (not even the address).
    ///
    /// # Safety
    /// `this` is a live slab.
    #[inline(always)]
    unsafe fn touch(this: *mut Slab, bit: ObjectBit, objects: ObjectMemory) {
        #[cfg(loom)]
        // SAFETY: the caller's contract; `key` is an atomic.
        unsafe {
            let class = ((*this).key.load(Ordering::Relaxed) ^ SLAB_MAGIC) as usize;
            objects.touch((*this).base + bit.index() * CLASS_INFO[class].size as usize);
        }
        #[cfg(not(loom))]
        let _ = (this, bit, objects);
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
