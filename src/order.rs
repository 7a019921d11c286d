//! Block orders.

/// The largest `max_order` supported: 2^20 pages = 4 GiB blocks.
pub const MAX_ORDER_LIMIT: u32 = 20;

/// Number of orders a zone can have lists for.
pub(crate) const NR_ORDERS: usize = MAX_ORDER_LIMIT as usize + 1;

/// A block's order: the log2 of its pages. Its own type, as [`Pfn`] is,
/// so that an order is never mixed up with a count of pages, a zone or a
/// migratetype: the conversions to pages, bytes and mask bits are spelled
/// out below. An order from a caller is checked against
/// [`MAX_ORDER_LIMIT`] where it becomes one ([`new`](Self::new)).
///
/// [`Pfn`]: crate::pfn::Pfn
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub(crate) struct Order(u8);

impl Order {
    /// Order 0: one page.
    pub(crate) const ZERO: Self = Self(0);

    /// Order `order`, if it is at most [`MAX_ORDER_LIMIT`].
    #[inline(always)]
    pub(crate) const fn new(order: u32) -> Option<Self> {
        if order <= MAX_ORDER_LIMIT { Some(Self(order as u8)) } else { None }
    }

    /// An order the allocator worked out itself (a head word's order byte,
    /// the top bit of a mask of orders, a list's place among the cached
    /// orders, an alignment bounded by a block): at most
    /// [`MAX_ORDER_LIMIT`] by construction. Not checked here: a corrupted
    /// head word is `Arena::check`'s to report, not a panic's.
    #[inline(always)]
    pub(crate) const fn from_bits(bits: u8) -> Self {
        Self(bits)
    }

    /// Order `n`, which a test names as a literal.
    #[cfg(test)]
    pub(crate) const fn of(n: u32) -> Self {
        match Self::new(n) {
            Some(order) => order,
            None => panic!("an order above MAX_ORDER_LIMIT"),
        }
    }

    /// The order as a number.
    #[inline(always)]
    pub(crate) const fn get(self) -> u32 {
        self.0 as u32
    }

    /// The order as an index of per-order tables.
    #[inline(always)]
    pub(crate) const fn index(self) -> usize {
        self.0 as usize
    }

    /// Pages in a block of this order.
    #[inline(always)]
    pub(crate) const fn pages(self) -> usize {
        1 << self.0
    }

    /// Bytes in a block of this order.
    #[inline(always)]
    pub(crate) const fn bytes(self) -> usize {
        crate::PAGE_SIZE << self.0
    }

    /// This order's bit in a mask of orders (bit `o` for order `o`).
    #[inline(always)]
    pub(crate) const fn bit(self) -> u32 {
        1 << self.0
    }

    /// The order `n` above this one.
    #[inline(always)]
    pub(crate) const fn up(self, n: u32) -> Self {
        debug_assert!(self.0 as u32 + n < 32);
        Self(self.0 + n as u8)
    }

    /// The order `n` below this one.
    #[inline(always)]
    pub(crate) const fn down(self, n: u32) -> Self {
        debug_assert!(self.0 as u32 >= n);
        Self(self.0 - n as u8)
    }

    /// The orders from `self` up to `end`, `end` left out, ascending.
    #[inline]
    pub(crate) fn until(self, end: Self) -> impl DoubleEndedIterator<Item = Self> + Clone {
        (self.0..end.0).map(Self)
    }

    /// The orders from `self` to `last`, both included, ascending.
    #[inline]
    pub(crate) fn through(self, last: Self) -> impl DoubleEndedIterator<Item = Self> + Clone {
        (self.0..=last.0).map(Self)
    }
}

impl std::fmt::Display for Order {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}
