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
