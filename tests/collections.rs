//! `allocator_api2` collections living in an arena.

mod support;

use allocator_api2::vec::Vec;
use zonealloc::Arena;

fn arena() -> Arena {
    support::quiet_arena(64 << 20, 1)
}

fn allocated(arena: &Arena) -> usize {
    arena.stats().zones.iter().map(|z| z.allocated()).sum()
}

#[test]
fn a_vector_grows_in_place_within_its_block_and_lives_in_the_arena() {
    let arena = arena();
    let mut v: Vec<u64, &Arena> = Vec::new_in(&arena);
    v.push(1);
    assert!(arena.contains(v.as_ptr().cast()));
    let first = v.as_ptr();
    v.extend(2..=512);
    assert_eq!(v.as_ptr(), first, "grown in place while it fits its 4 KiB block");
    assert_eq!(allocated(&arena), 1);
    v.extend(513..=100_000);
    assert_eq!(v.iter().sum::<u64>(), 100_000 * 100_001 / 2);
    assert_eq!(allocated(&arena), 256, "100,000 u64 = 782 KiB: one 1 MiB block");
    v.truncate(10);
    v.shrink_to_fit();
    assert_eq!(allocated(&arena), 1);
    assert_eq!(&v[..], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    drop(v);
    assert_eq!(allocated(&arena), 0, "everything went back");
    arena.check().unwrap();
}

#[test]
fn a_hash_map_in_the_arena() {
    let arena = arena();
    let mut map = hashbrown::HashMap::with_capacity_in(16, &arena);
    for i in 0..50_000u64 {
        map.insert(i, i * 3);
    }
    assert_eq!(map.len(), 50_000);
    assert_eq!(map[&12_345], 37_035);
    assert!(allocated(&arena) > 0);
    drop(map);
    assert_eq!(allocated(&arena), 0);
    arena.check().unwrap();
}

#[test]
fn zero_sized_and_zeroed_and_too_large() {
    let arena = arena();
    let empty: Vec<u8, &Arena> = Vec::with_capacity_in(0, &arena);
    assert_eq!(allocated(&arena), 0, "no block for a zero-sized allocation");
    drop(empty);
    let zeros = allocator_api2::vec::from_elem_in(0u8, 3 << 20, &arena);
    assert!(zeros.iter().all(|&b| b == 0));
    drop(zeros);
    let mut too_big: Vec<u8, &Arena> = Vec::new_in(&arena);
    assert!(too_big.try_reserve(8 << 20).is_err(), "beyond the largest order fails, it does not abort");
    arena.check().unwrap();
}

/// Grows `v`'s capacity to exactly `bytes` (a layout of that size).
fn grow_to(v: &mut Vec<u8, &Arena>, bytes: usize) {
    v.reserve_exact(bytes - v.len());
    assert_eq!(v.capacity(), bytes);
}

#[test]
fn a_vector_grows_into_the_free_pages_above_it_as_the_global_allocator_does() {
    let arena = arena();
    // 64 KiB from a fresh 4 MiB block: the pages above it are free.
    let mut v: Vec<u8, &Arena> = Vec::with_capacity_in(64 << 10, &arena);
    let first = v.as_ptr();
    v.resize(64 << 10, 7);
    grow_to(&mut v, 128 << 10);
    assert_eq!(v.as_ptr(), first, "128 KiB: grown into its free buddy where it lies");
    grow_to(&mut v, 256 << 10);
    assert_eq!(v.as_ptr(), first, "256 KiB: still in place");
    assert_eq!(allocated(&arena), 64);
    // Block the next growth: a neighbour right above it.
    let neighbour: Vec<u8, &Arena> = Vec::with_capacity_in(256 << 10, &arena);
    assert_eq!(neighbour.as_ptr() as usize, first as usize + (256 << 10));
    grow_to(&mut v, 512 << 10);
    assert_ne!(v.as_ptr(), first, "512 KiB: its buddy is taken, so it moves");
    assert!(v.iter().all(|&b| b == 7) && v.len() == 64 << 10);
    let moved = v.as_ptr();
    // A doubling that moved went where it can keep doubling.
    grow_to(&mut v, 1 << 20);
    assert_eq!(v.as_ptr(), moved, "1 MiB: in place after the move");
    assert_eq!(allocated(&arena), 256 + 64);
    drop((v, neighbour));
    assert_eq!(allocated(&arena), 0);
    arena.check().unwrap();
}
