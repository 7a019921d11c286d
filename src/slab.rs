//! The slab layer: small objects in size classes carved out of buddy blocks
//! (the kernel's kmalloc caches over slab).
//!
//! **Classes.** 8-byte steps from 16 to 64 (a 17..24-byte `String` takes
//! 24 bytes, not 32), 16-byte steps to 128, then four classes per doubling
//! up to 8 KiB (jemalloc's spacing): 35 classes, internal waste at most 20%
//! above 128 bytes. Every class from 32 up is a multiple of 16, so a
//! request aligned to 16 is rounded up to a multiple of 16 and finds a
//! class whose objects are all 16-aligned. A request aligned above 16 takes
//! the smallest power-of-two class that fits both its size and its
//! alignment; objects of a power-of-two class are aligned to their size,
//! since a slab is a buddy block aligned to its own size and filled with
//! objects from its start. A slab holds 64 objects where 32 KiB (the
//! largest block the per-thread page caches serve) allows, and eight at
//! least: 4 KiB for sizes up to 64 bytes, 32 KiB from 320 bytes up to
//! 4 KiB, 64 KiB above.
//!
//! **Headers out of band.** A slab's header (64 bytes) lives in the arena's
//! side table, in the slot of the slab's first page, never in the block:
//! the headers of neighbouring slabs share cache lines instead of every
//! header sitting at the same offset of a size-aligned block (where they
//! competed for the same cache sets), an object overrun cannot reach them,
//! and the whole block holds objects.
//!
//! **Ownership.** Every slab belongs to one [`ThreadHeap`] (its `owner` id)
//! or to nobody (an orphan). The owner allocates and frees with plain loads
//! and stores: a per-slab local free list, a bump index for never-used
//! objects, a count of objects out. Any other thread frees by pushing the
//! object onto the slab's `remote` stack with a compare-exchange; the owner
//! takes the whole stack with one swap when its local list runs dry. A
//! slab whose objects are all back goes to the buddy allocator (unless it
//! is the class's current slab), so its memory can be purged.
//!
//! **Thread exit.** [`ThreadHeap::drop`] collects every slab's remote frees,
//! returns the empty ones and orphans the rest onto the shared per-class
//! orphan lists in [`Slabs`]; a thread that needs a slab of that class
//! adopts one before it asks the buddy allocator for a new one, so
//! short-lived threads leak nothing. A remote free never needs the owner to
//! be alive: it touches only the slab.
//!
//! **Checks.** A free is refused (and reported by the caller) unless the
//! side-table slot of the block around the pointer (at the class's slab
//! order) holds a live slab of that class (magic and class in one word,
//! cleared when the slab goes back to the buddy allocator) and the pointer
//! is an object boundary (a multiply-compare, no division). A freed object
//! carries a tag in its second word: a per-process random key mixed with
//! the object's address, so no data a program writes into a live object
//! can be mistaken for it unless copied out of freed memory. On the
//! owner's path a matching tag is only a hint: the free is refused as a
//! double free only if the object is on one of the slab's free lists (or
//! was never handed out), as mimalloc confirms. A free from another thread
//! cannot read the owner's lists and refuses on the tag alone. Two threads
//! freeing the same object at the same instant (a data race in the
//! caller) may both pass.
//!
//! **Counts.** `objects` in use per class is kept per heap and published
//! at every slab change, at a heap's drop, on [`ThreadHeap::flush`], and
//! whenever a heap's unpublished change reaches [`FLUSH_BATCH`] on a path
//! that looks: a live heap's unpublished change is less than
//! `FLUSH_BATCH` plus one slab's objects per class.

use std::ptr::{self, NonNull};

use crate::arena::Arena;
use crate::flags::AllocFlags;
use crate::sync::{AtomicPtr, AtomicU64, AtomicUsize, Mutex, Ordering, UnsafeCell};

/// The object sizes.
pub const SIZE_CLASSES: [usize; NR_CLASSES] = [
    16, 24, 32, 40, 48, 56, 64, // 8-byte steps
    80, 96, 112, 128, // 16-byte steps
    160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 896, 1024, // four per doubling
    1280, 1536, 1792, 2048, 2560, 3072, 3584, 4096, 5120, 6144, 7168, 8192,
];

/// Number of size classes.
pub const NR_CLASSES: usize = 35;

/// The largest size served from slabs; larger requests go to the buddy
/// allocator.
pub const SLAB_MAX: usize = 8192;

/// Objects a slab holds at least.
const MIN_OBJECTS: usize = 8;

/// Objects a slab aims to hold, within [`SLAB_TARGET_MAX`] bytes: a slab
/// that runs dry after a few objects sends its thread to the ring walk
/// and the buddy allocator too often.
const TARGET_OBJECTS: usize = 64;

/// The largest slab chosen for [`TARGET_OBJECTS`]: 32 KiB, the largest
/// block the per-thread page caches serve.
const SLAB_TARGET_MAX: usize = 32 << 10;

/// Marks a slab header; the low byte holds the class.
const SLAB_MAGIC: u64 = 0x5a4f_4e45_534c_4100; // "ZONESLA" + class

/// How many of a class's slabs an allocation looks through for freed
/// objects before it takes a new slab.
const SCAN_LIMIT: usize = 8;

/// The class for `size` at an alignment of at most 16.
#[inline]
const fn class_of_size(size: usize) -> usize {
    if size <= 16 {
        return 0;
    }
    if size <= 64 {
        return ((size - 1) >> 3) - 1; // 17..=24 -> 1, ..., 57..=64 -> 6
    }
    if size <= 128 {
        return ((size - 1) >> 4) + 3; // 65..=80 -> 7, ..., 113..=128 -> 10
    }
    // size in (2^k, 2^(k+1)], k >= 7: four steps of 2^(k-2).
    let k = (usize::BITS - 1 - (size - 1).leading_zeros()) as usize;
    11 + (k - 7) * 4 + (((size - 1) - (1 << k)) >> (k - 2))
}

/// The class of every size up to [`SLAB_MAX`], in 8-byte steps (1025
/// bytes).
const CLASS_LOOKUP: [u8; SLAB_MAX / 8 + 1] = {
    let mut table = [0u8; SLAB_MAX / 8 + 1];
    let mut i = 0;
    while i < table.len() {
        table[i] = class_of_size(i * 8) as u8;
        i += 1;
    }
    table
};

/// The class serving `size` bytes at `align`, or `None` if the request
/// belongs to the buddy allocator.
///
/// ```
/// use zonealloc::{SIZE_CLASSES, class_of};
/// assert_eq!(SIZE_CLASSES[class_of(100, 8).unwrap()], 112);
/// assert_eq!(SIZE_CLASSES[class_of(100, 64).unwrap()], 128); // aligned: a power of two
/// assert_eq!(class_of(100_000, 8), None);
/// ```
#[inline]
pub fn class_of(size: usize, align: usize) -> Option<usize> {
    if align <= 16 {
        // Every size in (8 (i - 1), 8 i] has the class of 8 i (class
        // boundaries are multiples of 8), which also serves alignments up
        // to 8. At 16, an odd i (8 i not a multiple of 16) becomes i + 1:
        // 8 (i + 1) is a multiple of 16, and so is its class.
        let i = size.div_ceil(8);
        let i = i + ((align >> 4) & i);
        return CLASS_LOOKUP.get(i).map(|&class| class as usize);
    }
    let size = size.max(align).next_power_of_two();
    (size <= SLAB_MAX).then(|| class_of_size(size))
}

/// What the fast paths need to know of a class, in one 32-byte entry.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct ClassInfo {
    /// Object size.
    size: u32,
    /// Buddy order of a slab.
    order: u32,
    /// Objects a slab holds.
    capacity: u32,
    /// `capacity * size`: every object starts below this offset.
    limit: u32,
    /// `ceil(2^64 / size)`: an offset below 2^32 is a multiple of `size`
    /// exactly when `offset * div_magic mod 2^64 < div_magic` (Lemire,
    /// Kaser and Kurz, "Faster remainder by direct computation"), one
    /// multiplication instead of a division on every free.
    div_magic: u64,
}

const CLASS_INFO: [ClassInfo; NR_CLASSES] = {
    const fn min(a: usize, b: usize) -> usize {
        if a < b { a } else { b }
    }
    const fn max(a: usize, b: usize) -> usize {
        if a > b { a } else { b }
    }
    let mut info = [ClassInfo { size: 0, order: 0, capacity: 0, limit: 0, div_magic: 0 }; NR_CLASSES];
    let mut class = 0;
    while class < NR_CLASSES {
        let size = SIZE_CLASSES[class];
        let bytes = max(min(size * TARGET_OBJECTS, SLAB_TARGET_MAX), size * MIN_OBJECTS);
        let order = bytes.div_ceil(crate::PAGE_SIZE).next_power_of_two().trailing_zeros();
        let capacity = (crate::PAGE_SIZE << order) / size;
        info[class] = ClassInfo {
            size: size as u32,
            order,
            capacity: capacity as u32,
            limit: (capacity * size) as u32,
            div_magic: (u64::MAX / size as u64).wrapping_add(1),
        };
        class += 1;
    }
    info
};

/// The buddy order of a slab of `class`.
#[inline(always)]
pub(crate) fn slab_order(class: usize) -> u32 {
    CLASS_INFO[class].order
}

/// A freed object's first two words.
#[repr(C)]
struct FreeObject {
    next: *mut FreeObject,
    tag: usize,
}

/// The key mixed into every freed tag, random per process (see the module
/// docs), 0 until the first heap or remote free needs it.
static TAG_KEY: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The process's tag key, made on first use from the kernel's random
/// source (or, where that fails, the clock and an address).
fn tag_key() -> usize {
    use std::sync::atomic::Ordering::Relaxed;
    let key = TAG_KEY.load(Relaxed);
    if key != 0 {
        return key;
    }
    let mut fresh = 0usize;
    #[cfg(not(loom))]
    {
        // SAFETY: getrandom fills the buffer it is given, at most its size.
        let n = unsafe { libc::getrandom((&raw mut fresh).cast(), size_of::<usize>(), libc::GRND_NONBLOCK) };
        if n != size_of::<usize>() as isize {
            let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            // SAFETY: `ts` is a valid timespec to fill.
            unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
            fresh = (ts.tv_nsec as usize ^ (&raw const fresh) as usize).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    // Under loom a fixed key: models need no secret.
    fresh |= 1;
    // Racing first users agree on whichever key was stored first.
    match TAG_KEY.compare_exchange(0, fresh, Relaxed, Relaxed) {
        Ok(_) => fresh,
        Err(stored) => stored,
    }
}

/// Where the two words of free objects are read and written: in the
/// objects themselves, or under loom in cells loom tracks for them (the
/// remote-free protocol hands these words between threads, and loom sees
/// no plain access to the region).
#[derive(Clone, Copy)]
struct ObjectWords {
    /// What a freed object's tag is mixed from.
    key: usize,
    #[cfg(loom)]
    region: *const crate::region::Region,
}

impl ObjectWords {
    /// The tag a free writes into `object`.
    #[inline(always)]
    fn freed_tag(self, object: *mut FreeObject) -> usize {
        self.key ^ object as usize
    }

    /// # Safety
    /// `object` is an object of a live slab, at least 16 bytes, that no
    /// other thread writes now.
    #[inline(always)]
    unsafe fn next(self, object: *mut FreeObject) -> *mut FreeObject {
        #[cfg(not(loom))]
        // SAFETY: the caller's contract.
        return unsafe { (*object).next };
        #[cfg(loom)]
        // SAFETY: as above; the region outlives every slab map.
        return unsafe { &*self.region }.object_words(object as usize).with(|w| unsafe { (*w)[0] } as *mut FreeObject);
    }

    /// # Safety
    /// As for [`next`](Self::next), and no other thread reads it now.
    #[inline(always)]
    unsafe fn set_next(self, object: *mut FreeObject, next: *mut FreeObject) {
        #[cfg(not(loom))]
        // SAFETY: the caller's contract.
        unsafe {
            (*object).next = next
        };
        #[cfg(loom)]
        // SAFETY: as above.
        unsafe { &*self.region }.object_words(object as usize).with_mut(|w| unsafe { (*w)[0] = next as usize });
    }

    /// Whether `object`'s second word holds its freed tag.
    ///
    /// # Safety
    /// As for [`next`](Self::next).
    #[inline(always)]
    unsafe fn tagged(self, object: *mut FreeObject) -> bool {
        #[cfg(not(loom))]
        // SAFETY: the caller's contract.
        let tag = unsafe { (*object).tag };
        #[cfg(loom)]
        // SAFETY: as above.
        let tag = unsafe { &*self.region }.object_words(object as usize).with(|w| unsafe { (*w)[1] });
        tag == self.freed_tag(object)
    }

    /// Writes the freed tag (`freed`) or clears it.
    ///
    /// # Safety
    /// As for [`set_next`](Self::set_next).
    #[inline(always)]
    unsafe fn set_tag(self, object: *mut FreeObject, freed: bool) {
        let tag = if freed { self.freed_tag(object) } else { 0 };
        #[cfg(not(loom))]
        // SAFETY: the caller's contract.
        unsafe {
            (*object).tag = tag
        };
        #[cfg(loom)]
        // SAFETY: as above.
        unsafe { &*self.region }.object_words(object as usize).with_mut(|w| unsafe { (*w)[1] = tag });
    }
}

/// A slab's header, out of band: in the arena's side table, in the slot of
/// the slab's first page (64 bytes, one cache line). Never borrowed whole:
/// other threads use its atomics while the owner changes its cells.
#[repr(C)]
struct Slab {
    /// Objects freed by other threads (a Treiber stack; only the owner pops,
    /// and it pops everything at once, so there is no ABA).
    remote: AtomicPtr<FreeObject>,
    /// The owning heap's id, or 0 for an orphan.
    owner: AtomicU64,
    /// [`SLAB_MAGIC`] with the class, while the slot holds a live slab;
    /// 0 once the slab is returned.
    key: AtomicU64,
    /// The owner's free list.
    local: UnsafeCell<*mut FreeObject>,
    /// The owner's ring of slabs of this class, or the orphan list.
    prev: UnsafeCell<*mut Slab>,
    next: UnsafeCell<*mut Slab>,
    /// The slab's block; set before the slab is published, never changed.
    base: usize,
    /// Objects handed out and not yet back on `local` (remote frees count
    /// until collected).
    used: UnsafeCell<u32>,
    /// Objects never handed out start at `bump`.
    bump: UnsafeCell<u32>,
}

const _: () = assert!(std::mem::size_of::<Slab>() <= crate::page::SIDE_SLOT_BYTES);

#[inline(always)]
const fn slab_key(class: usize) -> u64 {
    SLAB_MAGIC | class as u64
}

/// Reads a cell of a slab this thread has the right to (see [`Slab`]).
///
/// # Safety
/// The caller owns the slab (its heap's id is in `owner`, or it holds the
/// orphan list the slab is on, or the slab is not yet published).
#[inline(always)]
unsafe fn get<T: Copy>(cell: &UnsafeCell<T>) -> T {
    // SAFETY: the caller's contract: no other thread accesses the cell.
    cell.with_mut(|p| unsafe { *p })
}

/// Writes a cell of a slab this thread has the right to.
///
/// # Safety
/// As for [`get`].
#[inline(always)]
unsafe fn set<T>(cell: &UnsafeCell<T>, value: T) {
    // SAFETY: as for `get`.
    cell.with_mut(|p| unsafe { *p = value });
}

impl Slab {
    /// Pops a free object (local list, then the bump area). Owner only.
    ///
    /// # Safety
    /// `this` is a live slab of `class` the caller owns (see [`get`]).
    #[inline(always)]
    unsafe fn pop(this: *mut Slab, class: usize, words: ObjectWords) -> Option<NonNull<u8>> {
        // SAFETY: the caller owns the slab: its cells and free objects are
        // its own; `this` is only used as a place, never borrowed whole.
        unsafe {
            let local = get(&(*this).local);
            let object = if !local.is_null() {
                set(&(*this).local, words.next(local));
                local
            } else {
                let bump = get(&(*this).bump);
                if bump >= CLASS_INFO[class].capacity {
                    return None;
                }
                set(&(*this).bump, bump + 1);
                ((*this).base + bump as usize * CLASS_INFO[class].size as usize) as *mut FreeObject
            };
            set(&(*this).used, get(&(*this).used) + 1);
            // Every object is at least 16 bytes; a stale tag is cleared so
            // that a first free is never taken for a second.
            words.set_tag(object, false);
            NonNull::new(object.cast())
        }
    }

    /// Moves the remote stack onto the local list. Owner only; returns how
    /// many objects came back (already counted as freed by their freers).
    ///
    /// # Safety
    /// As for [`pop`](Self::pop).
    unsafe fn collect(this: *mut Slab, words: ObjectWords) -> usize {
        // SAFETY: the caller owns the slab; `remote` is an atomic.
        unsafe {
            let remote = &(*this).remote;
            if remote.load(Ordering::Relaxed).is_null() {
                return 0;
            }
            // Acquire: the pushers' writes of the objects' words happen
            // before we read them.
            let mut object = remote.swap(ptr::null_mut(), Ordering::Acquire);
            let mut local = get(&(*this).local);
            let mut n = 0;
            while !object.is_null() {
                // Objects on the remote stack are free; we took them all.
                let next = words.next(object);
                words.set_next(object, local);
                local = object;
                object = next;
                n += 1;
            }
            set(&(*this).local, local);
            set(&(*this).used, get(&(*this).used) - n);
            n as usize
        }
    }

    /// Whether `object` (an object boundary of this slab) is free: on the
    /// local list, on the remote stack, or never handed out. What confirms
    /// a suspected double free on the owner's path; O(free objects).
    ///
    /// # Safety
    /// As for [`pop`](Self::pop).
    #[cold]
    unsafe fn holds_free(this: *mut Slab, class: usize, object: *mut FreeObject, words: ObjectWords) -> bool {
        // SAFETY: the caller owns the slab. Objects on the remote stack are
        // only unlinked by the owner (us), so their links are stable while
        // we walk them.
        unsafe {
            let offset = object as usize - (*this).base;
            if offset >= get(&(*this).bump) as usize * CLASS_INFO[class].size as usize {
                return true;
            }
            let mut cursor = get(&(*this).local);
            while !cursor.is_null() {
                if cursor == object {
                    return true;
                }
                cursor = words.next(cursor);
            }
            let mut cursor = (*this).remote.load(Ordering::Acquire);
            while !cursor.is_null() {
                if cursor == object {
                    return true;
                }
                cursor = words.next(cursor);
            }
        }
        false
    }

    /// Whether every object is back.
    ///
    /// # Safety
    /// As for [`pop`](Self::pop).
    unsafe fn is_empty(this: *mut Slab) -> bool {
        // SAFETY: the caller's contract.
        unsafe { get(&(*this).used) == 0 }
    }

    /// Whether an allocation could take an object from it (after
    /// collecting its remote frees).
    ///
    /// # Safety
    /// As for [`pop`](Self::pop).
    unsafe fn has_free(this: *mut Slab, class: usize) -> bool {
        // SAFETY: the caller's contract.
        unsafe {
            !get(&(*this).local).is_null()
                || get(&(*this).bump) < CLASS_INFO[class].capacity
                || !(*this).remote.load(Ordering::Relaxed).is_null()
        }
    }

    /// The slab after this one on its ring or list.
    ///
    /// # Safety
    /// As for [`pop`](Self::pop).
    unsafe fn next(this: *mut Slab) -> *mut Slab {
        // SAFETY: the caller's contract.
        unsafe { get(&(*this).next) }
    }
}

/// Why a free was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlabFreeError {
    /// The pointer is not an object of a slab of this class (or of this
    /// heap's arena).
    NotAnObject,
    /// The object is already free.
    DoubleFree,
}

/// Per-class counters, shared by all heaps of a [`Slabs`].
#[derive(Debug, Default)]
struct ClassCounters {
    slabs: AtomicUsize,
    orphans: AtomicUsize,
    /// Objects out, as published by the heaps (see the module docs).
    objects: AtomicUsize,
}

/// Per size class: live slabs, orphaned slabs, objects in use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassStats {
    /// The class's object size.
    pub size: usize,
    /// Slabs of this class (owned and orphaned).
    pub slabs: usize,
    /// Slabs whose thread exited, waiting to be adopted.
    pub orphans: usize,
    /// Objects in use: exact once every heap has published its counts
    /// (at each slab change, at its drop, on [`ThreadHeap::flush`]); a
    /// live heap's unpublished change is less than [`FLUSH_BATCH`] plus
    /// one slab's objects (never reported below zero).
    pub objects: usize,
    /// Bytes of buddy blocks the class's slabs occupy.
    pub slab_bytes: usize,
}

/// A heap publishes its object counts at least this often (in net frees
/// per class); see [`ClassStats::objects`].
pub const FLUSH_BATCH: usize = 64;

/// The state shared by every thread's heap over one arena: orphaned slabs
/// per class and the counters.
///
/// A `Slabs` and an arena serve each other only, for life: the first
/// heap binds them, and a heap of another `Slabs` over that arena, or of
/// this one over another arena, is refused. So every slab of an arena is
/// on one set of lists and counted once, and an orphan is never adopted
/// by a heap over an arena it does not belong to.
pub struct Slabs {
    orphans: [Mutex<OrphanList>; NR_CLASSES],
    counters: [ClassCounters; NR_CLASSES],
    /// The id of the arena this serves; 0 until the first heap.
    arena_id: AtomicU64,
    /// This state's own id (unique in the process), 0 until bound.
    id: AtomicU64,
}

/// Ids of `Slabs`, unique in the process.
static NEXT_SLABS_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Heap ids, unique in the process (0 is the orphans' owner).
static NEXT_HEAP_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The orphan lists' locks, held across `fork(2)`.
#[cfg_attr(loom, allow(dead_code))]
pub(crate) struct SlabsForkGuard<'a> {
    _held: [crate::sync::MutexGuard<'a, OrphanList>; NR_CLASSES],
}

/// A singly linked queue of orphaned slabs (through `Slab::next`).
struct OrphanList {
    head: *mut Slab,
    tail: *mut Slab,
}

impl OrphanList {
    const fn new() -> Self {
        Self { head: ptr::null_mut(), tail: ptr::null_mut() }
    }

    fn pop(&mut self) -> Option<*mut Slab> {
        let slab = NonNull::new(self.head)?.as_ptr();
        // SAFETY: slabs on the list are live and owned by it.
        self.head = unsafe { Slab::next(slab) };
        if self.head.is_null() {
            self.tail = ptr::null_mut();
        }
        Some(slab)
    }

    fn push_back(&mut self, slab: *mut Slab) {
        // SAFETY: `slab` is live and now owned by the list; so is the tail.
        unsafe {
            set(&(*slab).next, ptr::null_mut());
            if self.tail.is_null() {
                self.head = slab;
            } else {
                set(&(*self.tail).next, slab);
            }
        }
        self.tail = slab;
    }
}

// SAFETY: the list is only touched under its mutex; the slabs it links are
// owned by nobody until adopted under the same mutex.
unsafe impl Send for OrphanList {}

impl Default for Slabs {
    fn default() -> Self {
        Self::new()
    }
}

impl Slabs {
    /// Empty shared state.
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Self {
            orphans: [const { Mutex::new(OrphanList::new()) }; NR_CLASSES],
            counters: [const { ClassCounters::new() }; NR_CLASSES],
            arena_id: AtomicU64::new(0),
            id: AtomicU64::new(0),
        }
    }

    /// Empty shared state.
    #[cfg(loom)]
    pub fn new() -> Self {
        Self {
            orphans: std::array::from_fn(|_| Mutex::new(OrphanList::new())),
            counters: std::array::from_fn(|_| ClassCounters::new()),
            arena_id: AtomicU64::new(0),
            id: AtomicU64::new(0),
        }
    }

    /// Binds this state and `arena` to each other if neither is bound
    /// yet; whether they serve each other.
    fn serves(&self, arena: &Arena) -> bool {
        let relaxed = Ordering::Relaxed;
        let mut mine = self.id.load(relaxed);
        if mine == 0 {
            // Racing binders agree on the first id stored.
            let fresh = NEXT_SLABS_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            mine = self.id.compare_exchange(0, fresh, relaxed, relaxed).map_or_else(|stored| stored, |_| fresh);
        }
        let served_by = arena.inner.slabs_id.compare_exchange(0, mine, relaxed, relaxed);
        let arena_id = arena.inner.id;
        served_by.map_or_else(|other| other == mine, |_| true)
            && self
                .arena_id
                .compare_exchange(0, arena_id, relaxed, relaxed)
                .map_or_else(|bound| bound == arena_id, |_| true)
    }

    /// Per-class statistics.
    pub fn stats(&self) -> [ClassStats; NR_CLASSES] {
        std::array::from_fn(|class| {
            let c = &self.counters[class];
            let slabs = c.slabs.load(Ordering::Relaxed);
            ClassStats {
                size: SIZE_CLASSES[class],
                slabs,
                orphans: c.orphans.load(Ordering::Relaxed),
                // Unpublished frees of objects another heap counted can
                // take the sum below zero for a moment: read it as signed.
                objects: (c.objects.load(Ordering::Relaxed) as isize).max(0) as usize,
                slab_bytes: slabs * (crate::PAGE_SIZE << slab_order(class)),
            }
        })
    }

    /// Locks every orphan list across `fork(2)`.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn lock_for_fork(&self) -> SlabsForkGuard<'_> {
        SlabsForkGuard { _held: std::array::from_fn(|class| self.orphans[class].lock()) }
    }

    /// Pages held by orphaned slabs (an upper bound of what
    /// [`reap_orphans`](Self::reap_orphans) can return).
    pub fn orphan_pages(&self) -> usize {
        (0..NR_CLASSES).map(|c| self.counters[c].orphans.load(Ordering::Relaxed) << slab_order(c)).sum()
    }

    /// Returns every orphaned slab whose objects have all been freed to the
    /// buddy allocator (called by reclaim); the pages returned. Nothing
    /// for an arena this state does not serve.
    pub fn reap_orphans(&self, arena: &Arena) -> usize {
        if !self.serves(arena) {
            return 0;
        }
        let words = SlabMap::of(arena).words;
        let mut pages = 0;
        for class in 0..NR_CLASSES {
            let mut list = self.orphans[class].lock();
            let mut keep = OrphanList::new();
            while let Some(slab) = list.pop() {
                // SAFETY: orphans are owned by the list, which we hold: we
                // may collect their remote frees and free the empty ones.
                let empty = unsafe {
                    Slab::collect(slab, words);
                    Slab::is_empty(slab)
                };
                if !empty {
                    keep.push_back(slab);
                    continue;
                }
                self.counters[class].orphans.fetch_sub(1, Ordering::Relaxed);
                // SAFETY: empty, and off the list we hold: nobody else has it.
                pages += unsafe { self.return_slab(arena, class, slab) };
            }
            *list = keep;
        }
        pages
    }

    /// Hands an empty slab's block back to the buddy allocator: clears its
    /// side-table key (so a late free of one of its objects is refused),
    /// counts it gone, and returns the pages freed.
    ///
    /// # Safety
    /// `slab` is a live, empty slab of `class` from `arena`, on no ring or
    /// list: no object of it is in use and no remote free can be in flight
    /// (every remote free is counted in `used`).
    unsafe fn return_slab(&self, arena: &Arena, class: usize, slab: *mut Slab) -> usize {
        let order = slab_order(class);
        // SAFETY: the caller's contract: the slot is ours alone.
        let base = unsafe {
            (*slab).key.store(0, Ordering::Relaxed);
            (*slab).base
        };
        self.counters[class].slabs.fetch_sub(1, Ordering::Relaxed);
        let Some(base) = NonNull::new(base as *mut u8) else { return 0 };
        // SAFETY: the block was allocated by `new_slab` at this order.
        let _ = unsafe { arena.free_pages(base, order) };
        1 << order
    }

    /// Frees `ptr`, an object of `class`, from a thread that does not own
    /// its slab (or has no heap at all).
    ///
    /// # Safety
    /// `ptr` was returned for `class` by a heap over `arena` and is not
    /// used again (a wrong pointer is detected, not trusted).
    pub unsafe fn free_remote(&self, arena: &Arena, ptr: NonNull<u8>, class: usize) -> Result<(), SlabFreeError> {
        if !self.serves(arena) {
            return Err(SlabFreeError::NotAnObject);
        }
        let map = SlabMap::of(arena);
        let slab = map.find(ptr, class)?;
        // SAFETY: find checked that `ptr` is an object of a live slab.
        unsafe { push_remote(slab, ptr, map.words) }?;
        // No heap to count it in: straight into the shared count.
        self.counters[class].objects.fetch_sub(1, Ordering::Relaxed);
        Ok(())
    }
}

impl ClassCounters {
    #[cfg(not(loom))]
    const fn new() -> Self {
        Self { slabs: AtomicUsize::new(0), orphans: AtomicUsize::new(0), objects: AtomicUsize::new(0) }
    }

    #[cfg(loom)]
    fn new() -> Self {
        Self { slabs: AtomicUsize::new(0), orphans: AtomicUsize::new(0), objects: AtomicUsize::new(0) }
    }
}

/// Where slab headers are: the arena's region and its side table, copied
/// out of the arena so the free path reaches them without a pointer chase.
#[derive(Clone, Copy)]
struct SlabMap {
    region_base: usize,
    region_len: usize,
    table: *mut u8,
    words: ObjectWords,
}

impl SlabMap {
    fn of(arena: &Arena) -> Self {
        let inner = &*arena.inner;
        Self {
            region_base: inner.region.base().as_ptr() as usize,
            region_len: inner.region.len(),
            table: inner.side_table.start(),
            words: ObjectWords {
                key: tag_key(),
                #[cfg(loom)]
                region: &inner.region,
            },
        }
    }

    /// The header slot of the slab whose block starts `block` bytes into
    /// the region.
    ///
    /// # Safety
    /// `block` is below the region's length.
    #[inline(always)]
    unsafe fn slot(self, block: usize) -> *mut Slab {
        let pfn = block >> crate::PAGE_SHIFT;
        // SAFETY: a page of the region (the caller's contract), and the
        // side table has a slot of SIDE_SLOT_BYTES for each.
        unsafe { self.table.add(pfn * crate::page::SIDE_SLOT_BYTES) }.cast::<Slab>()
    }

    /// Finds and checks the slab `ptr` belongs to: the side-table slot of
    /// the block around it (at the class's slab order) must hold a live
    /// slab of the class, and `ptr` must be an object boundary inside it.
    /// Reads only the side table, never the block: a slot holds a key only
    /// while the slab layer owns the block it describes, so a live key
    /// also says the block is allocated, at the slab order.
    #[inline(always)]
    fn find(self, ptr: NonNull<u8>, class: usize) -> Result<*mut Slab, SlabFreeError> {
        let info = &CLASS_INFO[class];
        let addr = ptr.as_ptr() as usize;
        // The region is aligned to its largest block, so masking the
        // offset is masking the address.
        let offset_in_region = addr.wrapping_sub(self.region_base);
        let block = offset_in_region & !((crate::PAGE_SIZE << info.order) - 1);
        let offset = (offset_in_region - block) as u64;
        if offset_in_region >= self.region_len
            || offset >= u64::from(info.limit)
            || offset.wrapping_mul(info.div_magic) >= info.div_magic
        {
            return Err(SlabFreeError::NotAnObject);
        }
        // SAFETY: `block` is inside the region (checked above).
        let slab = unsafe { self.slot(block) };
        // SAFETY: a slot is always readable (zero until a slab starts
        // there); `key` is an atomic, so a racing change is well-defined.
        if unsafe { (*slab).key.load(Ordering::Relaxed) } != slab_key(class) {
            return Err(SlabFreeError::NotAnObject);
        }
        Ok(slab)
    }
}

/// Tags `ptr` free and pushes it onto the slab's remote stack, unless its
/// tag says it is free already (a double free).
///
/// # Safety
/// `ptr` is an object of the live slab `slab`, which the caller does not own.
unsafe fn push_remote(slab: *mut Slab, ptr: NonNull<u8>, words: ObjectWords) -> Result<(), SlabFreeError> {
    let object = ptr.as_ptr().cast::<FreeObject>();
    // SAFETY: an object of the slab, at least 16 bytes, handed to us by
    // the caller's free.
    unsafe {
        if words.tagged(object) {
            return Err(SlabFreeError::DoubleFree);
        }
        words.set_tag(object, true);
    }
    // SAFETY: the slab stays allocated while this object counts as used.
    let remote = unsafe { &(*slab).remote };
    let mut head = remote.load(Ordering::Relaxed);
    loop {
        // SAFETY: the object is ours until the push succeeds.
        unsafe { words.set_next(object, head) };
        // Release: the owner's Acquire swap sees the link and the tag.
        match remote.compare_exchange_weak(head, object, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => return Ok(()),
            Err(current) => head = current,
        }
    }
}

/// One thread's slabs, per class. Not `Send`: it is the thread's own.
pub struct ThreadHeap<'a> {
    arena: &'a Arena,
    slabs: &'a Slabs,
    map: SlabMap,
    id: u64,
    /// Per class: the slab allocations come from (null when none).
    current: [*mut Slab; NR_CLASSES],
    /// Objects taken minus objects freed since the last flush, per class.
    delta: [isize; NR_CLASSES],
}

impl<'a> ThreadHeap<'a> {
    /// A heap for the calling thread over `arena`, sharing orphans with
    /// every other heap of `slabs`.
    ///
    /// # Panics
    /// If `slabs` already serves another arena (its orphans are that
    /// arena's slabs).
    pub fn new(arena: &'a Arena, slabs: &'a Slabs) -> Self {
        assert!(slabs.serves(arena), "zonealloc: a Slabs serves one arena; this one serves another");
        Self {
            arena,
            slabs,
            map: SlabMap::of(arena),
            id: NEXT_HEAP_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            current: [ptr::null_mut(); NR_CLASSES],
            delta: [0; NR_CLASSES],
        }
    }

    /// An object of `class`, or `None` if the arena is out of memory.
    #[inline]
    pub fn alloc(&mut self, class: usize) -> Option<NonNull<u8>> {
        self.alloc_cached(class).or_else(|| self.alloc_from_ring(class)).or_else(|| self.alloc_refill(class))
    }

    /// An object from the current slab of `class`, if it has one free
    /// without collecting remote frees: plain loads and stores, no call.
    /// `None` sends the caller to [`alloc`](Self::alloc).
    #[inline(always)]
    pub(crate) fn alloc_cached(&mut self, class: usize) -> Option<NonNull<u8>> {
        let slab = self.current[class];
        if slab.is_null() {
            return None;
        }
        // SAFETY: the current slab is live and ours.
        let object = unsafe { Slab::pop(slab, class, self.map.words) }?;
        self.delta[class] += 1;
        Some(object)
    }

    /// An object from the slabs this heap already has: the current
    /// slab's remote frees, then the next few slabs of the ring, which
    /// becomes current. Touches no lock and calls nothing outside the
    /// heap, so it needs no protection against re-entry; `None` sends
    /// the caller on to a new slab.
    #[inline(never)]
    pub(crate) fn alloc_from_ring(&mut self, class: usize) -> Option<NonNull<u8>> {
        let current = self.current[class];
        if current.is_null() {
            return None;
        }
        // Walking forward leaves the slabs found full behind: each is
        // looked at again only after a whole turn of the ring.
        let mut slab = current;
        let mut found = None;
        for _ in 0..SCAN_LIMIT {
            // SAFETY: slabs on our ring are live and ours.
            unsafe {
                Slab::collect(slab, self.map.words);
                if let Some(object) = Slab::pop(slab, class, self.map.words) {
                    self.current[class] = slab;
                    self.delta[class] += 1;
                    found = Some(object);
                    break;
                }
                slab = Slab::next(slab);
            }
            if slab == current {
                break;
            }
        }
        if self.delta[class].unsigned_abs() >= FLUSH_BATCH {
            self.flush_class(class);
        }
        found
    }

    /// An object from a slab this heap does not have yet: an adopted
    /// orphan, or a new slab from the buddy allocator (which may reclaim,
    /// and so run shrinkers that allocate). For when
    /// [`alloc_cached`](Self::alloc_cached) and
    /// [`alloc_from_ring`](Self::alloc_from_ring) found nothing.
    #[cold]
    #[inline(never)]
    pub(crate) fn alloc_refill(&mut self, class: usize) -> Option<NonNull<u8>> {
        self.alloc_adopted(class).or_else(|| {
            let block = slab_block(self.arena, class)?;
            Some(self.install(class, block))
        })
    }

    /// An object from an orphan with free objects, which this heap adopts;
    /// `None` if there is none. Takes no lock but an orphan list's and
    /// never allocates.
    pub(crate) fn alloc_adopted(&mut self, class: usize) -> Option<NonNull<u8>> {
        let slab = self.adopt(class)?;
        self.link(class, slab);
        // SAFETY: just linked: live and ours.
        let object = unsafe { Slab::pop(slab, class, self.map.words) }?;
        self.current[class] = slab;
        self.delta[class] += 1;
        self.flush_class(class);
        Some(object)
    }

    /// Makes `block` (from [`slab_block`] for `class`, over this heap's
    /// arena) a new slab of this heap, current for its class, and returns
    /// its first object.
    pub(crate) fn install(&mut self, class: usize, block: NonNull<u8>) -> NonNull<u8> {
        // SAFETY: the arena's blocks lie inside its region.
        let slab = unsafe { self.map.slot(block.as_ptr() as usize - self.map.region_base) };
        // SAFETY: the slot of a block we own: nobody else writes it, 64-byte
        // aligned and large enough (asserted at compile time).
        unsafe {
            slab.write(Slab {
                remote: AtomicPtr::new(ptr::null_mut()),
                owner: AtomicU64::new(self.id),
                key: AtomicU64::new(slab_key(class)),
                local: UnsafeCell::new(ptr::null_mut()),
                prev: UnsafeCell::new(slab),
                next: UnsafeCell::new(slab),
                base: block.as_ptr() as usize,
                used: UnsafeCell::new(0),
                bump: UnsafeCell::new(0),
            });
        }
        self.slabs.counters[class].slabs.fetch_add(1, Ordering::Relaxed);
        self.link(class, slab);
        self.current[class] = slab;
        // SAFETY: just linked: live and ours, every object free.
        let object = unsafe { Slab::pop(slab, class, self.map.words) };
        self.delta[class] += 1;
        self.flush_class(class);
        object.unwrap_or(block)
    }

    /// Takes an orphan of `class` with a free object, if one is among the
    /// first few on the list, and makes it ours. Full orphans examined on
    /// the way go to the back of the list, so the next look sees others.
    fn adopt(&mut self, class: usize) -> Option<*mut Slab> {
        let slab = {
            let mut list = self.slabs.orphans[class].lock();
            let mut found = None;
            for _ in 0..SCAN_LIMIT {
                let slab = list.pop()?;
                // SAFETY: orphans are live, and owned by the list we hold.
                if unsafe { Slab::has_free(slab, class) } {
                    found = Some(slab);
                    break;
                }
                list.push_back(slab);
            }
            found?
        };
        self.slabs.counters[class].orphans.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: unlinked under the lock: nobody else owns it now. Its
        // cells were published by the orphaning thread's unlock.
        unsafe {
            (*slab).owner.store(self.id, Ordering::Relaxed);
            Slab::collect(slab, self.map.words);
        }
        Some(slab)
    }

    /// Puts `slab` on the ring of `class`, after the current slab.
    fn link(&mut self, class: usize, slab: *mut Slab) {
        let current = self.current[class];
        // SAFETY: `slab` and the ring's slabs are live and ours.
        unsafe {
            if current.is_null() {
                set(&(*slab).prev, slab);
                set(&(*slab).next, slab);
            } else {
                let next = get(&(*current).next);
                set(&(*slab).prev, current);
                set(&(*slab).next, next);
                set(&(*next).prev, slab);
                set(&(*current).next, slab);
            }
        }
    }

    /// Takes `slab` off the ring of `class`.
    fn unlink(&mut self, class: usize, slab: *mut Slab) {
        // SAFETY: `slab` and its neighbours are live and ours.
        unsafe {
            let (prev, next) = (get(&(*slab).prev), get(&(*slab).next));
            set(&(*prev).next, next);
            set(&(*next).prev, prev);
            if self.current[class] == slab {
                self.current[class] = if next == slab { ptr::null_mut() } else { next };
            }
        }
    }

    /// Frees `ptr`, an object of `class` allocated by any heap over the
    /// same arena.
    ///
    /// # Safety
    /// `ptr` was returned for `class` by a heap over this heap's arena and
    /// is not used again (a wrong pointer is detected, not trusted).
    #[inline]
    pub unsafe fn free(&mut self, ptr: NonNull<u8>, class: usize) -> Result<(), SlabFreeError> {
        // SAFETY: the caller's contract is ours.
        if unsafe { self.free_cached(ptr, class) } {
            return Ok(());
        }
        // SAFETY: as above.
        unsafe { self.free_slow(ptr, class) }
    }

    /// Frees `ptr` when it is an object of one of this heap's own slabs,
    /// not tagged free, and the free is a push onto that slab's list (the
    /// slab does not become empty, or is the current one). Returns
    /// `false`, having changed nothing, for everything else: another
    /// thread's object, a slab to release, a tag to confirm, a pointer to
    /// refuse.
    ///
    /// # Safety
    /// As for [`free`](Self::free).
    #[inline(always)]
    pub(crate) unsafe fn free_cached(&mut self, ptr: NonNull<u8>, class: usize) -> bool {
        let Ok(slab) = self.map.find(ptr, class) else { return false };
        let object = ptr.as_ptr().cast::<FreeObject>();
        // SAFETY: a live slab (checked above); `owner` is atomic. Only this
        // thread ever stores its own id there, so a match is never stale,
        // and then the slab's cells and free objects are ours.
        unsafe {
            if (*slab).owner.load(Ordering::Relaxed) != self.id
                || self.map.words.tagged(object)
                || (get(&(*slab).used) == 1 && self.current[class] != slab)
            {
                return false;
            }
            self.push_local(slab, object, class);
        }
        if self.delta[class] <= -(FLUSH_BATCH as isize) {
            self.flush_class(class);
        }
        true
    }

    /// Tags `object` free and puts it on its slab's local list.
    ///
    /// # Safety
    /// `slab` is a live slab of `class` owned by this heap and `object` an
    /// object of it in use.
    #[inline(always)]
    unsafe fn push_local(&mut self, slab: *mut Slab, object: *mut FreeObject, class: usize) {
        let words = self.map.words;
        // SAFETY: per the contract, the slab's cells are ours, and so is
        // the object, at least 16 bytes.
        unsafe {
            words.set_tag(object, true);
            words.set_next(object, get(&(*slab).local));
            set(&(*slab).local, object);
            set(&(*slab).used, get(&(*slab).used) - 1);
        }
        self.delta[class] -= 1;
    }

    /// [`free`](Self::free) for what [`free_cached`](Self::free_cached)
    /// declined: another thread's object, a slab to release, a tag to
    /// confirm, a pointer to refuse.
    ///
    /// # Safety
    /// As for [`free`](Self::free).
    #[cold]
    #[inline(never)]
    pub(crate) unsafe fn free_slow(&mut self, ptr: NonNull<u8>, class: usize) -> Result<(), SlabFreeError> {
        let slab = self.map.find(ptr, class)?;
        // SAFETY: a live slab (checked above); `owner` is atomic.
        if unsafe { (*slab).owner.load(Ordering::Relaxed) } != self.id {
            // Only this thread ever stores its own id, so a match cannot
            // be stale; anything else is another thread's or an orphan.
            // SAFETY: an object of a live slab we do not own.
            unsafe { push_remote(slab, ptr, self.map.words) }?;
            // Counted here, by the freeing heap; the owner's collect
            // does not count it again.
            self.delta[class] -= 1;
            if self.delta[class] <= -(FLUSH_BATCH as isize) {
                self.flush_class(class);
            }
            return Ok(());
        }
        let object = ptr.as_ptr().cast::<FreeObject>();
        // SAFETY: the slab is ours: its cells and free objects too. A tag
        // is confirmed against the lists: a live object may hold any bytes.
        unsafe {
            if self.map.words.tagged(object) && Slab::holds_free(slab, class, object, self.map.words) {
                return Err(SlabFreeError::DoubleFree);
            }
            self.push_local(slab, object, class);
        }
        // SAFETY: ours.
        if unsafe { Slab::is_empty(slab) } && self.current[class] != slab {
            self.release(class, slab);
        }
        self.flush_class(class);
        Ok(())
    }

    /// Returns an empty slab of ours to the buddy allocator.
    fn release(&mut self, class: usize, slab: *mut Slab) {
        self.unlink(class, slab);
        // SAFETY: ours, empty (the callers checked), and now off our ring.
        unsafe { self.slabs.return_slab(self.arena, class, slab) };
    }

    /// Publishes this heap's object counts (see [`ClassStats::objects`]).
    pub fn flush(&mut self) {
        for class in 0..NR_CLASSES {
            self.flush_class(class);
        }
    }

    /// Publishes the object count of one class.
    #[inline]
    fn flush_class(&mut self, class: usize) {
        let delta = std::mem::take(&mut self.delta[class]);
        let objects = &self.slabs.counters[class].objects;
        if delta > 0 {
            objects.fetch_add(delta as usize, Ordering::Relaxed);
        } else if delta < 0 {
            objects.fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
        }
    }
}

/// A heap for threads that cannot use one of their own: whose heap is gone
/// (thread-local destructors that run after the heap's) or busy (an
/// allocation from inside a slow path on the same thread, such as a
/// shrinker called by direct reclaim). A real lock: a thread that finds it
/// held waits, since contention is not out-of-memory. It is never held
/// across anything that allocates or reclaims (a new slab's block is taken
/// with the lock released), so no thread can re-enter it; an attempt is a
/// bug and fatal, never a deadlock.
pub(crate) struct SharedHeap<'a> {
    heap: Mutex<Option<ThreadHeap<'a>>>,
    /// The holder's thread token, 0 when free.
    owner: AtomicUsize,
}

// SAFETY: the heap is only used under the mutex; a heap's slabs may be used
// from any one thread at a time.
unsafe impl Sync for SharedHeap<'_> {}

/// The shared heap, locked.
pub(crate) struct SharedGuard<'s, 'a> {
    shared: &'s SharedHeap<'a>,
    heap: crate::sync::MutexGuard<'s, Option<ThreadHeap<'a>>>,
}

impl<'a> SharedHeap<'a> {
    /// An empty shared heap.
    #[cfg(not(loom))]
    pub(crate) const fn new() -> Self {
        Self { heap: Mutex::new(None), owner: AtomicUsize::new(0) }
    }

    /// An empty shared heap.
    #[cfg(loom)]
    pub(crate) fn new() -> Self {
        Self { heap: Mutex::new(None), owner: AtomicUsize::new(0) }
    }

    /// Locks it for the thread named by `token` (non-zero, unique among
    /// live threads).
    pub(crate) fn lock(&self, token: usize) -> SharedGuard<'_, 'a> {
        // Only this thread ever stores its own token, and clears it before
        // unlocking: seeing it means this thread holds the lock.
        if self.owner.load(Ordering::Relaxed) == token {
            crate::report::fatal("the shared heap was re-entered on the thread that holds it");
        }
        let heap = self.heap.lock();
        self.owner.store(token, Ordering::Relaxed);
        SharedGuard { shared: self, heap }
    }

    /// An object of `class` for the thread `token`; `None` only when
    /// `arena` is out of memory.
    pub(crate) fn alloc(&self, arena: &'a Arena, slabs: &'a Slabs, class: usize, token: usize) -> Option<NonNull<u8>> {
        {
            let mut shared = self.lock(token);
            let heap = shared.heap(arena, slabs);
            if let Some(object) =
                heap.alloc_cached(class).or_else(|| heap.alloc_from_ring(class)).or_else(|| heap.alloc_adopted(class))
            {
                return Some(object);
            }
        }
        // A new slab, its block taken without the lock (this may reclaim).
        let block = slab_block(arena, class)?;
        Some(self.lock(token).heap(arena, slabs).install(class, block))
    }
}

impl<'a> SharedGuard<'_, 'a> {
    /// The heap, made on first use.
    pub(crate) fn heap(&mut self, arena: &'a Arena, slabs: &'a Slabs) -> &mut ThreadHeap<'a> {
        self.heap.get_or_insert_with(|| ThreadHeap::new(arena, slabs))
    }

    /// The heap if it was ever made.
    #[cfg_attr(loom, allow(dead_code))] // used by `global` only
    pub(crate) fn existing(&mut self) -> Option<&mut ThreadHeap<'a>> {
        self.heap.as_mut()
    }
}

impl Drop for SharedGuard<'_, '_> {
    fn drop(&mut self) {
        self.shared.owner.store(0, Ordering::Relaxed);
    }
}

/// A block for a new slab of `class`, from `arena`'s buddy allocator
/// (which may reclaim, and so run shrinkers that allocate); for
/// [`ThreadHeap::install`].
pub(crate) fn slab_block(arena: &Arena, class: usize) -> Option<NonNull<u8>> {
    arena.alloc_pages(slab_order(class), AllocFlags::NOWARN).ok()
}

impl Drop for ThreadHeap<'_> {
    /// Thread exit: empty slabs go back to the buddy allocator, the rest
    /// become orphans for other threads to adopt.
    fn drop(&mut self) {
        for class in 0..NR_CLASSES {
            while let Some(slab) = NonNull::new(self.current[class]) {
                let slab = slab.as_ptr();
                // SAFETY: ours.
                let empty = unsafe {
                    Slab::collect(slab, self.map.words);
                    Slab::is_empty(slab)
                };
                if empty {
                    self.release(class, slab);
                    continue;
                }
                self.unlink(class, slab);
                // SAFETY: ours until it is on the orphan list.
                unsafe { (*slab).owner.store(0, Ordering::Relaxed) };
                // The unlock publishes its cells to the adopter.
                self.slabs.orphans[class].lock().push_back(slab);
                self.slabs.counters[class].orphans.fetch_add(1, Ordering::Relaxed);
            }
            self.flush_class(class);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn classes_are_sorted_and_lookup_is_exact() {
        for w in SIZE_CLASSES.windows(2) {
            assert!(w[0] < w[1]);
        }
        for size in 1..=SLAB_MAX {
            let class = class_of(size, 16).unwrap();
            let s = SIZE_CLASSES[class];
            assert!(s >= size && s.is_multiple_of(16), "size {size} at align 16: class {s}");
            assert!(SIZE_CLASSES[..class].iter().all(|&c| c < size || !c.is_multiple_of(16)), "size {size}");
        }
        for size in 1..=SLAB_MAX {
            let class = class_of(size, 8).unwrap();
            assert!([1, 2, 4].iter().all(|&align| class_of(size, align) == Some(class)), "size {size}");
            assert!(SIZE_CLASSES[class] >= size, "size {size}");
            assert!(class == 0 || SIZE_CLASSES[class - 1] < size, "size {size} is not in the smallest class");
            if size > 128 {
                let waste = (SIZE_CLASSES[class] - size) as f64 / SIZE_CLASSES[class] as f64;
                assert!(waste < 0.2, "size {size}: {waste}");
            }
        }
        assert_eq!(class_of(SLAB_MAX + 1, 8), None);
        assert_eq!(class_of(0, 1), Some(0));
    }

    #[test]
    fn aligned_classes_are_powers_of_two_that_fit() {
        for align in [32, 64, 128, 256, 4096] {
            for size in [1, align - 1, align, align + 1, 3 * align] {
                match class_of(size, align) {
                    Some(class) => {
                        let s = SIZE_CLASSES[class];
                        assert!(s.is_power_of_two() && s >= size.max(align), "size {size} align {align}");
                    }
                    None => assert!(size.max(align).next_power_of_two() > SLAB_MAX),
                }
            }
        }
    }

    #[test]
    fn the_boundary_test_by_multiplication_matches_the_remainder() {
        for (class, info) in CLASS_INFO.iter().enumerate() {
            let size = u64::from(info.size);
            for offset in 0..(4096u64 << info.order) {
                let by_multiplication = offset.wrapping_mul(info.div_magic) < info.div_magic;
                assert_eq!(by_multiplication, offset % size == 0, "class {class}, offset {offset}");
            }
        }
    }

    #[test]
    fn every_slab_holds_at_least_eight_objects() {
        for (class, &size) in SIZE_CLASSES.iter().enumerate() {
            let bytes = crate::PAGE_SIZE << slab_order(class);
            assert!(bytes / size >= MIN_OBJECTS, "class {class}");
            assert_eq!(CLASS_INFO[class].capacity as usize, bytes / size);
        }
    }
}
