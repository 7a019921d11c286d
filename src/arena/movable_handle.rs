//! [`MovableHandle`]: how an owner of movable blocks (`reclaim/movable.rs`)
//! allocates them, recording itself in each block's metadata; built on
//! the public arena, as the collections are.

use std::ptr::NonNull;
use std::sync::Arc;

use crate::arena::Arena;
use crate::error::AllocError;
use crate::flags::AllocFlags;
use crate::page::PageState;
use crate::reclaim::movable::Movable;

/// Keeps an owner registered: its blocks can be moved by compaction.
/// Dropping it unregisters the owner and waits for a `migrate` call in
/// progress to return (unless dropped from inside one); blocks still
/// allocated through it stay allocated and are no longer moved.
#[must_use = "dropping the handle unregisters the owner"]
pub struct MovableHandle<'a> {
    arena: &'a Arena,
    id: u32,
}

impl std::fmt::Debug for MovableHandle<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MovableHandle").field("id", &self.id).finish()
    }
}

impl Arena {
    /// Registers an owner of movable blocks; allocate them with
    /// [`MovableHandle::alloc_pages`], free them with
    /// [`free_pages`](Self::free_pages).
    pub fn register_movable(&self, movable: Arc<dyn Movable>) -> MovableHandle<'_> {
        let id = self.inner.reclaim().movable.register(movable);
        MovableHandle { arena: self, id }
    }
}

impl MovableHandle<'_> {
    /// Allocates a block of `order` as [`Arena::alloc_pages`] does, with
    /// `flags` plus [`AllocFlags::MOVABLE`], owned by this handle's owner:
    /// compaction may move it (through the owner's
    /// [`migrate`](Movable::migrate)).
    pub fn alloc_pages(&self, order: u32, flags: AllocFlags) -> Result<NonNull<u8>, AllocError> {
        let ptr = self.arena.alloc_pages(order, flags | AllocFlags::MOVABLE)?;
        let node = self.arena.inner.node();
        let pfn = node.region.pfn_of(ptr.as_ptr() as usize).expect("a block of the region");
        let page = node.mem_map.page(pfn);
        page.set_owner(self.id);
        // Release: compaction reads the owner after it sees the state.
        page.publish_info(page.info().with_state(PageState::Owned));
        Ok(ptr)
    }

    /// The arena the handle allocates from.
    pub fn arena(&self) -> &Arena {
        self.arena
    }
}

impl Drop for MovableHandle<'_> {
    fn drop(&mut self) {
        self.arena.inner.reclaim().movable.unregister(self.id);
    }
}
