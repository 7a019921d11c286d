//! Seeded random operations checked against the page model: the same
//! invariants the fuzz target checks, without the fuzzer.

mod support;

use support::page_model::{Harness, Op};
use support::{Rng, small_arena};

fn run(seed: u64, ops: usize, zones: usize, blocks: usize, max_order: u32) {
    let mut h = Harness::new(small_arena(zones, blocks, max_order));
    let mut rng = Rng(seed);
    for i in 0..ops {
        let op = match rng.below(100) {
            0..=49 => {
                // Mostly small orders, like real callers.
                let order = (rng.below(u64::from(max_order) + 2) as u8).min(rng.below(4) as u8 * 3);
                Op::Alloc { order, zero: rng.below(4) == 0 }
            }
            50..=89 => Op::Free { index: rng.below(1 << 16) as u16 },
            90..=97 => Op::FreeBad { index: rng.below(1 << 16) as u16, kind: rng.below(4) as u8 },
            _ => Op::Check,
        };
        h.apply(op);
        if i % 64 == 0 {
            h.check();
        }
    }
    assert!(h.allocs > ops / 4, "the run must actually allocate ({} allocs)", h.allocs);
    h.finish();
}

#[test]
fn random_ops_single_zone() {
    for seed in 0..8 {
        run(seed, 3_000, 1, 2, 6);
    }
}

#[test]
fn random_ops_several_zones_and_pressure() {
    // Two tiny zones: allocations often fail and fall back across zones.
    for seed in 100..108 {
        run(seed, 3_000, 2, 1, 5);
    }
}

#[test]
fn random_ops_every_invalid_order() {
    // Orders up to max_order + 1 exercise InvalidOrder.
    run(999, 2_000, 3, 1, 3);
}
