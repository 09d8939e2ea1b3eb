//! How many topic names per second the subscription trie matches, alone with one
//! filter, in the shape of the broker benchmark (100 publisher/subscriber pairs, each
//! subscriber on its own topic; with and without wildcard filters beside them) and
//! inside a shard-sized set of 100,000, and what a subscribe/unsubscribe pair costs in
//! the large set.
//!
//! Run: `cargo bench -p ringmq-core --bench trie -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringmq_core::topic::{Match, SubscriptionTrie};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct SessionKey(u32);

/// Stands in for per-subscription options (QoS, no-local, ...).
#[derive(Debug, Clone, Copy)]
struct Options(u8);

type Trie = SubscriptionTrie<SessionKey, Options>;

const DEVICES: u32 = 94_000;
const TOPICS: usize = 1024;

/// 100,000 subscriptions shaped like an IoT shard: each device on its own telemetry,
/// some devices on their whole subtree, command fan-in with `+`, fleet-wide status
/// with `+` in the middle, and two dashboards on every device's telemetry.
fn crowded_trie() -> Trie {
    let mut trie = Trie::new();
    let mut subscribe = |filter: String, key: u32| {
        let _ = trie.insert(&filter, SessionKey(key), Options(1));
    };
    for n in 0..DEVICES {
        subscribe(format!("devices/{n}/telemetry"), n);
    }
    for n in 0..4_000 {
        subscribe(format!("devices/{}/#", n * 20), DEVICES + n);
    }
    for n in 0..1_000 {
        subscribe(format!("devices/+/cmd/{n}"), 100_000 + n);
    }
    for n in 0..998 {
        subscribe(format!("fleet/{n}/+/status"), 200_000 + n);
    }
    for n in 0..2 {
        subscribe("devices/+/telemetry".to_owned(), 300_000 + n);
    }
    assert_eq!(trie.len(), 100_000);
    trie
}

/// Telemetry names spread over the devices so one run does not stay in one cache line.
fn topics() -> Vec<String> {
    (0..TOPICS as u32)
        .map(|i| format!("devices/{}/telemetry", (i * 7_919) % DEVICES))
        .collect()
}

const PAIRS: u32 = 100;

/// The broker benchmark's subscriptions: `ringmq-bench/{run}/pairs/{i}`, one subscriber
/// each, so the walk passes three single-child levels and one with 100 children.
fn pairs_trie() -> Trie {
    let mut trie = Trie::new();
    for (key, topic) in (0..).zip(pairs_topics()) {
        let _ = trie.insert(&topic, SessionKey(key), Options(1));
    }
    trie
}

/// `pairs_trie` with a monitor on every pair, one on the whole run and one on every run.
fn pairs_wildcard_trie() -> Trie {
    let mut trie = pairs_trie();
    for (key, filter) in (PAIRS..).zip(["ringmq-bench/+/pairs/+", "ringmq-bench/#", "+/abc123/#"]) {
        let _ = trie.insert(filter, SessionKey(key), Options(0));
    }
    trie
}

fn pairs_topics() -> Vec<String> {
    (0..PAIRS)
        .map(|i| format!("ringmq-bench/abc123/pairs/{i}"))
        .collect()
}

fn match_all(trie: &Trie, topics: &[String]) -> usize {
    let mut matched = 0;
    for topic in topics {
        trie.for_each_match(black_box(topic), |m| {
            if let Match::Plain { key, value } = m {
                black_box((key, value.0));
            }
            matched += 1;
        });
    }
    matched
}

fn bench_match(c: &mut Criterion) {
    let topics = topics();
    let mut single = Trie::new();
    let _ = single.insert("devices/42/telemetry", SessionKey(42), Options(1));
    let crowded = crowded_trie();

    let mut group = c.benchmark_group("trie_match");
    group.throughput(Throughput::Elements(TOPICS as u64));
    group.bench_function("1_subscription", |b| b.iter(|| match_all(&single, &topics)));
    group.bench_function("100k_subscriptions", |b| {
        b.iter(|| match_all(&crowded, &topics))
    });
    group.finish();

    let pairs_topics = pairs_topics();
    let pairs = pairs_trie();
    let pairs_wildcard = pairs_wildcard_trie();
    let mut group = c.benchmark_group("trie_match_pairs");
    group.throughput(Throughput::Elements(u64::from(PAIRS)));
    group.bench_function("exact", |b| b.iter(|| match_all(&pairs, &pairs_topics)));
    group.bench_function("with_wildcards", |b| {
        b.iter(|| match_all(&pairs_wildcard, &pairs_topics))
    });
    group.finish();

    let mut group = c.benchmark_group("trie_subscribe");
    let mut crowded = crowded;
    let mut n = 0u32;
    group.throughput(Throughput::Elements(1));
    group.bench_function("insert_remove_100k", |b| {
        b.iter(|| {
            n = (n + 1) % DEVICES;
            let filter = format!("devices/{n}/telemetry");
            let _ = crowded.insert(&filter, SessionKey(400_000), Options(0));
            black_box(crowded.remove(&filter, SessionKey(400_000)))
        })
    });
    group.finish();
}

criterion_group!(benches, bench_match);
criterion_main!(benches);
