//! A walk through zonealloc at work: build an arena over a large reserved
//! region, allocate a realistic mix of blocks, and watch the buddy lists,
//! watermarks and counters move.
//!
//! cargo run --release --example tour

use std::collections::VecDeque;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zonealloc::{
    AllocError, AllocFlags, Arena, FreeError, MemPolicy, NodeMask, ShrinkResult, Shrinker, Topology, WatermarkConfig,
};

fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    pages * 4096.0 / (1 << 20) as f64
}

fn header(title: &str) {
    println!("\n=== {title} {}", "=".repeat(70usize.saturating_sub(title.len())));
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    header("1. Build: reserve 64 GiB, commit nothing");
    let rss0 = rss_mib();
    let t = Instant::now();
    let big = Arena::builder().region_size(64 << 30).build()?;
    let took = t.elapsed();
    println!("64 GiB arena with {} zones built in {:?}; RSS {:.1} -> {:.1} MiB", big.nr_zones(), took, rss0, rss_mib());
    drop(big);

    // A smaller arena for the walk, so the tables stay readable.
    let arena = Arena::builder().region_size(64 << 20).zones(2).max_order(10).build()?;
    let (base, len) = arena.region();
    println!("walk-through arena: {} MiB at {:p}, 2 zones, max order 10 (4 MiB blocks)", len >> 20, base);
    let stats = arena.stats();
    for z in &stats.zones {
        println!(
            "zone {}: {} pages, watermarks min {} low {} high {} (the kernel's formula)",
            z.zone, z.spanned, z.watermarks.min, z.watermarks.low, z.watermarks.high
        );
    }

    header("2. A realistic mix: page-table-like singles, buffers, one huge block");
    let mut live: Vec<(NonNull<u8>, u32)> = Vec::new();
    let mix = [(0, 3000), (1, 400), (2, 200), (3, 100), (4, 40), (6, 10), (9, 2)];
    for (order, count) in mix {
        for _ in 0..count {
            let p = arena.alloc_pages(order, AllocFlags::empty())?;
            // Touch the block so it is really in use.
            // SAFETY: the block is ours.
            unsafe { p.as_ptr().write(order as u8) };
            live.push((p, order));
        }
        println!("  {count:>5} blocks of order {order} ({:>5} KiB each)", 4 << order);
    }
    let zeroed = arena.alloc_pages(4, AllocFlags::ZERO)?;
    live.push((zeroed, 4));
    println!("  plus one ZERO order-4 block (zeroed only if it was ever used)");
    println!("\n{}", arena.stats());

    header("3. Free every other block: fragmentation appears");
    let mut kept = Vec::new();
    for (i, (p, order)) in live.drain(..).enumerate() {
        if i % 2 == 0 {
            // SAFETY: allocated above with this order, not used again.
            unsafe { arena.free_pages(p, order)? };
        } else {
            kept.push((p, order));
        }
    }
    let stats = arena.stats();
    for z in &stats.zones {
        print!("zone {} extfrag index by order:", z.zone);
        for order in 0..=stats.max_order {
            print!(" {:.3}", f64::from(z.fragmentation_index(order)) / 1000.0);
        }
        println!();
    }

    header("4. Bad frees are refused and change nothing");
    let (p, order) = kept[0];
    let attempts: [(&str, usize, u32); 3] = [
        ("inside a block", p.as_ptr() as usize + 64, order),
        ("wrong order", p.as_ptr() as usize, order + 1),
        ("outside the region", 0x1000, 0),
    ];
    for (what, addr, order) in attempts {
        // SAFETY: the arena validates and refuses these without touching memory.
        let e: FreeError = unsafe { arena.free_pages(NonNull::new(addr as *mut u8).unwrap(), order) }.unwrap_err();
        println!("  {what:<20} -> {e}");
    }
    arena.check()?;
    println!("  check() passes");

    header("5. Watermarks: run the zones down to the reserve");
    let mut hog = Vec::new();
    let err = loop {
        match arena.alloc_pages(0, AllocFlags::NOWARN) {
            Ok(p) => hog.push(p),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, AllocError::OutOfMemory { order: 0 }));
    for z in arena.stats().zones {
        println!(
            "  zone {}: {} free pages left = the min watermark {} (kept for HIGH/ATOMIC)",
            z.zone, z.free, z.watermarks.min
        );
    }
    let atomic = arena.alloc_pages(0, AllocFlags::ATOMIC)?;
    println!("  a plain request fails ({err}); an ATOMIC one still succeeds from the reserve");
    hog.push(atomic);

    header("6. Free everything: the zones coalesce back to whole blocks");
    for p in hog {
        // SAFETY: order-0 blocks from this arena.
        unsafe { arena.free_pages(p, 0)? };
    }
    for (p, order) in kept {
        // SAFETY: allocated above with this order.
        unsafe { arena.free_pages(p, order)? };
    }
    arena.drain_pcp(); // this thread's own cache
    arena.check()?;
    let stats = arena.stats();
    println!("{stats}");
    for z in &stats.zones {
        assert_eq!(z.free, z.managed);
    }
    println!("every page is free again and check() passes");

    header("7. Per-thread caches: refill, trim, remote drain, exit");
    // A 1 GiB arena, so the kernel's sizing gives a batch worth showing.
    let arena = Arena::builder().region_size(1 << 30).zones(2).build()?;
    let cached_pages = |a: &Arena| a.stats().zones.iter().map(|z| z.cached).sum::<usize>();
    let refills = |a: &Arena| a.stats().zones.iter().map(|z| z.pcp_refills).sum::<u64>();
    let page = arena.alloc_pages(0, AllocFlags::empty())?;
    let z = &arena.stats().zones[0];
    println!(
        "  each thread caches orders 0..=3 per zone: batch {} pages, high {} pages (zone_batchsize/zone_highsize)",
        z.pcp_batch, z.pcp_high
    );
    println!(
        "  one order-0 allocation on this thread: {} refill under one zone lock, {} pages now cached",
        refills(&arena),
        cached_pages(&arena)
    );
    // SAFETY: allocated just above.
    unsafe { arena.free_pages(page, 0)? };
    std::thread::scope(|s| -> Result<(), Box<dyn std::error::Error>> {
        // Both channels live inside the scope: if this thread returns early
        // or panics (say stdout is a closed pipe), `tx` is dropped and the
        // worker's `recv` returns instead of blocking the scope forever.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        let arena = &arena;
        let worker = s.spawn(move || {
            let pages: Vec<_> = (0..2000).map(|_| arena.alloc_pages(0, AllocFlags::empty()).unwrap()).collect();
            for p in pages {
                // SAFETY: allocated just above.
                unsafe { arena.free_pages(p, 0).unwrap() };
            }
            ready_tx.send(()).unwrap();
            let _ = rx.recv(); // idle until drained (or the main thread gave up)
        });
        ready_rx.recv()?;
        let stats = arena.stats();
        let trims: u64 = stats.zones.iter().map(|z| z.pcp_trims).sum();
        let pooled: usize = stats.zones.iter().map(|z| z.pooled).sum();
        println!(
            "  a worker allocated 2000 pages ({} refills in all) and freed them: {} pages cached; \
             frees above high trimmed {trims} batches, {pooled} pages wait in the zones' pools",
            refills(arena),
            cached_pages(arena),
        );
        let t = Instant::now();
        let drained = arena.drain_pcp();
        println!(
            "  drain_pcp() while the worker is blocked: {drained} pages back in the buddy lists in {:?}, worker not interrupted",
            t.elapsed()
        );
        tx.send(())?;
        worker.join().map_err(|_| "worker panicked")?;
        Ok(())
    })?;
    arena.check()?;
    println!("  after the worker exits: {} pages cached, check() passes", cached_pages(&arena));
    print!(
        "{}",
        arena
            .stats()
            .to_string()
            .lines()
            .skip_while(|l| !l.contains("pagesets"))
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
    println!();

    memory_pressure()?;
    grouping_and_compaction()?;
    numa_nodes()
}

/// Section 10: NUMA nodes, simulated on any machine.
fn numa_nodes() -> Result<(), Box<dyn std::error::Error>> {
    header("10. NUMA nodes: this machine's, then three simulated");
    let machine = Topology::detect();
    println!("{machine}");
    // Two sockets and a memory-only node (CXL) farther away; the CPUs of
    // this machine are dealt to the sockets.
    let distances = vec![vec![10, 21, 30], vec![21, 10, 30], vec![30, 30, 10]];
    let topology = Topology::with_distances(distances, vec![vec![0], vec![1], vec![]])?;
    for n in 0..3 {
        println!("node {n} falls back in the order {:?}", topology.fallback_order(n).collect::<Vec<_>>());
    }
    let arena = Arena::builder().region_size(96 << 20).zones(1).topology(topology).build()?;
    let local = arena.alloc_pages(0, AllocFlags::empty())?;
    let far = arena.alloc_pages_node(2, 4, AllocFlags::THISNODE)?;
    arena.set_thread_policy(MemPolicy::Interleave(NodeMask::new(&[0, 1]).unwrap()))?;
    let spread: Vec<_> = (0..4).map(|_| arena.alloc_pages(0, AllocFlags::empty())).collect::<Result<_, _>>()?;
    arena.set_thread_policy(MemPolicy::Local)?;
    println!(
        "a page on node {} (this thread's CPU's), 64 KiB on node {} (asked for), \
         interleaved pages on nodes {:?}",
        arena.node_of(local).unwrap(),
        arena.node_of(far).unwrap(),
        spread.iter().map(|&p| arena.node_of(p).unwrap()).collect::<Vec<_>>()
    );
    print!("{}", arena.numastat());
    // SAFETY: each block is ours, of the order it was allocated with, and
    // not used again.
    unsafe {
        arena.free_pages(local, 0)?;
        arena.free_pages(far, 4)?;
        for p in spread {
            arena.free_pages(p, 0)?;
        }
    }
    arena.check()?;
    Ok(())
}

/// Owned pages whose addresses the owner keeps: compaction may move them.
#[derive(Default)]
struct Movables(Mutex<Vec<usize>>);

impl zonealloc::Movable for Movables {
    fn migrate(&self, from: NonNull<u8>, to: NonNull<u8>, order: u32) -> bool {
        let mut pages = self.0.lock().unwrap();
        let Some(slot) = pages.iter().position(|&p| p == from.as_ptr() as usize) else { return false };
        // SAFETY: `from` is our block and `to` a fresh one of the same order.
        unsafe { std::ptr::copy_nonoverlapping(from.as_ptr(), to.as_ptr(), 4096 << order) };
        pages[slot] = to.as_ptr() as usize;
        true
    }
}

/// Section 9: pageblocks by mobility, then a compaction.
fn grouping_and_compaction() -> Result<(), Box<dyn std::error::Error>> {
    header("9. Grouping by mobility and compaction");
    let arena = Arena::builder().region_size(64 << 20).zones(1).background_reclaim(false).build()?;
    let owner = Arc::new(Movables::default());
    let handle = arena.register_movable(owner.clone());
    // 1 page in 10 unmovable, the rest movable (through the owner's handle),
    // interleaved; then most movable pages go, one in 8 stays.
    let mut unmovable = Vec::new();
    for i in 0..12_000 {
        if i % 10 == 0 {
            unmovable.push(arena.alloc_pages(0, AllocFlags::empty())?);
        } else {
            let page = handle.alloc_pages(0, AllocFlags::empty())?;
            owner.0.lock().unwrap().push(page.as_ptr() as usize);
        }
    }
    let doomed: Vec<usize> = {
        let mut pages = owner.0.lock().unwrap();
        let (keep, doomed): (Vec<_>, Vec<_>) =
            std::mem::take(&mut *pages).into_iter().enumerate().partition(|(i, _)| i % 8 == 0);
        *pages = keep.into_iter().map(|(_, p)| p).collect();
        doomed.into_iter().map(|(_, p)| p).collect()
    };
    for p in doomed {
        // SAFETY: an order-0 block of this arena, freed once.
        unsafe { arena.free_pages(NonNull::new(p as *mut u8).unwrap(), 0)? };
    }
    arena.drain_pcp();
    let info = arena.pagetypeinfo();
    println!("unmovable pages stay in their own pageblocks; movable ones are scattered:\n{info}");
    let huge =
        |arena: &Arena| arena.stats().zones[0].free_blocks[9..].iter().enumerate().map(|(i, n)| n << i).sum::<usize>();
    let before = huge(&arena);
    let report = arena.compact();
    println!(
        "compact(): {} pages moved in {:?} (migrate scanner {} pages, free scanner {}); free 2 MiB blocks {} -> {}",
        report.migrated_pages,
        report.elapsed,
        report.migrate_scanned,
        report.free_scanned,
        before,
        huge(&arena)
    );
    println!("{}", arena.pagetypeinfo());
    arena.check()?;
    for p in unmovable {
        // SAFETY: an order-0 block of this arena, freed once.
        unsafe { arena.free_pages(p, 0)? };
    }
    for p in std::mem::take(&mut *owner.0.lock().unwrap()) {
        // SAFETY: as above (wherever compaction moved it).
        unsafe { arena.free_pages(NonNull::new(p as *mut u8).unwrap(), 0)? };
    }
    drop(handle);
    arena.check()?;
    Ok(())
}

/// A cache of order-0 pages that gives its oldest back when asked.
struct PageCache {
    arena: Arc<Arena>,
    pages: Mutex<VecDeque<NonNull<u8>>>,
}

// SAFETY: the pointers are arena blocks owned by the cache, only used under
// its lock.
unsafe impl Send for PageCache {}
// SAFETY: as above.
unsafe impl Sync for PageCache {}

impl Shrinker for PageCache {
    fn count(&self) -> usize {
        self.pages.lock().unwrap().len()
    }

    fn scan(&self, nr_to_scan: usize) -> ShrinkResult {
        let mut pages = self.pages.lock().unwrap();
        let n = nr_to_scan.min(pages.len());
        for p in pages.drain(..n) {
            // SAFETY: an order-0 block this cache allocated; dropped here.
            unsafe { self.arena.free_pages(p, 0).unwrap() };
        }
        ShrinkResult::Freed(n)
    }
}

fn memory_pressure() -> Result<(), Box<dyn std::error::Error>> {
    header("8. Memory pressure: watermarks, kswapd, a shrinker, purge");
    let arena = Arc::new(
        Arena::builder()
            .region_size(64 << 20)
            .zones(1)
            .watermarks(WatermarkConfig::Kernel { min_free_kbytes: None, scale_factor: 200 })
            .purge_delay(None) // purge by hand below, to show it
            .build()?,
    );
    let marks = arena.stats().zones[0].watermarks;
    println!(
        "  one zone of {} pages, watermarks min {} low {} high {}; a cache registers a shrinker",
        arena.stats().zones[0].managed,
        marks.min,
        marks.low,
        marks.high
    );
    let cache = Arc::new(PageCache { arena: Arc::clone(&arena), pages: Mutex::new(VecDeque::new()) });
    let _shrinker = arena.register_shrinker(cache.clone());
    let usable = |a: &Arena| a.stats().zones[0].usable_free();
    let rss_start = rss_mib();
    // Fill the cache, touching every page, until the zone drops below low.
    while usable(&arena) >= marks.low {
        let p = arena.alloc_pages(0, AllocFlags::empty())?;
        // SAFETY: our block; touching it makes it resident.
        unsafe { p.as_ptr().write_bytes(0xab, 4096) };
        cache.pages.lock().unwrap().push_back(p);
    }
    let filled = cache.count();
    println!(
        "  the cache took {filled} pages ({:.0} MiB, RSS {:.1} -> {:.1} MiB): free {} < low {}, kswapd woken",
        (filled * 4096) as f64 / (1 << 20) as f64,
        rss_start,
        rss_mib(),
        usable(&arena),
        marks.low
    );
    let t = Instant::now();
    while usable(&arena) < marks.high && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let r = arena.stats().reclaim;
    println!(
        "  kswapd: {} wake-up(s), shrinker scanned {} and freed {} pages; free {} >= high {}, cache holds {}",
        r.kswapd_wakeups,
        r.shrinker_scanned,
        r.shrinker_freed,
        usable(&arena),
        marks.high,
        cache.count()
    );
    // A burst as large as half the cache: kswapd shrinks the cache ahead
    // of it; if the burst outruns kswapd down to min, the allocating
    // thread reclaims for itself (direct reclaim).
    let before = arena.stats().reclaim;
    let burst: Vec<_> = (0..filled / 2).map(|_| arena.alloc_pages(0, AllocFlags::empty())).collect::<Result<_, _>>()?;
    let r = arena.stats().reclaim;
    println!(
        "  a burst of {} more pages: kswapd woke {} more time(s) and the shrinker freed {} more pages; \
         {} direct reclaim(s) ({:?}); the cache is down to {}",
        burst.len(),
        r.kswapd_wakeups - before.kswapd_wakeups,
        r.shrinker_freed - before.shrinker_freed,
        r.direct_reclaims,
        r.direct_reclaim_time,
        cache.count()
    );

    // Idle: give everything back and return the memory to the OS.
    for p in burst {
        // SAFETY: order-0 blocks from this arena.
        unsafe { arena.free_pages(p, 0)? };
    }
    cache.scan(usize::MAX);
    arena.drain_pcp();
    let before = rss_mib();
    let report = arena.purge();
    println!(
        "  all freed: RSS {before:.1} MiB; purge() returned {} MiB to the OS in {} madvise call(s): RSS {:.1} MiB",
        report.bytes >> 20,
        report.calls,
        rss_mib()
    );
    println!(
        "  (with the default purge_delay of 1 s, kswapd does this by itself once the arena goes idle)\n  resident {} KiB of {} MiB reserved",
        arena.stats().resident_bytes >> 10,
        arena.region().1 >> 20
    );
    arena.check()?;
    Ok(())
}
