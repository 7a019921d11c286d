//! Stealing from another migratetype when a type's lists and the frontier
//! are empty: the kernel's `__rmqueue_fallback`, `find_suitable_fallback`,
//! `can_steal_fallback`, `steal_suitable_fallback` and
//! `move_freepages_block`.
//!
//! The largest free block of a fallback type is taken (the cheapest
//! estimate of the pageblock with the most free pages). An unmovable or
//! reclaimable request claims the whole pageblock: every free block in it
//! moves to the requester's lists and the pageblock changes type, so the
//! next such requests land in the same pageblock instead of polluting
//! another one (the movable pages left in it can be moved out by
//! compaction; an unmovable page left in a movable pageblock cannot). A
//! movable request large enough to claim (at least half a pageblock)
//! claims when at least half of the pageblock is free or movable
//! (`can_steal_fallback`, `steal_suitable_fallback`). Otherwise only the
//! block needed is taken and the rest stays with its type: a movable
//! request then takes the *smallest* block instead, since a movable page
//! in a foreign pageblock can move away later.
//!
//! The kernel applies the half-free-or-compatible test to unmovable and
//! reclaimable requests too, and in a long mixed workload that leaves an
//! unmovable page in most movable pageblocks (`examples/highalloc.rs`,
//! scenario 3: every pageblock mixed); claiming on the first steal keeps
//! them in few.

use super::Buddy;
use crate::migratetype::Migratetype;
use crate::order::Order;
use crate::page::{MemMap, PageInfo, PageState, flag};
use crate::pfn::Pfn;

/// What a pageblock holds, from a walk of its heads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct PageblockUsage {
    /// Pages in free blocks.
    pub free: usize,
    /// Pages in use (allocated or cached) by movable allocations.
    pub movable: usize,
    /// Pages in use by allocations of a type other than the pageblock's.
    pub foreign: usize,
    /// Pages in use by unmovable or reclaimable allocations.
    pub unmovable: usize,
}

impl Buddy {
    /// `__rmqueue_fallback`: a block of `order` for type `start` taken from
    /// another type's lists, or `None` if no fallback type has one. Counts
    /// the fallback (`mm_page_alloc_extfrag`). With `nofragment`
    /// (`ALLOC_NOFRAGMENT`) only whole free pageblocks are taken: claiming
    /// one mixes nothing.
    pub(super) fn rmqueue_fallback(
        &mut self,
        mm: &MemMap,
        order: Order,
        start: Migratetype,
        nofragment: bool,
    ) -> Option<(Pfn, u8)> {
        let min_order = if nofragment { order.max(self.pageblocks.order()) } else { order };
        let mut found = None;
        for current in min_order.through(self.max_order).rev() {
            let Some((fallback, can_steal)) = self.find_suitable_fallback(current, start) else { continue };
            if !can_steal && start == Migratetype::Movable && current > order {
                // find_smallest: a movable page in a foreign pageblock can
                // move away later; splitting the largest block cannot be
                // undone.
                found = order
                    .through(self.max_order)
                    .find_map(|o| self.find_suitable_fallback(o, start).map(|(mt, steal)| (o, mt, steal)));
                break;
            }
            found = Some((current, fallback, can_steal));
            break;
        }
        let (current, fallback, can_steal) = found?;
        let pfn = self.free_area[current.index()][fallback.index()].head;
        self.counters.fallbacks += 1;
        Some(self.steal_suitable_fallback(mm, pfn, current, order, start, can_steal))
    }

    /// `find_suitable_fallback`: the first type in `start`'s fallback order
    /// with a free block of `order`, and whether `start` may claim its
    /// pageblock.
    pub(super) fn find_suitable_fallback(&self, order: Order, start: Migratetype) -> Option<(Migratetype, bool)> {
        let fallback =
            start.fallbacks().iter().copied().find(|&mt| self.free_area[order.index()][mt.index()].nr_free != 0)?;
        Some((fallback, self.can_steal_fallback(order, start)))
    }

    /// `can_steal_fallback`: whether a request of type `start` that takes a
    /// free block of `order` may claim the whole pageblock.
    pub(super) fn can_steal_fallback(&self, order: Order, start: Migratetype) -> bool {
        let pageblock_order = self.pageblocks.order();
        order >= pageblock_order
            || order.get() >= pageblock_order.get() / 2
            || start == Migratetype::Unmovable
            || start == Migratetype::Reclaimable
            || !self.grouping
    }

    /// `steal_suitable_fallback`: takes the free block `pfn` of `current`
    /// order for an allocation of `order` and type `start`, claiming its
    /// pageblock(s) when allowed (`whole_block`) and worth it. Returns the
    /// block's first page and content flags.
    fn steal_suitable_fallback(
        &mut self,
        mm: &MemMap,
        pfn: Pfn,
        current: Order,
        order: Order,
        start: Migratetype,
        whole_block: bool,
    ) -> (Pfn, u8) {
        let info = mm.page(pfn).info();
        let block_type = info.migratetype();
        let flags = info.flags & flag::CONTENT;
        let pageblock_order = self.pageblocks.order();
        if current >= pageblock_order {
            // The block is whole pageblocks: take them all.
            self.del_from_free_list(mm, pfn, current, info);
            self.pageblocks.set_range(pfn, current, start);
            self.counters.pageblocks_claimed += 1 << (current.get() - pageblock_order.get());
            self.expand(mm, pfn, current, order, flags, start);
            return (pfn, flags);
        }
        // The kernel's `fragmenting`: a fallback from less than a whole
        // pageblock, claimed or not, may leave a pageblock mixed.
        self.counters.fallbacks_fragmenting += 1;
        if whole_block {
            let claim = start != Migratetype::Movable || !self.grouping || {
                let usage = self.pageblock_usage(mm, pfn);
                usage.free + usage.movable >= self.pageblocks.nr_pages() / 2
            };
            if claim {
                self.move_freepages_block(mm, pfn, start);
                self.counters.pageblocks_claimed += 1;
                return self.take_from_lists(mm, order, order, start).expect("the claimed block is on start's lists");
            }
        }
        // single_page: the remainder stays with the block's type.
        self.del_from_free_list(mm, pfn, current, info);
        self.expand(mm, pfn, current, order, flags, block_type);
        (pfn, flags)
    }

    /// `move_freepages_block`: moves every free block of the pageblock
    /// holding `pfn` to `mt`'s lists and sets the pageblock's type. Returns
    /// the free pages moved.
    pub(super) fn move_freepages_block(&mut self, mm: &MemMap, pfn: Pfn, mt: Migratetype) -> usize {
        let start = pfn.align_down(self.pageblocks.order());
        let end = start + self.pageblocks.nr_pages();
        let mut moved = 0;
        let mut page = start;
        while page < end {
            let info = mm.page(page).info();
            if info.state == PageState::Tail {
                page += 1;
                continue;
            }
            if info.state == PageState::Free && info.migratetype() != mt {
                self.del_from_free_list(mm, page, info.order(), info);
                self.add_to_free_list(mm, page, info.order(), info.flags & flag::CONTENT, mt);
                moved += info.order().pages();
            }
            page += info.order().pages();
        }
        self.pageblocks.set(start, mt);
        moved
    }

    /// What the pageblock holding `pfn` holds (`prep_move_freepages_block`
    /// counts the free and movable pages; the foreign ones make a pageblock
    /// mixed). Blocks larger than a pageblock are counted whole.
    pub(crate) fn pageblock_usage(&self, mm: &MemMap, pfn: Pfn) -> PageblockUsage {
        let start = pfn.align_down(self.pageblocks.order());
        let end = start + self.pageblocks.nr_pages();
        let block_type = self.pageblocks.get(start);
        let mut usage = PageblockUsage::default();
        let mut count = |info: PageInfo, size: usize| match info.state {
            PageState::Tail => {}
            PageState::Free | PageState::Isolated => usage.free += size,
            PageState::Allocated
            | PageState::Exact
            | PageState::Cached
            | PageState::Owned
            | PageState::Migrating
            | PageState::MigratingFreed => {
                if info.migratetype() == Migratetype::Movable {
                    usage.movable += size;
                } else {
                    usage.unmovable += size;
                }
                if !compatible(info.migratetype(), block_type) {
                    usage.foreign += size;
                }
            }
        };
        if start >= self.frontier {
            return PageblockUsage { free: self.pageblocks.nr_pages(), ..usage };
        }
        if mm.page(start).info().state == PageState::Tail {
            // Inside a block that starts in an earlier pageblock: all of it.
            for o in self.pageblocks.order().up(1).through(self.max_order) {
                let head = mm.page(start.align_down(o)).info();
                if head.state != PageState::Tail {
                    if head.order() >= o {
                        count(head, self.pageblocks.nr_pages());
                        return usage;
                    }
                    break;
                }
            }
        }
        let mut page = start;
        while page < end {
            let info = mm.page(page).info();
            let size = if info.state == PageState::Tail { 1 } else { info.order().pages() };
            count(info, size);
            page += size;
        }
        usage
    }
}

/// Whether an allocation of type `alloc` belongs in a pageblock of type
/// `block`: its own type, or any in the high-atomic reserve.
fn compatible(alloc: Migratetype, block: Migratetype) -> bool {
    alloc == block || block == Migratetype::HighAtomic
}
