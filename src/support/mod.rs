//! What the allocator is built with that is not memory management: the
//! concurrency facade and its barriers, storage for the arena's own
//! structures, the allocator beneath it, messages that never allocate and
//! their rate limit, the build-once cell, the allocator's own threads,
//! the snapshot list the registries share, and small kernel files read
//! without allocating. Nothing here names a
//! module outside this folder.

#[cfg(not(loom))]
pub(crate) mod barrier;
pub(crate) mod boot;
pub(crate) mod lazy;
#[cfg(not(loom))]
pub(crate) mod own_thread;
pub(crate) mod ratelimit;
pub(crate) mod report;
pub(crate) mod snapshot_list;
pub(crate) mod sync;
pub(crate) mod sysalloc;
pub(crate) mod sysfs;
