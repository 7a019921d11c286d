//! A zone: a contiguous, max-order-aligned slice of the region with its own
//! lock around its buddy state, its watermarks, and lock-free mirrors of its
//! free-page count and free orders so that the fast path's watermark check
//! (`zone_watermark_fast`) takes no lock.

use crossbeam_utils::CachePadded;

use crate::buddy::{Block, Buddy, BuddyOrders, Grouping, highatomic_limit};
use crate::compact_state::Deferral;
use crate::migratetype::Migratetype;
use crate::numa::NumaEvents;
use crate::order::{NR_ORDERS, Order};
use crate::page::{MemMap, PageState};
use crate::pcp_config::{
    NR_PCP_LISTS, PAGE_ALLOC_COSTLY_ORDER, PCP_HUGE_ORDER, PCP_ORDERS, PcpConfig, pcp_list, pcp_type, zone_highsize,
};
use crate::pfn::{NIL, Pfn};
use crate::support::sync::{AtomicU32, AtomicU64, AtomicUsize, Mutex, MutexGuard, Ordering};
use crate::watermark::{AllocMode, Mark, Watermarks, zone_watermark_ok};
use crate::zone_idx::ZoneIdx;

/// What the zone lock protects: the buddy lists and the per-order counters
/// of the paths that go through them.
pub(crate) struct ZoneInner {
    pub buddy: Buddy,
    /// Blocks handed out per order (straight from the buddy lists).
    pub allocs: [u64; NR_ORDERS],
    /// Blocks given back per order (straight to the buddy lists).
    pub frees: [u64; NR_ORDERS],
    /// Per-thread cache refills (`rmqueue_bulk` calls).
    pub pcp_refills: u64,
    /// Per-thread cache trims (`free_pcppages_bulk` calls).
    pub pcp_trims: u64,
    /// Whole caches drained into this zone (remote drains and thread exits).
    pub pcp_drained: u64,
    /// Cached blocks refused on their way back because their metadata no
    /// longer said cached (a racing double free got into two caches).
    pub pcp_corrupt: u64,
    /// Batches trimmed from one thread's cache, kept for the next refill.
    pub pool: BatchPool,
}

/// Blocks per order a zone keeps between a trim and the next refill: two
/// of the largest batches.
#[cfg(not(loom))]
const POOL_CAPACITY: usize = 128;
#[cfg(loom)]
const POOL_CAPACITY: usize = 4;

/// The pool's capacity at `order`: [`POOL_CAPACITY`] blocks up to
/// [`PAGE_ALLOC_COSTLY_ORDER`]; above it, no more pages than the costly
/// order's pool holds (at least two blocks), so that large blocks trimmed
/// from a thread's cache do not pile up out of the buddy lists; none at the
/// huge page order.
const fn pool_capacity(order: usize) -> usize {
    let costly = PAGE_ALLOC_COSTLY_ORDER as usize;
    if order == PCP_HUGE_ORDER {
        // Back to the lists, where a purge finds it.
        0
    } else if order <= costly {
        POOL_CAPACITY
    } else {
        let blocks = POOL_CAPACITY >> (order - costly);
        if blocks > 2 { blocks } else { 2 }
    }
}

/// Cached blocks handed from a thread whose list grew past `high` to the
/// next thread that refills, without passing through the buddy lists.
///
/// With one thread allocating and another freeing (producer/consumer),
/// every block would otherwise be merged into the lists by the freeing
/// thread's trim and split out again by the allocating thread's refill; the
/// pool turns that into copying a batch of page numbers. Blocks in the pool
/// stay `Cached` in the metadata and count as cached pages; a drain (and
/// reclaim) returns them to the lists.
///
/// One pool per per-thread list (order and migratetype), so that a batch
/// goes to the next thread that refills the same type.
pub(crate) struct BatchPool {
    count: [usize; NR_PCP_LISTS],
    pfns: [[Pfn; POOL_CAPACITY]; NR_PCP_LISTS],
}

impl BatchPool {
    const fn new() -> Self {
        Self { count: [0; NR_PCP_LISTS], pfns: [[NIL; POOL_CAPACITY]; NR_PCP_LISTS] }
    }

    /// Blocks held per order 0..=`PCP_MAX_ORDER`, every type.
    pub(crate) fn counts(&self) -> [usize; PCP_ORDERS] {
        let mut counts = [0; PCP_ORDERS];
        for (list, n) in self.count.iter().enumerate() {
            counts[list % PCP_ORDERS] += n;
        }
        counts
    }

    /// The blocks of per-thread list `list`, for `check()`.
    pub(crate) fn blocks(&self, list: usize) -> &[Pfn] {
        &self.pfns[list][..self.count[list]]
    }
}

/// Lock-free copies of what the watermark check reads, refreshed under the
/// lock after every change (`publish`).
#[derive(Default)]
struct ZoneMirror {
    free_pages: AtomicUsize,
    order_mask: AtomicU32,
    /// The orders of the high-atomic reserve's free blocks.
    reserve_mask: AtomicU32,
    /// Free pages in the high-atomic reserve: not free to requests that
    /// may not use it.
    reserve_pages: AtomicUsize,
    /// Pages in high-atomic pageblocks, free or not.
    reserved: AtomicUsize,
    /// Free pages on the lists that still cost RSS (neither purged nor
    /// never used), in blocks a purge would hand back now.
    purgeable: AtomicUsize,
}

/// One zone.
pub(crate) struct Zone {
    pub index: ZoneIdx,
    pub start: Pfn,
    pub end: Pfn,
    watermarks: [AtomicUsize; 3],
    /// Pages above the arena's capacity (`Arena::set_capacity`): subtracted
    /// from the free count in every watermark check, so the budget holds.
    offline: AtomicUsize,
    inner: CachePadded<Mutex<ZoneInner>>,
    mirror: CachePadded<ZoneMirror>,
    /// Allocation attempts that found no block in this zone within the marks.
    pub watermark_failures: AtomicU64,
    /// NUMA events of this zone; see [`crate::numa`].
    pub numa_events: NumaEvents,
    /// `pageblock_order`, for lock-free reads.
    pub pageblock_order: Order,
    /// Compaction's deferral after failures in this zone.
    pub deferral: Deferral,
    pcp: ZonePcpParams,
}

/// The per-thread cache sizing in force for a zone, in pages.
struct ZonePcpParams {
    batch: usize,
    /// `high` for one thread (the kernel: the low watermark), or the fixed
    /// high; changes with the capacity.
    base_high: AtomicUsize,
    fixed: bool,
    high: AtomicUsize,
    /// Threads whose preferred zone this is.
    threads: AtomicUsize,
}

impl Zone {
    /// `None` if the zone's pageblock table cannot be had.
    pub(crate) fn new(
        index: ZoneIdx,
        (start, end): (Pfn, Pfn),
        (orders, grouping): (BuddyOrders, Grouping),
        marks: Watermarks,
        pcp: PcpConfig,
    ) -> Option<Self> {
        let buddy = Buddy::new(index, (start, end), orders, grouping)?;
        let mirror = ZoneMirror::default();
        mirror.free_pages.store(buddy.nr_free(), Ordering::Relaxed);
        mirror.order_mask.store(buddy.order_mask(), Ordering::Relaxed);
        Some(Self {
            index,
            start,
            end,
            watermarks: [AtomicUsize::new(marks.min), AtomicUsize::new(marks.low), AtomicUsize::new(marks.high)],
            offline: AtomicUsize::new(0),
            inner: CachePadded::new(Mutex::new(ZoneInner {
                buddy,
                allocs: [0; NR_ORDERS],
                frees: [0; NR_ORDERS],
                pcp_refills: 0,
                pcp_trims: 0,
                pcp_drained: 0,
                pcp_corrupt: 0,
                pool: BatchPool::new(),
            })),
            mirror: CachePadded::new(mirror),
            watermark_failures: AtomicU64::new(0),
            numa_events: NumaEvents::default(),
            pageblock_order: orders.pageblock_order,
            deferral: Deferral::default(),
            pcp: {
                let managed = end - start;
                let (batch, base_high) = pcp.for_zone(managed, marks.low).unwrap_or((0, 0));
                ZonePcpParams {
                    batch,
                    base_high: AtomicUsize::new(base_high),
                    fixed: matches!(pcp, PcpConfig::Fixed { .. }),
                    high: AtomicUsize::new(base_high),
                    threads: AtomicUsize::new(0),
                }
            },
        })
    }

    /// `(batch, high)` in pages for this zone's per-thread lists.
    #[inline]
    pub(crate) fn pcp_params(&self) -> (usize, usize) {
        (self.pcp.batch, self.pcp.high.load(Ordering::Relaxed))
    }

    /// Threads preferring this zone, and so sharing its `high`.
    pub(crate) fn pcp_threads(&self) -> usize {
        self.pcp.threads.load(Ordering::Relaxed)
    }

    /// A thread now prefers this zone: `zone_highsize` splits the low
    /// watermark between one more thread.
    pub(crate) fn pcp_attach(&self) {
        let threads = self.pcp.threads.fetch_add(1, Ordering::Relaxed) + 1;
        self.update_pcp_high(threads);
    }

    /// A thread that preferred this zone has exited.
    pub(crate) fn pcp_detach(&self) {
        let threads = self.pcp.threads.fetch_sub(1, Ordering::Relaxed) - 1;
        self.update_pcp_high(threads);
    }

    fn update_pcp_high(&self, threads: usize) {
        if !self.pcp.fixed {
            let high = zone_highsize(self.pcp.base_high.load(Ordering::Relaxed), self.pcp.batch, threads);
            self.pcp.high.store(high, Ordering::Relaxed);
        }
    }

    /// The low watermark moved (capacity change): recompute `high`.
    fn set_pcp_base_high(&self, low: usize) {
        if !self.pcp.fixed && self.pcp.batch != 0 {
            self.pcp.base_high.store(low, Ordering::Relaxed);
            self.update_pcp_high(self.pcp.threads.load(Ordering::Relaxed));
        }
    }

    /// Whether `pfn` is one of this zone's pages.
    #[inline]
    pub(crate) fn contains(&self, pfn: Pfn) -> bool {
        (self.start..self.end).contains(&pfn)
    }

    /// Pages the zone spans.
    #[inline]
    pub(crate) fn spanned(&self) -> usize {
        self.end - self.start
    }

    /// The zone's watermarks.
    pub(crate) fn watermarks(&self) -> Watermarks {
        Watermarks {
            min: self.watermarks[0].load(Ordering::Relaxed),
            low: self.watermarks[1].load(Ordering::Relaxed),
            high: self.watermarks[2].load(Ordering::Relaxed),
        }
    }

    /// Free pages on the lists that still cost RSS and that a purge may
    /// hand back, read without the lock.
    #[inline]
    pub(crate) fn purgeable_pages(&self) -> usize {
        self.mirror.purgeable.load(Ordering::Relaxed)
    }

    /// Free pages in the buddy lists and frontier, read without the lock.
    #[inline]
    pub(crate) fn free_pages(&self) -> usize {
        self.mirror.free_pages.load(Ordering::Relaxed)
    }

    /// Pages the zone may hand out: its span less the pages above the
    /// arena's capacity (the kernel's `managed_pages`).
    #[inline]
    pub(crate) fn managed(&self) -> usize {
        self.spanned() - self.offline.load(Ordering::Relaxed)
    }

    /// Free pages within the capacity: what watermarks are checked against.
    #[inline]
    pub(crate) fn usable_free_pages(&self) -> usize {
        self.free_pages().saturating_sub(self.offline.load(Ordering::Relaxed))
    }

    /// Sets the pages above capacity and the watermarks that go with the new
    /// managed size (and the per-thread caches' `high`, which follows low).
    pub(crate) fn set_capacity(&self, offline: usize, marks: Watermarks) {
        self.offline.store(offline, Ordering::Relaxed);
        self.watermarks[0].store(marks.min, Ordering::Relaxed);
        self.watermarks[1].store(marks.low, Ordering::Relaxed);
        self.watermarks[2].store(marks.high, Ordering::Relaxed);
        self.set_pcp_base_high(marks.low);
    }

    /// `zone_watermark_fast`: the watermark check on the lock-free mirrors.
    /// The answer may be stale by the time the lock is taken, as in the
    /// kernel; the lists stay consistent either way. Without watermarks
    /// (reclaim's own allocations) the capacity still holds.
    ///
    /// The high-atomic reserve counts only for requests that may use the
    /// reserves (`ALLOC_RESERVES`: `HIGH` or `ATOMIC`).
    #[inline]
    pub(crate) fn watermark_ok(&self, order: Order, mode: AllocMode) -> bool {
        let free = self.usable_free_pages();
        let Some(mark) = mode.mark else { return free >> order.get() != 0 };
        let mark = self.watermarks[mark as usize].load(Ordering::Relaxed);
        let mut order_mask = self.mirror.order_mask.load(Ordering::Relaxed);
        let reserve = self.mirror.reserve_pages.load(Ordering::Relaxed);
        if reserve == 0 {
            return zone_watermark_ok(free, order, mark, mode, order_mask);
        }
        if !mode.high {
            return zone_watermark_ok(free.saturating_sub(reserve), order, mark, mode, order_mask);
        }
        order_mask |= self.mirror.reserve_mask.load(Ordering::Relaxed);
        zone_watermark_ok(free, order, mark, mode, order_mask)
    }

    /// Free pages of the high-atomic reserve, as the lock-free watermark
    /// checks see them.
    pub(crate) fn reserve_free_pages(&self) -> usize {
        self.mirror.reserve_pages.load(Ordering::Relaxed)
    }

    /// Whether the zone's usable free pages are below `mark`: below low
    /// wakes reclaim; reclaim stops once none is below high.
    #[inline]
    pub(crate) fn below(&self, mark: Mark) -> bool {
        self.usable_free_pages() < self.watermarks[mark as usize].load(Ordering::Relaxed)
    }

    /// Locks the zone.
    #[inline]
    #[track_caller]
    pub(crate) fn lock(&self) -> ZoneGuard<'_> {
        ZoneGuard { zone: self, inner: self.inner.lock() }
    }

    /// Takes up to `count` blocks of `order` for a per-thread cache of
    /// type `mt` under one lock acquisition (`rmqueue_bulk`); `put(i, pfn)`
    /// receives each. Returns how many were taken.
    /// Takes the pool's blocks first (see [`BatchPool`]).
    pub(crate) fn rmqueue_bulk(
        &self,
        mm: &MemMap,
        (order, mt): (Order, Migratetype),
        count: usize,
        mut put: impl FnMut(usize, Pfn),
    ) -> usize {
        let mut zone = self.lock();
        #[cfg(feature = "test-hooks")]
        crate::test_hooks::fire_in_zone_lock(&mut zone.inner.buddy, order, mt);
        let o = pcp_list(order.index(), mt.index());
        let pool = &mut zone.inner.pool;
        let from_pool = pool.count[o].min(count);
        let keep = pool.count[o] - from_pool;
        for (i, &pfn) in pool.pfns[o][keep..keep + from_pool].iter().enumerate() {
            put(i, pfn);
        }
        pool.count[o] = keep;
        let mut taken = from_pool;
        while taken < count {
            let Some(block) = zone.inner.buddy.rmqueue(mm, order, mt, PageState::Cached) else { break };
            put(taken, block.pfn);
            taken += 1;
        }
        zone.inner.pcp_refills += 1;
        taken
    }

    /// Gives cached blocks of a type-`mt` list back under one lock
    /// acquisition (`free_pcppages_bulk`): into the pool if the whole batch
    /// fits, else to the buddy lists. Returns whether they went to the lists.
    pub(crate) fn free_pcppages_bulk(
        &self,
        mm: &MemMap,
        (order, mt): (Order, Migratetype),
        pfns: impl ExactSizeIterator<Item = Pfn>,
    ) -> bool {
        let mut zone = self.lock();
        let o = pcp_list(order.index(), mt.index());
        zone.inner.pcp_trims += 1;
        if zone.inner.pool.count[o] + pfns.len() <= pool_capacity(order.index()) {
            for pfn in pfns {
                // The pool list's type, as the lists name it (under loom one
                // list serves every type).
                let list_type = pcp_type(mm.page(pfn).info().migratetype().index());
                if zone.is_cached_here(mm, pfn, order) && list_type == pcp_type(mt.index()) {
                    let pool = &mut zone.inner.pool;
                    pool.pfns[o][pool.count[o]] = pfn;
                    pool.count[o] += 1;
                } else {
                    zone.inner.pcp_corrupt += 1;
                }
            }
            false
        } else {
            for pfn in pfns {
                zone.free_cached(mm, pfn, order);
            }
            true
        }
    }

    /// Returns the pool's blocks to the buddy lists; the pages moved.
    pub(crate) fn drain_pool(&self, mm: &MemMap) -> usize {
        let mut zone = self.lock();
        let mut pages = 0;
        for list in 0..NR_PCP_LISTS {
            let order = Order::from_bits((list % PCP_ORDERS) as u8);
            let n = std::mem::take(&mut zone.inner.pool.count[list]);
            for i in 0..n {
                let pfn = zone.inner.pool.pfns[list][i];
                zone.free_cached(mm, pfn, order);
            }
            pages += n << order.get();
        }
        pages
    }

    /// Takes one block of `order` for type `mt` (the kernel's
    /// `rmqueue_buddy`), as `how` says; in defrag mode a fallback splits a
    /// foreign pageblock only if `may_fragment`.
    #[inline]
    pub(crate) fn rmqueue(
        &self,
        mm: &MemMap,
        (order, mt): (Order, Migratetype),
        how: RmqueueHow,
        may_fragment: bool,
    ) -> Option<Block> {
        let mut zone = self.lock();
        let buddy = &mut zone.inner.buddy;
        let state = PageState::Allocated;
        let nofragment = buddy.defrag_mode() && !may_fragment;
        let block = match how {
            RmqueueHow::Normal => buddy.rmqueue_as(mm, order, mt, state, nofragment),
            RmqueueHow::Growable => buddy.rmqueue_growable(mm, order, mt, state),
            RmqueueHow::HighAtomicFirst => buddy
                .rmqueue_highatomic(mm, order, mt, state)
                .or_else(|| buddy.rmqueue_as(mm, order, mt, state, nofragment)),
        }?;
        zone.inner.allocs[order.index()] += 1;
        Some(block)
    }
}

/// Where [`Zone::rmqueue`] takes a block from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RmqueueHow {
    /// The type's lists, the frontier, then a fallback.
    Normal,
    /// From the start of a larger free block if there is one, so that it
    /// can grow in place.
    Growable,
    /// The high-atomic reserve first (`ALLOC_HIGHATOMIC`).
    HighAtomicFirst,
}

impl Zone {
    /// `reserve_highatomic_pageblock` for the block `pfn`/`order` just
    /// handed to a high-atomic request. The limit is read without the lock
    /// first, as the kernel does: most such requests find it reached.
    pub(crate) fn reserve_highatomic_pageblock(&self, mm: &MemMap, pfn: Pfn, order: Order) {
        let managed = self.managed();
        if self.mirror.reserved.load(Ordering::Relaxed) >= highatomic_limit(managed, self.pageblock_order.pages()) {
            return;
        }
        self.lock().inner.buddy.reserve_highatomic_pageblock(mm, pfn, order, managed);
    }

    /// `unreserve_highatomic_pageblock` in this zone; see
    /// [`Buddy::unreserve_highatomic_pageblock`].
    pub(crate) fn unreserve_highatomic_pageblock(&self, mm: &MemMap, mt: Migratetype, force: bool) -> bool {
        if self.mirror.reserved.load(Ordering::Relaxed) == 0 {
            return false;
        }
        self.lock().inner.buddy.unreserve_highatomic_pageblock(mm, mt, force)
    }
}

/// A locked zone. Dropping it refreshes the lock-free mirrors, so no change
/// to the lists can forget to publish the new free count.
pub(crate) struct ZoneGuard<'a> {
    zone: &'a Zone,
    pub inner: MutexGuard<'a, ZoneInner>,
}

impl ZoneGuard<'_> {
    /// Returns a block from a per-thread cache to the buddy lists, after
    /// checking that its metadata still says it is a cached block of this
    /// order and zone; a block that fails is left alone and counted.
    pub(crate) fn free_cached(&mut self, mm: &MemMap, pfn: Pfn, order: Order) {
        if !self.is_cached_here(mm, pfn, order) {
            self.inner.pcp_corrupt += 1;
            return;
        }
        let flags = mm.page(pfn).info().flags;
        self.inner.buddy.free_one_page(mm, pfn, order, flags);
    }

    /// Whether `pfn` heads a cached block of `order` in this zone.
    fn is_cached_here(&self, mm: &MemMap, pfn: Pfn, order: Order) -> bool {
        let info = mm.page(pfn).info();
        info.state == PageState::Cached && info.order() == order && info.zone() == self.zone.index
    }
}

impl Drop for ZoneGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        let mirror = &self.zone.mirror;
        let buddy = &mut self.inner.buddy;
        mirror.free_pages.store(buddy.nr_free(), Ordering::Relaxed);
        mirror.order_mask.store(buddy.order_mask(), Ordering::Relaxed);
        if buddy.take_reserve_changed() {
            mirror.reserve_mask.store(buddy.reserve_order_mask(), Ordering::Relaxed);
            mirror.reserve_pages.store(buddy.type_pages(Migratetype::HighAtomic), Ordering::Relaxed);
            mirror.reserved.store(buddy.nr_reserved_highatomic(), Ordering::Relaxed);
        }
        mirror.purgeable.store(buddy.purge_target_pages(), Ordering::Relaxed);
    }
}
