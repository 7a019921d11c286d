//! The region options really reach the kernel: checked in /proc/self/smaps
//! (VmFlags: `dd` = MADV_DONTDUMP, `dc` = MADV_DONTFORK, `hg` = MADV_HUGEPAGE)
//! and, for prefault, in the mapping's resident size.
//! One test, so no other test's allocations share the process meanwhile.

use zonealloc::{Arena, HugePages};

/// The smaps entry of the mapping containing `addr`: (VmFlags, Rss in KiB).
fn smaps_entry(addr: usize) -> (Vec<String>, usize) {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut inside = false;
    let mut rss = 0;
    for line in smaps.lines() {
        if let Some((range, _)) = line.split_once(' ')
            && let Some((lo, hi)) = range.split_once('-')
            && let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
        {
            inside = (lo..hi).contains(&addr);
            continue;
        }
        if !inside {
            continue;
        }
        if let Some(kb) = line.strip_prefix("Rss:") {
            rss = kb.trim().trim_end_matches(" kB").parse().unwrap();
        }
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            return (flags.split_whitespace().map(String::from).collect(), rss);
        }
    }
    panic!("no mapping contains {addr:#x}");
}

#[test]
fn region_options_take_effect() {
    let plain = Arena::builder().region_size(8 << 20).zones(1).build().unwrap();
    let (flags, rss) = smaps_entry(plain.region().0.as_ptr() as usize);
    assert!(!flags.iter().any(|f| f == "dd" || f == "dc" || f == "hg"), "{flags:?}");
    assert_eq!(rss, 0, "a fresh region is not resident");

    let tuned = Arena::builder()
        .region_size(8 << 20)
        .zones(1)
        .exclude_from_core_dumps(true)
        .exclude_from_fork(true)
        .huge_pages(HugePages::Transparent)
        .build()
        .unwrap();
    let (flags, _) = smaps_entry(tuned.region().0.as_ptr() as usize);
    for want in ["dd", "dc", "hg"] {
        assert!(flags.iter().any(|f| f == want), "missing {want} in {flags:?}");
    }

    let prefaulted = Arena::builder().region_size(8 << 20).zones(1).prefault(true).build().unwrap();
    let (_, rss) = smaps_entry(prefaulted.region().0.as_ptr() as usize);
    assert!(rss >= 8 << 10, "prefault left only {rss} KiB resident");
}
