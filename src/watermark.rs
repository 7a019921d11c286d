//! Zone watermarks: computed as `__setup_per_zone_wmarks` does and checked as
//! `__zone_watermark_ok` does.

use crate::flags::AllocFlags;
use crate::order::Order;

/// A zone's watermarks, in pages.
///
/// Above `high` the zone is balanced and reclaim sleeps; an allocation that
/// leaves it below `low` wakes reclaim; `min` is the reserve that only
/// `HIGH`/`ATOMIC` callers and reclaim itself may dip into.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Watermarks {
    /// The reserve (`WMARK_MIN`).
    pub min: usize,
    /// Reclaim wakes below this (`WMARK_LOW`).
    pub low: usize,
    /// Reclaim stops above this (`WMARK_HIGH`).
    pub high: usize,
}

/// How watermarks are chosen; see [`ArenaBuilder::watermarks`](crate::ArenaBuilder::watermarks).
///
/// ```
/// use zonealloc::{Arena, WatermarkConfig};
/// // The kernel's formula with a larger reserve and 1% steps between marks.
/// let arena = Arena::builder()
///     .region_size(64 << 20)
///     .zones(1)
///     .watermarks(WatermarkConfig::Kernel { min_free_kbytes: Some(1024), scale_factor: 100 })
///     .build()
///     .unwrap();
/// let wm = arena.stats().zones[0].watermarks;
/// assert_eq!(wm.min, 256); // 1024 KiB
/// assert_eq!(wm.low, 256 + 163); // delta = max(min / 4, managed * 100 / 10000)
/// assert_eq!(wm.high, 256 + 2 * 163);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatermarkConfig {
    /// The kernel's formula (`__setup_per_zone_wmarks`): a reserve of
    /// `min_free_kbytes` (default `sqrt(16 * region KiB)`, clamped to
    /// 128 KiB ..= 256 MiB and to an eighth of the arena) split across zones
    /// by size; then `delta = max(min / 4, managed * scale_factor / 10000)`,
    /// `low = min + delta`, `high = low + delta`.
    Kernel {
        /// The arena-wide reserve in KiB; `None` for the kernel's default.
        min_free_kbytes: Option<usize>,
        /// The kernel's `watermark_scale_factor` (default 10, i.e. 0.1%).
        scale_factor: u32,
    },
    /// The same explicit marks, in pages, for every zone.
    PerZone(Watermarks),
}

impl Default for WatermarkConfig {
    fn default() -> Self {
        Self::Kernel { min_free_kbytes: None, scale_factor: 10 }
    }
}

impl WatermarkConfig {
    /// The marks of a zone managing `managed` of the arena's `total` pages.
    pub(crate) fn for_zone(&self, managed: usize, total: usize) -> Watermarks {
        match *self {
            Self::PerZone(marks) => marks,
            Self::Kernel { min_free_kbytes, scale_factor } => {
                let total_kbytes = total * (crate::PAGE_SIZE / 1024);
                let min_free_kbytes = min_free_kbytes.unwrap_or_else(|| default_min_free_kbytes(total_kbytes));
                let min_free_pages = min_free_kbytes / (crate::PAGE_SIZE / 1024);
                let min = (min_free_pages as u128 * managed as u128 / total.max(1) as u128) as usize;
                let delta = (min / 4).max((managed as u128 * u128::from(scale_factor) / 10_000) as usize);
                Watermarks { min, low: min + delta, high: min + 2 * delta }
            }
        }
    }
}

/// `init_per_zone_wmark_min`: `sqrt(16 * KiB)` clamped to 128 KiB ..= 256 MiB,
/// and (unlike the kernel, which never manages a few MiB) to an eighth of the
/// arena so that small arenas keep most of their memory usable.
fn default_min_free_kbytes(total_kbytes: usize) -> usize {
    (total_kbytes.saturating_mul(16).isqrt()).clamp(128, 262_144).min(total_kbytes / 8)
}

/// Which watermark an allocation attempt is checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mark {
    Min,
    Low,
    High,
}

/// The kernel's `ALLOC_*` flags for one attempt, derived from [`AllocFlags`]
/// as `gfp_to_alloc_flags` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AllocMode {
    /// The mark to check, or `None` for `ALLOC_NO_WATERMARKS` (reclaim's own
    /// allocations).
    pub mark: Option<Mark>,
    /// `ALLOC_HIGH`: may use half the reserve.
    pub high: bool,
    /// `ALLOC_HARDER`: may use a further quarter of it.
    pub harder: bool,
    /// `ALLOC_HIGHATOMIC`: a high-order request that cannot wait; takes
    /// from the high-atomic reserve first and may grow it.
    pub highatomic: bool,
    /// `ALLOC_NOFRAGMENT` cleared in defrag mode: a fallback may split a
    /// foreign pageblock (the slow path's last resort; see
    /// [`ArenaBuilder::defrag_mode`](crate::ArenaBuilder::defrag_mode)).
    pub may_fragment: bool,
}

impl AllocMode {
    pub(crate) fn new(mark: Mark, order: Order, flags: AllocFlags) -> Self {
        let atomic = flags.contains(AllocFlags::ATOMIC);
        Self {
            mark: Some(mark),
            high: atomic || flags.contains(AllocFlags::HIGH),
            harder: atomic,
            highatomic: Self::highatomic(order, flags),
            may_fragment: false,
        }
    }

    /// The same attempt, allowed to split a foreign pageblock.
    pub(crate) fn fragmenting(self) -> Self {
        Self { may_fragment: true, ..self }
    }

    /// Whether a request is `ALLOC_HIGHATOMIC`: above order 0 and unable to
    /// wait (`gfp_to_alloc_flags`).
    #[inline]
    pub(crate) fn highatomic(order: Order, flags: AllocFlags) -> bool {
        order > Order::ZERO && !flags.may_wait()
    }

    /// `ALLOC_NO_WATERMARKS`: for a thread that is itself reclaiming (the
    /// kernel's `PF_MEMALLOC`). The arena's capacity still holds.
    /// It may fragment too: reclaim must not fail for want of a pageblock.
    pub(crate) const NO_WATERMARKS: Self =
        Self { mark: None, high: false, harder: false, highatomic: false, may_fragment: true };
}

/// `__zone_watermark_ok`: may an order-`order` block be taken from a zone with
/// `free_pages` free when the mark is `mark`? `order_mask` has bit `o` set
/// when a free block of order `o` exists.
///
/// The order-0 part is `free - (2^order - 1) > mark` after the reserve
/// discounts; for order > 0 a free block of at least that order must exist too.
#[inline]
pub(crate) fn zone_watermark_ok(
    free_pages: usize,
    order: Order,
    mark: usize,
    mode: AllocMode,
    order_mask: u32,
) -> bool {
    let unusable = order.pages() - 1;
    let Some(free) = free_pages.checked_sub(unusable) else { return false };
    let mut min = mark;
    if mode.high {
        min -= min / 2;
    }
    if mode.harder {
        min -= min / 4;
    }
    if free <= min {
        return false;
    }
    order == Order::ZERO || order_mask >> order.get() != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: AllocMode =
        AllocMode { mark: Some(Mark::Min), high: false, harder: false, highatomic: false, may_fragment: false };

    #[test]
    fn order_zero_needs_strictly_more_than_the_mark() {
        assert!(!zone_watermark_ok(100, Order::of(0), 100, PLAIN, 1));
        assert!(zone_watermark_ok(101, Order::of(0), 100, PLAIN, 1));
    }

    #[test]
    fn reserve_discounts_follow_the_kernel() {
        let high = AllocMode::new(Mark::Min, Order::of(0), AllocFlags::HIGH);
        let atomic = AllocMode::new(Mark::Min, Order::of(0), AllocFlags::ATOMIC);
        // HIGH: min - min/2 = 50; ATOMIC: 50 - 50/4 = 38.
        assert!(!zone_watermark_ok(50, Order::of(0), 100, high, 1));
        assert!(zone_watermark_ok(51, Order::of(0), 100, high, 1));
        assert!(!zone_watermark_ok(38, Order::of(0), 100, atomic, 1));
        assert!(zone_watermark_ok(39, Order::of(0), 100, atomic, 1));
        assert_eq!(
            AllocMode::new(Mark::Low, Order::of(0), AllocFlags::NOWAIT),
            AllocMode { mark: Some(Mark::Low), ..PLAIN }
        );
    }

    #[test]
    fn higher_orders_discount_their_size_and_need_a_block() {
        // order 2: free - 3 must exceed the mark.
        assert!(!zone_watermark_ok(103, Order::of(2), 100, PLAIN, 1 << 2));
        assert!(zone_watermark_ok(104, Order::of(2), 100, PLAIN, 1 << 2));
        // Enough pages but only order-1 blocks: fails.
        assert!(!zone_watermark_ok(1000, Order::of(2), 100, PLAIN, 0b11));
        assert!(zone_watermark_ok(1000, Order::of(2), 100, PLAIN, 1 << 5));
    }

    #[test]
    fn kernel_formula_matches_by_hand() {
        // 1 GiB in one zone: min_free_kbytes = sqrt(16 * 1 Mi) = 4096 KiB = 1024 pages.
        let total = 1 << 18;
        let wm = WatermarkConfig::default().for_zone(total, total);
        assert_eq!(wm.min, 1024);
        // delta = max(256, 262144 * 10 / 10000 = 262) = 262
        assert_eq!(wm, Watermarks { min: 1024, low: 1286, high: 1548 });
        // Two equal zones split the reserve.
        let half = WatermarkConfig::default().for_zone(total / 2, total);
        assert_eq!(half.min, 512);
        // A 1 MiB arena: the 128 KiB floor would be an eighth; the cap keeps it there.
        assert_eq!(default_min_free_kbytes(1024), 128);
        assert_eq!(default_min_free_kbytes(512), 64);
    }
}
