//! A thread's sets (one per arena it uses), its exit hook, and the fast
//! paths that reach its set without a lookup.

use std::ptr::NonNull;

use crate::buddy::Block;
use crate::flags::AllocFlags;
use crate::mempolicy::NodeMask;
use crate::migratetype::{MOBILITY_SHIFT, Migratetype};
use crate::node::Node;
use crate::order::Order;
use crate::page::{PageInfo, PageState};
use crate::pfn::Pfn;
use crate::zone_idx::ZoneIdx;

use super::*;

/// How many arenas a thread caches for; beyond that, operations on further
/// arenas go straight to the zones.
pub const THREAD_ARENAS: usize = 8;

/// A thread's sets, one entry per arena it has used (up to
/// [`THREAD_ARENAS`]). Entry 0 is the most recently used arena: the fast
/// paths look only there.
pub(super) struct ThreadCaches {
    pub(super) entries: [std::cell::Cell<Entry>; THREAD_ARENAS],
    /// The thread is exiting and its sets have been released: nothing may
    /// attach again (a set attached now would never be released).
    pub(super) gone: std::cell::Cell<bool>,
}

/// One arena's set, with its preferred zone's lists and metadata words
/// resolved so the fast paths need no lookup and no arithmetic.
#[derive(Clone, Copy)]
pub(super) struct Entry {
    /// 0 (never an arena's id) when empty.
    pub(super) arena_id: u64,
    /// Dangling when empty (never followed unless `arena_id` matched).
    pub(super) set: NonNull<PcpSet>,
    /// The preferred zone's lists of its first type (the others follow);
    /// dangling when empty (never followed unless `arena_id` matched).
    pub(super) hot: NonNull<ZonePcp>,
    /// Every zone's and type's lists (`pcps` of the set) and how many
    /// there are; 0 when empty.
    pub(super) pcps: NonNull<ZonePcp>,
    pub(super) nr_pcps: usize,
    /// [`PageInfo::allocated_base`] of the preferred zone.
    pub(super) allocated: u32,
}

impl Entry {
    /// The set, if the entry holds one.
    pub(super) fn occupied(&self) -> Option<NonNull<PcpSet>> {
        (self.arena_id != 0).then_some(self.set)
    }

    /// Whether the entry holds arena `arena_id`'s set, passed by or not
    /// ([`bypass_own_cache`]); the second compare runs only for an entry of
    /// another arena.
    pub(super) fn serves(&self, arena_id: u64) -> bool {
        self.arena_id == arena_id || self.arena_id == arena_id | BYPASS
    }

    /// Points the fast paths' fields at zone `preferred`'s lists and head
    /// word.
    fn aim(&mut self, preferred: ZoneIdx) {
        let hot = pcp_index(preferred, Migratetype::Unmovable);
        assert!(hot + PCP_TYPES <= self.nr_pcps);
        // SAFETY: `hot` is below the slice's length (above).
        self.hot = unsafe { self.pcps.add(hot) };
        self.allocated = PageInfo::allocated_base(preferred);
    }
}

const EMPTY: Entry = Entry {
    arena_id: 0,
    set: NonNull::dangling(),
    hot: NonNull::dangling(),
    pcps: NonNull::dangling(),
    nr_pcps: 0,
    allocated: 0,
};

/// Marks an entry's arena id for [`bypass_own_cache`]: ids count up from 1
/// and never reach it.
const BYPASS: u64 = 1 << 63;

/// The id an entry of arena `arena_id` carries: with [`BYPASS`] if the
/// fast paths are to pass it by.
fn entry_id(arena_id: u64, bypass: bool) -> u64 {
    if bypass { arena_id | BYPASS } else { arena_id }
}

/// Turns an allocated head's info word into the cached head's: the states
/// differ in one bit, and allocated heads carry no content flags.
pub(super) const ALLOCATED_TO_CACHED: u32 = PageState::Allocated as u32 ^ PageState::Cached as u32;

impl ThreadCaches {
    #[cfg_attr(loom, allow(dead_code))]
    pub(super) const fn new() -> Self {
        Self { entries: [const { std::cell::Cell::new(EMPTY) }; THREAD_ARENAS], gone: std::cell::Cell::new(false) }
    }

    /// This thread's set for `arena`, attaching one on first use, and moved
    /// to the front for the fast paths.
    #[cold]
    pub(super) fn get(&self, node: &Node, registry: &PcpRegistry) -> Option<&PcpSet> {
        if self.gone.get() {
            return None;
        }
        let mut free_slot = None;
        let mut found = None;
        for (i, cell) in self.entries.iter().enumerate() {
            let entry = cell.get();
            match entry.occupied() {
                Some(_) if entry.serves(node.id) => {
                    found = Some(i);
                    break;
                }
                Some(set) => {
                    // An entry whose arena was dropped can be reused.
                    // SAFETY: the thread's reference keeps the set alive.
                    if free_slot.is_none() && unsafe { set.as_ref() }.state.load() == SetState::Gone {
                        // SAFETY: the thread's reference, given up once; the entry is cleared.
                        unsafe { PcpSet::put_ref(set) };
                        cell.set(EMPTY);
                        free_slot = Some(i);
                    }
                }
                None => free_slot = free_slot.or(Some(i)),
            }
        }
        let index = match found {
            Some(i) => i,
            None => {
                let slot = free_slot?;
                // The hook first: a set attached without it would never be
                // released.
                if !register_exit_hook() {
                    return None;
                }
                let set = registry.attach(node)?;
                // SAFETY: just attached; the thread holds a reference.
                let preferred = unsafe { set.as_ref() }.preferred();
                // SAFETY: as above.
                let pcps = &unsafe { set.as_ref() }.pcps;
                let bypass = node.numa.is_numa() && crate::mempolicy::bypasses_cache(node.id);
                let mut entry = Entry {
                    arena_id: entry_id(node.id, bypass),
                    set,
                    hot: NonNull::dangling(),
                    // From the whole slice, so that the fast paths may step
                    // from one group to another.
                    pcps: NonNull::from(&pcps[..]).cast::<ZonePcp>(),
                    nr_pcps: pcps.len(),
                    allocated: 0,
                };
                entry.aim(preferred);
                self.entries[slot].set(entry);
                slot
            }
        };
        // Move to the front.
        let entry = self.entries[index].get();
        self.entries[index].set(self.entries[0].get());
        self.entries[0].set(entry);
        // SAFETY: the thread's reference keeps the set alive, and `self`
        // (thread-local) does not outlive the thread.
        entry.occupied().map(|set| unsafe { set.as_ref() })
    }

    /// Releases every set: the thread is exiting. Afterwards nothing
    /// attaches: the thread's later operations go straight to the zones.
    pub(super) fn release_all(&self) {
        let first = !self.gone.replace(true);
        for cell in &self.entries {
            if let Some(set) = cell.replace(EMPTY).occupied() {
                // SAFETY: attached by this thread, released once.
                unsafe { PcpSet::release(set) };
            }
        }
        // With nothing of its own left in an arena: the program may end
        // with this thread (`own_thread`).
        #[cfg(not(loom))]
        if first {
            crate::support::own_thread::thread_exiting();
        }
        #[cfg(loom)]
        let _ = first;
    }
}

// The entries live in a thread-local *without* a destructor, so the fast
// paths reach them with one fs-relative load and no state check; a second,
// empty thread-local with a destructor is registered before the first
// attach, to release the sets when the thread exits (see `lifecycle.rs` for
// how the global allocator orders its own exit before it).
#[cfg(not(loom))]
std::thread_local! {
    static THREAD_CACHES: ThreadCaches = const { ThreadCaches::new() };
    static EXIT_HOOK: ExitHook = const { ExitHook };
    static REGISTERING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[cfg(not(loom))]
pub(super) struct ExitHook;

#[cfg(not(loom))]
impl Drop for ExitHook {
    fn drop(&mut self) {
        // THREAD_CACHES has no destructor, so it is still accessible here.
        let _ = THREAD_CACHES.try_with(ThreadCaches::release_all);
    }
}

/// Registers the destructor that releases this thread's sets at exit;
/// `false` once the thread's destructors have started without it (then
/// nothing may attach).
#[cfg(not(loom))]
pub(crate) fn register_exit_hook() -> bool {
    if exit_hook_registering() {
        return false;
    }
    let _ = REGISTERING.try_with(|r| r.set(true));
    // The leader's key, whose setting may allocate (keys past the first 32)
    // like the registration below.
    crate::support::own_thread::note_thread();
    let registered = EXIT_HOOK.try_with(|_| ()).is_ok();
    let _ = REGISTERING.try_with(|r| r.set(false));
    registered
}

/// Whether this thread is registering its exit hook right now. glibc's
/// `__cxa_thread_atexit_impl` allocates (`calloc`); when `calloc` is
/// zonealloc's (`zonealloc-malloc`), that nested allocation must neither
/// register again (it would recurse forever) nor get a cache.
#[cfg(not(loom))]
pub(crate) fn exit_hook_registering() -> bool {
    REGISTERING.try_with(std::cell::Cell::get).unwrap_or(false)
}

#[cfg(loom)]
#[allow(dead_code)]
pub(crate) fn exit_hook_registering() -> bool {
    false
}

/// The thread is exiting: releases its sets now, and nothing attaches
/// afterwards. The exit hook does the same; whichever runs first does it.
#[cfg_attr(loom, allow(dead_code))]
pub(crate) fn thread_exit() {
    let _ = with_caches(ThreadCaches::release_all);
}

// Loom's thread-locals cannot be const; one with a destructor does both jobs.
#[cfg(loom)]
pub(super) struct LoomCaches(ThreadCaches);

#[cfg(loom)]
impl Drop for LoomCaches {
    fn drop(&mut self) {
        // As the real hook, which runs once: a thread whose sets were
        // released already (`loom_hooks::thread_exit`) has no hook left to
        // release a set attached after that.
        if !self.0.gone.get() {
            self.0.release_all();
        }
    }
}

#[cfg(loom)]
loom::thread_local! {
    static LOOM_CACHES: LoomCaches = LoomCaches(ThreadCaches {
        entries: std::array::from_fn(|_| std::cell::Cell::new(EMPTY)),
        gone: std::cell::Cell::new(false),
    });
}

#[cfg(loom)]
pub(crate) fn register_exit_hook() -> bool {
    LOOM_CACHES.try_with(|_| ()).is_ok()
}

#[inline(always)]
pub(super) fn with_caches<R>(f: impl FnOnce(&ThreadCaches) -> R) -> Option<R> {
    #[cfg(not(loom))]
    {
        THREAD_CACHES.try_with(f).ok()
    }
    #[cfg(loom)]
    {
        LOOM_CACHES.try_with(|c| f(&c.0)).ok()
    }
}

/// Runs `f` with this thread's set for the arena of `node`; `None` if the
/// thread has no cache for it (its thread-locals are being torn down, or
/// it uses more than [`THREAD_ARENAS`] arenas).
fn with_thread_set<R>(node: &Node, registry: &PcpRegistry, f: impl FnOnce(&PcpSet) -> R) -> Option<R> {
    with_caches(|caches| caches.get(node, registry).map(f)).flatten()
}

/// Drains this thread's cache for the arena of `node` to the zones; the
/// pages it held.
pub(crate) fn drain_own_cache(node: &Node, registry: &PcpRegistry) -> usize {
    with_thread_set(node, registry, |set| set.drain(node)).unwrap_or(0)
}

/// What the slow path of [`alloc_fast`] did.
pub(crate) enum CacheAlloc {
    /// This thread's cache served the block.
    Served(Block),
    /// No zone of the zonelist has a cached block or passes its low
    /// watermark to refill: the allocator's slow path follows.
    BelowWatermarks,
    /// The thread has no cache for the arena (its thread-locals are being
    /// torn down, or it uses more than [`THREAD_ARENAS`] arenas): the
    /// zones serve it directly.
    NoCache,
}

/// What the slow path of [`free_fast`] did.
pub(crate) enum CacheFree {
    /// The block is on this thread's list (or went on to the zone with the
    /// list's coldest blocks).
    Freed,
    /// Another free of the block claimed it first: nothing changed.
    DoubleFree,
    /// As [`CacheAlloc::NoCache`].
    NoCache,
}

/// The slow path of [`alloc_fast`]: an order-`order` block of type `mt`
/// from this thread's cache for the arena of `node`, refilled from the
/// zonelist if it is empty ([`PcpSet::alloc`]).
pub(crate) fn alloc_cached(
    node: &Node,
    registry: &PcpRegistry,
    request: (Order, Migratetype),
    flags: AllocFlags,
) -> CacheAlloc {
    cache_outcome(with_thread_set(node, registry, |set| set.alloc(node, request, (flags, NodeMask::ALL))))
}

/// [`alloc_cached`] with NUMA nodes: the cache first moves to node
/// `intended` (the memory policy's, or the CPU's), and only the nodes of
/// `allowed` may serve the block.
pub(crate) fn alloc_cached_on(
    node: &Node,
    registry: &PcpRegistry,
    request: (Order, Migratetype),
    flags: AllocFlags,
    (intended, allowed): (usize, NodeMask),
) -> CacheAlloc {
    follow(node, registry, intended);
    cache_outcome(with_thread_set(node, registry, |set| set.alloc(node, request, (flags, allowed))))
}

#[inline(always)]
fn cache_outcome(outcome: Option<Option<Block>>) -> CacheAlloc {
    match outcome {
        Some(Some(block)) => CacheAlloc::Served(block),
        Some(None) => CacheAlloc::BelowWatermarks,
        None => CacheAlloc::NoCache,
    }
}

/// Moves this thread's cache for the arena of `node` to NUMA node
/// `target` if it is on another (the thread migrated, or its memory policy
/// changed): the set's preferred zone becomes the zone at the same place
/// on `target`, and the fast paths' entry follows. On the slow path, so the
/// move happens at the cache's next refill; the fast path serves what the
/// cache held until then.
#[cold]
fn follow(node: &Node, registry: &PcpRegistry, target: usize) {
    with_caches(|caches| {
        let Some(set) = caches.get(node, registry) else { return };
        let Some(moved) = set.move_to_node(node, target) else { return };
        // `get` put this arena's entry first.
        let mut entry = caches.entries[0].get();
        entry.aim(moved);
        caches.entries[0].set(entry);
    });
}

/// Makes the fast paths pass this thread's cache for the arena of `node`
/// by (`bypass`) or use it again: the entry's arena id carries
/// [`BYPASS`], which no arena's id has, so the fast paths' one compare
/// fails and the slow paths, which look the entry up without the bit,
/// decide. For a memory policy other than the local one (see
/// [`crate::mempolicy::bypasses_cache`]).
pub(crate) fn bypass_own_cache(node: &Node, bypass: bool) {
    with_caches(|caches| {
        for cell in &caches.entries {
            let mut entry = cell.get();
            if entry.serves(node.id) {
                entry.arena_id = entry_id(node.id, bypass);
                cell.set(entry);
            }
        }
    });
}

/// The slow path of [`free_fast`]: frees the allocated block `pfn`, whose
/// head the caller validated as `info`, into this thread's cache for the
/// arena of `node` ([`PcpSet::free`]).
pub(crate) fn free_cached(node: &Node, registry: &PcpRegistry, pfn: Pfn, info: PageInfo) -> CacheFree {
    match with_thread_set(node, registry, |set| set.free(node, pfn, info)) {
        Some(true) => CacheFree::Freed,
        Some(false) => CacheFree::DoubleFree,
        None => CacheFree::NoCache,
    }
}

/// The allocation fast path: pops a block of `order` from this thread's
/// list for its preferred zone and the migratetype the flags' bits
/// `flag_bits` name. `None` sends the caller to the slow path (no set
/// yet, a drain in progress, or an empty list).
///
/// The type is the flags' two mobility bits as they are: the lists they
/// name that the slow path never fills stay empty, and send such requests
/// there. Both bits name the high-atomic type, whose lists are never
/// filled (the slow path refuses the request); without grouping by
/// mobility only the unmovable lists are filled (the slow path serves
/// `MOVABLE` and `RECLAIMABLE` requests from them).
#[inline(always)]
pub(crate) fn alloc_fast(node: &Node, order: u32, flag_bits: u32) -> Option<Pfn> {
    with_caches(|caches| {
        let entry = caches.entries[0].get();
        if entry.arena_id != node.id {
            return None;
        }
        let mt = (flag_bits >> MOBILITY_SHIFT) & 3;
        // Under loom one list serves every type: a request naming both
        // types must reach the slow path, which refuses it, as the empty
        // high-atomic lists send it there otherwise.
        #[cfg(loom)]
        if mt == 3 {
            return None;
        }
        // SAFETY: entry 0 holds this arena's set (ids are never reused and
        // never 0), kept alive by the thread's reference; `hot` points at
        // the preferred zone's first type's lists, followed by its others.
        let (set, zp) = unsafe { (entry.set.as_ref(), entry.hot.add(pcp_type(mt as usize)).as_ref()) };
        // The caller's order is at most PCP_MAX_ORDER.
        let o = (order as usize).min(PCP_ORDERS - 1);
        if !set.enter() {
            return None;
        }
        // SAFETY: inside a busy section that did not see `locked`.
        let Some(pfn) = (unsafe { zp.pop(o) }) else {
            set.leave();
            return None;
        };
        // SAFETY: cached blocks are pages of the region.
        hand_out(unsafe { node.mem_map.page_unchecked(pfn) }, entry.allocated, order, mt as usize);
        ZonePcp::bump(&zp.allocs[o]);
        set.leave();
        Some(pfn)
    })
    .flatten()
}

/// The free fast path: pushes a block whose head word `word` the caller
/// validated as allocated with `order` onto this thread's list for the
/// block's zone. `false` sends the caller to the slow path (a full list, no
/// set, a drain in progress).
#[inline(always)]
pub(crate) fn free_fast(node: &Node, pfn: Pfn, order: u32, word: u32) -> bool {
    with_caches(|caches| {
        let entry = caches.entries[0].get();
        let i = pcp_index_of_zone_type(PageInfo::zone_type_of_word(word));
        // An empty entry has nr_pcps == 0.
        if entry.arena_id != node.id || i >= entry.nr_pcps {
            return false;
        }
        // SAFETY: as in `alloc_fast`; `pcps` points at the set's `nr_pcps`
        // groups of lists and `i` is below that.
        let (set, zp) = unsafe { (entry.set.as_ref(), entry.pcps.add(i).as_ref()) };
        // The caller's order is at most PCP_MAX_ORDER.
        let o = (order as usize).min(PCP_ORDERS - 1);
        if !set.enter() {
            return false;
        }
        // SAFETY: the caller validated `pfn` as a page of the region.
        let page = unsafe { node.mem_map.page_unchecked(pfn) };
        // SAFETY: inside a busy section that did not see `locked`.
        let pushed = unsafe { zp.push(o, pfn, || page.claim_word(word, word ^ ALLOCATED_TO_CACHED)) };
        if pushed == Push::Pushed {
            ZonePcp::bump(&zp.frees[o]);
        }
        set.leave();
        // A lost claim goes to the slow path too, which refuses the free.
        pushed == Push::Pushed
    })
    .unwrap_or(false)
}
