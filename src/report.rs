//! Messages to stderr that never allocate (the arena may be the global
//! allocator), rate limited like the kernel's `warn_alloc`.

use std::fmt::{self, Write};

use crate::sync::{AtomicU64, Ordering};

/// A fixed buffer that formats without allocating; output past its end is cut.
pub(crate) struct StackWriter {
    buf: [u8; 256],
    len: usize,
}

impl StackWriter {
    pub(crate) const fn new() -> Self {
        Self { buf: [0; 256], len: 0 }
    }

    /// Writes what was formatted, plus a newline, to stderr with one `write(2)`.
    pub(crate) fn flush_line(mut self) {
        let _ = self.write_str("\n");
        let end = self.len.min(self.buf.len());
        #[cfg(not(loom))]
        // SAFETY: writing initialised bytes of our own buffer to fd 2.
        unsafe {
            libc::write(2, self.buf.as_ptr().cast(), end);
        }
        #[cfg(loom)]
        let _ = end;
    }
}

impl Write for StackWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len() - self.len;
        let take = s.len().min(room);
        self.buf[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        Ok(())
    }
}

/// Prints `message` and aborts: for states the allocator cannot continue
/// from (unwinding out of an allocator is undefined behaviour).
#[cold]
#[cfg_attr(loom, allow(dead_code))]
pub(crate) fn fatal(message: &str) -> ! {
    let mut w = StackWriter::new();
    let _ = write!(w, "zonealloc: fatal: {message}");
    w.flush_line();
    std::process::abort()
}

/// Allows `burst` messages per `interval` seconds (the kernel's
/// `DEFAULT_RATELIMIT_BURST` / `DEFAULT_RATELIMIT_INTERVAL` are 10 and 5).
pub(crate) struct RateLimit {
    /// `window_start_secs << 16 | printed_in_window`.
    state: AtomicU64,
}

impl RateLimit {
    #[cfg(not(loom))]
    pub(crate) const fn new() -> Self {
        Self { state: AtomicU64::new(0) }
    }

    #[cfg(loom)]
    pub(crate) fn new() -> Self {
        Self { state: AtomicU64::new(0) }
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
    fn stack_writer_truncates_instead_of_allocating() {
        let mut w = StackWriter::new();
        for _ in 0..100 {
            write!(w, "0123456789").unwrap();
        }
        assert_eq!(w.len, 256);
    }

    #[test]
    fn rate_limit_allows_a_burst_then_stops() {
        let limit = RateLimit::new();
        let allowed = (0..50).filter(|_| limit.allow()).count();
        assert_eq!(allowed, 10);
    }
}
