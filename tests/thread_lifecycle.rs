//! The global allocator under what services do to it: threads that come and
//! go, thread-local destructors that allocate after the allocator's own
//! thread state is gone, forks while other threads are inside the
//! allocator, live objects that look freed.
//!
//! Each scenario runs in a child process of this binary (`harness = false`,
//! `ZoneAlloc` as its global allocator), so that one that aborts, hangs or
//! leaks is reported by name and cannot disturb the others; a child that
//! does not finish within its deadline is killed and fails.
#![cfg_attr(loom, allow(unused))]

#[cfg(loom)]
fn main() {}

#[cfg(not(loom))]
fn main() {
    scenarios::main();
}

#[cfg(not(loom))]
mod scenarios {
    use std::alloc::{GlobalAlloc, Layout};
    use std::process::{Command, Stdio};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};
    use std::time::{Duration, Instant};

    use zonealloc::{ShrinkResult, Shrinker, ZoneAlloc};

    #[global_allocator]
    static GLOBAL: ZoneAlloc = ZoneAlloc;

    /// A scenario: its name, its body, the environment it runs in, and
    /// how many lines of its stderr must contain a pattern.
    struct Scenario {
        name: &'static str,
        run: fn(),
        env: &'static [(&'static str, &'static str)],
        stderr: Option<(&'static str, usize)>,
    }

    const fn scenario(name: &'static str, run: fn()) -> Scenario {
        Scenario { name, run, env: &[], stderr: None }
    }

    const SCENARIOS: &[Scenario] = &[
        scenario("exited_threads_leave_no_caches_behind", exited_threads_leave_no_caches_behind),
        scenario(
            "exit_time_allocations_never_fail_under_contention",
            exit_time_allocations_never_fail_under_contention,
        ),
        scenario(
            "a_fork_while_a_shrinker_runs_leaves_a_working_child",
            a_fork_while_a_shrinker_runs_leaves_a_working_child,
        ),
        scenario("a_forked_child_inherits_consistent_caches", a_forked_child_inherits_consistent_caches),
        // Exactly one refusal: the deliberate double free.
        Scenario {
            stderr: Some(("refused free", 1)),
            ..scenario("live_objects_that_look_freed_are_freed", live_objects_that_look_freed_are_freed)
        },
        scenario("object_counts_fall_when_other_threads_free", object_counts_fall_when_other_threads_free),
        Scenario {
            env: &[("ZONEALLOC_ZONES", "0")],
            stderr: Some(("ZONEALLOC_ZONES", 1)),
            ..scenario("bad_configuration_is_reported", bad_configuration_is_reported)
        },
        Scenario {
            env: &[("ZONEALLOC_REGION_SIZE", "12Q")],
            stderr: Some(("ZONEALLOC_REGION_SIZE", 1)),
            ..scenario("a_bad_region_size_is_reported", bad_configuration_is_reported)
        },
        scenario("the_allocators_threads_block_every_signal", the_allocators_threads_block_every_signal),
        Scenario {
            env: &[("ZONEALLOC_NUMA", "sim:2")],
            ..scenario("simulated_nodes_serve_each_thread_locally", simulated_nodes_serve_each_thread_locally)
        },
        Scenario {
            env: &[("ZONEALLOC_NUMA", "sim:99")],
            stderr: Some(("ZONEALLOC_NUMA", 1)),
            ..scenario("a_bad_numa_mode_is_reported", bad_configuration_is_reported)
        },
    ];

    pub fn main() {
        let args: Vec<String> = std::env::args().collect();
        if let Some(name) = args.get(1).and_then(|a| a.strip_prefix("--scenario=")) {
            (SCENARIOS.iter().find(|s| s.name == name).expect("unknown scenario").run)();
            return;
        }
        let filter = args.iter().skip(1).find(|a| !a.starts_with('-')).cloned();
        let mut failed = Vec::new();
        for scenario in SCENARIOS {
            let name = scenario.name;
            if filter.as_deref().is_some_and(|f| !name.contains(f)) {
                continue;
            }
            match run_child(scenario) {
                Ok(()) => println!("test {name} ... ok"),
                Err(why) => {
                    println!("test {name} ... FAILED\n{why}");
                    failed.push(name);
                }
            }
        }
        assert!(failed.is_empty(), "failed: {failed:?}");
    }

    /// Runs one scenario in a child process, killing it after 120 s.
    fn run_child(scenario: &Scenario) -> Result<(), String> {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .arg(format!("--scenario={}", scenario.name))
            .envs(scenario.env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let out = child.wait_with_output().map_err(|e| e.to_string())?;
                return Err(format!("timed out\n{}", String::from_utf8_lossy(&out.stderr)));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines_ok =
            scenario.stderr.is_none_or(|(pattern, n)| stderr.lines().filter(|l| l.contains(pattern)).count() == n);
        if status.success() && lines_ok {
            Ok(())
        } else {
            let expected = scenario.stderr.map(|(p, n)| format!(" (expected {n} stderr lines with {p:?})"));
            Err(format!(
                "{status}{}\n--- stdout\n{}--- stderr\n{stderr}",
                expected.unwrap_or_default(),
                String::from_utf8_lossy(&out.stdout),
            ))
        }
    }

    /// An arena with its own kswapd besides the global one, both running.
    fn two_kswapds() -> &'static zonealloc::Arena {
        std::hint::black_box(vec![0u8; 1 << 20]);
        Box::leak(Box::new(zonealloc::Arena::builder().region_size(64 << 20).build().unwrap()))
    }

    /// Every thread the allocator starts (the global kswapd, an arena's)
    /// blocks every signal a thread can block, so none takes a signal the
    /// program blocked (issue 25: they started with an empty mask).
    fn the_allocators_threads_block_every_signal() {
        two_kswapds();
        // A new thread names itself once it runs: wait (bounded) for both.
        let deadline = Instant::now() + Duration::from_secs(30);
        let masks = loop {
            let masks = kswapd_signal_masks();
            if masks.len() == 2 || Instant::now() > deadline {
                break masks;
            }
            std::thread::yield_now();
        };
        assert_eq!(masks.len(), 2, "the global kswapd and the arena's");
        for mask in masks {
            // Signal n is bit n - 1. SIGKILL and SIGSTOP cannot be blocked;
            // glibc keeps 32 and 33 (its cancellation and setxid signals).
            for sig in (1..=64).filter(|s| ![libc::SIGKILL, libc::SIGSTOP, 32, 33].contains(s)) {
                assert!(mask & 1 << (sig - 1) != 0, "signal {sig} is not blocked: SigBlk {mask:016x}");
            }
        }
    }

    /// The blocked-signal masks of this process's kswapd threads.
    fn kswapd_signal_masks() -> Vec<u64> {
        let mut masks = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let dir = task.unwrap().path();
            if std::fs::read_to_string(dir.join("comm")).unwrap_or_default().trim() != "zonealloc-kswap" {
                continue;
            }
            let status = std::fs::read_to_string(dir.join("status")).unwrap();
            let mask = status.lines().find_map(|l| l.strip_prefix("SigBlk:")).unwrap().trim().to_string();
            masks.push(u64::from_str_radix(&mask, 16).unwrap());
        }
        masks
    }

    fn stats() -> zonealloc::GlobalStats {
        zonealloc::global_stats().expect("the global arena exists")
    }

    /// Threads of this process, from /proc.
    fn live_threads() -> usize {
        std::fs::read_dir("/proc/self/task").unwrap().count()
    }

    /// 1000 short-lived threads, each allocating one small object: their
    /// page caches go back when they exit (sets recycled, not one per
    /// thread ever started), the per-thread `high` is not shrunk by threads
    /// that no longer exist, and no cached page belongs to a dead thread.
    fn exited_threads_leave_no_caches_behind() {
        std::hint::black_box(Box::new(0u64));
        for _ in 0..125 {
            let threads: Vec<_> = (0..8)
                .map(|i| {
                    std::thread::spawn(move || {
                        let v = vec![i as u8; 100];
                        std::hint::black_box(&v);
                    })
                })
                .collect();
            threads.into_iter().for_each(|t| t.join().unwrap());
        }
        // `join` returns once the thread has exited, its TLS destructors run.
        let s = stats().arena;
        let live = live_threads();
        assert!(s.pcp_sets <= live + 8, "{} cache sets for {live} live threads", s.pcp_sets);
        let threads: usize = s.zones.iter().map(|z| z.pcp_threads).sum();
        assert!(threads <= live, "{threads} threads counted in the zones' high split, {live} alive");
        zonealloc::global_arena().unwrap().check().unwrap();
    }

    /// A thread-local destructor registered before the allocator's own runs
    /// after them, when this thread's heap and caches are gone: its
    /// allocations go to the shared heap. 64 threads exiting at once must
    /// all get their memory: contention is not out-of-memory.
    fn exit_time_allocations_never_fail_under_contention() {
        static ALLOCATED: AtomicUsize = AtomicUsize::new(0);
        struct LateAllocator;
        impl Drop for LateAllocator {
            fn drop(&mut self) {
                for i in 0..50 {
                    let v: Vec<u64> = (0..(1 + i % 7)).collect();
                    let s = format!("late allocation {i}");
                    assert_eq!(v.len() as u64, 1 + i % 7);
                    assert!(s.ends_with(&i.to_string()));
                }
                ALLOCATED.fetch_add(1, Ordering::Relaxed);
            }
        }
        std::thread_local! {
            static LATE: LateAllocator = const { LateAllocator };
        }
        for round in 0..10 {
            let barrier = Arc::new(Barrier::new(64));
            let threads: Vec<_> = (0..64)
                .map(|_| {
                    let barrier = Arc::clone(&barrier);
                    std::thread::spawn(move || {
                        // Registered before the allocator's thread state:
                        // its destructor runs after theirs.
                        LATE.with(|_| {});
                        let v: Vec<Box<u32>> = (0..100).map(Box::new).collect();
                        std::hint::black_box(&v);
                        barrier.wait();
                    })
                })
                .collect();
            threads.into_iter().for_each(|t| t.join().unwrap());
            assert_eq!(ALLOCATED.load(Ordering::Relaxed), 64 * (round + 1));
        }
    }

    /// A shrinker that blocks inside `scan` until released.
    struct Blocking {
        scanning: AtomicBool,
        release: AtomicBool,
    }

    impl Shrinker for Blocking {
        fn count(&self) -> usize {
            usize::from(!self.release.load(Ordering::SeqCst))
        }

        fn scan(&self, _: usize) -> ShrinkResult {
            self.scanning.store(true, Ordering::SeqCst);
            let deadline = Instant::now() + Duration::from_secs(60);
            while !self.release.load(Ordering::SeqCst) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            ShrinkResult::Freed(0)
        }
    }

    /// Waits for a child with a deadline (killing it if it hangs); what
    /// went wrong, if anything. Allocates nothing.
    fn wait_child(pid: libc::pid_t) -> Result<(), &'static str> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut status = 0;
        loop {
            // SAFETY: waiting for our own child.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == pid {
                break;
            }
            if Instant::now() > deadline {
                // SAFETY: our own child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                return Err("the child hung");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 { Ok(()) } else { Err("the child failed") }
    }

    /// Runs `f` in a forked child and leaves with its result.
    fn in_child(f: impl FnOnce()) -> libc::pid_t {
        // SAFETY: the child runs `f` and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_ok();
            // SAFETY: leaving the child without the parent's atexit work.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        pid
    }

    /// Fork while the reclaim thread is inside a shrinker's `scan`: in the
    /// child, unregistering a shrinker and an allocation that reclaims must
    /// not wait for a call that will never return there.
    fn a_fork_while_a_shrinker_runs_leaves_a_working_child() {
        let arena = {
            std::hint::black_box(Box::new(0u64));
            zonealloc::global_arena().unwrap()
        };
        let blocking = Arc::new(Blocking { scanning: AtomicBool::new(false), release: AtomicBool::new(false) });
        let handle = arena.register_shrinker(blocking.clone());
        let other = arena
            .register_shrinker(Arc::new(Blocking { scanning: AtomicBool::new(false), release: AtomicBool::new(true) }));
        // 32 MiB in this thread's zone, then a capacity of what is in use:
        // the zones' shares are in proportion to their sizes, so this zone
        // falls below low, kswapd wakes and calls the shrinkers. Nothing
        // allocates on this thread until the shrinker is released (it
        // would reclaim too).
        let hog: Vec<Box<[u8; 4096]>> = (0..8192).map(|_| Box::new([7u8; 4096])).collect();
        let capacity = arena.capacity();
        let used: usize = arena.stats().zones.iter().map(|z| z.managed - z.free).sum();
        arena.set_capacity(used * 4096).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !blocking.scanning.load(Ordering::SeqCst) {
            if Instant::now() > deadline {
                blocking.release.store(true, Ordering::SeqCst);
                arena.set_capacity(capacity).unwrap();
                panic!("kswapd never called the shrinker: used {used} pages\n{:?}", arena.stats().reclaim);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut other = Some(other);
        let pid = in_child(|| {
            drop(other.take()); // waits for calls in progress: none here
            arena.set_capacity(capacity).unwrap();
            let v: Vec<String> = (0..10_000).map(|i| i.to_string()).collect();
            assert_eq!(v[9_999], "9999");
            arena.purge();
            arena.check().unwrap();
        });
        let child = wait_child(pid);
        blocking.release.store(true, Ordering::SeqCst);
        arena.set_capacity(capacity).unwrap();
        drop((hog, handle, other));
        child.expect("fork during a shrinker call");
    }

    /// Forks while two threads churn through their page caches and slabs:
    /// every child must find the arena consistent (`check()`), though the
    /// fork may have caught a thread in the middle of a cache operation.
    fn a_forked_child_inherits_consistent_caches() {
        static STOP: AtomicBool = AtomicBool::new(false);
        let churners: Vec<_> = (0..2)
            .map(|t| {
                std::thread::spawn(move || {
                    let mut pages: Vec<Box<[u8; 4096]>> = Vec::with_capacity(64);
                    let mut small: Vec<Vec<u8>> = (0..64).map(|_| Vec::new()).collect();
                    let mut i = 0usize;
                    while !STOP.load(Ordering::Relaxed) {
                        i += 1;
                        if pages.len() == 64 {
                            pages.clear();
                        }
                        pages.push(Box::new([t as u8; 4096]));
                        small[i % 64] = vec![t as u8; 1 + (i * 37) % 3000];
                    }
                })
            })
            .collect();
        for round in 0..200 {
            let pid = in_child(|| zonealloc::global_arena().unwrap().check().unwrap());
            if let Err(e) = wait_child(pid) {
                panic!("fork round {round}: {e}");
            }
        }
        STOP.store(true, Ordering::Relaxed);
        churners.into_iter().for_each(|c| c.join().unwrap());
    }

    /// The tag the slab layer once wrote into the second word of a freed
    /// object (it keeps free state in bitmaps now; tests/slab.rs covers
    /// live objects holding any bytes and writes into freed ones).
    const FREED_TAG: u64 = 0xdead_f4ee_0b1e_c7ed;

    /// Live objects whose second word happens to hold the freed tag (a
    /// hash or a random number will, some day) are freed, by their own
    /// thread and by another; none is refused and none is lost.
    fn live_objects_that_look_freed_are_freed() {
        // A class nothing else in this process uses, so its counts are ours.
        let layout = Layout::from_size_align(4500, 8).unwrap();
        let class = zonealloc::class_of(4500, 8).unwrap();
        let objects = |n: usize| -> Vec<usize> {
            (0..n)
                .map(|_| {
                    // SAFETY: a 4500-byte allocation, written within bounds.
                    unsafe {
                        let p = GLOBAL.alloc(layout).cast::<u64>();
                        p.write(1);
                        p.add(1).write(FREED_TAG);
                        p as usize
                    }
                })
                .collect()
        };
        let before = stats().classes[class].objects;
        let mine = objects(2000);
        for &p in &mine {
            // SAFETY: allocated above with this layout, freed once.
            unsafe { GLOBAL.dealloc(p as *mut u8, layout) };
        }
        let theirs = objects(2000);
        std::thread::spawn(move || {
            for p in theirs {
                // SAFETY: as above, from another thread.
                unsafe { GLOBAL.dealloc(p as *mut u8, layout) };
            }
        })
        .join()
        .unwrap();
        // A real double free is still refused (the parent counts the
        // refusals on stderr: exactly this one).
        // SAFETY: a fresh object, freed twice on purpose; the second is refused.
        unsafe {
            let p = GLOBAL.alloc(layout);
            GLOBAL.dealloc(p, layout);
            GLOBAL.dealloc(p, layout);
        }
        // Nothing was lost: once this thread has collected the other
        // thread's frees, the class holds no more objects than before.
        let again = objects(4000);
        for p in again {
            // SAFETY: as above.
            unsafe { GLOBAL.dealloc(p as *mut u8, layout) };
        }
        assert_eq!(stats().classes[class].objects, before, "objects lost");
    }

    /// `objects` (in use, per class) falls when objects are freed by
    /// threads other than the one that allocated them.
    fn object_counts_fall_when_other_threads_free() {
        // A class nothing else in this process uses, so its counts are ours.
        let class = zonealloc::class_of(3300, 8).unwrap();
        let layout = Layout::from_size_align(3300, 8).unwrap();
        let before = stats().classes[class].objects;
        for _ in 0..100 {
            // SAFETY: 3300-byte allocations, each freed once by the other thread.
            let batch: Vec<usize> = (0..1000).map(|_| unsafe { GLOBAL.alloc(layout) } as usize).collect();
            std::thread::spawn(move || {
                for p in batch {
                    // SAFETY: as above.
                    unsafe { GLOBAL.dealloc(p as *mut u8, layout) };
                }
            })
            .join()
            .unwrap();
        }
        let objects = stats().classes[class].objects;
        assert_eq!(objects, before, "{objects} objects in use reported, {before} before (none live now)");
    }

    /// An invalid `ZONEALLOC_*` value gets one line on stderr saying what
    /// was wrong and what is used instead; the program still runs on
    /// zonealloc.
    /// `ZONEALLOC_NUMA=sim:2`: a thread on CPU `n` gets its small objects
    /// and its pages from node `n`.
    fn simulated_nodes_serve_each_thread_locally() {
        let arena = zonealloc::global_arena().expect("the global arena");
        assert_eq!(arena.topology().nodes(), 2);
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()).min(2);
        for cpu in 0..cpus {
            std::thread::spawn(move || {
                // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET
                // writes inside it.
                let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
                // SAFETY: as above.
                unsafe { libc::CPU_SET(cpu, &mut set) };
                // SAFETY: pid 0 is this thread; `set` is valid for its size.
                let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
                assert_eq!(rc, 0);
                let small = std::hint::black_box(Box::new([7u8; 48]));
                let pages = std::hint::black_box(vec![7u8; 1 << 20]);
                let arena = zonealloc::global_arena().unwrap();
                for ptr in [small.as_ptr(), pages.as_ptr()] {
                    assert_eq!(arena.node_of(std::ptr::NonNull::new(ptr.cast_mut()).unwrap()), Some(cpu), "CPU {cpu}");
                }
            })
            .join()
            .unwrap();
        }
        assert!(arena.stats().nodes.iter().all(|n| !n.bound && n.numa_hit > 0 || cpus < 2));
    }

    fn bad_configuration_is_reported() {
        let v = std::hint::black_box(Box::new(1u64));
        assert!(
            zonealloc::global_arena().is_some_and(|a| a.contains(std::ptr::from_ref(&*v).cast())),
            "fell back to the system allocator"
        );
        assert!(zonealloc::global_arena().unwrap().nr_zones() >= 1);
    }
}
