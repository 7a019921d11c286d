//! [`Arena::check`]: walks every structure and reports the first broken
//! invariant.

use crate::arena::Arena;
use crate::error::CheckError;
use crate::migratetype::{Migratetype, NR_MIGRATETYPES};
use crate::order::Order;
use crate::page::{PageState, flag};
use crate::pcp_config::{NR_PCP_LISTS, PCP_ORDERS, pcp_type};
use crate::pfn::{NIL, Pfn};
use crate::zone::Zone;

/// What one zone's walk found, in pages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct ZoneTally {
    pub free: usize,
    pub allocated: usize,
    /// Pages whose head says cached: in a thread's list or the zone's pool.
    pub cached: usize,
    /// Of those, pages in the zone's pool.
    pub pooled: usize,
    /// Free pages isolated by a purge in progress.
    pub isolated: usize,
}

impl Arena {
    /// Walks every structure and returns the first broken invariant:
    /// each free list's entries are free blocks of its order, aligned, inside
    /// the zone, with consistent links and the recorded count; every entry of
    /// every per-thread cache is a cached block of its list's order and zone,
    /// and the caches hold exactly the blocks the metadata says are cached;
    /// every used page belongs to exactly one block; no two free buddies are
    /// left unmerged, but where the high-atomic reserve keeps its pageblocks
    /// apart (as `__free_one_page` does); free + cached + allocated = managed pages in every
    /// zone; the lock-free counters agree with the lists.
    ///
    /// Freezes every per-thread cache (their owners wait on their next slow
    /// path or drain) and takes each zone's lock in turn, so the answer is
    /// exact even while other threads allocate. Costs O(pages ever used);
    /// meant for tests and debugging.
    pub fn check(&self) -> Result<(), CheckError> {
        let inner = &*self.inner;
        let sets = inner.reclaim().pcp.freeze().ok_or(CheckError::OutOfMemory)?;
        let mut cached = [0usize; crate::zone_idx::MAX_ZONES];
        sets.check(inner.node(), &mut cached)?;
        for zone in inner.node().zones.iter() {
            let tally = self.check_zone(zone)?;
            let z = zone.index.index();
            if tally.cached != cached[z] + tally.pooled {
                return Err(CheckError::Counter {
                    zone: z,
                    what: "cached pages (per-thread lists and pool vs metadata)",
                    found: cached[z] + tally.pooled,
                    recorded: tally.cached,
                });
            }
        }
        Ok(())
    }

    fn check_zone(&self, zone: &Zone) -> Result<ZoneTally, CheckError> {
        let mm = &self.inner.node().mem_map;
        let max_order = self.inner.node().max_order;
        let z = zone.index.index();
        let guard = zone.lock();
        let buddy = &guard.inner.buddy;
        let frontier = buddy.frontier();
        let bad_entry = |order: Order, pfn: Pfn, reason| CheckError::BadListEntry {
            zone: z,
            order: order.get(),
            pfn: pfn.raw(),
            reason,
        };

        // 1. The free lists.
        let mut listed_pages = 0;
        let mut purged_pages = 0;
        let mut purgeable_pages = 0;
        let pageblocks = buddy.pageblocks();
        let mut type_pages_seen = [0usize; NR_MIGRATETYPES];
        for (order, mt) in Order::ZERO.through(max_order).flat_map(|o| Migratetype::ALL.map(|mt| (o, mt))) {
            let mut type_pages = 0;
            let mut prev = NIL;
            let mut pfn = buddy.list_head(order, mt);
            let mut found = 0;
            let mut seen_purged = false;
            while pfn != NIL {
                if pfn < zone.start || pfn >= frontier {
                    return Err(bad_entry(order, pfn, "outside the zone's used range"));
                }
                if !pfn.is_aligned(order) {
                    return Err(bad_entry(order, pfn, "not aligned to its order"));
                }
                let page = mm.page(pfn);
                let info = page.info();
                if info.state != PageState::Free || info.order() != order || info.zone() != zone.index {
                    return Err(bad_entry(order, pfn, "head is not a free block of this order and zone"));
                }
                if info.migratetype() != mt {
                    return Err(bad_entry(order, pfn, "head records another migratetype than its list's"));
                }
                let first = (pfn - zone.start) >> pageblocks.order().get();
                let spanned = 1usize << order.get().saturating_sub(pageblocks.order().get());
                if (first..first + spanned).any(|i| pageblocks.get_index(i) != mt) {
                    return Err(bad_entry(order, pfn, "on another list than its pageblock's migratetype"));
                }
                type_pages += order.pages();
                if page.prev() != prev {
                    return Err(bad_entry(order, pfn, "prev link does not point back"));
                }
                found += 1;
                if found > zone.spanned() >> order.get() {
                    return Err(bad_entry(order, pfn, "list is longer than the zone (a cycle)"));
                }
                listed_pages += order.pages();
                if info.flags & flag::PURGED != 0 {
                    purged_pages += order.pages();
                    seen_purged = true;
                } else if seen_purged {
                    return Err(bad_entry(order, pfn, "resident block after a purged one (purge relies on the order)"));
                } else if order >= buddy.purge_min_order() {
                    purgeable_pages += order.pages();
                }
                prev = pfn;
                pfn = page.next();
            }
            if buddy.list_tail(order, mt) != prev {
                return Err(bad_entry(order, prev, "the list's tail is not its last block"));
            }
            let recorded = buddy.nr_free_blocks_of(order, mt);
            if found != recorded {
                return Err(CheckError::ListCount { zone: z, order: order.get(), found, recorded });
            }
            type_pages_seen[mt.index()] += type_pages;
        }

        // 2. Every page below the frontier belongs to exactly one block.
        let mut tally = ZoneTally { free: buddy.frontier_pages(), ..ZoneTally::default() };
        let mut pfn = zone.start;
        let mut previous_exact = false;
        while pfn < frontier {
            let info = mm.page(pfn).info();
            let order = info.order();
            let bad = |reason| CheckError::BadBlock { zone: z, pfn: pfn.raw(), reason };
            if info.state == PageState::Tail {
                return Err(bad("belongs to no block"));
            }
            if order > max_order || !pfn.is_aligned(order) || pfn + order.pages() > frontier {
                return Err(bad("head of a block with an impossible order"));
            }
            if info.zone() != zone.index {
                return Err(bad("head records another zone"));
            }
            let size = order.pages();
            if mm.range(pfn + 1, pfn + size).iter().any(|p| p.info().state != PageState::Tail) {
                return Err(bad("block overlaps another block's head"));
            }
            match info.state {
                PageState::Free => {
                    tally.free += size;
                    let buddy_pfn = pfn.buddy(order);
                    if order < max_order {
                        let other = mm.page(buddy_pfn).info();
                        if other.state == PageState::Free
                            && other.order() == order
                            && (order < buddy.pageblocks().order()
                                || info.migratetype().merges_with(other.migratetype()))
                        {
                            return Err(CheckError::UnmergedBuddies {
                                zone: z,
                                pfn: pfn.min(buddy_pfn).raw(),
                                order: order.get(),
                            });
                        }
                    }
                }
                PageState::Allocated | PageState::Exact | PageState::Cached
                    if info.migratetype() == Migratetype::HighAtomic =>
                {
                    // A block in use records the type it was asked for,
                    // which flags choose: never the reserve.
                    return Err(bad("block in use records the high-atomic migratetype"));
                }
                PageState::Allocated if info.flags != 0 => {
                    // Its contents are the caller's: a content flag would be
                    // carried into the page caches by a free.
                    return Err(bad("allocated block carries content flags"));
                }
                PageState::Allocated => tally.allocated += size,
                PageState::Exact if info.flags & !flag::CONTINUED != 0 => {
                    return Err(bad("exact allocation tile carries content flags"));
                }
                PageState::Exact if info.flags & flag::CONTINUED != 0 && !previous_exact => {
                    return Err(bad("continued tile does not follow a tile of an exact allocation"));
                }
                PageState::Exact => tally.allocated += size,
                PageState::Owned | PageState::Migrating | PageState::MigratingFreed if info.flags != 0 => {
                    return Err(bad("owned block carries content flags"));
                }
                PageState::Owned | PageState::Migrating | PageState::MigratingFreed => tally.allocated += size,
                PageState::Cached => tally.cached += size,
                PageState::Isolated => tally.isolated += size,
                PageState::Tail => unreachable!("rejected above"),
            }
            previous_exact = info.state == PageState::Exact;
            pfn += size;
        }

        // 3. The pool of trimmed batches holds cached blocks of its orders.
        let mut pooled = 0;
        for list in 0..NR_PCP_LISTS {
            let order = (list % PCP_ORDERS) as u32;
            let list_type = list / PCP_ORDERS;
            for &pfn in guard.inner.pool.blocks(list) {
                let info = mm.page(pfn).info();
                if !zone.contains(pfn)
                    || info.state != PageState::Cached
                    || info.order().get() != order
                    || info.zone() != zone.index
                    || pcp_type(info.migratetype().index()) != list_type
                {
                    return Err(CheckError::BadCacheEntry {
                        zone: z,
                        order,
                        pfn: pfn.raw(),
                        reason: "pooled block is not a cached block of this order, type and zone",
                    });
                }
                pooled += 1 << order;
            }
        }
        tally.pooled = pooled;

        // 4. Counters against the structures.
        let counter = |what, found, recorded| {
            if found == recorded { Ok(()) } else { Err(CheckError::Counter { zone: z, what, found, recorded }) }
        };
        counter("free pages on the lists", tally.free - buddy.frontier_pages(), listed_pages)?;
        counter(
            "free pages of the high-atomic reserve (lock-free mirror)",
            type_pages_seen[Migratetype::HighAtomic.index()],
            zone.reserve_free_pages(),
        )?;
        let reserve_pageblocks =
            (0..pageblocks.len()).filter(|&i| pageblocks.get_index(i) == Migratetype::HighAtomic).count();
        counter(
            "high-atomic reserve (pages in its pageblocks)",
            reserve_pageblocks * pageblocks.nr_pages(),
            buddy.nr_reserved_highatomic(),
        )?;
        counter("free pages (buddy)", tally.free, buddy.nr_free())?;
        counter("purged free pages", purged_pages, buddy.purged_pages())?;
        counter("purgeable free pages", purgeable_pages, buddy.purgeable_pages())?;
        counter("free pages (lock-free mirror)", zone.free_pages(), buddy.nr_free())?;
        counter("isolated pages", tally.isolated, buddy.isolated_pages())?;
        counter(
            "free + isolated + cached + allocated pages",
            tally.free + tally.isolated + tally.allocated + tally.cached,
            zone.spanned(),
        )?;
        Ok(tally)
    }
}
