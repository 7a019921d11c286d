//! What compaction keeps between runs: the counters `stats()` reports
//! (the kernel's `compact_*` vmstat lines), kcompactd's pending order, and
//! each zone's deferral after failures. Below the zones and the reclaim
//! domain that hold it; the algorithm is in `compaction.rs`.

use crate::order::Order;
use crate::support::sync::{AtomicU32, AtomicU64, Ordering};

/// A failed zone is skipped for at most `1 << COMPACT_MAX_DEFER_SHIFT`
/// attempts.
const COMPACT_MAX_DEFER_SHIFT: u32 = 6;

/// The compaction event counters, read by `stats()` (the kernel's
/// `compact_*` vmstat lines).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompactStats {
    /// Direct compactions run by allocating threads (`compact_stall`).
    pub stall: u64,
    /// Of those, the ones after which the allocation failed (`compact_fail`).
    pub fail: u64,
    /// And the ones after which it succeeded (`compact_success`).
    pub success: u64,
    /// Zone compactions skipped as deferred.
    pub deferred: u64,
    /// Pages the migrate scanners walked (`compact_migrate_scanned`).
    pub migrate_scanned: u64,
    /// Pages the free scanners walked (`compact_free_scanned`).
    pub free_scanned: u64,
    /// Blocks isolated for moving (`compact_isolated`).
    pub isolated: u64,
    /// Pages moved (`pgmigrate_success`).
    pub migrated_pages: u64,
    /// Blocks their owner refused to move (`pgmigrate_fail`).
    pub migrate_failed: u64,
    /// kcompactd wake-ups (`kcompactd_wake`).
    pub kcompactd_wakes: u64,
}

/// Compaction's counters in a reclaim domain.
#[derive(Default)]
pub(crate) struct CompactCounters {
    pub stall: AtomicU64,
    pub fail: AtomicU64,
    pub success: AtomicU64,
    pub deferred: AtomicU64,
    pub migrate_scanned: AtomicU64,
    pub free_scanned: AtomicU64,
    pub isolated: AtomicU64,
    pub migrated_pages: AtomicU64,
    pub migrate_failed: AtomicU64,
    pub kcompactd_wakes: AtomicU64,
}

impl CompactCounters {
    /// Adds what one compaction did: pages each scanner walked, blocks
    /// isolated, pages moved, blocks left.
    pub(crate) fn record(&self, [migrate_scanned, free_scanned, isolated, migrated, failed]: [u64; 5]) {
        let add = |c: &AtomicU64, n: u64| {
            c.fetch_add(n, Ordering::Relaxed);
        };
        add(&self.migrate_scanned, migrate_scanned);
        add(&self.free_scanned, free_scanned);
        add(&self.isolated, isolated);
        add(&self.migrated_pages, migrated);
        add(&self.migrate_failed, failed);
    }

    /// The counters.
    pub(crate) fn stats(&self) -> CompactStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CompactStats {
            stall: load(&self.stall),
            fail: load(&self.fail),
            success: load(&self.success),
            deferred: load(&self.deferred),
            migrate_scanned: load(&self.migrate_scanned),
            free_scanned: load(&self.free_scanned),
            isolated: load(&self.isolated),
            migrated_pages: load(&self.migrated_pages),
            migrate_failed: load(&self.migrate_failed),
            kcompactd_wakes: load(&self.kcompactd_wakes),
        }
    }
}

/// A zone's deferral state (`compact_considered`, `compact_defer_shift`,
/// `compact_order_failed`).
#[derive(Default)]
pub(crate) struct Deferral {
    considered: AtomicU32,
    defer_shift: AtomicU32,
    order_failed: AtomicU32,
}

impl Deferral {
    /// `defer_compaction`: compaction at `order` failed in this zone.
    pub(crate) fn defer(&self, order: Order) {
        self.considered.store(0, Ordering::Relaxed);
        let shift = (self.defer_shift.load(Ordering::Relaxed) + 1).min(COMPACT_MAX_DEFER_SHIFT);
        self.defer_shift.store(shift, Ordering::Relaxed);
        self.order_failed.fetch_min(order.get(), Ordering::Relaxed);
    }

    /// `compaction_deferred`: whether to skip compacting for `order` now.
    pub(crate) fn deferred(&self, order: Order) -> bool {
        if order.get() < self.order_failed.load(Ordering::Relaxed) {
            return false;
        }
        let limit = 1 << self.defer_shift.load(Ordering::Relaxed);
        let considered = self.considered.load(Ordering::Relaxed) + 1;
        self.considered.store(considered.min(limit), Ordering::Relaxed);
        considered < limit
    }

    /// `compaction_defer_reset`: an allocation of `order` succeeded after
    /// compaction.
    pub(crate) fn reset(&self, order: Order) {
        self.considered.store(0, Ordering::Relaxed);
        self.defer_shift.store(0, Ordering::Relaxed);
        self.order_failed.fetch_max(order.get() + 1, Ordering::Relaxed);
    }
}
