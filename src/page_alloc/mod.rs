//! The allocation and free paths behind the public page API: the
//! counterpart of the kernel's `mm/page_alloc.c`.
//!
//! `alloc_pages` follows `__alloc_pages`: the calling thread's cache for
//! small orders, then `get_page_from_freelist` at the low watermark, then
//! `__alloc_pages_slowpath`:
//!
//! 1. wake kswapd, and kcompactd for orders above 0;
//! 2. retry at the min watermark with the reserve discounts of `HIGH` and
//!    `ATOMIC`;
//! 3. callers that cannot wait (`ATOMIC`, `NOWAIT`) stop here;
//! 4. costly orders, and high orders that are not movable, compact first
//!    (async);
//! 5. direct reclaim (for a high-order request held up by reclaimable
//!    pageblocks the reclaimable shrinkers first; the shrinkers asked for
//!    at least `SWAP_CLUSTER_MAX` pages, then every per-thread cache, once
//!    per slow path), retry, release a high-atomic pageblock after the
//!    first drain, compact again; `NORETRY` stops after one round, and so
//!    do costly orders (above 3) unless `RETRY_MAYFAIL` or `NOFAIL`;
//! 6. raise the compaction priority while there are owners to move
//!    (`should_compact_retry`), then retry while reclaim makes progress or
//!    could, up to `MAX_RECLAIM_RETRIES` rounds without progress
//!    (`should_reclaim_retry`), then exhaust the high-atomic reserve;
//! 7. the OOM handler (not for `RETRY_MAYFAIL`; without one, fail), which
//!    may ask for a retry, at most `MAX_RECLAIM_RETRIES` times;
//! 8. `NOFAIL` waits for reclaim progress and starts again (the caches are
//!    drained again); everyone else fails with `OutOfMemory` and, unless
//!    `NOWARN`, a rate-limited warning.
//!
//! **Defrag mode** (`ArenaBuilder::defrag_mode`, the kernel's
//! `ALLOC_NOFRAGMENT` on every attempt): a fallback may only claim a whole
//! free pageblock until step 6 finds compaction at its highest priority
//! (or, without movable owners, at once) unable to make one; kcompactd is
//! woken for a pageblock when step 2 fails, every request compacts
//! towards one (step 4 for order 0 too), and direct reclaim is skipped
//! while the memory is there and only the rule stands in the way. A
//! request that stops earlier (step 3, `NORETRY`, costly orders) makes
//! one attempt that may split a foreign pageblock instead of failing
//! (`fragmenting_fallback`; the kernel fails it).
//!
//! A thread inside a shrinker allocates without watermarks and never
//! recurses into reclaim.

mod exact;
mod mempolicy;

use std::fmt::Write as _;
use std::ptr::NonNull;

use crate::buddy::Block;
use crate::error::{AllocError, FreeError};
use crate::fault::FaultState;
use crate::flags::AllocFlags;
use crate::kswapd::MAX_RECLAIM_RETRIES;
use crate::memalloc::InReclaim;
use crate::mempolicy::NodeMask;
use crate::migratetype::Migratetype;
use crate::node::{Node, ReclaimCounters};
use crate::oom::{OomAction, OomContext, OomHandler};
use crate::order::Order;
use crate::page::{MemMap, PageInfo, PageState, flag};
use crate::pcp::{CacheAlloc, CacheFree, alloc_cached, free_cached};
use crate::pcp_config::{PAGE_ALLOC_COSTLY_ORDER, PCP_MAX_ORDER};
use crate::pfn::Pfn;
use crate::reclaim::compaction::CompactPriority;
use crate::reclaim::vmscan::Reclaim;
use crate::support::ratelimit::RateLimit;
use crate::support::report::StackWriter;
use crate::support::sync::{AtomicU64, Ordering};
use crate::watermark::{AllocMode, Mark};
use crate::zone::{RmqueueHow, Zone};
use crate::zone_idx::ZoneIdx;

/// The page allocator: a node with its caches and reclaim, and the policy
/// of the slow path (the OOM handler, fault injection, failure warnings).
#[repr(C)]
pub(crate) struct PageAlloc {
    pub reclaim: Reclaim,
    pub oom_handler: Option<OomHandler>,
    pub fault: Option<FaultState>,
    pub counters: AllocCounters,
    pub warn_limit: RateLimit,
}

/// The allocator's failure counters.
#[derive(Default)]
pub(crate) struct AllocCounters {
    /// Allocations that failed with `OutOfMemory`.
    pub alloc_failures: AtomicU64,
    /// Frees refused as invalid.
    pub invalid_frees: AtomicU64,
}

/// What taking an owned block back for a free did ([`release_owned`]).
pub(crate) enum Released {
    /// The head is now plain allocated (this value): free it.
    Allocated(PageInfo),
    /// Compaction is moving the block: it is marked to be freed when the
    /// move ends, and the free is done.
    FreedAfterMove,
    /// Another free of it got there first.
    AlreadyFreed,
}

/// Takes an owned block (head `info`) back from its owner for a free. A
/// block compaction isolates is never also freed here, and one freed here
/// is never moved: the two race for one compare-exchange on the head word.
pub(crate) fn release_owned(mm: &MemMap, pfn: Pfn, mut info: PageInfo) -> Released {
    let page = mm.page(pfn);
    loop {
        let next = match info.state {
            PageState::Owned => info.with_state(PageState::Allocated),
            PageState::Migrating => info.with_state(PageState::MigratingFreed),
            _ => return Released::AlreadyFreed,
        };
        match page.cas_info(info, next) {
            Ok(()) if next.state == PageState::Allocated => return Released::Allocated(next),
            Ok(()) => return Released::FreedAfterMove,
            Err(now) => info = now,
        }
    }
}

/// A validated head that records a zone its page is not in: the
/// metadata is broken.
#[cold]
#[inline(never)]
#[track_caller]
fn head_in_wrong_zone(pfn: Pfn, info: PageInfo) -> ! {
    crate::support::report::fatal(format_args!(
        "the head of page {} records zone {}, which does not hold it",
        pfn.raw(),
        info.zone()
    ))
}

impl PageAlloc {
    /// The node it allocates from.
    #[inline(always)]
    pub(crate) fn node(&self) -> &Node {
        &self.reclaim.node
    }

    /// Everything `alloc_pages` does beyond popping a cached block.
    #[inline(never)]
    pub(crate) fn alloc_pages(&self, order: u32, flags: AllocFlags) -> Result<NonNull<u8>, AllocError> {
        let block = self.alloc_block(order, flags, Start::Local)?;
        Ok(self.prep_new_page(block, flags))
    }

    /// A block of `order` through the whole allocation path (the caches,
    /// the zonelist, the slow path) from `start`, not yet prepared for the
    /// caller.
    fn alloc_block(&self, order: u32, flags: AllocFlags, start: Start) -> Result<Block, AllocError> {
        let max_order = self.node().max_order;
        let Some(order) = Order::new(order).filter(|&o| o <= max_order) else {
            return Err(AllocError::InvalidOrder { order, max_order: max_order.get() });
        };
        let mt =
            Migratetype::from_flags(flags, self.node().group_by_mobility).ok_or(AllocError::ConflictingMobility)?;
        if let Some(fault) = &self.fault
            && fault.should_fail(order.get(), flags)
        {
            return Err(AllocError::Injected { order: order.get() });
        }
        let block = self.alloc_block_of(order, mt, flags, start)?;
        if AllocMode::highatomic(order, flags) {
            self.node().zone_of(block.pfn).reserve_highatomic_pageblock(&self.node().mem_map, block.pfn, order);
        }
        Ok(block)
    }

    /// `alloc_block` for type `mt`, before the high-atomic reserve.
    fn alloc_block_of(
        &self,
        order: Order,
        mt: Migratetype,
        flags: AllocFlags,
        start: Start,
    ) -> Result<Block, AllocError> {
        let this_node = flags.contains(AllocFlags::THISNODE);
        let preferred = match start {
            Start::Growable => {
                let preferred = self.node().preferred_zone();
                let zone = &self.node().zone(preferred);
                if zone.watermark_ok(order, AllocMode::new(Mark::Low, order, flags))
                    && let Some(block) = zone.rmqueue(&self.node().mem_map, (order, mt), RmqueueHow::Growable, false)
                {
                    self.node().zone_allocated(zone);
                    return Ok(block);
                }
                preferred
            }
            Start::Local if self.node().numa.is_numa() => return self.alloc_block_numa((order, mt), flags),
            Start::Local => {
                if order.get() <= PCP_MAX_ORDER && self.node().pcp_enabled {
                    match alloc_cached(self.node(), &self.reclaim.pcp, (order, mt), flags) {
                        CacheAlloc::Served(block) => return Ok(block),
                        CacheAlloc::BelowWatermarks => {
                            let ac = AllocContext {
                                preferred: self.node().preferred_zone(),
                                allowed: NodeMask::ALL,
                                this_node,
                            };
                            return self.alloc_slowpath((order, mt), flags, ac);
                        }
                        CacheAlloc::NoCache => {}
                    }
                }
                self.node().preferred_zone()
            }
            Start::Node(node) => self.node().numa.zone_at(node, self.node().zone_offset()),
        };
        let ac = AllocContext { preferred, allowed: NodeMask::ALL, this_node };
        self.alloc_from_zones((order, mt), flags, ac)
    }

    /// The zonelist at the low watermark, then the slow path.
    #[inline(always)]
    fn alloc_from_zones(
        &self,
        request: (Order, Migratetype),
        flags: AllocFlags,
        ac: AllocContext,
    ) -> Result<Block, AllocError> {
        match self.get_page_from_freelist(request, AllocMode::new(Mark::Low, request.0, flags), ac) {
            Some(block) => Ok(block),
            None => self.alloc_slowpath(request, flags, ac),
        }
    }

    /// `alloc_pages_growable`: see [`alloc_block`](Self::alloc_block)'s `growable`.
    pub(crate) fn alloc_pages_growable(&self, order: u32, flags: AllocFlags) -> Result<NonNull<u8>, AllocError> {
        let block = self.alloc_block(order, flags, Start::Growable)?;
        Ok(self.prep_new_page(block, flags))
    }

    /// Everything `free_pages` does beyond pushing onto this thread's list.
    #[inline(never)]
    pub(crate) fn free_pages(&self, addr: usize, order: u32) -> Result<(), FreeError> {
        let result = self.free_validated(addr, order);
        if result.is_err() {
            self.counters.invalid_frees.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// `get_page_from_freelist`: the first zone of the zonelist (the
    /// preferred zone, then the others in order) that passes the watermark
    /// check and has a block. Wakes kswapd if that left the zone below low.
    #[inline]
    fn get_page_from_freelist(
        &self,
        (order, mt): (Order, Migratetype),
        mode: AllocMode,
        ac: AllocContext,
    ) -> Option<Block> {
        let how = if mode.highatomic { RmqueueHow::HighAtomicFirst } else { RmqueueHow::Normal };
        self.node().zonelist(ac.preferred, (ac.allowed, ac.this_node), |index| {
            let zone = self.node().zone(index);
            if !zone.watermark_ok(order, mode) {
                zone.watermark_failures.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            let block = zone.rmqueue(&self.node().mem_map, (order, mt), how, mode.may_fragment)?;
            self.node().zone_allocated(zone);
            Some(block)
        })
    }

    /// `__alloc_pages_slowpath`; see the module docs.
    #[cold]
    fn alloc_slowpath(
        &self,
        request: (Order, Migratetype),
        flags: AllocFlags,
        ac: AllocContext,
    ) -> Result<Block, AllocError> {
        let (order, mt) = request;
        if InReclaim::active() {
            // PF_MEMALLOC: a shrinker's own allocation. No watermarks, and
            // never reclaim from inside reclaim.
            return self
                .get_page_from_freelist(request, AllocMode::NO_WATERMARKS, ac)
                .ok_or_else(|| self.nopage(order, flags));
        }
        let mut mode = AllocMode::new(Mark::Min, order, flags);
        let nofail = flags.contains(AllocFlags::NOFAIL);
        let costly = order.get() > PAGE_ALLOC_COSTLY_ORDER;
        // Defrag mode: what compaction works towards is a whole free
        // pageblock, which a fallback may then claim without mixing.
        let defrag = self.node().defrag_mode;
        let compact_order = if defrag { order.max(self.node().zone(ac.preferred).pageblock_order) } else { order };
        self.reclaim.wakeup_kcompactd(order, ac.preferred);
        self.wake_all_kswapds(ac);
        if let Some(block) = self.get_page_from_freelist(request, mode, ac) {
            return Ok(block);
        }
        if compact_order > order {
            // Defrag mode, short of a pageblock even at the min watermark:
            // kcompactd keeps whole pageblocks free.
            self.reclaim.wakeup_kcompactd(compact_order, ac.preferred);
        }
        if !flags.may_wait() {
            // ATOMIC and NOWAIT never block; NOFAIL cannot change that.
            return self.fragmenting_fallback(request, mode, ac).ok_or_else(|| self.nopage(order, flags));
        }
        // Costly orders, and high orders that could not fall back to a
        // movable block, try compaction before reclaim (the kernel's
        // first `__alloc_pages_direct_compact`); in defrag mode every
        // request does, before it may fragment.
        let mut compact_priority = CompactPriority::Async;
        if compact_order > Order::ZERO
            && (costly || mt != Migratetype::Movable || defrag)
            && let Some(block) = self.direct_compact(request, mode, ac, (compact_order, compact_priority))
        {
            return Ok(block);
        }
        let mut drained = false;
        let mut no_progress_loops = 0;
        let mut oom_retries = 0;
        loop {
            self.wake_all_kswapds(ac);
            let first_drain = !drained;
            // Defrag mode, with memory to spare and only the rule against
            // fragmenting in the way: reclaim would evict caches for
            // nothing; compaction below is what may help.
            let fragmented_only = defrag && !mode.may_fragment && self.any_zone_ok(order, mode);
            let progress = if fragmented_only { 0 } else { self.reclaim.direct_reclaim(order, &mut drained) };
            if let Some(block) = self.get_page_from_freelist(request, mode, ac) {
                return Ok(block);
            }
            // __alloc_pages_direct_reclaim: before the caches' first
            // drain is given up on, release a high-atomic reserve.
            if first_drain
                && self.unreserve_highatomic(mt, false)
                && let Some(block) = self.get_page_from_freelist(request, mode, ac)
            {
                return Ok(block);
            }
            if compact_order > Order::ZERO
                && let Some(block) = self.direct_compact(request, mode, ac, (compact_order, compact_priority))
            {
                return Ok(block);
            }
            if !nofail
                && (flags.contains(AllocFlags::NORETRY) || (costly && !flags.contains(AllocFlags::RETRY_MAYFAIL)))
            {
                break;
            }
            if self.should_compact_retry(compact_order, &mut compact_priority) {
                continue;
            }
            // Defrag mode: reclaim and compaction at every priority failed
            // to free a pageblock; now a fallback may split one (the
            // kernel clears ALLOC_NOFRAGMENT here, before the OOM killer;
            // here before the reclaim retries, which cannot help it).
            if !mode.may_fragment && defrag {
                mode = mode.fragmenting();
                if let Some(block) = self.get_page_from_freelist(request, mode, ac) {
                    return Ok(block);
                }
            }
            if self.should_reclaim_retry(order, progress, &mut no_progress_loops) {
                continue;
            }
            // Before the OOM handler, exhaust the high-atomic reserve.
            if self.unreserve_highatomic(mt, true) {
                no_progress_loops = 0;
                continue;
            }
            // __alloc_pages_may_oom: RETRY_MAYFAIL fails without it.
            if (nofail || !flags.contains(AllocFlags::RETRY_MAYFAIL))
                && oom_retries < MAX_RECLAIM_RETRIES
                && self.out_of_memory(order, flags) == OomAction::Retry
            {
                oom_retries += 1;
                no_progress_loops = 0;
                continue;
            }
            if !nofail {
                break;
            }
            // NOFAIL: wait for progress (never spin), then start over.
            let progress = &self.node().progress;
            let seen = progress.prepare(|| self.node().waiter_barrier());
            if let Some(block) = self.get_page_from_freelist(request, mode, ac) {
                progress.cancel();
                return Ok(block);
            }
            self.wake_all_kswapds(ac);
            ReclaimCounters::add(&self.node().counters.nofail_waits, 1);
            progress.wait(seen);
            drained = false;
            no_progress_loops = 0;
        }
        self.fragmenting_fallback(request, mode, ac).ok_or_else(|| self.nopage(order, flags))
    }

    /// `wake_all_kswapds`: the kswapds of the nodes `ac` may allocate on
    /// ([`Node::wakeup_kswapds`]).
    fn wake_all_kswapds(&self, ac: AllocContext) {
        self.node().wakeup_kswapds(ac.preferred, (ac.allowed, ac.this_node));
    }

    /// `should_compact_retry`: a higher priority may move what a lower one
    /// left, while anything is movable at all; raises `priority` if so.
    fn should_compact_retry(&self, compact_order: Order, priority: &mut CompactPriority) -> bool {
        if compact_order > Order::ZERO
            && let Some(higher) = priority.raise()
            && !self.reclaim.movable.is_empty()
        {
            *priority = higher;
            return true;
        }
        false
    }

    /// `should_reclaim_retry`: reclaim is tried again while it makes
    /// progress, and after up to [`MAX_RECLAIM_RETRIES`] passes that made
    /// none, as long as reclaim could free enough at all
    /// (`reclaim_could_help`).
    fn should_reclaim_retry(&self, order: Order, progress: usize, no_progress_loops: &mut u32) -> bool {
        *no_progress_loops = if progress > 0 { 0 } else { *no_progress_loops + 1 };
        *no_progress_loops <= MAX_RECLAIM_RETRIES && self.reclaim_could_help(order)
    }

    /// Defrag mode's last resort for a request about to fail: a fallback
    /// that splits a foreign pageblock, rather than failing while memory
    /// is free (where the kernel would fail a request that may not retry).
    fn fragmenting_fallback(&self, request: (Order, Migratetype), mode: AllocMode, ac: AllocContext) -> Option<Block> {
        if mode.may_fragment || !self.node().defrag_mode {
            return None;
        }
        self.get_page_from_freelist(request, mode.fragmenting(), ac)
    }

    /// `__alloc_pages_direct_compact`: compaction towards a free block of
    /// `target` order (the request's, or a pageblock in defrag mode) at
    /// `priority`, then an allocation at `mode` if it ran. Compaction's
    /// outcome (and so its deferral) is whether the request was then
    /// served, as the kernel counts it: in defrag mode an order-0 request
    /// served from the pages compaction freed in its own type's
    /// pageblocks was helped as much as by a whole pageblock (counting only
    /// whole pageblocks deferred compaction for the next requests and
    /// doubled the fragmenting fallbacks of `tests/compaction.rs`'s mixed
    /// workload).
    fn direct_compact(
        &self,
        request: (Order, Migratetype),
        mode: AllocMode,
        ac: AllocContext,
        (target, priority): (Order, CompactPriority),
    ) -> Option<Block> {
        self.reclaim.direct_compact(target, priority)?;
        let block = self.get_page_from_freelist(request, mode, ac);
        self.reclaim.compaction_outcome(target, block.is_some());
        block
    }

    /// Whether some zone passes the watermark check for `order` at `mode`
    /// (the free memory is there, whatever its pageblocks).
    fn any_zone_ok(&self, order: Order, mode: AllocMode) -> bool {
        self.node().zones.iter().any(|zone| zone.watermark_ok(order, mode))
    }

    /// `unreserve_highatomic_pageblock`: gives one high-atomic pageblock
    /// of some zone back to type `mt` (any zone's, with `force`; else only
    /// from a zone holding more than one pageblock in reserve). Whether one
    /// was.
    fn unreserve_highatomic(&self, mt: Migratetype, force: bool) -> bool {
        self.node().zones.iter().any(|zone| zone.unreserve_highatomic_pageblock(&self.node().mem_map, mt, force))
    }

    /// Whether everything reclaimable, added to what is free, would let an
    /// order-`order` allocation pass the min watermark somewhere (the test
    /// in `should_reclaim_retry`).
    fn reclaim_could_help(&self, order: Order) -> bool {
        let reclaimable = self.reclaim.shrinkers.count() + self.reclaim.pcp.cached_pages(self.node());
        self.node().zones.iter().any(|zone| {
            let available = zone.usable_free_pages() + reclaimable;
            available.saturating_sub((order.pages()) - 1) > zone.watermarks().min
        })
    }

    /// Calls the OOM handler (`out_of_memory`).
    fn out_of_memory(&self, order: Order, flags: AllocFlags) -> OomAction {
        ReclaimCounters::add(&self.node().counters.oom_events, 1);
        let Some(handler) = &self.oom_handler else { return OomAction::Fail };
        let context = OomContext {
            order: order.get(),
            flags,
            free_pages: self.node().zones.iter().map(Zone::usable_free_pages).sum(),
            reclaimable_pages: self.reclaim.shrinkers.count(),
        };
        (handler.0)(&context)
    }

    /// The allocation failed: count it and, unless NOWARN, say so.
    #[cold]
    fn nopage(&self, order: Order, flags: AllocFlags) -> AllocError {
        self.counters.alloc_failures.fetch_add(1, Ordering::Relaxed);
        if !flags.contains(AllocFlags::NOWARN) && self.warn_limit.allow() {
            self.warn_alloc(order, flags);
        }
        AllocError::OutOfMemory { order: order.get() }
    }

    /// The kernel's `warn_alloc`: one line to stderr, without allocating.
    #[cold]
    fn warn_alloc(&self, order: Order, flags: AllocFlags) {
        let mut w = StackWriter::new();
        let _ = write!(w, "zonealloc: page allocation failure: order:{order}, flags:{flags:?}, free pages:");
        for zone in self.node().zones.iter() {
            let _ = write!(w, " {}", zone.usable_free_pages());
        }
        w.flush_line();
    }

    /// Finishes a block for the caller: zeroes it if asked and not known zero.
    #[inline]
    fn prep_new_page(&self, block: Block, flags: AllocFlags) -> NonNull<u8> {
        if flags.contains(AllocFlags::ZERO) && block.flags & flag::ZEROED == 0 {
            // SAFETY: the block was just taken off the free lists for this caller.
            unsafe { self.node().region.zero(block.pfn, block.order.pages()) };
        }
        // SAFETY: a block from the zones is a page of the region.
        unsafe { self.node().region.page_addr(block.pfn) }
    }

    /// Validates and frees the block at `addr` to its zone's lists.
    fn free_validated(&self, addr: usize, order: u32) -> Result<(), FreeError> {
        if !self.node().region.contains(addr) {
            return Err(FreeError::OutOfRegion { addr });
        }
        let max_order = self.node().max_order;
        let Some(order) = Order::new(order).filter(|&o| o <= max_order) else {
            return Err(FreeError::InvalidOrder { order, max_order: max_order.get() });
        };
        let pfn = self.node().region.pfn_of(addr).ok_or(FreeError::NotBlockStart { addr })?;
        let mut info = self.node().mem_map.page(pfn).info();
        if matches!(info.state, PageState::Owned | PageState::Migrating) && info.order() == order {
            match release_owned(&self.node().mem_map, pfn, info) {
                Released::Allocated(allocated) => info = allocated,
                Released::FreedAfterMove => return Ok(()),
                Released::AlreadyFreed => return Err(FreeError::DoubleFree { addr }),
            }
        }
        self.validate_free(pfn, info, order, addr)?;
        // The zone the head records indexes the caches and the zones from
        // here on: it must be the zone the page lies in.
        let zone = match self.node().zones.get(info.zone().index()) {
            Some(zone) if zone.contains(pfn) => zone,
            _ => head_in_wrong_zone(pfn, info),
        };
        // Every way on claims the head first (`PageMeta::claim_word`): of
        // two frees of the block racing each other, one goes on, the
        // other is refused here.
        if order.get() <= PCP_MAX_ORDER && self.node().pcp_enabled {
            match free_cached(self.node(), &self.reclaim.pcp, pfn, info) {
                CacheFree::Freed => return Ok(()),
                CacheFree::DoubleFree => return Err(FreeError::DoubleFree { addr }),
                CacheFree::NoCache => {}
            }
        }
        let mut guard = zone.lock();
        let page = self.node().mem_map.page(pfn);
        let info = page.info();
        self.validate_free(pfn, info, order, addr)?;
        if !page.claim_word(info.pack(), info.with_state(PageState::Free).pack()) {
            return Err(FreeError::DoubleFree { addr });
        }
        guard.inner.buddy.free_one_page(&self.node().mem_map, pfn, order, 0);
        guard.inner.frees[order.index()] += 1;
        drop(guard);
        self.node().pages_returned(zone);
        Ok(())
    }

    /// Grows the allocated block at `addr` from `order` to `new_order` in
    /// place when the buddies above it are free and the zone stays above
    /// its low watermark (within the capacity) after giving them; `false`,
    /// with nothing changed, otherwise (including for any pointer that is
    /// not an allocated block of `order`).
    pub(crate) fn grow_pages(&self, addr: usize, order: u32, new_order: u32) -> bool {
        let max_order = self.node().max_order;
        let (Some(order), Some(new_order)) = (Order::new(order), Order::new(new_order)) else { return false };
        if new_order <= order || new_order > max_order {
            return false;
        }
        let Some(pfn) = self.node().region.pfn_of(addr) else { return false };
        let is_block = |info: PageInfo| info.state == PageState::Allocated && info.order() == order;
        let info = self.node().mem_map.page(pfn).info();
        if !is_block(info) {
            return false;
        }
        let zone = self.node().zone(info.zone());
        let extra = new_order.pages() - order.pages();
        if zone.usable_free_pages() < extra + zone.watermarks().low {
            return false;
        }
        let mut guard = zone.lock();
        // Re-read under the lock: the block may have been freed meanwhile.
        let info = self.node().mem_map.page(pfn).info();
        if !is_block(info) || !guard.inner.buddy.grow_in_place(&self.node().mem_map, pfn, order, new_order) {
            return false;
        }
        self.node().mem_map.page(pfn).set_info(info.with_order(new_order));
        guard.inner.frees[order.index()] += 1;
        guard.inner.allocs[new_order.index()] += 1;
        true
    }

    /// Whether the head entry `info` of `pfn` shows a block of `order` that
    /// may be freed; if not, which error it is.
    #[inline]
    fn validate_free(&self, pfn: Pfn, info: PageInfo, order: Order, addr: usize) -> Result<(), FreeError> {
        match info.state {
            PageState::Allocated if info.order() == order => Ok(()),
            PageState::Allocated => Err(FreeError::WrongOrder { addr, given: order.get(), actual: info.order().get() }),
            PageState::Owned | PageState::Migrating if info.order() != order => {
                Err(FreeError::WrongOrder { addr, given: order.get(), actual: info.order().get() })
            }
            // An owned block is released (`release_owned`) before it is
            // validated as allocated: seen here, another free got to it.
            PageState::Free
            | PageState::Cached
            | PageState::Isolated
            | PageState::Owned
            | PageState::Migrating
            | PageState::MigratingFreed => Err(FreeError::DoubleFree { addr }),
            PageState::Exact => Err(FreeError::WrongSize { addr }),
            PageState::Tail => Err(self.classify_interior(pfn, addr)),
        }
    }

    /// `pfn` is not a head: if it lies inside a free block (it was freed and
    /// merged into a larger block) this is a double free; otherwise the
    /// pointer is not a block start.
    #[cold]
    fn classify_interior(&self, pfn: Pfn, addr: usize) -> FreeError {
        for order in Order::ZERO.up(1).through(self.node().max_order) {
            let head = pfn.align_down(order);
            let info = self.node().mem_map.page(head).info();
            if info.state != PageState::Tail && info.order() >= order {
                return match info.state {
                    PageState::Free | PageState::Cached | PageState::Isolated => FreeError::DoubleFree { addr },
                    _ => FreeError::NotBlockStart { addr },
                };
            }
        }
        FreeError::NotBlockStart { addr }
    }
}

/// Where [`PageAlloc::alloc_block`] starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Start {
    /// The thread's own zone, through its cache first.
    Local,
    /// The thread's own zone, carved from the start of a larger free block
    /// when the zone passes its low watermark, so that it can grow in place
    /// (never from the per-thread caches, whose blocks' buddies are rarely
    /// free).
    Growable,
    /// A zone of NUMA node `n`.
    Node(usize),
}

/// Where an allocation starts and how far it may go: the zonelist part of
/// the kernel's `alloc_context`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct AllocContext {
    /// The zone tried first; its node is the one the allocation is meant for.
    preferred: ZoneIdx,
    /// The nodes that may serve it (the memory policy's).
    allowed: NodeMask,
    /// `THISNODE`: never past the preferred zone's node.
    this_node: bool,
}
