//! [`AllocFlags`]: the kernel's `gfp_t` vocabulary for one allocation.

use std::fmt;
use std::ops::{BitAnd, BitOr, BitOrAssign};

/// How an allocation may behave, in the kernel's `gfp_t` vocabulary.
///
/// The default (no flags) is the kernel's `GFP_KERNEL`: the caller may wait,
/// and the allocator may reclaim on its behalf. Combine flags with `|`.
///
/// ```
/// use zonealloc::AllocFlags;
/// let flags = AllocFlags::ZERO | AllocFlags::NOWARN;
/// assert!(flags.contains(AllocFlags::ZERO));
/// assert!(!flags.contains(AllocFlags::ATOMIC));
/// assert_eq!(format!("{flags:?}"), "AllocFlags(ZERO | NOWARN)");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AllocFlags(u32);

impl AllocFlags {
    /// Zero the block before returning it (`__GFP_ZERO`). Blocks known to be
    /// zero (never touched, or purged with `MADV_DONTNEED`) are not written.
    pub const ZERO: Self = Self(1 << 0);
    /// May dip into half of the min-watermark reserve (`__GFP_HIGH`).
    pub const HIGH: Self = Self(1 << 1);
    /// Never blocks or reclaims; may dip into the reserve further than `HIGH`
    /// (`GFP_ATOMIC`: `HIGH` plus a further quarter of what is left).
    pub const ATOMIC: Self = Self(1 << 2);
    /// Never blocks or reclaims, and uses no reserve (`GFP_NOWAIT`).
    pub const NOWAIT: Self = Self(1 << 3);
    /// Fail after one round of reclaim instead of retrying (`__GFP_NORETRY`).
    pub const NORETRY: Self = Self(1 << 4);
    /// Retry costly orders (above 3) as well, but fail rather than call the
    /// OOM handler (`__GFP_RETRY_MAYFAIL`).
    pub const RETRY_MAYFAIL: Self = Self(1 << 5);
    /// Never fail: wait for reclaim to make progress (`__GFP_NOFAIL`).
    pub const NOFAIL: Self = Self(1 << 6);
    /// Do not print the allocation-failure warning (`__GFP_NOWARN`).
    pub const NOWARN: Self = Self(1 << 7);
    /// Mobility hint: the block's contents could be moved (`__GFP_MOVABLE`).
    pub const MOVABLE: Self = Self(1 << 8);
    /// Mobility hint: the block belongs to a cache that a shrinker can free
    /// (`__GFP_RECLAIMABLE`).
    pub const RECLAIMABLE: Self = Self(1 << 9);
    /// Only the NUMA node the allocation is meant for, never another
    /// (`__GFP_THISNODE`): fail rather than fall back.
    pub const THISNODE: Self = Self(1 << 10);

    const NAMES: [(Self, &'static str); 11] = [
        (Self::ZERO, "ZERO"),
        (Self::HIGH, "HIGH"),
        (Self::ATOMIC, "ATOMIC"),
        (Self::NOWAIT, "NOWAIT"),
        (Self::NORETRY, "NORETRY"),
        (Self::RETRY_MAYFAIL, "RETRY_MAYFAIL"),
        (Self::NOFAIL, "NOFAIL"),
        (Self::NOWARN, "NOWARN"),
        (Self::MOVABLE, "MOVABLE"),
        (Self::RECLAIMABLE, "RECLAIMABLE"),
        (Self::THISNODE, "THISNODE"),
    ];
    const ALL: u32 = (1 << 11) - 1;

    /// No flags: may wait and reclaim (`GFP_KERNEL`).
    pub const fn empty() -> Self {
        Self(0)
    }

    /// The raw bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Flags from raw bits; `None` if a bit has no meaning.
    pub const fn from_bits(bits: u32) -> Option<Self> {
        if bits & !Self::ALL == 0 { Some(Self(bits)) } else { None }
    }

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Both sets of flags.
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// These flags without those of `other`.
    pub const fn difference(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }

    /// Whether the caller may block and reclaim (`gfpflags_allow_blocking`).
    pub const fn may_wait(self) -> bool {
        self.0 & (Self::ATOMIC.0 | Self::NOWAIT.0) == 0
    }
}

impl BitOr for AllocFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        self.union(rhs)
    }
}

impl BitOrAssign for AllocFlags {
    fn bitor_assign(&mut self, rhs: Self) {
        *self = self.union(rhs);
    }
}

impl BitAnd for AllocFlags {
    type Output = Self;
    fn bitand(self, rhs: Self) -> Self {
        Self(self.0 & rhs.0)
    }
}

impl fmt::Debug for AllocFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AllocFlags(")?;
        let mut first = true;
        for (flag, name) in Self::NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str(" | ")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("empty")?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_round_trip_and_reject_unknown() {
        let f = AllocFlags::ATOMIC | AllocFlags::ZERO;
        assert_eq!(AllocFlags::from_bits(f.bits()), Some(f));
        assert_eq!(AllocFlags::from_bits(1 << 20), None);
        assert!(!f.may_wait());
        assert!(AllocFlags::empty().may_wait());
        assert!(!AllocFlags::NOWAIT.may_wait());
        assert_eq!(format!("{:?}", AllocFlags::empty()), "AllocFlags(empty)");
    }
}
