//! A model of the page API, shared by `tests/random_ops.rs` and the fuzz
//! target `fuzz/fuzz_targets/page_ops.rs`.
//!
//! The model is a bitmap of used pages per zone. With eager buddy merging an
//! order-k request can be served exactly when some zone has an aligned run
//! of 2^k free pages, so (with zero watermarks) the model predicts every
//! success and failure. Each block is filled with a byte that is checked at
//! free, so overlapping blocks or a block handed out twice show up.
//!
//! With per-thread caches, free pages may sit in a cache where the buddy
//! lists cannot merge them; the allocator's direct reclaim returns every
//! cache to the lists before it fails, so the model's predictions stay
//! exact. Free counts are checked as buddy free + cached.

use std::ptr::NonNull;

use zonealloc::{AllocError, AllocFlags, Arena, FreeError};

/// One operation on the arena.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
pub enum Op {
    /// Allocate a block of `order % (max_order + 2)` (one past the end tests
    /// the error); `growable` through `alloc_pages_growable`; `mobility % 4`
    /// picks no flag, `MOVABLE`, `RECLAIMABLE` or both (refused).
    Alloc { order: u8, zero: bool, growable: bool, mobility: u8 },
    /// Grow live block `index % live` in place by `1 + by % 3` orders.
    Grow { index: u16, by: u8 },
    /// Allocate `1 + pages % 2^max_order` pages with `alloc_pages_exact`.
    AllocExact { pages: u16 },
    /// Resize live exact allocation `index % (exact allocations live)` in
    /// place to `1 + pages % 2^max_order` pages.
    ResizeExact { index: u16, pages: u16 },
    /// Free live block `index % live`.
    Free { index: u16 },
    /// Free live block `index % live` wrongly (`kind` picks how); must be refused.
    FreeBad { index: u16, kind: u8 },
    /// Run `Arena::compact()`: no owner is registered, so nothing may move.
    Compact,
    /// Run `Arena::check()`.
    Check,
}

struct Live {
    ptr: NonNull<u8>,
    /// The block's order; for an exact allocation, of the smallest block
    /// holding its pages.
    order: u32,
    /// Pages of an exact allocation (`alloc_pages_exact`), `None` for a
    /// block.
    exact: Option<usize>,
    fill: u8,
}

impl Live {
    fn pages(&self) -> usize {
        self.exact.unwrap_or(1 << self.order)
    }
}

/// The arena under test and its model.
pub struct Harness {
    pub arena: Arena,
    base: usize,
    /// Per zone: (start pfn, page count).
    zones: Vec<(usize, usize)>,
    used: Vec<bool>,
    live: Vec<Live>,
    next_fill: u8,
    pub allocs: usize,
    pub failures: usize,
    /// Successful in-place growths.
    pub grown: usize,
    /// Exact allocations made and resized in place.
    pub exact: usize,
    pub resized: usize,
}

impl Harness {
    /// Wraps an arena built with zero watermarks.
    pub fn new(arena: Arena) -> Self {
        let stats = arena.stats();
        let zones: Vec<_> = stats.zones.iter().map(|z| (z.start_pfn, z.spanned)).collect();
        let pages = zones.iter().map(|z| z.1).sum();
        let base = arena.region().0.as_ptr() as usize;
        Self {
            arena,
            base,
            zones,
            used: vec![false; pages],
            live: Vec::new(),
            next_fill: 1,
            allocs: 0,
            failures: 0,
            grown: 0,
            exact: 0,
            resized: 0,
        }
    }

    fn can_allocate(&self, order: u32) -> bool {
        let size = 1usize << order;
        self.zones
            .iter()
            .any(|&(start, len)| (start..start + len).step_by(size).any(|p| self.used[p..p + size].iter().all(|u| !u)))
    }

    pub fn apply(&mut self, op: Op) {
        let max_order = self.arena.max_order();
        match op {
            Op::Alloc { order, zero, growable, mobility } => {
                let order = u32::from(order) % (max_order + 2);
                let mut flags = if zero { AllocFlags::ZERO | AllocFlags::NOWARN } else { AllocFlags::NOWARN };
                let conflicting = mobility % 4 == 3;
                if mobility & 1 != 0 {
                    flags |= AllocFlags::MOVABLE;
                }
                if mobility & 2 != 0 {
                    flags |= AllocFlags::RECLAIMABLE;
                }
                // Grouping by mobility changes where blocks come from, never
                // whether one is found: a fallback takes any free block.
                let expected = order <= max_order && self.can_allocate(order);
                let got = if growable {
                    self.arena.alloc_pages_growable(order, flags)
                } else {
                    self.arena.alloc_pages(order, flags)
                };
                match got {
                    Ok(ptr) => {
                        assert!(expected, "order-{order} allocation succeeded but the model has no room");
                        assert!(!conflicting, "MOVABLE | RECLAIMABLE was not refused");
                        self.take(ptr, order, None, zero);
                    }
                    Err(AllocError::InvalidOrder { order: o, max_order: m }) => {
                        assert!(order > max_order && o == order && m == max_order);
                    }
                    Err(AllocError::ConflictingMobility) => assert!(conflicting && order <= max_order),
                    Err(AllocError::OutOfMemory { order: o }) => {
                        assert_eq!(o, order);
                        assert!(!expected, "order-{order} allocation failed but the model has room");
                        self.failures += 1;
                    }
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
            Op::Free { index } => {
                if self.live.is_empty() {
                    return;
                }
                let live = self.live.swap_remove(usize::from(index) % self.live.len());
                self.release(live);
            }
            Op::FreeBad { index, kind } => {
                if self.live.is_empty() {
                    return;
                }
                let live = &self.live[usize::from(index) % self.live.len()];
                if live.exact.is_some() {
                    return;
                }
                let addr = live.ptr.as_ptr() as usize;
                let (ptr, order, expected) = match kind % 4 {
                    0 => (addr + 64, live.order, FreeError::NotBlockStart { addr: addr + 64 }),
                    1 if live.order < max_order => (
                        addr,
                        live.order + 1,
                        FreeError::WrongOrder { addr, given: live.order + 1, actual: live.order },
                    ),
                    2 => (self.base - 4096, 0, FreeError::OutOfRegion { addr: self.base - 4096 }),
                    _ => (addr, max_order + 1, FreeError::InvalidOrder { order: max_order + 1, max_order }),
                };
                let free_before = self.free_pages();
                // SAFETY: the arena refuses these frees without touching the block.
                let got = unsafe { self.arena.free_pages(NonNull::new(ptr as *mut u8).unwrap(), order) };
                assert_eq!(got, Err(expected));
                assert_eq!(self.free_pages(), free_before, "a refused free changed the arena");
            }
            Op::Grow { index, by } => {
                if self.live.is_empty() {
                    return;
                }
                let i = usize::from(index) % self.live.len();
                if self.live[i].exact.is_some() {
                    return;
                }
                let (ptr, order) = (self.live[i].ptr, self.live[i].order);
                let new_order = order + 1 + u32::from(by % 3);
                let pfn = (ptr.as_ptr() as usize - self.base) / 4096;
                let (old_end, new_end) = (pfn + (1 << order), pfn + (1 << new_order));
                // Growth needs alignment and free pages above; free pages in
                // a cache or never used may still refuse it, so the model
                // predicts only the refusals.
                let possible = new_order <= max_order
                    && pfn.is_multiple_of(1 << new_order)
                    && self.zones.iter().any(|&(start, len)| start <= pfn && new_end <= start + len)
                    && self.used[old_end..new_end].iter().all(|u| !u);
                let free_before = self.free_pages();
                // A wrong order is never grown.
                assert!(!self.arena.try_grow_pages(ptr, order + 1, new_order.max(order + 2)));
                if self.arena.try_grow_pages(ptr, order, new_order) {
                    assert!(possible, "grew {pfn}+{order} to order {new_order} over pages the model has in use");
                    self.used[old_end..new_end].iter_mut().for_each(|u| *u = true);
                    let live = &mut self.live[i];
                    live.order = new_order;
                    // SAFETY: the block is ours and now `4096 << new_order` bytes.
                    unsafe { ptr.as_ptr().add((4096 << new_order) - 1).write(live.fill) };
                    assert_eq!(self.free_pages(), free_before - (new_end - old_end));
                    self.grown += 1;
                } else {
                    assert_eq!(self.free_pages(), free_before, "a refused growth changed the arena");
                }
            }
            Op::AllocExact { pages } => {
                let pages = 1 + usize::from(pages) % (1 << max_order);
                let order = pages.next_power_of_two().trailing_zeros();
                let expected = self.can_allocate(order);
                match self.arena.alloc_pages_exact(pages, AllocFlags::NOWARN) {
                    Ok(ptr) => {
                        assert!(expected, "{pages}-page allocation succeeded but the model has no room");
                        self.take(ptr, order, Some(pages), false);
                        self.exact += 1;
                    }
                    Err(AllocError::OutOfMemory { order: o }) => {
                        assert_eq!(o, order);
                        assert!(!expected, "{pages}-page allocation failed but the model has room");
                        self.failures += 1;
                    }
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
            Op::ResizeExact { index, pages } => {
                let exact: Vec<usize> = (0..self.live.len()).filter(|&i| self.live[i].exact.is_some()).collect();
                let Some(&i) = (!exact.is_empty()).then(|| &exact[usize::from(index) % exact.len()]) else { return };
                let Some(old) = self.live[i].exact else { return };
                let new = 1 + usize::from(pages) % (1 << max_order);
                let ptr = self.live[i].ptr;
                let pfn = (ptr.as_ptr() as usize - self.base) / 4096;
                // Growth needs free pages after it in its zone; free pages
                // in a cache or never used may still refuse it, so the
                // model predicts the refusals only.
                let possible = new <= old
                    || (self.zones.iter().any(|&(start, len)| start <= pfn && pfn + new <= start + len)
                        && self.used[pfn + old..pfn + new].iter().all(|u| !u));
                let free_before = self.free_pages();
                // A wrong count is refused.
                for wrong in [old - 1, old + 1] {
                    assert!(
                        wrong == 0 || !self.arena.resize_pages_exact(ptr, wrong, new),
                        "{old} pages taken as {wrong}"
                    );
                }
                if self.arena.resize_pages_exact(ptr, old, new) {
                    assert!(possible, "resized {pfn}+{old} to {new} pages over pages the model has in use");
                    if new < old {
                        self.used[pfn + new..pfn + old].iter_mut().for_each(|u| *u = false);
                    } else {
                        self.used[pfn + old..pfn + new].iter_mut().for_each(|u| *u = true);
                    }
                    let live = &mut self.live[i];
                    live.exact = Some(new);
                    live.order = new.next_power_of_two().trailing_zeros();
                    // SAFETY: the allocation is ours and now `new` pages.
                    unsafe {
                        ptr.as_ptr().write(live.fill);
                        ptr.as_ptr().add(new * 4096 - 1).write(live.fill);
                    }
                    assert_eq!(self.free_pages() as isize, free_before as isize + old as isize - new as isize);
                    self.resized += 1;
                } else {
                    assert!(new > old, "a shrink was refused");
                    assert_eq!(self.free_pages(), free_before, "a refused resize changed the arena");
                }
            }
            Op::Compact => {
                let report = self.arena.compact();
                assert_eq!((report.isolated, report.migrated_pages), (0, 0), "a block without an owner moved");
                self.check();
            }
            Op::Check => self.check(),
        }
    }

    fn take(&mut self, ptr: NonNull<u8>, order: u32, exact: Option<usize>, zero: bool) {
        let addr = ptr.as_ptr() as usize;
        assert_eq!(addr % (4096 << order), 0, "order-{order} block at {addr:#x} is not naturally aligned");
        let pages = exact.unwrap_or(1 << order);
        let size = 4096 * pages;
        let pfn = (addr - self.base) / 4096;
        assert!(pfn + pages <= self.used.len(), "block outside the region");
        for used in &mut self.used[pfn..pfn + pages] {
            assert!(!*used, "page {pfn} handed out twice");
            *used = true;
        }
        // SAFETY: the block is ours, `size` bytes long.
        let bytes = unsafe { std::slice::from_raw_parts_mut(ptr.as_ptr(), size) };
        if zero {
            assert!(bytes.iter().all(|&b| b == 0), "ZERO block is not zero");
        }
        let fill = self.next_fill;
        self.next_fill = self.next_fill.wrapping_add(1).max(1);
        bytes[0] = fill;
        bytes[size - 1] = fill;
        self.live.push(Live { ptr, order, exact, fill });
        self.allocs += 1;
    }

    fn release(&mut self, live: Live) {
        let pages = live.pages();
        // SAFETY: still ours until the free below.
        let (first, last) = unsafe { (*live.ptr.as_ptr(), *live.ptr.as_ptr().add(pages * 4096 - 1)) };
        assert_eq!((first, last), (live.fill, live.fill), "block contents changed while it was live");
        // SAFETY: allocated from this arena with this order or count, not
        // used again; the second free of each is refused without touching it.
        let again = unsafe {
            match live.exact {
                Some(pages) => {
                    for wrong in [pages - 1, pages + 1] {
                        if wrong > 0 {
                            let refused = self.arena.free_pages_exact(live.ptr, wrong);
                            assert!(refused.is_err(), "{pages} pages freed as {wrong}");
                        }
                    }
                    if !pages.is_power_of_two() {
                        let as_block = self.arena.free_pages(live.ptr, live.order - 1);
                        assert_eq!(as_block, Err(FreeError::WrongSize { addr: live.ptr.as_ptr() as usize }));
                    }
                    self.arena.free_pages_exact(live.ptr, pages).expect("valid free");
                    self.arena.free_pages_exact(live.ptr, pages)
                }
                None => {
                    self.arena.free_pages(live.ptr, live.order).expect("valid free");
                    self.arena.free_pages(live.ptr, live.order)
                }
            }
        };
        let pfn = (live.ptr.as_ptr() as usize - self.base) / 4096;
        self.used[pfn..pfn + pages].iter_mut().for_each(|u| *u = false);
        assert_eq!(again, Err(FreeError::DoubleFree { addr: live.ptr.as_ptr() as usize }));
    }

    /// Free pages per the arena's stats: in the buddy lists or a cache.
    pub fn free_pages(&self) -> usize {
        self.arena.stats().zones.iter().map(|z| z.free + z.cached).sum()
    }

    /// `check()` plus exact agreement of every zone's free count with the model.
    pub fn check(&self) {
        self.arena.check().unwrap_or_else(|e| panic!("check failed: {e}"));
        for (z, stats) in self.arena.stats().zones.iter().enumerate() {
            let (start, len) = self.zones[z];
            let model_free = self.used[start..start + len].iter().filter(|u| !**u).count();
            assert_eq!(stats.free + stats.cached, model_free, "zone {z}: free pages disagree with the model");
        }
    }

    /// Frees everything and checks the arena is back to whole max-order blocks.
    pub fn finish(mut self) {
        self.check();
        while let Some(live) = self.live.pop() {
            self.release(live);
        }
        self.arena.drain_pcp();
        self.check();
        let max_order = self.arena.max_order();
        for z in self.arena.stats().zones {
            let mut expected = vec![0; max_order as usize + 1];
            expected[max_order as usize] = z.spanned >> max_order;
            assert_eq!(z.free_blocks, expected, "zone {}: did not coalesce back", z.zone);
        }
    }
}
