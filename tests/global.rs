//! zonealloc as the global allocator of this whole test binary. It has its
//! own `main` (harness = false) so that no test framework allocates from
//! other threads while the checks run.
#![cfg_attr(loom, allow(unused))]

#[cfg(loom)]
fn main() {}

#[cfg(not(loom))]
mod global {

    use std::alloc::{GlobalAlloc, Layout};
    use std::collections::{BTreeMap, HashMap};

    use zonealloc::ZoneAlloc;

    #[global_allocator]
    static GLOBAL: ZoneAlloc = ZoneAlloc;

    fn rss_kib() -> usize {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        statm.split_whitespace().nth(1).unwrap().parse::<usize>().unwrap() * 4
    }

    fn total_slabs() -> usize {
        zonealloc::global_stats().unwrap().classes.iter().map(|c| c.slabs).sum()
    }

    fn collections() {
        let mut map = BTreeMap::new();
        for i in 0..200_000u32 {
            map.insert(format!("key-{i:08}"), i.to_string());
        }
        assert_eq!(map.len(), 200_000);
        assert_eq!(map["key-00123456"], "123456");
        let mut counts: HashMap<u32, Vec<u32>> = HashMap::new();
        for i in 0..300_000u32 {
            counts.entry(i % 1000).or_default().push(i);
            if i % 3 == 0 {
                counts.remove(&((i / 3) % 1000));
            }
        }
        assert!(counts.values().all(|v| v.iter().all(|x| x % 1000 == v[0] % 1000)));
        let joined: String = map.values().take(1000).map(String::as_str).collect::<Vec<_>>().join(",");
        assert_eq!(joined.split(',').count(), 1000);
    }

    fn realloc_in_place_and_growth() {
        // SAFETY: plain GlobalAlloc calls with matching layouts.
        unsafe {
            let layout = Layout::from_size_align(100, 8).unwrap();
            let p = GLOBAL.alloc(layout);
            p.write_bytes(7, 100);
            let q = GLOBAL.realloc(p, layout, 110);
            assert_eq!(p, q, "100 -> 110 bytes stays in its 112-byte slot");
            let big = GLOBAL.realloc(q, Layout::from_size_align(110, 8).unwrap(), 100_000);
            assert!((0..100).all(|i| *big.add(i) == 7), "realloc keeps the prefix");
            let same = GLOBAL.realloc(big, Layout::from_size_align(100_000, 8).unwrap(), 120_000);
            assert_eq!(same, big, "100 KB -> 120 KB stays in its 128 KiB block");
            let small = GLOBAL.realloc(same, Layout::from_size_align(120_000, 8).unwrap(), 50);
            assert!((0..50).all(|i| *small.add(i) == 7));
            GLOBAL.dealloc(small, Layout::from_size_align(50, 8).unwrap());
        }
        // A buffer doubling from 16 KiB to 8 MiB: the first growth moves it
        // to the start of a large free block, the rest grow in place.
        let mut buf: Vec<u8> = Vec::with_capacity(16 << 10);
        let mut moves = 0;
        while buf.capacity() < 8 << 20 {
            buf.resize(buf.capacity(), buf.capacity().trailing_zeros() as u8);
            let before = buf.as_ptr();
            buf.reserve_exact(buf.capacity());
            moves += usize::from(buf.as_ptr() != before);
        }
        assert!(moves <= 2, "{moves} of 9 doublings moved the buffer");
        assert!(
            buf.chunks(16 << 10)
                .enumerate()
                .all(|(i, c)| c[0] == (14 + (i + 1).next_power_of_two().trailing_zeros()) as u8)
        );
        drop(buf);
        let mut v = Vec::new();
        for i in 0..2_000_000u64 {
            v.push(i);
        }
        assert_eq!(v.iter().sum::<u64>(), 2_000_000 * 1_999_999 / 2);
        v.truncate(10);
        v.shrink_to_fit();
        assert_eq!(v, (0..10).collect::<Vec<_>>());
    }

    fn every_alignment_up_to_1_gib() {
        for shift in 0..=30 {
            let align = 1usize << shift;
            for size in [1, align / 2 + 1, align, align + 1] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: non-zero size; freed with the same layout.
                unsafe {
                    let p = GLOBAL.alloc(layout);
                    assert!(!p.is_null(), "size {size} align {align}");
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    p.write(1);
                    p.add(size - 1).write(2);
                    GLOBAL.dealloc(p, layout);
                }
            }
        }
    }

    fn zeroed_and_large() {
        for size in [8, 100, 3000, 9000, 70_000, 3 << 20, 64 << 20] {
            let layout = Layout::from_size_align(size, 8).unwrap();
            // SAFETY: as above.
            unsafe {
                let dirty = GLOBAL.alloc(layout);
                dirty.write_bytes(0xff, size);
                GLOBAL.dealloc(dirty, layout);
                let clean = GLOBAL.alloc_zeroed(layout);
                let bytes = std::slice::from_raw_parts(clean, size);
                assert!(bytes.iter().all(|&b| b == 0), "alloc_zeroed({size}) is not zero");
                GLOBAL.dealloc(clean, layout);
            }
        }
        let huge = vec![1u8; 256 << 20]; // beyond the largest order: System
        assert_eq!(huge.iter().map(|&b| b as usize).sum::<usize>(), 256 << 20);
    }

    fn cross_thread_frees() {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Vec<u8>>>(16);
        let producer = std::thread::spawn(move || {
            for round in 0..2000usize {
                let batch: Vec<Vec<u8>> = (0..64).map(|i| vec![(round + i) as u8; 8 + (i * 37) % 2000]).collect();
                tx.send(batch).unwrap();
            }
        });
        let mut checked = 0;
        for (round, batch) in rx.iter().enumerate() {
            for (i, v) in batch.iter().enumerate() {
                assert!(v.iter().all(|&b| b == (round + i) as u8));
                checked += 1;
            }
        }
        producer.join().unwrap();
        assert_eq!(checked, 2000 * 64);
    }

    fn short_lived_threads_leak_nothing() {
        let rss_before = rss_kib();
        let mut keep = Vec::new();
        for round in 0..20 {
            let handles: Vec<_> = (0..10)
                .map(|t| {
                    std::thread::spawn(move || {
                        let v: Vec<Box<[u8]>> =
                            (0..2000).map(|i| vec![t as u8; 16 + (i % 500)].into_boxed_slice()).collect();
                        // Most are freed here, a few outlive the thread.
                        v.into_iter().step_by(100).collect::<Vec<_>>()
                    })
                })
                .collect();
            for h in handles {
                keep.push(h.join().unwrap());
            }
            if round % 5 == 4 {
                keep.clear(); // frees into orphaned slabs
            }
        }
        drop(keep);
        zonealloc::global_reap();
        let slabs = total_slabs();
        assert!(slabs < 200, "{slabs} slabs left after 200 short-lived threads");
        let rss_after = rss_kib();
        assert!(rss_after < rss_before + 64 * 1024, "RSS grew from {rss_before} to {rss_after} KiB");
    }

    fn bad_frees_are_refused() {
        let layout = Layout::from_size_align(64, 8).unwrap();
        let on_stack = [0u64; 8];
        // SAFETY: each of these is refused before anything is written.
        unsafe {
            GLOBAL.dealloc(on_stack.as_ptr() as *mut u8, layout);
            let p = GLOBAL.alloc(layout);
            GLOBAL.dealloc(p.add(16), layout);
            GLOBAL.dealloc(p, layout);
            GLOBAL.dealloc(p, layout); // double free: refused, reported
            let q = GLOBAL.alloc(layout);
            let r = GLOBAL.alloc(layout);
            assert_ne!(q, r, "a refused double free must not hand one object out twice");
            GLOBAL.dealloc(q, layout);
            GLOBAL.dealloc(r, layout);
        }
        assert_eq!(on_stack, [0u64; 8], "a foreign pointer was written to");

        // Another thread's object, freed twice from here while its owner
        // lives: the first free goes onto its slab's remote bitmap, the
        // second is refused, and the owner never hands it out twice.
        let refused = zonealloc::global_stats().unwrap().refused_frees;
        let (to_owner, from_main) = std::sync::mpsc::channel::<usize>();
        let (to_main, from_owner) = std::sync::mpsc::channel::<usize>();
        let owner = std::thread::spawn(move || {
            // SAFETY: a valid layout; freed by the main thread.
            to_main.send(unsafe { GLOBAL.alloc(layout) } as usize).unwrap();
            from_main.recv().unwrap();
            // Every object this thread takes now, its remote frees collected.
            // SAFETY: valid layouts, freed below.
            let taken: Vec<usize> = (0..1000).map(|_| unsafe { GLOBAL.alloc(layout) } as usize).collect();
            let mut sorted = taken.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), taken.len(), "an object handed out twice");
            for p in taken {
                // SAFETY: ours, freed once.
                unsafe { GLOBAL.dealloc(p as *mut u8, layout) };
            }
        });
        let p = from_owner.recv().unwrap() as *mut u8;
        // SAFETY: the owner's live object; the second free is refused.
        unsafe {
            GLOBAL.dealloc(p, layout);
            GLOBAL.dealloc(p, layout);
        }
        assert_eq!(zonealloc::global_stats().unwrap().refused_frees, refused + 1, "the cross-thread double free");
        to_owner.send(0).unwrap();
        owner.join().unwrap();
    }

    /// Forks while two threads allocate and free as fast as they can; each
    /// child must allocate at once (small, large and page-sized), purge, and
    /// exit; a child that deadlocks is killed and fails the test.
    fn fork_while_other_threads_allocate() {
        use std::sync::atomic::{AtomicBool, Ordering};
        static STOP: AtomicBool = AtomicBool::new(false);
        let churners: Vec<_> = (0..2)
            .map(|t| {
                std::thread::spawn(move || {
                    let mut live: Vec<Vec<u8>> = (0..512).map(|_| Vec::new()).collect();
                    let mut i = 0usize;
                    while !STOP.load(Ordering::Relaxed) {
                        i += 1;
                        live[i % 512] = vec![t as u8; 1 + (i * 131) % 20_000];
                    }
                })
            })
            .collect();
        for round in 0..30 {
            // SAFETY: the child only runs the code below and leaves with _exit.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork failed");
            if pid == 0 {
                let ok = std::panic::catch_unwind(|| {
                    let v: Vec<String> = (0..10_000).map(|i| i.to_string()).collect();
                    assert_eq!(v[9_999], "9999");
                    let big = vec![7u8; 3 << 20];
                    assert_eq!(big[(3 << 20) - 1], 7);
                    let pages: Vec<Box<[u8; 4096]>> = (0..256).map(|_| Box::new([1u8; 4096])).collect();
                    assert_eq!(pages.len(), 256);
                    drop((v, big, pages));
                    zonealloc::global_arena().unwrap().purge();
                })
                .is_ok();
                // SAFETY: leaving the child without running the parent's atexit work.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) };
            }
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            let mut status = 0;
            loop {
                // SAFETY: waiting for our own child.
                let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
                if r == pid {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    // SAFETY: our own child.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    panic!("fork round {round}: the child hung (deadlock after fork)");
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "fork round {round}: child failed");
        }
        STOP.store(true, Ordering::Relaxed);
        for c in churners {
            c.join().unwrap();
        }
    }

    /// The calls without a layout (C's `free` and `malloc_usable_size`):
    /// every page of a multi-page slab names its class, a block is known by
    /// its head, anything else is refused; a slab that went back to the
    /// buddy allocator no longer names a class from any of its pages.
    fn calls_without_a_layout() {
        // 3000-byte objects: a 32 KiB slab of ten (pages 0..=7).
        let layout = Layout::from_size_align(3000, 16).unwrap();
        let class = zonealloc::class_of(3000, 16).unwrap();
        let size = class.size();
        // SAFETY: non-zero layouts, each freed once below.
        let objects: Vec<*mut u8> = (0..40).map(|_| unsafe { GLOBAL.alloc(layout) }).collect();
        let pages: std::collections::HashSet<usize> = objects.iter().map(|&p| (p as usize >> 12) % 8).collect();
        assert!(pages.len() > 4, "objects on the slab's later pages too: {pages:?}");
        for &p in &objects {
            assert_eq!(zonealloc::global_usable_size(p), Some(size));
            assert_eq!(zonealloc::global_usable_size_cached(p), Some(size), "any page of a slab names it");
            assert_eq!(zonealloc::global_usable_size(p.wrapping_add(8)), None, "an interior pointer");
            assert_eq!(zonealloc::global_usable_size_cached(p.wrapping_add(8)), None);
        }
        assert_eq!(zonealloc::global_usable_size_cached(std::ptr::null()), None);
        assert_eq!(zonealloc::global_usable_size(std::ptr::null()), None);
        let block = Layout::from_size_align(100 << 10, 16).unwrap();
        // SAFETY: as above.
        let b = unsafe { GLOBAL.alloc(block) };
        assert_eq!(zonealloc::global_usable_size(b), Some(128 << 10));
        assert_eq!(zonealloc::global_usable_size_cached(b), None, "a block: only the full call knows it");
        assert_eq!(zonealloc::global_usable_size(b.wrapping_add(4096)), None);
        let on_stack = 0u64;
        assert_eq!(zonealloc::global_usable_size(std::ptr::addr_of!(on_stack).cast()), None);
        let refused = zonealloc::global_stats().unwrap().refused_frees;
        // SAFETY: a free the allocator refuses: inside the block.
        assert!(unsafe { zonealloc::global_free(b.wrapping_add(4096)) });
        assert_eq!(zonealloc::global_stats().unwrap().refused_frees, refused + 1);
        // SAFETY: not in the arena: nothing done, `false`.
        assert!(!unsafe { zonealloc::global_free(std::ptr::addr_of!(on_stack).cast_mut().cast()) });
        // Free them without layouts: the slabs empty and go back.
        for &p in objects.iter().chain([&b]) {
            // SAFETY: live allocations, freed once.
            assert!(unsafe { zonealloc::global_free(p) });
        }
        assert_eq!(zonealloc::global_stats().unwrap().refused_frees, refused + 1, "every free was accepted");
        let after = zonealloc::global_stats().unwrap().classes[class].objects;
        assert_eq!(after, 0, "every object of the class came back");
        // The freed slabs are gone from the side table, on every page
        // (the class's current slab stays and keeps its keys).
        let gone = objects.iter().filter(|&&p| zonealloc::global_usable_size(p).is_none()).count();
        assert!(gone >= 20, "{gone} of 40 objects no longer name a class");
        let gone_cached = objects.iter().filter(|&&p| zonealloc::global_usable_size_cached(p).is_none()).count();
        assert_eq!(gone_cached, gone, "the page keys go with the slabs");
        zonealloc::global_arena().unwrap().check().unwrap();
    }

    pub fn main() {
        let tests: [(&str, fn()); 9] = [
            ("calls_without_a_layout", calls_without_a_layout),
            ("fork_while_other_threads_allocate", fork_while_other_threads_allocate),
            ("collections", collections),
            ("realloc_in_place_and_growth", realloc_in_place_and_growth),
            ("every_alignment_up_to_1_gib", every_alignment_up_to_1_gib),
            ("zeroed_and_large", zeroed_and_large),
            ("cross_thread_frees", cross_thread_frees),
            ("short_lived_threads_leak_nothing", short_lived_threads_leak_nothing),
            ("bad_frees_are_refused", bad_frees_are_refused),
        ];
        for (name, test) in tests {
            test();
            println!("test {name} ... ok");
        }
        let arena = zonealloc::global_arena().expect("the global arena was built");
        arena.check().unwrap();
        let stats = zonealloc::global_stats().unwrap();
        assert!(stats.classes.iter().any(|c| c.slabs > 0));
        println!("global arena consistent: {} KiB resident", stats.arena.resident_bytes >> 10);
    }
}

#[cfg(not(loom))]
fn main() {
    global::main();
}
