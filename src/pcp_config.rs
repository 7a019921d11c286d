//! The per-thread caches as the layers below them see them (the kernel
//! keeps them in `zone->per_cpu_pageset`): their configuration, how big
//! they are (the kernel's `zone_batchsize`, `zone_highsize`, and the
//! `pageset_batch` and `pageset_high` a zone keeps), and which list a block
//! goes to.

use crate::error::BuildError;
use crate::migratetype::Migratetype;
use crate::page::MT_BITS;
use crate::zone_idx::ZoneIdx;

/// The kernel's `PAGE_ALLOC_COSTLY_ORDER`: orders above it are costly (the
/// slow path does not retry them), and their cache lists are kept short.
pub const PAGE_ALLOC_COSTLY_ORDER: u32 = 3;

/// The largest order the caches hold. The kernel's lists held orders up
/// to [`PAGE_ALLOC_COSTLY_ORDER`] until Linux 5.13, which added the
/// pageblock order (a transparent huge page); here every order up to the
/// huge page order (2 MiB) is cached, in short lists above the costly
/// order, and one 2 MiB block per list, whose free sets the purge timer.
#[cfg(not(loom))]
pub const PCP_MAX_ORDER: u32 = crate::region::HUGE_PAGE_ORDER;
/// Loom models use the orders up to the costly one: the lists of every
/// order run the same code, and each more order is more atomic operations
/// per drain and check for the model to explore.
#[cfg(loom)]
pub const PCP_MAX_ORDER: u32 = PAGE_ALLOC_COSTLY_ORDER;
pub(crate) const PCP_ORDERS: usize = PCP_MAX_ORDER as usize + 1;
/// The huge page order's list holds one block, and every push of one sets
/// the purge timer (`Node::huge_block_cached`): a cached 2 MiB block is a
/// huge page of RSS, which the timer's pass drains to the lists (kswapd's
/// purge check reads `Node::pcp_huge_cached`). Under loom no list has this
/// order.
pub(crate) const PCP_HUGE_ORDER: usize = crate::region::HUGE_PAGE_ORDER as usize;
/// Migratetypes a cache keeps lists for: every one (only the three that
/// flags name are ever cached; the high-atomic type's lists stay empty and
/// are there so that any type number two bits can hold indexes a list,
/// with no bounds check on the fast paths).
#[cfg(not(loom))]
pub(crate) const PCP_TYPES: usize = crate::migratetype::NR_MIGRATETYPES;
/// Loom models cache unmovable blocks only: one list per order serves
/// every type, and the models keep the atomics they had (each list's count
/// is one more for loom to interleave in every drain and check).
#[cfg(loom)]
pub(crate) const PCP_TYPES: usize = 1;

/// Lists a zone's batch pool keeps: one per order and per type
/// (`NR_PCP_LISTS`).
pub(crate) const NR_PCP_LISTS: usize = PCP_ORDERS * PCP_TYPES;

/// Which type's lists serve migratetype number `mt` (below 4): its own.
#[cfg(not(loom))]
#[inline(always)]
pub(crate) const fn pcp_type(mt: usize) -> usize {
    mt
}

/// Under loom the one type's lists serve every type.
#[cfg(loom)]
#[inline(always)]
pub(crate) const fn pcp_type(_mt: usize) -> usize {
    0
}

/// The pool list of order `order` and migratetype number `mt` (below 4):
/// the kernel's `order_to_pindex`.
#[inline(always)]
pub(crate) const fn pcp_list(order: usize, mt: usize) -> usize {
    pcp_type(mt) * PCP_ORDERS + order
}

/// Which of a cache set's per-(zone, type) list groups serves zone `zone`
/// and migratetype number `mt`.
#[inline(always)]
pub(crate) const fn pcp_index(zone: ZoneIdx, mt: Migratetype) -> usize {
    zone.index() * PCP_TYPES + pcp_type(mt.index())
}

/// [`pcp_index`] from a head's `zone << MT_BITS | type` byte
/// ([`PageInfo::zone_type_of_word`](crate::page::PageInfo::zone_type_of_word)):
/// the byte itself when every type has its lists.
#[inline(always)]
pub(crate) const fn pcp_index_of_zone_type(zone_type: usize) -> usize {
    zone_type >> (MT_BITS - PCP_TYPES.trailing_zeros())
}

/// The largest `high` a list may have, in pages. Bounds the per-thread
/// memory: a zone's lists hold at most 1023 pages per order.
#[cfg(not(loom))]
pub const PCP_HIGH_LIMIT: usize = 1023;
/// Loom models use tiny lists.
#[cfg(loom)]
pub const PCP_HIGH_LIMIT: usize = 7;

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
