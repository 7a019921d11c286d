//! NUMA nodes inside an arena. The node (`pglist_data`) holds every zone
//! in node order: NUMA node `n` owns zones `n * zones_per_node ..` of it,
//! a contiguous part of the region, bound to the machine's node before
//! first touch. A thread allocates first from a zone of the node its CPU is
//! on (`getcpu`) and walks the zonelist from there: the rest of its node's
//! zones, then each other node's in the topology's fallback order (the
//! kernel's `build_zonelists`); `AllocFlags::THISNODE` stops after the
//! first node.
//!
//! Statistics as the kernel keeps them (`zone_statistics`): an allocation
//! served by a node other than the one it was meant for is a miss there and
//! a foreign allocation of the intended node; one served by a node other
//! than the thread's is `other_node`. Only these are counted, on the paths
//! that choose a zone; hits and local allocations are the zone's
//! allocations less them (the per-thread caches' fast path serves only the
//! thread's own zone, so every allocation it makes is a hit and local).
//!
//! With one node (the default, and every machine without NUMA) none of
//! this runs: the zonelist is today's, no system call is made, nothing is
//! counted.

use std::ops::Range;

use crate::mempolicy::NodeMask;
use crate::support::boot::SysBox;
use crate::support::sync::{AtomicU64, Ordering};
use crate::topology::{MAX_NUMNODES, Topology};
use crate::zone_idx::ZoneIdx;

/// How an arena's zones are spread over NUMA nodes.
pub(crate) struct NumaLayout {
    /// Out of line: the node stays small (and a loom model's 32 KiB stack
    /// holds it).
    tables: SysBox<Tables>,
    nodes: usize,
    zones_per_node: usize,
    /// Whether each node's part of the region is bound to its node.
    pub bound: bool,
    /// `node_reclaim_mode`: reclaim a short node before falling back.
    pub node_reclaim: bool,
}

/// A zone's NUMA events (`zone_statistics`): allocations it served that
/// were meant for another node (`numa_miss`), allocations meant for its
/// node, preferring it, that another node served (`numa_foreign`), and
/// allocations it served for a thread on another node (`other_node`).
#[derive(Default)]
pub(crate) struct NumaEvents {
    pub miss: AtomicU64,
    pub foreign: AtomicU64,
    pub other: AtomicU64,
    /// Interleaved allocations it served as their turn asked.
    pub interleave_hit: AtomicU64,
}

/// The topology and each node's fallback order.
struct Tables {
    topology: Topology,
    /// `order[n][i]`: the `i`th node node `n` falls back to (itself first).
    order: [[u8; MAX_NUMNODES]; MAX_NUMNODES],
}

impl NumaLayout {
    /// `zones_per_node` zones on each of `topology`'s nodes; `None` if its
    /// tables cannot be allocated.
    pub(crate) fn new(topology: Topology, zones_per_node: usize) -> Option<Self> {
        let nodes = topology.nodes();
        let mut order = [[0u8; MAX_NUMNODES]; MAX_NUMNODES];
        for (n, row) in order.iter_mut().enumerate().take(nodes) {
            for (slot, m) in row.iter_mut().zip(topology.fallback_order(n)) {
                *slot = m as u8;
            }
        }
        let tables = SysBox::try_new(Tables { topology, order })?;
        Some(Self { tables, nodes, zones_per_node, bound: false, node_reclaim: false })
    }

    /// The machine's topology as the arena uses it.
    pub(crate) fn topology(&self) -> &Topology {
        &self.tables.topology
    }

    /// How many nodes.
    #[inline(always)]
    pub(crate) fn nodes(&self) -> usize {
        self.nodes
    }

    /// Whether there is more than one node (else nothing here runs).
    #[inline(always)]
    pub(crate) fn is_numa(&self) -> bool {
        self.nodes > 1
    }

    /// Zones per node.
    pub(crate) fn zones_per_node(&self) -> usize {
        self.zones_per_node
    }

    /// The node zone `zone` belongs to: 0 without NUMA, with no division
    /// (every free to the lists asks, for its zone's kswapd).
    #[inline(always)]
    pub(crate) fn node_of_zone(&self, zone: ZoneIdx) -> usize {
        if !self.is_numa() {
            return 0;
        }
        zone.index() / self.zones_per_node
    }

    /// The zones of `node`.
    pub(crate) fn zones_of(&self, node: usize) -> Range<usize> {
        node * self.zones_per_node..(node + 1) * self.zones_per_node
    }

    /// The node of the CPU this thread runs on: `getcpu` (a vDSO call, no
    /// system call), then the topology's CPU lists; node 0 for a CPU no
    /// node lists. Node 0 without NUMA, with no call at all.
    #[inline]
    pub(crate) fn local_node(&self) -> usize {
        if !self.is_numa() {
            return 0;
        }
        self.tables.topology.node_of_cpu(current_cpu()).unwrap_or(0)
    }

    /// The zone of `node` at the place `preferred` has in its own node:
    /// threads keep their spread over a node's zones on any node.
    pub(crate) fn zone_on(&self, node: usize, preferred: ZoneIdx) -> ZoneIdx {
        self.zone_at(node, preferred.index() % self.zones_per_node)
    }

    /// Zone `offset` of `node`'s zones (`offset` below `zones_per_node`).
    pub(crate) fn zone_at(&self, node: usize, offset: usize) -> ZoneIdx {
        // A zone of the arena: below zones, which is at most MAX_ZONES.
        ZoneIdx::from_bits((node * self.zones_per_node + offset) as u8)
    }

    /// Walks the zonelist of a request that prefers zone `preferred` of
    /// the `nr` zones, until `f` returns a value (the zone it was given
    /// served the allocation): with one node, that zone then the others in
    /// order, wrapping around (a plain loop: an iterator chain cost 2-3%
    /// more instructions on the order-9 pair); with nodes, the preferred
    /// node's zones from `preferred` on, then each other node's in
    /// fallback order, from the same place, of the `allowed` nodes (only
    /// the preferred one with `this_node`), counting the serving zone's
    /// events (`events` gives a zone's).
    #[inline(always)]
    pub(crate) fn zonelist<'a, R>(
        &self,
        (preferred, nr): (ZoneIdx, usize),
        (allowed, this_node): (NodeMask, bool),
        events: impl Fn(ZoneIdx) -> &'a NumaEvents,
        mut f: impl FnMut(ZoneIdx) -> Option<R>,
    ) -> Option<R> {
        if !self.is_numa() {
            let mut index = preferred.index();
            loop {
                // A zone of the node: below its count, at most MAX_ZONES.
                if let Some(r) = f(ZoneIdx::from_bits(index as u8)) {
                    return Some(r);
                }
                index = if index + 1 == nr { 0 } else { index + 1 };
                if index == preferred.index() {
                    return None;
                }
            }
        }
        self.numa_zonelist(preferred, (allowed, this_node), events, f)
    }

    #[cold]
    fn numa_zonelist<'a, R>(
        &self,
        preferred: ZoneIdx,
        (allowed, this_node): (NodeMask, bool),
        events: impl Fn(ZoneIdx) -> &'a NumaEvents,
        mut f: impl FnMut(ZoneIdx) -> Option<R>,
    ) -> Option<R> {
        let home = self.node_of_zone(preferred);
        let offset = preferred.index() % self.zones_per_node;
        let allowed = if this_node { allowed.and(NodeMask::one(home)) } else { allowed };
        for &node in self.tables.order[home][..self.nodes].iter().filter(|&&n| allowed.contains(usize::from(n))) {
            for k in 0..self.zones_per_node {
                let zone = self.zone_at(usize::from(node), (offset + k) % self.zones_per_node);
                if let Some(r) = f(zone) {
                    self.count(zone, preferred, events);
                    return Some(r);
                }
            }
        }
        None
    }

    /// Counts an allocation zone `served` made for one that preferred zone
    /// `preferred` (`zone_statistics`): a miss of `served` and a foreign
    /// allocation of `preferred` if their nodes differ, and an allocation
    /// for a thread on another node if `served`'s node is not the
    /// thread's.
    fn count<'a>(&self, served: ZoneIdx, preferred: ZoneIdx, events: impl Fn(ZoneIdx) -> &'a NumaEvents) {
        let node = self.node_of_zone(served);
        if node != self.node_of_zone(preferred) {
            events(served).miss.fetch_add(1, Ordering::Relaxed);
            events(preferred).foreign.fetch_add(1, Ordering::Relaxed);
        }
        if node != self.local_node() {
            events(served).other.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The CPU this thread runs on now.
#[inline]
fn current_cpu() -> usize {
    #[cfg(not(loom))]
    {
        // SAFETY: no preconditions; -1 (no CPU known) maps to CPU 0.
        let cpu = unsafe { libc::sched_getcpu() };
        cpu.max(0) as usize
    }
    #[cfg(loom)]
    {
        0
    }
}
