//! # zonealloc
//!
//! A user-space page allocator built like the Linux kernel's zoned buddy
//! allocator (`mm/page_alloc.c`). One large region is reserved with `mmap`
//! and split into zones; each zone serves power-of-two blocks of 4 KiB pages
//! from `free_area` lists under its own lock, guarded by min/low/high
//! watermarks.
//!
//! ```
//! use zonealloc::{AllocFlags, Arena};
//! let arena = Arena::builder().region_size(64 << 20).build()?;
//! let block = arena.alloc_pages(2, AllocFlags::ZERO)?; // 16 KiB, zeroed
//! assert_eq!(block.as_ptr() as usize % (16 << 10), 0);
//! // SAFETY: the block is ours and is not used after this.
//! unsafe { arena.free_pages(block, 2)? };
//! println!("{}", arena.stats()); // buddyinfo, zoneinfo, extfrag
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! See `ARCHITECTURE.md` for how a request flows through the modules.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod arena;
mod buddy;
mod builder;
mod compact_state;
mod error;
mod fault;
mod flags;
#[cfg(not(loom))]
mod global;
mod kswapd;
mod memalloc;
mod mempolicy;
mod migratetype;
mod node;
mod numa;
mod oom;
mod order;
mod page;
mod page_alloc;
mod pcp;
mod pcp_config;
mod pfn;
mod progress;
mod reclaim;
mod region;
mod slab;
mod support;
#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub mod test_hooks;
mod topology;
mod watermark;
mod zone;
mod zone_idx;

/// log2 of the page size the allocator manages.
pub(crate) const PAGE_SHIFT: u32 = 12;
/// The page size the allocator manages: 4 KiB, the base page of x86-64 and
/// the default of aarch64 Linux.
pub const PAGE_SIZE: usize = 1 << PAGE_SHIFT;

pub use arena::Arena;
pub use arena::movable_handle::MovableHandle;
pub use arena::numa::{NodeStats, NumaStat};
pub use arena::pagetypeinfo::{PageTypeInfo, ZonePageTypes};
pub use arena::stats::{ReclaimStats, Stats, ZoneStats};
pub use builder::{ArenaBuilder, LOOM_MAX_PAGES};
pub use compact_state::CompactStats;
pub use error::{AllocError, BuildError, CapacityError, CheckError, FreeError, PolicyError, TopologyError};
pub use fault::FaultInjection;
pub use flags::AllocFlags;
#[cfg(not(loom))]
pub use global::{
    GlobalStats, MIN_ALIGN, Malloced, ZoneAlloc, global_arena, global_free, global_free_cached, global_free_outside,
    global_malloc, global_malloc_cached, global_malloc_ring, global_realloc, global_reap, global_stats,
    global_usable_size, global_usable_size_cached,
};
pub use mempolicy::{MemPolicy, NodeMask};
pub use migratetype::{Migratetype, NR_MIGRATETYPES};
pub use oom::{OomAction, OomContext};
pub use order::MAX_ORDER_LIMIT;
pub use pcp::THREAD_ARENAS;
pub use pcp_config::{PAGE_ALLOC_COSTLY_ORDER, PCP_HIGH_LIMIT, PCP_MAX_ORDER, PcpConfig};
pub use reclaim::compaction::CompactReport;
pub use reclaim::movable::Movable;
pub use reclaim::purge::PurgeReport;
pub use reclaim::shrinker::{ShrinkResult, Shrinker, ShrinkerHandle};
pub use region::{HugePages, PurgeAdvice};
pub use slab::{
    ClassStats, ClassTable, FLUSH_BATCH, NR_CLASSES, SIZE_CLASSES, SLAB_MAX, SizeClass, SlabFreeError, Slabs,
    ThreadHeap, class_of,
};
#[cfg(loom)]
#[doc(hidden)]
pub use support::lazy::{Init as LoomInit, Lazy as LoomLazy};
pub use topology::{LOCAL_DISTANCE, MAX_CPUS, MAX_NUMNODES, REMOTE_DISTANCE, Topology};
pub use watermark::{WatermarkConfig, Watermarks};
pub use zone_idx::MAX_ZONES;

/// What the loom models in `tests/loom.rs` reach that is not public API:
/// the protocols of the global allocator's thread lifecycle, on arenas the
/// models build themselves (the global statics cannot be rebuilt for every
/// execution).
#[cfg(loom)]
#[doc(hidden)]
pub mod loom_hooks {
    use std::ptr::NonNull;
    use std::sync::Arc;

    use crate::arena::Arena;
    use crate::slab::{SizeClass, Slabs};

    /// This thread is exiting: its page caches are released now, and
    /// nothing attaches afterwards (what the exit hook does).
    pub fn thread_exit() {
        crate::pcp::thread_exit();
    }

    /// The shared heap of threads that cannot use their own, over an
    /// arena and slab state it keeps alive.
    pub struct SharedHeap {
        // Declared first, dropped first: it borrows the two below.
        heap: crate::slab::SharedHeap<'static>,
        arena: Arc<Arena>,
        slabs: Arc<Slabs>,
    }

    impl SharedHeap {
        /// An empty one over `arena` and `slabs`.
        pub fn new(arena: Arc<Arena>, slabs: Arc<Slabs>) -> Self {
            Self { heap: crate::slab::SharedHeap::new(), arena, slabs }
        }

        /// An object of `class`.
        pub fn alloc(&self, class: SizeClass) -> Option<NonNull<u8>> {
            // SAFETY: the arena and the slab state live in `self` behind
            // `Arc`s (stable addresses) and outlive `self.heap`, the only
            // holder of these references.
            let (arena, slabs) = unsafe { (&*Arc::as_ptr(&self.arena), &*Arc::as_ptr(&self.slabs)) };
            self.heap.alloc(arena, slabs, class)
        }
    }

    /// Takes every lock `fork(2)` would hold, then releases them as the
    /// parent does.
    pub fn fork_prepare_and_parent(arena: &Arena) {
        drop(arena.lock_for_fork().expect("memory to freeze the caches"));
    }
}
