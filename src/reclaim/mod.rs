//! Taking memory back: the kernel's `vmscan.c` and `compaction.c`, and the
//! registries they call into.
//!
//! The work, above the caches and handed a `&Node`: `purge` (resident
//! free memory back to the OS), `vmscan` (`Reclaim`: kswapd's body, direct
//! reclaim, the drains) and `compaction` (`impl Reclaim`: the scanners,
//! direct compaction, kcompactd). The page allocator's slow path sits
//! above them, as `page_alloc.c` calls into `vmscan.c`. The registries,
//! below the node: `shrinker` and `movable`.
//!
//! The state the node and its zones keep for this work (`kswapd`,
//! `progress`, `compact_state`, `memalloc`) lives beside `node` and
//! `zone`, outside this folder, which nothing below the caches names.

pub(crate) mod compaction;
pub(crate) mod movable;
pub(crate) mod purge;
pub(crate) mod shrinker;
pub(crate) mod vmscan;
