//! Compaction: owned blocks moved by their owners with their contents
//! intact, pinned blocks left, frees racing the moves, handles dropped
//! while compaction runs, direct compaction and kcompactd serving
//! high-order requests, and bad frees of owned blocks refused.

use std::collections::HashSet;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zonealloc::{AllocFlags, Arena, FreeError, Movable};

/// An owner keeping its blocks' addresses in slots; a block's first word
/// holds its slot number, the rest a byte pattern of it.
#[derive(Default)]
struct Table {
    slots: Mutex<Vec<Option<(usize, u32)>>>,
    pinned: Mutex<HashSet<usize>>,
    migrations: AtomicUsize,
    /// Calls of `migrate`, moved or not.
    calls: AtomicUsize,
    /// Free `from` from inside `migrate` (and refuse the move): the owner
    /// dropping a block while compaction moves it.
    free_inside: Mutex<Option<&'static Arena>>,
}

impl Movable for Table {
    fn migrate(&self, from: NonNull<u8>, to: NonNull<u8>, order: u32) -> bool {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut slots = self.slots.lock().unwrap();
        let addr = from.as_ptr() as usize;
        let Some(slot) = slots.iter().position(|s| s.map(|(a, _)| a) == Some(addr)) else { return false };
        if let Some(arena) = *self.free_inside.lock().unwrap() {
            slots[slot] = None;
            // SAFETY: ours at this order; not used again.
            assert_eq!(unsafe { arena.free_pages(from, order) }, Ok(()), "a free during the move is taken");
            return false;
        }
        if self.pinned.lock().unwrap().contains(&slot) {
            return false;
        }
        assert_eq!(slots[slot].unwrap().1, order);
        // SAFETY: `from` is our block of this order, `to` a fresh one.
        unsafe { std::ptr::copy_nonoverlapping(from.as_ptr(), to.as_ptr(), 4096 << order) };
        slots[slot] = Some((to.as_ptr() as usize, order));
        self.migrations.fetch_add(1, Ordering::Relaxed);
        true
    }
}

fn fill(ptr: NonNull<u8>, order: u32, slot: usize) {
    // SAFETY: a block of ours of this order.
    unsafe {
        std::ptr::write_bytes(ptr.as_ptr(), slot as u8, 4096 << order);
        ptr.as_ptr().cast::<usize>().write(slot);
    }
}

fn intact(ptr: usize, order: u32, slot: usize) -> bool {
    // SAFETY: the owner's current block for this slot.
    let bytes = unsafe { std::slice::from_raw_parts(ptr as *const u8, 4096 << order) };
    bytes[..8] == slot.to_ne_bytes() && bytes[8..].iter().all(|&b| b == slot as u8)
}

impl Table {
    fn alloc(&self, handle: &zonealloc::MovableHandle<'_>, order: u32, flags: AllocFlags) -> Option<usize> {
        let ptr = handle.alloc_pages(order, flags | AllocFlags::NOWARN).ok()?;
        let mut slots = self.slots.lock().unwrap();
        let slot = slots.len();
        fill(ptr, order, slot);
        slots.push(Some((ptr.as_ptr() as usize, order)));
        Some(slot)
    }

    fn free(&self, arena: &Arena, slot: usize) {
        let (addr, order) = self.slots.lock().unwrap()[slot].take().expect("live slot");
        // SAFETY: ours at this order; not used again.
        unsafe { arena.free_pages(NonNull::new(addr as *mut u8).unwrap(), order) }.expect("valid free");
    }

    fn free_all(&self, arena: &Arena) {
        let live: Vec<usize> = {
            let slots = self.slots.lock().unwrap();
            (0..slots.len()).filter(|&s| slots[s].is_some()).collect()
        };
        for slot in live {
            self.free(arena, slot);
        }
    }

    fn check_contents(&self) -> usize {
        let slots = self.slots.lock().unwrap();
        for (slot, s) in slots.iter().enumerate() {
            if let Some((addr, order)) = *s {
                assert!(intact(addr, order, slot), "slot {slot} lost its contents");
            }
        }
        slots.iter().flatten().count()
    }
}

fn arena(mib: usize) -> Arena {
    Arena::builder().region_size(mib << 20).zones(1).background_reclaim(false).build().unwrap()
}

/// Order-9 blocks free on the lists.
fn huge_free(arena: &Arena) -> usize {
    arena.stats().zones.iter().map(|z| z.free_blocks[9..].iter().enumerate().map(|(i, n)| n << i).sum::<usize>()).sum()
}

/// Fills `mib` of movable pages through `table`, then frees all but every
/// `keep`th: the kept pages sit in every pageblock.
fn fragment(arena: &Arena, table: &Table, handle: &zonealloc::MovableHandle<'_>, pages: usize, keep: usize) {
    for _ in 0..pages {
        table.alloc(handle, 0, AllocFlags::NORETRY).expect("room");
    }
    for slot in 0..pages {
        if slot % keep != 0 {
            table.free(arena, slot);
        }
    }
    arena.drain_pcp();
}

/// Holds every free order-9 block (unmovable, never moved), so that only
/// compaction can make a new one.
fn ballast(arena: &Arena) -> Vec<NonNull<u8>> {
    let mut held = Vec::new();
    while huge_free(arena) > 0 {
        held.push(arena.alloc_pages(9, AllocFlags::NORETRY | AllocFlags::NOWARN).expect("a free order-9 block"));
    }
    held
}

fn drop_ballast(arena: &Arena, held: Vec<NonNull<u8>>) {
    for block in held {
        // SAFETY: ours, order 9, not used again.
        unsafe { arena.free_pages(block, 9) }.unwrap();
    }
}

#[test]
fn compaction_moves_blocks_with_their_contents_and_frees_whole_huge_pages() {
    let arena = arena(64);
    let table = Arc::new(Table::default());
    let handle = arena.register_movable(table.clone());
    // 48 MiB of pages, one in 16 kept: 768 pages in 24 pageblocks.
    fragment(&arena, &table, &handle, 12_288, 16);
    let before = huge_free(&arena);
    let free = arena.stats().zones[0].free;
    let report = arena.compact();
    assert_eq!(report.migrated_pages, table.migrations.load(Ordering::Relaxed) as u64);
    assert!(report.migrated_pages > 0 && report.failed == 0, "{report:?}");
    assert_eq!(table.check_contents(), 768);
    arena.check().unwrap();
    let after = huge_free(&arena);
    assert_eq!(arena.stats().zones[0].free, free, "compaction frees what it moves and nothing else");
    // 768 pages fit in 2 pageblocks: at least 90% of the rest come back.
    assert!(after * 512 * 10 >= (free - 1024) * 9, "order-9 blocks {before} -> {after} of {free} free pages");
    let stats = arena.stats().compaction;
    assert_eq!(stats.migrated_pages, report.migrated_pages);
    assert_eq!(stats.isolated, report.isolated);
    table.free_all(&arena);
    arena.check().unwrap();
}

#[test]
fn pinned_blocks_stay_where_they_are() {
    let arena = arena(16);
    let table = Arc::new(Table::default());
    let handle = arena.register_movable(table.clone());
    fragment(&arena, &table, &handle, 2048, 8); // 256 kept
    let pinned: HashSet<usize> = (0..2048).step_by(64).collect(); // 32 of them
    *table.pinned.lock().unwrap() = pinned.clone();
    let where_before: Vec<_> = table.slots.lock().unwrap().clone();
    let report = arena.compact();
    let where_after = table.slots.lock().unwrap().clone();
    for slot in &pinned {
        assert_eq!(where_after[*slot], where_before[*slot], "pinned slot {slot} moved");
    }
    let (calls, moved) = (table.calls.load(Ordering::Relaxed), table.migrations.load(Ordering::Relaxed));
    assert_eq!(report.failed as usize, calls - moved, "every refusal counted");
    assert_eq!(report.migrated_pages as usize, moved);
    assert!(report.failed >= 1);
    assert_eq!(table.check_contents(), 256);
    arena.check().unwrap();
}

#[test]
fn owned_blocks_refuse_bad_frees() {
    let arena = arena(16);
    let table = Arc::new(Table::default());
    let handle = arena.register_movable(table.clone());
    let slot = table.alloc(&handle, 2, AllocFlags::empty()).unwrap();
    let (addr, _) = table.slots.lock().unwrap()[slot].unwrap();
    let ptr = NonNull::new(addr as *mut u8).unwrap();
    // SAFETY: refused frees do not touch the block.
    assert_eq!(unsafe { arena.free_pages(ptr, 1) }, Err(FreeError::WrongOrder { addr, given: 1, actual: 2 }));
    table.free(&arena, slot);
    // SAFETY: refused: already free.
    assert_eq!(unsafe { arena.free_pages(ptr, 2) }, Err(FreeError::DoubleFree { addr }));
    assert_eq!(
        handle.alloc_pages(0, AllocFlags::RECLAIMABLE),
        Err(zonealloc::AllocError::ConflictingMobility),
        "a movable block cannot be reclaimable too"
    );
    arena.check().unwrap();
}

#[test]
fn a_free_during_the_move_is_done_when_the_move_ends() {
    let arena: &'static Arena = Box::leak(Box::new(arena(16)));
    let table = Arc::new(Table::default());
    let handle = arena.register_movable(table.clone());
    fragment(arena, &table, &handle, 1024, 4); // 256 kept
    let free = arena.stats().zones[0].free;
    *table.free_inside.lock().unwrap() = Some(arena);
    let report = arena.compact();
    let calls = table.calls.load(Ordering::Relaxed);
    assert!(calls > 0);
    let left = table.check_contents();
    assert_eq!(left, 256 - calls, "each block its owner was asked to move, it freed");
    assert_eq!(report.migrated_pages, 0);
    assert_eq!(arena.stats().zones[0].free, free + calls, "freed once each, nothing lost");
    arena.check().unwrap();
}

#[test]
fn compaction_races_frees_and_allocations() {
    let arena = arena(32);
    let table = Arc::new(Table::default());
    let handle = arena.register_movable(table.clone());
    fragment(&arena, &table, &handle, 4096, 4);
    let stop = AtomicBool::new(false);
    let compactions = AtomicUsize::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                arena.compact();
                compactions.fetch_add(1, Ordering::Relaxed);
            }
        });
        // Free the kept pages and allocate new ones while compaction runs.
        let deadline = Instant::now() + Duration::from_secs(10);
        for round in 0..8 {
            for slot in (round * 128..(round + 1) * 128).map(|i| i * 4 % 4096) {
                if table.slots.lock().unwrap()[slot].is_some() {
                    table.free(&arena, slot);
                }
            }
            for _ in 0..128 {
                table.alloc(&handle, 0, AllocFlags::NORETRY).expect("room");
            }
            table.check_contents();
        }
        // At least one compaction overlapped the churn.
        while compactions.load(Ordering::Relaxed) < 2 && Instant::now() < deadline {
            std::thread::yield_now();
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert!(compactions.load(Ordering::Relaxed) >= 2);
    assert_eq!(table.check_contents(), 1024);
    arena.check().unwrap();
}

#[test]
fn handles_dropped_while_compaction_runs() {
    let arena = arena(32);
    let stop = AtomicBool::new(false);
    // One owner per handle: after its handle is dropped, an owner is never
    // called again.
    let tables: Vec<Arc<Table>> = (0..20).map(|_| Arc::new(Table::default())).collect();
    let calls_at_drop: Vec<usize> = std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                arena.compact();
            }
        });
        let calls = tables
            .iter()
            .map(|table| {
                let handle = arena.register_movable(table.clone());
                for _ in 0..256 {
                    table.alloc(&handle, 0, AllocFlags::NORETRY).expect("room");
                }
                for slot in (0..256).filter(|s| s % 2 == 0) {
                    table.free(&arena, slot);
                }
                drop(handle); // unregisters and waits for a migrate in progress
                table.calls.load(Ordering::Relaxed)
            })
            .collect();
        stop.store(true, Ordering::Relaxed);
        calls
    });
    let report = arena.compact();
    assert_eq!(report.migrated_pages, 0, "no owner is registered any more");
    for (table, calls) in tables.iter().zip(calls_at_drop) {
        assert_eq!(table.calls.load(Ordering::Relaxed), calls, "an owner was called after its handle was dropped");
        // Blocks of dropped handles stay allocated, where they were last moved.
        assert_eq!(table.check_contents(), 128);
        table.free_all(&arena);
    }
    arena.check().unwrap();
}

/// Owned pages in every pageblock of `arena` (one in 32 of all but 512
/// pages kept) and every free order-9 block held: no order-9 request can
/// be served without compaction. The owner, its handle, the blocks held and
/// the pages the owner allocated.
fn no_huge_page_free(arena: &Arena) -> (Arc<Table>, zonealloc::MovableHandle<'_>, Vec<NonNull<u8>>, usize) {
    let table = Arc::new(Table::default());
    let handle = arena.register_movable(table.clone());
    let pages = arena.stats().zones[0].free - 512;
    fragment(arena, &table, &handle, pages, 32);
    (table, handle, ballast(arena), pages)
}

#[test]
fn direct_compaction_serves_a_huge_page_request() {
    let arena = arena(32);
    let (table, _handle, held, _) = no_huge_page_free(&arena);
    let block = arena.alloc_pages(9, AllocFlags::NORETRY | AllocFlags::NOWARN).expect("compaction made room");
    let stats = arena.stats().compaction;
    assert!(stats.stall >= 1 && stats.success >= 1, "{stats:?}");
    assert!(stats.migrated_pages > 0);
    table.check_contents();
    // SAFETY: ours, order 9.
    unsafe { arena.free_pages(block, 9) }.unwrap();
    drop_ballast(&arena, held);
    arena.check().unwrap();
}

#[test]
fn failed_compaction_is_deferred() {
    let arena = arena(32);
    let (table, _handle, held, pages) = no_huge_page_free(&arena);
    *table.pinned.lock().unwrap() = (0..pages).collect(); // nothing moves
    let flags = AllocFlags::NORETRY | AllocFlags::NOWARN;
    for _ in 0..4 {
        assert!(arena.alloc_pages(9, flags).is_err());
    }
    let stats = arena.stats().compaction;
    assert!(stats.fail >= 1 && stats.success == 0, "{stats:?}");
    assert!(stats.deferred >= 1, "after a failure the zone is skipped: {stats:?}");
    assert_eq!(stats.migrated_pages, 0);
    drop_ballast(&arena, held);
    arena.check().unwrap();
}

/// Fills all the memory with owned pages, then frees all but one in 32
/// (and returns the caches): every pageblock keeps pages in use.
fn fill_keeping_one_in_32(arena: &Arena, table: &Table, handle: &zonealloc::MovableHandle<'_>) {
    let mut pages = 0;
    while table.alloc(handle, 0, AllocFlags::NORETRY).is_some() {
        pages += 1;
    }
    for slot in (0..pages).filter(|s| s % 32 != 0) {
        table.free(arena, slot);
    }
    arena.drain_pcp();
}

#[test]
fn kcompactd_compacts_after_an_atomic_huge_page_request_fails() {
    let arena = Arena::builder().region_size(32 << 20).zones(1).build().unwrap();
    let table = Arc::new(Table::default());
    let handle = arena.register_movable(table.clone());
    // No order-9 block is free, and order-0 requests never compact.
    fill_keeping_one_in_32(&arena, &table, &handle);
    assert_eq!(huge_free(&arena), 0);
    // A request that cannot wait never compacts; it wakes kcompactd,
    // whose work may even be done before the request's own retry.
    let atomic = AllocFlags::ATOMIC | AllocFlags::NOWARN;
    let block = arena.alloc_pages(9, atomic).or_else(|_| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while huge_free(&arena) == 0 && Instant::now() < deadline {
            std::thread::yield_now();
        }
        arena.alloc_pages(9, atomic)
    });
    let stats = arena.stats().compaction;
    assert!(stats.kcompactd_wakes >= 1 && stats.migrated_pages > 0, "{stats:?}");
    assert_eq!(stats.stall, 0, "no direct compaction ran");
    let block = block.expect("kcompactd made room");
    // SAFETY: ours, order 9.
    unsafe { arena.free_pages(block, 9) }.unwrap();
    table.check_contents();
    table.free_all(&arena);
    arena.check().unwrap();
}

/// Order-9 blocks free on the lists of zone `z`.
fn huge_free_in(arena: &Arena, z: usize) -> usize {
    arena.stats().zones[z].free_blocks[9..].iter().enumerate().map(|(i, n)| n << i).sum()
}

#[test]
fn a_nodes_kcompactd_compacts_only_that_nodes_zones() {
    let arena = Arena::builder()
        .region_size(32 << 20)
        .zones(1)
        .topology(zonealloc::Topology::simulated(2).unwrap())
        .build()
        .unwrap();
    let table = Arc::new(Table::default());
    let handle = arena.register_movable(table.clone());
    // Both nodes (the local one first, then the fallback): no order-9
    // block free on either.
    fill_keeping_one_in_32(&arena, &table, &handle);
    assert_eq!((huge_free_in(&arena, 0), huge_free_in(&arena, 1)), (0, 0));
    // An atomic request for node 1 alone wakes node 1's kcompactd.
    let atomic = AllocFlags::ATOMIC | AllocFlags::THISNODE | AllocFlags::NOWARN;
    let block = arena.alloc_pages_node(1, 9, atomic).or_else(|_| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while huge_free_in(&arena, 1) == 0 && Instant::now() < deadline {
            std::thread::yield_now();
        }
        arena.alloc_pages_node(1, 9, atomic)
    });
    let block = block.expect("node 1's kcompactd made room");
    assert_eq!(arena.node_of(block), Some(1));
    let stats = arena.stats().compaction;
    assert_eq!((stats.kcompactd_wakes, stats.stall), (1, 0), "{stats:?}");
    assert_eq!(huge_free_in(&arena, 0), 0, "node 0 was compacted for node 1");
    // SAFETY: ours, order 9.
    unsafe { arena.free_pages(block, 9) }.unwrap();
    table.check_contents();
    table.free_all(&arena);
    arena.check().unwrap();
}

/// An 8 MiB zone of four pageblocks (max order 9): the first full of plain
/// pages, the other three of owned pages of which every other one is
/// freed (768 free pages, no free pageblock). Then one more plain page
/// with `flags`: its type's pageblock is full. Returns the arena's mixed
/// pageblocks, the pages compaction moved, and the new page's pageblock.
fn unmovable_page_among_holes(defrag: bool, owners: bool, flags: AllocFlags) -> (usize, u64, usize) {
    let arena = Arena::builder()
        .region_size(8 << 20)
        .zones(1)
        .max_order(9)
        .watermarks(zonealloc::WatermarkConfig::PerZone(zonealloc::Watermarks { min: 0, low: 0, high: 0 }))
        .pcp(zonealloc::PcpConfig::Disabled)
        .background_reclaim(false)
        .defrag_mode(defrag)
        .build()
        .unwrap();
    let base = arena.region().0.as_ptr() as usize;
    let plain: Vec<NonNull<u8>> =
        (0..512).map(|_| arena.alloc_pages(0, AllocFlags::NORETRY).expect("the first pageblock")).collect();
    assert!(plain.iter().all(|p| (p.as_ptr() as usize - base) / 4096 < 512));
    let table = Arc::new(Table::default());
    let handle = arena.register_movable(table.clone());
    fragment(&arena, &table, &handle, 1536, 2);
    if !owners {
        drop(handle);
    }
    assert_eq!((arena.stats().zones[0].free, huge_free(&arena), arena.pagetypeinfo().mixed()), (768, 0, 0));
    let page = arena.alloc_pages(0, flags).expect("a page, fragmenting if it must");
    arena.check().unwrap();
    assert_eq!(table.check_contents(), 768);
    let mixed = arena.pagetypeinfo().mixed();
    let migrated = arena.stats().compaction.migrated_pages;
    (mixed, migrated, (page.as_ptr() as usize - base) / 4096 / 512)
}

#[test]
fn defrag_mode_compacts_a_pageblock_free_instead_of_mixing_one() {
    // Without defrag mode the plain page claims a movable pageblock with
    // its 256 movable pages in it.
    let (mixed, migrated, _) = unmovable_page_among_holes(false, true, AllocFlags::empty());
    assert_eq!((mixed, migrated), (1, 0));
    // With it, compaction empties the lowest movable pageblock (its 256
    // pages move into the holes above) and the page claims it whole.
    let (mixed, migrated, pageblock) = unmovable_page_among_holes(true, true, AllocFlags::empty());
    assert_eq!((mixed, migrated, pageblock), (0, 256, 1));
}

#[test]
fn defrag_mode_still_falls_back_when_nothing_can_be_compacted() {
    // No owners: nothing moves, and every kind of request still gets its
    // page from a movable pageblock rather than failing with 768 free.
    for flags in [AllocFlags::empty(), AllocFlags::NORETRY, AllocFlags::ATOMIC, AllocFlags::NOWAIT] {
        let (mixed, migrated, pageblock) = unmovable_page_among_holes(true, false, flags);
        assert_eq!((mixed, migrated), (1, 0), "{flags:?}");
        assert!(pageblock >= 1, "{flags:?}");
    }
}

/// A small long-running mixed workload (scenario 3 of
/// `examples/highalloc.rs`): orders 0-3, unmovable 10% and 40% of the
/// requests in turn, reclaimable 10%, the rest owned movable blocks; 85%
/// of a 64 MiB zone live, churned four times over. Returns the mixed
/// pageblocks and the fragmenting fallbacks.
fn churn(defrag: bool) -> (usize, u64) {
    let arena =
        Arena::builder().region_size(64 << 20).zones(1).background_reclaim(false).defrag_mode(defrag).build().unwrap();
    let table = Arc::new(Table::default());
    let handle = arena.register_movable(table.clone());
    let managed = arena.stats().zones[0].managed;
    let mut seed = 7u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (mut others, mut owned): (Vec<(NonNull<u8>, u32)>, Vec<usize>) = (Vec::new(), Vec::new());
    let (mut live, mut allocated) = (0, 0);
    while allocated < 4 * managed {
        if live < managed * 85 / 100 || next().is_multiple_of(2) {
            let order = (next() % 4) as u32;
            let unmovable_tenths = if (allocated / managed).is_multiple_of(2) { 1 } else { 4 };
            let kind = next() % 10;
            let got = if kind <= unmovable_tenths {
                let flags = if kind < unmovable_tenths { AllocFlags::empty() } else { AllocFlags::RECLAIMABLE };
                arena
                    .alloc_pages(order, flags | AllocFlags::NORETRY | AllocFlags::NOWARN)
                    .map(|p| others.push((p, order)))
                    .is_ok()
            } else {
                table.alloc(&handle, order, AllocFlags::NORETRY).map(|slot| owned.push(slot)).is_some()
            };
            if got {
                live += 1 << order;
                allocated += 1 << order;
            }
        } else {
            let i = (next() % (others.len() + owned.len()) as u64) as usize;
            if i < others.len() {
                let (p, order) = others.swap_remove(i);
                // SAFETY: ours at this order, freed once.
                unsafe { arena.free_pages(p, order) }.unwrap();
                live -= 1 << order;
            } else {
                let slot = owned.swap_remove(i - others.len());
                live -= 1 << table.slots.lock().unwrap()[slot].unwrap().1;
                table.free(&arena, slot);
            }
        }
    }
    arena.drain_pcp();
    arena.check().unwrap();
    assert_eq!(table.check_contents(), owned.len(), "every owned block intact where its owner says");
    let mixed = arena.pagetypeinfo().mixed();
    let fragmenting = arena.stats().zones[0].fallbacks_fragmenting;
    assert!(mixed as u64 <= fragmenting, "{mixed} mixed pageblocks from {fragmenting} fragmenting fallbacks");
    (mixed, fragmenting)
}

#[test]
fn defrag_mode_keeps_a_long_mixed_workload_in_fewer_mixed_pageblocks() {
    let (mixed, fragmenting) = churn(false);
    let (defrag_mixed, defrag_fragmenting) = churn(true);
    assert!(mixed >= 5, "the workload mixes pageblocks without defrag mode: {mixed}");
    // Seeded and single-threaded, so the figures repeat (29 and 254
    // without, 14 and 63 with): at least a third fewer mixed pageblocks
    // and half the fragmenting fallbacks. Most of those left are
    // compaction deferred after a failure; the rest, free memory that
    // lies only in other types' pageblocks, which a fallback must use.
    assert!(
        defrag_mixed * 3 <= mixed * 2 && defrag_fragmenting * 2 <= fragmenting,
        "defrag mode: {defrag_mixed} mixed, {defrag_fragmenting} fragmenting; without: {mixed}, {fragmenting}"
    );
}
