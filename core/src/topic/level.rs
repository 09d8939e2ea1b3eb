//! One level of a topic name or filter: splitting it off, and keeping it as a map key.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};

/// Splits `levels` at its first `/`: the first level, and the levels after it if there
/// are any. The hot step of every match: a plain byte scan beats `split_once`'s generic
/// char searcher on levels a few bytes long.
#[inline]
pub(crate) fn split_first_level(levels: &str) -> (&str, Option<&str>) {
    let Some(at) = levels.bytes().position(|byte| byte == b'/') else {
        return (levels, None);
    };
    // '/' is ASCII, so both sides of it are char boundaries and `get` never fails.
    match (levels.get(..at), levels.get(at + 1..)) {
        (Some(first), Some(rest)) => (first, Some(rest)),
        _ => (levels, None),
    }
}

/// A literal level as a map key. Short levels (device ids, names) sit inline: comparing
/// a key during a lookup reads no second allocation, and building one to look up or
/// insert an existing level allocates nothing.
pub(crate) enum Level {
    Inline {
        len: u8,
        bytes: [u8; LEVEL_INLINE_BYTES_MAX],
    },
    Heap(Box<[u8]>),
}

/// Keeps `Level` at 24 bytes: a tag, a length and the inline bytes.
const LEVEL_INLINE_BYTES_MAX: usize = 22;

const _: () = assert!(std::mem::size_of::<Level>() == 24);

impl Level {
    pub(crate) fn new(level: &str) -> Self {
        let mut bytes = [0; LEVEL_INLINE_BYTES_MAX];
        match (bytes.get_mut(..level.len()), u8::try_from(level.len())) {
            (Some(inline), Ok(len)) => {
                inline.copy_from_slice(level.as_bytes());
                Level::Inline { len, bytes }
            }
            _ => Level::Heap(level.as_bytes().into()),
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            Level::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or_default(),
            Level::Heap(bytes) => bytes,
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        // Built from a `&str`, so always valid UTF-8: the check runs only on the cold
        // paths that list keys.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

impl PartialEq for Level {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Level {}

// Hashes exactly as `[u8]` does, as `Borrow` requires: maps are searched by
// `level.as_bytes()`.
impl Hash for Level {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl Borrow<[u8]> for Level {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_level_split() {
        assert_eq!(split_first_level("a"), ("a", None));
        assert_eq!(split_first_level("a/b/c"), ("a", Some("b/c")));
        assert_eq!(split_first_level("/"), ("", Some("")));
        assert_eq!(split_first_level("é/ü"), ("é", Some("ü")));
    }

    #[test]
    fn short_levels_inline_long_ones_on_the_heap() {
        let longest_inline = "é".repeat(LEVEL_INLINE_BYTES_MAX / 2);
        let shortest_heap = format!("{longest_inline}x");
        assert!(matches!(Level::new(""), Level::Inline { len: 0, .. }));
        assert!(matches!(Level::new(&longest_inline), Level::Inline { .. }));
        assert!(matches!(Level::new(&shortest_heap), Level::Heap(_)));
        for level in ["", "a", longest_inline.as_str(), shortest_heap.as_str()] {
            let key = Level::new(level);
            assert_eq!(key.as_str(), level);
            assert_eq!(key.as_bytes(), level.as_bytes());
            assert!(key == Level::new(level));
        }
    }

    #[test]
    fn hashes_like_the_bytes_it_is_looked_up_by() {
        let state = foldhash::fast::FixedState::with_seed(7);
        for level in ["", "devices", "a-level-well-past-the-inline-limit"] {
            assert_eq!(
                std::hash::BuildHasher::hash_one(&state, Level::new(level)),
                std::hash::BuildHasher::hash_one(&state, level.as_bytes())
            );
        }
    }
}
