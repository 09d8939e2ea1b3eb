//! What every message carries, and what a subscriber learns from it.
//!
//! - [`Stamp`]: the first [`STAMP_BYTES`] of a payload: the send time (nanoseconds
//!   on the process clock, see [`crate::clock`]), the publisher's index and its
//!   sequence number. The rest of the payload is filler.
//! - [`SequenceTracker`]: the messages of one publisher as seen by one receiver (or
//!   one shared-subscription group): every sequence number gets one bit, so loss,
//!   duplicates and reordering are exact, not guessed from a window. Trackers of the
//!   same stream kept on different threads merge at the end.

/// Bytes of a payload taken by the stamp: the smallest valid `--payload`.
pub const STAMP_BYTES: usize = 16;

/// Highest sequence number a tracker accepts: bounds its bitmap to 128 MiB even if a
/// foreign or corrupt message carries a huge number.
pub const SEQ_MAX: u32 = 1 << 30;

/// The header of every benchmark payload, little endian:
/// `sent_ns: u64 | publisher: u32 | seq: u32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// When the message was due to be sent (open loop) or was sent (max rate).
    pub sent_ns: u64,
    pub publisher: u32,
    pub seq: u32,
}

impl Stamp {
    /// Writes the stamp over the start of `payload`; false if it is too short.
    pub fn write(&self, payload: &mut [u8]) -> bool {
        let Some(head) = payload.get_mut(..STAMP_BYTES) else {
            return false;
        };
        let (time, rest) = head.split_at_mut(8);
        let (publisher, seq) = rest.split_at_mut(4);
        time.copy_from_slice(&self.sent_ns.to_le_bytes());
        publisher.copy_from_slice(&self.publisher.to_le_bytes());
        seq.copy_from_slice(&self.seq.to_le_bytes());
        true
    }

    /// Reads the stamp at the start of `payload`; `None` if it is too short.
    pub fn read(payload: &[u8]) -> Option<Stamp> {
        let head: &[u8; STAMP_BYTES] = payload.get(..STAMP_BYTES)?.try_into().ok()?;
        let (time, rest) = head.split_at(8);
        let (publisher, seq) = rest.split_at(4);
        Some(Stamp {
            sent_ns: u64::from_le_bytes(time.try_into().ok()?),
            publisher: u32::from_le_bytes(publisher.try_into().ok()?),
            seq: u32::from_le_bytes(seq.try_into().ok()?),
        })
    }
}

/// How one arrival relates to the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// First time seen, and higher than every sequence number seen before.
    InOrder,
    /// First time seen, but a higher sequence number arrived earlier.
    Reordered,
    /// Seen before.
    Duplicate,
    /// Above [`SEQ_MAX`]: not tracked.
    Invalid,
}

/// The sequence numbers one receiver has seen from one publisher.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SequenceTracker {
    seen: Vec<u64>,
    /// One past the highest sequence number seen.
    next: u32,
    distinct: u64,
    duplicates: u64,
    reordered: u64,
}

impl SequenceTracker {
    pub fn new() -> SequenceTracker {
        SequenceTracker::default()
    }

    /// Records one arrival. The bitmap grows by doubling, so this allocates only
    /// O(log n) times over a run.
    pub fn record(&mut self, seq: u32) -> Arrival {
        if seq > SEQ_MAX {
            return Arrival::Invalid;
        }
        let word = (seq / 64) as usize;
        let bit = 1u64 << (seq % 64);
        if word >= self.seen.len() {
            let len = (word + 1).next_power_of_two().max(16);
            self.seen.resize(len, 0);
        }
        let Some(slot) = self.seen.get_mut(word) else {
            return Arrival::Invalid;
        };
        if *slot & bit != 0 {
            self.duplicates += 1;
            return Arrival::Duplicate;
        }
        *slot |= bit;
        self.distinct += 1;
        if seq >= self.next {
            self.next = seq + 1;
            Arrival::InOrder
        } else {
            self.reordered += 1;
            Arrival::Reordered
        }
    }

    /// Distinct messages seen.
    pub fn distinct(&self) -> u64 {
        self.distinct
    }

    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    pub fn reordered(&self) -> u64 {
        self.reordered
    }

    /// Messages of `0..sent` never seen.
    pub fn lost(&self, sent: u64) -> u64 {
        sent.saturating_sub(self.distinct_below(sent))
    }

    /// Distinct messages seen with a sequence number below `bound`.
    fn distinct_below(&self, bound: u64) -> u64 {
        let full_words = (bound / 64) as usize;
        let mut count: u64 = self
            .seen
            .iter()
            .take(full_words)
            .map(|w| u64::from(w.count_ones()))
            .sum();
        let rest = bound % 64;
        if rest > 0 {
            if let Some(word) = self.seen.get(full_words) {
                count += u64::from((word & ((1u64 << rest) - 1)).count_ones());
            }
        }
        count
    }

    /// Folds in what another receiver of the same stream saw (the members of one
    /// shared-subscription group): a message both saw is a duplicate; reordering is
    /// per receiver, so it adds up.
    pub fn merge(&mut self, other: &SequenceTracker) {
        if other.seen.len() > self.seen.len() {
            self.seen.resize(other.seen.len(), 0);
        }
        let mut overlap = 0u64;
        for (mine, theirs) in self.seen.iter_mut().zip(&other.seen) {
            overlap += u64::from((*mine & *theirs).count_ones());
            *mine |= *theirs;
        }
        self.distinct = self.distinct + other.distinct - overlap;
        self.duplicates += other.duplicates + overlap;
        self.reordered += other.reordered;
        self.next = self.next.max(other.next);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn stamp_round_trips_and_keeps_the_filler() {
        let mut payload = vec![0xAB; 32];
        let stamp = Stamp {
            sent_ns: 0x0102_0304_0506_0708,
            publisher: 77,
            seq: 123_456,
        };
        assert!(stamp.write(&mut payload));
        assert_eq!(Stamp::read(&payload), Some(stamp));
        assert!(payload[STAMP_BYTES..].iter().all(|&b| b == 0xAB));
    }

    #[test]
    fn short_payloads_carry_no_stamp() {
        let mut short = [0u8; STAMP_BYTES - 1];
        let stamp = Stamp {
            sent_ns: 1,
            publisher: 2,
            seq: 3,
        };
        assert!(!stamp.write(&mut short));
        assert_eq!(Stamp::read(&short), None);
        assert_eq!(Stamp::read(&[]), None);
    }

    #[test]
    fn in_order_stream_has_no_anomaly() {
        let mut t = SequenceTracker::new();
        for seq in 0..1000 {
            assert_eq!(t.record(seq), Arrival::InOrder);
        }
        assert_eq!(t.distinct(), 1000);
        assert_eq!(t.lost(1000), 0);
        assert_eq!(t.duplicates(), 0);
        assert_eq!(t.reordered(), 0);
    }

    #[test]
    fn gaps_are_losses_until_they_arrive_late() {
        let mut t = SequenceTracker::new();
        for seq in [0, 1, 4, 5] {
            t.record(seq);
        }
        assert_eq!(t.lost(6), 2);
        assert_eq!(t.record(2), Arrival::Reordered);
        assert_eq!(t.lost(6), 1);
        assert_eq!(t.reordered(), 1);
        // Messages sent but never seen at the tail are lost too.
        assert_eq!(t.lost(10), 5);
    }

    #[test]
    fn duplicates_are_counted_not_double_delivered() {
        let mut t = SequenceTracker::new();
        t.record(0);
        t.record(1);
        assert_eq!(t.record(1), Arrival::Duplicate);
        assert_eq!(t.record(0), Arrival::Duplicate);
        assert_eq!(t.distinct(), 2);
        assert_eq!(t.duplicates(), 2);
        assert_eq!(t.lost(2), 0);
    }

    #[test]
    fn huge_sequence_numbers_are_refused() {
        let mut t = SequenceTracker::new();
        assert_eq!(t.record(SEQ_MAX + 1), Arrival::Invalid);
        assert_eq!(t.distinct(), 0);
        assert!(t.seen.is_empty());
    }

    #[test]
    fn bitmap_grows_across_word_boundaries() {
        let mut t = SequenceTracker::new();
        for seq in (0..5000).rev() {
            t.record(seq);
        }
        assert_eq!(t.distinct(), 5000);
        assert_eq!(t.reordered(), 4999);
        assert_eq!(t.lost(5000), 0);
        assert_eq!(t.lost(5001), 1);
    }

    #[test]
    fn shared_group_members_merge_into_one_stream() {
        let mut a = SequenceTracker::new();
        let mut b = SequenceTracker::new();
        for seq in (0..100).filter(|s| s % 2 == 0) {
            a.record(seq);
        }
        for seq in (0..100).filter(|s| s % 2 == 1) {
            b.record(seq);
        }
        b.record(10); // also delivered to a: a duplicate across the group
        a.merge(&b);
        assert_eq!(a.distinct(), 100);
        assert_eq!(a.duplicates(), 1);
        assert_eq!(a.lost(100), 0);
        assert_eq!(a.lost(120), 20);
    }
}
