//! The subscription trie: topic filter -> subscribers, matched against every PUBLISH.
//!
//! One node per filter level. A node keeps its literal children in a `LevelMap` (a
//! scan of a few inline keys, hashed past a handful) and its `+` and `#` children in
//! slots of their own, so matching a topic level costs one short scan or one hash
//! lookup plus two pointer checks, whatever the fan-out. Plain subscribers and share
//! groups of a filter live on the node of its last level; `$share/{group}/{filter}` is
//! filed under `filter`'s node, in group `group`, apart from the plain subscribers.
//!
//! Depth: insert, remove and pruning loop; matching and dropping recurse, at most as deep
//! as the deepest filter. Callers validate filters with a bounded `levels_max` (see
//! [`crate::limits::TOPIC_LEVELS_DEFAULT`]) before inserting them; the trie does not
//! re-validate, but stays consistent (an insert is undone by the same remove) on any
//! string.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;

use foldhash::fast::RandomState;

use super::level::{split_first_level, LevelMap};
use super::validate::split_shared;

/// What an insert changed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct InsertOutcome<V> {
    /// The value this key had on this filter, if it was subscribed already.
    pub previous: Option<V>,
    /// The filter string had no subscriber before this insert (0 -> 1): the interest a
    /// shard announces to the other shards and nodes. `f`, `$share/g/f` and
    /// `$share/h/f` are three distinct interests.
    pub first_subscriber: bool,
}

/// What a successful remove changed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct RemoveOutcome<V> {
    /// The value the key had on the filter.
    pub value: V,
    /// The filter string has no subscriber left (1 -> 0): the interest is withdrawn.
    pub last_subscriber: bool,
}

/// One filter matching a topic, as seen by [`SubscriptionTrie::for_each_match`].
#[derive(Debug)]
pub enum Match<'a, K, V> {
    /// A plain subscriber: it gets a copy.
    Plain { key: K, value: &'a V },
    /// A share group: the caller picks one member (round robin, random, ...).
    Shared {
        /// The filter as subscribed, `$share/{group}/{filter}`: a stable name for the
        /// caller's per-group state such as a round-robin cursor.
        filter: &'a str,
        group: &'a str,
        members: Members<'a, K, V>,
    },
}

impl<K: Copy, V> Clone for Match<'_, K, V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K: Copy, V> Copy for Match<'_, K, V> {}

/// The members of a share group, in the order they joined (never empty).
#[derive(Debug)]
pub struct Members<'a, K, V> {
    entries: &'a [(K, V)],
}

impl<K: Copy, V> Clone for Members<'_, K, V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K: Copy, V> Copy for Members<'_, K, V> {}

impl<'a, K: Copy, V> Members<'a, K, V> {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The member at `index` in joining order; a round robin asks for
    /// `cursor % len()`.
    pub fn get(&self, index: usize) -> Option<(K, &'a V)> {
        self.entries.get(index).map(|(key, value)| (*key, value))
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = (K, &'a V)> + 'a {
        self.entries.iter().map(|(key, value)| (*key, value))
    }
}

/// Topic filters mapped to subscribers: one entry per (filter, key), `K` a subscriber
/// key such as a session id, `V` per-subscription data such as its options.
pub struct SubscriptionTrie<K, V> {
    root: Node<K, V>,
    len: usize,
    filter_count: usize,
    node_count: usize,
    version: u64,
}

impl<K, V> fmt::Debug for SubscriptionTrie<K, V> {
    // A trie may hold millions of entries: show its size, not its content.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionTrie")
            .field("len", &self.len)
            .field("filter_count", &self.filter_count)
            .field("node_count", &self.node_count)
            .finish_non_exhaustive()
    }
}

impl<K: Copy + Eq + Hash, V> Default for SubscriptionTrie<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Copy + Eq + Hash, V> SubscriptionTrie<K, V> {
    pub fn new() -> Self {
        Self {
            root: Node::new(),
            len: 0,
            filter_count: 0,
            node_count: 0,
            version: 0,
        }
    }

    /// Changes with every [`insert`](Self::insert) and [`remove`](Self::remove) call,
    /// whatever it did: a match result taken at one version holds while it is
    /// unchanged, so callers may keep it.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Number of (filter, key) entries.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of distinct filter strings with at least one subscriber.
    pub fn filter_count(&self) -> usize {
        self.filter_count
    }

    /// Number of nodes below the root; 0 for an empty trie, whatever it held before.
    pub fn node_count(&self) -> usize {
        self.node_count
    }

    /// Subscribes `key` to `filter` (validated by the caller), replacing the value of an
    /// existing subscription, which keeps its place in a share group. A filter
    /// `$share/{group}/{f}` makes `key` a member of share group `group` on `f`.
    pub fn insert(&mut self, filter: &str, key: K, value: V) -> InsertOutcome<V> {
        self.version = self.version.wrapping_add(1);
        let (group, path) = group_and_path(filter);
        let mut node = &mut self.root;
        for level in path.split('/') {
            let (child, created) = node.child_or_insert(level);
            self.node_count += usize::from(created);
            node = child;
        }
        let (previous, first_subscriber) = match group {
            None => {
                let first = node.plain.is_empty();
                (node.plain.insert(key, value), first)
            }
            Some(group) => match node.shared.iter_mut().find(|g| &*g.name == group) {
                Some(existing) => (existing.members.insert(key, value), false),
                None => {
                    node.shared.push(ShareGroup::new(filter, group, key, value));
                    (None, true)
                }
            },
        };
        self.len += usize::from(previous.is_none());
        self.filter_count += usize::from(first_subscriber);
        InsertOutcome {
            previous,
            first_subscriber,
        }
    }

    /// Unsubscribes `key` from `filter`; `None` if it was not subscribed. Nodes left
    /// without subscribers or children are freed at once.
    pub fn remove(&mut self, filter: &str, key: K) -> Option<RemoveOutcome<V>> {
        self.version = self.version.wrapping_add(1);
        let (group, path) = group_and_path(filter);
        // Nodes below the deepest ancestor that keeps a reason to exist are pruned if the
        // target ends up empty: they form a chain with nothing else on it.
        let mut keep_depth = 0;
        let mut depth = 0;
        let mut node = &mut self.root;
        for level in path.split('/') {
            if depth > 0 && (node.has_entries() || node.child_count() > 1) {
                keep_depth = depth;
            }
            node = node.child_mut(level)?;
            depth += 1;
        }
        let (value, last_subscriber) = match group {
            None => {
                let value = node.plain.remove(key, Removal::SwapLast)?;
                (value, node.plain.is_empty())
            }
            Some(group) => {
                let position = node.shared.iter().position(|g| &*g.name == group)?;
                let share = node.shared.get_mut(position)?;
                let value = share.members.remove(key, Removal::KeepOrder)?;
                let last = share.members.is_empty();
                if last {
                    node.shared.swap_remove(position);
                }
                (value, last)
            }
        };
        let prune = node.is_empty();
        self.len -= 1;
        self.filter_count -= usize::from(last_subscriber);
        if prune {
            self.prune(path, keep_depth, depth);
        }
        Some(RemoveOutcome {
            value,
            last_subscriber,
        })
    }

    /// The value of `key`'s subscription to `filter`.
    pub fn get(&self, filter: &str, key: K) -> Option<&V> {
        let (group, path) = group_and_path(filter);
        let mut node = &self.root;
        for level in path.split('/') {
            node = node.child(level)?;
        }
        match group {
            None => node.plain.get(key),
            Some(group) => node
                .shared
                .iter()
                .find(|g| &*g.name == group)?
                .members
                .get(key),
        }
    }

    /// Calls `visit` once per filter matching the topic name `topic`: once per plain
    /// subscriber of each matching filter, once per share group. A subscriber with
    /// several matching filters is visited for each (MQTT 5 4.7.1.3 lets the broker
    /// deliver once or once per filter; the caller decides). Allocates nothing.
    pub fn for_each_match<'a>(&'a self, topic: &str, mut visit: impl FnMut(Match<'a, K, V>)) {
        // MQTT 5 4.7.2: a leading wildcard does not match a name starting with '$'.
        let wildcards = if topic.starts_with('$') {
            Wildcards::Skip
        } else {
            Wildcards::Match
        };
        self.root.match_level(topic, wildcards, &mut visit);
    }

    /// Calls `visit` with every filter string that has subscribers, as it was inserted
    /// (`$share/{group}/{filter}` for a share group): the full interest set a shard sends
    /// to a peer that (re)connects.
    pub fn for_each_filter(&self, mut visit: impl FnMut(&str)) {
        let mut path = String::new();
        // (node, length of its parent's path or None under the root, its level)
        let mut stack: Vec<(&Node<K, V>, Option<usize>, &str)> = Vec::new();
        self.root.push_children(None, &mut stack);
        while let Some((node, parent_len, level)) = stack.pop() {
            match parent_len {
                None => path.clear(),
                Some(len) => {
                    path.truncate(len);
                    path.push('/');
                }
            }
            path.push_str(level);
            if !node.plain.is_empty() {
                visit(&path);
            }
            for share in &node.shared {
                visit(&share.filter);
            }
            node.push_children(Some(path.len()), &mut stack);
        }
    }

    fn prune(&mut self, path: &str, keep_depth: usize, depth: usize) {
        let mut levels = path.split('/');
        let mut node = &mut self.root;
        for level in levels.by_ref().take(keep_depth) {
            match node.child_mut(level) {
                Some(child) => node = child,
                None => return,
            }
        }
        if let Some(level) = levels.next() {
            if node.remove_child(level) {
                self.node_count -= depth - keep_depth;
            }
        }
    }
}

/// The share group of a filter, if it names one, and the filter path to file it under.
fn group_and_path(filter: &str) -> (Option<&str>, &str) {
    match split_shared(filter) {
        Some((group, inner)) => (Some(group), inner),
        None => (None, filter),
    }
}

#[derive(Clone, Copy)]
enum Wildcards {
    Match,
    Skip,
}

struct Node<K, V> {
    // Children boxed: a node is ~100 bytes, and a map with thousands of children moves
    // them when it grows.
    children: LevelMap<Box<Node<K, V>>>,
    plus: Option<Box<Node<K, V>>>,
    hash: Option<Box<Node<K, V>>>,
    plain: Entries<K, V>,
    // Usually zero or a handful per filter, so a vector beats a map.
    shared: Vec<ShareGroup<K, V>>,
}

struct ShareGroup<K, V> {
    filter: Box<str>,
    name: Box<str>,
    members: Entries<K, V>,
}

impl<K: Copy + Eq + Hash, V> ShareGroup<K, V> {
    fn new(filter: &str, name: &str, key: K, value: V) -> Self {
        let mut members = Entries::new();
        // A fresh group has no member to replace.
        let _ = members.insert(key, value);
        Self {
            filter: filter.into(),
            name: name.into(),
            members,
        }
    }
}

impl<K: Copy + Eq + Hash, V> Node<K, V> {
    fn new() -> Self {
        Self {
            children: LevelMap::new(),
            plus: None,
            hash: None,
            plain: Entries::new(),
            shared: Vec::new(),
        }
    }

    fn has_entries(&self) -> bool {
        !self.plain.is_empty() || !self.shared.is_empty()
    }

    fn child_count(&self) -> usize {
        self.children.len() + usize::from(self.plus.is_some()) + usize::from(self.hash.is_some())
    }

    fn is_empty(&self) -> bool {
        !self.has_entries() && self.child_count() == 0
    }

    fn child(&self, level: &str) -> Option<&Self> {
        match level {
            "+" => self.plus.as_deref(),
            "#" => self.hash.as_deref(),
            _ => self.children.get(level).map(|child| &**child),
        }
    }

    fn child_mut(&mut self, level: &str) -> Option<&mut Self> {
        match level {
            "+" => self.plus.as_deref_mut(),
            "#" => self.hash.as_deref_mut(),
            _ => self.children.get_mut(level).map(|child| &mut **child),
        }
    }

    fn child_or_insert(&mut self, level: &str) -> (&mut Self, bool) {
        let slot = match level {
            "+" => &mut self.plus,
            "#" => &mut self.hash,
            _ => {
                let (child, created) = self
                    .children
                    .get_or_insert_with(level, || Box::new(Node::new()));
                return (child, created);
            }
        };
        let created = slot.is_none();
        (slot.get_or_insert_with(|| Box::new(Node::new())), created)
    }

    fn remove_child(&mut self, level: &str) -> bool {
        match level {
            "+" => self.plus.take().is_some(),
            "#" => self.hash.take().is_some(),
            _ => self.children.remove(level).is_some(),
        }
    }

    /// Matches `topic`, the levels of the name still to match, against this node's
    /// children. Follows the literal path in a loop: only a `+` child recurses, so a
    /// name that meets no wildcard pays no call per level.
    fn match_level<'a, F>(&'a self, mut topic: &str, mut wildcards: Wildcards, visit: &mut F)
    where
        F: FnMut(Match<'a, K, V>),
    {
        let mut node = self;
        loop {
            let plus = match wildcards {
                Wildcards::Match => {
                    if let Some(hash) = &node.hash {
                        hash.visit_entries(visit);
                    }
                    node.plus.as_deref()
                }
                Wildcards::Skip => None,
            };
            let found = match plus {
                Some(plus) => {
                    let (level, rest) = split_first_level(topic);
                    plus.match_rest(rest, visit);
                    node.children.get(level).map(|child| (child, rest))
                }
                None => node.children.get_first(topic),
            };
            let Some((child, rest)) = found else {
                return;
            };
            match rest {
                Some(rest) => {
                    node = child;
                    topic = rest;
                    wildcards = Wildcards::Match;
                }
                None => return child.match_end(visit),
            }
        }
    }

    /// This node matched a level; `rest` are the levels after it, if any.
    fn match_rest<'a, F>(&'a self, rest: Option<&str>, visit: &mut F)
    where
        F: FnMut(Match<'a, K, V>),
    {
        match rest {
            Some(rest) => self.match_level(rest, Wildcards::Match, visit),
            None => self.match_end(visit),
        }
    }

    /// This node matched the last level of the name.
    fn match_end<'a, F>(&'a self, visit: &mut F)
    where
        F: FnMut(Match<'a, K, V>),
    {
        self.visit_entries(visit);
        // `sport/#` also matches `sport`.
        if let Some(hash) = &self.hash {
            hash.visit_entries(visit);
        }
    }

    fn visit_entries<'a, F>(&'a self, visit: &mut F)
    where
        F: FnMut(Match<'a, K, V>),
    {
        for (key, value) in &self.plain.items {
            visit(Match::Plain { key: *key, value });
        }
        for share in &self.shared {
            visit(Match::Shared {
                filter: &share.filter,
                group: &share.name,
                members: Members {
                    entries: &share.members.items,
                },
            });
        }
    }

    fn push_children<'a>(
        &'a self,
        path_len: Option<usize>,
        stack: &mut Vec<(&'a Self, Option<usize>, &'a str)>,
    ) {
        let named = self.children.iter().map(|(level, child)| (&**child, level));
        let plus = self.plus.as_deref().map(|child| (child, "+"));
        let hash = self.hash.as_deref().map(|child| (child, "#"));
        for (child, level) in named.chain(plus).chain(hash) {
            stack.push((child, path_len, level));
        }
    }
}

/// How a removal treats the order of the remaining entries.
#[derive(Clone, Copy)]
enum Removal {
    /// Plain subscribers have no order: move the last entry into the hole, O(1).
    SwapLast,
    /// Share group members keep joining order, which a round robin walks.
    KeepOrder,
}

/// The (key, value) pairs of one filter or share group. A vector keeps matching a plain
/// slice walk; past `INDEX_LEN_MIN` entries a key -> position index keeps insert and
/// remove from turning quadratic when thousands of clients share one filter.
struct Entries<K, V> {
    items: Vec<(K, V)>,
    // Boxed: most entry sets never need an index, and every node carries one `Entries`.
    #[allow(clippy::box_collection)]
    index: Option<Box<HashMap<K, usize, RandomState>>>,
}

const INDEX_LEN_MIN: usize = 16;

impl<K: Copy + Eq + Hash, V> Entries<K, V> {
    fn new() -> Self {
        Self {
            items: Vec::new(),
            index: None,
        }
    }

    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn position(&self, key: K) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(&key).copied(),
            None => self.items.iter().position(|(k, _)| *k == key),
        }
    }

    fn get(&self, key: K) -> Option<&V> {
        let (_, value) = self.items.get(self.position(key)?)?;
        Some(value)
    }

    fn insert(&mut self, key: K, value: V) -> Option<V> {
        if let Some((_, slot)) = self.position(key).and_then(|p| self.items.get_mut(p)) {
            return Some(std::mem::replace(slot, value));
        }
        if let Some(index) = &mut self.index {
            index.insert(key, self.items.len());
        }
        self.items.push((key, value));
        if self.index.is_none() && self.items.len() >= INDEX_LEN_MIN {
            let index = self.items.iter().enumerate().map(|(p, (k, _))| (*k, p));
            self.index = Some(Box::new(index.collect()));
        }
        None
    }

    fn remove(&mut self, key: K, removal: Removal) -> Option<V> {
        let position = self.position(key)?;
        if position >= self.items.len() {
            return None;
        }
        let (_, value) = match removal {
            Removal::SwapLast => self.items.swap_remove(position),
            Removal::KeepOrder => self.items.remove(position),
        };
        if self.items.len() < INDEX_LEN_MIN / 2 {
            self.index = None;
        }
        if let Some(index) = &mut self.index {
            index.remove(&key);
            let moved = match removal {
                Removal::SwapLast => self.items.get(position..position + 1),
                Removal::KeepOrder => self.items.get(position..),
            };
            for (offset, (moved_key, _)) in moved.unwrap_or_default().iter().enumerate() {
                index.insert(*moved_key, position + offset);
            }
        }
        // A filter that once had many subscribers should not keep their memory.
        if self.items.capacity() > 4 * self.items.len().max(4) {
            self.items.shrink_to_fit();
        }
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Trie = SubscriptionTrie<u32, &'static str>;

    fn matches_of(trie: &Trie, topic: &str) -> Vec<String> {
        let mut found = Vec::new();
        trie.for_each_match(topic, |m| match m {
            Match::Plain { key, value } => found.push(format!("{value}@{key}")),
            Match::Shared {
                filter,
                group,
                members,
            } => {
                let keys: Vec<String> = members.iter().map(|(k, _)| k.to_string()).collect();
                found.push(format!("{filter}[{group}:{}]", keys.join(",")));
            }
        });
        found.sort();
        found
    }

    fn trie_of(filters: &[&'static str]) -> Trie {
        let mut trie = Trie::new();
        for (key, filter) in (0u32..).zip(filters) {
            assert!(trie.insert(filter, key, filter).first_subscriber);
        }
        trie
    }

    #[test]
    fn spec_examples() {
        let trie = trie_of(&[
            "sport/tennis/player1/#",
            "sport/tennis/+",
            "sport/+",
            "+/+",
            "/+",
            "+",
            "#",
            "$SYS/#",
            "$SYS/monitor/+",
            "+/monitor/Clients",
        ]);
        assert_eq!(
            matches_of(&trie, "sport/tennis/player1"),
            ["#@6", "sport/tennis/+@1", "sport/tennis/player1/#@0"]
        );
        assert_eq!(
            matches_of(&trie, "sport/tennis/player1/score/wimbledon"),
            ["#@6", "sport/tennis/player1/#@0"]
        );
        assert_eq!(matches_of(&trie, "sport"), ["#@6", "+@5"]);
        assert_eq!(matches_of(&trie, "sport/"), ["#@6", "+/+@3", "sport/+@2"]);
        assert_eq!(matches_of(&trie, "/finance"), ["#@6", "+/+@3", "/+@4"]);
        assert_eq!(
            matches_of(&trie, "$SYS/monitor/Clients"),
            ["$SYS/#@7", "$SYS/monitor/+@8"]
        );
        assert_eq!(matches_of(&trie, "$SYS"), ["$SYS/#@7"]);
        assert_eq!(matches_of(&trie, "$other"), Vec::<String>::new());
    }

    #[test]
    fn several_filters_of_one_subscriber_each_match() {
        let mut trie = Trie::new();
        let _ = trie.insert("a/+", 1, "a/+");
        let _ = trie.insert("a/b", 1, "a/b");
        let _ = trie.insert("#", 1, "#");
        assert_eq!(matches_of(&trie, "a/b"), ["#@1", "a/+@1", "a/b@1"]);
    }

    #[test]
    fn reinsert_replaces_and_reports_transitions() {
        let mut trie = Trie::new();
        let first = trie.insert("a/b", 1, "one");
        assert_eq!(
            first,
            InsertOutcome {
                previous: None,
                first_subscriber: true
            }
        );
        let again = trie.insert("a/b", 1, "two");
        assert_eq!(again.previous, Some("one"));
        assert!(!again.first_subscriber);
        let second = trie.insert("a/b", 2, "three");
        assert!(!second.first_subscriber);
        assert_eq!((trie.len(), trie.filter_count()), (2, 1));
        assert_eq!(trie.get("a/b", 1), Some(&"two"));

        let gone = trie.remove("a/b", 1);
        assert_eq!(
            gone,
            Some(RemoveOutcome {
                value: "two",
                last_subscriber: false
            })
        );
        assert_eq!(trie.remove("a/b", 1), None);
        let last = trie.remove("a/b", 2);
        assert_eq!(last.map(|o| o.last_subscriber), Some(true));
        assert!(trie.is_empty());
        assert_eq!((trie.node_count(), trie.filter_count()), (0, 0));
    }

    #[test]
    fn shared_groups_are_separate_interests() {
        let mut trie = Trie::new();
        assert!(trie.insert("a/+", 1, "p1").first_subscriber);
        assert!(trie.insert("$share/g/a/+", 1, "g1").first_subscriber);
        assert!(trie.insert("$share/h/a/+", 2, "h2").first_subscriber);
        assert!(!trie.insert("$share/g/a/+", 3, "g3").first_subscriber);
        assert!(!trie.insert("$share/g/a/+", 2, "g2").first_subscriber);
        assert_eq!(
            (trie.len(), trie.filter_count(), trie.node_count()),
            (5, 3, 2)
        );
        assert_eq!(
            matches_of(&trie, "a/x"),
            ["$share/g/a/+[g:1,3,2]", "$share/h/a/+[h:2]", "p1@1"]
        );
        // Re-subscribing keeps the member's place; leaving keeps the others' order.
        assert_eq!(trie.insert("$share/g/a/+", 1, "g1'").previous, Some("g1"));
        assert_eq!(trie.remove("$share/g/a/+", 3).map(|o| o.value), Some("g3"));
        assert_eq!(
            matches_of(&trie, "a/x"),
            ["$share/g/a/+[g:1,2]", "$share/h/a/+[h:2]", "p1@1"]
        );
        let mut filters = Vec::new();
        trie.for_each_filter(|f| filters.push(f.to_owned()));
        filters.sort();
        assert_eq!(filters, ["$share/g/a/+", "$share/h/a/+", "a/+"]);
        assert!(!trie
            .remove("$share/g/a/+", 1)
            .is_some_and(|o| o.last_subscriber));
        assert!(trie
            .remove("$share/g/a/+", 2)
            .is_some_and(|o| o.last_subscriber));
        assert!(trie
            .remove("$share/h/a/+", 2)
            .is_some_and(|o| o.last_subscriber));
        assert_eq!(trie.node_count(), 2);
        assert!(trie.remove("a/+", 1).is_some_and(|o| o.last_subscriber));
        assert_eq!((trie.len(), trie.node_count()), (0, 0));
    }

    #[test]
    fn members_pick_by_index() {
        let mut trie = Trie::new();
        for key in 10..13 {
            let _ = trie.insert("$share/g/t", key, "v");
        }
        let mut picked = Vec::new();
        for cursor in 0..4usize {
            trie.for_each_match("t", |m| {
                if let Match::Shared { members, .. } = m {
                    picked.extend(members.get(cursor % members.len()).map(|(k, _)| k));
                }
            });
        }
        assert_eq!(picked, [10, 11, 12, 10]);
    }

    #[test]
    fn malformed_share_filters_are_plain() {
        let mut trie = Trie::new();
        let _ = trie.insert("$share/g", 1, "x");
        let _ = trie.insert("$share//a", 1, "y");
        assert_eq!(matches_of(&trie, "$share/g"), ["x@1"]);
        assert_eq!(matches_of(&trie, "$share//a"), ["y@1"]);
    }

    #[test]
    fn dollar_rule_applies_to_first_level_only() {
        let trie = trie_of(&["+/a", "#", "x/+", "x/#", "$s/+"]);
        assert_eq!(matches_of(&trie, "$s/a"), ["$s/+@4"]);
        assert_eq!(matches_of(&trie, "x/$s"), ["#@1", "x/#@3", "x/+@2"]);
    }

    #[test]
    fn pruning_keeps_shared_paths() {
        let mut trie = Trie::new();
        let _ = trie.insert("a/b/c/d", 1, "long");
        let _ = trie.insert("a/b", 2, "short");
        let _ = trie.insert("a/+/c", 3, "side");
        assert_eq!(trie.node_count(), 6);
        let _ = trie.remove("a/b/c/d", 1);
        assert_eq!(trie.node_count(), 4);
        assert_eq!(matches_of(&trie, "a/b"), ["short@2"]);
        let _ = trie.remove("a/b", 2);
        assert_eq!(trie.node_count(), 3);
        assert_eq!(matches_of(&trie, "a/b/c"), ["side@3"]);
        let _ = trie.remove("a/+/c", 3);
        assert_eq!(trie.node_count(), 0);
    }

    #[test]
    fn removing_unknown_changes_nothing() {
        let mut trie = trie_of(&["a/b"]);
        assert_eq!(trie.remove("a/b", 9), None);
        assert_eq!(trie.remove("a/b/c", 0), None);
        assert_eq!(trie.remove("a", 0), None);
        assert_eq!(trie.remove("$share/g/a/b", 0), None);
        assert_eq!((trie.len(), trie.node_count()), (1, 2));
    }

    #[test]
    fn many_subscribers_on_one_filter() {
        let mut trie = Trie::new();
        for key in 0..1000 {
            let _ = trie.insert("big", key, "p");
            let _ = trie.insert("$share/g/big", key, "s");
        }
        assert_eq!(trie.insert("big", 500, "p2").previous, Some("p"));
        for key in (0..1000).step_by(2) {
            assert!(trie.remove("big", key).is_some());
            assert!(trie.remove("$share/g/big", key).is_some());
        }
        assert_eq!(trie.get("big", 501), Some(&"p"));
        assert_eq!(trie.get("big", 500), None);
        let mut plain = 0;
        let mut order = Vec::new();
        trie.for_each_match("big", |m| match m {
            Match::Plain { .. } => plain += 1,
            Match::Shared { members, .. } => order.extend(members.iter().map(|(k, _)| k)),
        });
        assert_eq!(plain, 500);
        assert_eq!(order, (1..1000).step_by(2).collect::<Vec<_>>());
        for key in (1..1000).step_by(2) {
            assert!(trie.remove("big", key).is_some());
            assert!(trie.remove("$share/g/big", key).is_some());
        }
        assert_eq!((trie.len(), trie.node_count()), (0, 0));
    }

    #[test]
    fn long_levels_are_keys_like_short_ones() {
        let inline = "i".repeat(22);
        let heap = "h".repeat(23);
        let long = format!("{inline}/{heap}/ünïcödé-ünïcödé-ünïcödé");
        let mut trie: SubscriptionTrie<u32, ()> = SubscriptionTrie::new();
        let _ = trie.insert(&long, 1, ());
        let _ = trie.insert(&format!("{inline}/+/#"), 2, ());
        let mut keys = Vec::new();
        trie.for_each_match(&long, |m| {
            if let Match::Plain { key, .. } = m {
                keys.push(key);
            }
        });
        keys.sort();
        assert_eq!(keys, [1, 2]);
        let mut filters = Vec::new();
        trie.for_each_filter(|f| filters.push(f.to_owned()));
        assert!(filters.contains(&long));
        assert!(trie.remove(&long, 1).is_some());
        assert!(trie.remove(&format!("{inline}/+/#"), 2).is_some());
        assert_eq!(trie.node_count(), 0);
    }

    #[test]
    fn wide_levels_match_while_they_grow_and_shrink() {
        let mut trie: SubscriptionTrie<u32, ()> = SubscriptionTrie::new();
        let _ = trie.insert("pairs/+", 1000, ());
        for i in 0..100 {
            let _ = trie.insert(&format!("pairs/{i}"), i, ());
        }
        let keys_of = |trie: &SubscriptionTrie<u32, ()>, topic: &str| {
            let mut keys = Vec::new();
            trie.for_each_match(topic, |m| {
                if let Match::Plain { key, .. } = m {
                    keys.push(key);
                }
            });
            keys.sort_unstable();
            keys
        };
        for i in (0..100).step_by(2) {
            assert!(trie.remove(&format!("pairs/{i}"), i).is_some());
        }
        for i in 0..100 {
            let expected = if i % 2 == 1 {
                vec![i, 1000]
            } else {
                vec![1000]
            };
            assert_eq!(keys_of(&trie, &format!("pairs/{i}")), expected);
        }
        for i in (1..97).step_by(2) {
            assert!(trie.remove(&format!("pairs/{i}"), i).is_some());
        }
        assert_eq!(keys_of(&trie, "pairs/97"), [97, 1000]);
        assert_eq!(keys_of(&trie, "pairs/99"), [99, 1000]);
        assert_eq!(keys_of(&trie, "pairs/95"), [1000]);
        assert_eq!(trie.node_count(), 4);
    }

    #[test]
    fn filters_are_listed_as_inserted() {
        let trie = trie_of(&["a", "/", "a//b", "+/#", "#", "$share/g//x", "a/b"]);
        let mut filters = Vec::new();
        trie.for_each_filter(|f| filters.push(f.to_owned()));
        filters.sort();
        assert_eq!(
            filters,
            ["#", "$share/g//x", "+/#", "/", "a", "a//b", "a/b"]
        );
    }
}
