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
//! The owner/drainer handshake is described in [`set`]; the sets'
//! lifetime in [`registry`]; a thread's side in [`thread`].

use crate::error::BuildError;

mod registry;
mod set;
mod thread;

pub(crate) use registry::*;
pub(crate) use set::*;
pub use thread::THREAD_ARENAS;
pub(crate) use thread::*;

/// The largest order the caches hold: the kernel's `PAGE_ALLOC_COSTLY_ORDER`.
pub const PCP_MAX_ORDER: u32 = 3;
pub(crate) const PCP_ORDERS: usize = PCP_MAX_ORDER as usize + 1;

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
