//! The calling thread's heap while it is ready, for the process's malloc:
//! one thread-local pointer, null in every other state (`lifecycle.rs`
//! keeps it in step with the heap's state).
//!
//! In an executable a Rust thread-local is one load from the thread
//! pointer, and the heap's own thread-local serves the fast paths. In a
//! shared library it is a call to `__tls_get_addr` (the general-dynamic
//! model, the only one stable Rust builds), a tenth of a `malloc`/`free`
//! pair. So the process's malloc (`process-malloc`, which
//! `zonealloc-malloc` builds as a preloaded library) on x86-64 Linux keeps
//! the pointer in a variable of its own in the initial-exec model, as
//! mimalloc and jemalloc do: a GOT load and a load from `%fs`.
//! A library using it must be loaded at startup (`LD_PRELOAD`, or linked):
//! the initial-exec model takes its space from the static TLS block, of
//! which glibc keeps only a small surplus for later `dlopen`s.

use std::ptr;

use crate::slab::ThreadHeap;

/// What the slot holds: the thread's heap, or null.
pub(super) type Heap = ThreadHeap<'static>;

#[cfg(all(feature = "process-malloc", target_arch = "x86_64", target_os = "linux", not(loom)))]
mod slot {
    use super::Heap;

    // One pointer in the thread-local storage of every thread, zero (null)
    // when a thread starts: `.tbss` is the zero-initialised TLS section and
    // `@tls_object` gives the symbol the TLS type the linker relocates as
    // such. Global, for the crate's other codegen units; hidden, so no
    // other library sees it.
    std::arch::global_asm!(
        ".pushsection .tbss.zonealloc_ready_heap,\"awT\",@nobits",
        ".p2align 3",
        ".globl zonealloc_ready_heap",
        ".hidden zonealloc_ready_heap",
        ".type zonealloc_ready_heap, @tls_object",
        ".size zonealloc_ready_heap, 8",
        "zonealloc_ready_heap:",
        ".zero 8",
        ".popsection",
    );

    #[inline(always)]
    pub(super) fn get() -> *mut Heap {
        let heap: *mut Heap;
        // SAFETY: reads the calling thread's own slot: its offset from the
        // thread pointer (the GOT entry the loader fills in) and the slot
        // itself, 8 aligned bytes. Writes nothing.
        unsafe {
            std::arch::asm!(
                "mov {heap}, qword ptr [rip + zonealloc_ready_heap@GOTTPOFF]",
                "mov {heap}, qword ptr fs:[{heap}]",
                heap = out(reg) heap,
                options(nostack, preserves_flags, readonly),
            );
        }
        heap
    }

    #[inline(always)]
    pub(super) fn set(heap: *mut Heap) {
        // SAFETY: writes the calling thread's own slot (see `get`), which
        // nothing else writes or borrows.
        unsafe {
            std::arch::asm!(
                "mov {offset}, qword ptr [rip + zonealloc_ready_heap@GOTTPOFF]",
                "mov qword ptr fs:[{offset}], {heap}",
                offset = out(reg) _,
                heap = in(reg) heap,
                options(nostack, preserves_flags),
            );
        }
    }
}

#[cfg(not(all(feature = "process-malloc", target_arch = "x86_64", target_os = "linux", not(loom))))]
mod slot {
    use super::Heap;

    // No slot: `lifecycle.rs` reads its own thread-local, where the heap
    // lies in place (in an executable, one load from the thread pointer
    // with no pointer to follow).
    #[inline(always)]
    pub(super) fn get() -> *mut Heap {
        std::ptr::null_mut()
    }

    #[inline(always)]
    pub(super) fn set(_: *mut Heap) {}
}

/// Whether this build keeps the slot; without it, [`ready_heap`] is
/// always null and the caller asks the heap's own thread-local.
pub(super) const HAS_SLOT: bool =
    cfg!(all(feature = "process-malloc", target_arch = "x86_64", target_os = "linux", not(loom)));

/// The calling thread's heap if it is ready (nothing borrows it), else
/// null; always null without the slot ([`HAS_SLOT`]).
#[inline(always)]
pub(super) fn ready_heap() -> *mut Heap {
    slot::get()
}

/// Marks the calling thread's heap ready at `heap`.
pub(super) fn set_ready(heap: &mut Heap) {
    slot::set(heap);
}

/// Marks the calling thread's heap not ready (busy, gone, or none).
#[inline(always)]
pub(super) fn clear_ready() {
    slot::set(ptr::null_mut());
}
