//! The global allocator: kmalloc over the slab layer, `kmalloc_large` over
//! the buddy allocator.
//!
//! ```no_run
//! #[global_allocator]
//! static GLOBAL: zonealloc::ZoneAlloc = zonealloc::ZoneAlloc;
//! ```
//!
//! The arena is built by the first allocation (`init.rs`, configured by
//! `ZONEALLOC_*` variables: `env.rs`); each thread's heap, thread exit and
//! `fork(2)` are in `lifecycle.rs`.
//!
//! **Routing.** Sizes up to [`SLAB_MAX`](crate::SLAB_MAX) (with alignments
//! that fit a power-of-two class) come from the calling thread's slab heap;
//! larger ones are buddy blocks of the order that covers size and alignment
//! (orders 0..=9 through the per-thread page caches); beyond the largest
//! order (32 MiB in the global arena), the allocator beneath the arena
//! (`support/sysalloc.rs`: glibc, which maps them directly) serves them, and any alignment up to the OS's limits works
//! there. `realloc` keeps a block where it is when the new size has the same
//! class or order, or when the block can grow into its free buddies; a
//! growing block that must move goes to the start of a large free block
//! ([`Arena::alloc_pages_growable`]), so its next doublings stay in place.
//!
//! **Bad frees.** A pointer outside the region (unless its layout is one
//! that goes to `SysAlloc`), a pointer that is not an object or block start,
//! a double free: each is refused without writing anything and reported on
//! stderr without allocating (rate limited).

use std::alloc::{GlobalAlloc, Layout};
use std::fmt::Write;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::arena::Arena;
use crate::arena::layout_order as order_of;
use crate::arena::stats::Stats;
use crate::flags::AllocFlags;
use crate::slab::{ClassStats, ClassTable, SizeClass, SlabFreeError, class_of};
use crate::support::ratelimit::RateLimit;
use crate::support::report::{AbortOnUnwind, StackWriter};
use crate::support::sysalloc::SysAlloc;

mod by_pointer;
mod env;
mod init;
mod lifecycle;
mod ready;

pub use by_pointer::{
    MIN_ALIGN, Malloced, global_free, global_free_cached, global_free_outside, global_malloc, global_malloc_cached,
    global_malloc_ring, global_realloc, global_usable_size, global_usable_size_cached,
};
use init::SLABS;
pub use init::global_arena;
use lifecycle::{shared_alloc, with_heap, with_ready_heap};

/// The global allocator. Add
/// `#[global_allocator] static GLOBAL: zonealloc::ZoneAlloc = zonealloc::ZoneAlloc;`
/// to a binary and every allocation goes through zonealloc.
#[derive(Clone, Copy, Debug, Default)]
pub struct ZoneAlloc;

static REFUSALS: RateLimit = RateLimit::new();
/// Frees refused, in all (reported or not).
static REFUSED: AtomicU64 = AtomicU64::new(0);

/// The global arena's statistics and the slab layer's, per size class.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct GlobalStats {
    /// The arena under the global allocator.
    pub arena: Stats,
    /// Per size class: slabs, orphaned slabs, objects in use.
    pub classes: ClassTable<ClassStats>,
    /// Frees refused (pointers not allocated here, double frees), all of
    /// them, including double frees between threads found late (when the
    /// slab's owner collected them); stderr reports at most ten every five
    /// seconds.
    pub refused_frees: u64,
}

impl std::fmt::Display for GlobalStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}", self.arena)?;
        writeln!(f, "# slabinfo: class size, slabs, orphaned, objects in use, slab KiB")?;
        for c in self.classes.iter().filter(|c| c.slabs > 0) {
            writeln!(f, "{:>6} {:>7} {:>5} {:>9} {:>8}", c.size, c.slabs, c.orphans, c.objects, c.slab_bytes >> 10)?;
        }
        writeln!(f, "refused frees: {}", self.refused_frees)
    }
}

/// Statistics of the global allocator, or `None` before its first
/// allocation (or if it could not build its arena and fell back to
/// `SysAlloc`). The calling thread's object counts are published first, so
/// they are exact for it and for every thread that has exited; see
/// [`ClassStats::objects`] for the others.
pub fn global_stats() -> Option<GlobalStats> {
    let arena = global_arena()?;
    lifecycle::flush_counts(arena);
    let refused_frees = REFUSED.load(Ordering::Relaxed) + SLABS.late_double_frees();
    Some(GlobalStats { arena: arena.stats(), classes: SLABS.stats(), refused_frees })
}

/// Returns every empty orphaned slab of the global heap to the buddy
/// allocator; the pages returned. The global arena's reclaim does this too.
pub fn global_reap() -> usize {
    global_arena().map_or(0, |arena| SLABS.reap_orphans(arena))
}

#[inline(always)]
fn alloc_impl(layout: Layout, zero: bool) -> *mut u8 {
    match class_of(layout.size(), layout.align()) {
        Some(class) => alloc_object(class, layout, zero),
        None => alloc_slow(layout, zero),
    }
}

/// The fast path is a leaf: an object from the current slab, else a tail
/// call to the rest.
#[inline(always)]
fn alloc_object(class: SizeClass, layout: Layout, zero: bool) -> *mut u8 {
    if !zero
        && let Some(ptr) = with_ready_heap(
            #[inline(always)]
            |heap| heap.alloc_cached(class),
        )
    {
        return ptr.as_ptr();
    }
    alloc_not_cached(class, layout, zero)
}

/// [`alloc_object`] beyond the current slab (and every zeroed
/// allocation): the heap's slabs, then the slow path.
#[inline(never)]
fn alloc_not_cached(class: SizeClass, layout: Layout, zero: bool) -> *mut u8 {
    let guard = AbortOnUnwind;
    // Not zeroed, the current slab was just found empty: straight to the
    // ring walk.
    let ptr = if zero { alloc_from_heap(class, layout, zero) } else { alloc_from_ring(class).map(NonNull::as_ptr) };
    let ptr = ptr.unwrap_or_else(|| alloc_slow(layout, zero));
    guard.disarm();
    ptr
}

/// An object of `class` from a slab this thread's heap already has.
#[inline(always)]
fn alloc_from_heap(class: SizeClass, layout: Layout, zero: bool) -> Option<*mut u8> {
    let ptr = with_ready_heap(|heap| heap.alloc_cached(class).or_else(|| heap.alloc_from_ring(class)))?.as_ptr();
    if zero {
        // SAFETY: a fresh object of at least `layout.size()` bytes.
        unsafe { ptr.write_bytes(0, layout.size()) };
    }
    Some(ptr)
}

/// An object of `class` from the slabs this thread's heap has beyond its
/// current one (for a caller that found the current slab empty).
#[inline(always)]
fn alloc_from_ring(class: SizeClass) -> Option<NonNull<u8>> {
    with_ready_heap(|heap| heap.alloc_from_ring(class))
}

/// Everything [`alloc_impl`] does beyond taking an object from a slab
/// this thread already has.
#[inline(never)]
fn alloc_slow(layout: Layout, zero: bool) -> *mut u8 {
    let guard = AbortOnUnwind;
    let ptr = alloc_slow_unguarded(layout, zero);
    guard.disarm();
    ptr
}

fn alloc_slow_unguarded(layout: Layout, zero: bool) -> *mut u8 {
    let Some(arena) = init::arena() else {
        // The arena could not be built (or is being built by this very
        // thread): the system allocator serves everything.
        // SAFETY: forwarding the caller's layout.
        return unsafe { if zero { SysAlloc.alloc_zeroed(layout) } else { SysAlloc.alloc(layout) } };
    };
    init::ensure_reclaim(); // a forked child's first allocation starts its kswapd
    if let Some(class) = class_of(layout.size(), layout.align()) {
        // The fast path took what the heap's slabs had (or the heap was not
        // ready, and with_heap makes it or declines): a new slab.
        let ptr = with_heap(arena, true, |heap| heap.alloc_refill(class))
            .map_or_else(|| shared_alloc(arena, class), |p| p.map_or(ptr::null_mut(), NonNull::as_ptr));
        if zero && !ptr.is_null() {
            // SAFETY: a fresh object of at least `layout.size()` bytes.
            unsafe { ptr.write_bytes(0, layout.size()) };
        }
        return ptr;
    }
    let Some(order) = arena.block_order(layout) else {
        // SAFETY: forwarding the caller's layout.
        return unsafe { if zero { SysAlloc.alloc_zeroed(layout) } else { SysAlloc.alloc(layout) } };
    };
    let flags = if zero { AllocFlags::ZERO | AllocFlags::NOWARN } else { AllocFlags::NOWARN };
    arena.alloc_pages(order, flags).map_or(ptr::null_mut(), NonNull::as_ptr)
}

#[inline(always)]
fn dealloc_impl(ptr: *mut u8, layout: Layout) {
    match class_of(layout.size(), layout.align()) {
        // SAFETY: the caller's contract; the class is the layout's.
        Some(class) => unsafe { dealloc_object(ptr, class, layout) },
        None => dealloc_slow(ptr, layout),
    }
}

/// Frees an object of `class` (`layout`'s), the fast path inline.
///
/// # Safety
/// `ptr` was allocated for `layout`, whose class `class` is, and is not
/// used again (`GlobalAlloc::dealloc`'s contract).
#[inline(always)]
unsafe fn dealloc_object(ptr: *mut u8, class: SizeClass, layout: Layout) {
    // SAFETY: the caller frees what it was given for this layout (the
    // contract); the slab layer checks the pointer (null included) before
    // it writes anything.
    if with_ready_heap(
        #[inline(always)]
        |heap| unsafe { heap.free_cached(ptr, class) }.then_some(()),
    )
    .is_some()
    {
        return;
    }
    dealloc_slow(ptr, layout);
}

/// Everything [`dealloc_impl`] does beyond its fast path (an object
/// freed through the thread's ready heap, onto its own slab or another's).
#[inline(never)]
fn dealloc_slow(ptr: *mut u8, layout: Layout) {
    let guard = AbortOnUnwind;
    dealloc_slow_unguarded(ptr, layout);
    guard.disarm();
}

fn dealloc_slow_unguarded(ptr: *mut u8, layout: Layout) {
    let Some(nn) = NonNull::new(ptr) else { return };
    let Some(arena) = global_arena() else {
        if init::failed() {
            // SAFETY: with no arena, every allocation came from SysAlloc.
            unsafe { SysAlloc.dealloc(ptr, layout) };
        } else {
            refuse(ptr, layout, "no allocation was ever made");
        }
        return;
    };
    let class = class_of(layout.size(), layout.align());
    if !arena.contains(ptr) {
        if class.is_none() && order_of(layout) > arena.max_order() {
            // SAFETY: a layout that only SysAlloc serves.
            unsafe { SysAlloc.dealloc(ptr, layout) };
        } else {
            refuse(ptr, layout, "not allocated by zonealloc");
        }
        return;
    }
    let result = match class {
        Some(class) => {
            // SAFETY: the caller frees what it was given for this layout;
            // the slab layer checks the pointer before trusting it.
            // A thread that only frees gets a heap too: its next frees of
            // other threads' objects take the remote fast path.
            let freed = with_heap(arena, true, |heap| unsafe { heap.free_slow(nn, class) })
                // SAFETY: as above; a thread without a usable heap frees
                // every object as a remote free.
                .unwrap_or_else(|| unsafe { SLABS.free_remote(arena, nn, class) });
            freed.map_err(|e| match e {
                SlabFreeError::NotAnObject => "not an object of its size class",
                SlabFreeError::DoubleFree => "double free",
            })
        }
        // SAFETY: the arena validates the block before changing anything.
        None => unsafe { arena.free_pages(nn, order_of(layout)) }.map_err(|e| match e {
            crate::error::FreeError::DoubleFree { .. } => "double free",
            _ => "not a block start of its size",
        }),
    };
    if let Err(reason) = result {
        refuse(ptr, layout, reason);
    }
}

/// Reports a refused free on stderr, without allocating, rate limited.
/// `layout` is `None` for a free without one (C's `free`).
#[cold]
fn refuse(ptr: *mut u8, layout: impl Into<Option<Layout>>, reason: &str) {
    REFUSED.fetch_add(1, Ordering::Relaxed);
    if REFUSALS.allow() {
        let mut w = StackWriter::new();
        let _ = match layout.into() {
            Some(layout) => write!(
                w,
                "zonealloc: refused free of {ptr:p} (size {}, align {}): {reason}",
                layout.size(),
                layout.align()
            ),
            None => write!(w, "zonealloc: refused free of {ptr:p}: {reason}"),
        };
        w.flush_line();
    }
}

/// Whether the block of `old` at `ptr` (not a slab object, in the arena)
/// becomes the one `new` needs where it lies (`arena/realloc.rs`).
fn resizes_in_place(arena: &Arena, ptr: *mut u8, old: Layout, new: Layout) -> bool {
    match (arena.block_order(old), arena.block_order(new), NonNull::new(ptr)) {
        (Some(a), Some(b), Some(ptr)) => arena.resize_in_place(ptr, a, b),
        _ => false,
    }
}

// SAFETY: every block handed out is at least `layout.size()` bytes, aligned
// to `layout.align()` (slab classes and buddy orders are chosen for both),
// and not handed out again until freed; nothing here unwinds (a panic
// inside aborts: `AbortOnUnwind` in every out-of-line function the fast
// paths call, and the locks' guards in `sync`).
unsafe impl GlobalAlloc for ZoneAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        alloc_impl(layout, false)
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        alloc_impl(layout, true)
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        dealloc_impl(ptr, layout);
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let guard = AbortOnUnwind;
        // SAFETY: the caller's contract, forwarded.
        let moved = unsafe { realloc_impl(ptr, layout, new_size) };
        guard.disarm();
        moved
    }
}

/// `GlobalAlloc::realloc`.
///
/// # Safety
/// As for `GlobalAlloc::realloc`.
#[inline(always)]
unsafe fn realloc_impl(ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
    // SAFETY: the caller guarantees new_size, rounded up to align, does
    // not overflow isize.
    let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
    if let Some(class) = class_of(layout.size(), layout.align()) {
        let new_class = class_of(new_size, layout.align());
        if new_class == Some(class) && global_arena().is_some_and(|a| a.contains(ptr)) {
            return ptr;
        }
        if let Some(new_class) = new_class {
            let moved = alloc_object(new_class, new_layout, false);
            let len = layout.size().min(new_size);
            // SAFETY: the caller's contract; `moved` is a fresh object.
            return unsafe { move_into(ptr, moved, len, || dealloc_object(ptr, class, layout)) };
        }
    }
    // SAFETY: the caller's contract, forwarded.
    unsafe { realloc_pages(ptr, layout, new_layout) }
}

/// The end of every `realloc` that moves: unless the new allocation
/// `moved` failed (null, and the old block stays, as `realloc` says),
/// copies the first `len` bytes of `ptr` into it and frees `ptr` with
/// `free_old`.
///
/// # Safety
/// `ptr` is live and valid for `len` bytes, `moved` is null or a fresh
/// block of at least `len` bytes, and `free_old` frees `ptr`.
#[inline(always)]
unsafe fn move_into(ptr: *mut u8, moved: *mut u8, len: usize, free_old: impl FnOnce()) -> *mut u8 {
    if !moved.is_null() {
        // SAFETY: both are valid for `len` bytes and distinct (per the
        // contract).
        unsafe { ptr::copy_nonoverlapping(ptr, moved, len) };
        free_old();
    }
    moved
}

/// `realloc` where the old or the new size is served by the buddy
/// allocator (or `System`), with the policy of `arena/realloc.rs`.
///
/// # Safety
/// `ptr` is live for `layout`, as `GlobalAlloc::realloc` requires.
#[inline(never)]
unsafe fn realloc_pages(ptr: *mut u8, layout: Layout, new_layout: Layout) -> *mut u8 {
    let new_size = new_layout.size();
    match global_arena() {
        Some(arena)
            if arena.contains(ptr)
                && class_of(layout.size(), layout.align()).is_none()
                && class_of(new_size, layout.align()).is_none()
                && resizes_in_place(arena, ptr, layout, new_layout) =>
        {
            return ptr;
        }
        Some(arena)
            if !arena.contains(ptr)
                && class_of(new_size, layout.align()).is_none()
                && order_of(new_layout) > arena.max_order() =>
        {
            // SAFETY: both layouts are SysAlloc's.
            return unsafe { SysAlloc.realloc(ptr, layout, new_size) };
        }
        None if init::failed() => {
            // SAFETY: with no arena, everything is SysAlloc's.
            return unsafe { SysAlloc.realloc(ptr, layout, new_size) };
        }
        Some(arena) if class_of(new_size, layout.align()).is_none() => {
            if let Some(order) = arena.block_order(new_layout) {
                init::ensure_reclaim();
                // A failure has been through the whole slow path (reclaim,
                // the OOM handler): no second attempt.
                let moved = arena
                    .alloc_moved(layout.size(), new_layout, order, AllocFlags::NOWARN)
                    .map_or(ptr::null_mut(), NonNull::as_ptr);
                // SAFETY: the caller's contract; `moved` is a fresh block.
                return unsafe { move_into(ptr, moved, layout.size().min(new_size), || dealloc_impl(ptr, layout)) };
            }
        }
        _ => {}
    }
    let moved = alloc_impl(new_layout, false);
    // SAFETY: the caller's contract; `moved` is a fresh block.
    unsafe { move_into(ptr, moved, layout.size().min(new_size), || dealloc_impl(ptr, layout)) }
}
