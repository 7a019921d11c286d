//! The node (the kernel's `pglist_data`): the region, its page metadata, its
//! zones, and the state every layer above signals when it takes pages from
//! a zone or gives them back (kswapd, the progress event, the counters).
//! It is what the per-thread caches, purge and reclaim receive: never the
//! arena.

use std::cell::Cell;

use crate::kswapd::{Kswapd, Kswapds, SleepCheck};
use crate::mempolicy::NodeMask;
use crate::numa::NumaLayout;
use crate::order::Order;
use crate::page::{MemMap, SideTable};
use crate::pfn::Pfn;
use crate::progress::Progress;
use crate::region::{HugePages, Region};
use crate::support::sync::{AtomicU32, AtomicU64, Mutex, Ordering, fence, heavy_barrier, light_barrier};
use crate::watermark::Mark;
use crate::zone::Zone;
use crate::zone_idx::ZoneIdx;

/// The node. `repr(C)` keeps what the fast paths read (the id, the region's
/// base and length, the metadata's pointer and length) together at the
/// front.
#[repr(C)]
pub(crate) struct Node {
    /// Unique for the life of the process; names the arena in thread caches.
    pub id: u64,
    pub region: Region,
    pub mem_map: MemMap,
    /// Per-page slots for the slab layer's headers.
    pub side_table: SideTable,
    pub zones: crate::support::boot::SysBox<[Zone]>,
    pub max_order: Order,
    /// Whether orders 0..=`PCP_MAX_ORDER` go through per-thread caches.
    pub pcp_enabled: bool,
    /// Whether allocations are grouped by mobility (else all unmovable).
    pub group_by_mobility: bool,
    /// Whether fallbacks wait for reclaim and compaction to fail before
    /// splitting a foreign pageblock (the kernel's `defrag_mode`).
    pub defrag_mode: bool,
    /// Whether the asymmetric barrier pair (membarrier) is available.
    pub asymmetric_barriers: bool,
    pub huge_pages: HugePages,
    /// Which zones each NUMA node holds; one node without NUMA.
    pub numa: NumaLayout,
    /// Threads' spread over a node's zones.
    zone_of_seq: FastMod,
    /// A kswapd per NUMA node, in node order (one without NUMA).
    pub kswapds: Kswapds,
    /// What NOFAIL callers wait on.
    pub progress: Progress,
    /// Held by a purge from isolating free blocks until they are back on
    /// the lists, so `fork(2)` never copies blocks left isolated forever.
    pub purging: Mutex<()>,
    /// A thread's cache may hold a 2 MiB block of NUMA node `n` (bit `n`,
    /// set by the free that kept it, cleared by the purge that drains the
    /// caches): that node's kswapd counts it in its purge check, as it
    /// counts resident free blocks in the lists.
    pub pcp_huge_cached: AtomicU32,
    pub counters: ReclaimCounters,
}

/// Reclaim's event counters, read by `stats()`.
#[derive(Default)]
pub(crate) struct ReclaimCounters {
    pub kswapd_wakeups: AtomicU64,
    pub kswapd_passes: AtomicU64,
    pub kswapd_give_ups: AtomicU64,
    pub shrinker_scanned: AtomicU64,
    pub shrinker_freed: AtomicU64,
    pub reclaimable_first_freed: AtomicU64,
    pub direct_reclaims: AtomicU64,
    pub node_reclaims: AtomicU64,
    pub direct_reclaim_ns: AtomicU64,
    pub oom_events: AtomicU64,
    pub nofail_waits: AtomicU64,
    pub purges: AtomicU64,
    pub purge_calls: AtomicU64,
    pub purged_pages: AtomicU64,
    pub purge_ns: AtomicU64,
}

impl ReclaimCounters {
    #[inline]
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// What a node is made of; the arena builds them.
pub(crate) struct NodeParts {
    pub region: Region,
    pub mem_map: MemMap,
    pub side_table: SideTable,
    pub zones: crate::support::boot::SysBox<[Zone]>,
    pub max_order: Order,
    pub pcp_enabled: bool,
    pub group_by_mobility: bool,
    pub defrag_mode: bool,
    pub asymmetric_barriers: bool,
    pub huge_pages: HugePages,
    pub numa: NumaLayout,
    pub kswapds: Kswapds,
}

impl Node {
    pub(crate) fn new(parts: NodeParts) -> Self {
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let NodeParts {
            region,
            mem_map,
            side_table,
            zones,
            max_order,
            pcp_enabled,
            group_by_mobility,
            defrag_mode,
            asymmetric_barriers,
            huge_pages,
            numa,
            kswapds,
        } = parts;
        Self {
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            zone_of_seq: FastMod::new(numa.zones_per_node() as u32),
            region,
            mem_map,
            side_table,
            zones,
            max_order,
            pcp_enabled,
            group_by_mobility,
            defrag_mode,
            asymmetric_barriers,
            huge_pages,
            numa,
            kswapds,
            progress: Progress::new(),
            purging: Mutex::new(()),
            pcp_huge_cached: AtomicU32::new(0),
            counters: ReclaimCounters::default(),
        }
    }

    /// The zone this thread allocates from first, and caches for: on the
    /// NUMA node of its CPU, and among that node's zones round-robin in
    /// the order threads first allocate, so two threads on a two-zone node
    /// take different locks.
    #[inline]
    pub(crate) fn preferred_zone(&self) -> ZoneIdx {
        self.numa.zone_at(self.numa.local_node(), self.zone_offset())
    }

    /// Walks the zonelist from `preferred` until `f` returns a value (see
    /// [`NumaLayout::zonelist`]): the nodes of `allowed.0`, only
    /// `preferred`'s with `allowed.1` (`THISNODE`).
    /// `f` returns a value when the zone it is given served the
    /// allocation: with NUMA nodes, the walk counts its events there.
    #[inline(always)]
    pub(crate) fn zonelist<R>(
        &self,
        preferred: ZoneIdx,
        allowed: (NodeMask, bool),
        f: impl FnMut(ZoneIdx) -> Option<R>,
    ) -> Option<R> {
        self.numa.zonelist((preferred, self.zones.len()), allowed, |z| &self.zone(z).numa_events, f)
    }

    /// This thread's place among a node's zones.
    #[inline]
    pub(crate) fn zone_offset(&self) -> usize {
        self.zone_of_seq.reduce(thread_seq())
    }

    /// Zone `index` of this node.
    #[inline(always)]
    pub(crate) fn zone(&self, index: ZoneIdx) -> &Zone {
        &self.zones[index.index()]
    }

    /// The zone page `pfn` belongs to.
    pub(crate) fn zone_of(&self, pfn: Pfn) -> &Zone {
        let index = self.zones.partition_point(|zone| zone.end <= pfn);
        &self.zones[index.min(self.zones.len() - 1)]
    }

    /// The kswapd of NUMA node `nid`.
    #[inline]
    pub(crate) fn kswapd(&self, nid: usize) -> &Kswapd {
        self.kswapds.get(nid)
    }

    /// The NUMA node of page `pfn` (of the region).
    #[inline(always)]
    pub(crate) fn nid_at(&self, pfn: Pfn) -> usize {
        // Without NUMA no lookup of the zone.
        if self.numa.is_numa() { self.numa.node_of_zone(self.zone_of(pfn).index) } else { 0 }
    }

    /// The kswapd of the NUMA node `zone` is on.
    #[inline(always)]
    pub(crate) fn kswapd_of(&self, zone: &Zone) -> &Kswapd {
        self.kswapds.get(self.numa.node_of_zone(zone.index))
    }

    /// The reclaim settings (every node's kswapd has the same).
    pub(crate) fn reclaim_config(&self) -> &crate::builder::ReclaimConfig {
        self.kswapds.get(0).config()
    }

    /// The zones of NUMA node `nid` (every zone without NUMA).
    #[inline]
    pub(crate) fn zones_of(&self, nid: usize) -> &[Zone] {
        &self.zones[self.numa.zones_of(nid)]
    }

    /// `wake_all_kswapds`: an allocation that prefers zone `preferred`
    /// and may use the nodes of `allowed.0` (only `preferred`'s with
    /// `allowed.1`, `THISNODE`) went to the slow path. The preferred
    /// node's kswapd is woken; with NUMA, so is that of each other allowed
    /// node whose zones are not all above their high watermark (the
    /// kernel's `pgdat_balanced` test in `wakeup_kswapd`), since the
    /// zonelist falls back to them.
    pub(crate) fn wakeup_kswapds(&self, preferred: ZoneIdx, (allowed, this_node): (NodeMask, bool)) {
        let home = self.numa.node_of_zone(preferred);
        self.kswapds.get(home).wakeup();
        if this_node {
            return;
        }
        for nid in (0..self.numa.nodes()).filter(|&n| n != home && allowed.contains(n)) {
            if self.zones_of(nid).iter().any(|z| z.below(Mark::High)) {
                self.kswapds.get(nid).wakeup();
            }
        }
    }

    /// Wakes every node's kswapd (the capacity was lowered).
    pub(crate) fn wakeup_all_kswapds(&self) {
        self.kswapds.iter().for_each(Kswapd::wakeup);
    }

    /// Memory was freed somewhere, or a new source of reclaimable memory
    /// appeared: reclaim may be worth trying again on every node.
    pub(crate) fn memory_freed(&self) {
        self.kswapds.iter().for_each(Kswapd::memory_freed);
    }

    /// After taking pages from `zone`: wake its node's kswapd if it is now
    /// below low, and see that its purge timer is set if there is memory
    /// to purge: an allocation can make some (with huge pages, its first
    /// touch of a purged huge page makes the rest of it resident; see
    /// `Buddy::expand`), the same handshake as a free's
    /// ([`pages_returned`](Self::pages_returned)).
    #[inline]
    pub(crate) fn zone_allocated(&self, zone: &Zone) {
        if zone.below(Mark::Low) {
            self.kswapd_of(zone).wakeup();
        }
        if zone.purgeable_pages() > 0 {
            self.freer_barrier();
            self.kswapd_of(zone).arm_purge_timer_after_fence(|| true);
        }
    }

    /// Pages went back to `zone`'s lists: reclaim may be worth trying
    /// again, NOFAIL waiters may now succeed, and the purge timer of the
    /// zone's node should run.
    #[inline]
    pub(crate) fn pages_returned(&self, zone: &Zone) {
        let kswapd = self.kswapd_of(zone);
        kswapd.memory_freed();
        // One barrier for both handshakes (`kswapd.rs`, `progress.rs`).
        self.freer_barrier();
        self.progress.signal_after_fence();
        kswapd.arm_purge_timer_after_fence(|| self.has_purgeable_memory(kswapd.nid()));
    }

    /// Pages went back to the lists of any zones (a drain of the caches):
    /// [`pages_returned`](Self::pages_returned) for every node.
    pub(crate) fn pages_returned_anywhere(&self) {
        self.memory_freed();
        self.freer_barrier();
        self.progress.signal_after_fence();
        for kswapd in self.kswapds.iter() {
            kswapd.arm_purge_timer_after_fence(|| self.has_purgeable_memory(kswapd.nid()));
        }
    }

    /// A 2 MiB block of NUMA node `nid` went onto a thread's cache: a
    /// huge page of RSS that only a purge's drain returns, so the purge
    /// timer's handshake runs as for a free to the lists, with the node's
    /// bit of `pcp_huge_cached` as what its kswapd's purge check sees.
    ///
    /// Already set: kswapd's purge check has seen it or will, and the
    /// purge that clears it drains this block too (the block was pushed
    /// before this load, the flag cleared before that drain).
    #[inline]
    pub(crate) fn huge_block_cached(&self, nid: usize) {
        if self.pcp_huge_cached.load(Ordering::Relaxed) & (1 << nid) != 0 {
            return;
        }
        self.mark_huge_block_cached(nid);
    }

    #[cold]
    fn mark_huge_block_cached(&self, nid: usize) {
        self.pcp_huge_cached.fetch_or(1 << nid, Ordering::Relaxed);
        self.freer_barrier();
        self.kswapds.get(nid).arm_purge_timer_after_fence(|| true);
    }

    /// The freeing side of the reclaim handshakes (NOFAIL waiters, the
    /// purge timer), on every free to the lists: a compiler barrier when
    /// the waiting side, which is rare, can pay for membarrier.
    #[inline]
    pub(crate) fn freer_barrier(&self) {
        if self.asymmetric_barriers {
            light_barrier();
        } else {
            fence(Ordering::SeqCst);
        }
    }

    /// The waiting side: pairs with [`freer_barrier`](Self::freer_barrier)
    /// as two `SeqCst` fences would.
    pub(crate) fn waiter_barrier(&self) {
        if self.asymmetric_barriers {
            heavy_barrier();
        } else {
            fence(Ordering::SeqCst);
        }
    }

    /// Whether a zone of NUMA node `nid` holds free memory that still
    /// costs RSS in blocks a purge may take (so a purge would do
    /// something).
    pub(crate) fn has_purgeable_memory(&self, nid: usize) -> bool {
        self.pcp_huge_cached.load(Ordering::Relaxed) & (1 << nid) != 0
            || self.zones_of(nid).iter().any(|z| z.purgeable_pages() > 0)
    }
}

impl SleepCheck for Node {
    fn below_low(&self, nid: usize) -> bool {
        self.zones_of(nid).iter().any(|z| z.below(Mark::Low))
    }

    fn waiter_barrier(&self) {
        Node::waiter_barrier(self);
    }

    fn purgeable(&self, nid: usize) -> bool {
        self.has_purgeable_memory(nid)
    }
}

/// `x % n` for a fixed `n` without a division (Lemire's fastmod): the
/// preferred-zone lookup is on every allocation, and a 64-bit `div` costs
/// more than the rest of the lookup.
struct FastMod {
    n: u32,
    m: u64,
}

impl FastMod {
    fn new(n: u32) -> Self {
        debug_assert!(n > 0);
        Self { n, m: (u64::MAX / u64::from(n)).wrapping_add(1) }
    }

    #[inline]
    fn reduce(&self, x: u32) -> usize {
        let low = self.m.wrapping_mul(u64::from(x));
        ((u128::from(low) * u128::from(self.n)) >> 64) as usize
    }
}

/// A small per-thread number, handed out in the order threads first
/// allocate. Not part of any protocol: only a hint for spreading threads
/// over zones.
#[inline]
fn thread_seq() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    std::thread_local! {
        static SEQ: Cell<u32> = const { Cell::new(u32::MAX) };
    }
    SEQ.try_with(|seq| {
        let mut n = seq.get();
        if n == u32::MAX {
            n = NEXT.fetch_add(1, Ordering::Relaxed) & 0x7fff_ffff;
            seq.set(n);
        }
        n
    })
    .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::FastMod;

    #[test]
    fn fastmod_is_modulo() {
        for n in 1..=64u32 {
            let f = FastMod::new(n);
            for x in (0..10_000u32).chain([u32::MAX - 1, u32::MAX, 0x7fff_ffff]) {
                assert_eq!(f.reduce(x), (x % n) as usize, "{x} % {n}");
            }
        }
    }
}
