//! Loom models of the per-thread cache and reclaim protocols.
//!
//! RUSTFLAGS="--cfg loom" cargo test --release --test loom
//!
//! Each cache model builds a tiny arena (one zone of 4 pages, batch 1,
//! high 1) inside the execution, runs the threads, and ends with
//! `Arena::check()`, which freezes every cache and verifies that free +
//! cached + allocated = managed and that the caches hold exactly the blocks
//! the metadata says are cached; then it asserts that every page is back in
//! the buddy lists.
//!
//! The reclaim models use a zone of 3 pages (low = high = 2) with a real
//! kswapd thread and a shrinker, and check the wake-up handshakes: no lost
//! kswapd wake-up, no NOFAIL waiter left asleep, no lost purge-timer
//! wake-up, no arena drop that hangs.
#![cfg(loom)]

use std::ptr::NonNull;

use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;
use zonealloc::{AllocFlags, Arena, ArenaBuilder, PcpConfig, Topology, WatermarkConfig, Watermarks};

/// Explores every interleaving with at most 3 preemptions (or
/// `LOOM_MAX_PREEMPTIONS`).
fn model(f: impl Fn() + Sync + Send + 'static) {
    model_with_bound(3, f);
}

/// The reclaim models run kswapd's whole loop: a bound of 2 keeps each
/// under half a minute and still finds every broken handshake we tried
/// (issue note: the fence in `Kswapd::wakeup`, the fence before
/// kswapd's re-check, both fences of the NOFAIL handshake, the notify in
/// `Kswapd::stop`).
fn model_with_bound(bound: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if std::env::var("LOOM_MAX_PREEMPTIONS").is_err() {
        builder.preemption_bound = Some(bound);
    }
    builder.check(f);
}

/// A model whose threads fill a whole slab first (64 allocations, and as
/// many frees at the end): more atomic accesses than loom's default limit
/// of branches, none of them a spin.
fn slab_model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if std::env::var("LOOM_MAX_PREEMPTIONS").is_err() {
        builder.preemption_bound = Some(2);
    }
    builder.max_branches = 20_000;
    builder.check(f);
}

/// Spawns a model thread with room for a per-thread cache set built on its
/// stack (loom's default coroutine stack is 32 KiB; a set has a list per
/// order and migratetype).
fn spawn<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> thread::JoinHandle<T> {
    // In words: 512 KiB.
    thread::Builder::new().stack_size(1 << 16).spawn(f).unwrap()
}

/// One zone of `pages` pages, blocks up to `max_order`, watermarks min 0
/// and low = high = `low`: what every model's arena shares.
fn one_zone(pages: usize, max_order: u32, low: usize) -> ArenaBuilder {
    Arena::builder()
        .region_size(pages * 4096)
        .zones(1)
        .max_order(max_order)
        .watermarks(WatermarkConfig::PerZone(Watermarks { min: 0, low, high: low }))
}

/// One zone of 4 pages (two order-1 blocks), every page allocatable.
fn tiny_arena() -> Arena {
    one_zone(4, 1, 0)
        .pcp(PcpConfig::Fixed { batch: 1, high: 1 })
        // No kswapd thread or purge timer: these models are about caches.
        .background_reclaim(false)
        .purge_delay(None)
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
            spawn(move || {
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
            spawn(move || {
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
            spawn(move || {
                let given = alloc(&arena);
                handoff.store(given, Ordering::Release);
                alloc(&arena)
            })
        };
        let consumer = {
            let (arena, handoff) = (Arc::clone(&arena), Arc::clone(&handoff));
            spawn(move || {
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

/// Two threads free the same block at the same moment (a racing double
/// free), each through its own cache, while a third allocates: exactly
/// one free is accepted and the block is cached once. Its buddy stays
/// allocated, so the allocation (of the zone's other order-1 block) can
/// never be handed the block itself: had it been, the second free would
/// be a free through a stale pointer after a legitimate reuse, which no
/// allocator can refuse. The main thread takes the two pages as one
/// exact allocation each (no cache set: its stack has no room for one).
#[test]
fn two_frees_of_one_block_race_an_allocation() {
    // Bound 2: about 40 s; it finds the race (both frees accepted).
    model_with_bound(2, || {
        let arena = Arc::new(tiny_arena());
        let page = || arena.alloc_pages_exact(1, AllocFlags::empty()).unwrap().as_ptr() as usize;
        let (block, buddy) = (page(), page());
        assert_eq!(block ^ buddy, 4096, "the two halves of one order-1 block");
        let racers: Vec<_> = (0..2)
            .map(|_| {
                let arena = Arc::clone(&arena);
                spawn(move || {
                    // SAFETY: both racers free the same live block; the
                    // arena must accept one free and refuse the other.
                    unsafe { arena.free_pages(NonNull::new(block as *mut u8).unwrap(), 0) }.is_ok()
                })
            })
            .collect();
        let taker = {
            let arena = Arc::clone(&arena);
            spawn(move || {
                let taken = arena.alloc_pages(1, AllocFlags::NOWARN).unwrap().as_ptr() as usize;
                // SAFETY: allocated just now, freed once.
                unsafe { arena.free_pages(NonNull::new(taken as *mut u8).unwrap(), 1) }.unwrap();
                taken
            })
        };
        let accepted = racers.into_iter().map(|r| r.join().unwrap()).filter(|&ok| ok).count();
        let taken = taker.join().unwrap();
        assert_eq!(accepted, 1, "frees of one block accepted");
        assert_ne!(taken & !(8192 - 1), block & !(8192 - 1), "handed the freed block's order-1 block");
        // SAFETY: the exact allocation of one page made above, freed once.
        unsafe { arena.free_pages_exact(NonNull::new(buddy as *mut u8).unwrap(), 1) }.unwrap();
        all_pages_back(&arena);
        let stats = arena.stats();
        assert_eq!((stats.invalid_frees, stats.zones[0].pcp_corrupt), (1, 0), "refused frees; blocks on two lists");
    });
}

/// One zone of 3 order-0 pages with min 0, low 2, high 2; no caches;
/// kswapd running unless `background` is false; no purge timer.
fn reclaim_arena(background: bool) -> Arena {
    one_zone(3, 0, 2).pcp(PcpConfig::Disabled).background_reclaim(background).purge_delay(None).build().unwrap()
}

/// A shrinker holding order-0 pages.
struct Cache {
    arena: Arc<Arena>,
    pages: loom::sync::Mutex<Vec<usize>>,
}

impl zonealloc::Shrinker for Cache {
    fn count(&self) -> usize {
        self.pages.lock().unwrap().len()
    }

    fn scan(&self, nr_to_scan: usize) -> zonealloc::ShrinkResult {
        let mut pages = self.pages.lock().unwrap();
        let n = nr_to_scan.min(pages.len());
        for addr in pages.drain(..n) {
            free(&self.arena, addr);
        }
        zonealloc::ShrinkResult::Freed(n)
    }
}

impl Cache {
    /// Whether kswapd emptied the cache within `yields` turns given to the
    /// other threads. Waits on the cache's mutex, not on the free count: a
    /// Relaxed counter read may stay stale under loom, the mutex orders the
    /// shrinker's frees before the caller's look at the stats.
    fn emptied_within(&self, yields: usize) -> bool {
        for _ in 0..yields {
            if self.pages.lock().unwrap().is_empty() {
                return true;
            }
            thread::yield_now();
        }
        false
    }
}

/// An allocation that leaves the zone below low while kswapd is going to
/// sleep still gets reclaim. Two rounds: each puts two pages in the
/// shrinker's cache (the second allocation crosses low and wakes kswapd),
/// then waits for kswapd to empty it. The second round's crossing can land
/// while kswapd, done with the first, is on its way back to sleep.
#[test]
fn kswapd_wakeup_is_not_lost() {
    model_with_bound(2, || {
        let arena = Arc::new(reclaim_arena(true));
        let cache = std::sync::Arc::new(Cache { arena: Arc::clone(&arena), pages: loom::sync::Mutex::new(Vec::new()) });
        let handle = arena.register_shrinker(cache.clone());
        for round in 0..2 {
            {
                // Fill under the cache's lock so that kswapd, woken by the
                // second allocation, finds both pages. (Direct reclaim,
                // which would take this lock, cannot happen: min is 0.)
                let mut pages = cache.pages.lock().unwrap();
                pages.push(alloc(&arena));
                pages.push(alloc(&arena));
            }
            assert!(cache.emptied_within(4), "round {round}: kswapd was not woken, the wake-up was lost");
            assert_eq!(arena.stats().zones[0].free, 3, "round {round}: kswapd freed the whole cache");
        }
        drop(handle);
        drop(cache);
        // The last reference: dropping stops and joins kswapd.
        drop(Arc::try_unwrap(arena).ok().expect("only reference"));
    });
}

/// With two NUMA nodes there is a kswapd per node: an allocation that
/// leaves node 1's zone below low wakes node 1's kswapd (the wake-up goes
/// to the zone's node, and is not lost however it interleaves with that
/// kswapd's first sleep), node 0's is never woken, and dropping the arena
/// stops and joins both.
#[test]
fn each_nodes_kswapd_is_woken_for_its_own_zone() {
    model_with_bound(2, || {
        let arena = one_zone(6, 0, 2)
            .topology(Topology::simulated(2).unwrap())
            .pcp(PcpConfig::Disabled)
            .background_reclaim(true)
            .purge_delay(None)
            .build()
            .unwrap();
        let arena = Arc::new(arena);
        let cache = std::sync::Arc::new(Cache { arena: Arc::clone(&arena), pages: loom::sync::Mutex::new(Vec::new()) });
        let handle = arena.register_shrinker(cache.clone());
        {
            let mut pages = cache.pages.lock().unwrap();
            for _ in 0..2 {
                let page = arena.alloc_pages_node(1, 0, AllocFlags::THISNODE).unwrap();
                pages.push(page.as_ptr() as usize);
            }
        }
        // More yields than with one kswapd: the other node's thread takes
        // turns too.
        assert!(cache.emptied_within(16), "node 1's kswapd was not woken");
        let stats = arena.stats();
        assert_eq!((stats.zones[0].free, stats.zones[1].free), (3, 3));
        assert_eq!(stats.nodes[0].kswapd_wakeups, 0, "node 0's kswapd ran for node 1");
        drop(handle);
        drop(cache);
        drop(Arc::try_unwrap(arena).ok().expect("only reference"));
    });
}

/// A NOFAIL allocation on a full arena waits for progress and is woken by
/// a free from another thread; it never spins.
#[test]
fn nofail_waiter_is_woken_by_progress() {
    model_with_bound(2, || {
        let arena = Arc::new(reclaim_arena(false));
        let taken: Vec<usize> = (0..3).map(|_| alloc(&arena)).collect();
        let waiter = {
            let arena = Arc::clone(&arena);
            spawn(move || arena.alloc_pages(0, AllocFlags::NOFAIL | AllocFlags::NOWARN).unwrap().as_ptr() as usize)
        };
        free(&arena, taken[0]);
        let got = waiter.join().unwrap();
        assert_eq!(got, taken[0], "the only free page");
        for &addr in &taken[1..] {
            free(&arena, addr);
        }
        free(&arena, got);
        arena.check().unwrap();
    });
}

/// Dropping an arena stops its kswapd, asleep or in the middle of a pass.
#[test]
fn dropping_the_arena_stops_kswapd() {
    model_with_bound(2, || {
        let arena = reclaim_arena(true);
        let a = alloc(&arena);
        let b = alloc(&arena); // below low: wakes kswapd
        // Freeing both puts the zone back at high: kswapd's pass, if it
        // runs, finds the zone balanced and goes back to sleep.
        free(&arena, b);
        free(&arena, a);
        drop(arena); // must return: kswapd stopped and joined
    });
}

/// A free that leaves memory a purge could hand back gets the purge timer
/// set, however it interleaves with kswapd going to sleep: kswapd either
/// sees the resident free page in its re-check, or the freer sees the
/// timer unarmed and wakes it. (Under loom a timed wait never times out,
/// so the model checks that kswapd went to sleep with the timer set.)
#[test]
fn purge_timer_is_set_by_a_free() {
    model_with_bound(2, || {
        let arena = one_zone(2, 0, 0)
            .pcp(PcpConfig::Disabled)
            .background_reclaim(true)
            .purge_delay(Some(std::time::Duration::from_millis(1)))
            .build()
            .unwrap();
        // A fresh page is not resident; once used and freed it is.
        let page = alloc(&arena);
        free(&arena, page);
        let mut set = false;
        for _ in 0..4 {
            set = arena.stats().reclaim.purge_timer_sleeps > 0;
            if set {
                break;
            }
            thread::yield_now();
        }
        assert!(set, "kswapd sleeps without its purge timer: a free's wake-up was lost");
        drop(arena);
    });
}

/// The fork handlers' prepare freezes every page cache (locked, with one
/// heavy barrier, owners seen out of their busy sections) before it takes
/// the zone locks, the order refills and trims take them in, while the
/// owner allocates and frees through its cache: nothing deadlocks, no
/// block is lost, and the owner's cache works after (taking the zone
/// locks before freezing deadlocks this model).
#[test]
fn fork_handlers_race_cache_refills_and_trims() {
    model(|| {
        let arena = Arc::new(tiny_arena());
        let owner = {
            let arena = Arc::clone(&arena);
            spawn(move || {
                let a = alloc(&arena); // a refill: set lock, then zone lock
                let b = alloc(&arena);
                free(&arena, a);
                free(&arena, b); // above high: a trim
                alloc(&arena)
            })
        };
        zonealloc::loom_hooks::fork_prepare_and_parent(&arena);
        let kept = owner.join().unwrap();
        arena.check().unwrap();
        free(&arena, kept);
        all_pages_back(&arena);
    });
}

/// One zone of 4 order-0 pages, no caches, no kswapd: the slab models'
/// page source.
fn slab_arena() -> Arena {
    one_zone(4, 0, 0).pcp(PcpConfig::Disabled).background_reclaim(false).purge_delay(None).build().unwrap()
}

/// Frees each of `addrs` on `heap`.
///
/// # Safety
/// Each is a live object of `class` from a heap over `heap`'s arena,
/// freed once.
unsafe fn free_each(
    heap: &mut zonealloc::ThreadHeap<'_>,
    class: zonealloc::SizeClass,
    addrs: impl IntoIterator<Item = usize>,
) {
    for addr in addrs {
        // SAFETY: the caller's contract.
        unsafe { heap.free(NonNull::new(addr as *mut u8).unwrap(), class).unwrap() };
    }
}

/// Once a slab model's heaps are gone: the orphans reaped, every slab of
/// `class` and every page back.
fn assert_all_returned(arena: &Arena, slabs: &zonealloc::Slabs, class: zonealloc::SizeClass) {
    slabs.reap_orphans(arena);
    assert_eq!(slabs.stats()[class].slabs, 0, "a slab was lost");
    let zone = &arena.stats().zones[0];
    assert_eq!(zone.free, zone.managed, "a page was lost");
}

/// The owner hands two of its objects to a thread it spawns, which frees
/// them while the owner allocates, frees and exits (its heap's drop
/// collects the remote frees, racing the pushes): an object is never
/// handed out while the other thread still holds it, and once both
/// threads are gone and the orphans are reaped, every page is back (no
/// object lost). The hand-off is a spawn, not a flag polled with
/// `yield_now`: loom runs a yielding thread only once the others block or
/// finish, which hid every interleaving of the free with the owner.
#[test]
fn cross_thread_slab_free_races_owner_alloc_and_exit() {
    model(|| {
        let arena = Arc::new(slab_arena());
        let slabs = Arc::new(zonealloc::Slabs::new());
        let class = zonealloc::SizeClass::new(0).unwrap(); // 16-byte objects, one-page slabs
        let owner = {
            let (arena, slabs) = (Arc::clone(&arena), Arc::clone(&slabs));
            spawn(move || {
                let mut heap = zonealloc::ThreadHeap::new(&arena, &slabs);
                let x = heap.alloc(class).unwrap();
                let y1 = heap.alloc(class).unwrap().as_ptr() as usize;
                let y2 = heap.alloc(class).unwrap().as_ptr() as usize;
                let released = Arc::new(loom::sync::atomic::AtomicBool::new(false));
                let freer = {
                    let (arena, slabs, released) = (Arc::clone(&arena), Arc::clone(&slabs), Arc::clone(&released));
                    spawn(move || {
                        released.store(true, Ordering::Release);
                        for addr in [y1, y2] {
                            // SAFETY: handed to us, freed once.
                            unsafe {
                                slabs.free_remote(&arena, NonNull::new(addr as *mut u8).unwrap(), class).unwrap()
                            };
                        }
                    })
                };
                // SAFETY: x is ours, freed once.
                unsafe { heap.free(x, class).unwrap() };
                let z = heap.alloc(class).unwrap().as_ptr() as usize;
                if z == y1 || z == y2 {
                    assert!(released.load(Ordering::Acquire), "an object was handed out while another thread held it");
                }
                // SAFETY: z is ours, freed once.
                unsafe { heap.free(NonNull::new(z as *mut u8).unwrap(), class).unwrap() };
                drop(heap); // collects what was pushed so far, orphans the rest
                freer.join().unwrap();
            })
        };
        owner.join().unwrap();
        slabs.reap_orphans(&arena);
        assert_eq!(slabs.stats()[class].slabs, 0, "a slab with a lost object was never freed");
        assert_eq!(slabs.stats()[class].objects, 0, "objects in use miscounted");
        let zone = &arena.stats().zones[0];
        assert_eq!(zone.free, zone.managed, "a page was lost");
        arena.check().unwrap();
    });
}

/// A remote free is published to the owner's collect by the bitmap alone:
/// the freer tells the owner only through `Relaxed` flags, so the remote
/// `fetch_or`'s Release and the collect's swap order the freer's last use
/// of the object before the next hand-out of it. The freer frees two
/// objects: the second finds the slab's `PENDING` set already and writes
/// only its bit (the first's compare-exchange on the state would order it
/// on its own). Weakening that `fetch_or` to Acquire fails this model
/// (loom: causality violation on the cell that stands for the object,
/// `slab/object.rs`); clearing `PENDING` after the swaps instead of before
/// fails the race model above (a remote free stranded, its slab never
/// freed).
#[test]
fn remote_free_is_published_by_the_push() {
    model(|| {
        let arena = Arc::new(slab_arena());
        let slabs = Arc::new(zonealloc::Slabs::new());
        let class = zonealloc::SizeClass::new(0).unwrap();
        let mut heap = zonealloc::ThreadHeap::new(&arena, &slabs);
        let y = heap.alloc(class).unwrap().as_ptr() as usize;
        let w = heap.alloc(class).unwrap().as_ptr() as usize;
        let pushed = Arc::new(loom::sync::atomic::AtomicBool::new(false));
        let freer = {
            let (arena, slabs, pushed) = (Arc::clone(&arena), Arc::clone(&slabs), Arc::clone(&pushed));
            spawn(move || {
                for addr in [y, w] {
                    // SAFETY: handed to us, freed once.
                    unsafe { slabs.free_remote(&arena, NonNull::new(addr as *mut u8).unwrap(), class).unwrap() };
                }
                pushed.store(true, Ordering::Relaxed);
            })
        };
        while !pushed.load(Ordering::Relaxed) {
            thread::yield_now();
        }
        // Collects the freed object (or, if its `Relaxed` read of
        // `pending` is still stale, orphans the slab and the reap collects
        // it).
        drop(heap);
        slabs.reap_orphans(&arena);
        // The next hand-outs of those addresses (the lowest objects of the
        // slab adopted or made again there) must come after the freer's
        // last use: a hand-out writes the cell the free read.
        let mut next = zonealloc::ThreadHeap::new(&arena, &slabs);
        let again = [next.alloc(class).unwrap(), next.alloc(class).unwrap()];
        for z in again {
            // SAFETY: ours, freed once.
            unsafe { next.free(z, class).unwrap() };
        }
        drop(next);
        freer.join().unwrap();
        slabs.reap_orphans(&arena);
        assert_eq!(slabs.stats()[class].slabs, 0, "the pushed object was never collected");
        let zone = &arena.stats().zones[0];
        assert_eq!(zone.free, zone.managed, "a page was lost");
        arena.check().unwrap();
    });
}

/// Two remote frees of one object race each other and the owner's
/// collect, and the owner reuses what it collected (issue 26). The owner
/// fills a slab (so its next allocation collects), then while one thread
/// frees objects Y (the lowest) and X and another frees X again once Y is
/// free (a double free), it allocates once: its collect may move the first free of X to
/// its bitmap between the second free's look at that bitmap and its
/// `fetch_or`, leaving X on both. Once both threads are done the owner
/// allocates twice more: no object is handed out twice. Before issue 26 a
/// pop took X from the owner's bitmap whatever the remote one said, and the
/// next collect freed it again while it was out: the two allocations got
/// X both (this model failed). The reuse comes after both frees, so that
/// no free here is one through a stale pointer after a legitimate reuse,
/// which no allocator can tell from a valid free.
#[test]
fn two_remote_frees_race_each_other_and_the_owners_collect() {
    slab_model(|| {
        let arena = Arc::new(slab_arena());
        let slabs = Arc::new(zonealloc::Slabs::new());
        let class = zonealloc::class_of(64, 8).unwrap();
        let mut heap = zonealloc::ThreadHeap::new(&arena, &slabs);
        // 64-byte objects: one page holds 64, the fewest of a one-page slab.
        let capacity = 4096 / class.size();
        let filled: Vec<usize> = (0..capacity).map(|_| heap.alloc(class).unwrap().as_ptr() as usize).collect();
        let (y, x) = (filled[0], filled[1]);
        let free = move |arena: &Arena, slabs: &zonealloc::Slabs, addr: usize| {
            // SAFETY: objects of the filled slab; X is freed twice on
            // purpose, and the arena must not be fooled by it.
            unsafe { slabs.free_remote(arena, NonNull::new(addr as *mut u8).unwrap(), class) }.is_ok()
        };
        // Y is freed before either free of X, so that the owner's pop
        // during the race takes Y (the lowest), never X: an X handed out
        // again before its second free would make that free one through a
        // stale pointer.
        let y_freed = Arc::new(loom::sync::atomic::AtomicBool::new(false));
        let first = {
            let (arena, slabs, y_freed) = (Arc::clone(&arena), Arc::clone(&slabs), Arc::clone(&y_freed));
            spawn(move || {
                let y_ok = free(&arena, &slabs, y);
                y_freed.store(true, Ordering::Release);
                (y_ok, free(&arena, &slabs, x))
            })
        };
        let second = {
            let (arena, slabs, y_freed) = (Arc::clone(&arena), Arc::clone(&slabs), Arc::clone(&y_freed));
            spawn(move || {
                while !y_freed.load(Ordering::Acquire) {
                    thread::yield_now();
                }
                free(&arena, &slabs, x)
            })
        };
        let during = heap.alloc(class).unwrap().as_ptr() as usize;
        let (y_ok, x_first_ok) = first.join().unwrap();
        let x_second_ok = second.join().unwrap();
        assert!(y_ok && (x_first_ok || x_second_ok), "a first free was refused");
        let after = [heap.alloc(class).unwrap().as_ptr() as usize, heap.alloc(class).unwrap().as_ptr() as usize];
        let mut out: Vec<usize> = filled.iter().copied().filter(|&a| a != x && a != y).collect();
        out.extend([during, after[0], after[1]]);
        let distinct: std::collections::HashSet<usize> = out.iter().copied().collect();
        assert_eq!(distinct.len(), out.len(), "an object was handed out twice");
        drop(heap);
        slabs.reap_orphans(&arena);
        // The second free of X was refused, or found late: never both.
        let both = x_first_ok && x_second_ok;
        assert_eq!(u64::from(both), slabs.late_double_frees(), "a double free accepted and never found");
    });
}

/// The owner's own free of an object races another thread's free of it
/// (a double free across threads, in either order): one is refused, or
/// both pass and the owner's next collect finds the second; the owner's
/// next allocations never hand the object out twice. With the pop taking
/// an object whatever the remote bitmap says (as before issue 26), the
/// owner's two allocations got the object both (this model failed).
#[test]
fn the_owners_free_races_a_remote_free_of_the_same_object() {
    slab_model(|| {
        let arena = Arc::new(slab_arena());
        let slabs = Arc::new(zonealloc::Slabs::new());
        let class = zonealloc::class_of(64, 8).unwrap();
        let mut heap = zonealloc::ThreadHeap::new(&arena, &slabs);
        // A full slab: the owner's allocations after the race collect.
        let capacity = 4096 / class.size();
        let filled: Vec<usize> = (0..capacity).map(|_| heap.alloc(class).unwrap().as_ptr() as usize).collect();
        let x = filled[0];
        let remote = {
            let (arena, slabs) = (Arc::clone(&arena), Arc::clone(&slabs));
            spawn(move || {
                // SAFETY: X is freed twice on purpose (here and by its owner).
                unsafe { slabs.free_remote(&arena, NonNull::new(x as *mut u8).unwrap(), class) }.is_ok()
            })
        };
        // SAFETY: as above.
        let local_ok = unsafe { heap.free(NonNull::new(x as *mut u8).unwrap(), class) }.is_ok();
        let remote_ok = remote.join().unwrap();
        assert!(local_ok || remote_ok, "both frees refused");
        let after = [heap.alloc(class).unwrap().as_ptr() as usize, heap.alloc(class).unwrap().as_ptr() as usize];
        assert_ne!(after[0], after[1], "an object was handed out twice");
        assert!(after.iter().all(|a| *a == x || !filled.contains(a)), "a live object was handed out");
        // SAFETY: ours, freed once.
        unsafe { free_each(&mut heap, class, after.into_iter().chain(filled.into_iter().filter(|&a| a != x))) };
        drop(heap);
        assert_all_returned(&arena, &slabs, class);
        assert_eq!(
            u64::from(local_ok && remote_ok),
            slabs.late_double_frees(),
            "a double free accepted and never found"
        );
    });
}

/// A remote free posts the notice of a parked slab while the slab's owner
/// exits (issue 26): the exit stops every notice, waits for one being
/// posted and drains its mailbox before the mailbox goes back to the pool,
/// so the next heap, which takes the same mailbox, never finds a notice of
/// a slab that is not its own (the pool checks that a mailbox it hands out
/// or takes back is empty: without the wait for a post in progress, this
/// model fails there).
#[test]
fn a_notice_posted_while_its_owner_exits_never_reaches_the_next_heap() {
    slab_model(|| {
        let arena = Arc::new(slab_arena());
        let slabs = Arc::new(zonealloc::Slabs::new());
        let class = zonealloc::class_of(64, 8).unwrap();
        let mut heap = zonealloc::ThreadHeap::new(&arena, &slabs);
        let capacity = 4096 / class.size();
        let filled: Vec<usize> = (0..capacity).map(|_| heap.alloc(class).unwrap().as_ptr() as usize).collect();
        // The slab is full: this allocation parks it and takes another.
        let other = heap.alloc(class).unwrap().as_ptr() as usize;
        assert!(!filled.contains(&other));
        let x = filled[0];
        let freer = {
            let (arena, slabs) = (Arc::clone(&arena), Arc::clone(&slabs));
            spawn(move || {
                // SAFETY: handed to us, freed once.
                unsafe { slabs.free_remote(&arena, NonNull::new(x as *mut u8).unwrap(), class) }.unwrap();
            })
        };
        drop(heap);
        freer.join().unwrap();
        let mut next = zonealloc::ThreadHeap::new(&arena, &slabs);
        let mine = next.alloc(class).unwrap();
        // SAFETY: ours, freed once.
        unsafe { next.free(mine, class).unwrap() };
        // SAFETY: live objects of the orphans, freed once.
        unsafe { free_each(&mut next, class, filled.into_iter().filter(|&a| a != x).chain([other])) };
        drop(next);
        assert_all_returned(&arena, &slabs, class);
    });
}

/// A slab the owner took back with a local free, filled again and parked
/// again while another thread frees one of its objects: the second park
/// is a plain store (`PARKED` was left set by the local free), so the
/// remote free must see `PARKED` and post a notice, or the walk must
/// collect it first; either way the owner gets the object back before it
/// needs a fourth slab. With parking that never sets `PARKED` (no notice
/// is ever posted), this model fails: the object is stranded on a parked
/// slab and the owner takes a new one.
#[test]
fn a_slab_parked_again_after_a_local_free_still_gets_its_notice() {
    slab_model(|| {
        let arena = Arc::new(slab_arena());
        let slabs = Arc::new(zonealloc::Slabs::new());
        let class = zonealloc::class_of(64, 8).unwrap();
        let capacity = 4096 / class.size();
        let mut heap = zonealloc::ThreadHeap::new(&arena, &slabs);
        let alloc = |heap: &mut zonealloc::ThreadHeap<'_>| heap.alloc(class).unwrap().as_ptr() as usize;
        // S full and parked; T current.
        let s: Vec<usize> = (0..capacity).map(|_| alloc(&mut heap)).collect();
        let mut live: Vec<usize> = (0..capacity).map(|_| alloc(&mut heap)).collect();
        assert_eq!(slabs.stats()[class].slabs, 2);
        // A local free takes S back; T filled, the walk finds S's hole.
        // SAFETY: ours, freed once.
        unsafe { heap.free(NonNull::new(s[0] as *mut u8).unwrap(), class).unwrap() };
        assert_eq!(alloc(&mut heap), s[0]);
        let y = s[1];
        let freer = {
            let (arena, slabs) = (Arc::clone(&arena), Arc::clone(&slabs));
            spawn(move || {
                // SAFETY: handed to this thread, freed once.
                unsafe { slabs.free_remote(&arena, NonNull::new(y as *mut u8).unwrap(), class) }.unwrap();
            })
        };
        // Parks S again (and T), or collects the remote free first.
        let mut got = vec![alloc(&mut heap)];
        freer.join().unwrap();
        while !got.contains(&y) && got.len() <= capacity {
            got.push(alloc(&mut heap));
        }
        assert!(got.contains(&y), "the object freed by another thread never came back");
        assert!(slabs.stats()[class].slabs <= 3, "a new slab while S had a free object");
        live.extend(got);
        live.extend(s.iter().filter(|&&a| a != y));
        // SAFETY: ours, freed once.
        unsafe { free_each(&mut heap, class, live) };
        drop(heap);
        assert_all_returned(&arena, &slabs, class);
    });
}

/// A remote free preempted between its bit and its look at the slab's
/// state, while the owner collects the bit, fills the slab again, parks
/// it, frees every object into it (taking it back, `PARKED` left set)
/// and returns it: the late free must not post a notice for the returned
/// slab (the owner's mailbox would hold a slot that is no longer its
/// slab; taking such a notice aborts). Fails with `releasable` testing the
/// state without clearing `PARKED`.
#[test]
fn a_slab_returned_after_a_late_remote_free_gets_no_notice() {
    slab_model(|| {
        let arena = Arc::new(slab_arena());
        let slabs = Arc::new(zonealloc::Slabs::new());
        let class = zonealloc::class_of(64, 8).unwrap();
        let capacity = 4096 / class.size();
        let mut heap = zonealloc::ThreadHeap::new(&arena, &slabs);
        let alloc = |heap: &mut zonealloc::ThreadHeap<'_>| heap.alloc(class).unwrap().as_ptr() as usize;
        let free_remote = move |slabs: &zonealloc::Slabs, arena: &Arena, addr: usize| {
            // SAFETY: handed to this thread, freed once.
            unsafe { slabs.free_remote(arena, NonNull::new(addr as *mut u8).unwrap(), class) }.unwrap();
        };
        // S full; one remote free done (PENDING set), one racing.
        let mut s: Vec<usize> = (0..capacity).map(|_| alloc(&mut heap)).collect();
        let (x, y) = (s.remove(0), s.remove(0));
        free_remote(&slabs, &arena, x);
        let freer = {
            let (arena, slabs) = (Arc::clone(&arena), Arc::clone(&slabs));
            spawn(move || free_remote(&slabs, &arena, y))
        };
        // The walk collects x (and y if its bit is there), then S is full
        // again and the next walk parks it, or leaves it for a new slab.
        let got: Vec<usize> = (0..3).map(|_| alloc(&mut heap)).collect();
        // Every object of S the owner holds goes back: with x and y both
        // collected and handed out again, S empties and is returned.
        let (ours, others): (Vec<usize>, Vec<usize>) = got.into_iter().partition(|a| *a == x || *a == y);
        // SAFETY: ours, freed once.
        unsafe { free_each(&mut heap, class, s.into_iter().chain(ours.iter().copied())) };
        freer.join().unwrap();
        // A walk takes any notice now in the mailbox.
        let more = alloc(&mut heap);
        // SAFETY: ours, freed once.
        unsafe { free_each(&mut heap, class, others.into_iter().chain([more])) };
        drop(heap);
        assert_all_returned(&arena, &slabs, class);
    });
}

/// Two threads whose heaps cannot be used (gone at exit, or busy) allocate
/// from the shared heap at once, one of them adopting the orphan a thread
/// left at exit: both get an object (contention waits, it is never
/// out-of-memory), no object is handed out twice, and nothing is lost.
#[test]
fn shared_heap_allocations_race_each_other_and_adopt_orphans() {
    model_with_bound(2, || {
        let arena = std::sync::Arc::new(slab_arena());
        let slabs = std::sync::Arc::new(zonealloc::Slabs::new());
        let class = zonealloc::SizeClass::new(0).unwrap();
        // A thread that exited: its slab is an orphan with a live object.
        let orphaned = {
            let mut heap = zonealloc::ThreadHeap::new(&arena, &slabs);
            heap.alloc(class).unwrap().as_ptr() as usize
        };
        let shared = Arc::new(zonealloc::loom_hooks::SharedHeap::new(
            std::sync::Arc::clone(&arena),
            std::sync::Arc::clone(&slabs),
        ));
        let other = {
            let shared = Arc::clone(&shared);
            // Not `Send` (the shared heap holds raw pointers); its thread
            // builds no cache set.
            thread::spawn(move || {
                shared.alloc(class).expect("the shared heap failed under contention").as_ptr() as usize
            })
        };
        let mine = shared.alloc(class).expect("the shared heap failed under contention").as_ptr() as usize;
        let theirs = other.join().unwrap();
        let mut objects = vec![mine, theirs, orphaned];
        objects.sort_unstable();
        objects.dedup();
        assert_eq!(objects.len(), 3, "an object was handed out twice");
        for addr in objects {
            // SAFETY: each object is live and freed once.
            unsafe { slabs.free_remote(&arena, NonNull::new(addr as *mut u8).unwrap(), class).unwrap() };
        }
        drop(shared); // its heap orphans its slab
        slabs.reap_orphans(&arena);
        assert_eq!(slabs.stats()[class].slabs, 0, "a slab was lost");
        assert_eq!(slabs.stats()[class].objects, 0, "objects in use miscounted");
        arena.check().unwrap();
    });
}

/// Two threads exit (each releasing its page caches) while a third drains
/// every cache, and one of them allocates and frees again after its
/// release, as a thread-local destructor that runs after ours does: every
/// block ends up in the lists exactly once, the released caches are
/// vacant, and nothing attaches after the release.
#[test]
fn two_threads_exit_while_a_third_drains() {
    model_with_bound(2, || {
        let arena = Arc::new(tiny_arena());
        let threads: Vec<_> = (0..2)
            .map(|t| {
                let arena = Arc::clone(&arena);
                spawn(move || {
                    let a = alloc(&arena);
                    free(&arena, a);
                    if t == 0 {
                        zonealloc::loom_hooks::thread_exit();
                        // After the release: straight to the zone.
                        let b = alloc(&arena);
                        free(&arena, b);
                    }
                })
            })
            .collect();
        arena.drain_pcp();
        threads.into_iter().for_each(|t| t.join().unwrap());
        // The other thread's exit hook may still be running: wait for its
        // effect (bounded), without draining again.
        for _ in 0..10 {
            if arena.stats().pcp_sets == 0 {
                break;
            }
            thread::yield_now();
        }
        let stats = arena.stats();
        assert_eq!(stats.pcp_sets, 0, "a set stayed attached to an exited thread");
        assert_eq!((stats.zones[0].cached, stats.zones[0].free), (0, stats.zones[0].managed));
        arena.check().unwrap();
    });
}

/// The fork handlers' prepare (every arena lock taken in lock order) and
/// parent (all released) run while kswapd is inside a shrinker's `scan`,
/// which frees pages (zone locks), and while another thread allocates and
/// frees: nothing deadlocks, and everything is consistent after. (Loom
/// cannot fork: the child's side is tested with real forks in
/// tests/thread_lifecycle.rs.)
#[test]
fn fork_handlers_race_a_shrinker_call() {
    model_with_bound(2, || {
        let arena = Arc::new(reclaim_arena(true));
        let cache = std::sync::Arc::new(Cache { arena: Arc::clone(&arena), pages: loom::sync::Mutex::new(Vec::new()) });
        let handle = arena.register_shrinker(cache.clone());
        {
            let mut pages = cache.pages.lock().unwrap();
            pages.push(alloc(&arena));
            pages.push(alloc(&arena)); // below low: kswapd runs the shrinker
        }
        let other = {
            let arena = Arc::clone(&arena);
            spawn(move || {
                let p = alloc(&arena);
                free(&arena, p);
            })
        };
        zonealloc::loom_hooks::fork_prepare_and_parent(&arena);
        other.join().unwrap();
        drop(handle); // waits for a scan in progress
        drop(cache);
        arena.check().unwrap();
        drop(Arc::try_unwrap(arena).ok().expect("only reference"));
    });
}

/// Two threads race to be first to use the lazily built global arena (the
/// protocol of `ZoneAlloc`'s first allocation, on a stand-in value): it is
/// built exactly once, both get the same value, and a call from inside the
/// build returns `Reentrant` instead of waiting for itself.
#[test]
fn lazy_init_race() {
    use std::ptr::NonNull;
    use zonealloc::{LoomInit, LoomLazy};
    model(|| {
        let lazy: Arc<LoomLazy<u64>> = Arc::new(LoomLazy::new());
        let builds = Arc::new(AtomicUsize::new(0));
        let first_use = |lazy: Arc<LoomLazy<u64>>, builds: Arc<AtomicUsize>| {
            let building = std::cell::Cell::new(false);
            let got = lazy.get().map(|v| v as *const u64).or_else(|| {
                let init = lazy.get_or_init(
                    || building.get(),
                    || {
                        building.set(true);
                        builds.fetch_add(1, Ordering::Relaxed);
                        // An allocation from inside the build must not wait for itself.
                        assert_eq!(lazy.get_or_init(|| building.get(), || unreachable!()), LoomInit::Reentrant);
                        building.set(false);
                        NonNull::new(Box::into_raw(Box::new(42u64)))
                    },
                );
                match init {
                    LoomInit::Ready(v) | LoomInit::Built(v) => Some(v as *const u64),
                    LoomInit::Failed | LoomInit::Reentrant => None,
                }
            });
            let got = got.expect("first use got no value");
            // SAFETY: published by the builder, never freed during the model.
            assert_eq!(unsafe { *got }, 42, "a value was seen before it was built");
            got as usize
        };
        let other = {
            let (lazy, builds) = (Arc::clone(&lazy), Arc::clone(&builds));
            spawn(move || first_use(lazy, builds))
        };
        let mine = first_use(Arc::clone(&lazy), Arc::clone(&builds));
        let theirs = other.join().unwrap();
        assert_eq!(mine, theirs, "two values were built");
        assert_eq!(builds.load(Ordering::Relaxed), 1);
        // SAFETY: the one value, built by Box::into_raw above.
        drop(unsafe { Box::from_raw(mine as *mut u64) });
    });
}

/// An owner of one block, whose address it keeps under its lock (the
/// frame lock of a page pool): `migrate` moves the block only if it still
/// has it and it is not pinned.
struct OneBlock {
    addr: loom::sync::Mutex<usize>,
    pinned: bool,
}

impl zonealloc::Movable for OneBlock {
    fn migrate(&self, from: NonNull<u8>, to: NonNull<u8>, _order: u32) -> bool {
        let mut addr = self.addr.lock().unwrap();
        if *addr != from.as_ptr() as usize || self.pinned {
            return false;
        }
        *addr = to.as_ptr() as usize;
        true
    }
}

/// The owner drops its block (takes the address under its lock, then
/// frees it) while compaction isolates and moves it: the free and the
/// isolation race for the block's head word. Whichever wins, the block is
/// freed exactly once (the free is never refused), the target of a move
/// that did not happen goes back, and every page ends up free.
fn free_races_compaction(pinned: bool) {
    model_with_bound(2, move || {
        // Two pageblocks of two pages: the owned page at the bottom, a
        // free movable pageblock on top for the free scanner.
        let arena = Arc::new(
            one_zone(4, 1, 0)
                .pageblock_order(1)
                .pcp(PcpConfig::Disabled)
                .background_reclaim(false)
                .purge_delay(None)
                .build()
                .unwrap(),
        );
        let owner = std::sync::Arc::new(OneBlock { addr: loom::sync::Mutex::new(0), pinned });
        let handle = arena.register_movable(owner.clone());
        let page = handle.alloc_pages(0, AllocFlags::empty()).unwrap().as_ptr() as usize;
        let top = arena.alloc_pages(1, AllocFlags::MOVABLE).unwrap();
        // SAFETY: ours, order 1.
        unsafe { arena.free_pages(top, 1) }.unwrap();
        *owner.addr.lock().unwrap() = page;
        let dropper = {
            let (arena, owner) = (Arc::clone(&arena), owner.clone());
            spawn(move || {
                let addr = std::mem::take(&mut *owner.addr.lock().unwrap());
                free(&arena, addr);
            })
        };
        let report = arena.compact();
        dropper.join().unwrap();
        // Isolated (at most once): the owner moved it, or refused (pinned,
        // or the dropper had taken it first); not isolated: the free won.
        assert!(report.isolated <= 1);
        assert_eq!(report.migrated_pages + report.failed, report.isolated);
        if pinned {
            assert_eq!(report.migrated_pages, 0);
        }
        drop(handle);
        all_pages_back(&arena);
    });
}

#[test]
fn a_free_racing_compaction_isolation_frees_once() {
    free_races_compaction(false);
}

#[test]
fn a_free_racing_a_refused_move_frees_once() {
    free_races_compaction(true);
}

/// What a crate that checks its own code with loom does with an arena
/// (README, "Using zonealloc in your own loom models"): its own structure
/// over arena pages, a one-slot mailbox that hands a page from a producer
/// to a consumer, in an arena built with the defaults, which under
/// `--cfg loom` are `ArenaBuilder::for_loom()`'s. The page's contents are
/// the mailbox's business (raw memory loom does not see); the hand-over
/// through the `AtomicPtr` is what the model checks, with the arena's own
/// protocols inside.
mod a_users_model {
    use super::*;
    use loom::sync::atomic::AtomicPtr;

    /// The user's structure: at most one page in flight.
    struct Mailbox {
        arena: Arena,
        slot: AtomicPtr<u64>,
    }

    impl Mailbox {
        /// A page with `value` in it, posted; false if the slot is taken.
        fn post(&self, value: u64) -> bool {
            let page = self.arena.alloc_pages(0, AllocFlags::empty()).unwrap().cast::<u64>();
            // SAFETY: a fresh page of ours.
            unsafe { page.as_ptr().write(value) };
            let posted = self
                .slot
                .compare_exchange(std::ptr::null_mut(), page.as_ptr(), Ordering::Release, Ordering::Relaxed)
                .is_ok();
            if !posted {
                // SAFETY: not posted, still ours.
                unsafe { self.arena.free_pages(page.cast(), 0) }.unwrap();
            }
            posted
        }

        /// The value of the posted page, which goes back to the arena.
        fn take(&self) -> Option<u64> {
            let page = NonNull::new(self.slot.swap(std::ptr::null_mut(), Ordering::Acquire))?;
            // SAFETY: posted with Release, taken once.
            let value = unsafe { page.as_ptr().read() };
            // SAFETY: the page is ours now, freed once.
            unsafe { self.arena.free_pages(page.cast(), 0) }.unwrap();
            Some(value)
        }
    }

    #[test]
    fn a_page_handed_over_through_the_users_own_structure() {
        model(|| {
            let mailbox = Arc::new(Mailbox { arena: Arena::builder().build().unwrap(), slot: AtomicPtr::default() });
            let producer = {
                let mailbox = Arc::clone(&mailbox);
                spawn(move || mailbox.post(7))
            };
            let consumer = {
                let mailbox = Arc::clone(&mailbox);
                spawn(move || mailbox.take())
            };
            let posted = producer.join().unwrap();
            let taken = consumer.join().unwrap();
            assert!(posted);
            let rest = mailbox.take();
            assert_eq!(taken.or(rest), Some(7), "the page arrived once, with its value");
            assert!(taken.is_none() || rest.is_none());
            let zone = &mailbox.arena.stats().zones[0];
            assert_eq!(zone.managed, 16, "ArenaBuilder::for_loom()'s 16 pages");
            all_pages_back(&mailbox.arena);
        });
    }

    /// The arena of the user, 64 MiB: refused under loom, saying
    /// what to build instead.
    #[test]
    fn a_production_sized_arena_is_refused_with_what_to_do() {
        model(|| {
            let error = Arena::builder().region_size(64 << 20).build().err().expect("refused");
            let text = error.to_string();
            assert!(matches!(error, zonealloc::BuildError::TooLargeForLoom { pages: 16384, limit: 64 }), "{text}");
            assert!(text.contains("ArenaBuilder::for_loom()"), "{text}");
        });
    }
}
