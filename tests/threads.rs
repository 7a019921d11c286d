//! Several threads over several zones: no block handed out twice, nothing
//! lost, the arena coalesces back.

mod support;

use std::sync::Barrier;

use support::{Rng, small_arena};
use zonealloc::AllocFlags;

#[test]
fn threads_over_zones_hand_out_each_page_once() {
    let arena = small_arena(4, 2, 6); // 4 zones, 512 pages
    let threads = 4;
    let barrier = Barrier::new(threads);
    let freed_by_thread: Vec<usize> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let arena = &arena;
                let barrier = &barrier;
                s.spawn(move || {
                    let mut rng = Rng(t as u64 + 1);
                    let mut live: Vec<(std::ptr::NonNull<u8>, u32, u8)> = Vec::new();
                    let mut freed = 0;
                    barrier.wait();
                    for i in 0..20_000u32 {
                        if live.len() < 24 && rng.below(2) == 0 {
                            let order = rng.below(4) as u32;
                            if let Ok(p) = arena.alloc_pages(order, AllocFlags::NOWARN) {
                                let tag = (t as u8) << 4 | (i as u8 & 0xf);
                                // SAFETY: the block is ours; fill it whole so overlap shows.
                                unsafe { p.as_ptr().write_bytes(tag, 4096 << order) };
                                live.push((p, order, tag));
                            }
                        } else if !live.is_empty() {
                            let (p, order, tag) = live.swap_remove(rng.below(live.len() as u64) as usize);
                            // SAFETY: ours until freed below.
                            let bytes = unsafe { std::slice::from_raw_parts(p.as_ptr(), 4096 << order) };
                            assert!(bytes.iter().all(|&b| b == tag), "block overwritten by another thread");
                            // SAFETY: allocated above with this order.
                            unsafe { arena.free_pages(p, order) }.unwrap();
                            freed += 1;
                        }
                    }
                    for (p, order, _) in live {
                        // SAFETY: allocated above with this order.
                        unsafe { arena.free_pages(p, order) }.unwrap();
                        freed += 1;
                    }
                    freed
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(freed_by_thread.iter().all(|&n| n > 1000), "{freed_by_thread:?}");
    arena.check().unwrap();
    let stats = arena.stats();
    let allocs: u64 = stats.zones.iter().flat_map(|z| &z.allocs).sum();
    let frees: u64 = stats.zones.iter().flat_map(|z| &z.frees).sum();
    assert_eq!(allocs, frees);
    assert_eq!(allocs as usize, freed_by_thread.iter().sum::<usize>());
    for z in &stats.zones {
        assert_eq!(z.free, z.managed);
        assert_eq!(z.free_blocks.last(), Some(&2));
    }
    // Threads spread over the zones: more than one zone served allocations.
    assert!(stats.zones.iter().filter(|z| z.allocs.iter().sum::<u64>() > 0).count() > 1);
}

#[test]
fn racing_frees_of_one_block_succeed_exactly_once() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use zonealloc::FreeError;

    let arena = small_arena(1, 1, 4);
    let rounds = 20_000;
    let slot = AtomicUsize::new(0);
    let barrier = Barrier::new(2);
    let wins = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..2 {
            let (arena, slot, barrier, wins) = (&arena, &slot, &barrier, &wins);
            s.spawn(move || {
                for _ in 0..rounds {
                    if t == 0 {
                        let p = arena.alloc_pages(0, AllocFlags::NOWARN).unwrap();
                        slot.store(p.as_ptr() as usize, Ordering::Relaxed);
                    }
                    barrier.wait();
                    let p = std::ptr::NonNull::new(slot.load(Ordering::Relaxed) as *mut u8).unwrap();
                    // SAFETY: both threads free the same live block; the arena
                    // must accept exactly one and refuse the other untouched.
                    match unsafe { arena.free_pages(p, 0) } {
                        Ok(()) => {
                            wins.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(FreeError::DoubleFree { .. } | FreeError::NotBlockStart { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                    barrier.wait();
                }
            });
        }
    });
    assert_eq!(wins.load(Ordering::Relaxed), rounds);
    arena.check().unwrap();
    assert_eq!(arena.stats().zones[0].free, 16);
}
