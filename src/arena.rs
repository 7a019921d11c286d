//! The arena: the public page API and the allocation paths.
//!
//! `alloc_pages` follows `__alloc_pages`: a fast path that walks the
//! zonelist at the low watermark (`get_page_from_freelist`), then a slow path
//! (`__alloc_pages_slowpath`). `free_pages` validates the block from the
//! metadata before giving it to its zone's buddy lists.

use std::cell::Cell;
use std::fmt::Write as _;
use std::ptr::NonNull;

use crate::boot::SysBox;
use crate::buddy::Block;
use crate::builder::{ArenaBuilder, Layout};
use crate::error::{AllocError, BuildError, FreeError};
use crate::flags::AllocFlags;
use crate::page::{MemMap, PageInfo, PageState, Pfn, flag};
use crate::pcp::{PCP_MAX_ORDER, PcpConfig, PcpRegistry, alloc_fast, free_fast, with_thread_set};
use crate::region::Region;
use crate::report::{RateLimit, StackWriter};
use crate::sync::{AtomicU64, Ordering, init_barriers};
use crate::watermark::{AllocMode, Mark};
use crate::zone::Zone;

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
/// unsafe { page.as_ptr().write(42) };
/// // SAFETY: `page` came from this arena with order 0 and is not used again.
/// unsafe { arena.free_pages(page, 0)? };
/// arena.check()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Arena {
    pub(crate) inner: SysBox<ArenaInner>,
}

/// Everything an arena owns, at a stable address. `repr(C)` keeps what the
/// fast paths read (the id, the region's base and length, the metadata's
/// pointer and length) together at the front.
#[repr(C)]
pub(crate) struct ArenaInner {
    /// Unique for the life of the process; names the arena in thread caches.
    pub id: u64,
    pub region: Region,
    pub mem_map: MemMap,
    pub zones: SysBox<[Zone]>,
    pub max_order: u32,
    zone_of_seq: FastMod,
    /// Whether orders 0..=3 go through per-thread caches.
    pcp_enabled: bool,
    pub pcp: PcpRegistry,
    pub counters: ArenaCounters,
    warn_limit: RateLimit,
}

/// Arena-wide event counters.
#[derive(Default)]
pub(crate) struct ArenaCounters {
    /// Allocations that failed with `OutOfMemory`.
    pub alloc_failures: AtomicU64,
    /// Frees refused as invalid.
    pub invalid_frees: AtomicU64,
}

impl Arena {
    /// A builder with every setting at its default.
    pub fn builder() -> ArenaBuilder {
        ArenaBuilder::default()
    }

    pub(crate) fn from_layout(config: ArenaBuilder, layout: Layout) -> Result<Self, BuildError> {
        let max_order = config.max_order;
        let block_size = crate::PAGE_SIZE << max_order;
        let region = Region::reserve(layout.region_size, block_size, config.region)?;
        let mem_map =
            MemMap::new(layout.pages).map_err(|source| BuildError::Map { region_size: layout.pages * 16, source })?;
        let mut start: Pfn = 0;
        let zones = SysBox::<[Zone]>::try_from_fn(layout.zones, |i| {
            let end = start + ((layout.zone_blocks[i] as Pfn) << max_order);
            let zone = Zone::new(i as u8, start, end, max_order, layout.marks[i], config.pcp);
            start = end;
            Ok::<_, BuildError>(zone)
        })?
        .ok_or(BuildError::OutOfMetadataMemory)?;
        // Caches need the asymmetric barrier; without it the arena runs uncached.
        let pcp_enabled = config.pcp != PcpConfig::Disabled && init_barriers();
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let inner = ArenaInner {
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            region,
            mem_map,
            zones,
            max_order,
            zone_of_seq: FastMod::new(layout.zones as u32),
            pcp_enabled,
            pcp: PcpRegistry::new(),
            counters: ArenaCounters::default(),
            warn_limit: RateLimit::new(),
        };
        let inner = SysBox::try_new(inner).ok_or(BuildError::OutOfMetadataMemory)?;
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
        if order <= PCP_MAX_ORDER
            && !flags.contains(AllocFlags::ZERO)
            && let Some(pfn) = alloc_fast(inner, order)
        {
            return Ok(inner.region.page_addr(pfn));
        }
        inner.alloc_pages_slow(order, flags)
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
            && let Some(pfn) = inner.region.pfn_of(addr)
        {
            // SAFETY: `pfn_of` returned a page of the region, and the
            // metadata has an entry for every page of the region.
            let word = unsafe { inner.mem_map.page_unchecked(pfn) }.info_word();
            if word & 0xffff == PageInfo::allocated_key(order) && free_fast(inner, pfn, order, word) {
                return Ok(());
            }
        }
        inner.free_pages_slow(addr, order)
    }

    /// Returns every block held in any thread's cache to the buddy lists,
    /// including the caches of idle or blocked threads (the kernel's
    /// `drain_all_pages`). Owners are not interrupted; see ARCHITECTURE.md.
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
    /// # unsafe { arena.free_pages(page, 0)? };
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn drain_pcp(&self) -> usize {
        self.inner.pcp.drain_all(&self.inner)
    }

    /// The largest order this arena serves.
    pub fn max_order(&self) -> u32 {
        self.inner.max_order
    }

    /// Number of zones.
    pub fn nr_zones(&self) -> usize {
        self.inner.zones.len()
    }

    /// The region's first byte and length.
    pub fn region(&self) -> (NonNull<u8>, usize) {
        (self.inner.region.base(), self.inner.region.len())
    }

    /// Whether `ptr` points into this arena's region.
    pub fn contains(&self, ptr: *const u8) -> bool {
        self.inner.region.contains(ptr as usize)
    }
}

impl ArenaInner {
    /// Everything `alloc_pages` does beyond popping a cached block.
    #[inline(never)]
    fn alloc_pages_slow(&self, order: u32, flags: AllocFlags) -> Result<NonNull<u8>, AllocError> {
        if order > self.max_order {
            return Err(AllocError::InvalidOrder { order, max_order: self.max_order });
        }
        if order <= PCP_MAX_ORDER
            && self.pcp_enabled
            && let Some(cached) = with_thread_set(self, |set| set.alloc(self, order, flags))
        {
            let block = match cached {
                Some(block) => block,
                None => self.alloc_slowpath(order, flags, self.preferred_zone())?,
            };
            return Ok(self.prep_new_page(block, flags));
        }
        let preferred = self.preferred_zone();
        let block = match self.get_page_from_freelist(order, AllocMode::new(Mark::Low, flags), preferred) {
            Some(block) => block,
            None => self.alloc_slowpath(order, flags, preferred)?,
        };
        Ok(self.prep_new_page(block, flags))
    }

    /// Everything `free_pages` does beyond pushing onto this thread's list.
    #[inline(never)]
    fn free_pages_slow(&self, addr: usize, order: u32) -> Result<(), FreeError> {
        let result = self.free_validated(addr, order);
        if result.is_err() {
            self.counters.invalid_frees.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// The zone this thread allocates from first. Threads are spread over the
    /// zones round-robin in the order they first allocate, so two threads on
    /// a two-zone arena take different locks.
    #[inline]
    fn preferred_zone(&self) -> usize {
        self.zone_of_seq.reduce(thread_seq())
    }

    /// `get_page_from_freelist`: the first zone of the zonelist (the
    /// preferred zone, then the others in order) that passes the watermark
    /// check and has a block.
    #[inline]
    pub(crate) fn get_page_from_freelist(&self, order: u32, mode: AllocMode, preferred: usize) -> Option<Block> {
        // The zonelist: the preferred zone, then the others in index order.
        let nr = self.zones.len();
        let mut index = preferred;
        loop {
            let zone = &self.zones[index];
            if zone.watermark_ok(order, mode) {
                if let Some(block) = zone.rmqueue(&self.mem_map, order) {
                    return Some(block);
                }
            } else {
                zone.watermark_failures.fetch_add(1, Ordering::Relaxed);
            }
            index = if index + 1 == nr { 0 } else { index + 1 };
            if index == preferred {
                return None;
            }
        }
    }

    /// `__alloc_pages_slowpath`, as far as this arena goes without reclaim:
    /// retry at the min watermark with the reserve discounts the flags allow,
    /// then fail.
    #[cold]
    fn alloc_slowpath(&self, order: u32, flags: AllocFlags, preferred: usize) -> Result<Block, AllocError> {
        if let Some(block) = self.get_page_from_freelist(order, AllocMode::new(Mark::Min, flags), preferred) {
            return Ok(block);
        }
        self.counters.alloc_failures.fetch_add(1, Ordering::Relaxed);
        if !flags.contains(AllocFlags::NOWARN) && self.warn_limit.allow() {
            self.warn_alloc(order, flags);
        }
        Err(AllocError::OutOfMemory { order })
    }

    /// The kernel's `warn_alloc`: one line to stderr, without allocating.
    #[cold]
    fn warn_alloc(&self, order: u32, flags: AllocFlags) {
        let mut w = StackWriter::new();
        let _ = write!(w, "zonealloc: page allocation failure: order:{order}, flags:{flags:?}, free pages:");
        for zone in self.zones.iter() {
            let _ = write!(w, " {}", zone.free_pages());
        }
        w.flush_line();
    }

    /// Finishes a block for the caller: zeroes it if asked and not known zero.
    #[inline]
    fn prep_new_page(&self, block: Block, flags: AllocFlags) -> NonNull<u8> {
        if flags.contains(AllocFlags::ZERO) && block.flags & flag::ZEROED == 0 {
            // SAFETY: the block was just taken off the free lists for this caller.
            unsafe { self.region.zero(block.pfn, 1 << block.order) };
        }
        self.region.page_addr(block.pfn)
    }

    /// Validates and frees the block at `addr`.
    fn free_validated(&self, addr: usize, order: u32) -> Result<(), FreeError> {
        if !self.region.contains(addr) {
            return Err(FreeError::OutOfRegion { addr });
        }
        if order > self.max_order {
            return Err(FreeError::InvalidOrder { order, max_order: self.max_order });
        }
        let pfn = self.region.pfn_of(addr).ok_or(FreeError::NotBlockStart { addr })?;
        let info = self.mem_map.page(pfn).info();
        self.validate_free(pfn, info, order, addr)?;
        if order <= PCP_MAX_ORDER
            && self.pcp_enabled
            && with_thread_set(self, |set| set.free(self, pfn, order, usize::from(info.zone))).is_some()
        {
            return Ok(());
        }
        let zone = &self.zones[usize::from(info.zone)];
        let mut guard = zone.lock();
        // Re-read under the lock: a racing free of the same block is
        // caught here, and the lists never see a block twice.
        let info = self.mem_map.page(pfn).info();
        self.validate_free(pfn, info, order, addr)?;
        guard.inner.buddy.free_one_page(&self.mem_map, pfn, order, 0);
        guard.inner.frees[order as usize] += 1;
        Ok(())
    }

    /// Whether the head entry `info` of `pfn` shows a block of `order` that
    /// may be freed; if not, which error it is.
    #[inline]
    fn validate_free(&self, pfn: Pfn, info: PageInfo, order: u32, addr: usize) -> Result<(), FreeError> {
        match info.state {
            PageState::Allocated if u32::from(info.order) == order => Ok(()),
            PageState::Allocated => Err(FreeError::WrongOrder { addr, given: order, actual: info.order.into() }),
            PageState::Free | PageState::Cached => Err(FreeError::DoubleFree { addr }),
            PageState::Tail => Err(self.classify_interior(pfn, addr)),
        }
    }

    /// `pfn` is not a head: if it lies inside a free block (it was freed and
    /// merged into a larger block) this is a double free; otherwise the
    /// pointer is not a block start.
    #[cold]
    fn classify_interior(&self, pfn: Pfn, addr: usize) -> FreeError {
        for order in 1..=self.max_order {
            let head = pfn & !((1 << order) - 1);
            let info = self.mem_map.page(head).info();
            if info.state != PageState::Tail && u32::from(info.order) >= order {
                return match info.state {
                    PageState::Free | PageState::Cached => FreeError::DoubleFree { addr },
                    _ => FreeError::NotBlockStart { addr },
                };
            }
        }
        FreeError::NotBlockStart { addr }
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // Threads may still hold caches of this arena: mark them so their
        // exit leaves the (unmapped) arena alone. Their blocks vanish with
        // the region, as every allocated block does.
        self.inner.pcp.shutdown();
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
