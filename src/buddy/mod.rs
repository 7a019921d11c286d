//! The buddy system of one zone: `free_area[order]` lists, `expand` on
//! allocation, `__free_one_page` merging on free.
//!
//! Lists are doubly linked through the out-of-band [`MemMap`] (page indices,
//! not pointers), so removing a buddy from the middle of a list is O(1) and
//! free pages are never written.
//!
//! A zone does not thread its memory onto the lists at start-up. Above the
//! *frontier* lie max-order blocks that have never been used; an allocation
//! that finds every list empty takes the next one. Building an arena is
//! therefore O(1) in the region size, and untouched memory costs no RSS.
//!
//! Every order has one list per migratetype, and the zone's pageblocks each
//! have a type ([`pageblock`]): a freed block goes on the list of its
//! pageblock's type, an allocation takes from its own type's lists, then
//! from the frontier, and only then steals from another type
//! ([`fallback`]).
//!
//! A `Buddy` is always behind its zone's lock; nothing here is concurrent.

mod fallback;
mod highatomic;
mod pageblock;
mod purgeable;
mod range;
mod target;

pub(crate) use highatomic::highatomic_limit;
pub(crate) use pageblock::Pageblocks;
pub(crate) use target::{fragmentation_index, free_block_info};

use crate::migratetype::{Migratetype, NR_MIGRATETYPES};
use crate::order::{MAX_ORDER_LIMIT, NR_ORDERS, Order};
use crate::page::{MemMap, PageInfo, PageState, flag};
use crate::pfn::{NIL, Pfn};
use crate::zone_idx::ZoneIdx;

/// Doublings a block from [`Buddy::rmqueue_growable`] can preferably grow
/// in place: it is carved from a block 256 times its size (a vector growing
/// from 16 KiB to 4 MiB moves once).
const GROWTH_ORDERS: u32 = 8;

/// With huge pages, a growable block of at least a `2^-n`th of one may be
/// carved from fresh memory ([`Buddy::rmqueue_growable`]).
const FRESH_ROOM_MIN_SHARE: u32 = 3;

/// A block taken from or given to the buddy lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Block {
    pub pfn: Pfn,
    pub order: Order,
    /// [`flag`] bits: what is known about the contents.
    pub flags: u8,
}

/// One order's free list of one migratetype (the kernel's
/// `free_area[order].free_list[mt]`).
#[derive(Clone, Copy, Debug)]
struct FreeList {
    head: Pfn,
    /// The last block: purged blocks go here, resident ones at the head, so
    /// allocation reuses resident memory first and a purge pass stops at the
    /// first purged block it meets.
    tail: Pfn,
    nr_free: usize,
}

/// Split/merge counters, kept under the zone lock.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct BuddyCounters {
    /// Blocks split in two by `expand`.
    pub splits: u64,
    /// Buddy pairs merged by `free_one_page`.
    pub merges: u64,
    /// Max-order blocks taken from the untouched frontier.
    pub frontier_blocks: u64,
    /// Allocations served from another type's lists (the kernel's
    /// `mm_page_alloc_extfrag` events).
    pub fallbacks: u64,
    /// Of those, the ones from a block smaller than a pageblock (claimed
    /// or not): the only fallbacks that may leave a pageblock mixed.
    pub fallbacks_fragmenting: u64,
    /// Pageblocks whose type a fallback changed (claimed whole).
    pub pageblocks_claimed: u64,
}

/// The orders a zone's buddy state is built with.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BuddyOrders {
    /// The largest block.
    pub max_order: Order,
    /// A purge hands back only blocks of at least this order.
    pub purge_min_order: Order,
    /// `pageblock_order`: the unit migratetypes are kept for.
    pub pageblock_order: Order,
}

/// How a zone groups pages by mobility.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Grouping {
    /// Grouping by mobility is on.
    pub by_mobility: bool,
    /// The kernel's `defrag_mode` (only with grouping by mobility).
    pub defrag_mode: bool,
}

/// The free memory of one zone.
pub(crate) struct Buddy {
    zone: ZoneIdx,
    start: Pfn,
    end: Pfn,
    /// Pages at and above `frontier` (up to `end`) have never been used.
    frontier: Pfn,
    max_order: Order,
    free_area: [[FreeList; NR_MIGRATETYPES]; NR_ORDERS],
    /// Per type, bit `o` set when `free_area[o][type]` is non-empty.
    list_mask: [u32; NR_MIGRATETYPES],
    /// The migratetype of each pageblock.
    pageblocks: Pageblocks,
    /// Grouping by mobility is on (the kernel's
    /// `!page_group_by_mobility_disabled`).
    grouping: bool,
    /// Fallbacks take whole free pageblocks only unless a caller says
    /// otherwise (the kernel's `defrag_mode`: `ALLOC_NOFRAGMENT` always).
    defrag_mode: bool,
    /// Pages in high-atomic pageblocks (`nr_reserved_highatomic`).
    nr_reserved_highatomic: usize,
    /// The reserve's free blocks or size changed since the zone last
    /// published them: its lock-free mirrors are written only then.
    reserve_changed: bool,
    /// Free pages on the lists (the frontier not included).
    listed_pages: usize,
    /// Free pages on the lists whose block is purged (no RSS).
    purged_pages: usize,
    /// Purge hands back only blocks of at least this order (9, 2 MiB,
    /// when huge pages back the region: a smaller purge would split one;
    /// above `max_order`, nothing is ever purged).
    purge_min_order: Order,
    /// Resident free pages on the lists in blocks of at least
    /// `purge_min_order`: what a purge could hand back.
    purgeable_pages: usize,
    /// The fewest `purgeable_pages`, and the fewest resident free pages of
    /// any order, that taking blocks off the lists left since the last
    /// purge pass ([`end_purge_pass`](Self::end_purge_pass)): resident free
    /// memory that stayed free all that time.
    purgeable_low: usize,
    resident_low: usize,
    /// Free pages taken off the lists by a purge in progress.
    isolated_pages: usize,
    pub counters: BuddyCounters,
}

impl Buddy {
    /// The buddy state of a zone spanning `start..end`, all of it untouched.
    /// Both ends are multiples of the max-order block. A purge hands back
    /// only blocks of `purge_min_order` or more. `None` if the pageblock
    /// table's memory cannot be had.
    pub(crate) fn new(
        zone: ZoneIdx,
        (start, end): (Pfn, Pfn),
        orders: BuddyOrders,
        grouping: Grouping,
    ) -> Option<Self> {
        let BuddyOrders { max_order, purge_min_order, pageblock_order } = orders;
        debug_assert!(max_order.get() <= MAX_ORDER_LIMIT && pageblock_order <= max_order);
        debug_assert!(start.is_aligned(max_order) && end.is_aligned(max_order));
        Some(Self {
            zone,
            start,
            end,
            frontier: start,
            max_order,
            free_area: [[FreeList { head: NIL, tail: NIL, nr_free: 0 }; NR_MIGRATETYPES]; NR_ORDERS],
            list_mask: [0; NR_MIGRATETYPES],
            pageblocks: Pageblocks::new(start, end, pageblock_order)?,
            grouping: grouping.by_mobility,
            defrag_mode: grouping.defrag_mode,
            nr_reserved_highatomic: 0,
            reserve_changed: false,
            listed_pages: 0,
            purged_pages: 0,
            purge_min_order,
            purgeable_pages: 0,
            purgeable_low: 0,
            resident_low: 0,
            isolated_pages: 0,
            counters: BuddyCounters::default(),
        })
    }

    /// Whether fallbacks are limited to whole free pageblocks unless a
    /// caller allows more ([`rmqueue_as`](Self::rmqueue_as)).
    #[inline]
    pub(crate) fn defrag_mode(&self) -> bool {
        self.defrag_mode
    }

    /// The pageblock table.
    #[inline]
    pub(crate) fn pageblocks(&self) -> &Pageblocks {
        &self.pageblocks
    }

    /// Whether the high-atomic reserve changed since the last call.
    #[inline]
    pub(crate) fn take_reserve_changed(&mut self) -> bool {
        std::mem::take(&mut self.reserve_changed)
    }

    /// Free pages on type `mt`'s lists, from the lists' block counts (only
    /// slow paths ask: keeping a running sum cost every list change).
    pub(crate) fn type_pages(&self, mt: Migratetype) -> usize {
        self.free_area.iter().enumerate().map(|(o, area)| area[mt.index()].nr_free << o).sum()
    }

    /// Pages of type `mt`'s pageblocks that are not free on its lists: in
    /// use, cached or being compacted. (The frontier moves in max-order
    /// blocks, so every pageblock below it is wholly in use or listed.)
    pub(crate) fn pageblock_pages_in_use(&self, mt: Migratetype) -> usize {
        let used = (self.frontier - self.start) >> self.pageblocks.order().get();
        let typed = (0..used).filter(|&i| self.pageblocks.get_index(i) == mt).count();
        (typed * self.pageblocks.nr_pages()).saturating_sub(self.type_pages(mt))
    }

    /// All free pages: on the lists and above the frontier.
    #[inline]
    pub(crate) fn nr_free(&self) -> usize {
        self.listed_pages + self.frontier_pages()
    }

    /// Never-used pages above the frontier.
    #[inline]
    pub(crate) fn frontier_pages(&self) -> usize {
        self.end - self.frontier
    }

    /// The first never-used page.
    #[inline]
    pub(crate) fn frontier(&self) -> Pfn {
        self.frontier
    }

    /// Free pages on the lists whose blocks are purged.
    #[inline]
    pub(crate) fn purged_pages(&self) -> usize {
        self.purged_pages
    }

    /// Resident free pages on the lists in blocks a purge may hand back.
    #[inline]
    pub(crate) fn purgeable_pages(&self) -> usize {
        self.purgeable_pages
    }

    /// Bit `o` set when a free block of order `o` exists outside the
    /// high-atomic reserve (the frontier counts as max-order blocks): what
    /// the watermark check's order test reads.
    #[inline]
    pub(crate) fn order_mask(&self) -> u32 {
        let frontier = if self.frontier < self.end { self.max_order.bit() } else { 0 };
        let [unmovable, movable, reclaimable, _] = self.list_mask;
        unmovable | movable | reclaimable | frontier
    }

    /// Bit `o` set when the high-atomic reserve has a free block of order
    /// `o`: what requests allowed the reserves may count on too.
    #[inline]
    pub(crate) fn reserve_order_mask(&self) -> u32 {
        self.list_mask[Migratetype::HighAtomic.index()]
    }

    /// Blocks on `free_area[order]`, every type.
    #[inline]
    pub(crate) fn nr_free_blocks(&self, order: Order) -> usize {
        self.free_area[order.index()].iter().map(|list| list.nr_free).sum()
    }

    /// Blocks on `free_area[order][mt]`.
    #[inline]
    pub(crate) fn nr_free_blocks_of(&self, order: Order, mt: Migratetype) -> usize {
        self.free_area[order.index()][mt.index()].nr_free
    }

    /// Head of `free_area[order][mt]` ([`NIL`] when empty), for walks.
    #[inline]
    pub(crate) fn list_head(&self, order: Order, mt: Migratetype) -> Pfn {
        self.free_area[order.index()][mt.index()].head
    }

    /// Tail of `free_area[order][mt]` ([`NIL`] when empty), for walks.
    #[inline]
    pub(crate) fn list_tail(&self, order: Order, mt: Migratetype) -> Pfn {
        self.free_area[order.index()][mt.index()].tail
    }

    /// Takes a block of exactly `order` for an allocation of type `mt` off
    /// the lists (the kernel's `__rmqueue`): from `mt`'s own lists,
    /// splitting a larger block if need be (`__rmqueue_smallest`), else a
    /// fresh frontier block, else from another type's
    /// (`__rmqueue_fallback`). The head is recorded as `state`, of type
    /// `mt`. In defrag mode a fallback takes whole free pageblocks only.
    #[inline]
    pub(crate) fn rmqueue(&mut self, mm: &MemMap, order: Order, mt: Migratetype, state: PageState) -> Option<Block> {
        self.rmqueue_as(mm, order, mt, state, self.defrag_mode)
    }

    /// [`rmqueue`](Self::rmqueue), with `nofragment` saying whether a
    /// fallback must take a whole free pageblock (`ALLOC_NOFRAGMENT`).
    #[inline]
    pub(crate) fn rmqueue_as(
        &mut self,
        mm: &MemMap,
        order: Order,
        mt: Migratetype,
        state: PageState,
        nofragment: bool,
    ) -> Option<Block> {
        let taken = match self.rmqueue_smallest(mm, order, order, mt) {
            Some(taken) => Some(taken),
            None => self.rmqueue_fallback(mm, order, mt, nofragment),
        };
        let (pfn, flags) = taken?;
        Some(self.prep_head(mm, pfn, order, flags, mt, state))
    }

    /// Takes a block of `order` from the high-atomic reserve for a request
    /// of type `mt` (`__rmqueue_smallest(..., MIGRATE_HIGHATOMIC)`).
    pub(crate) fn rmqueue_highatomic(
        &mut self,
        mm: &MemMap,
        order: Order,
        mt: Migratetype,
        state: PageState,
    ) -> Option<Block> {
        let (pfn, flags) = self.take_from_lists(mm, order, order, Migratetype::HighAtomic)?;
        Some(self.prep_head(mm, pfn, order, flags, mt, state))
    }

    /// Records the head of a block just taken off the lists as `state`,
    /// allocated as type `mt`.
    #[inline]
    fn prep_head(
        &mut self,
        mm: &MemMap,
        pfn: Pfn,
        order: Order,
        flags: u8,
        mt: Migratetype,
        state: PageState,
    ) -> Block {
        self.note_taken();
        // A cached block keeps its content flags until it is handed out; an
        // allocated head carries none (the caller is about to write it, and
        // the cache's fast free path keeps the flags it finds).
        let head_flags = if state == PageState::Cached { flags } else { 0 };
        mm.page(pfn).set_info(PageInfo::new(state, order, head_flags, self.zone).with_migratetype(mt));
        Block { pfn, order, flags }
    }

    /// Takes a block of `order` carved from the start of a larger free
    /// block, so that the buddies above it are free and it can grow in
    /// place ([`grow_in_place`](Self::grow_in_place)): the smallest with
    /// room for [`GROWTH_ORDERS`] doublings (or a frontier block), else the
    /// largest free block above `order`; otherwise as
    /// [`rmqueue`](Self::rmqueue).
    ///
    /// With huge pages, a block below an eighth of one
    /// ([`FRESH_ROOM_MIN_SHARE`]) is carved only from resident memory: the
    /// first touch of a fresh or purged roomy block maps a whole 2 MiB page
    /// for the one small block at its start, and a service with a few
    /// hundred live buffers then holds a huge page for each (its peak RSS
    /// went from 44 MB to 450-575 MB that way). A larger block, already
    /// doubled several times, takes fresh room as before: its next
    /// doublings fill the huge page it faults in.
    pub(crate) fn rmqueue_growable(
        &mut self,
        mm: &MemMap,
        order: Order,
        mt: Migratetype,
        state: PageState,
    ) -> Option<Block> {
        let roomy = order.up(GROWTH_ORDERS).min(self.max_order);
        let above = self.list_mask[mt.index()] & !((order.bit() << 1) - 1);
        let (above, frontier) = if order.up(FRESH_ROOM_MIN_SHARE) < self.purge_min_order {
            (self.resident_orders(mm, above, mt), false)
        } else {
            (above, self.frontier < self.end)
        };
        let from = if roomy > order && (above >> roomy.get() != 0 || frontier) {
            roomy
        } else if above != 0 {
            Order::from_bits((u32::BITS - 1 - above.leading_zeros()) as u8)
        } else {
            return self.rmqueue(mm, order, mt, state);
        };
        let (pfn, flags) = self.rmqueue_smallest(mm, order, from, mt)?;
        Some(self.prep_head(mm, pfn, order, flags, mt, state))
    }

    /// The orders in `orders` whose type-`mt` list has a resident block
    /// (they sit at the heads: one look per order).
    fn resident_orders(&self, mm: &MemMap, orders: u32, mt: Migratetype) -> u32 {
        let mut resident = 0;
        let mut rest = orders;
        while rest != 0 {
            let o = rest.trailing_zeros();
            let head = self.free_area[o as usize][mt.index()].head;
            if head != NIL && mm.page(head).info().flags & flag::PURGED == 0 {
                resident |= 1 << o;
            }
            rest &= rest - 1;
        }
        resident
    }

    /// `__rmqueue_smallest` for type `mt` from blocks of at least `from`,
    /// then a fresh frontier block (its pageblocks become `mt`'s): the
    /// block's first page and its content flags.
    #[inline]
    fn rmqueue_smallest(&mut self, mm: &MemMap, order: Order, from: Order, mt: Migratetype) -> Option<(Pfn, u8)> {
        if let Some(taken) = self.take_from_lists(mm, order, from, mt) {
            return Some(taken);
        }
        if self.frontier >= self.end {
            return None;
        }
        let pfn = self.frontier;
        self.frontier += self.max_order.pages();
        self.counters.frontier_blocks += 1;
        self.pageblocks.set_range(pfn, self.max_order, mt);
        self.expand(mm, pfn, self.max_order, order, flag::PRISTINE, mt);
        Some((pfn, flag::PRISTINE))
    }

    /// Takes a block of `order` off type `mt`'s lists, splitting the
    /// smallest resident free block of at least `from`, else the smallest
    /// purged one; the halves split off stay on `mt`'s lists.
    ///
    /// Resident first: a block still in memory is reused without page
    /// faults or new RSS, where a purged or never-used one (however exact
    /// a fit) is faulted in anew, and with transparent huge pages its
    /// first touch maps a whole 2 MiB page. Smallest first within that, as
    /// the kernel's `__rmqueue_smallest`. Resident blocks sit at the heads
    /// of their lists, so one look per non-empty order decides.
    #[inline]
    fn take_from_lists(&mut self, mm: &MemMap, order: Order, from: Order, mt: Migratetype) -> Option<(Pfn, u8)> {
        debug_assert!(order <= from && from <= self.max_order);
        let candidates = self.list_mask[mt.index()] >> from.get();
        if candidates == 0 {
            return None;
        }
        let lists = &self.free_area;
        let head = |o: Order| lists[o.index()][mt.index()].head;
        let mut found = from.up(candidates.trailing_zeros());
        let mut rest = candidates;
        while rest != 0 {
            let o = from.up(rest.trailing_zeros());
            if mm.page(head(o)).info().flags & flag::PURGED == 0 {
                found = o;
                break;
            }
            rest &= rest - 1;
        }
        let pfn = head(found);
        let info = mm.page(pfn).info();
        if info.state != PageState::Free || info.order() != found {
            bad_list_head(mt, found, pfn, info);
        }
        let flags = info.flags & flag::CONTENT;
        self.del_from_free_list(mm, pfn, found, info);
        self.expand(mm, pfn, found, order, flags, mt);
        Some((pfn, flags))
    }

    /// Points the type-`mt` list of `order` at a page beyond the region
    /// (`test_hooks::InZoneLock::BreakFreeList`).
    #[cfg(feature = "test-hooks")]
    pub(crate) fn break_free_list(&mut self, order: Order, mt: Migratetype) {
        self.free_area[order.index()][mt.index()].head = Pfn::new(u32::MAX as usize - 1);
        self.free_area[order.index()][mt.index()].nr_free += 1;
        self.list_mask[mt.index()] |= order.bit();
    }

    /// Splits the order-`high` block at `pfn` down to order `low`, giving the
    /// upper halves back to the lists: the kernel's `expand`.
    ///
    /// With huge pages (a purge order above 0), the first touch of a purged
    /// whole huge page maps all of it: the halves that stay inside the huge
    /// page of `pfn` are resident from then on, and are flagged so (else
    /// allocation would not prefer them and a purge would never take them).
    /// The halves go on `mt`'s lists.
    #[inline]
    fn expand(&mut self, mm: &MemMap, pfn: Pfn, mut high: Order, low: Order, flags: u8, mt: Migratetype) {
        let whole_huge_page = self.purge_min_order > Order::ZERO && high >= self.purge_min_order;
        let inside = if whole_huge_page { flags & !flag::PURGED } else { flags };
        while high > low {
            high = high.down(1);
            let half = if high < self.purge_min_order { inside } else { flags };
            self.add_to_free_list(mm, pfn + high.pages(), high, half, mt);
            self.counters.splits += 1;
        }
    }

    /// Gives a block back, merging it with its buddy at `pfn.buddy(order)`
    /// while that buddy is free and whole: the kernel's `__free_one_page`.
    /// The block goes on the list of its pageblock's type; from
    /// `pageblock_order` up, a buddy of another type is merged and retyped
    /// unless either is a reserve. The caller has validated that the block
    /// is one it may free.
    #[inline]
    pub(crate) fn free_one_page(&mut self, mm: &MemMap, mut pfn: Pfn, mut order: Order, flags: u8) {
        debug_assert!(pfn >= self.start && pfn < self.frontier && pfn.is_aligned(order));
        let mut flags = flags & flag::CONTENT;
        let mt = self.pageblocks.get(pfn);
        let pageblock_order = self.pageblocks.order();
        if order > pageblock_order {
            self.pageblocks.set_range(pfn, order, mt);
        }
        while order < self.max_order {
            let buddy = pfn.buddy(order);
            let info = mm.page(buddy).info();
            if info.state != PageState::Free || info.order() != order {
                break;
            }
            if order >= pageblock_order {
                let buddy_mt = info.migratetype();
                if !mt.merges_with(buddy_mt) {
                    break;
                }
                if buddy_mt != mt {
                    // So that an `expand` of the merged block later puts
                    // its halves on the right lists.
                    self.pageblocks.set_range(buddy, order, mt);
                }
            }
            self.del_from_free_list(mm, buddy, order, info);
            // The upper of the two is no longer a head.
            mm.page(pfn.max(buddy)).set_info(PageInfo::TAIL);
            flags &= info.flags;
            pfn = pfn.min(buddy);
            order = order.up(1);
            self.counters.merges += 1;
        }
        self.add_to_free_list(mm, pfn, order, flags, mt);
    }

    /// Adds a free block to its list: a resident block at the front (LIFO:
    /// the most recently freed, cache-warm block goes out first), a purged
    /// one at the back (`FPI_TO_TAIL`), so that memory handed back to the OS
    /// is reused last.
    /// The list is `mt`'s; `flags` are content flags.
    #[inline(always)]
    fn add_to_free_list(&mut self, mm: &MemMap, pfn: Pfn, order: Order, flags: u8, mt: Migratetype) {
        debug_assert_eq!(flags & !flag::CONTENT, 0);
        let area = &mut self.free_area[order.index()][mt.index()];
        let page = mm.page(pfn);
        page.set_info(PageInfo::new(PageState::Free, order, flags, self.zone).with_migratetype(mt));
        if flags & flag::PURGED != 0 && area.tail != NIL {
            page.set_prev(area.tail);
            page.set_next(NIL);
            mm.page(area.tail).set_next(pfn);
            area.tail = pfn;
        } else {
            page.set_prev(NIL);
            page.set_next(area.head);
            if area.head == NIL {
                area.tail = pfn;
            } else {
                mm.page(area.head).set_prev(pfn);
            }
            area.head = pfn;
        }
        area.nr_free += 1;
        self.list_mask[mt.index()] |= order.bit();
        self.reserve_changed |= mt == Migratetype::HighAtomic;
        self.listed_pages += order.pages();
        if flags & flag::PURGED != 0 {
            self.purged_pages += order.pages();
        } else if order >= self.purge_min_order {
            self.purgeable_pages += order.pages();
        }
    }

    /// Unlinks a free block (whose head entry is `info`) from its list;
    /// its head entry is left for the caller to overwrite.
    #[inline(always)]
    fn del_from_free_list(&mut self, mm: &MemMap, pfn: Pfn, order: Order, info: PageInfo) {
        let (flags, mt) = (info.flags, info.migratetype().index());
        let page = mm.page(pfn);
        let (prev, next) = (page.prev(), page.next());
        let area = &mut self.free_area[order.index()][mt];
        if prev == NIL {
            area.head = next;
        } else {
            mm.page(prev).set_next(next);
        }
        if next == NIL {
            area.tail = prev;
        } else {
            mm.page(next).set_prev(prev);
        }
        area.nr_free -= 1;
        if area.nr_free == 0 {
            self.list_mask[mt] &= !order.bit();
        }
        self.reserve_changed |= mt == Migratetype::HighAtomic.index();
        self.listed_pages -= order.pages();
        if flags & flag::PURGED != 0 {
            self.purged_pages -= order.pages();
        } else if order >= self.purge_min_order {
            self.purgeable_pages -= order.pages();
        }
    }
}

/// A free list whose head is not a free block of the list's order: the
/// metadata is broken.
#[cold]
#[inline(never)]
#[track_caller]
fn bad_list_head(mt: Migratetype, order: Order, pfn: Pfn, info: PageInfo) -> ! {
    crate::support::report::fatal(format_args!(
        "the {mt} free list of order {order} holds page {}, whose head says {:?} of order {}",
        pfn.raw(),
        info.state,
        info.order()
    ))
}
