//! Short keys made without a heap allocation: the shared-data key of a
//! slot, the filter-state key of a property. A request reads or writes
//! several, so none of them costs an allocation unless it is long.

use std::fmt::{self, Write};

/// Keys up to this length are made in place.
pub const INLINE_KEY: usize = 64;

/// A key written in place when it fits [`INLINE_KEY`] bytes, on the heap
/// otherwise.
pub enum ShortKey {
    Inline { bytes: [u8; INLINE_KEY], len: usize },
    Heap(String),
}

/// The in-place buffer, refusing what does not fit.
struct Buffer {
    bytes: [u8; INLINE_KEY],
    len: usize,
}

impl Write for Buffer {
    fn write_str(&mut self, part: &str) -> fmt::Result {
        let end = self.len + part.len();
        let room = self.bytes.get_mut(self.len..end).ok_or(fmt::Error)?;
        room.copy_from_slice(part.as_bytes());
        self.len = end;
        Ok(())
    }
}

impl ShortKey {
    /// The key `args` writes: `ShortKey::format(format_args!("{prefix}{n}"))`.
    pub fn format(args: fmt::Arguments<'_>) -> Self {
        let mut buffer = Buffer {
            bytes: [0; INLINE_KEY],
            len: 0,
        };
        match buffer.write_fmt(args) {
            Ok(()) => ShortKey::Inline {
                bytes: buffer.bytes,
                len: buffer.len,
            },
            Err(_) => ShortKey::Heap(fmt::format(args)),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            // Written only from `&str` parts.
            ShortKey::Inline { bytes, len } => std::str::from_utf8(&bytes[..*len]).unwrap_or(""),
            ShortKey::Heap(key) => key,
        }
    }
}

impl std::ops::Deref for ShortKey {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for ShortKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_that_fits_is_made_in_place_and_a_longer_one_on_the_heap() {
        let short = ShortKey::format(format_args!("wasm.{}", "gw_app"));
        assert!(matches!(short, ShortKey::Inline { .. }));
        assert_eq!(&*short, "wasm.gw_app");
        let exact = "x".repeat(INLINE_KEY);
        let key = ShortKey::format(format_args!("{exact}"));
        assert!(matches!(key, ShortKey::Inline { .. }));
        assert_eq!(&*key, exact);
        let long = "y".repeat(INLINE_KEY + 1);
        let key = ShortKey::format(format_args!("{}{}", &long[..10], &long[10..]));
        assert!(matches!(key, ShortKey::Heap(_)));
        assert_eq!(&*key, long);
    }
}
