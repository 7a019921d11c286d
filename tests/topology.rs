//! `Topology`: what `detect` reads, what `simulated` and `with_distances`
//! build and refuse, and the kernel's fallback order between nodes.

use std::collections::BTreeMap;

use zonealloc::{LOCAL_DISTANCE, MAX_CPUS, MAX_NUMNODES, REMOTE_DISTANCE, Topology, TopologyError};

fn order(t: &Topology, node: usize) -> Vec<usize> {
    t.fallback_order(node).collect()
}

fn cpus(t: &Topology, node: usize) -> Vec<usize> {
    t.cpus(node).collect()
}

/// The kernel's list format, parsed here with the standard library.
fn kernel_list(s: &str) -> Vec<usize> {
    s.trim()
        .split(',')
        .filter(|r| !r.is_empty())
        .flat_map(|r| {
            let (a, b) = r.split_once('-').unwrap_or((r, r));
            a.parse::<usize>().unwrap()..=b.parse::<usize>().unwrap()
        })
        .collect()
}

#[test]
fn detect_reads_what_sysfs_says() {
    let t = Topology::detect();
    assert!(!t.is_simulated());
    let root = std::path::Path::new("/sys/devices/system/node");
    let Ok(online) = std::fs::read_to_string(root.join("online")) else {
        // No sysfs: one node with every CPU.
        assert_eq!(t.nodes(), 1);
        return;
    };
    let ids = kernel_list(&online);
    assert_eq!(t.nodes(), ids.len());
    let mut by_cpu = BTreeMap::new();
    for (n, &id) in ids.iter().enumerate() {
        assert_eq!(t.kernel_id(n), Some(id));
        let dir = root.join(format!("node{id}"));
        let listed = kernel_list(&std::fs::read_to_string(dir.join("cpulist")).unwrap());
        assert_eq!(cpus(&t, n), listed, "node {id}'s CPUs");
        for cpu in listed {
            by_cpu.insert(cpu, n);
        }
        let row: Vec<u32> = std::fs::read_to_string(dir.join("distance"))
            .unwrap()
            .split_whitespace()
            .map(|d| d.parse().unwrap())
            .collect();
        assert_eq!((0..ids.len()).map(|to| t.distance(n, to).unwrap()).collect::<Vec<_>>(), row);
    }
    for (cpu, n) in by_cpu {
        assert_eq!(t.node_of_cpu(cpu), Some(n));
    }
    assert_eq!(t.distance(0, ids.len()), None);
    assert_eq!(t.kernel_id(ids.len()), None);
}

#[test]
fn simulated_nodes_deal_the_cpus_round_robin() {
    let configured = {
        // SAFETY: sysconf has no preconditions.
        let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
        (n as usize).min(MAX_CPUS)
    };
    for nodes in [1, 2, 3, 4] {
        let t = Topology::simulated(nodes).unwrap();
        assert!(t.is_simulated());
        assert_eq!(t.nodes(), nodes);
        for cpu in 0..configured {
            assert_eq!(t.node_of_cpu(cpu), Some(cpu % nodes));
        }
        assert_eq!(t.node_of_cpu(configured), None);
        for n in 0..nodes {
            assert_eq!(cpus(&t, n), (n..configured).step_by(nodes).collect::<Vec<_>>());
            for m in 0..nodes {
                let d = if n == m { LOCAL_DISTANCE } else { REMOTE_DISTANCE };
                assert_eq!(t.distance(n, m), Some(d));
            }
        }
        assert_eq!(cpus(&t, nodes), Vec::<usize>::new());
    }
    assert_eq!(Topology::simulated(0).unwrap_err(), TopologyError::NoNodes);
    assert_eq!(
        Topology::simulated(MAX_NUMNODES + 1).unwrap_err(),
        TopologyError::TooManyNodes { nodes: MAX_NUMNODES + 1, limit: MAX_NUMNODES }
    );
    assert_eq!(Topology::simulated(MAX_NUMNODES).unwrap().nodes(), MAX_NUMNODES);
}

#[test]
fn with_distances_refuses_every_bad_table() {
    let ok = || vec![vec![10, 20], vec![20, 10]];
    let two = || vec![vec![0], vec![1]];
    assert_eq!(Topology::with_distances(vec![], vec![]).unwrap_err(), TopologyError::NoNodes);
    assert_eq!(
        Topology::with_distances(vec![vec![10; 17]; 17], vec![vec![]; 17]).unwrap_err(),
        TopologyError::TooManyNodes { nodes: 17, limit: MAX_NUMNODES }
    );
    assert_eq!(
        Topology::with_distances(vec![vec![10, 20], vec![20]], two()).unwrap_err(),
        TopologyError::NotSquare { row: 1, len: 1, nodes: 2 }
    );
    assert_eq!(
        Topology::with_distances(ok(), vec![vec![0]]).unwrap_err(),
        TopologyError::CpuListCount { nodes: 2, cpu_lists: 1 }
    );
    assert_eq!(
        Topology::with_distances(vec![vec![10, 20], vec![20, 11]], two()).unwrap_err(),
        TopologyError::BadDistance { from: 1, to: 1, distance: 11 }
    );
    assert_eq!(
        Topology::with_distances(vec![vec![10, 10], vec![20, 10]], two()).unwrap_err(),
        TopologyError::BadDistance { from: 0, to: 1, distance: 10 }
    );
    assert_eq!(
        Topology::with_distances(vec![vec![10, 256], vec![20, 10]], two()).unwrap_err(),
        TopologyError::BadDistance { from: 0, to: 1, distance: 256 }
    );
    assert_eq!(
        Topology::with_distances(ok(), vec![vec![0], vec![MAX_CPUS]]).unwrap_err(),
        TopologyError::CpuTooLarge { cpu: MAX_CPUS, limit: MAX_CPUS }
    );
    assert_eq!(
        Topology::with_distances(ok(), vec![vec![0, 1], vec![1]]).unwrap_err(),
        TopologyError::CpuOnTwoNodes { cpu: 1, first: 0, second: 1 }
    );
    // Each refusal says what to change.
    let message = TopologyError::CpuListCount { nodes: 2, cpu_lists: 1 }.to_string();
    assert!(message.contains("give one per node"), "{message}");
    // Asymmetric distances are the firmware's to give.
    let t = Topology::with_distances(vec![vec![10, 20], vec![30, 10]], vec![vec![0], vec![]]).unwrap();
    assert_eq!((t.distance(0, 1), t.distance(1, 0)), (Some(20), Some(30)));
    assert_eq!((cpus(&t, 0), cpus(&t, 1)), (vec![0], vec![]));
}

#[test]
fn fallback_order_is_the_kernels() {
    // Equal distances: each node's list starts after it, and the lists
    // rotate (a node numbered below the local one counts one farther).
    let t = Topology::simulated(4).unwrap();
    let expected = [[0, 1, 2, 3], [1, 2, 3, 0], [2, 3, 0, 1], [3, 0, 1, 2]];
    if (0..4).all(|n| t.cpus(n).next().is_some()) {
        for (n, want) in expected.iter().enumerate() {
            assert_eq!(order(&t, n), want, "node {n}");
        }
    }
    let all_cpus = |n| (0..n).map(|i| vec![i]).collect::<Vec<_>>();
    let t = Topology::with_distances(
        vec![vec![10, 20, 20, 20]; 4]
            .into_iter()
            .enumerate()
            .map(|(i, mut r)| {
                r.rotate_right(i);
                r
            })
            .collect(),
        all_cpus(4),
    )
    .unwrap();
    for (n, want) in expected.iter().enumerate() {
        assert_eq!(order(&t, n), want, "node {n}");
    }
    // A square of sockets: the two neighbours, then the far corner; node 3
    // takes node 2 first, which fewer lists before it took first.
    let square = vec![vec![10, 20, 20, 30], vec![20, 10, 30, 20], vec![20, 30, 10, 20], vec![30, 20, 20, 10]];
    let t = Topology::with_distances(square, all_cpus(4)).unwrap();
    assert_eq!(order(&t, 0), [0, 1, 2, 3]);
    assert_eq!(order(&t, 1), [1, 3, 0, 2]);
    assert_eq!(order(&t, 2), [2, 3, 0, 1]);
    assert_eq!(order(&t, 3), [3, 2, 1, 0]);
    // A memory-only node at a socket's distance takes its spill before the
    // other socket; from the memory-only node, the tie goes to the lower number.
    let cxl = vec![vec![10, 20, 20], vec![20, 10, 20], vec![20, 20, 10]];
    let t = Topology::with_distances(cxl, vec![vec![0], vec![1], vec![]]).unwrap();
    assert_eq!(order(&t, 0), [0, 2, 1]);
    assert_eq!(order(&t, 1), [1, 2, 0]);
    assert_eq!(order(&t, 2), [2, 0, 1]);
    assert_eq!(order(&t, 3), Vec::<usize>::new());
}

#[test]
fn display_is_numactls() {
    let t = Topology::with_distances(vec![vec![10, 21], vec![21, 10]], vec![vec![0, 1], vec![]]).unwrap();
    assert_eq!(
        t.to_string(),
        "available: 2 nodes (simulated)\nnode 0 cpus: 0 1\nnode 1 cpus:\nnode distances:\nnode   0   1\n  0:  10  21\n  1:  21  10"
    );
}
