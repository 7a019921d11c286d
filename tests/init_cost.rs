//! Building costs nothing that grows with the region: a 64 GiB arena adds
//! under 1 MiB of RSS, and never-touched blocks are not written for ZERO.
//! One test per process state, so it runs alone in its own binary.

mod support;

use support::rss_bytes;
use zonealloc::{AllocFlags, Arena};

#[test]
fn a_64_gib_region_costs_no_rss_and_fresh_blocks_are_not_written() {
    let before = rss_bytes();
    let arena = Arena::builder().region_size(64 << 30).build().unwrap();
    let after_build = rss_bytes();
    assert!(after_build - before < 1 << 20, "building added {} KiB of RSS", (after_build - before) >> 10);
    assert_eq!(arena.region().1, 64 << 30);
    assert_eq!(arena.stats().zones.iter().map(|z| z.untouched).sum::<usize>(), 16 << 20);

    // A fresh 4 MiB block with ZERO is known zero: no memset, no RSS.
    let block = arena.alloc_pages(10, AllocFlags::ZERO).unwrap();
    let after_zero = rss_bytes();
    assert!(
        after_zero - after_build < 1 << 20,
        "ZERO of a fresh block touched {} KiB",
        (after_zero - after_build) >> 10
    );
    // SAFETY: the block is ours: 4 MiB, read-only here.
    let bytes = unsafe { std::slice::from_raw_parts(block.as_ptr(), 4 << 20) };
    assert!(bytes.iter().step_by(4096).all(|&b| b == 0));
    // SAFETY: from this arena at order 10.
    unsafe { arena.free_pages(block, 10) }.unwrap();
    arena.check().unwrap();
}
