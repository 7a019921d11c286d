//! Drives `ZoneAlloc` (the global allocator, called through the
//! `GlobalAlloc` trait) with arbitrary alloc/realloc/free sequences of
//! arbitrary sizes and alignments, against the model `tests/heap_ops.rs`
//! also uses.
//!
//! RUSTC_BOOTSTRAP=1 cargo fuzz run heap_ops
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/support/heap_model.rs"]
mod heap_model;

use heap_model::{Harness, Op};

fuzz_target!(|ops: Vec<Op>| {
    let mut harness = Harness::default();
    for op in ops.into_iter().take(2_000) {
        harness.apply(op);
    }
    // Dropping the harness frees what is left and runs check().
});
