//! The stress-highalloc scenario of issue 15, with grouping by mobility on
//! and off (`ArenaBuilder::group_by_mobility`):
//!
//! fill a 512 MiB arena with order-0 pages, 1 in 10 plain (unmovable) and
//! the rest `MOVABLE`, interleaved at random; free every movable page; then
//! allocate order-9 (2 MiB) blocks until none is left. Prints the share of
//! the free memory that came back as order-9 blocks, the pageblocks left
//! mixed, and the fallbacks counted on the way.
//!
//! cargo run --release --example highalloc [-- --seed N --unmovable-per-mille M]

use std::ptr::NonNull;

use zonealloc::{AllocFlags, Arena};

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

fn run(grouping: bool, seed: u64, unmovable_per_mille: u64) -> Outcome {
    let arena = Arena::builder()
        .region_size(512 << 20)
        .zones(1)
        .background_reclaim(false)
        .group_by_mobility(grouping)
        .build()
        .expect("arena");
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

fn main() {
    let seed = arg("--seed", 1);
    let per_mille = arg("--unmovable-per-mille", 100);
    println!("stress-highalloc: 512 MiB, order-0 fill, {per_mille}/1000 unmovable, seed {seed}");
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
}
