//! Every bad input gets a clear error and loses nothing.

mod support;

use std::ptr::NonNull;

use support::small_arena;
use zonealloc::{AllocFlags, Arena, BuildError, FreeError, WatermarkConfig, Watermarks};

fn build_err(builder: zonealloc::ArenaBuilder) -> BuildError {
    match builder.build() {
        Ok(_) => panic!("build should fail"),
        Err(e) => e,
    }
}

#[test]
fn bad_configurations_are_rejected_with_what_to_change() {
    let e = build_err(Arena::builder().max_order(21));
    assert!(matches!(e, BuildError::MaxOrderTooLarge { max_order: 21, limit: 20 }));
    assert!(e.to_string().contains("lower max_order"), "{e}");

    let e = build_err(Arena::builder().zones(0));
    assert!(matches!(e, BuildError::ZeroZones));

    let e = build_err(Arena::builder().zones(65));
    assert!(matches!(e, BuildError::TooManyZones { zones: 65, limit: 64 }));

    // 8 MiB holds two 4 MiB blocks: not enough for 4 zones.
    let e = build_err(Arena::builder().region_size(8 << 20).zones(4));
    assert!(
        matches!(e, BuildError::RegionTooSmall { needed, zones: 4, block_size, .. } if needed == 16 << 20 && block_size == 4 << 20)
    );
    assert!(e.to_string().contains("raise region_size"), "{e}");

    let e = build_err(Arena::builder().region_size(0));
    assert!(matches!(e, BuildError::RegionTooSmall { .. }));

    let e = build_err(Arena::builder().region_size(usize::MAX - 4096));
    assert!(matches!(e, BuildError::RegionTooLarge { .. }));
    let e = build_err(Arena::builder().region_size(1 << 45)); // 2^33 pages
    assert!(matches!(e, BuildError::RegionTooLarge { .. }));

    // Watermarks above the zone size (1024 pages), and out of order.
    let marks = |min, low, high| WatermarkConfig::PerZone(Watermarks { min, low, high });
    let e = build_err(Arena::builder().region_size(4 << 20).zones(1).watermarks(marks(10, 20, 1024)));
    assert!(matches!(e, BuildError::InvalidWatermarks { zone: 0, managed: 1024, high: 1024, .. }));
    assert!(e.to_string().contains("min <= low <= high < managed"), "{e}");
    let e = build_err(Arena::builder().region_size(4 << 20).zones(1).watermarks(marks(30, 20, 40)));
    assert!(matches!(e, BuildError::InvalidWatermarks { .. }));
    let e = build_err(
        Arena::builder()
            .region_size(4 << 20)
            .zones(1)
            .watermarks(WatermarkConfig::Kernel { min_free_kbytes: Some(8 << 20), scale_factor: 10 }),
    );
    assert!(matches!(e, BuildError::InvalidWatermarks { .. }));
}

#[test]
fn region_size_rounds_up_to_whole_blocks() {
    let arena = Arena::builder().region_size((4 << 20) + 1).zones(1).build().unwrap();
    assert_eq!(arena.region().1, 8 << 20);
}

#[cfg(target_os = "linux")]
#[test]
fn explicit_huge_pages_fail_clearly_when_none_are_reserved() {
    let free = std::fs::read_to_string("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok());
    if free.unwrap_or(0) >= 32 {
        return; // this machine has huge pages; the failure cannot be provoked
    }
    let e = build_err(Arena::builder().region_size(64 << 20).huge_pages(zonealloc::HugePages::Explicit));
    // The error says how many huge pages are free, as sysfs does.
    assert!(matches!(e, BuildError::HugePagesUnavailable { free: f, .. } if f == free), "{e:?}");
    assert!(e.to_string().contains("nr_hugepages"), "{e}");
}

fn snapshot(arena: &Arena) -> Vec<(usize, Vec<usize>)> {
    arena.stats().zones.into_iter().map(|z| (z.free, z.free_blocks)).collect()
}

fn free_err(arena: &Arena, addr: usize, order: u32) -> FreeError {
    let before = snapshot(arena);
    // SAFETY: every call here is refused without touching memory.
    let e = unsafe { arena.free_pages(NonNull::new(addr as *mut u8).unwrap(), order) }.unwrap_err();
    assert_eq!(snapshot(arena), before, "a refused free changed the arena");
    arena.check().unwrap();
    e
}

#[test]
fn bad_frees_are_refused_and_lose_nothing() {
    let arena = small_arena(2, 2, 6);
    let (base, len) = arena.region();
    let base = base.as_ptr() as usize;
    let a = arena.alloc_pages(2, AllocFlags::empty()).unwrap().as_ptr() as usize;
    let b = arena.alloc_pages(0, AllocFlags::empty()).unwrap().as_ptr() as usize;

    assert_eq!(free_err(&arena, base - 4096, 0), FreeError::OutOfRegion { addr: base - 4096 });
    assert_eq!(free_err(&arena, base + len, 0), FreeError::OutOfRegion { addr: base + len });
    let on_stack = 0u64;
    let stack_addr = &on_stack as *const u64 as usize;
    assert_eq!(free_err(&arena, stack_addr, 0), FreeError::OutOfRegion { addr: stack_addr });
    assert_eq!(free_err(&arena, a, 7), FreeError::InvalidOrder { order: 7, max_order: 6 });
    assert_eq!(free_err(&arena, a + 8, 2), FreeError::NotBlockStart { addr: a + 8 });
    // Inside an allocated block.
    assert_eq!(free_err(&arena, a + 4096, 0), FreeError::NotBlockStart { addr: a + 4096 });
    assert_eq!(free_err(&arena, a, 1), FreeError::WrongOrder { addr: a, given: 1, actual: 2 });
    assert_eq!(free_err(&arena, b, 3), FreeError::WrongOrder { addr: b, given: 3, actual: 0 });
    // Never allocated: above the zone's frontier.
    let far = base + len - 4096;
    assert_eq!(free_err(&arena, far, 0), FreeError::NotBlockStart { addr: far });
    // A free page still on a list, as a head.
    let listed = b ^ 4096; // b's order-0 buddy, split off and free
    assert_eq!(free_err(&arena, listed, 0), FreeError::DoubleFree { addr: listed });

    // SAFETY: both are live blocks of this arena.
    unsafe {
        arena.free_pages(NonNull::new(b as *mut u8).unwrap(), 0).unwrap();
        arena.free_pages(NonNull::new(a as *mut u8).unwrap(), 2).unwrap();
    }
    // Both merged away; freeing again is still a double free, not a crash.
    assert_eq!(free_err(&arena, b, 0), FreeError::DoubleFree { addr: b });
    assert_eq!(free_err(&arena, a, 2), FreeError::DoubleFree { addr: a });
    assert_eq!(arena.stats().invalid_frees, 12);
    for z in arena.stats().zones {
        assert_eq!(z.free + z.cached, z.managed);
    }
    // Every message names the address.
    let msg = FreeError::WrongOrder { addr: 0x1000, given: 1, actual: 2 }.to_string();
    assert_eq!(msg, "free of 0x1000 with order 1: the block was allocated with order 2");
}
