//! The global allocator as this library builds it (`process-malloc`: the
//! ready heap reached through its own initial-exec slot): what a thread
//! allocates after its heap is gone, in a thread-local destructor that
//! runs after the heap's.

use std::alloc::Layout;
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use zonealloc::{class_of, global_malloc, global_stats, global_usable_size};

static LATE: AtomicUsize = AtomicUsize::new(0);

/// Allocates 64 bytes when dropped, at thread exit.
struct AllocatesOnExit;

impl Drop for AllocatesOnExit {
    fn drop(&mut self) {
        let ptr = global_malloc(Layout::from_size_align(64, 16).unwrap(), false).ptr;
        LATE.store(ptr as usize, Ordering::SeqCst);
    }
}

std::thread_local! {
    static GUARD: Cell<Option<AllocatesOnExit>> = const { Cell::new(None) };
}

fn objects_of_64() -> usize {
    let class = class_of(64, 16).unwrap();
    assert_eq!(class.size(), 64);
    global_stats().expect("the global arena exists").classes[class].objects
}

/// The destructor runs after the heap's (destructors run in reverse order
/// of registration, and it is registered before the thread's first
/// allocation makes the heap), so its allocation must come from the shared
/// heap and be counted: served from the dropped heap's old slab, it would
/// be taken from a slab that is now an orphan or back in the buddy
/// allocator, and missing from the counts.
#[test]
fn an_allocation_after_the_heap_is_gone_is_served_and_counted() {
    let layout = Layout::from_size_align(64, 16).unwrap();
    // The arena exists before the thread, so the counts are there to read.
    let first = global_malloc(layout, false).ptr;
    assert!(!first.is_null());
    let before = objects_of_64();
    let early = std::thread::spawn(move || {
        GUARD.with(|guard| guard.set(Some(AllocatesOnExit)));
        let ptr = global_malloc(layout, false).ptr;
        assert!(!ptr.is_null());
        ptr as usize
    })
    .join()
    .unwrap();
    let late = LATE.load(Ordering::SeqCst) as *mut u8;
    assert!(!late.is_null(), "the destructor ran and its allocation succeeded");
    assert_ne!(late as usize, early);
    assert_eq!(global_usable_size(late), Some(64));
    assert_eq!(objects_of_64(), before + 2, "both of the thread's objects are counted");
}
