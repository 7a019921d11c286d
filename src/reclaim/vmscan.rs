//! Reclaim (the kernel's `vmscan.c`): what kswapd does when it wakes
//! (`balance_pgdat`), direct reclaim in the allocating thread, and the
//! purge that hands free memory back to the OS. How kswapd sleeps and is woken is in `kswapd.rs`.
//!
//! **kswapd** returns every per-thread cache to the lists once per wake-up
//! and calls the shrinkers until every zone is above high; on its purge
//! timer it purges.
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
use crate::kswapd::Wake;
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

/// A pointer that the kswapd thread may carry.
struct ReclaimPtr(*const Reclaim);

// SAFETY: Reclaim is Sync, and its owner stops the thread before it is
// freed (`Kswapd::stop`).
unsafe impl Send for ReclaimPtr {}

impl Reclaim {
    /// Starts kswapd for `self`, which must stay at this address until
    /// `self.node.kswapd.stop()` has returned.
    pub(crate) fn start_kswapd(&self) -> std::io::Result<()> {
        let ptr = ReclaimPtr(self);
        self.node.kswapd.start(move || {
            let ptr = ptr;
            // SAFETY: see ReclaimPtr.
            kswapd(unsafe { &*ptr.0 });
        })
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
            node.kswapd.memory_freed();
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
            self.node.kswapd.memory_freed();
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
            self.node.pages_returned();
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
            self.node.pages_returned();
        }
        pages
    }

    /// Drains every cache, then purges every zone, as `scope` says.
    pub(crate) fn purge_all(&self, scope: PurgeScope) -> PurgeReport {
        let start = Instant::now();
        // Before the drain: a free that keeps a 2 MiB block in its cache
        // after the drain passed its set sets it again.
        self.node.pcp_huge_cached.store(false, Ordering::Relaxed);
        self.drain_all_pages();
        let report = self.node.purge_zones(scope);
        let counters = &self.node.counters;
        ReclaimCounters::add(&counters.purges, 1);
        ReclaimCounters::add(&counters.purge_calls, report.calls as u64);
        ReclaimCounters::add(&counters.purged_pages, (report.bytes / crate::PAGE_SIZE) as u64);
        ReclaimCounters::add(&counters.purge_ns, start.elapsed().as_nanos() as u64);
        report
    }
}

/// The kswapd thread.
fn kswapd(reclaim: &Reclaim) {
    let node = &reclaim.node;
    let mut purgeable_since = None;
    loop {
        match node.kswapd.sleep(node, &mut purgeable_since) {
            Wake::Stop => return,
            Wake::Purge => {
                reclaim.purge_all(PurgeScope::Stale);
            }
            Wake::Reclaim => {
                ReclaimCounters::add(&node.counters.kswapd_wakeups, 1);
                balance_pgdat(reclaim);
            }
            // kcompactd's work, asked for by a high-order request found
            // short; runs after any reclaim pass that was pending.
            Wake::Compact => reclaim.kcompactd(),
        }
    }
}

/// Reclaims until every zone is above its high watermark, or until
/// `MAX_RECLAIM_RETRIES` passes in a row free nothing.
fn balance_pgdat(reclaim: &Reclaim) {
    let node = &reclaim.node;
    let mut drained = false;
    loop {
        if node.kswapd.stopping() {
            return;
        }
        let deficit: usize = node.zones.iter().map(|z| z.watermarks().high.saturating_sub(z.usable_free_pages())).sum();
        if deficit == 0 && !node.zones.iter().any(|z| z.below(Mark::High)) {
            node.kswapd.succeeded();
            return;
        }
        ReclaimCounters::add(&node.counters.kswapd_passes, 1);
        let mut progress = 0;
        if !drained {
            // Once per wake-up: caches refill at once, and draining them on
            // every pass would look like progress forever.
            progress += reclaim.drain_all_pages();
            drained = true;
        }
        progress += reclaim.shrink(deficit.max(SWAP_CLUSTER_MAX), ShrinkerSet::All, None);
        if progress > 0 {
            node.kswapd.succeeded();
            node.progress.signal();
        } else if node.kswapd.failed() {
            ReclaimCounters::add(&node.counters.kswapd_give_ups, 1);
            return;
        }
    }
}
