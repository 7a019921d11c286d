//! Compaction, as `mm/compaction.c` does it: a migrate scanner walks a zone
//! from its start isolating owned (movable) blocks in use, a free scanner
//! walks from the top of the used memory down taking free blocks as
//! targets, each isolated block is moved by its owner
//! ([`Movable::migrate`](crate::Movable::migrate)) into a target, and the
//! scanners meet in the middle: used memory gathers at the top, free memory
//! at the bottom, in whole high-order blocks.
//!
//! **Isolation.** An owned block's head is `Owned`; the migrate scanner
//! claims it with one compare-exchange to `Migrating`, the same word a free
//! claims with a compare-exchange back to `Allocated` (`release_owned`, in
//! the free path): exactly one wins. A free that finds `Migrating` marks
//! the block `MigratingFreed` and returns; compaction frees it when the
//! move ends. So a block freed, or being freed, while compaction picks it
//! is never moved twice, never lost, never handed out twice. No lock of
//! the arena is held while an owner's `migrate` runs (it may allocate and
//! free); a free scanner's target is `Migrating` from the moment it is
//! taken (under the zone lock) until the move ends, so the owner's free of
//! it meanwhile is deferred as the source's is. `tests/loom.rs` models a
//! free racing the isolation (`a_free_racing_compaction_isolation_frees_once`).
//!
//! **Who runs it.** `Arena::compact` compacts every zone to the end
//! (`/proc/sys/vm/compact_memory`). The slow path compacts directly for
//! orders above 0, and in defrag mode for every order towards a free
//! pageblock (`__alloc_pages_direct_compact`), first at the lowest
//! priority (`Async`: only movable pageblocks are sources), raising it
//! while compaction fails, and only where the fragmentation index says
//! fragmentation and not lack of memory is the cause (above
//! `sysctl_extfrag_threshold`, 500, for costly orders); a zone where it
//! failed is deferred (`defer_compaction`: skipped for 1, 2, 4 ... 64
//! attempts at that order or above). kcompactd is woken when the slow
//! path finds a high-order request short (`wakeup_kcompactd`) and runs
//! on kswapd's thread, on a wake-up of its own. Each of the three returns
//! the per-thread caches once before it compacts its zones.

use std::ptr::NonNull;
use std::time::Duration;

use crate::memalloc::InReclaim;
use crate::migratetype::Migratetype;
use crate::order::Order;
use crate::page::{PageInfo, PageState};
use crate::pcp_config::PAGE_ALLOC_COSTLY_ORDER;
use crate::pfn::Pfn;
use crate::reclaim::vmscan::Reclaim;
use crate::support::sync::{Instant, Ordering};
use crate::watermark::{AllocMode, Mark};
use crate::zone::Zone;
use crate::zone_idx::ZoneIdx;

/// Above this fragmentation index a failed costly request is blamed on
/// fragmentation and compaction may help (`sysctl_extfrag_threshold`).
pub(super) const EXTFRAG_THRESHOLD: i32 = 500;

/// How hard a compaction tries (`enum compact_priority`), highest last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum CompactPriority {
    /// Only movable pageblocks are sources (`COMPACT_PRIO_ASYNC`).
    Async,
    /// Every pageblock is a source (`COMPACT_PRIO_SYNC_LIGHT`).
    SyncLight,
    /// As `SyncLight`, and deferral is ignored (`COMPACT_PRIO_SYNC_FULL`).
    SyncFull,
}

impl CompactPriority {
    /// The next higher priority, if any.
    pub(crate) fn raise(self) -> Option<Self> {
        match self {
            Self::Async => Some(Self::SyncLight),
            Self::SyncLight => Some(Self::SyncFull),
            Self::SyncFull => None,
        }
    }
}

/// What a compaction did; `Arena::compact` returns one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// Zones compacted.
    pub zones: usize,
    /// Pages the migrate scanner walked (`compact_migrate_scanned`).
    pub migrate_scanned: u64,
    /// Pages the free scanner walked (`compact_free_scanned`).
    pub free_scanned: u64,
    /// Blocks isolated for moving (`compact_isolated`).
    pub isolated: u64,
    /// Pages moved (`pgmigrate_success`).
    pub migrated_pages: u64,
    /// Blocks left where they were: their owner refused (pinned) or is
    /// gone (`pgmigrate_fail`).
    pub failed: u64,
    /// How long it took.
    pub elapsed: Duration,
}

impl CompactReport {
    /// Adds another zone's report.
    pub(crate) fn add(&mut self, other: &CompactReport) {
        self.zones += other.zones;
        self.migrate_scanned += other.migrate_scanned;
        self.free_scanned += other.free_scanned;
        self.isolated += other.isolated;
        self.migrated_pages += other.migrated_pages;
        self.failed += other.failed;
        self.elapsed += other.elapsed;
    }
}

/// The two scanners' positions in one zone (`struct compact_control`).
struct CompactControl {
    /// Next pageblock the migrate scanner looks at.
    migrate_pfn: Pfn,
    /// The free scanner looks at the pageblock below this,
    free_pfn: Pfn,
    /// from this page on (the next look in a pageblock resumes after the
    /// last target it gave).
    free_cursor: Pfn,
    pageblock_pages: usize,
    report: CompactReport,
}

/// Whether the migrate scanner goes on after one isolated block.
enum Scan {
    Continue,
    /// No target left: the scanners met.
    Met,
}

impl Reclaim {
    /// Compacts one zone: to the end (`order` `None`) or until a free
    /// block of `order` passes the low watermark. The caller has returned
    /// the per-thread caches first (once for all the zones it compacts),
    /// so that the free scanner sees those pages and freed blocks merge.
    pub(crate) fn compact_zone(&self, zone: &Zone, order: Option<Order>, priority: CompactPriority) -> CompactReport {
        let start = Instant::now();
        let free_pfn = zone.lock().inner.buddy.frontier();
        let pageblock_pages = zone.pageblock_order.pages();
        let mut cc = CompactControl {
            migrate_pfn: zone.start,
            free_pfn,
            // Not inside the free scanner's pageblock: its first look
            // starts at the pageblock's start.
            free_cursor: free_pfn,
            pageblock_pages,
            report: CompactReport { zones: 1, ..CompactReport::default() },
        };
        let _reclaiming = InReclaim::enter();
        // The free scanner's pageblock is the one below `free_pfn`; the
        // migrate scanner never enters it (blocks just moved there would
        // be moved again): the scanners have met.
        'scan: while cc.migrate_pfn + 2 * pageblock_pages <= cc.free_pfn {
            let block_start = cc.migrate_pfn;
            let block_end = block_start + pageblock_pages;
            let source_ok = priority > CompactPriority::Async
                || zone.lock().inner.buddy.pageblocks().get(block_start) == Migratetype::Movable;
            let mut pfn = block_start;
            while source_ok && pfn < block_end {
                let info = self.node.mem_map.page(pfn).info();
                let size = if info.state == PageState::Tail { 1 } else { info.order().pages() };
                cc.report.migrate_scanned += size as u64;
                if info.state == PageState::Owned
                    && let Scan::Met = self.migrate_one(zone, pfn, info, &mut cc)
                {
                    break 'scan;
                }
                pfn += size;
            }
            cc.migrate_pfn = block_end;
            if let Some(order) = order
                && zone.watermark_ok(order, AllocMode::new(Mark::Low, order, crate::flags::AllocFlags::empty()))
            {
                break;
            }
        }
        cc.report.elapsed = start.elapsed();
        let r = &cc.report;
        self.compaction.record([r.migrate_scanned, r.free_scanned, r.isolated, r.migrated_pages, r.failed]);
        // Whatever was isolated may have been freed here (a move, or a
        // free that came during one): waiters and kswapd hear of it.
        if r.isolated > 0 {
            self.node.pages_returned(zone);
        }
        cc.report
    }

    /// Isolates the owned block at `pfn` (head `info`), moves it through
    /// its owner into a target from the free scanner, and frees whichever
    /// of the two is no longer used.
    fn migrate_one(&self, zone: &Zone, pfn: Pfn, info: PageInfo, cc: &mut CompactControl) -> Scan {
        let mm = &self.node.mem_map;
        let page = mm.page(pfn);
        if page.cas_info(info, info.with_state(PageState::Migrating)).is_err() {
            return Scan::Continue; // freed (or changed) under us: not ours
        }
        cc.report.isolated += 1;
        let order = info.order();
        let owner_id = page.owner();
        // Held from before the owner is looked up until `migrate` returns:
        // a handle dropped meanwhile either removed the owner first (the
        // block stays, unowned) or waits for this call.
        let call = self.movable.call_guard();
        let Some(owner) = self.movable.get(owner_id) else {
            // The owner is gone: the block stays, no longer movable.
            self.putback(zone, pfn, order, PageState::Allocated);
            cc.report.failed += 1;
            return Scan::Continue;
        };
        let Some(target) = self.compaction_alloc(zone, order, cc) else {
            self.putback(zone, pfn, order, PageState::Owned);
            return Scan::Met;
        };
        // The target is the owner's as soon as `migrate` repoints to it,
        // and the owner may free it before the move ends: it is
        // `Migrating` (from the free scanner on), so such a free is
        // deferred as the source's is.
        mm.page(target).set_owner(owner_id);
        let moved = owner.migrate(self.addr(pfn), self.addr(target), order.get());
        drop(call);
        drop(owner);
        if moved {
            self.putback(zone, target, order, PageState::Owned);
            self.free_isolated(zone, pfn, order);
            cc.report.migrated_pages += order.pages() as u64;
        } else {
            self.free_isolated(zone, target, order);
            self.putback(zone, pfn, order, PageState::Owned);
            cc.report.failed += 1;
        }
        Scan::Continue
    }

    /// The address of page `pfn`.
    fn addr(&self, pfn: Pfn) -> NonNull<u8> {
        // SAFETY: a page of a zone is a page of the region.
        unsafe { self.node.region.page_addr(pfn) }
    }

    /// Ends the isolation of a block that stays (a source not moved, or a
    /// target moved into): it becomes `state`, unless its owner freed it
    /// meanwhile (then it is freed now).
    fn putback(&self, zone: &Zone, pfn: Pfn, order: Order, state: PageState) {
        let page = self.node.mem_map.page(pfn);
        let mut info = page.info();
        while info.state == PageState::Migrating {
            match page.cas_info(info, info.with_state(state)) {
                Ok(()) => return,
                Err(now) => info = now,
            }
        }
        debug_assert_eq!(info.state, PageState::MigratingFreed);
        self.free_isolated(zone, pfn, order);
    }

    /// Gives a block compaction holds (isolated or a target) back to the
    /// buddy lists.
    fn free_isolated(&self, zone: &Zone, pfn: Pfn, order: Order) {
        let mut guard = zone.lock();
        guard.inner.buddy.free_one_page(&self.node.mem_map, pfn, order, 0);
    }

    /// `compaction_alloc`: a target of `order` from the free scanner,
    /// which moves down a pageblock at a time until it meets the migrate
    /// scanner.
    fn compaction_alloc(&self, zone: &Zone, order: Order, cc: &mut CompactControl) -> Option<Pfn> {
        let mut guard = zone.lock();
        let source_end = cc.migrate_pfn + cc.pageblock_pages;
        loop {
            if cc.free_pfn < source_end + cc.pageblock_pages {
                return None;
            }
            let start = cc.free_pfn - cc.pageblock_pages;
            let from = if cc.free_cursor >= start && cc.free_cursor < cc.free_pfn { cc.free_cursor } else { start };
            let (target, scanned) = guard.inner.buddy.isolate_free_target(&self.node.mem_map, (start, from), order);
            cc.report.free_scanned += scanned as u64;
            if let Some(pfn) = target {
                cc.free_cursor = pfn + order.pages();
                return target;
            }
            cc.free_pfn = start;
            cc.free_cursor = start;
        }
    }

    /// `try_to_compact_pages` for the slow path: compacts the zones where
    /// it may help an order-`order` request, at `priority`. `None` if no
    /// zone was compacted (nothing movable, not suitable, deferred); else
    /// whether a zone ended with a block of that order.
    pub(crate) fn direct_compact(&self, order: Order, priority: CompactPriority) -> Option<bool> {
        if self.movable.is_empty() {
            return None;
        }
        let mut ran = false;
        let mut success = false;
        for zone in self.node.zones.iter() {
            if !self.compaction_suitable(zone, order) {
                continue;
            }
            if priority < CompactPriority::SyncFull && zone.deferral.deferred(order) {
                self.compaction.deferred.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if !ran {
                self.drain_all_pages();
                ran = true;
            }
            let report = self.compact_zone(zone, Some(order), priority);
            if zone.watermark_ok(order, AllocMode::new(Mark::Min, order, crate::flags::AllocFlags::empty())) {
                success = true;
                break;
            }
            if report.migrated_pages == 0 || priority > CompactPriority::Async {
                zone.deferral.defer(order);
            }
        }
        if ran {
            self.compaction.stall.fetch_add(1, Ordering::Relaxed);
        }
        ran.then_some(success)
    }

    /// The slow path's allocation after a direct compaction succeeded or
    /// failed: counts it and resets or keeps the deferral.
    pub(crate) fn compaction_outcome(&self, order: Order, allocated: bool) {
        if allocated {
            self.compaction.success.fetch_add(1, Ordering::Relaxed);
            for zone in self.node.zones.iter() {
                zone.deferral.reset(order);
            }
        } else {
            self.compaction.fail.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `compaction_suitable`: a free block of `order` is missing and, for
    /// costly orders, the fragmentation index blames fragmentation
    /// (above [`EXTFRAG_THRESHOLD`]); below it, the zone lacks memory and
    /// reclaim, not compaction, is what helps.
    fn compaction_suitable(&self, zone: &Zone, order: Order) -> bool {
        let index = zone.lock().inner.buddy.fragmentation_index(order);
        if index == -1000 {
            return false; // a block is there: the watermark, not fragmentation
        }
        order.get() <= PAGE_ALLOC_COSTLY_ORDER || index > EXTFRAG_THRESHOLD
    }

    /// `wakeup_kcompactd`: an order-`order` request that prefers zone
    /// `preferred` found its zones short: the kcompactd of that zone's
    /// NUMA node is woken.
    pub(crate) fn wakeup_kcompactd(&self, order: Order, preferred: ZoneIdx) {
        if order > Order::ZERO && !self.movable.is_empty() {
            self.node.kswapd_of(self.node.zone(preferred)).wakeup_kcompactd(order);
        }
    }

    /// NUMA node `nid`'s kcompactd work (`kcompactd_do_work`), run by its
    /// background thread on its own wake-up (`Wake::Compact`): compacts
    /// each zone of the node where the order it was woken for is short and
    /// compaction may help.
    pub(crate) fn kcompactd(&self, nid: usize) {
        let kswapd = self.node.kswapd(nid);
        let order = kswapd.take_compact_order();
        if order == Order::ZERO {
            return;
        }
        self.compaction.kcompactd_wakes.fetch_add(1, Ordering::Relaxed);
        self.drain_all_pages();
        for zone in self.node.zones_of(nid) {
            if kswapd.stopping() {
                return;
            }
            if !self.compaction_suitable(zone, order) || zone.deferral.deferred(order) {
                continue;
            }
            let report = self.compact_zone(zone, Some(order), CompactPriority::SyncLight);
            if !zone.watermark_ok(order, AllocMode::new(Mark::Low, order, crate::flags::AllocFlags::empty()))
                && report.migrated_pages == 0
            {
                zone.deferral.defer(order);
            }
        }
    }
}
