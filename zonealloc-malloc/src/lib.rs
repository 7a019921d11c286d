//! zonealloc as the `malloc` of any program: `LD_PRELOAD` the shared
//! library, or link the static one in.
//!
//! ```text
//! cargo build --release -p zonealloc-malloc
//! LD_PRELOAD=target/release/libzonealloc_malloc.so ZONEALLOC_STATS=1 python3 script.py
//! ```
//!
//! Every call goes to the global allocator ([`ZoneAlloc`]): `malloc` is an
//! allocation aligned to 16 bytes, `free` and `malloc_usable_size` find
//! the size class or block order from the allocator's out-of-band metadata
//! ([`zonealloc::global_free`]). Rust code in this library uses the same
//! allocator. Beneath the arena, memory comes from anonymous mappings
//! (zonealloc's `process-malloc`), never from glibc's `malloc`, which here
//! is this library.
//!
//! **Memory not in the arena.** Sizes beyond the arena's largest block,
//! and allocations made while the arena is being built (by the dynamic
//! loader, `dlsym`, or the build itself calling into libc), are mappings
//! of their own; [`Chunks`] records each one, so that a pointer the
//! allocator did not hand out is told apart and refused (one rate-limited
//! line on stderr), never followed.
//!
//! **Threads and fork.** A thread made by C gets its caches on its first
//! allocation and gives them back at exit, through the same thread-local
//! destructors as a Rust thread; allocations from `pthread_key`
//! destructors that run after those go to the shared heap. The arena's
//! `pthread_atfork` handlers are installed when it is built; this
//! library adds one for its own lock, after them.

use std::alloc::Layout;
use std::cell::UnsafeCell;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use zonealloc::{MIN_ALIGN, ZoneAlloc};

#[global_allocator]
static GLOBAL: ZoneAlloc = ZoneAlloc;

/// The mappings handed out outside the arena, by address. A spin lock,
/// not a mutex: it is held only around a map operation, and `fork`'s
/// prepare handler takes it, so the child never finds it held.
struct Chunks {
    locked: AtomicBool,
    map: UnsafeCell<Option<HashMap<usize, Layout>>>,
}

// SAFETY: `map` is only touched with `locked` held.
unsafe impl Sync for Chunks {}

static CHUNKS: Chunks = Chunks { locked: AtomicBool::new(false), map: UnsafeCell::new(None) };

impl Chunks {
    fn lock(&self) {
        while self.locked.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            std::hint::spin_loop();
        }
    }

    fn unlock(&self) {
        self.locked.store(false, Ordering::Release);
    }

    /// Runs `f` on the map, under the lock. The map allocates through
    /// [`ZoneAlloc`], which never calls back into this library.
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<usize, Layout>) -> R) -> R {
        self.lock();
        // SAFETY: we hold the lock.
        let map = unsafe { &mut *self.map.get() }.get_or_insert_with(HashMap::new);
        let result = f(map);
        self.unlock();
        result
    }

    /// Records a mapping; `false` if the record itself cannot be had
    /// (the arena is out of memory).
    fn insert(&self, ptr: *mut u8, layout: Layout) -> bool {
        self.with(|map| map.try_reserve(1).is_ok() && map.insert(ptr as usize, layout).is_none())
    }

    fn get(&self, ptr: *const u8) -> Option<Layout> {
        self.with(|map| map.get(&(ptr as usize)).copied())
    }

    fn remove(&self, ptr: *const u8) -> Option<Layout> {
        self.with(|map| map.remove(&(ptr as usize)))
    }
}

/// Whether `ptr` is in the global arena.
fn in_arena(ptr: *const u8) -> bool {
    zonealloc::global_arena().is_some_and(|arena| arena.contains(ptr))
}

fn set_errno(value: i32) {
    // SAFETY: errno is this thread's.
    unsafe { *libc::__errno_location() = value };
}

/// `layout` from the global allocator; records it if it is not in the
/// arena. Null with `ENOMEM` on failure. Inlined, so that `malloc`'s
/// alignment is a constant in the class lookup.
#[inline(always)]
fn allocate(layout: Layout, zero: bool) -> *mut c_void {
    let got = zonealloc::global_malloc(layout, zero);
    if got.outside {
        return record_outside(got.ptr, layout);
    }
    if got.ptr.is_null() {
        set_errno(libc::ENOMEM);
    }
    got.ptr.cast()
}

/// Records a mapping handed out beside the arena; if that fails, gives
/// the mapping back and fails the allocation.
#[cold]
#[inline(never)]
fn record_outside(ptr: *mut u8, layout: Layout) -> *mut c_void {
    if CHUNKS.insert(ptr, layout) {
        return ptr.cast();
    }
    // SAFETY: handed out outside the arena with this layout, not yet seen
    // by the caller.
    unsafe { zonealloc::global_free_outside(ptr, layout) };
    set_errno(libc::ENOMEM);
    std::ptr::null_mut()
}

/// The bytes usable in a mapping beside the arena: whole pages.
fn mapped_size(layout: Layout) -> usize {
    layout.size().next_multiple_of(page_size())
}

/// The layout of `size` bytes at `align`, or `ENOMEM` (a size too large
/// for any layout cannot be allocated).
#[inline(always)]
fn layout(size: usize, align: usize) -> Option<Layout> {
    let layout = Layout::from_size_align(size.max(1), align).ok();
    if layout.is_none() {
        set_errno(libc::ENOMEM);
    }
    layout
}

static FOREIGN: AtomicU64 = AtomicU64::new(0);
static FOREIGN_REPORTED: AtomicU64 = AtomicU64::new(0);

/// A pointer neither in the arena nor handed out beside it: refused, and
/// reported on stderr without allocating (the first ten, then every
/// thousandth).
#[cold]
fn refuse_foreign(call: &str, ptr: *const c_void) {
    let n = FOREIGN.fetch_add(1, Ordering::Relaxed);
    if n < 10 || n.is_multiple_of(1000) {
        FOREIGN_REPORTED.fetch_add(1, Ordering::Relaxed);
        let mut line = [0u8; 160];
        let mut w = Cursor { buf: &mut line, len: 0 };
        let _ = std::fmt::Write::write_fmt(
            &mut w,
            format_args!("zonealloc: refused {call}({ptr:p}): not allocated by zonealloc ({} so far)\n", n + 1),
        );
        let len = w.len;
        // SAFETY: writes our own buffer to stderr.
        unsafe { libc::write(2, line.as_ptr().cast(), len) };
    }
}

/// A `fmt::Write` into a fixed buffer (truncating).
struct Cursor<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl std::fmt::Write for Cursor<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let take = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        Ok(())
    }
}

/// C's `malloc`.
///
/// # Safety
/// None beyond C's: the result is freed once, with `free` or `realloc`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    // The common case inlined and the rest a tail call: no frame, no
    // register saved.
    match zonealloc::global_malloc_cached(size) {
        Some(ptr) => ptr.as_ptr().cast(),
        None => malloc_rest(size),
    }
}

/// `malloc` beyond an object of a slab this thread's heap has at hand.
/// `extern "C"` so that it cannot unwind (it aborts instead), which lets
/// `malloc` call it last with no landing pad and no frame.
#[inline(never)]
extern "C" fn malloc_rest(size: usize) -> *mut c_void {
    if let Some(ptr) = zonealloc::global_malloc_ring(size) {
        return ptr.as_ptr().cast();
    }
    layout(size, MIN_ALIGN).map_or(std::ptr::null_mut(), |l| allocate(l, false))
}

/// C's `calloc`: `NULL` with `ENOMEM` when `n * size` overflows.
///
/// # Safety
/// As for [`malloc`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    let Some(bytes) = n.checked_mul(size) else {
        set_errno(libc::ENOMEM);
        return std::ptr::null_mut();
    };
    layout(bytes, MIN_ALIGN).map_or(std::ptr::null_mut(), |l| allocate(l, true))
}

/// C's `free`: `NULL` is ignored; a pointer the allocator did not hand
/// out is refused and reported, never written.
///
/// # Safety
/// `ptr` is not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn free(ptr: *mut c_void) {
    // SAFETY: the caller's contract; the allocator checks the pointer (and
    // ignores null).
    if unsafe { zonealloc::global_free_cached(ptr.cast()) } {
        return;
    }
    // SAFETY: the caller's contract. A tail call: `free` saves nothing.
    unsafe { free_rest(ptr) }
}

/// `free` beyond this thread's own slabs. It may wait on a lock, which
/// can set `errno`; `free` leaves `errno` as it was (POSIX 2024, and what
/// glibc does since 2.33).
///
/// # Safety
/// As for [`free`].
#[cold]
#[inline(never)]
unsafe extern "C" fn free_rest(ptr: *mut c_void) {
    if ptr.is_null() {
        return;
    }
    // SAFETY: errno is this thread's.
    let errno = unsafe { *libc::__errno_location() };
    // SAFETY: the caller's contract.
    if !unsafe { zonealloc::global_free(ptr.cast()) } {
        match CHUNKS.remove(ptr.cast()) {
            // SAFETY: handed out outside the arena with this layout; its
            // record is gone first, so its address, once unmapped, may be
            // handed out and recorded again at once.
            Some(layout) => unsafe { zonealloc::global_free_outside(ptr.cast(), layout) },
            None => refuse_foreign("free", ptr),
        }
    }
    set_errno(errno);
}

/// C's `realloc`: `realloc(NULL, n)` is `malloc(n)`; `realloc(p, 0)`
/// frees `p` and returns `NULL`, as glibc does. On failure the old block
/// stays and `NULL` is returned with `ENOMEM`.
///
/// # Safety
/// `ptr` is null or a live allocation, not used afterwards unless `NULL`
/// is returned.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
    if ptr.is_null() {
        // SAFETY: as malloc.
        return unsafe { malloc(size) };
    }
    if size == 0 {
        // SAFETY: the caller's contract.
        unsafe { free(ptr) };
        return std::ptr::null_mut();
    }
    // SAFETY: the caller's contract; the allocator checks the pointer.
    if let Some(moved) = unsafe { zonealloc::global_realloc(ptr.cast(), size) } {
        if moved.is_null() {
            set_errno(libc::ENOMEM);
        } else if !in_arena(moved) {
            CHUNKS.insert(moved, Layout::from_size_align(size, MIN_ALIGN).expect("a layout the allocator served"));
        }
        return moved.cast();
    }
    // A mapping beside the arena: its record goes first (once unmapped,
    // its address may be handed out and recorded again at once), and
    // comes back if the new allocation fails.
    let Some(old) = CHUNKS.remove(ptr.cast()) else {
        refuse_foreign("realloc", ptr);
        return std::ptr::null_mut();
    };
    let moved = layout(size, MIN_ALIGN).map_or(std::ptr::null_mut(), |l| allocate(l, false));
    if moved.is_null() {
        if !CHUNKS.insert(ptr.cast(), old) {
            // Unreachable in practice: the record's slot was just freed.
            refuse_foreign("realloc", ptr);
        }
        return std::ptr::null_mut();
    }
    // SAFETY: the old mapping holds `mapped_size(old)` bytes (all of them
    // usable, as malloc_usable_size says), the new block at least `size`;
    // distinct blocks.
    unsafe {
        std::ptr::copy_nonoverlapping(ptr.cast::<u8>(), moved.cast::<u8>(), mapped_size(old).min(size));
        zonealloc::global_free_outside(ptr.cast(), old);
    }
    moved
}

/// `realloc(ptr, n * size)`, `NULL` with `ENOMEM` when that overflows.
///
/// # Safety
/// As for [`realloc`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn reallocarray(ptr: *mut c_void, n: usize, size: usize) -> *mut c_void {
    match n.checked_mul(size) {
        // SAFETY: the caller's contract.
        Some(bytes) => unsafe { realloc(ptr, bytes) },
        None => {
            set_errno(libc::ENOMEM);
            std::ptr::null_mut()
        }
    }
}

/// `size` bytes aligned to `align` (a power of two), or `NULL`.
fn aligned(align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        set_errno(libc::EINVAL);
        return std::ptr::null_mut();
    }
    layout(size, align.max(MIN_ALIGN)).map_or(std::ptr::null_mut(), |l| allocate(l, false))
}

/// POSIX `posix_memalign`: `EINVAL` unless `align` is a power of two
/// multiple of `sizeof(void *)`; `ENOMEM` on failure (`*out` untouched).
///
/// # Safety
/// `out` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> i32 {
    if !align.is_power_of_two() || !align.is_multiple_of(size_of::<*mut c_void>()) {
        return libc::EINVAL;
    }
    // SAFETY: errno is this thread's.
    let errno = unsafe { *libc::__errno_location() };
    let ptr = aligned(align, size);
    if ptr.is_null() {
        // posix_memalign reports through its result, not errno.
        set_errno(errno);
        return libc::ENOMEM;
    }
    // SAFETY: the caller's contract.
    unsafe { *out = ptr };
    0
}

/// C11 `aligned_alloc`.
///
/// # Safety
/// As for [`malloc`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    aligned(align, size)
}

/// The obsolete `memalign`, as glibc's: an alignment below 16 (0
/// included) is 16, one that is not a power of two is rounded up to one.
///
/// # Safety
/// As for [`malloc`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    match align.max(MIN_ALIGN).checked_next_power_of_two() {
        Some(align) => aligned(align, size),
        None => {
            set_errno(libc::EINVAL);
            std::ptr::null_mut()
        }
    }
}

/// The obsolete `valloc`: page aligned.
///
/// # Safety
/// As for [`malloc`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn valloc(size: usize) -> *mut c_void {
    aligned(page_size(), size)
}

/// The obsolete `pvalloc`: page aligned, rounded up to whole pages.
///
/// # Safety
/// As for [`malloc`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pvalloc(size: usize) -> *mut c_void {
    let page = page_size();
    match size.max(1).checked_next_multiple_of(page) {
        Some(size) => aligned(page, size),
        None => {
            set_errno(libc::ENOMEM);
            std::ptr::null_mut()
        }
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}

/// glibc's `malloc_usable_size`: at least the size asked for; 0 for `NULL`
/// and for a pointer the allocator did not hand out (refused and reported).
///
/// # Safety
/// None: the pointer is looked up, never followed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc_usable_size(ptr: *mut c_void) -> usize {
    // The slab object case inlined and the rest a tail call: a leaf.
    match zonealloc::global_usable_size_cached(ptr.cast()) {
        Some(size) => size,
        None => usable_size_rest(ptr),
    }
}

/// `malloc_usable_size` beyond a slab object: null, a block, a mapping
/// beside the arena, or a foreign pointer.
#[cold]
#[inline(never)]
fn usable_size_rest(ptr: *mut c_void) -> usize {
    if ptr.is_null() {
        return 0;
    }
    if let Some(size) = zonealloc::global_usable_size(ptr.cast()) {
        return size;
    }
    if in_arena(ptr.cast()) {
        refuse_foreign("malloc_usable_size", ptr);
        return 0;
    }
    match CHUNKS.get(ptr.cast()) {
        Some(layout) => mapped_size(layout),
        None => {
            refuse_foreign("malloc_usable_size", ptr);
            0
        }
    }
}

/// glibc's `malloc_trim`: empty orphaned slabs back to the arena, every
/// free page that still costs memory back to the OS. 1 if memory went
/// back, else 0.
///
/// # Safety
/// None.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc_trim(_pad: usize) -> i32 {
    let reaped = zonealloc::global_reap();
    let purged = zonealloc::global_arena().map_or(0, |arena| arena.purge().bytes);
    i32::from(reaped > 0 || purged > 0)
}

/// glibc's `malloc_stats`: the allocator's statistics on stderr, in the
/// kernel's formats.
///
/// # Safety
/// None.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc_stats() {
    print_stats(2);
}

/// Writes the statistics to `fd`.
fn print_stats(fd: i32) {
    let Some(stats) = zonealloc::global_stats() else { return };
    let (chunks, bytes) = CHUNKS.with(|map| (map.len(), map.values().map(Layout::size).sum::<usize>()));
    let text = format!(
        "{stats}\nmapped outside the arena: {chunks} chunks, {bytes} bytes\nforeign pointers refused: {}\n",
        FOREIGN.load(Ordering::Relaxed)
    );
    let mut rest = text.as_bytes();
    while !rest.is_empty() {
        // SAFETY: writes our own buffer.
        let n = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
        if n <= 0 {
            break;
        }
        rest = &rest[n as usize..];
    }
}

/// A copy of stderr taken at load, for the statistics at exit: a program
/// may close its stderr in an exit handler of its own (coreutils do).
static STATS_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(2);

/// glibc's `struct mallinfo2`.
#[repr(C)]
#[derive(Default)]
pub struct Mallinfo2 {
    /// Bytes of the arena in use (allocated or cached pages).
    pub arena: usize,
    /// Free chunks: free pages of the arena.
    pub ordblks: usize,
    /// Unused (fastbins).
    pub smblks: usize,
    /// Chunks mapped outside the arena.
    pub hblks: usize,
    /// Bytes mapped outside the arena.
    pub hblkhd: usize,
    /// Unused.
    pub usmblks: usize,
    /// Unused (fastbins).
    pub fsmblks: usize,
    /// Bytes in use: slab objects out plus pages allocated as blocks.
    pub uordblks: usize,
    /// Bytes free in the arena.
    pub fordblks: usize,
    /// Unused.
    pub keepcost: usize,
}

/// glibc's `mallinfo2`, as close as the counters allow.
///
/// # Safety
/// None.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mallinfo2() -> Mallinfo2 {
    let mut info = Mallinfo2::default();
    if let Some(stats) = zonealloc::global_stats() {
        let zones = &stats.arena.zones;
        let page = 4096;
        let in_use: usize = zones.iter().map(|z| z.managed - z.free).sum();
        let free: usize = zones.iter().map(|z| z.free).sum();
        let slab_bytes: usize = stats.classes.iter().map(|c| c.slab_bytes).sum();
        let objects: usize = stats.classes.iter().map(|c| c.objects * c.size).sum();
        info.arena = in_use * page;
        info.ordblks = free;
        info.fordblks = free * page;
        info.uordblks = (in_use * page).saturating_sub(slab_bytes) + objects;
    }
    let (chunks, bytes) = CHUNKS.with(|map| (map.len(), map.values().map(Layout::size).sum::<usize>()));
    info.hblks = chunks;
    info.hblkhd = bytes;
    info
}

macro_rules! libc_alias {
    ($($alias:ident => $target:ident ($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {$(
        #[doc = concat!("glibc's `", stringify!($alias), "`, the same as [`", stringify!($target), "`].")]
        ///
        /// # Safety
        #[doc = concat!("As for [`", stringify!($target), "`].")]
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $alias($($arg: $ty),*) -> $ret {
            // SAFETY: the caller's contract, forwarded.
            unsafe { $target($($arg),*) }
        }
    )*};
}

libc_alias! {
    __libc_malloc => malloc(size: usize) -> *mut c_void;
    __libc_calloc => calloc(n: usize, size: usize) -> *mut c_void;
    __libc_realloc => realloc(ptr: *mut c_void, size: usize) -> *mut c_void;
    __libc_free => free(ptr: *mut c_void) -> ();
    __libc_memalign => memalign(align: usize, size: usize) -> *mut c_void;
    __libc_valloc => valloc(size: usize) -> *mut c_void;
    __libc_pvalloc => pvalloc(size: usize) -> *mut c_void;
    cfree => free(ptr: *mut c_void) -> ();
}

extern "C" fn fork_prepare() {
    CHUNKS.lock();
}

extern "C" fn fork_release() {
    CHUNKS.unlock();
}

extern "C" fn stats_at_exit() {
    print_stats(STATS_FD.load(Ordering::Relaxed));
}

/// Runs when the library is loaded: builds the arena (so that its own
/// `pthread_atfork` handlers are installed before ours, and ours take our
/// lock first and release it last), then registers ours, and the stats at
/// exit when `ZONEALLOC_STATS=1`.
extern "C" fn init() {
    std::hint::black_box(Box::new(0u8));
    // SAFETY: handlers with no preconditions, registered once.
    unsafe {
        libc::pthread_atfork(Some(fork_prepare), Some(fork_release), Some(fork_release));
        let name = c"ZONEALLOC_STATS";
        let value = libc::getenv(name.as_ptr());
        if !value.is_null() && *value == b'1' as libc::c_char {
            let fd = libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3);
            if fd >= 0 {
                STATS_FD.store(fd, Ordering::Relaxed);
            }
            libc::atexit(stats_at_exit);
        }
    }
}

#[used]
#[unsafe(link_section = ".init_array")]
static INIT: extern "C" fn() = init;
