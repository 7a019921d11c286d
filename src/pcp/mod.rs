//! Per-thread page caches: the kernel's per-CPU page lists (`struct
//! per_cpu_pages`), one set per thread per node.
//!
//! A thread's [`PcpSet`] holds, for every zone and for orders
//! `0..=PCP_MAX_ORDER` (9), a list of free blocks taken out of the zone
//! (above `PAGE_ALLOC_COSTLY_ORDER`, 3, short lists of one block per
//! refill: [`batch_blocks`], [`high_blocks`]; at the huge page order one
//! block, whose free sets the purge timer). The common allocation pops
//! one with no lock and no atomic read-modify-write; the common free
//! claims the block's head with one compare-exchange (a racing second free
//! of it is refused: `PageMeta::claim_word`) and pushes it. An empty list
//! is refilled with
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

use crate::pcp_config::{
    PAGE_ALLOC_COSTLY_ORDER, PCP_HIGH_LIMIT, PCP_HUGE_ORDER, PCP_ORDERS, PCP_TYPES, pcp_index, pcp_index_of_zone_type,
    pcp_type,
};

mod registry;
mod set;
mod thread;

pub(crate) use registry::*;
use set::*;
pub use thread::THREAD_ARENAS;
pub(crate) use thread::*;

/// Ring capacity of the order-`o` list: a power of two above the largest
/// `high` it can have (`max(limit >> o, 2)` blocks) plus the one block a
/// free pushes before trimming.
const fn capacity(order: usize) -> usize {
    let most = if PCP_HIGH_LIMIT >> order > 2 { PCP_HIGH_LIMIT >> order } else { 2 };
    (most + 1).next_power_of_two()
}

const CAPACITY: [usize; PCP_ORDERS] = {
    let mut capacities = [0; PCP_ORDERS];
    let mut o = 0;
    while o < PCP_ORDERS {
        capacities[o] = capacity(o);
        o += 1;
    }
    capacities
};
const OFFSET: [usize; PCP_ORDERS] = {
    let mut offsets = [0; PCP_ORDERS];
    let mut o = 1;
    while o < PCP_ORDERS {
        offsets[o] = offsets[o - 1] + CAPACITY[o - 1];
        o += 1;
    }
    offsets
};
/// All rings of one zone and type in one array, sized to a power of two so
/// a masked index is provably in bounds. A type's rings are touched (and
/// their memory committed) only once that type is cached.
const SLOTS: usize = (OFFSET[PCP_ORDERS - 1] + CAPACITY[PCP_ORDERS - 1]).next_power_of_two();

/// `batch` blocks for an order-`order` list: the kernel's `nr_pcp_alloc`
/// (`max(batch >> order, 2)` above order 0), and one block above
/// [`PAGE_ALLOC_COSTLY_ORDER`]: a refill of large blocks takes no more
/// than the allocation needs.
fn batch_blocks(batch: usize, order: usize) -> usize {
    match order {
        0 => batch,
        o if o <= PAGE_ALLOC_COSTLY_ORDER as usize => (batch >> o).max(2),
        _ => 1,
    }
}

/// `high` blocks for an order-`order` list: `high` pages' worth (at least
/// a batch) up to [`PAGE_ALLOC_COSTLY_ORDER`], as the kernel's lists; an
/// eighth of that above it, at least one block, so that at the largest
/// `high` the orders between add less than `high` pages to what a thread
/// holds (the kernel bounds all its lists together by `high`). The huge
/// page order's list holds [`HUGE_BLOCKS`] apart from that bound: every
/// push onto it sets the purge timer ([`PCP_HUGE_ORDER`]).
fn high_blocks(high: usize, batch: usize, order: usize) -> usize {
    if order <= PAGE_ALLOC_COSTLY_ORDER as usize {
        (high >> order).max(batch_blocks(batch, order))
    } else if order == PCP_HUGE_ORDER {
        HUGE_BLOCKS
    } else {
        (high >> (order + 3)).max(1)
    }
}

/// Blocks the huge page order's list holds.
const HUGE_BLOCKS: usize = 1;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::order::Order;
    use crate::pcp_config::{zone_batchsize, zone_highsize};

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
        assert_eq!(batch_blocks(15, 3), 2);
        assert_eq!(batch_blocks(31, 4), 1);
        assert_eq!(high_blocks(1023, 63, 0), 1023);
        assert_eq!(high_blocks(1023, 63, 3), 127);
        assert_eq!(high_blocks(100, 63, 3), 12);
        assert_eq!(high_blocks(1023, 63, 4), 7);
        assert_eq!(high_blocks(1023, 63, 8), 1);
        assert_eq!(high_blocks(1023, 63, PCP_HUGE_ORDER), 1);
        // The orders between the costly and the huge one together: at most
        // `high` pages more; the huge list one 2 MiB block, which the purge
        // timer reaches.
        let large: usize = (4..PCP_HUGE_ORDER).map(|o| high_blocks(PCP_HIGH_LIMIT, 63, o) << o).sum();
        assert!(large <= PCP_HIGH_LIMIT, "{large} pages");
        assert_eq!(high_blocks(PCP_HIGH_LIMIT, 63, PCP_HUGE_ORDER) << PCP_HUGE_ORDER, 512);
    }

    #[test]
    fn rings_fit_the_largest_high_plus_one() {
        for (o, capacity) in CAPACITY.iter().enumerate() {
            let high = high_blocks(PCP_HIGH_LIMIT, PCP_HIGH_LIMIT, o);
            assert!(high < *capacity, "order {o}");
            assert!(capacity.is_power_of_two());
        }
        assert_eq!(
            OFFSET[PCP_ORDERS - 1] + CAPACITY[PCP_ORDERS - 1],
            1024 + 512 + 256 + 128 + 64 + 32 + 16 + 8 + 4 + 4
        );
        assert_eq!(SLOTS, 2048);
        for o in 0..PCP_ORDERS {
            assert!(OFFSET[o] + CAPACITY[o] <= SLOTS);
        }
    }

    #[test]
    fn a_heads_zone_byte_indexes_its_lists() {
        use crate::migratetype::Migratetype;
        use crate::page::{PageInfo, PageState};
        for zone in [0, 1, 63].map(|z| crate::zone_idx::ZoneIdx::new(z).unwrap()) {
            for mt in Migratetype::ALL {
                let word = PageInfo::new(PageState::Allocated, Order::of(3), 0, zone).with_migratetype(mt).pack();
                let index = pcp_index_of_zone_type(PageInfo::zone_type_of_word(word));
                assert_eq!(index, pcp_index(zone, mt));
                assert_eq!(index / PCP_TYPES, zone.index());
            }
        }
    }
}
