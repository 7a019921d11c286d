//! Seeded random operations checked against the page model: the same
//! invariants the fuzz target checks, without the fuzzer.

mod support;

use support::page_model::{Harness, Op};
use support::{Rng, small_arena, small_arena_builder, small_arena_with};
use zonealloc::{PcpConfig, Topology};

/// What a run did: blocks grown in place, exact allocations made and
/// resized in place.
fn run(seed: u64, ops: usize, zones: usize, blocks: usize, max_order: u32) -> [usize; 3] {
    let h = run_on(Harness::new(small_arena(zones, blocks, max_order)), seed, ops, max_order);
    let done = [h.grown, h.exact, h.resized];
    h.finish();
    done
}

/// Sums what several runs did.
fn total(runs: impl Iterator<Item = [usize; 3]>) -> [usize; 3] {
    runs.fold([0; 3], |a, b| [a[0] + b[0], a[1] + b[1], a[2] + b[2]])
}

fn run_on(mut h: Harness, seed: u64, ops: usize, max_order: u32) -> Harness {
    let mut rng = Rng(seed);
    for i in 0..ops {
        let op = match rng.below(100) {
            0..=47 => {
                // Mostly small orders, like real callers.
                let order = (rng.below(u64::from(max_order) + 2) as u8).min(rng.below(4) as u8 * 3);
                // Mostly movable, some unmovable and reclaimable, rarely both.
                let mobility = match rng.below(16) {
                    0 => 3,
                    m => [1, 1, 0, 2][m as usize % 4],
                };
                Op::Alloc { order, zero: rng.below(4) == 0, growable: rng.below(8) == 0, mobility }
            }
            48..=85 => Op::Free { index: rng.below(1 << 16) as u16 },
            86..=88 => Op::AllocExact { pages: rng.below(12) as u16 },
            89..=91 => Op::ResizeExact { index: rng.below(1 << 16) as u16, pages: rng.below(16) as u16 },
            92..=94 => Op::Grow { index: rng.below(1 << 16) as u16, by: rng.below(3) as u8 },
            95..=96 => Op::FreeBad { index: rng.below(1 << 16) as u16, kind: rng.below(4) as u8 },
            // Rarely: a compaction drains every cache, which would hide
            // the stranded-pages case the cache runs are there for.
            97 if rng.below(8) == 0 => Op::Compact,
            _ => Op::Check,
        };
        h.apply(op);
        if i % 64 == 0 {
            h.check();
        }
    }
    assert!(h.allocs > ops / 4, "the run must actually allocate ({} allocs)", h.allocs);
    h
}

#[test]
fn random_ops_single_zone() {
    let [grown, exact, resized] = total((0..8).map(|seed| run(seed, 3_000, 1, 2, 6)));
    assert!(grown > 50, "only {grown} blocks grew in place: growth went untested");
    assert!(exact > 200, "only {exact} exact allocations: they went untested");
    assert!(resized > 100, "only {resized} exact allocations resized in place");
}

#[test]
fn random_ops_several_zones_and_pressure() {
    // Two tiny zones: allocations often fail and fall back across zones.
    let [_, exact, resized] = total((100..108).map(|seed| run(seed, 3_000, 2, 1, 5)));
    assert!(exact > 100 && resized > 50, "{exact} exact allocations, {resized} resized");
}

#[test]
fn random_ops_every_invalid_order() {
    // Orders up to max_order + 1 exercise InvalidOrder.
    run(999, 2_000, 3, 1, 3);
}

#[test]
fn random_ops_through_per_thread_caches() {
    // Small batch and high so refills, trims and pages stranded in caches
    // all happen; direct reclaim must return stranded pages before an
    // allocation fails, or the model's predictions would not hold. Frees
    // spread over three types' lists, each trimmed at its own high: 8,000
    // operations give each run more than 10 trims.
    let mut direct_reclaims = 0;
    for seed in 200..208 {
        let arena = small_arena_with(2, 2, 5, PcpConfig::Fixed { batch: 3, high: 8 });
        let h = run_on(Harness::new(arena), seed, 8_000, 5);
        let stats = h.arena.stats();
        assert!(stats.zones.iter().map(|z| z.pcp_refills).sum::<u64>() > 10);
        assert!(stats.zones.iter().map(|z| z.pcp_trims).sum::<u64>() > 10);
        direct_reclaims += stats.reclaim.direct_reclaims;
        h.finish();
    }
    assert!(direct_reclaims > 0, "no allocation needed the caches drained: the stranded case went untested");
}

#[test]
fn random_ops_in_defrag_mode() {
    // Fallbacks take only whole free pageblocks (here, max-order blocks)
    // until the slow path lets one split a foreign pageblock: no
    // allocation the model says fits may fail for it, with or without
    // caches (whose refills take the same rule).
    let mut fallbacks = [0, 0];
    for seed in 300..308 {
        let pcp = if seed % 2 == 0 { PcpConfig::Disabled } else { PcpConfig::Fixed { batch: 3, high: 8 } };
        let arena = small_arena_builder(2, 2, 5, pcp).defrag_mode(true).build().unwrap();
        let h = run_on(Harness::new(arena), seed, 3_000, 5);
        let stats = h.arena.stats();
        fallbacks[0] += stats.zones.iter().map(|z| z.fallbacks).sum::<u64>();
        fallbacks[1] += stats.zones.iter().map(|z| z.fallbacks_fragmenting).sum::<u64>();
        h.finish();
    }
    assert!(fallbacks[1] > 0 && fallbacks[0] > fallbacks[1], "fallbacks (of them fragmenting): {fallbacks:?}");
}

#[test]
fn random_ops_on_three_nodes() {
    // Three simulated NUMA nodes of one tiny zone each (on a two-CPU
    // machine one has no CPUs): allocations fall back across nodes by
    // distance, and the model's predictions hold as they do across zones.
    let mut misses = 0;
    for seed in 400..406 {
        let pcp = if seed % 2 == 0 { PcpConfig::Disabled } else { PcpConfig::Fixed { batch: 3, high: 8 } };
        let topology = Topology::simulated(3).unwrap();
        let arena = small_arena_builder(3, 1, 5, pcp).zones(1).topology(topology).build().unwrap();
        let h = run_on(Harness::new(arena), seed, 3_000, 5);
        let stats = h.arena.stats();
        assert_eq!(stats.nodes.len(), 3);
        misses += stats.nodes.iter().map(|n| n.numa_miss).sum::<u64>();
        h.finish();
    }
    assert!(misses > 0, "no allocation fell back to another node: the node zonelist went untested");
}
