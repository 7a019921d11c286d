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

/// With transparent huge pages a purge hands back only whole 2 MiB blocks
/// (a smaller `madvise` would split the huge page behind it); without them
/// it hands back every resident free block. The same sequence on both: a
/// fresh 4 MiB block is split for two adjacent pages `a` and `b` (leaving
/// untouched free blocks of orders 1..=9 beside them), `c` takes the
/// order-9 one, then
/// `a` and `c` are freed and cannot merge (`b` is still out).
#[test]
fn transparent_huge_pages_purge_whole_huge_pages_only() {
    use zonealloc::{AllocFlags, PcpConfig};
    let purge = |huge_pages| {
        let arena = Arena::builder()
            .region_size(64 << 20)
            .zones(1)
            .pcp(PcpConfig::Disabled)
            .purge_delay(None)
            .huge_pages(huge_pages)
            .build()
            .unwrap();
        let a = arena.alloc_pages(0, AllocFlags::empty()).unwrap();
        let b = arena.alloc_pages(0, AllocFlags::empty()).unwrap();
        let c = arena.alloc_pages(9, AllocFlags::empty()).unwrap();
        assert_eq!(b.as_ptr() as usize - a.as_ptr() as usize, 4096);
        assert_eq!(c.as_ptr() as usize - a.as_ptr() as usize, 2 << 20);
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
        (report.bytes / 4096, left)
    };
    // Purged pages, resident free pages left (the split-off blocks were
    // never touched, so they cost no RSS and are not purged).
    assert_eq!(purge(HugePages::None), (1 + 512, 0));
    assert_eq!(purge(HugePages::Transparent), (512, 1));

    // Blocks smaller than a huge page are never purged with huge pages on.
    let arena = Arena::builder().region_size(8 << 20).max_order(8).huge_pages(HugePages::Transparent).build().unwrap();
    let block = arena.alloc_pages(8, AllocFlags::empty()).unwrap();
    // SAFETY: ours, 1 MiB: touched, then freed and not used again.
    unsafe {
        block.as_ptr().write_bytes(1, 1 << 20);
        arena.free_pages(block, 8).unwrap();
    }
    assert_eq!(arena.purge().bytes, 0);
    assert!(arena.stats().resident_bytes >= 1 << 20);
}
