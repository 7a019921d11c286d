//! A heap's parked slabs, the owner's side of parking (the protocol is in
//! the slab module's docs and `header.rs`'s `state`): the list per class,
//! parking the slabs a ring walk found full, taking the notices other
//! threads post, and stopping every notice at exit.

use std::ptr::{self, NonNull};

use crate::support::sync::Ordering;

use super::*;

impl ThreadHeap<'_> {
    /// Parks the slabs a walk found full (see
    /// [`alloc_from_ring`](Self::alloc_from_ring)). A park refused because
    /// remote frees arrived meanwhile leaves the slab on the ring.
    #[cold]
    #[inline(never)]
    pub(super) fn park_full(&mut self, class: SizeClass, full: &[*mut Slab]) {
        for &slab in full {
            // SAFETY: ours, on the ring.
            if unsafe { Slab::park(slab) } {
                self.unlink(class, slab);
                self.push_parked(class, slab);
            }
        }
    }

    /// The class of `slab`, whose notice this heap took from its mailbox.
    /// A notice names a live slab of ours, or the protocol is broken (a
    /// slab returned or another heap's): one line and abort.
    ///
    /// # Safety
    /// `slab` is a side-table slot (always readable).
    unsafe fn noticed_class(&self, slab: *mut Slab) -> SizeClass {
        // SAFETY: the caller's contract; `key` and `owner` are atomics.
        let (key, owner) = unsafe { ((*slab).key.load(Ordering::Relaxed), (*slab).owner.load(Ordering::Relaxed)) };
        match class_of_key(key) {
            Some(class) if owner == self.id => class,
            _ => crate::support::report::fatal(format_args!("a notice for a slab its heap does not own")),
        }
    }

    /// Takes every notice from the mailbox: each slab still parked goes
    /// back from the parked list to its class's ring, last.
    #[cold]
    #[inline(never)]
    pub(super) fn take_notices(&mut self) {
        let Some(mail) = self.mail else { return };
        // SAFETY: our mailbox, alive while we are.
        let mut slab = unsafe { mail.as_ref() }.take();
        while !slab.is_null() {
            // SAFETY: a notice is only posted for a slab we parked, and we
            // do not return a slab while its notice is out or can still be
            // posted (`releasable`): live and ours. The link was written
            // before the post.
            unsafe {
                let next = (*slab).notice_next.load(Ordering::Relaxed);
                let class = self.noticed_class(slab);
                if Slab::take_notice(slab) {
                    self.remove_parked(class, slab);
                    self.link(class, slab);
                    if self.current[class.index()].is_null() {
                        self.current[class.index()] = slab;
                    }
                }
                slab = next;
            }
        }
    }

    /// Puts `slab`, just parked, on the parked list of `class`.
    pub(super) fn push_parked(&mut self, class: SizeClass, slab: *mut Slab) {
        let head = self.parked[class.index()];
        // SAFETY: `slab` and the list's slabs are live and ours.
        unsafe {
            set(&(*slab).prev, ptr::null_mut());
            set(&(*slab).next, head);
            if !head.is_null() {
                set(&(*head).prev, slab);
            }
        }
        self.parked[class.index()] = slab;
    }

    /// Takes `slab` off the parked list of `class`.
    pub(super) fn remove_parked(&mut self, class: SizeClass, slab: *mut Slab) {
        // SAFETY: `slab` and its neighbours on the list are live and ours.
        unsafe {
            let (prev, next) = (get(&(*slab).prev), get(&(*slab).next));
            if prev.is_null() {
                self.parked[class.index()] = next;
            } else {
                set(&(*prev).next, next);
            }
            if !next.is_null() {
                set(&(*next).prev, prev);
            }
        }
    }

    /// Thread exit, before the slabs are returned or orphaned: no notice
    /// of a slab of ours may be posted from now on, every parked slab is
    /// back on its ring, and the mailbox is drained, so that it can go
    /// back to the pool with nothing on its way to it.
    pub(super) fn stop_notices(&mut self) {
        let Some(mail) = self.mail else { return };
        for class in SizeClass::all() {
            while let Some(slab) = NonNull::new(self.parked[class.index()]) {
                let slab = slab.as_ptr();
                // SAFETY: ours, parked.
                unsafe { Slab::stop_notices(slab) };
                self.remove_parked(class, slab);
                self.link(class, slab);
                if self.current[class.index()].is_null() {
                    self.current[class.index()] = slab;
                }
            }
            // A slab taken back by a free of ours may still have a
            // notice on its way: wait until it has arrived.
            self.for_each_on_ring(class, |slab| {
                // SAFETY: ours.
                unsafe { Slab::stop_notices(slab) };
            });
        }
        // Nobody posts to the mailbox any more: every slab's notice
        // cleared, and the slabs are on their rings already.
        // SAFETY: our mailbox.
        let mut slab = unsafe { mail.as_ref() }.take();
        while !slab.is_null() {
            // SAFETY: ours, as in `take_notices`.
            unsafe {
                let next = (*slab).notice_next.load(Ordering::Relaxed);
                self.noticed_class(slab);
                Slab::take_notice(slab);
                slab = next;
            }
        }
    }

    /// Runs `f` on every slab of the ring of `class`.
    fn for_each_on_ring(&self, class: SizeClass, mut f: impl FnMut(*mut Slab)) {
        let first = self.current[class.index()];
        if first.is_null() {
            return;
        }
        let mut slab = first;
        loop {
            f(slab);
            // SAFETY: slabs on our ring are live and ours.
            slab = unsafe { Slab::next(slab) };
            if slab == first {
                return;
            }
        }
    }
}
