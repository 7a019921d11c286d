//! A rate limit for warnings, as the kernel's `ratelimit.h` (a burst of
//! messages, then silence until the interval has passed).

use crate::support::sync::{AtomicU64, Ordering, const_fn_unless_loom};

/// Allows `burst` messages per `interval` seconds (the kernel's
/// `DEFAULT_RATELIMIT_BURST` / `DEFAULT_RATELIMIT_INTERVAL` are 10 and 5).
pub(crate) struct RateLimit {
    /// `window_start_secs << 16 | printed_in_window`.
    state: AtomicU64,
}

impl RateLimit {
    const_fn_unless_loom! {
        pub(crate) fn new() -> Self {
            Self { state: AtomicU64::new(0) }
        }
    }

    /// Whether a message may be printed now.
    pub(crate) fn allow(&self) -> bool {
        const BURST: u64 = 10;
        const INTERVAL: u64 = 5;
        let now = monotonic_secs();
        let state = self.state.load(Ordering::Relaxed);
        let (start, printed) = (state >> 16, state & 0xffff);
        let next = if now >= start + INTERVAL || state == 0 {
            (now << 16) | 1
        } else if printed < BURST {
            state + 1
        } else {
            return false;
        };
        // A lost race only lets one message more or fewer through.
        self.state.compare_exchange(state, next, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }
}

fn monotonic_secs() -> u64 {
    #[cfg(not(loom))]
    {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `ts` is a valid timespec to fill.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        ts.tv_sec as u64
    }
    #[cfg(loom)]
    {
        0
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_allows_a_burst_then_stops() {
        let limit = RateLimit::new();
        let allowed = (0..50).filter(|_| limit.allow()).count();
        assert_eq!(allowed, 10);
    }
}
