//! A broken invariant inside the allocator prints one line and aborts,
//! never hangs (issue 25): faults planted by the `test-hooks` feature, each
//! in a child process that must end with SIGABRT within a bound.

mod support;

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use support::{is_child, run_child};
use zonealloc::test_hooks::{InZoneLock, plant_in_next_refill};
use zonealloc::{AllocFlags, Arena};

/// Runs the child `name` and checks that it aborted, having printed exactly
/// one line of ours, which says `what`.
pub fn aborts_with_one_line(name: &str, what: &str) {
    let (status, stderr) = run_child(name, Duration::from_secs(60));
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{status:?}, stderr:\n{stderr}");
    let ours: Vec<&str> = stderr.lines().filter(|l| l.starts_with("zonealloc: fatal: ")).collect();
    assert_eq!(ours.len(), 1, "stderr:\n{stderr}");
    assert!(ours[0].contains(what), "{}", ours[0]);
    assert!(ours[0].contains("(at src/"), "says where: {}", ours[0]);
}

/// A refill of this thread's page cache, with `fault` planted in it.
fn refill_with(fault: InZoneLock) {
    let arena = Arena::builder().region_size(64 << 20).zones(1).build().unwrap();
    plant_in_next_refill(fault);
    let _ = arena.alloc_pages(0, AllocFlags::empty());
    unreachable!("the planted fault did not stop the process");
}

#[test]
fn a_panic_inside_a_zone_lock_aborts_with_one_line() {
    const NAME: &str = "a_panic_inside_a_zone_lock_aborts_with_one_line";
    if is_child(NAME) {
        refill_with(InZoneLock::Panic);
    }
    aborts_with_one_line(NAME, "a panic inside the allocator, in a section that holds a lock");
}

#[test]
fn a_broken_free_list_aborts_with_one_line() {
    const NAME: &str = "a_broken_free_list_aborts_with_one_line";
    if is_child(NAME) {
        refill_with(InZoneLock::BreakFreeList);
    }
    aborts_with_one_line(NAME, "is beyond the");
}
