//! The global allocator: kmalloc over the slab layer, `kmalloc_large` over
//! the buddy allocator.
//!
//! ```no_run
//! #[global_allocator]
//! static GLOBAL: zonealloc::ZoneAlloc = zonealloc::ZoneAlloc;
//! ```
//!
//! **Lazy arena.** The first allocation builds a default arena; its state
//! is a const-initialised atomic, so nothing runs before `main`, and the
//! build allocates only through `System` (metadata) and `mmap` (the
//! region), never through itself. Racing first allocations: one builds,
//! the others yield until it is ready. The region is reserved, not
//! committed: by default the machine's physical memory. kswapd is started
//! right after the arena is published (spawning a thread allocates, which
//! by then is safe).
//!
//! **Routing.** Sizes up to [`SLAB_MAX`](crate::SLAB_MAX) (with alignments
//! that fit a power-of-two class) come from the calling thread's slab heap;
//! larger ones are buddy blocks of the order that covers size and alignment
//! (orders 0..=3 through the per-thread page caches); beyond the largest
//! order (32 MiB in the global arena), `System` (glibc, which maps them
//! directly) serves them, and any alignment up to the OS's limits works
//! there. `realloc` keeps a block where it is when the new size has the same
//! class or order, or when the block can grow into its free buddies; a
//! growing block that must move goes to the start of a large free block
//! ([`Arena::alloc_pages_growable`]), so its next doublings stay in place.
//!
//! **Bad frees.** A pointer outside the region (unless its layout is one
//! that goes to `System`), a pointer that is not an object or block start,
//! a double free: each is refused without writing anything and reported on
//! stderr without allocating (rate limited).
//!
//! Environment (read once, without allocating): `ZONEALLOC_REGION_SIZE`
//! (bytes, `K`/`M`/`G` suffixes; default: physical memory),
//! `ZONEALLOC_ZONES`, `ZONEALLOC_PURGE_DELAY_MS` (0: never purge on a
//! timer; default 1000), `ZONEALLOC_HUGE_PAGES` (`transparent`, the
//! default: the region asks for transparent huge pages and purges whole
//! 2 MiB blocks only; `none`: base pages, purged at any size; any other
//! value leaves the default).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, UnsafeCell};
use std::fmt::Write;
use std::mem::ManuallyDrop;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::arena::Arena;
use crate::boot::SysBox;
use crate::flags::AllocFlags;
use crate::lazy::{Init, Lazy};
use crate::pcp::PcpForkGuard;
use crate::reclaim::ReclaimForkGuard;
use crate::region::HugePages;
use crate::report::{RateLimit, StackWriter};
use crate::slab::SlabsForkGuard;
use crate::slab::{ClassStats, NR_CLASSES, SlabFreeError, Slabs, ThreadHeap, class_of};
use crate::stats::Stats;
use crate::sync::{Mutex, MutexGuard};
use crate::zone::ZoneGuard;

/// The global allocator. Add
/// `#[global_allocator] static GLOBAL: zonealloc::ZoneAlloc = zonealloc::ZoneAlloc;`
/// to a binary and every allocation goes through zonealloc.
#[derive(Clone, Copy, Debug, Default)]
pub struct ZoneAlloc;

static ARENA: Lazy<Arena> = Lazy::new();
static SLABS: Slabs = Slabs::new();
static RECLAIM_STARTED: AtomicBool = AtomicBool::new(false);
static REFUSALS: RateLimit = RateLimit::new();

/// The heap of threads whose own is gone (allocations from TLS
/// destructors after ours ran) or busy (an allocation made from inside an
/// allocation: a user shrinker called by direct reclaim).
static SHARED: Mutex<SharedHeap> = Mutex::new(SharedHeap(None));

struct SharedHeap(Option<ThreadHeap<'static>>);

// SAFETY: the shared heap is only used under its mutex; a heap's slabs are
// safe to use from any one thread at a time.
unsafe impl Send for SharedHeap {}

/// This thread's heap. The thread-local has no destructor (the heap is in
/// a `ManuallyDrop`), so reaching it is one address computation with no
/// registration check; [`HeapExit`], registered when the heap is made,
/// drops it at thread exit.
struct Local {
    heap: UnsafeCell<ManuallyDrop<Option<ThreadHeap<'static>>>>,
    state: Cell<HeapState>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum HeapState {
    /// No heap yet.
    None,
    /// A heap, not borrowed: the fast paths may use it.
    Ready,
    /// The heap is borrowed by a slow path on this thread; a nested
    /// allocation (from a shrinker or an OOM handler that slow path ran)
    /// must not alias it and uses the shared heap.
    Busy,
    /// The thread is exiting and its heap is gone: the shared heap serves
    /// what later thread-local destructors allocate.
    Gone,
}

thread_local! {
    static LOCAL: Local =
        const { Local { heap: UnsafeCell::new(ManuallyDrop::new(None)), state: Cell::new(HeapState::None) } };
    static HEAP_EXIT: HeapExit = const { HeapExit };
    /// Set while this thread builds the global arena.
    static BUILDING_HERE: Cell<bool> = const { Cell::new(false) };
}

/// Drops this thread's heap at thread exit: its empty slabs go back to the
/// buddy allocator and the others become orphans.
struct HeapExit;

impl Drop for HeapExit {
    fn drop(&mut self) {
        let _ = LOCAL.try_with(|local| {
            if local.state.replace(HeapState::Gone) != HeapState::Ready {
                return; // never made, or (impossibly) borrowed: leave it
            }
            // SAFETY: the state was Ready, so nothing borrows the heap, and
            // Gone keeps every later use away from it.
            let heap = unsafe { (*local.heap.get()).take() };
            drop(heap);
        });
    }
}

/// The global arena, if some allocation has built it.
///
/// Use it for page allocations next to the global heap, to register
/// shrinkers on it or to purge it:
///
/// ```no_run
/// if let Some(arena) = zonealloc::global_arena() {
///     arena.purge();
/// }
/// ```
#[inline]
pub fn global_arena() -> Option<&'static Arena> {
    ARENA.get()
}

/// The global arena's statistics and the slab layer's, per size class.
#[derive(Clone, Debug)]
pub struct GlobalStats {
    /// The arena under the global allocator.
    pub arena: Stats,
    /// Per size class: slabs, orphaned slabs, objects in use.
    pub classes: [ClassStats; NR_CLASSES],
}

impl std::fmt::Display for GlobalStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}", self.arena)?;
        writeln!(f, "# slabinfo: class size, slabs, orphaned, objects in use, slab KiB")?;
        for c in self.classes.iter().filter(|c| c.slabs > 0) {
            writeln!(f, "{:>6} {:>7} {:>5} {:>9} {:>8}", c.size, c.slabs, c.orphans, c.objects, c.slab_bytes >> 10)?;
        }
        Ok(())
    }
}

/// Statistics of the global allocator, or `None` before its first
/// allocation (or if it could not build its arena and fell back to
/// `System`).
pub fn global_stats() -> Option<GlobalStats> {
    let arena = global_arena()?;
    Some(GlobalStats { arena: arena.stats(), classes: SLABS.stats() })
}

/// Returns every empty orphaned slab of the global heap to the buddy
/// allocator; the pages returned. The global arena's reclaim does this too.
pub fn global_reap() -> usize {
    global_arena().map_or(0, |arena| SLABS.reap_orphans(arena))
}

#[inline]
fn arena() -> Option<&'static Arena> {
    match global_arena() {
        Some(arena) => Some(arena),
        None => init(),
    }
}

#[cold]
fn init() -> Option<&'static Arena> {
    let reentrant = || BUILDING_HERE.try_with(Cell::get).unwrap_or(true);
    let build = || {
        let _ = BUILDING_HERE.try_with(|b| b.set(true));
        let built = build_global_arena();
        let _ = BUILDING_HERE.try_with(|b| b.set(false));
        built
    };
    match ARENA.get_or_init(reentrant, build) {
        Init::Ready(arena) => Some(arena),
        Init::Built(arena) => {
            // SAFETY: the handlers are `extern "C" fn()` that live forever.
            unsafe { libc::pthread_atfork(Some(fork_prepare), Some(fork_parent), Some(fork_child)) };
            start_reclaim();
            Some(arena)
        }
        Init::Failed | Init::Reentrant => None,
    }
}

/// Everything the atfork handlers hold across `fork(2)`, in lock order.
struct ForkHeld {
    _shared: MutexGuard<'static, SharedHeap>,
    _slabs: SlabsForkGuard<'static>,
    pcp: PcpForkGuard<'static>,
    reclaim: ReclaimForkGuard<'static>,
    _zones: [Option<ZoneGuard<'static>>; crate::MAX_ZONES],
}

struct ForkSlot(UnsafeCell<Option<ForkHeld>>);

// SAFETY: only the forking thread touches the slot, from the three atfork
// handlers of one fork, which run in sequence on that thread.
unsafe impl Sync for ForkSlot {}

static FORK_HELD: ForkSlot = ForkSlot(UnsafeCell::new(None));

/// Before `fork(2)`: take every lock the allocation paths take, so that
/// the child gets none of them held by a thread it does not have.
extern "C" fn fork_prepare() {
    let Some(arena) = global_arena() else { return };
    let held = ForkHeld {
        _shared: SHARED.lock(),
        _slabs: SLABS.lock_for_fork(),
        pcp: arena.inner.pcp.lock_for_fork(),
        reclaim: arena.inner.reclaim.lock_for_fork(),
        _zones: std::array::from_fn(|z| arena.inner.zones.get(z).map(|zone| zone.lock())),
    };
    // SAFETY: see ForkSlot.
    unsafe { *FORK_HELD.0.get() = Some(held) };
}

/// After `fork(2)`, in the parent: release everything.
extern "C" fn fork_parent() {
    // SAFETY: see ForkSlot.
    drop(unsafe { (*FORK_HELD.0.get()).take() });
}

/// After `fork(2)`, in the child: the only thread. Other threads' page
/// caches are abandoned (they may be mid-operation), kswapd is forgotten
/// and restarted by the next allocation, and every lock is released.
extern "C" fn fork_child() {
    // SAFETY: see ForkSlot.
    let Some(mut held) = (unsafe { (*FORK_HELD.0.get()).take() }) else { return };
    if let Some(arena) = global_arena() {
        held.pcp.abandon_all_but_own(&arena.inner);
    }
    held.reclaim.forget_thread();
    drop(held);
    RECLAIM_STARTED.store(false, Ordering::Release);
}

/// Starts the global arena's kswapd (again, in a forked child).
fn start_reclaim() {
    if RECLAIM_STARTED.swap(true, Ordering::AcqRel) {
        return;
    }
    if let Some(arena) = global_arena() {
        // Spawning allocates: through us, now that the arena is ready.
        let _ = arena.inner.reclaim.start(&arena.inner);
        static REAPER_REGISTERED: AtomicBool = AtomicBool::new(false);
        if !REAPER_REGISTERED.swap(true, Ordering::AcqRel) {
            // For the life of the process.
            std::mem::forget(arena.register_shrinker(std::sync::Arc::new(OrphanReaper)));
        }
    }
}

/// Reclaim's way to the slabs of threads that exited: the orphans whose
/// objects have all been freed go back to the buddy allocator.
struct OrphanReaper;

impl crate::Shrinker for OrphanReaper {
    fn count(&self) -> usize {
        SLABS.orphan_pages()
    }

    fn scan(&self, _nr_to_scan: usize) -> crate::ShrinkResult {
        match global_arena() {
            Some(arena) => crate::ShrinkResult::Freed(SLABS.reap_orphans(arena)),
            None => crate::ShrinkResult::Stop,
        }
    }
}

/// The global arena's largest block: 32 MiB (the kernel's 4 MiB would send
/// every buffer between 4 and 32 MiB to `System`, and a vector growing
/// past 4 MiB would be copied out of the arena instead of growing in
/// place into its free buddy).
const GLOBAL_MAX_ORDER: u32 = 13;

fn build_global_arena() -> Option<NonNull<Arena>> {
    let mut builder = Arena::builder()
        .region_size(env_size("ZONEALLOC_REGION_SIZE").unwrap_or_else(physical_memory))
        .max_order(GLOBAL_MAX_ORDER);
    if let Some(zones) = env_size("ZONEALLOC_ZONES") {
        builder = builder.zones(zones);
    }
    if let Some(ms) = env_size("ZONEALLOC_PURGE_DELAY_MS") {
        builder = builder.purge_delay((ms > 0).then(|| Duration::from_millis(ms as u64)));
    }
    if !env_is("ZONEALLOC_HUGE_PAGES", b"none") {
        builder = builder.huge_pages(HugePages::Transparent);
    }
    let arena = builder.defer_reclaim_start().build().ok()?;
    Some(SysBox::try_new(arena)?.into_raw())
}

fn physical_memory() -> usize {
    // SAFETY: sysconf has no preconditions.
    let pages = unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) };
    usize::try_from(pages).map_or(1 << 30, |pages| pages.saturating_mul(crate::PAGE_SIZE)).max(64 << 20)
}

/// The value of an environment variable, without allocating.
fn env_bytes(name: &std::ffi::CStr) -> Option<&'static [u8]> {
    // SAFETY: getenv returns null or a NUL-terminated string that lives as
    // long as the environment is not modified (we read it once, at start).
    let value = unsafe { libc::getenv(name.as_ptr()) };
    // SAFETY: as above.
    (!value.is_null()).then(|| unsafe { std::ffi::CStr::from_ptr(value) }.to_bytes())
}

fn env_is(name: &str, expected: &[u8]) -> bool {
    let mut buf = [0u8; 64];
    cstr(name, &mut buf).and_then(env_bytes).is_some_and(|v| v.eq_ignore_ascii_case(expected))
}

/// A number with an optional K/M/G suffix.
fn env_size(name: &str) -> Option<usize> {
    let mut buf = [0u8; 64];
    let value = env_bytes(cstr(name, &mut buf)?)?;
    let (digits, shift) = match value.last()? {
        b'k' | b'K' => (&value[..value.len() - 1], 10),
        b'm' | b'M' => (&value[..value.len() - 1], 20),
        b'g' | b'G' => (&value[..value.len() - 1], 30),
        _ => (value, 0),
    };
    let mut n: usize = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(usize::from(d - b'0'))?;
    }
    n.checked_mul(1 << shift)
}

fn cstr<'a>(name: &str, buf: &'a mut [u8; 64]) -> Option<&'a std::ffi::CStr> {
    let bytes = name.as_bytes();
    if bytes.len() >= buf.len() {
        return None;
    }
    buf[..bytes.len()].copy_from_slice(bytes);
    buf[bytes.len()] = 0;
    std::ffi::CStr::from_bytes_until_nul(&buf[..]).ok()
}

/// The buddy order for a large layout.
#[inline]
fn order_of(layout: Layout) -> u32 {
    let bytes = layout.size().max(layout.align()).max(crate::PAGE_SIZE);
    match bytes.checked_next_power_of_two() {
        Some(bytes) => (bytes / crate::PAGE_SIZE).trailing_zeros(),
        None => u32::MAX,
    }
}

/// Runs `f` on this thread's heap if it is ready, without marking it
/// borrowed: `f` must not allocate or free (the fast paths only push and
/// pop).
#[inline(always)]
fn with_ready_heap<R>(f: impl FnOnce(&mut ThreadHeap<'static>) -> Option<R>) -> Option<R> {
    LOCAL
        .try_with(|local| {
            if local.state.get() != HeapState::Ready {
                return None;
            }
            // SAFETY: Ready: the heap exists and no slow path on this thread
            // borrows it (they mark it Busy); `f` runs no other code.
            let heap = unsafe { (*local.heap.get()).as_mut().unwrap_unchecked() };
            f(heap)
        })
        .ok()
        .flatten()
}

/// Runs `f` on this thread's heap (made on first use when `create`),
/// marked busy for the duration. `None` when the heap is unavailable: gone
/// at thread exit, busy (a nested call), or not there and not to be made.
fn with_heap<R>(arena: &'static Arena, create: bool, f: impl FnOnce(&mut ThreadHeap<'static>) -> R) -> Option<R> {
    LOCAL
        .try_with(|local| {
            let made = match local.state.get() {
                HeapState::Ready => false,
                HeapState::None if create => {
                    // SAFETY: no heap, so nothing borrows the slot.
                    unsafe { *local.heap.get() = ManuallyDrop::new(Some(ThreadHeap::new(arena, &SLABS))) };
                    true
                }
                _ => return None,
            };
            local.state.set(HeapState::Busy);
            if made {
                // Registering the exit hook may allocate: the heap is busy,
                // so such an allocation uses the shared one.
                let _ = HEAP_EXIT.try_with(|_| ());
            }
            // SAFETY: Busy makes this the only borrow of the heap, which
            // exists (Ready, or just made).
            let heap = unsafe { (*local.heap.get()).as_mut().unwrap_unchecked() };
            let result = f(heap);
            local.state.set(HeapState::Ready);
            Some(result)
        })
        .ok()
        .flatten()
}

/// Allocates from the shared heap (see [`SHARED`]).
#[cold]
fn shared_alloc(arena: &'static Arena, class: usize) -> *mut u8 {
    // A nested allocation may come from inside the shared heap itself:
    // never wait for a lock this thread may hold.
    let Ok(mut shared) = SHARED.try_lock() else { return ptr::null_mut() };
    let heap = shared.0.get_or_insert_with(|| ThreadHeap::new(arena, &SLABS));
    heap.alloc(class).map_or(ptr::null_mut(), NonNull::as_ptr)
}

#[inline(always)]
fn alloc_impl(layout: Layout, zero: bool) -> *mut u8 {
    match class_of(layout.size(), layout.align()) {
        Some(class) => alloc_object(class, layout, zero),
        None => alloc_slow(layout, zero),
    }
}

/// [`alloc_impl`] for a layout of slab class `class`.
#[inline(always)]
fn alloc_object(class: usize, layout: Layout, zero: bool) -> *mut u8 {
    if let Some(object) = with_ready_heap(|heap| heap.alloc_cached(class).or_else(|| heap.alloc_from_ring(class))) {
        let ptr = object.as_ptr();
        if zero {
            // SAFETY: a fresh object of at least `layout.size()` bytes.
            unsafe { ptr.write_bytes(0, layout.size()) };
        }
        return ptr;
    }
    alloc_slow(layout, zero)
}

/// Everything [`alloc_impl`] does beyond taking an object from a slab
/// this thread already has.
#[inline(never)]
fn alloc_slow(layout: Layout, zero: bool) -> *mut u8 {
    let Some(arena) = arena() else {
        // The arena could not be built (or is being built by this very
        // thread): the system allocator serves everything.
        // SAFETY: forwarding the caller's layout.
        return unsafe { if zero { System.alloc_zeroed(layout) } else { System.alloc(layout) } };
    };
    if !RECLAIM_STARTED.load(Ordering::Relaxed) {
        start_reclaim(); // a forked child's first allocation
    }
    if let Some(class) = class_of(layout.size(), layout.align()) {
        // The fast path took what the heap's slabs had (or the heap was not
        // ready, and with_heap makes it or declines): a new slab.
        let ptr = with_heap(arena, true, |heap| heap.alloc_refill(class))
            .map_or_else(|| shared_alloc(arena, class), |p| p.map_or(ptr::null_mut(), NonNull::as_ptr));
        if zero && !ptr.is_null() {
            // SAFETY: a fresh object of at least `layout.size()` bytes.
            unsafe { ptr.write_bytes(0, layout.size()) };
        }
        return ptr;
    }
    let order = order_of(layout);
    if order > arena.max_order() {
        // SAFETY: forwarding the caller's layout.
        return unsafe { if zero { System.alloc_zeroed(layout) } else { System.alloc(layout) } };
    }
    let flags = if zero { AllocFlags::ZERO | AllocFlags::NOWARN } else { AllocFlags::NOWARN };
    arena.alloc_pages(order, flags).map_or(ptr::null_mut(), NonNull::as_ptr)
}

#[inline(always)]
fn dealloc_impl(ptr: *mut u8, layout: Layout) {
    match class_of(layout.size(), layout.align()) {
        Some(class) => dealloc_object(ptr, class, layout),
        None => dealloc_slow(ptr, layout),
    }
}

/// [`dealloc_impl`] for a layout of slab class `class`.
#[inline(always)]
fn dealloc_object(ptr: *mut u8, class: usize, layout: Layout) {
    if let Some(nn) = NonNull::new(ptr)
        // SAFETY: the caller frees what it was given for this layout; the
        // slab layer checks the pointer before it writes anything.
        && with_ready_heap(|heap| unsafe { heap.free_cached(nn, class) }.then_some(())).is_some()
    {
        return;
    }
    dealloc_slow(ptr, layout);
}

/// Everything [`dealloc_impl`] does beyond pushing an object onto one of
/// this thread's slabs.
#[inline(never)]
fn dealloc_slow(ptr: *mut u8, layout: Layout) {
    let Some(nn) = NonNull::new(ptr) else { return };
    let Some(arena) = global_arena() else {
        if ARENA.failed() {
            // SAFETY: with no arena, every allocation came from System.
            unsafe { System.dealloc(ptr, layout) };
        } else {
            refuse(ptr, layout, "no allocation was ever made");
        }
        return;
    };
    let class = class_of(layout.size(), layout.align());
    if !arena.contains(ptr) {
        if class.is_none() && order_of(layout) > arena.max_order() {
            // SAFETY: a layout that only System serves.
            unsafe { System.dealloc(ptr, layout) };
        } else {
            refuse(ptr, layout, "not allocated by zonealloc");
        }
        return;
    }
    let result = match class {
        Some(class) => {
            // The fast path declined this free, or the heap was not ready.
            // SAFETY: the caller frees what it was given for this layout;
            // the slab layer checks the pointer before trusting it.
            let freed = with_heap(arena, false, |heap| unsafe { heap.free_slow(nn, class) })
                // SAFETY: as above; a thread without a usable heap frees
                // every object as a remote free.
                .unwrap_or_else(|| unsafe { SLABS.free_remote(arena, nn, class) });
            freed.map_err(|e| match e {
                SlabFreeError::NotAnObject => "not an object of its size class",
                SlabFreeError::DoubleFree => "double free",
            })
        }
        // SAFETY: the arena validates the block before changing anything.
        None => unsafe { arena.free_pages(nn, order_of(layout)) }.map_err(|e| match e {
            crate::FreeError::DoubleFree { .. } => "double free",
            _ => "not a block start of its size",
        }),
    };
    if let Err(reason) = result {
        refuse(ptr, layout, reason);
    }
}

/// Reports a refused free on stderr, without allocating, rate limited.
#[cold]
fn refuse(ptr: *mut u8, layout: Layout, reason: &str) {
    if REFUSALS.allow() {
        let mut w = StackWriter::new();
        let _ = write!(
            w,
            "zonealloc: refused free of {ptr:p} (size {}, align {}): {reason}",
            layout.size(),
            layout.align()
        );
        w.flush_line();
    }
}

/// Whether a buddy block (`old` is served by the buddy allocator) grows
/// to the order `new` needs where it lies.
fn grows_in_place(arena: &Arena, ptr: *mut u8, old: Layout, new: Layout) -> bool {
    if class_of(old.size(), old.align()).is_some() {
        return false;
    }
    // try_grow_pages declines a new order that is not larger or above the
    // largest order.
    NonNull::new(ptr).is_some_and(|ptr| arena.try_grow_pages(ptr, order_of(old), order_of(new)))
}

/// Whether `old` and `new` are served by the same slot (object class or
/// block order), so a realloc between them can stay in place.
fn same_slot(arena: &Arena, old: Layout, new: Layout) -> bool {
    match (class_of(old.size(), old.align()), class_of(new.size(), new.align())) {
        (Some(a), Some(b)) => a == b,
        (None, None) => {
            let order = order_of(old);
            order == order_of(new) && order <= arena.max_order()
        }
        _ => false,
    }
}

// SAFETY: every block handed out is at least `layout.size()` bytes, aligned
// to `layout.align()` (slab classes and buddy orders are chosen for both),
// and not handed out again until freed; nothing here unwinds.
unsafe impl GlobalAlloc for ZoneAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        alloc_impl(layout, false)
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        alloc_impl(layout, true)
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        dealloc_impl(ptr, layout);
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees new_size, rounded up to align, does
        // not overflow isize.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if let Some(class) = class_of(layout.size(), layout.align()) {
            // An object: it stays if the new size has its class, else moves.
            let new_class = class_of(new_size, layout.align());
            if new_class == Some(class) && global_arena().is_some_and(|a| a.contains(ptr)) {
                return ptr;
            }
            if let Some(new_class) = new_class {
                let moved = alloc_object(new_class, new_layout, false);
                let len = layout.size().min(new_size);
                // SAFETY: the caller's contract; `moved` is a fresh object.
                return unsafe { move_into(ptr, moved, len, || dealloc_object(ptr, class, layout)) };
            }
        }
        // SAFETY: the caller's contract, forwarded.
        unsafe { realloc_pages(ptr, layout, new_layout) }
    }
}

/// The end of every `realloc` that moves: unless the new allocation
/// `moved` failed (null, and the old block stays, as `realloc` says),
/// copies the first `len` bytes of `ptr` into it and frees `ptr` with
/// `free_old`.
///
/// # Safety
/// `ptr` is live and valid for `len` bytes, `moved` is null or a fresh
/// block of at least `len` bytes, and `free_old` frees `ptr`.
#[inline(always)]
unsafe fn move_into(ptr: *mut u8, moved: *mut u8, len: usize, free_old: impl FnOnce()) -> *mut u8 {
    if !moved.is_null() {
        // SAFETY: both are valid for `len` bytes and distinct (per the
        // contract).
        unsafe { ptr::copy_nonoverlapping(ptr, moved, len) };
        free_old();
    }
    moved
}

/// `realloc` where the old or the new size is served by the buddy
/// allocator (or `System`): in place when the order stays or the block can
/// grow into free buddies; a growing block moves to where it can grow
/// further.
///
/// # Safety
/// `ptr` is live for `layout`, as `GlobalAlloc::realloc` requires.
#[inline(never)]
unsafe fn realloc_pages(ptr: *mut u8, layout: Layout, new_layout: Layout) -> *mut u8 {
    let new_size = new_layout.size();
    match global_arena() {
        Some(arena) if arena.contains(ptr) && same_slot(arena, layout, new_layout) => return ptr,
        Some(arena) if arena.contains(ptr) && grows_in_place(arena, ptr, layout, new_layout) => return ptr,
        Some(arena)
            if !arena.contains(ptr)
                && class_of(new_size, layout.align()).is_none()
                && order_of(new_layout) > arena.max_order() =>
        {
            // SAFETY: both layouts are System's.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        None if ARENA.failed() => {
            // SAFETY: with no arena, everything is System's.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        Some(arena) if new_size > layout.size() => {
            // Growing: take the new block from the start of a larger free
            // one (not from the page caches), so that the next growths find
            // its buddies free and stay in place.
            let order = order_of(new_layout);
            if order <= arena.max_order() {
                // A failure has been through the whole slow path (reclaim,
                // the OOM handler): no second attempt.
                let moved =
                    arena.alloc_pages_growable(order, AllocFlags::NOWARN).map_or(ptr::null_mut(), NonNull::as_ptr);
                // SAFETY: the caller's contract; `moved` is a fresh block.
                return unsafe { move_into(ptr, moved, layout.size(), || dealloc_impl(ptr, layout)) };
            }
        }
        _ => {}
    }
    let moved = alloc_impl(new_layout, false);
    // SAFETY: the caller's contract; `moved` is a fresh block.
    unsafe { move_into(ptr, moved, layout.size().min(new_size), || dealloc_impl(ptr, layout)) }
}
