//! Start-up, publish/subscribe at every QoS in both protocol versions,
//! same-shard and cross-shard pairs, wildcards and unsubscribe.

// A test states its expectations with unwrap/expect and indexing: a panic
// here is a failed assertion, not a bug on a hot path.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod harness;

use harness::raw::{self, Connect, Packet};
use harness::{Broker, Qos, Qos311, QUIET};
use rumqttc::v5::mqttbytes::v5 as mq5;

fn qos311(n: u8) -> Qos311 {
    match n {
        0 => Qos311::AtMostOnce,
        1 => Qos311::AtLeastOnce,
        _ => Qos311::ExactlyOnce,
    }
}

fn qos5(n: u8) -> Qos {
    match n {
        0 => Qos::AtMostOnce,
        1 => Qos::AtLeastOnce,
        _ => Qos::ExactlyOnce,
    }
}

#[test]
fn ready_line_names_real_ports_and_the_shard_count() {
    let broker = Broker::start_with(&["--shards", "3"]);
    assert_eq!(broker.shards, 3);
    assert_ne!(broker.port(), 0);
    assert_eq!(
        broker.stdout_lines().len(),
        1,
        "stdout holds only the ready line: {:?}",
        broker.stdout_lines()
    );
}

#[test]
fn flags_can_come_from_environment_variables() {
    let broker = Broker::start_with_env(
        &[],
        &[("RINGMQ_SHARDS", "3"), ("RINGMQ_LISTEN", "127.0.0.1:0")],
    );
    assert_eq!(broker.shards, 3);
    assert_eq!(broker.listeners.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_listen_flags_open_one_listener_each_and_they_share_one_broker() {
    let broker = Broker::start_with(&[
        "--listen",
        "127.0.0.1:0",
        "--listen",
        "127.0.0.1:0",
        "--shards",
        "2",
    ]);
    assert_eq!(broker.listeners.len(), 2, "two listeners in the ready line");
    assert_ne!(broker.listeners[0], broker.listeners[1]);

    let sub_id = broker.id_on("two-listeners-sub", 0);
    let pub_id = broker.id_on("two-listeners-pub", 1);
    let mut sub = harness::V5::connect(rumqttc::v5::MqttOptions::new(
        &sub_id,
        "127.0.0.1",
        broker.listeners[0].port(),
    ))
    .await;
    sub.subscribe("listeners/t", Qos::AtLeastOnce).await;
    let mut publisher = harness::V5::connect(rumqttc::v5::MqttOptions::new(
        &pub_id,
        "127.0.0.1",
        broker.listeners[1].port(),
    ))
    .await;
    publisher
        .publish("listeners/t", Qos::AtLeastOnce, false, "across listeners")
        .await;
    assert_eq!(sub.recv().await.payload.as_ref(), b"across listeners");
}

/// Publishes at each QoS from `pub_shard` to a subscriber on `sub_shard`
/// (MQTT 3.1.1) and checks payload, topic and the granted QoS.
async fn v311_every_qos(sub_shard: u32, pub_shard: u32) {
    let broker = Broker::start();
    let mut sub = broker.v4(&broker.id_on("v311-sub", sub_shard)).await;
    let mut publisher = broker.v4(&broker.id_on("v311-pub", pub_shard)).await;
    for sub_qos in 0..=2u8 {
        let filter = format!("v311/sub{sub_qos}/+");
        sub.subscribe_ok(&filter, qos311(sub_qos)).await;
    }
    for sub_qos in 0..=2u8 {
        for pub_qos in 0..=2u8 {
            let topic = format!("v311/sub{sub_qos}/pub{pub_qos}");
            let payload = format!("{sub_qos}-{pub_qos}");
            publisher
                .publish(&topic, qos311(pub_qos), false, payload.clone())
                .await;
            let p = sub.recv().await;
            assert_eq!(p.topic, topic);
            assert_eq!(p.payload.as_ref(), payload.as_bytes());
            assert_eq!(
                p.qos,
                qos311(sub_qos.min(pub_qos)),
                "delivered QoS is min(publish, subscription) for {topic}"
            );
            assert!(!p.retain, "a live message is delivered with RETAIN 0");
        }
    }
    sub.expect_no_publish(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_qos_0_1_2_cross_shard() {
    v311_every_qos(0, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_qos_0_1_2_same_shard() {
    v311_every_qos(1, 1).await;
}

async fn v5_every_qos(sub_shard: u32, pub_shard: u32) {
    let broker = Broker::start();
    let mut sub = broker.v5(&broker.id_on("v5-sub", sub_shard)).await;
    let mut publisher = broker.v5(&broker.id_on("v5-pub", pub_shard)).await;
    for sub_qos in 0..=2u8 {
        sub.subscribe(&format!("v5/sub{sub_qos}/+"), qos5(sub_qos))
            .await;
    }
    for sub_qos in 0..=2u8 {
        for pub_qos in 0..=2u8 {
            let topic = format!("v5/sub{sub_qos}/pub{pub_qos}");
            let payload = format!("{sub_qos}-{pub_qos}");
            publisher
                .publish(&topic, qos5(pub_qos), false, payload.clone())
                .await;
            let p = sub.recv().await;
            assert_eq!(harness::topic_of(&p), topic);
            assert_eq!(p.payload.as_ref(), payload.as_bytes());
            assert_eq!(
                p.qos,
                qos5(sub_qos.min(pub_qos)),
                "delivered QoS for {topic}"
            );
            assert!(!p.retain);
        }
    }
    sub.expect_no_publish(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_qos_0_1_2_cross_shard() {
    v5_every_qos(0, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_qos_0_1_2_same_shard() {
    v5_every_qos(0, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_and_v5_clients_talk_to_each_other_across_shards() {
    let broker = Broker::start();
    let mut old = broker.v4(&broker.id_on("mixed-v311", 0)).await;
    let mut new = broker.v5(&broker.id_on("mixed-v5", 1)).await;
    old.subscribe_ok("mixed/to-v311", Qos311::AtLeastOnce).await;
    new.subscribe("mixed/to-v5", Qos::AtLeastOnce).await;

    new.publish("mixed/to-v311", Qos::AtLeastOnce, false, "from v5")
        .await;
    let p = old.recv().await;
    assert_eq!(
        (p.topic.as_str(), p.payload.as_ref()),
        ("mixed/to-v311", &b"from v5"[..])
    );

    old.publish("mixed/to-v5", Qos311::AtLeastOnce, false, "from v3.1.1")
        .await;
    let p = new.recv().await;
    assert_eq!(harness::topic_of(&p), "mixed/to-v5");
    assert_eq!(p.payload.as_ref(), b"from v3.1.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_reaches_every_subscriber_on_every_shard() {
    let broker = Broker::start_with(&["--shards", "3"]);
    let mut subs = Vec::new();
    for shard in 0..3 {
        for n in 0..2 {
            let mut s = broker
                .v5(&broker.id_on(&format!("fan-sub{n}"), shard))
                .await;
            s.subscribe("fan/out", Qos::AtLeastOnce).await;
            subs.push(s);
        }
    }
    let mut publisher = broker.v5(&broker.id_on("fan-pub", 2)).await;
    publisher
        .publish("fan/out", Qos::AtLeastOnce, false, "to all")
        .await;
    for s in &mut subs {
        assert_eq!(
            s.recv().await.payload.as_ref(),
            b"to all",
            "{}",
            s.client_id
        );
    }
    for s in &mut subs {
        s.expect_no_publish(QUIET).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_is_kept_per_publisher_and_topic_across_shards() {
    const MESSAGES: usize = 300;
    let broker = Broker::start();
    let mut sub = broker.v5(&broker.id_on("order-sub", 0)).await;
    sub.subscribe("order/t", Qos::AtLeastOnce).await;
    let mut publisher = broker.v5(&broker.id_on("order-pub", 1)).await;
    for i in 0..MESSAGES {
        publisher
            .publish_nowait("order/t", Qos::AtLeastOnce, false, i.to_string())
            .await;
    }
    for i in 0..MESSAGES {
        let p = sub.recv().await;
        assert_eq!(
            p.payload.as_ref(),
            i.to_string().as_bytes(),
            "message {i} in order"
        );
    }
    sub.expect_no_publish(QUIET).await;
}

/// One subscriber per filter, so each count is exact: which topics each
/// filter matches, including `#` matching its parent level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_filters_match_as_the_spec_says() {
    let broker = Broker::start();
    let filters = ["wc/+/c", "wc/#", "wc/+", "+/b/c", "wc/b/c", "#"];
    let topics = [
        "wc/b/c",
        "wc/b/d",
        "wc",
        "wc/x",
        "other/b/c",
        "wc/b/c/d",
        "wc//c",
    ];
    let expected: [&[&str]; 6] = [
        &["wc/b/c", "wc//c"],
        &["wc/b/c", "wc/b/d", "wc", "wc/x", "wc/b/c/d", "wc//c"],
        &["wc/x"],
        &["wc/b/c", "other/b/c"],
        &["wc/b/c"],
        &[
            "wc/b/c",
            "wc/b/d",
            "wc",
            "wc/x",
            "other/b/c",
            "wc/b/c/d",
            "wc//c",
        ],
    ];
    let mut subs = Vec::new();
    for (i, f) in filters.iter().enumerate() {
        let mut s = broker
            .v4(&broker.id_on(&format!("wc-sub{i}"), (i % 2) as u32))
            .await;
        s.subscribe_ok(f, Qos311::AtLeastOnce).await;
        subs.push(s);
    }
    let mut publisher = broker.v4(&broker.id_on("wc-pub", 1)).await;
    for t in topics {
        publisher.publish(t, Qos311::AtLeastOnce, false, t).await;
    }
    for ((s, f), want) in subs.iter_mut().zip(filters).zip(expected) {
        let mut got = Vec::new();
        for _ in 0..want.len() {
            let p = s.recv().await;
            assert_eq!(p.payload.as_ref(), p.topic.as_bytes());
            got.push(p.topic);
        }
        assert_eq!(got, want, "topics matched by {f:?}, in publish order");
        s.expect_no_publish(QUIET).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_stops_delivery_on_both_versions() {
    let broker = Broker::start();
    let mut v4 = broker.v4(&broker.id_on("unsub-v311", 0)).await;
    let mut v5 = broker.v5(&broker.id_on("unsub-v5", 0)).await;
    let mut publisher = broker.v5(&broker.id_on("unsub-pub", 1)).await;
    v4.subscribe_ok("unsub/+", Qos311::AtLeastOnce).await;
    v5.subscribe("unsub/+", Qos::AtLeastOnce).await;
    publisher
        .publish("unsub/a", Qos::AtLeastOnce, false, "before")
        .await;
    assert_eq!(v4.recv().await.payload.as_ref(), b"before");
    assert_eq!(v5.recv().await.payload.as_ref(), b"before");

    v4.unsubscribe("unsub/+").await;
    let reasons = v5.unsubscribe("unsub/+").await;
    assert_eq!(reasons, vec![mq5::UnsubAckReason::Success]);

    publisher
        .publish("unsub/a", Qos::AtLeastOnce, false, "after")
        .await;
    v4.expect_no_publish(QUIET).await;
    v5.expect_no_publish(QUIET).await;

    let reasons = v5.unsubscribe("never/subscribed").await;
    assert_eq!(
        reasons,
        vec![mq5::UnsubAckReason::NoSubscriptionExisted],
        "v5 UNSUBACK 0x11"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_subscribe_with_several_filters_gets_one_code_each() {
    let broker = Broker::start();
    let mut sub = broker.v5(&broker.id_on("multi-sub", 0)).await;
    let ack = sub
        .subscribe_filters(
            vec![
                mq5::Filter::new("multi/zero", Qos::AtMostOnce),
                mq5::Filter::new("multi/one", Qos::AtLeastOnce),
                mq5::Filter::new("multi/two", Qos::ExactlyOnce),
            ],
            None,
        )
        .await;
    assert_eq!(
        ack.return_codes,
        vec![
            mq5::SubscribeReasonCode::Success(Qos::AtMostOnce),
            mq5::SubscribeReasonCode::Success(Qos::AtLeastOnce),
            mq5::SubscribeReasonCode::Success(Qos::ExactlyOnce),
        ]
    );
    let mut publisher = broker.v5(&broker.id_on("multi-pub", 1)).await;
    for t in ["multi/zero", "multi/one", "multi/two"] {
        publisher.publish(t, Qos::ExactlyOnce, false, t).await;
        let p = sub.recv().await;
        assert_eq!(harness::topic_of(&p), t);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubscribing_replaces_the_subscription_and_its_qos() {
    let broker = Broker::start();
    let mut sub = broker.v4(&broker.id_on("resub-sub", 1)).await;
    let mut publisher = broker.v4(&broker.id_on("resub-pub", 0)).await;
    sub.subscribe_ok("resub/t", Qos311::AtMostOnce).await;
    sub.subscribe_ok("resub/t", Qos311::ExactlyOnce).await;
    publisher
        .publish("resub/t", Qos311::ExactlyOnce, false, "once")
        .await;
    let p = sub.recv().await;
    assert_eq!(
        p.qos,
        Qos311::ExactlyOnce,
        "the second SUBSCRIBE replaced the first"
    );
    sub.expect_no_publish(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pingreq_gets_pingresp() {
    let broker = Broker::start();
    for connect in [Connect::v311("ping-v311"), Connect::v5("ping-v5")] {
        let mut c = broker.raw_connected(&connect).await;
        c.send(&raw::pingreq()).await.expect("send PINGREQ");
        assert_eq!(c.expect_packet("PINGRESP").await, Packet::PingResp);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_connack_and_suback_bytes_are_exact() {
    let broker = Broker::start();
    let mut c = broker.raw(raw::V311).await;
    c.send(&Connect::v311(&broker.id_on("bytes-v311", 0)).encode())
        .await
        .expect("send CONNECT");
    let (first, body) = c.recv_frame(harness::WAIT).await.expect("CONNACK");
    assert_eq!(
        (first, body),
        (0x20, vec![0x00, 0x00]),
        "CONNACK: no session, accepted"
    );
    c.send(&raw::subscribe(
        raw::V311,
        0x1234,
        &[("bytes/t", 1)],
        &raw::Props::new(),
    ))
    .await
    .expect("send SUBSCRIBE");
    let (first, body) = c.recv_frame(harness::WAIT).await.expect("SUBACK");
    assert_eq!(
        (first, body),
        (0x90, vec![0x12, 0x34, 0x01]),
        "SUBACK grants QoS 1"
    );
}

/// Deterministic bytes that no encoding bug can reproduce by accident.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 31 + i / 251) % 256) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_payload_arrives_intact_across_shards() {
    let broker = Broker::start();
    let mut sub = broker.v4(&broker.id_on("large-sub", 0)).await;
    sub.subscribe_ok("large/t", Qos311::AtLeastOnce).await;
    let mut publisher = broker.v4(&broker.id_on("large-pub", 1)).await;
    let payload = pattern(900 * 1024);
    publisher
        .publish("large/t", Qos311::AtLeastOnce, false, payload.clone())
        .await;
    let p = sub.recv().await;
    assert_eq!(p.payload.len(), payload.len());
    assert!(
        p.payload.as_ref() == payload.as_slice(),
        "payload bytes differ"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_each_get_their_own_messages() {
    const CLIENTS: usize = 100;
    let broker = Broker::start_with(&["--shards", "3"]);
    let mut subs = Vec::new();
    for i in 0..CLIENTS {
        let id = broker.id_on(&format!("many{i}"), (i % 3) as u32);
        let mut c = broker.raw_connected(&Connect::v311(&id)).await;
        let topic = format!("many/{i}");
        assert_eq!(
            c.subscribe(1, &[(&topic, 1)], &raw::Props::new()).await,
            vec![1]
        );
        subs.push(c);
    }
    let mut publisher = broker.v5(&broker.id_on("many-pub", 2)).await;
    for i in 0..CLIENTS {
        publisher
            .publish(&format!("many/{i}"), Qos::AtLeastOnce, false, i.to_string())
            .await;
    }
    for (i, c) in subs.iter_mut().enumerate() {
        let p = c.expect_publish().await;
        assert_eq!(p.topic, format!("many/{i}"));
        assert_eq!(p.payload, i.to_string().as_bytes());
        c.send(&raw::ack(raw::kind::PUBACK, p.pkid))
            .await
            .expect("send PUBACK");
    }
    for c in &mut subs {
        c.expect_silence(std::time::Duration::from_millis(20)).await;
    }
}

/// 3.1.1 (3.3.5) and 5.0 (3.3.4): with overlapping subscriptions the client
/// gets the message at the highest QoS of those that match (possibly more
/// than one copy, never none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_subscriptions_deliver_at_the_highest_qos() {
    let broker = Broker::start();
    let mut sub = broker.v4(&broker.id_on("overlap-sub", 1)).await;
    sub.subscribe_ok("overlap/#", Qos311::AtMostOnce).await;
    sub.subscribe_ok("overlap/b", Qos311::ExactlyOnce).await;
    let mut publisher = broker.v4(&broker.id_on("overlap-pub", 0)).await;
    publisher
        .publish("overlap/b", Qos311::ExactlyOnce, false, "both")
        .await;
    let first = sub.recv().await;
    let mut qos = vec![first.qos];
    let mut more = broker.v4(&broker.id_on("overlap-marker", 0)).await;
    more.publish("overlap/marker", Qos311::AtMostOnce, false, "end")
        .await;
    loop {
        let p = sub.recv().await;
        if p.topic == "overlap/marker" {
            break;
        }
        assert_eq!(p.payload.as_ref(), b"both");
        qos.push(p.qos);
    }
    assert!(
        qos.contains(&Qos311::ExactlyOnce),
        "delivered at the highest matching QoS, got {qos:?}"
    );
}

/// More QoS 1 messages than there are packet ids: the broker's ids towards
/// the subscriber wrap around without reusing one still in flight or using 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packet_ids_wrap_around_after_65535_messages() {
    const MESSAGES: u32 = 66_000;
    const WINDOW: u16 = 50;
    let broker = Broker::start();
    let mut sub = broker
        .raw_connected(&Connect::v311(&broker.id_on("wrap-sub", 0)))
        .await;
    assert_eq!(
        sub.subscribe(1, &[("wrap/t", 1)], &raw::Props::new()).await,
        vec![1]
    );
    let mut publisher = broker
        .raw_connected(&Connect::v311(&broker.id_on("wrap-pub", 1)))
        .await;

    // The publisher stays at most AHEAD_MAX messages ahead of the subscriber,
    // well inside the broker's per-session queue (--max-queued-messages,
    // default 1000), so no message may be dropped.
    const AHEAD_MAX: u32 = 400;
    let received = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let seen = std::sync::Arc::clone(&received);
    let producer = tokio::spawn(async move {
        let mut next = 0u32;
        while next < MESSAGES {
            while next >= seen.load(std::sync::atomic::Ordering::Relaxed) + AHEAD_MAX {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            let batch = (MESSAGES - next).min(u32::from(WINDOW));
            let mut bytes = Vec::new();
            for k in 0..batch {
                let pkid = (k + 1) as u16;
                let payload = (next + k).to_be_bytes();
                bytes.extend_from_slice(
                    &raw::Publish::new("wrap/t", 1, &payload)
                        .pkid(pkid)
                        .encode(raw::V311),
                );
            }
            publisher.send(&bytes).await.expect("send PUBLISH batch");
            for _ in 0..batch {
                match publisher.expect_non_ping("PUBACK").await {
                    Packet::PubAck { .. } => {}
                    other => panic!("publisher: expected PUBACK, got {other:?}"),
                }
            }
            next += batch;
        }
        publisher
    });

    let mut in_flight = std::collections::HashSet::new();
    let mut acks = Vec::new();
    for n in 0..MESSAGES {
        let p = match sub.recv(harness::WAIT).await {
            raw::Recv::Packet(Packet::Publish(p)) => p,
            other => panic!("subscriber, message {n}: {other:?}"),
        };
        assert_ne!(p.pkid, 0, "packet id 0 is not allowed");
        assert!(
            in_flight.insert(p.pkid),
            "packet id {} reused while in flight",
            p.pkid
        );
        assert_eq!(p.payload, n.to_be_bytes(), "message {n} in order");
        received.store(n + 1, std::sync::atomic::Ordering::Relaxed);
        acks.extend_from_slice(&raw::ack(raw::kind::PUBACK, p.pkid));
        if acks.len() >= 4 * 16 || n + 1 == MESSAGES {
            sub.send(&acks).await.expect("send PUBACKs");
            acks.clear();
            in_flight.clear();
        }
    }
    producer.await.expect("publisher task");
}

/// 4.3.3: until the PUBREL, a QoS 2 PUBLISH repeated with the same packet id
/// is acknowledged again but not delivered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_qos2_publish_before_pubrel_is_delivered_once() {
    let broker = Broker::start();
    let mut sub = broker.v5(&broker.id_on("q2dup-sub", 0)).await;
    sub.subscribe("q2dup/t", Qos::ExactlyOnce).await;
    for version in [raw::V5, raw::V311] {
        let connect = Connect {
            version,
            ..Connect::v5(&broker.id_on(&format!("q2dup-pub{version}"), 1))
        };
        let mut publisher = broker.raw_connected(&connect).await;
        let first = raw::Publish::new("q2dup/t", 2, format!("once v{version}").as_bytes()).pkid(5);
        for publish in [first.clone(), first.clone().dup(true)] {
            publisher
                .send(&publish.encode(version))
                .await
                .expect("send PUBLISH");
            match publisher.expect_non_ping("PUBREC").await {
                Packet::PubRec { pkid: 5, code } => assert!(code < 0x80, "PUBREC {code:#x}"),
                other => panic!("expected PUBREC 5, got {other:?}"),
            }
        }
        publisher
            .send(&raw::ack(raw::kind::PUBREL, 5))
            .await
            .expect("send PUBREL");
        assert!(matches!(
            publisher.expect_non_ping("PUBCOMP").await,
            Packet::PubComp { pkid: 5, .. }
        ));
        let p = sub.recv().await;
        assert_eq!(p.payload.as_ref(), format!("once v{version}").as_bytes());
        sub.expect_no_publish(QUIET).await;
    }
}

/// A publisher that keeps publishing to one topic has its route memoized; every
/// change of subscriptions, on its own shard or another, must show in the next
/// message as if the tries were walked afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_publishes_follow_every_subscription_change() {
    let broker = Broker::start();
    let mut publisher = broker.v5(&broker.id_on("memo-pub", 0)).await;
    let mut same = broker.v5(&broker.id_on("memo-same", 0)).await;
    let mut other = broker.v5(&broker.id_on("memo-other", 1)).await;
    let mut member = broker.v5(&broker.id_on("memo-member", 0)).await;
    let q = Qos::AtLeastOnce;

    // Nobody subscribes yet: the (empty) answer is what gets memoized.
    for _ in 0..3 {
        publisher.publish("memo/t", q, false, "nobody").await;
    }
    same.subscribe("memo/t", q).await;
    publisher.publish("memo/t", q, false, "1").await;
    assert_eq!(same.recv().await.payload.as_ref(), b"1");

    other.subscribe("memo/#", q).await;
    publisher.publish("memo/t", q, false, "2").await;
    assert_eq!(same.recv().await.payload.as_ref(), b"2");
    assert_eq!(other.recv().await.payload.as_ref(), b"2", "another shard");

    member.subscribe("$share/g/memo/t", q).await;
    for n in ["3", "4"] {
        publisher.publish("memo/t", q, false, n).await;
        assert_eq!(member.recv().await.payload.as_ref(), n.as_bytes());
        assert_eq!(same.recv().await.payload.as_ref(), n.as_bytes());
        assert_eq!(other.recv().await.payload.as_ref(), n.as_bytes());
    }

    same.unsubscribe("memo/t").await;
    member.unsubscribe("$share/g/memo/t").await;
    publisher.publish("memo/t", q, false, "5").await;
    assert_eq!(other.recv().await.payload.as_ref(), b"5");

    // No Local on a memoized topic: the publisher's own subscription is skipped,
    // another client's is not.
    let mut own = mq5::Filter::new("memo/t", q);
    own.nolocal = true;
    publisher.subscribe_filters(vec![own], None).await;
    let mut plain = mq5::Filter::new("memo/t", q);
    plain.nolocal = true;
    same.subscribe_filters(vec![plain], None).await;
    publisher.publish("memo/t", q, false, "6").await;
    assert_eq!(same.recv().await.payload.as_ref(), b"6");
    assert_eq!(other.recv().await.payload.as_ref(), b"6");
    publisher.expect_no_publish(QUIET).await;
    same.expect_no_publish(QUIET).await;
    member.expect_no_publish(QUIET).await;
}
