//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod page_model;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use zonealloc::{Arena, ArenaBuilder, PcpConfig, WatermarkConfig, Watermarks};

/// A small arena with no watermarks (every page can be allocated) and no
/// per-thread caches: what the buddy layer's exact-count tests need.
pub fn small_arena(zones: usize, blocks_per_zone: usize, max_order: u32) -> Arena {
    small_arena_with(zones, blocks_per_zone, max_order, PcpConfig::Disabled)
}

/// A small arena with no watermarks and the given per-thread caches.
pub fn small_arena_with(zones: usize, blocks_per_zone: usize, max_order: u32, pcp: PcpConfig) -> Arena {
    small_arena_builder(zones, blocks_per_zone, max_order, pcp).build().expect("small arena")
}

/// The builder of [`small_arena_with`], for tests that set more.
pub fn small_arena_builder(zones: usize, blocks_per_zone: usize, max_order: u32, pcp: PcpConfig) -> ArenaBuilder {
    Arena::builder()
        .region_size(zones * blocks_per_zone * (4096 << max_order))
        .zones(zones)
        .max_order(max_order)
        .watermarks(WatermarkConfig::PerZone(Watermarks { min: 0, low: 0, high: 0 }))
        .pcp(pcp)
}

/// An arena of `region_size` bytes in `zones` zones with no per-thread
/// caches, no kswapd and no purge timer: every count changes only by what
/// the test does.
pub fn quiet_arena(region_size: usize, zones: usize) -> Arena {
    Arena::builder()
        .region_size(region_size)
        .zones(zones)
        .pcp(PcpConfig::Disabled)
        .background_reclaim(false)
        .purge_delay(None)
        .build()
        .expect("quiet arena")
}

/// splitmix64: a tiny, seedable generator so tests replay exactly.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// The process's resident set in bytes, from /proc/self/statm.
pub fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Runs the test `name` of this test binary in a child process with
/// `ZONEALLOC_TEST_CHILD` set to `name` (the test does its real work only
/// then), waits at most `limit` for it (a child that hangs is killed and
/// the test fails) and returns how it ended and what it wrote to stderr.
pub fn run_child(name: &str, limit: std::time::Duration) -> (std::process::ExitStatus, String) {
    use std::io::Read;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env("ZONEALLOC_TEST_CHILD", name)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the child starts");
    // The child's stderr reaches its end when the child ends: that is the
    // event waited for, with a bound.
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    match rx.recv_timeout(limit) {
        Ok(text) => (child.wait().unwrap(), text),
        Err(_) => {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("the child `{name}` did not end within {limit:?}: it hangs");
        }
    }
}

/// Whether this process is the child [`run_child`] started for `name`.
pub fn is_child(name: &str) -> bool {
    std::env::var("ZONEALLOC_TEST_CHILD").is_ok_and(|n| n == name)
}

/// A two-party meeting point that gives up (and says so) after its limit
/// instead of hanging when the other party died.
pub struct Rendezvous {
    arrived: AtomicUsize,
    limit: Duration,
}

impl Rendezvous {
    pub const fn new(limit: Duration) -> Self {
        Self { arrived: AtomicUsize::new(0), limit }
    }

    /// The `n`-th meeting (counted from 1) of two parties.
    pub fn meet(&self, n: usize) {
        self.arrived.fetch_add(1, Ordering::AcqRel);
        let deadline = Instant::now() + self.limit;
        let mut spins = 0u32;
        while self.arrived.load(Ordering::Acquire) < 2 * n {
            spins += 1;
            if spins < 1 << 10 {
                std::hint::spin_loop();
                continue;
            }
            assert!(Instant::now() < deadline, "the other racer never arrived at meeting {n}");
            std::thread::yield_now();
        }
    }

    /// Arrivals so far, of both parties.
    pub fn arrived(&self) -> usize {
        self.arrived.load(Ordering::Acquire)
    }
}

/// What racing threads saw, counted (nothing asserts inside a thread, so
/// a failure cannot leave the other waiting).
#[derive(Default)]
pub struct Seen {
    pub accepted: AtomicUsize,
    pub refused: AtomicUsize,
    pub other_errors: AtomicUsize,
    /// An object or block handed out while it was in the live set.
    pub handed_out_twice: AtomicUsize,
    /// A live one whose marker another thread overwrote.
    pub overwritten: AtomicUsize,
}
