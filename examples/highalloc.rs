//! The anti-fragmentation scenarios of issue 15, each with grouping by
//! mobility on and off (`ArenaBuilder::group_by_mobility`), in a 512 MiB
//! arena:
//!
//! 1. stress-highalloc: fill with order-0 pages, 1 in 10 plain
//!    (unmovable) and the rest `MOVABLE`, interleaved at random; free every
//!    movable page; allocate order-9 (2 MiB) blocks until none is left.
//! 2. compaction: fill with order-0 pages, 1 in 20 unmovable and the rest
//!    owned by a `Movable` owner; free movable pages at random until they
//!    hold 60% of the memory (unmovable 5%); `compact()`; the share of the
//!    free memory then in free order-9 blocks, the time and pages moved.
//! 3. a long mixed workload: random orders 0-3 and types (unmovable 10%
//!    and 40% of the allocations in turn, reclaimable 10%), with a live set
//!    of 85% of the memory churned 8 times over; the mixed pageblocks left
//!    and the fallbacks that made them. Run four ways: without grouping;
//!    with it; with the movable blocks owned (so compaction can move
//!    them); owned and in defrag mode (`ArenaBuilder::defrag_mode`).
//!
//! cargo run --release --example highalloc [-- --seed N]

use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use zonealloc::{AllocFlags, Arena, Movable};

/// splitmix64: seedable, so a run replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// What one run found.
struct Outcome {
    filled: usize,
    unmovable: usize,
    free_after: usize,
    order9: usize,
    mixed: usize,
    fallbacks: u64,
    fragmenting: u64,
}

fn arena(grouping: bool) -> Arena {
    arena_with(grouping, false)
}

fn arena_with(grouping: bool, defrag: bool) -> Arena {
    Arena::builder()
        .region_size(512 << 20)
        .zones(1)
        .background_reclaim(false)
        .group_by_mobility(grouping)
        .defrag_mode(defrag)
        .build()
        .expect("arena")
}

fn run(grouping: bool, seed: u64, unmovable_per_mille: u64) -> Outcome {
    let arena = arena(grouping);
    let mut rng = Rng(seed);
    let fill = AllocFlags::NORETRY | AllocFlags::NOWARN;
    let (mut movable, mut unmovable): (Vec<NonNull<u8>>, Vec<NonNull<u8>>) = (Vec::new(), Vec::new());
    loop {
        let is_unmovable = rng.next() % 1000 < unmovable_per_mille;
        let flags = if is_unmovable { fill } else { fill | AllocFlags::MOVABLE };
        match arena.alloc_pages(0, flags) {
            Ok(page) if is_unmovable => unmovable.push(page),
            Ok(page) => movable.push(page),
            Err(_) => break,
        }
    }
    let filled = movable.len() + unmovable.len();
    for page in movable.drain(..) {
        // SAFETY: allocated above at order 0, freed once.
        unsafe { arena.free_pages(page, 0) }.expect("free");
    }
    arena.drain_pcp();
    let free_after = arena.stats().zones.iter().map(|z| z.free).sum::<usize>();
    let mut huge = Vec::new();
    while let Ok(block) = arena.alloc_pages(9, fill) {
        huge.push(block);
    }
    let stats = arena.stats();
    let info = arena.pagetypeinfo();
    arena.check().expect("consistent");
    Outcome {
        filled,
        unmovable: unmovable.len(),
        free_after,
        order9: huge.len(),
        mixed: info.mixed(),
        fallbacks: stats.zones.iter().map(|z| z.fallbacks).sum(),
        fragmenting: stats.zones.iter().map(|z| z.fallbacks_fragmenting).sum(),
    }
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

/// An owner that keeps its blocks' addresses and orders (and each one's
/// index) and moves any it is asked to.
#[derive(Default)]
struct Owner(Mutex<Books>);

/// The blocks (address, order) and each address's index among them.
type Books = (Vec<(usize, u32)>, HashMap<usize, usize>);

impl Owner {
    fn push(&self, block: usize, order: u32) {
        let mut pages = self.0.lock().unwrap();
        let (list, index) = &mut *pages;
        index.insert(block, list.len());
        list.push((block, order));
    }

    fn len(&self) -> usize {
        self.0.lock().unwrap().0.len()
    }

    /// Drops the block at `i` of the owner's books; its address and order.
    fn take(&self, i: usize) -> (usize, u32) {
        let mut pages = self.0.lock().unwrap();
        let (list, index) = &mut *pages;
        let block = list.swap_remove(i);
        index.remove(&block.0);
        if let Some(&(moved, _)) = list.get(i) {
            index.insert(moved, i);
        }
        block
    }

    /// Drops a random block from the owner's books.
    fn take_random(&self, rng: &mut Rng) -> (usize, u32) {
        let i = (rng.next() % self.len() as u64) as usize;
        self.take(i)
    }
}

impl Movable for Owner {
    fn migrate(&self, from: NonNull<u8>, to: NonNull<u8>, order: u32) -> bool {
        let mut pages = self.0.lock().unwrap();
        let (list, index) = &mut *pages;
        let Some(slot) = index.remove(&(from.as_ptr() as usize)) else { return false };
        // SAFETY: `from` is our block, `to` a fresh one of the same order.
        unsafe { std::ptr::copy_nonoverlapping(from.as_ptr(), to.as_ptr(), 4096 << order) };
        list[slot].0 = to.as_ptr() as usize;
        index.insert(to.as_ptr() as usize, slot);
        true
    }
}

/// Free 2 MiB blocks (a 4 MiB one counts twice) and all free pages.
fn huge_and_free(arena: &Arena) -> (usize, usize) {
    let z = &arena.stats().zones[0];
    (z.free_blocks.iter().enumerate().skip(9).map(|(o, n)| n << (o - 9)).sum(), z.free)
}

/// Scenario 2; prints one line.
fn compaction(grouping: bool, seed: u64) {
    let arena = arena(grouping);
    let owner = Arc::new(Owner::default());
    let handle = arena.register_movable(owner.clone());
    let mut rng = Rng(seed);
    let fill = AllocFlags::NORETRY | AllocFlags::NOWARN;
    let mut unmovable = Vec::new();
    loop {
        let plain = rng.next().is_multiple_of(20);
        let page = if plain { arena.alloc_pages(0, fill) } else { handle.alloc_pages(0, fill) };
        match page {
            Ok(page) if plain => unmovable.push(page),
            Ok(page) => owner.push(page.as_ptr() as usize, 0),
            Err(_) => break,
        }
    }
    let managed = arena.stats().zones[0].managed;
    // Free random movable pages until they hold 60% of the memory.
    while owner.len() > managed * 60 / 100 {
        let (page, order) = owner.take_random(&mut rng);
        // SAFETY: a block of ours at its order, freed once.
        unsafe { arena.free_pages(NonNull::new(page as *mut u8).unwrap(), order) }.expect("free");
    }
    arena.drain_pcp();
    let (huge_before, _) = huge_and_free(&arena);
    let report = arena.compact();
    let (huge_after, free) = huge_and_free(&arena);
    arena.check().expect("consistent");
    let movable = owner.len();
    println!(
        "{:<10} {:>9.1}% {:>10.1}% {:>14} {:>14} {:>6.1}% {:>13} {:>9.1} ms",
        if grouping { "on" } else { "off" },
        100.0 * movable as f64 / managed as f64,
        100.0 * unmovable.len() as f64 / managed as f64,
        huge_before,
        format!("{huge_after} of {}", free >> 9),
        100.0 * huge_after as f64 / (free >> 9).max(1) as f64,
        report.migrated_pages,
        report.elapsed.as_secs_f64() * 1e3,
    );
    drop(handle);
}

/// How scenario 3 runs.
#[derive(Clone, Copy)]
struct MixedRun {
    grouping: bool,
    /// Movable blocks come from a `Movable` owner's handle.
    owned: bool,
    defrag: bool,
}

/// Scenario 3; prints one line.
fn mixed_workload(run: MixedRun, seed: u64) {
    let arena = arena_with(run.grouping, run.defrag);
    let owner = Arc::new(Owner::default());
    let handle = run.owned.then(|| arena.register_movable(owner.clone()));
    let mut rng = Rng(seed);
    let flags = AllocFlags::NORETRY | AllocFlags::NOWARN;
    let managed = arena.stats().zones[0].managed;
    // Unmovable and reclaimable blocks, and movable ones when not owned.
    let mut live: Vec<(NonNull<u8>, u32)> = Vec::new();
    let mut live_pages = 0;
    let mut allocated = 0;
    let start = std::time::Instant::now();
    while allocated < 8 * managed {
        let nr_live = live.len() + owner.len();
        if live_pages < managed * 85 / 100 || rng.next().is_multiple_of(2) {
            let order = (rng.next() % 4) as u32;
            // The unmovable share moves between phases (10% and 40%), so
            // that each type in turn needs pageblocks another one holds.
            let unmovable_tenths = if (allocated / managed).is_multiple_of(2) { 1 } else { 4 };
            let kind = rng.next() % 10;
            let extra = match kind {
                k if k < unmovable_tenths => AllocFlags::empty(),
                k if k == unmovable_tenths => AllocFlags::RECLAIMABLE,
                _ => AllocFlags::MOVABLE,
            };
            let block = match &handle {
                Some(handle) if extra == AllocFlags::MOVABLE => handle.alloc_pages(order, flags).map(|block| {
                    owner.push(block.as_ptr() as usize, order);
                }),
                _ => arena.alloc_pages(order, flags | extra).map(|block| live.push((block, order))),
            };
            if block.is_ok() {
                live_pages += 1 << order;
                allocated += 1 << order;
            }
        } else if nr_live > 0 {
            let i = (rng.next() % nr_live as u64) as usize;
            let (block, order) = if i < live.len() {
                live.swap_remove(i)
            } else {
                let (block, order) = owner.take(i - live.len());
                (NonNull::new(block as *mut u8).unwrap(), order)
            };
            // SAFETY: ours at this order, freed once.
            unsafe { arena.free_pages(block, order) }.expect("free");
            live_pages -= 1 << order;
        }
    }
    let elapsed = start.elapsed();
    arena.drain_pcp();
    let info = arena.pagetypeinfo();
    let stats = arena.stats();
    let z = &stats.zones[0];
    let used: usize = info.zones[0].pageblocks.iter().sum();
    let mode = match (run.grouping, run.owned, run.defrag) {
        (false, ..) => "off",
        (true, false, _) => "on",
        (true, true, false) => "on, owned",
        (true, true, true) => "defrag",
    };
    println!(
        "{:<10} {:>10} {:>8} {:>9} {:>10} {:>10} {:>8} {:>9} {:>8.0} ms",
        mode,
        used,
        info.mixed(),
        info.polluted(),
        z.fallbacks,
        z.fallbacks_fragmenting,
        z.pageblocks_claimed,
        stats.compaction.migrated_pages,
        elapsed.as_secs_f64() * 1e3,
    );
    arena.check().expect("consistent");
    drop(handle);
}

fn main() {
    let seed = arg("--seed", 1);
    let per_mille = arg("--unmovable-per-mille", 100);
    println!("1. stress-highalloc: 512 MiB, order-0 fill, {per_mille}/1000 unmovable, seed {seed}");
    println!(
        "{:<10} {:>8} {:>9} {:>11} {:>13} {:>9} {:>6} {:>10} {:>12}",
        "grouping",
        "filled",
        "unmovable",
        "free after",
        "order-9 got",
        "possible",
        "share",
        "fallbacks",
        "mixed blocks"
    );
    for grouping in [true, false] {
        let o = run(grouping, seed, per_mille);
        let possible = o.free_after >> 9;
        println!(
            "{:<10} {:>8} {:>9} {:>11} {:>13} {:>9} {:>5.1}% {:>10} {:>12}",
            if grouping { "on" } else { "off" },
            o.filled,
            o.unmovable,
            o.free_after,
            o.order9,
            possible,
            100.0 * o.order9 as f64 / possible.max(1) as f64,
            format!("{} ({})", o.fallbacks, o.fragmenting),
            o.mixed,
        );
    }
    println!("\n2. compact(): 60% movable (owned), 5% unmovable, the rest freed at random, seed {seed}");
    println!(
        "{:<10} {:>10} {:>11} {:>14} {:>14} {:>7} {:>13} {:>12}",
        "grouping", "movable", "unmovable", "order-9 before", "after", "share", "pages moved", "time"
    );
    for grouping in [true, false] {
        compaction(grouping, seed);
    }
    println!(
        "\n3. long mixed workload: orders 0-3, unmovable 10% and 40% in turn, 10% reclaimable, 85% of memory live, 8x churn"
    );
    println!(
        "{:<10} {:>10} {:>8} {:>9} {:>10} {:>10} {:>8} {:>9} {:>11}",
        "grouping", "pageblocks", "mixed", "polluted", "fallbacks", "fragment.", "claimed", "migrated", "time"
    );
    for (grouping, owned, defrag) in
        [(false, false, false), (true, false, false), (true, true, false), (true, true, true)]
    {
        mixed_workload(MixedRun { grouping, owned, defrag }, seed);
    }
}
