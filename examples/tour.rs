//! A walk through zonealloc at work: build an arena over a large reserved
//! region, allocate a realistic mix of blocks, and watch the buddy lists,
//! watermarks and counters move.
//!
//! cargo run --release --example tour

use std::ptr::NonNull;
use std::time::Instant;

use zonealloc::{AllocError, AllocFlags, Arena, FreeError};

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
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| -> Result<(), Box<dyn std::error::Error>> {
        let arena = &arena;
        let worker = s.spawn(move || {
            let pages: Vec<_> = (0..2000).map(|_| arena.alloc_pages(0, AllocFlags::empty()).unwrap()).collect();
            for p in pages {
                // SAFETY: allocated just above.
                unsafe { arena.free_pages(p, 0).unwrap() };
            }
            ready_tx.send(()).unwrap();
            rx.recv().unwrap(); // idle until drained
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
    Ok(())
}
