//! A model of the global allocator's `GlobalAlloc` API, shared by
//! `tests/heap_ops.rs` and the fuzz target `fuzz/fuzz_targets/heap_ops.rs`.
//!
//! `ZoneAlloc` is called through the trait (it need not be the process's
//! global allocator). The model keeps every live block's address, size,
//! alignment and fill byte, and checks: non-null, aligned, inside no other
//! live block, zeroed when asked, head and tail bytes intact at free and
//! across realloc (the prefix is kept), and `Arena::check()`.

use std::alloc::{GlobalAlloc, Layout};

use zonealloc::ZoneAlloc;

/// One operation.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
pub enum Op {
    /// Allocate; `big` multiplies the size by 100 (past the largest order).
    Alloc { size: u16, align_shift: u8, zero: bool, big: bool },
    /// Realloc live block `index % live` to `size` (same scaling).
    Realloc { index: u16, size: u16, big: bool },
    /// Free live block `index % live`.
    Free { index: u16 },
    /// `Arena::check()` on the global arena.
    Check,
}

struct Live {
    ptr: *mut u8,
    layout: Layout,
    fill: u8,
}

/// Bytes checked at each end of a block.
const EDGE: usize = 64;

/// The allocator under test and its model.
#[derive(Default)]
pub struct Harness {
    live: Vec<Live>,
    next_fill: u8,
}

fn size_of(size: u16, big: bool) -> usize {
    let size = usize::from(size) + 1;
    if big { size * 100 } else { size }
}

impl Harness {
    fn fill(&mut self, ptr: *mut u8, size: usize) -> u8 {
        self.next_fill = self.next_fill.wrapping_add(1).max(1);
        let fill = self.next_fill;
        // SAFETY: a live block of `size` bytes.
        unsafe {
            ptr.write_bytes(fill, size.min(EDGE));
            ptr.add(size - size.min(EDGE)).write_bytes(fill, size.min(EDGE));
        }
        fill
    }

    fn verify(live: &Live, upto: usize) {
        let size = live.layout.size().min(upto);
        // SAFETY: a live block of at least `size` bytes.
        let head = unsafe { std::slice::from_raw_parts(live.ptr, size.min(EDGE)) };
        assert!(head.iter().all(|&b| b == live.fill), "block {:p} was overwritten (head)", live.ptr);
        if upto >= live.layout.size() {
            // SAFETY: as above.
            let tail = unsafe { std::slice::from_raw_parts(live.ptr.add(size - size.min(EDGE)), size.min(EDGE)) };
            assert!(tail.iter().all(|&b| b == live.fill), "block {:p} was overwritten (tail)", live.ptr);
        }
    }

    fn check_new(&self, ptr: *mut u8, layout: Layout) {
        assert!(!ptr.is_null(), "allocation of {layout:?} failed");
        assert_eq!(ptr as usize % layout.align(), 0, "{layout:?} misaligned at {ptr:p}");
        let (start, end) = (ptr as usize, ptr as usize + layout.size());
        for other in &self.live {
            let (s, e) = (other.ptr as usize, other.ptr as usize + other.layout.size());
            assert!(
                end <= s || e <= start,
                "{ptr:p}+{} overlaps live {:p}+{}",
                layout.size(),
                other.ptr,
                other.layout.size()
            );
        }
    }

    /// Applies one operation, checking it against the model.
    pub fn apply(&mut self, op: Op) {
        match op {
            Op::Alloc { size, align_shift, zero, big } => {
                let align = 1usize << (align_shift % 21); // up to 1 MiB
                let layout = Layout::from_size_align(size_of(size, big), align).unwrap();
                // SAFETY: non-zero size.
                let ptr = unsafe { if zero { ZoneAlloc.alloc_zeroed(layout) } else { ZoneAlloc.alloc(layout) } };
                self.check_new(ptr, layout);
                if zero {
                    let n = layout.size().min(1 << 16);
                    // SAFETY: a fresh block of at least `n` bytes.
                    let bytes = unsafe { std::slice::from_raw_parts(ptr, n) };
                    assert!(bytes.iter().all(|&b| b == 0), "alloc_zeroed({layout:?}) is not zero");
                }
                let fill = self.fill(ptr, layout.size());
                self.live.push(Live { ptr, layout, fill });
            }
            Op::Realloc { index, size, big } => {
                if self.live.is_empty() {
                    return;
                }
                let i = usize::from(index) % self.live.len();
                let old = self.live.swap_remove(i);
                Self::verify(&old, usize::MAX);
                let new_size = size_of(size, big);
                // SAFETY: a live block with its layout; non-zero new size.
                let ptr = unsafe { ZoneAlloc.realloc(old.ptr, old.layout, new_size) };
                let layout = Layout::from_size_align(new_size, old.layout.align()).unwrap();
                self.check_new(ptr, layout);
                let kept = Live { ptr, layout, fill: old.fill };
                Self::verify(&kept, old.layout.size().min(new_size).min(EDGE));
                let fill = self.fill(ptr, new_size);
                self.live.push(Live { ptr, layout, fill });
            }
            Op::Free { index } => {
                if self.live.is_empty() {
                    return;
                }
                let i = usize::from(index) % self.live.len();
                let block = self.live.swap_remove(i);
                Self::verify(&block, usize::MAX);
                // SAFETY: a live block with its layout.
                unsafe { ZoneAlloc.dealloc(block.ptr, block.layout) };
            }
            Op::Check => {
                if let Some(arena) = zonealloc::global_arena() {
                    arena.check().unwrap();
                }
            }
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        for block in self.live.drain(..) {
            Self::verify(&block, usize::MAX);
            // SAFETY: a live block with its layout.
            unsafe { ZoneAlloc.dealloc(block.ptr, block.layout) };
        }
        if let Some(arena) = zonealloc::global_arena() {
            arena.check().unwrap();
        }
    }
}
