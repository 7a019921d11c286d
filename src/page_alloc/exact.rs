//! Allocations of any number of pages: the kernel's `alloc_pages_exact` /
//! `free_pages_exact`.
//!
//! A buddy block of `2^k` pages is taken and trimmed to the pages asked
//! for: the kept pages become allocated blocks tiling them (for 150 pages
//! from an aligned start: 128, 16, 4 and 2; [`tile`] tiles any range with
//! naturally aligned blocks), the rest (2, 8, 32 and 64) go back to the
//! lists at once. So a 600 KiB buffer costs 600 KiB, not the 1 MiB of its
//! block, in RSS and in the budget. A free validates every tile before it
//! frees any. An exact allocation can shrink in place (the tiles past the
//! new end are freed) and grow in place into the free pages after it,
//! which the trim left free; an allocation that is one tile is a plain
//! block.

use std::ptr::NonNull;

use crate::error::{AllocError, FreeError};
use crate::flags::AllocFlags;
use crate::order::Order;
use crate::page::{PageState, flag};
use crate::page_alloc::PageAlloc;
use crate::pfn::{Pfn, single_tile, tile};

/// The order of the smallest block holding `pages` pages.
pub(super) fn covering_order(pages: usize) -> u32 {
    pages.max(1).next_power_of_two().trailing_zeros()
}

impl PageAlloc {
    /// `pages` pages aligned to `4 KiB << max(covering order, align_order)`,
    /// trimmed from a block of that order (taken with room to grow when
    /// `growable`; see [`alloc_block`](Self::alloc_block)).
    pub(crate) fn alloc_exact(
        &self,
        pages: usize,
        align_order: Order,
        flags: AllocFlags,
        growable: bool,
    ) -> Result<NonNull<u8>, AllocError> {
        let max_order = self.node().max_order;
        let wanted = covering_order(pages).max(align_order.get());
        let Some(order) = Order::new(wanted).filter(|&o| pages != 0 && o <= max_order) else {
            return Err(AllocError::InvalidOrder { order: wanted, max_order: max_order.get() });
        };
        let start = if growable { super::Start::Growable } else { super::Start::Local };
        let block = self.alloc_block(order.get(), flags.difference(AllocFlags::ZERO), start)?;
        if pages < order.pages() {
            let zone = self.node().zone_of(block.pfn);
            zone.lock().inner.buddy.trim_allocated(&self.node().mem_map, block.pfn, order, pages, block.flags);
            self.node().pages_returned(zone);
        }
        if flags.contains(AllocFlags::ZERO) && block.flags & flag::ZEROED == 0 {
            // SAFETY: the kept pages are ours, just allocated.
            unsafe { self.node().region.zero(block.pfn, pages) };
        }
        // SAFETY: a block from the zones is a page of the region.
        Ok(unsafe { self.node().region.page_addr(block.pfn) })
    }

    /// Frees an allocation of `pages` pages from
    /// [`alloc_exact`](Self::alloc_exact) (or a block of `2^k` pages).
    /// Every tile is validated before any is freed.
    pub(crate) fn free_exact(&self, addr: usize, pages: usize) -> Result<(), FreeError> {
        if let Ok(pfn) = self.exact_pfn(addr, pages)
            && let Some(order) = single_tile(pfn, pfn + pages)
        {
            return self.free_pages(addr, order.get());
        }
        let result = self.exact_pfn(addr, pages).and_then(|pfn| {
            let zone = self.node().zone_of(pfn);
            let mut guard = zone.lock();
            self.validate_exact(pfn, pages, addr)?;
            for (tile_pfn, order) in tile(pfn, pfn + pages) {
                guard.inner.buddy.free_one_page(&self.node().mem_map, tile_pfn, order, 0);
            }
            guard.inner.frees[covering_order(pages) as usize] += 1;
            Ok(zone)
        });
        match result {
            Ok(zone) => {
                self.node().pages_returned(zone);
                Ok(())
            }
            Err(error) => {
                self.counters.invalid_frees.fetch_add(1, crate::support::sync::Ordering::Relaxed);
                Err(error)
            }
        }
    }

    /// Resizes the allocation of `pages` pages at `addr` to `new_pages`
    /// where it lies: shrinking always works, growing when the pages after
    /// it are free (and the zone stays above its low watermark) and the
    /// allocation is aligned for the new size. `false`, with nothing
    /// changed, otherwise, and for anything that is not such an
    /// allocation.
    pub(crate) fn resize_exact(&self, addr: usize, pages: usize, new_pages: usize) -> bool {
        if new_pages == pages {
            return self.exact_pfn(addr, pages).is_ok_and(|pfn| self.validate_exact(pfn, pages, addr).is_ok());
        }
        if new_pages == 0 || new_pages > self.node().max_order.pages() {
            return false;
        }
        let Ok(pfn) = self.exact_pfn(addr, pages) else { return false };
        let zone = self.node().zone_of(pfn);
        if new_pages > pages && zone.usable_free_pages() < new_pages - pages + zone.watermarks().low {
            return false;
        }
        let mut guard = zone.lock();
        if self.validate_exact(pfn, pages, addr).is_err() {
            return false;
        }
        let buddy = &mut guard.inner.buddy;
        if new_pages < pages {
            buddy.shrink_allocated(&self.node().mem_map, pfn, pages, new_pages);
            drop(guard);
            self.node().pages_returned(zone);
            return true;
        }
        let end = pfn + new_pages;
        if !zone.contains(end - 1) || !buddy.take_free_range(&self.node().mem_map, pfn + pages, end) {
            return false;
        }
        // Retile the whole allocation: the old tiles' heads become tails
        // where the new tiling has none.
        let mt = self.node().mem_map.page(pfn).info().migratetype();
        for (tile_pfn, _) in tile(pfn, pfn + pages) {
            self.node().mem_map.page(tile_pfn).set_info(crate::page::PageInfo::TAIL);
        }
        buddy.set_tiles(&self.node().mem_map, pfn, (pfn, end), mt);
        true
    }

    /// The page of `addr`, if it is a page of the region and `pages` is an
    /// allocation size this arena can have.
    fn exact_pfn(&self, addr: usize, pages: usize) -> Result<Pfn, FreeError> {
        if !self.node().region.contains(addr) {
            return Err(FreeError::OutOfRegion { addr });
        }
        if pages == 0 || pages > self.node().max_order.pages() {
            return Err(FreeError::InvalidOrder {
                order: covering_order(pages),
                max_order: self.node().max_order.get(),
            });
        }
        self.node().region.pfn_of(addr).ok_or(FreeError::NotBlockStart { addr })
    }

    /// Whether pages `pfn..pfn + pages` are exactly one allocation: a plain
    /// block when they are one tile, else its tiles (the first unflagged,
    /// the others continued) and no continued tile after them. The first
    /// thing wrong, as an error.
    fn validate_exact(&self, pfn: Pfn, pages: usize, addr: usize) -> Result<(), FreeError> {
        let zone = self.node().zone_of(pfn);
        if !zone.contains(pfn + pages - 1) {
            return Err(FreeError::WrongSize { addr });
        }
        if let Some(order) = single_tile(pfn, pfn + pages) {
            let info = self.node().mem_map.page(pfn).info();
            return self.validate_free(pfn, info, order, addr);
        }
        for (tile_pfn, order) in tile(pfn, pfn + pages) {
            let info = self.node().mem_map.page(tile_pfn).info();
            let continued = tile_pfn != pfn;
            if info.state != PageState::Exact
                || info.order() != order
                || (info.flags & flag::CONTINUED != 0) != continued
            {
                return match info.state {
                    // The first tile decides what the pointer is.
                    _ if continued => Err(FreeError::WrongSize { addr }),
                    PageState::Allocated | PageState::Exact => Err(FreeError::WrongSize { addr }),
                    _ => self.validate_free(pfn, info, order, addr),
                };
            }
        }
        let after = pfn + pages;
        if zone.contains(after) {
            let info = self.node().mem_map.page(after).info();
            if info.state == PageState::Exact && info.flags & flag::CONTINUED != 0 {
                return Err(FreeError::WrongSize { addr });
            }
        }
        Ok(())
    }
}
