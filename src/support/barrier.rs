//! Asymmetric memory barriers: a free light side and an expensive heavy side.
//!
//! The per-thread caches are touched by their owner on every allocation and
//! free, and by other threads only when they drain them (rarely). The owner's
//! side of the handshake must cost nothing; the drainer's may cost a system
//! call. `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` makes every running
//! thread of this process execute a full memory barrier before it returns, so
//! a compiler-only barrier on the owner's side pairs with it as if both sides
//! had issued a `SeqCst` fence (the pattern of folly's `asymmetricLightBarrier`
//! and liburcu's membarrier flavour).
//!
//! If the kernel refuses membarrier (before 4.14, or a seccomp filter),
//! [`init`] says so and the arena runs without per-thread caches rather than
//! make every owner pay for a real fence.

use std::sync::atomic::{AtomicU8, Ordering, compiler_fence, fence};

const UNKNOWN: u8 = 0;
const AVAILABLE: u8 = 1;
const UNAVAILABLE: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);

// From <linux/membarrier.h>.
const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

fn membarrier(cmd: libc::c_long) -> bool {
    // SAFETY: membarrier takes (cmd, flags, cpu_id) and touches no memory of ours.
    unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0 as libc::c_long, 0 as libc::c_long) == 0 }
}

/// Registers for expedited private membarriers, once per process; whether
/// the heavy barrier is available (and so whether caches may be used).
pub(crate) fn init() -> bool {
    let state = match STATE.load(Ordering::Acquire) {
        UNKNOWN => {
            let state = if membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) { AVAILABLE } else { UNAVAILABLE };
            // Racing initialisers compute the same answer.
            let _ = STATE.compare_exchange(UNKNOWN, state, Ordering::AcqRel, Ordering::Acquire);
            state
        }
        state => state,
    };
    state == AVAILABLE
}

/// The owner's side: a compiler barrier only.
#[inline(always)]
pub(crate) fn light() {
    compiler_fence(Ordering::SeqCst);
}

/// The drainer's side: every running thread of the process passes a full
/// memory barrier before this returns. Only called once [`init`] succeeded.
pub(crate) fn heavy() {
    fence(Ordering::SeqCst);
    if membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) {
        return;
    }
    // The registration belongs to the address space; a forked child may lack
    // it. Register and retry; if that fails, owners that rely on it cannot be
    // made safe, so stop.
    if membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) && membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) {
        return;
    }
    crate::support::report::fatal(format_args!(
        "membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) failed after registration succeeded"
    ));
}

#[cfg(test)]
mod tests {
    #[test]
    fn heavy_barrier_runs_when_available() {
        // Not an assertion on the host's kernel: without membarrier the
        // arena runs uncached, which is also correct.
        if super::init() {
            super::heavy();
        }
        super::light();
    }
}
