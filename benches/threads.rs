//! Two-thread page workloads, zonealloc side by side with its peers.
//!
//! cargo bench --bench threads
//!
//! - `scaling`: one thread, then two threads, each allocating and freeing
//!   its own order-0 pages in batches of 64; throughput is operations per
//!   second over all threads, so perfect scaling doubles it.
//! - `producer_consumer`: one thread allocates order-0 pages and hands them
//!   through a lock-free single-producer ring to a second thread that frees
//!   them: every free is a cross-thread free.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::hint::black_box;
use std::ptr::NonNull;
use std::sync::Barrier;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use crossbeam_utils::CachePadded;
use zonealloc::{AllocFlags, Arena};

trait PageAlloc: Sync {
    fn alloc(&self) -> NonNull<u8>;
    /// # Safety
    /// `ptr` came from `alloc` and is not used again.
    unsafe fn free(&self, ptr: NonNull<u8>);
}

impl PageAlloc for Arena {
    #[inline]
    fn alloc(&self) -> NonNull<u8> {
        self.alloc_pages(0, AllocFlags::empty()).expect("arena out of memory")
    }
    #[inline]
    unsafe fn free(&self, ptr: NonNull<u8>) {
        // SAFETY: forwarded from the caller.
        unsafe { self.free_pages(ptr, 0) }.expect("valid free");
    }
}

struct Peer<A>(A);
const PAGE: Layout = match Layout::from_size_align(4096, 4096) {
    Ok(l) => l,
    Err(_) => panic!(),
};

impl<A: GlobalAlloc + Sync> PageAlloc for Peer<A> {
    #[inline]
    fn alloc(&self) -> NonNull<u8> {
        // SAFETY: non-zero size.
        NonNull::new(unsafe { self.0.alloc(PAGE) }).expect("peer out of memory")
    }
    #[inline]
    unsafe fn free(&self, ptr: NonNull<u8>) {
        // SAFETY: allocated by this allocator with PAGE.
        unsafe { self.0.dealloc(ptr.as_ptr(), PAGE) };
    }
}

trait Workload {
    fn run<A: PageAlloc>(&mut self, name: &str, a: &A);
}

fn for_each_allocator(w: &mut impl Workload) {
    w.run("zonealloc", &Arena::builder().region_size(8 << 30).build().unwrap());
    w.run("mimalloc", &Peer(mimalloc::MiMalloc));
    w.run("jemalloc", &Peer(tikv_jemallocator::Jemalloc));
    w.run("system", &Peer(System));
}

/// Each of `threads` threads runs `iters` rounds of: allocate 64 pages, free them.
fn own_pages<A: PageAlloc>(a: &A, threads: usize, iters: u64) -> Duration {
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        for _ in 0..threads {
            let barrier = &barrier;
            s.spawn(move || {
                let mut live = [NonNull::<u8>::dangling(); 64];
                barrier.wait();
                for _ in 0..iters {
                    for slot in live.iter_mut() {
                        *slot = a.alloc();
                    }
                    for p in live {
                        // SAFETY: allocated just above.
                        unsafe { a.free(black_box(p)) };
                    }
                }
                barrier.wait();
            });
        }
        barrier.wait();
        let start = Instant::now();
        barrier.wait();
        start.elapsed()
    })
}

struct Scaling<'c> {
    group: criterion::BenchmarkGroup<'c, criterion::measurement::WallTime>,
    threads: usize,
}

impl Workload for Scaling<'_> {
    fn run<A: PageAlloc>(&mut self, name: &str, a: &A) {
        let threads = self.threads;
        self.group
            .bench_function(BenchmarkId::new(name, threads), |b| b.iter_custom(|iters| own_pages(a, threads, iters)));
    }
}

fn scaling(c: &mut Criterion) {
    for threads in [1, 2] {
        let mut group = c.benchmark_group(format!("own_pages_{threads}t"));
        // 128 operations per round per thread: throughput counts all threads.
        group.throughput(Throughput::Elements(128 * threads as u64));
        let mut w = Scaling { group, threads };
        for_each_allocator(&mut w);
        w.group.finish();
    }
}

const BATCH: usize = 64;

/// A bounded single-producer single-consumer ring of batches of addresses:
/// one index update per 64 pages, so the hand-off costs little and the
/// allocators dominate the measurement.
struct Spsc {
    slots: Box<[UnsafeCell<[usize; BATCH]>]>,
    head: CachePadded<AtomicUsize>,
    tail: CachePadded<AtomicUsize>,
}

// SAFETY: a slot is written only by the producer before it publishes `tail`
// (Release) and read only by the consumer after it sees it (Acquire), and
// reused only after the consumer publishes `head` past it.
unsafe impl Sync for Spsc {}

impl Spsc {
    fn new(capacity: usize) -> Self {
        assert!(capacity.is_power_of_two());
        Self {
            slots: (0..capacity).map(|_| UnsafeCell::new([0; BATCH])).collect(),
            head: CachePadded::new(AtomicUsize::new(0)),
            tail: CachePadded::new(AtomicUsize::new(0)),
        }
    }

    fn push(&self, batch: [usize; BATCH]) {
        let tail = self.tail.load(Ordering::Relaxed);
        while tail - self.head.load(Ordering::Acquire) == self.slots.len() {
            std::hint::spin_loop();
        }
        // SAFETY: the slot is free (see the Sync impl).
        unsafe { *self.slots[tail & (self.slots.len() - 1)].get() = batch };
        self.tail.store(tail + 1, Ordering::Release);
    }

    fn pop(&self) -> [usize; BATCH] {
        let head = self.head.load(Ordering::Relaxed);
        while self.tail.load(Ordering::Acquire) == head {
            std::hint::spin_loop();
        }
        // SAFETY: the slot was published (see the Sync impl).
        let batch = unsafe { *self.slots[head & (self.slots.len() - 1)].get() };
        self.head.store(head + 1, Ordering::Release);
        batch
    }
}

/// One thread allocates `iters * 64` pages and hands them, 64 at a time, to
/// the other thread, which frees them: every free is a cross-thread free.
fn producer_consumer<A: PageAlloc>(a: &A, iters: u64) -> Duration {
    let ring = Spsc::new(16);
    let barrier = Barrier::new(3);
    std::thread::scope(|s| {
        let (ring_p, barrier_p) = (&ring, &barrier);
        s.spawn(move || {
            barrier_p.wait();
            for _ in 0..iters {
                let mut batch = [0; BATCH];
                for slot in &mut batch {
                    *slot = a.alloc().as_ptr() as usize;
                }
                ring_p.push(batch);
            }
            barrier_p.wait();
        });
        let (ring_c, barrier_c) = (&ring, &barrier);
        s.spawn(move || {
            barrier_c.wait();
            for _ in 0..iters {
                for p in ring_c.pop() {
                    // SAFETY: allocated by the producer, freed once here.
                    unsafe { a.free(NonNull::new(p as *mut u8).unwrap()) };
                }
            }
            barrier_c.wait();
        });
        barrier.wait();
        let start = Instant::now();
        barrier.wait();
        start.elapsed()
    })
}

struct ProducerConsumer<'c> {
    group: criterion::BenchmarkGroup<'c, criterion::measurement::WallTime>,
}

impl Workload for ProducerConsumer<'_> {
    fn run<A: PageAlloc>(&mut self, name: &str, a: &A) {
        self.group.bench_function(BenchmarkId::new(name, 64), |b| b.iter_custom(|iters| producer_consumer(a, iters)));
    }
}

fn handoff(c: &mut Criterion) {
    let mut group = c.benchmark_group("producer_consumer");
    // Per page: one allocation in one thread, one free in the other.
    group.throughput(Throughput::Elements(64));
    let mut w = ProducerConsumer { group };
    for_each_allocator(&mut w);
    w.group.finish();
}

fn config() -> Criterion {
    Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3)).sample_size(20)
}

criterion_group! {
    name = threads;
    config = config();
    targets = scaling, handoff
}
criterion_main!(threads);
