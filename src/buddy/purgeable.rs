//! What a purge may hand back of a zone's free memory: which blocks count
//! (whole huge pages, or smaller once the free memory is fragmented), the
//! purge timer's budget (what stayed free since the last pass, and the
//! excess over the share kept), and the isolation of resident free blocks
//! while their pages are handed back (`reclaim/purge.rs` does the handing back).

use super::{Buddy, NR_MIGRATETYPES};
use crate::order::Order;
use crate::page::{MemMap, PageInfo, PageState, flag};
use crate::pfn::{NIL, Pfn};

/// Free pages below the purge order a zone keeps resident at least before
/// a purge hands those back too (512 KiB; see [`Buddy::purge_order`]).
/// With 8 or 2 MiB, the soak's RSS (huge pages on) went over 1.5 x live +
/// 64 MiB now and then.
const SPLIT_PURGE_PAGES: usize = 128;

/// Recently freed memory the purge timer leaves resident per zone: a
/// `2^-n`th of the pages in use ...
const RETAIN_SHARE: u32 = 4;
/// ... plus this many pages (2 MiB).
const RETAIN_MIN: usize = 512;

impl Buddy {
    /// The smallest order a purge hands back when memory is not
    /// fragmented (see [`purge_order`](Self::purge_order)).
    #[inline]
    pub(crate) fn purge_min_order(&self) -> Order {
        self.purge_min_order
    }

    /// Resident free pages on the lists, of any order.
    #[inline]
    fn resident_free_pages(&self) -> usize {
        self.listed_pages - self.purged_pages
    }

    /// Resident free pages in blocks below `purge_min_order`: with huge
    /// pages, free parts of huge pages that are partly in use.
    #[inline]
    fn resident_below_purge_order(&self) -> usize {
        self.resident_free_pages() - self.purgeable_pages
    }

    /// Pages allocated or cached (neither on the lists, nor above the
    /// frontier, nor isolated by a purge).
    #[inline]
    fn pages_in_use(&self) -> usize {
        self.frontier - self.start - self.listed_pages - self.isolated_pages
    }

    /// The smallest order a purge hands back now: `purge_min_order`, or 0
    /// once the free pages in blocks below it pass a quarter of the pages
    /// in use (and at least [`SPLIT_PURGE_PAGES`]). A fragmented heap must
    /// give memory back even if that splits huge pages (the kernel may
    /// collapse them again later); a large heap keeps its huge pages
    /// whole while their free parts stay small beside what it uses.
    #[inline]
    pub(super) fn purge_order(&self) -> Order {
        let fragmented = self.resident_below_purge_order() > SPLIT_PURGE_PAGES.max(self.pages_in_use() / 4);
        if fragmented { Order::ZERO } else { self.purge_min_order }
    }

    /// Resident free pages a purge would hand back now.
    #[inline]
    pub(crate) fn purge_target_pages(&self) -> usize {
        if self.purge_order() == Order::ZERO { self.resident_free_pages() } else { self.purgeable_pages }
    }

    /// Free pages isolated by a purge in progress (off the lists, not
    /// counted as free until put back).
    #[inline]
    pub(crate) fn isolated_pages(&self) -> usize {
        self.isolated_pages
    }

    /// Blocks were taken off the lists for use (an allocation, a growth in
    /// place, a range or a compaction target): lowers the marks of what
    /// stayed free.
    #[inline(always)]
    pub(super) fn note_taken(&mut self) {
        self.purgeable_low = self.purgeable_low.min(self.purgeable_pages);
        self.resident_low = self.resident_low.min(self.resident_free_pages());
    }

    /// What the purge timer hands back, in pages: the resident free pages
    /// that stayed free since the last pass (nothing took them for use: it
    /// may have taken others), and whatever exceeds [`RETAIN_SHARE`] of the
    /// pages in use plus [`RETAIN_MIN`], both counted in the blocks a purge
    /// takes now ([`purge_order`](Self::purge_order)). Memory a program
    /// frees and asks for again within the purge delay is then not purged
    /// and faulted in each time (mimalloc-bench's malloc-large: 3.2 s ->
    /// 2.6 s), and RSS stays within the soak's bound as when every pass
    /// purged everything (90% of it; purging only what stayed free went
    /// over it in 5 of 534 samples; keeping a quarter of the pages in use
    /// plus 4 MiB came to 98%, an eighth to 94-96%, a sixteenth plus 2 MiB
    /// to 90%).
    pub(crate) fn purge_budget(&self) -> usize {
        // Counted as `purge_target_pages` counts.
        let (stayed, target) = if self.purge_order() == Order::ZERO {
            (self.resident_low, self.resident_free_pages())
        } else {
            (self.purgeable_low, self.purgeable_pages)
        };
        let retain = (self.pages_in_use() >> RETAIN_SHARE) + RETAIN_MIN;
        stayed.min(target).max(target.saturating_sub(retain))
    }

    /// A purge pass is over: what is free now starts the next interval.
    pub(crate) fn end_purge_pass(&mut self) {
        self.purgeable_low = self.purgeable_pages;
        self.resident_low = self.resident_free_pages();
    }

    /// Takes up to `out.len()` free blocks (and about `max_pages` pages: at
    /// least one block; never more than `limit` pages) of order at least [`purge_order`](Self::purge_order)
    /// that are still resident (not purged) off the lists, largest first,
    /// marks them `Isolated`, and returns how many it wrote to `out`.
    /// Resident blocks sit at the front of their lists, so each list is
    /// read only as far as its first purged block.
    pub(crate) fn isolate_resident(
        &mut self,
        mm: &MemMap,
        (max_pages, limit): (usize, usize),
        out: &mut [(Pfn, Order)],
    ) -> usize {
        let mut n = 0;
        let mut pages = 0;
        for order in self.purge_order().through(self.max_order).rev() {
            for mt in 0..NR_MIGRATETYPES {
                while n < out.len() && pages + order.pages() <= limit && (n == 0 || pages + order.pages() <= max_pages)
                {
                    let pfn = self.free_area[order.index()][mt].head;
                    if pfn == NIL {
                        break;
                    }
                    let info = mm.page(pfn).info();
                    if info.flags & flag::PURGED != 0 {
                        break;
                    }
                    self.del_from_free_list(mm, pfn, order, info);
                    mm.page(pfn).set_info(PageInfo::new(PageState::Isolated, order, 0, self.zone));
                    self.isolated_pages += order.pages();
                    pages += order.pages();
                    out[n] = (pfn, order);
                    n += 1;
                }
            }
        }
        n
    }

    /// Puts back a block taken by [`isolate_resident`](Self::isolate_resident),
    /// now purged (`flags` says whether its contents are known zero).
    pub(crate) fn putback_isolated(&mut self, mm: &MemMap, pfn: Pfn, order: Order, flags: u8) {
        debug_assert_eq!(mm.page(pfn).info().state, PageState::Isolated);
        self.isolated_pages -= order.pages();
        self.free_one_page(mm, pfn, order, flags);
    }
}
