//! Shrinkers: reclaim callbacks, the kernel's `struct shrinker`.
//!
//! A database registers its buffer cache as a [`Shrinker`]; when memory runs
//! low the reclaim thread (and, failing that, the allocating thread itself)
//! asks it how much it could free (`count`) and then to free some (`scan`).
//! A shrinker frees pages back into the arena from inside `scan`.
//!
//! Shrinkers are called with no lock held: the registered list is a
//! copy-on-write snapshot, taken under a short lock and walked without it.
//! Dropping a [`ShrinkerHandle`] removes the shrinker and waits for calls
//! already in progress, so after the drop it is never called again.

use std::ptr::NonNull;
use std::sync::Arc;

use crate::support::boot::SysBox;
use crate::support::snapshot_list::SnapshotList;
use crate::support::sync::{AtomicU32, AtomicU64, AtomicUsize, Ordering, RwLock};

/// What [`Shrinker::scan`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShrinkResult {
    /// This many pages were freed back into the arena.
    Freed(usize),
    /// Nothing can be freed now (locks held, a deadlock risk): stop asking
    /// this shrinker for this round (the kernel's `SHRINK_STOP`).
    Stop,
}

/// A cache that can give pages back when the arena runs low on memory.
///
/// Both methods are called from the reclaim thread or from an allocating
/// thread, never with an arena lock held, and may run concurrently with the
/// cache's other users. **One shrinker may be called from several threads
/// at once**: kswapd and any number of threads in direct reclaim each run
/// their own round, as the kernel calls shrinkers from every reclaim
/// context; a shrinker that cannot run twice at once returns
/// [`ShrinkResult::Stop`] from the call that finds it busy (`try_lock`).
/// On one thread it is never re-entered: allocations made inside `scan`
/// ignore watermarks and never recurse into reclaim (the kernel's
/// `PF_MEMALLOC`).
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use std::ptr::NonNull;
/// use zonealloc::{AllocFlags, Arena, ShrinkResult, Shrinker};
///
/// /// A cache of whole pages that frees its oldest on request.
/// struct PageCache {
///     arena: Arc<Arena>,
///     pages: Mutex<Vec<usize>>,
/// }
///
/// impl Shrinker for PageCache {
///     fn count(&self) -> usize {
///         self.pages.lock().unwrap().len()
///     }
///     fn scan(&self, nr_to_scan: usize) -> ShrinkResult {
///         let Ok(mut pages) = self.pages.try_lock() else { return ShrinkResult::Stop };
///         let n = nr_to_scan.min(pages.len());
///         for addr in pages.drain(..n) {
///             // SAFETY: the cache allocated this order-0 block and drops it here.
///             unsafe { self.arena.free_pages(NonNull::new(addr as *mut u8).unwrap(), 0).unwrap() };
///         }
///         ShrinkResult::Freed(n)
///     }
/// }
///
/// let arena = Arc::new(Arena::builder().region_size(64 << 20).build()?);
/// let cache = Arc::new(PageCache { arena: arena.clone(), pages: Mutex::new(Vec::new()) });
/// let handle = arena.register_shrinker(cache.clone());
/// cache.pages.lock().unwrap().push(arena.alloc_pages(0, AllocFlags::empty())?.as_ptr() as usize);
/// assert_eq!(cache.count(), 1);
/// drop(handle); // unregistered: never called again
/// # cache.scan(1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Shrinker: Send + Sync {
    /// Pages this cache could free now (`count_objects`). May be an estimate.
    fn count(&self) -> usize;

    /// Frees up to `nr_to_scan` pages (`scan_objects`), returning how many
    /// were freed, or [`ShrinkResult::Stop`].
    fn scan(&self, nr_to_scan: usize) -> ShrinkResult;

    /// Pages this cache could free on NUMA node `node` (`count_objects`
    /// with `shrink_control.nid`, asked by node reclaim; see
    /// [`ArenaBuilder::node_reclaim_mode`](crate::ArenaBuilder::node_reclaim_mode)).
    /// A cache that does not track nodes need not override it: all of
    /// [`count`](Self::count).
    fn count_node(&self, node: usize) -> usize {
        let _ = node;
        self.count()
    }

    /// Frees up to `nr_to_scan` pages of NUMA node `node`
    /// (`scan_objects` with `shrink_control.nid`); by default,
    /// [`scan`](Self::scan).
    fn scan_node(&self, nr_to_scan: usize, node: usize) -> ShrinkResult {
        let _ = node;
        self.scan(nr_to_scan)
    }
}

struct Registered {
    id: u64,
    shrinker: Arc<dyn Shrinker>,
    /// Its pages were allocated `RECLAIMABLE` (registered with
    /// [`Arena::register_reclaimable_shrinker`](crate::Arena::register_reclaimable_shrinker)).
    reclaimable: bool,
}

impl Registered {
    fn clone_entry(&self) -> Self {
        Self { id: self.id, shrinker: Arc::clone(&self.shrinker), reclaimable: self.reclaimable }
    }
}

/// Which registered shrinkers a round asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ShrinkerSet {
    /// Every shrinker, each in turn.
    All,
    /// Only those whose pages are `RECLAIMABLE`: what empties the
    /// reclaimable pageblocks that compaction cannot.
    Reclaimable,
}

/// The shared part of the registry, kept alive by the arena and by every
/// handle, so a handle may outlive its arena.
struct Core {
    list: SnapshotList<Registered>,
    /// Calls in progress hold it for reading; unregistering waits for them.
    calls: RwLock<()>,
    next_id: AtomicU64,
    /// Where the next round starts, so every shrinker gets its turn first.
    rotor: AtomicUsize,
    refs: AtomicU32,
}

pub(crate) struct ShrinkerRegistry {
    core: NonNull<Core>,
}

// SAFETY: Core is atomics and locks; the pointer is reference counted.
unsafe impl Send for ShrinkerRegistry {}
// SAFETY: as above.
unsafe impl Sync for ShrinkerRegistry {}

/// Keeps a shrinker registered; dropping it unregisters the shrinker and
/// waits for calls already in progress to return.
///
/// Dropping a handle from inside a shrinker's own `scan` does not wait
/// (it would wait for itself); the shrinker may then be called once more.
#[must_use = "dropping the handle unregisters the shrinker"]
pub struct ShrinkerHandle {
    core: NonNull<Core>,
    id: u64,
    /// Our own reference, dropped last: if the shrinker's last owner is
    /// the registry, its destructor (which may drop the arena) runs on the
    /// thread dropping the handle, never on kswapd inside a shrink round.
    shrinker: Option<Arc<dyn Shrinker>>,
}

// SAFETY: as for ShrinkerRegistry.
unsafe impl Send for ShrinkerHandle {}
// SAFETY: as for ShrinkerRegistry.
unsafe impl Sync for ShrinkerHandle {}

impl std::fmt::Debug for ShrinkerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShrinkerHandle").field("id", &self.id).finish()
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct ShrinkOutcome {
    pub scanned: usize,
    pub freed: usize,
}

impl ShrinkerRegistry {
    /// An empty registry; `None` if its bookkeeping cannot be allocated.
    pub(crate) fn new() -> Option<Self> {
        let core = SysBox::try_new(Core {
            list: SnapshotList::new(),
            calls: RwLock::new(()),
            next_id: AtomicU64::new(1),
            rotor: AtomicUsize::new(0),
            refs: AtomicU32::new(1),
        })?;
        Some(Self { core: core.into_raw() })
    }

    fn core(&self) -> &Core {
        // SAFETY: the registry holds a reference.
        unsafe { self.core.as_ref() }
    }

    /// Registers `shrinker`; `reclaimable` if its pages were allocated
    /// `RECLAIMABLE`.
    pub(crate) fn register(&self, shrinker: Arc<dyn Shrinker>, reclaimable: bool) -> ShrinkerHandle {
        let core = self.core();
        let id = core.next_id.fetch_add(1, Ordering::Relaxed);
        let shrinker = Some(shrinker);
        core.list.update(|current| {
            let mut next: Vec<Registered> = current.iter().map(Registered::clone_entry).collect();
            let s = shrinker.clone().expect("set above");
            next.push(Registered { id, shrinker: s, reclaimable });
            next
        });
        core.refs.fetch_add(1, Ordering::Relaxed);
        ShrinkerHandle { core: self.core, id, shrinker }
    }

    pub(crate) fn len(&self) -> usize {
        self.core().list.snapshot().map_or(0, |list| list.len())
    }

    /// Whether a shrinker of reclaimable memory is registered.
    pub(super) fn has_reclaimable(&self) -> bool {
        self.core().list.snapshot().is_some_and(|list| list.iter().any(|r| r.reclaimable))
    }

    /// Pages all shrinkers say they could free.
    pub(crate) fn count(&self) -> usize {
        let core = self.core();
        let _calls = core.calls.read();
        core.list.snapshot().map_or(0, |list| list.iter().map(|r| r.shrinker.count()).sum())
    }

    /// One round of `shrink_slab`: asks each shrinker of `set`, starting
    /// with the next in turn, to free up to what is still missing of
    /// `nr_to_reclaim` (bounded by what it says it can free); of NUMA node
    /// `node` only if one is named.
    pub(super) fn shrink(&self, nr_to_reclaim: usize, set: ShrinkerSet, node: Option<usize>) -> ShrinkOutcome {
        let core = self.core();
        let _calls = core.calls.read();
        let Some(list) = core.list.snapshot() else { return ShrinkOutcome::default() };
        let mut outcome = ShrinkOutcome::default();
        if list.is_empty() {
            return outcome;
        }
        let start = core.rotor.fetch_add(1, Ordering::Relaxed) % list.len();
        for i in 0..list.len() {
            if outcome.freed >= nr_to_reclaim {
                break;
            }
            let entry = &list[(start + i) % list.len()];
            if set == ShrinkerSet::Reclaimable && !entry.reclaimable {
                continue;
            }
            let shrinker = &entry.shrinker;
            let freeable = node.map_or_else(|| shrinker.count(), |n| shrinker.count_node(n));
            if freeable == 0 {
                continue;
            }
            let nr_to_scan = freeable.min(nr_to_reclaim - outcome.freed);
            outcome.scanned += nr_to_scan;
            let result = node.map_or_else(|| shrinker.scan(nr_to_scan), |n| shrinker.scan_node(nr_to_scan, n));
            if let ShrinkResult::Freed(n) = result {
                outcome.freed += n;
            }
        }
        outcome
    }
}

/// The shrinker list's lock, held across `fork(2)` (it is only ever held
/// for a moment). The lock that calls in progress hold cannot be: a call
/// runs user code that may wait for the forking thread.
#[cfg_attr(loom, allow(dead_code))]
pub(crate) struct ShrinkerForkGuard<'a> {
    core: &'a Core,
    _list: crate::support::sync::MutexGuard<'a, Option<Arc<[Registered]>>>,
}

#[cfg_attr(loom, allow(dead_code))]
impl ShrinkerRegistry {
    pub(crate) fn lock_for_fork(&self) -> ShrinkerForkGuard<'_> {
        let core = self.core();
        ShrinkerForkGuard { core, _list: core.list.lock() }
    }
}

#[cfg_attr(loom, allow(dead_code))]
impl ShrinkerForkGuard<'_> {
    /// In the forked child: calls that were in progress belong to threads
    /// that do not exist here and will never return, so unregistering must
    /// not wait for them.
    ///
    /// # Safety
    /// Only in a forked child, before it starts threads.
    pub(crate) unsafe fn forget_calls_in_progress(&self) {
        // SAFETY: the caller's contract; this thread is in no call (it is
        // running the fork handlers).
        unsafe { self.core.calls.reset_in_child(()) };
    }
}

impl Drop for ShrinkerRegistry {
    fn drop(&mut self) {
        release(self.core);
    }
}

impl Drop for ShrinkerHandle {
    fn drop(&mut self) {
        // SAFETY: the handle holds a reference.
        let core = unsafe { self.core.as_ref() };
        let id = self.id;
        core.list.update(|current| current.iter().filter(|r| r.id != id).map(Registered::clone_entry).collect());
        // Wait for calls that may still use the old list, unless this thread
        // is one of them (a shrinker dropping a handle from inside `scan`).
        if !crate::memalloc::InReclaim::active() {
            drop(core.calls.write());
        }
        release(self.core);
        // Every round that could hold the old list has returned (above):
        // if this is the last reference, the shrinker is dropped here.
        drop(self.shrinker.take());
    }
}

/// Drops one reference to the core; the last one frees it.
fn release(core: NonNull<Core>) {
    // SAFETY: the caller owns a reference; AcqRel orders every other
    // holder's last use before the free.
    if unsafe { core.as_ref() }.refs.fetch_sub(1, Ordering::AcqRel) == 1 {
        // SAFETY: no references remain; the core came from SysBox::into_raw.
        drop(unsafe { SysBox::from_raw(core) });
    }
}
