//! Out-of-band page metadata: the kernel's `mem_map` of `struct page`.
//!
//! One 12-byte [`PageMeta`] per 4 KiB page of the region, in a separate,
//! lazily backed mapping: an entry costs memory only once its page has been
//! the head of a block. Free-list links and page state live here, never in
//! the pages themselves, so a free (or purged) page is never written by the
//! allocator and a use-after-free cannot corrupt the allocator's state.
//!
//! Only the entry of a block's *head* page means anything; every other page of
//! a block has state [`PageState::Tail`], which is also what an all-zero
//! (never touched) entry reads as.

use crate::migratetype::Migratetype;
use crate::order::Order;
use crate::pfn::Pfn;
use crate::support::sync::{AtomicU32, Ordering};
use crate::zone_idx::{MAX_ZONES, ZoneIdx};

/// What a block's head page is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum PageState {
    /// Not the head of a block: inside a block, or never used (all-zero entry).
    Tail = 0,
    /// Head of a free block on a zone's `free_area` list.
    Free = 1,
    /// Head of a block handed out to a caller.
    Allocated = 2,
    /// Head of a free block held in a per-thread cache.
    Cached = 3,
    /// Head of a free block taken off its list while it is being handed back
    /// to the OS (the kernel's isolated pages during free page reporting).
    Isolated = 4,
    /// Head of one tile of an allocation of any number of pages
    /// (`page_alloc/exact.rs`); every tile but the first carries
    /// [`flag::CONTINUED`].
    Exact = 5,
    /// Head of a block handed out through a `MovableHandle`: allocated, with
    /// an owner that can move it (the kernel's `page->mapping` of a movable
    /// page); the owner's id is in the entry's `prev` link.
    Owned = 6,
    /// Head of an owned block that compaction has isolated and is moving.
    Migrating = 7,
    /// A migrating block its owner freed meanwhile: compaction frees it
    /// when the move ends.
    MigratingFreed = 8,
}

impl PageState {
    fn from_bits(bits: u8) -> Self {
        match bits {
            1 => Self::Free,
            2 => Self::Allocated,
            3 => Self::Cached,
            4 => Self::Isolated,
            5 => Self::Exact,
            6 => Self::Owned,
            7 => Self::Migrating,
            8 => Self::MigratingFreed,
            _ => Self::Tail,
        }
    }
}

/// Block content flags, kept in the head page's entry.
pub(crate) mod flag {
    /// The block's contents are known to be zero (never touched, or purged
    /// with `MADV_DONTNEED`): a `ZERO` allocation needs no memset.
    pub(crate) const ZEROED: u8 = 1 << 0;
    /// The block has been handed back to the OS (or never touched): it costs
    /// no RSS.
    pub(crate) const PURGED: u8 = 1 << 1;
    /// Both: what a never-touched block is.
    pub(crate) const PRISTINE: u8 = ZEROED | PURGED;
    /// On an [`Exact`](super::PageState::Exact) tile: not the first of its
    /// allocation.
    pub(crate) const CONTINUED: u8 = 1 << 2;
    /// What is known about a free block's contents: the flags a block
    /// keeps through splits and merges.
    pub(crate) const CONTENT: u8 = ZEROED | PURGED;
}

/// Bits of the zone byte below the zone: the head's migratetype. On a free
/// block it is the type of the list the block is on, on an allocated or
/// cached one the type it was allocated as. The byte `zone << 2 | type` is
/// what the per-thread caches index their lists by, so a free finds its
/// list with the one shift that finds its zone.
pub(crate) const MT_BITS: u32 = 2;
const MT_MASK: u8 = (1 << MT_BITS) - 1;
/// Zones a head word can name beside its migratetype.
pub(crate) const ZONES_IN_WORD: usize = 256 >> MT_BITS;
const _: () = assert!(crate::migratetype::NR_MIGRATETYPES == 1 << MT_BITS);
const _: () = assert!(MAX_ZONES <= ZONES_IN_WORD);

/// The packed head-page word: state, order, flags and zone in one atomic so
/// that one load validates a free and one store records a transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PageInfo {
    pub state: PageState,
    order: u8,
    pub flags: u8,
    /// `zone << MT_BITS | migratetype`.
    zone: u8,
}

impl PageInfo {
    pub(crate) const TAIL: Self = Self { state: PageState::Tail, order: 0, flags: 0, zone: 0 };

    #[inline]
    pub(crate) const fn new(state: PageState, order: Order, flags: u8, zone: ZoneIdx) -> Self {
        Self { state, order: order.get() as u8, flags, zone: (zone.index() << MT_BITS) as u8 }
    }

    /// The block's order (on a head).
    #[inline(always)]
    pub(crate) const fn order(self) -> Order {
        Order::from_bits(self.order)
    }

    /// The head's migratetype (see [`MT_BITS`]).
    #[inline(always)]
    pub(crate) const fn migratetype(self) -> Migratetype {
        Migratetype::from_index((self.zone & MT_MASK) as usize)
    }

    /// The same head with migratetype `mt`.
    #[inline(always)]
    pub(crate) const fn with_migratetype(self, mt: Migratetype) -> Self {
        Self { zone: (self.zone & !MT_MASK) | mt as u8, ..self }
    }

    /// The packed word of an allocated head of order 0 and migratetype 0
    /// in zone `zone`: the base of [`allocated_word`](Self::allocated_word).
    #[inline(always)]
    pub(crate) const fn allocated_base(zone: ZoneIdx) -> u32 {
        Self::new(PageState::Allocated, Order::ZERO, 0, zone).pack()
    }

    /// The packed word of an allocated head of `order` and migratetype
    /// `mt` (no content flags) in the zone of `base`, an
    /// [`allocated_base`](Self::allocated_base): what `pack` gives, with
    /// one OR per field.
    #[inline(always)]
    pub(crate) const fn allocated_word(base: u32, order: u32, mt: usize) -> u32 {
        base | order << 8 | (mt as u32) << 24
    }

    /// The index of the block's zone (on a head).
    #[inline(always)]
    pub(crate) const fn zone(self) -> ZoneIdx {
        ZoneIdx::from_bits(self.zone >> MT_BITS)
    }

    /// The same head in another state.
    #[inline(always)]
    pub(crate) const fn with_state(self, state: PageState) -> Self {
        Self { state, ..self }
    }

    /// The same head with another order.
    #[inline(always)]
    pub(crate) const fn with_order(self, order: Order) -> Self {
        Self { order: order.get() as u8, ..self }
    }

    /// The low 16 bits (state and order) of an allocated head of `order`:
    /// `word & 0xffff` equals this exactly for a block that may be freed
    /// with that order.
    #[inline(always)]
    pub(crate) const fn allocated_key(order: u32) -> u32 {
        PageState::Allocated as u32 | order << 8
    }

    /// The zone and migratetype recorded in a packed info word, as
    /// `zone << 2 | type`.
    #[inline(always)]
    pub(crate) const fn zone_type_of_word(word: u32) -> usize {
        (word >> 24) as usize
    }

    #[inline(always)]
    pub(crate) const fn pack(self) -> u32 {
        self.state as u32 | (self.order as u32) << 8 | (self.flags as u32) << 16 | (self.zone as u32) << 24
    }

    #[inline]
    fn unpack(word: u32) -> Self {
        Self {
            state: PageState::from_bits(word as u8),
            order: (word >> 8) as u8,
            flags: (word >> 16) as u8,
            zone: (word >> 24) as u8,
        }
    }
}

/// The metadata of one page: 12 bytes.
///
/// All fields are atomics accessed `Relaxed`: every transition that others
/// depend on is ordered by a lock (the zone lock for `Free`, the per-thread
/// cache protocol for `Cached`), and the atomics make the lock-free reads of
/// the free path's validation well-defined even when they race.
#[repr(C)]
#[derive(Default)]
pub(crate) struct PageMeta {
    info: AtomicU32,
    prev: AtomicU32,
    next: AtomicU32,
}

#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<PageMeta>() == 12);

impl PageMeta {
    #[inline]
    pub(crate) fn info(&self) -> PageInfo {
        PageInfo::unpack(self.info.load(Ordering::Relaxed))
    }

    #[inline]
    pub(crate) fn set_info(&self, info: PageInfo) {
        self.info.store(info.pack(), Ordering::Relaxed);
    }

    /// Stores a packed info word (see [`PageInfo::pack`]).
    #[inline(always)]
    pub(crate) fn set_info_word(&self, word: u32) {
        self.info.store(word, Ordering::Relaxed);
    }

    /// The packed info word, for the fast paths' one-compare validation.
    #[inline(always)]
    pub(crate) fn info_word(&self) -> u32 {
        self.info.load(Ordering::Relaxed)
    }

    /// Replaces the info word with `new` if it is still `current`: the
    /// transitions a free and compaction may race for on an owned block
    /// (the kernel settles that race with the page's reference count).
    /// AcqRel: whoever wins sees what the last owner of the block wrote.
    #[inline]
    pub(crate) fn cas_info(&self, current: PageInfo, new: PageInfo) -> Result<(), PageInfo> {
        self.info
            .compare_exchange(current.pack(), new.pack(), Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
            .map_err(PageInfo::unpack)
    }

    /// Replaces the packed info word `current` with `new`, if it is still
    /// `current`; whether it did. How every free claims an allocated head
    /// before it puts the block on any list: of two frees of one block
    /// racing each other, exactly one changes the word, and the other is
    /// refused (a block on two lists would be handed out twice). Relaxed:
    /// the claim only decides who frees; the lists the winner then uses
    /// are ordered by their own protocol (the zone lock, the cache
    /// handshake).
    #[inline(always)]
    pub(crate) fn claim_word(&self, current: u32, new: u32) -> bool {
        self.info.compare_exchange(current, new, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }

    /// Stores the info word with Release: publishes what was written
    /// before (an owned block's owner) to whoever reads the state with
    /// Acquire.
    #[inline]
    pub(crate) fn publish_info(&self, info: PageInfo) {
        self.info.store(info.pack(), Ordering::Release);
    }

    /// The owner id of an owned block's head: kept in the `prev` link,
    /// which only free blocks use.
    #[inline]
    pub(crate) fn owner(&self) -> u32 {
        self.prev.load(Ordering::Relaxed)
    }

    /// Records the owner id of a block about to become owned.
    #[inline]
    pub(crate) fn set_owner(&self, owner: u32) {
        self.prev.store(owner, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn prev(&self) -> Pfn {
        Pfn::from_raw(self.prev.load(Ordering::Relaxed))
    }

    #[inline]
    pub(crate) fn next(&self) -> Pfn {
        Pfn::from_raw(self.next.load(Ordering::Relaxed))
    }

    #[inline]
    pub(crate) fn set_prev(&self, pfn: Pfn) {
        self.prev.store(pfn.raw(), Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn set_next(&self, pfn: Pfn) {
        self.next.store(pfn.raw(), Ordering::Relaxed);
    }
}

/// `len` values of `T` in memory that reads as zero until written: an
/// anonymous `MAP_NORESERVE` mapping, so a value costs memory only once the
/// page of the mapping it sits in is touched. All-zero must be a valid `T`.
/// Under loom, a `Vec` of defaults (loom's atomics cannot come from zeroed
/// memory).
#[repr(C)]
struct ZeroedArray<T> {
    /// First value; `len` follow. Kept beside `len` so the fast paths'
    /// bounds check and lookup read one cache line.
    ptr: std::ptr::NonNull<T>,
    len: usize,
    #[cfg(not(loom))]
    _map: memmap2::MmapMut,
    #[cfg(loom)]
    _values: Vec<T>,
}

impl<T: Default> ZeroedArray<T> {
    #[cfg(not(loom))]
    fn new(len: usize) -> std::io::Result<Self> {
        let bytes = len * std::mem::size_of::<T>();
        let map = memmap2::MmapOptions::new().len(bytes.max(1)).no_reserve_swap().map_anon()?;
        let ptr = std::ptr::NonNull::new(map.as_ptr().cast::<T>().cast_mut()).expect("mmap returned null");
        Ok(Self { ptr, len, _map: map })
    }

    #[cfg(loom)]
    fn new(len: usize) -> std::io::Result<Self> {
        let mut values: Vec<T> = (0..len).map(|_| T::default()).collect();
        let ptr = std::ptr::NonNull::new(values.as_mut_ptr()).expect("vec pointer");
        Ok(Self { ptr, len, _values: values })
    }
}

/// The metadata array, one entry per page of the region.
#[repr(C)]
pub(crate) struct MemMap {
    entries: ZeroedArray<PageMeta>,
}

// SAFETY: the entries are atomics; the pointer is into memory owned by self.
unsafe impl Send for MemMap {}
// SAFETY: as above.
unsafe impl Sync for MemMap {}

impl MemMap {
    /// Reserves metadata for `pages` pages. Nothing is committed: entries
    /// start as zero pages, and all-zero is a valid [`PageMeta`] (a tail).
    pub(crate) fn new(pages: usize) -> std::io::Result<Self> {
        Ok(Self { entries: ZeroedArray::new(pages)? })
    }

    #[inline]
    fn entries(&self) -> &[PageMeta] {
        // SAFETY: `ptr` points at `len` initialised entries owned by self
        // (an anonymous mapping, page-aligned and zero-filled, all-zero being
        // a valid PageMeta; or the loom Vec). Entries are only accessed
        // through atomics, so shared references are sound.
        unsafe { std::slice::from_raw_parts(self.entries.ptr.as_ptr(), self.entries.len) }
    }

    /// The entry of page `pfn`. A page number beyond the region comes from
    /// a broken list link or head (metadata a bug overwrote): fatal, with
    /// the caller's place, rather than a panic (whose message allocates).
    #[inline]
    #[track_caller]
    pub(crate) fn page(&self, pfn: Pfn) -> &PageMeta {
        match self.entries().get(pfn.index()) {
            Some(page) => page,
            None => self.beyond(pfn),
        }
    }

    #[cold]
    #[inline(never)]
    #[track_caller]
    fn beyond(&self, pfn: Pfn) -> ! {
        crate::support::report::fatal(format_args!(
            "page {} is beyond the {} pages of the region (a broken list link or head)",
            pfn.raw(),
            self.entries.len
        ))
    }

    /// The entry of page `pfn` without a bounds check.
    ///
    /// # Safety
    /// `pfn` must be below the number of pages (as `Region::pfn_of`
    /// guarantees: the metadata has one entry per page of the region).
    #[inline(always)]
    pub(crate) unsafe fn page_unchecked(&self, pfn: Pfn) -> &PageMeta {
        debug_assert!(pfn.index() < self.entries.len);
        // SAFETY: in bounds per the caller's contract; see `entries`.
        unsafe { &*self.entries.ptr.as_ptr().add(pfn.index()) }
    }

    /// Entries `start..end`, for walks.
    #[track_caller]
    pub(crate) fn range(&self, start: Pfn, end: Pfn) -> &[PageMeta] {
        match self.entries().get(start.index()..end.index()) {
            Some(pages) => pages,
            None => crate::support::report::fatal(format_args!(
                "pages {}..{} are not within the {} pages of the region",
                start.raw(),
                end.raw(),
                self.entries.len
            )),
        }
    }
}

/// Bytes of one [`SideTable`] slot.
#[cfg(not(loom))]
pub(crate) const SIDE_SLOT_BYTES: usize = 128;
/// Bytes of one [`SideTable`] slot (loom's atomics are larger).
#[cfg(loom)]
pub(crate) const SIDE_SLOT_BYTES: usize = 512;

/// One slot of the side table.
#[repr(C, align(64))]
struct SideSlot([u8; SIDE_SLOT_BYTES]);

const _: () = assert!(std::mem::size_of::<SideSlot>() == SIDE_SLOT_BYTES);

impl Default for SideSlot {
    fn default() -> Self {
        Self([0; SIDE_SLOT_BYTES])
    }
}

/// A second out-of-band array, one [`SIDE_SLOT_BYTES`] slot per page, for
/// the layers above the buddy allocator: the slab layer keeps a slab's
/// header in the slot of the slab's first page. Like the [`MemMap`], it is
/// lazily backed (a slot costs memory once a slab has started at its page)
/// and never inside the pages themselves, so slab headers of neighbouring
/// slabs sit next to each other (not one per slab at the same offset of
/// every block, where they would compete for the same cache sets) and an
/// overrun of an object cannot reach them.
pub(crate) struct SideTable {
    slots: ZeroedArray<SideSlot>,
}

// SAFETY: the table hands out raw slot pointers; what is stored in a slot
// and who may touch it is the business of the layer that owns the slot.
unsafe impl Send for SideTable {}
// SAFETY: as above.
unsafe impl Sync for SideTable {}

impl SideTable {
    /// Reserves a slot for each of `pages` pages; nothing is committed.
    pub(crate) fn new(pages: usize) -> std::io::Result<Self> {
        Ok(Self { slots: ZeroedArray::new(pages)? })
    }

    /// The first slot (page 0's): slot `pfn` is [`SIDE_SLOT_BYTES`] `*
    /// pfn` bytes further, aligned to 64 and zero until first written.
    pub(crate) fn start(&self) -> *mut u8 {
        self.slots.ptr.as_ptr().cast()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn info_round_trips_through_the_packed_word() {
        let info = PageInfo::new(PageState::Cached, Order::new(17).unwrap(), flag::PRISTINE, ZoneIdx::new(63).unwrap())
            .with_migratetype(Migratetype::Reclaimable);
        let meta = PageMeta::default();
        meta.set_info(info);
        assert_eq!(meta.info(), info);
        assert_eq!(
            (info.zone(), info.migratetype(), info.order()),
            (ZoneIdx::new(63).unwrap(), Migratetype::Reclaimable, Order::new(17).unwrap())
        );
        assert_eq!(PageMeta::default().info(), PageInfo::TAIL);
    }

    #[test]
    fn every_state_decodes_from_its_number() {
        for bits in 0..=u8::MAX {
            let state = PageState::from_bits(bits);
            if (1..=8).contains(&bits) {
                assert_eq!(state as u8, bits);
            } else {
                assert_eq!(state, PageState::Tail, "{bits}");
            }
        }
    }

    #[test]
    fn a_large_memmap_costs_nothing_up_front() {
        // 16 Mi entries = 256 MiB of address space, none of it committed.
        let map = MemMap::new(16 << 20).unwrap();
        assert_eq!(map.page(Pfn::new((16 << 20) - 1)).info(), PageInfo::TAIL);
    }
}
