//! zonealloc as the global allocator: one line, then ordinary Rust.
//!
//! cargo run --release --example global

use std::collections::{BTreeMap, HashMap};

#[global_allocator]
static GLOBAL: zonealloc::ZoneAlloc = zonealloc::ZoneAlloc;

fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    pages * 4096.0 / (1 << 20) as f64
}

fn main() {
    // Some ordinary work: strings, maps, vectors, threads.
    let mut index: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for i in 0..200_000u32 {
        index.entry(format!("word{}", i % 5_000)).or_default().push(i);
    }
    let counts: HashMap<&str, usize> = index.iter().map(|(k, v)| (k.as_str(), v.len())).collect();
    let workers: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let blobs: Vec<Vec<u8>> = (0..2_000).map(|i| vec![t as u8; 64 + (i * 97) % 60_000]).collect();
                blobs.iter().map(Vec::len).sum::<usize>()
            })
        })
        .collect();
    let bytes: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    println!(
        "built an index of {} words, {} counts; 4 threads allocated {} MiB",
        index.len(),
        counts.len(),
        bytes >> 20
    );
    println!("RSS while the work is live: {:.1} MiB", rss_mib());

    let stats = zonealloc::global_stats().expect("the first allocation built the global arena");
    println!("\n{stats}");

    drop(counts);
    drop(index);
    // Idle: kswapd purges free memory after the purge delay (1 s by
    // default); purge() does it now.
    let arena = zonealloc::global_arena().unwrap();
    let reaped = zonealloc::global_reap();
    let report = arena.purge();
    println!(
        "after freeing: {reaped} pages of empty orphaned slabs reaped, {} MiB purged in {} madvise calls; RSS {:.1} MiB",
        report.bytes >> 20,
        report.calls,
        rss_mib()
    );
    arena.check().expect("the global arena is consistent");
    println!("check() passes");
}
