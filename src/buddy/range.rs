//! Runs of pages in the buddy state: the tiles of an exact allocation
//! (`make_alloc_exact`), trimming and shrinking one, taking a range of free
//! pages off the lists (`take_page_off_buddy` for a range), and growing a
//! block in place into its free buddies.

use super::Buddy;
use crate::migratetype::Migratetype;
use crate::order::Order;
use crate::page::{MemMap, PageInfo, PageState, flag};
use crate::pfn::{Pfn, single_tile, tile};

impl Buddy {
    /// Marks pages `start..end` of the allocation that begins at `first` as
    /// its tiles ([`tile`]): `Exact` heads, every one but the allocation's
    /// first flagged [`flag::CONTINUED`]; an allocation that is a single
    /// tile is a plain `Allocated` block.
    /// Every head records the allocation's type `mt`.
    pub(crate) fn set_tiles(&self, mm: &MemMap, first: Pfn, (start, end): (Pfn, Pfn), mt: Migratetype) {
        if let Some(order) = single_tile(first, end) {
            mm.page(first).set_info(PageInfo::new(PageState::Allocated, order, 0, self.zone).with_migratetype(mt));
            return;
        }
        for (pfn, order) in tile(start, end) {
            let flags = if pfn == first { 0 } else { flag::CONTINUED };
            mm.page(pfn).set_info(PageInfo::new(PageState::Exact, order, flags, self.zone).with_migratetype(mt));
        }
    }

    /// Makes the allocated block of `order` at `pfn` an allocation of its
    /// first `pages` pages (the kernel's `make_alloc_exact`): the kept
    /// pages become its tiles, the rest go back to the lists with `flags`
    /// (what is known of their contents). No freed piece merges: each
    /// one's buddy lies below it, in the kept pages or in a larger piece.
    pub(crate) fn trim_allocated(&mut self, mm: &MemMap, pfn: Pfn, order: Order, pages: usize, flags: u8) {
        debug_assert!(pages >= 1 && pages <= order.pages() && pfn.is_aligned(order));
        let end = pfn + pages;
        let mt = mm.page(pfn).info().migratetype();
        self.set_tiles(mm, pfn, (pfn, end), mt);
        for (free, o) in tile(end, pfn + order.pages()) {
            self.free_one_page(mm, free, o, flags);
        }
    }

    /// Shrinks the allocation of `pages` pages at `pfn` (tiled as [`tile`]
    /// tiles it, every tile allocated) to its first `keep`: tiles past
    /// `keep` are freed, the one across it is retiled.
    pub(crate) fn shrink_allocated(&mut self, mm: &MemMap, pfn: Pfn, pages: usize, keep: usize) {
        debug_assert!(keep >= 1 && keep < pages);
        let new_end = pfn + keep;
        let mt = mm.page(pfn).info().migratetype();
        for (start, o) in tile(pfn, pfn + pages) {
            let end = start + o.pages();
            if end <= new_end {
                continue;
            }
            if start < new_end {
                self.set_tiles(mm, pfn, (start, new_end), mt);
            }
            for (free, fo) in tile(start.max(new_end), end) {
                self.free_one_page(mm, free, fo, 0);
            }
        }
        // If what is kept is one tile, it is a plain block now.
        if let Some(order) = single_tile(pfn, new_end) {
            mm.page(pfn).set_info(PageInfo::new(PageState::Allocated, order, 0, self.zone).with_migratetype(mt));
        }
    }

    /// Takes pages `start..end` off the lists if every one of them is free
    /// (below the frontier); `false`, with nothing changed, otherwise. The
    /// free blocks the range cuts through are split, their parts outside
    /// it put back. The range's pages are left as tails, for the caller to
    /// retile as its own (the kernel's `take_page_off_buddy`, for a range).
    pub(crate) fn take_free_range(&mut self, mm: &MemMap, start: Pfn, end: Pfn) -> bool {
        if start < self.start || end > self.frontier || start >= end {
            return false;
        }
        let mut pfn = start;
        while pfn < end {
            match self.free_block_containing(mm, pfn) {
                // The high-atomic reserve's blocks stay its own: its size
                // is counted in pageblocks.
                Some((head, _)) if mm.page(head).info().migratetype() == Migratetype::HighAtomic => return false,
                Some((head, order)) => pfn = head + order.pages(),
                None => return false,
            }
        }
        let mut pfn = start;
        while pfn < end {
            let (head, order) = self.free_block_containing(mm, pfn).expect("checked above");
            let info = mm.page(head).info();
            let flags = info.flags & flag::CONTENT;
            self.del_from_free_list(mm, head, order, info);
            mm.page(head).set_info(PageInfo::TAIL);
            let block_end = head + order.pages();
            // The parts of the block outside the range.
            for (free, o) in tile(head, start.max(head)).chain(tile(end.min(block_end), block_end)) {
                self.free_one_page(mm, free, o, flags);
            }
            pfn = block_end;
        }
        self.note_taken();
        true
    }

    /// The free block (head, order) that page `pfn` lies in, if it is free.
    fn free_block_containing(&self, mm: &MemMap, pfn: Pfn) -> Option<(Pfn, Order)> {
        for order in Order::ZERO.through(self.max_order) {
            let head = pfn.align_down(order);
            let info = mm.page(head).info();
            if info.state != PageState::Tail && info.order() >= order {
                return (info.state == PageState::Free).then_some((head, info.order()));
            }
        }
        None
    }

    /// Grows the allocated block at `pfn` from `order` to `new_order` in
    /// place, taking the free buddies above it (`pfn + (1 << o)` for each
    /// order `o` on the way up) off their lists: the inverse of
    /// [`free_one_page`](Self::free_one_page)'s merges. Only when `pfn` is
    /// aligned to `new_order` and every such buddy is a whole free block of
    /// its order; otherwise nothing changes. The caller has checked that
    /// `new_order` is at most `max_order`, and sets the head's new order.
    pub(crate) fn grow_in_place(&mut self, mm: &MemMap, pfn: Pfn, order: Order, new_order: Order) -> bool {
        debug_assert!(new_order <= self.max_order);
        if !pfn.is_aligned(new_order) || pfn + new_order.pages() > self.frontier {
            return false;
        }
        // Not into or out of the high-atomic reserve: its size is counted
        // in pageblocks, and a free of the grown block would retype them.
        let reserve = |p: Pfn| self.pageblocks.get(p) == Migratetype::HighAtomic;
        let buddy_free = |o: Order| {
            let buddy = pfn + o.pages();
            let info = mm.page(buddy).info();
            info.state == PageState::Free && info.order() == o && reserve(buddy) == reserve(pfn)
        };
        if !order.until(new_order).all(buddy_free) {
            return false;
        }
        for o in order.until(new_order) {
            let buddy = pfn + o.pages();
            let info = mm.page(buddy).info();
            self.del_from_free_list(mm, buddy, o, info);
            mm.page(buddy).set_info(PageInfo::TAIL);
        }
        self.note_taken();
        true
    }
}
