//! A panic inside the global allocator, with its locks held (issue 25):
//! the panic's own allocations come back into the allocator, which must
//! not wait for the lock its thread holds. One line, an abort, no hang.
#![cfg(not(loom))]

mod support;

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use support::{is_child, run_child};
use zonealloc::ZoneAlloc;
use zonealloc::test_hooks::{InZoneLock, plant_in_next_refill};

#[global_allocator]
static GLOBAL: ZoneAlloc = ZoneAlloc;

#[test]
fn a_panic_inside_the_global_allocator_aborts_with_one_line() {
    const NAME: &str = "a_panic_inside_the_global_allocator_aborts_with_one_line";
    if is_child(NAME) {
        plant_in_next_refill(InZoneLock::Panic);
        // Blocks of every cached order until one refills this thread's
        // page cache.
        let mut held = Vec::new();
        for round in 0..1000 {
            held.push(vec![round as u8; 4096 << (round % 9)]);
        }
        unreachable!("the planted fault did not stop the process ({} blocks)", held.len());
    }
    let (status, stderr) = run_child(NAME, Duration::from_secs(60));
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{status:?}, stderr:\n{stderr}");
    let ours: Vec<&str> = stderr.lines().filter(|l| l.starts_with("zonealloc: fatal: ")).collect();
    assert_eq!(ours.len(), 1, "stderr:\n{stderr}");
    // The panic's own allocation re-entered a held lock, or its unwinding
    // reached the section that holds one: either way it is reported as a
    // panic inside the allocator.
    assert!(ours[0].contains("a panic inside"), "{}", ours[0]);
}
