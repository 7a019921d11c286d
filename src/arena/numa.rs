//! The arena's NUMA face: allocating on a given node, the node of a
//! pointer, and the kernel's `numastat` counters per node (the layout and
//! the zonelist behind them: [`crate::numa`]).

use std::fmt;
use std::ops::Range;
use std::ptr::NonNull;

use crate::arena::Arena;
use crate::arena::stats::ZoneStats;
use crate::error::{AllocError, BuildError, PolicyError};
use crate::flags::AllocFlags;
use crate::mempolicy::{self, MemPolicy};
use crate::numa::NumaLayout;
use crate::pcp::{bypass_own_cache, drain_own_cache};
use crate::region::Region;
use crate::support::sync::Ordering;
use crate::topology::Topology;
use crate::zone::Zone;

/// One NUMA node of an arena: its zones, whether its memory is bound to
/// the machine's node, and its allocations counted as the kernel's
/// `/sys/devices/system/node/nodeN/numastat` counts them.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeStats {
    /// The node's number in the arena's [`Topology`].
    pub node: usize,
    /// The machine's number for it ([`Topology::kernel_id`]).
    pub kernel_node: usize,
    /// Its zones (indices into [`Stats::zones`](crate::Stats::zones)).
    pub zones: Range<usize>,
    /// Whether its part of the region is bound to the machine's node
    /// (`false` for a simulated topology, and without one).
    pub bound: bool,
    /// Allocations served here that were meant for this node.
    pub numa_hit: u64,
    /// Allocations served here that were meant for another node.
    pub numa_miss: u64,
    /// Allocations meant for this node that another node served.
    pub numa_foreign: u64,
    /// Allocations of an interleaving policy served here as their turn
    /// asked.
    pub interleave_hit: u64,
    /// Allocations served here for a thread running on this node.
    pub local_node: u64,
    /// Allocations served here for a thread running on another node.
    pub other_node: u64,
    /// Reclaim wake-ups its kswapd ran;
    /// [`ReclaimStats::kswapd_wakeups`](crate::ReclaimStats::kswapd_wakeups)
    /// is their sum.
    pub kswapd_wakeups: u64,
    /// Wake-ups sent to its kswapd while it slept, counted by the sender
    /// at once (see
    /// [`ReclaimStats::kswapd_wakeups_sent`](crate::ReclaimStats::kswapd_wakeups_sent)).
    pub kswapd_wakeups_sent: u64,
    /// Reclaim passes its kswapd made.
    pub kswapd_passes: u64,
    /// Its kswapd's current run of passes without progress (16 = given
    /// up, until memory is freed on this node or reclaimed anywhere).
    pub kswapd_failures: u32,
    /// Times its kswapd went to sleep, and of those, with its purge timer
    /// set (free memory of this node was resident).
    pub kswapd_sleeps: u64,
    /// See [`kswapd_sleeps`](Self::kswapd_sleeps).
    pub purge_timer_sleeps: u64,
}

impl NodeStats {
    fn counters(&self) -> [(&'static str, u64); 6] {
        [
            ("numa_hit", self.numa_hit),
            ("numa_miss", self.numa_miss),
            ("numa_foreign", self.numa_foreign),
            ("interleave_hit", self.interleave_hit),
            ("local_node", self.local_node),
            ("other_node", self.other_node),
        ]
    }
}

/// `/sys/devices/system/node/nodeN/numastat`: one counter a line.
impl fmt::Display for NodeStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, n) in self.counters() {
            writeln!(f, "{name} {n}")?;
        }
        Ok(())
    }
}

/// Every node's counters side by side, as `numastat(8)` prints them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NumaStat(pub Vec<NodeStats>);

impl fmt::Display for NumaStat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<16}", "")?;
        for node in &self.0 {
            write!(f, " {:>15}", format!("node{}", node.kernel_node))?;
        }
        for (i, (name, _)) in NodeStats::counters(&self.0[0]).iter().enumerate() {
            write!(f, "\n{name:<16}")?;
            for node in &self.0 {
                write!(f, " {:>15}", node.counters()[i].1)?;
            }
        }
        writeln!(f)
    }
}

/// The arena's NUMA layout: `zones_per_node` zones on each node of
/// `topology` (one node without), each node's part of `region` bound to
/// the machine's node for a detected topology. Before anything touches the
/// region: binding moves nothing already resident.
pub(super) fn layout(
    (topology, node_reclaim): (Option<&Topology>, bool),
    zones_per_node: usize,
    region: &Region,
    zones: &[Zone],
) -> Result<NumaLayout, BuildError> {
    // Only a topology asked for is bound: without one the arena is one node.
    let bind_requested = topology.is_some();
    let topology = topology.cloned().unwrap_or_else(Topology::single);
    let bind = !topology.is_simulated() && bind_requested;
    let mut numa = NumaLayout::new(topology, zones_per_node).ok_or(BuildError::OutOfMetadataMemory)?;
    numa.node_reclaim = node_reclaim;
    if bind {
        for n in 0..numa.nodes() {
            let own = numa.zones_of(n);
            let range = (zones[own.start].start, zones[own.end - 1].end);
            let kernel_node = numa.topology().kernel_id(n).unwrap_or(n);
            region.bind(range, kernel_node).map_err(|source| BuildError::Bind { node: kernel_node, source })?;
        }
        numa.bound = true;
    }
    Ok(numa)
}

impl Arena {
    /// The NUMA nodes the arena's zones are spread over (one node unless
    /// built with [`ArenaBuilder::topology`](crate::ArenaBuilder::topology)).
    pub fn topology(&self) -> &Topology {
        self.inner.node().numa.topology()
    }

    /// Allocates a block of `2^order` pages on NUMA node `node` (a number
    /// of [`topology`](Self::topology)), falling back to the other nodes
    /// nearest first unless `flags` has [`AllocFlags::THISNODE`] (the
    /// kernel's `alloc_pages_node`). Never from the thread's cache, which
    /// holds its own node's blocks. Free it with
    /// [`free_pages`](Self::free_pages).
    ///
    /// Errors: [`AllocError::NoSuchNode`], and those of
    /// [`alloc_pages`](Self::alloc_pages).
    ///
    /// ```
    /// use zonealloc::{AllocFlags, Arena, Topology};
    /// let arena = Arena::builder().region_size(64 << 20).zones(1).topology(Topology::simulated(2)?).build()?;
    /// let page = arena.alloc_pages_node(1, 0, AllocFlags::THISNODE)?;
    /// assert_eq!(arena.node_of(page), Some(1));
    /// // SAFETY: ours, order 0, not used again.
    /// unsafe { arena.free_pages(page, 0)? };
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn alloc_pages_node(&self, node: usize, order: u32, flags: AllocFlags) -> Result<NonNull<u8>, AllocError> {
        self.inner.pages.alloc_pages_node(node, order, flags)
    }

    /// Sets this thread's memory policy in this arena (the kernel's
    /// `set_mempolicy`, for one arena): where its allocations go from now
    /// on. Its cache is drained back to the zones, so the next allocation
    /// already follows the policy. Without a topology (one node) every
    /// policy behaves as [`MemPolicy::Local`].
    ///
    /// Errors: [`PolicyError::NoSuchNode`], [`PolicyError::NoNodes`]; the
    /// thread's policy is then unchanged.
    ///
    /// ```
    /// use zonealloc::{AllocFlags, Arena, MemPolicy, Topology};
    /// let arena = Arena::builder().region_size(64 << 20).zones(1).topology(Topology::simulated(2)?).build()?;
    /// arena.set_thread_policy(MemPolicy::Preferred(1))?;
    /// let page = arena.alloc_pages(0, AllocFlags::empty())?;
    /// assert_eq!(arena.node_of(page), Some(1));
    /// // SAFETY: ours, order 0, not used again.
    /// unsafe { arena.free_pages(page, 0)? };
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_thread_policy(&self, policy: MemPolicy) -> Result<(), PolicyError> {
        let node = self.inner.node();
        policy.check(node.numa.nodes())?;
        mempolicy::set(node.id, policy);
        if node.numa.is_numa() {
            drain_own_cache(node, &self.inner.reclaim().pcp);
            bypass_own_cache(node, policy != MemPolicy::Local);
        }
        Ok(())
    }

    /// This thread's memory policy in this arena.
    pub fn thread_policy(&self) -> MemPolicy {
        mempolicy::get(self.inner.node().id)
    }

    /// The NUMA node whose part of the region holds `ptr`; `None` outside
    /// the region.
    pub fn node_of(&self, ptr: NonNull<u8>) -> Option<usize> {
        let node = self.inner.node();
        Some(node.nid_at(node.region.pfn_of(ptr.as_ptr() as usize)?))
    }

    /// Each node's `numastat` counters, in `numastat(8)`'s table.
    pub fn numastat(&self) -> NumaStat {
        NumaStat(self.stats().nodes)
    }

    /// The nodes' figures, from the zones' (their allocations) and the
    /// events the zonelist counted.
    pub(super) fn node_stats(&self, zones: &[ZoneStats]) -> Vec<NodeStats> {
        let numa = &self.inner.node().numa;
        (0..numa.nodes())
            .map(|n| {
                let own = numa.zones_of(n);
                let kswapd = self.inner.node().kswapd(n);
                let (kswapd_wakeups, kswapd_passes) = kswapd.runs();
                let (kswapd_sleeps, purge_timer_sleeps, kswapd_wakeups_sent) = kswapd.sleeps();
                let mut stats = NodeStats {
                    node: n,
                    kernel_node: numa.topology().kernel_id(n).unwrap_or(n),
                    zones: own.clone(),
                    bound: numa.bound,
                    numa_hit: 0,
                    numa_miss: 0,
                    numa_foreign: 0,
                    interleave_hit: 0,
                    local_node: 0,
                    other_node: 0,
                    kswapd_wakeups,
                    kswapd_wakeups_sent,
                    kswapd_passes,
                    kswapd_failures: kswapd.failures(),
                    kswapd_sleeps,
                    purge_timer_sleeps,
                };
                // Hits and local allocations are what the zonelist did not
                // count; a racing allocation may be in one read, not the other.
                for z in own {
                    let allocs: u64 = zones[z].allocs.iter().sum();
                    let events = &self.inner.node().zones[z].numa_events;
                    let load = |c: &crate::support::sync::AtomicU64| c.load(Ordering::Relaxed);
                    let (miss, other) = (load(&events.miss), load(&events.other));
                    stats.interleave_hit += load(&events.interleave_hit);
                    stats.numa_miss += miss;
                    stats.numa_hit += allocs.saturating_sub(miss);
                    stats.numa_foreign += load(&events.foreign);
                    stats.other_node += other;
                    stats.local_node += allocs.saturating_sub(other);
                }
                stats
            })
            .collect()
    }
}
