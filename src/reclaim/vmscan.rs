//! Reclaim (the kernel's `vmscan.c`): what kswapd does when it wakes
//! (`balance_pgdat`), direct reclaim in the allocating thread, and the
//! purge that hands free memory back to the OS. How kswapd sleeps and is woken is in `kswapd.rs`.
//!
//! **kswapd**, one per NUMA node, returns every per-thread cache to the
//! lists once per wake-up and calls the shrinkers (told its node, with
//! NUMA) until every zone of its node is above high; on its purge timer it
//! purges its node's zones, and kcompactd's work compacts them.
//!
//! **Direct reclaim** runs in the allocating thread when the slow path finds
//! nothing at the min watermark: shrinkers for at least `SWAP_CLUSTER_MAX`
//! pages, then (once) every per-thread cache. For a high-order request
//! held up by reclaimable pageblocks with pages in use, the shrinkers of
//! reclaimable memory are asked first, for `compact_gap` (twice the
//! request, at least `SWAP_CLUSTER_MAX`) but no more than those pages in
//! use: compaction cannot move those pages, and a cache that frees its
//! oldest pages first empties its oldest pageblocks. The other shrinkers
//! are asked only for what is still missing. A thread that is reclaiming is
//! marked ([`InReclaim`](crate::memalloc::InReclaim), the kernel's
//! `PF_MEMALLOC`): its own allocations, made by shrinkers, ignore
//! watermarks and never recurse into reclaim.

use crate::compact_state::CompactCounters;
use crate::flags::AllocFlags;
use crate::kswapd::{Kswapd, Wake};
use crate::memalloc::InReclaim;
use crate::migratetype::Migratetype;
use crate::node::{Node, ReclaimCounters};
use crate::order::Order;
use crate::pcp::{PcpRegistry, drain_own_cache};
use crate::reclaim::movable::MovableRegistry;
use crate::reclaim::purge::{PurgeReport, PurgeScope};
use crate::reclaim::shrinker::{ShrinkerRegistry, ShrinkerSet};
use crate::support::sync::{Instant, Ordering};
use crate::watermark::{AllocMode, Mark};

/// Pages direct reclaim asks the shrinkers for at least (`SWAP_CLUSTER_MAX`).
pub(crate) const SWAP_CLUSTER_MAX: usize = 32;

/// A node with everything reclaim takes memory back from: its per-thread
/// caches and its shrinkers. kswapd runs on one.
#[repr(C)]
pub(crate) struct Reclaim {
    pub node: Node,
    pub pcp: PcpRegistry,
    pub shrinkers: ShrinkerRegistry,
    /// The owners of movable blocks, for compaction.
    pub movable: MovableRegistry,
    /// Compaction's counters and kcompactd's pending work.
    pub compaction: CompactCounters,
}

/// A pointer that a kswapd thread may carry.
struct ReclaimPtr(*const Reclaim);

// SAFETY: Reclaim is Sync, and its owner stops the thread before it is
// freed (`Kswapd::stop`).
unsafe impl Send for ReclaimPtr {}

impl Reclaim {
    /// Starts a kswapd per NUMA node for `self`, which must stay at this
    /// address until [`stop_kswapds`](Self::stop_kswapds) has returned. If
    /// one cannot be started, none runs.
    pub(crate) fn start_kswapd(&self) -> std::io::Result<()> {
        for kswapd in self.node.kswapds.iter() {
            let ptr = ReclaimPtr(self);
            let nid = kswapd.nid();
            let started = kswapd.start(move || {
                let ptr = ptr;
                // SAFETY: see ReclaimPtr.
                kswapd_thread(unsafe { &*ptr.0 }, nid);
            });
            if let Err(error) = started {
                self.stop_kswapds();
                return Err(error);
            }
        }
        Ok(())
    }

    /// Stops every kswapd and waits for them to exit.
    pub(crate) fn stop_kswapds(&self) {
        self.node.kswapds.iter().for_each(Kswapd::stop);
    }

    /// Asks the shrinkers of `set` for `nr_to_reclaim` pages, marked as
    /// reclaiming; returns the pages they freed. What they freed went into
    /// this thread's own cache: it is returned to the zones at once.
    pub(super) fn shrink(&self, nr_to_reclaim: usize, set: ShrinkerSet, node: Option<usize>) -> usize {
        if self.shrinkers.len() == 0 {
            return 0;
        }
        let outcome = {
            let _reclaiming = InReclaim::enter();
            self.shrinkers.shrink(nr_to_reclaim, set, node)
        };
        let counters = &self.node.counters;
        ReclaimCounters::add(&counters.shrinker_scanned, outcome.scanned as u64);
        ReclaimCounters::add(&counters.shrinker_freed, outcome.freed as u64);
        self.drain_local_pages();
        outcome.freed
    }

    /// `__alloc_pages_direct_reclaim`: the allocating thread reclaims for
    /// itself. Returns the pages reclaimed.
    pub(crate) fn direct_reclaim(&self, order: Order, drained: &mut bool) -> usize {
        let start = Instant::now();
        let target = SWAP_CLUSTER_MAX.max(order.pages());
        let mut progress = 0;
        if order > Order::ZERO && self.shrinkers.has_reclaimable() {
            let held = self.reclaimable_in_use(order);
            if held > 0 {
                let freed = self.shrink(held.min(target.max(order.pages() << 1)), ShrinkerSet::Reclaimable, None);
                ReclaimCounters::add(&self.node.counters.reclaimable_first_freed, freed as u64);
                progress += freed;
            }
        }
        if progress < target {
            progress += self.shrink(target - progress, ShrinkerSet::All, None);
        }
        if !*drained {
            progress += self.drain_all_pages();
            *drained = true;
        }
        let node = &self.node;
        ReclaimCounters::add(&node.counters.direct_reclaims, 1);
        ReclaimCounters::add(&node.counters.direct_reclaim_ns, start.elapsed().as_nanos() as u64);
        if progress > 0 {
            node.memory_freed();
            node.progress.signal();
        }
        progress
    }

    /// `node_reclaim`: NUMA node `node`'s zones are short for an
    /// order-`order` request, and node reclaim mode would rather reclaim
    /// there than fall back to another node: the shrinkers are asked for
    /// that node's pages. Returns the pages freed.
    pub(crate) fn node_reclaim(&self, node: usize, order: Order) -> usize {
        ReclaimCounters::add(&self.node.counters.node_reclaims, 1);
        let freed = self.shrink(SWAP_CLUSTER_MAX.max(order.pages()), ShrinkerSet::All, Some(node));
        if freed > 0 {
            self.node.memory_freed();
            self.node.progress.signal();
        }
        freed
    }

    /// Pages in use in the reclaimable pageblocks of the zones where an
    /// order-`order` request fails its min watermark: what holds it up that
    /// only the shrinkers of reclaimable memory can free.
    fn reclaimable_in_use(&self, order: Order) -> usize {
        let mode = AllocMode::new(Mark::Min, order, AllocFlags::empty());
        self.node
            .zones
            .iter()
            .filter(|zone| !zone.watermark_ok(order, mode))
            .map(|zone| zone.lock().inner.buddy.pageblock_pages_in_use(Migratetype::Reclaimable))
            .sum()
    }

    /// Returns every thread's cache and every pool to the lists; the pages.
    pub(crate) fn drain_all_pages(&self) -> usize {
        let pages = self.pcp.drain_all(&self.node);
        if pages > 0 {
            self.node.pages_returned_anywhere();
        }
        pages
    }

    /// Returns the calling thread's own cache to the lists (what a shrinker
    /// freed on this thread lands there).
    pub(super) fn drain_local_pages(&self) -> usize {
        if !self.node.pcp_enabled {
            return 0;
        }
        let pages = drain_own_cache(&self.node, &self.pcp);
        if pages > 0 {
            self.node.pages_returned_anywhere();
        }
        pages
    }

    /// Drains every cache, then purges the zones of NUMA node `nid` (all
    /// with `None`), as `scope` says.
    pub(crate) fn purge(&self, scope: PurgeScope, nid: Option<usize>) -> PurgeReport {
        let start = Instant::now();
        // Before the drain: a free that keeps a 2 MiB block in its cache
        // after the drain passed its set sets it again. Every node's bit:
        // the drain returns every cache, whatever node its blocks are on.
        self.node.pcp_huge_cached.store(0, Ordering::Relaxed);
        self.drain_all_pages();
        let zones = match nid {
            Some(nid) => self.node.zones_of(nid),
            None => &self.node.zones[..],
        };
        let report = self.node.purge_zones(zones, scope);
        let counters = &self.node.counters;
        ReclaimCounters::add(&counters.purges, 1);
        ReclaimCounters::add(&counters.purge_calls, report.calls as u64);
        ReclaimCounters::add(&counters.purged_pages, (report.bytes / crate::PAGE_SIZE) as u64);
        ReclaimCounters::add(&counters.purge_ns, start.elapsed().as_nanos() as u64);
        report
    }
}

/// NUMA node `nid`'s kswapd thread.
fn kswapd_thread(reclaim: &Reclaim, nid: usize) {
    let node = &reclaim.node;
    let kswapd = node.kswapd(nid);
    let mut purgeable_since = None;
    loop {
        match kswapd.sleep(node, &mut purgeable_since) {
            Wake::Stop => return,
            Wake::Purge => {
                reclaim.purge(PurgeScope::Stale, Some(nid));
            }
            Wake::Reclaim => {
                ReclaimCounters::add(&node.counters.kswapd_wakeups, 1);
                kswapd.count_wakeup();
                balance_pgdat(reclaim, nid);
            }
            // kcompactd's work, asked for by a high-order request found
            // short; runs after any reclaim pass that was pending.
            Wake::Compact => reclaim.kcompactd(nid),
        }
    }
}

/// Reclaims until every zone of NUMA node `nid` is above its high
/// watermark, or until `MAX_RECLAIM_RETRIES` passes in a row free nothing.
fn balance_pgdat(reclaim: &Reclaim, nid: usize) {
    let node = &reclaim.node;
    let kswapd = node.kswapd(nid);
    let zones = node.zones_of(nid);
    // The shrinkers are told the node only when there is more than one.
    let shrink_node = node.numa.is_numa().then_some(nid);
    let mut drained = false;
    loop {
        if kswapd.stopping() {
            return;
        }
        let deficit: usize = zones.iter().map(|z| z.watermarks().high.saturating_sub(z.usable_free_pages())).sum();
        if deficit == 0 && !zones.iter().any(|z| z.below(Mark::High)) {
            kswapd.succeeded();
            return;
        }
        ReclaimCounters::add(&node.counters.kswapd_passes, 1);
        kswapd.count_pass();
        let mut progress = 0;
        if !drained {
            // Once per wake-up: caches refill at once, and draining them on
            // every pass would look like progress forever.
            progress += reclaim.drain_all_pages();
            drained = true;
        }
        progress += reclaim.shrink(deficit.max(SWAP_CLUSTER_MAX), ShrinkerSet::All, shrink_node);
        if progress > 0 {
            kswapd.succeeded();
            node.progress.signal();
        } else if kswapd.failed() {
            ReclaimCounters::add(&node.counters.kswapd_give_ups, 1);
            return;
        }
    }
}
