//! MQTT 5.0 features: flow control both ways, maximum packet size towards the
//! client, topic aliases, message expiry, subscription identifiers, no local,
//! shared subscriptions across shards, property passthrough, AUTH with an
//! unsupported method and assigned client ids.

// A test states its expectations with unwrap/expect and indexing: a panic
// here is a failed assertion, not a bug on a hot path.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod harness;

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use harness::raw::{self, kind, prop, Connect, Packet, Props, Publish, RawClient, Recv, Value};
use harness::{persistent_v5, topic_of, Broker, Qos, QUIET, V5, WAIT};
use rumqttc::v5::mqttbytes::v5 as mq5;
use tokio::time::Instant;

/// The broker never has more than `receive_max` unacknowledged QoS 1
/// publishes out to a client, and delivers everything in order once acked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_maximum_of_the_client_bounds_qos1_in_flight() {
    const RECEIVE_MAX: usize = 3;
    const MESSAGES: usize = 20;
    let broker = Broker::start();
    let connect = Connect::v5(&broker.id_on("rm-sub", 0))
        .prop(prop::RECEIVE_MAXIMUM, Value::U16(RECEIVE_MAX as u16));
    let mut sub = broker.raw_connected(&connect).await;
    assert_eq!(
        sub.subscribe(1, &[("rm/t", 1)], &Props::new()).await,
        vec![1]
    );

    let mut publisher = broker.v5(&broker.id_on("rm-pub", 1)).await;
    for i in 0..MESSAGES {
        publisher
            .publish_nowait("rm/t", Qos::AtLeastOnce, false, i.to_string())
            .await;
    }

    let mut unacked: VecDeque<u16> = VecDeque::new();
    let mut payloads = Vec::new();
    let mut most_in_flight = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while payloads.len() < MESSAGES {
        assert!(
            Instant::now() < deadline,
            "only {} of {MESSAGES} delivered",
            payloads.len()
        );
        match sub.recv(Duration::from_millis(300)).await {
            Recv::Packet(Packet::Publish(p)) => {
                unacked.push_back(p.pkid);
                most_in_flight = most_in_flight.max(unacked.len());
                assert!(
                    unacked.len() <= RECEIVE_MAX,
                    "{} QoS 1 publishes in flight, receive maximum is {RECEIVE_MAX}",
                    unacked.len()
                );
                payloads.push(String::from_utf8(p.payload).expect("UTF-8"));
            }
            Recv::Packet(Packet::PingResp) => {}
            Recv::Packet(other) => panic!("unexpected {other:?}"),
            Recv::Closed => panic!("broker closed the subscriber"),
            Recv::TimedOut => {
                assert!(
                    !unacked.is_empty(),
                    "broker stalled with nothing in flight after {} messages",
                    payloads.len()
                );
                while let Some(pkid) = unacked.pop_front() {
                    sub.send(&raw::ack(kind::PUBACK, pkid))
                        .await
                        .expect("send PUBACK");
                }
            }
        }
    }
    let want: Vec<String> = (0..MESSAGES).map(|i| i.to_string()).collect();
    assert_eq!(payloads, want, "every message, in order");
    assert_eq!(
        most_in_flight, RECEIVE_MAX,
        "the broker fills the window it was given"
    );
}

/// A QoS 2 message counts against the receive maximum until its PUBCOMP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_maximum_counts_qos2_until_pubcomp() {
    let broker = Broker::start();
    let connect =
        Connect::v5(&broker.id_on("rm2-sub", 1)).prop(prop::RECEIVE_MAXIMUM, Value::U16(1));
    let mut sub = broker.raw_connected(&connect).await;
    assert_eq!(
        sub.subscribe(1, &[("rm2/t", 2)], &Props::new()).await,
        vec![2]
    );
    let mut publisher = broker.v5(&broker.id_on("rm2-pub", 0)).await;
    publisher
        .publish("rm2/t", Qos::ExactlyOnce, false, "a")
        .await;
    publisher
        .publish("rm2/t", Qos::ExactlyOnce, false, "b")
        .await;

    let a = sub.expect_publish().await;
    assert_eq!(a.payload, b"a");
    sub.send(&raw::ack(kind::PUBREC, a.pkid))
        .await
        .expect("send PUBREC");
    assert!(
        matches!(sub.expect_non_ping("PUBREL").await, Packet::PubRel { pkid, .. } if pkid == a.pkid)
    );
    sub.expect_silence(QUIET).await;
    sub.send(&raw::ack(kind::PUBCOMP, a.pkid))
        .await
        .expect("send PUBCOMP");
    let b = sub.expect_publish().await;
    assert_eq!(b.payload, b"b");
}

/// `--max-inflight` is the broker's receive maximum: advertised in CONNACK,
/// and a client that exceeds it is disconnected with 0x93.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_receive_maximum_is_advertised_and_enforced() {
    let broker = Broker::start_with(&["--max-inflight", "5"]);
    let (mut c, connack) =
        RawClient::connect(broker.port(), &Connect::v5(&broker.id_on("srm", 0))).await;
    match &connack {
        Packet::ConnAck { code: 0, props, .. } => {
            assert_eq!(
                props.int(prop::RECEIVE_MAXIMUM),
                Some(5),
                "CONNACK receive maximum"
            );
        }
        other => panic!("{other:?}"),
    }
    for pkid in 1..=6u16 {
        c.send(&Publish::new("srm/t", 2, b"x").pkid(pkid).encode(raw::V5))
            .await
            .ok();
    }
    let seen = c.expect_closed("the sixth unreleased QoS 2 publish").await;
    let recs: BTreeSet<u16> = seen
        .iter()
        .filter_map(|p| match p {
            Packet::PubRec { pkid, .. } => Some(*pkid),
            _ => None,
        })
        .collect();
    assert_eq!(
        recs,
        (1..=5).collect(),
        "the first five are accepted: {seen:?}"
    );
    assert!(
        matches!(seen.last(), Some(Packet::Disconnect { code: 0x93, .. })),
        "DISCONNECT 0x93 (receive maximum exceeded) before close, got {seen:?}"
    );
    broker.assert_healthy("srm").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_larger_than_the_client_maximum_packet_size_are_not_sent_to_it() {
    let broker = Broker::start();
    let mut o = broker.v5_options(&broker.id_on("mps-sub", 0));
    o.set_max_packet_size(Some(512));
    let mut small_sub = V5::connect(o).await;
    small_sub.subscribe("mps/t", Qos::AtLeastOnce).await;
    let mut big_sub = broker.v5(&broker.id_on("mps-big", 1)).await;
    big_sub.subscribe("mps/t", Qos::AtLeastOnce).await;

    let mut publisher = broker.v5(&broker.id_on("mps-pub", 1)).await;
    publisher
        .publish("mps/t", Qos::AtLeastOnce, false, vec![b'x'; 2000])
        .await;
    publisher
        .publish("mps/t", Qos::AtLeastOnce, false, "small")
        .await;

    assert_eq!(
        big_sub.recv().await.payload.len(),
        2000,
        "a client without the limit gets it"
    );
    let p = small_sub.recv().await;
    assert_eq!(
        p.payload.as_ref(),
        b"small",
        "the oversized message is skipped, the next one arrives"
    );
    small_sub.expect_no_publish(QUIET).await;

    // Retained messages obey the limit too.
    publisher
        .publish("mps/retained/big", Qos::AtLeastOnce, true, vec![b'y'; 2000])
        .await;
    publisher
        .publish("mps/retained/small", Qos::AtLeastOnce, true, "fits")
        .await;
    small_sub
        .subscribe("mps/retained/+", Qos::AtLeastOnce)
        .await;
    let p = small_sub.recv().await;
    assert_eq!(
        (topic_of(&p).as_str(), p.payload.as_ref()),
        ("mps/retained/small", &b"fits"[..])
    );
    small_sub.expect_no_publish(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_aliases_from_a_client_are_resolved() {
    let broker = Broker::start();
    let mut sub = broker.v5(&broker.id_on("alias-sub", 0)).await;
    sub.subscribe("alias/#", Qos::AtLeastOnce).await;

    let (mut c, connack) =
        RawClient::connect(broker.port(), &Connect::v5(&broker.id_on("alias-pub", 1))).await;
    let alias_max = match &connack {
        Packet::ConnAck { code: 0, props, .. } => props.int(prop::TOPIC_ALIAS_MAXIMUM).unwrap_or(0),
        other => panic!("{other:?}"),
    };
    assert!(
        alias_max >= 1,
        "CONNACK offers topic aliases (Topic Alias Maximum {alias_max})"
    );

    let sends = [
        ("alias/t", "one"),
        ("", "two"),
        ("alias/u", "three"),
        ("", "four"),
    ];
    for (i, (topic, payload)) in sends.iter().enumerate() {
        let p = Publish::new(topic, 1, payload.as_bytes())
            .pkid(i as u16 + 1)
            .prop(prop::TOPIC_ALIAS, Value::U16(1));
        assert_eq!(c.publish(&p).await, 0, "PUBACK for {payload}");
    }
    let want = [
        ("alias/t", "one"),
        ("alias/t", "two"),
        ("alias/u", "three"),
        ("alias/u", "four"),
    ];
    for (topic, payload) in want {
        let p = sub.recv().await;
        assert_eq!(
            (topic_of(&p).as_str(), p.payload.as_ref()),
            (topic, payload.as_bytes())
        );
        let alias = p.properties.as_ref().and_then(|pr| pr.topic_alias);
        assert_eq!(
            alias, None,
            "no alias towards a client that did not allow them"
        );
    }
}

/// Opens a v5 connection, sends one PUBLISH and returns what the broker sent before closing.
async fn publish_and_expect_close(broker: &Broker, name: &str, publish: Publish) -> Vec<Packet> {
    let mut c = broker
        .raw_connected(&Connect::v5(&broker.id_on(name, 0)))
        .await;
    c.send(&publish.encode(raw::V5)).await.ok();
    c.expect_closed(name).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_topic_aliases_end_the_connection_with_the_right_reason() {
    let broker = Broker::start();
    let seen = publish_and_expect_close(
        &broker,
        "alias-zero",
        Publish::new("alias/z", 1, b"x").prop(prop::TOPIC_ALIAS, Value::U16(0)),
    )
    .await;
    assert!(
        matches!(seen.last(), Some(Packet::Disconnect { code: 0x94, .. })),
        "alias 0: 0x94, got {seen:?}"
    );

    let seen = publish_and_expect_close(
        &broker,
        "alias-huge",
        Publish::new("alias/h", 1, b"x").prop(prop::TOPIC_ALIAS, Value::U16(u16::MAX)),
    )
    .await;
    assert!(
        matches!(seen.last(), Some(Packet::Disconnect { code: 0x94, .. })),
        "alias above the maximum: 0x94, got {seen:?}"
    );

    let seen = publish_and_expect_close(
        &broker,
        "alias-unset",
        Publish::new("", 1, b"x").prop(prop::TOPIC_ALIAS, Value::U16(1)),
    )
    .await;
    assert!(
        matches!(seen.last(), Some(Packet::Disconnect { code: 0x82, .. })),
        "empty topic with an alias never set: 0x82, got {seen:?}"
    );

    // A mapping lives as long as its connection.
    let id = broker.id_on("alias-reconnect", 1);
    let mut c = broker.raw_connected(&Connect::v5(&id)).await;
    let mapped = Publish::new("alias/r", 1, b"x").prop(prop::TOPIC_ALIAS, Value::U16(1));
    let code = c.publish(&mapped).await;
    assert!(code < 0x80, "PUBACK {code:#x}");
    drop(c);
    let mut c = broker.raw_connected(&Connect::v5(&id)).await;
    c.send(
        &Publish::new("", 1, b"x")
            .prop(prop::TOPIC_ALIAS, Value::U16(1))
            .encode(raw::V5),
    )
    .await
    .ok();
    let seen = c
        .expect_closed("an alias from the previous connection")
        .await;
    assert!(
        matches!(seen.last(), Some(Packet::Disconnect { code: 0x82, .. })),
        "an alias set on an earlier connection is unknown: 0x82, got {seen:?}"
    );

    let seen = publish_and_expect_close(&broker, "alias-none", Publish::new("", 1, b"x")).await;
    assert!(
        matches!(seen.last(), Some(Packet::Disconnect { code: 0x82, .. })),
        "empty topic and no alias: 0x82, got {seen:?}"
    );
    broker.assert_healthy("alias").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_messages_are_not_delivered_to_a_late_persistent_subscriber() {
    let broker = Broker::start();
    let id = broker.id_on("mexp-sub", 1);
    let mut sub = V5::connect(persistent_v5(&broker, &id, 300)).await;
    sub.subscribe("mexp/t", Qos::AtLeastOnce).await;
    sub.disconnect().await;

    let mut publisher = broker.v5(&broker.id_on("mexp-pub", 0)).await;
    let expiring = |s: u32| mq5::PublishProperties {
        message_expiry_interval: Some(s),
        ..Default::default()
    };
    publisher
        .publish_with(
            "mexp/t",
            Qos::AtLeastOnce,
            false,
            "short",
            Some(expiring(1)),
        )
        .await;
    publisher
        .publish_with(
            "mexp/t",
            Qos::AtLeastOnce,
            false,
            "long",
            Some(expiring(300)),
        )
        .await;
    publisher
        .publish("mexp/t", Qos::AtLeastOnce, false, "forever")
        .await;
    publisher
        .publish_with(
            "mexp/retained",
            Qos::AtLeastOnce,
            true,
            "short retained",
            Some(expiring(1)),
        )
        .await;
    // Let the 1 s expiry pass.
    tokio::time::sleep(Duration::from_millis(2200)).await;

    let mut sub = V5::connect(persistent_v5(&broker, &id, 300)).await;
    assert!(sub.connack.session_present);
    let p = sub.recv().await;
    assert_eq!(
        p.payload.as_ref(),
        b"long",
        "the expired message was dropped"
    );
    let left = p
        .properties
        .as_ref()
        .and_then(|pr| pr.message_expiry_interval);
    assert!(
        matches!(left, Some(s) if (290..=298).contains(&s)),
        "expiry is forwarded minus the time spent waiting (about 2 s), got {left:?}"
    );
    let p = sub.recv().await;
    assert_eq!(p.payload.as_ref(), b"forever");
    assert_eq!(
        p.properties
            .as_ref()
            .and_then(|pr| pr.message_expiry_interval),
        None
    );
    sub.expect_no_publish(QUIET).await;

    let mut late = broker.v5(&broker.id_on("mexp-late", 0)).await;
    late.subscribe("mexp/retained", Qos::AtLeastOnce).await;
    late.expect_no_publish(QUIET).await;
}

async fn subscribe_with_id(c: &mut V5, filter: &str, id: usize) {
    let props = mq5::SubscribeProperties {
        id: Some(id),
        user_properties: Vec::new(),
    };
    let ack = c
        .subscribe_filters(
            vec![mq5::Filter::new(filter, Qos::AtLeastOnce)],
            Some(props),
        )
        .await;
    assert_eq!(
        ack.return_codes,
        vec![mq5::SubscribeReasonCode::Success(Qos::AtLeastOnce)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_identifiers_come_back_with_matching_messages() {
    let broker = Broker::start();
    let mut sub = broker.v5(&broker.id_on("sid-sub", 0)).await;
    subscribe_with_id(&mut sub, "sid/#", 42).await;
    subscribe_with_id(&mut sub, "sid/a", 7).await;
    sub.subscribe("sid/plain", Qos::AtLeastOnce).await;
    let mut publisher = broker.v5(&broker.id_on("sid-pub", 1)).await;

    // Two matching subscriptions: one PUBLISH with both ids, or one per subscription.
    publisher
        .publish("sid/a", Qos::AtLeastOnce, false, "a")
        .await;
    let mut ids = BTreeSet::new();
    let first = sub.recv().await;
    ids.extend(
        first
            .properties
            .map(|p| p.subscription_identifiers)
            .unwrap_or_default(),
    );
    if ids.len() < 2 {
        let second = sub.recv().await;
        assert_eq!(second.payload.as_ref(), b"a");
        ids.extend(
            second
                .properties
                .map(|p| p.subscription_identifiers)
                .unwrap_or_default(),
        );
    }
    assert_eq!(ids, BTreeSet::from([7, 42]));
    sub.expect_no_publish(QUIET).await;

    publisher
        .publish("sid/b", Qos::AtLeastOnce, false, "b")
        .await;
    let p = sub.recv().await;
    assert_eq!(
        p.properties
            .map(|p| p.subscription_identifiers)
            .unwrap_or_default(),
        vec![42]
    );

    publisher
        .publish("sid/plain", Qos::AtLeastOnce, false, "plain")
        .await;
    let mut got = Vec::new();
    while let Some(p) = sub.try_recv(QUIET).await {
        got.push(p);
    }
    let plain: Vec<_> = got
        .iter()
        .filter(|p| p.payload.as_ref() == b"plain")
        .collect();
    assert!(!plain.is_empty(), "plain message delivered");
    for p in plain {
        let ids = p
            .properties
            .clone()
            .map(|p| p.subscription_identifiers)
            .unwrap_or_default();
        assert!(
            ids.is_empty() || ids == vec![42],
            "sid/plain carries no id of its own, got {ids:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_local_keeps_a_client_own_messages_from_it() {
    let broker = Broker::start();
    let mut me = broker.v5(&broker.id_on("nl-me", 0)).await;
    let mut f = mq5::Filter::new("nl/t", Qos::AtLeastOnce);
    f.nolocal = true;
    me.subscribe_filters(vec![f], None).await;
    me.subscribe("nl/echo", Qos::AtLeastOnce).await;
    let mut other = broker.v5(&broker.id_on("nl-other", 1)).await;
    other.subscribe("nl/t", Qos::AtLeastOnce).await;

    me.publish("nl/t", Qos::AtLeastOnce, false, "mine").await;
    assert_eq!(other.recv().await.payload.as_ref(), b"mine");
    me.expect_no_publish(QUIET).await;

    me.publish("nl/echo", Qos::AtLeastOnce, false, "echo").await;
    assert_eq!(
        me.recv().await.payload.as_ref(),
        b"echo",
        "without no local a client gets its own messages"
    );

    other
        .publish("nl/t", Qos::AtLeastOnce, false, "theirs")
        .await;
    assert_eq!(me.recv().await.payload.as_ref(), b"theirs");
}

/// Receives from `members` until `total` messages arrived overall; returns
/// payloads per member.
async fn collect_from(members: &mut [V5], total: usize) -> Vec<Vec<String>> {
    let mut got: Vec<Vec<String>> = vec![Vec::new(); members.len()];
    let deadline = Instant::now() + WAIT;
    while got.iter().map(Vec::len).sum::<usize>() < total {
        assert!(
            Instant::now() < deadline,
            "only {:?} of {total} arrived",
            got.iter().map(Vec::len).collect::<Vec<_>>()
        );
        for (i, m) in members.iter_mut().enumerate() {
            if let Some(p) = m.try_recv(Duration::from_millis(50)).await {
                got[i].push(String::from_utf8_lossy(&p.payload).into_owned());
            }
        }
    }
    for m in members.iter_mut() {
        m.expect_no_publish(QUIET).await;
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscription_round_robins_across_shards() {
    const MESSAGES: usize = 20;
    let broker = Broker::start();
    let mut members = Vec::new();
    for shard in 0..2 {
        let mut m = broker.v5(&broker.id_on("share-m", shard)).await;
        m.subscribe("$share/g1/share/t", Qos::AtLeastOnce).await;
        members.push(m);
    }
    let mut other_group = broker.v5(&broker.id_on("share-g2", 1)).await;
    other_group
        .subscribe("$share/g2/share/+", Qos::AtLeastOnce)
        .await;
    let mut plain = broker.v5(&broker.id_on("share-plain", 0)).await;
    plain.subscribe("share/t", Qos::AtLeastOnce).await;

    let mut publisher = broker.v5(&broker.id_on("share-pub", 1)).await;
    for i in 0..MESSAGES {
        publisher
            .publish("share/t", Qos::AtLeastOnce, false, i.to_string())
            .await;
    }

    let got = collect_from(&mut members, MESSAGES).await;
    let mut all: Vec<usize> = got
        .iter()
        .flatten()
        .map(|s| s.parse().expect("number"))
        .collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..MESSAGES).collect::<Vec<_>>(),
        "each message to exactly one member of the group"
    );
    let counts: Vec<usize> = got.iter().map(Vec::len).collect();
    assert!(
        counts.iter().max().unwrap_or(&0) - counts.iter().min().unwrap_or(&0) <= 1,
        "round robin across the two shards, got {counts:?}"
    );

    for (who, c) in [
        ("second group", &mut other_group),
        ("plain subscriber", &mut plain),
    ] {
        for i in 0..MESSAGES {
            assert_eq!(
                c.recv().await.payload.as_ref(),
                i.to_string().as_bytes(),
                "{who} gets every message"
            );
        }
    }

    // When one member leaves, the other gets everything.
    members[1].unsubscribe("$share/g1/share/t").await;
    for i in 0..4 {
        publisher
            .publish("share/t", Qos::AtLeastOnce, false, format!("after {i}"))
            .await;
    }
    for i in 0..4 {
        assert_eq!(
            members[0].recv().await.payload.as_ref(),
            format!("after {i}").as_bytes()
        );
    }
    members[1].expect_no_publish(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscription_member_that_drops_stops_receiving() {
    let broker = Broker::start();
    let mut stay = broker.v5(&broker.id_on("share-stay", 0)).await;
    stay.subscribe("$share/g/drop/t", Qos::AtLeastOnce).await;
    let mut leave = broker.v5(&broker.id_on("share-leave", 1)).await;
    leave.subscribe("$share/g/drop/t", Qos::AtLeastOnce).await;
    drop(leave);
    // The drop is noticed asynchronously; a marker on a plain topic from the
    // same client id proves the broker has processed it.
    let mut back = broker.v5(&broker.id_on("share-leave", 1)).await;
    back.subscribe("drop/marker", Qos::AtLeastOnce).await;

    let mut publisher = broker.v5(&broker.id_on("share-drop-pub", 0)).await;
    for i in 0..6 {
        publisher
            .publish("drop/t", Qos::AtLeastOnce, false, i.to_string())
            .await;
    }
    for i in 0..6 {
        assert_eq!(stay.recv().await.payload.as_ref(), i.to_string().as_bytes());
    }
    back.expect_no_publish(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_properties_pass_through_unchanged() {
    let broker = Broker::start();
    let mut sub = broker.v5(&broker.id_on("props-sub", 0)).await;
    sub.subscribe("props/t", Qos::AtLeastOnce).await;
    let mut v311 = broker.v4(&broker.id_on("props-v311", 0)).await;
    v311.subscribe_ok("props/t", harness::Qos311::AtLeastOnce)
        .await;

    let mut publisher = broker.v5(&broker.id_on("props-pub", 1)).await;
    let sent = mq5::PublishProperties {
        payload_format_indicator: Some(1),
        content_type: Some("application/json".into()),
        response_topic: Some("props/reply/42".into()),
        correlation_data: Some(bytes::Bytes::from_static(b"\x00\x01corr")),
        user_properties: vec![
            ("b".into(), "2".into()),
            ("a".into(), "1".into()),
            ("a".into(), "0".into()),
        ],
        ..Default::default()
    };
    publisher
        .publish_with("props/t", Qos::AtLeastOnce, false, "{}", Some(sent.clone()))
        .await;

    let p = sub.recv().await;
    let got = p.properties.expect("properties forwarded");
    assert_eq!(got.payload_format_indicator, sent.payload_format_indicator);
    assert_eq!(got.content_type, sent.content_type);
    assert_eq!(got.response_topic, sent.response_topic);
    assert_eq!(got.correlation_data, sent.correlation_data);
    assert_eq!(
        got.user_properties, sent.user_properties,
        "user properties in order, duplicates kept"
    );
    assert_eq!(got.message_expiry_interval, None);

    // A 3.1.1 subscriber gets the same payload (properties cannot be carried).
    assert_eq!(v311.recv().await.payload.as_ref(), b"{}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_response_round_trip_across_shards() {
    let broker = Broker::start();
    let mut responder = broker.v5(&broker.id_on("rr-responder", 0)).await;
    responder.subscribe("rr/requests", Qos::AtLeastOnce).await;
    let mut requester = broker.v5(&broker.id_on("rr-requester", 1)).await;
    requester.subscribe("rr/replies/me", Qos::AtLeastOnce).await;

    let request = mq5::PublishProperties {
        response_topic: Some("rr/replies/me".into()),
        correlation_data: Some(bytes::Bytes::from_static(b"req-1")),
        ..Default::default()
    };
    requester
        .publish_with("rr/requests", Qos::AtLeastOnce, false, "2+2", Some(request))
        .await;

    let req = responder.recv().await;
    let props = req.properties.expect("request properties");
    let reply_to = props.response_topic.expect("response topic");
    let reply = mq5::PublishProperties {
        correlation_data: props.correlation_data,
        ..Default::default()
    };
    responder
        .publish_with(&reply_to, Qos::AtLeastOnce, false, "4", Some(reply))
        .await;

    let p = requester.recv().await;
    assert_eq!(p.payload.as_ref(), b"4");
    assert_eq!(
        p.properties.and_then(|p| p.correlation_data).as_deref(),
        Some(&b"req-1"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_with_an_unsupported_method_gets_connack_0x8c() {
    let broker = Broker::start();
    let connect = Connect::v5(&broker.id_on("auth-raw", 0))
        .prop(
            prop::AUTHENTICATION_METHOD,
            Value::Str("SCRAM-SHA-256".into()),
        )
        .prop(
            prop::AUTHENTICATION_DATA,
            Value::Bin(b"client-first".to_vec()),
        );
    let (mut c, connack) = RawClient::connect(broker.port(), &connect).await;
    assert!(
        matches!(
            connack,
            Packet::ConnAck {
                code: 0x8C,
                session_present: false,
                ..
            }
        ),
        "CONNACK 0x8C (bad authentication method), got {connack:?}"
    );
    c.expect_closed("after CONNACK 0x8C").await;

    let mut o = broker.v5_options(&broker.id_on("auth-rumqttc", 1));
    o.set_authentication_method(Some("SCRAM-SHA-256".into()));
    match V5::try_connect(o).await {
        Err(rumqttc::v5::ConnectionError::ConnectionRefused(code)) => {
            assert_eq!(code, mq5::ConnectReturnCode::BadAuthenticationMethod)
        }
        Err(e) => panic!("expected a refusal with 0x8C, got {e}"),
        Ok(_) => panic!("a CONNECT with an unsupported AUTH method was accepted"),
    }
    broker.assert_healthy("auth").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_client_id_gets_an_assigned_id_that_works() {
    let broker = Broker::start();
    let mut assigned = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..2 {
        let (c, connack) = RawClient::connect(broker.port(), &Connect::v5("")).await;
        match &connack {
            Packet::ConnAck { code: 0, props, .. } => {
                let id = props
                    .str(prop::ASSIGNED_CLIENT_IDENTIFIER)
                    .expect("Assigned Client Identifier");
                assert!(!id.is_empty());
                assigned.push(id.to_string());
            }
            other => panic!("empty client id refused: {other:?}"),
        }
        clients.push(c);
    }
    assert_ne!(assigned[0], assigned[1], "each connection gets its own id");

    let c = &mut clients[0];
    assert_eq!(
        c.subscribe(1, &[("assigned/t", 1)], &Props::new()).await,
        vec![1]
    );
    let mut publisher = broker.v5(&broker.id_on("assigned-pub", 1)).await;
    publisher
        .publish("assigned/t", Qos::AtLeastOnce, false, "hi")
        .await;
    assert_eq!(c.expect_publish().await.payload, b"hi");

    // 3.1.1: an empty id is accepted with a clean session, refused (0x02) without.
    let (_c, connack) = RawClient::connect(broker.port(), &Connect::v311("")).await;
    assert!(
        matches!(connack, Packet::ConnAck { code: 0, .. }),
        "{connack:?}"
    );
    let (mut c, connack) = RawClient::connect(broker.port(), &Connect::v311("").clean(false)).await;
    assert!(
        matches!(connack, Packet::ConnAck { code: 0x02, .. }),
        "identifier rejected: {connack:?}"
    );
    c.expect_closed("after CONNACK 0x02").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connack_advertises_the_features_in_use() {
    let broker = Broker::start_with(&["--max-packet-size", "65536"]);
    let (_c, connack) =
        RawClient::connect(broker.port(), &Connect::v5(&broker.id_on("features", 0))).await;
    let Packet::ConnAck { code: 0, props, .. } = connack else {
        panic!("{connack:?}")
    };
    assert_eq!(props.int(prop::MAXIMUM_PACKET_SIZE), Some(65536));
    // Absent means "available"; if present these must say 1.
    for (name, id) in [
        (
            "wildcard subscriptions",
            prop::WILDCARD_SUBSCRIPTION_AVAILABLE,
        ),
        (
            "subscription identifiers",
            prop::SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        ),
        ("shared subscriptions", prop::SHARED_SUBSCRIPTION_AVAILABLE),
        ("retain", prop::RETAIN_AVAILABLE),
    ] {
        assert_ne!(props.int(id), Some(0), "{name} available");
    }
}

/// A PUBREL for a packet id the broker does not hold is still completed:
/// PUBCOMP with 0x92 (packet identifier not found), or 0x00.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubrel_for_an_unknown_packet_id_gets_pubcomp() {
    let broker = Broker::start();
    let mut c = broker
        .raw_connected(&Connect::v5(&broker.id_on("unknown-rel", 0)))
        .await;
    c.send(&raw::ack(kind::PUBREL, 77))
        .await
        .expect("send PUBREL");
    match c.expect_non_ping("PUBCOMP").await {
        Packet::PubComp { pkid: 77, code } => {
            assert!(code == 0x92 || code == 0x00, "PUBCOMP reason {code:#x}")
        }
        other => panic!("expected PUBCOMP 77, got {other:?}"),
    }
    c.send(&raw::pingreq()).await.expect("send PINGREQ");
    assert_eq!(c.expect_packet("PINGRESP").await, Packet::PingResp);
}

/// MQTT 5.0 3.3.1.3: retained messages go to a new non-shared subscription
/// only; a shared subscription gets live messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscriptions_get_no_retained_messages() {
    let broker = Broker::start();
    let mut publisher = broker.v5(&broker.id_on("share-ret-pub", 1)).await;
    publisher
        .publish("share-ret/t", Qos::AtLeastOnce, true, "retained")
        .await;
    let mut member = broker.v5(&broker.id_on("share-ret-m", 0)).await;
    member
        .subscribe("$share/g/share-ret/t", Qos::AtLeastOnce)
        .await;
    member.expect_no_publish(QUIET).await;
    publisher
        .publish("share-ret/t", Qos::AtLeastOnce, false, "live")
        .await;
    assert_eq!(member.recv().await.payload.as_ref(), b"live");
}
