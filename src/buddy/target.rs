//! The buddy side of compaction's free scanner: taking a free block out of
//! one pageblock as a migration target (`isolate_freepages_block` and
//! `compaction_alloc` in one step), and the fragmentation index that
//! decides whether compaction can help at all.

use super::Buddy;
use crate::migratetype::Migratetype;
use crate::order::Order;
use crate::page::{MemMap, PageInfo, PageState, flag};
use crate::pfn::Pfn;

/// The kernel's `fill_contig_page_info` over free blocks per order
/// (`free_blocks[o]` blocks of order `o`): free blocks, free pages, and
/// how many order-`order` blocks the free blocks hold.
pub(crate) fn free_block_info(free_blocks: &[usize], order: u32) -> (usize, usize, usize) {
    let (mut total_blocks, mut free_pages, mut suitable) = (0, 0, 0);
    for (o, &n) in free_blocks.iter().enumerate() {
        total_blocks += n;
        free_pages += n << o;
        if o as u32 >= order {
            suitable += n << (o as u32 - order);
        }
    }
    (total_blocks, free_pages, suitable)
}

/// The kernel's `__fragmentation_index` for `order` over a zone's free
/// blocks per order (`free_blocks[o]` blocks of order `o`), in
/// thousandths: -1000 when a free block of that order exists, 0 when a
/// request would fail for lack of memory, towards 1000 when it would fail
/// for fragmentation.
pub(crate) fn fragmentation_index(free_blocks: &[usize], order: u32) -> i32 {
    let (total_blocks, free_pages, suitable) = free_block_info(free_blocks, order);
    if total_blocks == 0 {
        return 0;
    }
    if suitable > 0 {
        return -1000;
    }
    1000 - ((1000 + free_pages * 1000 / (1usize << order)) / total_blocks) as i32
}

impl Buddy {
    /// The fragmentation index of the zone's free memory for `order` (see
    /// [`fragmentation_index`]); never-used memory counts as max-order
    /// blocks.
    pub(crate) fn fragmentation_index(&self, order: Order) -> i32 {
        let mut free_blocks = [0usize; crate::order::NR_ORDERS];
        for (o, n) in Order::ZERO.through(self.max_order).zip(&mut free_blocks) {
            *n = self.nr_free_blocks(o);
        }
        free_blocks[self.max_order.index()] += self.frontier_pages() >> self.max_order.get();
        fragmentation_index(&free_blocks[..=self.max_order.index()], order.get())
    }

    /// Takes a free block of at least `order` out of the pageblock at
    /// `start`, looking from `from` on, as a migration target of exactly
    /// `order`, its head `Migrating` (compaction's until the move ends),
    /// as movable; the rest of the block stays on the lists (after the
    /// target: where the next look starts). Only a pageblock that is
    /// movable, or wholly free (it then becomes movable), is a target
    /// (`suitable_migration_target`). Returns the target, if any, and the
    /// pages walked.
    pub(crate) fn isolate_free_target(
        &mut self,
        mm: &MemMap,
        (start, from): (Pfn, Pfn),
        order: Order,
    ) -> (Option<Pfn>, usize) {
        let pageblock_order = self.pageblocks.order();
        let first = mm.page(start).info();
        // Inside a larger block that starts in an earlier pageblock: that
        // pageblock is the one to look at.
        if first.state == PageState::Tail || start >= self.frontier {
            return (None, 0);
        }
        let block_type = self.pageblocks.get(start);
        // A wholly free pageblock becomes movable, unless it is the
        // high-atomic reserve (whose size is counted).
        let whole_free =
            first.state == PageState::Free && first.order() >= pageblock_order && block_type != Migratetype::HighAtomic;
        if !whole_free && block_type != Migratetype::Movable {
            return (None, 0);
        }
        let end = start + self.pageblocks.nr_pages();
        let mut scanned = 0;
        let mut pfn = from.max(start);
        while pfn < end {
            let info = mm.page(pfn).info();
            let size = if info.state == PageState::Tail { 1 } else { info.order().pages() };
            scanned += size;
            if info.state == PageState::Free && info.order() >= order {
                self.del_from_free_list(mm, pfn, info.order(), info);
                let mt = if whole_free {
                    self.pageblocks.set_range(pfn, info.order(), Migratetype::Movable);
                    Migratetype::Movable
                } else {
                    info.migratetype()
                };
                self.expand(mm, pfn, info.order(), order, info.flags & flag::CONTENT, mt);
                let head = PageInfo::new(PageState::Migrating, order, 0, self.zone);
                mm.page(pfn).set_info(head.with_migratetype(Migratetype::Movable));
                self.note_taken();
                return (Some(pfn), scanned);
            }
            pfn += size;
        }
        (None, scanned)
    }
}
