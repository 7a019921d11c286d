//! The global allocator's threads: each thread's slab heap and the state
//! it is in, thread exit, the shared heap, and `fork(2)`.
//!
//! **A thread's heap** moves through these states (`HeapState`):
//!
//! ```text
//!          first small allocation            a slow path borrows the heap
//!   None ───────────────────────────▶ Ready ◀────────────────────────────▶ Busy
//!     │                                 │
//!     │ exiting before it had one       │ thread exit (HeapExit): the heap is
//!     ▼                                 ▼ dropped, then the page caches released
//!   Gone ◀──────────────────────────────┘
//! ```
//!
//! The fast paths reach a Ready heap through [`with_ready_heap`]: the
//! heap's own thread-local, or in the process's malloc the pointer of
//! `ready.rs`, which is set exactly while the state is Ready.
//!
//! **Exit, in one fixed order.** The heap goes first (its empty slabs back
//! to the buddy allocator, the rest orphaned), then the thread's page
//! caches ([`pcp::thread_exit`]), then nothing: a page cache never attaches
//! again and a heap is never made again, so whatever a later thread-local
//! destructor allocates or frees goes to the shared heap and the zones.
//! Thread-local destructors run in reverse order of registration, so when
//! a heap is made the page caches' own exit hook is registered first and
//! `HeapExit` after it: `HeapExit` runs first. It also releases the caches
//! itself, so the order holds whatever order destructors run in.
//!
//! **The shared heap** ([`SharedHeap`]) serves threads whose heap is
//! `Gone` or `Busy`: a real lock, never held across an allocation, so
//! contention waits instead of failing and re-entry cannot happen.
//!
//! **Fork.** The prepare handler takes every lock an allocation, a free or
//! reclaim may take, in the crate's lock order: the shared heap, the
//! orphan lists, then the arena's (`Arena::lock_for_fork`: shrinker list,
//! page-cache registry with every cache frozen, purge, zones, kswapd,
//! NOFAIL progress). The parent releases them; the child recycles the
//! page caches of the threads it does not have, forgets kswapd and the
//! shrinker calls in progress, and releases them. The slab heaps of those
//! threads are lost to the child (their objects stay allocated there).
//! The caches are frozen before the zone locks are taken: the other way
//! round, an owner refilling under its set lock waits for a zone lock the
//! handler holds while the handler waits for its set
//! (`fork_handlers_race_cache_refills_and_trims` deadlocks).
//!
//! Checked by `tests/loom.rs` (`two_threads_exit_while_a_third_drains`,
//! `fork_handlers_race_a_shrinker_call`,
//! `fork_handlers_race_cache_refills_and_trims`, the shared-heap model)
//! and with real forks and thread exits in `tests/thread_lifecycle.rs`.

use std::cell::{Cell, UnsafeCell};
use std::mem::ManuallyDrop;
use std::ptr::{self, NonNull};

use super::init::{self, SLABS};
use super::ready;
use crate::arena::Arena;
use crate::arena::fork::ArenaForkGuard;
use crate::pcp;
use crate::slab::{SharedGuard, SharedHeap, SizeClass, SlabsForkGuard, ThreadHeap};

/// This thread's heap. The thread-local has no destructor (the heap is in
/// a `ManuallyDrop`), so reaching it is one address computation with no
/// registration check; [`HeapExit`], registered when the heap is made,
/// drops it at thread exit.
struct Local {
    heap: UnsafeCell<ManuallyDrop<Option<ThreadHeap<'static>>>>,
    state: Cell<HeapState>,
}

/// See the module docs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum HeapState {
    None,
    Ready,
    Busy,
    Gone,
}

std::thread_local! {
    static LOCAL: Local =
        const { Local { heap: UnsafeCell::new(ManuallyDrop::new(None)), state: Cell::new(HeapState::None) } };
    static HEAP_EXIT: HeapExit = const { HeapExit };
}

/// Thread exit, in the order of the module docs.
struct HeapExit;

impl Drop for HeapExit {
    fn drop(&mut self) {
        let _ = LOCAL.try_with(|local| {
            if local.state.replace(HeapState::Gone) == HeapState::Ready {
                ready::clear_ready();
                // SAFETY: the state was Ready, so nothing borrows the heap,
                // and Gone keeps every later use away from it.
                drop(unsafe { (*local.heap.get()).take() });
            }
        });
        pcp::thread_exit();
    }
}

/// Runs `f` on this thread's heap if it is ready, without marking it
/// borrowed: `f` must not allocate or free through the global allocator,
/// nor run code that might (the fast paths push and pop, the ring walk
/// collects and parks, and a local free may hand an empty slab to the
/// page allocator, which never allocates).
#[inline(always)]
pub(super) fn with_ready_heap<R>(f: impl FnOnce(&mut ThreadHeap<'static>) -> Option<R>) -> Option<R> {
    let heap = if ready::HAS_SLOT {
        ready::ready_heap()
    } else {
        LOCAL.with(|local| {
            if local.state.get() != HeapState::Ready {
                return ptr::null_mut();
            }
            // SAFETY: Ready: the heap exists.
            unsafe { (*local.heap.get()).as_mut().unwrap_unchecked() }
        })
    };
    if heap.is_null() {
        return None;
    }
    // SAFETY: Ready (the slot is set only while the state is: `with_heap`,
    // `HeapExit`): the heap exists and no slow path on this thread borrows
    // it (they mark it Busy, and clear the slot, first); `f` runs nothing
    // that re-enters the allocator (the contract above).
    f(unsafe { &mut *heap })
}

/// Runs `f` on this thread's heap (made on first use when `create`),
/// marked busy for the duration. `None` when the heap is unavailable: gone
/// at thread exit, busy (a nested call), or not there and not to be made.
pub(super) fn with_heap<R>(
    arena: &'static Arena,
    create: bool,
    f: impl FnOnce(&mut ThreadHeap<'static>) -> R,
) -> Option<R> {
    LOCAL
        .try_with(|local| {
            match local.state.get() {
                HeapState::Ready => {
                    ready::clear_ready();
                    local.state.set(HeapState::Busy);
                }
                // An allocation made while the page caches' hook is being
                // registered (glibc allocates for it): the shared heap,
                // and the heap is made by the next one.
                HeapState::None if create && pcp::exit_hook_registering() => return None,
                HeapState::None if create => {
                    // Busy while the exit hooks are registered: if that
                    // allocates, the allocation goes to the shared heap.
                    local.state.set(HeapState::Busy);
                    // The page caches' hook first, so it runs after ours.
                    if !pcp::register_exit_hook() || HEAP_EXIT.try_with(|_| ()).is_err() {
                        // The thread's destructors are running already.
                        local.state.set(HeapState::Gone);
                        return None;
                    }
                    // SAFETY: no heap yet, so nothing borrows the slot.
                    unsafe { *local.heap.get() = ManuallyDrop::new(Some(ThreadHeap::new(arena, &SLABS))) };
                }
                _ => return None,
            }
            // SAFETY: Busy makes this the only borrow of the heap, which
            // exists (it was Ready, or was just made).
            let heap = unsafe { (*local.heap.get()).as_mut().unwrap_unchecked() };
            let result = f(heap);
            local.state.set(HeapState::Ready);
            ready::set_ready(heap);
            Some(result)
        })
        .ok()
        .flatten()
}

/// The heap of threads whose own is gone or busy (module docs).
static SHARED: SharedHeap<'static> = SharedHeap::new();

/// An object of `class` from the shared heap; null only when the arena is
/// out of memory.
#[cold]
pub(super) fn shared_alloc(arena: &'static Arena, class: SizeClass) -> *mut u8 {
    SHARED.alloc(arena, &SLABS, class).map_or(ptr::null_mut(), NonNull::as_ptr)
}

/// Publishes the object counts of this thread's heap and the shared heap.
pub(super) fn flush_counts(arena: &'static Arena) {
    let _ = with_heap(arena, false, ThreadHeap::flush);
    if let Some(heap) = SHARED.lock().existing() {
        heap.flush();
    }
}

/// Everything the fork handlers hold across `fork(2)`, in lock order.
struct ForkHeld {
    _shared: SharedGuard<'static, 'static>,
    _slabs: SlabsForkGuard<'static>,
    arena: Option<ArenaForkGuard<'static>>,
}

struct ForkSlot(UnsafeCell<Option<ForkHeld>>);

// SAFETY: only the forking thread touches the slot, from the three atfork
// handlers of one fork, which run in sequence on that thread.
unsafe impl Sync for ForkSlot {}

static FORK_HELD: ForkSlot = ForkSlot(UnsafeCell::new(None));

/// Registers the fork handlers (once, when the global arena is built).
pub(super) fn install_fork_handlers() {
    // SAFETY: the handlers are `extern "C" fn()` that live forever.
    unsafe { libc::pthread_atfork(Some(fork_prepare), Some(fork_parent), Some(fork_child)) };
}

extern "C" fn fork_prepare() {
    let Some(arena) = init::global_arena() else { return };
    let held = ForkHeld { _shared: SHARED.lock(), _slabs: SLABS.lock_for_fork(), arena: arena.lock_for_fork() };
    // SAFETY: see ForkSlot.
    unsafe { *FORK_HELD.0.get() = Some(held) };
}

extern "C" fn fork_parent() {
    // SAFETY: see ForkSlot.
    drop(unsafe { (*FORK_HELD.0.get()).take() });
}

extern "C" fn fork_child() {
    // SAFETY: see ForkSlot.
    let Some(mut held) = (unsafe { (*FORK_HELD.0.get()).take() }) else { return };
    if let Some(arena) = held.arena.take() {
        // SAFETY: in the child of the fork these locks were taken for,
        // before it can start a thread.
        unsafe { arena.release_in_child() };
    }
    drop(held);
    init::reclaim_forgotten();
}
