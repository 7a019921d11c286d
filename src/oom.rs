//! The OOM handler: what runs when reclaim cannot satisfy an allocation
//! (the kernel's `out_of_memory`).

use std::fmt;
use std::sync::Arc;

use crate::flags::AllocFlags;

/// What the arena knows when it calls the OOM handler.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct OomContext {
    /// The order that could not be allocated.
    pub order: u32,
    /// The caller's flags.
    pub flags: AllocFlags,
    /// Free pages in all zones, within the capacity.
    pub free_pages: usize,
    /// Pages the registered shrinkers say they could still free.
    pub reclaimable_pages: usize,
}

/// What the OOM handler decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OomAction {
    /// Memory was freed (say, a cache was dropped): try the allocation again.
    Retry,
    /// Let the allocation fail (the default without a handler).
    Fail,
}

/// A user-supplied OOM handler; see
/// [`ArenaBuilder::oom_handler`](crate::ArenaBuilder::oom_handler).
#[derive(Clone)]
pub(crate) struct OomHandler(pub Arc<dyn Fn(&OomContext) -> OomAction + Send + Sync>);

impl fmt::Debug for OomHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OomHandler(..)")
    }
}
