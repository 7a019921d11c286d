//! Heap-free storage for the arena's own structures.
//!
//! An arena may be the process's global allocator, so building one must not
//! allocate through the global allocator (that would recurse into the arena
//! being built). The arena's bookkeeping (the arena itself, its zones) lives
//! in [`SysBox`]es allocated from the allocator beneath it (`sysalloc.rs`),
//! which is never the global allocator's own path.

use std::alloc::{GlobalAlloc, Layout};
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use crate::support::sysalloc::SysAlloc;

/// An owned value or slice in memory from `SysAlloc`, like `Box<T>` but never
/// touching the global allocator.
pub(crate) struct SysBox<T: ?Sized> {
    ptr: NonNull<T>,
    layout: Layout,
    _owns: PhantomData<T>,
}

// SAFETY: a SysBox owns its T exactly as Box<T> does.
unsafe impl<T: ?Sized + Send> Send for SysBox<T> {}
// SAFETY: shared access to a SysBox only hands out &T.
unsafe impl<T: ?Sized + Sync> Sync for SysBox<T> {}

impl<T> SysBox<T> {
    pub(crate) fn try_new(value: T) -> Option<Self> {
        let layout = Layout::new::<T>();
        let ptr = alloc(layout)?.cast::<T>();
        // SAFETY: `ptr` is freshly allocated for `layout`, the layout of T
        // (a zero-sized T gets a dangling, well-aligned pointer).
        unsafe { ptr.as_ptr().write(value) };
        Some(Self { ptr, layout, _owns: PhantomData })
    }
}

impl<T> SysBox<T> {
    /// Gives up ownership; [`from_raw`](Self::from_raw) takes it back.
    pub(crate) fn into_raw(self) -> NonNull<T> {
        let ptr = self.ptr;
        std::mem::forget(self);
        ptr
    }

    /// Takes back ownership of a pointer from [`into_raw`](Self::into_raw).
    ///
    /// # Safety
    /// `ptr` came from `into_raw` and is not used after this call by anyone
    /// else; it is taken back exactly once.
    pub(crate) unsafe fn from_raw(ptr: NonNull<T>) -> Self {
        Self { ptr, layout: Layout::new::<T>(), _owns: PhantomData }
    }
}

/// Types for which all-zero bytes are a valid value, so a slice of them can
/// come straight from `calloc` (fresh zero pages that cost no RSS until
/// touched).
///
/// # Safety
/// An all-zero bit pattern must be a valid, ready-to-use value of the type.
pub(crate) unsafe trait Zeroable {}

// SAFETY: every bit pattern is a `u8`.
unsafe impl Zeroable for u8 {}

impl<T: Zeroable> SysBox<[T]> {
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn try_new_zeroed_slice(len: usize) -> Option<Self> {
        let layout = Layout::array::<T>(len).ok()?;
        let base = if layout.size() == 0 {
            NonNull::new(std::ptr::without_provenance_mut(layout.align()))?
        } else {
            // SAFETY: the layout has a non-zero size.
            NonNull::new(unsafe { SysAlloc.alloc_zeroed(layout) })?
        };
        let ptr = NonNull::slice_from_raw_parts(base.cast::<T>(), len);
        Some(Self { ptr, layout, _owns: PhantomData })
    }
}

impl<T> SysBox<[T]> {
    /// Builds a slice of `len` elements, element `i` being `make(i)`; `None`
    /// if the allocation fails or `make` does (what was built is dropped).
    pub(crate) fn try_from_fn<E>(len: usize, mut make: impl FnMut(usize) -> Result<T, E>) -> Result<Option<Self>, E> {
        let Ok(layout) = Layout::array::<T>(len) else { return Ok(None) };
        let Some(base) = alloc(layout) else { return Ok(None) };
        let base = base.cast::<T>();
        // Owns what is built so far: if `make` fails, drops the elements
        // written and frees the memory. The count lives in the guard itself
        // (not behind a pointer to a local that is then written directly,
        // which would invalidate that pointer before `drop` reads it).
        struct Partial<T> {
            base: NonNull<T>,
            built: usize,
            layout: Layout,
        }
        impl<T> Drop for Partial<T> {
            fn drop(&mut self) {
                // SAFETY: elements 0..built were initialised, and the
                // memory was allocated with `layout`.
                unsafe {
                    let slice = std::ptr::slice_from_raw_parts_mut(self.base.as_ptr(), self.built);
                    std::ptr::drop_in_place(slice);
                }
                dealloc(self.base.cast(), self.layout);
            }
        }
        let mut partial = Partial { base, built: 0, layout };
        while partial.built < len {
            let value = make(partial.built)?;
            // SAFETY: element `built` is inside the allocation (built < len)
            // and not yet initialised.
            unsafe { base.as_ptr().add(partial.built).write(value) };
            partial.built += 1;
        }
        std::mem::forget(partial);
        let ptr = NonNull::slice_from_raw_parts(base, len);
        Ok(Some(Self { ptr, layout, _owns: PhantomData }))
    }
}

impl<T: ?Sized> Deref for SysBox<T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: `ptr` is initialised and owned by self for its whole life.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T: ?Sized> DerefMut for SysBox<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as for `deref`, and `&mut self` is the only access.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T: ?Sized> Drop for SysBox<T> {
    fn drop(&mut self) {
        // SAFETY: the value is initialised and dropped exactly once, here;
        // the memory was allocated with `self.layout`.
        unsafe { std::ptr::drop_in_place(self.ptr.as_ptr()) };
        dealloc(self.ptr.cast(), self.layout);
    }
}

fn alloc(layout: Layout) -> Option<NonNull<u8>> {
    if layout.size() == 0 {
        // A dangling pointer with the right alignment, as Box uses.
        return NonNull::new(std::ptr::without_provenance_mut(layout.align()));
    }
    // SAFETY: the layout has a non-zero size.
    NonNull::new(unsafe { SysAlloc.alloc(layout) })
}

fn dealloc(ptr: NonNull<u8>, layout: Layout) {
    if layout.size() != 0 {
        // SAFETY: `ptr` came from `SysAlloc.alloc(layout)` in `alloc`.
        unsafe { SysAlloc.dealloc(ptr.as_ptr(), layout) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn value_and_slice_round_trip() {
        let b = SysBox::try_new(41u64 + 1).unwrap();
        assert_eq!(*b, 42);
        let s = SysBox::<[u32]>::try_from_fn(5, |i| Ok::<_, ()>(i as u32 * 2)).unwrap().unwrap();
        assert_eq!(&*s, &[0, 2, 4, 6, 8]);
    }

    #[test]
    fn failed_build_drops_what_was_made() {
        let drops = Cell::new(0);
        struct D<'a>(&'a Cell<u32>);
        impl Drop for D<'_> {
            fn drop(&mut self) {
                self.0.set(self.0.get() + 1);
            }
        }
        let r = SysBox::<[D<'_>]>::try_from_fn(4, |i| if i == 3 { Err("boom") } else { Ok(D(&drops)) });
        assert!(matches!(r, Err("boom")));
        assert_eq!(drops.get(), 3);
    }
}
