//! kswapd starts with the arena and is stopped and joined when it drops.
//! Alone in its binary: it counts the process's threads.

use zonealloc::{Arena, Topology};

fn kswapd_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter(|t| {
            let comm = std::fs::read_to_string(t.as_ref().unwrap().path().join("comm")).unwrap_or_default();
            // The kernel keeps 15 characters of "zonealloc-kswapd".
            comm.trim() == "zonealloc-kswap"
        })
        .count()
}

/// A new thread names itself once it runs: wait (up to 10 s) to see it.
fn wait_for_threads(n: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while kswapd_threads() != n {
        assert!(std::time::Instant::now() < deadline, "expected {n} kswapd threads, see {}", kswapd_threads());
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

#[test]
fn dropping_the_arena_stops_and_joins_kswapd() {
    assert_eq!(kswapd_threads(), 0);
    let arena = Arena::builder().region_size(8 << 20).build().unwrap();
    wait_for_threads(1);
    let second = Arena::builder().region_size(8 << 20).build().unwrap();
    wait_for_threads(2); // one reclaim thread per arena
    drop(arena);
    // Joined by the drop: gone at once, no waiting.
    assert_eq!(kswapd_threads(), 1, "kswapd still running after its arena dropped");
    drop(second);
    assert_eq!(kswapd_threads(), 0);
    let quiet = Arena::builder().region_size(8 << 20).background_reclaim(false).build().unwrap();
    assert_eq!(kswapd_threads(), 0, "background_reclaim(false) starts no thread");
    drop(quiet);
    // A kswapd per NUMA node, all stopped by the drop.
    let numa = Arena::builder().region_size(24 << 20).topology(Topology::simulated(3).unwrap()).build().unwrap();
    wait_for_threads(3);
    drop(numa);
    assert_eq!(kswapd_threads(), 0, "a node's kswapd outlived its arena");
}
