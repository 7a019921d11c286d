//! The lazy initialisation of the global arena, on its own so that loom can
//! model it (`tests/loom.rs`, `lazy_init_race`): the global static itself
//! cannot be rebuilt for every loom execution.
//!
//! One compare-exchange picks the builder; it publishes the value
//! (Release) and then the state; the others spin until the state says
//! ready and read the value (Acquire). A call made from inside the build
//! on the building thread (the build must not allocate through the
//! allocator it builds, but if it did) gets [`Init::Reentrant`] instead of
//! waiting for itself. Publishing the state before the value, or dropping
//! the re-entrancy check, fails the model.

use std::ptr::NonNull;

use crate::support::sync::{AtomicPtr, AtomicU8, Ordering, const_fn_unless_loom, spin_loop};

const UNINIT: u8 = 0;
const BUILDING: u8 = 1;
const READY: u8 = 2;
const FAILED: u8 = 3;

/// A value built once, on first use, by whichever thread gets there first.
#[doc(hidden)]
pub struct Lazy<T> {
    state: AtomicU8,
    value: AtomicPtr<T>,
}

/// What [`Lazy::get_or_init`] found or did.
#[doc(hidden)]
#[derive(Debug, PartialEq, Eq)]
pub enum Init<'a, T> {
    /// Built earlier (or by another thread meanwhile).
    Ready(&'a T),
    /// Built by this call: the caller finishes what must follow the build.
    Built(&'a T),
    /// The build failed, now or earlier.
    Failed,
    /// Called from inside this thread's own build.
    Reentrant,
}

impl<T> Default for Lazy<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Lazy<T> {
    const_fn_unless_loom! {
        /// Not built yet.
        pub fn new() -> Self {
            Self { state: AtomicU8::new(UNINIT), value: AtomicPtr::new(std::ptr::null_mut()) }
        }
    }

    /// The value, if built. One Acquire load.
    #[inline]
    pub fn get(&self) -> Option<&T> {
        let value = self.value.load(Ordering::Acquire);
        // SAFETY: a published value is never freed (it lives as long as
        // `self`), and the Acquire load pairs with the builder's Release.
        (!value.is_null()).then(|| unsafe { &*value })
    }

    /// Whether the build failed.
    pub fn failed(&self) -> bool {
        self.state.load(Ordering::Acquire) == FAILED
    }

    /// The value, building it with `build` if nobody has. `reentrant`
    /// says whether the calling thread is inside its own `build`.
    #[cold]
    pub fn get_or_init(&self, reentrant: impl Fn() -> bool, build: impl FnOnce() -> Option<NonNull<T>>) -> Init<'_, T> {
        loop {
            match self.state.compare_exchange(UNINIT, BUILDING, Ordering::Acquire, Ordering::Acquire) {
                Ok(_) => break,
                Err(READY) => return self.get().map_or(Init::Failed, Init::Ready),
                Err(FAILED) => return Init::Failed,
                Err(_) if reentrant() => return Init::Reentrant,
                Err(_) => spin_loop(),
            }
        }
        match build() {
            Some(value) => {
                // The value first: a thread that sees READY finds it.
                self.value.store(value.as_ptr(), Ordering::Release);
                self.state.store(READY, Ordering::Release);
                // SAFETY: just published; see `get`.
                Init::Built(unsafe { &*value.as_ptr() })
            }
            None => {
                self.state.store(FAILED, Ordering::Release);
                Init::Failed
            }
        }
    }
}
