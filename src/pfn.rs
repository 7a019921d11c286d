//! Page frame numbers.

use crate::order::Order;

/// A page frame number: the index of a 4 KiB page inside the region.
///
/// Its own type so that a page number is never mixed up with a count of
/// pages, an order or a byte address: the arithmetic the buddy system
/// needs is spelled out below, and a distance between two pfns is a
/// `usize` count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub(crate) struct Pfn(u32);

/// The end-of-list marker for free-list links.
pub(crate) const NIL: Pfn = Pfn(u32::MAX);

impl Pfn {
    /// The pfn of page `index` of the region (which has fewer than 2^32 pages).
    #[inline(always)]
    pub(crate) const fn new(index: usize) -> Self {
        debug_assert!(index < u32::MAX as usize);
        Self(index as u32)
    }

    /// The page's index in the region, for the metadata arrays.
    #[inline(always)]
    pub(crate) const fn index(self) -> usize {
        self.0 as usize
    }

    /// The 32-bit form kept in the metadata's links.
    #[inline(always)]
    pub(crate) const fn raw(self) -> u32 {
        self.0
    }

    #[inline(always)]
    pub(crate) const fn from_raw(raw: u32) -> Self {
        Self(raw)
    }

    /// The buddy of the order-`order` block at `self`: the block it merges with.
    #[inline(always)]
    pub(crate) const fn buddy(self, order: Order) -> Self {
        Self(self.0 ^ order.bit())
    }

    /// Whether a block of `order` may start here.
    #[inline(always)]
    pub(crate) const fn is_aligned(self, order: Order) -> bool {
        self.0.trailing_zeros() >= order.get()
    }

    /// The start of the order-`order` block around `self`.
    #[inline(always)]
    pub(crate) const fn align_down(self, order: Order) -> Self {
        Self(self.0 & !(order.bit() - 1))
    }

    /// The largest order a block starting here may have.
    #[inline(always)]
    pub(crate) const fn alignment(self) -> u32 {
        self.0.trailing_zeros()
    }
}

impl std::ops::Add<usize> for Pfn {
    type Output = Pfn;

    #[inline(always)]
    fn add(self, pages: usize) -> Pfn {
        Pfn::new(self.index() + pages)
    }
}

impl std::ops::AddAssign<usize> for Pfn {
    #[inline(always)]
    fn add_assign(&mut self, pages: usize) {
        *self = *self + pages;
    }
}

impl std::ops::Sub<usize> for Pfn {
    type Output = Pfn;

    #[inline(always)]
    fn sub(self, pages: usize) -> Pfn {
        Pfn::new(self.index() - pages)
    }
}

/// The pages from `rhs` to `self`.
impl std::ops::Sub<Pfn> for Pfn {
    type Output = usize;

    #[inline(always)]
    fn sub(self, rhs: Pfn) -> usize {
        self.index() - rhs.index()
    }
}

impl std::fmt::Display for Pfn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The naturally aligned blocks that tile pages `start..end` of a range
/// whose first page is aligned to at least the largest of them, as
/// `(offset, order)` in address order: each as large as its alignment and
/// the pages left allow. `0..n` gives the descending powers of two in `n`;
/// `n..2^k` gives what trimming an order-`k` block to `n` pages frees.
pub(crate) fn tile(start: Pfn, end: Pfn) -> impl Iterator<Item = (Pfn, Order)> {
    let mut pos = start;
    std::iter::from_fn(move || {
        if pos >= end {
            return None;
        }
        // At most log2 of the region's pages, below 32.
        let order = Order::from_bits(pos.alignment().min((end - pos).ilog2()) as u8);
        let piece = (pos, order);
        pos += order.pages();
        Some(piece)
    })
}

/// The order of `start..end` if that range is one naturally aligned block
/// (then an allocation of it is a plain block, not tiles).
pub(crate) fn single_tile(start: Pfn, end: Pfn) -> Option<Order> {
    let pages = end - start;
    let order = Order::from_bits(pages.trailing_zeros() as u8);
    (pages.is_power_of_two() && start.is_aligned(order)).then_some(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `tile` over plain page indices.
    fn tiles(start: usize, end: usize) -> Vec<(usize, u32)> {
        tile(Pfn::new(start), Pfn::new(end)).map(|(pfn, order)| (pfn.index(), order.get())).collect()
    }

    fn order(o: u32) -> Order {
        Order::new(o).unwrap()
    }

    #[test]
    fn tiles_are_aligned_maximal_and_cover_the_range() {
        assert_eq!(tiles(0, 150), [(0, 7), (128, 4), (144, 2), (148, 1)]);
        assert_eq!(tiles(150, 256), [(150, 1), (152, 3), (160, 5), (192, 6)]);
        assert_eq!(tiles(0, 64), [(0, 6)]);
        assert_eq!(tiles(5, 5).len(), 0);
        let single = |start, end| single_tile(Pfn::new(start), Pfn::new(end)).map(Order::get);
        assert_eq!((single(64, 128), single(64, 96), single(32, 96), single(3, 4)), (Some(6), Some(5), None, Some(0)));
        for start in 0..70 {
            for end in start..140 {
                let mut next = start;
                for (offset, order) in tiles(start, end) {
                    assert_eq!(offset, next, "{start}..{end}: a gap");
                    assert!(offset.is_multiple_of(1 << order), "{start}..{end}: misaligned");
                    next = offset + (1 << order);
                }
                assert_eq!(next, end, "{start}..{end}: not covered");
            }
        }
    }

    #[test]
    fn buddy_and_alignment_arithmetic() {
        let pfn = Pfn::new(0b1011_0000);
        assert_eq!(pfn.buddy(order(4)), Pfn::new(0b1010_0000));
        assert_eq!(pfn.buddy(order(5)), Pfn::new(0b1001_0000));
        assert!(pfn.is_aligned(order(4)) && !pfn.is_aligned(order(5)));
        assert_eq!(pfn.alignment(), 4);
        assert_eq!(Pfn::new(0b1011_0111).align_down(order(4)), pfn);
        assert_eq!((pfn + 16) - pfn, 16);
    }
}
