//! A thread's own heap: its current slabs per class and the fast paths.

use std::ptr::{self, NonNull};

use crate::arena::Arena;
use crate::support::sync::Ordering;

use super::*;

/// One thread's slabs, per class. Not `Send`: it is the thread's own.
pub struct ThreadHeap<'a> {
    pub(super) arena: &'a Arena,
    pub(super) slabs: &'a Slabs,
    pub(super) map: SlabMap,
    pub(super) id: u64,
    /// Per class: the slab allocations come from (null when none), on a
    /// ring of the class's slabs that may have free objects.
    pub(super) current: [*mut Slab; NR_CLASSES],
    /// Per class: the slabs parked while full (off the ring, waiting for
    /// a notice), a list through `prev`/`next`, null-ended.
    pub(super) parked: [*mut Slab; NR_CLASSES],

    /// Objects taken minus objects freed since the last flush, per class.
    pub(super) delta: [isize; NR_CLASSES],
    /// Where other threads post notices of this heap's parked slabs;
    /// `None` (slabs are never parked) if no memory was left for one.
    pub(super) mail: Option<NonNull<Mailbox>>,
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
            parked: [ptr::null_mut(); NR_CLASSES],
            delta: [0; NR_CLASSES],
            mail: slabs.mailboxes.take(),
        }
    }

    /// The mailbox pointer slabs of this heap carry (null: none, never
    /// parked).
    fn mail_ptr(&self) -> *mut Mailbox {
        self.mail.map_or(ptr::null_mut(), NonNull::as_ptr)
    }

    /// An object of `class`, or `None` if the arena is out of memory.
    #[inline]
    pub fn alloc(&mut self, class: SizeClass) -> Option<NonNull<u8>> {
        self.alloc_cached(class).or_else(|| self.alloc_from_ring(class)).or_else(|| self.alloc_refill(class))
    }

    /// An object from the current slab of `class`, if it has one free
    /// without collecting remote frees: plain loads and stores, no call.
    /// `None` sends the caller to [`alloc`](Self::alloc).
    #[inline(always)]
    pub(crate) fn alloc_cached(&mut self, class: SizeClass) -> Option<NonNull<u8>> {
        let slab = self.current[class.index()];
        if slab.is_null() {
            return None;
        }
        // SAFETY: the current slab is live and ours.
        let object = unsafe { Slab::pop(slab, class, self.map.objects) }?;
        self.delta[class.index()] += 1;
        Some(object)
    }

    /// An object from the slabs this heap already has: the notices of its
    /// parked slabs first (their remote frees started), then the current
    /// slab's remote frees, then the ring's next slabs, one of which
    /// becomes current. A walk that finds an object within [`SCAN_LIMIT`]
    /// slabs parks nothing: a heap whose objects come and go one at a time
    /// (each free filling a hole of a full slab, each allocation taking it)
    /// walks past its few full slabs more cheaply than it would park them
    /// and take them back at every operation. One that does not parks
    /// those and goes on round the ring, parking every full slab it finds,
    /// until it finds an object or the ring is empty: so a slab with remote
    /// frees is found before a new slab is taken, however long the ring
    /// (each slab is parked once per fill, so the long walks cost little in
    /// all), unless a park is refused twice in one walk (a poster
    /// finishing: the walk does not wait) or the heap has no mailbox (the
    /// shared heap stops after [`SCAN_LIMIT`] slabs). A parked slab is off
    /// the ring until a remote free posts its notice or this heap frees
    /// into it. Takes no lock and never allocates (a double free it finds
    /// is reported with a line written from the stack), so it needs no
    /// protection against re-entry; `None` sends the caller on to a new
    /// slab.
    #[inline(never)]
    pub(crate) fn alloc_from_ring(&mut self, class: SizeClass) -> Option<NonNull<u8>> {
        // SAFETY: our mailbox, alive while we are.
        if self.mail.is_some_and(|mail| unsafe { mail.as_ref() }.has_mail()) {
            self.take_notices();
        }
        let mut full = [ptr::null_mut(); SCAN_LIMIT];
        let mut seen = 0;
        let mut found = None;
        let mut refused = false;
        let start = self.current[class.index()];
        loop {
            let slab = self.current[class.index()];
            if slab.is_null() {
                break;
            }
            // SAFETY: slabs on our ring are live and ours.
            unsafe {
                self.collect(class, slab);
                if let Some(object) = Slab::pop(slab, class, self.map.objects) {
                    self.delta[class.index()] += 1;
                    found = Some(object);
                    break;
                }
                if seen < SCAN_LIMIT {
                    full[seen] = slab;
                    seen += 1;
                    self.current[class.index()] = Slab::next(slab);
                    // Once round a short ring: each slab looked at (and so
                    // parked) once.
                    if self.current[class.index()] == start {
                        break;
                    }
                    continue;
                }
                if self.mail.is_none() {
                    break;
                }
                if seen == SCAN_LIMIT {
                    seen += 1;
                    self.park_full(class, &full);
                }
                // Refused when a remote free came since the collect (the
                // next look collects it) or the last notice's poster is
                // finishing: a second refusal ends the walk rather than
                // wait for that poster.
                if Slab::park(slab) {
                    self.unlink(class, slab);
                    self.push_parked(class, slab);
                } else if refused {
                    break;
                } else {
                    refused = true;
                }
            }
        }
        if found.is_none() && seen <= SCAN_LIMIT && self.mail.is_some() {
            self.park_full(class, &full[..seen]);
        }
        if self.delta[class.index()].unsigned_abs() >= FLUSH_BATCH {
            self.flush_class(class);
        }
        found
    }

    /// Collects the remote frees of `slab`, one of ours, and reports the
    /// double frees it finds (see the slab module's docs).
    ///
    /// # Safety
    /// `slab` is live and ours (or on an orphan list this thread holds).
    pub(super) unsafe fn collect(&mut self, class: SizeClass, slab: *mut Slab) {
        // SAFETY: the caller's contract.
        let got = unsafe { Slab::collect(slab) };
        if got.doubles > 0 {
            // Their freers counted them as freed: they were not.
            self.delta[class.index()] += got.doubles as isize;
            self.slabs.double_frees_found(class, got.doubles);
        }
    }

    /// An object from a slab this heap does not have yet: an adopted
    /// orphan, or a new slab from the buddy allocator (which may reclaim,
    /// and so run shrinkers that allocate). For when
    /// [`alloc_cached`](Self::alloc_cached) and
    /// [`alloc_from_ring`](Self::alloc_from_ring) found nothing.
    #[cold]
    #[inline(never)]
    pub(crate) fn alloc_refill(&mut self, class: SizeClass) -> Option<NonNull<u8>> {
        self.alloc_adopted(class).or_else(|| {
            let block = slab_block(self.arena, class)?;
            Some(self.install(class, block))
        })
    }

    /// An object from an orphan with free objects, which this heap adopts;
    /// `None` if there is none. Takes no lock but an orphan list's and
    /// never allocates.
    pub(super) fn alloc_adopted(&mut self, class: SizeClass) -> Option<NonNull<u8>> {
        let slab = self.adopt(class)?;
        self.link(class, slab);
        // Current before the pop: a slab on our ring must be reachable
        // from `current` whatever the pop finds.
        self.current[class.index()] = slab;
        // SAFETY: just linked: live and ours.
        let object = unsafe { Slab::pop(slab, class, self.map.objects) }?;
        self.delta[class.index()] += 1;
        self.flush_class(class);
        Some(object)
    }

    /// Makes `block` (from [`slab_block`] for `class`, over this heap's
    /// arena) a new slab of this heap, current for its class, and returns
    /// its first object.
    pub(super) fn install(&mut self, class: SizeClass, block: NonNull<u8>) -> NonNull<u8> {
        // SAFETY: the arena's blocks lie inside its region.
        let slab = unsafe { self.map.slot(block.as_ptr() as usize - self.map.region_base) };
        // SAFETY: the slot of a block we own (64-byte aligned and large
        // enough, asserted at compile time): its previous slab, if any,
        // was returned with every object back.
        unsafe { Slab::init(slab, class, block.as_ptr() as usize, self.id, self.mail_ptr()) };
        // SAFETY: the block is ours (above).
        unsafe {
            self.map.set_tail_keys(block.as_ptr() as usize - self.map.region_base, class.slab_order(), slab_key(class));
        }
        self.slabs.counters[class.index()].slabs.fetch_add(1, Ordering::Relaxed);
        self.link(class, slab);
        self.current[class.index()] = slab;
        // SAFETY: just linked: live and ours, every object free.
        let object = unsafe { Slab::pop(slab, class, self.map.objects) };
        self.delta[class.index()] += 1;
        self.flush_class(class);
        object.unwrap_or(block)
    }

    /// Takes an orphan of `class` with a free object, if one is among the
    /// first few on the list, and makes it ours. Full orphans examined on
    /// the way go to the back of the list, so the next look sees others.
    pub(super) fn adopt(&mut self, class: SizeClass) -> Option<*mut Slab> {
        let slab = {
            let mut list = self.slabs.orphans[class.index()].lock();
            let mut found = None;
            for _ in 0..SCAN_LIMIT {
                let slab = list.pop()?;
                // SAFETY: orphans are live, and owned by the list we hold:
                // we may collect their remote frees. Decided on the owner's
                // bitmap after the collect: `pending` may be spurious.
                let has_free = unsafe {
                    let got = Slab::collect(slab);
                    if got.doubles > 0 {
                        self.slabs.double_frees_found(class, got.doubles);
                        // Counted as freed by their freers, who were
                        // wrong; the orphan's count is the shared one.
                        self.slabs.counters[class.index()].objects.fetch_add(got.doubles, Ordering::Relaxed);
                    }
                    Slab::has_free(slab)
                };
                if has_free {
                    found = Some(slab);
                    break;
                }
                list.push_back(slab);
            }
            found?
        };
        self.slabs.counters[class.index()].orphans.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: unlinked under the lock: nobody else owns it now. Its
        // cells were published by the orphaning thread's unlock. Its
        // notices go to our mailbox from now on (an orphan is never parked).
        unsafe {
            (*slab).mail.store(self.mail_ptr(), Ordering::Relaxed);
            (*slab).owner.store(self.id, Ordering::Relaxed);
        }
        Some(slab)
    }

    /// Puts `slab` on the ring of `class`, last: just before the current
    /// slab, so the walks reach it after every slab already on the ring.
    /// The walks only move forward, so every slab on the ring is looked at
    /// within one round of it, however many come back meanwhile: one
    /// linked just after the current slab would be looked at before the
    /// older ones, and a heap whose slabs keep coming back (notices, local
    /// frees into parked slabs) would never get round to the older ones'
    /// remote frees.
    pub(super) fn link(&mut self, class: SizeClass, slab: *mut Slab) {
        let current = self.current[class.index()];
        // SAFETY: `slab` and the ring's slabs are live and ours.
        unsafe {
            if current.is_null() {
                set(&(*slab).prev, slab);
                set(&(*slab).next, slab);
            } else {
                let prev = get(&(*current).prev);
                set(&(*slab).prev, prev);
                set(&(*slab).next, current);
                set(&(*prev).next, slab);
                set(&(*current).prev, slab);
            }
        }
    }

    pub(super) fn unlink(&mut self, class: SizeClass, slab: *mut Slab) {
        // SAFETY: `slab` and its neighbours are live and ours.
        unsafe {
            let (prev, next) = (get(&(*slab).prev), get(&(*slab).next));
            set(&(*prev).next, next);
            set(&(*next).prev, prev);
            if self.current[class.index()] == slab {
                self.current[class.index()] = if next == slab { ptr::null_mut() } else { next };
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
    pub unsafe fn free(&mut self, ptr: NonNull<u8>, class: SizeClass) -> Result<(), SlabFreeError> {
        // SAFETY: the caller's contract is ours.
        if unsafe { self.free_cached(ptr.as_ptr(), class) } {
            return Ok(());
        }
        // SAFETY: as above.
        unsafe { self.free_slow(ptr, class) }
    }

    /// Frees `ptr`, an object of `class`, on its fast path: an object in
    /// use of one of this heap's own slabs that does not become empty by
    /// it (or is the current one), or of another heap's slab (or an
    /// orphan's), onto its remote bitmap. Returns `false`, having changed
    /// nothing, for everything else: a slab to release or take back from
    /// parking, a double free to report, a pointer to refuse.
    ///
    /// # Safety
    /// As for [`free`](Self::free).
    #[inline(always)]
    pub(crate) unsafe fn free_cached(&mut self, ptr: *mut u8, class: SizeClass) -> bool {
        let Ok((slab, bit)) = self.map.find(ptr, class) else { return false };
        // SAFETY: the caller's contract; `slab` is the live slab of `ptr`.
        unsafe { self.free_found(slab, bit, class) }
    }

    /// [`free_cached`](Self::free_cached) without the class: it comes from
    /// the side table ([`SlabMap::object_at`]). Null, like any pointer
    /// outside the region, is `false` (no test of its own: the region
    /// never starts at 0).
    ///
    /// # Safety
    /// As for [`free`](Self::free).
    #[cfg_attr(loom, allow(dead_code))]
    #[inline(always)]
    pub(crate) unsafe fn free_cached_unsized(&mut self, ptr: *mut u8) -> bool {
        // SAFETY: the caller's contract; `object_at` checked what `find`
        // checks but the header's key, which `free_found` checks for a
        // slab not ours (see `object_at`).
        self.map.object_at(ptr as usize).is_some_and(|(class, slab, bit)| unsafe { self.free_found(slab, bit, class) })
    }

    /// [`free_cached`](Self::free_cached) once the pointer is known to be
    /// an object boundary of a slab of `class` whose header is the slot
    /// `slab`: one lookup for both kinds of free, told apart by one
    /// compare of the owner. The header's key is checked only for a slab
    /// not ours (see [`SlabMap::object_at`]).
    ///
    /// # Safety
    /// As for [`free`](Self::free).
    #[inline(always)]
    unsafe fn free_found(&mut self, slab: *mut Slab, bit: ObjectBit, class: SizeClass) -> bool {
        // SAFETY: a slot of the side table, always readable; `owner` is
        // atomic. Only this thread ever stores its own id there, so a match
        // is never stale: the live slab of the pointer, and its cells are
        // ours.
        unsafe {
            if (*slab).owner.load(Ordering::Relaxed) != self.id {
                return self.free_remote_found(slab, bit, class);
            }
            if Slab::is_free(slab, bit) {
                return false;
            }
            let used = self.push_local(slab, bit, class);
            // A parked slab has a free object now, or an empty one (not
            // current) goes back: out of line, in one call last (a tail
            // call once inlined). Parked makes the count negative
            // (`USED_PARKED`), so the common case is one compare. The
            // count is published there, not on every free (see
            // `ClassStats::objects`).
            if (used as i32) <= 0 && (used != 0 || self.current[class.index()] != slab) {
                self.after_local_free(class, slab);
            }
        }
        true
    }

    /// What a local free of an object of `slab` may leave to do: a parked
    /// slab goes back onto the ring (its notice, if one is out, finds it
    /// there), an empty one back to the buddy allocator; and the count is
    /// published when due.
    ///
    /// `extern "C"` here and in [`free_remote_found`](Self::free_remote_found):
    /// such a function cannot unwind (a panic aborts, after the guard's
    /// line), so the free fast path that calls them needs no landing pad
    /// (and jumps to this one, its last step).
    #[cold]
    #[inline(never)]
    extern "C" fn after_local_free(&mut self, class: SizeClass, slab: *mut Slab) {
        let guard = crate::support::report::AbortOnUnwind;
        // SAFETY: ours.
        if unsafe { Slab::unpark(slab) } {
            self.remove_parked(class, slab);
            self.link(class, slab);
            if self.current[class.index()].is_null() {
                self.current[class.index()] = slab;
            }
        }
        self.release_if_empty(class, slab);
        if self.delta[class.index()] <= -(FLUSH_BATCH as isize) {
            self.flush_class(class);
        }
        guard.disarm();
    }

    /// The other half of [`free_found`](Self::free_found): an object of a
    /// slab this heap does not own, onto its remote bitmap, with no lock
    /// and nothing that may block or allocate. `false` for a double free
    /// or a header that is not the live slab's (the slow path reports
    /// them).
    ///
    /// # Safety
    /// `bit` is an object boundary of a slab of `class` whose header would
    /// be the slot `slab`, which this heap does not own.
    #[inline(never)]
    unsafe extern "C" fn free_remote_found(&mut self, slab: *mut Slab, bit: ObjectBit, class: SizeClass) -> bool {
        let guard = crate::support::report::AbortOnUnwind;
        // SAFETY: a slot is always readable and `key` is an atomic; with
        // the key, the caller's contract makes it the live slab of the
        // object.
        let freed = unsafe { (*slab).key.load(Ordering::Acquire) == slab_key(class) }
            && unsafe { self.push_remote_counted(slab, bit, class) }.is_ok();
        guard.disarm();
        freed
    }

    /// Frees the object at `bit` onto the remote bitmap of `slab` (see
    /// [`Slab::push_remote`]) and counts the free here, by the freeing
    /// heap: the owner's collect does not count it again.
    ///
    /// # Safety
    /// `bit` is an object of the live slab `slab` of `class`, which this
    /// heap does not own.
    #[inline(always)]
    unsafe fn push_remote_counted(
        &mut self,
        slab: *mut Slab,
        bit: ObjectBit,
        class: SizeClass,
    ) -> Result<(), SlabFreeError> {
        // SAFETY: the caller's contract.
        unsafe { Slab::push_remote(slab, bit, self.map.objects) }?;
        self.delta[class.index()] -= 1;
        if self.delta[class.index()] <= -(FLUSH_BATCH as isize) {
            self.flush_class(class);
        }
        Ok(())
    }

    /// Puts the object at `bit` back on its slab's bitmap and counts it.
    ///
    /// # Safety
    /// `slab` is a live slab of `class` owned by this heap and `bit` an
    /// object of it in use.
    #[inline(always)]
    pub(super) unsafe fn push_local(&mut self, slab: *mut Slab, bit: ObjectBit, class: SizeClass) -> u32 {
        self.delta[class.index()] -= 1;
        // SAFETY: per the contract, the slab's cells are ours.
        unsafe { Slab::push_local(slab, bit, self.map.objects) }
    }

    /// [`free`](Self::free) for what [`free_cached`](Self::free_cached)
    /// declined: another thread's object, a slab to release, a double
    /// free to report, a pointer to refuse.
    ///
    /// # Safety
    /// As for [`free`](Self::free).
    #[cold]
    #[inline(never)]
    pub(crate) unsafe fn free_slow(&mut self, ptr: NonNull<u8>, class: SizeClass) -> Result<(), SlabFreeError> {
        let (slab, bit) = self.map.find(ptr.as_ptr(), class)?;
        // SAFETY: a live slab (checked above); `owner` is atomic.
        if unsafe { (*slab).owner.load(Ordering::Relaxed) } != self.id {
            // Only this thread ever stores its own id, so a match cannot
            // be stale; anything else is another thread's or an orphan.
            // SAFETY: an object of a live slab we do not own.
            return unsafe { self.push_remote_counted(slab, bit, class) };
        }
        // SAFETY: the slab is ours: its cells too.
        unsafe {
            if Slab::is_free(slab, bit) {
                return Err(SlabFreeError::DoubleFree);
            }
            self.push_local(slab, bit, class);
        }
        self.after_local_free(class, slab);
        self.flush_class(class);
        Ok(())
    }

    /// Returns `slab`, one of ours on the ring, if every object is back,
    /// it is not current, and no notice of it is out.
    pub(super) fn release_if_empty(&mut self, class: SizeClass, slab: *mut Slab) {
        // SAFETY: ours, on the ring (so not parked: `releasable` may clear
        // the state's stale `PARKED`).
        if self.current[class.index()] != slab && unsafe { Slab::is_empty(slab) && Slab::releasable(slab) } {
            self.release(class, slab);
        }
    }

    /// Returns an empty slab of ours to the buddy allocator.
    pub(super) fn release(&mut self, class: SizeClass, slab: *mut Slab) {
        self.unlink(class, slab);
        // SAFETY: ours, empty (the callers checked), and now off our ring.
        unsafe { self.slabs.return_slab(self.arena, class, slab) };
    }

    /// Publishes this heap's object counts (see [`ClassStats::objects`]).
    pub fn flush(&mut self) {
        for class in SizeClass::all() {
            self.flush_class(class);
        }
    }

    /// Out of line: the fast paths that call it when a count reaches
    /// [`FLUSH_BATCH`] stay leaves.
    #[cold]
    #[inline(never)]
    pub(super) fn flush_class(&mut self, class: SizeClass) {
        let guard = crate::support::report::AbortOnUnwind;
        let delta = std::mem::take(&mut self.delta[class.index()]);
        let objects = &self.slabs.counters[class.index()].objects;
        if delta > 0 {
            objects.fetch_add(delta as usize, Ordering::Relaxed);
        } else if delta < 0 {
            objects.fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
        }
        guard.disarm();
    }
}

impl Drop for ThreadHeap<'_> {
    /// Thread exit: empty slabs go back to the buddy allocator, the rest
    /// become orphans for other threads to adopt, once every notice is
    /// stopped (`stop_notices`).
    fn drop(&mut self) {
        self.stop_notices();
        for class in SizeClass::all() {
            while let Some(slab) = NonNull::new(self.current[class.index()]) {
                let slab = slab.as_ptr();
                // SAFETY: ours.
                unsafe { self.collect(class, slab) };
                // SAFETY: ours.
                let empty = unsafe { Slab::is_empty(slab) };
                if empty {
                    self.release(class, slab);
                    continue;
                }
                self.unlink(class, slab);
                // SAFETY: ours until it is on the orphan list.
                unsafe { (*slab).owner.store(0, Ordering::Relaxed) };
                // The unlock publishes its cells to the adopter.
                self.slabs.orphans[class.index()].lock().push_back(slab);
                self.slabs.counters[class.index()].orphans.fetch_add(1, Ordering::Relaxed);
            }
            self.flush_class(class);
        }
        if let Some(mail) = self.mail.take() {
            self.slabs.mailboxes.give_back(mail);
        }
    }
}
