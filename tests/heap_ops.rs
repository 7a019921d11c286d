//! Seeded random alloc/realloc/free sequences through `ZoneAlloc`, checked
//! against the model the fuzz target `heap_ops` uses.
#![cfg(not(loom))]

#[path = "support/heap_model.rs"]
mod heap_model;

use heap_model::{Harness, Op};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn run(seed: u64, ops: usize) {
    let mut rng = Rng(seed);
    let mut harness = Harness::default();
    for _ in 0..ops {
        let r = rng.next();
        let size = (r >> 16) as u16 >> ((r >> 40) % 16); // many small, some large
        let op = match r % 10 {
            0..=4 => {
                let align_shift = ((r >> 8) % 13) as u8 + if r.is_multiple_of(97) { 8 } else { 0 };
                Op::Alloc { size, align_shift, zero: r.is_multiple_of(7), big: r.is_multiple_of(53) }
            }
            5 | 6 => Op::Realloc { index: (r >> 32) as u16, size, big: r.is_multiple_of(61) },
            7 | 8 => Op::Free { index: (r >> 32) as u16 },
            _ => Op::Check,
        };
        if matches!(op, Op::Check) && r % 50 != 9 {
            continue; // check() walks the whole arena: not too often
        }
        harness.apply(op);
    }
}

#[test]
fn random_heap_operations_match_the_model() {
    for seed in 1..=4 {
        run(seed * 0x9e37_79b9, 3_000);
    }
}

#[test]
fn random_heap_operations_from_two_threads() {
    let threads: Vec<_> = (0..2).map(|t| std::thread::spawn(move || run(0x1234 + t, 3_000))).collect();
    for t in threads {
        t.join().unwrap();
    }
}
