//! The session state machine on a virtual clock: windows, queues, resend on resume,
//! QoS 2 exactly once, topic aliases, expiry, the client's maximum packet size.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::num::{NonZeroU16, NonZeroU32};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use ringmq_core::codec;
use ringmq_core::packet::{
    LazyProperties, Packet, PacketId, ProtocolVersion, PubResponse, Publish, PublishProperties, QoS,
};
use ringmq_core::reason::ReasonCode;
use ringmq_core::session::{
    Delivery, DropReason, FrameCache, Grant, Inbound, Message, QueueFullPolicy, Session,
    SessionKey, SessionLimits, Timestamp,
};

use ProtocolVersion::{V311, V5};

fn limits() -> SessionLimits {
    SessionLimits {
        inflight_max: 2,
        queued_max: 3,
        receive_maximum: 2,
        topic_alias_maximum: 4,
        topic_levels_max: 8,
        subscriptions_max: 2,
        queue_full: QueueFullPolicy::Drop,
    }
}

fn session() -> Session {
    Session::new("c".into(), SessionKey(1), limits())
}

fn message(qos: QoS, payload: &'static str) -> Arc<Message> {
    Arc::new(Message {
        topic: "t".into(),
        payload: Bytes::from_static(payload.as_bytes()),
        qos,
        retain: false,
        properties: LazyProperties::none(),
        expires_at: None,
        origin: None,
        sampled_at_ns: 0,
    })
}

fn grant(qos: QoS) -> Grant {
    Grant {
        qos,
        ..Grant::default()
    }
}

/// Every packet written to `out`, decoded as the client would.
fn packets(out: &mut BytesMut, version: ProtocolVersion) -> Vec<Packet> {
    let mut found = Vec::new();
    while let Some(packet) = codec::decode(out, version, u32::MAX).unwrap() {
        found.push(packet);
    }
    assert!(out.is_empty());
    found
}

fn publish_ids(packets: &[Packet]) -> Vec<(u16, bool)> {
    packets
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some((p.packet_id.map_or(0, PacketId::get), p.dup)),
            _ => None,
        })
        .collect()
}

const T0: Timestamp = Timestamp(1_000);

#[test]
fn window_limits_inflight_then_queue_then_drop() {
    let mut s = session();
    let mut out = BytesMut::new();
    s.resume(V311, None, None, T0, &mut out);
    let deliveries: Vec<Delivery> = (0..6)
        .map(|_| {
            s.deliver(
                &message(QoS::AtLeastOnce, "m"),
                grant(QoS::AtLeastOnce),
                T0,
                &mut out,
                false,
                &mut FrameCache::default(),
            )
        })
        .collect();
    use Delivery::*;
    assert_eq!(
        deliveries,
        [
            Sent,
            Sent,
            Queued,
            Queued,
            Queued,
            Dropped(DropReason::QueueFull)
        ]
    );
    assert_eq!(
        publish_ids(&packets(&mut out, V311)),
        [(1, false), (2, false)]
    );

    // Each PUBACK opens the window for one queued message, in order.
    let dropped = s.handle_puback(PacketId::new(1).unwrap(), T0, &mut out);
    assert!(dropped.is_empty());
    assert_eq!(publish_ids(&packets(&mut out, V311)), [(3, false)]);
    assert_eq!(s.pending_len(), 4);
}

#[test]
fn client_receive_maximum_narrows_the_window() {
    let mut s = session();
    let mut out = BytesMut::new();
    s.resume(V5, NonZeroU16::new(1), None, T0, &mut out);
    let a = s.deliver(
        &message(QoS::ExactlyOnce, "a"),
        grant(QoS::ExactlyOnce),
        T0,
        &mut out,
        false,
        &mut FrameCache::default(),
    );
    let b = s.deliver(
        &message(QoS::ExactlyOnce, "b"),
        grant(QoS::ExactlyOnce),
        T0,
        &mut out,
        false,
        &mut FrameCache::default(),
    );
    assert_eq!((a, b), (Delivery::Sent, Delivery::Queued));
}

#[test]
fn resume_resends_unacknowledged_with_dup_and_pubrel_for_released() {
    let mut s = session();
    let mut out = BytesMut::new();
    s.resume(V311, None, None, T0, &mut out);
    s.deliver(
        &message(QoS::AtLeastOnce, "one"),
        grant(QoS::AtLeastOnce),
        T0,
        &mut out,
        false,
        &mut FrameCache::default(),
    );
    s.deliver(
        &message(QoS::ExactlyOnce, "two"),
        grant(QoS::ExactlyOnce),
        T0,
        &mut out,
        false,
        &mut FrameCache::default(),
    );
    packets(&mut out, V311);
    // QoS 2 reaches PUBREC: the broker answers PUBREL and waits for PUBCOMP.
    s.handle_pubrec(
        &PubResponse::success(PacketId::new(2).unwrap()),
        T0,
        &mut out,
    );
    assert!(matches!(packets(&mut out, V311)[..], [Packet::PubRel(_)]));

    s.disconnect();
    // Offline: QoS 1 queues, QoS 0 is dropped.
    assert_eq!(
        s.deliver(
            &message(QoS::AtLeastOnce, "three"),
            grant(QoS::AtLeastOnce),
            T0,
            &mut out,
            false,
            &mut FrameCache::default()
        ),
        Delivery::Queued
    );
    assert_eq!(
        s.deliver(
            &message(QoS::AtMostOnce, "zero"),
            grant(QoS::AtMostOnce),
            T0,
            &mut out,
            false,
            &mut FrameCache::default()
        ),
        Delivery::Dropped(DropReason::QueueFull)
    );
    assert!(out.is_empty());

    s.resume(V311, None, None, T0, &mut out);
    let resent = packets(&mut out, V311);
    assert!(matches!(&resent[0], Packet::Publish(p) if p.dup && p.packet_id == PacketId::new(1)));
    assert!(matches!(&resent[1], Packet::PubRel(r) if r.packet_id.get() == 2));
    // The window (2) is full with 1 and 2: the queued message waits.
    assert_eq!(resent.len(), 2);
    s.handle_pubcomp(PacketId::new(2).unwrap(), T0, &mut out);
    assert!(
        matches!(&packets(&mut out, V311)[..], [Packet::Publish(p)] if &p.payload[..] == b"three")
    );
}

#[test]
fn inbound_qos2_is_routed_once_and_acknowledged_each_time() {
    let mut s = session();
    let publish = Publish {
        dup: false,
        qos: QoS::ExactlyOnce,
        retain: false,
        topic: "a/b".into(),
        packet_id: PacketId::new(9),
        properties: LazyProperties::none(),
        payload: Bytes::from_static(b"x"),
    };
    assert!(matches!(
        s.handle_publish(publish.clone(), T0),
        Ok(Inbound::Route(_, _))
    ));
    let again = Publish {
        dup: true,
        ..publish.clone()
    };
    assert_eq!(
        s.handle_publish(again, T0),
        Ok(Inbound::Duplicate(PacketId::new(9).unwrap()))
    );
    let mut out = BytesMut::new();
    s.handle_pubrel(PacketId::new(9).unwrap(), &mut out);
    assert!(
        matches!(&packets(&mut out, V311)[..], [Packet::PubComp(c)] if c.reason == ReasonCode::Success)
    );
    // Released: the same id is a new message now.
    assert!(matches!(
        s.handle_publish(publish.clone(), T0),
        Ok(Inbound::Route(_, _))
    ));

    // The receive maximum (2) bounds unreleased QoS 2 messages.
    let third = |id| Publish {
        packet_id: PacketId::new(id),
        ..publish.clone()
    };
    assert!(s.handle_publish(third(10), T0).is_ok());
    let error = s.handle_publish(third(11), T0).unwrap_err();
    assert_eq!(error.reason, ReasonCode::ReceiveMaximumExceeded);
}

#[test]
fn topic_aliases_set_resolve_and_refuse() {
    let mut s = session();
    let mut publish = Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "long/topic/name".into(),
        packet_id: None,
        properties: PublishProperties {
            topic_alias: NonZeroU16::new(3),
            ..PublishProperties::default()
        }
        .into(),
        payload: Bytes::new(),
    };
    assert!(s.handle_publish(publish.clone(), T0).is_ok());
    publish.topic = "".into();
    match s.handle_publish(publish.clone(), T0) {
        Ok(Inbound::Route(m, None)) => {
            assert_eq!(&*m.topic, "long/topic/name");
            assert_eq!(m.properties.topic_alias, None);
        }
        other => panic!("{other:?}"),
    }
    publish.properties.make_mut().topic_alias = NonZeroU16::new(2);
    assert_eq!(
        s.handle_publish(publish.clone(), T0).unwrap_err().reason,
        ReasonCode::ProtocolError
    );
    publish.properties.make_mut().topic_alias = NonZeroU16::new(5);
    assert_eq!(
        s.handle_publish(publish.clone(), T0).unwrap_err().reason,
        ReasonCode::TopicAliasInvalid
    );
    // A new connection forgets the aliases.
    let mut out = BytesMut::new();
    s.resume(V5, None, None, T0, &mut out);
    publish.properties.make_mut().topic_alias = NonZeroU16::new(3);
    assert!(s.handle_publish(publish, T0).is_err());
}

#[test]
fn expiry_counts_down_and_drops_expired() {
    let mut s = session();
    let mut out = BytesMut::new();
    s.resume(V5, None, None, T0, &mut out);
    let mut m = Message::clone(&message(QoS::AtMostOnce, "e"));
    m.expires_at = Some(T0.plus_s(10));
    let m = Arc::new(m);
    s.deliver(
        &m,
        grant(QoS::AtMostOnce),
        Timestamp(T0.0 + 2_500),
        &mut out,
        false,
        &mut FrameCache::default(),
    );
    match &packets(&mut out, V5)[..] {
        [Packet::Publish(p)] => assert_eq!(p.properties.message_expiry_interval_s, Some(8)),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        s.deliver(
            &m,
            grant(QoS::AtMostOnce),
            T0.plus_s(10),
            &mut out,
            false,
            &mut FrameCache::default()
        ),
        Delivery::Dropped(DropReason::Expired)
    );
}

#[test]
fn messages_over_the_client_maximum_packet_size_are_not_sent() {
    let mut s = session();
    let mut out = BytesMut::new();
    s.resume(V5, None, NonZeroU32::new(20), T0, &mut out);
    let small = s.deliver(
        &message(QoS::AtMostOnce, "ok"),
        grant(QoS::AtMostOnce),
        T0,
        &mut out,
        false,
        &mut FrameCache::default(),
    );
    let large = s.deliver(
        &message(QoS::AtMostOnce, "this payload is longer than twenty bytes"),
        grant(QoS::AtMostOnce),
        T0,
        &mut out,
        false,
        &mut FrameCache::default(),
    );
    assert_eq!(
        (small, large),
        (Delivery::Sent, Delivery::Dropped(DropReason::TooLarge))
    );
}

#[test]
fn full_output_drops_qos0_and_queues_qos1() {
    let mut s = session();
    let mut out = BytesMut::new();
    s.resume(V311, None, None, T0, &mut out);
    assert_eq!(
        s.deliver(
            &message(QoS::AtMostOnce, "a"),
            grant(QoS::AtMostOnce),
            T0,
            &mut out,
            true,
            &mut FrameCache::default()
        ),
        Delivery::Dropped(DropReason::QueueFull)
    );
    assert_eq!(
        s.deliver(
            &message(QoS::AtLeastOnce, "b"),
            grant(QoS::AtLeastOnce),
            T0,
            &mut out,
            true,
            &mut FrameCache::default()
        ),
        Delivery::Queued
    );
}

#[test]
fn subscription_limit_and_publish_rules() {
    let mut s = session();
    let entry = ringmq_core::session::SubscriptionEntry {
        options: Default::default(),
        id: None,
    };
    assert!(s.subscribe("a".into(), entry.clone()).is_ok());
    assert!(s.subscribe("b".into(), entry.clone()).is_ok());
    // Replacing an existing filter is not a new subscription.
    assert!(s.subscribe("a".into(), entry.clone()).is_ok());
    assert!(s.subscribe("c".into(), entry).is_err());

    let publish = Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "a/b/c/d/e/f/g/h/i".into(),
        packet_id: None,
        properties: LazyProperties::none(),
        payload: Bytes::new(),
    };
    assert_eq!(
        s.handle_publish(publish.clone(), T0).unwrap_err().reason,
        ReasonCode::TopicNameInvalid
    );
    let with_sub_id = Publish {
        topic: "a".into(),
        properties: PublishProperties {
            subscription_identifiers: vec![NonZeroU32::new(1).unwrap()],
            ..PublishProperties::default()
        }
        .into(),
        ..publish
    };
    assert_eq!(
        s.handle_publish(with_sub_id, T0).unwrap_err().reason,
        ReasonCode::ProtocolError
    );
}

#[test]
fn shared_frames_equal_individual_encoding_with_their_own_packet_ids() {
    let mut frames = FrameCache::default();
    let mut m = Message::clone(&message(QoS::ExactlyOnce, "shared payload"));
    m.expires_at = Some(T0.plus_s(60));
    m.properties.make_mut().content_type = Some("text/plain".into());
    let m = Arc::new(m);
    let mut outputs = Vec::new();
    for (n, version, qos) in [
        (0, V311, QoS::AtLeastOnce),
        (1, V311, QoS::AtLeastOnce),
        (2, V5, QoS::AtLeastOnce),
        (3, V5, QoS::AtMostOnce),
        (4, V5, QoS::ExactlyOnce),
    ] {
        let mut s = Session::new("c".into(), SessionKey(10 + n), limits());
        let mut out = BytesMut::new();
        s.resume(version, None, None, T0, &mut out);
        // Give each session a different next packet id: n messages, each acknowledged.
        for id in 1..=n {
            s.deliver(
                &message(QoS::AtLeastOnce, "x"),
                grant(QoS::AtLeastOnce),
                T0,
                &mut out,
                false,
                &mut FrameCache::default(),
            );
            s.handle_puback(PacketId::new(id as u16).unwrap(), T0, &mut out);
        }
        out.clear();
        let shared = s.deliver(&m, grant(qos), T0, &mut out, false, &mut frames);
        assert_eq!(shared, Delivery::Sent);
        outputs.push((version, qos, n, out));
    }
    for (version, qos, n, mut out) in outputs {
        let [Packet::Publish(p)] = &packets(&mut out, version)[..] else {
            panic!("one PUBLISH");
        };
        assert_eq!(&p.payload[..], b"shared payload");
        assert_eq!(&*p.topic, "t");
        assert_eq!(p.qos, qos);
        if qos == QoS::AtMostOnce {
            assert_eq!(p.packet_id, None);
        } else {
            assert_eq!(p.packet_id, PacketId::new(n as u16 + 1), "session {n}");
        }
        if version == V5 {
            assert_eq!(p.properties.content_type.as_deref(), Some("text/plain"));
            assert_eq!(p.properties.message_expiry_interval_s, Some(60));
        }
    }

    // The same cache asked for another message, or later, never serves a stale frame.
    let mut s = session();
    let mut out = BytesMut::new();
    s.resume(V5, None, None, T0, &mut out);
    let other = message(QoS::AtMostOnce, "other");
    s.deliver(
        &other,
        grant(QoS::AtMostOnce),
        T0,
        &mut out,
        false,
        &mut frames,
    );
    s.deliver(
        &m,
        grant(QoS::AtMostOnce),
        Timestamp(T0.0 + 30_000),
        &mut out,
        false,
        &mut frames,
    );
    let delivered = packets(&mut out, V5);
    assert!(matches!(&delivered[0], Packet::Publish(p) if &p.payload[..] == b"other"));
    assert!(
        matches!(&delivered[1], Packet::Publish(p) if p.properties.message_expiry_interval_s == Some(30))
    );
}

#[test]
fn backpressure_queues_past_the_limit_while_online_and_reports_congestion() {
    let mut s = Session::new(
        "c".into(),
        SessionKey(1),
        SessionLimits {
            queue_full: QueueFullPolicy::Backpressure,
            ..limits()
        },
    );
    let mut out = BytesMut::new();
    s.resume(V311, None, None, T0, &mut out);
    let mut deliveries = Vec::new();
    for _ in 0..8 {
        deliveries.push(s.deliver(
            &message(QoS::AtLeastOnce, "m"),
            grant(QoS::AtLeastOnce),
            T0,
            &mut out,
            false,
            &mut FrameCache::default(),
        ));
    }
    // Window 2 sent, then queued past the limit of 3: nothing dropped.
    assert!(deliveries
        .iter()
        .all(|d| *d != Delivery::Dropped(DropReason::QueueFull)));
    assert!(s.is_congested());
    // Acknowledgements drain the queue; congestion ends below the limit.
    for id in 1..=4 {
        s.handle_puback(PacketId::new(id).unwrap(), T0, &mut out);
    }
    assert!(!s.is_congested(), "queue back under the limit");
    // Offline, the limit is the limit again.
    s.disconnect();
    let mut dropped = 0;
    for _ in 0..10 {
        if let Delivery::Dropped(_) = s.deliver(
            &message(QoS::AtLeastOnce, "m"),
            grant(QoS::AtLeastOnce),
            T0,
            &mut out,
            false,
            &mut FrameCache::default(),
        ) {
            dropped += 1;
        }
    }
    assert!(dropped > 0);
    assert!(
        !s.is_congested(),
        "an offline session never holds publishers"
    );
}

/// Packet ids run 1..=65,535 and start over; an id still in flight a whole cycle
/// later (a message never acknowledged) is skipped, and so is every later one while
/// it stays unacknowledged.
#[test]
fn packet_ids_wrap_around_and_skip_one_still_in_flight() {
    let mut s = session();
    let mut out = BytesMut::new();
    s.resume(V311, None, None, T0, &mut out);
    let mut frames = FrameCache::default();
    let mut deliver = |s: &mut Session, out: &mut BytesMut| {
        let delivery = s.deliver(
            &message(QoS::AtLeastOnce, "m"),
            grant(QoS::AtLeastOnce),
            T0,
            out,
            false,
            &mut frames,
        );
        assert_eq!(delivery, Delivery::Sent);
        let ids = publish_ids(&packets(out, V311));
        assert_eq!(ids.len(), 1);
        ids[0].0
    };
    // Id 1 is never acknowledged; the other slot of the window cycles through the rest.
    assert_eq!(deliver(&mut s, &mut out), 1);
    for expected in (2..=65_535u32).chain(2..=10) {
        let id = deliver(&mut s, &mut out);
        assert_eq!(u32::from(id), expected);
        assert!(s
            .handle_puback(PacketId::new(id).unwrap(), T0, &mut out)
            .is_empty());
    }
    // Acknowledged at last, id 1 is free for the next cycle.
    assert!(s
        .handle_puback(PacketId::new(1).unwrap(), T0, &mut out)
        .is_empty());
    for expected in (11..=65_535u32).chain(1..=3) {
        let id = deliver(&mut s, &mut out);
        assert_eq!(u32::from(id), expected);
        assert!(s
            .handle_puback(PacketId::new(id).unwrap(), T0, &mut out)
            .is_empty());
    }
}

/// `Session::acknowledge` writes its PUBACK / PUBREC bytes itself: they must be what
/// the codec writes for the same packet, in both versions, matched or not.
#[test]
fn acknowledgements_are_encoded_as_the_codec_does() {
    for version in [V311, V5] {
        let mut s = session();
        let mut out = BytesMut::new();
        s.resume(version, None, None, T0, &mut out);
        out.clear();
        for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
            for matched in [true, false] {
                for id in [1u16, 0x1234, u16::MAX] {
                    let packet_id = PacketId::new(id).unwrap();
                    let mut direct = BytesMut::new();
                    s.acknowledge(qos, packet_id, matched, &mut direct);
                    let mut response = PubResponse::success(packet_id);
                    if !matched {
                        response.reason = ReasonCode::NoMatchingSubscribers;
                    }
                    let packet = match qos {
                        QoS::ExactlyOnce => Packet::PubRec(response),
                        _ => Packet::PubAck(response),
                    };
                    let mut encoded = BytesMut::new();
                    codec::encode(&packet, version, &mut encoded).unwrap();
                    assert_eq!(
                        direct, encoded,
                        "{version:?} {qos:?} matched {matched} id {id}"
                    );
                }
            }
        }
    }
}
