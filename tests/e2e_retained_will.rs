//! Retained messages (wildcards, replacement, deletion, retain handling,
//! retain-as-published) and wills (abnormal close, keep-alive timeout, none
//! on DISCONNECT, v5 will delay, DISCONNECT 0x04, takeover).

// A test states its expectations with unwrap/expect and indexing: a panic
// here is a failed assertion, not a bug on a hot path.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod harness;

use std::time::Duration;

use harness::raw::{self, prop, Connect, Props, Value, Will};
use harness::{topic_of, Broker, Qos, Qos311, QUIET, V4, V5};
use rumqttc::v5::mqttbytes::v5 as mq5;
use tokio::time::Instant;

/// A v5 client on `shard` subscribed to `filter` at QoS 1.
async fn watcher(broker: &Broker, name: &str, shard: u32, filter: &str) -> V5 {
    let mut w = broker.v5(&broker.id_on(name, shard)).await;
    w.subscribe(filter, Qos::AtLeastOnce).await;
    w
}

/// Receives `n` messages and returns (topic, payload, retain) sorted by topic.
async fn recv_sorted(c: &mut V4, n: usize) -> Vec<(String, String, bool)> {
    let mut got = Vec::new();
    for _ in 0..n {
        let p = c.recv().await;
        got.push((
            p.topic.clone(),
            String::from_utf8_lossy(&p.payload).into_owned(),
            p.retain,
        ));
    }
    got.sort();
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_reach_new_subscribers_through_wildcards() {
    let broker = Broker::start();
    let mut publisher = broker.v4(&broker.id_on("ret-pub", 1)).await;
    for (t, p) in [("ret/a/1", "p1"), ("ret/b/1", "p2"), ("ret/b/2", "p3")] {
        publisher.publish(t, Qos311::AtLeastOnce, true, p).await;
    }
    let cases: [(&str, &[(&str, &str)]); 4] = [
        ("ret/+/1", &[("ret/a/1", "p1"), ("ret/b/1", "p2")]),
        (
            "ret/#",
            &[("ret/a/1", "p1"), ("ret/b/1", "p2"), ("ret/b/2", "p3")],
        ),
        ("ret/b/+", &[("ret/b/1", "p2"), ("ret/b/2", "p3")]),
        ("ret/b/2", &[("ret/b/2", "p3")]),
    ];
    for (i, (filter, want)) in cases.iter().enumerate() {
        let mut sub = broker.v4(&broker.id_on(&format!("ret-sub{i}"), 0)).await;
        sub.subscribe_ok(filter, Qos311::AtLeastOnce).await;
        let got = recv_sorted(&mut sub, want.len()).await;
        let want: Vec<_> = want
            .iter()
            .map(|(t, p)| (t.to_string(), p.to_string(), true))
            .collect();
        assert_eq!(
            got, want,
            "retained messages for {filter}, each with RETAIN 1"
        );
        sub.expect_no_publish(QUIET).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_message_is_replaced_and_deleted_by_an_empty_payload() {
    let broker = Broker::start();
    let mut publisher = broker.v4(&broker.id_on("replace-pub", 0)).await;
    publisher
        .publish("replace/t", Qos311::AtLeastOnce, true, "v1")
        .await;
    publisher
        .publish("replace/t", Qos311::AtLeastOnce, true, "v2")
        .await;

    let mut sub = broker.v4(&broker.id_on("replace-sub", 1)).await;
    sub.subscribe_ok("replace/#", Qos311::AtLeastOnce).await;
    let p = sub.recv().await;
    assert_eq!(
        (p.payload.as_ref(), p.retain),
        (&b"v2"[..], true),
        "only the latest retained message"
    );
    sub.expect_no_publish(QUIET).await;

    publisher
        .publish("replace/t", Qos311::AtLeastOnce, true, "")
        .await;
    let p = sub.recv().await;
    assert!(
        p.payload.is_empty(),
        "the empty retained message is delivered to existing subscribers"
    );

    let mut late = broker.v4(&broker.id_on("replace-late", 0)).await;
    late.subscribe_ok("replace/#", Qos311::AtLeastOnce).await;
    late.expect_no_publish(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_message_keeps_its_qos_up_to_the_subscription() {
    let broker = Broker::start();
    let mut publisher = broker.v5(&broker.id_on("retqos-pub", 0)).await;
    publisher
        .publish("retqos/t", Qos::ExactlyOnce, true, "q2")
        .await;

    let mut high = broker.v5(&broker.id_on("retqos-high", 1)).await;
    high.subscribe("retqos/t", Qos::ExactlyOnce).await;
    let p = high.recv().await;
    assert_eq!((p.qos, p.retain), (Qos::ExactlyOnce, true));

    let mut low = broker.v5(&broker.id_on("retqos-low", 0)).await;
    low.subscribe("retqos/t", Qos::AtMostOnce).await;
    let p = low.recv().await;
    assert_eq!((p.qos, p.retain), (Qos::AtMostOnce, true));
}

fn filter(path: &str, rule: mq5::RetainForwardRule, retain_as_published: bool) -> mq5::Filter {
    let mut f = mq5::Filter::new(path, Qos::AtLeastOnce);
    f.retain_forward_rule = rule;
    f.preserve_retain = retain_as_published;
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_retain_handling_0_1_2() {
    let broker = Broker::start();
    let mut publisher = broker.v5(&broker.id_on("rh-pub", 1)).await;
    publisher
        .publish("rh/t", Qos::AtLeastOnce, true, "kept")
        .await;
    let mut sub = broker.v5(&broker.id_on("rh-sub", 0)).await;

    // 0: retained messages on every SUBSCRIBE, new or not.
    for round in 0..2 {
        sub.subscribe_filters(
            vec![filter(
                "rh/t",
                mq5::RetainForwardRule::OnEverySubscribe,
                false,
            )],
            None,
        )
        .await;
        let p = sub.recv().await;
        assert_eq!(
            (p.payload.as_ref(), p.retain),
            (&b"kept"[..], true),
            "handling 0, SUBSCRIBE {round}"
        );
        sub.expect_no_publish(QUIET).await;
    }

    // 1: only when the subscription is new.
    sub.subscribe_filters(
        vec![filter(
            "rh/+",
            mq5::RetainForwardRule::OnNewSubscribe,
            false,
        )],
        None,
    )
    .await;
    let p = sub.recv().await;
    assert_eq!(p.payload.as_ref(), b"kept", "handling 1, new subscription");
    sub.expect_no_publish(QUIET).await;
    sub.subscribe_filters(
        vec![filter(
            "rh/+",
            mq5::RetainForwardRule::OnNewSubscribe,
            false,
        )],
        None,
    )
    .await;
    sub.expect_no_publish(QUIET).await;

    // 2: never.
    let mut never = broker.v5(&broker.id_on("rh-never", 1)).await;
    never
        .subscribe_filters(
            vec![filter("rh/#", mq5::RetainForwardRule::Never, false)],
            None,
        )
        .await;
    never.expect_no_publish(QUIET).await;
    publisher
        .publish("rh/t", Qos::AtLeastOnce, false, "live")
        .await;
    assert_eq!(
        never.recv().await.payload.as_ref(),
        b"live",
        "handling 2 still gets live messages"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_retain_as_published_keeps_the_flag_on_live_messages() {
    let broker = Broker::start();
    let mut rap = broker.v5(&broker.id_on("rap-on", 0)).await;
    rap.subscribe_filters(
        vec![filter(
            "rap/t",
            mq5::RetainForwardRule::OnEverySubscribe,
            true,
        )],
        None,
    )
    .await;
    let mut plain = broker.v5(&broker.id_on("rap-off", 1)).await;
    plain
        .subscribe_filters(
            vec![filter(
                "rap/t",
                mq5::RetainForwardRule::OnEverySubscribe,
                false,
            )],
            None,
        )
        .await;
    let mut v311 = broker.v4(&broker.id_on("rap-v311", 1)).await;
    v311.subscribe_ok("rap/t", Qos311::AtLeastOnce).await;

    let mut publisher = broker.v5(&broker.id_on("rap-pub", 0)).await;
    publisher
        .publish("rap/t", Qos::AtLeastOnce, true, "retained")
        .await;
    assert!(
        rap.recv().await.retain,
        "retain-as-published: RETAIN stays 1"
    );
    assert!(
        !plain.recv().await.retain,
        "without it: RETAIN 0 on a live message"
    );
    assert!(
        !v311.recv().await.retain,
        "3.1.1: RETAIN 0 on a live message"
    );

    publisher
        .publish("rap/t", Qos::AtLeastOnce, false, "not retained")
        .await;
    assert!(!rap.recv().await.retain);
    assert!(!plain.recv().await.retain);
    assert!(!v311.recv().await.retain);
}

// ---------------------------------------------------------------- wills

fn v4_with_will(
    broker: &Broker,
    id: &str,
    topic: &str,
    payload: &str,
    retain: bool,
) -> rumqttc::MqttOptions {
    let mut o = broker.v4_options(id);
    o.set_last_will(rumqttc::LastWill::new(
        topic,
        payload,
        Qos311::AtLeastOnce,
        retain,
    ));
    o
}

fn v5_with_will(broker: &Broker, id: &str, topic: &str, payload: &str) -> rumqttc::v5::MqttOptions {
    let mut o = broker.v5_options(id);
    o.set_last_will(mq5::LastWill::new(
        topic,
        payload,
        Qos::AtLeastOnce,
        false,
        None,
    ));
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_is_published_when_a_v311_client_drops() {
    let broker = Broker::start();
    let mut w = watcher(&broker, "will311-watch", 0, "will/#").await;
    let client = V4::connect(v4_with_will(
        &broker,
        &broker.id_on("will311", 1),
        "will/v311",
        "gone",
        false,
    ))
    .await;
    drop(client);
    let p = w.recv().await;
    assert_eq!(harness::topic_of(&p), "will/v311");
    assert_eq!(p.payload.as_ref(), b"gone");
    assert_eq!(p.qos, Qos::AtLeastOnce);
    w.expect_no_publish(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_is_published_with_its_properties_when_a_v5_client_drops() {
    let broker = Broker::start();
    let mut w = watcher(&broker, "will5-watch", 1, "will/#").await;
    let mut o = broker.v5_options(&broker.id_on("will5", 0));
    let props = mq5::LastWillProperties {
        delay_interval: None,
        payload_format_indicator: Some(1),
        message_expiry_interval: None,
        content_type: Some("text/plain".into()),
        response_topic: Some("will/replies".into()),
        correlation_data: Some(bytes::Bytes::from_static(b"corr-7")),
        user_properties: vec![("k".into(), "v1".into()), ("k".into(), "v2".into())],
    };
    o.set_last_will(mq5::LastWill::new(
        "will/v5",
        "gone5",
        Qos::AtLeastOnce,
        false,
        Some(props),
    ));
    let client = V5::connect(o).await;
    drop(client);

    let p = w.recv().await;
    assert_eq!(
        (harness::topic_of(&p).as_str(), p.payload.as_ref()),
        ("will/v5", &b"gone5"[..])
    );
    let props = p.properties.expect("will properties are forwarded");
    assert_eq!(props.payload_format_indicator, Some(1));
    assert_eq!(props.content_type.as_deref(), Some("text/plain"));
    assert_eq!(props.response_topic.as_deref(), Some("will/replies"));
    assert_eq!(props.correlation_data.as_deref(), Some(&b"corr-7"[..]));
    assert_eq!(
        props.user_properties,
        vec![("k".into(), "v1".into()), ("k".into(), "v2".into())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_will_is_kept_for_later_subscribers() {
    let broker = Broker::start();
    let client = V4::connect(v4_with_will(
        &broker,
        &broker.id_on("will-ret", 1),
        "will/ret",
        "last words",
        true,
    ))
    .await;
    let mut w = watcher(&broker, "will-ret-watch", 0, "will/ret").await;
    drop(client);
    assert_eq!(w.recv().await.payload.as_ref(), b"last words");

    let mut late = broker.v4(&broker.id_on("will-ret-late", 0)).await;
    late.subscribe_ok("will/ret", Qos311::AtLeastOnce).await;
    let p = late.recv().await;
    assert_eq!((p.payload.as_ref(), p.retain), (&b"last words"[..], true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_will_after_a_normal_disconnect() {
    let broker = Broker::start();
    let mut w = watcher(&broker, "nowill-watch", 0, "nowill/#").await;
    let c4 = V4::connect(v4_with_will(
        &broker,
        &broker.id_on("nowill311", 1),
        "nowill/v311",
        "x",
        false,
    ))
    .await;
    c4.disconnect().await;
    let c5 = V5::connect(v5_with_will(
        &broker,
        &broker.id_on("nowill5", 1),
        "nowill/v5",
        "x",
    ))
    .await;
    c5.disconnect().await;
    // A raw v5 DISCONNECT with reason 0x00 and properties, too.
    let mut r = broker
        .raw_connected(
            &Connect::v5(&broker.id_on("nowill-raw", 0)).will(Will::new("nowill/raw", b"x")),
        )
        .await;
    r.send(&raw::disconnect(
        raw::V5,
        0x00,
        &Props::new().with(prop::REASON_STRING, Value::Str("bye".into())),
    ))
    .await
    .expect("send DISCONNECT");
    r.expect_closed("after DISCONNECT").await;
    w.expect_no_publish(QUIET * 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_disconnect_with_reason_0x04_publishes_the_will() {
    let broker = Broker::start();
    let mut w = watcher(&broker, "will04-watch", 1, "will04/#").await;
    let mut r = broker
        .raw_connected(
            &Connect::v5(&broker.id_on("will04", 0)).will(Will::new("will04/t", b"on purpose")),
        )
        .await;
    r.send(&raw::disconnect(raw::V5, 0x04, &Props::new()))
        .await
        .expect("send DISCONNECT 0x04");
    r.expect_closed("after DISCONNECT").await;
    let p = w.recv().await;
    assert_eq!(
        (harness::topic_of(&p).as_str(), p.payload.as_ref()),
        ("will04/t", &b"on purpose"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_timeout_closes_the_connection_and_publishes_the_will() {
    let broker = Broker::start();
    let mut w = watcher(&broker, "ka-watch", 0, "ka/#").await;
    for (name, version) in [("ka-v311", raw::V311), ("ka-v5", raw::V5)] {
        let connect = Connect {
            version,
            ..Connect::v5(&broker.id_on(name, 1))
        }
        .keep_alive(1)
        .will(Will::new(&format!("ka/{name}"), b"timed out"));
        let mut r = broker.raw_connected(&connect).await;
        let silent_since = Instant::now();
        let seen = r.expect_closed("keep alive 1 s, nothing sent").await;
        let waited = silent_since.elapsed();
        assert!(
            waited >= Duration::from_millis(1400),
            "{name}: closed after {waited:?}; the spec allows the client 1.5 x keep alive"
        );
        assert!(
            waited < Duration::from_secs(4),
            "{name}: closed only after {waited:?}; keep alive 1 s is enforced at 1.5 s"
        );
        if version == raw::V311 {
            assert!(
                seen.is_empty(),
                "{name}: 3.1.1 closes without sending anything, got {seen:?}"
            );
        } else {
            assert!(
                seen.iter()
                    .all(|p| matches!(p, raw::Packet::Disconnect { code: 0x8D, .. })),
                "{name}: at most a DISCONNECT 0x8D (keep alive timeout) before close, got {seen:?}"
            );
        }
        let p = w.recv().await;
        assert_eq!(harness::topic_of(&p), format!("ka/{name}"));
        assert_eq!(p.payload.as_ref(), b"timed out");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_within_keep_alive_keep_the_connection_open() {
    let broker = Broker::start();
    let mut r = broker
        .raw_connected(&Connect::v311(&broker.id_on("ka-ping", 0)).keep_alive(1))
        .await;
    // Six pings half a second apart: three seconds, twice the 1.5 s limit.
    for i in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        r.send(&raw::pingreq())
            .await
            .unwrap_or_else(|e| panic!("ping {i}: {e}"));
        assert_eq!(
            r.expect_packet("PINGRESP").await,
            raw::Packet::PingResp,
            "ping {i}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_will_delay_postpones_the_will() {
    let broker = Broker::start();
    let mut w = watcher(&broker, "delay-watch", 0, "delay/#").await;
    let will = Will {
        props: Props::new().with(prop::WILL_DELAY_INTERVAL, Value::U32(2)),
        ..Will::new("delay/t", b"late")
    };
    let connect = Connect::v5(&broker.id_on("delay", 1))
        .prop(prop::SESSION_EXPIRY_INTERVAL, Value::U32(300))
        .will(will);
    let r = broker.raw_connected(&connect).await;
    drop(r);
    let dropped = Instant::now();
    w.expect_no_publish(Duration::from_secs(1)).await;
    let p = w.recv().await;
    assert_eq!(p.payload.as_ref(), b"late");
    let after = dropped.elapsed();
    assert!(
        after >= Duration::from_millis(1800) && after < Duration::from_secs(5),
        "published after {after:?}, delay is 2 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_reconnect_within_the_will_delay_cancels_the_will() {
    let broker = Broker::start();
    let mut w = watcher(&broker, "cancel-watch", 1, "cancel/#").await;
    let id = broker.id_on("cancel", 0);
    let will = Will {
        props: Props::new().with(prop::WILL_DELAY_INTERVAL, Value::U32(2)),
        ..Will::new("cancel/t", b"x")
    };
    let connect = Connect::v5(&id)
        .clean(false)
        .prop(prop::SESSION_EXPIRY_INTERVAL, Value::U32(300))
        .will(will);
    let r = broker.raw_connected(&connect).await;
    drop(r);
    let _back = broker
        .raw_connected(
            &Connect::v5(&id)
                .clean(false)
                .prop(prop::SESSION_EXPIRY_INTERVAL, Value::U32(300)),
        )
        .await;
    // Past the 2 s delay: the will must not come.
    w.expect_no_publish(Duration::from_millis(2800)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_will_is_published_when_the_session_ends_before_the_delay() {
    let broker = Broker::start();
    let mut w = watcher(&broker, "short-watch", 0, "short/#").await;
    let will = Will {
        props: Props::new().with(prop::WILL_DELAY_INTERVAL, Value::U32(3600)),
        ..Will::new("short/t", b"session over")
    };
    let connect = Connect::v5(&broker.id_on("short", 1))
        .prop(prop::SESSION_EXPIRY_INTERVAL, Value::U32(1))
        .will(will);
    let r = broker.raw_connected(&connect).await;
    drop(r);
    let dropped = Instant::now();
    let p = w.recv().await;
    assert_eq!(
        p.payload.as_ref(),
        b"session over",
        "the will goes out when the 1 s session ends"
    );
    assert!(
        dropped.elapsed() < Duration::from_secs(4),
        "will published after {:?}, the session ended after 1 s",
        dropped.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_publishes_the_will_of_the_old_connection() {
    let broker = Broker::start();
    let mut w = watcher(&broker, "tw-watch", 0, "tw/#").await;
    let id311 = broker.id_on("tw-v311", 1);
    let mut old = V4::connect(v4_with_will(&broker, &id311, "tw/v311", "replaced", false)).await;
    let _new = broker.v4(&id311).await;
    old.expect_closed().await;
    assert_eq!(w.recv().await.payload.as_ref(), b"replaced");

    // Raw, since rumqttc cannot parse the short form of DISCONNECT (see e2e_sessions).
    let id5 = broker.id_on("tw-v5", 1);
    let mut old = broker
        .raw_connected(&Connect::v5(&id5).will(Will::new("tw/v5", b"replaced5")))
        .await;
    let _new = broker.v5(&id5).await;
    let seen = old.expect_closed("the taken-over connection").await;
    assert!(
        matches!(
            seen.as_slice(),
            [raw::Packet::Disconnect { code: 0x8E, .. }]
        ),
        "{seen:?}"
    );
    assert_eq!(w.recv().await.payload.as_ref(), b"replaced5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_retained_topics_from_two_shards_reach_one_wildcard_subscriber() {
    const TOPICS: usize = 500;
    let broker = Broker::start();
    let mut publishers = [
        broker.v5(&broker.id_on("many-ret-pub", 0)).await,
        broker.v5(&broker.id_on("many-ret-pub", 1)).await,
    ];
    for i in 0..TOPICS {
        let p = &mut publishers[i % 2];
        p.publish_nowait(
            &format!("many-ret/{}/{i}", i % 7),
            Qos::AtMostOnce,
            true,
            i.to_string(),
        )
        .await;
    }
    // A QoS 1 publish from each publisher after its QoS 0 ones: once acked,
    // the broker has read everything before it.
    for p in &mut publishers {
        p.publish("many-ret/sync", Qos::AtLeastOnce, true, "sync")
            .await;
    }
    let mut sub = broker.v5(&broker.id_on("many-ret-sub", 1)).await;
    sub.subscribe("many-ret/+/#", Qos::AtMostOnce).await;
    let mut got = std::collections::BTreeSet::new();
    let mut syncs = 0;
    while got.len() < TOPICS || syncs == 0 {
        let p = sub.recv().await;
        assert!(p.retain, "delivered as retained");
        let t = topic_of(&p);
        if t == "many-ret/sync" {
            syncs += 1;
            assert_eq!(syncs, 1, "one retained message per topic");
        } else {
            assert!(got.insert(t.clone()), "{t} delivered twice");
        }
    }
    sub.expect_no_publish(QUIET).await;
}
