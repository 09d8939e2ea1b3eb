//! The retained index: topic name -> retained message, searched with a filter when a
//! client subscribes.
//!
//! Names hold no wildcards, so a node has only literal children. A node keeps the whole
//! name beside its value, which lets a match report names without rebuilding them.

use std::collections::HashMap;
use std::fmt;

use foldhash::fast::RandomState;

use super::level::{split_first_level, Level};

/// Retained values keyed by topic name (validated by the caller).
pub struct RetainedTree<V> {
    root: Node<V>,
    len: usize,
    node_count: usize,
}

impl<V> fmt::Debug for RetainedTree<V> {
    // The values are whole messages: show the size of the tree, not its content.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetainedTree")
            .field("len", &self.len)
            .field("node_count", &self.node_count)
            .finish_non_exhaustive()
    }
}

impl<V> Default for RetainedTree<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> RetainedTree<V> {
    pub fn new() -> Self {
        Self {
            root: Node::new(),
            len: 0,
            node_count: 0,
        }
    }

    /// Number of retained topics.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of nodes below the root; 0 once every topic is removed.
    pub fn node_count(&self) -> usize {
        self.node_count
    }

    /// Stores `value` for `topic`, returning the value it replaces.
    pub fn insert(&mut self, topic: &str, value: V) -> Option<V> {
        let mut node = &mut self.root;
        for level in topic.split('/') {
            let (child, created) = node.child_or_insert(level);
            self.node_count += usize::from(created);
            node = child;
        }
        match &mut node.entry {
            Some(entry) => Some(std::mem::replace(&mut entry.value, value)),
            None => {
                node.entry = Some(Entry {
                    topic: topic.into(),
                    value,
                });
                self.len += 1;
                None
            }
        }
    }

    /// Removes the value of `topic`, freeing the nodes nothing else needs.
    pub fn remove(&mut self, topic: &str) -> Option<V> {
        // As in the subscription trie: below the deepest ancestor with a value or another
        // child, the path is a chain that goes away with the target.
        let mut keep_depth = 0;
        let mut depth = 0;
        let mut node = &mut self.root;
        for level in topic.split('/') {
            if depth > 0 && (node.entry.is_some() || node.children.len() > 1) {
                keep_depth = depth;
            }
            node = node.children.get_mut(level.as_bytes())?;
            depth += 1;
        }
        let entry = node.entry.take()?;
        self.len -= 1;
        if node.children.is_empty() {
            self.prune(topic, keep_depth, depth);
        }
        Some(entry.value)
    }

    pub fn get(&self, topic: &str) -> Option<&V> {
        let mut node = &self.root;
        for level in topic.split('/') {
            node = node.children.get(level.as_bytes())?;
        }
        node.entry.as_ref().map(|entry| &entry.value)
    }

    /// Calls `visit` with every stored topic matching `filter` (a valid plain filter)
    /// and its value, in no particular order. `+` and `#` follow MQTT 5 4.7, including
    /// the rule that a leading wildcard skips topics starting with `$`.
    pub fn for_each_match<'a>(&'a self, filter: &str, mut visit: impl FnMut(&'a str, &'a V)) {
        self.root.match_level(filter, Position::Root, &mut visit);
    }

    fn prune(&mut self, topic: &str, keep_depth: usize, depth: usize) {
        let mut levels = topic.split('/');
        let mut node = &mut self.root;
        for level in levels.by_ref().take(keep_depth) {
            match node.children.get_mut(level.as_bytes()) {
                Some(child) => node = child,
                None => return,
            }
        }
        if let Some(level) = levels.next() {
            if node.children.remove(level.as_bytes()).is_some() {
                self.node_count -= depth - keep_depth;
                if node.children.capacity() > 4 * node.children.len().max(8) {
                    node.children.shrink_to_fit();
                }
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Position {
    Root,
    Inner,
}

struct Node<V> {
    children: HashMap<Level, Box<Node<V>>, RandomState>,
    entry: Option<Entry<V>>,
}

struct Entry<V> {
    topic: Box<str>,
    value: V,
}

impl<V> Node<V> {
    fn new() -> Self {
        Self {
            children: HashMap::with_hasher(RandomState::default()),
            entry: None,
        }
    }

    fn child_or_insert(&mut self, level: &str) -> (&mut Self, bool) {
        // Retained publishes mostly overwrite an existing topic: with inline levels the
        // owned key the entry API wants costs a copy, not an allocation.
        let mut created = false;
        let child = self.children.entry(Level::new(level)).or_insert_with(|| {
            created = true;
            Box::new(Node::new())
        });
        (child, created)
    }

    /// Matches `filter`, the filter levels still to match, against this node's children.
    fn match_level<'a, F>(&'a self, filter: &str, position: Position, visit: &mut F)
    where
        F: FnMut(&'a str, &'a V),
    {
        let (level, rest) = split_first_level(filter);
        match level {
            "#" => self.visit_subtree(position, visit),
            "+" => {
                for (name, child) in &self.children {
                    if position == Position::Root && name.as_bytes().starts_with(b"$") {
                        continue;
                    }
                    child.match_rest(rest, visit);
                }
            }
            _ => {
                if let Some(child) = self.children.get(level.as_bytes()) {
                    child.match_rest(rest, visit);
                }
            }
        }
    }

    fn match_rest<'a, F>(&'a self, rest: Option<&str>, visit: &mut F)
    where
        F: FnMut(&'a str, &'a V),
    {
        match rest {
            Some(rest) => self.match_level(rest, Position::Inner, visit),
            None => self.visit_entry(visit),
        }
    }

    /// `#` matches this node (`sport/#` matches `sport`) and everything below it.
    fn visit_subtree<'a, F>(&'a self, position: Position, visit: &mut F)
    where
        F: FnMut(&'a str, &'a V),
    {
        // An explicit stack: a subtree may be deep, and this runs per SUBSCRIBE.
        let mut stack: Vec<&Node<V>> = Vec::new();
        match position {
            Position::Inner => stack.push(self),
            Position::Root => stack.extend(
                self.children
                    .iter()
                    .filter(|(name, _)| !name.as_bytes().starts_with(b"$"))
                    .map(|(_, child)| &**child),
            ),
        }
        while let Some(node) = stack.pop() {
            node.visit_entry(visit);
            stack.extend(node.children.values().map(|child| &**child));
        }
    }

    fn visit_entry<'a, F>(&'a self, visit: &mut F)
    where
        F: FnMut(&'a str, &'a V),
    {
        if let Some(entry) = &self.entry {
            visit(&entry.topic, &entry.value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree_of(topics: &[&'static str]) -> RetainedTree<&'static str> {
        let mut tree = RetainedTree::new();
        for &topic in topics {
            assert_eq!(tree.insert(topic, topic), None);
        }
        tree
    }

    fn matches_of(tree: &RetainedTree<&'static str>, filter: &str) -> Vec<String> {
        let mut found = Vec::new();
        tree.for_each_match(filter, |topic, value| {
            assert_eq!(topic, *value);
            found.push(topic.to_owned());
        });
        found.sort();
        found
    }

    #[test]
    fn spec_examples() {
        let tree = tree_of(&[
            "sport",
            "sport/",
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport/tennis/player2",
            "/finance",
            "finance",
            "$SYS/monitor/Clients",
            "$SYS",
        ]);
        assert_eq!(
            matches_of(&tree, "sport/tennis/player1/#"),
            ["sport/tennis/player1", "sport/tennis/player1/ranking"]
        );
        assert_eq!(matches_of(&tree, "sport/+"), ["sport/"]);
        assert_eq!(
            matches_of(&tree, "sport/#"),
            [
                "sport",
                "sport/",
                "sport/tennis/player1",
                "sport/tennis/player1/ranking",
                "sport/tennis/player2"
            ]
        );
        assert_eq!(matches_of(&tree, "+/+"), ["/finance", "sport/"]);
        assert_eq!(matches_of(&tree, "/+"), ["/finance"]);
        assert_eq!(matches_of(&tree, "+"), ["finance", "sport"]);
        assert_eq!(matches_of(&tree, "#").len(), 7);
        assert_eq!(matches_of(&tree, "+/monitor/Clients"), Vec::<String>::new());
        assert_eq!(
            matches_of(&tree, "$SYS/#"),
            ["$SYS", "$SYS/monitor/Clients"]
        );
        assert_eq!(
            matches_of(&tree, "$SYS/+/Clients"),
            ["$SYS/monitor/Clients"]
        );
        assert_eq!(matches_of(&tree, "sport/tennis"), Vec::<String>::new());
    }

    #[test]
    fn insert_replaces_get_and_remove() {
        let mut tree = RetainedTree::new();
        assert_eq!(tree.insert("a/b", 1), None);
        assert_eq!(tree.insert("a/b", 2), Some(1));
        assert_eq!(tree.get("a/b"), Some(&2));
        assert_eq!(tree.get("a"), None);
        assert_eq!(tree.remove("a"), None);
        assert_eq!(tree.remove("a/b/c"), None);
        assert_eq!((tree.len(), tree.node_count()), (1, 2));
        assert_eq!(tree.remove("a/b"), Some(2));
        assert_eq!(tree.remove("a/b"), None);
        assert!(tree.is_empty());
        assert_eq!(tree.node_count(), 0);
    }

    #[test]
    fn pruning_keeps_what_others_need() {
        let mut tree = tree_of(&["a/b/c/d", "a/b", "a/x"]);
        assert_eq!(tree.node_count(), 5);
        assert_eq!(tree.remove("a/b/c/d"), Some("a/b/c/d"));
        assert_eq!(tree.node_count(), 3);
        assert_eq!(tree.remove("a/b"), Some("a/b"));
        assert_eq!(tree.node_count(), 2);
        assert_eq!(matches_of(&tree, "a/#"), ["a/x"]);
        assert_eq!(tree.remove("a/x"), Some("a/x"));
        assert_eq!(tree.node_count(), 0);
    }

    #[test]
    fn empty_levels() {
        let tree = tree_of(&["/", "a//b", "//"]);
        assert_eq!(matches_of(&tree, "+/+"), ["/"]);
        assert_eq!(matches_of(&tree, "a/+/b"), ["a//b"]);
        assert_eq!(matches_of(&tree, "/#"), ["/", "//"]);
    }
}
