//! Double frees of slab objects between threads (issue 26): two threads
//! free the same object at the same moment (one of them its slab's owner,
//! or neither) while a third allocates and frees objects of the same
//! class. A second free may be refused at once or found late, when the
//! slab's owner collects its remote frees; either way no object is ever
//! handed out twice or while live, every double free is counted once, and
//! every object and slab comes back.

mod support;

use std::collections::HashSet;
use std::ptr::NonNull;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use support::{Rendezvous, Seen};
use zonealloc::{SizeClass, SlabFreeError, Slabs, ThreadHeap, class_of};

/// Objects in use by any thread of the test.
struct Live(Mutex<HashSet<usize>>);

impl Live {
    fn alloc(&self, heap: &mut ThreadHeap<'_>, class: SizeClass, tag: u64, seen: &Seen) -> NonNull<u8> {
        let p = heap.alloc(class).expect("memory");
        if !self.0.lock().unwrap().insert(p.as_ptr() as usize) {
            seen.handed_out_twice.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: ours, at least 16 bytes.
        unsafe { p.as_ptr().cast::<u64>().write_unaligned(tag) };
        p
    }

    fn free(&self, heap: &mut ThreadHeap<'_>, p: NonNull<u8>, class: SizeClass, tag: u64, seen: &Seen) {
        // SAFETY: ours until the free below.
        if unsafe { p.as_ptr().cast::<u64>().read_unaligned() } != tag {
            seen.overwritten.fetch_add(1, Ordering::Relaxed);
        }
        self.0.lock().unwrap().remove(&(p.as_ptr() as usize));
        // SAFETY: allocated for this class, freed once.
        if unsafe { heap.free(p, class) }.is_err() {
            seen.other_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// `rounds` rounds over objects of `size` bytes. In each, the object is
/// allocated by racer `round % 3` (racer 0 or 1, so one free is its
/// owner's, or a third heap, whose owner stays out of the race, so both
/// are remote); both racers free it at once; after both frees each racer
/// takes and holds `HELD` objects of the class, then frees them. Meanwhile
/// another thread allocates and frees objects of the class from slabs of
/// its own.
fn race(size: usize, rounds: usize) {
    const HELD: usize = 8;
    let arena = support::quiet_arena(64 << 20, 1);
    let slabs = Slabs::new();
    let class = class_of(size, 8).unwrap();
    let live = Live(Mutex::new(HashSet::new()));
    let seen = Seen::default();
    let slot = AtomicUsize::new(0);
    let meeting = Rendezvous::new(Duration::from_secs(30));
    let done = AtomicBool::new(false);
    // The third heap: it allocates the objects of the rounds where neither
    // racer owns them, and is never used during a race.
    let mut outsider = ThreadHeap::new(&arena, &slabs);
    let outsider_objects: Vec<usize> = (0..(0..rounds).filter(|r| r % 3 == 2).count())
        .map(|i| live.alloc(&mut outsider, class, 3 << 48 | i as u64, &seen).as_ptr() as usize)
        .collect();
    for &p in &outsider_objects {
        live.0.lock().unwrap().remove(&p);
    }
    std::thread::scope(|s| {
        for racer in 0..2usize {
            let (arena, slabs, live, seen, slot, meeting) = (&arena, &slabs, &live, &seen, &slot, &meeting);
            let outsider_objects = &outsider_objects;
            s.spawn(move || {
                let mut heap = ThreadHeap::new(arena, slabs);
                for round in 0..rounds {
                    let tag = (racer as u64) << 48 | round as u64;
                    if round % 3 == racer {
                        let p = live.alloc(&mut heap, class, tag, seen);
                        live.0.lock().unwrap().remove(&(p.as_ptr() as usize));
                        slot.store(p.as_ptr() as usize, Ordering::Relaxed);
                    } else if round % 3 == 2 && racer == 0 {
                        slot.store(outsider_objects[round / 3], Ordering::Relaxed);
                    }
                    meeting.meet(3 * round + 1);
                    let p = NonNull::new(slot.load(Ordering::Relaxed) as *mut u8).unwrap();
                    // SAFETY: both racers free the same object; one free
                    // is accepted, the other refused now or found later.
                    match unsafe { heap.free(p, class) } {
                        Ok(()) => seen.accepted.fetch_add(1, Ordering::Relaxed),
                        Err(SlabFreeError::DoubleFree) => seen.refused.fetch_add(1, Ordering::Relaxed),
                        Err(_) => seen.other_errors.fetch_add(1, Ordering::Relaxed),
                    };
                    // Both frees are over before either racer allocates.
                    meeting.meet(3 * round + 2);
                    let held: Vec<_> = (0..HELD).map(|_| live.alloc(&mut heap, class, tag, seen)).collect();
                    meeting.meet(3 * round + 3);
                    held.into_iter().for_each(|p| live.free(&mut heap, p, class, tag, seen));
                }
            });
        }
        let (arena, slabs, live, seen, done) = (&arena, &slabs, &live, &seen, &done);
        s.spawn(move || {
            let mut heap = ThreadHeap::new(arena, slabs);
            let mut mine = Vec::new();
            let mut i = 0u64;
            while !done.load(Ordering::Relaxed) || !mine.is_empty() {
                i += 1;
                if mine.len() < 64 && !done.load(Ordering::Relaxed) {
                    let tag = 2 << 48 | i;
                    mine.push((live.alloc(&mut heap, class, tag, seen), tag));
                } else {
                    mine.drain(..).for_each(|(p, tag)| live.free(&mut heap, p, class, tag, seen));
                }
            }
        });
        while meeting.arrived() < 6 * rounds {
            std::thread::yield_now();
        }
        done.store(true, Ordering::Relaxed);
    });
    drop(outsider);
    // Every heap is gone (its slabs collected); the orphans' remote frees
    // are collected here: every double free has been found.
    slabs.reap_orphans(&arena);
    let count = |c: &AtomicUsize| c.load(Ordering::Relaxed);
    let (accepted, refused) = (count(&seen.accepted), count(&seen.refused));
    assert_eq!(accepted + refused, 2 * rounds, "size {size}: every free answered");
    assert!(accepted >= rounds);
    assert_eq!(
        [&seen.other_errors, &seen.handed_out_twice, &seen.overwritten].map(count),
        [0, 0, 0],
        "size {size}: other errors; objects handed out twice, overwritten"
    );
    assert_eq!(
        slabs.late_double_frees(),
        (accepted - rounds) as u64,
        "size {size}: every double free accepted at first was found later, once"
    );
    assert_eq!(slabs.stats()[class].objects, 0, "size {size}: counts exact");
    arena.check().unwrap();
}

#[test]
fn racing_double_frees_of_small_objects_never_hand_one_out_twice() {
    for size in [48, 64] {
        race(size, 20_000);
    }
}

#[test]
fn racing_double_frees_of_larger_objects_never_hand_one_out_twice() {
    assert_eq!(class_of(1000, 8).unwrap().size(), 1024);
    race(1000, 20_000);
}
