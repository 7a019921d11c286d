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
