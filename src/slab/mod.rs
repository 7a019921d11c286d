//! The slab layer: small objects in size classes carved out of buddy blocks
//! (the kernel's kmalloc caches over slab).
//!
//! **Classes.** 8-byte steps from 16 to 64 (a 17..24-byte `String` takes
//! 24 bytes, not 32), 16-byte steps to 128, then four classes per doubling
//! up to 8 KiB (jemalloc's spacing): 35 classes, internal waste at most 20%
//! above 128 bytes. Every class from 32 up is a multiple of 16, so a
//! request aligned to 16 is rounded up to a multiple of 16 and finds a
//! class whose objects are all 16-aligned. A request aligned above 16 takes
//! the smallest power-of-two class that fits both its size and its
//! alignment; objects of a power-of-two class are aligned to their size,
//! since a slab is a buddy block aligned to its own size and filled with
//! objects from its start. A slab holds 64 objects where 32 KiB allows
//! (a thread keeps a slab of every class it uses: larger slabs hold more
//! memory per thread), and eight at least: 4 KiB for sizes up to 64 bytes,
//! 32 KiB from 320 bytes up to 4 KiB, 64 KiB above.
//!
//! **Headers out of band.** A slab's header (128 bytes, see [`Slab`]) lives
//! in the arena's side table, in the slot of the slab's first page, never
//! in the block: the headers of neighbouring slabs share cache lines
//! instead of every header sitting at the same offset of a size-aligned
//! block (where they competed for the same cache sets), an object overrun
//! cannot reach them, and the whole block holds objects.
//!
//! **Free state in bitmaps, never in the objects.** Which objects are free
//! is a bit per object in the header (a slab holds at most 256), so the
//! allocator never reads or writes an object: an allocation the program
//! never writes is never faulted in, a free does not pull the object into
//! the cache, and a write into a freed object cannot corrupt a free list.
//! An allocation takes the free object with the lowest address.
//!
//! **Ownership.** Every slab belongs to one [`ThreadHeap`] (its `owner` id)
//! or to nobody (an orphan). The owner allocates and frees with plain loads
//! and stores on its bitmap and a count of objects out. Any other thread
//! frees by setting the object's bit on the slab's remote bitmap with a
//! `fetch_or` (on the header's second cache line; it reads the first, the
//! owner's, to check the object). The first remote free after a collect
//! sets `PENDING` in the slab's state word; the owner collects (takes each
//! remote word whole with a swap) when it walks its ring for a slab with a
//! free object. The ring is first in, first out (a new slab goes in
//! behind the current one), so a walk reaches every slab within one round.
//! A walk looks at a few slabs without parking any (a walk that finds an
//! object leaves the ring as it was); when none of them had one, it parks
//! them and goes on round the ring, parking each slab it finds full, until
//! it finds an object or the ring is empty. A parked slab is off the ring,
//! so later walks do not look at it again, until the first remote free
//! into it posts a notice to the owner's mailbox (`mailbox.rs`: one push
//! per parking, never an allocation), which the owner takes at its next
//! walk, or until the owner frees into it (a plain store: the state's
//! `PARKED` stays set, see `header.rs`, costs at most one notice the owner
//! did not need, and is cleared before the slab can be returned). So the slabs a producer needs come back to it by
//! notice, not from the buddy allocator, whatever thread frees its
//! objects. A slab whose objects are all back goes to the buddy allocator
//! (unless it is the class's current slab), so its memory can be purged:
//! memory freed by any thread is reused by the thread that allocates, and
//! every slab a heap keeps but its current ones holds an object that is
//! live or freed by another thread and not yet collected (which a parked
//! slab's notice brings to the owner's next walk).
//!
//! **Thread exit.** [`ThreadHeap::drop`] stops every notice (waiting for
//! one being posted), drains its mailbox and gives it back, collects every
//! slab's remote frees, returns the empty ones and orphans the rest onto
//! the shared per-class orphan lists in [`Slabs`]; a thread that needs a
//! slab of that class adopts one before it asks the buddy allocator for a
//! new one, so short-lived threads leak nothing. A remote free never needs
//! the owner to be alive: it touches only the slab, and the mailbox, which
//! outlives every heap that used it (the pool keeps it). Orphans that
//! become empty are returned by `Slabs::reap_orphans` (the global arena's
//! shrinker).
//!
//! **Checks.** A free is refused (and reported by the caller) unless the
//! side-table slot of the block around the pointer (at the class's slab
//! order) holds a live slab of that class (magic and class in one word,
//! cleared when the slab goes back to the buddy allocator) and the pointer
//! is an object boundary (one multiplication gives the boundary test and
//! the object's index). The bits are the allocator's own state, so no
//! bytes a live object holds can be mistaken for a free one.
//!
//! **Double frees.** The guarantee is the README's ("Double frees"):
//! no object handed out twice or while live, no state corrupted, a double
//! free on one thread refused at once, one between threads refused at
//! once or found at the owner's next collect and reported there
//! ([`Slabs::late_double_frees`]).
//!
//! Why it holds: an allocation never hands out an object whose bit is on
//! the remote bitmap (it reads the remote word at every hand-out: a flag
//! could be read before a racing free sets it and after its bit), so a
//! remote free of a free object cannot come back as a second free of the
//! object's next user; a collect frees only objects not already free; the
//! notice protocol (`PARKED`, `NOTICED`, `POSTING`, see `header.rs`) posts
//! each parked slab at most once and never after its owner gave its
//! mailbox back.
//!
//! `tests/loom.rs` models the protocol over this code: a remote free
//! racing the owner's collect and reuse, two remote frees of one object
//! racing each other and the owner's collect, the owner's free racing a
//! remote free of the same object, a notice posted while its owner exits,
//! a slab parked again after a local free took it back, and exits,
//! adoption and shared heaps. Under loom every hand-out writes
//! and every free reads a cell standing for the object (`object.rs`), so
//! a protocol that let an object out while its last user could still use
//! it shows as a race there.
//!
//! **Counts.** `objects` in use per class is kept per heap and published
//! when a count reaches [`FLUSH_BATCH`] on a heap's slower paths (a walk
//! of its ring, a remote free, a slab emptied or taken back from parking),
//! at every new or adopted slab, at a heap's drop and on
//! [`ThreadHeap::flush`]; the fast paths only count. A live heap's
//! unpublished change is bounded by the objects its slabs hold.

use std::ptr::NonNull;

use crate::arena::Arena;
use crate::flags::AllocFlags;

mod cache;
mod class;
mod header;
mod heap;
mod mailbox;
mod map;
mod object;
mod parked;
mod shared;

pub(crate) use cache::*;
pub use cache::{ClassStats, FLUSH_BATCH, Slabs};
pub(crate) use class::*;
pub use class::{ClassTable, NR_CLASSES, SIZE_CLASSES, SLAB_MAX, SizeClass, class_of};
pub use header::SlabFreeError;
pub(crate) use header::*;
pub use heap::ThreadHeap;
use mailbox::*;
use map::*;
#[cfg(not(loom))]
pub(crate) use map::{SlabGeometry, object_class, slab_geometry};
use object::*;
pub(crate) use shared::*;

/// A block for a new slab of `class`, from `arena`'s buddy allocator
/// (which may reclaim, and so run shrinkers that allocate); for
/// [`ThreadHeap::install`].
fn slab_block(arena: &Arena, class: SizeClass) -> Option<NonNull<u8>> {
    arena.alloc_pages(class.slab_order(), AllocFlags::NOWARN).ok()
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn classes_are_sorted_and_lookup_is_exact() {
        for w in SIZE_CLASSES.windows(2) {
            assert!(w[0] < w[1]);
        }
        for size in 1..=SLAB_MAX {
            let class = class_of(size, 16).unwrap();
            let s = SIZE_CLASSES[class.index()];
            assert!(s >= size && s.is_multiple_of(16), "size {size} at align 16: class {s}");
            assert!(SIZE_CLASSES[..class.index()].iter().all(|&c| c < size || !c.is_multiple_of(16)), "size {size}");
        }
        for size in 1..=SLAB_MAX {
            let class = class_of(size, 8).unwrap();
            assert!([1, 2, 4].iter().all(|&align| class_of(size, align) == Some(class)), "size {size}");
            assert!(SIZE_CLASSES[class.index()] >= size, "size {size}");
            assert!(
                class.index() == 0 || SIZE_CLASSES[class.index() - 1] < size,
                "size {size} is not in the smallest class"
            );
            if size > 128 {
                let waste = (SIZE_CLASSES[class.index()] - size) as f64 / SIZE_CLASSES[class.index()] as f64;
                assert!(waste < 0.2, "size {size}: {waste}");
            }
        }
        assert_eq!(class_of(SLAB_MAX + 1, 8), None);
        assert_eq!(class_of(0, 1), SizeClass::new(0));
    }

    #[test]
    fn aligned_classes_are_powers_of_two_that_fit() {
        for align in [32, 64, 128, 256, 4096] {
            for size in [1, align - 1, align, align + 1, 3 * align] {
                match class_of(size, align) {
                    Some(class) => {
                        let s = SIZE_CLASSES[class.index()];
                        assert!(s.is_power_of_two() && s >= size.max(align), "size {size} align {align}");
                    }
                    None => assert!(size.max(align).next_power_of_two() > SLAB_MAX),
                }
            }
        }
    }

    #[test]
    fn the_boundary_test_by_multiplication_matches_the_remainder() {
        for class in SizeClass::all() {
            let info = class.info();
            let size = u64::from(info.size);
            for offset in 0..(4096u64 << info.order) {
                let expected = (offset % size == 0 && offset < u64::from(info.limit))
                    .then(|| ObjectBit::new((offset / size) as usize));
                assert_eq!(object_bit(class, offset as usize), expected, "class {class}, offset {offset}");
            }
        }
    }

    #[test]
    fn every_slab_holds_at_least_eight_objects() {
        for class in SizeClass::all() {
            let size = class.size();
            let bytes = crate::PAGE_SIZE << class.slab_order();
            assert!(bytes / size >= MIN_OBJECTS, "class {class}");
            assert!(bytes / size <= MAX_OBJECTS, "class {class}: a bit per object");
            assert_eq!(class.info().capacity as usize, bytes / size);
        }
    }
}
