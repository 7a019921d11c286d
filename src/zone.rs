//! A zone: a contiguous, max-order-aligned slice of the region with its own
//! lock around its buddy state, its watermarks, and lock-free mirrors of its
//! free-page count and free orders so that the fast path's watermark check
//! (`zone_watermark_fast`) takes no lock.

use crossbeam_utils::CachePadded;

use crate::buddy::{Block, Buddy, NR_ORDERS};
use crate::page::{MemMap, PageState, Pfn};
use crate::sync::{AtomicU32, AtomicU64, AtomicUsize, Mutex, MutexGuard, Ordering};
use crate::watermark::{AllocMode, Watermarks, zone_watermark_ok};

/// What the zone lock protects: the buddy lists and the per-order counters
/// of the paths that go through them.
pub(crate) struct ZoneInner {
    pub buddy: Buddy,
    /// Blocks handed out per order (straight from the buddy lists).
    pub allocs: [u64; NR_ORDERS],
    /// Blocks given back per order (straight to the buddy lists).
    pub frees: [u64; NR_ORDERS],
}

/// Lock-free copies of what the watermark check reads, refreshed under the
/// lock after every change (`publish`).
#[derive(Default)]
struct ZoneMirror {
    free_pages: AtomicUsize,
    order_mask: AtomicU32,
}

/// One zone.
pub(crate) struct Zone {
    pub index: u8,
    pub start: Pfn,
    pub end: Pfn,
    watermarks: [AtomicUsize; 3],
    inner: CachePadded<Mutex<ZoneInner>>,
    mirror: CachePadded<ZoneMirror>,
    /// Allocation attempts that found no block in this zone within the marks.
    pub watermark_failures: AtomicU64,
}

impl Zone {
    pub(crate) fn new(index: u8, start: Pfn, end: Pfn, max_order: u32, marks: Watermarks) -> Self {
        let buddy = Buddy::new(index, start, end, max_order);
        let mirror = ZoneMirror::default();
        mirror.free_pages.store(buddy.nr_free(), Ordering::Relaxed);
        mirror.order_mask.store(buddy.order_mask(), Ordering::Relaxed);
        Self {
            index,
            start,
            end,
            watermarks: [AtomicUsize::new(marks.min), AtomicUsize::new(marks.low), AtomicUsize::new(marks.high)],
            inner: CachePadded::new(Mutex::new(ZoneInner { buddy, allocs: [0; NR_ORDERS], frees: [0; NR_ORDERS] })),
            mirror: CachePadded::new(mirror),
            watermark_failures: AtomicU64::new(0),
        }
    }

    /// Pages the zone spans.
    #[inline]
    pub(crate) fn spanned(&self) -> usize {
        (self.end - self.start) as usize
    }

    /// The zone's watermarks.
    pub(crate) fn watermarks(&self) -> Watermarks {
        Watermarks {
            min: self.watermarks[0].load(Ordering::Relaxed),
            low: self.watermarks[1].load(Ordering::Relaxed),
            high: self.watermarks[2].load(Ordering::Relaxed),
        }
    }

    /// Free pages in the buddy lists and frontier, read without the lock.
    #[inline]
    pub(crate) fn free_pages(&self) -> usize {
        self.mirror.free_pages.load(Ordering::Relaxed)
    }

    /// `zone_watermark_fast`: the watermark check on the lock-free mirrors.
    /// The answer may be stale by the time the lock is taken, as in the
    /// kernel; the lists stay consistent either way.
    #[inline]
    pub(crate) fn watermark_ok(&self, order: u32, mode: AllocMode) -> bool {
        let Some(mark) = mode.mark else { return true };
        let mark = self.watermarks[mark as usize].load(Ordering::Relaxed);
        zone_watermark_ok(self.free_pages(), order, mark, mode, self.mirror.order_mask.load(Ordering::Relaxed))
    }

    /// Locks the zone.
    #[inline]
    pub(crate) fn lock(&self) -> ZoneGuard<'_> {
        ZoneGuard { zone: self, inner: self.inner.lock() }
    }

    /// Takes one block of `order` (the kernel's `rmqueue_buddy`).
    #[inline]
    pub(crate) fn rmqueue(&self, mm: &MemMap, order: u32) -> Option<Block> {
        let mut zone = self.lock();
        let block = zone.inner.buddy.rmqueue(mm, order, PageState::Allocated)?;
        zone.inner.allocs[order as usize] += 1;
        Some(block)
    }
}

/// A locked zone. Dropping it refreshes the lock-free mirrors, so no change
/// to the lists can forget to publish the new free count.
pub(crate) struct ZoneGuard<'a> {
    zone: &'a Zone,
    pub inner: MutexGuard<'a, ZoneInner>,
}

impl Drop for ZoneGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        let mirror = &self.zone.mirror;
        mirror.free_pages.store(self.inner.buddy.nr_free(), Ordering::Relaxed);
        mirror.order_mask.store(self.inner.buddy.order_mask(), Ordering::Relaxed);
    }
}
