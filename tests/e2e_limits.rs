//! The configurable limits (`--max-*`, `--connect-timeout`) as a client sees
//! them, and the `$SYS` topics.

// A test states its expectations with unwrap/expect and indexing: a panic
// here is a failed assertion, not a bug on a hot path.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod harness;

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use harness::raw::{self, kind, prop, Connect, Packet, Props, Publish, RawClient, Recv};
use harness::{persistent_v5, topic_of, Broker, Qos, QUIET, V5, WAIT};
use rumqttc::v5::mqttbytes::v5 as mq5;
use tokio::time::Instant;

/// Tries a CONNECT and reports whether the broker accepted it; a refusal is
/// a CONNACK with an error code or a close before any CONNACK.
async fn try_connect_raw(broker: &Broker, connect: &Connect) -> Result<RawClient, String> {
    let mut c = broker.raw(connect.version).await;
    if c.send(&connect.encode()).await.is_err() {
        return Err("closed before CONNECT".into());
    }
    match c.recv(WAIT).await {
        Recv::Packet(Packet::ConnAck { code: 0, .. }) => Ok(c),
        Recv::Packet(Packet::ConnAck { code, .. }) => {
            let after = c.expect_closed("after a refusing CONNACK").await;
            assert!(
                after.is_empty(),
                "nothing after a refusing CONNACK, got {after:?}"
            );
            Err(format!("CONNACK {code:#04x}"))
        }
        Recv::Packet(other) => panic!("expected CONNACK, got {other:?}"),
        Recv::Closed => Err("closed without CONNACK".into()),
        Recv::TimedOut => panic!("no CONNACK and no close within {WAIT:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_refuses_the_next_client_until_one_leaves() {
    let broker = Broker::start_with(&["--max-connections", "3"]);
    let mut open = Vec::new();
    for i in 0..3u32 {
        let c = try_connect_raw(
            &broker,
            &Connect::v5(&broker.id_on(&format!("maxconn{i}"), i % 2)),
        )
        .await;
        open.push(c.unwrap_or_else(|e| panic!("connection {i} of 3 refused: {e}")));
    }
    for (name, connect) in [
        ("v5", Connect::v5(&broker.id_on("maxconn-extra5", 0))),
        (
            "v3.1.1",
            Connect::v311(&broker.id_on("maxconn-extra311", 1)),
        ),
    ] {
        match try_connect_raw(&broker, &connect).await {
            Ok(_) => panic!("{name}: a fourth connection was accepted with --max-connections 3"),
            Err(why) => {
                let allowed = ["closed without CONNACK", "closed before CONNECT"];
                let ok_code = if connect.version == raw::V5 {
                    why == "CONNACK 0x97" || why == "CONNACK 0x89" || why == "CONNACK 0x9f"
                } else {
                    why == "CONNACK 0x03"
                };
                assert!(
                    ok_code || allowed.contains(&why.as_str()),
                    "{name}: refused with {why}"
                );
            }
        }
    }
    // The three accepted connections are untouched.
    for c in &mut open {
        c.send(&raw::pingreq()).await.expect("send PINGREQ");
        assert_eq!(c.expect_packet("PINGRESP").await, Packet::PingResp);
    }
    // Once one leaves, a new client gets in (the close is seen asynchronously).
    drop(open.pop());
    let deadline = Instant::now() + WAIT;
    loop {
        match try_connect_raw(&broker, &Connect::v5(&broker.id_on("maxconn-late", 1))).await {
            Ok(_) => break,
            Err(why) => assert!(
                Instant::now() < deadline,
                "still refused after a client left: {why}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A v5 QoS 1 PUBLISH whose whole encoded size is exactly `size` bytes.
fn publish_of_size(topic: &str, size: usize) -> Publish {
    // fixed header 1 + remaining-length bytes; body = topic (2 + len) + id 2 + props 1 + payload
    let body_without_payload = 2 + topic.len() + 2 + 1;
    let mut payload_len = size - 1 - 1 - body_without_payload;
    let varint_len = |n: usize| {
        if n < 128 {
            1
        } else if n < 16_384 {
            2
        } else {
            3
        }
    };
    while 1 + varint_len(body_without_payload + payload_len) + body_without_payload + payload_len
        > size
    {
        payload_len -= 1;
    }
    let p = Publish::new(topic, 1, &vec![b'p'; payload_len]);
    assert_eq!(
        p.encode(raw::V5).len(),
        size,
        "test helper builds the exact size"
    );
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_packet_size_accepts_the_limit_and_disconnects_0x95_above_it() {
    let broker = Broker::start_with(&["--max-packet-size", "1024"]);
    let mut sub = broker.v5(&broker.id_on("mps-watch", 0)).await;
    sub.subscribe("mps/#", Qos::AtLeastOnce).await;

    let (mut c, connack) =
        RawClient::connect(broker.port(), &Connect::v5(&broker.id_on("mps-v5", 1))).await;
    let Packet::ConnAck { code: 0, props, .. } = &connack else {
        panic!("{connack:?}")
    };
    assert_eq!(
        props.int(prop::MAXIMUM_PACKET_SIZE),
        Some(1024),
        "CONNACK maximum packet size"
    );

    assert_eq!(
        c.publish(&publish_of_size("mps/at-limit", 1024).pkid(1))
            .await,
        0,
        "1024 bytes is allowed"
    );
    let p = sub.recv().await;
    assert_eq!(topic_of(&p), "mps/at-limit");

    c.send(&publish_of_size("mps/over", 1025).pkid(2).encode(raw::V5))
        .await
        .ok();
    let seen = c.expect_closed("a 1025-byte packet").await;
    assert!(
        matches!(seen.as_slice(), [Packet::Disconnect { code: 0x95, .. }]),
        "DISCONNECT 0x95 (packet too large) then close, got {seen:?}"
    );

    let mut c = broker
        .raw_connected(&Connect::v311(&broker.id_on("mps-v311", 0)))
        .await;
    let big = Publish::new("mps/over311", 0, &[b'q'; 2000]);
    c.send(&big.encode(raw::V311)).await.ok();
    let seen = c.expect_closed("an oversized 3.1.1 packet").await;
    assert!(seen.is_empty(), "3.1.1: plain close, got {seen:?}");

    sub.expect_no_publish(QUIET).await;
    broker.assert_healthy("mps").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_subscriptions_per_client_answers_quota_exceeded() {
    let broker = Broker::start_with(&["--max-subscriptions-per-client", "3"]);
    let mut c = broker.v5(&broker.id_on("maxsub-v5", 0)).await;
    for i in 1..=3 {
        c.subscribe(&format!("maxsub/{i}"), Qos::AtLeastOnce).await;
    }
    let ack = c
        .subscribe_filters(vec![mq5::Filter::new("maxsub/4", Qos::AtLeastOnce)], None)
        .await;
    assert_eq!(
        ack.return_codes,
        vec![mq5::SubscribeReasonCode::QuotaExceeded],
        "0x97 for the fourth"
    );
    c.subscribe("maxsub/1", Qos::ExactlyOnce).await; // replacing one does not add one
    c.unsubscribe("maxsub/1").await;
    c.subscribe("maxsub/4", Qos::AtLeastOnce).await;

    let mut r = broker
        .raw_connected(&Connect::v311(&broker.id_on("maxsub-v311", 1)))
        .await;
    let filters = [("a/1", 1u8), ("a/2", 1), ("a/3", 1)];
    assert_eq!(r.subscribe(1, &filters, &Props::new()).await, vec![1, 1, 1]);
    assert_eq!(
        r.subscribe(2, &[("a/4", 1)], &Props::new()).await,
        vec![0x80],
        "3.1.1 failure code"
    );

    // The refused filter really is not subscribed; the granted ones are.
    let mut publisher = broker.v5(&broker.id_on("maxsub-pub", 0)).await;
    publisher
        .publish("a/4", Qos::AtLeastOnce, false, "no")
        .await;
    publisher
        .publish("a/3", Qos::AtLeastOnce, false, "yes")
        .await;
    assert_eq!(r.expect_publish().await.payload, b"yes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_topic_levels_refuses_deeper_filters_and_topics() {
    let broker = Broker::start_with(&["--max-topic-levels", "3"]);
    let mut watch = broker.v5(&broker.id_on("levels-watch", 1)).await;
    watch.subscribe("#", Qos::AtLeastOnce).await;

    let mut c = broker.v5(&broker.id_on("levels-v5", 0)).await;
    c.subscribe("l/b/c", Qos::AtLeastOnce).await;
    let ack = c
        .subscribe_filters(vec![mq5::Filter::new("l/b/c/d", Qos::AtLeastOnce)], None)
        .await;
    assert!(
        matches!(
            ack.return_codes.as_slice(),
            [mq5::SubscribeReasonCode::QuotaExceeded
                | mq5::SubscribeReasonCode::TopicFilterInvalid]
        ),
        "a 4-level filter is refused (0x97 or 0x8F), got {:?}",
        ack.return_codes
    );

    let mut r = broker
        .raw_connected(&Connect::v311(&broker.id_on("levels-v311", 1)))
        .await;
    assert_eq!(
        r.subscribe(1, &[("l/b/c/d", 1)], &Props::new()).await,
        vec![0x80]
    );

    let mut p = broker
        .raw_connected(&Connect::v5(&broker.id_on("levels-pub", 0)))
        .await;
    assert_eq!(p.publish(&Publish::new("l/b/c", 1, b"ok").pkid(1)).await, 0);
    assert_eq!(watch.recv().await.payload.as_ref(), b"ok");
    p.send(
        &Publish::new("l/b/c/d", 1, b"too deep")
            .pkid(2)
            .encode(raw::V5),
    )
    .await
    .ok();
    match p.recv(WAIT).await {
        Recv::Packet(Packet::PubAck { pkid: 2, code }) => {
            assert!(code >= 0x80, "PUBACK with an error code, got {code:#x}")
        }
        Recv::Packet(Packet::Disconnect { code, .. }) => {
            assert!(code >= 0x80, "DISCONNECT {code:#x}")
        }
        Recv::Closed => {
            panic!("v5: a refused PUBLISH is answered with a reason code, not a silent close")
        }
        other => panic!("expected PUBACK with an error or DISCONNECT, got {other:?}"),
    }
    watch.expect_no_publish(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_closes_silent_and_half_sent_connections() {
    let broker = Broker::start_with(&["--connect-timeout", "1"]);
    let mut silent = broker.raw(raw::V311).await;
    let opened = Instant::now();
    let seen = silent.expect_closed("no CONNECT within 1 s").await;
    assert!(seen.is_empty(), "{seen:?}");
    let waited = opened.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "closed after {waited:?}, limit 1 s"
    );

    let mut half = broker.raw(raw::V5).await;
    let connect = Connect::v5(&broker.id_on("half", 0)).encode();
    half.send(&connect[..connect.len() / 2])
        .await
        .expect("send half a CONNECT");
    half.expect_closed("half a CONNECT").await;

    // A client that connects in time is not affected later.
    let mut ok = broker.raw(raw::V5).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    ok.send(&Connect::v5(&broker.id_on("in-time", 1)).encode())
        .await
        .expect("send CONNECT");
    assert!(matches!(
        ok.expect_packet("CONNACK").await,
        Packet::ConnAck { code: 0, .. }
    ));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ok.send(&raw::pingreq()).await.expect("send PINGREQ");
    assert_eq!(ok.expect_packet("PINGRESP").await, Packet::PingResp);
}

/// For 3.1.1 clients (no receive maximum of their own) `--max-inflight`
/// bounds the unacknowledged QoS 1 messages the broker sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_inflight_bounds_unacknowledged_messages_to_a_v311_client() {
    const WINDOW: usize = 4;
    const MESSAGES: usize = 12;
    let broker = Broker::start_with(&["--max-inflight", "4"]);
    let mut sub = broker
        .raw_connected(&Connect::v311(&broker.id_on("inflight-sub", 0)))
        .await;
    assert_eq!(
        sub.subscribe(1, &[("inflight/t", 1)], &Props::new()).await,
        vec![1]
    );
    let mut publisher = broker.v5(&broker.id_on("inflight-pub", 1)).await;
    for i in 0..MESSAGES {
        publisher
            .publish_nowait("inflight/t", Qos::AtLeastOnce, false, i.to_string())
            .await;
    }
    let mut unacked = VecDeque::new();
    let mut got = Vec::new();
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < MESSAGES {
        assert!(
            Instant::now() < deadline,
            "only {} of {MESSAGES} delivered",
            got.len()
        );
        match sub.recv(Duration::from_millis(300)).await {
            Recv::Packet(Packet::Publish(p)) => {
                unacked.push_back(p.pkid);
                most = most.max(unacked.len());
                assert!(
                    unacked.len() <= WINDOW,
                    "{} in flight, --max-inflight 4",
                    unacked.len()
                );
                got.push(String::from_utf8(p.payload).expect("UTF-8"));
            }
            Recv::Packet(other) => panic!("unexpected {other:?}"),
            Recv::Closed => panic!("closed"),
            Recv::TimedOut => {
                assert!(!unacked.is_empty(), "stalled after {} messages", got.len());
                while let Some(pkid) = unacked.pop_front() {
                    sub.send(&raw::ack(kind::PUBACK, pkid))
                        .await
                        .expect("send PUBACK");
                }
            }
        }
    }
    assert_eq!(
        got,
        (0..MESSAGES).map(|i| i.to_string()).collect::<Vec<_>>()
    );
    assert_eq!(most, WINDOW, "the window is used");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_queued_messages_bounds_an_offline_session() {
    let broker = Broker::start_with(&["--max-queued-messages", "5"]);
    let id = broker.id_on("queue-sub", 1);
    let mut sub = V5::connect(persistent_v5(&broker, &id, 300)).await;
    sub.subscribe("queue/t", Qos::AtLeastOnce).await;
    sub.disconnect().await;

    let mut publisher = broker.v5(&broker.id_on("queue-pub", 0)).await;
    for i in 0..20 {
        publisher
            .publish("queue/t", Qos::AtLeastOnce, false, i.to_string())
            .await;
    }
    let mut sub = V5::connect(persistent_v5(&broker, &id, 300)).await;
    let mut got = Vec::new();
    while let Some(p) = sub.try_recv(Duration::from_millis(800)).await {
        got.push(String::from_utf8_lossy(&p.payload).into_owned());
    }
    assert!(
        !got.is_empty(),
        "queued messages are delivered on reconnect"
    );
    assert!(
        got.len() <= 5,
        "at most 5 queued messages kept, got {}: {got:?}",
        got.len()
    );

    // The session still works normally afterwards.
    publisher
        .publish("queue/t", Qos::AtLeastOnce, false, "live")
        .await;
    assert_eq!(sub.recv().await.payload.as_ref(), b"live");
}

/// Collects `$SYS` messages until `done` is satisfied by the latest value per topic.
async fn sys_until(
    sub: &mut V5,
    what: &str,
    done: impl Fn(&BTreeMap<String, String>) -> bool,
) -> BTreeMap<String, String> {
    let mut latest = BTreeMap::new();
    let deadline = Instant::now() + WAIT;
    while !done(&latest) {
        let left = deadline.saturating_duration_since(Instant::now());
        match sub.try_recv(left).await {
            Some(p) => {
                latest.insert(
                    topic_of(&p),
                    String::from_utf8_lossy(&p.payload).into_owned(),
                );
            }
            None => panic!("$SYS never showed {what} within {WAIT:?}; seen: {latest:#?}"),
        }
    }
    latest
}

/// The leading number of a `$SYS` value ("12", "12 seconds").
fn int_of(map: &BTreeMap<String, String>, topic: &str) -> Option<u64> {
    map.get(topic)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sys_topics_are_published_every_interval() {
    let broker = Broker::start_with(&["--sys-interval", "1"]);
    let mut everything = broker.v5(&broker.id_on("sys-hash", 1)).await;
    everything.subscribe("#", Qos::AtMostOnce).await;
    everything.subscribe("+/broker/#", Qos::AtMostOnce).await;
    let mut sys = broker.v5(&broker.id_on("sys-sub", 0)).await;
    sys.subscribe("$SYS/#", Qos::AtMostOnce).await;

    let required = [
        "$SYS/broker/uptime",
        "$SYS/broker/version",
        "$SYS/broker/clients/connected",
        "$SYS/broker/messages/received",
        "$SYS/broker/subscriptions/count",
        "$SYS/broker/retained messages/count",
    ];
    let seen = sys_until(&mut sys, "all required topics", |m| {
        required.iter().all(|t| m.contains_key(*t))
    })
    .await;
    assert!(
        !seen["$SYS/broker/version"].trim().is_empty(),
        "version has a value"
    );
    for t in required.iter().filter(|t| !t.ends_with("version")) {
        let v = &seen[*t];
        assert!(
            v.split_whitespace()
                .next()
                .is_some_and(|n| n.parse::<u64>().is_ok()),
            "{t} is a number: {v:?}"
        );
    }
    // The first values may be retained from before these clients came; a
    // later period must count them.
    let seen = sys_until(
        &mut sys,
        "the two connected clients and their subscriptions",
        |m| {
            int_of(m, "$SYS/broker/clients/connected").unwrap_or(0) >= 2
                && int_of(m, "$SYS/broker/subscriptions/count").unwrap_or(0) >= 2
        },
    )
    .await;

    // The counters follow what clients do.
    let mut extra = Vec::new();
    for i in 0..3 {
        extra.push(
            broker
                .v5(&broker.id_on(&format!("sys-extra{i}"), i % 2))
                .await,
        );
    }
    let received_before = int_of(&seen, "$SYS/broker/messages/received").unwrap_or(0);
    let mut publisher = broker.v5(&broker.id_on("sys-pub", 1)).await;
    for i in 0..5 {
        publisher
            .publish("sys/app", Qos::AtLeastOnce, true, i.to_string())
            .await;
    }
    sys_until(
        &mut sys,
        "the new clients, messages and retained message",
        |m| {
            int_of(m, "$SYS/broker/clients/connected").unwrap_or(0) >= 6
                && int_of(m, "$SYS/broker/messages/received").unwrap_or(0) >= received_before + 5
                && int_of(m, "$SYS/broker/retained messages/count").unwrap_or(0) >= 1
        },
    )
    .await;

    // `#` does not match topics starting with `$`.
    let mut non_sys = 0;
    while let Some(p) = everything.try_recv(Duration::from_millis(1500)).await {
        let t = topic_of(&p);
        assert!(!t.starts_with('$'), "`#` matched {t}");
        non_sys += 1;
    }
    assert_eq!(
        non_sys, 5,
        "the subscriber to # got the 5 application messages only"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sys_interval_zero_disables_sys_topics() {
    let broker = Broker::start_with(&["--sys-interval", "0"]);
    let mut sys = broker.v5(&broker.id_on("nosys", 0)).await;
    sys.subscribe("$SYS/#", Qos::AtMostOnce).await;
    sys.expect_no_publish(Duration::from_millis(2500)).await;
}
