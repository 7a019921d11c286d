//! Size classes: the object sizes, the lookup from a request to its
//! class, and each class's slab geometry.

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

pub(super) const MIN_OBJECTS: usize = 8;

/// Objects a slab aims to hold, within [`SLAB_TARGET_MAX`] bytes: a slab
/// that runs dry after a few objects sends its thread to the ring walk
/// and the buddy allocator too often.
pub(super) const TARGET_OBJECTS: usize = 64;

/// The largest slab chosen for [`TARGET_OBJECTS`]: 32 KiB. A thread keeps
/// a slab of every class it uses, so a larger one holds more memory per
/// thread (halving it took a service's peak RSS down by a tenth,
/// BENCHMARKS.md, and costs slab turnover on one thread).
pub(super) const SLAB_TARGET_MAX: usize = 32 << 10;

/// Marks a slab header; the low byte holds the class. 31 bits, so that the
/// free path compares `key - class` with an immediate and needs no
/// register for the constant.
pub(super) const SLAB_MAGIC: u64 = 0x5a4f_4e00; // "ZON" + class

/// How many of a class's slabs an allocation looks through for freed
/// objects before it takes a new slab.
pub(super) const SCAN_LIMIT: usize = 8;

/// The class for `size` at an alignment of at most 16.
#[inline]
pub(super) const fn class_of_size(size: usize) -> usize {
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
pub(super) const CLASS_LOOKUP: [u8; SLAB_MAX / 8 + 1] = {
    let mut table = [0u8; SLAB_MAX / 8 + 1];
    let mut i = 0;
    while i < table.len() {
        table[i] = class_of_size(i * 8) as u8;
        assert!((table[i] as usize) < NR_CLASSES);
        i += 1;
    }
    table
};

/// The class serving `size` bytes at `align`, or `None` if the request
/// belongs to the buddy allocator.
///
/// ```
/// use zonealloc::{SIZE_CLASSES, class_of};
/// assert_eq!(class_of(100, 8).map(|c| c.size()), Some(112));
/// assert_eq!(class_of(100, 64).map(|c| c.size()), Some(128)); // aligned: a power of two
/// assert_eq!(class_of(100_000, 8), None);
/// ```
#[inline]
pub fn class_of(size: usize, align: usize) -> Option<SizeClass> {
    if align <= 16 {
        if size > SLAB_MAX {
            return None;
        }
        // Every size in (8 (i - 1), 8 i] has the class of 8 i (class
        // boundaries are multiples of 8), which also serves alignments up
        // to 8. At 16, i is rounded up to even: 8 i is then a multiple of
        // 16, and so is its class. (With a constant alignment, as C's
        // `malloc` has, this folds to one shift.)
        let i = if align == 16 { size.div_ceil(16) * 2 } else { size.div_ceil(8) };
        // SAFETY: i <= SLAB_MAX / 8 (size <= SLAB_MAX, a multiple of 16),
        // the table's last index; and every entry of the table is a class
        // (asserted where it is built). Said so that neither the table nor
        // a per-class array indexed by the result needs a bounds check on
        // the fast paths.
        let class = unsafe {
            std::hint::assert_unchecked(i < CLASS_LOOKUP.len());
            let class = CLASS_LOOKUP[i] as usize;
            std::hint::assert_unchecked(class < NR_CLASSES);
            class
        };
        return Some(SizeClass(class));
    }
    let size = size.max(align).next_power_of_two();
    if size <= SLAB_MAX { SizeClass::new(class_of_size(size)) } else { None }
}

impl std::fmt::Display for SizeClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} bytes)", self.0, self.size())
    }
}

/// A value per size class, indexed by [`SizeClass`] (no bounds check) or,
/// through the array it derefs to, by a plain index.
///
/// ```
/// use zonealloc::{ClassTable, SizeClass, class_of};
/// let sizes = ClassTable::from_fn(SizeClass::size);
/// assert_eq!(sizes[class_of(100, 8).unwrap()], 112);
/// assert_eq!((*sizes)[0], 16);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassTable<T>([T; NR_CLASSES]);

impl<T> ClassTable<T> {
    /// `f` of each class.
    pub fn from_fn(mut f: impl FnMut(SizeClass) -> T) -> Self {
        Self(std::array::from_fn(|i| f(SizeClass(i))))
    }
}

impl<T: Default> Default for ClassTable<T> {
    fn default() -> Self {
        Self::from_fn(|_| T::default())
    }
}

impl<T> std::ops::Index<SizeClass> for ClassTable<T> {
    type Output = T;

    #[inline(always)]
    fn index(&self, class: SizeClass) -> &T {
        &self.0[class.index()]
    }
}

impl<T> std::ops::IndexMut<SizeClass> for ClassTable<T> {
    #[inline(always)]
    fn index_mut(&mut self, class: SizeClass) -> &mut T {
        &mut self.0[class.index()]
    }
}

impl<T> std::ops::Deref for ClassTable<T> {
    type Target = [T; NR_CLASSES];

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// What the fast paths need to know of a class, in one 32-byte entry.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
pub(super) struct ClassInfo {
    pub(super) size: u32,
    /// Buddy order of a slab.
    pub(super) order: u32,
    pub(super) capacity: u32,
    /// `capacity * size`: every object starts below this offset.
    pub(super) limit: u32,
    /// `ceil(2^32 / size)`: for an offset below 2^16 (every slab is at
    /// most 64 KiB), `offset * div_magic` holds the quotient by `size` in
    /// its high 32 bits, and its low 32 bits are below `div_magic` exactly
    /// when the offset is a multiple of `size` (Lemire, Kaser and Kurz,
    /// "Faster remainder by direct computation"): one multiplication
    /// instead of a division on every free.
    pub(super) div_magic: u64,
    /// `!(slab bytes - 1)`: an offset in the region masked to the start
    /// of its slab-sized block, without a shift on the free path.
    pub(super) block_mask: usize,
}

pub(super) const CLASS_INFO: [ClassInfo; NR_CLASSES] = {
    pub(super) const fn min(a: usize, b: usize) -> usize {
        if a < b { a } else { b }
    }
    pub(super) const fn max(a: usize, b: usize) -> usize {
        if a > b { a } else { b }
    }
    let mut info = [ClassInfo { size: 0, order: 0, capacity: 0, limit: 0, div_magic: 0, block_mask: 0 }; NR_CLASSES];
    let mut class = 0;
    while class < NR_CLASSES {
        let size = SIZE_CLASSES[class];
        let bytes = max(min(size * TARGET_OBJECTS, SLAB_TARGET_MAX), size * MIN_OBJECTS);
        let order = bytes.div_ceil(crate::PAGE_SIZE).next_power_of_two().trailing_zeros();
        let capacity = (crate::PAGE_SIZE << order) / size;
        assert!(crate::PAGE_SIZE << order <= 1 << 16, "offsets in a slab fit 16 bits (see div_magic)");
        assert!(capacity <= super::MAX_OBJECTS, "a bit per object in the slab header's bitmaps");
        info[class] = ClassInfo {
            size: size as u32,
            order,
            capacity: capacity as u32,
            limit: (capacity * size) as u32,
            div_magic: (1u64 << 32).div_ceil(size as u64),
            block_mask: !((crate::PAGE_SIZE << order) - 1),
        };
        class += 1;
    }
    info
};

/// A size class: an index below [`NR_CLASSES`], checked where one is
/// made, so that per-class tables need no bounds check and no function
/// takes "a class below `NR_CLASSES`" as its caller's promise.
///
/// ```
/// use zonealloc::{NR_CLASSES, SizeClass};
/// assert_eq!(SizeClass::new(0).map(SizeClass::size), Some(16));
/// assert_eq!(SizeClass::new(NR_CLASSES), None);
/// assert_eq!(SizeClass::all().count(), NR_CLASSES);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
#[repr(transparent)]
pub struct SizeClass(usize);

impl SizeClass {
    /// The class of index `index`, if there is one.
    #[inline(always)]
    pub const fn new(index: usize) -> Option<Self> {
        if index < NR_CLASSES { Some(Self(index)) } else { None }
    }

    /// Every class, smallest first.
    pub fn all() -> impl Iterator<Item = Self> {
        (0..NR_CLASSES).map(Self)
    }

    /// The class's index into [`SIZE_CLASSES`] and per-class tables.
    #[inline(always)]
    pub const fn index(self) -> usize {
        // SAFETY: every constructor checks the bound; said so that tables
        // indexed by a class need no bounds check on the fast paths.
        unsafe { std::hint::assert_unchecked(self.0 < NR_CLASSES) };
        self.0
    }

    /// The size of the class's objects.
    #[inline(always)]
    pub const fn size(self) -> usize {
        CLASS_INFO[self.index()].size as usize
    }

    /// The buddy order of the class's slabs.
    #[inline(always)]
    pub(super) const fn slab_order(self) -> u32 {
        CLASS_INFO[self.index()].order
    }

    /// What the fast paths need to know of the class.
    #[inline(always)]
    pub(super) const fn info(self) -> &'static ClassInfo {
        &CLASS_INFO[self.index()]
    }
}
