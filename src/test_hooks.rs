//! Faults a test plants inside the allocator, to see how it fails when an
//! invariant breaks: one line and an abort, never a hang. Built only with
//! the `test-hooks` feature, which the crate's own tests turn on (its
//! dev-dependency on itself); release builds of users never have it.

use crate::buddy::Buddy;
use crate::migratetype::Migratetype;
use crate::order::Order;
// A plain std atomic, also under loom: a switch a test sets before the
// model (or process) runs, not a protocol.
use std::sync::atomic::{AtomicU8, Ordering};

/// What the next refill of a page cache does while it holds its zone's
/// lock (in `Zone::rmqueue_bulk`), once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum InZoneLock {
    /// Nothing (the fault was used, or none was planted).
    Nothing = 0,
    /// Panics, as a failed bounds check or assertion would.
    Panic = 1,
    /// Points the free list the refill takes from at a page beyond the
    /// region, as a bug that overwrote a list link would.
    BreakFreeList = 2,
}

static PLANTED: AtomicU8 = AtomicU8::new(InZoneLock::Nothing as u8);

/// Plants `fault` in the next page-cache refill of any arena of the
/// process (the global allocator's included).
pub fn plant_in_next_refill(fault: InZoneLock) {
    PLANTED.store(fault as u8, Ordering::Relaxed);
}

/// Fires a planted fault, under the zone lock of a refill of `order`, `mt`.
pub(crate) fn fire_in_zone_lock(buddy: &mut Buddy, order: Order, mt: Migratetype) {
    match PLANTED.swap(InZoneLock::Nothing as u8, Ordering::Relaxed) {
        1 => panic!("zonealloc test hook: a panic inside a zone lock"),
        2 => buddy.break_free_list(order, mt),
        _ => {}
    }
}
