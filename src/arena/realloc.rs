//! The resize policy of the two adapters that hand out buddy blocks for a
//! `Layout`: the global allocator's `realloc` and the `Allocator` impl's
//! `grow`/`shrink`. One policy, so a vector grows the same way in either.
//!
//! A block stays where it is when the new layout has the same order, or
//! when it can grow into the free pages above it. Otherwise it moves; a
//! doubling (how vectors and strings grow) moves to the start of a larger
//! free block, so that its next doublings find their buddies free and stay
//! in place. Smaller growths take any block: carving room from a large
//! (usually untouched) block for each of them left the resident holes of
//! the old blocks unused, and RSS grew. A shrink to a smaller order moves:
//! shrunk in place, the freed upper parts would fragment free memory as
//! trimming does.

use std::alloc::Layout;
use std::ptr::NonNull;

use crate::arena::{Arena, layout_order};
use crate::error::AllocError;
use crate::flags::AllocFlags;

impl Arena {
    /// The order of the block that serves `layout`, if the arena has one
    /// that large. Always a whole block, never trimmed to the pages the
    /// size needs (`alloc_pages_exact`): under churn of random large sizes
    /// (examples/soak.rs) the trimmed tails fragmented the resident free
    /// memory, new blocks were faulted in while the fragments sat idle,
    /// and RSS was higher than with the rounding.
    #[inline]
    pub(crate) fn block_order(&self, layout: Layout) -> Option<u32> {
        let order = layout_order(layout);
        (order <= self.max_order()).then_some(order)
    }

    /// Whether the block of `old_order` at `ptr` becomes one of `new_order`
    /// where it lies: the same order, or grown into the free pages above it.
    pub(crate) fn resize_in_place(&self, ptr: NonNull<u8>, old_order: u32, new_order: u32) -> bool {
        use std::cmp::Ordering::*;
        match new_order.cmp(&old_order) {
            Equal => true,
            // A block is aligned to its size: one that is not cannot grow
            // into a larger one where it lies.
            Greater => {
                (ptr.as_ptr() as usize).is_multiple_of(crate::PAGE_SIZE << new_order)
                    && self.resize_pages_exact(ptr, 1 << old_order, 1 << new_order)
            }
            Less => false,
        }
    }

    /// The block a resize that must move goes to: for a doubling of
    /// `old_size`, one with room to keep doubling in place.
    pub(crate) fn alloc_moved(
        &self,
        old_size: usize,
        new: Layout,
        order: u32,
        flags: AllocFlags,
    ) -> Result<NonNull<u8>, AllocError> {
        if new.size() >= 2 * old_size {
            self.alloc_pages_growable(order, flags)
        } else {
            self.alloc_pages(order, flags)
        }
    }
}
