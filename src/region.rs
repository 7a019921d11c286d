//! The region: one large anonymous mapping that all zones carve pages from.
//!
//! This is the user-space stand-in for physical memory. It is reserved with
//! `MAP_NORESERVE`, so nothing is committed up front and RSS follows the
//! pages actually touched, and it is aligned to the largest block so that a
//! block of order `k` is naturally aligned to `4 KiB << k`.
//!
//! Under `--cfg loom` the region is a small heap allocation instead: loom
//! models are a handful of pages.

use std::ptr::NonNull;

use crate::error::BuildError;
use crate::pfn::Pfn;
#[cfg(not(loom))]
use crate::support::sysfs;
use crate::{PAGE_SHIFT, PAGE_SIZE};

/// How the region is backed by huge pages.
///
/// ```
/// use zonealloc::{Arena, HugePages};
/// let arena = Arena::builder()
///     .region_size(64 << 20)
///     .huge_pages(HugePages::Transparent)
///     .build()
///     .unwrap();
/// # drop(arena);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HugePages {
    /// Base pages only; the kernel's THP policy decides (the default).
    #[default]
    None,
    /// Ask for transparent huge pages (`MADV_HUGEPAGE`) for the region.
    /// Free memory is then purged only in whole 2 MiB blocks, so a purge
    /// never splits a huge page (smaller free blocks stay resident until
    /// they merge; with a `max_order` below 9 nothing is purged). Costs
    /// nothing when THP is disabled on the machine or missing from the
    /// kernel.
    Transparent,
    /// Back the region with explicit 2 MiB huge pages (`MAP_HUGETLB`). The
    /// pages are reserved at `build()`, which fails with a message naming
    /// `/proc/sys/vm/nr_hugepages` when the system has too few of them.
    Explicit,
}

/// What the builder asks of the mapping.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RegionOptions {
    pub huge_pages: HugePages,
    pub prefault: bool,
    pub dont_dump: bool,
    pub dont_fork: bool,
}

const HUGE_PAGE_SIZE: usize = 2 << 20;

pub(crate) const HUGE_PAGE_ORDER: u32 = (HUGE_PAGE_SIZE / PAGE_SIZE).trailing_zeros();

/// How freed memory is handed back to the OS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PurgeAdvice {
    /// `MADV_DONTNEED`: the pages are dropped at once and read back as zeros,
    /// so a purged block needs no zeroing for
    /// [`AllocFlags::ZERO`](crate::AllocFlags::ZERO).
    #[default]
    DontNeed,
    /// `MADV_FREE`: cheaper; the kernel takes the pages only under memory
    /// pressure, so RSS falls later and purged blocks must still be zeroed.
    Free,
}

/// One reserved, max-order-aligned mapping.
#[repr(C)]
pub(crate) struct Region {
    base: NonNull<u8>,
    len: usize,
    #[cfg(not(loom))]
    _map: memmap2::MmapMut,
    #[cfg(loom)]
    layout: std::alloc::Layout,
    /// A loom cell per 16 bytes, standing for the slab object there
    /// (see `slab/object.rs`).
    #[cfg(loom)]
    words: Vec<loom::cell::UnsafeCell<()>>,
}

// SAFETY: the region is plain memory; who may touch which page is decided by
// the allocator's metadata, not by the Region value.
unsafe impl Send for Region {}
// SAFETY: as above; &Region hands out addresses, never references to contents.
unsafe impl Sync for Region {}

impl Region {
    /// Reserves `len` bytes aligned to `align` (both multiples of the page size,
    /// `align` a power of two).
    #[cfg(not(loom))]
    pub(crate) fn reserve(len: usize, align: usize, opts: RegionOptions) -> Result<Self, BuildError> {
        let system_page = page_size();
        if system_page != PAGE_SIZE {
            return Err(BuildError::UnsupportedPageSize { page_size: system_page });
        }
        // The kernel aligns a mapping to its page size; reserve the slack to
        // align it further. Untouched slack costs address space, not memory.
        let natural = if opts.huge_pages == HugePages::Explicit { HUGE_PAGE_SIZE } else { PAGE_SIZE };
        let slack = align.saturating_sub(natural);
        let total = len.checked_add(slack).ok_or(BuildError::RegionTooLarge { region_size: len })?;

        let mut options = memmap2::MmapOptions::new();
        options.len(total);
        match opts.huge_pages {
            // MAP_HUGETLB without MAP_NORESERVE: the kernel reserves the huge
            // pages now, so a shortage fails here and never as SIGBUS later.
            HugePages::Explicit => {
                options.huge(Some(HUGE_PAGE_SIZE.trailing_zeros() as u8));
            }
            HugePages::None | HugePages::Transparent => {
                options.no_reserve_swap();
            }
        }
        let map = options.map_anon().map_err(|source| match opts.huge_pages {
            HugePages::Explicit => BuildError::HugePagesUnavailable {
                needed: total.div_ceil(HUGE_PAGE_SIZE),
                free: free_huge_pages(),
                source,
            },
            _ => BuildError::Map { region_size: total, source },
        })?;

        let start = map.as_ptr() as usize;
        let aligned = start.next_multiple_of(align);
        let offset = aligned - start;
        // SAFETY: offset <= slack, so `offset..offset + len` lies inside the mapping.
        let base = unsafe { NonNull::new_unchecked(map.as_ptr().cast_mut().add(offset)) };
        let region = Self { _map: map, base, len };

        if opts.huge_pages == HugePages::Transparent {
            // Advice only: a kernel built without THP refuses it (EINVAL),
            // and the region works on base pages.
            let _ = region.advise(libc::MADV_HUGEPAGE, "MADV_HUGEPAGE");
        }
        if opts.dont_dump {
            region.advise(libc::MADV_DONTDUMP, "MADV_DONTDUMP")?;
        }
        if opts.dont_fork {
            region.advise(libc::MADV_DONTFORK, "MADV_DONTFORK")?;
        }
        if opts.prefault {
            region.prefault()?;
        }
        Ok(region)
    }

    #[cfg(loom)]
    pub(crate) fn reserve(len: usize, align: usize, _opts: RegionOptions) -> Result<Self, BuildError> {
        let layout = std::alloc::Layout::from_size_align(len, align)
            .map_err(|_| BuildError::RegionTooLarge { region_size: len })?;
        // SAFETY: the layout has a non-zero size (the builder rejects empty regions).
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        let base = NonNull::new(ptr).ok_or(BuildError::RegionTooLarge { region_size: len })?;
        let words = (0..len / 16).map(|_| loom::cell::UnsafeCell::new(())).collect();
        Ok(Self { layout, base, len, words })
    }

    /// The cell standing for the 16 bytes at `addr` (two objects of a slab
    /// are at least 16 bytes apart, so never share one).
    #[cfg(loom)]
    pub(crate) fn object_cell(&self, addr: usize) -> &loom::cell::UnsafeCell<()> {
        &self.words[(addr - self.base.as_ptr() as usize) / 16]
    }

    #[cfg(not(loom))]
    fn advise(&self, advice: libc::c_int, name: &'static str) -> Result<(), BuildError> {
        // SAFETY: the range is our own mapping; these advices change no contents.
        let rc = unsafe { libc::madvise(self.base.as_ptr().cast(), self.len, advice) };
        if rc == 0 { Ok(()) } else { Err(BuildError::Advise { advice: name, source: std::io::Error::last_os_error() }) }
    }

    /// Commits every page of the region now (the effect of `MAP_POPULATE`,
    /// without committing the alignment slack).
    #[cfg(not(loom))]
    fn prefault(&self) -> Result<(), BuildError> {
        const MADV_POPULATE_WRITE: libc::c_int = 23;
        // SAFETY: the range is our own writable mapping; populating writes nothing.
        let rc = unsafe { libc::madvise(self.base.as_ptr().cast(), self.len, MADV_POPULATE_WRITE) };
        if rc == 0 {
            return Ok(());
        }
        // Kernels before 5.14 lack MADV_POPULATE_WRITE: touch each page.
        for offset in (0..self.len).step_by(PAGE_SIZE) {
            // SAFETY: in bounds; the region is fresh, private and zero, and no
            // block has been handed out yet, so writing a zero changes nothing.
            unsafe { self.base.as_ptr().add(offset).write_volatile(0) };
        }
        Ok(())
    }

    #[inline]
    pub(crate) fn base(&self) -> NonNull<u8> {
        self.base
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The page frame number of `addr` if it is page-aligned and inside the region.
    #[inline]
    pub(crate) fn pfn_of(&self, addr: usize) -> Option<Pfn> {
        let offset = addr.wrapping_sub(self.base.as_ptr() as usize);
        if offset < self.len && offset.is_multiple_of(PAGE_SIZE) { Some(Pfn::new(offset >> PAGE_SHIFT)) } else { None }
    }

    #[inline]
    pub(crate) fn contains(&self, addr: usize) -> bool {
        addr.wrapping_sub(self.base.as_ptr() as usize) < self.len
    }

    /// # Safety
    /// `pfn` is a page of this region (below `len / PAGE_SIZE`).
    #[inline]
    pub(crate) unsafe fn page_addr(&self, pfn: Pfn) -> NonNull<u8> {
        debug_assert!(pfn.index() << PAGE_SHIFT < self.len);
        // SAFETY: per the contract, the offset stays inside the mapping.
        unsafe { self.base.add(pfn.index() << PAGE_SHIFT) }
    }

    /// Hands `nr_pages` pages from `pfn` back to the OS.
    ///
    /// # Safety
    /// The pages must be free: nobody may rely on their contents.
    #[cfg(not(loom))]
    pub(crate) unsafe fn purge(&self, pfn: Pfn, nr_pages: usize, advice: PurgeAdvice) -> std::io::Result<()> {
        let advice = match advice {
            PurgeAdvice::DontNeed => libc::MADV_DONTNEED,
            PurgeAdvice::Free => libc::MADV_FREE,
        };
        // SAFETY: the caller's pages are pages of this region.
        let addr = unsafe { self.page_addr(pfn) }.as_ptr();
        // SAFETY: a range of our own mapping whose contents the caller has
        // given up; DONTNEED/FREE only discard contents.
        let rc = unsafe { libc::madvise(addr.cast(), nr_pages << PAGE_SHIFT, advice) };
        if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
    }

    /// Binds the pages from `start` to `end` to the machine's NUMA node
    /// `kernel_node` (`mbind`, `MPOL_PREFERRED`): pages touched later come
    /// from that node while it has memory, from another when it has none.
    /// (`MPOL_BIND` would have the OOM killer end the process where the
    /// arena's own zonelist already falls back between nodes.) Before
    /// first touch, or it moves nothing already resident.
    #[cfg(not(loom))]
    pub(crate) fn bind(&self, (start, end): (Pfn, Pfn), kernel_node: usize) -> std::io::Result<()> {
        const MPOL_PREFERRED: libc::c_long = 1;
        let mut mask = [0u64; 16];
        let bits = mask.len() * 64;
        if kernel_node >= bits || end.index() << PAGE_SHIFT > self.len || start > end {
            return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
        }
        mask[kernel_node / 64] |= 1 << (kernel_node % 64);
        // SAFETY: `start` is a page of the region (checked above).
        let addr = unsafe { self.page_addr(start) }.as_ptr();
        // SAFETY: a page-aligned range of our own mapping and a node mask
        // of `bits` bits (the kernel reads `maxnode - 1` of them); mbind
        // changes only where the range's future pages come from.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_mbind,
                addr,
                (end - start) << PAGE_SHIFT,
                MPOL_PREFERRED,
                mask.as_ptr(),
                bits + 1,
                0,
            )
        };
        if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
    }

    /// Under loom, no memory is bound.
    #[cfg(loom)]
    pub(crate) fn bind(&self, _range: (Pfn, Pfn), _kernel_node: usize) -> std::io::Result<()> {
        Ok(())
    }

    /// Under loom, purging is modelled as forgetting the contents.
    ///
    /// # Safety
    /// As for the real one.
    #[cfg(loom)]
    pub(crate) unsafe fn purge(&self, _pfn: Pfn, _nr_pages: usize, _advice: PurgeAdvice) -> std::io::Result<()> {
        Ok(())
    }

    /// # Safety
    /// The pages must belong to a block the caller owns (just allocated, not
    /// yet handed out).
    pub(crate) unsafe fn zero(&self, pfn: Pfn, nr_pages: usize) {
        debug_assert!((pfn.index() + nr_pages) << PAGE_SHIFT <= self.len);
        // SAFETY: the caller owns these pages and they lie inside the region.
        unsafe { self.page_addr(pfn).as_ptr().write_bytes(0, nr_pages << PAGE_SHIFT) };
    }
}

#[cfg(loom)]
impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: allocated in `reserve` with this layout.
        unsafe { std::alloc::dealloc(self.base.as_ptr(), self.layout) };
    }
}

#[cfg(not(loom))]
fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(PAGE_SIZE)
}

/// Free 2 MiB huge pages, read from sysfs without allocating; `None` if unknown.
#[cfg(not(loom))]
fn free_huge_pages() -> Option<usize> {
    let mut buf = [0u8; 32];
    let text = sysfs::read_file(format_args!("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages"), &mut buf)?;
    sysfs::parse_number(text.trim_ascii())
}
