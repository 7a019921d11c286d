//! Per-thread page caches: the kernel's per-CPU page lists (`struct
//! per_cpu_pages`), one set per thread per arena.
//!
//! A thread's [`PcpSet`] holds, for every zone and for orders
//! `0..=PAGE_ALLOC_COSTLY_ORDER` (3), a list of free blocks taken out of the
//! zone. The common allocation pops one and the common free pushes one, with
//! no lock and no atomic read-modify-write. An empty list is refilled with
//! `batch` blocks under one acquisition of the zone lock (`rmqueue_bulk`); a
//! free that takes a list above `high` returns `batch` blocks, the coldest,
//! under one acquisition (`free_pcppages_bulk`).
//!
//! **Frees from another zone.** A block goes to the freeing thread's list
//! *for the block's zone*, as `free_unref_page` puts a page on this CPU's
//! pcp of the page's zone. The alternatives are worse: pushing it into the
//! thread's own zone's list would hand out blocks of one zone as another's
//! and break per-zone accounting; freeing it straight to its zone's buddy
//! lists would take a lock on every cross-thread free (producer/consumer).
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
//!
//! **Lifetime.** Sets belong to the arena's [`PcpRegistry`] and are recycled:
//! a thread's exit drains its set and marks it vacant for the next thread.
//! A set is reference counted by its arena and its thread, so an arena
//! dropped while threads still hold sets, and a thread exiting while its
//! arena drops, both end with every page in exactly one place and every set
//! freed exactly once.

use std::ptr::NonNull;

use crate::arena::ArenaInner;
use crate::boot::SysBox;
use crate::buddy::Block;
use crate::error::BuildError;
use crate::flags::AllocFlags;
use crate::page::{PageInfo, PageState, Pfn};
use crate::reclaim::InReclaim;
use crate::sync::{
    AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Mutex, Ordering, UnsafeCell, heavy_barrier, light_barrier,
    spin_loop,
};
use crate::watermark::{AllocMode, Mark};
use crate::zone::Zone;

/// The largest order the caches hold: the kernel's `PAGE_ALLOC_COSTLY_ORDER`.
pub const PCP_MAX_ORDER: u32 = 3;
const PCP_ORDERS: usize = PCP_MAX_ORDER as usize + 1;

/// The largest `high` a list may have, in pages. Bounds the per-thread
/// memory: a zone's lists hold at most 1023 pages per order.
#[cfg(not(loom))]
pub const PCP_HIGH_LIMIT: usize = 1023;
/// Loom models use tiny lists.
#[cfg(loom)]
pub const PCP_HIGH_LIMIT: usize = 7;

/// Ring capacity of the order-`o` list: a power of two above the largest
/// `high` it can have (`max(limit >> o, 2)` blocks) plus the one block a
/// free pushes before trimming.
const fn capacity(order: usize) -> usize {
    let most = if PCP_HIGH_LIMIT >> order > 2 { PCP_HIGH_LIMIT >> order } else { 2 };
    (most + 1).next_power_of_two()
}

const CAPACITY: [usize; PCP_ORDERS] = [capacity(0), capacity(1), capacity(2), capacity(3)];
const OFFSET: [usize; PCP_ORDERS] =
    [0, CAPACITY[0], CAPACITY[0] + CAPACITY[1], CAPACITY[0] + CAPACITY[1] + CAPACITY[2]];
/// All rings of a zone in one array, sized to a power of two so a masked
/// index is provably in bounds.
const SLOTS: usize = (OFFSET[3] + CAPACITY[3]).next_power_of_two();

/// How the per-thread caches are sized; see
/// [`ArenaBuilder::pcp`](crate::ArenaBuilder::pcp).
///
/// ```
/// use zonealloc::{Arena, PcpConfig};
/// let arena = Arena::builder()
///     .region_size(64 << 20)
///     .pcp(PcpConfig::Fixed { batch: 8, high: 32 })
///     .build()
///     .unwrap();
/// assert_eq!(arena.stats().zones[0].pcp_batch, 8);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PcpConfig {
    /// The kernel's sizing: `batch` from `zone_batchsize` (about a quarter of
    /// 1/1024 of the zone, rounded to `2^n - 1`, at most 63), and `high` from
    /// `zone_highsize`: the zone's low watermark split between the threads
    /// that prefer the zone, at least `4 * batch`, at most
    /// [`PCP_HIGH_LIMIT`].
    #[default]
    Kernel,
    /// Fixed `batch` and `high`, in pages, for every zone (`1 <= batch <=
    /// high <= PCP_HIGH_LIMIT`).
    Fixed {
        /// Pages moved per refill or trim.
        batch: usize,
        /// Pages a list may hold before a free trims it.
        high: usize,
    },
    /// No per-thread caches: every operation takes its zone's lock.
    Disabled,
}

impl PcpConfig {
    /// Checks a fixed configuration.
    pub(crate) fn validate(self) -> Result<(), BuildError> {
        if let Self::Fixed { batch, high } = self {
            if batch == 0 {
                return Err(BuildError::InvalidPcp { reason: "batch must be at least 1 page" });
            }
            if high < batch {
                return Err(BuildError::InvalidPcp { reason: "high must be at least batch" });
            }
            if high > PCP_HIGH_LIMIT {
                return Err(BuildError::InvalidPcp { reason: "high is above PCP_HIGH_LIMIT (1023 pages)" });
            }
        }
        Ok(())
    }

    /// `(batch, high for one thread)` in pages for a zone, or `None` when
    /// disabled.
    pub(crate) fn for_zone(self, managed: usize, low_wmark: usize) -> Option<(usize, usize)> {
        match self {
            Self::Kernel => {
                let batch = zone_batchsize(managed);
                Some((batch, zone_highsize(low_wmark, batch, 1)))
            }
            Self::Fixed { batch, high } => Some((batch, high)),
            Self::Disabled => None,
        }
    }
}

/// `zone_batchsize`: about a quarter of 1/1024 of the zone, at most 1 MiB's
/// worth before the quartering, rounded down to `2^n - 1`, at least 1.
pub(crate) fn zone_batchsize(managed: usize) -> usize {
    let batch = (managed >> 10).min((1 << 20) / crate::PAGE_SIZE) / 4;
    let batch = batch.max(1);
    let rounded = (batch + batch / 2).checked_next_power_of_two().unwrap_or(1);
    // rounddown_pow_of_two(x) is x's top bit.
    let rounddown = if rounded == batch + batch / 2 { rounded } else { rounded / 2 };
    (rounddown - 1).max(1)
}

/// `zone_highsize`: the low watermark split between `threads`, at least
/// `4 * batch`, capped at [`PCP_HIGH_LIMIT`].
pub(crate) fn zone_highsize(low_wmark: usize, batch: usize, threads: usize) -> usize {
    (low_wmark / threads.max(1)).max(batch * 4).min(PCP_HIGH_LIMIT)
}

/// `batch` blocks for an order-`order` list: the kernel's `nr_pcp_alloc`
/// (`max(batch >> order, 2)` above order 0).
fn batch_blocks(batch: usize, order: usize) -> usize {
    if order == 0 { batch } else { (batch >> order).max(2) }
}

/// One zone's lists in a set: the ring buffers and their parameters.
struct PcpLists {
    /// Index of the coldest block of each ring.
    bottom: [u32; PCP_ORDERS],
    /// Where each ring starts in `slots`, and its capacity minus one, copied
    /// from the constants so the fast paths read them from the line they
    /// already touch (set on the slow path, zero until then: harmless, since
    /// every list is empty with `high` 0 until its first slow path).
    offset: [u32; PCP_ORDERS],
    mask: [u32; PCP_ORDERS],
    /// `high` in force, in blocks (refreshed on the slow path).
    high: [u32; PCP_ORDERS],
    /// `batch` in force, in blocks.
    batch: [u32; PCP_ORDERS],
    slots: [Pfn; SLOTS],
}

impl PcpLists {
    /// Slot of ring position `index` of the order-`order` ring.
    #[inline(always)]
    fn slot(&self, order: usize, index: u32) -> usize {
        (self.offset[order] + (index & self.mask[order])) as usize & (SLOTS - 1)
    }
}

/// A set's lists for one zone.
struct ZonePcp {
    /// Blocks cached per order. Written only by whoever has the lists (the
    /// protocol above), read racily by `stats()`.
    count: [AtomicU32; PCP_ORDERS],
    /// Allocations served per order.
    allocs: [AtomicU64; PCP_ORDERS],
    /// Frees taken per order.
    frees: [AtomicU64; PCP_ORDERS],
    lists: UnsafeCell<PcpLists>,
}

// SAFETY: ZonePcp is atomics and plain integers; all-zero is empty lists with
// high = batch = 0, which the slow path replaces before first use.
#[cfg(not(loom))]
unsafe impl crate::boot::Zeroable for ZonePcp {}

impl ZonePcp {
    #[cfg(loom)]
    fn new() -> Self {
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
                slots: [0; SLOTS],
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
    unsafe fn lists<R>(&self, f: impl FnOnce(&mut PcpLists) -> R) -> R {
        // SAFETY: exclusive access per the caller's contract.
        self.lists.with_mut(|lists| f(unsafe { &mut *lists }))
    }

    /// Adds one to an owner-maintained counter (no read-modify-write: only
    /// the holder of the lists writes it).
    #[inline(always)]
    fn bump(counter: &AtomicU64) {
        counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
}

const VACANT: u8 = 0;
const ATTACHED: u8 = 1;
const GONE: u8 = 2;

/// One thread's caches for one arena.
pub(crate) struct PcpSet {
    /// The owner is inside a fast-path critical section.
    busy: AtomicBool,
    /// A drainer has, or is taking, the lists.
    locked: AtomicBool,
    /// The zone this thread allocates from first.
    preferred: AtomicUsize,
    zones: SysBox<[ZonePcp]>,
    /// Serialises drainers with each other and with the owner's slow path.
    lock: Mutex<()>,
    /// VACANT, ATTACHED or GONE (the arena was dropped); changed under `lock`.
    state: AtomicU8,
    /// One for the arena, one for an attached thread.
    refs: AtomicU32,
    /// Valid while `state != GONE`.
    arena: NonNull<ArenaInner>,
    /// Next set in the registry; written once, before the set is published.
    next: Option<NonNull<PcpSet>>,
}

// SAFETY: shared state is atomics, a mutex, and lists handed between threads
// only by the protocol above; `arena` is only dereferenced while it is alive.
unsafe impl Send for PcpSet {}
// SAFETY: as above.
unsafe impl Sync for PcpSet {}

impl PcpSet {
    fn new(arena: &ArenaInner, preferred: usize, next: Option<NonNull<PcpSet>>) -> Option<NonNull<Self>> {
        let nr = arena.zones.len();
        #[cfg(not(loom))]
        let zones = SysBox::try_new_zeroed_slice(nr)?;
        #[cfg(loom)]
        let zones = SysBox::try_from_fn(nr, |_| Ok::<_, ()>(ZonePcp::new())).ok()??;
        let set = Self {
            busy: AtomicBool::new(false),
            locked: AtomicBool::new(false),
            preferred: AtomicUsize::new(preferred),
            zones,
            lock: Mutex::new(()),
            state: AtomicU8::new(ATTACHED),
            refs: AtomicU32::new(2),
            arena: NonNull::from(arena),
            next,
        };
        Some(SysBox::try_new(set)?.into_raw())
    }

    /// Enters a fast-path critical section; `false` if a drainer has the lists.
    #[inline(always)]
    fn enter(&self) -> bool {
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
    fn leave(&self) {
        self.busy.store(false, Ordering::Release);
    }

    /// Allocates an order-`order` block (`order <= PCP_MAX_ORDER`) from this
    /// thread's cache, refilling it from the zonelist if it is empty. `None`
    /// when no zone passes its low watermark: the caller's slow path follows.
    #[inline]
    pub(crate) fn alloc(&self, arena: &ArenaInner, order: u32, flags: AllocFlags) -> Option<Block> {
        let o = order as usize;
        let zone = self.preferred.load(Ordering::Relaxed);
        let zp = &self.zones[zone];
        if self.enter() {
            let n = zp.count[o].load(Ordering::Relaxed);
            if n > 0 {
                // SAFETY: inside a busy section that did not see `locked`.
                let pfn = unsafe { zp.lists(|l| l.slots[l.slot(o, l.bottom[o].wrapping_add(n - 1))]) };
                zp.count[o].store(n - 1, Ordering::Relaxed);
                let block = take_cached(arena, pfn, order, zone);
                ZonePcp::bump(&zp.allocs[o]);
                self.leave();
                return Some(block);
            }
            self.leave();
        }
        self.alloc_refill(arena, order, flags)
    }

    /// The slow path of `alloc`: under the set lock, walk the zonelist; the
    /// first zone with a cached block, or one passing its low watermark and
    /// able to refill, serves it (`rmqueue_pcplist` + `rmqueue_bulk`).
    #[cold]
    #[inline(never)]
    fn alloc_refill(&self, arena: &ArenaInner, order: u32, flags: AllocFlags) -> Option<Block> {
        let o = order as usize;
        let _guard = self.lock.lock();
        let preferred = self.preferred.load(Ordering::Relaxed);
        // A shrinker's own allocation (PF_MEMALLOC) ignores watermarks.
        let mode = if InReclaim::active() { AllocMode::NO_WATERMARKS } else { AllocMode::new(Mark::Low, flags) };
        let nr = arena.zones.len();
        for step in 0..nr {
            let z = if preferred + step >= nr { preferred + step - nr } else { preferred + step };
            let zone = &arena.zones[z];
            let zp = &self.zones[z];
            // SAFETY: we hold the set lock and are the owner.
            let block = unsafe {
                zp.lists(|l| {
                    refresh(l, zone);
                    let mut n = zp.count[o].load(Ordering::Relaxed);
                    if n == 0 {
                        if !zone.watermark_ok(order, mode) {
                            zone.watermark_failures.fetch_add(1, Ordering::Relaxed);
                            return None;
                        }
                        n = zone.rmqueue_bulk(&arena.mem_map, order, l.batch[o] as usize, |i, pfn| {
                            l.slots[l.slot(o, l.bottom[o].wrapping_add(i as u32))] = pfn;
                        }) as u32;
                        if n == 0 {
                            return None;
                        }
                        arena.zone_allocated(zone);
                    }
                    let pfn = l.slots[l.slot(o, l.bottom[o].wrapping_add(n - 1))];
                    zp.count[o].store(n - 1, Ordering::Relaxed);
                    Some(take_cached(arena, pfn, order, z))
                })
            };
            if let Some(block) = block {
                ZonePcp::bump(&zp.allocs[o]);
                return Some(block);
            }
        }
        None
    }

    /// Frees an order-`order` block of zone `zone` into this thread's cache;
    /// the caller has validated that it is an allocated block of that order.
    #[inline]
    pub(crate) fn free(&self, arena: &ArenaInner, pfn: Pfn, order: u32, zone: usize) {
        let o = order as usize;
        let zp = &self.zones[zone];
        if self.enter() {
            let n = zp.count[o].load(Ordering::Relaxed);
            // SAFETY: inside a busy section that did not see `locked`.
            let pushed = unsafe {
                zp.lists(|l| {
                    if n >= l.high[o] {
                        return false;
                    }
                    l.slots[l.slot(o, l.bottom[o].wrapping_add(n))] = pfn;
                    true
                })
            };
            if pushed {
                zp.count[o].store(n + 1, Ordering::Relaxed);
                put_cached(arena, pfn, order, zone);
                ZonePcp::bump(&zp.frees[o]);
                self.leave();
                return;
            }
            self.leave();
        }
        self.free_trim(arena, pfn, order, zone);
    }

    /// The slow path of `free`: push, and if the list is now above `high`,
    /// return its `batch` coldest blocks under one zone lock acquisition.
    #[cold]
    #[inline(never)]
    fn free_trim(&self, arena: &ArenaInner, pfn: Pfn, order: u32, zone: usize) {
        let o = order as usize;
        let _guard = self.lock.lock();
        let zp = &self.zones[zone];
        let z = &arena.zones[zone];
        // SAFETY: we hold the set lock and are the owner.
        unsafe {
            zp.lists(|l| {
                refresh(l, z);
                let n = zp.count[o].load(Ordering::Relaxed);
                l.slots[l.slot(o, l.bottom[o].wrapping_add(n))] = pfn;
                put_cached(arena, pfn, order, zone);
                let mut n = n + 1;
                if n > l.high[o] {
                    let batch = l.batch[o].min(n);
                    let bottom = l.bottom[o];
                    let to_lists = z.free_pcppages_bulk(
                        &arena.mem_map,
                        order,
                        (0..batch).map(|i| l.slots[l.slot(o, bottom.wrapping_add(i))]),
                    );
                    if to_lists {
                        arena.pages_returned();
                    }
                    l.bottom[o] = bottom.wrapping_add(batch);
                    n -= batch;
                }
                zp.count[o].store(n, Ordering::Relaxed);
            });
        }
        ZonePcp::bump(&zp.frees[o]);
    }

    /// Returns every cached block to the buddy lists, from any thread: the
    /// remote drain (`drain_all_pages` for one CPU). Returns the pages moved.
    pub(crate) fn drain(&self, arena: &ArenaInner) -> usize {
        let _guard = self.lock.lock();
        if self.state.load(Ordering::Relaxed) != ATTACHED {
            return 0;
        }
        self.locked.store(true, Ordering::Relaxed);
        heavy_barrier();
        while self.busy.load(Ordering::Acquire) {
            spin_loop();
        }
        // SAFETY: we hold the lock, raised `locked`, and saw `busy` clear
        // after the heavy barrier: the owner is out and will stay out.
        let pages = unsafe { self.return_all(arena) };
        self.locked.store(false, Ordering::Release);
        pages
    }

    /// Moves every block of every list back to its zone, one zone lock
    /// acquisition per zone.
    ///
    /// # Safety
    /// The caller has the lists of every zone (see [`ZonePcp::lists`]).
    unsafe fn return_all(&self, arena: &ArenaInner) -> usize {
        let mut pages = 0;
        for (zp, zone) in self.zones.iter().zip(arena.zones.iter()) {
            if zp.count.iter().all(|c| c.load(Ordering::Relaxed) == 0) {
                continue;
            }
            let mut guard = zone.lock();
            for o in 0..PCP_ORDERS {
                let n = zp.count[o].load(Ordering::Relaxed);
                if n == 0 {
                    continue;
                }
                // SAFETY: per this function's contract.
                unsafe {
                    zp.lists(|l| {
                        for i in 0..n {
                            let pfn = l.slots[l.slot(o, l.bottom[o].wrapping_add(i))];
                            guard.free_cached(&arena.mem_map, pfn, o as u32);
                        }
                        l.bottom[o] = 0;
                    });
                }
                zp.count[o].store(0, Ordering::Relaxed);
                pages += (n as usize) << o;
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
            if this.state.load(Ordering::Relaxed) == ATTACHED {
                // SAFETY: ATTACHED under the lock: the arena cannot finish
                // dropping (it marks each set GONE under this lock first).
                let arena = unsafe { this.arena.as_ref() };
                // SAFETY: we are the owner (not in a busy section) and hold the lock.
                unsafe { this.vacate(arena) };
            }
        }
        // SAFETY: the thread's reference, given up once.
        unsafe { Self::put_ref(set) };
    }

    /// Returns every block and marks the set vacant for the next thread.
    ///
    /// # Safety
    /// The caller holds the set's lock, the set is ATTACHED, and its owner
    /// is not inside a busy section and never will be again.
    unsafe fn vacate(&self, arena: &ArenaInner) {
        // SAFETY: per the contract, nobody else touches the lists.
        unsafe { self.return_all(arena) };
        self.state.store(VACANT, Ordering::Relaxed);
        arena.zones[self.preferred.load(Ordering::Relaxed)].pcp_detach();
        arena.pcp.nr_vacant.fetch_add(1, Ordering::Relaxed);
    }

    /// Drops one reference; the last one frees the set.
    ///
    /// # Safety
    /// The caller owns one reference and does not use `set` afterwards.
    unsafe fn put_ref(set: NonNull<PcpSet>) {
        // SAFETY: the caller's reference keeps the set alive until here.
        // AcqRel: the last decrement sees every other holder's last use.
        if unsafe { set.as_ref() }.refs.fetch_sub(1, Ordering::AcqRel) == 1 {
            // SAFETY: no references remain; the set came from SysBox::into_raw.
            drop(unsafe { SysBox::from_raw(set) });
        }
    }

    /// Walks this set's lists for `check()`: every slot must be a cached head
    /// of the list's order in the list's zone. Adds the pages per zone to
    /// `cached`.
    ///
    /// # Safety
    /// The caller has frozen the set (see [`PcpRegistry::with_frozen`]).
    unsafe fn check(&self, arena: &ArenaInner, cached: &mut [usize]) -> Result<(), crate::CheckError> {
        for (z, zp) in self.zones.iter().enumerate() {
            for (o, capacity) in CAPACITY.iter().enumerate() {
                let n = zp.count[o].load(Ordering::Relaxed);
                let bad = |pfn, reason| crate::CheckError::BadCacheEntry { zone: z, order: o as u32, pfn, reason };
                if n as usize > *capacity {
                    return Err(bad(0, "more blocks than the list can hold"));
                }
                // SAFETY: frozen, per the caller's contract.
                let result = unsafe {
                    zp.lists(|l| {
                        for i in 0..n {
                            let pfn = l.slots[l.slot(o, l.bottom[o].wrapping_add(i))];
                            if !arena.zones[z].contains(pfn) {
                                return Err(bad(pfn, "not a page of the list's zone"));
                            }
                            let info = arena.mem_map.page(pfn).info();
                            if info.state != PageState::Cached || usize::from(info.order) != o {
                                return Err(bad(pfn, "head is not a cached block of the list's order"));
                            }
                        }
                        Ok(())
                    })
                };
                result?;
                cached[z] += (n as usize) << o;
            }
        }
        Ok(())
    }
}

/// Records a popped cached block as allocated and returns it.
#[inline(always)]
fn take_cached(arena: &ArenaInner, pfn: Pfn, order: u32, zone: usize) -> Block {
    let page = arena.mem_map.page(pfn);
    let flags = page.info().flags;
    page.set_info(PageInfo::new(PageState::Allocated, order, 0, zone as u8));
    Block { pfn, order, flags }
}

/// Records a freed block as cached. Its contents are now unknown: no flags.
#[inline(always)]
fn put_cached(arena: &ArenaInner, pfn: Pfn, order: u32, zone: usize) {
    arena.mem_map.page(pfn).set_info(PageInfo::new(PageState::Cached, order, 0, zone as u8));
}

/// Copies the zone's current `high` and `batch` into a list's parameters.
#[inline]
fn refresh(lists: &mut PcpLists, zone: &Zone) {
    let (batch, high) = zone.pcp_params();
    for o in 0..PCP_ORDERS {
        lists.offset[o] = OFFSET[o] as u32;
        lists.mask[o] = CAPACITY[o] as u32 - 1;
        let b = batch_blocks(batch, o);
        lists.batch[o] = b as u32;
        lists.high[o] = (high >> o).max(b) as u32;
    }
}

/// All the sets of an arena.
pub(crate) struct PcpRegistry {
    head: Mutex<RegistryInner>,
    /// Sets left by exited threads, waiting for the next thread (a hint).
    pub nr_vacant: AtomicUsize,
    /// Remote drains run (`Arena::drain_pcp`).
    pub drains: AtomicU64,
}

struct RegistryInner {
    first: Option<NonNull<PcpSet>>,
    /// Round-robin preferred zone for the next thread.
    next_zone: usize,
}

// SAFETY: the raw set pointers are only followed under the registry lock,
// and sets are freed only by the reference protocol.
unsafe impl Send for RegistryInner {}

impl PcpRegistry {
    pub(crate) fn new() -> Self {
        Self {
            head: Mutex::new(RegistryInner { first: None, next_zone: 0 }),
            nr_vacant: AtomicUsize::new(0),
            drains: AtomicU64::new(0),
        }
    }

    /// Gives the calling thread a set: a vacant one, or a new one.
    pub(crate) fn attach(&self, arena: &ArenaInner) -> Option<NonNull<PcpSet>> {
        let mut reg = self.head.lock();
        let zone = reg.next_zone;
        reg.next_zone = if zone + 1 == arena.zones.len() { 0 } else { zone + 1 };
        if self.nr_vacant.load(Ordering::Relaxed) > 0 {
            let mut cursor = reg.first;
            while let Some(ptr) = cursor {
                // SAFETY: sets in the registry live until the arena drops.
                let set = unsafe { ptr.as_ref() };
                let _guard = set.lock.lock();
                if set.state.load(Ordering::Relaxed) == VACANT {
                    set.state.store(ATTACHED, Ordering::Relaxed);
                    set.refs.fetch_add(1, Ordering::Relaxed);
                    set.preferred.store(zone, Ordering::Relaxed);
                    self.nr_vacant.fetch_sub(1, Ordering::Relaxed);
                    arena.zones[zone].pcp_attach();
                    return Some(ptr);
                }
                cursor = set.next;
            }
        }
        let set = PcpSet::new(arena, zone, reg.first)?;
        reg.first = Some(set);
        arena.zones[zone].pcp_attach();
        Some(set)
    }

    /// Calls `f` on every set, under the registry lock.
    fn for_each(&self, mut f: impl FnMut(&PcpSet)) {
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
    pub(crate) fn drain_all(&self, arena: &ArenaInner) -> usize {
        self.drains.fetch_add(1, Ordering::Relaxed);
        let mut pages = 0;
        self.for_each(|set| pages += set.drain(arena));
        for zone in arena.zones.iter() {
            pages += zone.drain_pool(&arena.mem_map);
        }
        pages
    }

    /// Per zone and order: blocks cached, allocations and frees served.
    /// A racy but atomic-per-counter snapshot.
    pub(crate) fn tally(&self, per_zone: &mut [PcpTally]) -> usize {
        let mut sets = 0;
        self.for_each(|set| {
            sets += usize::from(set.state.load(Ordering::Relaxed) == ATTACHED);
            for (zp, t) in set.zones.iter().zip(per_zone.iter_mut()) {
                for o in 0..PCP_ORDERS {
                    t.cached[o] += zp.count[o].load(Ordering::Relaxed) as usize;
                    t.allocs[o] += zp.allocs[o].load(Ordering::Relaxed);
                    t.frees[o] += zp.frees[o].load(Ordering::Relaxed);
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
            set.locked.store(true, Ordering::Relaxed);
            Ok::<_, ()>(FrozenSet { set, _guard: guard })
        })
        .ok()??;
        if count > 0 {
            heavy_barrier();
        }
        for frozen in sets.iter() {
            while frozen.set.busy.load(Ordering::Acquire) {
                spin_loop();
            }
        }
        Some(FrozenSets { sets, _registry: registry })
    }

    /// The arena is dropping: mark every set GONE so exiting threads leave
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
                set.state.store(GONE, Ordering::Relaxed);
            }
            // SAFETY: the arena's reference, given up once.
            unsafe { PcpSet::put_ref(ptr) };
        }
    }
}

/// One frozen set: its lock held and `locked` raised, its owner seen out of
/// its busy section after the heavy barrier.
struct FrozenSet<'a> {
    set: &'a PcpSet,
    _guard: crate::sync::MutexGuard<'a, ()>,
}

/// Every set of a registry, frozen (see [`PcpRegistry::freeze`]). The
/// registry stays locked, so no set is attached or recycled meanwhile.
pub(crate) struct FrozenSets<'a> {
    sets: SysBox<[FrozenSet<'a>]>,
    _registry: crate::sync::MutexGuard<'a, RegistryInner>,
}

impl FrozenSets<'_> {
    /// Walks every set's lists for `check()` (see [`PcpSet::check`]),
    /// adding each zone's cached pages to `cached`.
    pub(crate) fn check(&self, arena: &ArenaInner, cached: &mut [usize]) -> Result<(), crate::CheckError> {
        for frozen in self.sets.iter() {
            // SAFETY: frozen for our lifetime.
            unsafe { frozen.set.check(arena, cached) }?;
        }
        Ok(())
    }

    /// In a forked child, the only thread: every set but the calling
    /// thread's belonged to a thread that does not exist here. The fork's
    /// prepare handler froze them, so none was caught inside a cache
    /// operation: their blocks go back to the lists and the sets become
    /// vacant, for the child's next threads.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn recycle_all_but_own(&self, arena: &ArenaInner) {
        let own = with_caches(|caches| {
            caches.entries.iter().map(|e| e.get()).find(|e| e.arena_id == arena.id).and_then(|e| e.occupied())
        })
        .flatten();
        for frozen in self.sets.iter() {
            let set = frozen.set;
            if Some(NonNull::from(set)) == own || set.state.load(Ordering::Relaxed) != ATTACHED {
                continue;
            }
            // SAFETY: frozen (its lock is held through `frozen`), ATTACHED,
            // and its owner does not exist in this process.
            unsafe { set.vacate(arena) };
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

/// How many arenas a thread caches for; beyond that, operations on further
/// arenas go straight to the zones.
pub const THREAD_ARENAS: usize = 8;

/// A thread's sets, one entry per arena it has used (up to
/// [`THREAD_ARENAS`]). Entry 0 is the most recently used arena: the fast
/// paths look only there.
pub(crate) struct ThreadCaches {
    entries: [std::cell::Cell<Entry>; THREAD_ARENAS],
    /// The thread is exiting and its sets have been released: nothing may
    /// attach again (a set attached now would never be released).
    gone: std::cell::Cell<bool>,
}

/// One arena's set, with its preferred zone's lists and metadata words
/// resolved so the fast paths need no lookup and no arithmetic.
#[derive(Clone, Copy)]
struct Entry {
    /// 0 (never an arena's id) when empty.
    arena_id: u64,
    /// Dangling when empty (never followed unless `arena_id` matched).
    set: NonNull<PcpSet>,
    /// The preferred zone's lists; dangling when empty (never followed
    /// unless `arena_id` matched).
    hot: NonNull<ZonePcp>,
    /// Every zone's lists (`zones[z]` of the set) and how many there are; 0
    /// when empty.
    zones: NonNull<ZonePcp>,
    nr_zones: usize,
    /// The packed info word of an allocated order-0 head in the preferred
    /// zone; `| order << 8` for other orders.
    allocated_word: u32,
}

impl Entry {
    /// The set, if the entry holds one.
    fn occupied(&self) -> Option<NonNull<PcpSet>> {
        (self.arena_id != 0).then_some(self.set)
    }
}

const EMPTY: Entry = Entry {
    arena_id: 0,
    set: NonNull::dangling(),
    hot: NonNull::dangling(),
    zones: NonNull::dangling(),
    nr_zones: 0,
    allocated_word: 0,
};

/// Turns an allocated head's info word into the cached head's: the states
/// differ in one bit, and allocated heads carry no content flags.
const ALLOCATED_TO_CACHED: u32 = PageState::Allocated as u32 ^ PageState::Cached as u32;

impl ThreadCaches {
    #[cfg_attr(loom, allow(dead_code))]
    const fn new() -> Self {
        Self { entries: [const { std::cell::Cell::new(EMPTY) }; THREAD_ARENAS], gone: std::cell::Cell::new(false) }
    }

    /// This thread's set for `arena`, attaching one on first use, and moved
    /// to the front for the fast paths.
    #[cold]
    fn get(&self, arena: &ArenaInner) -> Option<&PcpSet> {
        if self.gone.get() {
            return None;
        }
        let mut free_slot = None;
        let mut found = None;
        for (i, cell) in self.entries.iter().enumerate() {
            let entry = cell.get();
            match entry.occupied() {
                Some(_) if entry.arena_id == arena.id => {
                    found = Some(i);
                    break;
                }
                Some(set) => {
                    // An entry whose arena was dropped can be reused.
                    // SAFETY: the thread's reference keeps the set alive.
                    if free_slot.is_none() && unsafe { set.as_ref() }.state.load(Ordering::Relaxed) == GONE {
                        // SAFETY: the thread's reference, given up once; the entry is cleared.
                        unsafe { PcpSet::put_ref(set) };
                        cell.set(EMPTY);
                        free_slot = Some(i);
                    }
                }
                None => free_slot = free_slot.or(Some(i)),
            }
        }
        let index = match found {
            Some(i) => i,
            None => {
                let slot = free_slot?;
                // The hook first: a set attached without it would never be
                // released.
                if !register_exit_hook() {
                    return None;
                }
                let set = arena.pcp.attach(arena)?;
                // SAFETY: just attached; the thread holds a reference.
                let preferred = unsafe { set.as_ref() }.preferred.load(Ordering::Relaxed);
                // SAFETY: as above; `preferred` indexes the set's zones.
                let zones = &unsafe { set.as_ref() }.zones;
                self.entries[slot].set(Entry {
                    arena_id: arena.id,
                    set,
                    hot: NonNull::from(&zones[preferred]),
                    zones: NonNull::from(&zones[0]),
                    nr_zones: zones.len(),
                    allocated_word: PageInfo::new(PageState::Allocated, 0, 0, preferred as u8).pack(),
                });
                slot
            }
        };
        // Move to the front.
        let entry = self.entries[index].get();
        self.entries[index].set(self.entries[0].get());
        self.entries[0].set(entry);
        // SAFETY: the thread's reference keeps the set alive, and `self`
        // (thread-local) does not outlive the thread.
        entry.occupied().map(|set| unsafe { set.as_ref() })
    }

    /// Releases every set: the thread is exiting. Afterwards nothing
    /// attaches: the thread's later operations go straight to the zones.
    fn release_all(&self) {
        self.gone.set(true);
        for cell in &self.entries {
            if let Some(set) = cell.replace(EMPTY).occupied() {
                // SAFETY: attached by this thread, released once.
                unsafe { PcpSet::release(set) };
            }
        }
    }
}

// The entries live in a thread-local *without* a destructor, so the fast
// paths reach them with one fs-relative load and no state check; a second,
// empty thread-local with a destructor is registered before the first
// attach, to release the sets when the thread exits (see `lifecycle.rs` for
// how the global allocator orders its own exit before it).
#[cfg(not(loom))]
std::thread_local! {
    static THREAD_CACHES: ThreadCaches = const { ThreadCaches::new() };
    static EXIT_HOOK: ExitHook = const { ExitHook };
}

#[cfg(not(loom))]
struct ExitHook;

#[cfg(not(loom))]
impl Drop for ExitHook {
    fn drop(&mut self) {
        // THREAD_CACHES has no destructor, so it is still accessible here.
        let _ = THREAD_CACHES.try_with(ThreadCaches::release_all);
    }
}

/// Registers the destructor that releases this thread's sets at exit;
/// `false` once the thread's destructors have started without it (then
/// nothing may attach).
#[cfg(not(loom))]
pub(crate) fn register_exit_hook() -> bool {
    EXIT_HOOK.try_with(|_| ()).is_ok()
}

/// The thread is exiting: releases its sets now, and nothing attaches
/// afterwards. The exit hook does the same; whichever runs first does it.
#[cfg_attr(loom, allow(dead_code))]
pub(crate) fn thread_exit() {
    let _ = with_caches(ThreadCaches::release_all);
}

// Loom's thread-locals cannot be const; one with a destructor does both jobs.
#[cfg(loom)]
struct LoomCaches(ThreadCaches);

#[cfg(loom)]
impl Drop for LoomCaches {
    fn drop(&mut self) {
        // As the real hook, which runs once: a thread whose sets were
        // released already (`loom_hooks::thread_exit`) has no hook left to
        // release a set attached after that.
        if !self.0.gone.get() {
            self.0.release_all();
        }
    }
}

#[cfg(loom)]
loom::thread_local! {
    static LOOM_CACHES: LoomCaches = LoomCaches(ThreadCaches {
        entries: std::array::from_fn(|_| std::cell::Cell::new(EMPTY)),
        gone: std::cell::Cell::new(false),
    });
}

#[cfg(loom)]
pub(crate) fn register_exit_hook() -> bool {
    LOOM_CACHES.try_with(|_| ()).is_ok()
}

#[inline(always)]
fn with_caches<R>(f: impl FnOnce(&ThreadCaches) -> R) -> Option<R> {
    #[cfg(not(loom))]
    {
        THREAD_CACHES.try_with(f).ok()
    }
    #[cfg(loom)]
    {
        LOOM_CACHES.try_with(|c| f(&c.0)).ok()
    }
}

/// Runs `f` with this thread's set for `arena`; `None` if the thread has no
/// cache for it (its thread-locals are being torn down, or it uses more than
/// [`THREAD_ARENAS`] arenas).
pub(crate) fn with_thread_set<R>(arena: &ArenaInner, f: impl FnOnce(&PcpSet) -> R) -> Option<R> {
    with_caches(|caches| caches.get(arena).map(f)).flatten()
}

/// The allocation fast path: pops a block of `order` from this thread's
/// list for its preferred zone. `None` sends the caller to the slow path
/// (no set yet, a drain in progress, or an empty list).
#[inline(always)]
pub(crate) fn alloc_fast(arena: &ArenaInner, order: u32) -> Option<Pfn> {
    with_caches(|caches| {
        let entry = caches.entries[0].get();
        if entry.arena_id != arena.id {
            return None;
        }
        // SAFETY: entry 0 holds this arena's set (ids are never reused and
        // never 0), kept alive by the thread's reference; `hot` points into it.
        let (set, zp) = unsafe { (entry.set.as_ref(), entry.hot.as_ref()) };
        let o = order as usize & (PCP_ORDERS - 1);
        if !set.enter() {
            return None;
        }
        let n = zp.count[o].load(Ordering::Relaxed);
        if n == 0 {
            set.leave();
            return None;
        }
        // SAFETY: inside a busy section that did not see `locked`.
        let pfn = unsafe { zp.lists(|l| l.slots[l.slot(o, l.bottom[o].wrapping_add(n - 1))]) };
        zp.count[o].store(n - 1, Ordering::Relaxed);
        // SAFETY: cached blocks are pages of the region.
        unsafe { arena.mem_map.page_unchecked(pfn) }.set_info_word(entry.allocated_word | order << 8);
        ZonePcp::bump(&zp.allocs[o]);
        set.leave();
        Some(pfn)
    })
    .flatten()
}

/// The free fast path: pushes a block whose head word `word` the caller
/// validated as allocated with `order` onto this thread's list for the
/// block's zone. `false` sends the caller to the slow path (a full list, no
/// set, a drain in progress).
#[inline(always)]
pub(crate) fn free_fast(arena: &ArenaInner, pfn: Pfn, order: u32, word: u32) -> bool {
    with_caches(|caches| {
        let entry = caches.entries[0].get();
        let zone = PageInfo::zone_of_word(word);
        // An empty entry has nr_zones == 0.
        if entry.arena_id != arena.id || zone >= entry.nr_zones {
            return false;
        }
        // SAFETY: as in `alloc_fast`; `zones` points at the set's
        // `nr_zones` lists and `zone` is below that.
        let (set, zp) = unsafe { (entry.set.as_ref(), entry.zones.add(zone).as_ref()) };
        let o = order as usize & (PCP_ORDERS - 1);
        if !set.enter() {
            return false;
        }
        let n = zp.count[o].load(Ordering::Relaxed);
        // SAFETY: inside a busy section that did not see `locked`.
        let pushed = unsafe {
            zp.lists(|l| {
                if n >= l.high[o] {
                    return false;
                }
                l.slots[l.slot(o, l.bottom[o].wrapping_add(n))] = pfn;
                true
            })
        };
        if pushed {
            zp.count[o].store(n + 1, Ordering::Relaxed);
            // SAFETY: the caller validated `pfn` as a page of the region.
            unsafe { arena.mem_map.page_unchecked(pfn) }.set_info_word(word ^ ALLOCATED_TO_CACHED);
            ZonePcp::bump(&zp.frees[o]);
        }
        set.leave();
        pushed
    })
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_batch_and_high() {
        // 512 MiB zone: 131072 >> 10 = 128, /4 = 32, 32 + 16 = 48 -> 32 - 1.
        assert_eq!(zone_batchsize(131_072), 31);
        // Huge zones cap at 1 MiB: 256 / 4 = 64, 96 -> 64 - 1.
        assert_eq!(zone_batchsize(1 << 30), 63);
        // Tiny zones: at least 1.
        assert_eq!(zone_batchsize(1024), 1);
        assert_eq!(zone_highsize(643, 31, 1), 643);
        assert_eq!(zone_highsize(643, 31, 4), 160); // 643 / 4
        assert_eq!(zone_highsize(643, 31, 8), 31 * 4); // 80 is below 4 * batch
        assert_eq!(zone_highsize(100_000, 63, 1), PCP_HIGH_LIMIT);
        assert_eq!(batch_blocks(31, 0), 31);
        assert_eq!(batch_blocks(31, 2), 7);
        assert_eq!(batch_blocks(31, 5), 2);
    }

    #[test]
    fn rings_fit_the_largest_high_plus_one() {
        for (o, capacity) in CAPACITY.iter().enumerate() {
            let high = (PCP_HIGH_LIMIT >> o).max(batch_blocks(PCP_HIGH_LIMIT, o));
            assert!(high < *capacity, "order {o}");
            assert!(capacity.is_power_of_two());
        }
        assert_eq!(OFFSET[3] + CAPACITY[3], 1024 + 512 + 256 + 128);
        assert_eq!(SLOTS, 2048);
    }
}
