//! The arena: the type users hold, how it is built, and its public API.
//! The allocation and free paths are in `page_alloc/mod.rs`, the caches in
//! `pcp/`, reclaim in `reclaim/vmscan.rs`. Its satellites, built on it, are the
//! modules of this folder: `check` (`Arena::check`), `stats` and
//! `pagetypeinfo` (what it reports), `realloc` and `collections` (blocks
//! that grow, `Allocator` for `&Arena`), `movable_handle` (`MovableHandle`).

pub(crate) mod check;
pub(crate) mod collections;
pub(crate) mod fork;
pub(crate) mod movable_handle;
pub(crate) mod numa;
pub(crate) mod pagetypeinfo;
pub(crate) mod realloc;
pub(crate) mod stats;

use std::ptr::NonNull;
use std::sync::Arc;

use crate::buddy::{BuddyOrders, Grouping};
use crate::builder::{ArenaBuilder, ZoneLayout};
use crate::compact_state::CompactCounters;
use crate::error::{AllocError, BuildError, CapacityError, FreeError};
use crate::fault::FaultState;
use crate::flags::AllocFlags;
use crate::kswapd::Kswapds;
use crate::node::{Node, NodeParts};
use crate::order::Order;
use crate::page::{MemMap, PageInfo, PageMeta, SIDE_SLOT_BYTES, SideTable};
use crate::page_alloc::{AllocCounters, PageAlloc};
use crate::pcp::{PcpRegistry, alloc_fast, free_fast};
use crate::pcp_config::{PCP_HUGE_ORDER, PCP_MAX_ORDER, PcpConfig};
use crate::pfn::Pfn;
use crate::reclaim::compaction::{CompactPriority, CompactReport};
use crate::reclaim::movable::MovableRegistry;
use crate::reclaim::purge::{PurgeReport, PurgeScope};
use crate::reclaim::shrinker::{Shrinker, ShrinkerHandle, ShrinkerRegistry};
use crate::reclaim::vmscan::Reclaim;
use crate::region::{HUGE_PAGE_ORDER, HugePages, Region};
use crate::support::boot::SysBox;
use crate::support::ratelimit::RateLimit;
use crate::support::sync::{AtomicU64, AtomicUsize, Ordering, init_barriers};
use crate::watermark::WatermarkConfig;
use crate::zone::Zone;
use crate::zone_idx::ZoneIdx;

/// Flags that take an allocation off the fast path: a zeroed block may
/// need a memset, and a request that cannot wait may grow the high-atomic
/// reserve.
const NOT_FAST: u32 = AllocFlags::ZERO.bits() | AllocFlags::ATOMIC.bits() | AllocFlags::NOWAIT.bits();

/// A zoned buddy page allocator over one reserved region.
///
/// `Arena` is `Send + Sync`: share it by reference (or in an `Arc`) between
/// threads. Dropping it unmaps the region; blocks still allocated from it
/// must not be used afterwards.
///
/// ```
/// use zonealloc::{AllocFlags, Arena};
/// let arena = Arena::builder().region_size(64 << 20).zones(2).build()?;
/// let page = arena.alloc_pages(0, AllocFlags::empty())?;
/// // SAFETY: a 4 KiB page of ours.
/// unsafe { page.as_ptr().write(42) };
/// // SAFETY: `page` came from this arena with order 0 and is not used again.
/// unsafe { arena.free_pages(page, 0)? };
/// arena.check()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Arena {
    inner: SysBox<ArenaInner>,
}

/// Everything an arena owns, at a stable address: the page allocator
/// (which holds the node, its caches and reclaim) and what only the
/// public API uses. `repr(C)`: the node's fast-path fields stay first.
///
/// Private to `arena/`: the arena and its satellites reach the layers
/// below through it; everything above goes through `Arena`'s methods.
#[repr(C)]
struct ArenaInner {
    pages: PageAlloc,
    /// The id of the `Slabs` that serves this arena, 0 until one does.
    slabs_id: AtomicU64,
    watermark_config: WatermarkConfig,
    /// Pages the arena may hand out (`set_capacity`).
    capacity_pages: AtomicUsize,
}

impl ArenaInner {
    /// The node: region, metadata, zones, kswapd.
    #[inline(always)]
    fn node(&self) -> &Node {
        &self.pages.reclaim.node
    }

    /// The node with its caches and shrinkers.
    #[inline(always)]
    fn reclaim(&self) -> &Reclaim {
        &self.pages.reclaim
    }
}

/// What the layers above the arena (the slab layer, the global
/// allocator) need of it beyond the public API.
impl Arena {
    /// The arena's id: never 0, never reused.
    #[inline]
    pub(crate) fn id(&self) -> u64 {
        self.inner.node().id
    }

    /// Binds the `Slabs` whose id is `slabs` (never 0) to this arena
    /// unless another one serves it already; whether `slabs` serves it.
    pub(crate) fn bind_slabs(&self, slabs: u64) -> bool {
        let relaxed = Ordering::Relaxed;
        self.inner.slabs_id.compare_exchange(0, slabs, relaxed, relaxed).map_or_else(|other| other == slabs, |_| true)
    }

    /// The mapping the arena serves from.
    #[inline]
    pub(crate) fn mapping(&self) -> &Region {
        &self.inner.node().region
    }

    /// The side table: a slot per page, where the slab layer keeps its
    /// headers.
    #[inline]
    pub(crate) fn side_table(&self) -> &SideTable {
        &self.inner.node().side_table
    }

    /// Starts kswapd, once the arena can allocate its thread (the global
    /// arena's first allocations cannot).
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn start_kswapd(&self) -> std::io::Result<()> {
        self.inner.reclaim().start_kswapd()
    }
}

/// The order of the buddy block that serves `layout`: its size and
/// alignment rounded up to a power of two of at least a page (`u32::MAX`
/// when that overflows). What `ZoneAlloc` and the `Allocator` impl share.
#[inline]
pub(crate) fn layout_order(layout: std::alloc::Layout) -> u32 {
    let bytes = layout.size().max(layout.align()).max(crate::PAGE_SIZE);
    match bytes.checked_next_power_of_two() {
        Some(bytes) => (bytes / crate::PAGE_SIZE).trailing_zeros(),
        None => u32::MAX,
    }
}

impl ArenaBuilder {
    /// Checks the configuration and builds the arena. Costs O(zones), not
    /// O(region size): nothing is committed and no free list is populated.
    pub fn build(self) -> Result<Arena, BuildError> {
        let layout = self.layout()?;
        Arena::from_layout(self, layout)
    }
}

impl Arena {
    /// A builder with every setting at its default.
    pub fn builder() -> ArenaBuilder {
        ArenaBuilder::default()
    }

    fn from_layout(config: ArenaBuilder, layout: ZoneLayout) -> Result<Self, BuildError> {
        let max_order = layout.max_order;
        let block_size = max_order.bytes();
        let region = Region::reserve(layout.region_size, block_size, config.region)?;
        let mem_map = MemMap::new(layout.pages).map_err(|source| BuildError::Map {
            region_size: layout.pages * std::mem::size_of::<PageMeta>(),
            source,
        })?;
        let side_table = SideTable::new(layout.pages)
            .map_err(|source| BuildError::Map { region_size: layout.pages * SIDE_SLOT_BYTES, source })?;
        // Purging less than a huge page would split it.
        let purge_min_order = if config.region.huge_pages == HugePages::None {
            Order::ZERO
        } else {
            Order::new(HUGE_PAGE_ORDER).unwrap_or(max_order)
        };
        let mut start = Pfn::default();
        // Defrag mode is a rule about fallbacks between types: none without grouping.
        let defrag_mode = config.group_by_mobility && config.defrag_mode;
        let orders = BuddyOrders { max_order, purge_min_order, pageblock_order: layout.pageblock_order };
        let zones = SysBox::<[Zone]>::try_from_fn(layout.zones, |i| {
            let end = start + layout.zone_blocks[i] * max_order.pages();
            let grouping = (orders, Grouping { by_mobility: config.group_by_mobility, defrag_mode });
            // The builder allows at most MAX_ZONES zones.
            let index = ZoneIdx::new(i).ok_or(BuildError::OutOfMetadataMemory)?;
            let zone = Zone::new(index, (start, end), grouping, layout.marks[i], config.pcp);
            start = end;
            zone.ok_or(BuildError::OutOfMetadataMemory)
        })?
        .ok_or(BuildError::OutOfMetadataMemory)?;
        // Caches need the asymmetric barrier; without it the arena runs
        // uncached. With fault injection every allocation must pass the
        // check, so there are no caches either.
        let asymmetric_barriers = init_barriers();
        let pcp_enabled = config.pcp != PcpConfig::Disabled && config.fault.is_none() && asymmetric_barriers;
        let numa =
            numa::layout((config.topology.as_ref(), config.node_reclaim_mode), layout.zones_per_node, &region, &zones)?;
        let kswapds = Kswapds::new(config.reclaim, numa.nodes()).ok_or(BuildError::OutOfMetadataMemory)?;
        let node = Node::new(NodeParts {
            region,
            mem_map,
            side_table,
            zones,
            max_order,
            pcp_enabled,
            group_by_mobility: config.group_by_mobility,
            defrag_mode,
            asymmetric_barriers,
            huge_pages: config.region.huge_pages,
            numa,
            kswapds,
        });
        let reclaim = Reclaim {
            node,
            pcp: PcpRegistry::new(),
            shrinkers: ShrinkerRegistry::new().ok_or(BuildError::OutOfMetadataMemory)?,
            movable: MovableRegistry::new(),
            compaction: CompactCounters::default(),
        };
        let inner = ArenaInner {
            pages: PageAlloc {
                reclaim,
                oom_handler: config.oom_handler.clone(),
                fault: config.fault.map(FaultState::new),
                counters: AllocCounters::default(),
                warn_limit: RateLimit::new(),
            },
            slabs_id: AtomicU64::new(0),
            watermark_config: config.watermarks,
            capacity_pages: AtomicUsize::new(layout.pages),
        };
        let inner = SysBox::try_new(inner).ok_or(BuildError::OutOfMetadataMemory)?;
        // The arena has its final address: kswapd may point at it.
        if !config.reclaim.deferred_start {
            inner.reclaim().start_kswapd().map_err(|source| BuildError::SpawnReclaim { source })?;
        }
        Ok(Self { inner })
    }

    /// Allocates a block of `2^order` pages, aligned to its size.
    ///
    /// Orders up to [`PCP_MAX_ORDER`] come from this thread's cache when it
    /// has a block; the rest, and refills, go through the zones.
    ///
    /// Errors: [`AllocError::InvalidOrder`] above `max_order`;
    /// [`AllocError::OutOfMemory`] when no zone can serve it within the
    /// watermarks `flags` allow.
    #[inline(always)]
    pub fn alloc_pages(&self, order: u32, flags: AllocFlags) -> Result<NonNull<u8>, AllocError> {
        let inner = &*self.inner;
        let bits = flags.bits();
        if order <= PCP_MAX_ORDER
            && bits & NOT_FAST == 0
            && let Some(pfn) = alloc_fast(inner.node(), order, bits)
        {
            // SAFETY: a cached block is a page of the region.
            return Ok(unsafe { inner.node().region.page_addr(pfn) });
        }
        inner.pages.alloc_pages(order, flags)
    }

    /// Gives back a block from [`alloc_pages`](Self::alloc_pages).
    ///
    /// A pointer outside the region, not at the start of an allocated block,
    /// freed with the wrong order, or already free is refused with an error
    /// and the arena is left unchanged.
    ///
    /// # Safety
    /// If `ptr` is a block of this arena, the caller must not use it after
    /// this call. (Bad pointers are detected from the metadata and refused;
    /// they are never written.)
    #[inline(always)]
    pub unsafe fn free_pages(&self, ptr: NonNull<u8>, order: u32) -> Result<(), FreeError> {
        let inner = &*self.inner;
        let addr = ptr.as_ptr() as usize;
        if order <= PCP_MAX_ORDER
            && let Some(pfn) = inner.node().region.pfn_of(addr)
        {
            // SAFETY: `pfn_of` returned a page of the region, and the
            // metadata has an entry for every page of the region.
            let word = unsafe { inner.node().mem_map.page_unchecked(pfn) }.info_word();
            if word & 0xffff == PageInfo::allocated_key(order) && free_fast(inner.node(), pfn, order, word) {
                if order as usize == PCP_HUGE_ORDER {
                    inner.node().huge_block_cached(inner.node().nid_at(pfn));
                }
                return Ok(());
            }
        }
        inner.pages.free_pages(addr, order)
    }

    /// [`alloc_pages`](Self::alloc_pages) for a block that is expected to
    /// grow with [`try_grow_pages`](Self::try_grow_pages): it is carved from
    /// the start of a larger free block when the preferred zone has one
    /// (and passes its low watermark), so the blocks above it are free and
    /// the growth succeeds while they stay free. A block of exactly `order`
    /// from the free lists could never grow: its buddy is not free, or the
    /// two would have merged. Otherwise the same as `alloc_pages` (without
    /// the per-thread caches); free the block with the order it has then.
    ///
    /// ```
    /// use zonealloc::{AllocFlags, Arena};
    /// let arena = Arena::builder().region_size(64 << 20).zones(1).build()?;
    /// let a = arena.alloc_pages(4, AllocFlags::empty())?; // 64 KiB
    /// let b = arena.alloc_pages(4, AllocFlags::empty())?; // the exact fit beside it
    /// assert!(!arena.try_grow_pages(b, 4, 5)); // its buddy is `a`
    /// let c = arena.alloc_pages_growable(4, AllocFlags::empty())?; // the start of a free 4 MiB block
    /// assert!(arena.try_grow_pages(c, 4, 10));
    /// // SAFETY: ours, at these orders, not used again.
    /// unsafe {
    ///     arena.free_pages(a, 4)?;
    ///     arena.free_pages(b, 4)?;
    ///     arena.free_pages(c, 10)?;
    /// }
    /// arena.check()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn alloc_pages_growable(&self, order: u32, flags: AllocFlags) -> Result<NonNull<u8>, AllocError> {
        self.inner.pages.alloc_pages_growable(order, flags)
    }

    /// Allocates `pages` pages (any number, up to a max-order block),
    /// aligned to the smallest power of two of pages that holds them: a
    /// block of that size trimmed to `pages`, the pages past them freed at
    /// once (the kernel's `alloc_pages_exact`). A 600 KiB buffer costs
    /// 600 KiB, not the 1 MiB of its block. Free it with
    /// [`free_pages_exact`](Self::free_pages_exact) and the same count.
    ///
    /// ```
    /// use zonealloc::{AllocFlags, Arena};
    /// let arena = Arena::builder().region_size(64 << 20).zones(1).build()?;
    /// let free = arena.stats().zones[0].free;
    /// let buffer = arena.alloc_pages_exact(150, AllocFlags::empty())?; // 600 KiB, 1 MiB-aligned
    /// assert_eq!(arena.stats().zones[0].free, free - 150);
    /// assert!(arena.resize_pages_exact(buffer, 150, 200)); // the pages after it are free
    /// // SAFETY: ours, now 200 pages, not used again.
    /// unsafe { arena.free_pages_exact(buffer, 200)? };
    /// arena.check()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn alloc_pages_exact(&self, pages: usize, flags: AllocFlags) -> Result<NonNull<u8>, AllocError> {
        self.inner.pages.alloc_exact(pages, Order::ZERO, flags, false)
    }

    /// Gives back `pages` pages from [`alloc_pages_exact`](Self::alloc_pages_exact).
    /// Every part of the allocation is validated before any is freed; a bad
    /// pointer or count is refused as [`free_pages`](Self::free_pages)
    /// refuses one, and nothing changes.
    ///
    /// # Safety
    /// As for `free_pages`: the caller does not use the pages afterwards.
    pub unsafe fn free_pages_exact(&self, ptr: NonNull<u8>, pages: usize) -> Result<(), FreeError> {
        self.inner.pages.free_exact(ptr.as_ptr() as usize, pages)
    }

    /// Resizes an allocation of `pages` pages from
    /// [`alloc_pages_exact`](Self::alloc_pages_exact) to `new_pages` where it
    /// lies: shrinking always succeeds; growing succeeds when the pages
    /// after it are free, the allocation is aligned to the largest power of
    /// two in `new_pages` and the zone stays above its low watermark.
    /// Returns whether it did; nothing changes otherwise (nor for a pointer
    /// that is not such an allocation).
    pub fn resize_pages_exact(&self, ptr: NonNull<u8>, pages: usize, new_pages: usize) -> bool {
        self.inner.pages.resize_exact(ptr.as_ptr() as usize, pages, new_pages)
    }

    /// Grows the allocated block at `ptr` from `order` to `new_order` where
    /// it lies, when it is aligned to the new size and the blocks above it
    /// that make up the difference are free in the buddy lists (the
    /// inverse of the merges a free does), and the zone stays above its
    /// low watermark. Returns whether it grew; when it did, free the block
    /// with `new_order`. Nothing changes otherwise, and a pointer that is
    /// not an allocated block of `order` is never grown. `realloc` of the
    /// global allocator uses it, so a `Vec` doubling inside the arena
    /// usually keeps its address and copies nothing.
    ///
    /// ```
    /// use zonealloc::{AllocFlags, Arena};
    /// let arena = Arena::builder().region_size(64 << 20).zones(1).build()?;
    /// let block = arena.alloc_pages(4, AllocFlags::empty())?; // 64 KiB, from a fresh 4 MiB block
    /// assert!(arena.try_grow_pages(block, 4, 6)); // its buddies are free: 256 KiB in place
    /// // SAFETY: ours, now of order 6, not used again.
    /// unsafe { arena.free_pages(block, 6)? };
    /// arena.check()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_grow_pages(&self, ptr: NonNull<u8>, order: u32, new_order: u32) -> bool {
        self.inner.pages.grow_pages(ptr.as_ptr() as usize, order, new_order)
    }

    /// Returns every block held in any thread's cache to the buddy lists,
    /// including the caches of idle or blocked threads (the kernel's
    /// `drain_all_pages`). Owners are not interrupted (the handshake: `pcp/set.rs`).
    /// Returns the pages moved.
    ///
    /// ```
    /// use zonealloc::{AllocFlags, Arena};
    /// let arena = Arena::builder().region_size(64 << 20).zones(1).build()?;
    /// let page = arena.alloc_pages(0, AllocFlags::empty())?; // refills this thread's cache
    /// let cached = arena.stats().zones[0].cached;
    /// assert!(cached > 0);
    /// assert_eq!(arena.drain_pcp(), cached);
    /// assert_eq!(arena.stats().zones[0].cached, 0);
    /// # // SAFETY: ours, order 0, not used again.
    /// # unsafe { arena.free_pages(page, 0)? };
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn drain_pcp(&self) -> usize {
        self.inner.reclaim().drain_all_pages()
    }

    /// Compacts every zone to the end: moves every owned block it can
    /// towards the top of the used memory, so the free memory below forms
    /// whole high-order blocks (`/proc/sys/vm/compact_memory`). Blocks are
    /// moved by their owners ([`register_movable`](Self::register_movable));
    /// a block whose owner refuses stays. Safe to run while other threads
    /// allocate and free, owned blocks included.
    pub fn compact(&self) -> CompactReport {
        let reclaim = self.inner.reclaim();
        reclaim.drain_all_pages();
        let mut total = CompactReport::default();
        for zone in reclaim.node.zones.iter() {
            total.add(&reclaim.compact_zone(zone, None, CompactPriority::SyncFull));
        }
        total
    }

    /// Registers a reclaim callback. The reclaim thread, and allocating
    /// threads that run out of memory, call it when zones fall below their
    /// watermarks; dropping the handle unregisters it. See [`Shrinker`].
    pub fn register_shrinker(&self, shrinker: Arc<dyn Shrinker>) -> ShrinkerHandle {
        self.register(shrinker, false)
    }

    /// Registers a reclaim callback for a cache whose pages are allocated
    /// [`AllocFlags::RECLAIMABLE`] (the kernel's `SLAB_RECLAIM_ACCOUNT`
    /// caches: dentries, inodes). Besides everything
    /// [`register_shrinker`](Self::register_shrinker) does, it is asked
    /// first, before any other shrinker, when a high-order request finds
    /// its zone short and reclaimable pageblocks hold pages in use:
    /// compaction cannot move those pages, only their cache can free them.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use std::ptr::NonNull;
    /// use zonealloc::{AllocFlags, Arena, ShrinkResult, Shrinker};
    ///
    /// struct Dentries(Arc<Arena>, Mutex<Vec<usize>>);
    /// impl Shrinker for Dentries {
    ///     fn count(&self) -> usize {
    ///         self.1.lock().unwrap().len()
    ///     }
    ///     fn scan(&self, n: usize) -> ShrinkResult {
    ///         let Ok(mut pages) = self.1.try_lock() else { return ShrinkResult::Stop };
    ///         let n = n.min(pages.len());
    ///         for addr in pages.drain(..n) {
    ///             // SAFETY: the cache allocated this order-0 block and drops it here.
    ///             unsafe { self.0.free_pages(NonNull::new(addr as *mut u8).unwrap(), 0).unwrap() };
    ///         }
    ///         ShrinkResult::Freed(n)
    ///     }
    /// }
    ///
    /// let arena = Arc::new(Arena::builder().region_size(64 << 20).build()?);
    /// let cache = Arc::new(Dentries(arena.clone(), Mutex::new(Vec::new())));
    /// let _handle = arena.register_reclaimable_shrinker(cache.clone());
    /// let page = arena.alloc_pages(0, AllocFlags::RECLAIMABLE)?;
    /// cache.1.lock().unwrap().push(page.as_ptr() as usize);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn register_reclaimable_shrinker(&self, shrinker: Arc<dyn Shrinker>) -> ShrinkerHandle {
        self.register(shrinker, true)
    }

    fn register(&self, shrinker: Arc<dyn Shrinker>, reclaimable: bool) -> ShrinkerHandle {
        let handle = self.inner.reclaim().shrinkers.register(shrinker, reclaimable);
        // A new source of reclaimable memory: reclaim may succeed again.
        self.inner.node().memory_freed();
        handle
    }

    /// Hands every free page that still costs RSS back to the OS (after
    /// returning every per-thread cache to the lists). Returns what was
    /// purged. The reclaim thread's timer does
    /// [`purge_stale`](Self::purge_stale) instead.
    ///
    /// ```
    /// use zonealloc::{AllocFlags, Arena};
    /// let arena = Arena::builder().region_size(64 << 20).build()?;
    /// let block = arena.alloc_pages(8, AllocFlags::empty())?; // 1 MiB
    /// // SAFETY: the block is ours and 1 MiB long.
    /// unsafe { block.as_ptr().write_bytes(1, 1 << 20) }; // now resident
    /// // SAFETY: ours, order 8, not used again.
    /// unsafe { arena.free_pages(block, 8)? };
    /// let report = arena.purge();
    /// assert!(report.bytes >= 1 << 20);
    /// // Purged with MADV_DONTNEED: a ZERO allocation needs no memset.
    /// let again = arena.alloc_pages(8, AllocFlags::ZERO)?;
    /// // SAFETY: ours; a purged page reads as zero.
    /// assert_eq!(unsafe { again.as_ptr().read() }, 0);
    /// # // SAFETY: ours, order 8, not used again.
    /// # unsafe { arena.free_pages(again, 8)? };
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn purge(&self) -> PurgeReport {
        self.inner.reclaim().purge(PurgeScope::All, None)
    }

    /// What each node's reclaim thread does, for its node's zones, every
    /// `purge_delay` while free memory there costs RSS: returns the per-thread caches to the lists, then hands
    /// back the free pages that stayed free since the last purge, and
    /// whatever free memory exceeds a sixteenth of the memory in use plus
    /// 2 MiB per zone; memory a program freed and took again in between
    /// stays resident, so a program that frees and reallocates large
    /// buffers does not fault them in again after every delay. Call it
    /// periodically when background reclaim is off.
    pub fn purge_stale(&self) -> PurgeReport {
        self.inner.reclaim().purge(PurgeScope::Stale, None)
    }

    /// Sets how many bytes the arena may hand out (at most the region's
    /// size), recomputing every zone's watermarks for its share. Lowering it
    /// returns the per-thread caches and wakes reclaim, so shrinkers bring
    /// usage under the new budget; allocations beyond it fail (or reclaim)
    /// as if the arena were that small. Raising it lets waiting allocations
    /// proceed.
    ///
    /// ```
    /// use zonealloc::{AllocFlags, Arena};
    /// let arena = Arena::builder().region_size(64 << 20).build()?;
    /// arena.set_capacity(16 << 20)?;
    /// assert_eq!(arena.capacity(), 16 << 20);
    /// let managed: usize = arena.stats().zones.iter().map(|z| z.managed).sum();
    /// assert_eq!(managed, 4096);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_capacity(&self, bytes: usize) -> Result<(), CapacityError> {
        let inner = &*self.inner;
        let total: usize = inner.node().zones.iter().map(Zone::spanned).sum();
        let pages = bytes / crate::PAGE_SIZE;
        if pages > total {
            return Err(CapacityError::TooLarge { requested: bytes, region: total * crate::PAGE_SIZE });
        }
        // Each zone's share, in proportion to its size; the remainder goes
        // to the first zones, a page each.
        let mut shares = [0usize; crate::zone_idx::MAX_ZONES];
        let mut given = 0;
        for (share, zone) in shares.iter_mut().zip(inner.node().zones.iter()) {
            *share = (pages as u128 * zone.spanned() as u128 / total as u128) as usize;
            given += *share;
        }
        for (share, zone) in shares.iter_mut().zip(inner.node().zones.iter()) {
            if given < pages && *share < zone.spanned() {
                *share += 1;
                given += 1;
            }
        }
        let mut marks = [crate::watermark::Watermarks::default(); crate::zone_idx::MAX_ZONES];
        for i in 0..inner.node().zones.len() {
            let m = inner.watermark_config.for_zone(shares[i], pages);
            if m.high > shares[i] && shares[i] > 0 {
                return Err(CapacityError::Watermarks { zone: i, high: m.high, managed: shares[i] });
            }
            marks[i] = if shares[i] == 0 { crate::watermark::Watermarks::default() } else { m };
        }
        let lowered = pages < inner.capacity_pages.swap(pages, Ordering::Relaxed);
        for (i, zone) in inner.node().zones.iter().enumerate() {
            zone.set_capacity(zone.spanned() - shares[i], marks[i]);
        }
        if lowered {
            inner.reclaim().drain_all_pages();
            inner.node().wakeup_all_kswapds();
        } else {
            inner.node().pages_returned_anywhere();
        }
        Ok(())
    }

    /// The bytes the arena may hand out (the region's size unless lowered
    /// with [`set_capacity`](Self::set_capacity)).
    pub fn capacity(&self) -> usize {
        self.inner.capacity_pages.load(Ordering::Relaxed) * crate::PAGE_SIZE
    }

    /// The largest order this arena serves.
    pub fn max_order(&self) -> u32 {
        self.inner.node().max_order.get()
    }

    /// Number of zones.
    pub fn nr_zones(&self) -> usize {
        self.inner.node().zones.len()
    }

    /// The region's first byte and length.
    pub fn region(&self) -> (NonNull<u8>, usize) {
        (self.inner.node().region.base(), self.inner.node().region.len())
    }

    /// The head entry of the page at `ptr` (state and order), if `ptr` is
    /// a page of the region.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn head_at(&self, ptr: NonNull<u8>) -> Option<PageInfo> {
        let node = self.inner.node();
        Some(node.mem_map.page(node.region.pfn_of(ptr.as_ptr() as usize)?).info())
    }

    /// Whether `ptr` points into this arena's region.
    pub fn contains(&self, ptr: *const u8) -> bool {
        self.inner.node().region.contains(ptr as usize)
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // kswapd first: it reads everything below.
        self.inner.reclaim().stop_kswapds();
        // Threads may still hold caches of this arena: mark them so their
        // exit leaves the (unmapped) arena alone. Their blocks vanish with
        // the region, as every allocated block does.
        self.inner.reclaim().pcp.shutdown();
    }
}
