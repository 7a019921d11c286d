//! RSS falls when free memory is purged, by `Arena::purge` and by the
//! reclaim thread's timer; purged blocks need no zeroing. One test, alone in
//! its binary: RSS is the whole process's.

mod support;

use std::time::{Duration, Instant};

use support::rss_bytes;
use zonealloc::{AllocFlags, Arena};

const MIB: usize = 1 << 20;

fn touch_and_free(arena: &Arena, bytes: usize) {
    let order = 4; // 64 KiB blocks
    let blocks: Vec<_> =
        (0..bytes / (4096 << order)).map(|_| arena.alloc_pages(order, AllocFlags::empty()).unwrap()).collect();
    for b in &blocks {
        // SAFETY: the block is ours: 64 KiB.
        unsafe { b.as_ptr().write_bytes(0x5a, 4096 << order) };
    }
    for b in blocks {
        // SAFETY: allocated above at this order.
        unsafe { arena.free_pages(b, order) }.unwrap();
    }
}

#[test]
fn purging_returns_free_memory_to_the_os() {
    let arena = Arena::builder().region_size(512 * MIB).purge_delay(None).build().unwrap();
    let before = rss_bytes();
    touch_and_free(&arena, 128 * MIB);
    let after_free = rss_bytes();
    assert!(after_free > before + 120 * MIB, "touched memory is resident: {} MiB", (after_free - before) / MIB);
    let stats = arena.stats();
    assert!(stats.resident_bytes >= 128 * MIB, "the arena knows it is resident");

    let report = arena.purge();
    let after_purge = rss_bytes();
    assert!(report.bytes >= 128 * MIB, "purged {} MiB", report.bytes / MIB);
    assert!(report.calls < 64, "adjacent free blocks merge into few madvise calls: {}", report.calls);
    assert!(after_free - after_purge > 120 * MIB, "RSS fell by only {} MiB", (after_free - after_purge) / MIB);
    let stats = arena.stats();
    assert_eq!(stats.resident_bytes, 0, "everything free is purged");
    assert_eq!(stats.reclaim.purged_bytes as usize, report.bytes);
    arena.check().unwrap();

    // A purged block reads as zeros and needs no memset: ZERO allocations
    // of purged memory do not make it resident.
    let rss = rss_bytes();
    let blocks: Vec<_> = (0..16).map(|_| arena.alloc_pages(10, AllocFlags::ZERO).unwrap()).collect();
    assert!(rss_bytes() < rss + 4 * MIB, "ZERO of purged blocks touched memory");
    for b in &blocks {
        // SAFETY: ours, 4 MiB, read-only here.
        let bytes = unsafe { std::slice::from_raw_parts(b.as_ptr(), 4 * MIB) };
        assert!(bytes.iter().step_by(4096).all(|&x| x == 0));
    }
    for b in blocks {
        // SAFETY: allocated above at order 10.
        unsafe { arena.free_pages(b, 10) }.unwrap();
    }
    drop(arena);

    // The reclaim thread purges on its own once memory has been free for
    // `purge_delay`.
    let arena = Arena::builder().region_size(512 * MIB).purge_delay(Some(Duration::from_millis(50))).build().unwrap();
    let before = rss_bytes();
    touch_and_free(&arena, 64 * MIB);
    assert!(rss_bytes() > before + 60 * MIB);
    let deadline = Instant::now() + Duration::from_secs(20);
    while arena.stats().resident_bytes > 0 || rss_bytes() > before + 4 * MIB {
        assert!(Instant::now() < deadline, "the timer never purged: {:?}", arena.stats().reclaim);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(arena.stats().reclaim.purges >= 1);
    arena.check().unwrap();
}
