//! The per-arena slab state every heap shares: per-class counters, the
//! orphan lists, and the statistics.

use std::ptr::{self, NonNull};

use crate::arena::Arena;
use crate::support::ratelimit::RateLimit;
use crate::support::sync::{AtomicU64, AtomicUsize, Mutex, Ordering, const_fn_unless_loom};

use super::*;

/// Per-class counters, shared by all heaps of a [`Slabs`].
#[derive(Debug, Default)]
pub(super) struct ClassCounters {
    pub(super) slabs: AtomicUsize,
    pub(super) orphans: AtomicUsize,
    /// Objects out, as published by the heaps (see the module docs).
    pub(super) objects: AtomicUsize,
}

/// Per size class: live slabs, orphaned slabs, objects in use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassStats {
    /// The class's object size.
    pub size: usize,
    /// Slabs of this class (owned and orphaned).
    pub slabs: usize,
    /// Slabs whose thread exited, waiting to be adopted.
    pub orphans: usize,
    /// Objects in use: exact once every heap has published its counts
    /// (at each new slab, at its drop, on [`ThreadHeap::flush`], and when
    /// a count reaches [`FLUSH_BATCH`] on its slower paths); a live heap's
    /// unpublished change is bounded by the objects its slabs hold (never
    /// reported below zero). See the slab module's docs.
    pub objects: usize,
    /// Bytes of buddy blocks the class's slabs occupy.
    pub slab_bytes: usize,
}

/// A heap publishes its object counts on its slower paths once they have
/// moved this far (per class); see [`ClassStats::objects`].
pub const FLUSH_BATCH: usize = 64;

/// The state shared by every thread's heap over one arena: orphaned slabs
/// per class and the counters.
///
/// A `Slabs` and an arena serve each other only, for life: the first
/// heap binds them, and a heap of another `Slabs` over that arena, or of
/// this one over another arena, is refused. So every slab of an arena is
/// on one set of lists and counted once, and an orphan is never adopted
/// by a heap over an arena it does not belong to.
pub struct Slabs {
    pub(super) orphans: [Mutex<OrphanList>; NR_CLASSES],
    pub(super) counters: [ClassCounters; NR_CLASSES],
    /// The heaps' mailboxes.
    pub(super) mailboxes: MailboxPool,
    /// Double frees found late, by a collect (see the slab module's docs).
    pub(super) late_double_frees: AtomicU64,
    reports: RateLimit,
    /// The id of the arena this serves; 0 until the first heap.
    pub(super) arena_id: AtomicU64,
    /// This state's own id (unique in the process), 0 until bound.
    pub(super) id: AtomicU64,
}

pub(super) static NEXT_SLABS_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Starts at 1: 0 is the orphans' owner.
pub(super) static NEXT_HEAP_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The orphan lists' locks, held across `fork(2)`.
#[cfg_attr(loom, allow(dead_code))]
pub(crate) struct SlabsForkGuard<'a> {
    pub(super) _held: [crate::support::sync::MutexGuard<'a, OrphanList>; NR_CLASSES],
    pub(super) _mailboxes: crate::support::sync::MutexGuard<'a, *mut Mailbox>,
}

/// A singly linked queue of orphaned slabs (through `Slab::next`).
pub(super) struct OrphanList {
    pub(super) head: *mut Slab,
    pub(super) tail: *mut Slab,
}

impl OrphanList {
    pub(super) const fn new() -> Self {
        Self { head: ptr::null_mut(), tail: ptr::null_mut() }
    }

    pub(super) fn pop(&mut self) -> Option<*mut Slab> {
        let slab = NonNull::new(self.head)?.as_ptr();
        // SAFETY: slabs on the list are live and owned by it.
        self.head = unsafe { Slab::next(slab) };
        if self.head.is_null() {
            self.tail = ptr::null_mut();
        }
        Some(slab)
    }

    pub(super) fn push_back(&mut self, slab: *mut Slab) {
        // SAFETY: `slab` is live and now owned by the list; so is the tail.
        unsafe {
            set(&(*slab).next, ptr::null_mut());
            if self.tail.is_null() {
                self.head = slab;
            } else {
                set(&(*self.tail).next, slab);
            }
        }
        self.tail = slab;
    }
}

// SAFETY: the list is only touched under its mutex; the slabs it links are
// owned by nobody until adopted under the same mutex.
unsafe impl Send for OrphanList {}

impl Default for Slabs {
    fn default() -> Self {
        Self::new()
    }
}

impl Slabs {
    /// Empty shared state.
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Self {
            orphans: [const { Mutex::new(OrphanList::new()) }; NR_CLASSES],
            counters: [const { ClassCounters::new() }; NR_CLASSES],
            mailboxes: MailboxPool::new(),
            late_double_frees: AtomicU64::new(0),
            reports: RateLimit::new(),
            arena_id: AtomicU64::new(0),
            id: AtomicU64::new(0),
        }
    }

    /// Empty shared state.
    #[cfg(loom)]
    pub fn new() -> Self {
        Self {
            orphans: std::array::from_fn(|_| Mutex::new(OrphanList::new())),
            counters: std::array::from_fn(|_| ClassCounters::new()),
            mailboxes: MailboxPool::new(),
            late_double_frees: AtomicU64::new(0),
            reports: RateLimit::new(),
            arena_id: AtomicU64::new(0),
            id: AtomicU64::new(0),
        }
    }

    /// Binds this state and `arena` to each other if neither is bound
    /// yet; whether they serve each other.
    pub(super) fn serves(&self, arena: &Arena) -> bool {
        let relaxed = Ordering::Relaxed;
        let mut mine = self.id.load(relaxed);
        if mine == 0 {
            // Racing binders agree on the first id stored.
            let fresh = NEXT_SLABS_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            mine = self.id.compare_exchange(0, fresh, relaxed, relaxed).map_or_else(|stored| stored, |_| fresh);
        }
        let arena_id = arena.id();
        arena.bind_slabs(mine)
            && self
                .arena_id
                .compare_exchange(0, arena_id, relaxed, relaxed)
                .map_or_else(|bound| bound == arena_id, |_| true)
    }

    /// Per-class statistics.
    pub fn stats(&self) -> ClassTable<ClassStats> {
        ClassTable::from_fn(|class| {
            let c = &self.counters[class.index()];
            let slabs = c.slabs.load(Ordering::Relaxed);
            ClassStats {
                size: class.size(),
                slabs,
                orphans: c.orphans.load(Ordering::Relaxed),
                // Unpublished frees of objects another heap counted can
                // take the sum below zero for a moment: read it as signed.
                objects: (c.objects.load(Ordering::Relaxed) as isize).max(0) as usize,
                slab_bytes: slabs * (crate::PAGE_SIZE << class.slab_order()),
            }
        })
    }

    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn lock_for_fork(&self) -> SlabsForkGuard<'_> {
        SlabsForkGuard {
            _held: std::array::from_fn(|i| self.orphans[i].lock()),
            _mailboxes: self.mailboxes.lock_for_fork(),
        }
    }

    /// Double frees of objects of `class` that a collect found (the
    /// object was on both bitmaps): counted and reported, rate limited,
    /// without allocating.
    #[cold]
    pub(super) fn double_frees_found(&self, class: SizeClass, n: usize) {
        self.late_double_frees.fetch_add(n as u64, Ordering::Relaxed);
        if self.reports.allow() {
            let mut w = crate::support::report::StackWriter::new();
            let _ = std::fmt::Write::write_fmt(
                &mut w,
                format_args!(
                    "zonealloc: refused free: {n} double free(s) of {}-byte objects, found when their slab's \
                     remote frees were collected",
                    class.size()
                ),
            );
            w.flush_line();
        }
    }

    /// Double frees found late so far (see the slab module's docs).
    pub fn late_double_frees(&self) -> u64 {
        self.late_double_frees.load(Ordering::Relaxed)
    }

    /// Pages held by orphaned slabs (an upper bound of what
    /// [`reap_orphans`](Self::reap_orphans) can return).
    pub fn orphan_pages(&self) -> usize {
        SizeClass::all().map(|c| self.counters[c.index()].orphans.load(Ordering::Relaxed) << c.slab_order()).sum()
    }

    /// Returns every orphaned slab whose objects have all been freed to the
    /// buddy allocator (called by reclaim); the pages returned. Nothing
    /// for an arena this state does not serve.
    pub fn reap_orphans(&self, arena: &Arena) -> usize {
        if !self.serves(arena) {
            return 0;
        }
        let mut pages = 0;
        for class in SizeClass::all() {
            let mut list = self.orphans[class.index()].lock();
            let mut keep = OrphanList::new();
            while let Some(slab) = list.pop() {
                // SAFETY: orphans are owned by the list, which we hold: we
                // may collect their remote frees and free the empty ones.
                let empty = unsafe {
                    let got = Slab::collect(slab);
                    if got.doubles > 0 {
                        self.double_frees_found(class, got.doubles);
                        self.counters[class.index()].objects.fetch_add(got.doubles, Ordering::Relaxed);
                    }
                    Slab::is_empty(slab)
                };
                if !empty {
                    keep.push_back(slab);
                    continue;
                }
                self.counters[class.index()].orphans.fetch_sub(1, Ordering::Relaxed);
                // SAFETY: empty, and off the list we hold: nobody else has it.
                pages += unsafe { self.return_slab(arena, class, slab) };
            }
            *list = keep;
        }
        pages
    }

    /// Hands an empty slab's block back to the buddy allocator: clears its
    /// side-table key (so a late free of one of its objects is refused),
    /// counts it gone, and returns the pages freed.
    ///
    /// # Safety
    /// `slab` is a live, empty slab of `class` from `arena`, on no ring or
    /// list: no object of it is in use and no remote free can be in flight
    /// (every remote free is counted in `used`).
    pub(super) unsafe fn return_slab(&self, arena: &Arena, class: SizeClass, slab: *mut Slab) -> usize {
        let order = class.slab_order();
        // SAFETY: the caller's contract: the slots are ours alone.
        let base = unsafe {
            (*slab).key.store(0, Ordering::Relaxed);
            let map = SlabMap::of(arena);
            map.set_tail_keys((*slab).base - map.region_base, order, 0);
            (*slab).base
        };
        self.counters[class.index()].slabs.fetch_sub(1, Ordering::Relaxed);
        let Some(base) = NonNull::new(base as *mut u8) else { return 0 };
        // SAFETY: the block was allocated by `new_slab` at this order.
        let _ = unsafe { arena.free_pages(base, order) };
        1 << order
    }

    /// Frees `ptr`, an object of `class`, from a thread that does not own
    /// its slab (or has no heap at all).
    ///
    /// # Safety
    /// `ptr` was returned for `class` by a heap over `arena` and is not
    /// used again (a wrong pointer is detected, not trusted).
    pub unsafe fn free_remote(&self, arena: &Arena, ptr: NonNull<u8>, class: SizeClass) -> Result<(), SlabFreeError> {
        if !self.serves(arena) {
            return Err(SlabFreeError::NotAnObject);
        }
        let map = SlabMap::of(arena);
        let (slab, bit) = map.find(ptr.as_ptr(), class)?;
        // SAFETY: find checked that `ptr` is an object of a live slab.
        unsafe { Slab::push_remote(slab, bit, map.objects) }?;
        // No heap to count it in: straight into the shared count.
        self.counters[class.index()].objects.fetch_sub(1, Ordering::Relaxed);
        Ok(())
    }
}

impl ClassCounters {
    const_fn_unless_loom! {
        pub(super) fn new() -> Self {
            Self { slabs: AtomicUsize::new(0), orphans: AtomicUsize::new(0), objects: AtomicUsize::new(0) }
        }
    }
}
