//! A thread's NUMA memory policy in an arena: the user-space form of the
//! kernel's `set_mempolicy` (`mm/mempolicy.c`). The policy says which node
//! an allocation is meant for and which nodes may serve it; the zonelist
//! ([`crate::numa`]) does the rest.
//!
//! Policies live in a small thread-local table keyed by arena, plain data
//! with no destructor (a thread's policy must be readable from its last
//! allocation, in any TLS destructor). With one node, every policy is the
//! local one and the table is never read.

use std::cell::Cell;

use crate::error::PolicyError;
use crate::topology::{MAX_NUMNODES, Topology};

/// A set of NUMA nodes (of an arena's [`Topology`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NodeMask(u32);

impl NodeMask {
    /// Every node.
    pub const ALL: Self = Self((1 << MAX_NUMNODES) - 1);

    /// The nodes listed; `None` if one is at or above
    /// [`MAX_NUMNODES`](crate::MAX_NUMNODES).
    pub fn new(nodes: &[usize]) -> Option<Self> {
        nodes.iter().try_fold(Self(0), |mask, &n| (n < MAX_NUMNODES).then(|| Self(mask.0 | 1 << n)))
    }

    /// Node `node` alone.
    pub(crate) const fn one(node: usize) -> Self {
        Self(1 << node)
    }

    /// Whether `node` is in the set.
    pub const fn contains(self, node: usize) -> bool {
        node < MAX_NUMNODES && self.0 & (1 << node) != 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The nodes, ascending.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        (0..MAX_NUMNODES).filter(move |&n| self.contains(n))
    }

    /// The nodes of both sets.
    pub(crate) const fn and(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }
}

/// Where a thread's allocations in an arena go (the kernel's memory
/// policies). Under any policy but [`Local`](Self::Local) the thread's
/// allocations pass its per-thread cache by (each takes its zone's lock):
/// the cache serves one zone and cannot tell where the thread runs, and
/// the zonelist counts each allocation exactly. Allocations with [`AllocFlags::THISNODE`](crate::AllocFlags::THISNODE)
/// keep to the node the policy picks; [`Arena::alloc_pages_node`](crate::Arena::alloc_pages_node)
/// names its node and ignores the policy, as the kernel's
/// `__alloc_pages_node` does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MemPolicy {
    /// The node of the thread's CPU first, then the others nearest first
    /// (`MPOL_LOCAL`, the default).
    #[default]
    Local,
    /// Node `n` first, then the others nearest to it (`MPOL_PREFERRED`).
    Preferred(usize),
    /// Only these nodes: the thread's own if it is one of them, else the
    /// nearest of them, then the rest of them nearest first; an allocation
    /// fails rather than use another node (`MPOL_BIND`).
    Bind(NodeMask),
    /// Each allocation on the next node of the set in turn, falling back
    /// nearest first (`MPOL_INTERLEAVE`): spreads a thread's memory, and
    /// its bandwidth, over the nodes.
    Interleave(NodeMask),
}

impl MemPolicy {
    /// Checks the policy against an arena of `nodes` nodes: its nodes
    /// must exist, and a set must not be empty.
    pub(crate) fn check(self, nodes: usize) -> Result<(), PolicyError> {
        let mask = match self {
            Self::Local => return Ok(()),
            Self::Preferred(node) if node >= nodes => return Err(PolicyError::NoSuchNode { node, nodes }),
            Self::Preferred(_) => return Ok(()),
            Self::Bind(mask) | Self::Interleave(mask) => mask,
        };
        if mask.is_empty() {
            return Err(PolicyError::NoNodes);
        }
        match mask.iter().find(|&n| n >= nodes) {
            Some(node) => Err(PolicyError::NoSuchNode { node, nodes }),
            None => Ok(()),
        }
    }

    /// The node an allocation by a thread on node `local` is meant for, and
    /// the nodes that may serve it (before `THISNODE`); `interleave` gives
    /// the thread's next interleave turn.
    pub(crate) fn place(
        self,
        local: usize,
        topology: &Topology,
        interleave: impl FnOnce(NodeMask) -> usize,
    ) -> (usize, NodeMask) {
        match self {
            Self::Local => (local, NodeMask::ALL),
            Self::Preferred(n) => (n, NodeMask::ALL),
            Self::Bind(mask) => {
                let start = topology.fallback_order(local).find(|&n| mask.contains(n)).unwrap_or(local);
                (start, mask)
            }
            Self::Interleave(mask) => (interleave(mask), NodeMask::ALL),
        }
    }
}

/// Arenas a thread keeps a policy for at once; setting one more forgets the
/// least recently set (it falls back to [`MemPolicy::Local`]).
const POLICY_SLOTS: usize = 8;

/// One arena's policy for this thread, and its interleave turn.
#[derive(Clone, Copy)]
struct Slot {
    arena_id: u64,
    policy: MemPolicy,
    turn: u32,
}

const FREE: Slot = Slot { arena_id: 0, policy: MemPolicy::Local, turn: 0 };

std::thread_local! {
    static POLICIES: [Cell<Slot>; POLICY_SLOTS] = const { [const { Cell::new(FREE) }; POLICY_SLOTS] };
}

/// Sets this thread's policy for arena `arena_id`.
pub(crate) fn set(arena_id: u64, policy: MemPolicy) {
    let _ = POLICIES.try_with(|slots| {
        let found = slots.iter().position(|s| s.get().arena_id == arena_id);
        if found.is_none() && policy == MemPolicy::Local {
            // Already local: keep every other arena's policy.
            return;
        }
        // Else a free slot, else the least recently set.
        let index = found.or_else(|| slots.iter().position(|s| s.get().arena_id == 0)).unwrap_or(POLICY_SLOTS - 1);
        // The newest first: the oldest falls off the end.
        for i in (1..=index).rev() {
            slots[i].set(slots[i - 1].get());
        }
        slots[0].set(if policy == MemPolicy::Local { FREE } else { Slot { arena_id, policy, turn: 0 } });
    });
}

/// This thread's policy for arena `arena_id`.
pub(crate) fn get(arena_id: u64) -> MemPolicy {
    POLICIES
        .try_with(|slots| {
            slots.iter().map(Cell::get).find(|s| s.arena_id == arena_id).map_or(MemPolicy::Local, |s| s.policy)
        })
        .unwrap_or(MemPolicy::Local)
}

/// This thread's next interleave node of `mask` for arena `arena_id`
/// (the kernel's `interleave_nodes`: the nodes of the set in turn).
pub(crate) fn next_interleave(arena_id: u64, mask: NodeMask) -> usize {
    let nodes = mask.iter().count().max(1) as u32;
    let turn = POLICIES
        .try_with(|slots| {
            let slot = slots.iter().find(|s| s.get().arena_id == arena_id)?;
            let mut s = slot.get();
            let turn = s.turn;
            s.turn = (turn + 1) % nodes;
            slot.set(s);
            Some(turn)
        })
        .ok()
        .flatten()
        .unwrap_or(0);
    mask.iter().nth(turn as usize).unwrap_or(0)
}

/// Whether this thread's allocations in arena `arena_id` pass its cache
/// by: under any policy but the local one. The cache serves one zone, the
/// thread's, with no count of where the thread runs; the zonelist counts
/// every allocation it makes, so a policy's allocations are counted
/// exactly (and interleaving needs another zone each time anyway).
pub(crate) fn bypasses_cache(arena_id: u64) -> bool {
    get(arena_id) != MemPolicy::Local
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_local_where_no_policy_is_set_keeps_every_other_arenas() {
        // A fresh thread: its own table.
        std::thread::spawn(|| {
            let ids = 1..=POLICY_SLOTS as u64;
            for id in ids.clone() {
                set(id, MemPolicy::Preferred(id as usize));
            }
            set(1000, MemPolicy::Local);
            for id in ids.clone() {
                assert_eq!(get(id), MemPolicy::Preferred(id as usize), "arena {id}");
            }
            // Local for an arena that has a policy forgets only that one.
            set(3, MemPolicy::Local);
            assert_eq!(get(3), MemPolicy::Local);
            assert!(ids.filter(|&id| id != 3).all(|id| get(id) == MemPolicy::Preferred(id as usize)));
            // One more than the table holds forgets the least recently set.
            set(100, MemPolicy::Preferred(0));
            set(200, MemPolicy::Preferred(0));
            assert_eq!(
                (get(1), get(2), get(200)),
                (MemPolicy::Local, MemPolicy::Preferred(2), MemPolicy::Preferred(0))
            );
        })
        .join()
        .unwrap();
    }
}
