//! Per-shard counters. Each shard writes only its own (a relaxed load and store: no
//! locked instruction on the hot path); readers sum all shards when they report.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
    pub fn set(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed);
    }

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
    /// CONNECTs refused at the connection limit.
    pub connections_refused: Counter,
    /// CONNECTs refused because the session table was full.
    pub sessions_refused: Counter,
    /// CONNECTs refused by authentication (credentials, anonymous, rate limit, busy).
    pub logins_refused: Counter,
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
    /// PUBLISHes the ACL refused, and deliveries it withheld.
    pub dropped_not_authorized: Counter,
    /// SUBSCRIBE filters the ACL refused.
    pub subscriptions_refused: Counter,
    pub ring_full: Counter,
    /// Messages this shard addressed to each shard (its index), into the ring or
    /// the queue in front of it.
    pub ring_sent: Box<[Counter]>,
    /// Messages this shard took from its rings.
    pub ring_received: Counter,
    /// Outbound QoS 1/2 messages awaiting acknowledgement, over all sessions
    /// (refreshed every second).
    pub inflight: Counter,
    /// Messages queued in sessions, offline or behind a full window (refreshed
    /// every second).
    pub queued: Counter,
    pub protocol_errors: Counter,
    /// Sampled time from a PUBLISH decoded to its copy written to a subscriber's
    /// socket, for messages delivered on arrival (not those queued first).
    pub delivery_latency: LatencyHistogram,
}

/// Upper bounds of the latency buckets, in seconds (the last bucket, +Inf, is the
/// count). From 10 µs, below which loopback cannot go, to 1 s, past which a message
/// is late by any IoT measure.
pub const LATENCY_BOUNDS_S: [f64; 16] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0,
];

/// A histogram with one writer, its shard, like [`Counter`]: each bucket counts
/// the samples in it alone (not cumulative); readers accumulate.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [Counter; LATENCY_BOUNDS_S.len()],
    count: Counter,
    sum_ns: Counter,
}

impl LatencyHistogram {
    pub fn record(&self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        let seconds = latency.as_secs_f64();
        if let Some(bucket) = LATENCY_BOUNDS_S
            .iter()
            .position(|&bound| seconds <= bound)
            .and_then(|index| self.buckets.get(index))
        {
            bucket.inc();
        }
        self.count.inc();
        self.sum_ns.add(ns);
    }

    /// Samples in each bucket of [`LATENCY_BOUNDS_S`], not cumulative.
    pub fn buckets(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        LATENCY_BOUNDS_S
            .iter()
            .zip(&self.buckets)
            .map(|(&bound, counter)| (bound, counter.get()))
    }

    /// All samples, those above the last bound included.
    pub fn count(&self) -> u64 {
        self.count.get()
    }

    pub fn sum_seconds(&self) -> f64 {
        self.sum_ns.get() as f64 / 1e9
    }
}

impl ShardStats {
    /// The counters of one of `shards` shards, all zero.
    pub fn new(shards: usize) -> ShardStats {
        ShardStats {
            ring_sent: (0..shards).map(|_| Counter::default()).collect(),
            ..ShardStats::default()
        }
    }

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

/// Messages addressed to shard `to` by the other shards and not yet taken from its
/// rings: what waits to cross to it. Each side's counter has one writer; read at
/// slightly different moments they may disagree by a few, never below zero.
pub fn ring_backlog(all: &[std::sync::Arc<ShardStats>], to: usize) -> u64 {
    let sent: u64 = all
        .iter()
        .filter_map(|stats| stats.ring_sent.get(to))
        .map(Counter::get)
        .sum();
    let received = all.get(to).map_or(0, |stats| stats.ring_received.get());
    sent.saturating_sub(received)
}

/// The sum of a value over all shards.
pub fn total(all: &[std::sync::Arc<ShardStats>], value: impl Fn(&ShardStats) -> u64) -> u64 {
    all.iter().map(|stats| value(stats)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_lands_in_the_first_bucket_that_holds_it() {
        let histogram = LatencyHistogram::default();
        histogram.record(Duration::from_micros(5));
        histogram.record(Duration::from_micros(10));
        histogram.record(Duration::from_micros(700));
        histogram.record(Duration::from_secs(3));
        let buckets: Vec<(f64, u64)> = histogram.buckets().collect();
        assert_eq!(buckets.first(), Some(&(0.000_01, 2)));
        let one_ms = buckets.iter().find(|(bound, _)| *bound == 0.001);
        assert_eq!(one_ms, Some(&(0.001, 1)));
        assert_eq!(
            buckets.iter().map(|(_, n)| n).sum::<u64>(),
            3,
            "3 s is past every bound"
        );
        assert_eq!(histogram.count(), 4);
        assert!((histogram.sum_seconds() - 3.000_715).abs() < 1e-9);
    }
}
