//! Messages to stderr that never allocate (the arena may be the global
//! allocator); `ratelimit` decides how often.

use std::fmt::{self, Write};

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
        // A model has no global allocator of ours to re-enter: std's
        // stderr, so a model that aborts says why.
        #[cfg(loom)]
        eprint!("{}", String::from_utf8_lossy(&self.buf[..end]));
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

/// Prints one line, what failed and where (the caller's file and line),
/// and aborts: for a broken invariant or any state the allocator cannot
/// continue from. Nothing here allocates or takes a lock, so it works on a
/// thread that holds the allocator's locks (unwinding out of an allocator
/// is undefined behaviour, and a panic's message would allocate).
#[cold]
#[inline(never)]
#[track_caller]
#[cfg_attr(loom, allow(dead_code))]
pub(crate) fn fatal(what: fmt::Arguments<'_>) -> ! {
    fatal_at(std::panic::Location::caller(), what)
}

/// [`fatal`] for a failure found at `at`.
#[cold]
#[inline(never)]
#[cfg_attr(loom, allow(dead_code))]
pub(super) fn fatal_at(at: &std::panic::Location<'_>, what: fmt::Arguments<'_>) -> ! {
    let mut w = StackWriter::new();
    let _ = write!(w, "zonealloc: fatal: {what} (at {}:{})", at.file(), at.line());
    w.flush_line();
    std::process::abort()
}

/// Aborts with one line if it is dropped by unwinding: held by each
/// out-of-line function the global allocator's fast paths call (and by
/// `realloc`), out of which a panic must not unwind (undefined behaviour
/// for a `GlobalAlloc`). Zero-sized and forgotten at the end of the call
/// (`disarm`), it costs nothing but a landing pad; the fast paths
/// themselves hold none, so they stay leaves with tail calls.
#[cfg_attr(loom, allow(dead_code))]
pub(crate) struct AbortOnUnwind;

#[cfg_attr(loom, allow(dead_code))]
impl AbortOnUnwind {
    /// The call returned normally.
    #[inline(always)]
    pub(crate) fn disarm(self) {
        std::mem::forget(self);
    }
}

impl Drop for AbortOnUnwind {
    #[cold]
    fn drop(&mut self) {
        fatal(format_args!("a panic inside the allocator unwound out of it"));
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
}
