//! Page-allocation workloads, zonealloc side by side with its peers.
//!
//! Peers allocate through `GlobalAlloc` with size = alignment = block size,
//! which is what a page allocator's caller needs. The bench binary's own
//! global allocator stays `System`, so criterion's allocations do not
//! disturb the allocators being measured.
//!
//! cargo bench --bench pages
//!
//! With `PAGES_COUNT=<workload>` the binary runs one zonealloc workload a
//! fixed number of times instead, for instruction counts under callgrind
//! (`.ci/instruction-counts`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group};
use zonealloc::{AllocFlags, Arena};

/// What the workloads need of an allocator.
trait PageAlloc {
    fn alloc(&self, order: u32) -> NonNull<u8>;
    /// # Safety
    /// `ptr` came from `alloc(order)` and is not used again.
    unsafe fn free(&self, ptr: NonNull<u8>, order: u32);
}

impl PageAlloc for Arena {
    #[inline]
    fn alloc(&self, order: u32) -> NonNull<u8> {
        self.alloc_pages(order, AllocFlags::empty()).expect("arena out of memory")
    }
    #[inline]
    unsafe fn free(&self, ptr: NonNull<u8>, order: u32) {
        // SAFETY: forwarded from the caller.
        unsafe { self.free_pages(ptr, order) }.expect("valid free");
    }
}

/// A `GlobalAlloc` asked for page blocks.
struct Peer<A>(A);

fn page_layout(order: u32) -> Layout {
    Layout::from_size_align(4096 << order, 4096 << order).unwrap()
}

impl<A: GlobalAlloc> PageAlloc for Peer<A> {
    #[inline]
    fn alloc(&self, order: u32) -> NonNull<u8> {
        // SAFETY: the layout has a non-zero size.
        NonNull::new(unsafe { self.0.alloc(page_layout(order)) }).expect("peer out of memory")
    }
    #[inline]
    unsafe fn free(&self, ptr: NonNull<u8>, order: u32) {
        // SAFETY: allocated by this allocator with this layout.
        unsafe { self.0.dealloc(ptr.as_ptr(), page_layout(order)) };
    }
}

/// glibc's `malloc` asked for the size alone: what a program that needs
/// 2 MiB but not its alignment pays (after the first free raised glibc's
/// mmap threshold, its heap serves the block).
struct Malloc;

impl PageAlloc for Malloc {
    #[inline]
    fn alloc(&self, order: u32) -> NonNull<u8> {
        // SAFETY: plain malloc of a non-zero size.
        NonNull::new(unsafe { libc::malloc(4096 << order) }.cast()).expect("malloc out of memory")
    }
    #[inline]
    unsafe fn free(&self, ptr: NonNull<u8>, _order: u32) {
        // SAFETY: from malloc above, freed once.
        unsafe { libc::free(ptr.as_ptr().cast()) };
    }
}

/// buddy_system_allocator's `LockedHeap` over a 4 GiB reservation.
fn bsa_heap() -> Peer<buddy_system_allocator::LockedHeap<33>> {
    let size = 4usize << 30;
    let map = memmap2::MmapOptions::new().len(size).no_reserve_swap().map_anon().unwrap();
    let heap = buddy_system_allocator::LockedHeap::<33>::new();
    // SAFETY: the mapping is ours and leaked for the process's life.
    unsafe { heap.lock().init(map.as_ptr() as usize, size) };
    std::mem::forget(map);
    Peer(heap)
}

fn arena() -> Arena {
    Arena::builder().region_size(8 << 30).build().unwrap()
}

/// The same arena without per-thread caches: every operation takes a zone lock.
fn arena_without_pcp() -> Arena {
    Arena::builder().region_size(8 << 30).pcp(zonealloc::PcpConfig::Disabled).build().unwrap()
}

/// A workload, run once per allocator; generic so each allocator's calls
/// are inlined and measured without indirection.
trait Workload {
    fn run<A: PageAlloc>(&mut self, name: &str, a: &A);
}

/// Runs `w` for every allocator, in the same order each time.
fn for_each_allocator(w: &mut impl Workload) {
    w.run("zonealloc", &arena());
    w.run("zonealloc-nopcp", &arena_without_pcp());
    w.run("mimalloc", &Peer(mimalloc::MiMalloc));
    w.run("jemalloc", &Peer(tikv_jemallocator::Jemalloc));
    w.run("system", &Peer(System));
    w.run("buddy_system_allocator", &bsa_heap());
}

/// The workloads' random numbers: xorshift64, the same sequence in the
/// criterion and the fixed-count runs.
struct Xorshift(u64);

impl Xorshift {
    fn new() -> Self {
        Self(0x2545_f491_4f6c_dd1d)
    }

    #[inline(always)]
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// One allocate+free pair of `order`.
#[inline(always)]
fn pair_once<A: PageAlloc>(a: &A, order: u32) {
    let p = a.alloc(black_box(order));
    // SAFETY: just allocated with this order.
    unsafe { a.free(black_box(p), order) };
}

/// Live blocks in the random-orders workload.
const RANDOM_LIVE: usize = 256;

/// One step of the random-orders workload: the block in a random slot of
/// `live` is freed and replaced by one of a random order 0..=9.
#[inline(always)]
fn replace_random<A: PageAlloc>(a: &A, live: &mut [(NonNull<u8>, u32); RANDOM_LIVE], r: u64) {
    let slot = (r % RANDOM_LIVE as u64) as usize;
    let order = ((r >> 8) % 10) as u32;
    let (p, o) = live[slot];
    // SAFETY: each slot holds a live block with its order.
    unsafe { a.free(p, o) };
    live[slot] = (a.alloc(order), order);
}

struct Pair<'c> {
    group: criterion::BenchmarkGroup<'c, criterion::measurement::WallTime>,
    order: u32,
}

impl Workload for Pair<'_> {
    fn run<A: PageAlloc>(&mut self, name: &str, a: &A) {
        let order = self.order;
        // Steady state: one block of the same order stays live next to the
        // one cycled, as in any heap that is in use.
        let neighbour = a.alloc(order);
        self.group.bench_function(BenchmarkId::new(name, 4096 << order), |b| b.iter(|| pair_once(a, order)));
        // SAFETY: allocated above with this order.
        unsafe { a.free(neighbour, order) };
    }
}

fn pair(c: &mut Criterion, order: u32) {
    let mut w = Pair { group: c.benchmark_group(format!("order{order}_pair")), order };
    for_each_allocator(&mut w);
    w.group.finish();
}

fn order0_pair(c: &mut Criterion) {
    pair(c, 0);
}

/// Also against glibc's unaligned `malloc(2 MiB)`.
fn order9_pair(c: &mut Criterion) {
    let mut w = Pair { group: c.benchmark_group("order9_pair"), order: 9 };
    for_each_allocator(&mut w);
    w.run("system-unaligned", &Malloc);
    w.group.finish();
}

/// Orders 4 to 8 (64 KiB to 1 MiB, aligned to their size), against the
/// general-purpose allocators only: one group per order.
fn high_order_pairs(c: &mut Criterion) {
    for order in 4..=8 {
        let mut w = Pair { group: c.benchmark_group(format!("order{order}_pair")), order };
        w.run("zonealloc", &arena());
        w.run("mimalloc", &Peer(mimalloc::MiMalloc));
        w.run("jemalloc", &Peer(tikv_jemallocator::Jemalloc));
        w.group.finish();
    }
}

/// The worst case for a buddy allocator: a fully coalesced zone, so every
/// order-0 pair splits a 4 MiB block down and merges it back (10 + 10 steps).
/// Without the per-thread caches, which would hide it.
fn order0_pair_coalesced(c: &mut Criterion) {
    let mut group = c.benchmark_group("order0_pair_coalesced");
    let zone = arena_without_pcp();
    group.bench_function(BenchmarkId::new("zonealloc-nopcp", 4096), |b| {
        b.iter(|| {
            let p = zone.alloc(black_box(0));
            // SAFETY: just allocated at order 0.
            unsafe { zone.free(black_box(p), 0) };
        })
    });
    group.finish();
}

struct Batch<'c> {
    group: criterion::BenchmarkGroup<'c, criterion::measurement::WallTime>,
}

impl Workload for Batch<'_> {
    fn run<A: PageAlloc>(&mut self, name: &str, a: &A) {
        let mut live = Vec::with_capacity(1000);
        self.group.bench_function(BenchmarkId::new(name, 1000), |b| {
            b.iter(|| {
                for _ in 0..1000 {
                    live.push(a.alloc(0));
                }
                for p in live.drain(..) {
                    // SAFETY: allocated above at order 0.
                    unsafe { a.free(p, 0) };
                }
            })
        });
    }
}

/// 1000 order-0 allocations, then 1000 frees; throughput counts 2000 operations.
fn batch1000(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch1000_order0");
    group.throughput(criterion::Throughput::Elements(2000));
    let mut w = Batch { group };
    for_each_allocator(&mut w);
    w.group.finish();
}

struct RandomOrders<'c> {
    group: criterion::BenchmarkGroup<'c, criterion::measurement::WallTime>,
}

impl Workload for RandomOrders<'_> {
    fn run<A: PageAlloc>(&mut self, name: &str, a: &A) {
        let mut rng = Xorshift::new();
        let mut live: [(NonNull<u8>, u32); RANDOM_LIVE] = std::array::from_fn(|_| {
            let order = (rng.next() % 10) as u32;
            (a.alloc(order), order)
        });
        self.group.bench_function(BenchmarkId::new(name, RANDOM_LIVE), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    replace_random(a, &mut live, rng.next());
                }
                start.elapsed()
            })
        });
        for (p, o) in live {
            // SAFETY: as above.
            unsafe { a.free(p, o) };
        }
    }
}

/// 256 live blocks of random orders 0..=9; each operation frees one at
/// random and allocates a new random order in its place.
fn random_orders(c: &mut Criterion) {
    let mut group = c.benchmark_group("random_orders_0_9_live256");
    group.throughput(criterion::Throughput::Elements(1));
    let mut w = RandomOrders { group };
    for_each_allocator(&mut w);
    w.group.finish();
}

fn config() -> Criterion {
    Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2)).sample_size(30)
}

criterion_group! {
    name = pages;
    config = config();
    targets = order0_pair, order0_pair_coalesced, order9_pair, high_order_pairs, batch1000, random_orders
}
/// The fixed-count workloads of `PAGES_COUNT`, zonealloc only.
fn count(workload: &str) {
    let a = arena();
    let pairs = |order: u32| {
        let neighbour = a.alloc(order);
        for _ in 0..100_000 {
            pair_once(&a, order);
        }
        // SAFETY: allocated above with this order.
        unsafe { a.free(neighbour, order) };
    };
    match workload {
        "order0_pair" => pairs(0),
        "order3_pair" => pairs(3),
        "order4_pair" => pairs(4),
        "order9_pair" => pairs(9),
        "batch1000" => {
            let mut live = Vec::with_capacity(1000);
            for _ in 0..100 {
                live.extend((0..1000).map(|_| a.alloc(0)));
                for p in live.drain(..) {
                    // SAFETY: allocated above at order 0.
                    unsafe { a.free(p, 0) };
                }
            }
        }
        "random_orders" => {
            let mut rng = Xorshift::new();
            let mut live: [(NonNull<u8>, u32); RANDOM_LIVE] = std::array::from_fn(|_| (a.alloc(0), 0));
            for _ in 0..100_000 {
                replace_random(&a, &mut live, rng.next());
            }
            for (p, o) in live {
                // SAFETY: as above.
                unsafe { a.free(p, o) };
            }
        }
        other => panic!("unknown PAGES_COUNT workload {other}"),
    }
}

fn main() {
    if let Ok(workload) = std::env::var("PAGES_COUNT") {
        count(&workload);
        return;
    }
    pages();
    Criterion::default().configure_from_args().final_summary();
}
