//! Objects as loom sees them. The slab layer never reads or writes an
//! object (its free state is a bitmap in the header), so in a real build
//! there is nothing here. Under loom, every hand-out and every free
//! touches a cell standing for the object, as the program around the
//! allocator does: a protocol that let an object be handed out while its
//! last user could still use it shows as a race on that cell. A free is a
//! read of the cell and a hand-out a write, so two frees of one object
//! (a double free, which the allocator must survive) do not race each
//! other, while a hand-out racing any free still does.

/// The memory objects live in, for [`touch`](Self::touch).
#[derive(Clone, Copy)]
pub(super) struct ObjectMemory {
    #[cfg(loom)]
    pub(super) region: *const crate::region::Region,
}

/// Which use of an object a touch stands for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Use {
    /// Its next user's, from a hand-out on.
    HandOut,
    /// The last user's, up to its free.
    Free,
}

impl ObjectMemory {
    /// Stands for a use of the object at `addr` by whoever holds it now:
    /// its last user before a free, its next one after a hand-out.
    ///
    /// # Safety
    /// `addr` is an object of a live slab of the region.
    #[inline(always)]
    pub(super) unsafe fn touch(self, addr: usize, usage: Use) {
        #[cfg(loom)]
        {
            // SAFETY: the caller's contract; the region outlives every slab map.
            let cell = unsafe { &*self.region }.object_cell(addr);
            match usage {
                Use::HandOut => cell.with_mut(|_| ()),
                Use::Free => cell.with(|_| ()),
            }
        }
        #[cfg(not(loom))]
        let _ = (addr, usage);
    }
}
