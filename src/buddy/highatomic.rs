//! The high-atomic reserve: pageblocks set aside for high-order requests
//! that cannot wait (`reserve_highatomic_pageblock`,
//! `unreserve_highatomic_pageblock`).
//!
//! When such a request succeeds, the pageblock it came from becomes
//! `HighAtomic` (up to about 1% of the zone), so the next one finds free
//! blocks that ordinary allocations did not fragment. Under pressure the
//! slow path gives the pageblocks back to the type that needs them.

use super::Buddy;
use crate::migratetype::Migratetype;
use crate::order::Order;
use crate::page::MemMap;
use crate::pfn::Pfn;

/// The most the reserve may hold in a zone of `managed` pages with
/// pageblocks of `pageblock` pages: 1% of it rounded up to whole
/// pageblocks, none if 1% is less than one.
pub(crate) fn highatomic_limit(managed: usize, pageblock: usize) -> usize {
    if managed / 100 < pageblock { 0 } else { (managed / 100).next_multiple_of(pageblock) }
}

impl Buddy {
    /// Pages in high-atomic pageblocks.
    #[inline]
    pub(crate) fn nr_reserved_highatomic(&self) -> usize {
        self.nr_reserved_highatomic
    }

    /// `reserve_highatomic_pageblock`: makes the pageblock(s) of the block
    /// `pfn`/`order`, just allocated, high-atomic if the reserve is below
    /// its limit and they are of an ordinary type. Whether it did.
    pub(crate) fn reserve_highatomic_pageblock(&mut self, mm: &MemMap, pfn: Pfn, order: Order, managed: usize) -> bool {
        if self.nr_reserved_highatomic >= highatomic_limit(managed, self.pageblocks.nr_pages()) {
            return false;
        }
        if !self.pageblocks.get(pfn).is_mergeable() {
            return false;
        }
        let pageblock_order = self.pageblocks.order();
        if order < pageblock_order {
            self.move_freepages_block(mm, pfn, Migratetype::HighAtomic);
            self.nr_reserved_highatomic += self.pageblocks.nr_pages();
            self.reserve_changed = true;
        } else {
            self.pageblocks.set_range(pfn, order, Migratetype::HighAtomic);
            self.nr_reserved_highatomic += order.pages();
            self.reserve_changed = true;
        }
        true
    }

    /// `unreserve_highatomic_pageblock`: gives the pageblock of the first
    /// free high-atomic block (smallest order first) back to type `mt`;
    /// unless `force`, only when the reserve holds more than one
    /// pageblock. Whether one went back.
    pub(crate) fn unreserve_highatomic_pageblock(&mut self, mm: &MemMap, mt: Migratetype, force: bool) -> bool {
        let pageblock = self.pageblocks.nr_pages();
        if self.nr_reserved_highatomic == 0 || (!force && self.nr_reserved_highatomic <= pageblock) {
            return false;
        }
        let Some(order) =
            Order::ZERO.through(self.max_order).find(|&o| self.nr_free_blocks_of(o, Migratetype::HighAtomic) != 0)
        else {
            return false;
        };
        let pfn = self.list_head(order, Migratetype::HighAtomic);
        let size = pageblock.max(order.pages());
        self.nr_reserved_highatomic -= size.min(self.nr_reserved_highatomic);
        self.reserve_changed = true;
        if order < self.pageblocks.order() {
            self.move_freepages_block(mm, pfn, mt);
        } else {
            // A whole free pageblock (or more) of the reserve: free it again
            // as type `mt`, so that it merges with the free buddy the
            // reserve kept it from (the kernel leaves the two apart until
            // one is allocated and freed again).
            let info = mm.page(pfn).info();
            self.del_from_free_list(mm, pfn, order, info);
            self.pageblocks.set_range(pfn, order, mt);
            self.free_one_page(mm, pfn, order, info.flags);
        }
        true
    }
}
