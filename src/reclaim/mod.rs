//! Taking memory back: the kernel's `vmscan.c`, `compaction.c` and the
//! state they keep, in two bands.
//!
//! Below the node (the node and its zones own them): `kswapd` (its wake-up
//! and sleep, the purge timer), `progress` (the event `NOFAIL` callers
//! wait on), `compact_state` (compaction's counters and a zone's
//! deferral), `memalloc` (`PF_MEMALLOC`), and the registries reclaim
//! calls into, `shrinker` and `movable`.
//!
//! Above the caches, handed a `&Node`: `purge` (resident free memory back
//! to the OS), `vmscan` (`Reclaim`: kswapd's body, direct reclaim, the
//! drains) and `compaction` (`impl Reclaim`: the scanners, direct
//! compaction, kcompactd). The page allocator's slow path sits above
//! both, as `page_alloc.c` calls into `vmscan.c`.

pub(crate) mod compact_state;
pub(crate) mod compaction;
pub(crate) mod kswapd;
pub(crate) mod memalloc;
pub(crate) mod movable;
pub(crate) mod progress;
pub(crate) mod purge;
pub(crate) mod shrinker;
pub(crate) mod vmscan;
