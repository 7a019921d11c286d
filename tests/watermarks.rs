//! Watermark pass/fail at the exact boundaries, with each reserve discount,
//! on the buddy layer (no per-thread caches: a cached block is already out
//! of its zone and is handed out without a watermark check, as in the
//! kernel's pcp path). The cache's own watermark behaviour is in tests/pcp.rs.

mod support;

use zonealloc::{AllocError, AllocFlags, Arena, PcpConfig, WatermarkConfig, Watermarks};

const NOWARN: AllocFlags = AllocFlags::NOWARN;

/// One zone of 1024 pages with min 100, low 200, high 300.
fn arena() -> Arena {
    Arena::builder()
        .region_size(4 << 20)
        .zones(1)
        .max_order(10)
        .watermarks(WatermarkConfig::PerZone(Watermarks { min: 100, low: 200, high: 300 }))
        .pcp(PcpConfig::Disabled)
        .build()
        .unwrap()
}

fn free(arena: &Arena) -> usize {
    arena.stats().zones[0].free
}

/// Allocates order-0 pages with `flags` until one fails; returns how many succeeded.
fn drain(arena: &Arena, flags: AllocFlags, keep: &mut Vec<std::ptr::NonNull<u8>>) -> usize {
    let mut n = 0;
    while let Ok(p) = arena.alloc_pages(0, flags | NOWARN) {
        keep.push(p);
        n += 1;
    }
    n
}

#[test]
fn order_zero_stops_at_min_then_each_discount() {
    let arena = arena();
    let mut keep = Vec::new();
    // Plain: the fast path passes while free > low, the slow path while free > min.
    assert_eq!(drain(&arena, AllocFlags::empty(), &mut keep), 1024 - 100);
    assert_eq!(free(&arena), 100);
    assert_eq!(arena.alloc_pages(0, NOWARN), Err(AllocError::OutOfMemory { order: 0 }));
    // NOWAIT uses no reserve either.
    assert!(arena.alloc_pages(0, AllocFlags::NOWAIT | NOWARN).is_err());
    // HIGH: min - min/2 = 50.
    assert_eq!(drain(&arena, AllocFlags::HIGH, &mut keep), 50);
    assert_eq!(free(&arena), 50);
    // ATOMIC: 50 - 50/4 = 38.
    assert_eq!(drain(&arena, AllocFlags::ATOMIC, &mut keep), 12);
    assert_eq!(free(&arena), 38);
    let stats = arena.stats();
    assert_eq!(stats.alloc_failures, 5); // one per drain (3) and the two explicit attempts
    for p in keep {
        // SAFETY: order-0 pages of this arena.
        unsafe { arena.free_pages(p, 0) }.unwrap();
    }
    assert_eq!(free(&arena), 1024);
    arena.check().unwrap();
}

#[test]
fn fast_path_is_checked_at_low_and_falls_to_min() {
    let arena = arena();
    let mut keep = Vec::new();
    // Take pages until free == 201: every one passes the low check.
    for _ in 0..1024 - 201 {
        keep.push(arena.alloc_pages(0, NOWARN).unwrap());
    }
    let before = arena.stats().zones[0].watermark_failures;
    assert_eq!(before, 0);
    // 201 > 200: passes at low.
    keep.push(arena.alloc_pages(0, NOWARN).unwrap());
    assert_eq!(arena.stats().zones[0].watermark_failures, 0);
    // 200 is not > 200: fails at low (counted), passes at min.
    keep.push(arena.alloc_pages(0, NOWARN).unwrap());
    assert_eq!(arena.stats().zones[0].watermark_failures, 1);
    assert_eq!(free(&arena), 199);
    for p in keep {
        // SAFETY: order-0 pages of this arena.
        unsafe { arena.free_pages(p, 0) }.unwrap();
    }
}

#[test]
fn higher_orders_discount_their_size() {
    let arena = arena();
    let mut keep = Vec::new();
    // Leave exactly 104 pages free: 1024 - 920 = 104, spread as order-0 frees
    // cannot merge, so allocate 920 pages as order-3 blocks (115 of them).
    for _ in 0..115 {
        keep.push((arena.alloc_pages(3, NOWARN).unwrap(), 3));
    }
    assert_eq!(free(&arena), 104);
    // order 2: free - 3 = 101 > 100 passes at min.
    keep.push((arena.alloc_pages(2, NOWARN).unwrap(), 2));
    assert_eq!(free(&arena), 100);
    // order 0 at 100 fails; order 1 with HIGH: 100 - 1 = 99 > 50 passes.
    assert!(arena.alloc_pages(0, NOWARN).is_err());
    keep.push((arena.alloc_pages(1, AllocFlags::HIGH | NOWARN).unwrap(), 1));
    for (p, order) in keep {
        // SAFETY: blocks of this arena with these orders.
        unsafe { arena.free_pages(p, order) }.unwrap();
    }
    arena.check().unwrap();
}

#[test]
fn order_check_needs_a_big_enough_block() {
    // Zero marks: only the order test can fail.
    let arena = support::small_arena(1, 1, 4); // 16 pages
    let pages: Vec<_> = (0..16).map(|_| arena.alloc_pages(0, NOWARN).unwrap()).collect();
    // Free every other page: 8 free pages, none buddies.
    for p in pages.iter().step_by(2) {
        // SAFETY: order-0 pages of this arena.
        unsafe { arena.free_pages(*p, 0) }.unwrap();
    }
    assert_eq!(free(&arena), 8);
    assert_eq!(arena.alloc_pages(1, NOWARN), Err(AllocError::OutOfMemory { order: 1 }));
    let z = &arena.stats().zones[0];
    assert_eq!(z.fragmentation_index(1), 1000 - (1000 + 8 * 1000 / 2) / 8);
    assert_eq!(z.unusable_index(1), 1000);
    for p in pages.iter().skip(1).step_by(2) {
        // SAFETY: order-0 pages of this arena.
        unsafe { arena.free_pages(*p, 0) }.unwrap();
    }
    assert!(arena.alloc_pages(4, NOWARN).is_ok());
}

#[test]
fn kernel_watermarks_are_computed_per_zone() {
    let arena = Arena::builder().region_size(1 << 30).zones(4).build().unwrap();
    let stats = arena.stats();
    for z in &stats.zones {
        // 1 GiB: min_free_kbytes = 4096 KiB = 1024 pages, a quarter per zone;
        // delta = max(256 / 4, 65536 * 10 / 10000) = 65.
        assert_eq!(z.watermarks, Watermarks { min: 256, low: 321, high: 386 });
    }
}
