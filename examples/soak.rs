//! A soak of the global allocator under what a long-running service does
//! to it, printing one line per interval and, with `--check`, failing on
//! anything wrong.
//!
//! ```sh
//! cargo run --release --example soak -- --seconds 600 --threads 4
//! ZONEALLOC_HUGE_PAGES=none cargo run --release --example soak -- --seconds 60 --check
//! ```
//!
//! Workers allocate objects of random sizes (1 B to 4 KiB, and one in a
//! hundred from 4 KiB to 1 MiB: `--large-per-mille`) and alignments (up
//! to 4 KiB), fill them with a
//! pattern, grow and shrink some with `realloc`, hand some to another
//! worker to free, and check every object's pattern when it is freed. A
//! worker is retired and a new one started every few hundred
//! milliseconds; each worker's thread-local destructor allocates after
//! the allocator's own exit work. Every second the process forks, and the
//! child allocates, runs `Arena::check()` and exits (waited for with a
//! deadline); the arena's capacity is lowered to twice what is in use and
//! raised again. Live data swings between a small and a large working
//! set, so memory must come back after each peak.
//!
//! Each line: elapsed seconds, RSS, live bytes (what the workers hold),
//! cache sets and the threads alive, pages in per-thread caches, orphaned
//! slabs, refused frees.
//!
//! `--check` (what CI runs) asserts, never on a time: no content error
//! (checked on every free), no refused free, every fork's child passed
//! `check()`, cache sets at most the threads alive plus 4, and after a
//! warm-up RSS at most 1.5 times the live data plus 64 MiB at every sample
//! (live data taken as its largest value over the purge delay before the
//! sample, so memory freed just now may still be resident).

use std::alloc::{GlobalAlloc, Layout};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zonealloc::ZoneAlloc;

#[global_allocator]
static GLOBAL: ZoneAlloc = ZoneAlloc;

/// Bytes the workers hold (requested sizes).
static LIVE: AtomicUsize = AtomicUsize::new(0);
/// The working set each worker aims for, in objects (changes over time).
static TARGET: AtomicUsize = AtomicUsize::new(1000);
static STOP: AtomicBool = AtomicBool::new(false);
/// Objects freed (and checked) in all.
static FREED: AtomicUsize = AtomicUsize::new(0);
/// Allocations per thousand that are large (4 KiB to 1 MiB).
static LARGE_PER_MILLE: AtomicUsize = AtomicUsize::new(10);

struct Options {
    seconds: u64,
    threads: usize,
    interval: Duration,
    check: bool,
    verbose: bool,
}

fn options() -> Options {
    let mut o = Options { seconds: 60, threads: 4, interval: Duration::from_secs(5), check: false, verbose: false };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = || args.get(i + 1).and_then(|v| v.parse::<u64>().ok()).expect("a number after the flag");
        match args[i].as_str() {
            "--seconds" => o.seconds = value(),
            "--threads" => o.threads = value() as usize,
            "--interval" => o.interval = Duration::from_secs(value()),
            "--large-per-mille" => LARGE_PER_MILLE.store(value() as usize, Ordering::Relaxed),
            "--check" => {
                o.check = true;
                i += 1;
                continue;
            }
            "--verbose" => {
                o.verbose = true;
                i += 1;
                continue;
            }
            other => {
                panic!("unknown option {other} (--seconds N --threads N --interval S --large-per-mille N --check --verbose)")
            }
        }
        i += 2;
    }
    o
}

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// An object a worker holds: its block, layout and fill byte.
struct Object {
    ptr: usize,
    layout: Layout,
    fill: u8,
}

impl Object {
    fn new(rng: &mut Rng) -> Self {
        let size = match rng.below(1000) {
            n if n < LARGE_PER_MILLE.load(Ordering::Relaxed) as u64 => 4097 + rng.below(1 << 20) as usize,
            0..=99 => 1 + rng.below(4096) as usize,
            _ => 1 + rng.below(256) as usize,
        };
        let shifts = if rng.below(8) == 0 { 13 } else { 4 }; // up to 4 KiB, mostly up to 8 bytes
        let align = 1usize << rng.below(shifts);
        let layout = Layout::from_size_align(size, align).unwrap();
        let fill = rng.next() as u8;
        // SAFETY: a non-zero size.
        let ptr = unsafe { GLOBAL.alloc(layout) };
        assert!(!ptr.is_null(), "allocation of {size} bytes failed");
        assert_eq!(ptr as usize % align, 0, "misaligned: {size} bytes at {align}");
        // SAFETY: ours, `size` bytes.
        unsafe { ptr.write_bytes(fill, size) };
        LIVE.fetch_add(size, Ordering::Relaxed);
        Self { ptr: ptr as usize, layout, fill }
    }

    fn verify(&self) {
        // SAFETY: ours, `layout.size()` bytes, filled with `fill`.
        let bytes = unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.layout.size()) };
        if let Some(i) = bytes.iter().position(|&b| b != self.fill) {
            panic!(
                "content error: byte {i} of a {}-byte object holds {:#x}, not {:#x}",
                bytes.len(),
                bytes[i],
                self.fill
            );
        }
    }

    /// Grows or shrinks it with realloc; the common prefix must survive.
    fn resize(&mut self, rng: &mut Rng) {
        self.verify();
        let new_size = 1 + rng.below(2 * self.layout.size() as u64 + 64) as usize;
        // SAFETY: ours, with its layout; the new size is non-zero.
        let ptr = unsafe { GLOBAL.realloc(self.ptr as *mut u8, self.layout, new_size) };
        assert!(!ptr.is_null(), "realloc to {new_size} bytes failed");
        let kept = self.layout.size().min(new_size);
        // SAFETY: the realloc's result, at least `new_size` bytes.
        let bytes = unsafe { std::slice::from_raw_parts(ptr, kept) };
        assert!(bytes.iter().all(|&b| b == self.fill), "realloc lost the contents");
        // SAFETY: as above.
        unsafe { ptr.write_bytes(self.fill, new_size) };
        LIVE.fetch_sub(self.layout.size(), Ordering::Relaxed);
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        self.ptr = ptr as usize;
        self.layout = Layout::from_size_align(new_size, self.layout.align()).unwrap();
    }
}

impl Drop for Object {
    fn drop(&mut self) {
        self.verify();
        // SAFETY: ours, freed once with its layout.
        unsafe { GLOBAL.dealloc(self.ptr as *mut u8, self.layout) };
        LIVE.fetch_sub(self.layout.size(), Ordering::Relaxed);
        FREED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs after the allocator's own thread-exit work (registered first):
/// what it allocates comes from the shared heap.
struct LateDestructor;

impl Drop for LateDestructor {
    fn drop(&mut self) {
        let v: Vec<String> = (0..20).map(|i| format!("late {i}")).collect();
        assert_eq!(v[19], "late 19");
    }
}

std::thread_local! {
    static LATE: LateDestructor = const { LateDestructor };
}

/// Mailboxes: objects handed to another worker, which frees them.
type Mailboxes = Arc<Vec<Mutex<Vec<Object>>>>;

fn worker(slot: usize, seed: u64, mailboxes: Mailboxes, retire: Receiver<()>) {
    LATE.with(|_| {});
    let mut rng = Rng(seed);
    let mut held: VecDeque<Object> = VecDeque::new();
    while !STOP.load(Ordering::Relaxed) && retire.try_recv().is_err() {
        for _ in 0..64 {
            let target = TARGET.load(Ordering::Relaxed);
            match rng.below(10) {
                0..=5 if held.len() < target => held.push_back(Object::new(&mut rng)),
                6 if !held.is_empty() => {
                    let i = rng.below(held.len() as u64) as usize;
                    held[i].resize(&mut rng);
                }
                7 if !held.is_empty() => {
                    let other = rng.below(mailboxes.len() as u64) as usize;
                    let object = held.pop_front().unwrap();
                    mailboxes[other].lock().unwrap().push(object);
                }
                _ => drop(held.pop_front()),
            }
        }
        let mail = std::mem::take(&mut *mailboxes[slot].lock().unwrap());
        drop(mail); // cross-thread frees
    }
    // Retired: half of what it holds goes to the others, the rest is freed.
    let keep = held.len() / 2;
    for (i, object) in held.drain(..keep).enumerate() {
        mailboxes[i % mailboxes.len()].lock().unwrap().push(object);
    }
}

/// Forks; the child allocates, checks the arena and exits. Whether the
/// child passed within 20 s (it is killed otherwise).
fn fork_and_check() -> bool {
    // SAFETY: the child only runs the closure below and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let ok = std::panic::catch_unwind(|| {
            let v: Vec<Vec<u8>> = (0..1000).map(|i| vec![i as u8; 1 + i % 3000]).collect();
            assert!(v.iter().enumerate().all(|(i, b)| b.len() == 1 + i % 3000));
            drop(v);
            zonealloc::global_arena().unwrap().check().unwrap();
        })
        .is_ok();
        // SAFETY: leaving the child without the parent's atexit work.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child.
        if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
            return libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
        }
        if Instant::now() > deadline {
            // SAFETY: our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            // SAFETY: reaping it.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next());
    kib.and_then(|k| k.parse::<usize>().ok()).unwrap_or(0) << 10
}

fn live_threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, Iterator::count)
}

const MIB: usize = 1 << 20;

fn main() {
    let o = options();
    let started = Instant::now();
    let arena = {
        std::hint::black_box(Box::new(0u8));
        zonealloc::global_arena().expect("the global arena was built")
    };
    let purge_delay = Duration::from_secs(1);
    let mailboxes: Mailboxes = Arc::new((0..o.threads).map(|_| Mutex::new(Vec::new())).collect());
    let mut seed = 1;
    let mut spawn = |slot: usize| {
        let (tx, rx): (Sender<()>, Receiver<()>) = channel();
        let mailboxes = Arc::clone(&mailboxes);
        seed += 1;
        let seed = seed;
        let handle = std::thread::spawn(move || worker(slot, seed, mailboxes, rx));
        (tx, handle)
    };
    let mut workers: Vec<_> = (0..o.threads).map(&mut spawn).collect();

    let mut rng = Rng(7);
    let (mut forks, mut failed_forks) = (0, 0);
    let mut window: VecDeque<(Instant, usize)> = VecDeque::new();
    let mut worst: Option<String> = None;
    let (mut samples, mut violations) = (0usize, 0usize);
    let mut max_sets_over = 0isize;
    let mut next_print = started + o.interval;
    let mut next_fork = started + Duration::from_secs(1);
    let mut next_retire = started;
    let mut next_phase = started;
    let mut retired = 0;
    let capacity = arena.capacity();
    println!(
        "  secs    RSS MiB   live MiB   arena: used MiB, free resident MiB   sets/threads   cached pages   orphans   refused"
    );
    while started.elapsed() < Duration::from_secs(o.seconds) {
        let now = Instant::now();
        if now >= next_phase {
            // Working sets swing: small, then large, so memory must come back.
            let big = TARGET.load(Ordering::Relaxed) < 2000;
            TARGET.store(
                if big { 2000 + rng.below(4000) as usize } else { 50 + rng.below(200) as usize },
                Ordering::Relaxed,
            );
            next_phase = now + Duration::from_secs(3 + rng.below(5));
        }
        if now >= next_retire {
            let slot = rng.below(o.threads as u64) as usize;
            let (tx, handle) = std::mem::replace(&mut workers[slot], spawn(slot));
            let _ = tx.send(());
            handle.join().expect("a worker failed");
            retired += 1;
            next_retire = now + Duration::from_millis(100 + rng.below(400));
        }
        if now >= next_fork {
            forks += 1;
            failed_forks += usize::from(!fork_and_check());
            // Capacity down to twice what is in use, then back.
            let used: usize = arena.stats().zones.iter().map(|z| z.managed - z.free).sum::<usize>() * 4096;
            let _ = arena.set_capacity((2 * used + 256 * MIB).min(capacity));
            std::thread::sleep(Duration::from_millis(50));
            arena.set_capacity(capacity).unwrap();
            next_fork = now + Duration::from_secs(1);
        }
        // A sample every 100 ms.
        let live = LIVE.load(Ordering::Relaxed);
        window.push_back((now, live));
        while window.front().is_some_and(|&(t, _)| now.duration_since(t) > purge_delay + Duration::from_millis(500)) {
            window.pop_front();
        }
        let stats = zonealloc::global_stats().unwrap();
        let rss = rss_bytes();
        let threads = live_threads();
        max_sets_over = max_sets_over.max(stats.arena.pcp_sets as isize - threads as isize);
        let warm = started.elapsed() > Duration::from_secs(10).min(Duration::from_secs(o.seconds / 4));
        let peak_live = window.iter().map(|&(_, l)| l).max().unwrap_or(live);
        let bound = peak_live + peak_live / 2 + 64 * MIB;
        samples += 1;
        if warm && rss > bound {
            violations += 1;
            if o.verbose {
                let used: usize = stats.arena.zones.iter().map(|z| z.managed - z.free).sum();
                println!(
                    "  over the bound at {:.1} s: RSS {} MiB, live {} MiB (peak {} MiB), arena in use {} MiB, {} purges",
                    started.elapsed().as_secs_f64(),
                    rss / MIB,
                    live / MIB,
                    peak_live / MIB,
                    used * 4096 / MIB,
                    stats.arena.reclaim.purges,
                );
            }
        }
        if warm && rss > bound && worst.is_none() {
            worst = Some(format!(
                "at {:.1} s RSS {} MiB > 1.5 x {} MiB live + 64 MiB\n{stats}",
                started.elapsed().as_secs_f64(),
                rss / MIB,
                peak_live / MIB
            ));
        }
        if now >= next_print {
            let cached: usize = stats.arena.zones.iter().map(|z| z.cached).sum();
            let orphans: usize = stats.classes.iter().map(|c| c.orphans).sum();
            let used: usize = stats.arena.zones.iter().map(|z| z.managed - z.free).sum();
            let free_resident: usize = stats.arena.zones.iter().map(|z| z.free - z.untouched - z.purged).sum();
            println!(
                "{:>6.0} {:>10.1} {:>10.1} {:>12.1} {:>20.1} {:>11}/{:<6} {:>12} {:>9} {:>9}",
                started.elapsed().as_secs_f64(),
                rss as f64 / MIB as f64,
                live as f64 / MIB as f64,
                (used * 4096) as f64 / MIB as f64,
                (free_resident * 4096) as f64 / MIB as f64,
                stats.arena.pcp_sets,
                threads,
                cached,
                orphans,
                stats.refused_frees
            );
            next_print = now + o.interval;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    STOP.store(true, Ordering::Relaxed);
    for (_, handle) in workers {
        handle.join().expect("a worker failed");
    }
    for mailbox in mailboxes.iter() {
        mailbox.lock().unwrap().clear();
    }
    let reaped = zonealloc::global_reap();
    let purged = arena.purge();
    println!(
        "after the workers stopped: {} MiB live, {reaped} orphan pages reaped, {} MiB purged, RSS {} MiB",
        LIVE.load(Ordering::Relaxed) / MIB,
        purged.bytes / MIB,
        rss_bytes() / MIB
    );
    let stats = zonealloc::global_stats().unwrap();
    println!(
        "done: {} objects freed and checked, {retired} threads retired, {forks} forks ({failed_forks} failed), \
         {} refused frees, at most {max_sets_over} more cache sets than threads",
        FREED.load(Ordering::Relaxed),
        stats.refused_frees
    );
    arena.check().expect("the arena is consistent");
    if o.check {
        assert_eq!(failed_forks, 0, "a forked child failed or hung");
        assert_eq!(stats.refused_frees, 0, "frees were refused");
        assert!(max_sets_over <= 4, "{max_sets_over} cache sets more than live threads");
        if let Some(worst) = worst {
            panic!("RSS bound exceeded in {violations} of {samples} samples, first {worst}");
        }
        println!("soak checks passed");
    } else if let Some(worst) = worst {
        println!("RSS bound exceeded in {violations} of {samples} samples, first {worst}");
    }
}
