//! One level of a topic name or filter: splitting it off, keeping it as a map key, and
//! `LevelMap`, the literal children of a trie node, which the match of every PUBLISH
//! walks.

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash, Hasher};

use foldhash::fast::{FixedState, RandomState};

/// Splits `levels` at its first `/`: the first level, and the levels after it if there
/// are any. A step of a match at a node with a `+` child or many literal ones: a plain
/// byte scan beats `split_once`'s generic char searcher on levels a few bytes long.
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

    /// The levels of `levels` after this one if `levels` starts with it: `Some(None)`
    /// when it is the last level. Matches a level without scanning for its end first.
    #[inline]
    pub(crate) fn rest_of<'t>(&self, levels: &'t str) -> Option<Option<&'t str>> {
        let key = self.as_bytes();
        let (head, tail) = levels.as_bytes().split_at_checked(key.len())?;
        let rest = match tail.first() {
            None => None,
            // '/' is ASCII: a char boundary on both sides.
            Some(b'/') => Some(levels.get(key.len() + 1..)?),
            Some(_) => return None,
        };
        same_bytes(head, key).then_some(rest)
    }

    pub(crate) fn as_str(&self) -> &str {
        // Built from a `&str`, so always valid UTF-8: the check runs only on the cold
        // paths that list keys.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

impl PartialEq for Level {
    fn eq(&self, other: &Self) -> bool {
        same_bytes(self.as_bytes(), other.as_bytes())
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

/// Literal levels -> `T`: the children of a trie node. Most nodes have one child or a
/// few, found by a length-first scan that hashes nothing; past `LEVEL_MAP_SCAN_MAX` a
/// hash index over the same entries keeps a lookup O(1) on the nodes with thousands
/// (device ids, client ids).
pub(crate) struct LevelMap<T> {
    entries: Vec<(Level, T)>,
    // Boxed: most maps never need one.
    index: Option<Box<LevelIndex>>,
}

/// Scanning this many levels costs about one hash lookup: the index is built past it,
/// and dropped again below half of it so that a map on the edge does not flap.
const LEVEL_MAP_SCAN_MAX: usize = 8;

/// The fewest slots of an index. An index is kept at most half full, so that a probe
/// finds its level or a free slot after about 1.2 steps on average.
const LEVEL_INDEX_SLOTS_MIN: usize = 4 * LEVEL_MAP_SCAN_MAX;

const _: () = assert!(LEVEL_INDEX_SLOTS_MIN.is_power_of_two());
const _: () = assert!(LEVEL_INDEX_SLOTS_MIN > 2 * (LEVEL_MAP_SCAN_MAX + 1));

impl<T> LevelMap<T> {
    pub(crate) fn new() -> Self {
        Self {
            entries: Vec::new(),
            index: None,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &T)> {
        self.entries
            .iter()
            .map(|(key, value)| (key.as_str(), value))
    }

    #[inline]
    pub(crate) fn get(&self, level: &str) -> Option<&T> {
        let (_, value) = self.entries.get(self.position(level.as_bytes())?)?;
        Some(value)
    }

    pub(crate) fn get_mut(&mut self, level: &str) -> Option<&mut T> {
        let position = self.position(level.as_bytes())?;
        let (_, value) = self.entries.get_mut(position)?;
        Some(value)
    }

    /// The value of the first level of `levels`, and the levels after it. Without an
    /// index no level is split off: each key is compared with the start of `levels`.
    #[inline]
    pub(crate) fn get_first<'t>(&self, levels: &'t str) -> Option<(&T, Option<&'t str>)> {
        if self.index.is_some() {
            let (level, rest) = split_first_level(levels);
            return Some((self.get(level)?, rest));
        }
        self.entries
            .iter()
            .find_map(|(key, value)| Some((value, key.rest_of(levels)?)))
    }

    /// The value of `level`, made by `make` and inserted if there was none (then `true`).
    pub(crate) fn get_or_insert_with(
        &mut self,
        level: &str,
        make: impl FnOnce() -> T,
    ) -> (&mut T, bool) {
        let (position, created) = match self.position(level.as_bytes()) {
            Some(position) => (position, false),
            None => {
                self.push(Level::new(level), make());
                (self.entries.len() - 1, true)
            }
        };
        match self.entries.get_mut(position) {
            Some((_, value)) => (value, created),
            None => unreachable!("a position found or just pushed is in range"),
        }
    }

    pub(crate) fn remove(&mut self, level: &str) -> Option<T> {
        let level = level.as_bytes();
        let position = match &mut self.index {
            None => self.scan(level)?,
            Some(index) => {
                let (slot, position) = index.find(level, &self.entries)?;
                index.vacate(slot, &self.entries);
                position
            }
        };
        let last = self.entries.len() - 1;
        let (_, value) = self.entries.swap_remove(position);
        if let (Some(index), Some((moved, _))) = (&mut self.index, self.entries.get(position)) {
            index.repoint(moved.as_bytes(), last, position);
        }
        self.shrink();
        Some(value)
    }

    #[inline]
    fn position(&self, level: &[u8]) -> Option<usize> {
        match &self.index {
            None => self.scan(level),
            Some(index) => index
                .find(level, &self.entries)
                .map(|(_, position)| position),
        }
    }

    #[inline]
    fn scan(&self, level: &[u8]) -> Option<usize> {
        self.entries
            .iter()
            .position(|(key, _)| same_bytes(key.as_bytes(), level))
    }

    fn push(&mut self, key: Level, value: T) {
        // Exact capacity while scanned: a node with one child keeps one entry, not four.
        if self.entries.len() < LEVEL_MAP_SCAN_MAX {
            self.entries.reserve_exact(1);
        }
        let position = self.entries.len();
        self.entries.push((key, value));
        let Self { entries, index } = self;
        match (index, entries.last()) {
            (Some(index), Some((key, _))) if 2 * entries.len() <= index.slots.len() => {
                index.insert(key.as_bytes(), position);
            }
            (Some(_), _) => self.reindex(),
            (None, _) if entries.len() > LEVEL_MAP_SCAN_MAX => self.reindex(),
            (None, _) => {}
        }
    }

    fn shrink(&mut self) {
        let len = self.entries.len();
        match &self.index {
            Some(_) if len <= LEVEL_MAP_SCAN_MAX / 2 => self.index = None,
            Some(index)
                if index.slots.len() > LEVEL_INDEX_SLOTS_MIN && 8 * len < index.slots.len() =>
            {
                self.reindex();
            }
            _ => {}
        }
        // A level that once had many children should not keep their memory.
        if self.entries.capacity() > 4 * len.max(LEVEL_MAP_SCAN_MAX) {
            self.entries.shrink_to_fit();
        }
    }

    /// Builds the index afresh, at twice the slots the entries need.
    fn reindex(&mut self) {
        let slots = (4 * self.entries.len())
            .next_power_of_two()
            .max(LEVEL_INDEX_SLOTS_MIN);
        let random = RandomState::default();
        let mut index = LevelIndex {
            seeds: [0u8, 1, 2].map(|n| random.hash_one(n)),
            slots: vec![0; slots].into_boxed_slice(),
        };
        for (position, (key, _)) in self.entries.iter().enumerate() {
            index.insert(key.as_bytes(), position);
        }
        self.index = Some(Box::new(index));
    }
}

/// A hash index over the entries of a `LevelMap`: open addressing with linear probing.
struct LevelIndex {
    // Random per index: a client that picks its levels cannot aim them at one probe run
    // of every broker.
    seeds: [u64; 3],
    // An entry's position + 1, 0 for a free slot; a power of two in length, at most half
    // full.
    slots: Box<[u32]>,
}

impl LevelIndex {
    #[inline]
    fn home(&self, level: &[u8]) -> usize {
        // Truncating the hash is fine: the mask keeps its low bits anyway.
        (self.hash(level) as usize) & self.mask()
    }

    /// foldhash's mixing of short input, without its streaming `Hasher` around it: a
    /// level of up to 16 bytes costs two loads from each end and two multiplies.
    #[inline]
    fn hash(&self, level: &[u8]) -> u64 {
        let [seed_low, seed_high, seed_len] = self.seeds;
        let (low, high) = match (level.len(), ends::<8>(level), ends::<4>(level)) {
            (..=16, Some((first, last)), _) => {
                (u64::from_le_bytes(*first), u64::from_le_bytes(*last))
            }
            (_, None, Some((first, last))) => (
                u64::from(u32::from_le_bytes(*first)),
                u64::from(u32::from_le_bytes(*last)),
            ),
            (len @ 1..=3, _, _) => {
                let byte = |at: usize| u64::from(level.get(at).copied().unwrap_or_default());
                (byte(0), byte(len / 2) | byte(len - 1) << 8)
            }
            (0, _, _) => (0, 0),
            _ => return FixedState::with_seed(seed_low).hash_one(level),
        };
        // The second product mixes in the length, which the overlapping loads lose, and
        // spreads the first one's bits, which the slot mask alone would cut off.
        let mixed = folded_multiply(low ^ seed_low, high ^ seed_high);
        folded_multiply(mixed ^ level.len() as u64, seed_len)
    }

    #[inline]
    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// The slot and the entry position of `level`.
    #[inline]
    fn find<T>(&self, level: &[u8], entries: &[(Level, T)]) -> Option<(usize, usize)> {
        let mut slot = self.home(level);
        // Ends: at most half the slots are used.
        loop {
            let position = usize::try_from(*self.slots.get(slot)?)
                .ok()?
                .checked_sub(1)?;
            let (key, _) = entries.get(position)?;
            if same_bytes(key.as_bytes(), level) {
                return Some((slot, position));
            }
            slot = (slot + 1) & self.mask();
        }
    }

    fn insert(&mut self, level: &[u8], position: usize) {
        let Ok(stored) = u32::try_from(position + 1) else {
            panic!("a level map holds fewer than 2^32 levels");
        };
        let mut slot = self.home(level);
        while self.get(slot) != 0 {
            slot = (slot + 1) & self.mask();
        }
        self.set(slot, stored);
    }

    /// Frees `slot` and moves back the entries after it that probing would no longer
    /// reach (backward-shift deletion: no tombstones to clean up later).
    fn vacate<T>(&mut self, slot: usize, entries: &[(Level, T)]) {
        let mask = self.mask();
        let mut hole = slot;
        let mut next = (slot + 1) & mask;
        self.set(hole, 0);
        loop {
            let stored = self.get(next);
            let Some((key, _)) = usize::try_from(stored)
                .ok()
                .and_then(|stored| entries.get(stored.checked_sub(1)?))
            else {
                return;
            };
            // The entry at `next` may fill the hole unless its home lies after the hole
            // (cyclically, in `hole + 1..=next`): probing from there would not reach it.
            let home = self.home(key.as_bytes());
            if next.wrapping_sub(home) & mask >= next.wrapping_sub(hole) & mask {
                self.set(hole, stored);
                self.set(next, 0);
                hole = next;
            }
            next = (next + 1) & mask;
        }
    }

    /// Points the slot of `level` at its new position after a swap remove.
    fn repoint(&mut self, level: &[u8], from: usize, to: usize) {
        let (Ok(from), Ok(to)) = (u32::try_from(from + 1), u32::try_from(to + 1)) else {
            unreachable!("positions are stored as u32");
        };
        let mut slot = self.home(level);
        for _ in 0..self.slots.len() {
            if self.get(slot) == from {
                self.set(slot, to);
                return;
            }
            slot = (slot + 1) & self.mask();
        }
        unreachable!("an indexed level has a slot");
    }

    fn get(&self, slot: usize) -> u32 {
        self.slots.get(slot).copied().unwrap_or_default()
    }

    fn set(&mut self, slot: usize, stored: u32) {
        if let Some(target) = self.slots.get_mut(slot) {
            *target = stored;
        }
    }
}

/// The 128-bit product of `a` and `b`, its halves xored, as foldhash mixes. One round
/// leaves the low bits weak when one factor barely varies: `LevelIndex::hash` takes two.
#[inline]
fn folded_multiply(a: u64, b: u64) -> u64 {
    let full = u128::from(a) * u128::from(b);
    (full as u64) ^ ((full >> 64) as u64)
}

/// `a == b` without a call to `memcmp` for the short levels most topics are made of:
/// two overlapping loads from each end cover any length up to twice their width.
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    match a.len() {
        0 => true,
        1..=3 => {
            a.first() == b.first()
                && a.get(a.len() / 2) == b.get(b.len() / 2)
                && a.last() == b.last()
        }
        4..=7 => ends::<4>(a) == ends::<4>(b),
        8..=15 => ends::<8>(a) == ends::<8>(b),
        16..=32 => ends::<16>(a) == ends::<16>(b),
        _ => a == b,
    }
}

/// The first and the last `N` bytes of `bytes`, overlapping when it is shorter than `2 * N`.
#[inline]
fn ends<const N: usize>(bytes: &[u8]) -> Option<(&[u8; N], &[u8; N])> {
    Some((bytes.first_chunk()?, bytes.last_chunk()?))
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

    /// Inserts and removes in a random order across the scan/index threshold, both ways,
    /// and checks every key against a `HashMap` after each step.
    #[test]
    fn level_map_agrees_with_a_hash_map() {
        let keys: Vec<String> = (0..40)
            .map(|n| match n % 4 {
                0 => n.to_string(),
                1 => format!("k{n:05}"),
                2 => format!("level-{n:010}"),
                _ => format!("a-level-past-the-inline-limit-{n}"),
            })
            .collect();
        let mut state = 7_u64;
        let mut next = |bound: usize| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as usize % bound
        };
        let mut map = LevelMap::new();
        let mut model = std::collections::HashMap::new();
        let mut indexed = false;
        for step in 0..20_000 {
            // Phases of mostly inserts and mostly removes sweep the size up and down.
            let insert_odds = if (step / 500) % 2 == 0 { 3 } else { 1 };
            let key = keys.get(next(keys.len())).map_or("", String::as_str);
            if next(4) < insert_odds {
                let (value, created) = map.get_or_insert_with(key, || step);
                assert_eq!(created, !model.contains_key(key));
                assert_eq!(*value, *model.entry(key).or_insert(step));
            } else {
                assert_eq!(map.remove(key), model.remove(key));
            }
            indexed |= map.index.is_some();
            assert_eq!(map.len(), model.len());
            for key in &keys {
                assert_eq!(map.get(key), model.get(key.as_str()));
                let topic = format!("{key}/rest");
                let first = map.get_first(&topic);
                assert_eq!(first.map(|(value, _)| value), model.get(key.as_str()));
                assert!(first.is_none_or(|(_, rest)| rest == Some("rest")));
            }
        }
        assert!(indexed);
        let mut listed: Vec<&str> = map.iter().map(|(key, _)| key).collect();
        let mut expected: Vec<&str> = model.keys().copied().collect();
        listed.sort_unstable();
        expected.sort_unstable();
        assert_eq!(listed, expected);
    }

    #[test]
    fn a_level_is_a_whole_level() {
        let key = Level::new("ab");
        assert_eq!(key.rest_of("ab"), Some(None));
        assert_eq!(key.rest_of("ab/c"), Some(Some("c")));
        assert_eq!(key.rest_of("ab/"), Some(Some("")));
        assert_eq!(key.rest_of("abc"), None);
        assert_eq!(key.rest_of("a"), None);
        assert_eq!(key.rest_of("ax/c"), None);
        assert_eq!(Level::new("").rest_of("/x"), Some(Some("x")));
        assert_eq!(Level::new("").rest_of(""), Some(None));
    }

    #[test]
    fn same_bytes_is_slice_equality() {
        let text = "0123456789abcdefghijklmnopqrstuvwxyz0123456789";
        for len in 0..text.len() {
            let a = text.as_bytes().get(..len).unwrap_or_default();
            assert!(same_bytes(a, a));
            for at in 0..len {
                let mut b = a.to_vec();
                if let Some(byte) = b.get_mut(at) {
                    *byte ^= 1;
                }
                assert!(!same_bytes(a, &b), "{len} bytes differing at {at}");
            }
            assert!(!same_bytes(
                a,
                text.as_bytes().get(..len + 1).unwrap_or_default()
            ));
        }
    }

    /// Probes to find every key of a map of `keys` indexed with `seeds`.
    fn probes_to_find_all(keys: &[String], seeds: [u64; 3]) -> usize {
        let mut map = LevelMap::new();
        for key in keys {
            let _ = map.get_or_insert_with(key, || ());
        }
        let Some(index) = &mut map.index else {
            panic!("{} keys are indexed", keys.len());
        };
        index.seeds = seeds;
        index.slots.fill(0);
        for (position, (key, _)) in map.entries.iter().enumerate() {
            index.insert(key.as_bytes(), position);
        }
        let mut probes = 0;
        for (position, key) in keys.iter().enumerate() {
            let home = index.home(key.as_bytes());
            let Some((slot, found)) = index.find(key.as_bytes(), &map.entries) else {
                panic!("{key} is found");
            };
            assert_eq!(found, position);
            probes += 1 + (slot.wrapping_sub(home) & index.mask());
        }
        probes
    }

    /// A weak mix (one product, the slot from its low bits) gave one index in about
    /// thirty a mean of 5 to 10 probes on the keys `0`..`99`.
    #[test]
    fn probe_runs_stay_short_whatever_the_seeds() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next_seed = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            state ^ (state >> 29)
        };
        let key_sets: [Vec<String>; 4] = [
            (0..100).map(|n| n.to_string()).collect(),
            (0..2000).map(|n| format!("device-{n}")).collect(),
            (0..1000).map(|n| format!("{n:016x}")).collect(),
            (0..300)
                .map(|n| format!("a-level-past-sixteen-bytes-{n}"))
                .collect(),
        ];
        for keys in &key_sets {
            for _ in 0..100 {
                let seeds = [next_seed(), next_seed(), next_seed()];
                let probes = probes_to_find_all(keys, seeds);
                assert!(
                    probes <= 2 * keys.len(),
                    "{probes} probes for {keys:?} with {seeds:x?}"
                );
            }
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
