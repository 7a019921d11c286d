//! The region options really reach the kernel: checked in /proc/self/smaps
//! (VmFlags: `dd` = MADV_DONTDUMP, `dc` = MADV_DONTFORK, `hg` = MADV_HUGEPAGE)
//! and, for prefault, with mincore(2) on exactly the region's pages (a VMA's
//! `Rss:` may include a neighbouring mapping the kernel merged with it).

use zonealloc::{Arena, HugePages};

/// The VmFlags of the mapping containing `addr`.
fn vm_flags(addr: usize) -> Vec<String> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut inside = false;
    for line in smaps.lines() {
        if let Some((range, _)) = line.split_once(' ')
            && let Some((lo, hi)) = range.split_once('-')
            && let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
        {
            inside = (lo..hi).contains(&addr);
            continue;
        }
        if let Some(flags) = line.strip_prefix("VmFlags:")
            && inside
        {
            return flags.split_whitespace().map(String::from).collect();
        }
    }
    panic!("no mapping contains {addr:#x}");
}

/// Resident pages of `len` bytes from `addr`, from mincore(2).
fn resident_pages(addr: *mut u8, len: usize) -> usize {
    let mut vec = vec![0u8; len / 4096];
    // SAFETY: the range is a mapping of ours; `vec` has one byte per page.
    let rc = unsafe { libc::mincore(addr.cast(), len, vec.as_mut_ptr()) };
    assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
    vec.iter().filter(|b| **b & 1 != 0).count()
}

#[test]
fn region_options_take_effect() {
    let plain = Arena::builder().region_size(8 << 20).zones(1).build().unwrap();
    let (base, len) = plain.region();
    let flags = vm_flags(base.as_ptr() as usize);
    assert!(!flags.iter().any(|f| f == "dd" || f == "dc" || f == "hg"), "{flags:?}");
    assert_eq!(resident_pages(base.as_ptr(), len), 0, "a fresh region is not resident");

    let tuned = Arena::builder()
        .region_size(8 << 20)
        .zones(1)
        .exclude_from_core_dumps(true)
        .exclude_from_fork(true)
        .huge_pages(HugePages::Transparent)
        .build()
        .unwrap();
    let flags = vm_flags(tuned.region().0.as_ptr() as usize);
    for want in ["dd", "dc", "hg"] {
        assert!(flags.iter().any(|f| f == want), "missing {want} in {flags:?}");
    }

    let prefaulted = Arena::builder().region_size(8 << 20).zones(1).prefault(true).build().unwrap();
    let (base, len) = prefaulted.region();
    assert_eq!(resident_pages(base.as_ptr(), len), len / 4096, "prefault left pages out");
}

/// With transparent huge pages a purge hands back whole 2 MiB blocks, and
/// the free parts of partly used huge pages only once they are more than
/// 512 KiB and a quarter of the memory in use (a smaller `madvise` splits
/// the huge page behind it); without them it hands back every resident
/// free block. The same sequence on both: a fresh 4 MiB block is split for
/// two adjacent pages `a` and `b` (leaving free blocks of orders 1..=9
/// beside them), `c` takes the order-9 one, then `a` and `c` are freed and
/// cannot merge (`b` is still out).
#[test]
fn transparent_huge_pages_are_split_only_for_large_free_parts() {
    use zonealloc::{AllocFlags, PcpConfig};
    let build = |huge_pages, max_order| {
        Arena::builder()
            .region_size(64 << 20)
            .zones(1)
            .max_order(max_order)
            .pcp(PcpConfig::Disabled)
            .purge_delay(None)
            .huge_pages(huge_pages)
            .build()
            .unwrap()
    };
    let purge = |huge_pages| {
        let arena = build(huge_pages, 10);
        let a = arena.alloc_pages(0, AllocFlags::empty()).unwrap();
        let b = arena.alloc_pages(0, AllocFlags::empty()).unwrap();
        let c = arena.alloc_pages(9, AllocFlags::empty()).unwrap();
        assert_eq!(b.as_ptr() as usize - a.as_ptr() as usize, 4096);
        assert_eq!(c.as_ptr() as usize - a.as_ptr() as usize, 2 << 20);
        let resident_after_split = arena.stats().zones[0].resident_free();
        // SAFETY: allocated above at these orders, not used again.
        unsafe {
            arena.free_pages(a, 0).unwrap();
            arena.free_pages(c, 9).unwrap();
        }
        let report = arena.purge();
        let left = arena.stats().zones[0].resident_free();
        arena.check().unwrap();
        // SAFETY: allocated above at order 0.
        unsafe { arena.free_pages(b, 0) }.unwrap();
        (resident_after_split, report.bytes / 4096, left)
    };
    // Without huge pages the split-off blocks were never touched: no RSS,
    // not purged. With them, the first touch of `a` mapped its whole huge
    // page: the 510 pages split off inside it are resident, and with `a`
    // they are far more than a quarter of the one page in use: purged,
    // with `c`'s huge page.
    assert_eq!(purge(HugePages::None), (0, 1 + 512, 0));
    assert_eq!(purge(HugePages::Transparent), (510, 1 + 510 + 512, 0));

    // A huge page mostly in use keeps its small free part resident: four
    // order-7 blocks fill one, and one of them (128 pages, not more than
    // 512 KiB) is freed.
    let arena = build(HugePages::Transparent, 10);
    let quarters: Vec<_> = (0..4).map(|_| arena.alloc_pages(7, AllocFlags::empty()).unwrap()).collect();
    // SAFETY: ours, at order 7: touched, then freed and not used again.
    unsafe {
        quarters[1].as_ptr().write_bytes(1, 512 << 10);
        arena.free_pages(quarters[1], 7).unwrap();
    }
    assert_eq!(arena.purge().bytes, 0, "a small free part of a huge page in use was purged");
    assert_eq!(arena.stats().zones[0].resident_free(), 128);
    for (i, q) in quarters.into_iter().enumerate().filter(|&(i, _)| i != 1) {
        // SAFETY: ours, at order 7, not used again.
        unsafe { arena.free_pages(q, 7) }.unwrap_or_else(|e| panic!("quarter {i}: {e}"));
    }
    arena.check().unwrap();

    // With a max order below the huge page's, no free block is a whole
    // huge page: a large enough free part is purged all the same.
    let arena = build(HugePages::Transparent, 8);
    let block = arena.alloc_pages(8, AllocFlags::empty()).unwrap();
    // SAFETY: ours, 1 MiB: touched, then freed and not used again.
    unsafe {
        block.as_ptr().write_bytes(1, 1 << 20);
        arena.free_pages(block, 8).unwrap();
    }
    assert_eq!(arena.purge().bytes, 1 << 20);
    assert_eq!(arena.stats().resident_bytes, 0);
}
