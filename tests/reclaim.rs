//! The slow path, the reclaim thread, shrinkers, the OOM handler, capacity
//! and fault injection.
//!
//! Where the reclaim thread's timing cannot be pinned down, tests wait for
//! an event with a generous deadline and then assert exact or bounded
//! results; no assertion is on a time.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zonealloc::{
    AllocError, AllocFlags, Arena, CapacityError, FaultInjection, OomAction, PcpConfig, ShrinkResult, Shrinker,
    WatermarkConfig, Watermarks,
};

const NOWARN: AllocFlags = AllocFlags::NOWARN;

/// One zone of 1024 pages, min 100 / low 200 / high 300, no caches (so
/// free counts are exact), no purge timer.
fn arena(background: bool) -> Arc<Arena> {
    Arc::new(
        Arena::builder()
            .region_size(4 << 20)
            .zones(1)
            .max_order(10)
            .watermarks(WatermarkConfig::PerZone(Watermarks { min: 100, low: 200, high: 300 }))
            .pcp(PcpConfig::Disabled)
            .background_reclaim(background)
            .purge_delay(None)
            .build()
            .unwrap(),
    )
}

fn free(arena: &Arena) -> usize {
    arena.stats().zones[0].free
}

fn release(arena: &Arena, addr: usize) {
    // SAFETY: `addr` is an order-0 block of this arena, freed once.
    unsafe { arena.free_pages(NonNull::new(addr as *mut u8).unwrap(), 0) }.unwrap();
}

/// Waits (up to 20 s) for `cond` on `arena`; panics with `what` and the
/// reclaim stats if it never holds.
fn wait_for(arena: &Arena, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {:?}", arena.stats().reclaim);
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A cache of order-0 pages that a shrinker empties, oldest first.
struct PageCache {
    arena: Arc<Arena>,
    pages: Mutex<Vec<usize>>,
    /// When false, `scan` frees nothing (a stubborn cache).
    willing: AtomicBool,
    /// When set, `scan` also allocates a page (which must not recurse).
    allocate_in_scan: AtomicBool,
    allocated_in_scan: Mutex<Vec<usize>>,
}

std::thread_local! {
    /// Calls of `PageCache::scan` in progress on this thread: reclaim must
    /// never recurse into a shrinker on one thread. Calls from different
    /// threads (kswapd and a direct reclaimer) may overlap: the `Shrinker`
    /// contract allows it, as the kernel's does.
    static SCAN_DEPTH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

impl PageCache {
    fn new(arena: &Arc<Arena>) -> Arc<Self> {
        Arc::new(Self {
            arena: Arc::clone(arena),
            pages: Mutex::new(Vec::new()),
            willing: AtomicBool::new(true),
            allocate_in_scan: AtomicBool::new(false),
            allocated_in_scan: Mutex::new(Vec::new()),
        })
    }

    fn fill(&self, n: usize) {
        let mut pages = self.pages.lock().unwrap();
        for _ in 0..n {
            pages.push(self.arena.alloc_pages(0, NOWARN).unwrap().as_ptr() as usize);
        }
    }

    fn held(&self) -> usize {
        self.pages.lock().unwrap().len()
    }

    fn clear(&self) {
        for addr in self.pages.lock().unwrap().drain(..).chain(self.allocated_in_scan.lock().unwrap().drain(..)) {
            release(&self.arena, addr);
        }
    }
}

impl Shrinker for PageCache {
    fn count(&self) -> usize {
        self.held()
    }

    fn scan(&self, nr_to_scan: usize) -> ShrinkResult {
        assert_eq!(SCAN_DEPTH.replace(1), 0, "reclaim recursed into a shrinker on one thread");
        if self.allocate_in_scan.load(Ordering::SeqCst) {
            // PF_MEMALLOC: no watermarks, no recursion into reclaim.
            let p = self.arena.alloc_pages(0, NOWARN).expect("a reclaiming thread may use the reserve");
            self.allocated_in_scan.lock().unwrap().push(p.as_ptr() as usize);
        }
        let result = if self.willing.load(Ordering::SeqCst) {
            let mut pages = self.pages.lock().unwrap();
            let n = nr_to_scan.min(pages.len());
            for addr in pages.drain(..n) {
                release(&self.arena, addr);
            }
            ShrinkResult::Freed(n)
        } else {
            ShrinkResult::Freed(0)
        };
        SCAN_DEPTH.set(0);
        result
    }
}

/// Takes pages until free == `target` (exactly), using HIGH to get below min.
fn take_until(arena: &Arena, target: usize, flags: AllocFlags) -> Vec<usize> {
    let mut taken = Vec::new();
    while free(arena) > target {
        taken.push(arena.alloc_pages(0, flags | NOWARN).unwrap().as_ptr() as usize);
    }
    assert_eq!(free(arena), target);
    taken
}

/// The state letter (`R`, `S`, ...) of this process's thread named `comm`
/// in /proc, or `None` if there is no such thread.
fn thread_state(comm: &str) -> Option<char> {
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let dir = task.ok()?.path();
        if std::fs::read_to_string(dir.join("comm")).ok()?.trim() == comm {
            let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
            return stat.rsplit_once(')')?.1.split_whitespace().next()?.chars().next();
        }
    }
    None
}

fn wakeups_sent(arena: &Arena) -> u64 {
    arena.stats().reclaim.kswapd_wakeups_sent
}

#[test]
fn allocation_below_low_wakes_kswapd_which_stops_at_high_and_then_sleeps() {
    let arena = arena(true);
    let cache = PageCache::new(&arena);
    let _handle = arena.register_shrinker(cache.clone());
    cache.fill(600); // free: 424
    let mine = take_until(&arena, 201, AllocFlags::empty()); // still above low
    // Wake-ups are counted by the allocation that sends them, at once.
    assert_eq!(wakeups_sent(&arena), 0, "above low: nothing woke kswapd");
    // free 201 -> 200: passes the low check (201 > 200), does not wake.
    let crossing = arena.alloc_pages(0, NOWARN).unwrap();
    assert_eq!(wakeups_sent(&arena), 0, "an allocation that passed low woke kswapd");
    wait_for(&arena, "kswapd to go to sleep", || arena.stats().reclaim.kswapd_sleeps >= 1);
    let sleeps = arena.stats().reclaim.kswapd_sleeps;
    // 200 is not above low: the slow path wakes kswapd, then takes a page at
    // min (-> 199). kswapd computes its deficit before or after that page
    // went: it frees 100 or 101.
    let crossing2 = arena.alloc_pages(0, NOWARN).unwrap();
    assert!(wakeups_sent(&arena) >= 1, "an allocation below low did not wake kswapd");
    wait_for(&arena, "kswapd to reclaim", || arena.stats().reclaim.shrinker_freed >= 100);
    wait_for(&arena, "kswapd to finish its pass", || free(&arena) >= 299);
    // Balanced, it goes back to sleep (blocked, not spinning) once.
    wait_for(&arena, "kswapd to sleep again", || {
        arena.stats().reclaim.kswapd_sleeps > sleeps && thread_state("zonealloc-kswap") == Some('S')
    });
    let stats = arena.stats();
    assert_eq!((stats.reclaim.kswapd_wakeups, stats.reclaim.kswapd_passes), (1, 1));
    assert_eq!(stats.reclaim.kswapd_sleeps, sleeps + 1, "kswapd woke and slept more than once");
    // It stopped at high: it freed the deficit, not everything it could.
    let freed = stats.reclaim.shrinker_freed as usize;
    assert!(freed == 100 || freed == 101, "freed {freed}");
    assert_eq!(free(&arena), 199 + freed, "balanced exactly at high, less the page taken after");
    assert_eq!(cache.held(), 600 - freed);
    arena.check().unwrap();
    release(&arena, crossing.as_ptr() as usize);
    release(&arena, crossing2.as_ptr() as usize);
    mine.into_iter().for_each(|p| release(&arena, p));
    cache.clear();
}

#[test]
fn kswapd_gives_up_after_16_fruitless_passes_until_memory_is_freed() {
    let arena = arena(true);
    let mut mine = take_until(&arena, 150, AllocFlags::empty()); // below low, nothing to reclaim
    wait_for(&arena, "kswapd to give up", || arena.stats().reclaim.kswapd_give_ups == 1);
    let r = arena.stats().reclaim;
    assert_eq!((r.kswapd_passes, r.kswapd_failures, r.kswapd_wakeups), (16, 16, 1));
    // Hopeless: further allocations below low send no wake-up.
    let sent = wakeups_sent(&arena);
    mine.push(arena.alloc_pages(0, NOWARN).unwrap().as_ptr() as usize);
    assert_eq!(wakeups_sent(&arena), sent, "an allocation woke a kswapd that gave up");
    // Freeing memory makes reclaim worth trying again.
    release(&arena, mine.pop().unwrap());
    assert_eq!(arena.stats().reclaim.kswapd_failures, 0);
    mine.push(arena.alloc_pages(0, NOWARN).unwrap().as_ptr() as usize);
    wait_for(&arena, "a second give-up", || arena.stats().reclaim.kswapd_give_ups == 2);
    assert_eq!(arena.stats().reclaim.kswapd_wakeups, 2);
    mine.into_iter().for_each(|p| release(&arena, p));
}

#[test]
fn nowait_and_atomic_never_reclaim_and_use_their_reserve_share() {
    let arena = arena(false);
    let cache = PageCache::new(&arena);
    let _handle = arena.register_shrinker(cache.clone());
    cache.fill(100);
    let mut mine = take_until(&arena, 100, AllocFlags::empty()); // at min
    assert_eq!(arena.alloc_pages(0, AllocFlags::NOWAIT | NOWARN), Err(AllocError::OutOfMemory { order: 0 }));
    // HIGH may use half the reserve without reclaim: 50 pages.
    let high = (0..).take_while(|_| {
        arena
            .alloc_pages(0, AllocFlags::HIGH | AllocFlags::NOWAIT | NOWARN)
            .map(|p| mine.push(p.as_ptr() as usize))
            .is_ok()
    });
    assert_eq!(high.count(), 50);
    // ATOMIC a further quarter of what is left: down to 38.
    let atomic = (0..).take_while(|_| {
        arena.alloc_pages(0, AllocFlags::ATOMIC | NOWARN).map(|p| mine.push(p.as_ptr() as usize)).is_ok()
    });
    assert_eq!(atomic.count(), 12);
    assert_eq!(arena.stats().reclaim.direct_reclaims, 0, "NOWAIT and ATOMIC never reclaim");
    assert_eq!(cache.held(), 100);
    // A plain allocation may wait: it reclaims from the shrinker, 32 pages
    // (SWAP_CLUSTER_MAX) a round: 38 -> 70, still not above min (100), so
    // another round -> 102, and it succeeds.
    mine.push(arena.alloc_pages(0, NOWARN).unwrap().as_ptr() as usize);
    assert_eq!(arena.stats().reclaim.direct_reclaims, 2);
    assert_eq!(cache.held(), 100 - 64);
    mine.into_iter().for_each(|p| release(&arena, p));
    cache.clear();
    arena.check().unwrap();
}

#[test]
fn retries_follow_the_kernel_rules() {
    let arena = arena(false);
    let cache = PageCache::new(&arena);
    cache.willing.store(false, Ordering::SeqCst); // says it holds pages, frees none
    let _handle = arena.register_shrinker(cache.clone());
    cache.fill(50);
    let mut mine = take_until(&arena, 100, AllocFlags::empty());
    let direct = |a: &Arena| a.stats().reclaim.direct_reclaims;

    // NORETRY: one round of reclaim, then fail.
    assert!(arena.alloc_pages(0, AllocFlags::NORETRY | NOWARN).is_err());
    assert_eq!(direct(&arena), 1);
    // Default: retry while reclaim could help, 16 rounds without progress,
    // then the OOM handler (none: fail).
    assert!(arena.alloc_pages(0, NOWARN).is_err());
    assert_eq!(direct(&arena), 1 + 17);
    assert_eq!(arena.stats().reclaim.oom_events, 1);
    // Costly orders (above 3): one round unless RETRY_MAYFAIL.
    assert!(arena.alloc_pages(4, NOWARN).is_err());
    assert_eq!(direct(&arena), 1 + 17 + 1);
    assert!(arena.alloc_pages(4, AllocFlags::RETRY_MAYFAIL | NOWARN).is_err());
    assert_eq!(direct(&arena), 1 + 17 + 1 + 17);
    // Neither costly orders nor RETRY_MAYFAIL reach the OOM handler.
    assert_eq!(arena.stats().reclaim.oom_events, 1);
    mine.push(arena.alloc_pages(0, AllocFlags::HIGH | NOWARN).unwrap().as_ptr() as usize);
    mine.into_iter().for_each(|p| release(&arena, p));
    cache.clear();
}

#[test]
fn the_oom_handler_is_called_and_may_ask_for_a_retry() {
    // The handler lives inside the arena, so it reaches the arena through a
    // weak reference set once the arena exists.
    let me: Arc<std::sync::OnceLock<std::sync::Weak<Arena>>> = Arc::default();
    let victim: Arc<Mutex<Vec<usize>>> = Arc::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let arena = Arc::new(
        Arena::builder()
            .region_size(4 << 20)
            .zones(1)
            .watermarks(WatermarkConfig::PerZone(Watermarks { min: 100, low: 200, high: 300 }))
            .pcp(PcpConfig::Disabled)
            .background_reclaim(false)
            .oom_handler({
                let (me, victim, calls) = (me.clone(), victim.clone(), calls.clone());
                move |ctx| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    assert_eq!((ctx.order, ctx.free_pages, ctx.reclaimable_pages), (0, 100, 0));
                    // "Kill" the victim: give its pages back, then retry.
                    let arena = me.get().and_then(std::sync::Weak::upgrade).expect("arena alive");
                    let pages: Vec<usize> = victim.lock().unwrap().drain(..).collect();
                    if pages.is_empty() {
                        return OomAction::Fail;
                    }
                    pages.into_iter().for_each(|p| release(&arena, p));
                    OomAction::Retry
                }
            })
            .build()
            .unwrap(),
    );
    me.set(Arc::downgrade(&arena)).unwrap();
    let mut mine = take_until(&arena, 120, AllocFlags::empty());
    *victim.lock().unwrap() = take_until(&arena, 100, AllocFlags::empty());
    // At min, nothing reclaimable: straight to the handler, which frees 20.
    mine.push(arena.alloc_pages(0, NOWARN).unwrap().as_ptr() as usize);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(arena.stats().reclaim.oom_events, 1);
    assert_eq!(free(&arena), 119);
    // Nothing left to kill: the handler fails the allocation.
    take_until(&arena, 100, AllocFlags::empty()).into_iter().for_each(|p| mine.push(p));
    assert_eq!(arena.alloc_pages(0, NOWARN), Err(AllocError::OutOfMemory { order: 0 }));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    mine.into_iter().for_each(|p| release(&arena, p));
    arena.check().unwrap();
}

#[test]
fn nofail_waits_until_a_shrinker_frees_memory() {
    let arena = arena(true);
    let cache = PageCache::new(&arena);
    cache.willing.store(false, Ordering::SeqCst);
    let _handle = arena.register_shrinker(cache.clone());
    cache.fill(100);
    let mut mine = take_until(&arena, 100, AllocFlags::empty());
    let got = std::thread::scope(|s| {
        let waiter = s.spawn(|| arena.alloc_pages(0, AllocFlags::NOFAIL | NOWARN).map(|p| p.as_ptr() as usize));
        wait_for(&arena, "the NOFAIL caller to wait", || arena.stats().reclaim.nofail_waits >= 1);
        assert!(!waiter.is_finished(), "NOFAIL returned without memory");
        cache.willing.store(true, Ordering::SeqCst);
        waiter.join().unwrap()
    });
    mine.push(got.expect("NOFAIL never fails"));
    assert!(arena.stats().reclaim.shrinker_freed > 0);
    mine.into_iter().for_each(|p| release(&arena, p));
    cache.clear();
}

#[test]
fn a_shrinker_that_allocates_uses_the_reserve_and_does_not_recurse() {
    let arena = arena(false);
    let cache = PageCache::new(&arena);
    cache.allocate_in_scan.store(true, Ordering::SeqCst);
    let _handle = arena.register_shrinker(cache.clone());
    cache.fill(200);
    // Down to where even ATOMIC stops (38): from here only a reclaiming
    // thread may allocate.
    let mut mine = take_until(&arena, 100, AllocFlags::empty());
    while free(&arena) > 38 {
        mine.push(arena.alloc_pages(0, AllocFlags::ATOMIC | NOWARN).unwrap().as_ptr() as usize);
    }
    assert!(arena.alloc_pages(0, AllocFlags::ATOMIC | NOWARN).is_err());
    // This allocation reclaims. Each round the shrinker allocates a page
    // inside scan (without watermarks, without re-entering reclaim: `SCAN_DEPTH`
    // asserts it) and frees 32: 38 -> 69 -> 100 -> 131, which passes min.
    mine.push(arena.alloc_pages(0, NOWARN).unwrap().as_ptr() as usize);
    assert_eq!(arena.stats().reclaim.direct_reclaims, 3);
    assert_eq!(cache.allocated_in_scan.lock().unwrap().len(), 3);
    assert_eq!(cache.held(), 200 - 96);
    mine.into_iter().for_each(|p| release(&arena, p));
    cache.clear();
    arena.check().unwrap();
}

#[test]
fn capacity_can_be_lowered_and_raised_at_run_time() {
    let arena = Arc::new(
        Arena::builder()
            .region_size(16 << 20)
            .zones(2)
            .pcp(PcpConfig::Disabled)
            .background_reclaim(false)
            .build()
            .unwrap(),
    );
    assert_eq!(arena.capacity(), 16 << 20);
    let full = arena.stats();
    arena.set_capacity(4 << 20).unwrap();
    let stats = arena.stats();
    assert_eq!(stats.capacity_bytes, 4 << 20);
    assert_eq!(stats.zones.iter().map(|z| z.managed).sum::<usize>(), 1024);
    for (z, before) in stats.zones.iter().zip(&full.zones) {
        assert_eq!(z.managed, 512);
        // The kernel formula, recomputed for the smaller zone: smaller marks.
        assert!(z.watermarks.min < before.watermarks.min, "{:?} vs {:?}", z.watermarks, before.watermarks);
    }
    // The budget holds: only managed - min pages can be had.
    let mut mine = Vec::new();
    while let Ok(p) = arena.alloc_pages(0, NOWARN) {
        mine.push(p.as_ptr() as usize);
    }
    let mins: usize = stats.zones.iter().map(|z| z.watermarks.min).sum();
    assert_eq!(mine.len(), 1024 - mins);
    // Raising it lets allocation continue.
    arena.set_capacity(8 << 20).unwrap();
    mine.push(arena.alloc_pages(0, NOWARN).unwrap().as_ptr() as usize);
    assert_eq!(arena.set_capacity(17 << 20), Err(CapacityError::TooLarge { requested: 17 << 20, region: 16 << 20 }));
    mine.into_iter().for_each(|p| release(&arena, p));
    arena.check().unwrap();
}

#[test]
fn lowering_capacity_below_usage_makes_kswapd_shrink_caches_to_fit() {
    let arena = Arc::new(
        Arena::builder().region_size(8 << 20).zones(1).pcp(PcpConfig::Disabled).purge_delay(None).build().unwrap(),
    );
    let cache = PageCache::new(&arena);
    let _handle = arena.register_shrinker(cache.clone());
    cache.fill(1500);
    arena.set_capacity(4 << 20).unwrap(); // 1024 pages, 1500 in use
    let z = arena.stats().zones[0].clone();
    wait_for(&arena, "kswapd to bring usage under the new budget", || {
        arena.stats().zones[0].usable_free() >= z.watermarks.high
    });
    assert!(cache.held() <= 1024 - z.watermarks.high, "the cache still holds {}", cache.held());
    cache.clear();
    arena.check().unwrap();
}

#[test]
fn fault_injection_fails_what_it_says() {
    let arena = Arena::builder()
        .region_size(8 << 20)
        .fail_alloc(FaultInjection { every_nth: Some(4), min_order: 1, ..FaultInjection::default() })
        .build()
        .unwrap();
    let mut failed = 0;
    let mut mine = Vec::new();
    for i in 0..40 {
        match arena.alloc_pages((i % 3) as u32, NOWARN) {
            Ok(p) => mine.push((p, (i % 3) as u32)),
            Err(AllocError::Injected { order }) => {
                assert!(order >= 1, "order 0 is below min_order");
                failed += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    // 40 calls, 26 of orders 1 and 2 are eligible: every 4th fails.
    assert_eq!(failed, 26 / 4);
    assert_eq!(arena.stats().reclaim.injected_failures, 6);
    // NOFAIL is never injected.
    for _ in 0..8 {
        mine.push((arena.alloc_pages(1, AllocFlags::NOFAIL).unwrap(), 1));
    }
    for (p, order) in mine {
        // SAFETY: allocated above with this order.
        unsafe { arena.free_pages(p, order) }.unwrap();
    }
    // Probability, seeded: the same seed fails the same calls.
    let pattern = |seed| {
        let a = Arena::builder()
            .region_size(8 << 20)
            .fail_alloc(FaultInjection { probability: Some(0.3), seed, ..FaultInjection::default() })
            .build()
            .unwrap();
        (0..64)
            .map(|_| match a.alloc_pages(0, NOWARN) {
                Ok(p) => {
                    // SAFETY: just allocated at order 0.
                    unsafe { a.free_pages(p, 0) }.unwrap();
                    true
                }
                Err(_) => false,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(pattern(7), pattern(7));
    assert_ne!(pattern(7), pattern(8));
    let failures = pattern(7).iter().filter(|ok| !**ok).count();
    assert!((5..=35).contains(&failures), "{failures} of 64 at p = 0.3");
}

/// A shrinker that owns the arena and blocks in `scan` until released;
/// records the thread that dropped it.
struct Owner {
    arena: Arc<Arena>,
    scanning: std::sync::mpsc::SyncSender<()>,
    release: Mutex<std::sync::mpsc::Receiver<()>>,
    dropped_on: Arc<Mutex<Option<String>>>,
}

impl Shrinker for Owner {
    fn count(&self) -> usize {
        1
    }

    fn scan(&self, _: usize) -> ShrinkResult {
        let _ = self.scanning.try_send(());
        let _ = self.release.lock().unwrap().recv_timeout(Duration::from_secs(20));
        ShrinkResult::Freed(0)
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        *self.dropped_on.lock().unwrap() = std::thread::current().name().map(str::to_owned);
        let _ = &self.arena; // dropped right after: the arena's last owner
    }
}

/// The shrinker is the arena's last owner and kswapd is inside its `scan`
/// when the user lets go of both: the shrinker, and so the arena (which
/// stops and joins kswapd), is dropped on the user's thread, never on
/// kswapd (which would have to join itself).
#[test]
fn a_shrinker_owning_the_arena_is_never_dropped_by_kswapd() {
    let arena = arena(true);
    let (scanning_tx, scanning) = std::sync::mpsc::sync_channel(1);
    let (release_tx, release_rx) = std::sync::mpsc::channel();
    let dropped_on = Arc::new(Mutex::new(None));
    let owner = Arc::new(Owner {
        arena: Arc::clone(&arena),
        scanning: scanning_tx,
        release: Mutex::new(release_rx),
        dropped_on: Arc::clone(&dropped_on),
    });
    let handle = arena.register_shrinker(owner.clone());
    let held = take_until(&arena, 199, AllocFlags::HIGH); // below low: kswapd scans
    scanning.recv_timeout(Duration::from_secs(20)).expect("kswapd called scan");
    for addr in held {
        release(&arena, addr);
    }
    drop(arena);
    drop(owner);
    // The registry (and kswapd's snapshot) now hold the only references.
    let dropper = std::thread::Builder::new()
        .name("dropper".into())
        .spawn(move || drop(handle)) // waits for the scan in progress
        .unwrap();
    // Release the scan once the drop is blocked waiting for it (if the drop
    // did not wait, the arena would be dropped on kswapd: the assertion
    // below fails).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dropper.is_finished() && thread_state("dropper") != Some('S') {
        assert!(Instant::now() < deadline, "the dropper neither blocked nor finished");
        std::thread::sleep(Duration::from_millis(1));
    }
    release_tx.send(()).unwrap();
    dropper.join().expect("dropping the handle dropped the arena cleanly");
    assert_eq!(dropped_on.lock().unwrap().as_deref(), Some("dropper"));
}

/// An allocation that makes memory purgeable (the free rest of a huge page
/// it touched first) sets the purge timer. Then, with nothing left to
/// purge but small free blocks beside a live neighbour, 1000 frees of such
/// a block cost the reclaim thread no wake-up. A free of a whole 2 MiB
/// block does set the timer, and the timer purges it.
#[test]
fn frees_that_leave_nothing_purgeable_do_not_wake_the_reclaim_thread() {
    let arena = Arena::builder()
        .region_size(16 << 20)
        .zones(1)
        .max_order(10)
        .watermarks(WatermarkConfig::PerZone(Watermarks { min: 0, low: 0, high: 0 }))
        .pcp(PcpConfig::Disabled)
        .huge_pages(zonealloc::HugePages::Transparent)
        .purge_delay(Some(Duration::from_millis(50)))
        .build()
        .unwrap();
    // kswapd asleep with nothing to purge, its timer off.
    wait_for(&arena, "the reclaim thread to go to sleep", || arena.stats().reclaim.kswapd_sleeps > 0);
    // `a` pins its order-4 buddy `b` below: freed, `b` stays an order-4
    // block. The first touch of `a` maps its whole huge page: the free
    // rest of it is resident, and (more than 512 KiB beside 64 KiB in use)
    // to be purged; the allocation sets the timer.
    let a = arena.alloc_pages(4, NOWARN).unwrap();
    wait_for(&arena, "the purge of the huge page's free rest", || arena.stats().reclaim.purges >= 1);
    let before = arena.stats().reclaim;
    for _ in 0..1000 {
        let b = arena.alloc_pages(4, NOWARN).unwrap();
        // SAFETY: ours, at order 4, not used again.
        unsafe { arena.free_pages(b, 4) }.unwrap();
    }
    // Counted by the freer when it sends one: none was sent.
    let stats = arena.stats().reclaim;
    assert_eq!(stats.kswapd_wakeups_sent, before.kswapd_wakeups_sent, "wake-ups for frees a purge cannot use");
    assert_eq!((stats.purge_timer_sleeps, stats.purges), (before.purge_timer_sleeps, before.purges));

    // A whole huge page freed: the timer is set and purges it.
    let c = arena.alloc_pages(9, NOWARN).unwrap();
    // SAFETY: ours, 2 MiB: touched, then freed and not used again.
    unsafe {
        c.as_ptr().write_bytes(1, 2 << 20);
        arena.free_pages(c, 9).unwrap();
    }
    wait_for(&arena, "the purge timer", || arena.stats().reclaim.purged_bytes >= 2 << 20);
    assert!(arena.stats().reclaim.purge_timer_sleeps >= 1);
    // SAFETY: ours, at order 4.
    unsafe { arena.free_pages(a, 4) }.unwrap();
    arena.check().unwrap();
}

/// A thread's page cache goes back to the lists when the thread exits,
/// and that is a free like any other: it sets the purge timer, which
/// purges the pages the thread touched. (Before, an exit returned its
/// pages silently: nothing else would free, and they stayed resident.)
#[test]
fn a_thread_exit_that_returns_pages_sets_the_purge_timer() {
    let arena = Arc::new(
        Arena::builder()
            .region_size(16 << 20)
            .zones(1)
            .max_order(10)
            .watermarks(WatermarkConfig::PerZone(Watermarks { min: 0, low: 0, high: 0 }))
            .pcp(PcpConfig::Fixed { batch: 63, high: 1023 })
            .huge_pages(zonealloc::HugePages::None)
            .purge_delay(Some(Duration::from_millis(50)))
            .build()
            .unwrap(),
    );
    wait_for(&arena, "the reclaim thread to go to sleep", || arena.stats().reclaim.kswapd_sleeps > 0);
    let worker = Arc::clone(&arena);
    std::thread::spawn(move || {
        let pages: Vec<_> = (0..512).map(|_| worker.alloc_pages(0, NOWARN).unwrap()).collect();
        for &p in &pages {
            // SAFETY: ours, one page; freed below.
            unsafe { p.as_ptr().write_bytes(1, 4096) };
        }
        for p in pages {
            // SAFETY: ours, order 0, freed once.
            unsafe { worker.free_pages(p, 0) }.unwrap();
        }
        // Nine refills of 63; every page is in this thread's cache.
        let z = &worker.stats().zones[0];
        assert_eq!((z.cached, z.pcp_trims, z.free), (9 * 63, 0, z.managed - 9 * 63));
    })
    .join()
    .unwrap();
    assert_eq!(arena.stats().zones[0].cached, 0, "the exit returned the cache");
    wait_for(&arena, "the purge of the exited thread's pages", || arena.stats().reclaim.purged_bytes >= 512 * 4096);
    arena.check().unwrap();
}

/// The purge timer's pass (`purge_stale`) hands back the free memory that
/// stayed free since the last pass and what exceeds the share kept (a
/// sixteenth of the memory in use plus 2 MiB per zone), never memory a
/// program freed and took again in between: mimalloc-bench's malloc-large
/// (buffers of 5-25 MiB freed and asked for again) faulted its buffers in
/// anew after every purge.
#[test]
fn a_timer_purge_keeps_memory_taken_again_since_the_last_pass() {
    const BLOCK: usize = 4 << 20; // order 10, the largest: blocks never merge
    let arena = Arena::builder()
        .region_size(256 << 20)
        .zones(1)
        .max_order(10)
        .pcp(zonealloc::PcpConfig::Disabled)
        .background_reclaim(false)
        .purge_delay(None)
        .build()
        .unwrap();
    let touched = |n: usize| -> Vec<NonNull<u8>> {
        (0..n)
            .map(|_| {
                let p = arena.alloc_pages(10, AllocFlags::empty()).unwrap();
                // SAFETY: ours, BLOCK bytes.
                unsafe { p.as_ptr().write_bytes(0x5a, BLOCK) };
                p
            })
            .collect()
    };
    let free = |blocks: Vec<NonNull<u8>>| {
        for p in blocks {
            // SAFETY: ours, at order 10, not used again.
            unsafe { arena.free_pages(p, 10) }.unwrap();
        }
    };
    // 64 MiB in use throughout: 4 MiB + 2 MiB is kept.
    let held = touched(16);
    free(touched(8));
    // Nothing stayed free since the arena was built (nothing was free), and
    // 32 MiB free exceeds what is kept by 26 MiB: six whole blocks go (a
    // pass never takes more than its budget).
    assert_eq!(arena.purge_stale().bytes, 24 << 20);
    // One of the two blocks still resident is taken and freed again: only
    // the one that stayed free goes.
    free(touched(1));
    assert_eq!(arena.purge_stale().bytes, 4 << 20);
    // Left alone since, the rest goes at the next pass.
    assert_eq!(arena.purge_stale().bytes, 4 << 20);
    assert_eq!(arena.stats().resident_bytes, 64 << 20, "only the blocks in use");
    assert_eq!(arena.purge_stale().bytes, 0);
    free(held);
    arena.check().unwrap();
}
