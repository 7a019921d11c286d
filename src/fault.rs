//! Fault injection: the kernel's `should_fail_alloc_page`, for testing how
//! callers cope with allocation failure.

use crate::flags::AllocFlags;
use crate::support::sync::{AtomicU64, Ordering};

/// Which allocations fail on purpose; see
/// [`ArenaBuilder::fail_alloc`](crate::ArenaBuilder::fail_alloc).
///
/// An arena with fault injection has no per-thread caches, so every
/// allocation passes the check. `NOFAIL` allocations are never failed.
///
/// ```
/// use zonealloc::{AllocError, AllocFlags, Arena, FaultInjection};
/// let arena = Arena::builder()
///     .region_size(64 << 20)
///     .fail_alloc(FaultInjection { every_nth: Some(3), ..FaultInjection::default() })
///     .build()?;
/// let results: Vec<bool> = (0..6).map(|_| arena.alloc_pages(0, AllocFlags::empty()).is_ok()).collect();
/// assert_eq!(results, [true, true, false, true, true, false]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FaultInjection {
    /// Fail every `n`th eligible allocation.
    pub every_nth: Option<u64>,
    /// Fail each eligible allocation with this probability (0.0..=1.0),
    /// drawn from a generator seeded with `seed`, so runs repeat.
    pub probability: Option<f64>,
    /// Seed for `probability`.
    pub seed: u64,
    /// Only allocations of at least this order are eligible.
    pub min_order: u32,
}

pub(crate) struct FaultState {
    config: FaultInjection,
    count: AtomicU64,
    rng: AtomicU64,
    pub injected: AtomicU64,
}

impl FaultState {
    pub(crate) fn new(config: FaultInjection) -> Self {
        Self { config, count: AtomicU64::new(0), rng: AtomicU64::new(config.seed), injected: AtomicU64::new(0) }
    }

    /// `should_fail_alloc_page`.
    pub(crate) fn should_fail(&self, order: u32, flags: AllocFlags) -> bool {
        if flags.contains(AllocFlags::NOFAIL) || order < self.config.min_order {
            return false;
        }
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        let by_count = self.config.every_nth.is_some_and(|k| k > 0 && n.is_multiple_of(k));
        let by_chance = self.config.probability.is_some_and(|p| {
            // splitmix64 over an atomic counter: one draw per eligible call.
            let mut z =
                self.rng.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed).wrapping_add(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            ((z >> 11) as f64) / ((1u64 << 53) as f64) < p
        });
        let fail = by_count || by_chance;
        if fail {
            self.injected.fetch_add(1, Ordering::Relaxed);
        }
        fail
    }
}
