//! The allocation paths a NUMA arena adds: on a named node
//! (`__alloc_pages_node`), and under the thread's memory policy
//! (`alloc_pages_mpol`, in the kernel's `mempolicy.c`).

use std::ptr::NonNull;

use super::{AllocContext, PageAlloc, Start};
use crate::buddy::Block;
use crate::error::AllocError;
use crate::flags::AllocFlags;
use crate::mempolicy::{self, MemPolicy, NodeMask};
use crate::migratetype::Migratetype;
use crate::order::Order;
use crate::pcp::{CacheAlloc, alloc_cached_on};
use crate::pcp_config::PCP_MAX_ORDER;
use crate::support::sync::Ordering;
use crate::watermark::{AllocMode, Mark};

impl PageAlloc {
    /// `alloc_pages_node`: as [`alloc_pages`](Self::alloc_pages), from
    /// NUMA node `node`'s zonelist (its own zones first; only them with
    /// `THISNODE`), never through the per-thread caches, which hold the
    /// thread's own node's blocks.
    pub(crate) fn alloc_pages_node(
        &self,
        node: usize,
        order: u32,
        flags: AllocFlags,
    ) -> Result<NonNull<u8>, AllocError> {
        let nodes = self.node().numa.nodes();
        if node >= nodes {
            return Err(AllocError::NoSuchNode { node, nodes });
        }
        let block = self.alloc_block(order, flags, Start::Node(node))?;
        Ok(self.prep_new_page(block, flags))
    }

    /// `alloc_block_of` from the thread's own side with NUMA nodes: the
    /// thread's memory policy picks the node the allocation is meant for
    /// and the nodes that may serve it (`alloc_pages_mpol`). The local
    /// policy's allocations go through the cache, which follows the thread
    /// to its node; the others' do not (see [`MemPolicy`]).
    #[cold]
    pub(super) fn alloc_block_numa(
        &self,
        (order, mt): (Order, Migratetype),
        flags: AllocFlags,
    ) -> Result<Block, AllocError> {
        let node = self.node();
        let policy = mempolicy::get(node.id);
        let interleave = |mask| mempolicy::next_interleave(node.id, mask);
        let (intended, allowed) = policy.place(node.numa.local_node(), node.numa.topology(), interleave);
        let interleaved = matches!(policy, MemPolicy::Interleave(_));
        let ac = AllocContext {
            preferred: node.numa.zone_at(intended, node.zone_offset()),
            allowed,
            this_node: flags.contains(AllocFlags::THISNODE),
        };
        let cached = policy == MemPolicy::Local && order.get() <= PCP_MAX_ORDER && node.pcp_enabled;
        let request = (order, mt);
        // Node reclaim mode: the node meant, reclaimed if it is short,
        // before any other.
        let reclaimed = if node.numa.node_reclaim && !ac.this_node && allowed.contains(intended) {
            let own = AllocContext { this_node: true, ..ac };
            let mut block = self.alloc_on_node(request, flags, own, cached);
            if block.is_none() && self.reclaim.node_reclaim(intended, order) > 0 {
                block = self.alloc_on_node(request, flags, own, cached);
            }
            block
        } else {
            None
        };
        let block = match reclaimed {
            Some(block) => block,
            None if cached => match alloc_cached_on(node, &self.reclaim.pcp, request, flags, (intended, allowed)) {
                CacheAlloc::Served(block) => return Ok(block),
                CacheAlloc::BelowWatermarks => return self.alloc_slowpath(request, flags, ac),
                CacheAlloc::NoCache => self.alloc_from_zones(request, flags, ac)?,
            },
            None => self.alloc_from_zones(request, flags, ac)?,
        };
        if interleaved {
            let zone = node.zone_of(block.pfn);
            if node.numa.node_of_zone(zone.index) == intended {
                zone.numa_events.interleave_hit.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(block)
    }

    /// One try on the node of `ac` only (its `this_node` set), through the
    /// cache if `cached`, at the low watermark, without the slow path.
    fn alloc_on_node(
        &self,
        (order, mt): (Order, Migratetype),
        flags: AllocFlags,
        ac: AllocContext,
        cached: bool,
    ) -> Option<Block> {
        let node = self.node();
        if cached {
            let intended = node.numa.node_of_zone(ac.preferred);
            let place = (intended, NodeMask::one(intended));
            if let CacheAlloc::Served(block) = alloc_cached_on(node, &self.reclaim.pcp, (order, mt), flags, place) {
                return Some(block);
            }
        }
        self.get_page_from_freelist((order, mt), AllocMode::new(Mark::Low, order, flags), ac)
    }
}
