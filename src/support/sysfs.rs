//! Small kernel files (`/sys`, `/proc`) read without allocating: what the
//! allocator reads before it can allocate, or from inside itself (the
//! NUMA topology at start-up, free huge pages when a region is reserved).

use std::fmt;

/// Reads the small file at the formatted `path` into `buf`, without
/// allocating: `None` if it cannot be read or fills `buf`.
pub(crate) fn read_file<'a>(path: fmt::Arguments<'_>, buf: &'a mut [u8]) -> Option<&'a [u8]> {
    use fmt::Write as _;
    struct PathBuf {
        bytes: [u8; 128],
        len: usize,
    }
    impl fmt::Write for PathBuf {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            let end = self.len + s.len();
            // One byte kept for the NUL.
            if end >= self.bytes.len() {
                return Err(fmt::Error);
            }
            self.bytes[self.len..end].copy_from_slice(s.as_bytes());
            self.len = end;
            Ok(())
        }
    }
    let mut p = PathBuf { bytes: [0; 128], len: 0 };
    p.write_fmt(path).ok()?;
    read_path(&p.bytes[..=p.len], buf)
}

#[cfg(not(loom))]
fn read_path<'a>(nul_terminated: &[u8], buf: &'a mut [u8]) -> Option<&'a [u8]> {
    // SAFETY: `nul_terminated` ends with its only NUL (the path was
    // written from a `str` of path components without NULs).
    let fd = unsafe { libc::open(nul_terminated.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    let mut len = 0;
    while len < buf.len() {
        // SAFETY: reading into the unfilled rest of our own buffer.
        let n = unsafe { libc::read(fd, buf[len..].as_mut_ptr().cast(), buf.len() - len) };
        if n <= 0 {
            break;
        }
        len += n as usize;
    }
    // SAFETY: closing the descriptor opened above, once.
    unsafe { libc::close(fd) };
    (len < buf.len()).then(|| &buf[..len])
}

#[cfg(loom)]
fn read_path<'a>(_nul_terminated: &[u8], _buf: &'a mut [u8]) -> Option<&'a [u8]> {
    None
}

/// A decimal number of at most 9 digits and nothing else; `None`
/// otherwise (so that no field overflows, whatever the file holds).
pub(crate) fn parse_number(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() || digits.len() > 9 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0, |n, &d| n * 10 + usize::from(d - b'0')))
}
