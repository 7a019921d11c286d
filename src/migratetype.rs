//! Migratetypes: how movable a block's contents are, the kernel's
//! `enum migratetype`, and the `fallbacks` table of `__rmqueue_fallback`.
//!
//! Every pageblock has a type (the buddy's pageblock table, `pageblock.rs`),
//! free blocks sit on the list of their pageblock's type, and an allocation
//! takes from the lists of its own type first. Unmovable memory then stays
//! grouped in few pageblocks, and the rest can be freed (or moved) back into
//! whole high-order blocks: Mel Gorman's grouping by mobility.

use crate::flags::AllocFlags;

/// How movable a block's contents are; chosen by the allocation's flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Migratetype {
    /// No mobility flag: the block stays where it is until freed.
    Unmovable = 0,
    /// [`AllocFlags::MOVABLE`]: its owner can move it (or it is freed soon).
    Movable = 1,
    /// [`AllocFlags::RECLAIMABLE`]: a shrinker can free it on demand.
    Reclaimable = 2,
    /// A pageblock set aside for high-order `ATOMIC` requests
    /// (`reserve_highatomic_pageblock`); never asked for by flags.
    HighAtomic = 3,
}

/// Number of migratetypes.
pub const NR_MIGRATETYPES: usize = 4;

/// `AllocFlags` bits that choose the type: `(bits >> MOBILITY_SHIFT) & 3`
/// is the type's number, 3 (both flags) being invalid.
pub(crate) const MOBILITY_SHIFT: u32 = 8;
const _: () = assert!(AllocFlags::MOVABLE.bits() == 1 << MOBILITY_SHIFT);
const _: () = assert!(AllocFlags::RECLAIMABLE.bits() == 2 << MOBILITY_SHIFT);

/// Both mobility flags at once: a request that is refused.
pub(crate) const MOBILITY_BOTH: u32 = AllocFlags::MOVABLE.bits() | AllocFlags::RECLAIMABLE.bits();

impl Migratetype {
    /// Every type, in the kernel's order.
    pub const ALL: [Migratetype; NR_MIGRATETYPES] =
        [Self::Unmovable, Self::Movable, Self::Reclaimable, Self::HighAtomic];

    /// The kernel's short names, as `/proc/pagetypeinfo` prints them.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Unmovable => "Unmovable",
            Self::Movable => "Movable",
            Self::Reclaimable => "Reclaimable",
            Self::HighAtomic => "HighAtomic",
        }
    }

    /// The type's number, which indexes per-type tables (its `as u8`).
    #[inline(always)]
    pub(crate) const fn index(self) -> usize {
        self as usize
    }

    /// The type numbered `n` (its [`index`](Self::index)); numbers above
    /// 3 wrap.
    #[inline(always)]
    pub(crate) const fn from_index(n: usize) -> Self {
        match n & 3 {
            0 => Self::Unmovable,
            1 => Self::Movable,
            2 => Self::Reclaimable,
            _ => Self::HighAtomic,
        }
    }

    /// The type `flags` ask for (`gfp_migratetype`), `None` for both
    /// mobility flags at once. With grouping disabled
    /// (`page_group_by_mobility_disabled`) everything is unmovable.
    #[inline(always)]
    pub(crate) const fn from_flags(flags: AllocFlags, grouping: bool) -> Option<Self> {
        let bits = flags.bits() & MOBILITY_BOTH;
        if bits == MOBILITY_BOTH {
            return None;
        }
        if !grouping {
            return Some(Self::Unmovable);
        }
        Some(Self::from_index((bits >> MOBILITY_SHIFT) as usize))
    }

    /// The types an allocation of this type may steal from, in order
    /// (the kernel's `fallbacks[]`); none for `HighAtomic`.
    pub(crate) const fn fallbacks(self) -> &'static [Migratetype] {
        match self {
            Self::Unmovable => &[Self::Reclaimable, Self::Movable],
            Self::Movable => &[Self::Reclaimable, Self::Unmovable],
            Self::Reclaimable => &[Self::Unmovable, Self::Movable],
            Self::HighAtomic => &[],
        }
    }

    /// Whether free blocks of this type may merge with another type's
    /// across pageblocks (`migratetype_is_mergeable`): not a reserve.
    #[inline]
    pub(crate) const fn is_mergeable(self) -> bool {
        !matches!(self, Self::HighAtomic)
    }

    /// Whether two free buddies of at least pageblock order, on the lists
    /// of `self` and `other`, merge (`__free_one_page`): unless exactly one
    /// of them is the high-atomic reserve, whose pageblocks would otherwise
    /// leave it inside a block of another type (below pageblock order both
    /// halves are in one pageblock and always merge). The one rule both the
    /// free path and `check()` apply, so the reserve's unmerged buddies are
    /// the only ones `check()` accepts.
    #[inline]
    pub(crate) const fn merges_with(self, other: Self) -> bool {
        self as u8 == other as u8 || (self.is_mergeable() && other.is_mergeable())
    }
}

impl std::fmt::Display for Migratetype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_choose_the_type() {
        let t = |flags| Migratetype::from_flags(flags, true);
        assert_eq!(t(AllocFlags::empty()), Some(Migratetype::Unmovable));
        assert_eq!(t(AllocFlags::MOVABLE | AllocFlags::ZERO), Some(Migratetype::Movable));
        assert_eq!(t(AllocFlags::RECLAIMABLE | AllocFlags::ATOMIC), Some(Migratetype::Reclaimable));
        assert_eq!(t(AllocFlags::MOVABLE | AllocFlags::RECLAIMABLE), None);
        assert_eq!(Migratetype::from_flags(AllocFlags::MOVABLE, false), Some(Migratetype::Unmovable));
        assert_eq!(Migratetype::from_flags(AllocFlags::MOVABLE | AllocFlags::RECLAIMABLE, false), None);
        for mt in Migratetype::ALL {
            assert_eq!(Migratetype::from_index(mt.index()), mt);
            assert!(!mt.fallbacks().contains(&mt));
        }
    }
}
