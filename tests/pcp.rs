//! The per-thread page caches: exact refill and trim counts at batch and
//! high, the pool of trimmed batches, drains (remote, on exit, racing the
//! owner), cross-zone frees, high split between threads, bad frees.

mod support;

use std::ptr::NonNull;
use std::sync::Barrier;
use std::sync::mpsc;

use zonealloc::{AllocError, AllocFlags, Arena, FreeError, PcpConfig, WatermarkConfig, Watermarks};

const NOWARN: AllocFlags = AllocFlags::NOWARN;

/// `zones` zones of `pages_per_zone` pages, no watermarks, fixed batch and
/// high, and no reclaim thread: its purge timer drains every cache (a
/// remote drain these tests would count as their own).
fn arena(zones: usize, pages_per_zone: usize, batch: usize, high: usize) -> Arena {
    Arena::builder()
        .region_size(zones * pages_per_zone * 4096)
        .zones(zones)
        .max_order(6)
        .watermarks(WatermarkConfig::PerZone(Watermarks { min: 0, low: 0, high: 0 }))
        .pcp(PcpConfig::Fixed { batch, high })
        .background_reclaim(false)
        .build()
        .unwrap()
}

fn zone_of(arena: &Arena, p: NonNull<u8>) -> usize {
    let offset = p.as_ptr() as usize - arena.region().0.as_ptr() as usize;
    let stats = arena.stats();
    stats.zones.iter().position(|z| (z.start_pfn..z.start_pfn + z.spanned).contains(&(offset / 4096))).unwrap()
}

/// Conservation: every page of every zone is free, cached or allocated.
fn conserved(arena: &Arena, allocated: usize) {
    arena.check().unwrap();
    let stats = arena.stats();
    let (free, cached, managed): (usize, usize, usize) =
        stats.zones.iter().fold((0, 0, 0), |a, z| (a.0 + z.free, a.1 + z.cached, a.2 + z.managed));
    assert_eq!(free + cached + allocated, managed, "free {free} + cached {cached} + allocated {allocated}");
}

#[test]
fn refill_takes_one_batch_under_one_lock() {
    let arena = arena(1, 1024, 8, 32);
    let first = arena.alloc_pages(0, NOWARN).unwrap();
    let z = &arena.stats().zones[0];
    assert_eq!((z.pcp_refills, z.cached, z.free), (1, 7, 1024 - 8));
    assert_eq!((z.pcp_batch, z.pcp_high), (8, 32));
    let mut pages = vec![first];
    for _ in 0..7 {
        pages.push(arena.alloc_pages(0, NOWARN).unwrap());
    }
    let z = &arena.stats().zones[0];
    assert_eq!((z.pcp_refills, z.cached), (1, 0), "seven more come from the cache");
    pages.push(arena.alloc_pages(0, NOWARN).unwrap());
    let z = &arena.stats().zones[0];
    assert_eq!((z.pcp_refills, z.cached, z.free), (2, 7, 1024 - 16));
    // Higher orders refill max(batch >> order, 2) blocks.
    pages.push(arena.alloc_pages(2, NOWARN).unwrap());
    let z = &arena.stats().zones[0];
    assert_eq!((z.pcp_refills, z.cached_blocks[2]), (3, 1));
    assert_eq!(z.allocs[0], 9);
    assert_eq!(z.allocs[2], 1);
    conserved(&arena, 9 + 4);
    let last = pages.pop().unwrap();
    // SAFETY: blocks of this arena with these orders.
    unsafe {
        arena.free_pages(last, 2).unwrap();
        for p in pages {
            arena.free_pages(p, 0).unwrap();
        }
    }
    conserved(&arena, 0);
}

/// Above `PAGE_ALLOC_COSTLY_ORDER` the lists are short: a refill takes one
/// block, a list holds `max(high >> (order + 3), 1)` blocks, a trim moves
/// one; the pool keeps at most the costly order's pages (at least two
/// blocks) and the rest go back to the buddy lists. A 2 MiB block (order
/// 9) is cached one per list, and never pooled: a second one goes back to
/// the buddy lists, where a purge finds it.
#[test]
fn large_orders_are_cached_in_short_lists() {
    let arena = Arena::builder()
        .region_size(64 << 20)
        .zones(1)
        .max_order(9)
        .watermarks(WatermarkConfig::PerZone(Watermarks { min: 0, low: 0, high: 0 }))
        .pcp(PcpConfig::Fixed { batch: 63, high: 1023 })
        .background_reclaim(false)
        .build()
        .unwrap();
    let managed = arena.stats().zones[0].managed;
    for order in 4..=8 {
        let high = (1023 >> (order + 3)).max(1);
        // A refill of one block, handed out: nothing left cached.
        let blocks: Vec<_> = (0..high + 2).map(|_| arena.alloc_pages(order as u32, NOWARN).unwrap()).collect();
        let z = &arena.stats().zones[0];
        assert_eq!((z.cached_blocks[order], z.allocs[order]), (0, high as u64 + 2), "order {order}");
        let refills = z.pcp_refills;
        let trims = z.pcp_trims;
        for (i, &p) in blocks.iter().enumerate() {
            // SAFETY: a block of this arena at this order, freed once.
            unsafe { arena.free_pages(p, order as u32) }.unwrap();
            let z = &arena.stats().zones[0];
            let trimmed = (i + 1).saturating_sub(high);
            assert_eq!(
                (z.cached_blocks[order], z.pcp_trims - trims),
                (i + 1, trimmed as u64),
                "order {order}, free {i}: lists hold {high}, the pool the rest"
            );
        }
        // The next allocation comes from the list, no refill.
        let p = arena.alloc_pages(order as u32, NOWARN).unwrap();
        assert_eq!(arena.stats().zones[0].pcp_refills, refills, "order {order}");
        // SAFETY: as above.
        unsafe { arena.free_pages(p, order as u32) }.unwrap();
        arena.check().unwrap();
    }
    // Each order above left its two trimmed blocks in the pool.
    assert_eq!(arena.stats().zones[0].pooled, (4..=8).map(|o| 2 << o).sum::<usize>());
    // The pool's limit: at order 8 (1 MiB), 128 >> 5 = 4 blocks. Twelve
    // blocks (the list's one, the pool's two, nine from the buddy lists)
    // freed: the list keeps one, the pool four, seven go back to the lists.
    let order = 8u32;
    let blocks: Vec<_> = (0..12).map(|_| arena.alloc_pages(order, NOWARN).unwrap()).collect();
    for p in blocks {
        // SAFETY: as above.
        unsafe { arena.free_pages(p, order) }.unwrap();
    }
    let z = &arena.stats().zones[0];
    assert_eq!(z.pooled, (4..=7).map(|o| 2 << o).sum::<usize>() + (4 << 8), "the order-8 pool holds 4 blocks");
    assert_eq!(z.cached_blocks[8], 1 + 4);
    // A 2 MiB block: the first free keeps it, the next allocation takes it
    // back with no refill; of two freed, the second goes to the lists.
    let before = arena.stats().zones[0].clone();
    let p = arena.alloc_pages(9, NOWARN).unwrap();
    let q = arena.alloc_pages(9, NOWARN).unwrap();
    let z = &arena.stats().zones[0];
    assert_eq!((z.cached_blocks[9], z.pcp_refills - before.pcp_refills), (0, 2));
    // SAFETY: as above.
    unsafe { arena.free_pages(p, 9) }.unwrap();
    let z = &arena.stats().zones[0];
    assert_eq!((z.cached_blocks[9], z.pcp_trims - before.pcp_trims), (1, 0), "one 2 MiB block kept");
    assert_eq!(arena.alloc_pages(9, NOWARN).unwrap(), p, "taken back from the list");
    assert_eq!(arena.stats().zones[0].pcp_refills - before.pcp_refills, 2);
    // SAFETY: as above.
    unsafe {
        arena.free_pages(p, 9).unwrap();
        arena.free_pages(q, 9).unwrap();
    }
    let z = &arena.stats().zones[0];
    assert_eq!((z.cached_blocks[9], z.pcp_trims - before.pcp_trims), (1, 1), "the list holds one, none pooled");
    assert_eq!(z.pooled, before.pooled);
    assert_eq!(z.cached, before.cached + 512);
    assert_eq!(z.cached_blocks.len(), zonealloc::PCP_MAX_ORDER as usize + 1);
    arena.check().unwrap();
    // Nothing is allocated: every cached and pooled block goes back.
    arena.drain_pcp();
    assert_eq!(arena.stats().zones[0].free, managed);
}

/// A 2 MiB block kept in a thread's cache costs a huge page of RSS, so the
/// purge timer reaches it as it reaches free memory in the lists: the free
/// that keeps it sets the timer, and the purge drains the caches first.
#[test]
fn a_cached_2_mib_block_is_purged_on_the_timer() {
    let arena = Arena::builder()
        .region_size(64 << 20)
        .zones(1)
        .purge_delay(Some(std::time::Duration::from_millis(20)))
        .build()
        .unwrap();
    let p = arena.alloc_pages(9, NOWARN).unwrap();
    // SAFETY: ours, 2 MiB.
    unsafe { p.as_ptr().write_bytes(0x5a, 2 << 20) };
    // kswapd asleep with nothing to purge: only the free can set the timer.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while arena.stats().reclaim.kswapd_sleeps == 0 {
        assert!(std::time::Instant::now() < deadline, "kswapd never slept");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_eq!(arena.stats().reclaim.purge_timer_sleeps, 0);
    // SAFETY: ours, freed once, not used after.
    unsafe { arena.free_pages(p, 9) }.unwrap();
    assert_eq!(arena.stats().zones[0].cached_blocks[9], 1);
    loop {
        let z = &arena.stats().zones[0];
        if z.cached_blocks[9] == 0 && z.purged >= 512 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never purged: {:?}", arena.stats().reclaim);
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(arena.stats().reclaim.purges >= 1);
    arena.check().unwrap();
}

#[test]
fn a_free_above_high_trims_one_batch_into_the_pool() {
    let arena = arena(1, 1024, 8, 32);
    // 40 pages: five refills of 8.
    let pages: Vec<_> = (0..40).map(|_| arena.alloc_pages(0, NOWARN).unwrap()).collect();
    assert_eq!(arena.stats().zones[0].pcp_refills, 5);
    for (i, p) in pages.iter().enumerate() {
        // SAFETY: order-0 pages of this arena.
        unsafe { arena.free_pages(*p, 0) }.unwrap();
        let z = &arena.stats().zones[0];
        if i < 32 {
            assert_eq!((z.cached, z.pcp_trims), (i + 1, 0), "free {i}: up to high, no trim");
        }
        if i == 32 {
            // 33 > high: the 8 coldest go to the pool.
            assert_eq!((z.cached, z.pooled, z.pcp_trims), (33, 8, 1));
            assert_eq!(z.cached_blocks[0], 33);
        }
    }
    let z = &arena.stats().zones[0];
    // 40 frees: one trim at 33 leaves 25 in the list; 7 more make 32 (not
    // above high), and the pool holds 8. Nothing reached the buddy lists.
    assert_eq!((z.cached, z.pooled, z.pcp_trims, z.frees[0]), (40, 8, 1, 40));
    assert_eq!(z.free, 1024 - 40);
    conserved(&arena, 0);
}

#[test]
fn the_pool_feeds_another_threads_refill() {
    let arena = arena(1, 1024, 8, 8);
    let pages: Vec<_> = (0..16).map(|_| arena.alloc_pages(0, NOWARN).unwrap()).collect();
    for p in &pages[..9] {
        // SAFETY: order-0 pages of this arena.
        unsafe { arena.free_pages(*p, 0) }.unwrap();
    }
    let z = &arena.stats().zones[0];
    assert_eq!((z.pooled, z.pcp_trims), (8, 1));
    let free_before = z.free;
    // Another thread's first allocation refills from the pool, not the lists.
    let got = std::thread::scope(|s| {
        s.spawn(|| {
            let p = arena.alloc_pages(0, NOWARN).unwrap();
            let z = &arena.stats().zones[0];
            assert_eq!(z.pooled, 0);
            assert_eq!(z.free, free_before, "the refill did not touch the buddy lists");
            p.as_ptr() as usize
        })
        .join()
        .unwrap()
    });
    assert!(pages[..8].iter().any(|p| p.as_ptr() as usize == got), "the refill handed out a pooled block");
    // SAFETY: pages still allocated, and the other thread's page.
    unsafe {
        for p in &pages[9..] {
            arena.free_pages(*p, 0).unwrap();
        }
        arena.free_pages(NonNull::new(got as *mut u8).unwrap(), 0).unwrap();
    }
    conserved(&arena, 0);
}

#[test]
fn a_threads_cache_goes_back_when_it_exits_even_if_it_only_freed() {
    let arena = arena(1, 1024, 8, 64);
    // A thread that allocates and frees. Joined explicitly: a scope returns
    // when its closures do, before the threads' TLS destructors have run;
    // `join` waits for the thread to exit.
    std::thread::scope(|s| {
        s.spawn(|| {
            let pages: Vec<_> = (0..20).map(|_| arena.alloc_pages(0, NOWARN).unwrap()).collect();
            for p in pages {
                // SAFETY: order-0 pages of this arena.
                unsafe { arena.free_pages(p, 0) }.unwrap();
            }
            assert_eq!(arena.stats().zones[0].cached, 24);
        })
        .join()
        .unwrap();
    });
    let z = &arena.stats().zones[0];
    assert_eq!((z.cached, z.free, z.pcp_drains), (0, 1024, 1));
    // A thread that only frees what this one allocated.
    let pages: Vec<_> = (0..20).map(|_| arena.alloc_pages(0, NOWARN).unwrap().as_ptr() as usize).collect();
    std::thread::scope(|s| {
        s.spawn(|| {
            for p in &pages {
                // SAFETY: order-0 pages of this arena, freed once.
                unsafe { arena.free_pages(NonNull::new(*p as *mut u8).unwrap(), 0) }.unwrap();
            }
        })
        .join()
        .unwrap();
    });
    let z = &arena.stats().zones[0];
    // Only this thread's refill remainder (24 - 20 = 4) is still cached.
    assert_eq!((z.cached, z.free), (4, 1020));
    assert_eq!(arena.stats().pcp_sets, 1, "the exited threads' sets are vacant");
    conserved(&arena, 0);
}

#[test]
fn remote_drain_empties_an_idle_threads_cache() {
    let arena = arena(1, 1024, 16, 64);
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (ready_tx, ready_rx) = mpsc::channel::<usize>();
    std::thread::scope(|s| {
        let arena = &arena;
        let worker = s.spawn(move || {
            let pages: Vec<_> = (0..10).map(|_| arena.alloc_pages(0, NOWARN).unwrap()).collect();
            for p in pages {
                // SAFETY: order-0 pages of this arena.
                unsafe { arena.free_pages(p, 0) }.unwrap();
            }
            ready_tx.send(arena.stats().zones[0].cached).unwrap();
            // Idle (blocked) until the main thread has drained us.
            go_rx.recv().unwrap();
            // The cache works again after the drain: a fresh refill.
            let p = arena.alloc_pages(0, NOWARN).unwrap();
            // SAFETY: just allocated at order 0.
            unsafe { arena.free_pages(p, 0) }.unwrap();
        });
        let cached = ready_rx.recv().unwrap();
        assert_eq!(cached, 16);
        assert_eq!(arena.drain_pcp(), 16, "the drain moved exactly the idle thread's pages");
        let stats = arena.stats();
        assert_eq!((stats.zones[0].cached, stats.zones[0].free), (0, 1024));
        assert_eq!(stats.pcp_remote_drains, 1);
        conserved(arena, 0);
        go_tx.send(()).unwrap();
        worker.join().unwrap();
    });
    conserved(&arena, 0);
}

#[test]
fn drains_racing_running_owners_lose_nothing() {
    let arena = arena(2, 512, 4, 16);
    let barrier = Barrier::new(3);
    let drained = std::thread::scope(|s| {
        let mut workers = Vec::new();
        for t in 0..2u64 {
            let (arena, barrier) = (&arena, &barrier);
            workers.push(s.spawn(move || {
                let mut rng = support::Rng(t + 1);
                let mut live = Vec::new();
                barrier.wait();
                for _ in 0..30_000 {
                    if live.len() < 40 && rng.below(2) == 0 {
                        let order = rng.below(3) as u32;
                        let p = arena.alloc_pages(order, NOWARN).unwrap();
                        // SAFETY: ours; tag every byte so a block handed out twice shows.
                        unsafe { p.as_ptr().write_bytes(t as u8 + 1, 4096 << order) };
                        live.push((p, order));
                    } else if let Some((p, order)) = live.pop() {
                        // SAFETY: ours until freed below.
                        let bytes = unsafe { std::slice::from_raw_parts(p.as_ptr(), 4096 << order) };
                        assert!(bytes.iter().all(|&b| b == t as u8 + 1), "block shared between threads");
                        // SAFETY: allocated above with this order.
                        unsafe { arena.free_pages(p, order) }.unwrap();
                    }
                }
                for (p, order) in live {
                    // SAFETY: allocated above with this order.
                    unsafe { arena.free_pages(p, order) }.unwrap();
                }
            }));
        }
        barrier.wait();
        let mut drains = 0;
        for _ in 0..200 {
            arena.drain_pcp();
            arena.check().unwrap();
            drains += 1;
        }
        workers.into_iter().for_each(|w| w.join().unwrap());
        drains
    });
    assert_eq!(arena.stats().pcp_remote_drains, drained);
    arena.drain_pcp();
    for z in arena.stats().zones {
        assert_eq!((z.cached, z.free), (0, z.managed));
    }
    conserved(&arena, 0);
}

#[test]
fn frees_from_another_zone_go_to_this_threads_list_for_that_zone() {
    let arena = arena(2, 512, 8, 32);
    // This thread allocates; note which zone serves it.
    let pages: Vec<_> = (0..8).map(|_| arena.alloc_pages(0, NOWARN).unwrap().as_ptr() as usize).collect();
    let home = zone_of(&arena, NonNull::new(pages[0] as *mut u8).unwrap());
    // A thread that prefers the other zone: threads are spread over the
    // zones in the order they first allocate (`Node::preferred_zone`), so
    // one of the next few new threads does (other tests' threads may take
    // turns in between).
    let moved = std::thread::scope(|s| {
        (0..64).any(|_| {
            s.spawn(|| {
                let own = arena.alloc_pages(0, NOWARN).unwrap();
                let other = zone_of(&arena, own);
                if other == home {
                    // SAFETY: allocated above at order 0.
                    unsafe { arena.free_pages(own, 0) }.unwrap();
                    return false;
                }
                for p in &pages {
                    // SAFETY: order-0 pages of this arena, freed once.
                    unsafe { arena.free_pages(NonNull::new(*p as *mut u8).unwrap(), 0) }.unwrap();
                }
                let stats = arena.stats();
                // The freed blocks sit in this thread's list for `home`, not
                // in `home`'s buddy lists, and not in the list of its own zone.
                assert_eq!(stats.zones[home].free, 512 - 8);
                assert_eq!(stats.zones[home].cached, 8);
                assert_eq!(stats.zones[other].cached, 7);
                // SAFETY: allocated above at order 0.
                unsafe { arena.free_pages(own, 0) }.unwrap();
                true
            })
            .join()
            .unwrap()
        })
    });
    assert!(moved, "64 new threads all preferred the zone of the first");
    conserved(&arena, 0);
}

#[test]
fn high_is_split_between_the_threads_of_a_zone() {
    // Kernel sizing on a 64 MiB single zone: batch 3 (16384 >> 10 = 16,
    // / 4 = 4, 4 + 2 = 6 -> 4 - 1), high = low watermark / threads.
    let arena = Arena::builder().region_size(64 << 20).zones(1).build().unwrap();
    let low = arena.stats().zones[0].watermarks.low;
    assert_eq!(arena.stats().zones[0].pcp_batch, 3);
    assert_eq!(arena.stats().zones[0].pcp_threads, 0);
    let p = arena.alloc_pages(0, NOWARN).unwrap();
    let z = &arena.stats().zones[0];
    assert_eq!((z.pcp_threads, z.pcp_high), (1, low.min(zonealloc::PCP_HIGH_LIMIT)));
    std::thread::scope(|s| {
        s.spawn(|| {
            let q = arena.alloc_pages(0, NOWARN).unwrap();
            let z = &arena.stats().zones[0];
            assert_eq!((z.pcp_threads, z.pcp_high), (2, (low / 2).max(4 * 3)));
            // SAFETY: just allocated at order 0.
            unsafe { arena.free_pages(q, 0) }.unwrap();
        })
        .join()
        .unwrap();
    });
    let z = &arena.stats().zones[0];
    assert_eq!((z.pcp_threads, z.pcp_high), (1, low.min(zonealloc::PCP_HIGH_LIMIT)));
    // SAFETY: allocated above at order 0.
    unsafe { arena.free_pages(p, 0) }.unwrap();
}

#[test]
fn bad_frees_through_the_cache_are_refused() {
    let arena = arena(1, 1024, 8, 32);
    let p = arena.alloc_pages(1, NOWARN).unwrap();
    let addr = p.as_ptr() as usize;
    // SAFETY: every free here but the first is refused without touching memory.
    unsafe {
        assert_eq!(arena.free_pages(p, 0), Err(FreeError::WrongOrder { addr, given: 0, actual: 1 }));
        arena.free_pages(p, 1).unwrap(); // into the cache
        assert_eq!(arena.free_pages(p, 1), Err(FreeError::DoubleFree { addr }));
        // Inside a block that is free (in the cache): freed memory.
        let inner = NonNull::new((addr + 4096) as *mut u8).unwrap();
        assert_eq!(arena.free_pages(inner, 0), Err(FreeError::DoubleFree { addr: addr + 4096 }));
    }
    let stats = arena.stats();
    assert_eq!(stats.invalid_frees, 3);
    assert_eq!(stats.zones[0].pcp_corrupt, 0);
    conserved(&arena, 0);
}

#[test]
fn refills_stop_at_the_low_watermark_and_the_reserve_still_holds() {
    let arena = Arena::builder()
        .region_size(4 << 20)
        .zones(1)
        .max_order(10)
        .watermarks(WatermarkConfig::PerZone(Watermarks { min: 100, low: 200, high: 300 }))
        .pcp(PcpConfig::Fixed { batch: 8, high: 32 })
        .build()
        .unwrap();
    let mut pages = Vec::new();
    let err = loop {
        match arena.alloc_pages(0, NOWARN) {
            Ok(p) => pages.push(p),
            Err(e) => break e,
        }
    };
    assert_eq!(err, AllocError::OutOfMemory { order: 0 });
    // Refills while free > low (103 of 8 pages, down to 200), then single
    // pages at min down to 100: exactly as without the cache.
    assert_eq!(pages.len(), 1024 - 100);
    let z = &arena.stats().zones[0];
    assert_eq!((z.free, z.cached, z.pcp_refills), (100, 0, 103));
    // The reserve: HIGH may take half of it.
    let high =
        (0..).take_while(|_| arena.alloc_pages(0, AllocFlags::HIGH | NOWARN).map(|p| pages.push(p)).is_ok()).count();
    assert_eq!(high, 50);
    for p in pages {
        // SAFETY: order-0 pages of this arena.
        unsafe { arena.free_pages(p, 0) }.unwrap();
    }
    conserved(&arena, 0);
}

#[test]
fn an_arena_dropped_while_threads_hold_caches_is_left_alone() {
    let (drop_tx, drop_rx) = mpsc::channel::<()>();
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let arena = std::sync::Arc::new(arena(2, 512, 8, 32));
    let worker = std::thread::spawn({
        let mine = std::sync::Arc::clone(&arena);
        move || {
            for _ in 0..3 {
                let p = mine.alloc_pages(0, NOWARN).unwrap();
                // SAFETY: just allocated at order 0.
                unsafe { mine.free_pages(p, 0) }.unwrap();
            }
            assert!(mine.stats().zones.iter().map(|z| z.cached).sum::<usize>() > 0);
            // No reference to the arena is left here, but this thread's
            // cache still holds a set of it (with blocks in it).
            drop(mine);
            ready_tx.send(()).unwrap();
            drop_rx.recv().unwrap();
            // The arena is gone. A new arena on this thread works, taking
            // the stale entry's place; then the thread exits and releases it.
            let fresh = Arena::builder().region_size(8 << 20).zones(1).build().unwrap();
            for _ in 0..3 {
                let p = fresh.alloc_pages(0, NOWARN).unwrap();
                // SAFETY: just allocated at order 0.
                unsafe { fresh.free_pages(p, 0) }.unwrap();
            }
            fresh.check().unwrap();
            assert_eq!(fresh.stats().pcp_sets, 1);
        }
    });
    ready_rx.recv().unwrap();
    // The last reference: the arena drops while the worker holds its set.
    drop(arena);
    drop_tx.send(()).unwrap();
    worker.join().unwrap();
}

/// `check()` freezes every thread's cache set at once without recursing
/// (a frame per set overflowed the stack with tens of thousands of
/// threads): 2000 live sets, checked from a thread with a 64 KiB stack.
#[test]
fn check_freezes_thousands_of_cache_sets_on_a_small_stack() {
    let arena = arena(1, 16384, 1, 1);
    let threads = 2000;
    let barrier = Barrier::new(threads + 1);
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let done_rx = std::sync::Mutex::new(done_rx);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (arena, barrier, done_rx) = (&arena, &barrier, &done_rx);
                std::thread::Builder::new()
                    .stack_size(64 << 10)
                    .spawn_scoped(s, move || {
                        let p = arena.alloc_pages(0, NOWARN).unwrap(); // attaches a set
                        // SAFETY: just allocated at order 0.
                        unsafe { arena.free_pages(p, 0) }.unwrap();
                        barrier.wait();
                        let _ = done_rx.lock().unwrap().recv();
                    })
                    .unwrap()
            })
            .collect();
        barrier.wait();
        assert_eq!(arena.stats().pcp_sets, threads);
        let checked = std::thread::Builder::new()
            .stack_size(64 << 10)
            .spawn_scoped(s, || arena.check())
            .unwrap()
            .join()
            .expect("check() overflowed a 64 KiB stack");
        assert_eq!(checked, Ok(()));
        drop(done_tx);
        // Joined explicitly: the scope's own join does not wait for the
        // threads' exit hooks, which return their caches.
        workers.into_iter().for_each(|w| w.join().unwrap());
    });
    conserved(&arena, 0);
}
