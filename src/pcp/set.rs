//! A set of page caches: per zone, migratetype and order, a ring of blocks, and the
//! owner/drainer handshake described below.
//!
//! **Remote drain.** [`PcpSet::drain`] empties a set from any thread, even one
//! whose owner is blocked forever, without interrupting the owner. The owner
//! and a drainer run an asymmetric Dekker handshake:
//!
//! ```text
//! owner (every op)                       drainer (rare)
//!   busy = true          (Relaxed)         lock set.lock     (excludes other drainers
//!   light_barrier()      (compiler only)                      and the owner's slow path)
//!   if locked (Acquire):                   locked = true     (Relaxed)
//!       busy = false; take set.lock        heavy_barrier()   (membarrier: a full fence
//!   ... touch the lists ...                                    on every running thread)
//!   busy = false         (Release)         while busy (Acquire) { spin }
//!                                          ... touch the lists ...
//!                                          locked = false    (Release); unlock
//! ```
//!
//! The barriers make the pair behave like two `SeqCst` fences: either the
//! owner sees `locked` and keeps off the lists, or the drainer sees `busy`
//! and waits for the owner's short, non-blocking critical section to end.
//! Refill and trim, which take zone locks, run under `set.lock` on the
//! owner's slow path, so a busy section never blocks and a drainer never
//! waits on a zone lock. Under loom both barriers are `SeqCst` fences.
//! Without membarrier the arena runs uncached (`support/barrier.rs`).
//!
//! `tests/loom.rs` models it (`owner_alloc_free_races_remote_drain`,
//! `thread_exit_races_remote_drain`,
//! `two_threads_share_a_zone_through_their_caches`,
//! `two_threads_exit_while_a_third_drains`,
//! `fork_handlers_race_cache_refills_and_trims`); each of these breaks
//! fails a model: the owner ignoring `locked`, no owner barrier, the
//! drainer not waiting for `busy`, `leave` not Release, a drainer without
//! the set lock, an exit that does not return its blocks.

use std::ptr::NonNull;

use crate::buddy::Block;
use crate::flags::AllocFlags;
use crate::memalloc::InReclaim;
use crate::mempolicy::NodeMask;
use crate::migratetype::Migratetype;
use crate::node::Node;
use crate::order::Order;
use crate::page::{PageInfo, PageMeta, PageState, flag};
use crate::pfn::Pfn;
use crate::support::boot::SysBox;
use crate::support::sync::{
    AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Mutex, Ordering, UnsafeCell, heavy_barrier, light_barrier,
    spin_loop,
};
use crate::watermark::{AllocMode, Mark};
use crate::zone::Zone;
use crate::zone_idx::ZoneIdx;

use super::*;

/// One zone's lists of one migratetype in a set: the ring buffers and
/// their parameters, one per order.
pub(super) struct PcpLists {
    /// Index of the coldest block of each ring.
    pub(super) bottom: [u32; PCP_ORDERS],
    /// Where each ring starts in `slots`, and its capacity minus one, copied
    /// from the constants so the fast paths read them from the line they
    /// already touch (set on the slow path, zero until then: harmless, since
    /// every list is empty with `high` 0 until its first slow path).
    pub(super) offset: [u32; PCP_ORDERS],
    pub(super) mask: [u32; PCP_ORDERS],
    /// `high` in force, in blocks (refreshed on the slow path).
    pub(super) high: [u32; PCP_ORDERS],
    /// `batch` in force, in blocks.
    pub(super) batch: [u32; PCP_ORDERS],
    pub(super) slots: [Pfn; SLOTS],
}

impl PcpLists {
    /// Slot of ring position `index` of list `l`'s ring.
    #[inline(always)]
    fn slot(&self, l: usize, index: u32) -> usize {
        (self.offset[l] + (index & self.mask[l])) as usize & (SLOTS - 1)
    }

    /// The block `i` places above the coldest of list `l`.
    #[inline(always)]
    pub(super) fn at(&self, l: usize, i: u32) -> Pfn {
        self.slots[self.slot(l, self.bottom[l].wrapping_add(i))]
    }

    /// Puts `pfn` `i` places above the coldest of list `l`.
    #[inline(always)]
    pub(super) fn set_at(&mut self, l: usize, i: u32, pfn: Pfn) {
        let slot = self.slot(l, self.bottom[l].wrapping_add(i));
        self.slots[slot] = pfn;
    }
}

/// A set's lists for one zone and migratetype (the kernel keeps a zone's
/// types in one `per_cpu_pages`; a group per type lets a free find its
/// lists from the head's `zone << 2 | type` byte alone, [`pcp_index`]).
pub(super) struct ZonePcp {
    /// Blocks cached per list. Written only by whoever has the lists (the
    /// protocol above), read racily by `stats()`.
    pub(super) count: [AtomicU32; PCP_ORDERS],
    /// Allocations served per list.
    pub(super) allocs: [AtomicU64; PCP_ORDERS],
    /// Frees taken per list.
    pub(super) frees: [AtomicU64; PCP_ORDERS],
    pub(super) lists: UnsafeCell<PcpLists>,
}

// SAFETY: ZonePcp is atomics and plain integers; all-zero is empty lists with
// high = batch = 0, which the slow path replaces before first use.
#[cfg(not(loom))]
unsafe impl crate::support::boot::Zeroable for ZonePcp {}

impl ZonePcp {
    #[cfg(loom)]
    pub(super) fn new() -> Self {
        Self {
            count: Default::default(),
            allocs: Default::default(),
            frees: Default::default(),
            lists: UnsafeCell::new(PcpLists {
                bottom: [0; PCP_ORDERS],
                offset: [0; PCP_ORDERS],
                mask: [0; PCP_ORDERS],
                high: [0; PCP_ORDERS],
                batch: [0; PCP_ORDERS],
                slots: [Pfn::default(); SLOTS],
            }),
        }
    }

    /// Runs `f` on the lists.
    ///
    /// # Safety
    /// The caller has the lists: it is the owner inside a busy section that
    /// did not see `locked`, or it holds the set's lock (and, if it is not
    /// the owner, has seen `busy` clear after raising `locked`).
    #[inline(always)]
    pub(super) unsafe fn lists<R>(&self, f: impl FnOnce(&mut PcpLists) -> R) -> R {
        // SAFETY: exclusive access per the caller's contract.
        self.lists.with_mut(|lists| f(unsafe { &mut *lists }))
    }

    /// Pushes `pfn` onto list `o`'s ring unless the ring is at `high`
    /// (`Full`) or `claim`, the free's claim of the block's head, fails
    /// (`Lost`: another free of the block got it first). The free fast
    /// path ([`free_fast`](super::free_fast)).
    ///
    /// # Safety
    /// As for [`lists`](Self::lists).
    #[inline(always)]
    pub(super) unsafe fn push(&self, o: usize, pfn: Pfn, claim: impl FnOnce() -> bool) -> Push {
        // SAFETY: the caller has the lists.
        unsafe {
            self.lists(|l| {
                if self.count[o].load(Ordering::Relaxed) >= l.high[o] {
                    return Push::Full;
                }
                if !claim() {
                    return Push::Lost;
                }
                self.push_onto(l, o, pfn);
                Push::Pushed
            })
        }
    }

    /// Pops the newest block of list `o`'s ring, if any. The allocation
    /// fast path ([`alloc_fast`](super::alloc_fast)).
    ///
    /// # Safety
    /// As for [`lists`](Self::lists).
    #[inline(always)]
    pub(super) unsafe fn pop(&self, o: usize) -> Option<Pfn> {
        // SAFETY: the caller has the lists.
        unsafe { self.lists(|l| self.pop_from(l, o)) }
    }

    /// The ring operation of [`pop`](Self::pop), on lists the caller has.
    #[inline(always)]
    pub(super) fn pop_from(&self, l: &PcpLists, o: usize) -> Option<Pfn> {
        let n = self.count[o].load(Ordering::Relaxed);
        if n == 0 {
            return None;
        }
        let pfn = l.at(o, n - 1);
        self.count[o].store(n - 1, Ordering::Relaxed);
        Some(pfn)
    }

    /// The ring operation of [`push`](Self::push), on lists the caller
    /// has, whatever the ring's `high`; the new count.
    #[inline(always)]
    pub(super) fn push_onto(&self, l: &mut PcpLists, o: usize, pfn: Pfn) -> u32 {
        let n = self.count[o].load(Ordering::Relaxed);
        l.set_at(o, n, pfn);
        self.count[o].store(n + 1, Ordering::Relaxed);
        n + 1
    }

    /// Adds one to an owner-maintained counter (no read-modify-write: only
    /// the holder of the lists writes it).
    #[inline(always)]
    pub(super) fn bump(counter: &AtomicU64) {
        counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
}

/// What a push onto a ring did.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Push {
    /// The block is on the ring.
    Pushed,
    /// The ring is at `high`: nothing changed.
    Full,
    /// Another free claimed the block first: nothing changed.
    Lost,
}

/// Whose a set is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub(super) enum SetState {
    /// No thread's: the next thread to attach takes it.
    Vacant = 0,
    /// A thread's.
    Attached = 1,
    /// The arena was dropped: an exiting thread leaves it alone.
    Gone = 2,
}

/// A set's [`SetState`] in one atomic byte (changed under the set's lock,
/// read racily elsewhere: Relaxed).
pub(super) struct AtomicSetState(AtomicU8);

impl AtomicSetState {
    fn new(state: SetState) -> Self {
        Self(AtomicU8::new(state as u8))
    }

    pub(super) fn load(&self) -> SetState {
        match self.0.load(Ordering::Relaxed) {
            0 => SetState::Vacant,
            1 => SetState::Attached,
            _ => SetState::Gone,
        }
    }

    pub(super) fn store(&self, state: SetState) {
        self.0.store(state as u8, Ordering::Relaxed);
    }
}

/// One thread's caches for one node.
pub(super) struct PcpSet {
    /// The owner is inside a fast-path critical section.
    pub(super) busy: AtomicBool,
    /// A drainer has, or is taking, the lists.
    pub(super) locked: AtomicBool,
    /// The zone this thread allocates from first.
    pub(super) preferred: AtomicUsize,
    /// The lists of zone `z` and type `mt` are `pcps[pcp_index(z, mt)]`.
    pub(super) pcps: SysBox<[ZonePcp]>,
    /// Serialises drainers with each other and with the owner's slow path.
    pub(super) lock: Mutex<()>,
    /// Changed under `lock`.
    pub(super) state: AtomicSetState,
    /// One for the arena, one for an attached thread.
    pub(super) refs: AtomicU32,
    /// The node and registry of the arena; valid until `state` is `Gone`.
    pub(super) node: NonNull<Node>,
    pub(super) registry: NonNull<PcpRegistry>,
    /// Next set in the registry; written once, before the set is published.
    pub(super) next: Option<NonNull<PcpSet>>,
}

// SAFETY: shared state is atomics, a mutex, and lists handed between threads
// only by the protocol above; `node` and `registry` are only dereferenced
// while the arena is alive.
unsafe impl Send for PcpSet {}
// SAFETY: as above.
unsafe impl Sync for PcpSet {}

impl PcpSet {
    pub(super) fn new(
        node: &Node,
        registry: &PcpRegistry,
        preferred: ZoneIdx,
        next: Option<NonNull<PcpSet>>,
    ) -> Option<NonNull<Self>> {
        let nr = node.zones.len() * PCP_TYPES;
        #[cfg(not(loom))]
        let pcps = SysBox::try_new_zeroed_slice(nr)?;
        #[cfg(loom)]
        let pcps = SysBox::try_from_fn(nr, |_| Ok::<_, ()>(ZonePcp::new())).ok()??;
        let set = Self {
            busy: AtomicBool::new(false),
            locked: AtomicBool::new(false),
            preferred: AtomicUsize::new(preferred.index()),
            pcps,
            lock: Mutex::new(()),
            state: AtomicSetState::new(SetState::Attached),
            refs: AtomicU32::new(2),
            node: NonNull::from(node),
            registry: NonNull::from(registry),
            next,
        };
        Some(SysBox::try_new(set)?.into_raw())
    }

    /// The zone this thread allocates from first.
    #[inline]
    pub(super) fn preferred(&self) -> ZoneIdx {
        // Stored from a ZoneIdx.
        ZoneIdx::from_bits(self.preferred.load(Ordering::Relaxed) as u8)
    }

    /// Makes a zone of NUMA node `local` this set's preferred zone (the one
    /// at the same place among its node's zones), if the preferred zone is
    /// on another node; the zone it moved to. Only the owner calls it, as
    /// only the owner reads `preferred` outside the registry; the zones'
    /// thread counts (their caches' `high`) follow.
    pub(super) fn move_to_node(&self, node: &Node, local: usize) -> Option<ZoneIdx> {
        let _guard = self.lock.lock();
        let from = self.preferred();
        if node.numa.node_of_zone(from) == local {
            return None;
        }
        let to = node.numa.zone_on(local, from);
        self.preferred.store(to.index(), Ordering::Relaxed);
        node.zone(from).pcp_detach();
        node.zone(to).pcp_attach();
        Some(to)
    }

    /// Enters a fast-path critical section; `false` if a drainer has the lists.
    #[inline(always)]
    pub(super) fn enter(&self) -> bool {
        self.busy.store(true, Ordering::Relaxed);
        light_barrier();
        // Acquire: if a drainer just finished (its Release store of false),
        // its changes to the lists are visible from here on.
        if self.locked.load(Ordering::Acquire) {
            self.busy.store(false, Ordering::Release);
            return false;
        }
        true
    }

    /// Leaves it; Release publishes the list changes to the next drainer.
    #[inline(always)]
    pub(super) fn leave(&self) {
        self.busy.store(false, Ordering::Release);
    }

    /// The slow path of [`alloc_fast`](super::alloc_fast): an order-`order`
    /// block (`order <= PCP_MAX_ORDER`) of type `mt` (not the high-atomic
    /// type). Under the set lock, walk the zonelist; the first zone with a
    /// cached block, or one passing its low watermark and able to refill,
    /// serves it (`rmqueue_pcplist` + `rmqueue_bulk`). `None` when no zone
    /// passes its low watermark: the caller's slow path follows.
    #[cold]
    #[inline(never)]
    pub(super) fn alloc(
        &self,
        node: &Node,
        (order, mt): (Order, Migratetype),
        (flags, allowed): (AllocFlags, NodeMask),
    ) -> Option<Block> {
        let o = order.index();
        let _guard = self.lock.lock();
        let preferred = self.preferred();
        // A shrinker's own allocation (PF_MEMALLOC) ignores watermarks.
        let mode = if InReclaim::active() { AllocMode::NO_WATERMARKS } else { AllocMode::new(Mark::Low, order, flags) };
        node.zonelist(preferred, (allowed, flags.contains(AllocFlags::THISNODE)), |z| {
            let zone = node.zone(z);
            let zp = &self.pcps[pcp_index(z, mt)];
            // SAFETY: we hold the set lock and are the owner.
            let block = unsafe {
                zp.lists(|l| {
                    refresh(l, o, zone);
                    if zp.count[o].load(Ordering::Relaxed) == 0 {
                        if !zone.watermark_ok(order, mode) {
                            zone.watermark_failures.fetch_add(1, Ordering::Relaxed);
                            return None;
                        }
                        let n = zone.rmqueue_bulk(&node.mem_map, (order, mt), l.batch[o] as usize, |_, pfn| {
                            zp.push_onto(l, o, pfn);
                        });
                        if n == 0 {
                            return None;
                        }
                        node.zone_allocated(zone);
                    }
                    zp.pop_from(l, o).map(|pfn| take_cached(node, pfn, order, z))
                })
            };
            if block.is_some() {
                ZonePcp::bump(&zp.allocs[o]);
            }
            block
        })
    }

    /// The slow path of [`free_fast`](super::free_fast): frees the
    /// allocated block `pfn`, whose head the caller validated as `info`,
    /// into this thread's cache under the set lock, and if its list is now
    /// above `high`, returns the `batch` coldest blocks under one zone lock
    /// acquisition. A 2 MiB block kept sets the purge timer
    /// ([`Node::huge_block_cached`]). `false`, with nothing changed, if
    /// another free of the block claimed it first (a racing double free).
    #[cold]
    #[inline(never)]
    pub(super) fn free(&self, node: &Node, pfn: Pfn, info: PageInfo) -> bool {
        let (order, mt, zone) = (info.order(), info.migratetype(), info.zone());
        let o = order.index();
        let _guard = self.lock.lock();
        if !claim_cached(node, pfn, info) {
            return false;
        }
        let zp = &self.pcps[pcp_index(zone, mt)];
        let z = node.zone(zone);
        // SAFETY: we hold the set lock and are the owner.
        unsafe {
            zp.lists(|l| {
                refresh(l, o, z);
                let mut n = zp.push_onto(l, o, pfn);
                if n > l.high[o] {
                    let batch = l.batch[o].min(n);
                    let to_lists = z.free_pcppages_bulk(&node.mem_map, (order, mt), (0..batch).map(|i| l.at(o, i)));
                    if to_lists {
                        node.pages_returned(z);
                    }
                    l.bottom[o] = l.bottom[o].wrapping_add(batch);
                    n -= batch;
                }
                zp.count[o].store(n, Ordering::Relaxed);
                if o == PCP_HUGE_ORDER && n != 0 {
                    node.huge_block_cached(node.numa.node_of_zone(zone));
                }
            });
        }
        ZonePcp::bump(&zp.frees[o]);
        true
    }

    /// The drainer's first step (module docs), under the set lock: keep
    /// the owner off its lists. A heavy barrier must follow before
    /// [`wait_for_owner`](Self::wait_for_owner); freezing every set pays
    /// one barrier for all of them.
    pub(super) fn raise_locked(&self) {
        self.locked.store(true, Ordering::Relaxed);
    }

    /// The drainer's last step: wait for an owner that entered before it
    /// could see `locked` to leave (a short section that never blocks).
    pub(super) fn wait_for_owner(&self) {
        while self.busy.load(Ordering::Acquire) {
            spin_loop();
        }
    }

    /// Returns every cached block to the buddy lists, from any thread: the
    /// remote drain (`drain_all_pages` for one CPU). Returns the pages moved.
    pub(crate) fn drain(&self, node: &Node) -> usize {
        let _guard = self.lock.lock();
        if self.state.load() != SetState::Attached {
            return 0;
        }
        self.raise_locked();
        heavy_barrier();
        self.wait_for_owner();
        // SAFETY: we hold the lock, raised `locked`, and saw `busy` clear
        // after the heavy barrier: the owner is out and will stay out.
        let pages = unsafe { self.return_all(node) };
        self.locked.store(false, Ordering::Release);
        pages
    }

    /// Moves every block of every list back to its zone, one zone lock
    /// acquisition per zone.
    ///
    /// # Safety
    /// The caller has the lists of every zone (see [`ZonePcp::lists`]).
    pub(super) unsafe fn return_all(&self, node: &Node) -> usize {
        let mut pages = 0;
        for (pcps, zone) in self.pcps.chunks(PCP_TYPES).zip(node.zones.iter()) {
            if pcps.iter().all(|zp| zp.count.iter().all(|c| c.load(Ordering::Relaxed) == 0)) {
                continue;
            }
            let mut guard = zone.lock();
            for zp in pcps {
                for order in 0..PCP_ORDERS {
                    let n = zp.count[order].load(Ordering::Relaxed);
                    if n == 0 {
                        continue;
                    }
                    // SAFETY: per this function's contract.
                    unsafe {
                        zp.lists(|l| {
                            for i in 0..n {
                                let pfn = l.at(order, i);
                                guard.free_cached(&node.mem_map, pfn, Order::from_bits(order as u8));
                            }
                            l.bottom[order] = 0;
                        });
                    }
                    zp.count[order].store(0, Ordering::Relaxed);
                    pages += (n as usize) << order;
                }
            }
            guard.inner.pcp_drained += 1;
        }
        pages
    }

    /// The owning thread is exiting: return its blocks and leave the set for
    /// the next thread; free the set if the arena is already gone.
    ///
    /// # Safety
    /// `set` is a set this thread attached and has not released.
    pub(crate) unsafe fn release(set: NonNull<PcpSet>) {
        // SAFETY: the thread's reference keeps the set alive until the
        // decrement below.
        let this = unsafe { set.as_ref() };
        {
            let _guard = this.lock.lock();
            if this.state.load() == SetState::Attached {
                // SAFETY: `Attached` under the lock: the arena cannot finish
                // dropping (it marks each set `Gone` under this lock first).
                let (node, registry) = unsafe { (this.node.as_ref(), this.registry.as_ref()) };
                // SAFETY: we are the owner (not in a busy section) and hold the lock.
                let pages = unsafe { this.vacate(node, registry) };
                // A free like any other: NOFAIL waiters, kswapd and the
                // purge timer hear of it (still under the set lock, which
                // comes before theirs in the lock order, so that the node
                // is alive). A forked child's recycling does not signal:
                // its fork handler holds those locks.
                if pages > 0 {
                    node.pages_returned_anywhere();
                }
            }
        }
        // SAFETY: the thread's reference, given up once.
        unsafe { Self::put_ref(set) };
    }

    /// Returns every block and marks the set vacant for the next thread;
    /// the pages returned.
    ///
    /// # Safety
    /// The caller holds the set's lock, the set is `Attached`, and its owner
    /// is not inside a busy section and never will be again.
    pub(super) unsafe fn vacate(&self, node: &Node, registry: &PcpRegistry) -> usize {
        // SAFETY: per the contract, nobody else touches the lists.
        let pages = unsafe { self.return_all(node) };
        self.state.store(SetState::Vacant);
        node.zone(self.preferred()).pcp_detach();
        registry.nr_vacant.fetch_add(1, Ordering::Relaxed);
        pages
    }

    /// Drops one reference; the last one frees the set.
    ///
    /// # Safety
    /// The caller owns one reference and does not use `set` afterwards.
    pub(super) unsafe fn put_ref(set: NonNull<PcpSet>) {
        // SAFETY: the caller's reference keeps the set alive until here.
        // AcqRel: the last decrement sees every other holder's last use.
        if unsafe { set.as_ref() }.refs.fetch_sub(1, Ordering::AcqRel) == 1 {
            // SAFETY: no references remain; the set came from SysBox::into_raw.
            drop(unsafe { SysBox::from_raw(set) });
        }
    }

    /// Walks this set's lists for `check()`: every slot must be a cached head
    /// of the list's order and type in the list's zone. Adds the pages per
    /// zone to `cached`.
    ///
    /// # Safety
    /// The caller has frozen the set (see [`PcpRegistry::with_frozen`]).
    pub(super) unsafe fn check(&self, node: &Node, cached: &mut [usize]) -> Result<(), crate::error::CheckError> {
        let groups = self.pcps.chunks(PCP_TYPES).enumerate();
        for (z, zp, list_type) in groups.flat_map(|(z, g)| g.iter().enumerate().map(move |(t, zp)| (z, zp, t))) {
            for (o, &capacity) in CAPACITY.iter().enumerate() {
                let order = o;
                let n = zp.count[o].load(Ordering::Relaxed);
                let bad = |pfn: Pfn, reason| crate::error::CheckError::BadCacheEntry {
                    zone: z,
                    order: order as u32,
                    pfn: pfn.raw(),
                    reason,
                };
                if n as usize > capacity {
                    return Err(bad(Pfn::new(0), "more blocks than the list can hold"));
                }
                // SAFETY: frozen, per the caller's contract.
                let result = unsafe {
                    zp.lists(|l| {
                        for i in 0..n {
                            let pfn = l.at(o, i);
                            if !node.zones[z].contains(pfn) {
                                return Err(bad(pfn, "not a page of the list's zone"));
                            }
                            let info = node.mem_map.page(pfn).info();
                            if info.state != PageState::Cached || info.order().index() != order {
                                return Err(bad(pfn, "head is not a cached block of the list's order"));
                            }
                            if pcp_type(info.migratetype().index()) != list_type {
                                return Err(bad(pfn, "head is not of the list's migratetype"));
                            }
                        }
                        Ok(())
                    })
                };
                result?;
                cached[z] += (n as usize) << order;
            }
        }
        Ok(())
    }
}

/// Records a popped cached block as allocated (of the type of the list it
/// was on) and returns it.
#[inline(always)]
pub(super) fn take_cached(node: &Node, pfn: Pfn, order: Order, zone: ZoneIdx) -> Block {
    let page = node.mem_map.page(pfn);
    let info = page.info();
    hand_out(page, PageInfo::allocated_base(zone), order.get(), info.migratetype().index());
    Block { pfn, order, flags: info.flags & flag::CONTENT }
}

/// Marks the cached block `page` heads allocated with `order` and type
/// `mt`; `allocated` is [`PageInfo::allocated_base`] of its zone. The one
/// writer of the head for both ways out of a cache.
#[inline(always)]
pub(super) fn hand_out(page: &PageMeta, allocated: u32, order: u32, mt: usize) {
    page.set_info_word(PageInfo::allocated_word(allocated, order, mt));
}

/// Claims the allocated head `info` of `pfn` for a free into a cache: it
/// becomes cached, on the list of the type it was allocated as (an
/// allocated head carries no content flags: its contents are unknown).
/// `false` if another free claimed it first ([`PageMeta::claim_word`]).
///
/// [`PageMeta::claim_word`]: crate::page::PageMeta::claim_word
#[inline(always)]
pub(super) fn claim_cached(node: &Node, pfn: Pfn, info: PageInfo) -> bool {
    node.mem_map.page(pfn).claim_word(info.pack(), info.with_state(PageState::Cached).pack())
}

/// Copies the zone's current `high` and `batch` into the order-`order` list's
/// parameters. Each list is refreshed on its own slow path, which comes
/// before its first use: an untouched list has `high` 0, so its first
/// free and its first allocation both take the slow path.
#[inline]
pub(super) fn refresh(lists: &mut PcpLists, order: usize, zone: &Zone) {
    let (batch, high) = zone.pcp_params();
    lists.offset[order] = OFFSET[order] as u32;
    lists.mask[order] = CAPACITY[order] as u32 - 1;
    lists.batch[order] = batch_blocks(batch, order) as u32;
    lists.high[order] = high_blocks(high, batch, order) as u32;
}
