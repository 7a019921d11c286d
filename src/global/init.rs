//! The global arena: built by the first allocation, without allocating
//! through itself; its kswapd started right after (spawning a thread
//! allocates, which by then is safe), and again in a forked child.
//!
//! Racing first allocations: one builds, the others wait for it
//! ([`Lazy`]). A call from inside the build on the building thread gets
//! `None` and is served by `System`.

use std::cell::Cell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};

use super::env;
use crate::arena::Arena;
use crate::region::HugePages;
use crate::slab::Slabs;
use crate::support::boot::SysBox;
use crate::support::lazy::{Init, Lazy};
use crate::topology::Topology;

/// The global arena's largest block: 32 MiB (the kernel's 4 MiB would send
/// every buffer between 4 and 32 MiB to `System`, and a vector growing
/// past 4 MiB would be copied out of the arena instead of growing in
/// place into its free buddy).
pub(super) const GLOBAL_MAX_ORDER: u32 = 13;

/// How long free memory of the global arena may stay resident: 100 ms
/// (an arena's default is 1 s). Services churn memory fast; with 1 s, free
/// memory touched since the last purge kept RSS well above live data under
/// churn (examples/soak.rs: RSS over 1.5 x live + 64 MiB in a fifth to
/// half of the samples, 0 with 100 ms), and the global workloads' times
/// did not change measurably.
const GLOBAL_PURGE_DELAY: std::time::Duration = std::time::Duration::from_millis(100);

pub(super) static ARENA: Lazy<Arena> = Lazy::new();
pub(super) static SLABS: Slabs = Slabs::new();
static RECLAIM_STARTED: AtomicBool = AtomicBool::new(false);

std::thread_local! {
    static BUILDING_HERE: Cell<bool> = const { Cell::new(false) };
}

/// The global arena, if some allocation has built it.
///
/// Use it for page allocations next to the global heap, to register
/// shrinkers on it or to purge it:
///
/// ```no_run
/// if let Some(arena) = zonealloc::global_arena() {
///     arena.purge();
/// }
/// ```
#[inline]
pub fn global_arena() -> Option<&'static Arena> {
    ARENA.get()
}

/// The global arena, built now if no allocation has built it yet; `None`
/// if it cannot be built (or this thread is building it), and then the
/// system allocator serves.
#[inline]
pub(super) fn arena() -> Option<&'static Arena> {
    match global_arena() {
        Some(arena) => Some(arena),
        None => init(),
    }
}

/// Whether building the arena failed (everything is then `System`'s).
pub(super) fn failed() -> bool {
    ARENA.failed()
}

#[cold]
fn init() -> Option<&'static Arena> {
    let reentrant = || BUILDING_HERE.try_with(Cell::get).unwrap_or(true);
    let build = || {
        let _ = BUILDING_HERE.try_with(|b| b.set(true));
        let built = build_global_arena();
        let _ = BUILDING_HERE.try_with(|b| b.set(false));
        built
    };
    match ARENA.get_or_init(reentrant, build) {
        Init::Ready(arena) => Some(arena),
        Init::Built(arena) => {
            super::lifecycle::install_fork_handlers();
            start_reclaim();
            Some(arena)
        }
        Init::Failed | Init::Reentrant => None,
    }
}

/// Starts kswapd if this process has none yet (a forked child's first
/// allocation starts its own).
#[inline]
pub(super) fn ensure_reclaim() {
    if !RECLAIM_STARTED.load(Ordering::Relaxed) {
        start_reclaim();
    }
}

/// In a forked child: kswapd was not copied.
pub(super) fn reclaim_forgotten() {
    RECLAIM_STARTED.store(false, Ordering::Release);
}

#[cold]
fn start_reclaim() {
    if RECLAIM_STARTED.swap(true, Ordering::AcqRel) {
        return;
    }
    if let Some(arena) = global_arena() {
        // Spawning allocates: through us, now that the arena is ready.
        let _ = arena.start_kswapd();
        static REAPER_REGISTERED: AtomicBool = AtomicBool::new(false);
        if !REAPER_REGISTERED.swap(true, Ordering::AcqRel) {
            // For the life of the process.
            std::mem::forget(arena.register_shrinker(std::sync::Arc::new(OrphanReaper)));
        }
    }
}

/// Reclaim's way to the slabs of threads that exited: the orphans whose
/// objects have all been freed go back to the buddy allocator.
struct OrphanReaper;

impl crate::reclaim::shrinker::Shrinker for OrphanReaper {
    fn count(&self) -> usize {
        SLABS.orphan_pages()
    }

    fn scan(&self, _nr_to_scan: usize) -> crate::reclaim::shrinker::ShrinkResult {
        match global_arena() {
            Some(arena) => crate::reclaim::shrinker::ShrinkResult::Freed(SLABS.reap_orphans(arena)),
            None => crate::reclaim::shrinker::ShrinkResult::Stop,
        }
    }
}

/// Builds the arena as the environment asks; if that cannot be built,
/// says why and builds the default one.
fn build_global_arena() -> Option<NonNull<Arena>> {
    let config = env::read();
    let built = builder(config).build().or_else(|error| {
        if config == env::Config::default() {
            return Err(error);
        }
        env::report_build_failure(&error, "using the defaults");
        builder(env::Config::default()).build()
    });
    match built {
        Ok(arena) => Some(SysBox::try_new(arena)?.into_raw()),
        Err(error) => {
            env::report_build_failure(&error, "using the system allocator");
            None
        }
    }
}

fn builder(config: env::Config) -> crate::builder::ArenaBuilder {
    let block = crate::PAGE_SIZE << GLOBAL_MAX_ORDER;
    let region_size = match config.region_size {
        Some(asked) => {
            let used = asked.div_ceil(block).saturating_mul(block);
            if used != asked {
                env::report_rounded_region(asked, used);
            }
            used
        }
        None => physical_memory(),
    };
    let mut builder = Arena::builder().region_size(region_size).max_order(GLOBAL_MAX_ORDER);
    if let Some(zones) = config.zones {
        builder = builder.zones(zones);
    }
    // Reads the online-node list (and with several nodes, each node's
    // files) into stack buffers: no allocation.
    let topology = match config.numa.unwrap_or(env::NumaMode::Auto) {
        env::NumaMode::Off => None,
        env::NumaMode::Auto => Topology::detect_numa(),
        env::NumaMode::Simulated(nodes) => Topology::simulated(nodes).ok(),
    };
    if let Some(topology) = topology {
        builder = builder.topology(topology);
    }
    builder = builder.purge_delay(config.purge_delay.unwrap_or(Some(GLOBAL_PURGE_DELAY)));
    builder.huge_pages(config.huge_pages.unwrap_or(DEFAULT_HUGE_PAGES)).defer_reclaim_start()
}

/// Transparent huge pages for a Rust program (fewer TLB misses on large
/// heaps); base pages when zonealloc is any program's `malloc`
/// (`process-malloc`), as jemalloc and mimalloc default to: there most
/// programs are small, and the first object of a zone would fault in a
/// whole 2 MiB page (a 6 MiB floor of peak RSS where glibc starts at 1.5).
const DEFAULT_HUGE_PAGES: HugePages =
    if cfg!(feature = "process-malloc") { HugePages::None } else { HugePages::Transparent };

fn physical_memory() -> usize {
    // SAFETY: sysconf has no preconditions.
    let pages = unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) };
    usize::try_from(pages).map_or(1 << 30, |pages| pages.saturating_mul(crate::PAGE_SIZE)).max(64 << 20)
}
