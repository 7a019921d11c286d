//! Loom models of the per-thread cache protocols.
//!
//! RUSTFLAGS="--cfg loom" cargo test --release --test loom
//!
//! Each model builds a tiny arena (one zone of 4 pages, batch 1, high 1)
//! inside the execution, runs the threads, and ends with `Arena::check()`,
//! which freezes every cache and verifies that free + cached + allocated =
//! managed and that the caches hold exactly the blocks the metadata says
//! are cached; then it asserts that every page is back in the buddy lists.
#![cfg(loom)]

use std::ptr::NonNull;

use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;
use zonealloc::{AllocFlags, Arena, PcpConfig, WatermarkConfig, Watermarks};

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if std::env::var("LOOM_MAX_PREEMPTIONS").is_err() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

/// One zone of 4 pages (two order-1 blocks), every page allocatable.
fn tiny_arena() -> Arena {
    Arena::builder()
        .region_size(4 * 4096)
        .zones(1)
        .max_order(1)
        .watermarks(WatermarkConfig::PerZone(Watermarks { min: 0, low: 0, high: 0 }))
        .pcp(PcpConfig::Fixed { batch: 1, high: 1 })
        .build()
        .unwrap()
}

fn alloc(arena: &Arena) -> usize {
    arena.alloc_pages(0, AllocFlags::empty()).unwrap().as_ptr() as usize
}

fn free(arena: &Arena, addr: usize) {
    // SAFETY: `addr` is an order-0 block of this arena, freed once.
    unsafe { arena.free_pages(NonNull::new(addr as *mut u8).unwrap(), 0) }.unwrap();
}

/// Conservation, then: with every block freed and every cache drained, all
/// pages are in the buddy lists.
fn all_pages_back(arena: &Arena) {
    arena.check().unwrap();
    arena.drain_pcp();
    arena.check().unwrap();
    let stats = arena.stats();
    let zone = &stats.zones[0];
    assert_eq!((zone.free, zone.cached), (zone.managed, 0), "a page was lost");
}

/// The owner allocates and frees through its cache while another thread
/// drains it.
#[test]
fn owner_alloc_free_races_remote_drain() {
    model(|| {
        let arena = Arc::new(tiny_arena());
        let owner = {
            let arena = Arc::clone(&arena);
            thread::spawn(move || {
                let a = alloc(&arena);
                free(&arena, a);
                let b = alloc(&arena);
                free(&arena, b);
                alloc(&arena)
            })
        };
        arena.drain_pcp();
        let kept = owner.join().unwrap();
        arena.check().unwrap();
        free(&arena, kept);
        all_pages_back(&arena);
    });
}

/// A thread exits (its destructor drains its cache) while another thread
/// drains it remotely: every block ends up in the lists exactly once.
#[test]
fn thread_exit_races_remote_drain() {
    model(|| {
        let arena = Arc::new(tiny_arena());
        let exiting = {
            let arena = Arc::clone(&arena);
            thread::spawn(move || {
                let a = alloc(&arena);
                free(&arena, a);
            })
        };
        arena.drain_pcp();
        exiting.join().unwrap();
        // The exiting thread's cache destructor may still be running: give
        // it time to take effect, without draining again. (Bounded, so a
        // destructor that never returns the blocks fails instead of hanging.)
        for _ in 0..10 {
            if arena.stats().zones[0].cached == 0 {
                break;
            }
            thread::yield_now();
        }
        assert_eq!(arena.stats().zones[0].cached, 0, "the exiting thread's cache was not returned");
        arena.check().unwrap();
        let zone = &arena.stats().zones[0];
        assert_eq!(zone.free, zone.managed);
    });
}

/// Two threads allocate from and free into the same zone through their
/// caches, one freeing a block the other allocated: no block is handed out
/// twice, none is lost.
#[test]
fn two_threads_share_a_zone_through_their_caches() {
    model(|| {
        let arena = Arc::new(tiny_arena());
        let handoff = Arc::new(AtomicUsize::new(0));
        let producer = {
            let (arena, handoff) = (Arc::clone(&arena), Arc::clone(&handoff));
            thread::spawn(move || {
                let given = alloc(&arena);
                handoff.store(given, Ordering::Release);
                alloc(&arena)
            })
        };
        let consumer = {
            let (arena, handoff) = (Arc::clone(&arena), Arc::clone(&handoff));
            thread::spawn(move || {
                let own = alloc(&arena);
                let given = loop {
                    match handoff.load(Ordering::Acquire) {
                        0 => thread::yield_now(),
                        given => break given,
                    }
                };
                assert_ne!(own, given, "a block was handed out twice");
                free(&arena, given);
                own
            })
        };
        let kept_by_producer = producer.join().unwrap();
        let kept_by_consumer = consumer.join().unwrap();
        assert_ne!(kept_by_producer, kept_by_consumer, "a block was handed out twice");
        arena.check().unwrap();
        free(&arena, kept_by_producer);
        free(&arena, kept_by_consumer);
        all_pages_back(&arena);
    });
}
