//! A heap's mailbox: where other threads' frees post notices of the
//! heap's parked slabs (a stack of slabs pushed by any thread, taken whole
//! by the owner), and the pool the mailboxes come from.
//!
//! A mailbox must stay at its address while any slab can name it, and a
//! heap may move (a [`ThreadHeap`] is a value): so mailboxes live in
//! chunks that are never freed, handed to heaps from a pool in
//! [`Slabs`](super::Slabs) and given back when a heap is dropped, once
//! its exit has stopped every notice (`Slab::stop_notices`) and drained
//! the mailbox: a recycled mailbox never receives a notice meant for its
//! previous heap.

use std::ptr::{self, NonNull};

use crate::support::boot::SysBox;
use crate::support::sync::{AtomicPtr, Mutex, Ordering};

use super::*;

/// One heap's mailbox, a cache line of its own (the posters of one heap
/// do not slow another's).
#[repr(C, align(64))]
pub(super) struct Mailbox {
    head: AtomicPtr<Slab>,
    /// The next free mailbox while in the pool.
    next_free: AtomicPtr<Mailbox>,
}

impl Mailbox {
    fn new() -> Self {
        Self { head: AtomicPtr::new(ptr::null_mut()), next_free: AtomicPtr::new(ptr::null_mut()) }
    }

    /// Posts the notice of `slab`.
    ///
    /// # Safety
    /// `slab` is live and its poster holds its `NOTICED` (no other notice
    /// of it is posted until the owner takes this one).
    pub(super) unsafe fn post(&self, slab: *mut Slab) {
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            // SAFETY: the caller's contract: only this poster writes the link.
            unsafe { (*slab).notice_next.store(head, Ordering::Relaxed) };
            // Release: the link is there for the owner's take.
            match self.head.compare_exchange_weak(head, slab, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return,
                Err(now) => head = now,
            }
            crate::support::sync::spin_loop();
        }
    }

    /// Whether notices are waiting (a peek for the owner's slow path).
    #[inline]
    pub(super) fn has_mail(&self) -> bool {
        !self.head.load(Ordering::Relaxed).is_null()
    }

    /// A mailbox in the pool holds no notice: one would be a slab of a
    /// heap that is gone, delivered to the next (the exit protocol of
    /// `ThreadHeap::drop` rules it out).
    fn assert_empty(&self) {
        if self.has_mail() {
            crate::support::report::fatal(format_args!("a notice reached the mailbox of a heap that is gone"));
        }
    }

    /// Takes every notice: the first of a chain linked by `notice_next`.
    pub(super) fn take(&self) -> *mut Slab {
        // Acquire: the posters' links.
        self.head.swap(ptr::null_mut(), Ordering::Acquire)
    }
}

/// Mailboxes for heaps: chunks that are never freed, and a list of the
/// ones no heap holds.
pub(super) struct MailboxPool {
    free: Mutex<*mut Mailbox>,
}

// SAFETY: the list is only followed under its lock, and the mailboxes it
// links live for the life of the process (chunks are never freed).
unsafe impl Send for MailboxPool {}
// SAFETY: as above.
unsafe impl Sync for MailboxPool {}

/// Mailboxes per chunk taken from the allocator beneath the arena (one
/// page; a few under loom, which models every atomic of them).
const CHUNK: usize = if cfg!(loom) { 2 } else { crate::PAGE_SIZE / std::mem::size_of::<Mailbox>() };

impl MailboxPool {
    crate::support::sync::const_fn_unless_loom! {
        pub(super) fn new() -> Self {
            Self { free: Mutex::new(ptr::null_mut()) }
        }
    }

    /// A mailbox for a new heap, empty; `None` if no memory is left for a
    /// chunk.
    pub(super) fn take(&self) -> Option<NonNull<Mailbox>> {
        let mut free = self.free.lock();
        if free.is_null() {
            let chunk = SysBox::try_from_fn(CHUNK, |_| Ok::<_, ()>(Mailbox::new())).ok()??;
            // Never freed: a mailbox stays where slabs may name it. Only
            // shared references are made to it (its fields are atomics).
            let first = chunk.as_ptr().cast_mut();
            std::mem::forget(chunk);
            for i in 0..CHUNK {
                // SAFETY: inside the chunk just made, nobody else has it.
                unsafe {
                    let next = if i + 1 < CHUNK { first.add(i + 1) } else { ptr::null_mut() };
                    (*first.add(i)).next_free.store(next, Ordering::Relaxed);
                }
            }
            *free = first;
        }
        let mailbox = NonNull::new(*free)?;
        // SAFETY: on the list, so live and nobody's.
        let mailbox_ref = unsafe { mailbox.as_ref() };
        *free = mailbox_ref.next_free.load(Ordering::Relaxed);
        mailbox_ref.assert_empty();
        Some(mailbox)
    }

    /// Takes back the mailbox of a dropped heap, emptied and with no
    /// notice on its way to it.
    pub(super) fn give_back(&self, mailbox: NonNull<Mailbox>) {
        let mut free = self.free.lock();
        // SAFETY: the heap that held it is gone; nobody posts to it.
        let mailbox_ref = unsafe { mailbox.as_ref() };
        mailbox_ref.assert_empty();
        mailbox_ref.next_free.store(*free, Ordering::Relaxed);
        *free = mailbox.as_ptr();
    }

    /// The pool's lock, held across `fork(2)`.
    #[cfg_attr(loom, allow(dead_code))]
    pub(super) fn lock_for_fork(&self) -> crate::support::sync::MutexGuard<'_, *mut Mailbox> {
        self.free.lock()
    }
}
