//! NUMA nodes in an arena, on simulated topologies with threads pinned to
//! this machine's CPUs (two are enough: a third and fourth node are
//! memory-only), and the binding of a detected topology: placement,
//! fallback by distance, `THISNODE`, `alloc_pages_node`, `node_of`, and
//! `numastat`'s exact counts, with `check()` after each.

use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use zonealloc::{
    AllocError, AllocFlags, Arena, MAX_ORDER_LIMIT, MemPolicy, NodeMask, NodeStats, PcpConfig, PolicyError,
    ShrinkResult, Shrinker, Topology, WatermarkConfig, Watermarks,
};

const BLOCK_ORDER: u32 = 10;
const BLOCKS_PER_ZONE: usize = 8;

/// Runs `f` on a new thread pinned to `cpu` (its first allocation in any
/// arena comes after the pinning, so its caches are on that CPU's node).
fn on_cpu<T: Send>(cpu: usize, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            pin(cpu);
            f()
        })
        .join()
        .unwrap()
    })
}

/// Pins this thread to `cpu`.
fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET writes inside the set.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is this thread; `set` is valid for its size.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    assert_eq!(rc, 0, "pinning to CPU {cpu}: {}", std::io::Error::last_os_error());
    // SAFETY: no preconditions.
    assert_eq!(unsafe { libc::sched_getcpu() }, cpu as i32);
}

/// CPUs 0 and 1, if this process may run on both.
fn two_cpus() -> bool {
    // SAFETY: as in `pin`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is this thread; `set` is valid for its size.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    // SAFETY: `set` was filled by the kernel.
    rc == 0 && unsafe { libc::CPU_ISSET(0, &set) && libc::CPU_ISSET(1, &set) }
}

/// An arena on `topology`, one zone of `BLOCKS_PER_ZONE` max-order blocks
/// per node, no watermarks (every block can be taken: counts are exact),
/// caches of 8-block batches, no kswapd.
fn arena(topology: Topology) -> Arena {
    let nodes = topology.nodes();
    Arena::builder()
        .region_size((nodes * BLOCKS_PER_ZONE) << (BLOCK_ORDER + 12))
        .max_order(BLOCK_ORDER)
        .zones(1)
        .topology(topology)
        .watermarks(WatermarkConfig::PerZone(Watermarks { min: 0, low: 0, high: 0 }))
        .pcp(PcpConfig::Fixed { batch: 8, high: 64 })
        .background_reclaim(false)
        .build()
        .unwrap()
}

fn node(arena: &Arena, n: usize) -> NodeStats {
    arena.stats().nodes[n].clone()
}

/// (hit, miss, foreign, local, other) of node `n`.
fn counts(arena: &Arena, n: usize) -> (u64, u64, u64, u64, u64) {
    let s = node(arena, n);
    (s.numa_hit, s.numa_miss, s.numa_foreign, s.local_node, s.other_node)
}

/// Takes every max-order block of node `n` with `THISNODE`, then sees the
/// next such request fail.
fn fill_node(arena: &Arena, n: usize) -> Vec<NonNull<u8>> {
    let flags = AllocFlags::THISNODE | AllocFlags::NOWAIT | AllocFlags::NOWARN;
    let blocks: Vec<_> = (0..BLOCKS_PER_ZONE).map(|_| arena.alloc_pages_node(n, BLOCK_ORDER, flags).unwrap()).collect();
    assert!(blocks.iter().all(|&b| arena.node_of(b) == Some(n)));
    assert_eq!(
        arena.alloc_pages_node(n, BLOCK_ORDER, flags).unwrap_err(),
        AllocError::OutOfMemory { order: BLOCK_ORDER }
    );
    blocks
}

fn free_all(arena: &Arena, blocks: Vec<NonNull<u8>>, order: u32) {
    for b in blocks {
        // SAFETY: ours, of `order`, not used again.
        unsafe { arena.free_pages(b, order).unwrap() };
    }
}

#[test]
fn without_a_topology_there_is_one_node_and_every_allocation_is_a_local_hit() {
    let arena = Arena::builder().region_size(64 << 20).zones(2).build().unwrap();
    assert_eq!(arena.topology().nodes(), 1);
    let pages: Vec<_> = (0..100).map(|_| arena.alloc_pages(0, AllocFlags::empty()).unwrap()).collect();
    let big = arena.alloc_pages(BLOCK_ORDER, AllocFlags::empty()).unwrap();
    let stats = arena.stats();
    assert_eq!(stats.nodes.len(), 1);
    let n = &stats.nodes[0];
    assert_eq!((n.node, n.zones.clone(), n.bound), (0, 0..2, false));
    assert_eq!((n.numa_hit, n.numa_miss, n.numa_foreign, n.local_node, n.other_node), (101, 0, 0, 101, 0));
    assert!(pages.iter().chain([&big]).all(|&p| arena.node_of(p) == Some(0)));
    assert_eq!(arena.node_of(NonNull::dangling()), None);
    assert!(stats.to_string().contains("Node 0, zone      1"));
    free_all(&arena, pages, 0);
    free_all(&arena, vec![big], BLOCK_ORDER);
    arena.check().unwrap();
}

#[test]
fn threads_allocate_on_their_cpus_node() {
    if !two_cpus() {
        return;
    }
    let arena = arena(Topology::simulated(2).unwrap());
    assert_eq!(arena.stats().zones.iter().map(|z| z.node).collect::<Vec<_>>(), [0, 1]);
    for (cpu, node) in [(0, 0), (1, 1)] {
        on_cpu(cpu, || {
            let small: Vec<_> = (0..10).map(|_| arena.alloc_pages(0, AllocFlags::empty()).unwrap()).collect();
            let big = arena.alloc_pages(BLOCK_ORDER, AllocFlags::empty()).unwrap();
            assert!(small.iter().all(|&p| arena.node_of(p) == Some(node)), "CPU {cpu}");
            assert_eq!(arena.node_of(big), Some(node));
            assert_eq!(counts(&arena, node), (11, 0, 0, 11, 0), "node {node}");
            free_all(&arena, small, 0);
            free_all(&arena, vec![big], BLOCK_ORDER);
        });
        arena.check().unwrap();
    }
    assert!(!node(&arena, 1).bound);
    let table = arena.numastat().to_string();
    let hits: Vec<&str> = table.lines().find(|l| l.starts_with("numa_hit")).unwrap().split_whitespace().collect();
    assert_eq!(hits, ["numa_hit", "11", "11"], "{table}");
    assert!(table.starts_with(&format!("{:<16} {:>15} {:>15}\n", "", "node0", "node1")), "{table}");
}

#[test]
fn a_full_node_falls_back_nearest_first_and_counts_miss_foreign_other() {
    if !two_cpus() {
        return;
    }
    // Node 2 has memory only and is nearer to node 1 than to node 0.
    let distances = vec![vec![10, 20, 30], vec![20, 10, 20], vec![30, 20, 10]];
    let topology = Topology::with_distances(distances, vec![vec![0], vec![1], vec![]]).unwrap();
    assert_eq!(topology.fallback_order(0).collect::<Vec<_>>(), [0, 1, 2]);
    let arena = arena(topology);
    on_cpu(0, || {
        let flags = AllocFlags::NOWAIT | AllocFlags::NOWARN;
        let own = fill_node(&arena, 0);
        assert_eq!(counts(&arena, 0), (8, 0, 0, 8, 0));
        // Node 0 is full: the next goes to node 1, the nearest.
        let spill = arena.alloc_pages(BLOCK_ORDER, flags).unwrap();
        assert_eq!(arena.node_of(spill), Some(1));
        assert_eq!(counts(&arena, 0), (8, 0, 1, 8, 0));
        assert_eq!(counts(&arena, 1), (0, 1, 0, 0, 1));
        // THISNODE does not fall back.
        assert_eq!(
            arena.alloc_pages(BLOCK_ORDER, flags | AllocFlags::THISNODE).unwrap_err(),
            AllocError::OutOfMemory { order: BLOCK_ORDER }
        );
        // Node 1 full too (7 more there, as this thread's node-1 requests:
        // hits of node 1, allocated for a thread on node 0): then node 2.
        let more: Vec<_> = (0..7).map(|_| arena.alloc_pages_node(1, BLOCK_ORDER, flags).unwrap()).collect();
        assert_eq!(counts(&arena, 1), (7, 1, 0, 0, 8));
        let far = arena.alloc_pages(BLOCK_ORDER, flags).unwrap();
        assert_eq!(arena.node_of(far), Some(2));
        assert_eq!(counts(&arena, 0), (8, 0, 2, 8, 0));
        assert_eq!(counts(&arena, 2), (0, 1, 0, 0, 1));
        arena.check().unwrap();
        free_all(&arena, own, BLOCK_ORDER);
        free_all(&arena, more, BLOCK_ORDER);
        free_all(&arena, vec![spill, far], BLOCK_ORDER);
    });
    arena.check().unwrap();
}

#[test]
fn memory_only_nodes_take_the_spill_first_on_four_nodes() {
    if !two_cpus() {
        return;
    }
    // Simulated: CPUs 0 and 1 on nodes 0 and 1, nodes 2 and 3 memory-only,
    // all at distance 20: the kernel's order puts headless nodes first.
    let topology = Topology::simulated(4).unwrap();
    let order = topology.fallback_order(1).collect::<Vec<_>>();
    assert_eq!(order[0], 1);
    let arena = arena(topology);
    on_cpu(1, || {
        let own = fill_node(&arena, 1);
        let spill = arena.alloc_pages(BLOCK_ORDER, AllocFlags::NOWAIT).unwrap();
        assert_eq!(arena.node_of(spill), Some(order[1]));
        assert!(order[1] >= 2, "a memory-only node first: {order:?}");
        assert_eq!(counts(&arena, 1), (8, 0, 1, 8, 0));
        assert_eq!(counts(&arena, order[1]), (0, 1, 0, 0, 1));
        free_all(&arena, own, BLOCK_ORDER);
        free_all(&arena, vec![spill], BLOCK_ORDER);
    });
    arena.check().unwrap();
}

#[test]
fn alloc_pages_node_places_and_refuses_what_does_not_exist() {
    let arena = arena(Topology::simulated(3).unwrap());
    for n in 0..3 {
        let page = arena.alloc_pages_node(n, 0, AllocFlags::THISNODE).unwrap();
        assert_eq!(arena.node_of(page), Some(n));
        let big = arena.alloc_pages_node(n, 2, AllocFlags::ZERO).unwrap();
        assert_eq!(arena.node_of(big), Some(n));
        free_all(&arena, vec![page], 0);
        free_all(&arena, vec![big], 2);
    }
    assert_eq!(
        arena.alloc_pages_node(3, 0, AllocFlags::empty()).unwrap_err(),
        AllocError::NoSuchNode { node: 3, nodes: 3 }
    );
    assert_eq!(
        arena.alloc_pages_node(0, MAX_ORDER_LIMIT + 1, AllocFlags::empty()).unwrap_err(),
        AllocError::InvalidOrder { order: MAX_ORDER_LIMIT + 1, max_order: BLOCK_ORDER }
    );
    let stats = arena.stats();
    assert_eq!(stats.nodes.iter().map(|n| n.zones.clone()).collect::<Vec<_>>(), [0..1, 1..2, 2..3]);
    arena.check().unwrap();
}

#[test]
fn zones_are_per_node_and_bounded_in_all() {
    let topology = Topology::simulated(4).unwrap();
    let arena =
        Arena::builder().region_size(64 << 20).max_order(4).zones(3).topology(topology.clone()).build().unwrap();
    let stats = arena.stats();
    assert_eq!(stats.zones.len(), 12);
    assert_eq!(stats.zones.iter().map(|z| z.node).collect::<Vec<_>>(), [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]);
    assert!(stats.to_string().contains("Node 3, zone     11"));
    assert!(arena.pagetypeinfo().to_string().contains("Node 2, zone      8"));
    let err = Arena::builder().region_size(64 << 20).max_order(4).zones(17).topology(topology).build().err().unwrap();
    assert_eq!(err.to_string(), zonealloc::BuildError::TooManyZones { zones: 68, limit: 64 }.to_string());
}

/// `get_mempolicy(MPOL_F_ADDR)`: the policy of the page at `addr`, and
/// `move_pages` with no targets: the node each page is on (or -ENOENT if
/// it is not resident).
fn policy_and_nodes(addr: *mut u8, pages: usize) -> (i32, u64, Vec<i32>) {
    const MPOL_F_ADDR: libc::c_ulong = 2;
    let (mut mode, mut mask) = (0i32, 0u64);
    // SAFETY: valid out pointers; a mask of 64 bits.
    let rc = unsafe { libc::syscall(libc::SYS_get_mempolicy, &mut mode, &mut mask, 65, addr, MPOL_F_ADDR) };
    assert_eq!(rc, 0, "get_mempolicy: {}", std::io::Error::last_os_error());
    let addrs: Vec<*mut u8> = (0..pages).map(|i| addr.wrapping_add(i << 12)).collect();
    let mut status = vec![i32::MIN; pages];
    // SAFETY: `pages` addresses and as many status slots; no target nodes
    // (a query).
    let rc = unsafe {
        libc::syscall(libc::SYS_move_pages, 0, pages, addrs.as_ptr(), std::ptr::null::<i32>(), status.as_mut_ptr(), 0)
    };
    assert_eq!(rc, 0, "move_pages: {}", std::io::Error::last_os_error());
    (mode, mask, status)
}

#[test]
fn a_detected_topology_binds_each_nodes_memory_and_pages_land_there() {
    const MPOL_DEFAULT: i32 = 0;
    const MPOL_PREFERRED: i32 = 1;
    let topology = Topology::detect();
    let arena = Arena::builder().region_size(64 << 20).zones(1).topology(topology.clone()).build().unwrap();
    assert!(arena.stats().nodes.iter().all(|n| n.bound));
    for n in 0..topology.nodes() {
        let block = arena.alloc_pages_node(n, 2, AllocFlags::THISNODE).unwrap();
        // Touch two of its four pages.
        // SAFETY: ours, four pages.
        unsafe {
            block.as_ptr().write(1);
            block.as_ptr().add(4096).write(1);
        }
        let kernel_node = topology.kernel_id(n).unwrap() as i32;
        let (mode, mask, status) = policy_and_nodes(block.as_ptr(), 3);
        assert_eq!((mode, mask), (MPOL_PREFERRED, 1 << kernel_node));
        // Touched pages are on the node; the untouched one is not resident.
        assert_eq!(status, [kernel_node, kernel_node, -libc::ENOENT]);
        free_all(&arena, vec![block], 2);
    }
    // A simulated topology binds nothing, and says so.
    let simulated =
        Arena::builder().region_size(64 << 20).zones(1).topology(Topology::simulated(2).unwrap()).build().unwrap();
    assert!(simulated.stats().nodes.iter().all(|n| !n.bound));
    let page = simulated.alloc_pages(0, AllocFlags::ZERO).unwrap();
    assert_eq!(policy_and_nodes(page.as_ptr(), 1).0, MPOL_DEFAULT);
    free_all(&simulated, vec![page], 0);
    arena.check().unwrap();
    simulated.check().unwrap();
}

#[test]
fn a_thread_that_migrates_is_followed_at_its_next_refill() {
    if !two_cpus() {
        return;
    }
    let arena = arena(Topology::simulated(2).unwrap());
    on_cpu(0, || {
        let mut pages = vec![arena.alloc_pages(0, AllocFlags::empty()).unwrap()];
        assert_eq!(arena.node_of(pages[0]), Some(0));
        let cached = arena.stats().zones[0].cached;
        assert!(cached > 0);
        assert_eq!(arena.stats().zones.iter().map(|z| z.pcp_threads).collect::<Vec<_>>(), [1, 0]);
        pin(1);
        // What the cache held on node 0 may still be served; the first
        // refill moves the cache to node 1, and everything after comes
        // from there.
        let mut from_node_0 = 0;
        loop {
            let page = arena.alloc_pages(0, AllocFlags::empty()).unwrap();
            pages.push(page);
            if arena.node_of(page) == Some(1) {
                break;
            }
            from_node_0 += 1;
            assert!(from_node_0 <= cached, "still on node 0 after its cache ran out");
        }
        for _ in 0..100 {
            pages.push(arena.alloc_pages(0, AllocFlags::empty()).unwrap());
            assert_eq!(arena.node_of(*pages.last().unwrap()), Some(1));
        }
        assert_eq!(arena.stats().zones.iter().map(|z| z.pcp_threads).collect::<Vec<_>>(), [0, 1]);
        free_all(&arena, pages, 0);
    });
    arena.check().unwrap();
}

#[test]
fn a_preferred_policy_allocates_on_its_node_and_counts_other_node() {
    if !two_cpus() {
        return;
    }
    let arena = arena(Topology::simulated(2).unwrap());
    on_cpu(0, || {
        assert_eq!(arena.thread_policy(), MemPolicy::Local);
        arena.set_thread_policy(MemPolicy::Preferred(1)).unwrap();
        assert_eq!(arena.thread_policy(), MemPolicy::Preferred(1));
        let mut pages: Vec<_> = (0..10).map(|_| arena.alloc_pages(0, AllocFlags::empty()).unwrap()).collect();
        pages.push(arena.alloc_pages(3, AllocFlags::empty()).unwrap());
        assert!(pages.iter().all(|&p| arena.node_of(p) == Some(1)));
        // Meant for node 1 and served there (hits), for a thread on node 0.
        assert_eq!(counts(&arena, 1), (11, 0, 0, 0, 11));
        assert_eq!(counts(&arena, 0), (0, 0, 0, 0, 0));
        let big = pages.pop().unwrap();
        free_all(&arena, vec![big], 3);
        free_all(&arena, pages, 0);
        // Back to local: node 0, through the cache again.
        arena.set_thread_policy(MemPolicy::Local).unwrap();
        let page = arena.alloc_pages(0, AllocFlags::empty()).unwrap();
        assert_eq!(arena.node_of(page), Some(0));
        assert_eq!(counts(&arena, 0), (1, 0, 0, 1, 0));
        free_all(&arena, vec![page], 0);
    });
    arena.check().unwrap();
}

#[test]
fn a_bind_policy_never_leaves_its_nodes() {
    if !two_cpus() {
        return;
    }
    // Node 0 (this thread's) is outside the set; of nodes 1 and 2, node 2
    // is nearer to node 0, so it is tried first.
    let distances = vec![vec![10, 30, 20], vec![30, 10, 20], vec![20, 20, 10]];
    let arena = arena(Topology::with_distances(distances, vec![vec![0], vec![1], vec![]]).unwrap());
    on_cpu(0, || {
        let bind = MemPolicy::Bind(NodeMask::new(&[1, 2]).unwrap());
        arena.set_thread_policy(bind).unwrap();
        let flags = AllocFlags::NOWAIT | AllocFlags::NOWARN;
        let mut blocks: Vec<_> = (0..16).map(|_| arena.alloc_pages(BLOCK_ORDER, flags).unwrap()).collect();
        let nodes: Vec<_> = blocks.iter().map(|&b| arena.node_of(b).unwrap()).collect();
        assert_eq!(nodes, [vec![2; 8], vec![1; 8]].concat());
        // Nodes 1 and 2 are full; node 0 has all its memory, and is not used.
        assert_eq!(arena.alloc_pages(BLOCK_ORDER, flags).unwrap_err(), AllocError::OutOfMemory { order: BLOCK_ORDER });
        assert_eq!(arena.stats().zones[0].free, BLOCKS_PER_ZONE << BLOCK_ORDER);
        // The first 8 were meant for node 2 and served there; the next 8
        // were meant for node 2 and served by node 1.
        assert_eq!(counts(&arena, 2), (8, 0, 8, 0, 8));
        assert_eq!(counts(&arena, 1), (0, 8, 0, 0, 8));
        // alloc_pages_node names its node and ignores the policy.
        let own = arena.alloc_pages_node(0, BLOCK_ORDER, flags).unwrap();
        assert_eq!(arena.node_of(own), Some(0));
        blocks.push(own);
        free_all(&arena, blocks, BLOCK_ORDER);
    });
    arena.check().unwrap();
}

#[test]
fn an_interleave_policy_takes_the_nodes_in_turn() {
    if !two_cpus() {
        return;
    }
    let arena = arena(Topology::simulated(3).unwrap());
    on_cpu(0, || {
        arena.set_thread_policy(MemPolicy::Interleave(NodeMask::new(&[0, 2]).unwrap())).unwrap();
        let pages: Vec<_> = (0..10).map(|_| arena.alloc_pages(0, AllocFlags::empty()).unwrap()).collect();
        let nodes: Vec<_> = pages.iter().map(|&p| arena.node_of(p).unwrap()).collect();
        assert_eq!(nodes, [0, 2, 0, 2, 0, 2, 0, 2, 0, 2]);
        let (n0, n2) = (node(&arena, 0), node(&arena, 2));
        assert_eq!((n0.interleave_hit, n0.numa_hit, n0.local_node, n0.other_node), (5, 5, 5, 0));
        assert_eq!((n2.interleave_hit, n2.numa_hit, n2.local_node, n2.other_node), (5, 5, 0, 5));
        assert_eq!(node(&arena, 1).numa_hit, 0);
        free_all(&arena, pages, 0);
        arena.set_thread_policy(MemPolicy::Local).unwrap();
    });
    arena.check().unwrap();
}

#[test]
fn policies_naming_no_node_or_a_missing_one_are_refused() {
    let arena = arena(Topology::simulated(2).unwrap());
    assert_eq!(arena.set_thread_policy(MemPolicy::Preferred(2)), Err(PolicyError::NoSuchNode { node: 2, nodes: 2 }));
    assert_eq!(arena.set_thread_policy(MemPolicy::Bind(NodeMask::default())), Err(PolicyError::NoNodes));
    let far = MemPolicy::Interleave(NodeMask::new(&[0, 3]).unwrap());
    assert_eq!(arena.set_thread_policy(far), Err(PolicyError::NoSuchNode { node: 3, nodes: 2 }));
    assert_eq!(arena.thread_policy(), MemPolicy::Local);
    assert_eq!(NodeMask::new(&[16]), None);
    assert!(PolicyError::NoNodes.to_string().contains("at least one"));
    // One node: every valid policy is the local one.
    let single = Arena::builder().region_size(16 << 20).zones(1).build().unwrap();
    single.set_thread_policy(MemPolicy::Interleave(NodeMask::new(&[0]).unwrap())).unwrap();
    let page = single.alloc_pages(0, AllocFlags::empty()).unwrap();
    assert_eq!(single.node_of(page), Some(0));
    free_all(&single, vec![page], 0);
    assert_eq!(single.set_thread_policy(MemPolicy::Preferred(1)), Err(PolicyError::NoSuchNode { node: 1, nodes: 1 }));
    single.check().unwrap();
}

/// A cache of max-order blocks that knows their nodes, and records which
/// node it was asked to shrink.
struct NodeCache {
    arena: Arc<Arena>,
    blocks: Mutex<Vec<(usize, usize)>>,
    asked: Mutex<Vec<Option<usize>>>,
}

impl NodeCache {
    fn free_where(&self, nr: usize, node: Option<usize>) -> ShrinkResult {
        self.asked.lock().unwrap().push(node);
        let mut blocks = self.blocks.lock().unwrap();
        let mut freed = 0;
        while freed < nr {
            let Some(i) = blocks.iter().position(|&(_, n)| node.is_none_or(|want| want == n)) else { break };
            let (addr, _) = blocks.swap_remove(i);
            // SAFETY: the cache allocated this max-order block and drops it here.
            unsafe { self.arena.free_pages(NonNull::new(addr as *mut u8).unwrap(), BLOCK_ORDER).unwrap() };
            freed += 1 << BLOCK_ORDER;
        }
        ShrinkResult::Freed(freed)
    }
}

impl Shrinker for NodeCache {
    fn count(&self) -> usize {
        self.blocks.lock().unwrap().len() << BLOCK_ORDER
    }
    fn scan(&self, nr_to_scan: usize) -> ShrinkResult {
        self.free_where(nr_to_scan, None)
    }
    fn count_node(&self, node: usize) -> usize {
        self.blocks.lock().unwrap().iter().filter(|&&(_, n)| n == node).count() << BLOCK_ORDER
    }
    fn scan_node(&self, nr_to_scan: usize, node: usize) -> ShrinkResult {
        self.free_where(nr_to_scan, Some(node))
    }
}

/// Node 0 full of a shrinkable cache's blocks, then one more allocation
/// from CPU 0: where it lands, and which node the shrinker was asked for.
fn short_node_zero(node_reclaim: bool) -> (usize, Vec<Option<usize>>, NodeStats, u64) {
    let builder = Arena::builder()
        .region_size((2 * BLOCKS_PER_ZONE) << (BLOCK_ORDER + 12))
        .max_order(BLOCK_ORDER)
        .zones(1)
        .topology(Topology::simulated(2).unwrap())
        .watermarks(WatermarkConfig::PerZone(Watermarks { min: 0, low: 0, high: 0 }))
        .background_reclaim(false)
        .node_reclaim_mode(node_reclaim);
    let arena = Arc::new(builder.build().unwrap());
    let cache =
        Arc::new(NodeCache { arena: arena.clone(), blocks: Mutex::new(Vec::new()), asked: Mutex::new(Vec::new()) });
    let _handle = arena.register_shrinker(cache.clone());
    on_cpu(0, || {
        for b in fill_node(&arena, 0) {
            cache.blocks.lock().unwrap().push((b.as_ptr() as usize, 0));
        }
        let block = arena.alloc_pages(BLOCK_ORDER, AllocFlags::NOWARN).unwrap();
        let landed = arena.node_of(block).unwrap();
        free_all(&arena, vec![block], BLOCK_ORDER);
        arena.check().unwrap();
        let asked = cache.asked.lock().unwrap().clone();
        (landed, asked, node(&arena, 0), arena.stats().reclaim.node_reclaims)
    })
}

#[test]
fn node_reclaim_mode_reclaims_the_short_node_before_falling_back() {
    if !two_cpus() {
        return;
    }
    // Off (the default): node 0 is full, the allocation goes to node 1 at
    // once; no shrinker is asked.
    let (landed, asked, node0, node_reclaims) = short_node_zero(false);
    assert_eq!((landed, asked, node_reclaims), (1, vec![], 0));
    assert_eq!(node0.numa_foreign, 1);
    // On: the shrinkers are asked for node 0's pages, and the allocation
    // is served there.
    let (landed, asked, node0, node_reclaims) = short_node_zero(true);
    assert_eq!((landed, asked, node_reclaims), (0, vec![Some(0)], 1));
    assert_eq!((node0.numa_hit, node0.numa_foreign), (9, 0));
}

/// A two-node arena with a kswapd per node, watermarks of 2 and 4 blocks
/// per zone, `purge_delay`, no per-thread caches (every free reaches the
/// lists and signals its zone's node), and a cache of node-tagged blocks.
fn reclaiming_two_nodes(purge_delay: Option<std::time::Duration>) -> (Arc<Arena>, Arc<NodeCache>) {
    let blocks = 1 << BLOCK_ORDER;
    let arena = Arena::builder()
        .region_size((2 * BLOCKS_PER_ZONE) << (BLOCK_ORDER + 12))
        .max_order(BLOCK_ORDER)
        .zones(1)
        .topology(Topology::simulated(2).unwrap())
        .watermarks(WatermarkConfig::PerZone(Watermarks { min: 0, low: 2 * blocks, high: 4 * blocks }))
        .background_reclaim(true)
        .purge_delay(purge_delay)
        .pcp(PcpConfig::Disabled)
        .build()
        .unwrap();
    let arena = Arc::new(arena);
    let cache =
        Arc::new(NodeCache { arena: arena.clone(), blocks: Mutex::new(Vec::new()), asked: Mutex::new(Vec::new()) });
    (arena, cache)
}

/// Waits (up to 10 s) until `done` holds.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::yield_now();
    }
}

/// Takes 7 of node `n`'s 8 blocks for the cache: the seventh wakes that
/// node's kswapd (found short at low, it is served at min, 0). Under the
/// cache's lock, so that kswapd finds all seven and frees exactly 3 to
/// reach high, however soon it runs (no direct reclaim can want the
/// lock: min is 0).
fn take_seven(arena: &Arena, cache: &NodeCache, n: usize) {
    let flags = AllocFlags::THISNODE | AllocFlags::NOWARN;
    let mut blocks = cache.blocks.lock().unwrap();
    for _ in 0..7 {
        let block = arena.alloc_pages_node(n, BLOCK_ORDER, flags).unwrap();
        assert_eq!(arena.node_of(block), Some(n));
        blocks.push((block.as_ptr() as usize, n));
    }
}

fn cached_on(cache: &NodeCache, n: usize) -> usize {
    cache.blocks.lock().unwrap().iter().filter(|&&(_, node)| node == n).count()
}

#[test]
fn each_nodes_kswapd_is_woken_for_its_own_zones_and_reclaims_there() {
    let (arena, cache) = reclaiming_two_nodes(None);
    let _handle = arena.register_shrinker(cache.clone());
    // Node 1 below low: its kswapd wakes, asks the shrinkers for node 1's
    // pages only, and stops at high (4 blocks free: 3 of 7 given back).
    take_seven(&arena, &cache, 1);
    wait_until("node 1's kswapd brought it to high", || cached_on(&cache, 1) == 4);
    let (n0, n1) = (node(&arena, 0), node(&arena, 1));
    // Counted by the sender: a wrong wake-up shows at once.
    assert_eq!(n0.kswapd_wakeups_sent, 0, "node 0's kswapd was woken for node 1");
    assert_eq!((n0.kswapd_wakeups, n0.kswapd_passes), (0, 0), "node 0's kswapd ran for node 1");
    assert_eq!(n1.kswapd_wakeups, 1);
    assert!(n1.kswapd_passes >= 1);
    assert!(cache.asked.lock().unwrap().iter().all(|&asked| asked == Some(1)));
    assert_eq!(arena.stats().zones[1].free, 4 << BLOCK_ORDER);
    assert_eq!(arena.stats().zones[0].free, 8 << BLOCK_ORDER);
    // Then node 0: its own kswapd, node 1's untouched.
    cache.asked.lock().unwrap().clear();
    take_seven(&arena, &cache, 0);
    wait_until("node 0's kswapd brought it to high", || cached_on(&cache, 0) == 4);
    let (n0, n1) = (node(&arena, 0), node(&arena, 1));
    assert_eq!((n0.kswapd_wakeups, n1.kswapd_wakeups), (1, 1));
    assert_eq!(arena.stats().reclaim.kswapd_wakeups, 2, "the total is the nodes' sum");
    assert!(cache.asked.lock().unwrap().iter().all(|&asked| asked == Some(0)));
    assert_eq!(cached_on(&cache, 1), 4);
    arena.check().unwrap();
}

#[test]
fn a_free_on_one_node_sets_only_that_nodes_purge_timer() {
    // A delay that never passes in a test: kswapd sleeps with its timer set.
    let (arena, cache) = reclaiming_two_nodes(Some(std::time::Duration::from_secs(3600)));
    let block = arena.alloc_pages_node(1, 0, AllocFlags::THISNODE).unwrap();
    // SAFETY: our page; touching it makes it resident.
    unsafe { block.as_ptr().write_bytes(1, 4096) };
    // Both kswapds asleep without a timer (nothing resident is free):
    // only the free's wake-up can set node 1's.
    wait_until("both kswapds sleep", || node(&arena, 0).kswapd_sleeps >= 1 && node(&arena, 1).kswapd_sleeps >= 1);
    assert_eq!(node(&arena, 1).purge_timer_sleeps, 0);
    free_all(&arena, vec![block], 0); // to the lists: no per-thread cache
    wait_until("node 1's kswapd sleeps with its purge timer set", || node(&arena, 1).purge_timer_sleeps >= 1);
    let n0 = node(&arena, 0);
    assert_eq!((n0.kswapd_wakeups_sent, n0.purge_timer_sleeps), (0, 0), "node 0 has nothing to purge");
    assert_eq!(node(&arena, 1).kswapd_wakeups_sent, 1, "the free woke node 1's kswapd");
    drop(cache);
    arena.check().unwrap();
}

#[test]
fn a_thisnode_request_wakes_only_its_nodes_kswapd_a_fallback_also_the_others_below_high() {
    let (arena, cache) = reclaiming_two_nodes(None);
    let _handle = arena.register_shrinker(cache.clone());
    // Node 0 below high (2 of 8 blocks free, high 4) but not below low
    // (2): nothing wakes its kswapd, and it has no block to spare above
    // low for a fallback (order 10 needs low + 1023 pages).
    let flags = AllocFlags::THISNODE | AllocFlags::NOWARN;
    let held: Vec<_> = (0..6).map(|_| arena.alloc_pages_node(0, BLOCK_ORDER, flags).unwrap()).collect();
    // A THISNODE request for node 1 cannot fall back: node 1's kswapd
    // alone is woken.
    take_seven(&arena, &cache, 1);
    wait_until("node 1's kswapd brought it to high", || cached_on(&cache, 1) == 4);
    assert_eq!(node(&arena, 0).kswapd_wakeups_sent, 0, "a THISNODE request woke another node's kswapd");
    // A request that may fall back, found short on both nodes (node 1 at
    // low after two more), wakes in the slow path the other allowed nodes
    // below high too.
    let more: Vec<_> = (0..3).map(|_| arena.alloc_pages_node(1, BLOCK_ORDER, AllocFlags::NOWARN).unwrap()).collect();
    wait_until("node 0's kswapd ran", || node(&arena, 0).kswapd_wakeups == 1);
    free_all(&arena, held, BLOCK_ORDER);
    free_all(&arena, more, BLOCK_ORDER);
    arena.check().unwrap();
}
