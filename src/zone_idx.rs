//! Zone indices.

/// The most zones an arena may have: the head word's zone bits hold a
/// zone's index.
pub const MAX_ZONES: usize = 64;

/// A zone's index in its node (the kernel's `zone_idx`): below
/// [`MAX_ZONES`], checked where one is made, so that it packs into a head
/// word's zone bits and indexes per-zone tables; never mixed up with a
/// page count, an order or a migratetype.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub(crate) struct ZoneIdx(u8);

impl ZoneIdx {
    /// Zone `index`, if it is below [`MAX_ZONES`].
    #[inline(always)]
    pub(crate) const fn new(index: usize) -> Option<Self> {
        if index < MAX_ZONES { Some(Self(index as u8)) } else { None }
    }

    /// Zone `index` of the head word's zone bits, which hold at most
    /// `MAX_ZONES - 1`.
    #[inline(always)]
    pub(crate) const fn from_bits(bits: u8) -> Self {
        Self(bits & (MAX_ZONES - 1) as u8)
    }

    /// The index, for per-zone tables.
    #[inline(always)]
    pub(crate) const fn index(self) -> usize {
        self.0 as usize
    }
}

impl std::fmt::Display for ZoneIdx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}
