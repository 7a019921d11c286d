//! Racing double frees of one block (issue 25): two threads free the same
//! block at the same moment, through their page caches or the zone lists,
//! while a third allocates. Exactly one free is accepted, the other is
//! refused, and no block is ever handed out twice or while live: every
//! block carries a marker, and every live block is in one shared set.

mod support;

use std::collections::HashSet;
use std::ptr::NonNull;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use support::{Rendezvous, Rng, Seen};
use zonealloc::{AllocFlags, Arena, FreeError, THREAD_ARENAS};

/// Blocks in use by any thread of the test.
struct Live(Mutex<HashSet<usize>>);

impl Live {
    /// Takes a block of `order`, marks it with `tag` and records it live.
    fn alloc(&self, arena: &Arena, order: u32, tag: u64, seen: &Seen) -> Option<NonNull<u8>> {
        let p = arena.alloc_pages(order, AllocFlags::NOWARN).ok()?;
        if !self.0.lock().unwrap().insert(p.as_ptr() as usize) {
            seen.handed_out_twice.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the block is ours and at least 4 KiB.
        unsafe { p.as_ptr().cast::<u64>().write(tag) };
        Some(p)
    }

    /// Checks the marker, forgets the block and frees it once.
    fn free(&self, arena: &Arena, p: NonNull<u8>, order: u32, tag: u64, seen: &Seen) {
        // SAFETY: ours until the free below.
        if unsafe { p.as_ptr().cast::<u64>().read() } != tag {
            seen.overwritten.fetch_add(1, Ordering::Relaxed);
        }
        self.0.lock().unwrap().remove(&(p.as_ptr() as usize));
        // SAFETY: allocated with this order, freed once.
        if unsafe { arena.free_pages(p, order) }.is_err() {
            seen.other_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// `rounds` times: racer 0 allocates a block of `order`, both racers free
/// it at once, then each takes and holds `HELD` blocks of that order (a
/// block that went onto both racers' lists is popped by both) while a
/// third thread allocates and frees blocks of the orders around `order`.
/// Not of `order` itself: had it been handed the block between the two
/// frees, the second would be a free through a stale pointer after a
/// legitimate reuse, which no allocator can tell from a valid one (a block
/// of another order at the same place makes it a refused free). With
/// `one_uncached`, racer 1 has no page cache for this arena (it first
/// uses `THREAD_ARENAS` others), so its frees take the zone lock while
/// racer 0's go through its cache.
fn race(order: u32, rounds: usize, one_uncached: bool) {
    const HELD: usize = 4;
    let arena = Arena::builder().region_size(256 << 20).zones(2).build().unwrap();
    let others: Vec<Arena> =
        (0..THREAD_ARENAS).map(|_| Arena::builder().region_size(4 << 20).zones(1).build().unwrap()).collect();
    let live = Live(Mutex::new(HashSet::new()));
    let seen = Seen::default();
    let slot = AtomicUsize::new(0);
    let meeting = Rendezvous::new(Duration::from_secs(20));
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        for racer in 0..2u64 {
            let (arena, others, live, seen, slot, meeting) = (&arena, &others, &live, &seen, &slot, &meeting);
            s.spawn(move || {
                if racer == 1 && one_uncached {
                    for other in others {
                        // SAFETY: allocated just now, freed once.
                        unsafe { other.free_pages(other.alloc_pages(0, AllocFlags::empty()).unwrap(), 0) }.unwrap();
                    }
                }
                for round in 0..rounds {
                    let tag = (racer << 48) | round as u64;
                    if racer == 0 {
                        let p = live.alloc(arena, order, tag, seen).expect("memory for the raced block");
                        live.0.lock().unwrap().remove(&(p.as_ptr() as usize));
                        slot.store(p.as_ptr() as usize, Ordering::Relaxed);
                    }
                    meeting.meet(3 * round + 1);
                    let p = NonNull::new(slot.load(Ordering::Relaxed) as *mut u8).unwrap();
                    // SAFETY: both racers free the same block; the arena must
                    // accept one free and refuse the other.
                    match unsafe { arena.free_pages(p, order) } {
                        Ok(()) => seen.accepted.fetch_add(1, Ordering::Relaxed),
                        // Inside a block the third thread took after the
                        // first free, or the head of one of another order.
                        Err(FreeError::DoubleFree { .. } | FreeError::NotBlockStart { .. })
                        | Err(FreeError::WrongOrder { .. }) => seen.refused.fetch_add(1, Ordering::Relaxed),
                        Err(_) => seen.other_errors.fetch_add(1, Ordering::Relaxed),
                    };
                    // Both frees are over before either racer allocates.
                    meeting.meet(3 * round + 2);
                    let held: Vec<_> = (0..HELD).filter_map(|_| live.alloc(arena, order, tag, seen)).collect();
                    meeting.meet(3 * round + 3);
                    held.into_iter().for_each(|p| live.free(arena, p, order, tag, seen));
                }
            });
        }
        let (arena, live, seen, done) = (&arena, &live, &seen, &done);
        s.spawn(move || {
            let mut rng = Rng(u64::from(order) + 1);
            let mut mine = Vec::new();
            let mut i = 0u64;
            while !done.load(Ordering::Relaxed) || !mine.is_empty() {
                let tag = (2 << 48) | i;
                i += 1;
                if mine.len() < 16 && !done.load(Ordering::Relaxed) && rng.below(2) == 0 {
                    let o = rng.below(u64::from(order) + 1) as u32;
                    let o = if o == order { order + 1 } else { o };
                    if let Some(p) = live.alloc(arena, o, tag, seen) {
                        mine.push((p, o, tag));
                    }
                } else if !mine.is_empty() {
                    let (p, o, tag) = mine.swap_remove(rng.below(mine.len() as u64) as usize);
                    live.free(arena, p, o, tag, seen);
                }
            }
        });
        // The racers end first; then the allocator frees what it holds.
        while meeting.arrived() < 6 * rounds {
            std::thread::yield_now();
        }
        done.store(true, Ordering::Relaxed);
    });
    let count = |c: &AtomicUsize| c.load(Ordering::Relaxed);
    assert_eq!(
        [&seen.accepted, &seen.refused, &seen.other_errors, &seen.handed_out_twice, &seen.overwritten].map(count),
        [rounds, rounds, 0, 0, 0],
        "order {order}: frees accepted, refused, other errors; blocks handed out twice, overwritten"
    );
    let stats = arena.stats();
    assert_eq!(stats.invalid_frees, rounds as u64);
    arena.check().unwrap();
    arena.drain_pcp();
    arena.check().unwrap();
    for zone in &arena.stats().zones {
        assert_eq!(zone.free, zone.managed, "zone {}: every page back", zone.zone);
    }
}

#[test]
fn racing_frees_through_the_page_caches_are_accepted_once() {
    for order in [0, 2, 4, 5] {
        race(order, 5_000, false);
    }
}

#[test]
fn racing_frees_through_the_zone_lists_are_accepted_once() {
    race(9, 2_000, false);
}

#[test]
fn a_cached_free_racing_an_uncached_one_is_accepted_once() {
    for order in [0, 4] {
        race(order, 5_000, true);
    }
}
