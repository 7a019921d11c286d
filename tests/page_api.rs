//! Exact behaviour of the page API on the buddy layer: every page handed out
//! once, natural alignment, coalescing back to the start state, split/merge
//! counts, ZERO. (`small_arena` has no per-thread caches; tests/pcp.rs covers
//! them.)

mod support;

use std::collections::HashSet;
use std::ptr::NonNull;

use support::{Rng, small_arena};
use zonealloc::{AllocError, AllocFlags, Arena};

const NOWARN: AllocFlags = AllocFlags::NOWARN;

fn start_state(arena: &Arena) -> Vec<Vec<usize>> {
    arena.stats().zones.into_iter().map(|z| z.free_blocks).collect()
}

#[test]
fn every_page_at_order_zero_is_distinct_aligned_and_inside() {
    let arena = small_arena(2, 2, 8); // 2 zones x 2 blocks x 256 pages = 1024 pages
    let (base, len) = arena.region();
    let initial = start_state(&arena);
    let mut pages = Vec::new();
    let mut seen = HashSet::new();
    while let Ok(p) = arena.alloc_pages(0, NOWARN) {
        let addr = p.as_ptr() as usize;
        assert_eq!(addr % 4096, 0);
        assert!(addr >= base.as_ptr() as usize && addr < base.as_ptr() as usize + len);
        assert!(seen.insert(addr), "page {addr:#x} handed out twice");
        pages.push(p);
    }
    assert_eq!(pages.len(), 1024);
    assert_eq!(arena.alloc_pages(0, NOWARN), Err(AllocError::OutOfMemory { order: 0 }));
    arena.check().unwrap();
    for z in arena.stats().zones {
        assert_eq!((z.free, z.allocated()), (0, 512));
    }
    for p in pages {
        // SAFETY: each page came from this arena at order 0.
        unsafe { arena.free_pages(p, 0) }.unwrap();
    }
    arena.check().unwrap();
    assert_eq!(start_state(&arena), initial, "the arena did not coalesce back");
    let stats = arena.stats();
    assert_eq!(stats.zones[0].allocs[0], 512);
    assert_eq!(stats.zones[1].frees[0], 512);
    assert_eq!(stats.alloc_failures, 2); // the loop's last attempt and the explicit one
}

#[test]
fn mixed_orders_fill_the_arena_without_overlap() {
    let arena = small_arena(2, 2, 6); // 4 blocks of 64 pages = 256 pages
    let base = arena.region().0.as_ptr() as usize;
    let mut rng = Rng(7);
    let mut used = [false; 256];
    let mut live = Vec::new();
    // Random orders until even an order-0 request fails: every page is used.
    loop {
        let order = rng.below(7) as u32;
        match arena.alloc_pages(order, NOWARN) {
            Ok(p) => {
                let addr = p.as_ptr() as usize;
                assert_eq!(addr % (4096 << order), 0, "order {order} misaligned");
                let pfn = (addr - base) / 4096;
                for u in &mut used[pfn..pfn + (1 << order)] {
                    assert!(!*u, "overlap at page {pfn}");
                    *u = true;
                }
                live.push((p, order));
            }
            Err(AllocError::OutOfMemory { .. }) if order == 0 => break,
            Err(AllocError::OutOfMemory { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert!(used.iter().all(|u| *u));
    arena.check().unwrap();
    for (p, order) in live {
        // SAFETY: from this arena with this order.
        unsafe { arena.free_pages(p, order) }.unwrap();
    }
    arena.check().unwrap();
    for z in arena.stats().zones {
        assert_eq!(z.free_blocks, vec![0, 0, 0, 0, 0, 0, 2]);
    }
}

#[test]
fn splits_and_merges_are_counted_exactly() {
    let arena = small_arena(1, 1, 10);
    let p0 = arena.alloc_pages(0, NOWARN).unwrap();
    let z = &arena.stats().zones[0];
    assert_eq!((z.splits, z.merges), (10, 0));
    assert_eq!(z.free_blocks, vec![1; 10].into_iter().chain([0]).collect::<Vec<_>>());
    // The order-0 buddy is free: the next order-0 request splits nothing.
    let p1 = arena.alloc_pages(0, NOWARN).unwrap();
    assert_eq!(arena.stats().zones[0].splits, 10);
    // An order-3 request takes the free order-3 block as is.
    let p3 = arena.alloc_pages(3, NOWARN).unwrap();
    assert_eq!(arena.stats().zones[0].splits, 10);
    // SAFETY: all three came from this arena with these orders.
    unsafe {
        arena.free_pages(p1, 0).unwrap(); // p0 still allocated: no merge
        assert_eq!(arena.stats().zones[0].merges, 0);
        arena.free_pages(p0, 0).unwrap(); // merges orders 0, 1, 2; stops at p3 (pfn 8)
        assert_eq!(arena.stats().zones[0].merges, 3);
        arena.free_pages(p3, 3).unwrap(); // now 2->3->...->10
    }
    let z = &arena.stats().zones[0];
    assert_eq!(z.merges, 10);
    assert_eq!(z.free_blocks.iter().sum::<usize>(), 1);
    arena.check().unwrap();
}

#[test]
fn blocks_are_aligned_to_their_size_at_every_order() {
    let arena = small_arena(1, 2, 12); // 16 MiB blocks
    for order in 0..=12 {
        let p = arena.alloc_pages(order, NOWARN).unwrap();
        assert_eq!(p.as_ptr() as usize % (4096 << order), 0, "order {order}");
        // SAFETY: from this arena with this order.
        unsafe { arena.free_pages(p, order) }.unwrap();
    }
    assert_eq!(arena.alloc_pages(13, NOWARN), Err(AllocError::InvalidOrder { order: 13, max_order: 12 }));
    arena.check().unwrap();
}

#[test]
fn zero_flag_zeroes_used_blocks() {
    let arena = small_arena(1, 1, 4);
    let p = arena.alloc_pages(4, NOWARN).unwrap();
    // SAFETY: the block is ours: 16 pages.
    unsafe { p.as_ptr().write_bytes(0xAB, 16 * 4096) };
    // SAFETY: from this arena at order 4.
    unsafe { arena.free_pages(p, 4) }.unwrap();
    let q = arena.alloc_pages(4, AllocFlags::ZERO).unwrap();
    assert_eq!(q, p, "LIFO reuse of the same block");
    // SAFETY: ours, 16 pages.
    let bytes = unsafe { std::slice::from_raw_parts(q.as_ptr(), 16 * 4096) };
    assert!(bytes.iter().all(|&b| b == 0));
    // Without ZERO the old contents may stay: dirty the block and take it back.
    // SAFETY: ours.
    unsafe {
        q.as_ptr().write(0xCD);
        arena.free_pages(q, 4).unwrap();
    }
    let r = arena.alloc_pages(4, NOWARN).unwrap();
    // SAFETY: ours.
    assert_eq!(unsafe { r.as_ptr().read() }, 0xCD, "a plain allocation is not zeroed");
    // SAFETY: from this arena at order 4.
    unsafe { arena.free_pages(r, 4) }.unwrap();
}

#[test]
fn arena_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Arena>();
}

#[test]
fn stats_display_prints_kernel_formats() {
    let arena = small_arena(2, 1, 4);
    let p = arena.alloc_pages(1, NOWARN).unwrap();
    // Which zone served it depends on this thread's place in the round-robin.
    let zone = (p.as_ptr() as usize - arena.region().0.as_ptr() as usize) / (16 * 4096);
    let text = arena.stats().to_string();
    assert!(text.contains("# buddyinfo"), "{text}");
    // That zone after one order-1 allocation from a 16-page block: one free block of orders 1, 2, 3.
    assert!(text.contains(&format!("Node 0, zone      {zone}       0      1      1      1      0")), "{text}");
    assert!(text.contains("pages free     14"), "{text}");
    assert!(text.contains("# extfrag_index"), "{text}");
    // SAFETY: from this arena at order 1.
    unsafe { arena.free_pages(p, 1) }.unwrap();
    let _ = NonNull::<u8>::dangling();
}

/// `try_grow_pages` takes the free buddies above a block, exactly when all
/// of them are free, the block is aligned to the new size and the order
/// fits; it changes nothing otherwise.
#[test]
fn blocks_grow_in_place_only_into_free_buddies() {
    let arena = small_arena(1, 1, 8); // one zone of one 256-page block
    let initial = start_state(&arena);
    let free = |arena: &Arena| arena.stats().zones[0].free;
    // Pages 0..4 (order 2); the split left free blocks at 4 (order 2),
    // 8 (3), 16 (4), 32 (5), 64 (6) and 128 (7).
    let a = arena.alloc_pages(2, NOWARN).unwrap();
    assert_eq!(free(&arena), 252);
    assert!(arena.try_grow_pages(a, 2, 5), "4, 8 and 16 are free");
    assert_eq!(free(&arena), 224);
    arena.check().unwrap();
    // Pages 32..64 next: the block above `a` is now taken.
    let b = arena.alloc_pages(5, NOWARN).unwrap();
    assert_eq!(b.as_ptr() as usize - a.as_ptr() as usize, 32 * 4096);
    assert!(!arena.try_grow_pages(a, 5, 6), "its buddy at 32 is allocated");
    assert!(!arena.try_grow_pages(b, 5, 6), "not aligned to order 6");
    assert!(!arena.try_grow_pages(a, 4, 6), "not a block of order 4");
    assert!(!arena.try_grow_pages(a, 5, 9), "above max_order");
    assert!(!arena.try_grow_pages(a, 5, 5), "not a growth");
    assert_eq!(free(&arena), 192, "refusals change nothing");
    arena.check().unwrap();
    // SAFETY: b is ours, at order 5.
    unsafe { arena.free_pages(b, 5) }.unwrap();
    assert!(arena.try_grow_pages(a, 5, 8), "the whole zone");
    assert_eq!(free(&arena), 0);
    assert!(!arena.try_grow_pages(b, 5, 6), "a freed block is not grown");
    // SAFETY: a is ours, now at order 8; the old order is refused.
    assert!(unsafe { arena.free_pages(a, 5) }.is_err());
    // SAFETY: as above.
    unsafe { arena.free_pages(a, 8) }.unwrap();
    arena.check().unwrap();
    assert_eq!(start_state(&arena), initial);
}

/// A block from `alloc_pages_growable` is carved from the start of a larger
/// free block, so it grows in place; an exact-order block from the lists
/// never could (its buddy is not free, or the two would have merged).
#[test]
fn growable_blocks_are_carved_where_they_can_grow() {
    let arena = small_arena(1, 2, 8); // one zone of two 256-page blocks
    let initial = start_state(&arena);
    // Pages 0..4 (order 2), leaving free blocks of orders 2..=7 above it and
    // a second 256-page block at the frontier.
    let a = arena.alloc_pages(2, NOWARN).unwrap();
    // An exact fit: pages 4..8, the upper half of a's order-3 block.
    let b = arena.alloc_pages(2, NOWARN).unwrap();
    assert_eq!(b.as_ptr() as usize - a.as_ptr() as usize, 4 * 4096);
    assert!(!arena.try_grow_pages(b, 2, 3), "an exact fit from the lists cannot grow");
    // Room for eight doublings: no free block of order 10 (above max_order
    // 8, so order 8), but the frontier has one: pages 256..260.
    let c = arena.alloc_pages_growable(2, NOWARN).unwrap();
    assert_eq!(c.as_ptr() as usize - a.as_ptr() as usize, 256 * 4096);
    assert!(arena.try_grow_pages(c, 2, 8), "the whole second block");
    arena.check().unwrap();
    // No roomy block and no frontier left: the largest free block (free:
    // order 3 at 8, 4 at 16, 5 at 32, 6 at 64, 7 at 128).
    let d = arena.alloc_pages_growable(2, NOWARN).unwrap();
    assert_eq!(d.as_ptr() as usize - a.as_ptr() as usize, 128 * 4096, "the order-7 block at 128");
    assert!(arena.try_grow_pages(d, 2, 7));
    let e = arena.alloc_pages_growable(3, NOWARN).unwrap();
    assert_eq!(e.as_ptr() as usize - a.as_ptr() as usize, 64 * 4096, "the order-6 block at 64");
    assert!(arena.try_grow_pages(e, 3, 6));
    // Nothing larger than order 5 is left: an exact fit, as alloc_pages.
    let f = arena.alloc_pages_growable(5, NOWARN).unwrap();
    assert_eq!(f.as_ptr() as usize - a.as_ptr() as usize, 32 * 4096);
    assert!(!arena.try_grow_pages(f, 5, 6));
    arena.check().unwrap();
    // SAFETY: each is ours, at the order it has now.
    unsafe {
        arena.free_pages(a, 2).unwrap();
        arena.free_pages(b, 2).unwrap();
        arena.free_pages(c, 8).unwrap();
        arena.free_pages(d, 7).unwrap();
        arena.free_pages(e, 6).unwrap();
        arena.free_pages(f, 5).unwrap();
    }
    arena.check().unwrap();
    assert_eq!(start_state(&arena), initial);
}

/// With transparent huge pages, growable blocks smaller than a huge page are
/// carved from resident memory only: a service's few hundred live buffers,
/// each moved by a doubling `realloc`, must not each take the start of a
/// fresh roomy block and so fault in a 2 MiB page apiece (the shape of a
/// tokio/hyper service that peaked at 450-575 MB against jemalloc's 16 MB).
#[test]
fn growable_blocks_pack_into_the_huge_pages_already_touched() {
    const HUGE: usize = 2 << 20;
    let arena = Arena::builder()
        .region_size(256 << 20)
        .zones(1)
        .huge_pages(zonealloc::HugePages::Transparent)
        .pcp(zonealloc::PcpConfig::Disabled)
        .build()
        .unwrap();
    let untouched = |arena: &Arena| arena.stats().zones[0].untouched;
    let before = untouched(&arena);
    // 64 buffers of 8 KiB live at once, each from a doubling move.
    let blocks: Vec<_> = (0..64).map(|_| arena.alloc_pages_growable(1, NOWARN).unwrap()).collect();
    let huge_pages: HashSet<usize> = blocks.iter().map(|p| p.as_ptr() as usize / HUGE).collect();
    assert_eq!(huge_pages.len(), 1, "64 x 8 KiB fit in one huge page");
    let max_block = 4096 << arena.stats().max_order;
    assert_eq!(before - untouched(&arena), max_block / 4096, "one block taken from the frontier");
    arena.check().unwrap();
    // SAFETY: each is ours, at order 1.
    unsafe {
        for p in blocks {
            arena.free_pages(p, 1).unwrap();
        }
    }
    // Resident room again: the next one is carved at the touched huge page's
    // start, where it can grow in place through all of it.
    let roomy = arena.alloc_pages_growable(1, NOWARN).unwrap();
    assert_eq!(roomy.as_ptr() as usize / HUGE, *huge_pages.iter().next().unwrap());
    assert!(arena.try_grow_pages(roomy, 1, 9), "grows in place into its free buddies");
    assert_eq!(before - untouched(&arena), max_block / 4096, "still one block from the frontier");
    // SAFETY: ours, at order 9 now.
    unsafe { arena.free_pages(roomy, 9) }.unwrap();
    arena.check().unwrap();
}

/// A block handed out carries no "known zero" flag into the page caches:
/// a small growable block (straight from the buddy lists, where fresh
/// memory is flagged clean) written and freed through the cache comes back
/// zeroed for a `ZERO` allocation. Found by the heap_ops fuzz target.
#[test]
fn a_dirty_block_freed_into_the_cache_is_zeroed_again() {
    let arena = Arena::builder().region_size(64 << 20).zones(1).build().unwrap();
    for order in 0..=zonealloc::PCP_MAX_ORDER {
        let bytes = 4096 << order;
        let p = arena.alloc_pages_growable(order, AllocFlags::empty()).unwrap();
        arena.check().unwrap();
        // SAFETY: ours, `bytes` long; freed once and not used again.
        unsafe {
            p.as_ptr().write_bytes(0xff, bytes);
            arena.free_pages(p, order).unwrap();
        }
        let q = arena.alloc_pages(order, AllocFlags::ZERO).unwrap();
        assert_eq!(q, p, "order {order}: the cache hands the same block back");
        // SAFETY: ours, `bytes` long.
        let contents = unsafe { std::slice::from_raw_parts(q.as_ptr(), bytes) };
        assert!(contents.iter().all(|&b| b == 0), "order {order}: ZERO returned dirty memory");
        // SAFETY: ours, at this order.
        unsafe { arena.free_pages(q, order) }.unwrap();
    }
    arena.check().unwrap();
}
