//! Collections in an arena: [`allocator_api2::alloc::Allocator`] for
//! `&Arena`, so `allocator_api2::vec::Vec`, `allocator_api2::boxed::Box`
//! and hashbrown's maps can keep their storage in a given arena (a
//! database keeping its structures in its page pool, counted against its
//! capacity and reclaimed with it).
//!
//! Every allocation is a buddy block (at least one 4 KiB page, aligned to
//! its size), so this suits what is page-sized or larger: vectors, hash
//! tables, buffers. Blocks are resized as the global allocator resizes
//! them (`realloc.rs`): in place within the block or into the free pages
//! above it, and a doubling that must move goes where it can keep growing.
//!
//! ```
//! use allocator_api2::vec::Vec;
//! use zonealloc::Arena;
//!
//! let arena = Arena::builder().region_size(64 << 20).build()?;
//! let mut v = Vec::new_in(&arena);
//! v.extend(0..10_000u64);
//! assert_eq!(v.iter().sum::<u64>(), 49_995_000);
//! assert!(arena.contains(v.as_ptr().cast()));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::alloc::Layout;
use std::ptr::NonNull;

use allocator_api2::alloc::{AllocError, Allocator};

use crate::arena::Arena;
use crate::flags::AllocFlags;

fn block(ptr: NonNull<u8>, order: u32) -> NonNull<[u8]> {
    NonNull::slice_from_raw_parts(ptr, crate::PAGE_SIZE << order)
}

fn dangling(layout: Layout) -> NonNull<[u8]> {
    // A zero-sized allocation: an aligned, non-null, never-dereferenced
    // address (the alignment itself), as the standard allocators return.
    let ptr = NonNull::new(layout.align() as *mut u8).unwrap_or(NonNull::dangling());
    NonNull::slice_from_raw_parts(ptr, 0)
}

impl Arena {
    fn allocate_with(&self, layout: Layout, flags: AllocFlags) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 {
            return Ok(dangling(layout));
        }
        let order = self.block_order(layout).ok_or(AllocError)?;
        let ptr = self.alloc_pages(order, flags | AllocFlags::NOWARN).map_err(|_| AllocError)?;
        Ok(block(ptr, order))
    }
}

// SAFETY: blocks are at least `layout.size()` bytes, aligned to
// `max(layout.align(), their size)`, stay valid until deallocated, and
// `&Arena` copies all refer to the same arena, so any copy may free what
// another allocated.
unsafe impl Allocator for &Arena {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        self.allocate_with(layout, AllocFlags::empty())
    }

    fn allocate_zeroed(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        self.allocate_with(layout, AllocFlags::ZERO)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() == 0 {
            return;
        }
        if let Some(order) = self.block_order(layout) {
            // SAFETY: the caller frees a block it got from us with this
            // layout; the arena checks it anyway and refuses a bad one.
            let _ = unsafe { self.free_pages(ptr, order) };
        }
    }

    unsafe fn grow(&self, ptr: NonNull<u8>, old: Layout, new: Layout) -> Result<NonNull<[u8]>, AllocError> {
        let order = self.block_order(new).ok_or(AllocError)?;
        if old.size() != 0 && self.block_order(old).is_some_and(|old| self.resize_in_place(ptr, old, order)) {
            return Ok(block(ptr, order));
        }
        let grown = block(self.alloc_moved(old.size(), new, order, AllocFlags::NOWARN).map_err(|_| AllocError)?, order);
        // SAFETY: both are valid for `old.size()` bytes and distinct.
        unsafe {
            std::ptr::copy_nonoverlapping(ptr.as_ptr(), grown.cast::<u8>().as_ptr(), old.size());
            self.deallocate(ptr, old);
        }
        Ok(grown)
    }

    unsafe fn shrink(&self, ptr: NonNull<u8>, old: Layout, new: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if new.size() == 0 {
            // SAFETY: the caller's block, with its layout.
            unsafe { self.deallocate(ptr, old) };
            return Ok(dangling(new));
        }
        let order = self.block_order(new).ok_or(AllocError)?;
        if self.block_order(old).is_some_and(|old| self.resize_in_place(ptr, old, order)) {
            return Ok(block(ptr, order));
        }
        let shrunk = self.allocate(new)?;
        // SAFETY: both are valid for `new.size()` bytes and distinct.
        unsafe {
            std::ptr::copy_nonoverlapping(ptr.as_ptr(), shrunk.cast::<u8>().as_ptr(), new.size());
            self.deallocate(ptr, old);
        }
        Ok(shrunk)
    }
}
