//! The allocator beneath the arena: for the arena's own structures
//! (`boot.rs`) and for what the global allocator does not serve itself
//! (sizes beyond its largest block, and everything while the global arena
//! is being built or could not be).
//!
//! Normally `std::alloc::System`, glibc's malloc. With the `process-malloc`
//! feature (zonealloc is the process's malloc), which `zonealloc-malloc`
//! enables, anonymous mappings instead:
//! there `malloc` *is* zonealloc, so calling it from inside the allocator
//! would recurse (and take locks the caller may hold).

use std::alloc::{GlobalAlloc, Layout};

/// The allocator beneath the arena.
pub(crate) struct SysAlloc;

#[cfg(not(feature = "process-malloc"))]
// SAFETY: forwards to `System`.
unsafe impl GlobalAlloc for SysAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, forwarded.
        unsafe { std::alloc::System.alloc(layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, forwarded.
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, forwarded.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract, forwarded.
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

/// Bytes of the mapping that serves `layout` (whole pages).
#[cfg(feature = "process-malloc")]
fn mapped_len(layout: Layout) -> usize {
    layout.size().max(1).next_multiple_of(crate::PAGE_SIZE)
}

#[cfg(feature = "process-malloc")]
// SAFETY: every block is a fresh private mapping of at least the layout's
// size, aligned to its alignment (over-mapped and trimmed when that is
// above a page), and unmapped only by `dealloc` with the same layout.
unsafe impl GlobalAlloc for SysAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let len = mapped_len(layout);
        let align = layout.align().max(crate::PAGE_SIZE);
        let Some(span) = len.checked_add(align - crate::PAGE_SIZE) else { return std::ptr::null_mut() };
        // SAFETY: a fresh anonymous private mapping; nothing else is touched.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                span,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return std::ptr::null_mut();
        }
        let start = (base as usize).next_multiple_of(align);
        let head = start - base as usize;
        let tail = span - head - len;
        // SAFETY: the unused head and tail of our own mapping, page aligned.
        unsafe {
            if head > 0 {
                libc::munmap(base, head);
            }
            if tail > 0 {
                libc::munmap((start + len) as *mut libc::c_void, tail);
            }
        }
        start as *mut u8
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract; a fresh mapping reads as zero.
        unsafe { self.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` is a mapping of `mapped_len(layout)` bytes from `alloc`.
        unsafe { libc::munmap(ptr.cast(), mapped_len(layout)) };
    }
}
