//! The sized path for comparison with C's `malloc`/`free` through this
//! library: `PAIRS` allocate+free pairs of 64 bytes (align 16) through
//! the global allocator with their layout, as a Rust program makes them.
//!
//!   valgrind --tool=callgrind target/release/examples/pair64 [PAIRS]
//!
//! Prints the elapsed seconds, as `benches/c/server.c pair64` does.
use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;

fn main() {
    let pairs: usize = std::env::args().nth(1).map_or(200_000, |n| n.parse().expect("a count"));
    let start = std::time::Instant::now();
    let layout = Layout::from_size_align(black_box(64), 16).unwrap();
    let alloc = zonealloc::ZoneAlloc;
    for _ in 0..pairs {
        // SAFETY: a non-zero layout; the block is freed once with it.
        unsafe {
            let p = black_box(alloc.alloc(layout));
            alloc.dealloc(p, layout);
        }
    }
    println!("{:.4}", start.elapsed().as_secs_f64());
}
