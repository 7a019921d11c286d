//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod page_model;

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
