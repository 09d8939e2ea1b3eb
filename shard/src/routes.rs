//! A memo of what the tries answered for a topic, so a client that publishes to the
//! same topics over and over (the IoT shape) has them walked once, not per message.
//!
//! Each slot belongs to one topic at a time (direct-mapped by a hash of the topic) and
//! holds two independent answers, each stamped with the version of the trie it came
//! from ([`SubscriptionTrie::version`](ringmq_core::topic::SubscriptionTrie::version)
//! changes on every insert and remove): this shard's plain subscribers of the topic,
//! and the other shards with interest in it. An answer is used only while its trie is
//! still at that version, so a hit is exactly what a walk would have found.
//!
//! Bounded: a fixed number of slots, topics up to [`TOPIC_BYTES_MAX`] and answers up to
//! [`LOCAL_MATCHES_MAX`] subscribers; anything larger is walked every time (a large
//! fan-out costs far more to deliver than to match). A miss costs one hash and a copy
//! into the slot's own buffers, which are reused, so nothing is allocated per message
//! once the slots have grown.

use foldhash::fast::RandomState;
use std::hash::BuildHasher;

use ringmq_core::session::SessionKey;

use crate::state::LocalSub;

/// Slots in the memo: a power of two.
const SLOTS: usize = 1024;
/// Longer topic names are not memoized.
pub(crate) const TOPIC_BYTES_MAX: usize = 128;
/// Topics with more local subscribers than this are not memoized.
pub(crate) const LOCAL_MATCHES_MAX: usize = 64;

/// The other shards with interest in a topic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Shards {
    /// Shards 0..128, one bit each.
    pub first_128: u128,
    /// Shards from 128 on, sorted, without duplicates.
    pub overflow: Vec<u16>,
    /// A share group matches: its member is picked per message, so the interest
    /// table is walked every time anyway.
    pub shared: bool,
}

#[derive(Default)]
struct Slot {
    topic: Vec<u8>,
    /// Trie version of `local`, `None` when it holds nothing.
    local_version: Option<u64>,
    /// Every plain subscription of the topic, sorted by session.
    local: Vec<(SessionKey, LocalSub)>,
    shards_version: Option<u64>,
    shards: Shards,
}

impl Slot {
    /// Makes the slot `topic`'s, forgetting another topic's answers.
    fn claim(&mut self, topic: &str) {
        if self.topic != topic.as_bytes() {
            self.topic.clear();
            self.topic.extend_from_slice(topic.as_bytes());
            self.local_version = None;
            self.shards_version = None;
        }
    }
}

pub(crate) struct RouteCache {
    hasher: RandomState,
    slots: Box<[Slot]>,
}

impl Default for RouteCache {
    fn default() -> Self {
        RouteCache {
            hasher: RandomState::default(),
            slots: (0..SLOTS).map(|_| Slot::default()).collect(),
        }
    }
}

impl RouteCache {
    /// The slot `topic` would live in; `None` for a topic too long to memoize.
    pub(crate) fn slot_of(&self, topic: &str) -> Option<usize> {
        (topic.len() <= TOPIC_BYTES_MAX)
            .then(|| self.hasher.hash_one(topic.as_bytes()) as usize & (SLOTS - 1))
    }

    fn slot(&self, slot: usize, topic: &str) -> Option<&Slot> {
        self.slots
            .get(slot)
            .filter(|s| s.topic.as_slice() == topic.as_bytes())
    }

    /// The plain subscriptions of `topic` (sorted by session) if they were recorded
    /// at trie version `version`.
    pub(crate) fn local(
        &self,
        slot: usize,
        topic: &str,
        version: u64,
    ) -> Option<&[(SessionKey, LocalSub)]> {
        self.slot(slot, topic)
            .filter(|s| s.local_version == Some(version))
            .map(|s| s.local.as_slice())
    }

    /// Records the plain subscriptions of `topic` at trie version `version`;
    /// `matches` sorted by session.
    pub(crate) fn set_local(
        &mut self,
        slot: usize,
        topic: &str,
        version: u64,
        matches: &[(SessionKey, LocalSub)],
    ) {
        if matches.len() > LOCAL_MATCHES_MAX {
            return;
        }
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        s.claim(topic);
        s.local.clear();
        s.local.extend_from_slice(matches);
        s.local_version = Some(version);
    }

    /// The other shards with interest in `topic`, if recorded at interest-table
    /// version `version`.
    pub(crate) fn shards(&self, slot: usize, topic: &str, version: u64) -> Option<&Shards> {
        self.slot(slot, topic)
            .filter(|s| s.shards_version == Some(version))
            .map(|s| &s.shards)
    }

    pub(crate) fn set_shards(&mut self, slot: usize, topic: &str, version: u64, shards: &Shards) {
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        s.claim(topic);
        s.shards.clone_from(shards);
        s.shards_version = Some(version);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringmq_core::packet::SubscriptionOptions;

    fn sub() -> LocalSub {
        LocalSub::new(SubscriptionOptions::default(), None)
    }

    #[test]
    fn an_answer_holds_for_its_topic_and_version_only() {
        let mut cache = RouteCache::default();
        let Some(slot) = cache.slot_of("a/b") else {
            panic!("a short topic has a slot");
        };
        assert!(cache.local(slot, "a/b", 0).is_none());
        let matches = vec![(SessionKey(1), sub()), (SessionKey(2), sub())];
        cache.set_local(slot, "a/b", 7, &matches);
        assert_eq!(cache.local(slot, "a/b", 7).map(<[_]>::len), Some(2));
        assert!(cache.local(slot, "a/b", 8).is_none(), "the trie changed");
        assert!(cache.local(slot, "a/c", 7).is_none(), "another topic");
        assert!(
            cache.shards(slot, "a/b", 7).is_none(),
            "answers are separate"
        );

        let shards = Shards {
            first_128: 0b101,
            overflow: vec![200],
            shared: false,
        };
        cache.set_shards(slot, "a/b", 3, &shards);
        assert_eq!(cache.shards(slot, "a/b", 3), Some(&shards));
        assert!(
            cache.local(slot, "a/b", 7).is_some(),
            "the local answer stays"
        );
    }

    #[test]
    fn another_topic_in_the_slot_replaces_both_answers() {
        let mut cache = RouteCache::default();
        let Some(slot) = cache.slot_of("x") else {
            panic!("a short topic has a slot");
        };
        cache.set_local(slot, "x", 1, &[(SessionKey(1), sub())]);
        cache.set_shards(slot, "x", 1, &Shards::default());
        // Whatever topic hashes here, the slot index is what is shared.
        cache.set_local(slot, "y", 1, &[]);
        assert!(cache.local(slot, "x", 1).is_none());
        assert!(cache.shards(slot, "x", 1).is_none());
        assert!(cache.shards(slot, "y", 1).is_none());
        assert_eq!(cache.local(slot, "y", 1).map(<[_]>::len), Some(0));
    }

    #[test]
    fn what_is_too_large_is_not_kept() {
        let mut cache = RouteCache::default();
        assert!(cache.slot_of(&"t".repeat(TOPIC_BYTES_MAX + 1)).is_none());
        let Some(slot) = cache.slot_of("big") else {
            panic!("a short topic has a slot");
        };
        let many: Vec<_> = (0..=LOCAL_MATCHES_MAX as u64)
            .map(|n| (SessionKey(n), sub()))
            .collect();
        cache.set_local(slot, "big", 1, &many);
        assert!(cache.local(slot, "big", 1).is_none());
    }
}
