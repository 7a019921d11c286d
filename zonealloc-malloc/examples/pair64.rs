//! The sized free against the unsized one, in the Rust path: `PAIRS`
//! allocate+free pairs of 64 bytes (align 16) through the global
//! allocator, freed with their layout (`sized`, as a Rust program frees)
//! or without it (`unsized`: `global_malloc` + `global_free`, what C's
//! `malloc`/`free` call in this library, without the C entry points).
//!
//!   valgrind --tool=callgrind target/release/examples/pair64 sized|unsized [PAIRS]
//!
//! Prints the elapsed seconds, as `benches/c/server.c pair64` does.
use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;

use zonealloc::{global_free, global_malloc};

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "sized".into());
    let pairs: usize = args.next().map_or(200_000, |n| n.parse().expect("a count"));
    let layout = Layout::from_size_align(black_box(64), 16).unwrap();
    let alloc = zonealloc::ZoneAlloc;
    let start = std::time::Instant::now();
    match mode.as_str() {
        "sized" => {
            for _ in 0..pairs {
                // SAFETY: a non-zero layout; the block is freed once with it.
                unsafe {
                    let p = black_box(alloc.alloc(layout));
                    alloc.dealloc(p, layout);
                }
            }
        }
        "unsized" => {
            for _ in 0..pairs {
                let p = black_box(global_malloc(layout, false).ptr);
                // SAFETY: a live block of the global arena, freed once.
                assert!(unsafe { global_free(p) });
            }
        }
        _ => panic!("usage: pair64 sized|unsized [PAIRS]"),
    }
    println!("{:.4}", start.elapsed().as_secs_f64());
}
