//! The slab layer through explicit per-thread heaps: exact slab counts,
//! cross-thread frees, thread exit, orphans, bad frees.

mod support;

use std::collections::HashSet;
use std::ptr::NonNull;

use zonealloc::{Arena, SizeClass, SlabFreeError, Slabs, ThreadHeap, class_of};

fn arena() -> Arena {
    support::quiet_arena(64 << 20, 2)
}

fn free_pages(arena: &Arena) -> usize {
    arena.stats().zones.iter().map(|z| z.free).sum()
}

/// Frees `addr`, an object of `class`, through `slabs` from a thread of its
/// own (a thread with no heap, as another thread's free is); the result.
///
/// # Safety
/// As for [`Slabs::free_remote`].
unsafe fn free_from_another_thread(
    slabs: &Slabs,
    arena: &Arena,
    addr: usize,
    class: SizeClass,
) -> Result<(), SlabFreeError> {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: the caller's contract.
            unsafe { slabs.free_remote(arena, NonNull::new(addr as *mut u8).unwrap(), class) }
        })
        .join()
        .unwrap()
    })
}

#[test]
fn every_class_hands_out_distinct_aligned_objects_and_gives_slabs_back() {
    let arena = arena();
    let slabs = Slabs::new();
    let start = free_pages(&arena);
    let mut heap = ThreadHeap::new(&arena, &slabs);
    for (class, size) in SizeClass::all().map(|c| (c, c.size())) {
        let mut seen = HashSet::new();
        let objects: Vec<NonNull<u8>> = (0..100).map(|_| heap.alloc(class).unwrap()).collect();
        for (i, p) in objects.iter().enumerate() {
            let addr = p.as_ptr() as usize;
            assert!(arena.contains(p.as_ptr()));
            // 16-aligned, but for the 8-byte-step classes (24, 40, 56),
            // which serve requests aligned to 8 at most.
            let align = if size.is_multiple_of(16) { 16 } else { 8 };
            assert_eq!(addr % align, 0, "class {class}");
            if size.is_power_of_two() {
                assert_eq!(addr % size, 0, "class {class}: power-of-two objects are aligned to their size");
            }
            assert!(seen.insert(addr), "handed out twice");
            // SAFETY: ours, `size` bytes.
            unsafe { p.as_ptr().write_bytes(i as u8, size) };
        }
        // No two objects overlap: each still holds its own fill.
        for (i, p) in objects.iter().enumerate() {
            // SAFETY: as above.
            let bytes = unsafe { std::slice::from_raw_parts(p.as_ptr(), size) };
            assert!(bytes.iter().all(|&b| b == i as u8), "class {class}: object {i} was overwritten");
        }
        let stats = slabs.stats()[class];
        assert!(stats.slabs >= 1);
        for p in objects {
            // SAFETY: allocated above for this class.
            unsafe { heap.free(p, class).unwrap() };
        }
        // Every slab but the current one went back.
        assert_eq!(slabs.stats()[class].slabs, 1, "class {class}");
    }
    drop(heap);
    assert_eq!(slabs.stats().iter().map(|c| c.slabs).sum::<usize>(), 0);
    assert_eq!(free_pages(&arena), start, "every slab page is back");
    arena.check().unwrap();
}

#[test]
fn frees_from_another_thread_come_back_to_the_owner() {
    let arena = arena();
    let slabs = Slabs::new();
    let class = class_of(64, 8).unwrap();
    let mut heap = ThreadHeap::new(&arena, &slabs);
    let objects: Vec<usize> = (0..1000).map(|_| heap.alloc(class).unwrap().as_ptr() as usize).collect();
    let slab_count = slabs.stats()[class].slabs;
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut other = ThreadHeap::new(&arena, &slabs);
            for &addr in &objects {
                // SAFETY: objects of `class`, freed once.
                unsafe { other.free(NonNull::new(addr as *mut u8).unwrap(), class).unwrap() };
            }
        });
    });
    // The owner reuses them: no new slab for the next 1000.
    let again: HashSet<usize> = (0..1000).map(|_| heap.alloc(class).unwrap().as_ptr() as usize).collect();
    assert_eq!(again.len(), 1000);
    assert_eq!(slabs.stats()[class].slabs, slab_count, "remote frees were not reused");
    for addr in again {
        // SAFETY: as above.
        unsafe { heap.free(NonNull::new(addr as *mut u8).unwrap(), class).unwrap() };
    }
    drop(heap);
    assert_eq!(slabs.stats()[class].slabs, 0);
    arena.check().unwrap();
}

#[test]
fn an_exiting_thread_orphans_its_slabs_and_another_adopts_them() {
    let arena = arena();
    let slabs = Slabs::new();
    let start = free_pages(&arena);
    let class = class_of(200, 8).unwrap();
    let objects: Vec<usize> = std::thread::scope(|s| {
        s.spawn(|| {
            let mut heap = ThreadHeap::new(&arena, &slabs);
            (0..300).map(|_| heap.alloc(class).unwrap().as_ptr() as usize).collect()
        })
        .join()
        .unwrap()
    });
    let orphaned = slabs.stats()[class];
    assert!(orphaned.orphans >= 1 && orphaned.orphans == orphaned.slabs, "{orphaned:?}");
    // All but 10 freed remotely (no heap at all), the rest by a new owner.
    for &addr in &objects[10..] {
        // SAFETY: objects of `class`, freed once.
        unsafe { slabs.free_remote(&arena, NonNull::new(addr as *mut u8).unwrap(), class).unwrap() };
    }
    let mut heap = ThreadHeap::new(&arena, &slabs);
    let fresh = heap.alloc(class).unwrap();
    assert_eq!(slabs.stats()[class].orphans, orphaned.orphans - 1, "the new heap adopted an orphan");
    assert_eq!(slabs.stats()[class].slabs, orphaned.slabs, "instead of taking a new slab");
    // SAFETY: as above.
    unsafe { heap.free(fresh, class).unwrap() };
    for &addr in &objects[..10] {
        // SAFETY: as above.
        unsafe { heap.free(NonNull::new(addr as *mut u8).unwrap(), class).unwrap() };
    }
    drop(heap);
    // What the heap did not own is still orphaned, now empty: reclaim reaps it.
    let reaped = slabs.reap_orphans(&arena);
    assert_eq!(reaped, (orphaned.orphans - 1) * (orphaned.slab_bytes / orphaned.slabs) / 4096);
    assert_eq!(slabs.stats()[class].slabs, 0);
    assert_eq!(free_pages(&arena), start, "nothing leaked across the exit");
    arena.check().unwrap();
}

#[test]
fn bad_frees_are_refused_without_writing() {
    let arena = arena();
    let slabs = Slabs::new();
    let mut heap = ThreadHeap::new(&arena, &slabs);
    let class = class_of(48, 8).unwrap();
    let a = heap.alloc(class).unwrap();
    let b = heap.alloc(class).unwrap();
    // SAFETY: each call is refused before anything is written.
    unsafe {
        let inside = NonNull::new(a.as_ptr().add(8)).unwrap();
        assert_eq!(heap.free(inside, class), Err(SlabFreeError::NotAnObject));
        let wrong = SizeClass::new(class.index() + 1).unwrap();
        assert_eq!(heap.free(a, wrong), Err(SlabFreeError::NotAnObject), "wrong class");
        assert_eq!(slabs.free_remote(&arena, a, wrong), Err(SlabFreeError::NotAnObject), "wrong class");
        // A class that does not exist cannot be named.
        for bad in [zonealloc::NR_CLASSES, usize::MAX] {
            assert_eq!(SizeClass::new(bad), None, "class {bad}: no such class");
        }
        // 48-byte objects in a 4 KiB slab: 85 of them, and 4080 = 85 * 48
        // is a boundary past the last one.
        let base = a.as_ptr() as usize & !4095;
        let past = NonNull::new((base + 85 * 48) as *mut u8).unwrap();
        assert_eq!(heap.free(past, class), Err(SlabFreeError::NotAnObject), "past the last object");
        let outside = NonNull::new(std::ptr::dangling_mut::<u8>().wrapping_add(4096)).unwrap();
        assert_eq!(heap.free(outside, class), Err(SlabFreeError::NotAnObject), "outside the region");
        let page = arena.alloc_pages(0, zonealloc::AllocFlags::empty()).unwrap();
        assert_eq!(heap.free(page, class), Err(SlabFreeError::NotAnObject), "a page, not a slab");
        arena.free_pages(page, 0).unwrap();
        heap.free(a, class).unwrap();
        assert_eq!(heap.free(a, class), Err(SlabFreeError::DoubleFree));
        assert_eq!(slabs.free_remote(&arena, a, class), Err(SlabFreeError::DoubleFree));
        heap.free(b, class).unwrap();
    }
    drop(heap);
    arena.check().unwrap();
    assert_eq!(slabs.stats()[class].slabs, 0);
    // The slab went back to the buddy allocator: its side-table key is
    // gone, so a late free of one of its objects is refused too.
    // SAFETY: refused before anything is written.
    assert_eq!(unsafe { slabs.free_remote(&arena, b, class) }, Err(SlabFreeError::NotAnObject));
    arena.check().unwrap();
}

/// Slab headers live out of band: a slab's objects fill its whole block
/// (the smallest power-of-two number of pages holding 64 objects, or
/// 32 KiB if that holds eight, or else eight objects), and
/// writing every byte of every object, up to the very end of the block
/// where the header used to sit, disturbs nothing.
#[test]
fn objects_fill_the_whole_slab_and_writing_all_of_them_disturbs_nothing() {
    let arena = arena();
    let slabs = Slabs::new();
    let start = free_pages(&arena);
    let mut heap = ThreadHeap::new(&arena, &slabs);
    for (class, size) in SizeClass::all().map(|c| (c, c.size())) {
        let bytes = (size * 64).min(32 << 10).max(size * 8);
        let block = bytes.div_ceil(4096).next_power_of_two() * 4096;
        let capacity = block / size;
        let objects: Vec<NonNull<u8>> = (0..capacity).map(|_| heap.alloc(class).unwrap()).collect();
        let base = objects[0].as_ptr() as usize;
        assert_eq!(base % block, 0, "class {class}: a fresh slab starts at its block");
        for (i, p) in objects.iter().enumerate() {
            assert_eq!(p.as_ptr() as usize, base + i * size, "class {class}: object {i} of one slab");
        }
        assert!(block - capacity * size < size, "class {class}: room for another object is left unused");
        for p in &objects {
            // SAFETY: each object is ours and `size` bytes long.
            unsafe { p.as_ptr().write_bytes(0xa5, size) };
        }
        let next = heap.alloc(class).unwrap();
        assert!(!(base..base + block).contains(&(next.as_ptr() as usize)), "class {class}: the slab was full");
        for p in objects.into_iter().chain([next]) {
            // SAFETY: ours, freed once.
            unsafe { heap.free(p, class) }.unwrap();
        }
    }
    drop(heap);
    slabs.reap_orphans(&arena);
    assert_eq!(free_pages(&arena), start, "every slab went back");
    arena.check().unwrap();
}

/// The allocator never writes an object: what a program leaves in an
/// object when it frees it is still there when the object is handed out
/// again, byte for byte (so an allocation that is never written is never
/// faulted in, and a free does not pull the object into the cache).
#[test]
fn the_allocator_never_writes_an_object() {
    let arena = arena();
    let slabs = Slabs::new();
    let mut heap = ThreadHeap::new(&arena, &slabs);
    for (class, size) in SizeClass::all().map(|c| (c, c.size())) {
        let keep = heap.alloc(class).unwrap(); // keeps the slab from going back
        // All in `keep`'s slab (the largest classes hold eight objects).
        let objects: Vec<NonNull<u8>> = (0..7).map(|_| heap.alloc(class).unwrap()).collect();
        for (i, p) in objects.iter().enumerate() {
            // SAFETY: ours, `size` bytes; the freed memory stays the
            // arena's (its slab is live), so reading it back is defined.
            unsafe {
                p.as_ptr().write_bytes(0x11 * (i as u8 + 1), size);
                heap.free(*p, class).unwrap();
                assert!(
                    std::slice::from_raw_parts(p.as_ptr(), size).iter().all(|&b| b == 0x11 * (i as u8 + 1)),
                    "class {class}: a free wrote into object {i}"
                );
            }
        }
        for (i, p) in objects.iter().enumerate() {
            let again = heap.alloc(class).unwrap();
            assert_eq!(again, *p, "class {class}: the lowest free object is handed out first");
            // SAFETY: ours again.
            let bytes = unsafe { std::slice::from_raw_parts(again.as_ptr(), size) };
            assert!(bytes.iter().all(|&b| b == 0x11 * (i as u8 + 1)), "class {class}: an allocation wrote into it");
        }
        for p in objects.into_iter().chain([keep]) {
            // SAFETY: ours, freed once.
            unsafe { heap.free(p, class) }.unwrap();
        }
    }
    drop(heap);
    assert!(slabs.stats().iter().all(|c| c.slabs == 0), "every slab went back");
    arena.check().unwrap();
}

/// A program that writes into objects after freeing them (a use after
/// free) corrupts only its own data: the slab hands out each object once,
/// every object of the slab comes back, and a live object holding any
/// bytes at all, including bytes copied out of freed objects, is freed
/// normally.
#[test]
fn writes_into_freed_objects_cannot_corrupt_the_slab() {
    let arena = arena();
    let slabs = Slabs::new();
    let class = class_of(32, 8).unwrap();
    let capacity = 4096 / 32;
    let mut heap = ThreadHeap::new(&arena, &slabs);
    let objects: Vec<NonNull<u8>> = (0..capacity).map(|_| heap.alloc(class).unwrap()).collect();
    let base = objects[0].as_ptr() as usize;
    for p in &objects {
        // SAFETY: ours, freed once; then scribbled on, as a program with a
        // use-after-free bug would (the memory is still the arena's).
        unsafe {
            heap.free(*p, class).unwrap();
            p.as_ptr().cast::<usize>().write(base + 32);
            p.as_ptr().add(8).cast::<usize>().write(!0);
            p.as_ptr().add(16).write_bytes(0xff, 16);
        }
    }
    let again: HashSet<usize> = (0..capacity).map(|_| heap.alloc(class).unwrap().as_ptr() as usize).collect();
    assert_eq!(again.len(), capacity, "an object was handed out twice");
    assert!(again.iter().all(|&a| (base..base + 4096).contains(&a)), "an object outside the slab");
    for &addr in &again {
        // SAFETY: ours, freed once, holding whatever bytes it holds.
        unsafe { heap.free(NonNull::new(addr as *mut u8).unwrap(), class) }.unwrap();
    }
    drop(heap);
    assert_eq!(slabs.stats()[class].slabs, 0, "every object came back");
    arena.check().unwrap();
}

/// Double frees are refused at once by the owner after its own free, by
/// another thread after the owner's free, and by another thread after
/// another thread's. The owner's free after another thread's (still on the
/// remote bitmap, not collected) is a double free between threads, which
/// the slab module's guarantee lets be found late: it is, exactly once, by
/// the collect. Either way the object is handed out exactly once after,
/// and the counts stay exact.
#[test]
fn double_frees_are_refused_on_every_path() {
    let arena = arena();
    let slabs = Slabs::new();
    let class = class_of(48, 8).unwrap();
    let mut heap = ThreadHeap::new(&arena, &slabs);
    let keep = heap.alloc(class).unwrap();
    let [a, b, c] = [(); 3].map(|()| heap.alloc(class).unwrap());
    // SAFETY: freed at most once legitimately; repeats are refused.
    let remote_free = |p: NonNull<u8>| unsafe { free_from_another_thread(&slabs, &arena, p.as_ptr() as usize, class) };
    // SAFETY: each repeat is refused before anything changes.
    unsafe {
        heap.free(a, class).unwrap();
        assert_eq!(heap.free(a, class), Err(SlabFreeError::DoubleFree), "owner after owner");
        assert_eq!(remote_free(a), Err(SlabFreeError::DoubleFree), "remote after owner");
        assert_eq!(remote_free(b), Ok(()));
        assert_eq!(heap.free(b, class), Ok(()), "owner after remote, uncollected: left to the collect");
        assert_eq!(remote_free(b), Err(SlabFreeError::DoubleFree), "remote after remote");
    }
    assert_eq!(slabs.late_double_frees(), 0, "nothing collected yet");
    // 85 objects of 48 bytes to a slab, `keep` and `c` live: the other
    // 83 (a and b among them, b once the owner collects it) are handed
    // out, each once, before the slab is full.
    let capacity = 4096 / 48;
    let base = keep.as_ptr() as usize & !4095;
    let again: Vec<NonNull<u8>> = (0..capacity - 2).map(|_| heap.alloc(class).unwrap()).collect();
    let got: HashSet<usize> = again.iter().map(|p| p.as_ptr() as usize).collect();
    assert_eq!(got.len(), capacity - 2, "an object was handed out twice");
    assert_eq!(slabs.late_double_frees(), 1, "the owner's free of b after the remote one, found by the collect");
    assert!(got.contains(&(a.as_ptr() as usize)) && got.contains(&(b.as_ptr() as usize)));
    assert!(!got.contains(&(c.as_ptr() as usize)) && !got.contains(&(keep.as_ptr() as usize)));
    assert!(got.iter().all(|&p| (base..base + 4096).contains(&p)), "the slab was not full");
    for p in again.into_iter().chain([c, keep]) {
        // SAFETY: ours, freed once.
        unsafe { heap.free(p, class) }.unwrap();
    }
    drop(heap);
    assert_eq!(slabs.stats()[class].slabs, 0, "every object came back");
    assert_eq!(slabs.stats()[class].objects, 0, "objects in use miscounted");
    arena.check().unwrap();
}

/// A second free from another thread after the owner collected the first
/// one (here at the owner's exit, which collects every remote free and
/// orphans the slab) is refused: the object is on the owner's bitmap now.
/// The orphan's other objects are still freed normally and the slab goes
/// back.
#[test]
fn a_remote_double_free_after_the_collect_is_refused() {
    let arena = arena();
    let slabs = Slabs::new();
    let class = class_of(64, 8).unwrap();
    let (keep, x) = {
        let mut heap = ThreadHeap::new(&arena, &slabs);
        let keep = heap.alloc(class).unwrap().as_ptr() as usize;
        let x = heap.alloc(class).unwrap().as_ptr() as usize;
        // SAFETY: freed once legitimately; the repeat is refused.
        let from_other_thread = |addr: usize| unsafe { free_from_another_thread(&slabs, &arena, addr, class) };
        assert_eq!(from_other_thread(x), Ok(()));
        drop(heap); // collects x, orphans the slab (keep is live)
        assert_eq!(slabs.stats()[class].orphans, 1);
        assert_eq!(from_other_thread(x), Err(SlabFreeError::DoubleFree), "remote after a collect");
        (keep, x)
    };
    // SAFETY: refused before anything changes; then keep, freed once.
    unsafe {
        let x = NonNull::new(x as *mut u8).unwrap();
        assert_eq!(slabs.free_remote(&arena, x, class), Err(SlabFreeError::DoubleFree), "this thread, no heap");
        slabs.free_remote(&arena, NonNull::new(keep as *mut u8).unwrap(), class).unwrap();
    }
    slabs.reap_orphans(&arena);
    assert_eq!(slabs.stats()[class].slabs, 0, "the orphan went back");
    assert_eq!(slabs.stats()[class].objects, 0);
    arena.check().unwrap();
}

/// `objects` counts what is in use: frees by another thread and by the
/// owner both lower it, and it is exact once the heaps have flushed (at
/// every slab change and when a heap is dropped).
#[test]
fn object_counts_are_exact_after_cross_thread_frees() {
    let arena = arena();
    let slabs = Slabs::new();
    let class = class_of(64, 8).unwrap();
    let mut heap = ThreadHeap::new(&arena, &slabs);
    let objects: Vec<usize> = (0..1000).map(|_| heap.alloc(class).unwrap().as_ptr() as usize).collect();
    std::thread::scope(|s| {
        s.spawn(|| {
            for &addr in &objects[..600] {
                // SAFETY: objects of `class`, freed once.
                unsafe { slabs.free_remote(&arena, NonNull::new(addr as *mut u8).unwrap(), class).unwrap() };
            }
        });
    });
    for &addr in &objects[600..] {
        // SAFETY: as above, by the owner.
        unsafe { heap.free(NonNull::new(addr as *mut u8).unwrap(), class).unwrap() };
    }
    // The owner takes back the remote frees when it allocates again.
    let again: Vec<NonNull<u8>> = (0..10).map(|_| heap.alloc(class).unwrap()).collect();
    heap.flush();
    assert_eq!(slabs.stats()[class].objects, 10);
    for p in again {
        // SAFETY: as above.
        unsafe { heap.free(p, class).unwrap() };
    }
    drop(heap);
    assert_eq!(slabs.stats()[class].objects, 0);
    assert_eq!(slabs.stats()[class].slabs, 0);
}

/// A `Slabs` serves the arena it was first used with: its orphans are
/// slabs of that arena, and a heap over another arena must never adopt
/// them (the first arena may be gone).
#[test]
fn slabs_are_bound_to_one_arena() {
    let slabs = Slabs::new();
    let class = class_of(100, 8).unwrap();
    let first = arena();
    let live = std::thread::scope(|s| {
        s.spawn(|| {
            let mut heap = ThreadHeap::new(&first, &slabs);
            heap.alloc(class).unwrap().as_ptr() as usize // outlives the heap: its slab is orphaned
        })
        .join()
        .unwrap()
    });
    assert_eq!(slabs.stats()[class].orphans, 1);
    drop(first); // the orphan's memory is unmapped
    let second = arena();
    let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut heap = ThreadHeap::new(&second, &slabs);
        heap.alloc(class).map(|p| p.as_ptr() as usize)
    }));
    assert!(made.is_err(), "a heap over another arena was made (and got {:?})", made.ok());
    let _ = live;
}

/// An arena is served by one `Slabs`: a heap of a second one over it is
/// refused (its heaps would share the arena's slabs with the first's
/// under two sets of lists and counts), and so are its remote frees.
#[test]
fn a_second_slabs_over_an_arena_is_refused() {
    let arena = arena();
    let (a, b) = (Slabs::new(), Slabs::new());
    let class = class_of(16, 8).unwrap();
    let mut heap_a = ThreadHeap::new(&arena, &a);
    let p = heap_a.alloc(class).unwrap();
    let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(ThreadHeap::new(&arena, &b))));
    assert!(made.is_err(), "a heap of a second Slabs over the arena was made");
    // SAFETY: refused before anything is written; then freed by its owner.
    unsafe {
        assert_eq!(b.free_remote(&arena, p, class), Err(SlabFreeError::NotAnObject));
        heap_a.free(p, class).unwrap();
    }
    drop(heap_a);
    assert_eq!(a.stats()[class].objects, 0);
    arena.check().unwrap();
}

/// A walk of the ring that finds every slab full parks each slab once,
/// however short the ring: with three full slabs on it the walk comes
/// round to its start after three looks (a second park of one slab would
/// take it off the ring twice, corrupting it). Then freeing everything
/// gives every slab back.
#[test]
fn a_walk_over_a_short_full_ring_parks_each_slab_once() {
    let arena = arena();
    let slabs = Slabs::new();
    let class = class_of(64, 8).unwrap();
    let capacity = 4096 / class.size();
    let mut heap = ThreadHeap::new(&arena, &slabs);
    // Two full slabs (parked by the walks that found them full), a third
    // current and half full.
    let mut objects: Vec<NonNull<u8>> = (0..capacity * 5 / 2).map(|_| heap.alloc(class).unwrap()).collect();
    assert_eq!(slabs.stats()[class].slabs, 3);
    // One free into each full slab takes it back onto the ring.
    for i in [0, capacity] {
        // SAFETY: allocated above for this class, freed once.
        unsafe { heap.free(objects[i], class).unwrap() };
    }
    objects.remove(capacity);
    objects.remove(0);
    // Fill the current slab and both holes: the ring is three full slabs.
    while objects.len() < 3 * capacity {
        objects.push(heap.alloc(class).unwrap());
    }
    assert_eq!(slabs.stats()[class].slabs, 3);
    // This walk finds all three full: a fourth slab.
    objects.push(heap.alloc(class).unwrap());
    assert_eq!(slabs.stats()[class].slabs, 4);
    for p in objects {
        // SAFETY: allocated above for this class, freed once.
        unsafe { heap.free(p, class).unwrap() };
    }
    drop(heap);
    slabs.reap_orphans(&arena);
    assert_eq!((slabs.stats()[class].slabs, slabs.stats()[class].objects), (0, 0));
    arena.check().unwrap();
}

/// The producer/consumer shape (xmalloc-test's): one thread allocates
/// batches of small objects and hands them to another, which keeps up to
/// 100 of them and frees one (the newest, or one picked at random, so
/// that slabs come to mix batches of every age) for each batch it gets.
/// The two take turns, so the test is deterministic: memory the consumer
/// freed must be reused by the producer's next batch, and the class's
/// slabs, counted after every turn, never exceed what the live objects
/// and the batch just freed can fill, plus the producer's current slab.
/// A count, not a time. A heap that did not find its remote frees takes a
/// new slab for most batches, and its slabs grow with the batches made.
#[test]
fn a_producer_keeps_no_more_slabs_than_its_live_objects_fill() {
    const BATCH: usize = 1024; // 16 slabs of 64-byte objects
    const KEPT: usize = 100; // xmalloc-test's queue
    const BATCHES: usize = 2000;
    let arena = support::quiet_arena(256 << 20, 2);
    let slabs = Slabs::new();
    let class = class_of(64, 8).unwrap();
    let capacity = 4096 / 64;
    // The batches kept, the one being made, the one just freed.
    let bound = (KEPT + 2) * BATCH / capacity + 1;
    let (to_consumer, batches) = std::sync::mpsc::sync_channel::<Vec<usize>>(0);
    let (to_producer, turns) = std::sync::mpsc::sync_channel::<()>(0);
    let peak = std::thread::scope(|s| {
        let (arena, slabs) = (&arena, &slabs);
        s.spawn(move || {
            let mut heap = ThreadHeap::new(arena, slabs);
            for b in 0..BATCHES {
                let batch = (0..BATCH)
                    .map(|i| {
                        let ptr = heap.alloc(class).unwrap();
                        let mark = (b * BATCH + i) as u64;
                        // SAFETY: ours, 64 bytes: a mark the freer checks.
                        unsafe { ptr.as_ptr().cast::<[u64; 2]>().write([mark, !mark]) };
                        ptr.as_ptr() as usize
                    })
                    .collect();
                to_consumer.send(batch).unwrap();
                turns.recv().unwrap();
            }
        });
        let consumer = s.spawn(move || {
            let mut kept: Vec<Vec<usize>> = Vec::new();
            let mut rng = 0x9e37_79b9_7f4a_7c15u64;
            let mut peak = 0;
            let free = |batch: Vec<usize>| {
                for addr in batch {
                    // SAFETY: handed over by the producer, freed once.
                    unsafe {
                        let [mark, check] = (addr as *const [u64; 2]).read();
                        assert_eq!(check, !mark, "an object was handed out twice");
                        slabs.free_remote(arena, NonNull::new(addr as *mut u8).unwrap(), class).unwrap();
                    }
                }
            };
            for batch in batches {
                kept.push(batch);
                if kept.len() > KEPT {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let victim = if rng.is_multiple_of(2) { kept.len() - 1 } else { (rng >> 8) as usize % kept.len() };
                    free(kept.swap_remove(victim));
                }
                peak = peak.max(slabs.stats()[class].slabs);
                let _ = to_producer.send(());
            }
            kept.into_iter().for_each(free);
            peak
        });
        consumer.join().unwrap()
    });
    assert!(peak <= bound, "{peak} slabs at the peak for at most {KEPT} batches live (bound {bound})");
    // The producer exited first: its last slabs were orphaned and emptied
    // by the consumer's frees, and go back when reaped.
    slabs.reap_orphans(&arena);
    assert_eq!(slabs.stats()[class].slabs, 0, "every slab came back");
    assert_eq!(slabs.stats()[class].objects, 0);
    arena.check().unwrap();
}
