//! [`Arena::pagetypeinfo`]: the kernel's `/proc/pagetypeinfo`, free blocks
//! per order and migratetype and pageblocks per type, with the mixed
//! pageblocks counted (pageblocks holding pages in use by another type: what
//! grouping by mobility tries to keep few).

use std::fmt;

use crate::arena::Arena;
use crate::migratetype::{Migratetype, NR_MIGRATETYPES};
use crate::order::{NR_ORDERS, Order};

/// One zone's migratetype picture; see [`Arena::pagetypeinfo`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZonePageTypes {
    /// The zone's index.
    pub zone: usize,
    /// The NUMA node it belongs to.
    pub node: usize,
    /// Free blocks per migratetype (indexed by `Migratetype as usize`) and
    /// order on the buddy lists (never-used memory not included).
    pub free_blocks: [Vec<usize>; NR_MIGRATETYPES],
    /// Pageblocks of each type among those ever used.
    pub pageblocks: [usize; NR_MIGRATETYPES],
    /// Pageblocks never used (above the zone's frontier): free, of no type
    /// yet.
    pub untouched_pageblocks: usize,
    /// Pageblocks of each type holding pages in use by an allocation of
    /// another type.
    pub mixed_pageblocks: [usize; NR_MIGRATETYPES],
    /// Movable pageblocks holding unmovable or reclaimable pages in use:
    /// the mixed pageblocks compaction cannot empty.
    pub polluted_pageblocks: usize,
    /// Pageblocks with no page in use (free, on the lists or in caches'
    /// reach), never-used ones not included.
    pub free_pageblocks: usize,
    /// Pages in high-atomic pageblocks.
    pub reserved_highatomic: usize,
}

impl ZonePageTypes {
    /// Mixed pageblocks of every type.
    pub fn mixed(&self) -> usize {
        self.mixed_pageblocks.iter().sum()
    }
}

/// `/proc/pagetypeinfo` for an arena; `Display` prints it in the kernel's
/// layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageTypeInfo {
    /// `pageblock_order`.
    pub pageblock_order: u32,
    /// The arena's largest order.
    pub max_order: u32,
    /// Per zone.
    pub zones: Vec<ZonePageTypes>,
}

impl PageTypeInfo {
    /// Mixed pageblocks in every zone.
    pub fn mixed(&self) -> usize {
        self.zones.iter().map(ZonePageTypes::mixed).sum()
    }

    /// Polluted pageblocks (see [`ZonePageTypes::polluted_pageblocks`]) in
    /// every zone.
    pub fn polluted(&self) -> usize {
        self.zones.iter().map(|z| z.polluted_pageblocks).sum()
    }
}

impl Arena {
    /// Free blocks per order and migratetype, pageblocks per type and the
    /// mixed ones: the kernel's `/proc/pagetypeinfo` (with its
    /// `page_owner` mixed-block count). Takes each zone's lock in turn and
    /// walks the pageblocks ever used; meant for monitoring and tests, not
    /// a hot path. Blocks in per-thread caches count as in use by the type
    /// they were cached for.
    pub fn pagetypeinfo(&self) -> PageTypeInfo {
        let node = self.inner.node();
        let orders = node.max_order.index() + 1;
        let mut zones = Vec::with_capacity(node.zones.len());
        for zone in node.zones.iter() {
            let mut free_blocks = [[0usize; NR_ORDERS]; NR_MIGRATETYPES];
            let mut pageblocks = [0usize; NR_MIGRATETYPES];
            let mut mixed_pageblocks = [0usize; NR_MIGRATETYPES];
            let (mut untouched_pageblocks, mut free_pageblocks, mut polluted_pageblocks, reserved_highatomic);
            {
                let guard = zone.lock();
                let buddy = &guard.inner.buddy;
                for mt in Migratetype::ALL {
                    for (order, n) in Order::ZERO.through(node.max_order).zip(&mut free_blocks[mt.index()]) {
                        *n = buddy.nr_free_blocks_of(order, mt);
                    }
                }
                let table = buddy.pageblocks();
                untouched_pageblocks = 0;
                free_pageblocks = 0;
                polluted_pageblocks = 0;
                for index in 0..table.len() {
                    let start = table.start_of(index);
                    if start >= buddy.frontier() {
                        untouched_pageblocks += 1;
                        continue;
                    }
                    let mt = table.get_index(index) as usize;
                    pageblocks[mt] += 1;
                    let usage = buddy.pageblock_usage(&node.mem_map, start);
                    mixed_pageblocks[mt] += usize::from(usage.foreign > 0);
                    polluted_pageblocks += usize::from(mt == Migratetype::Movable.index() && usage.unmovable > 0);
                    free_pageblocks += usize::from(usage.free == table.nr_pages());
                }
                reserved_highatomic = buddy.nr_reserved_highatomic();
            }
            zones.push(ZonePageTypes {
                zone: zone.index.index(),
                node: node.numa.node_of_zone(zone.index),
                free_blocks: free_blocks.map(|per_order| per_order[..orders].to_vec()),
                pageblocks,
                untouched_pageblocks,
                mixed_pageblocks,
                polluted_pageblocks,
                free_pageblocks,
                reserved_highatomic,
            });
        }
        PageTypeInfo { pageblock_order: node.zones[0].pageblock_order.get(), max_order: node.max_order.get(), zones }
    }
}

impl fmt::Display for PageTypeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Page block order: {}", self.pageblock_order)?;
        writeln!(f, "Pages per block:  {}", 1usize << self.pageblock_order)?;
        writeln!(f)?;
        write!(f, "{:<38}", "Free pages count per migrate type at order")?;
        for order in 0..=self.max_order {
            write!(f, " {order:>6}")?;
        }
        writeln!(f)?;
        for z in &self.zones {
            for mt in Migratetype::ALL {
                write!(f, "Node {}, zone {:>6}, type {:>12}", z.node, z.zone, mt.name())?;
                for n in &z.free_blocks[mt.index()] {
                    write!(f, " {n:>6}")?;
                }
                writeln!(f)?;
            }
        }
        writeln!(f)?;
        write!(f, "{:<25}", "Number of blocks type")?;
        for mt in Migratetype::ALL {
            write!(f, " {:>12}", mt.name())?;
        }
        writeln!(f, " {:>12} {:>12}", "Untouched", "Free")?;
        for z in &self.zones {
            write!(f, "Node {}, zone {:>6}     ", z.node, z.zone)?;
            for n in z.pageblocks {
                write!(f, " {n:>12}")?;
            }
            writeln!(f, " {:>12} {:>12}", z.untouched_pageblocks, z.free_pageblocks)?;
        }
        writeln!(f)?;
        write!(f, "{:<25}", "Number of mixed blocks")?;
        for mt in Migratetype::ALL {
            write!(f, " {:>12}", mt.name())?;
        }
        writeln!(f, " {:>12}", "Polluted")?;
        for z in &self.zones {
            write!(f, "Node {}, zone {:>6}     ", z.node, z.zone)?;
            for n in z.mixed_pageblocks {
                write!(f, " {n:>12}")?;
            }
            writeln!(f, " {:>12}", z.polluted_pageblocks)?;
        }
        Ok(())
    }
}
