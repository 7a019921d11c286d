//! A database buffer pool on zonealloc: pages of a file cached in arena
//! blocks, a clock-sweep shrinker that writes dirty pages back before
//! freeing them, and a skewed read/write workload over a data set several
//! times the arena's capacity. Reclaim (kswapd, or the allocating thread
//! itself) keeps the arena above its min watermark by calling the shrinker.
//!
//! The frames are movable (`Movable`): compaction asks the pool to move
//! one, and the pool drops a clean frame (it can be read again) or copies a
//! dirty one under the frames lock and repoints its table entry. After the
//! churn, `Arena::compact` gives back whole 2 MiB blocks.
//!
//! cargo run --release --example page_pool
//! cargo run --release --example page_pool -- --direct-only
//! cargo run --release --example page_pool -- --compare   # BENCHMARKS.md
//!
//! Options: --page-size BYTES (a power of two >= 4096, default 16384),
//! --capacity-mib N (default 32), --dataset-x N (data set = N x capacity,
//! default 4), --ops N per thread (default 200000), --threads N (default 2),
//! --scale-factor N (the kernel's watermark_scale_factor, default 200 =
//! 2%), --direct-only (no reclaim thread: allocating threads reclaim for
//! themselves), --compare (both modes, 5 runs each, interleaved).

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zonealloc::{AllocFlags, Arena, Movable, MovableHandle, ShrinkResult, Shrinker, ShrinkerHandle, WatermarkConfig};

/// Every page starts with this header; the rest is payload.
const HEADER: usize = 16;

#[derive(Clone, Copy)]
struct Options {
    page_size: usize,
    capacity: usize,
    dataset_x: usize,
    ops: usize,
    threads: usize,
    background: bool,
    scale_factor: u32,
}

/// One cached page of the file.
struct Frame {
    page_no: u64,
    buf: NonNull<u8>,
    dirty: bool,
    referenced: bool,
}

#[derive(Default)]
struct Frames {
    slots: Vec<Option<Frame>>,
    free_slots: Vec<usize>,
    table: HashMap<u64, usize>,
    /// Slot of each frame's block, by address: what `migrate` looks up.
    by_addr: HashMap<usize, usize>,
    /// The clock hand.
    hand: usize,
}

#[derive(Default)]
struct PoolCounters {
    hits: AtomicU64,
    misses: AtomicU64,
    reads: AtomicU64,
    writebacks: AtomicU64,
    evicted: AtomicU64,
    /// Reads discarded because the page was written back meanwhile.
    raced: AtomicU64,
    /// Reads that found content other than the last version written.
    corrupt: AtomicU64,
    /// Dirty frames copied by compaction.
    moved: AtomicU64,
    /// Clean frames dropped rather than moved.
    dropped: AtomicU64,
}

/// The buffer pool. Its lock is never held across an arena allocation, so
/// the shrinker may block on it: whoever holds it never waits for reclaim.
struct BufferPool {
    arena: Arc<Arena>,
    file: File,
    order: u32,
    page_size: usize,
    frames: Mutex<Frames>,
    /// Per page: bumped after each write-back, so a read that raced with
    /// one is discarded rather than cached stale.
    epochs: Vec<AtomicU64>,
    /// Per page: the last version written, to verify every read.
    versions: Vec<AtomicU64>,
    counters: PoolCounters,
}

// SAFETY: the frames' buffers are arena blocks owned by the pool and only
// touched under the `frames` lock (or, before insertion, by the one thread
// that allocated them).
unsafe impl Send for BufferPool {}
// SAFETY: as above.
unsafe impl Sync for BufferPool {}

impl BufferPool {
    fn new(arena: Arc<Arena>, file: File, page_size: usize, pages: usize) -> Self {
        BufferPool {
            arena,
            file,
            order: (page_size / 4096).trailing_zeros(),
            page_size,
            frames: Mutex::new(Frames::default()),
            epochs: (0..pages).map(|_| AtomicU64::new(0)).collect(),
            versions: (0..pages).map(|_| AtomicU64::new(0)).collect(),
            counters: PoolCounters::default(),
        }
    }

    fn buf<'a>(&self, frame: &'a mut Frame) -> &'a mut [u8] {
        // SAFETY: the frame owns a block of `page_size` bytes; the caller
        // holds the frames lock, so nobody else touches it.
        unsafe { std::slice::from_raw_parts_mut(frame.buf.as_ptr(), self.page_size) }
    }

    /// Reads (or, with `write`, updates) page `page_no`, loading it from the
    /// file on a miss. Returns the nanoseconds spent in `alloc_pages`, if it
    /// allocated.
    fn access(&self, frames_owner: &MovableHandle<'_>, page_no: u64, write: bool) -> Option<u64> {
        let mut alloc_ns = None;
        loop {
            {
                let mut frames = self.frames.lock().unwrap();
                if let Some(&slot) = frames.table.get(&page_no) {
                    let frame = frames.slots[slot].as_mut().unwrap();
                    self.touch(frame, write);
                    self.counters.hits.fetch_add(1, Ordering::Relaxed);
                    return alloc_ns;
                }
            }
            // A miss: allocate and read outside the lock. The allocation may
            // reclaim, which calls our shrinker, which takes the lock.
            let t = Instant::now();
            let buf = frames_owner.alloc_pages(self.order, AllocFlags::empty()).expect("reclaim keeps the pool going");
            alloc_ns = Some(t.elapsed().as_nanos() as u64);
            let epoch = self.epochs[page_no as usize].load(Ordering::Acquire);
            // SAFETY: a fresh block of `page_size` bytes, ours alone.
            let bytes = unsafe { std::slice::from_raw_parts_mut(buf.as_ptr(), self.page_size) };
            self.file.read_exact_at(bytes, page_no * self.page_size as u64).expect("pread");
            self.counters.reads.fetch_add(1, Ordering::Relaxed);

            let mut frames = self.frames.lock().unwrap();
            if frames.table.contains_key(&page_no) || self.epochs[page_no as usize].load(Ordering::Acquire) != epoch {
                // Another thread loaded it, or wrote it back, meanwhile.
                drop(frames);
                self.counters.raced.fetch_add(1, Ordering::Relaxed);
                // SAFETY: allocated above at this order, never shared.
                unsafe { self.arena.free_pages(buf, self.order).unwrap() };
                continue;
            }
            self.counters.misses.fetch_add(1, Ordering::Relaxed);
            let mut frame = Frame { page_no, buf, dirty: false, referenced: false };
            self.touch(&mut frame, write);
            let slot = match frames.free_slots.pop() {
                Some(slot) => slot,
                None => {
                    frames.slots.push(None);
                    frames.slots.len() - 1
                }
            };
            frames.slots[slot] = Some(frame);
            frames.table.insert(page_no, slot);
            frames.by_addr.insert(buf.as_ptr() as usize, slot);
            return alloc_ns;
        }
    }

    /// Verifies the page against the last version written and, for a
    /// write, writes the next version. Called with the frames lock held.
    fn touch(&self, frame: &mut Frame, write: bool) {
        frame.referenced = true;
        let page_no = frame.page_no;
        let expected = self.versions[page_no as usize].load(Ordering::Relaxed);
        let buf = self.buf(frame);
        let stored_page = u64::from_le_bytes(buf[..8].try_into().unwrap());
        let stored_version = u64::from_le_bytes(buf[8..16].try_into().unwrap());
        let intact =
            if expected == 0 { stored_version == 0 } else { (stored_page, stored_version) == (page_no, expected) };
        if !intact {
            self.counters.corrupt.fetch_add(1, Ordering::Relaxed);
        }
        if write {
            let version = expected + 1;
            self.versions[page_no as usize].store(version, Ordering::Relaxed);
            buf[..8].copy_from_slice(&page_no.to_le_bytes());
            buf[8..16].copy_from_slice(&version.to_le_bytes());
            buf[HEADER..HEADER + 64].fill(version as u8);
            frame.dirty = true;
        }
    }

    fn resident_frames(&self) -> usize {
        self.frames.lock().unwrap().table.len()
    }
}

impl Shrinker for BufferPool {
    fn count(&self) -> usize {
        self.resident_frames() << self.order
    }

    /// Clock sweep: a referenced frame loses its bit and survives this
    /// pass; an unreferenced one is written back if dirty and freed.
    fn scan(&self, nr_to_scan: usize) -> ShrinkResult {
        let mut frames = self.frames.lock().unwrap();
        let want = nr_to_scan.div_ceil(1 << self.order);
        let mut freed = 0;
        let mut looked = 0;
        let n = frames.slots.len();
        while freed < want && looked < 2 * n && !frames.table.is_empty() {
            let slot = frames.hand;
            frames.hand = (frames.hand + 1) % n;
            looked += 1;
            let Some(frame) = frames.slots[slot].as_mut() else { continue };
            if frame.referenced {
                frame.referenced = false;
                continue;
            }
            let mut frame = frames.slots[slot].take().unwrap();
            frames.table.remove(&frame.page_no);
            frames.by_addr.remove(&(frame.buf.as_ptr() as usize));
            frames.free_slots.push(slot);
            if frame.dirty {
                let offset = frame.page_no * self.page_size as u64;
                self.file.write_all_at(self.buf(&mut frame), offset).expect("pwrite");
                self.epochs[frame.page_no as usize].fetch_add(1, Ordering::Release);
                self.counters.writebacks.fetch_add(1, Ordering::Relaxed);
            }
            // SAFETY: the frame's block was allocated at this order and is
            // no longer reachable from the table.
            unsafe { self.arena.free_pages(frame.buf, self.order).unwrap() };
            freed += 1;
        }
        self.counters.evicted.fetch_add(freed as u64, Ordering::Relaxed);
        ShrinkResult::Freed(freed << self.order)
    }
}

impl Movable for BufferPool {
    /// A clean frame is dropped (freed: the arena finishes the free when
    /// the move ends) and refused; a dirty one is copied under the frames
    /// lock, which every reader holds, and its entry repointed.
    fn migrate(&self, from: NonNull<u8>, to: NonNull<u8>, order: u32) -> bool {
        let mut frames = self.frames.lock().unwrap();
        let Some(&slot) = frames.by_addr.get(&(from.as_ptr() as usize)) else { return false };
        debug_assert_eq!(order, self.order);
        let frame = frames.slots[slot].as_mut().unwrap();
        if !frame.dirty {
            let page_no = frame.page_no;
            frames.slots[slot] = None;
            frames.table.remove(&page_no);
            frames.by_addr.remove(&(from.as_ptr() as usize));
            frames.free_slots.push(slot);
            // SAFETY: the frame's block, no longer reachable from the table.
            unsafe { self.arena.free_pages(from, self.order).unwrap() };
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        // SAFETY: `from` is the frame's block, `to` a fresh block of the
        // same size; nobody else touches either while we hold the lock.
        unsafe { std::ptr::copy_nonoverlapping(from.as_ptr(), to.as_ptr(), self.page_size) };
        frame.buf = to;
        frames.by_addr.remove(&(from.as_ptr() as usize));
        frames.by_addr.insert(to.as_ptr() as usize, slot);
        self.counters.moved.fetch_add(1, Ordering::Relaxed);
        true
    }
}

/// What halving the capacity after the churn did.
struct Halved {
    frames_before: usize,
    frames_after: usize,
    above_high: bool,
}

/// A database shrinks its budget while running: halve the capacity and
/// watch reclaim bring the pool down to fit.
fn halve_capacity(arena: &Arena, pool: &BufferPool, frames_owner: &MovableHandle<'_>, opts: Options) -> Halved {
    let frames_before = pool.resident_frames();
    arena.set_capacity(opts.capacity / 2).expect("a smaller capacity");
    // kswapd works in the background; without it, the next allocation
    // reclaims directly.
    let deadline = Instant::now() + Duration::from_secs(2);
    while opts.background
        && arena.stats().zones.iter().any(|z| z.usable_free() < z.watermarks.high)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    if !opts.background {
        pool.access(frames_owner, 0, false);
    }
    Halved {
        frames_before,
        frames_after: pool.resident_frames(),
        above_high: arena.stats().zones.iter().all(|z| z.usable_free() >= z.watermarks.high),
    }
}

/// What compacting the halved pool gave back.
struct CompactOutcome {
    huge_before: usize,
    huge_after: usize,
    possible: usize,
    migrated_pages: u64,
    seconds: f64,
}

/// Free 2 MiB blocks in the arena (a free 4 MiB block counts twice).
fn huge_blocks(arena: &Arena) -> usize {
    let per_zone =
        |z: &zonealloc::ZoneStats| z.free_blocks.iter().enumerate().skip(9).map(|(o, n)| n << (o - 9)).sum::<usize>();
    arena.stats().zones.iter().map(per_zone).sum()
}

/// A small xorshift generator: the workload is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

struct Outcome {
    seconds: f64,
    ops: usize,
    alloc_ns: Vec<u64>,
    min_headroom: i64,
    compact: CompactOutcome,
    halved: Halved,
    pool: Arc<BufferPool>,
    _shrinker: ShrinkerHandle,
}

fn run(opts: Options, quiet: bool) -> Result<Outcome, Box<dyn std::error::Error>> {
    let arena = Arc::new(
        Arena::builder()
            .region_size(opts.capacity)
            .background_reclaim(opts.background)
            // A wider low..high gap than the kernel's 0.1% default, as a
            // database host would set watermark_scale_factor: kswapd then
            // reclaims in larger batches, ahead of the allocating threads.
            .watermarks(WatermarkConfig::Kernel { min_free_kbytes: None, scale_factor: opts.scale_factor })
            .purge_delay(Some(Duration::from_millis(200)))
            .build()?,
    );
    let pages = opts.capacity * opts.dataset_x / opts.page_size;
    let path = std::env::temp_dir().join(format!("zonealloc-page-pool-{}.db", std::process::id()));
    let file = File::options().read(true).write(true).create(true).truncate(true).open(&path)?;
    file.set_len((pages * opts.page_size) as u64)?;
    std::fs::remove_file(&path)?; // unlinked: gone when the pool is
    let pool = Arc::new(BufferPool::new(Arc::clone(&arena), file, opts.page_size, pages));
    let handle = arena.register_shrinker(pool.clone());
    let frames_owner = arena.register_movable(pool.clone());
    if !quiet {
        let z = &arena.stats().zones[0];
        println!(
            "arena {} MiB in {} zones (zone 0 watermarks min {} low {} high {} pages); \
             file of {pages} pages of {} KiB = {} MiB ({}x the arena); {} threads x {} ops, reclaim: {}",
            opts.capacity >> 20,
            arena.nr_zones(),
            z.watermarks.min,
            z.watermarks.low,
            z.watermarks.high,
            opts.page_size >> 10,
            (pages * opts.page_size) >> 20,
            opts.dataset_x,
            opts.threads,
            opts.ops,
            if opts.background { "kswapd + direct" } else { "direct only" },
        );
    }

    // A monitor samples how close each zone comes to its min watermark.
    let done = AtomicBool::new(false);
    let min_headroom = AtomicUsize::new(usize::MAX);
    let start = Instant::now();
    let alloc_ns = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                for z in arena.stats().zones {
                    let headroom = z.usable_free() as i64 - z.watermarks.min as i64;
                    min_headroom.fetch_min(headroom.max(0) as usize, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let workers: Vec<_> = (0..opts.threads)
            .map(|t| {
                let (pool, frames_owner) = (&pool, &frames_owner);
                s.spawn(move || {
                    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((t as u64 + 1) * 0x1000_0001));
                    let hot = (pages / 5).max(1) as u64;
                    let mut latencies = Vec::new();
                    for _ in 0..opts.ops {
                        let r = rng.next();
                        // 80% of accesses go to a hot fifth of the file.
                        let page_no = if r % 10 < 8 { (r >> 8) % hot } else { (r >> 8) % pages as u64 };
                        let write = (r >> 4) % 10 < 3;
                        if let Some(ns) = pool.access(frames_owner, page_no, write) {
                            latencies.push(ns);
                        }
                    }
                    latencies
                })
            })
            .collect();
        let mut all = Vec::new();
        for w in workers {
            all.extend(w.join().unwrap());
        }
        done.store(true, Ordering::Relaxed);
        all
    });
    let seconds = start.elapsed().as_secs_f64();
    let headroom = min_headroom.load(Ordering::Relaxed);
    // The pool shrinks to half the arena: its frames are left all over it.
    // How many 2 MiB blocks are free then, and how many after compacting.
    let halved = halve_capacity(&arena, &pool, &frames_owner, opts);
    arena.drain_pcp();
    let huge_before = huge_blocks(&arena);
    let t = Instant::now();
    let report = arena.compact();
    let compact = CompactOutcome {
        huge_before,
        huge_after: huge_blocks(&arena),
        possible: arena.stats().zones.iter().map(|z| z.free >> 9).sum(),
        migrated_pages: report.migrated_pages,
        seconds: t.elapsed().as_secs_f64(),
    };
    drop(frames_owner);
    Ok(Outcome {
        seconds,
        ops: opts.ops * opts.threads,
        alloc_ns,
        min_headroom: if headroom == usize::MAX { 0 } else { headroom as i64 },
        compact,
        halved,
        pool,
        _shrinker: handle,
    })
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn report(opts: Options, outcome: &mut Outcome) -> Result<(), Box<dyn std::error::Error>> {
    let pool = &outcome.pool;
    let c = &pool.counters;
    let hits = c.hits.load(Ordering::Relaxed);
    let misses = c.misses.load(Ordering::Relaxed);
    outcome.alloc_ns.sort_unstable();
    println!(
        "\n{} ops in {:.2} s: {:.0} ops/s; hit ratio {:.1}% ({hits} hits, {misses} misses)",
        outcome.ops,
        outcome.seconds,
        outcome.ops as f64 / outcome.seconds,
        100.0 * hits as f64 / (hits + misses).max(1) as f64
    );
    println!(
        "pool: {} frames resident, {} reads, {} evicted by the shrinker, {} dirty pages written back, {} reads discarded (raced a write-back)",
        pool.resident_frames(),
        c.reads.load(Ordering::Relaxed),
        c.evicted.load(Ordering::Relaxed),
        c.writebacks.load(Ordering::Relaxed),
        c.raced.load(Ordering::Relaxed),
    );
    println!(
        "alloc_pages latency over {} allocations: p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns",
        outcome.alloc_ns.len(),
        percentile(&outcome.alloc_ns, 0.50),
        percentile(&outcome.alloc_ns, 0.99),
        percentile(&outcome.alloc_ns, 0.999),
        outcome.alloc_ns.last().copied().unwrap_or(0),
    );
    println!("lowest sampled free pages above a zone's min watermark: {}", outcome.min_headroom);
    let corrupt = c.corrupt.load(Ordering::Relaxed);
    println!("every read verified against the last version written: {corrupt} mismatches");
    if corrupt != 0 {
        return Err("the pool returned stale or corrupt data".into());
    }
    let arena = &pool.arena;
    arena.check()?;
    let r = arena.stats().reclaim;
    println!(
        "reclaim: {} kswapd wake-ups, {} direct reclaims ({:?}), shrinker scanned {} / freed {} pages, {} OOM events",
        r.kswapd_wakeups, r.direct_reclaims, r.direct_reclaim_time, r.shrinker_scanned, r.shrinker_freed, r.oom_events
    );

    let h = &outcome.halved;
    println!(
        "set_capacity({} MiB): pool went from {} to {} frames; zones now at or above high: {}",
        opts.capacity >> 21,
        h.frames_before,
        h.frames_after,
        h.above_high
    );
    let k = &outcome.compact;
    println!(
        "compact: free 2 MiB blocks {} -> {} of {} possible in {:.1} ms; {} dirty frames moved \
         ({} pages), {} clean frames dropped",
        k.huge_before,
        k.huge_after,
        k.possible,
        k.seconds * 1e3,
        c.moved.load(Ordering::Relaxed),
        k.migrated_pages,
        c.dropped.load(Ordering::Relaxed),
    );
    Ok(())
}

fn parse() -> Result<(Options, bool), String> {
    let mut opts = Options {
        page_size: 16384,
        capacity: 32 << 20,
        dataset_x: 4,
        ops: 200_000,
        threads: 2,
        background: true,
        scale_factor: 200,
    };
    let mut compare = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || -> Result<usize, String> {
            args.next().and_then(|v| v.parse().ok()).ok_or(format!("{arg} needs a number"))
        };
        match arg.as_str() {
            "--page-size" => opts.page_size = value()?,
            "--capacity-mib" => opts.capacity = value()? << 20,
            "--dataset-x" => opts.dataset_x = value()?,
            "--ops" => opts.ops = value()?,
            "--threads" => opts.threads = value()?,
            "--scale-factor" => opts.scale_factor = value()? as u32,
            "--direct-only" => opts.background = false,
            "--compare" => compare = true,
            _ => return Err(format!("unknown option {arg}")),
        }
    }
    if !opts.page_size.is_power_of_two() || opts.page_size < 4096 {
        return Err("--page-size must be a power of two of at least 4096".into());
    }
    Ok((opts, compare))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (opts, compare) = parse()?;
    if !compare {
        let mut outcome = run(opts, false)?;
        return report(opts, &mut outcome);
    }
    // Both modes, interleaved so that machine noise hits both alike.
    let mut results: [Vec<(f64, u64)>; 2] = [Vec::new(), Vec::new()];
    for round in 0..5 {
        for (i, background) in [true, false].into_iter().enumerate() {
            let mut outcome = run(Options { background, ..opts }, round > 0 || i > 0)?;
            outcome.alloc_ns.sort_unstable();
            assert_eq!(outcome.pool.counters.corrupt.load(Ordering::Relaxed), 0);
            results[i].push((outcome.ops as f64 / outcome.seconds, percentile(&outcome.alloc_ns, 0.99)));
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut summary = Vec::new();
    for (i, name) in ["kswapd + direct", "direct only"].into_iter().enumerate() {
        let mut throughput: Vec<f64> = results[i].iter().map(|r| r.0).collect();
        let mut p99: Vec<f64> = results[i].iter().map(|r| r.1 as f64).collect();
        let (t, p) = (median(&mut throughput), median(&mut p99));
        println!("{name:<16} median of 5: {t:>10.0} ops/s, alloc p99 {p:>8.0} ns");
        summary.push((t, p));
    }
    println!(
        "background / direct-only: throughput x{:.2}, alloc p99 x{:.2}",
        summary[0].0 / summary[1].0,
        summary[0].1 / summary[1].1
    );
    Ok(())
}
