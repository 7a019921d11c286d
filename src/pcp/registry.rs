//! Every set of an arena: attaching, recycling, draining and freezing them.
//!
//! **Lifetime.** Sets belong to the arena's [`PcpRegistry`] and are recycled:
//! a thread's exit drains its set and marks it vacant for the next thread.
//! A set is reference counted by its arena and its thread, so an arena
//! dropped while threads still hold sets, and a thread exiting while its
//! arena drops, both end with every page in exactly one place and every set
//! freed exactly once.

use std::ptr::NonNull;

use crate::node::Node;
use crate::support::boot::SysBox;
use crate::support::sync::{AtomicU64, AtomicUsize, Mutex, Ordering, heavy_barrier};

use super::*;

pub(crate) struct PcpRegistry {
    pub(super) head: Mutex<RegistryInner>,
    /// Sets left by exited threads, waiting for the next thread (a hint).
    pub nr_vacant: AtomicUsize,
    /// Remote drains run (`Arena::drain_pcp`).
    pub drains: AtomicU64,
}

pub(super) struct RegistryInner {
    pub(super) first: Option<NonNull<PcpSet>>,
}

// SAFETY: the raw set pointers are only followed under the registry lock,
// and sets are freed only by the reference protocol.
unsafe impl Send for RegistryInner {}

impl PcpRegistry {
    pub(crate) fn new() -> Self {
        Self {
            head: Mutex::new(RegistryInner { first: None }),
            nr_vacant: AtomicUsize::new(0),
            drains: AtomicU64::new(0),
        }
    }

    /// Gives the calling thread a set: a vacant one, or a new one.
    pub(super) fn attach(&self, node: &Node) -> Option<NonNull<PcpSet>> {
        let zone = node.preferred_zone();
        let mut reg = self.head.lock();
        if self.nr_vacant.load(Ordering::Relaxed) > 0 {
            let mut cursor = reg.first;
            while let Some(ptr) = cursor {
                // SAFETY: sets in the registry live until the arena drops.
                let set = unsafe { ptr.as_ref() };
                let _guard = set.lock.lock();
                if set.state.load() == SetState::Vacant {
                    set.state.store(SetState::Attached);
                    set.refs.fetch_add(1, Ordering::Relaxed);
                    set.preferred.store(zone.index(), Ordering::Relaxed);
                    self.nr_vacant.fetch_sub(1, Ordering::Relaxed);
                    node.zone(zone).pcp_attach();
                    return Some(ptr);
                }
                cursor = set.next;
            }
        }
        let set = PcpSet::new(node, self, zone, reg.first)?;
        reg.first = Some(set);
        node.zone(zone).pcp_attach();
        Some(set)
    }

    /// Calls `f` on every set, under the registry lock.
    pub(super) fn for_each(&self, mut f: impl FnMut(&PcpSet)) {
        let reg = self.head.lock();
        let mut cursor = reg.first;
        while let Some(ptr) = cursor {
            // SAFETY: sets in the registry live until the arena drops.
            let set = unsafe { ptr.as_ref() };
            f(set);
            cursor = set.next;
        }
    }

    /// Drains every set, then every zone's pool of trimmed batches; returns
    /// the pages moved.
    pub(crate) fn drain_all(&self, node: &Node) -> usize {
        self.drains.fetch_add(1, Ordering::Relaxed);
        let mut pages = 0;
        self.for_each(|set| pages += set.drain(node));
        for zone in node.zones.iter() {
            pages += zone.drain_pool(&node.mem_map);
        }
        pages
    }

    /// Pages held in per-thread caches and pools (a racy sum).
    pub(crate) fn cached_pages(&self, node: &Node) -> usize {
        let mut tally = [PcpTally::default(); crate::zone_idx::MAX_ZONES];
        self.tally(&mut tally);
        let listed: usize = tally.iter().flat_map(|t| t.cached.iter().enumerate().map(|(o, n)| n << o)).sum();
        let pooled: usize = node
            .zones
            .iter()
            .map(|z| z.lock().inner.pool.counts().iter().enumerate().map(|(o, n)| n << o).sum::<usize>())
            .sum();
        listed + pooled
    }

    /// Per zone and order: blocks cached, allocations and frees served.
    /// A racy but atomic-per-counter snapshot.
    pub(crate) fn tally(&self, per_zone: &mut [PcpTally]) -> usize {
        let mut sets = 0;
        self.for_each(|set| {
            sets += usize::from(set.state.load() == SetState::Attached);
            for (pcps, t) in set.pcps.chunks(PCP_TYPES).zip(per_zone.iter_mut()) {
                for zp in pcps {
                    for o in 0..PCP_ORDERS {
                        t.cached[o] += zp.count[o].load(Ordering::Relaxed) as usize;
                        t.allocs[o] += zp.allocs[o].load(Ordering::Relaxed);
                        t.frees[o] += zp.frees[o].load(Ordering::Relaxed);
                    }
                }
            }
        });
        sets
    }

    /// Freezes every set: no owner and no drainer touches its lists until
    /// the returned value is dropped (owners wait on their next slow path).
    /// The sets are locked in registry order, with one heavy barrier for
    /// all of them, their guards kept in memory from `System` (never this
    /// allocator, so a frozen owner is never waited for) rather than a
    /// stack frame each, which overflowed with tens of thousands of
    /// threads. `None` if that memory cannot be had.
    pub(crate) fn freeze(&self) -> Option<FrozenSets<'_>> {
        let registry = self.head.lock();
        let mut count = 0;
        let mut cursor = registry.first;
        while let Some(ptr) = cursor {
            count += 1;
            // SAFETY: sets in the registry live until the arena drops, and
            // we hold the registry lock.
            cursor = unsafe { ptr.as_ref() }.next;
        }
        let mut cursor = registry.first;
        let sets = SysBox::try_from_fn(count, |_| {
            let ptr = cursor.ok_or(())?;
            // SAFETY: as above; `FrozenSets` keeps the registry locked for
            // as long as it lends out this reference.
            let set: &PcpSet = unsafe { ptr.as_ref() };
            cursor = set.next;
            let guard = set.lock.lock();
            set.raise_locked();
            Ok::<_, ()>(FrozenSet { set, _guard: guard })
        })
        .ok()??;
        if count > 0 {
            heavy_barrier();
        }
        sets.iter().for_each(|frozen| frozen.set.wait_for_owner());
        Some(FrozenSets { sets, registry: self, _head: registry })
    }

    /// The arena is dropping: mark every set `Gone` so exiting threads leave
    /// it alone, and drop the arena's reference to each.
    pub(crate) fn shutdown(&self) {
        let mut reg = self.head.lock();
        let mut cursor = reg.first.take();
        drop(reg);
        while let Some(ptr) = cursor {
            // SAFETY: the arena's reference keeps the set alive until put_ref.
            let set = unsafe { ptr.as_ref() };
            cursor = set.next;
            {
                let _guard = set.lock.lock();
                set.state.store(SetState::Gone);
            }
            // SAFETY: the arena's reference, given up once.
            unsafe { PcpSet::put_ref(ptr) };
        }
    }
}

/// One frozen set: its lock held and `locked` raised, its owner seen out of
/// its busy section after the heavy barrier.
pub(super) struct FrozenSet<'a> {
    pub(super) set: &'a PcpSet,
    pub(super) _guard: crate::support::sync::MutexGuard<'a, ()>,
}

/// Every set of a registry, frozen (see [`PcpRegistry::freeze`]). The
/// registry stays locked, so no set is attached or recycled meanwhile.
pub(crate) struct FrozenSets<'a> {
    pub(super) sets: SysBox<[FrozenSet<'a>]>,
    pub(super) registry: &'a PcpRegistry,
    pub(super) _head: crate::support::sync::MutexGuard<'a, RegistryInner>,
}

impl FrozenSets<'_> {
    /// Walks every set's lists for `check()` (see [`PcpSet::check`]),
    /// adding each zone's cached pages to `cached`.
    pub(crate) fn check(&self, node: &Node, cached: &mut [usize]) -> Result<(), crate::error::CheckError> {
        for frozen in self.sets.iter() {
            // SAFETY: frozen for our lifetime.
            unsafe { frozen.set.check(node, cached) }?;
        }
        Ok(())
    }

    /// In a forked child, the only thread: every set but the calling
    /// thread's belonged to a thread that does not exist here. The fork's
    /// prepare handler froze them, so none was caught inside a cache
    /// operation: their blocks go back to the lists and the sets become
    /// vacant, for the child's next threads.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn recycle_all_but_own(&self, node: &Node) {
        let own = with_caches(|caches| {
            caches.entries.iter().map(|e| e.get()).find(|e| e.serves(node.id)).and_then(|e| e.occupied())
        })
        .flatten();
        for frozen in self.sets.iter() {
            let set = frozen.set;
            if Some(NonNull::from(set)) == own || set.state.load() != SetState::Attached {
                continue;
            }
            // SAFETY: frozen (its lock is held through `frozen`), `Attached`,
            // and its owner does not exist in this process.
            unsafe { set.vacate(node, self.registry) };
            // The vanished thread's reference (the arena's keeps the set).
            set.refs.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for FrozenSets<'_> {
    fn drop(&mut self) {
        for frozen in self.sets.iter() {
            // Release: what was changed while frozen (a forked child's
            // recycling) is seen after the owner's Acquire in `enter`.
            frozen.set.locked.store(false, Ordering::Release);
        }
    }
}

/// What [`PcpRegistry::tally`] adds up for one zone.
#[derive(Clone, Copy, Default)]
pub(crate) struct PcpTally {
    pub cached: [usize; PCP_ORDERS],
    pub allocs: [u64; PCP_ORDERS],
    pub frees: [u64; PCP_ORDERS],
}
