//! Free objects' two words (the link and the freed tag) and where they
//! live: in the objects, or under loom in cells loom tracks.

/// A freed object's first two words.
#[repr(C)]
pub(super) struct FreeObject {
    pub(super) next: *mut FreeObject,
    pub(super) tag: usize,
}

/// The key mixed into every freed tag, random per process (see the module
/// docs), 0 until the first heap or remote free needs it.
pub(super) static TAG_KEY: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The process's tag key, made on first use from the kernel's random
/// source (or, where that fails, the clock and an address).
pub(super) fn tag_key() -> usize {
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
pub(super) struct ObjectWords {
    /// What a freed object's tag is mixed from.
    pub(super) key: usize,
    #[cfg(loom)]
    pub(super) region: *const crate::region::Region,
}

impl ObjectWords {
    #[inline(always)]
    pub(super) fn freed_tag(self, object: *mut FreeObject) -> usize {
        self.key ^ object as usize
    }

    /// # Safety
    /// `object` is an object of a live slab, at least 16 bytes, that no
    /// other thread writes now.
    #[inline(always)]
    pub(super) unsafe fn next(self, object: *mut FreeObject) -> *mut FreeObject {
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
    pub(super) unsafe fn set_next(self, object: *mut FreeObject, next: *mut FreeObject) {
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
    pub(super) unsafe fn tagged(self, object: *mut FreeObject) -> bool {
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
    pub(super) unsafe fn set_tag(self, object: *mut FreeObject, freed: bool) {
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
