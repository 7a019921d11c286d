//! The machine's NUMA nodes: which CPUs each has and how far apart they
//! are (the kernel's `node_distance`, the firmware's SLIT), read from
//! `/sys/devices/system/node` or made up for tests, and the order in which
//! a node falls back to the others (the kernel's `build_zonelists`).
//!
//! A `Topology` is plain data of a fixed size: it is built and read
//! without allocating, so the global allocator can detect the machine's
//! nodes while it starts.

use std::fmt;

use crate::error::TopologyError;
use crate::support::sysfs::{parse_number, read_file};

/// The most nodes a topology has.
pub const MAX_NUMNODES: usize = 16;

/// CPUs `0..MAX_CPUS` can belong to a node.
#[cfg(not(loom))]
pub const MAX_CPUS: usize = 1024;

/// Under loom, whose model threads run on 32 KiB stacks that a topology
/// of 1024 CPUs per node (2 KiB, copied by the builder) overflows.
#[cfg(loom)]
pub const MAX_CPUS: usize = 64;

/// The kernel's `LOCAL_DISTANCE`: a node's distance to itself.
pub const LOCAL_DISTANCE: u32 = 10;

/// The kernel's `REMOTE_DISTANCE`: the distance between two nodes of a
/// simulated topology.
pub const REMOTE_DISTANCE: u32 = 20;

/// A set of CPUs, one bit each.
#[derive(Clone, Copy, PartialEq, Eq)]
struct CpuMask([u64; MAX_CPUS / 64]);

impl CpuMask {
    const EMPTY: Self = Self([0; MAX_CPUS / 64]);

    fn insert(&mut self, cpu: usize) {
        self.0[cpu / 64] |= 1 << (cpu % 64);
    }

    fn contains(&self, cpu: usize) -> bool {
        cpu < MAX_CPUS && self.0[cpu / 64] & (1 << (cpu % 64)) != 0
    }

    fn is_empty(&self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }

    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        (0..MAX_CPUS).filter(|&cpu| self.contains(cpu))
    }
}

/// NUMA nodes, their CPUs and their distances.
///
/// Nodes are numbered `0..nodes()` here; a detected node keeps the
/// kernel's number too ([`kernel_id`](Self::kernel_id)), which may leave
/// gaps.
///
/// ```
/// use zonealloc::Topology;
/// // Two sockets, and a third node of memory only (CXL), farther away.
/// let t = Topology::with_distances(
///     vec![vec![10, 21, 40], vec![21, 10, 40], vec![40, 40, 10]],
///     vec![vec![0, 1], vec![2, 3], vec![]],
/// )?;
/// assert_eq!(t.nodes(), 3);
/// assert_eq!(t.node_of_cpu(3), Some(1));
/// assert_eq!(t.fallback_order(2).collect::<Vec<_>>(), [2, 0, 1]);
/// # Ok::<(), zonealloc::TopologyError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Topology {
    nodes: usize,
    distance: [[u8; MAX_NUMNODES]; MAX_NUMNODES],
    cpus: [CpuMask; MAX_NUMNODES],
    kernel_id: [u16; MAX_NUMNODES],
    simulated: bool,
}

impl Topology {
    /// One node holding every CPU: a machine without NUMA.
    pub fn single() -> Self {
        let mut cpus = CpuMask::EMPTY;
        for cpu in 0..configured_cpus() {
            cpus.insert(cpu);
        }
        let mut t = Self::empty(1, false);
        t.cpus[0] = cpus;
        t
    }

    /// The machine's nodes, from `/sys/devices/system/node` (online nodes,
    /// each one's `cpulist` and `distance`). One node with every CPU where
    /// that cannot be read, or names more than [`MAX_NUMNODES`] nodes,
    /// or CPUs from [`MAX_CPUS`] on.
    pub fn detect() -> Self {
        detect_sysfs(1).unwrap_or_else(Self::single)
    }

    /// [`detect`](Self::detect) on a machine with more than one node;
    /// `None` after reading only the list of online nodes otherwise (what
    /// the global allocator asks at start-up, where one node means no
    /// topology at all).
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn detect_numa() -> Option<Self> {
        detect_sysfs(2)
    }

    /// `nodes` made-up nodes: the machine's CPUs dealt round-robin (CPU
    /// `c` on node `c % nodes`, so nodes beyond the CPU count have none),
    /// distance [`LOCAL_DISTANCE`] to itself and [`REMOTE_DISTANCE`] to
    /// the others. An arena on it binds no memory to a node.
    pub fn simulated(nodes: usize) -> Result<Self, TopologyError> {
        check_node_count(nodes)?;
        let mut t = Self::empty(nodes, true);
        for cpu in 0..configured_cpus() {
            t.cpus[cpu % nodes].insert(cpu);
        }
        for (a, row) in t.distance.iter_mut().enumerate().take(nodes) {
            for (b, d) in row.iter_mut().enumerate().take(nodes) {
                *d = if a == b { LOCAL_DISTANCE } else { REMOTE_DISTANCE } as u8;
            }
        }
        Ok(t)
    }

    /// Nodes with the distances of `distances` (`distances[a][b]`: from
    /// node `a` to node `b`, [`LOCAL_DISTANCE`] on the diagonal, more
    /// elsewhere, at most 255) and the CPUs of `cpus` (`cpus[n]`: node
    /// `n`'s; a node may have none, as memory-only nodes do). Simulated,
    /// as [`simulated`](Self::simulated) is: it binds no memory.
    pub fn with_distances(distances: Vec<Vec<u32>>, cpus: Vec<Vec<usize>>) -> Result<Self, TopologyError> {
        let nodes = distances.len();
        check_node_count(nodes)?;
        if cpus.len() != nodes {
            return Err(TopologyError::CpuListCount { nodes, cpu_lists: cpus.len() });
        }
        let mut t = Self::empty(nodes, true);
        for (a, row) in distances.iter().enumerate() {
            if row.len() != nodes {
                return Err(TopologyError::NotSquare { row: a, len: row.len(), nodes });
            }
            for (b, &d) in row.iter().enumerate() {
                check_distance(a, b, d)?;
                t.distance[a][b] = d as u8;
            }
        }
        for (node, list) in cpus.iter().enumerate() {
            for &cpu in list {
                if cpu >= MAX_CPUS {
                    return Err(TopologyError::CpuTooLarge { cpu, limit: MAX_CPUS });
                }
                if let Some(first) = t.node_of_cpu(cpu) {
                    return Err(TopologyError::CpuOnTwoNodes { cpu, first, second: node });
                }
                t.cpus[node].insert(cpu);
            }
        }
        Ok(t)
    }

    fn empty(nodes: usize, simulated: bool) -> Self {
        let mut kernel_id = [0u16; MAX_NUMNODES];
        for (i, id) in kernel_id.iter_mut().enumerate() {
            *id = i as u16;
        }
        let mut distance = [[0u8; MAX_NUMNODES]; MAX_NUMNODES];
        distance[0][0] = LOCAL_DISTANCE as u8;
        Self { nodes, distance, cpus: [CpuMask::EMPTY; MAX_NUMNODES], kernel_id, simulated }
    }

    /// How many nodes.
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// Whether the nodes are made up ([`simulated`](Self::simulated),
    /// [`with_distances`](Self::with_distances)) rather than the machine's.
    pub fn is_simulated(&self) -> bool {
        self.simulated
    }

    /// The distance from node `from` to node `to`; `None` for a node that
    /// does not exist.
    pub fn distance(&self, from: usize, to: usize) -> Option<u32> {
        (from < self.nodes && to < self.nodes).then(|| u32::from(self.distance[from][to]))
    }

    /// The CPUs of `node` (none for a memory-only node or one that does
    /// not exist), ascending.
    pub fn cpus(&self, node: usize) -> impl Iterator<Item = usize> + '_ {
        self.cpus[..self.nodes].get(node).into_iter().flat_map(CpuMask::iter)
    }

    /// The node CPU `cpu` belongs to, if any.
    pub fn node_of_cpu(&self, cpu: usize) -> Option<usize> {
        (0..self.nodes).find(|&n| self.cpus[n].contains(cpu))
    }

    /// The kernel's number of `node` (what `mbind` and `numastat` name);
    /// the same as `node` unless detected nodes have gaps.
    pub fn kernel_id(&self, node: usize) -> Option<usize> {
        (node < self.nodes).then(|| usize::from(self.kernel_id[node]))
    }

    /// The order in which `node` tries the nodes: itself, then the others
    /// nearest first (the kernel's `build_zonelists` and
    /// `find_next_best_node`), where a node with CPUs and a node numbered
    /// below `node` each count one farther (memory-only nodes take the
    /// spill first; equal nodes rotate), and a tie goes to the node that
    /// fewer lists before this one took first at its distance. Empty for a
    /// node that does not exist.
    pub fn fallback_order(&self, node: usize) -> impl Iterator<Item = usize> + Clone {
        let order = if node < self.nodes { self.build_order(node) } else { [0; MAX_NUMNODES] };
        let len = if node < self.nodes { self.nodes } else { 0 };
        order.into_iter().take(len)
    }

    /// `build_zonelists` for `node`, replaying the earlier nodes' lists
    /// for the load they leave on the others (the kernel's `node_load`,
    /// built node by node at boot): the first node of each new distance
    /// in a list takes one more, so the next list with a tie picks another.
    fn build_order(&self, node: usize) -> [usize; MAX_NUMNODES] {
        let mut load = [0usize; MAX_NUMNODES];
        let mut order = [0usize; MAX_NUMNODES];
        for local in 0..=node {
            let mut used = [false; MAX_NUMNODES];
            let mut prev = local;
            for slot in order.iter_mut().take(self.nodes) {
                let next = self.find_next_best_node(local, &mut used, &load);
                if self.distance[local][next] != self.distance[local][prev] {
                    load[next] += 1;
                }
                prev = next;
                *slot = next;
            }
        }
        order
    }

    /// The kernel's `find_next_best_node`: `local` if unused, else the
    /// unused node nearest to it, a node below `local` or one with CPUs
    /// counting one more each, the load breaking ties.
    fn find_next_best_node(&self, local: usize, used: &mut [bool; MAX_NUMNODES], load: &[usize]) -> usize {
        let mut best = (usize::MAX, local);
        if used[local] {
            for n in (0..self.nodes).filter(|&n| !used[n]) {
                let mut val = usize::from(self.distance[local][n]) + usize::from(n < local);
                if !self.cpus[n].is_empty() {
                    val += 1;
                }
                // Loads stay below MAX_NUMNODES^2: at most one step per list.
                val = val * MAX_NUMNODES * MAX_NUMNODES + load[n];
                if val < best.0 {
                    best = (val, n);
                }
            }
        }
        used[best.1] = true;
        best.1
    }
}

impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// As `numactl --hardware` prints it: each node's CPUs, then the
/// distance table.
impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "available: {} nodes{}", self.nodes, if self.simulated { " (simulated)" } else { "" })?;
        for n in 0..self.nodes {
            write!(f, "node {} cpus:", self.kernel_id[n])?;
            for cpu in self.cpus(n) {
                write!(f, " {cpu}")?;
            }
            writeln!(f)?;
        }
        write!(f, "node distances:\nnode")?;
        for n in 0..self.nodes {
            write!(f, " {:>3}", self.kernel_id[n])?;
        }
        for a in 0..self.nodes {
            write!(f, "\n{:>3}:", self.kernel_id[a])?;
            for b in 0..self.nodes {
                write!(f, " {:>3}", self.distance[a][b])?;
            }
        }
        Ok(())
    }
}

fn check_node_count(nodes: usize) -> Result<(), TopologyError> {
    match nodes {
        0 => Err(TopologyError::NoNodes),
        n if n > MAX_NUMNODES => Err(TopologyError::TooManyNodes { nodes: n, limit: MAX_NUMNODES }),
        _ => Ok(()),
    }
}

fn check_distance(from: usize, to: usize, distance: u32) -> Result<(), TopologyError> {
    let ok = if from == to { distance == LOCAL_DISTANCE } else { (LOCAL_DISTANCE + 1..=255).contains(&distance) };
    if ok { Ok(()) } else { Err(TopologyError::BadDistance { from, to, distance }) }
}

/// CPUs the machine has configured (`_SC_NPROCESSORS_CONF`), at most
/// [`MAX_CPUS`].
fn configured_cpus() -> usize {
    #[cfg(not(loom))]
    {
        // SAFETY: sysconf has no preconditions.
        let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
        (n.max(1) as usize).min(MAX_CPUS)
    }
    #[cfg(loom)]
    {
        1
    }
}

/// The topology `/sys/devices/system/node` describes, if it can be read,
/// fits, and has at least `min_nodes` nodes (checked before the nodes'
/// own files are read).
fn detect_sysfs(min_nodes: usize) -> Option<Topology> {
    let mut buf = [0u8; 4096];
    let online = read_file(format_args!("/sys/devices/system/node/online"), &mut buf)?;
    let mut t = Topology::empty(0, false);
    let mut fits = true;
    parse_list(online, |id| {
        if t.nodes == MAX_NUMNODES || id > usize::from(u16::MAX) {
            fits = false;
        } else {
            t.kernel_id[t.nodes] = id as u16;
            t.nodes += 1;
        }
    })?;
    if !fits || t.nodes < min_nodes.max(1) {
        return None;
    }
    for n in 0..t.nodes {
        let id = t.kernel_id[n];
        let list = read_file(format_args!("/sys/devices/system/node/node{id}/cpulist"), &mut buf)?;
        let mut cpus = CpuMask::EMPTY;
        parse_list(list, |cpu| {
            if cpu < MAX_CPUS {
                cpus.insert(cpu);
            } else {
                fits = false;
            }
        })?;
        t.cpus[n] = cpus;
        // `distance` lists the distances to every online node, in order.
        let row = read_file(format_args!("/sys/devices/system/node/node{id}/distance"), &mut buf)?;
        let mut to = 0;
        for field in row.split(|b| b.is_ascii_whitespace()).filter(|f| !f.is_empty()) {
            let d = parse_number(field)?;
            if to >= t.nodes || check_distance(n, to, d as u32).is_err() {
                return None;
            }
            t.distance[n][to] = d as u8;
            to += 1;
        }
        if to != t.nodes {
            return None;
        }
    }
    fits.then_some(t)
}

/// Calls `f` on each number of a kernel list (`0-3,8,10-11`); `None` if
/// the list is malformed.
fn parse_list(list: &[u8], mut f: impl FnMut(usize)) -> Option<()> {
    let list = list.trim_ascii();
    if list.is_empty() {
        return Some(());
    }
    for range in list.split(|&b| b == b',') {
        let mut ends = range.splitn(2, |&b| b == b'-');
        let first = parse_number(ends.next()?)?;
        let last = match ends.next() {
            Some(last) => parse_number(last)?,
            None => first,
        };
        if last < first || last - first >= MAX_CPUS * 64 {
            return None;
        }
        (first..=last).for_each(&mut f);
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(s: &str) -> Option<Vec<usize>> {
        let mut v = Vec::new();
        parse_list(s.as_bytes(), |n| v.push(n)).map(|()| v)
    }

    #[test]
    fn detect_numa_is_detect_with_several_nodes_only() {
        let all = Topology::detect();
        assert_eq!(Topology::detect_numa(), (all.nodes() > 1).then_some(all));
    }

    #[test]
    fn kernel_lists_parse() {
        assert_eq!(list("0-3,8,10-11\n"), Some(vec![0, 1, 2, 3, 8, 10, 11]));
        assert_eq!(list("\n"), Some(vec![]));
        assert_eq!(list("1-0"), None);
        assert_eq!(list("a"), None);
        assert_eq!(list("1,,2"), None);
    }
}
