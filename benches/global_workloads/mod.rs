//! Whole-program workloads for the global-allocator comparison. Each
//! `benches/global_<allocator>.rs` installs one allocator as
//! `#[global_allocator]` and runs exactly this code, so the four binaries
//! differ only in the allocator.
//!
//! `cargo bench --bench global_zonealloc` (and `_mimalloc`, `_jemalloc`,
//! `_system`) for the criterion medians; with `GLOBAL_RSS=<workload>` a
//! binary runs that workload once and prints its time and peak RSS instead
//! (`.ci/global-bench` alternates the binaries run that way).

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion};

/// A small xorshift generator, the same sequence in every binary.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn btree_strings() {
    let mut map = BTreeMap::new();
    for i in 0..1_000_000u64 {
        map.insert(i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_string(), i);
    }
    black_box(&map);
}

fn hashmap_churn() {
    let mut rng = Rng(1);
    let mut map: HashMap<u64, Vec<u64>> = HashMap::new();
    for i in 0..400_000u64 {
        let key = rng.next() % 20_000;
        map.entry(key).or_default().push(i);
        if i % 4 == 0 {
            map.remove(&(rng.next() % 20_000));
        }
    }
    black_box(&map);
}

fn vec_churn() {
    let mut rng = Rng(2);
    let mut live: Vec<Vec<u8>> = (0..10_000).map(|_| Vec::new()).collect();
    for _ in 0..1_000_000 {
        let r = rng.next();
        let slot = (r % live.len() as u64) as usize;
        live[slot] = vec![r as u8; 1 + ((r >> 20) % 511) as usize];
    }
    black_box(&live);
}

fn strings() {
    let mut v: Vec<String> =
        (0..500_000u64).map(|i| format!("item-{:x}-{}", i.wrapping_mul(2654435761), i % 97)).collect();
    v.sort_unstable();
    let joined = v.join(",");
    black_box(joined.len());
}

fn vec_push() {
    for round in 0..10u64 {
        let mut v = Vec::new();
        for i in 0..1_000_000u64 {
            v.push(i ^ round);
        }
        black_box(&v);
    }
}

fn producer_consumer() {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u64>>(1024);
    let producer = std::thread::spawn(move || {
        for i in 0..200_000u64 {
            tx.send(vec![i; 1 + (i % 32) as usize]).unwrap();
        }
    });
    let mut sum = 0u64;
    for v in rx {
        sum = sum.wrapping_add(v[0]);
    }
    producer.join().unwrap();
    black_box(sum);
}

fn two_threads_churn() {
    let threads: Vec<_> = (0..2u64)
        .map(|t| {
            std::thread::spawn(move || {
                let mut rng = Rng(t + 10);
                let mut live: Vec<Vec<u8>> = (0..4096).map(|_| Vec::new()).collect();
                for _ in 0..500_000 {
                    let r = rng.next();
                    let slot = (r % live.len() as u64) as usize;
                    live[slot] = Vec::with_capacity(1 + ((r >> 16) % 2048) as usize);
                }
                black_box(&live);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

fn buffers() {
    let mut rng = Rng(3);
    let mut live: Vec<Vec<u8>> = (0..64).map(|_| Vec::new()).collect();
    for _ in 0..20_000 {
        let r = rng.next();
        let size = 16 << 10 << ((r >> 8) % 7); // 16 KiB .. 1 MiB
        let slot = (r % live.len() as u64) as usize;
        // Filled, as a buffer being read into would be (a plain write, not
        // calloc's zeroing, which some allocators skip for fresh memory).
        let mut buf = Vec::with_capacity(size);
        buf.extend(std::iter::repeat_n(0x5au8, size));
        live[slot] = buf;
    }
    black_box(&live);
}

/// One small allocation: what every process run of a workload pays
/// before its work (the allocator's set-up; for zonealloc, building the
/// global arena and starting its kswapd).
fn baseline() {
    black_box(Box::new(black_box(1u64)));
}

/// The workloads, by name.
pub const WORKLOADS: [(&str, fn()); 9] = [
    ("baseline", baseline),
    ("btree_1m_strings", btree_strings),
    ("hashmap_churn", hashmap_churn),
    ("vec_u8_churn_1_512", vec_churn),
    ("strings_format_sort_join", strings),
    ("vec_push_realloc", vec_push),
    ("producer_consumer_2t", producer_consumer),
    ("churn_2t_up_to_2k", two_threads_churn),
    ("buffers_16k_1m", buffers),
];

/// Peak RSS of this process image, from `VmHWM` in /proc/self/status:
/// unlike `getrusage`'s `ru_maxrss`, which Linux carries across `execve`
/// (so a binary started by cargo would report cargo's own peak), the
/// high-water mark belongs to the address space, which exec replaces.
fn peak_rss_kib() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM");
    line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).expect("VmHWM in kB")
}

/// The bench binary's `main`: criterion, or one run of one workload.
pub fn main(allocator: &str) {
    if let Ok(name) = std::env::var("GLOBAL_RSS") {
        let (_, workload) = WORKLOADS.iter().find(|(n, _)| *n == name).expect("unknown workload");
        let start = std::time::Instant::now();
        workload();
        let seconds = start.elapsed().as_secs_f64();
        println!("{allocator} {name} peak_rss_kib {} seconds {seconds:.4}", peak_rss_kib());
        return;
    }
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    for (name, workload) in WORKLOADS {
        let mut group = c.benchmark_group(format!("global_{name}"));
        group.bench_function(BenchmarkId::new(allocator, 1), |b| b.iter(workload));
        group.finish();
    }
    c.final_summary();
}
