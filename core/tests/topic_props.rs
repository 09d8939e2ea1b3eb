//! The subscription trie and the retained tree agree with the naive matcher over random
//! subscription sets, and give all their nodes back once emptied.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proptest::sample::{select, Index};
use ringmq_core::topic::{
    matches, parse_filter, validate_topic_name, Match, RetainedTree, SubscriptionTrie,
};

const LEVELS_MAX: usize = 8;

/// Few, short levels so that filters and names collide and wildcards match often;
/// `$s` makes `$`-topics, `""` empty levels.
fn name_level() -> impl Strategy<Value = &'static str> {
    select(vec!["a", "b", "$s", ""])
}

fn topic_name() -> impl Strategy<Value = String> {
    prop::collection::vec(name_level(), 1..5)
        .prop_map(|levels| levels.join("/"))
        .prop_filter("a name is not empty", |name| !name.is_empty())
}

fn plain_filter() -> impl Strategy<Value = String> {
    let level = select(vec!["a", "b", "$s", "", "+"]);
    (prop::collection::vec(level, 0..4), any::<bool>()).prop_filter_map(
        "a filter has at least one level",
        |(mut levels, multi_level)| {
            if multi_level {
                levels.push("#");
            }
            let filter = levels.join("/");
            (!levels.is_empty() && !filter.is_empty()).then_some(filter)
        },
    )
}

fn filter() -> impl Strategy<Value = String> {
    (prop::option::of(select(vec!["g", "h"])), plain_filter()).prop_map(
        |(group, inner)| match group {
            Some(group) => format!("$share/{group}/{inner}"),
            None => inner,
        },
    )
}

#[derive(Debug, Clone)]
enum TrieOp {
    Insert { filter: Index, key: u8, value: u8 },
    RemoveExisting(Index),
    RemoveAny { filter: Index, key: u8 },
}

fn trie_op(keys: u8) -> impl Strategy<Value = TrieOp> {
    prop_oneof![
        4 => (any::<Index>(), 0..keys, any::<u8>())
            .prop_map(|(filter, key, value)| TrieOp::Insert { filter, key, value }),
        2 => any::<Index>().prop_map(TrieOp::RemoveExisting),
        1 => (any::<Index>(), 0..keys).prop_map(|(filter, key)| TrieOp::RemoveAny { filter, key }),
    ]
}

/// What the trie holds per entry: the filter (so a plain match can be traced back to
/// it), the value, and the joining sequence number that orders share group members.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Subscription {
    filter: String,
    value: u8,
    joined: u64,
}

type Model = BTreeMap<(String, u8), Subscription>;

fn inner_filter(filter: &str) -> Result<&str, TestCaseError> {
    parse_filter(filter, LEVELS_MAX)
        .map(|parsed| parsed.topic_filter())
        .map_err(|error| TestCaseError::fail(format!("{filter:?} is invalid: {error}")))
}

fn has_filter(model: &Model, filter: &str) -> bool {
    model.keys().any(|(f, _)| f == filter)
}

/// Picks from a small per-case pool so that the same filters come back and share
/// groups grow past two members.
fn pick(pool: &[String], index: Index) -> String {
    pool.get(index.index(pool.len()))
        .cloned()
        .unwrap_or_default()
}

fn apply(
    trie: &mut SubscriptionTrie<u8, Subscription>,
    model: &mut Model,
    pool: &[String],
    op: TrieOp,
    joined: &mut u64,
) -> Result<(), TestCaseError> {
    match op {
        TrieOp::Insert { filter, key, value } => {
            let filter = pick(pool, filter);
            inner_filter(&filter)?;
            let was_new = !has_filter(model, &filter);
            let previous = model.get(&(filter.clone(), key)).cloned();
            *joined += 1;
            let subscription = Subscription {
                filter: filter.clone(),
                value,
                // Re-subscribing keeps a member's place in its group.
                joined: previous.as_ref().map_or(*joined, |p| p.joined),
            };
            let outcome = trie.insert(&filter, key, subscription.clone());
            prop_assert_eq!(outcome.previous, previous);
            prop_assert_eq!(outcome.first_subscriber, was_new);
            model.insert((filter, key), subscription);
        }
        TrieOp::RemoveExisting(index) => {
            if model.is_empty() {
                return Ok(());
            }
            let entry = model.keys().nth(index.index(model.len())).cloned();
            let Some((filter, key)) = entry else {
                return Ok(());
            };
            let expected = model.remove(&(filter.clone(), key));
            let outcome = trie.remove(&filter, key);
            prop_assert_eq!(outcome.as_ref().map(|o| &o.value), expected.as_ref());
            prop_assert_eq!(
                outcome.map(|o| o.last_subscriber),
                Some(!has_filter(model, &filter))
            );
        }
        TrieOp::RemoveAny { filter, key } => {
            let filter = pick(pool, filter);
            let expected = model.remove(&(filter.clone(), key));
            let outcome = trie.remove(&filter, key);
            prop_assert_eq!(outcome.map(|o| o.value), expected);
        }
    }
    Ok(())
}

fn check_trie(
    trie: &SubscriptionTrie<u8, Subscription>,
    model: &Model,
    topics: &[String],
) -> Result<(), TestCaseError> {
    prop_assert_eq!(trie.len(), model.len());
    prop_assert_eq!(trie.is_empty(), model.is_empty());
    let expected_filters: BTreeSet<&str> = model.keys().map(|(f, _)| f.as_str()).collect();
    let mut filters = Vec::new();
    trie.for_each_filter(|filter| filters.push(filter.to_owned()));
    filters.sort();
    prop_assert_eq!(filters.iter().map(String::as_str).collect::<Vec<_>>(), {
        expected_filters.iter().copied().collect::<Vec<_>>()
    });
    prop_assert_eq!(trie.filter_count(), expected_filters.len());
    for ((filter, key), subscription) in model {
        prop_assert_eq!(trie.get(filter, *key), Some(subscription));
    }

    for topic in topics {
        let mut expected = Vec::new();
        for ((filter, key), subscription) in model {
            if matches(inner_filter(filter)?, topic) {
                expected.push((filter.clone(), *key, subscription.value));
            }
        }
        expected.sort();

        let mut found = Vec::new();
        let mut failure = None;
        trie.for_each_match(topic, |m| match m {
            Match::Plain { key, value } => found.push((value.filter.clone(), key, value.value)),
            Match::Shared {
                filter, members, ..
            } => {
                let mut joined = Vec::new();
                for (key, value) in members.iter() {
                    if value.filter != filter {
                        failure = Some(format!("{key} in {filter} holds {}", value.filter));
                    }
                    joined.push(value.joined);
                    found.push((filter.to_owned(), key, value.value));
                }
                if !joined.is_sorted() || members.is_empty() {
                    failure = Some(format!("{filter} lists members as {joined:?}"));
                }
            }
        });
        prop_assert_eq!(failure, None);
        found.sort();
        prop_assert_eq!(found, expected, "topic {:?}", topic);
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum RetainedOp {
    Insert { topic: Index, value: u8 },
    RemoveExisting(Index),
    RemoveAny(Index),
}

fn retained_op() -> impl Strategy<Value = RetainedOp> {
    prop_oneof![
        4 => (any::<Index>(), any::<u8>()).prop_map(|(topic, value)| RetainedOp::Insert { topic, value }),
        2 => any::<Index>().prop_map(RetainedOp::RemoveExisting),
        1 => any::<Index>().prop_map(RetainedOp::RemoveAny),
    ]
}

fn check_retained(
    tree: &RetainedTree<u8>,
    model: &BTreeMap<String, u8>,
    filters: &[String],
) -> Result<(), TestCaseError> {
    prop_assert_eq!(tree.len(), model.len());
    for (topic, value) in model {
        prop_assert_eq!(tree.get(topic), Some(value));
    }
    for filter in filters {
        let mut found = Vec::new();
        tree.for_each_match(filter, |topic, value| {
            found.push((topic.to_owned(), *value))
        });
        found.sort();
        let expected: Vec<(String, u8)> = model
            .iter()
            .filter(|(topic, _)| matches(filter, topic))
            .map(|(topic, value)| (topic.clone(), *value))
            .collect();
        prop_assert_eq!(found, expected, "filter {:?}", filter);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn trie_agrees_with_naive_matcher(
        pool in prop::collection::vec(filter(), 1..12),
        ops in prop::collection::vec(trie_op(4), 1..60),
        topics in prop::collection::vec(topic_name(), 1..8),
    ) {
        let mut trie = SubscriptionTrie::new();
        let initial_nodes = trie.node_count();
        let mut model = Model::new();
        let mut joined = 0;
        for op in ops {
            apply(&mut trie, &mut model, &pool, op, &mut joined)?;
            check_trie(&trie, &model, &topics)?;
        }
        let remaining: Vec<(String, u8)> = model.keys().cloned().collect();
        for (filter, key) in remaining {
            let expected = model.remove(&(filter.clone(), key));
            let outcome = trie.remove(&filter, key);
            prop_assert_eq!(outcome.map(|o| o.value), expected);
        }
        check_trie(&trie, &model, &topics)?;
        prop_assert_eq!(trie.node_count(), initial_nodes);
    }

    #[test]
    fn retained_agrees_with_naive_matcher(
        pool in prop::collection::vec(topic_name(), 1..16),
        ops in prop::collection::vec(retained_op(), 1..60),
        filters in prop::collection::vec(plain_filter(), 1..8),
    ) {
        let mut tree = RetainedTree::new();
        let initial_nodes = tree.node_count();
        let mut model = BTreeMap::new();
        for op in ops {
            match op {
                RetainedOp::Insert { topic, value } => {
                    let topic = pick(&pool, topic);
                    prop_assert_eq!(validate_topic_name(&topic, LEVELS_MAX), Ok(()));
                    prop_assert_eq!(tree.insert(&topic, value), model.insert(topic, value));
                }
                RetainedOp::RemoveExisting(index) => {
                    if model.is_empty() {
                        continue;
                    }
                    let topic = model.keys().nth(index.index(model.len())).cloned();
                    if let Some(topic) = topic {
                        prop_assert_eq!(tree.remove(&topic), model.remove(&topic));
                    }
                }
                RetainedOp::RemoveAny(topic) => {
                    let topic = pick(&pool, topic);
                    prop_assert_eq!(tree.remove(&topic), model.remove(&topic));
                }
            }
            check_retained(&tree, &model, &filters)?;
        }
        let remaining: Vec<String> = model.keys().cloned().collect();
        for topic in remaining {
            prop_assert_eq!(tree.remove(&topic), model.remove(&topic));
        }
        check_retained(&tree, &model, &filters)?;
        prop_assert!(tree.is_empty());
        prop_assert_eq!(tree.node_count(), initial_nodes);
    }

    /// The reference matcher itself against a second formulation of the rules: a filter
    /// matches when its levels, read as a pattern, cover the name's levels.
    #[test]
    fn naive_matcher_agrees_with_level_pattern(filter in plain_filter(), name in topic_name()) {
        let f: Vec<&str> = filter.split('/').collect();
        let n: Vec<&str> = name.split('/').collect();
        let dollar_blocked = name.starts_with('$') && matches!(f.first(), Some(&"+" | &"#"));
        let covered = match f.split_last() {
            Some((&"#", head)) => {
                n.len() >= head.len()
                    && head.iter().zip(&n).all(|(p, l)| *p == "+" || p == l)
            }
            _ => f.len() == n.len() && f.iter().zip(&n).all(|(p, l)| *p == "+" || p == l),
        };
        prop_assert_eq!(matches(&filter, &name), covered && !dollar_blocked);
    }
}

proptest! {
    // Long runs on one filter: fewer cases suffice.
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Many subscribers on one filter and one share group: the key -> position index
    /// kicks in and out, and members must keep their joining order throughout.
    #[test]
    fn crowded_filter_keeps_entries_and_order(
        ops in prop::collection::vec(trie_op(40), 1..300),
    ) {
        let pool = ["t".to_owned(), "$share/g/t".to_owned()];
        let topics = ["t".to_owned()];
        let mut trie = SubscriptionTrie::new();
        let mut model = Model::new();
        let mut joined = 0;
        for op in ops {
            apply(&mut trie, &mut model, &pool, op, &mut joined)?;
            check_trie(&trie, &model, &topics)?;
        }
    }
}

/// The byte-at-a-time definition of a valid topic name that `validate_topic_name`
/// (memchr-based) must agree with, error for error: U+0000 anywhere, then the first
/// problem from the left.
fn naive_name_check(name: &str, levels_max: usize) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty");
    }
    if name.contains('\0') {
        return Err("null");
    }
    let mut levels = 1usize;
    for byte in name.bytes() {
        match byte {
            0 => return Err("null"),
            b'+' | b'#' => return Err("wildcard"),
            b'/' => {
                levels += 1;
                if levels > levels_max {
                    return Err("levels");
                }
            }
            _ => {}
        }
    }
    if levels > levels_max {
        return Err("levels");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn topic_name_check_matches_the_byte_loop(
        parts in prop::collection::vec(select(vec!["a", "/", "+", "#", "\0", "é", "bc"]), 0..12),
        levels_max in 0usize..6,
    ) {
        use ringmq_core::topic::TopicError;
        let name = parts.concat();
        let got = validate_topic_name(&name, levels_max).map_err(|error| match error {
            TopicError::Empty { .. } => "empty",
            TopicError::NullCharacter { .. } => "null",
            TopicError::WildcardInName { .. } => "wildcard",
            TopicError::TooManyLevels { .. } => "levels",
            other => panic!("unexpected {other:?}"),
        });
        prop_assert_eq!(got, naive_name_check(&name, levels_max), "{:?} max {}", name, levels_max);
    }
}
