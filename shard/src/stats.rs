//! Per-shard counters. Each shard writes only its own (a relaxed load and store: no
//! locked instruction on the hot path); readers sum all shards when they report.

use std::sync::atomic::{AtomicU64, Ordering};

use ringmq_core::packet::QoS;
use ringmq_core::session::DropReason;

/// A counter with a single writer (its shard) and any number of readers.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    pub fn inc(&self) {
        self.add(1);
    }

    /// For gauges: the writer may go down as well as up.
    pub fn sub(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).saturating_sub(n),
            Ordering::Relaxed,
        );
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// What one shard counts.
#[derive(Debug, Default)]
pub struct ShardStats {
    pub clients_connected: Counter,
    pub connections_total: Counter,
    pub connections_refused: Counter,
    pub sessions: Counter,
    pub messages_received: Counter,
    pub messages_sent: Counter,
    /// PUBLISH packets received, by QoS 0, 1, 2.
    pub received_by_qos: [Counter; 3],
    /// PUBLISH packets delivered to clients, by the QoS they were sent with.
    pub sent_by_qos: [Counter; 3],
    pub bytes_received: Counter,
    pub bytes_sent: Counter,
    pub subscriptions: Counter,
    pub retained: Counter,
    /// Retained PUBLISHes to a new topic not kept because the store was full.
    pub retained_dropped: Counter,
    pub dropped_queue_full: Counter,
    pub dropped_expired: Counter,
    pub dropped_too_large: Counter,
    pub dropped_no_subscribers: Counter,
    pub ring_full: Counter,
    pub protocol_errors: Counter,
}

impl ShardStats {
    pub fn received(&self, qos: QoS) {
        self.messages_received.inc();
        if let Some(counter) = self.received_by_qos.get(usize::from(qos.as_u8())) {
            counter.inc();
        }
    }

    pub fn sent(&self, qos: QoS) {
        self.messages_sent.inc();
        if let Some(counter) = self.sent_by_qos.get(usize::from(qos.as_u8())) {
            counter.inc();
        }
    }

    pub fn dropped(&self, reason: DropReason) {
        match reason {
            DropReason::QueueFull => self.dropped_queue_full.inc(),
            DropReason::Expired => self.dropped_expired.inc(),
            DropReason::TooLarge => self.dropped_too_large.inc(),
        }
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped_queue_full.get() + self.dropped_expired.get() + self.dropped_too_large.get()
    }
}

/// The sum of a value over all shards.
pub fn total(all: &[std::sync::Arc<ShardStats>], value: impl Fn(&ShardStats) -> u64) -> u64 {
    all.iter().map(|stats| value(stats)).sum()
}
