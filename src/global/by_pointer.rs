//! The global allocator's calls that carry no layout, for C's `free`,
//! `realloc` and `malloc_usable_size` (`zonealloc-malloc`). What a pointer
//! is comes from the out-of-band metadata, never from the memory it points
//! at: a slab object from the side table (the slot the sized free reads
//! too), a buddy block from its head's page entry. Everything a sized free
//! checks is checked here as well.

use std::alloc::{GlobalAlloc, Layout};
use std::ptr::{self, NonNull};

use super::{
    alloc_from_heap, alloc_from_ring, alloc_impl, alloc_slow, dealloc_object, global_arena, move_into, realloc_pages,
    refuse, with_ready_heap,
};
use crate::arena::Arena;
use crate::page::PageState;
use crate::support::report::AbortOnUnwind;
use crate::support::sync::{AtomicUsize, Ordering};
use crate::support::sysalloc::SysAlloc;

use crate::slab::{SizeClass, SlabGeometry, class_of, object_class, slab_geometry};

/// The alignment of every allocation made without one (C's `malloc`:
/// `alignof(max_align_t)`).
pub const MIN_ALIGN: usize = 16;

/// The smallest order of a block the global allocator hands out as one
/// (smaller blocks are slabs: every layout of up to 8 KiB has a class).
const MIN_BLOCK_ORDER: u32 = 2;

/// A live allocation of the global arena.
#[derive(Clone, Copy)]
enum Allocation {
    Object(SizeClass),
    Block(u32),
}

impl Allocation {
    /// What `ptr` is, or why it is not a live allocation.
    fn of(arena: &Arena, ptr: NonNull<u8>) -> Result<Self, &'static str> {
        if let Some(class) = object_class(arena, ptr) {
            return Ok(Self::Object(class));
        }
        match arena.head_at(ptr) {
            Some(head) if head.state == PageState::Allocated && head.order().get() >= MIN_BLOCK_ORDER => {
                Ok(Self::Block(head.order().get()))
            }
            Some(head) if matches!(head.state, PageState::Free | PageState::Cached | PageState::Isolated) => {
                Err("double free")
            }
            _ => Err("not a live allocation"),
        }
    }

    fn usable_size(self) -> usize {
        match self {
            Self::Object(class) => class.size(),
            Self::Block(order) => crate::PAGE_SIZE << order,
        }
    }

    /// A layout that a sized free of this allocation accepts.
    fn layout(self) -> Layout {
        // An exact class size at the smallest alignment maps back to the
        // class; a block's size maps back to its order.
        Layout::from_size_align(self.usable_size(), 8).expect("a valid layout")
    }
}

/// The bytes usable at `ptr` if it is a live allocation of the global
/// arena ([`ZoneAlloc`](crate::ZoneAlloc)): its size class, or its block's
/// size. `None` for anything else, including pointers outside the arena.
#[inline]
pub fn global_usable_size(ptr: *const u8) -> Option<usize> {
    global_usable_size_cached(ptr).or_else(|| usable_size_slow(NonNull::new(ptr.cast_mut())?))
}

/// The common case of [`global_usable_size`] alone (redis asks after
/// every allocation and before every free): a slab object, one side-table
/// read from a copy of where the side table is; no thread-local, no lock,
/// no call. `None` for anything else (null too), which
/// [`global_usable_size`] may still know.
#[inline(always)]
pub fn global_usable_size_cached(ptr: *const u8) -> Option<usize> {
    // Null fails the region test like any pointer outside it.
    let class = geometry()?.class_of_object(ptr as usize)?;
    Some(class.size())
}

/// Region base, region length, side table of the global arena, once it
/// exists: fixed for its life, copied here on first use. One static, so a
/// shared library reaches all three through one address.
static GEOMETRY: GeometryCopy =
    GeometryCopy { region_base: AtomicUsize::new(0), region_len: AtomicUsize::new(0), table: AtomicUsize::new(0) };

/// [`SlabGeometry`] in atomics; `table` (its address) is 0 until all three
/// are set.
struct GeometryCopy {
    region_base: AtomicUsize,
    region_len: AtomicUsize,
    table: AtomicUsize,
}

/// Where the global arena's region and side table are, once
/// [`usable_size_slow`] has found the arena: `None` before.
#[inline(always)]
fn geometry() -> Option<SlabGeometry> {
    let table = GEOMETRY.table.load(Ordering::Acquire);
    if table == 0 {
        return None;
    }
    Some(SlabGeometry {
        region_base: GEOMETRY.region_base.load(Ordering::Relaxed),
        region_len: GEOMETRY.region_len.load(Ordering::Relaxed),
        table: ptr::with_exposed_provenance_mut(table),
    })
}

/// Fills [`GEOMETRY`] from `arena` (the global one).
fn set_geometry(arena: &Arena) {
    let geometry = slab_geometry(arena);
    GEOMETRY.region_base.store(geometry.region_base, Ordering::Relaxed);
    GEOMETRY.region_len.store(geometry.region_len, Ordering::Relaxed);
    // Release: whoever sees the table sees the other two (all racers
    // store the same values).
    GEOMETRY.table.store(geometry.table.expose_provenance(), Ordering::Release);
}

/// [`global_usable_size`] beyond a slab object found through
/// [`GEOMETRY`], which it fills the first time. Out of line, so that the
/// fast path is a leaf.
#[inline(never)]
fn usable_size_slow(ptr: NonNull<u8>) -> Option<usize> {
    let arena = global_arena()?;
    if GEOMETRY.table.load(Ordering::Relaxed) == 0 {
        set_geometry(arena);
    }
    Allocation::of(arena, ptr).ok().map(Allocation::usable_size)
}

/// What [`global_malloc`] handed out.
#[derive(Clone, Copy, Debug)]
pub struct Malloced {
    /// The block, null if the allocation failed.
    pub ptr: *mut u8,
    /// Whether it lies outside the global arena (beyond its largest block,
    /// or made while the arena was being built): [`global_free`] and the
    /// others do not know such a block, and its owner must free it with
    /// [`global_free_outside`] and its layout.
    pub outside: bool,
}

/// C's `malloc` (and `calloc` with `zero`): `layout` from the global
/// allocator, the calling thread's slab heap first, as `ZoneAlloc::alloc`.
/// Inlined, so that a constant alignment folds the class lookup.
#[inline(always)]
pub fn global_malloc(layout: Layout, zero: bool) -> Malloced {
    if let Some(class) = class_of(layout.size(), layout.align())
        && let Some(ptr) = alloc_from_heap(class, layout, zero)
    {
        return Malloced { ptr, outside: false };
    }
    // Only the slow path can hand out memory beside the arena.
    let ptr = alloc_slow(layout, zero);
    Malloced { ptr, outside: !ptr.is_null() && !global_arena().is_some_and(|arena| arena.contains(ptr)) }
}

/// The common case of [`global_malloc`] alone: `size` bytes at
/// [`MIN_ALIGN`] from a slab this thread's heap already has, with free
/// objects at hand. `None`, with nothing done, for anything else (the
/// caller goes on to [`global_malloc`]). Makes no call and no system call.
#[inline(always)]
pub fn global_malloc_cached(size: usize) -> Option<NonNull<u8>> {
    let class = class_of(size, MIN_ALIGN)?;
    with_ready_heap(|heap| heap.alloc_cached(class))
}

/// The next step after [`global_malloc_cached`] found the current slab
/// empty: an object of `size` bytes at [`MIN_ALIGN`] from the other slabs
/// this thread's heap has (its ring walk, which collects other threads'
/// frees, takes back slabs they noticed and parks full ones). `None`
/// sends the caller on to [`global_malloc`], which looks at the heap
/// again before it takes a new slab (a second walk, cheap once the first
/// parked what it found full, and only on the way to a new slab). Takes
/// no lock; its only system call is the report of a double free it
/// finds.
#[inline]
pub fn global_malloc_ring(size: usize) -> Option<NonNull<u8>> {
    let class = class_of(size, MIN_ALIGN)?;
    let guard = AbortOnUnwind;
    let ptr = alloc_from_ring(class);
    guard.disarm();
    ptr
}

/// Frees `ptr` without its layout. `false`, with nothing done, if `ptr` is
/// not inside the global arena (the caller decides what it is); a pointer
/// inside it that is not a live allocation is refused and reported, as
/// [`ZoneAlloc`](crate::ZoneAlloc)'s `dealloc` refuses one.
///
/// # Safety
/// If `ptr` is a live allocation, the caller does not use it afterwards.
#[inline]
pub unsafe fn global_free(ptr: *mut u8) -> bool {
    // SAFETY: the caller's contract.
    unsafe { global_free_cached(ptr) || free_slow(ptr) }
}

/// The common case of [`global_free`] alone: an object of this thread's
/// slabs, found and freed through the heap's own copy of the side table's
/// address. `false`, with nothing done, for anything else. Makes no
/// system call (C's `free` must leave `errno` alone, and only the rest of
/// [`global_free`] may wait on a lock).
///
/// # Safety
/// As for [`global_free`].
#[inline(always)]
pub unsafe fn global_free_cached(ptr: *mut u8) -> bool {
    with_ready_heap(
        #[inline(always)]
        // SAFETY: the caller's contract; the heap checks the pointer (null
        // included: it is outside the region).
        |heap| unsafe { heap.free_cached_unsized(ptr) }.then_some(()),
    )
    .is_some()
}

/// Frees a block [`global_malloc`] handed out `outside` the arena, with
/// the layout it was asked for.
///
/// # Safety
/// `ptr` came from [`global_malloc`] with `layout` and `outside` set, and
/// is not used afterwards.
pub unsafe fn global_free_outside(ptr: *mut u8, layout: Layout) {
    // SAFETY: the caller's contract: a block of the allocator beneath the
    // arena, with its layout.
    unsafe { SysAlloc.dealloc(ptr, layout) }
}

/// [`global_free`] beyond this thread's own slabs.
///
/// # Safety
/// As for [`global_free`].
#[inline(never)]
unsafe fn free_slow(ptr: *mut u8) -> bool {
    let Some(arena) = global_arena() else { return false };
    if !arena.contains(ptr) {
        return false;
    }
    let Some(nn) = NonNull::new(ptr) else { return false };
    match Allocation::of(arena, nn) {
        // SAFETY: a live object of `class` (its slab's side-table key),
        // which the caller frees once.
        Ok(Allocation::Object(class)) => unsafe { dealloc_object(ptr, class, Allocation::Object(class).layout()) },
        // SAFETY: an allocated block head of this order (the arena checks
        // it again under its lock).
        Ok(Allocation::Block(order)) => {
            if let Err(e) = unsafe { arena.free_pages(nn, order) } {
                let reason = match e {
                    crate::error::FreeError::DoubleFree { .. } => "double free",
                    _ => "not a block start",
                };
                refuse(ptr, None, reason);
            }
        }
        Err(reason) => refuse(ptr, None, reason),
    }
    true
}

/// Resizes `ptr` to `new_size` bytes aligned to [`MIN_ALIGN`], as C's
/// `realloc`: in place when the new size has the same class, or when a
/// block can grow where it lies; otherwise moved. `None`, with nothing
/// done, if `ptr` is not inside the global arena; `Some(null)` if the
/// allocation failed (the old one stays) or `ptr` was refused.
///
/// # Safety
/// If `ptr` is a live allocation and the result is not null, the caller
/// uses the result instead of `ptr` from then on.
pub unsafe fn global_realloc(ptr: *mut u8, new_size: usize) -> Option<*mut u8> {
    let arena = global_arena()?;
    if !arena.contains(ptr) {
        return None;
    }
    let nn = NonNull::new(ptr)?;
    let Ok(new_layout) = Layout::from_size_align(new_size.max(1), MIN_ALIGN) else { return Some(ptr::null_mut()) };
    let old = match Allocation::of(arena, nn) {
        Ok(old) => old,
        Err(reason) => {
            refuse(ptr, None, reason);
            return Some(ptr::null_mut());
        }
    };
    Some(match old {
        Allocation::Object(class) => {
            if class_of(new_layout.size(), MIN_ALIGN) == Some(class) {
                return Some(ptr);
            }
            let moved = alloc_impl(new_layout, false);
            let len = class.size().min(new_size);
            // SAFETY: a live object of at least `len` bytes, of `class`
            // (its slab's key); `moved` is fresh.
            unsafe { move_into(ptr, moved, len, || dealloc_object(ptr, class, old.layout())) }
        }
        // SAFETY: a live block; its layout at MIN_ALIGN maps to its order.
        Allocation::Block(_) => unsafe {
            realloc_pages(ptr, Layout::from_size_align_unchecked(old.usable_size(), MIN_ALIGN), new_layout)
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exact_class_size_maps_back_to_its_class() {
        for class in SizeClass::all() {
            assert_eq!(class_of(class.size(), 8), Some(class), "class {class}");
        }
        for order in MIN_BLOCK_ORDER..=10 {
            let layout = Allocation::Block(order).layout();
            assert_eq!((class_of(layout.size(), layout.align()), crate::arena::layout_order(layout)), (None, order));
        }
    }
}
