//! The global arena's configuration from `ZONEALLOC_*` environment
//! variables, read once without allocating. A value that cannot be used
//! gets one line on stderr saying what was wrong and what is used instead;
//! nothing is ignored in silence.

use std::fmt::Write as _;
use std::time::Duration;

use crate::region::HugePages;
use crate::support::report::StackWriter;
use crate::topology::MAX_NUMNODES;
use crate::zone_idx::MAX_ZONES;

/// What the environment asks of the global arena; `None`: the default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Config {
    pub region_size: Option<usize>,
    pub zones: Option<usize>,
    /// `Some(None)`: never purge on a timer.
    pub purge_delay: Option<Option<Duration>>,
    pub huge_pages: Option<HugePages>,
    pub numa: Option<NumaMode>,
}

/// `ZONEALLOC_NUMA`: which NUMA nodes the global arena spreads over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum NumaMode {
    /// One node, whatever the machine has.
    Off,
    /// The machine's nodes (`Topology::detect`); with one, as `Off`.
    Auto,
    /// `Topology::simulated(n)`.
    Simulated(usize),
}

pub(crate) fn read() -> Config {
    Config {
        region_size: parse("ZONEALLOC_REGION_SIZE", "a size in bytes (K, M or G suffix) from 1 to 16384G", |v| {
            size(v).filter(|&n| n > 0 && n / crate::PAGE_SIZE < u32::MAX as usize)
        }),
        zones: parse("ZONEALLOC_ZONES", "a number of zones from 1 to 64", |v| {
            size(v).filter(|n| (1..=MAX_ZONES).contains(n))
        }),
        purge_delay: parse("ZONEALLOC_PURGE_DELAY_MS", "a number of milliseconds (0: never on a timer)", |v| {
            size(v).map(|ms| (ms > 0).then(|| Duration::from_millis(ms as u64)))
        }),
        huge_pages: parse("ZONEALLOC_HUGE_PAGES", "`transparent` or `none`", |v| {
            if v.eq_ignore_ascii_case(b"transparent") {
                Some(HugePages::Transparent)
            } else if v.eq_ignore_ascii_case(b"none") {
                Some(HugePages::None)
            } else {
                None
            }
        }),
        numa: parse("ZONEALLOC_NUMA", "`off`, `auto` or `sim:N` with N from 1 to 16 nodes", |v| {
            if v.eq_ignore_ascii_case(b"off") {
                Some(NumaMode::Off)
            } else if v.eq_ignore_ascii_case(b"auto") {
                Some(NumaMode::Auto)
            } else {
                let n = size(v.strip_prefix(b"sim:")?)?;
                (1..=MAX_NUMNODES).contains(&n).then_some(NumaMode::Simulated(n))
            }
        }),
    }
}

/// The value of `name` run through `parse`; an unusable one is reported
/// (`expected` says what would do) and the default used.
fn parse<T>(name: &str, expected: &str, parse: impl FnOnce(&[u8]) -> Option<T>) -> Option<T> {
    let value = var(name)?;
    let parsed = parse(value);
    if parsed.is_none() {
        let mut w = StackWriter::new();
        let shown = std::str::from_utf8(value).unwrap_or("(not UTF-8)");
        let _ = write!(w, "zonealloc: {name}={shown:.64} is not {expected}; using the default");
        w.flush_line();
    }
    parsed
}

pub(super) fn report_build_failure(error: &crate::error::BuildError, instead: &str) {
    let mut w = StackWriter::new();
    let _ = write!(w, "zonealloc: cannot build the global arena ({error}); {instead}");
    w.flush_line();
}

pub(super) fn report_rounded_region(asked: usize, used: usize) {
    let mut w = StackWriter::new();
    let _ = write!(
        w,
        "zonealloc: ZONEALLOC_REGION_SIZE={asked} is not a whole number of {} MiB blocks; using {} MiB",
        (crate::PAGE_SIZE << super::init::GLOBAL_MAX_ORDER) >> 20,
        used >> 20
    );
    w.flush_line();
}

/// The value of an environment variable, without allocating.
fn var(name: &str) -> Option<&'static [u8]> {
    let mut buf = [0u8; 64];
    let bytes = name.as_bytes();
    if bytes.len() >= buf.len() {
        return None;
    }
    buf[..bytes.len()].copy_from_slice(bytes);
    let name = std::ffi::CStr::from_bytes_until_nul(&buf[..]).ok()?;
    // SAFETY: getenv returns null or a NUL-terminated string that lives as
    // long as the environment is not modified (we read it once, at start).
    let value = unsafe { libc::getenv(name.as_ptr()) };
    // SAFETY: as above.
    (!value.is_null()).then(|| unsafe { std::ffi::CStr::from_ptr(value) }.to_bytes())
}

/// A number with an optional K/M/G suffix, without overflow.
fn size(value: &[u8]) -> Option<usize> {
    let (digits, shift) = match value.last()? {
        b'k' | b'K' => (&value[..value.len() - 1], 10),
        b'm' | b'M' => (&value[..value.len() - 1], 20),
        b'g' | b'G' => (&value[..value.len() - 1], 30),
        _ => (value, 0),
    };
    if digits.is_empty() {
        return None;
    }
    let mut n: usize = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(usize::from(d - b'0'))?;
    }
    n.checked_mul(1 << shift)
}

#[cfg(test)]
mod tests {
    use super::size;

    #[test]
    fn sizes_parse_or_are_refused() {
        assert_eq!(size(b"4096"), Some(4096));
        assert_eq!(size(b"64M"), Some(64 << 20));
        assert_eq!(size(b"2g"), Some(2 << 30));
        assert_eq!(size(b"K"), None);
        assert_eq!(size(b""), None);
        assert_eq!(size(b"12Q"), None);
        assert_eq!(size(b"-1"), None);
        assert_eq!(size(b"18446744073709551615"), Some(usize::MAX));
        assert_eq!(size(b"18446744073709551616"), None);
        assert_eq!(size(b"18446744073709551615K"), None);
    }
}
