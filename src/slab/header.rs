//! A slab's header, kept out of band in the side table: which objects are
//! free (the owner's bitmap and the bitmap other threads free into), the
//! slab's state towards its owner (remote frees pending, parked while full,
//! a notice posted), the ring links and the count of objects out.

use std::ptr::NonNull;

use crate::support::sync::{AtomicPtr, AtomicU32, AtomicU64, Ordering, UnsafeCell};

use super::*;

/// The bit of [`Slab::used`] that says the owner parked the slab (the
/// truth [`state::PARKED`] may lag behind): the count as an `i32` is at
/// most 0 exactly when the slab is parked or has no object out.
pub(super) const USED_PARKED: u32 = 1 << 31;

/// Words in each of a slab's bitmaps.
pub(super) const BITMAP_WORDS: usize = 4;

/// The most objects a slab can hold: a bit each.
pub(super) const MAX_OBJECTS: usize = 64 * BITMAP_WORDS;

/// The bits of [`Slab::state`].
pub(super) mod state {
    /// The remote bitmap may hold bits: set by a remote free after its
    /// bit (unless set), cleared by the owner's collect before it takes
    /// the words.
    pub(super) const PENDING: u32 = 1;
    /// The owner took the slab off its ring because it had no free
    /// object: the next remote free posts a notice. Set by the owner when
    /// it parks the slab; cleared when it takes the slab's notice, stops
    /// its notices at exit, or returns the slab ([`Slab::releasable`]). A
    /// local free that takes the slab back leaves it set, so taking a slab
    /// back and parking it again are plain stores ([`Slab::unpark`]):
    /// whether the slab is parked is the owner's
    /// [`USED_PARKED`](super::USED_PARKED), and a stale `PARKED` costs at
    /// most one notice the owner did not need.
    ///
    /// Parked and pending imply a notice is out: a remote free that sets
    /// `PENDING` and sees `PARKED` posts one unless one is out, and a park
    /// that is not already marked is refused while `PENDING` is set, or
    /// `POSTING` (one poster at a time: `POSTING` is one bit).
    pub(super) const PARKED: u32 = 2;
    /// A notice of this slab is in its owner's mailbox, or being posted:
    /// set by the remote free that posts it, cleared by the owner when it
    /// takes the slab back.
    pub(super) const NOTICED: u32 = 4;
    /// The posting free is between setting `NOTICED` and the end of its
    /// push: an exiting owner waits for it before it gives up the mailbox.
    pub(super) const POSTING: u32 = 8;
}

/// A slab's header, out of band: in the arena's side table, in the slot of
/// the slab's first page, two cache lines. The first is the owner's (its
/// bitmap and count change on every allocation and free of its own) and
/// holds what every free reads (key, owner, state, the owner's bitmap); the
/// second holds the bits other threads' frees set, so that the owner's
/// frees need not load it and the `fetch_or`s do not take the owner's
/// line (a remote free still reads the first line, and writes `state` on
/// it when a notice is due or a collect cleared `PENDING`). Never
/// borrowed whole: other threads use its atomics while the owner changes
/// its cells.
///
/// An object's state is two bits, never a word in the object: free on the
/// owner's bitmap (`free`), freed by another thread onto the remote one
/// (`remote`, until the owner collects it), or neither (in use). So a
/// free is checked from the allocator's own bits (whatever the object
/// holds), the allocator never touches an object's memory (an allocation
/// that is never written is never faulted in), and a stray write into a
/// freed object cannot corrupt a free list. The cross-thread protocol,
/// and what a double free between threads does, are in the slab module's
/// docs.
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
    /// until collected), with [`USED_PARKED`] set while the slab is
    /// parked: the owner's free tests "parked, or now empty" with one
    /// signed compare of the count it just wrote.
    pub(super) used: UnsafeCell<u32>,
    /// [`state`] bits.
    pub(super) state: AtomicU32,
    /// The owner's free objects, a bit per object. Only the owner writes
    /// it (loads and stores, no read-modify-write); other threads read it
    /// to refuse a double free.
    pub(super) free: [AtomicU64; BITMAP_WORDS],
    /// Objects freed by other threads, set with `fetch_or`; the owner
    /// takes each word whole with a swap.
    pub(super) remote: [AtomicU64; BITMAP_WORDS],
    /// The owner's ring of slabs of this class, its list of parked slabs,
    /// or the orphan list.
    pub(super) prev: UnsafeCell<*mut Slab>,
    pub(super) next: UnsafeCell<*mut Slab>,
    /// The owner's mailbox, for the notice of a parked slab: written by
    /// the owner before it parks the slab, read by the free that posts.
    pub(super) mail: AtomicPtr<Mailbox>,
    /// The next slab in the mailbox this one is posted to.
    pub(super) notice_next: AtomicPtr<Slab>,
}

const _: () = assert!(std::mem::size_of::<Slab>() <= crate::page::SIDE_SLOT_BYTES);
#[cfg(not(loom))]
const _: () = assert!(std::mem::offset_of!(Slab, remote) == 64, "the remote bitmap starts the second line");

/// What a collect found on the remote bitmap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Collected {
    /// Objects that came back (counted as freed by their freers).
    pub(super) fresh: usize,
    /// Objects freed remotely that were free already: double frees found
    /// late, ignored (the object is free once), to be reported.
    pub(super) doubles: usize,
}

/// An object's place in its slab: its index, as a bitmap word and bit.
/// `repr(C)`: passed to an `extern "C"` method of the free path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
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
fn full_bitmap(class: SizeClass) -> [u64; BITMAP_WORDS] {
    let capacity = class.info().capacity as usize;
    std::array::from_fn(|w| match capacity.saturating_sub(w * 64) {
        0 => 0,
        n if n >= 64 => u64::MAX,
        n => (1 << n) - 1,
    })
}

/// The key of a live slab of `class`: [`SLAB_MAGIC`] with the class in its
/// low byte.
#[inline(always)]
pub(super) const fn slab_key(class: SizeClass) -> u64 {
    SLAB_MAGIC | class.index() as u64
}

/// The class a slab key names, if it is a live slab's key.
#[inline(always)]
pub(super) const fn class_of_key(key: u64) -> Option<SizeClass> {
    if key & !0xff != SLAB_MAGIC {
        return None;
    }
    SizeClass::new((key ^ SLAB_MAGIC) as usize)
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
    /// `PENDING`, which then reads as a spurious pending free: harmless;
    /// it never posts, since a slab is returned with `PARKED` clear, see
    /// [`releasable`](Self::releasable)).
    /// A slot never written is zero, a valid header. Loom's atomics cannot
    /// come from zeroed memory: there the slot is written whole.
    ///
    /// # Safety
    /// `this` is the side-table slot of a block the caller owns, nobody
    /// else reads or writes its cells, and no free of the block's objects
    /// can be under way but such a late `pending`.
    pub(super) unsafe fn init(this: *mut Slab, class: SizeClass, base: usize, owner: u64, mail: *mut Mailbox) {
        let free = full_bitmap(class);
        #[cfg(not(loom))]
        // SAFETY: the caller's contract; the slot holds a valid header
        // (zero, or a returned slab's).
        unsafe {
            (*this).owner.store(owner, Ordering::Relaxed);
            std::ptr::addr_of_mut!((*this).base).write(base);
            set(&(*this).used, 0);
            (*this).state.store(0, Ordering::Relaxed);
            for ((word, bits), remote) in (*this).free.iter().zip(free).zip(&(*this).remote) {
                word.store(bits, Ordering::Relaxed);
                remote.store(0, Ordering::Relaxed);
            }
            set(&(*this).prev, this);
            set(&(*this).next, this);
            (*this).mail.store(mail, Ordering::Relaxed);
            (*this).notice_next.store(std::ptr::null_mut(), Ordering::Relaxed);
            // Release: a free that reads the key (Acquire) reads this
            // header's fields, not the slot's previous ones.
            (*this).key.store(slab_key(class), Ordering::Release);
        }
        #[cfg(loom)]
        // SAFETY: the caller's contract.
        unsafe {
            this.write(Slab {
                key: AtomicU64::new(slab_key(class)),
                owner: AtomicU64::new(owner),
                base,
                used: UnsafeCell::new(0),
                state: AtomicU32::new(0),
                free: std::array::from_fn(|w| AtomicU64::new(free[w])),
                remote: std::array::from_fn(|_| AtomicU64::new(0)),
                prev: UnsafeCell::new(this),
                next: UnsafeCell::new(this),
                mail: AtomicPtr::new(mail),
                notice_next: AtomicPtr::new(std::ptr::null_mut()),
            });
        }
    }

    /// Hands out the free object with the lowest address. Owner only.
    ///
    /// Never one whose bit is also on the remote bitmap: that is a free
    /// object another thread freed again (a double free), which a collect
    /// would otherwise turn into a second free of it once it was handed
    /// out. The remote word is read here, every time: a flag saying
    /// whether remote frees are pending could be read before a racing
    /// free's flag and after its bit (see the slab module's docs).
    ///
    /// # Safety
    /// `this` is a live slab of `class` the caller owns (see [`get`]).
    #[inline(always)]
    pub(super) unsafe fn pop(this: *mut Slab, class: SizeClass, objects: ObjectMemory) -> Option<NonNull<u8>> {
        // SAFETY: the caller owns the slab: only it writes `free` and the
        // cells; `this` is only used as a place, never borrowed whole.
        unsafe {
            for w in 0..BITMAP_WORDS {
                let free = &(*this).free[w];
                let all = free.load(Ordering::Relaxed);
                // The remote word only for a word with free objects: the
                // full ones of a busy slab cost one load each.
                if all == 0 {
                    continue;
                }
                let bits = all & !(*this).remote[w].load(Ordering::Relaxed);
                if bits != 0 {
                    free.store(all & !(bits & bits.wrapping_neg()), Ordering::Relaxed);
                    set(&(*this).used, get(&(*this).used) + 1);
                    let index = w * 64 + bits.trailing_zeros() as usize;
                    // From the table of sizes, not `CLASS_INFO`: 8-byte
                    // entries index without a shift.
                    let object = (*this).base + index * SIZE_CLASSES[class.index()];
                    objects.touch(object, Use::HandOut);
                    // A slab's block is never at address 0.
                    return Some(NonNull::new_unchecked(object as *mut u8));
                }
            }
            None
        }
    }

    /// Whether the object at `bit` is on the owner's bitmap, for a free by
    /// the owner: a double free on one thread, refused at once. The remote
    /// bitmap is not read: an object freed by another thread and then by
    /// the owner (a double free between threads) ends up on both bitmaps,
    /// where it is never handed out ([`pop`](Self::pop)) and the next
    /// collect finds it.
    ///
    /// # Safety
    /// `this` is a live slab (any thread may ask).
    #[inline(always)]
    pub(super) unsafe fn is_free(this: *mut Slab, bit: ObjectBit) -> bool {
        // SAFETY: the caller's contract; an atomic.
        unsafe { (*this).free[bit.word].load(Ordering::Relaxed) & bit.mask != 0 }
    }

    /// Puts the object at `bit`, in use, back on the owner's bitmap; the
    /// count of objects out after it, with [`USED_PARKED`].
    ///
    /// # Safety
    /// As for [`pop`](Self::pop); the object is in use (checked with
    /// [`is_free`](Self::is_free)).
    #[inline(always)]
    pub(super) unsafe fn push_local(this: *mut Slab, bit: ObjectBit, objects: ObjectMemory) -> u32 {
        // SAFETY: the caller's contract.
        unsafe {
            Self::touch(this, bit, objects, Use::Free);
            let free = &(*this).free[bit.word];
            free.store(free.load(Ordering::Relaxed) | bit.mask, Ordering::Relaxed);
            let used = get(&(*this).used) - 1;
            set(&(*this).used, used);
            used
        }
    }

    /// Frees the object at `bit` from a thread that does not own the slab:
    /// onto the remote bitmap, unless it is free already (a double free).
    /// The first remote free after a collect sets `PENDING`; the first
    /// after the owner parked the slab also posts its notice to the
    /// owner's mailbox.
    ///
    /// A double free is refused here when the object is on the remote
    /// bitmap already (two remote frees) or this thread sees it free on
    /// the owner's; otherwise (a collect moved the first free's bit in
    /// between) it is found by the next collect. Either way the object is
    /// never handed out twice: see the slab module's docs.
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
        // SAFETY: the caller's contract; all are atomics.
        unsafe {
            if (*this).free[bit.word].load(Ordering::Relaxed) & bit.mask != 0 {
                return Err(SlabFreeError::DoubleFree);
            }
            Self::touch(this, bit, objects, Use::Free);
            // Release: the freer's last writes to the object happen before
            // the owner's swap, and so before the object's next user has
            // it. Acquire: a bit set after the owner's swap sees the clear
            // of `PENDING` that came before that swap.
            let before = (*this).remote[bit.word].fetch_or(bit.mask, Ordering::AcqRel);
            if before & bit.mask != 0 {
                return Err(SlabFreeError::DoubleFree);
            }
            // A read first: a flag already set is not written again, so
            // frees into a slab with pending ones share its line.
            let s = (*this).state.load(Ordering::Relaxed);
            if s & state::PENDING == 0 || s & (state::PARKED | state::NOTICED) == state::PARKED {
                Self::announce(this, s);
            }
            Ok(())
        }
    }

    /// Sets `PENDING`, and posts the notice of a parked slab (once).
    ///
    /// # Safety
    /// As for [`push_remote`](Self::push_remote), whose bit is set.
    #[cold]
    #[inline(never)]
    unsafe fn announce(this: *mut Slab, mut s: u32) {
        // SAFETY: the caller's contract; `state` is an atomic.
        let posting = loop {
            let post = s & (state::PARKED | state::NOTICED) == state::PARKED;
            let new = s | state::PENDING | if post { state::NOTICED | state::POSTING } else { 0 };
            if new == s {
                return;
            }
            // Acquire: the owner's park (Release) published `mail`.
            match unsafe { (*this).state.compare_exchange(s, new, Ordering::AcqRel, Ordering::Relaxed) } {
                Ok(_) => break post,
                Err(now) => s = now,
            }
        };
        if posting {
            // SAFETY: POSTING keeps the owner (and its mailbox) from going
            // away until it is cleared; `mail` was written before the park.
            unsafe {
                (*(*this).mail.load(Ordering::Relaxed)).post(this);
                (*this).state.fetch_and(!state::POSTING, Ordering::Release);
            }
        }
    }

    /// Parks the slab: the owner takes it off its ring, and the next
    /// remote free posts a notice. Refused (`false`) when `PARKED` is not
    /// set and remote frees are pending (collect them instead) or the
    /// poster of the last notice has not finished (see [`state::PARKED`]). With
    /// `PARKED` still set from an earlier park (see [`state::PARKED`]) it
    /// is a plain store: every remote free since posted a notice or found
    /// one out. Owner only.
    ///
    /// # Safety
    /// As for [`pop`](Self::pop).
    pub(super) unsafe fn park(this: *mut Slab) -> bool {
        // SAFETY: the caller's contract; `state` is an atomic.
        unsafe {
            let s = (*this).state.load(Ordering::Relaxed);
            // Release: `mail` (written at install or adoption) is there for
            // the free that posts.
            let parked = s & state::PARKED != 0
                || s & (state::PENDING | state::POSTING) == 0
                    && (*this)
                        .state
                        .compare_exchange(s, s | state::PARKED, Ordering::Release, Ordering::Relaxed)
                        .is_ok();
            if parked {
                set(&(*this).used, get(&(*this).used) | USED_PARKED);
            }
            parked
        }
    }

    /// Takes the slab back from parking because the owner freed into it;
    /// whether it was parked. Only the owner's mark changes: `PARKED`
    /// stays set (see [`state::PARKED`]), so this is a plain store. A
    /// notice still on its way or in the mailbox is harmless: the owner
    /// clears `NOTICED` when it takes it, and finds the slab on its ring
    /// (or parked again, which the notice then ends). Owner only.
    ///
    /// # Safety
    /// As for [`pop`](Self::pop).
    pub(super) unsafe fn unpark(this: *mut Slab) -> bool {
        // SAFETY: the caller's contract.
        unsafe {
            let used = get(&(*this).used);
            set(&(*this).used, used & !USED_PARKED);
            used & USED_PARKED != 0
        }
    }

    /// The owner took the slab's notice from its mailbox: it is taken back
    /// from parking if it was parked, and a new notice may be posted once
    /// it is parked again (both bits cleared at once: no poster sees it
    /// parked without a notice out in between). Whether it was parked.
    /// Owner only.
    ///
    /// # Safety
    /// As for [`pop`](Self::pop).
    pub(super) unsafe fn take_notice(this: *mut Slab) -> bool {
        // SAFETY: the caller's contract; `state` is an atomic.
        unsafe {
            (*this).state.fetch_and(!(state::PARKED | state::NOTICED), Ordering::Relaxed);
            Self::unpark(this)
        }
    }

    /// Whether the slab, empty and not parked, may go back to the buddy
    /// allocator as far as its notices go: none in a mailbox, none being
    /// posted (a returned slab must not be taken from a mailbox, nor have
    /// its slot's state written by a late poster). Clears a stale
    /// `PARKED` first, in the same step: a remote free still finishing
    /// (its bit already collected) then either posted before, and the
    /// slab is kept until its notice is taken, or sees no `PARKED` and
    /// only sets `PENDING`. Owner only.
    ///
    /// # Safety
    /// As for [`pop`](Self::pop).
    pub(super) unsafe fn releasable(this: *mut Slab) -> bool {
        // SAFETY: the caller's contract; `state` is an atomic. Acquire: a
        // poster's push (before its Release clear of `POSTING`) is done.
        unsafe { (*this).state.fetch_and(!state::PARKED, Ordering::Acquire) & (state::NOTICED | state::POSTING) == 0 }
    }

    /// The owner is exiting: no notice of this slab may be posted from
    /// now on, and one being posted has reached the mailbox. Whether the
    /// slab was parked. Owner only.
    ///
    /// # Safety
    /// As for [`pop`](Self::pop).
    pub(super) unsafe fn stop_notices(this: *mut Slab) -> bool {
        // SAFETY: the caller's contract; `state` is an atomic.
        unsafe {
            (*this).state.fetch_and(!state::PARKED, Ordering::Relaxed);
            let was = Self::unpark(this);
            // Acquire: the poster's push (before its Release clear) is in
            // the mailbox when the owner drains it.
            while (*this).state.load(Ordering::Acquire) & state::POSTING != 0 {
                crate::support::sync::spin_loop();
            }
            was
        }
    }

    /// Moves the remote bitmap onto the owner's. Owner only (or the holder
    /// of the orphan list the slab is on): how many objects came back
    /// (already counted as freed by their freers), and how many of the
    /// remote bits named an object that was free already (double frees
    /// found late: the object stays free once).
    ///
    /// # Safety
    /// As for [`pop`](Self::pop).
    #[inline(always)]
    pub(super) unsafe fn collect(this: *mut Slab) -> Collected {
        // SAFETY: the caller's contract; `state` is an atomic. Inline: a
        // walk looks at slabs with nothing pending far more often.
        if unsafe { (*this).state.load(Ordering::Relaxed) } & state::PENDING == 0 {
            return Collected::default();
        }
        // SAFETY: the caller's contract.
        unsafe { Self::collect_pending(this) }
    }

    /// [`collect`](Self::collect) once `PENDING` was seen set.
    ///
    /// # Safety
    /// As for [`pop`](Self::pop).
    #[inline(never)]
    unsafe fn collect_pending(this: *mut Slab) -> Collected {
        let mut got = Collected::default();
        // SAFETY: the caller owns the slab; the bitmaps are atomics.
        unsafe {
            // Cleared before the words are taken (see `state::PENDING`).
            (*this).state.fetch_and(!state::PENDING, Ordering::AcqRel);
            let Some(class) = class_of_key((*this).key.load(Ordering::Relaxed)) else {
                crate::support::report::fatal(format_args!("a collect of a slab that is not live"));
            };
            // Every word is swapped, none skipped on a plain load: a load
            // may miss a bit whose freer saw `PENDING` still set and left
            // it so, which would strand the bit.
            for w in 0..(class.info().capacity as usize).div_ceil(64) {
                let remote = &(*this).remote[w];
                // AcqRel: Acquire for the freers' writes to the objects,
                // Release for the clear of `PENDING` before it.
                let bits = remote.swap(0, Ordering::AcqRel);
                let free = (*this).free[w].load(Ordering::Relaxed);
                // A bit on both names a free object freed again: by two
                // threads at once, or by one whose first free a collect
                // moved here before its second. One free object, counted
                // once, so `used` stays exact; reported by the caller.
                let fresh = bits & !free;
                (*this).free[w].store(free | bits, Ordering::Relaxed);
                got.fresh += fresh.count_ones() as usize;
                got.doubles += (bits & free).count_ones() as usize;
            }
            set(&(*this).used, get(&(*this).used) - got.fresh as u32);
        }
        got
    }

    /// Whether every object is back.
    ///
    /// # Safety
    /// As for [`pop`](Self::pop).
    pub(super) unsafe fn is_empty(this: *mut Slab) -> bool {
        // SAFETY: the caller's contract.
        unsafe { get(&(*this).used) & !USED_PARKED == 0 }
    }

    /// Whether an allocation could take an object from it now (its
    /// remote frees collected first, where they count).
    ///
    /// # Safety
    /// As for [`pop`](Self::pop).
    pub(super) unsafe fn has_free(this: *mut Slab) -> bool {
        // SAFETY: the caller's contract; the bitmaps are atomics.
        unsafe {
            (0..BITMAP_WORDS)
                .any(|w| (*this).free[w].load(Ordering::Relaxed) & !(*this).remote[w].load(Ordering::Relaxed) != 0)
        }
    }

    /// [`ObjectMemory::touch`] for the object at `bit`: under loom, a use
    /// of the object's cell; nothing otherwise (not even the address).
    ///
    /// # Safety
    /// `this` is a live slab.
    #[inline(always)]
    unsafe fn touch(this: *mut Slab, bit: ObjectBit, objects: ObjectMemory, usage: Use) {
        #[cfg(loom)]
        // SAFETY: the caller's contract; `key` is an atomic.
        unsafe {
            let Some(class) = class_of_key((*this).key.load(Ordering::Relaxed)) else {
                crate::support::report::fatal(format_args!("a collect of a slab that is not live"));
            };
            objects.touch((*this).base + bit.index() * class.info().size as usize, usage);
        }
        #[cfg(not(loom))]
        let _ = (this, bit, objects, usage);
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
