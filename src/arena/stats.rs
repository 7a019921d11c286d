//! [`Arena::stats`]: a snapshot of every zone, printed in the kernel's
//! `/proc/buddyinfo`, `/proc/zoneinfo` and extfrag formats.

use std::fmt;

use crate::compact_state::CompactStats;
use crate::kswapd::Kswapd;

use crate::arena::Arena;
use crate::arena::numa::NodeStats;
use crate::order::{NR_ORDERS, Order};
use crate::pcp::PcpTally;
use crate::pcp_config::PCP_MAX_ORDER;
use crate::support::sync::Ordering;
use crate::watermark::Watermarks;

/// A snapshot of an arena; see [`Arena::stats`].
///
/// Each zone is read under its lock, so every zone's figures are consistent
/// with each other; zones are read one after another.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Stats {
    /// Bytes per page (4096).
    pub page_size: usize,
    /// The arena's largest order.
    pub max_order: u32,
    /// Bytes reserved for the region.
    pub region_bytes: usize,
    /// Allocations that failed with `OutOfMemory`.
    pub alloc_failures: u64,
    /// Frees refused as invalid.
    pub invalid_frees: u64,
    /// Threads holding a per-thread cache of this arena.
    pub pcp_sets: usize,
    /// Remote drains run (`Arena::drain_pcp` and reclaim).
    pub pcp_remote_drains: u64,
    /// Bytes the arena may hand out ([`Arena::set_capacity`]).
    pub capacity_bytes: usize,
    /// How long free memory may stay resident before kswapd purges it
    /// (`None`: only on [`Arena::purge`]).
    pub purge_delay: Option<std::time::Duration>,
    /// Bytes that cost RSS as far as the arena knows: everything but
    /// never-used and purged free pages.
    pub resident_bytes: usize,
    /// Reclaim and purge events.
    pub reclaim: ReclaimStats,
    /// Compaction events (the kernel's `compact_*` counters).
    pub compaction: CompactStats,
    /// One entry per zone.
    pub zones: Vec<ZoneStats>,
    /// One entry per NUMA node (one without a topology).
    pub nodes: Vec<NodeStats>,
}

/// What reclaim and purge have done; see [`Stats::reclaim`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReclaimStats {
    /// Times the reclaim thread woke to reclaim.
    pub kswapd_wakeups: u64,
    /// Reclaim passes it ran (each: shrinkers, and caches once per wake-up).
    pub kswapd_passes: u64,
    /// Times it gave up after 16 passes without progress.
    pub kswapd_give_ups: u64,
    /// Its current run of passes without progress (16 = given up); with
    /// NUMA nodes, the longest of their kswapds' ([`NodeStats`](crate::NodeStats)).
    pub kswapd_failures: u32,
    /// Times it went to sleep.
    pub kswapd_sleeps: u64,
    /// Wake-ups sent to a sleeping reclaim thread: by allocations that
    /// left a zone below low, capacity changes, and frees that left memory
    /// to purge while its timer was off. Counted by the sender, at once.
    pub kswapd_wakeups_sent: u64,
    /// Of those, times it slept with the purge timer set.
    pub purge_timer_sleeps: u64,
    /// Registered shrinkers.
    pub shrinkers: usize,
    /// Pages shrinkers were asked to scan.
    pub shrinker_scanned: u64,
    /// Pages shrinkers freed.
    pub shrinker_freed: u64,
    /// Of those, pages freed by reclaimable shrinkers asked first for a
    /// high-order request that reclaimable pageblocks held up
    /// ([`Arena::register_reclaimable_shrinker`](crate::Arena::register_reclaimable_shrinker)).
    pub reclaimable_first_freed: u64,
    /// Direct reclaims run by allocating threads.
    pub direct_reclaims: u64,
    /// Time allocating threads spent in direct reclaim.
    pub direct_reclaim_time: std::time::Duration,
    /// OOM events: reclaim could not satisfy an allocation.
    pub oom_events: u64,
    /// Times a NOFAIL allocation waited for reclaim progress.
    pub nofail_waits: u64,
    /// Allocations failed on purpose by fault injection.
    pub injected_failures: u64,
    /// Node reclaims: a NUMA node short for an allocation reclaimed its
    /// own pages before falling back (node reclaim mode).
    pub node_reclaims: u64,
    /// Purge runs (timer and `Arena::purge`).
    pub purges: u64,
    /// `madvise` calls made by purges.
    pub purge_calls: u64,
    /// Bytes handed back to the OS by purges, in all.
    pub purged_bytes: u64,
    /// Time spent purging (draining the caches, isolating, `madvise`).
    pub purge_time: std::time::Duration,
}

/// One zone's figures, in pages unless said otherwise.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ZoneStats {
    /// The zone's index.
    pub zone: usize,
    /// The NUMA node it belongs to.
    pub node: usize,
    /// The zone's first page in the region.
    pub start_pfn: usize,
    /// Pages the zone spans.
    pub spanned: usize,
    /// Pages the zone may hand out (its share of the capacity).
    pub managed: usize,
    /// Free pages taken off the lists by a purge in progress.
    pub isolated: usize,
    /// Free pages in the buddy lists, including never-used ones.
    pub free: usize,
    /// Free pages never used since the arena was built (no RSS).
    pub untouched: usize,
    /// Free pages handed back to the OS (no RSS).
    pub purged: usize,
    /// Free blocks per order, `/proc/buddyinfo`'s columns (never-used
    /// max-order blocks are counted at `max_order`).
    pub free_blocks: Vec<usize>,
    /// The zone's watermarks.
    pub watermarks: Watermarks,
    /// Blocks allocated per order.
    pub allocs: Vec<u64>,
    /// Blocks freed per order.
    pub frees: Vec<u64>,
    /// Blocks split by `expand`.
    pub splits: u64,
    /// Buddy pairs merged on free.
    pub merges: u64,
    /// Allocations served from another migratetype's free lists (the
    /// kernel's `mm_page_alloc_extfrag` events).
    pub fallbacks: u64,
    /// Of those, the ones from a block smaller than a pageblock, claiming
    /// it or not (the event's `fragmenting`): the only fallbacks that can
    /// leave a pageblock mixed (a released high-atomic pageblock, retyped
    /// with its pages in use, is the other way).
    pub fallbacks_fragmenting: u64,
    /// Pageblocks a fallback claimed for the requesting type.
    pub pageblocks_claimed: u64,
    /// Pages in high-atomic pageblocks (`nr_reserved_highatomic`).
    pub reserved_highatomic: usize,
    /// Attempts that found this zone below the watermark they were checked at.
    pub watermark_failures: u64,
    /// Pages held in per-thread caches and the zone's pool of trimmed
    /// batches (free, but not in the buddy lists).
    pub cached: usize,
    /// Blocks cached per order 0..=`PCP_MAX_ORDER` (lists and pool).
    pub cached_blocks: Vec<usize>,
    /// Of `cached`, pages in the zone's pool of trimmed batches.
    pub pooled: usize,
    /// The per-thread caches' `batch` in force, in pages (0 when disabled).
    pub pcp_batch: usize,
    /// The per-thread caches' `high` in force, in pages.
    pub pcp_high: usize,
    /// Threads whose preferred zone this is.
    pub pcp_threads: usize,
    /// Cache refills from this zone (`rmqueue_bulk` calls).
    pub pcp_refills: u64,
    /// Cache trims into this zone (`free_pcppages_bulk` calls).
    pub pcp_trims: u64,
    /// Whole caches drained into this zone (remote drains, thread exits).
    pub pcp_drains: u64,
    /// Cached blocks refused on their way back (see `Arena::check`).
    pub pcp_corrupt: u64,
}

impl ZoneStats {
    /// Pages handed out to callers.
    pub fn allocated(&self) -> usize {
        self.spanned.saturating_sub(self.free + self.cached + self.isolated)
    }

    /// Free pages within the capacity: what the watermarks are checked against.
    pub fn usable_free(&self) -> usize {
        self.free.saturating_sub(self.spanned - self.managed)
    }

    /// Free pages in the buddy lists that cost RSS: neither untouched nor purged.
    pub fn resident_free(&self) -> usize {
        self.free - self.untouched - self.purged
    }

    /// The kernel's fragmentation index for `order` (`__fragmentation_index`),
    /// in thousandths: -1000 when a free block of that order exists, 0 when
    /// failure would be for lack of memory, towards 1000 when it would be
    /// for fragmentation.
    pub fn fragmentation_index(&self, order: u32) -> i32 {
        crate::buddy::fragmentation_index(&self.free_blocks, order)
    }

    /// The kernel's unusable free space index for `order`
    /// (`unusable_free_index`), in thousandths: the share of free memory that
    /// cannot serve an order-`order` request.
    pub fn unusable_index(&self, order: u32) -> u32 {
        let (_, free_pages, suitable) = crate::buddy::free_block_info(&self.free_blocks, order);
        if free_pages == 0 {
            return 1000;
        }
        ((free_pages - (suitable << order)) * 1000 / free_pages) as u32
    }
}

impl Arena {
    /// A snapshot of every zone: free blocks per order, watermarks, counters.
    /// Its `Display` prints `/proc/buddyinfo`, `/proc/zoneinfo` and the
    /// extfrag indices.
    ///
    /// ```
    /// use zonealloc::{AllocFlags, Arena};
    /// let arena = Arena::builder().region_size(8 << 20).zones(1).max_order(10).build()?;
    /// let page = arena.alloc_pages(0, AllocFlags::empty())?;
    /// let stats = arena.stats();
    /// // Splitting one 4 MiB block for one page leaves one free block of
    /// // each order 0..=9, plus the untouched second 4 MiB block.
    /// assert_eq!(stats.zones[0].free_blocks, vec![1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
    /// assert_eq!(stats.zones[0].allocated(), 1);
    /// println!("{stats}");
    /// # // SAFETY: ours, order 0, not used again.
    /// # unsafe { arena.free_pages(page, 0)? };
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> Stats {
        let inner = &*self.inner;
        let orders = inner.node().max_order.index() + 1;
        let mut pcp = [PcpTally::default(); crate::zone_idx::MAX_ZONES];
        let pcp_sets = inner.reclaim().pcp.tally(&mut pcp);
        let pcp_orders = orders.min(PCP_MAX_ORDER as usize + 1);
        let zones: Vec<ZoneStats> = inner
            .node()
            .zones
            .iter()
            .zip(pcp)
            .map(|(zone, pcp)| {
                // Copy under the lock into fixed arrays; allocate only after
                // unlocking (the arena may be the global allocator).
                let mut free_blocks = [0usize; NR_ORDERS];
                let (mut allocs, mut frees, counters, free, untouched, purged, pcp_counts, pool, isolated, reserved);
                {
                    let guard = zone.lock();
                    let buddy = &guard.inner.buddy;
                    for (order, n) in Order::ZERO.through(inner.node().max_order).zip(&mut free_blocks) {
                        *n = buddy.nr_free_blocks(order);
                    }
                    free_blocks[orders - 1] += buddy.frontier_pages() >> inner.node().max_order.get();
                    allocs = guard.inner.allocs;
                    frees = guard.inner.frees;
                    counters = buddy.counters;
                    free = buddy.nr_free();
                    untouched = buddy.frontier_pages();
                    purged = buddy.purged_pages();
                    isolated = buddy.isolated_pages();
                    reserved = buddy.nr_reserved_highatomic();
                    pcp_counts = [
                        guard.inner.pcp_refills,
                        guard.inner.pcp_trims,
                        guard.inner.pcp_drained,
                        guard.inner.pcp_corrupt,
                    ];
                    pool = guard.inner.pool.counts();
                }
                let mut cached_blocks = pcp.cached;
                for (n, p) in cached_blocks.iter_mut().zip(pool) {
                    *n += p;
                }
                for o in 0..pcp_orders {
                    allocs[o] += pcp.allocs[o];
                    frees[o] += pcp.frees[o];
                }
                let (pcp_batch, pcp_high) = zone.pcp_params();
                ZoneStats {
                    zone: zone.index.index(),
                    node: inner.node().numa.node_of_zone(zone.index),
                    start_pfn: zone.start.index(),
                    spanned: zone.spanned(),
                    managed: zone.managed(),
                    isolated,
                    free,
                    untouched,
                    purged,
                    free_blocks: free_blocks[..orders].to_vec(),
                    watermarks: zone.watermarks(),
                    allocs: allocs[..orders].to_vec(),
                    frees: frees[..orders].to_vec(),
                    splits: counters.splits,
                    merges: counters.merges,
                    fallbacks: counters.fallbacks,
                    fallbacks_fragmenting: counters.fallbacks_fragmenting,
                    pageblocks_claimed: counters.pageblocks_claimed,
                    reserved_highatomic: reserved,
                    watermark_failures: zone.watermark_failures.load(Ordering::Relaxed),
                    cached: cached_blocks.iter().enumerate().map(|(o, n)| n << o).sum(),
                    cached_blocks: cached_blocks[..pcp_orders].to_vec(),
                    pooled: pool.iter().enumerate().map(|(o, n)| n << o).sum(),
                    pcp_batch,
                    pcp_high,
                    pcp_threads: zone.pcp_threads(),
                    pcp_refills: pcp_counts[0],
                    pcp_trims: pcp_counts[1],
                    pcp_drains: pcp_counts[2],
                    pcp_corrupt: pcp_counts[3],
                }
            })
            .collect();
        let r = &inner.node().counters;
        let load = |c: &crate::support::sync::AtomicU64| c.load(Ordering::Relaxed);
        let sleeps =
            inner.node().kswapds.iter().map(Kswapd::sleeps).fold((0, 0, 0), |a, s| (a.0 + s.0, a.1 + s.1, a.2 + s.2));
        let reclaim = ReclaimStats {
            kswapd_wakeups: load(&r.kswapd_wakeups),
            kswapd_passes: load(&r.kswapd_passes),
            kswapd_give_ups: load(&r.kswapd_give_ups),
            kswapd_failures: inner.node().kswapds.iter().map(Kswapd::failures).max().unwrap_or(0),
            kswapd_sleeps: sleeps.0,
            purge_timer_sleeps: sleeps.1,
            kswapd_wakeups_sent: sleeps.2,
            shrinkers: inner.reclaim().shrinkers.len(),
            shrinker_scanned: load(&r.shrinker_scanned),
            shrinker_freed: load(&r.shrinker_freed),
            reclaimable_first_freed: load(&r.reclaimable_first_freed),
            direct_reclaims: load(&r.direct_reclaims),
            node_reclaims: load(&r.node_reclaims),
            direct_reclaim_time: std::time::Duration::from_nanos(load(&r.direct_reclaim_ns)),
            oom_events: load(&r.oom_events),
            nofail_waits: load(&r.nofail_waits),
            injected_failures: inner.pages.fault.as_ref().map_or(0, |f| load(&f.injected)),
            purges: load(&r.purges),
            purge_calls: load(&r.purge_calls),
            purged_bytes: load(&r.purged_pages) * crate::PAGE_SIZE as u64,
            purge_time: std::time::Duration::from_nanos(load(&r.purge_ns)),
        };
        let resident_pages: usize = zones.iter().map(|z: &ZoneStats| z.spanned - z.untouched - z.purged).sum();
        Stats {
            page_size: crate::PAGE_SIZE,
            capacity_bytes: inner.capacity_pages.load(Ordering::Relaxed) * crate::PAGE_SIZE,
            purge_delay: inner.node().reclaim_config().purge_delay,
            resident_bytes: resident_pages * crate::PAGE_SIZE,
            reclaim,
            compaction: inner.reclaim().compaction.stats(),
            max_order: inner.node().max_order.get(),
            region_bytes: inner.node().region.len(),
            alloc_failures: inner.pages.counters.alloc_failures.load(Ordering::Relaxed),
            invalid_frees: inner.pages.counters.invalid_frees.load(Ordering::Relaxed),
            pcp_sets,
            pcp_remote_drains: inner.reclaim().pcp.drains.load(Ordering::Relaxed),
            nodes: self.node_stats(&zones),
            zones,
        }
    }
}

/// Thousandths as the kernel prints them: `-1.000`, `0.250`.
struct Milli(i64);

impl fmt::Display for Milli {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        write!(f, "{sign}{}.{:03}", self.0.abs() / 1000, self.0.abs() % 1000)
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "# buddyinfo: free blocks per order 0..={}", self.max_order)?;
        for z in &self.zones {
            write!(f, "Node {}, zone {:>6} ", z.node, z.zone)?;
            for n in &z.free_blocks {
                write!(f, "{n:>7}")?;
            }
            writeln!(f)?;
        }
        writeln!(f, "# zoneinfo")?;
        for z in &self.zones {
            writeln!(f, "Node {}, zone {:>6}", z.node, z.zone)?;
            writeln!(f, "  pages free     {}", z.free)?;
            writeln!(f, "        min      {}", z.watermarks.min)?;
            writeln!(f, "        low      {}", z.watermarks.low)?;
            writeln!(f, "        high     {}", z.watermarks.high)?;
            writeln!(f, "        spanned  {}", z.spanned)?;
            writeln!(f, "        managed  {}", z.managed)?;
            writeln!(f, "        isolated {}", z.isolated)?;
            writeln!(f, "        allocated {}", z.allocated())?;
            writeln!(f, "        cached   {}", z.cached)?;
            writeln!(f, "        untouched {}", z.untouched)?;
            writeln!(f, "        purged   {}", z.purged)?;
            writeln!(f, "  start_pfn:     {}", z.start_pfn)?;
            writeln!(f, "  splits {} merges {} watermark_failures {}", z.splits, z.merges, z.watermark_failures)?;
            writeln!(
                f,
                "  fallbacks {} fragmenting {} pageblocks_claimed {} reserved_highatomic {}",
                z.fallbacks, z.fallbacks_fragmenting, z.pageblocks_claimed, z.reserved_highatomic
            )?;
            write!(
                f,
                "  pagesets (per-thread caches)\n    threads: {}\n    high:  {}\n    batch: {}\n    count:",
                z.pcp_threads, z.pcp_high, z.pcp_batch
            )?;
            for n in &z.cached_blocks {
                write!(f, " {n}")?;
            }
            writeln!(
                f,
                "\n    pooled: {} refills: {} trims: {} drains: {} refused: {}",
                z.pooled, z.pcp_refills, z.pcp_trims, z.pcp_drains, z.pcp_corrupt
            )?;
            write!(f, "  allocs  ")?;
            for n in &z.allocs {
                write!(f, " {n}")?;
            }
            write!(f, "\n  frees   ")?;
            for n in &z.frees {
                write!(f, " {n}")?;
            }
            writeln!(f)?;
        }
        writeln!(f, "# extfrag_index")?;
        for z in &self.zones {
            write!(f, "Node {}, zone {:>6} ", z.node, z.zone)?;
            for order in 0..=self.max_order {
                write!(f, " {}", Milli(z.fragmentation_index(order).into()))?;
            }
            writeln!(f)?;
        }
        writeln!(f, "# unusable_index")?;
        for z in &self.zones {
            write!(f, "Node {}, zone {:>6} ", z.node, z.zone)?;
            for order in 0..=self.max_order {
                write!(f, " {}", Milli(z.unusable_index(order).into()))?;
            }
            writeln!(f)?;
        }
        writeln!(
            f,
            "alloc_failures {} invalid_frees {} pcp_sets {} pcp_remote_drains {}",
            self.alloc_failures, self.invalid_frees, self.pcp_sets, self.pcp_remote_drains
        )?;
        writeln!(f, "capacity {} KiB, resident {} KiB", self.capacity_bytes >> 10, self.resident_bytes >> 10)?;
        let r = &self.reclaim;
        writeln!(
            f,
            "# reclaim\nkswapd_wakeups {} kswapd_passes {} kswapd_give_ups {} kswapd_failures {} kswapd_sleeps {} \
             purge_timer_sleeps {} kswapd_wakeups_sent {}",
            r.kswapd_wakeups,
            r.kswapd_passes,
            r.kswapd_give_ups,
            r.kswapd_failures,
            r.kswapd_sleeps,
            r.purge_timer_sleeps,
            r.kswapd_wakeups_sent
        )?;
        writeln!(
            f,
            "shrinkers {} shrinker_scanned {} shrinker_freed {} reclaimable_first_freed {}",
            r.shrinkers, r.shrinker_scanned, r.shrinker_freed, r.reclaimable_first_freed
        )?;
        writeln!(
            f,
            "direct_reclaims {} direct_reclaim_time {:?} oom_events {} nofail_waits {} injected_failures {}",
            r.direct_reclaims, r.direct_reclaim_time, r.oom_events, r.nofail_waits, r.injected_failures
        )?;
        writeln!(
            f,
            "purges {} purge_calls {} purged {} KiB purge_time {:?}",
            r.purges,
            r.purge_calls,
            r.purged_bytes >> 10,
            r.purge_time
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone_with(free_blocks: Vec<usize>) -> ZoneStats {
        let free = free_blocks.iter().enumerate().map(|(o, n)| n << o).sum();
        ZoneStats {
            node: 0,
            zone: 0,
            start_pfn: 0,
            spanned: 1024,
            managed: 1024,
            isolated: 0,
            free,
            untouched: 0,
            purged: 0,
            free_blocks,
            watermarks: Watermarks::default(),
            allocs: vec![],
            frees: vec![],
            splits: 0,
            merges: 0,
            fallbacks: 0,
            fallbacks_fragmenting: 0,
            pageblocks_claimed: 0,
            reserved_highatomic: 0,
            watermark_failures: 0,
            cached: 0,
            cached_blocks: vec![],
            pooled: 0,
            pcp_batch: 0,
            pcp_high: 0,
            pcp_threads: 0,
            pcp_refills: 0,
            pcp_trims: 0,
            pcp_drains: 0,
            pcp_corrupt: 0,
        }
    }

    #[test]
    fn indices_follow_the_kernel_formulas() {
        // 8 free order-0 pages, nothing bigger.
        let z = zone_with(vec![8, 0, 0, 0]);
        assert_eq!(z.fragmentation_index(0), -1000);
        // order 3: 1000 - (1000 + 8*1000/8) / 8 = 1000 - 250 = 750
        assert_eq!(z.fragmentation_index(3), 750);
        assert_eq!(z.unusable_index(0), 0);
        assert_eq!(z.unusable_index(1), 1000);
        // One order-2 block and 4 order-0 pages: half the free memory is usable at order 2.
        let z = zone_with(vec![4, 0, 1, 0]);
        assert_eq!(z.unusable_index(2), 500);
        assert_eq!(zone_with(vec![0, 0]).fragmentation_index(1), 0);
        assert_eq!(Milli(-1000).to_string(), "-1.000");
        assert_eq!(Milli(750).to_string(), "0.750");
    }
}
