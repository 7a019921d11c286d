//! [`ArenaBuilder`]: configuration, validated in full at `build()`.

use std::time::Duration;

use crate::PAGE_SIZE;
use crate::error::BuildError;
use crate::fault::FaultInjection;
use crate::oom::{OomAction, OomContext, OomHandler};
use crate::order::{MAX_ORDER_LIMIT, Order};
use crate::pcp_config::PcpConfig;
use crate::region::PurgeAdvice;
use crate::region::{HugePages, RegionOptions};
use crate::topology::Topology;
use crate::watermark::{WatermarkConfig, Watermarks};
use crate::zone_idx::MAX_ZONES;

/// The default number of zones is one per CPU, but no more than this.
const DEFAULT_ZONES_CAP: usize = 16;

/// By default a zone gets at least this many max-order blocks, so a small
/// region is split into fewer zones.
const MIN_BLOCKS_PER_ZONE: usize = 8;

/// Reclaim and purge settings; see the builder.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReclaimConfig {
    pub background: bool,
    /// kswapd is started later, by `Reclaimer::start` (the global arena:
    /// spawning a thread allocates, so it cannot happen inside the first
    /// allocation's arena build).
    pub deferred_start: bool,
    pub purge_delay: Option<Duration>,
    pub purge_advice: PurgeAdvice,
}

impl Default for ReclaimConfig {
    fn default() -> Self {
        Self {
            background: true,
            deferred_start: false,
            purge_delay: Some(Duration::from_secs(1)),
            purge_advice: PurgeAdvice::DontNeed,
        }
    }
}

/// Builds an [`Arena`](crate::Arena); every setting has a default.
///
/// ```
/// use zonealloc::{AllocFlags, Arena};
/// let arena = Arena::builder()
///     .region_size(256 << 20) // reserved, not committed
///     .zones(2)
///     .max_order(10) // 4 MiB blocks
///     .build()?;
/// let block = arena.alloc_pages(3, AllocFlags::ZERO)?; // 32 KiB, 32 KiB-aligned
/// assert_eq!(block.as_ptr() as usize % (32 << 10), 0);
/// // SAFETY: ours, order 3, not used again.
/// unsafe { arena.free_pages(block, 3)? };
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
#[must_use = "an ArenaBuilder does nothing until build() is called"]
pub struct ArenaBuilder {
    pub(crate) region_size: usize,
    pub(crate) zones: Option<usize>,
    pub(crate) max_order: u32,
    pub(crate) pageblock_order: Option<u32>,
    pub(crate) group_by_mobility: bool,
    pub(crate) defrag_mode: bool,
    pub(crate) watermarks: WatermarkConfig,
    pub(crate) pcp: PcpConfig,
    pub(crate) region: RegionOptions,
    pub(crate) reclaim: ReclaimConfig,
    pub(crate) oom_handler: Option<OomHandler>,
    pub(crate) fault: Option<FaultInjection>,
    pub(crate) topology: Option<Topology>,
    pub(crate) node_reclaim_mode: bool,
}

/// The most pages an arena may have under `--cfg loom`: every page's
/// metadata is a handful of loom atomics, and loom explores every
/// interleaving of their accesses. [`ArenaBuilder::for_loom`] gives 16.
pub const LOOM_MAX_PAGES: usize = 64;

impl Default for ArenaBuilder {
    /// The defaults each setting documents; under `--cfg loom`, those of
    /// [`for_loom`](Self::for_loom).
    fn default() -> Self {
        if cfg!(loom) {
            return Self::for_loom();
        }
        Self::production()
    }
}

impl ArenaBuilder {
    /// An arena a loom model can explore in seconds: 16 pages in one zone,
    /// blocks up to order 2, every page allocatable (no watermarks),
    /// per-thread caches of one block (`batch` 1, `high` 1), no kswapd
    /// thread and no purge timer. Under `--cfg loom` it is what
    /// [`Arena::builder`](crate::Arena::builder) starts from, and larger
    /// arenas (beyond [`LOOM_MAX_PAGES`]) are refused with
    /// [`BuildError::TooLargeForLoom`]; any setting can still be changed
    /// within that. See the README, "Using zonealloc in your own loom
    /// models".
    ///
    /// ```
    /// use zonealloc::{AllocFlags, ArenaBuilder};
    /// let arena = ArenaBuilder::for_loom().build()?;
    /// let page = arena.alloc_pages(0, AllocFlags::empty())?;
    /// // SAFETY: ours, order 0, not used again.
    /// unsafe { arena.free_pages(page, 0)? };
    /// assert_eq!(arena.stats().zones[0].managed, 16);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn for_loom() -> Self {
        Self {
            region_size: 16 * PAGE_SIZE,
            zones: Some(1),
            max_order: 2,
            watermarks: WatermarkConfig::PerZone(Watermarks { min: 0, low: 0, high: 0 }),
            pcp: PcpConfig::Fixed { batch: 1, high: 1 },
            reclaim: ReclaimConfig { background: false, purge_delay: None, ..ReclaimConfig::default() },
            ..Self::production()
        }
    }

    fn production() -> Self {
        Self {
            region_size: 1 << 30,
            zones: None,
            max_order: 10,
            pageblock_order: None,
            group_by_mobility: true,
            defrag_mode: false,
            watermarks: WatermarkConfig::default(),
            pcp: PcpConfig::default(),
            region: RegionOptions::default(),
            reclaim: ReclaimConfig::default(),
            oom_handler: None,
            fault: None,
            topology: None,
            node_reclaim_mode: false,
        }
    }
}

impl ArenaBuilder {
    /// Bytes to reserve (default 1 GiB), rounded up to a whole number of
    /// max-order blocks. Reserving costs address space, not memory.
    pub fn region_size(mut self, bytes: usize) -> Self {
        self.region_size = bytes;
        self
    }

    /// Number of zones, each with its own lock (default: one per CPU, at
    /// most 16, and fewer if the region would give a zone fewer than 8
    /// max-order blocks). At most [`MAX_ZONES`]. With a
    /// [`topology`](Self::topology), zones per node (default: the CPUs per
    /// node), and at most [`MAX_ZONES`] in all.
    pub fn zones(mut self, zones: usize) -> Self {
        self.zones = Some(zones);
        self
    }

    /// The NUMA nodes the arena spreads its zones over (default: none, one
    /// node). Each node gets [`zones`](Self::zones) zones, an equal part of
    /// the region; a detected topology's parts are bound to their nodes
    /// before first touch (a simulated one's are not). Threads allocate
    /// from their CPU's node first and fall back by distance; see
    /// [`Arena::alloc_pages_node`](crate::Arena::alloc_pages_node) and
    /// [`AllocFlags::THISNODE`](crate::AllocFlags::THISNODE).
    pub fn topology(mut self, topology: Topology) -> Self {
        self.topology = Some(topology);
        self
    }

    /// The kernel's `node_reclaim_mode` (default off, as there): with a
    /// [`topology`](Self::topology), an allocation whose node is short
    /// first asks the shrinkers for that node's pages
    /// ([`Shrinker::scan_node`](crate::Shrinker::scan_node)) and tries the
    /// node again, before it falls back to a remote node. Off, it falls
    /// back at once: remote memory is usually cheaper than reclaim.
    pub fn node_reclaim_mode(mut self, enabled: bool) -> Self {
        self.node_reclaim_mode = enabled;
        self
    }

    /// The largest block is `4 KiB << max_order` (default 10: 4 MiB; at most
    /// 20: 4 GiB). The region is aligned to it.
    pub fn max_order(mut self, max_order: u32) -> Self {
        self.max_order = max_order;
        self
    }

    /// The unit migratetypes are kept for: `4 KiB << pageblock_order`
    /// (default 9, a 2 MiB huge page, or `max_order` if that is smaller; at
    /// most `max_order`).
    pub fn pageblock_order(mut self, order: u32) -> Self {
        self.pageblock_order = Some(order);
        self
    }

    /// Group pages by mobility (default true): `MOVABLE` and `RECLAIMABLE`
    /// allocations come from pageblocks of their own type, so that freeing
    /// them leaves whole high-order blocks. `false` treats every
    /// allocation as unmovable, one set of lists as before grouping (the
    /// kernel's `page_group_by_mobility_disabled`).
    pub fn group_by_mobility(mut self, enabled: bool) -> Self {
        self.group_by_mobility = enabled;
        self
    }

    /// The kernel's `vm.defrag_mode` (default false): a request whose own
    /// type has no free memory takes a whole free pageblock of another
    /// type, and if there is none, the slow path first wakes kcompactd to
    /// keep whole pageblocks free, then compacts (towards a free pageblock,
    /// for order 0 too) and reclaims; only when that fails does it split a
    /// foreign pageblock, as without defrag mode. The price is slow paths
    /// where a fallback would have been immediate; the gain is pageblocks
    /// that stay of one type. Unlike the kernel's, a request that may not
    /// retry (`NORETRY`, costly orders, `ATOMIC`/`NOWAIT`) still falls back
    /// rather than fail while memory is free. Needs grouping by mobility;
    /// compaction needs movable owners
    /// ([`Arena::register_movable`](crate::Arena::register_movable)).
    pub fn defrag_mode(mut self, enabled: bool) -> Self {
        self.defrag_mode = enabled;
        self
    }

    /// `pageblock_order` in force.
    pub(crate) fn effective_pageblock_order(&self) -> u32 {
        self.pageblock_order.unwrap_or(DEFAULT_PAGEBLOCK_ORDER.min(self.max_order))
    }

    /// How each zone's min/low/high watermarks are set (default: the
    /// kernel's formula).
    pub fn watermarks(mut self, config: WatermarkConfig) -> Self {
        self.watermarks = config;
        self
    }

    /// Per-thread page caches for orders 0..=`PCP_MAX_ORDER` (default: sized as the kernel
    /// sizes its per-CPU lists). [`PcpConfig::Disabled`] sends every
    /// operation to its zone's lock.
    pub fn pcp(mut self, config: PcpConfig) -> Self {
        self.pcp = config;
        self
    }

    /// Run a background reclaim thread (the kernel's kswapd; default true).
    /// Without it, reclaim happens only in allocating threads (direct
    /// reclaim) and free memory is purged only by [`Arena::purge`](crate::Arena::purge).
    pub fn background_reclaim(mut self, enabled: bool) -> Self {
        self.reclaim.background = enabled;
        self
    }

    /// The reclaim thread's purge period while free memory is resident
    /// (default 1 s; `None`: only on [`Arena::purge`](crate::Arena::purge)
    /// and [`Arena::purge_stale`](crate::Arena::purge_stale)): each pass
    /// is a `purge_stale`, handing back what stayed free for the period
    /// and what exceeds the share kept. Each time the timer fires,
    /// per-thread caches are returned too, so RSS falls when the program
    /// goes idle.
    pub fn purge_delay(mut self, delay: Option<Duration>) -> Self {
        self.reclaim.purge_delay = delay;
        self
    }

    /// Build without starting kswapd; the global allocator starts it once
    /// the arena is in place (`Reclaimer::start`).
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn defer_reclaim_start(mut self) -> Self {
        self.reclaim.deferred_start = true;
        self
    }

    /// How purged memory is handed back (default `MADV_DONTNEED`).
    pub fn purge_advice(mut self, advice: PurgeAdvice) -> Self {
        self.reclaim.purge_advice = advice;
        self
    }

    /// What to do when reclaim cannot satisfy an allocation (the kernel's
    /// OOM killer). The handler may free memory and return
    /// [`OomAction::Retry`]; the default fails the allocation. It is called
    /// from the allocating thread with no arena lock held.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    /// use zonealloc::{AllocFlags, Arena, OomAction};
    /// let calls = Arc::new(AtomicUsize::new(0));
    /// let seen = calls.clone();
    /// let arena = Arena::builder()
    ///     .region_size(4 << 20)
    ///     .oom_handler(move |ctx| {
    ///         seen.fetch_add(1, Ordering::Relaxed);
    ///         assert_eq!(ctx.order, 10);
    ///         OomAction::Fail
    ///     })
    ///     .build()?;
    /// // 4 MiB cannot be had: the watermarks keep a reserve.
    /// assert!(arena.alloc_pages(10, AllocFlags::RETRY_MAYFAIL.union(AllocFlags::NOWARN)).is_err());
    /// assert_eq!(calls.load(Ordering::Relaxed), 0); // RETRY_MAYFAIL skips it
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn oom_handler(mut self, handler: impl Fn(&OomContext) -> OomAction + Send + Sync + 'static) -> Self {
        self.oom_handler = Some(OomHandler(std::sync::Arc::new(handler)));
        self
    }

    /// Fail allocations on purpose, for testing callers (the kernel's
    /// `fail_page_alloc`). Arenas with fault injection have no per-thread
    /// caches.
    pub fn fail_alloc(mut self, injection: FaultInjection) -> Self {
        self.fault = Some(injection);
        self
    }

    /// Huge page backing (default [`HugePages::None`]).
    pub fn huge_pages(mut self, huge_pages: HugePages) -> Self {
        self.region.huge_pages = huge_pages;
        self
    }

    /// Commit the whole region at `build()` instead of on first touch
    /// (default false).
    pub fn prefault(mut self, prefault: bool) -> Self {
        self.region.prefault = prefault;
        self
    }

    /// Leave the region out of core dumps (`MADV_DONTDUMP`, default false).
    pub fn exclude_from_core_dumps(mut self, exclude: bool) -> Self {
        self.region.dont_dump = exclude;
        self
    }

    /// Leave the region out of `fork` children (`MADV_DONTFORK`, default
    /// false). Only for page pools whose children never touch them.
    pub fn exclude_from_fork(mut self, exclude: bool) -> Self {
        self.region.dont_fork = exclude;
        self
    }

    /// Validates every setting and works out the zones.
    pub(crate) fn layout(&self) -> Result<ZoneLayout, BuildError> {
        self.pcp.validate()?;
        let Some(max_order) = Order::new(self.max_order) else {
            return Err(BuildError::MaxOrderTooLarge { max_order: self.max_order, limit: MAX_ORDER_LIMIT });
        };
        let pageblock_order = self.effective_pageblock_order();
        let Some(pageblock_order) = Order::new(pageblock_order).filter(|&o| o <= max_order) else {
            return Err(BuildError::PageblockOrderTooLarge { pageblock_order, max_order: self.max_order });
        };
        let block_size = PAGE_SIZE << self.max_order;
        let too_large = BuildError::RegionTooLarge { region_size: self.region_size };
        let region_size = self.region_size.checked_next_multiple_of(block_size).ok_or(too_large)?;
        let pages = region_size / PAGE_SIZE;
        if pages >= u32::MAX as usize {
            return Err(BuildError::RegionTooLarge { region_size: self.region_size });
        }
        if cfg!(loom) && pages > LOOM_MAX_PAGES {
            return Err(BuildError::TooLargeForLoom { pages, limit: LOOM_MAX_PAGES });
        }
        let blocks = region_size / block_size;
        let nodes = self.topology.as_ref().map_or(1, Topology::nodes);
        let zones_per_node = match self.zones {
            Some(0) => return Err(BuildError::ZeroZones),
            Some(zones) if zones * nodes > MAX_ZONES => {
                return Err(BuildError::TooManyZones { zones: zones * nodes, limit: MAX_ZONES });
            }
            Some(zones) => zones,
            None => cpu_count()
                .div_ceil(nodes)
                .clamp(1, DEFAULT_ZONES_CAP)
                .min(blocks / (MIN_BLOCKS_PER_ZONE * nodes))
                .min(MAX_ZONES / nodes)
                .max(1),
        };
        let zones = zones_per_node * nodes;
        if blocks < zones {
            return Err(BuildError::RegionTooSmall {
                region_size: self.region_size,
                needed: zones * block_size,
                zones,
                block_size,
            });
        }
        let mut zone_blocks = [0usize; MAX_ZONES];
        for (i, n) in zone_blocks.iter_mut().take(zones).enumerate() {
            *n = blocks / zones + usize::from(i < blocks % zones);
        }
        let mut marks = [Watermarks::default(); MAX_ZONES];
        for zone in 0..zones {
            let managed = zone_blocks[zone] << self.max_order;
            let m = self.watermarks.for_zone(managed, pages);
            if !(m.min <= m.low && m.low <= m.high && m.high < managed) {
                return Err(BuildError::InvalidWatermarks { zone, min: m.min, low: m.low, high: m.high, managed });
            }
            marks[zone] = m;
        }
        Ok(ZoneLayout { region_size, pages, max_order, pageblock_order, zones, zones_per_node, zone_blocks, marks })
    }
}

/// `pageblock_order` when not set: a 2 MiB huge page, as on x86-64.
const DEFAULT_PAGEBLOCK_ORDER: u32 = 9;

/// A validated configuration: the region and each zone's share of it.
pub(crate) struct ZoneLayout {
    pub region_size: usize,
    pub pages: usize,
    pub max_order: Order,
    pub pageblock_order: Order,
    pub zones: usize,
    pub zones_per_node: usize,
    pub zone_blocks: [usize; MAX_ZONES],
    pub marks: [Watermarks; MAX_ZONES],
}

/// CPUs this thread may run on, without allocating (`available_parallelism`
/// reads cgroup files through the heap).
pub(crate) fn cpu_count() -> usize {
    #[cfg(not(loom))]
    {
        // SAFETY: a zeroed cpu_set_t is a valid empty set, filled by the call.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: pid 0 is this thread; `set` is a valid buffer of the size given.
        let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
        if rc == 0 {
            // SAFETY: `set` was filled by the kernel.
            return (unsafe { libc::CPU_COUNT(&set) }).max(1) as usize;
        }
        1
    }
    #[cfg(loom)]
    {
        1
    }
}
