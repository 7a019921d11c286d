//! `fork(2)` and the arena: every lock an allocation, a free or reclaim may
//! take, held across the fork by the global allocator's handlers
//! (`global/lifecycle.rs`), and what the child does with them.

use crate::arena::Arena;
use crate::kswapd::KswapdForkGuard;
use crate::node::Node;
use crate::pcp::FrozenSets;
use crate::reclaim::movable::{MovableForkGuard, MovableRegistry};
use crate::reclaim::shrinker::ShrinkerForkGuard;
use crate::support::sync::{MutexGuard, Ordering};
use crate::topology::MAX_NUMNODES;
use crate::zone::{Zone, ZoneGuard};

/// Every lock of an arena that an allocation, a free or reclaim may take,
/// taken in the crate's lock order (ARCHITECTURE.md) and held across
/// `fork(2)` by the global allocator's handlers, so that a child never
/// finds one held by a thread it does not have.
#[cfg_attr(loom, allow(dead_code))]
pub(crate) struct ArenaForkGuard<'a> {
    node: &'a Node,
    shrinkers: ShrinkerForkGuard<'a>,
    node_movable: &'a MovableRegistry,
    _owners: MovableForkGuard<'a>,
    caches: FrozenSets<'a>,
    _purging: MutexGuard<'a, ()>,
    zones: [Option<ZoneGuard<'a>>; crate::zone_idx::MAX_ZONES],
    kswapds: [Option<KswapdForkGuard<'a>>; MAX_NUMNODES],
    _progress: MutexGuard<'a, u64>,
}

#[cfg_attr(loom, allow(dead_code))]
impl Arena {
    /// Takes every lock for `fork(2)`; `None` if the memory to freeze the
    /// per-thread caches cannot be had (then nothing is held).
    pub(crate) fn lock_for_fork(&self) -> Option<ArenaForkGuard<'_>> {
        let arena = &*self.inner;
        let node = arena.node();
        let shrinkers = arena.reclaim().shrinkers.lock_for_fork();
        let node_movable = &arena.reclaim().movable;
        let owners = node_movable.lock_for_fork();
        let caches = arena.reclaim().pcp.freeze()?;
        let purging = node.purging.lock();
        let zones = std::array::from_fn(|z| node.zones.get(z).map(Zone::lock));
        let kswapds =
            std::array::from_fn(|nid| (nid < node.kswapds.len()).then(|| node.kswapds.get(nid).lock_for_fork()));
        let progress = node.progress.lock_for_fork();
        Some(ArenaForkGuard {
            node,
            shrinkers,
            node_movable,
            _owners: owners,
            caches,
            _purging: purging,
            zones,
            kswapds,
            _progress: progress,
        })
    }
}

#[cfg_attr(loom, allow(dead_code))]
impl ArenaForkGuard<'_> {
    /// In the forked child, the only thread: the caches of threads that
    /// were not copied go back to the lists (they were frozen, so none was
    /// caught mid-operation), kswapd is forgotten (the next allocation
    /// starts one), shrinker calls in progress are forgotten; then every
    /// lock is released.
    ///
    /// # Safety
    /// Only in the child of the `fork(2)` this guard was taken for, before
    /// it starts threads.
    pub(crate) unsafe fn release_in_child(mut self) {
        // The zones first: recycling takes their locks.
        self.zones.iter_mut().for_each(|zone| drop(zone.take()));
        self.caches.recycle_all_but_own(self.node);
        // The fork may have come between a purge clearing this and its
        // drain: the forking thread's cache may hold a 2 MiB block.
        self.node.pcp_huge_cached.store(u32::MAX, Ordering::Relaxed);
        self.kswapds.iter_mut().flatten().for_each(KswapdForkGuard::forget_thread);
        // SAFETY: the caller's contract.
        unsafe { self.shrinkers.forget_calls_in_progress() };
        // SAFETY: as above.
        unsafe { self.node_movable.forget_calls_in_progress() };
    }
}
