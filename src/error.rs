//! The errors of the public API. Each says what went wrong and, for
//! configuration, what to change.

use std::fmt;

/// Why [`ArenaBuilder::build`](crate::ArenaBuilder::build) refused a configuration.
#[derive(Debug)]
#[non_exhaustive]
pub enum BuildError {
    /// `max_order` is above what the allocator supports.
    MaxOrderTooLarge {
        /// The order asked for.
        max_order: u32,
        /// The largest order supported.
        limit: u32,
    },
    /// `pageblock_order` is above `max_order`.
    PageblockOrderTooLarge {
        /// The order asked for.
        pageblock_order: u32,
        /// The arena's `max_order`.
        max_order: u32,
    },
    /// `zones(0)` was asked for.
    ZeroZones,
    /// More zones than the allocator supports.
    TooManyZones {
        /// The number asked for.
        zones: usize,
        /// The most supported.
        limit: usize,
    },
    /// The region cannot give every zone at least one max-order block.
    RegionTooSmall {
        /// The region size asked for, in bytes.
        region_size: usize,
        /// The smallest region that works with these zones and `max_order`.
        needed: usize,
        /// The number of zones.
        zones: usize,
        /// The largest block, in bytes.
        block_size: usize,
    },
    /// The region is larger than the allocator can index (2^32 pages) or the
    /// address space allows.
    RegionTooLarge {
        /// The region size asked for, in bytes.
        region_size: usize,
    },
    /// Explicit watermarks that cannot hold for the zone.
    InvalidWatermarks {
        /// The zone whose size they do not fit.
        zone: usize,
        /// `min`, in pages.
        min: usize,
        /// `low`, in pages.
        low: usize,
        /// `high`, in pages.
        high: usize,
        /// The pages the zone manages.
        managed: usize,
    },
    /// Per-thread cache parameters that cannot work.
    InvalidPcp {
        /// What is wrong with them.
        reason: &'static str,
    },
    /// The OS page size is not 4 KiB.
    UnsupportedPageSize {
        /// The OS page size.
        page_size: usize,
    },
    /// `mmap` refused the reservation.
    Map {
        /// The bytes asked of mmap.
        region_size: usize,
        /// The OS error.
        source: std::io::Error,
    },
    /// `HugePages::Explicit` and too few huge pages are reserved.
    HugePagesUnavailable {
        /// 2 MiB pages the region needs.
        needed: usize,
        /// 2 MiB pages free on the system, if known.
        free: Option<usize>,
        /// The OS error.
        source: std::io::Error,
    },
    /// `madvise` refused an option.
    Advise {
        /// The advice that failed.
        advice: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The arena's own bookkeeping could not be allocated.
    OutOfMetadataMemory,
    /// `mbind` refused to bind a node's part of the region to its node.
    Bind {
        /// The machine's node number.
        node: usize,
        /// The OS error.
        source: std::io::Error,
    },
    /// The reclaim thread could not be started.
    SpawnReclaim {
        /// The OS error.
        source: std::io::Error,
    },
    /// Under `--cfg loom`: more pages than a loom model can explore.
    TooLargeForLoom {
        /// The pages the region would have.
        pages: usize,
        /// The most allowed ([`LOOM_MAX_PAGES`](crate::LOOM_MAX_PAGES)).
        limit: usize,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MaxOrderTooLarge { max_order, limit } => write!(
                f,
                "max_order {max_order} is too large: the largest supported is {limit} \
                 ({} MiB blocks); lower max_order",
                (crate::PAGE_SIZE << limit) >> 20
            ),
            Self::PageblockOrderTooLarge { pageblock_order, max_order } => write!(
                f,
                "pageblock_order {pageblock_order} is above max_order {max_order}: a pageblock cannot be larger \
                 than the largest block"
            ),
            Self::ZeroZones => write!(f, "zones(0): an arena needs at least one zone"),
            Self::TooManyZones { zones, limit } => {
                write!(f, "zones({zones}) is more than the {limit} supported; ask for fewer zones")
            }
            Self::RegionTooSmall { region_size, needed, zones, block_size } => write!(
                f,
                "region_size {region_size} bytes is too small for {zones} zone(s) of \
                 max-order blocks of {block_size} bytes: it needs at least {needed} bytes; \
                 raise region_size, or lower zones or max_order"
            ),
            Self::RegionTooLarge { region_size } => write!(
                f,
                "region_size {region_size} bytes is too large: at most 2^32 pages \
                 (16 TiB) can be managed; lower region_size"
            ),
            Self::InvalidWatermarks { zone, min, low, high, managed } => write!(
                f,
                "watermarks min={min} low={low} high={high} (pages) do not fit zone {zone} \
                 of {managed} pages: they need min <= low <= high < managed pages"
            ),
            Self::InvalidPcp { reason } => write!(f, "invalid per-thread cache settings: {reason}"),
            Self::UnsupportedPageSize { page_size } => {
                write!(f, "the OS page size is {page_size} bytes; zonealloc manages 4096-byte pages only")
            }
            Self::Map { region_size, source } => {
                write!(f, "mmap of {region_size} bytes failed: {source}; lower region_size")
            }
            Self::HugePagesUnavailable { needed, free, source } => {
                write!(
                    f,
                    "explicit huge pages: mmap(MAP_HUGETLB) failed ({source}): the region needs {needed} 2 MiB huge pages"
                )?;
                match free {
                    Some(free) => write!(f, " and the system has {free} free")?,
                    None => write!(f, " and the system reports none")?,
                }
                write!(f, "; reserve more in /proc/sys/vm/nr_hugepages or use HugePages::Transparent")
            }
            Self::Advise { advice, source } => write!(f, "madvise({advice}) failed: {source}"),
            Self::OutOfMetadataMemory => write!(f, "out of memory for the arena's own bookkeeping"),
            Self::Bind { node, source } => {
                write!(f, "mbind to node {node} failed ({source}); use Topology::simulated for nodes without binding")
            }
            Self::SpawnReclaim { source } => write!(
                f,
                "could not start the reclaim thread ({source}); build with \
                 background_reclaim(false) to run without it"
            ),
            Self::TooLargeForLoom { pages, limit } => write!(
                f,
                "under --cfg loom an arena of {pages} pages is more than a loom model can explore \
                 (at most {limit}); build it from ArenaBuilder::for_loom() (16 pages), or with a \
                 region_size of at most {} bytes",
                limit * crate::PAGE_SIZE
            ),
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Map { source, .. }
            | Self::HugePagesUnavailable { source, .. }
            | Self::Advise { source, .. }
            | Self::Bind { source, .. }
            | Self::SpawnReclaim { source } => Some(source),
            _ => None,
        }
    }
}

/// Why a [`Topology`](crate::Topology) was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TopologyError {
    /// No nodes: a machine has at least one.
    NoNodes,
    /// More nodes than a topology holds.
    TooManyNodes {
        /// The number asked for.
        nodes: usize,
        /// The most supported ([`MAX_NUMNODES`](crate::MAX_NUMNODES)).
        limit: usize,
    },
    /// A row of the distance table is not as long as the table.
    NotSquare {
        /// The row.
        row: usize,
        /// Its length.
        len: usize,
        /// The number of nodes (rows).
        nodes: usize,
    },
    /// Not one CPU list per node.
    CpuListCount {
        /// The number of nodes (rows of the distance table).
        nodes: usize,
        /// The number of CPU lists.
        cpu_lists: usize,
    },
    /// A distance that is not `LOCAL_DISTANCE` (10) from a node to itself,
    /// or not 11 to 255 between two nodes.
    BadDistance {
        /// The node it is from.
        from: usize,
        /// The node it is to.
        to: usize,
        /// The distance given.
        distance: u32,
    },
    /// A CPU number at or above [`MAX_CPUS`](crate::MAX_CPUS).
    CpuTooLarge {
        /// The CPU.
        cpu: usize,
        /// The first CPU number not supported.
        limit: usize,
    },
    /// A CPU listed on two nodes.
    CpuOnTwoNodes {
        /// The CPU.
        cpu: usize,
        /// The first node listing it.
        first: usize,
        /// The second.
        second: usize,
    },
}

impl fmt::Display for TopologyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NoNodes => write!(f, "a topology needs at least one node"),
            Self::TooManyNodes { nodes, limit } => write!(f, "{nodes} nodes; at most {limit} are supported"),
            Self::NotSquare { row, len, nodes } => {
                write!(f, "row {row} of the distance table has {len} distances; each needs one per node ({nodes})")
            }
            Self::CpuListCount { nodes, cpu_lists } => {
                write!(f, "{cpu_lists} CPU lists for {nodes} nodes; give one per node (empty for a memory-only node)")
            }
            Self::BadDistance { from, to, distance } if from == to => {
                write!(f, "distance {distance} from node {from} to itself; it must be 10")
            }
            Self::BadDistance { from, to, distance } => {
                write!(f, "distance {distance} from node {from} to node {to}; it must be 11 to 255")
            }
            Self::CpuTooLarge { cpu, limit } => write!(f, "CPU {cpu}; CPUs must be below {limit}"),
            Self::CpuOnTwoNodes { cpu, first, second } => {
                write!(f, "CPU {cpu} is listed on node {first} and node {second}; a CPU belongs to one node")
            }
        }
    }
}

impl std::error::Error for TopologyError {}

/// Why [`Arena::set_thread_policy`](crate::Arena::set_thread_policy)
/// refused a policy. The thread's policy is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PolicyError {
    /// The policy names a node the arena does not have.
    NoSuchNode {
        /// The node named.
        node: usize,
        /// The arena's nodes.
        nodes: usize,
    },
    /// A bind or interleave policy with no nodes.
    NoNodes,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSuchNode { node, nodes } => write!(f, "node {node} does not exist; the arena has nodes 0..{nodes}"),
            Self::NoNodes => write!(f, "an empty set of nodes; name at least one"),
        }
    }
}

impl std::error::Error for PolicyError {}

/// Why an allocation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AllocError {
    /// The order is above the arena's `max_order`.
    InvalidOrder {
        /// The order asked for.
        order: u32,
        /// The arena's largest order.
        max_order: u32,
    },
    /// The flags ask for two migratetypes at once (`MOVABLE` and
    /// `RECLAIMABLE`).
    ConflictingMobility,
    /// No zone could serve the request within the watermarks the flags allow,
    /// after whatever reclaim the flags allow.
    OutOfMemory {
        /// The order asked for.
        order: u32,
    },
    /// Fault injection failed the allocation on purpose.
    Injected {
        /// The order asked for.
        order: u32,
    },
    /// `alloc_pages_node` named a NUMA node the arena does not have.
    NoSuchNode {
        /// The node asked for.
        node: usize,
        /// The arena's nodes.
        nodes: usize,
    },
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidOrder { order, max_order } => {
                write!(f, "order {order} is above the arena's max_order {max_order}")
            }
            Self::ConflictingMobility => {
                write!(f, "MOVABLE and RECLAIMABLE together: an allocation has one migratetype")
            }
            Self::OutOfMemory { order } => write!(f, "out of memory for an order-{order} block"),
            Self::Injected { order } => write!(f, "order-{order} allocation failed by fault injection"),
            Self::NoSuchNode { node, nodes } => write!(f, "node {node} does not exist; the arena has nodes 0..{nodes}"),
        }
    }
}

impl std::error::Error for AllocError {}

/// Why a free was refused. The arena is unchanged after any of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FreeError {
    /// The pointer is not inside the arena's region.
    OutOfRegion {
        /// The pointer given.
        addr: usize,
    },
    /// The order is above the arena's `max_order`.
    InvalidOrder {
        /// The order given.
        order: u32,
        /// The arena's largest order.
        max_order: u32,
    },
    /// The pointer is inside the region but is not the start of an allocated
    /// block (unaligned, or inside a block).
    NotBlockStart {
        /// The pointer given.
        addr: usize,
    },
    /// The block was allocated with a different order.
    WrongOrder {
        /// The pointer given.
        addr: usize,
        /// The order given.
        given: u32,
        /// The order the block was allocated with.
        actual: u32,
    },
    /// The block is already free (in the buddy lists or a per-thread cache).
    DoubleFree {
        /// The pointer given.
        addr: usize,
    },
    /// The pointer is an allocation of another size: a block freed as an
    /// exact allocation or the other way round, or an exact allocation
    /// freed with the wrong page count.
    WrongSize {
        /// The pointer given.
        addr: usize,
    },
}

impl fmt::Display for FreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfRegion { addr } => write!(f, "free of {addr:#x}: not inside the arena's region"),
            Self::InvalidOrder { order, max_order } => {
                write!(f, "free with order {order}: above the arena's max_order {max_order}")
            }
            Self::NotBlockStart { addr } => {
                write!(f, "free of {addr:#x}: not the start of an allocated block")
            }
            Self::WrongOrder { addr, given, actual } => {
                write!(f, "free of {addr:#x} with order {given}: the block was allocated with order {actual}")
            }
            Self::DoubleFree { addr } => write!(f, "free of {addr:#x}: the block is already free (double free)"),
            Self::WrongSize { addr } => write!(f, "free of {addr:#x}: allocated with another size"),
        }
    }
}

impl std::error::Error for FreeError {}

/// Why [`Arena::set_capacity`](crate::Arena::set_capacity) refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CapacityError {
    /// More than the region holds.
    TooLarge {
        /// Bytes asked for.
        requested: usize,
        /// The region's size in bytes.
        region: usize,
    },
    /// The arena's explicit watermarks do not fit a zone's new share.
    Watermarks {
        /// The zone.
        zone: usize,
        /// Its high watermark, in pages.
        high: usize,
        /// Its share of the capacity, in pages.
        managed: usize,
    },
}

impl fmt::Display for CapacityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TooLarge { requested, region } => {
                write!(f, "capacity of {requested} bytes is more than the region's {region} bytes")
            }
            Self::Watermarks { zone, high, managed } => write!(
                f,
                "capacity too small for the explicit watermarks: zone {zone} would manage {managed} pages \
                 but its high watermark is {high}"
            ),
        }
    }
}

impl std::error::Error for CapacityError {}

/// The first broken invariant [`Arena::check`](crate::Arena::check) found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckError {
    /// A free list holds an entry that is not a free block of that order,
    /// or its links disagree.
    BadListEntry {
        /// The zone.
        zone: usize,
        /// The list's order.
        order: u32,
        /// The offending page.
        pfn: u32,
        /// What is wrong.
        reason: &'static str,
    },
    /// A per-thread cache holds an entry that is not a cached block of its
    /// list's order and zone.
    BadCacheEntry {
        /// The zone of the list.
        zone: usize,
        /// The list's order.
        order: u32,
        /// The offending page.
        pfn: u32,
        /// What is wrong.
        reason: &'static str,
    },
    /// A list's length disagrees with its counter.
    ListCount {
        /// The zone.
        zone: usize,
        /// The list's order.
        order: u32,
        /// Blocks found on the list.
        found: usize,
        /// Blocks the counter says.
        recorded: usize,
    },
    /// A page belongs to no block, or to two.
    BadBlock {
        /// The zone.
        zone: usize,
        /// The offending page.
        pfn: u32,
        /// What is wrong.
        reason: &'static str,
    },
    /// `check()` could not get the memory to freeze every per-thread
    /// cache (from the system allocator).
    OutOfMemory,
    /// Two free buddies that should have been merged.
    UnmergedBuddies {
        /// The zone.
        zone: usize,
        /// The lower block.
        pfn: u32,
        /// Their order.
        order: u32,
    },
    /// A counter disagrees with what the structures hold.
    Counter {
        /// The zone.
        zone: usize,
        /// Which counter.
        what: &'static str,
        /// What the walk found.
        found: usize,
        /// What the counter says.
        recorded: usize,
    },
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::BadListEntry { zone, order, pfn, reason } => {
                write!(f, "zone {zone}: free_area[{order}] entry pfn {pfn}: {reason}")
            }
            Self::BadCacheEntry { zone, order, pfn, reason } => {
                write!(f, "zone {zone}: per-thread cache, order {order}, pfn {pfn}: {reason}")
            }
            Self::ListCount { zone, order, found, recorded } => {
                write!(f, "zone {zone}: free_area[{order}] holds {found} blocks but nr_free is {recorded}")
            }
            Self::BadBlock { zone, pfn, reason } => write!(f, "zone {zone}: pfn {pfn}: {reason}"),
            Self::OutOfMemory => write!(f, "no memory to freeze the per-thread caches"),
            Self::UnmergedBuddies { zone, pfn, order } => write!(
                f,
                "zone {zone}: free order-{order} blocks at pfn {pfn} and {} are buddies but were not merged",
                pfn ^ (1 << order)
            ),
            Self::Counter { zone, what, found, recorded } => {
                write!(f, "zone {zone}: {what}: the structures hold {found} but the counter says {recorded}")
            }
        }
    }
}

impl std::error::Error for CheckError {}
