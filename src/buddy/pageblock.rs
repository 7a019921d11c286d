//! The pageblock table of one zone: the migratetype of every pageblock,
//! kept out of band (the kernel's `pageblock_flags` bitmap, one byte here).
//!
//! A pageblock is an aligned run of `2^pageblock_order` pages (order 9,
//! 2 MiB, by default: a huge page). Free blocks below that order go on the
//! list of their pageblock's type; a free block of `pageblock_order` or
//! more has every pageblock it spans set to its list's type.
//!
//! The table lives inside the buddy state, behind the zone lock.

use crate::migratetype::Migratetype;
use crate::order::Order;
use crate::pfn::Pfn;
use crate::support::boot::SysBox;

/// The migratetype of each pageblock of a zone.
pub(crate) struct Pageblocks {
    order: Order,
    start: Pfn,
    types: SysBox<[u8]>,
}

impl Pageblocks {
    /// A table for the zone `start..end` with pageblocks of `order`, every
    /// one unmovable until a block is taken from it. `None` if the table's
    /// memory cannot be had.
    pub(crate) fn new(start: Pfn, end: Pfn, order: Order) -> Option<Self> {
        let nr = (end - start).div_ceil(order.pages());
        Some(Self { order, start, types: SysBox::try_new_zeroed_slice(nr)? })
    }

    /// `pageblock_order`.
    #[inline(always)]
    pub(crate) fn order(&self) -> Order {
        self.order
    }

    /// Pages in a pageblock.
    #[inline(always)]
    pub(crate) fn nr_pages(&self) -> usize {
        self.order.pages()
    }

    /// Number of pageblocks in the zone.
    pub(crate) fn len(&self) -> usize {
        self.types.len()
    }

    /// The pageblock that page `pfn` lies in, as an index.
    #[inline(always)]
    fn index(&self, pfn: Pfn) -> usize {
        (pfn - self.start) >> self.order.get()
    }

    /// The first page of pageblock `index`.
    pub(crate) fn start_of(&self, index: usize) -> Pfn {
        self.start + (index << self.order.get())
    }

    /// The type of the pageblock holding `pfn` (`get_pfnblock_migratetype`).
    #[inline(always)]
    pub(crate) fn get(&self, pfn: Pfn) -> Migratetype {
        Migratetype::from_index(usize::from(self.types[self.index(pfn)]))
    }

    /// The type of pageblock `index`.
    pub(crate) fn get_index(&self, index: usize) -> Migratetype {
        Migratetype::from_index(usize::from(self.types[index]))
    }

    /// Sets the type of the pageblock holding `pfn`
    /// (`set_pageblock_migratetype`).
    #[inline]
    pub(crate) fn set(&mut self, pfn: Pfn, mt: Migratetype) {
        let i = self.index(pfn);
        self.types[i] = mt as u8;
    }

    /// Sets the type of every pageblock the block `pfn`/`order` touches
    /// (`change_pageblock_range`): one when `order` is below
    /// `pageblock_order`.
    #[inline]
    pub(super) fn set_range(&mut self, pfn: Pfn, order: Order, mt: Migratetype) {
        let first = self.index(pfn);
        let n = 1usize << order.get().saturating_sub(self.order.get());
        self.types[first..first + n].fill(mt as u8);
    }
}
