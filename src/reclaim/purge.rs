//! Purge: handing free memory back to the OS, the kernel's free page
//! reporting (what virtio-balloon uses to give a guest's free pages back).
//!
//! Under the zone lock, up to [`BATCH`] free blocks that still cost RSS are
//! taken off the lists (`Isolated`); without the lock they are sorted,
//! adjacent ones merged into ranges, and each range is handed back with one
//! `madvise` (`MADV_DONTNEED`, or `MADV_FREE` by choice); under the lock
//! again they go back on their lists flagged purged, at the tail, where
//! allocation reaches them last and the next purge pass stops. A block
//! purged with `MADV_DONTNEED` reads as zeros, so a `ZERO` allocation of it
//! needs no memset.

use crate::node::Node;
use crate::order::Order;
use crate::page::flag;
use crate::pfn::Pfn;
use crate::region::{HugePages, PurgeAdvice};
use crate::zone::Zone;

/// Blocks isolated per round, and at most [`BATCH_PAGES`] pages: bounds how
/// much free memory is briefly unavailable to allocations while its pages
/// are handed back (the kernel's page reporting isolates 32 blocks).
const BATCH: usize = 64;
const BATCH_PAGES: usize = 2048; // 8 MiB

/// What a purge did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Bytes handed back to the OS.
    pub bytes: usize,
    /// `madvise` calls made (after merging adjacent blocks).
    pub calls: usize,
}

/// What a purge hands back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PurgeScope {
    /// Every resident free block ([`Arena::purge`](crate::Arena::purge)).
    All,
    /// The resident free pages that stayed free since the last purge
    /// (`Buddy::purge_budget`): the purge timer's pass. Memory freed
    /// and taken again within the delay stays, as jemalloc's decay keeps
    /// it; memory left free for a whole delay goes back at the next pass.
    Stale,
}

impl Node {
    /// Purges `zones`, the node's or a NUMA node's (the caller has
    /// drained the caches, whose pages a purge cannot reach).
    pub(super) fn purge_zones(&self, zones: &[Zone], scope: PurgeScope) -> PurgeReport {
        let _purging = self.purging.lock();
        let mut report = PurgeReport::default();
        for zone in zones {
            let r = self.purge_zone(zone, scope);
            report.bytes += r.bytes;
            report.calls += r.calls;
        }
        report
    }

    fn purge_zone(&self, zone: &Zone, scope: PurgeScope) -> PurgeReport {
        let advice = self.reclaim_config().purge_advice;
        // hugetlb pages can only be discarded with MADV_DONTNEED (and
        // whole: the zones purge nothing below the huge page order then).
        let advice = if self.huge_pages == HugePages::Explicit { PurgeAdvice::DontNeed } else { advice };
        let put_back_flags = match advice {
            PurgeAdvice::DontNeed => flag::PURGED | flag::ZEROED,
            PurgeAdvice::Free => flag::PURGED,
        };
        let mut report = PurgeReport::default();
        let mut batch = [(Pfn::default(), Order::ZERO); BATCH];
        let mut budget = match scope {
            PurgeScope::All => usize::MAX,
            PurgeScope::Stale => zone.lock().inner.buddy.purge_budget(),
        };
        while budget > 0 {
            let n = zone.lock().inner.buddy.isolate_resident(&self.mem_map, (BATCH_PAGES, budget), &mut batch);
            if n == 0 {
                break;
            }
            let blocks = &mut batch[..n];
            budget = budget.saturating_sub(blocks.iter().map(|&(_, order)| order.pages()).sum());
            blocks.sort_unstable_by_key(|&(pfn, _)| pfn);
            let mut ok = true;
            let mut i = 0;
            while i < n {
                let start = blocks[i].0;
                let mut end = start + blocks[i].1.pages();
                i += 1;
                while i < n && blocks[i].0 == end {
                    end += blocks[i].1.pages();
                    i += 1;
                }
                let pages = end - start;
                // SAFETY: these pages are isolated free blocks: nobody may
                // rely on their contents, and nobody can allocate them.
                match unsafe { self.region.purge(start, pages, advice) } {
                    Ok(()) => {
                        report.bytes += pages << crate::PAGE_SHIFT;
                        report.calls += 1;
                    }
                    Err(_) => ok = false,
                }
            }
            let mut guard = zone.lock();
            for &(pfn, order) in blocks.iter() {
                let flags = if ok { put_back_flags } else { 0 };
                guard.inner.buddy.putback_isolated(&self.mem_map, pfn, order, flags);
            }
            drop(guard);
            if !ok {
                // Put back as resident, they would be isolated again: stop.
                break;
            }
        }
        zone.lock().inner.buddy.end_purge_pass();
        report
    }
}
