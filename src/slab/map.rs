//! How a pointer is checked and turned into its slab (the side table),
//! and the cross-thread free.

use std::ptr::NonNull;

use crate::arena::Arena;
#[cfg(loom)]
use crate::support::sync::AtomicU64;
use crate::support::sync::Ordering;

use super::*;

/// Where slab headers are: the arena's region and its side table, copied
/// out of the arena so the free path reaches them without a pointer chase.
#[derive(Clone, Copy)]
pub(super) struct SlabMap {
    pub(super) region_base: usize,
    pub(super) region_len: usize,
    pub(super) table: *mut u8,
    pub(super) objects: ObjectMemory,
}

impl SlabMap {
    pub(super) fn of(arena: &Arena) -> Self {
        Self {
            region_base: arena.mapping().base().as_ptr() as usize,
            region_len: arena.mapping().len(),
            table: arena.side_table().start(),
            objects: ObjectMemory {
                #[cfg(loom)]
                region: arena.mapping(),
            },
        }
    }

    /// The header slot of the slab whose block starts `block` bytes into
    /// the region.
    ///
    /// # Safety
    /// `block` is below the region's length and a multiple of the page
    /// size.
    #[inline(always)]
    pub(super) unsafe fn slot(self, block: usize) -> *mut Slab {
        // SAFETY: the caller's contract.
        unsafe { self.geometry().slot(block) }
    }

    /// Finds and checks the slab `ptr` belongs to: the side-table slot of
    /// the block around it (at the class's slab order) must hold a live
    /// slab of the class, and `ptr` must be an object boundary inside it.
    /// Reads only the side table, never the block: a slot holds a key only
    /// while the slab layer owns the block it describes, so a live key
    /// also says the block is allocated, at the slab order. With the slab,
    /// the object's bit in its bitmaps.
    #[inline(always)]
    pub(super) fn find(self, ptr: *const u8, class: SizeClass) -> Result<(*mut Slab, ObjectBit), SlabFreeError> {
        // Null, like any address outside the region, fails the bounds test.
        let addr = ptr as usize;
        // The region is aligned to its largest block, so masking the
        // offset is masking the address.
        let offset_in_region = addr.wrapping_sub(self.region_base);
        let block = offset_in_region & class.info().block_mask;
        if offset_in_region >= self.region_len {
            return Err(SlabFreeError::NotAnObject);
        }
        let Some(bit) = object_bit(class, offset_in_region - block) else {
            return Err(SlabFreeError::NotAnObject);
        };
        // SAFETY: `block` is inside the region (checked above), and
        // aligned to the slab's size.
        let slab = unsafe { self.slot(block) };
        // SAFETY: a slot is always readable (zero until a slab starts
        // there); `key` is an atomic, so a racing change is well-defined.
        // `key - class == SLAB_MAGIC` is `key == slab_key(class)` (the
        // magic's low byte is zero, a class is below 256).
        if unsafe { (*slab).key.load(Ordering::Relaxed) }.wrapping_sub(class.index() as u64) != SLAB_MAGIC {
            return Err(SlabFreeError::NotAnObject);
        }
        Ok((slab, bit))
    }
}

/// The bit of the object at `offset` from the start of a slab of `class`,
/// if that is one of its object boundaries: below the last object's end
/// and a multiple of the size. One multiplication by
/// [`ClassInfo::div_magic`] gives both: its low 32 bits say whether the
/// offset is a multiple, its high bits are the quotient.
#[inline(always)]
pub(super) fn object_bit(class: SizeClass, offset: usize) -> Option<ObjectBit> {
    let info = class.info();
    let offset = offset as u64;
    // The caller's offset is masked to the slab (at most 64 KiB), so the
    // product fits 48 bits.
    if offset >= u64::from(info.limit) {
        return None;
    }
    let product = offset.wrapping_mul(info.div_magic);
    (u64::from(product as u32) < info.div_magic).then(|| ObjectBit::new((product >> 32) as usize))
}

/// The class of the live slab object at `ptr`, if it is one; see
/// [`SlabMap::class_at`].
#[cfg(not(loom))]
pub(crate) fn object_class(arena: &Arena, ptr: NonNull<u8>) -> Option<SizeClass> {
    SlabMap::of(arena).class_at(ptr).map(|(class, _, _)| class)
}

/// Where `arena`'s region and side table are.
#[cfg(not(loom))]
pub(crate) fn slab_geometry(arena: &Arena) -> SlabGeometry {
    SlabMap::of(arena).geometry()
}

impl SlabMap {
    /// The class of the live slab object at `ptr`, found from the pointer
    /// alone (for `free` without a size): the slot of `ptr`'s page holds
    /// the slab's key (every page of a slab carries it, see
    /// [`set_tail_keys`](Self::set_tail_keys)), the slot of the block
    /// around it at that class's order must hold the same key (the live
    /// header), and `ptr` must be one of its object boundaries. Reads only
    /// the side table, like [`find`](Self::find).
    #[inline(always)]
    #[cfg_attr(loom, allow(dead_code))]
    pub(super) fn class_at(self, ptr: NonNull<u8>) -> Option<(SizeClass, *mut Slab, ObjectBit)> {
        self.geometry().class_at(ptr)
    }

    /// [`class_at`](Self::class_at) without the header's key: the slab
    /// header the page's key points to, for a caller that checks it only
    /// when the slab is not its own. A live key read here (Acquire, against
    /// the Release that wrote it) means the header's fields are that
    /// slab's or later ones; and a thread reads its own id as the owner
    /// only of a slab it made and still owns, which its page keys name
    /// until it returns it. So a header found owned by the caller is the
    /// live slab of `ptr`, of the key's class, and any other needs the
    /// check.
    #[inline(always)]
    pub(super) fn object_at(self, addr: usize) -> Option<(SizeClass, *mut Slab, ObjectBit)> {
        let (class, _, block, bit) = self.geometry().page_class(addr)?;
        // SAFETY: a block of the region (`page_class` checked it).
        Some((class, unsafe { self.slot(block) }, bit))
    }

    /// Where the region and the side table are.
    #[inline(always)]
    pub(crate) fn geometry(self) -> SlabGeometry {
        SlabGeometry { region_base: self.region_base, region_len: self.region_len, table: self.table }
    }

    /// Writes `key` into the slots of the pages after the first of the
    /// slab block at `block` (bytes into the region) of `order`: the slab's
    /// key when it is made, 0 when it goes back, so that any page of a
    /// slab names its class ([`class_at`](Self::class_at)).
    ///
    /// # Safety
    /// The block is a slab's, owned by the caller (no other thread writes
    /// those slots), inside the region.
    pub(super) unsafe fn set_tail_keys(self, block: usize, order: u32, key: u64) {
        for page in 1..1usize << order {
            // SAFETY: a page of the caller's block; only its `key` is
            // written, the rest of a tail slot is never read. A slot reads
            // as zero until written, a valid atomic, and other threads may
            // read the key (`class_at` with a stale pointer): an atomic
            // store. Loom's atomics cannot come from zeroed memory: there
            // the key is constructed.
            unsafe {
                let slot = self.slot(block + (page << crate::PAGE_SHIFT));
                // Release: see `object_at`.
                #[cfg(not(loom))]
                (*slot).key.store(key, Ordering::Release);
                #[cfg(loom)]
                std::ptr::addr_of_mut!((*slot).key).write(AtomicU64::new(key));
            }
        }
    }
}

/// The addresses a pointer's class is found from: the region and the side
/// table. Fixed for an arena's life, so the global allocator keeps a copy
/// (for `malloc_usable_size`, which needs no thread state).
#[derive(Clone, Copy)]
pub(crate) struct SlabGeometry {
    pub(crate) region_base: usize,
    pub(crate) region_len: usize,
    pub(crate) table: *mut u8,
}

impl SlabGeometry {
    /// The class of the live slab object at `addr`, if it is one: as
    /// [`class_at`](Self::class_at) without the header's key, which only
    /// the free path needs (it goes on to the header anyway). A page's key
    /// is written when its slab is made and cleared when the slab goes
    /// back, before the block returns to the buddy allocator, so it names
    /// a live slab (or, to a dangling pointer only, one being returned);
    /// this reads one slot.
    #[cfg_attr(loom, allow(dead_code))]
    #[inline(always)]
    pub(crate) fn class_of_object(self, addr: usize) -> Option<SizeClass> {
        self.page_class(addr).map(|(class, _, _, _)| class)
    }

    /// The class the slot of `ptr`'s page names, with that slot's key, the
    /// offset in the region of the slab's block and the object's bit, if
    /// `ptr` is one of the slab's object boundaries.
    #[inline(always)]
    fn page_class(self, addr: usize) -> Option<(SizeClass, u64, usize, ObjectBit)> {
        let offset_in_region = addr.wrapping_sub(self.region_base);
        if offset_in_region >= self.region_len {
            return None;
        }
        // SAFETY: a page of the region (checked above); a slot is always
        // readable and `key` is an atomic.
        // Acquire: see `SlabMap::object_at`.
        let key = unsafe { (*self.slot(offset_in_region & !(crate::PAGE_SIZE - 1))).key.load(Ordering::Acquire) };
        let class = SizeClass::new((key ^ SLAB_MAGIC) as usize)?;
        let block = offset_in_region & class.info().block_mask;
        object_bit(class, offset_in_region - block).map(|bit| (class, key, block, bit))
    }

    /// See [`SlabMap::class_at`].
    #[inline(always)]
    #[cfg_attr(loom, allow(dead_code))]
    pub(super) fn class_at(self, ptr: NonNull<u8>) -> Option<(SizeClass, *mut Slab, ObjectBit)> {
        let (class, key, block, bit) = self.page_class(ptr.as_ptr() as usize)?;
        // SAFETY: a block of the region (`page_class` checked it).
        let slab = unsafe { self.slot(block) };
        // SAFETY: a slot is always readable and `key` is an atomic.
        (unsafe { (*slab).key.load(Ordering::Relaxed) } == key).then_some((class, slab, bit))
    }

    /// The header slot of the slab whose block starts `block` bytes into
    /// the region.
    ///
    /// # Safety
    /// `block` is below the region's length and a multiple of the page
    /// size.
    #[inline(always)]
    unsafe fn slot(self, block: usize) -> *mut Slab {
        // A page-aligned offset shifted right by this is its page's slot
        // offset: one shift, no mask.
        const SHIFT: u32 = crate::PAGE_SHIFT - crate::page::SIDE_SLOT_BYTES.trailing_zeros();
        const { assert!(crate::page::SIDE_SLOT_BYTES.is_power_of_two() && crate::page::SIDE_SLOT_BYTES <= crate::PAGE_SIZE) };
        debug_assert!(block.is_multiple_of(crate::PAGE_SIZE));
        // SAFETY: a page of the region (the caller's contract), and the
        // side table has a slot of SIDE_SLOT_BYTES for each.
        unsafe { self.table.add(block >> SHIFT) }.cast::<Slab>()
    }
}
