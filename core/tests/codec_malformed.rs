//! Every rejection rule of the decoder, one row each, with the MQTT 5 reason code the
//! broker reports it with; and the spec's byte-exact examples.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use bytes::BytesMut;
use ringmq_core::codec::{self, DecodeError};
use ringmq_core::packet::{
    Connect, ConnectProperties, LazyProperties, Packet, PacketId, ProtocolVersion, Publish, QoS,
    Subscribe, SubscribeProperties, Subscription, SubscriptionOptions,
};
use ringmq_core::reason::ReasonCode;

use ProtocolVersion::{V311, V5};

const MAX: u32 = 1024 * 1024;

/// A frame: first byte, remaining length (one byte here), body.
fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    assert!(body.len() < 128);
    let mut out = vec![first, body.len() as u8];
    out.extend_from_slice(body);
    out
}

fn s(text: &str) -> Vec<u8> {
    let mut out = (text.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A v5 CONNECT whose properties are `props` (already with their length byte).
fn connect_v5(props: &[u8]) -> Vec<u8> {
    frame(0x10, &cat(&[&s("MQTT"), &[5, 0x02, 0, 60], props, &s("c")]))
}

/// A v5 QoS 0 PUBLISH to `a` with properties `props` (with their length byte).
fn publish_v5(props: &[u8]) -> Vec<u8> {
    frame(0x30, &cat(&[&s("a"), props, b"x"]))
}

fn decode(bytes: &[u8], version: ProtocolVersion) -> Result<Option<Packet>, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    codec::decode(&mut buf, version, MAX)
}

struct Row {
    rule: &'static str,
    version: ProtocolVersion,
    bytes: Vec<u8>,
    reason: ReasonCode,
}

fn row(rule: &'static str, version: ProtocolVersion, bytes: Vec<u8>, reason: ReasonCode) -> Row {
    Row {
        rule,
        version,
        bytes,
        reason,
    }
}

fn rejection_table() -> Vec<Row> {
    use ReasonCode::{
        MalformedPacket as M, PacketTooLarge, ProtocolError as P, TopicAliasInvalid,
        TopicNameInvalid, UnsupportedProtocolVersion,
    };
    let v3_connect_flags =
        |flags: u8| frame(0x10, &cat(&[&s("MQTT"), &[4, flags, 0, 60], &s("c")]));
    vec![
        // Fixed header (2.1).
        row("reserved packet type 0", V5, vec![0x00, 0x00], M),
        row("AUTH (type 15) in MQTT 3.1.1", V311, vec![0xF0, 0x00], M),
        row("reserved flags on PUBACK", V5, frame(0x41, &[0, 1]), M),
        row("PUBREL flags not 0010", V5, frame(0x60, &[0, 1]), M),
        row(
            "SUBSCRIBE flags not 0010",
            V311,
            frame(0x80, &cat(&[&[0, 1], &s("a"), &[0]])),
            M,
        ),
        row(
            "UNSUBSCRIBE flags not 0010",
            V311,
            frame(0xA0, &cat(&[&[0, 1], &s("a")])),
            M,
        ),
        row("reserved flags on PINGREQ", V311, vec![0xC1, 0x00], M),
        row(
            "PUBLISH with QoS 3",
            V311,
            frame(0x36, &cat(&[&s("a"), &[0, 1]])),
            M,
        ),
        row("PUBLISH with DUP at QoS 0", V311, frame(0x38, &s("a")), M),
        // Remaining length (1.5.5).
        row(
            "remaining length over 4 bytes",
            V5,
            vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F],
            M,
        ),
        row(
            "remaining length not minimal",
            V5,
            vec![0xC0, 0x80, 0x00],
            M,
        ),
        row(
            "256 MiB remaining length",
            V5,
            vec![0x30, 0xFF, 0xFF, 0xFF, 0x7F],
            PacketTooLarge,
        ),
        row(
            "2 MiB packet over a 1 MiB limit",
            V311,
            vec![0x30, 0x80, 0x80, 0x80, 0x01],
            PacketTooLarge,
        ),
        // Strings (1.5.4).
        row(
            "invalid UTF-8 in a topic",
            V311,
            frame(0x30, &[0, 2, 0xC3, 0x28, b'x']),
            M,
        ),
        row(
            "U+0000 in a topic",
            V311,
            frame(0x30, &[0, 3, b'a', 0, b'b']),
            M,
        ),
        row(
            "UTF-16 surrogate in a client id",
            V311,
            frame(
                0x10,
                &cat(&[&s("MQTT"), &[4, 2, 0, 60], &[0, 3, 0xED, 0xA0, 0x80]]),
            ),
            M,
        ),
        row(
            "string longer than the packet",
            V311,
            frame(0x30, &[0, 9, b'a']),
            M,
        ),
        // CONNECT (3.1).
        row(
            "protocol name not MQTT",
            V5,
            frame(0x10, &cat(&[&s("MQTX"), &[4, 2, 0, 60], &s("c")])),
            M,
        ),
        row(
            "protocol level 3 (MQIsdp)",
            V5,
            frame(0x10, &cat(&[&s("MQIsdp"), &[3, 2, 0, 60], &s("c")])),
            UnsupportedProtocolVersion,
        ),
        row(
            "protocol level 6",
            V5,
            frame(0x10, &cat(&[&s("MQTT"), &[6, 2, 0, 60], &s("c")])),
            UnsupportedProtocolVersion,
        ),
        row("reserved CONNECT flag", V311, v3_connect_flags(0x03), M),
        row(
            "will QoS without will flag",
            V311,
            v3_connect_flags(0x0A),
            M,
        ),
        row(
            "will retain without will flag",
            V311,
            v3_connect_flags(0x22),
            M,
        ),
        row(
            "will QoS 3",
            V311,
            frame(
                0x10,
                &cat(&[&s("MQTT"), &[4, 0x1E, 0, 60], &s("c"), &s("w"), &s("p")]),
            ),
            M,
        ),
        row(
            "password without user name (3.1.1)",
            V311,
            frame(
                0x10,
                &cat(&[&s("MQTT"), &[4, 0x42, 0, 60], &s("c"), &s("pw")]),
            ),
            M,
        ),
        row(
            "will topic with a wildcard",
            V311,
            frame(
                0x10,
                &cat(&[&s("MQTT"), &[4, 0x06, 0, 60], &s("c"), &s("w/#"), &s("p")]),
            ),
            TopicNameInvalid,
        ),
        row(
            "bytes after the CONNECT payload",
            V311,
            frame(0x10, &cat(&[&s("MQTT"), &[4, 2, 0, 60], &s("c"), &[0]])),
            M,
        ),
        row(
            "CONNECT ends inside the client id",
            V311,
            frame(0x10, &cat(&[&s("MQTT"), &[4, 2, 0, 60], &[0, 5, b'c']])),
            M,
        ),
        // Properties (2.2.2).
        row(
            "property twice",
            V5,
            connect_v5(&[10, 0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2]),
            P,
        ),
        row(
            "property not allowed in CONNECT",
            V5,
            connect_v5(&[3, 0x23, 0, 1]),
            P,
        ),
        row(
            "unknown property identifier",
            V5,
            connect_v5(&[2, 0x7F, 0]),
            M,
        ),
        row("receive maximum 0", V5, connect_v5(&[3, 0x21, 0, 0]), P),
        row(
            "maximum packet size 0",
            V5,
            connect_v5(&[5, 0x27, 0, 0, 0, 0]),
            P,
        ),
        row(
            "request problem information 2",
            V5,
            connect_v5(&[2, 0x17, 2]),
            P,
        ),
        row(
            "authentication data without method",
            V5,
            connect_v5(&[4, 0x16, 0, 1, 7]),
            P,
        ),
        row(
            "property length past the packet",
            V5,
            connect_v5(&[9, 0x11, 0]),
            M,
        ),
        row(
            "property value past the property length",
            V5,
            connect_v5(&[2, 0x11, 0, 0, 0, 1]),
            M,
        ),
        row(
            "payload format indicator 2",
            V5,
            publish_v5(&[2, 0x01, 2]),
            P,
        ),
        row(
            "subscription identifier 0",
            V5,
            publish_v5(&[2, 0x0B, 0]),
            P,
        ),
        row(
            "topic alias 0",
            V5,
            publish_v5(&[3, 0x23, 0, 0]),
            TopicAliasInvalid,
        ),
        // PUBLISH (3.3).
        row(
            "wildcard + in a topic name",
            V311,
            frame(0x30, &s("a/+")),
            TopicNameInvalid,
        ),
        row(
            "wildcard # in a topic name",
            V5,
            frame(0x30, &cat(&[&s("a/#"), &[0]])),
            TopicNameInvalid,
        ),
        row("empty topic (3.1.1)", V311, frame(0x30, &s("")), P),
        row(
            "empty topic without alias (5)",
            V5,
            frame(0x30, &cat(&[&s(""), &[0]])),
            P,
        ),
        row(
            "packet id 0 at QoS 1",
            V311,
            frame(0x32, &cat(&[&s("a"), &[0, 0]])),
            M,
        ),
        row(
            "QoS 1 PUBLISH without packet id",
            V311,
            frame(0x32, &s("a")),
            M,
        ),
        // Acknowledgements (3.4 - 3.7, 3.9, 3.11).
        row("packet id 0 in PUBACK", V311, frame(0x40, &[0, 0]), M),
        row("PUBACK too short", V311, frame(0x40, &[0]), M),
        row(
            "PUBACK v3.1.1 with a reason byte",
            V311,
            frame(0x40, &[0, 1, 0]),
            M,
        ),
        row(
            "reason code not allowed in PUBREL",
            V5,
            frame(0x62, &[0, 1, 0x80]),
            M,
        ),
        row(
            "undefined reason code in PUBACK",
            V5,
            frame(0x40, &[0, 1, 0x03]),
            M,
        ),
        row(
            "reserved SUBACK return code",
            V311,
            frame(0x90, &[0, 1, 3]),
            M,
        ),
        row("SUBACK without return codes", V311, frame(0x90, &[0, 1]), P),
        row(
            "UNSUBACK without reasons (5)",
            V5,
            frame(0xB0, &[0, 1, 0]),
            P,
        ),
        row("reserved CONNACK flags", V311, frame(0x20, &[0x02, 0]), M),
        row(
            "reserved CONNACK return code",
            V311,
            frame(0x20, &[0, 6]),
            M,
        ),
        row(
            "session present on a refused CONNACK",
            V311,
            frame(0x20, &[1, 5]),
            P,
        ),
        row(
            "reason code not allowed in CONNACK",
            V5,
            frame(0x20, &[0, 0x8E, 0]),
            M,
        ),
        // SUBSCRIBE / UNSUBSCRIBE (3.8, 3.10).
        row("SUBSCRIBE without filters", V311, frame(0x82, &[0, 1]), P),
        row(
            "SUBSCRIBE without filters (5)",
            V5,
            frame(0x82, &[0, 1, 0]),
            P,
        ),
        row(
            "packet id 0 in SUBSCRIBE",
            V311,
            frame(0x82, &cat(&[&[0, 0], &s("a"), &[0]])),
            M,
        ),
        row(
            "reserved subscription option bits (3.1.1)",
            V311,
            frame(0x82, &cat(&[&[0, 1], &s("a"), &[0x04]])),
            M,
        ),
        row(
            "reserved subscription option bits (5)",
            V5,
            frame(0x82, &cat(&[&[0, 1, 0], &s("a"), &[0x40]])),
            M,
        ),
        row(
            "subscription QoS 3",
            V311,
            frame(0x82, &cat(&[&[0, 1], &s("a"), &[3]])),
            M,
        ),
        row(
            "retain handling 3",
            V5,
            frame(0x82, &cat(&[&[0, 1, 0], &s("a"), &[0x30]])),
            P,
        ),
        row(
            "filter without options byte",
            V311,
            frame(0x82, &cat(&[&[0, 1], &s("a")])),
            M,
        ),
        row(
            "subscription identifier twice in SUBSCRIBE",
            V5,
            frame(0x82, &cat(&[&[0, 1, 4, 0x0B, 1, 0x0B, 2], &s("a"), &[0]])),
            P,
        ),
        row("UNSUBSCRIBE without filters", V311, frame(0xA2, &[0, 1]), P),
        // PINGREQ, DISCONNECT, AUTH (3.12 - 3.15).
        row("PINGREQ with a body", V311, frame(0xC0, &[0]), M),
        row("DISCONNECT with a body (3.1.1)", V311, frame(0xE0, &[0]), M),
        row(
            "reason code not allowed in DISCONNECT",
            V5,
            frame(0xE0, &[0x01]),
            M,
        ),
        row("AUTH without method", V5, frame(0xF0, &[0x18, 0]), P),
    ]
}

#[test]
fn every_rejection_rule_has_its_reason_code() {
    let mut failures = Vec::new();
    for row in rejection_table() {
        match decode(&row.bytes, row.version) {
            Err(error) if error.reason_code() == row.reason => {}
            other => failures.push(format!(
                "{} ({:?}, {:02X?}): expected {}, got {:?}",
                row.rule, row.version, row.bytes, row.reason, other
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn oversized_packets_are_refused_from_the_fixed_header_alone() {
    // Only the 5 header bytes of a 256 MiB PUBLISH: refused before any body arrives.
    let header = [0x30, 0xFF, 0xFF, 0xFF, 0x7F];
    assert_eq!(
        codec::check(&header, MAX),
        Err(DecodeError::TooLarge {
            size: 268_435_460,
            max: MAX
        })
    );
    // The limit counts the whole frame: a frame of exactly the limit passes.
    let body = vec![0u8; 98];
    let mut exact = vec![0x30, 98];
    exact.extend_from_slice(&body);
    assert!(codec::check(&exact, 100).unwrap().is_some());
    assert!(matches!(
        codec::check(&exact, 99),
        Err(DecodeError::TooLarge { .. })
    ));
}

#[test]
fn partial_frames_are_incomplete_and_leave_the_buffer_alone() {
    let whole = frame(0x30, &cat(&[&s("a/b"), b"hello"]));
    for cut in 0..whole.len() {
        let mut buf = BytesMut::from(&whole[..cut]);
        assert_eq!(codec::decode(&mut buf, V311, MAX), Ok(None), "cut at {cut}");
        assert_eq!(&buf[..], &whole[..cut]);
    }
    // A remaining length still being received is incomplete, not an error.
    for partial in [
        &[0x30u8][..],
        &[0x30, 0x80],
        &[0x30, 0x80, 0x80],
        &[0x30, 0xFF, 0xFF, 0xFF],
    ] {
        assert_eq!(codec::check(partial, u32::MAX), Ok(None), "{partial:02X?}");
    }
}

#[test]
fn spec_examples_encode_byte_exact() {
    let connect = Packet::Connect(Box::new(Connect {
        protocol: V311,
        clean_start: true,
        keep_alive_s: 60,
        client_id: "a".into(),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    }));
    let mut buf = BytesMut::new();
    codec::encode(&connect, V311, &mut buf).unwrap();
    assert_eq!(
        &buf[..],
        &[0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 1, b'a']
    );

    let publish = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: true,
        topic: "a/b".into(),
        packet_id: PacketId::new(10),
        properties: LazyProperties::none(),
        payload: bytes::Bytes::from_static(b"hi"),
    });
    buf.clear();
    codec::encode(&publish, V5, &mut buf).unwrap();
    assert_eq!(
        &buf[..],
        &[0x33, 10, 0, 3, b'a', b'/', b'b', 0, 10, 0, b'h', b'i']
    );

    let subscribe = Packet::Subscribe(Subscribe {
        packet_id: PacketId::new(1).unwrap(),
        subscriptions: vec![Subscription {
            filter: "a/+".into(),
            options: SubscriptionOptions {
                qos: QoS::ExactlyOnce,
                no_local: true,
                ..SubscriptionOptions::default()
            },
        }],
        properties: SubscribeProperties::default(),
    });
    buf.clear();
    codec::encode(&subscribe, V5, &mut buf).unwrap();
    assert_eq!(&buf[..], &[0x82, 9, 0, 1, 0, 0, 3, b'a', b'/', b'+', 0x06]);
    buf.clear();
    codec::encode(&subscribe, V311, &mut buf).unwrap();
    assert_eq!(&buf[..], &[0x82, 8, 0, 1, 0, 3, b'a', b'/', b'+', 0x02]);

    buf.clear();
    codec::encode(&Packet::PingReq, V311, &mut buf).unwrap();
    assert_eq!(&buf[..], &[0xC0, 0]);
}

#[test]
fn v5_short_forms_decode_to_success() {
    // PUBACK with only a packet id, DISCONNECT and AUTH with no body (3.4.2.1, 3.14.2.1).
    match decode(&frame(0x40, &[0, 7]), V5) {
        Ok(Some(Packet::PubAck(ack))) => {
            assert_eq!(ack.packet_id.get(), 7);
            assert_eq!(ack.reason, ReasonCode::Success);
        }
        other => panic!("{other:?}"),
    }
    match decode(&frame(0x50, &[0, 7, 0x10]), V5) {
        Ok(Some(Packet::PubRec(rec))) => assert_eq!(rec.reason, ReasonCode::NoMatchingSubscribers),
        other => panic!("{other:?}"),
    }
    match decode(&frame(0xE0, &[]), V5) {
        Ok(Some(Packet::Disconnect(d))) => assert_eq!(d.reason, ReasonCode::Success),
        other => panic!("{other:?}"),
    }
    match decode(&frame(0xE0, &[0x04]), V5) {
        Ok(Some(Packet::Disconnect(d))) => assert_eq!(d.reason, ReasonCode::DisconnectWithWill),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        decode(&frame(0xF0, &[]), V5),
        Ok(Some(Packet::Auth(_)))
    ));
}

#[test]
fn a_written_reason_code_is_followed_by_the_property_length() {
    use ringmq_core::packet::{Disconnect, PubResponse};
    let mut buf = BytesMut::new();
    let mut ack = PubResponse::success(PacketId::new(5).unwrap());
    codec::encode(&Packet::PubAck(ack.clone()), V5, &mut buf).unwrap();
    assert_eq!(&buf[..], &[0x40, 2, 0, 5]);
    buf.clear();
    ack.reason = ReasonCode::NoMatchingSubscribers;
    codec::encode(&Packet::PubAck(ack), V5, &mut buf).unwrap();
    assert_eq!(&buf[..], &[0x40, 4, 0, 5, 0x10, 0]);
    buf.clear();
    let taken_over = Disconnect {
        reason: ReasonCode::SessionTakenOver,
        ..Disconnect::default()
    };
    codec::encode(&Packet::Disconnect(taken_over), V5, &mut buf).unwrap();
    assert_eq!(&buf[..], &[0xE0, 2, 0x8E, 0]);
    buf.clear();
    codec::encode(&Packet::Disconnect(Disconnect::default()), V5, &mut buf).unwrap();
    assert_eq!(&buf[..], &[0xE0, 0]);
}

#[test]
fn the_encoder_refuses_what_a_decoder_would_refuse() {
    use ringmq_core::codec::EncodeError;
    use ringmq_core::packet::{ConnAck, ConnAckProperties, Will, WillProperties};
    let publish = |topic: &str| {
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: topic.into(),
            packet_id: None,
            properties: LazyProperties::none(),
            payload: bytes::Bytes::new(),
        })
    };
    let mut buf = BytesMut::new();
    for topic in ["a/+", "a/#", "a\0b", ""] {
        assert!(
            matches!(
                codec::encode(&publish(topic), V311, &mut buf),
                Err(EncodeError::Invalid(_))
            ),
            "{topic:?}"
        );
    }
    let connect = |will_topic: &str, auth_data: bool| {
        Packet::Connect(Box::new(Connect {
            protocol: V5,
            clean_start: true,
            keep_alive_s: 0,
            client_id: "c".into(),
            will: Some(Will {
                topic: will_topic.into(),
                payload: bytes::Bytes::new(),
                qos: QoS::AtMostOnce,
                retain: false,
                properties: WillProperties::default(),
            }),
            username: None,
            password: None,
            properties: ConnectProperties {
                authentication_data: auth_data.then(|| bytes::Bytes::from_static(b"x")),
                ..ConnectProperties::default()
            },
        }))
    };
    assert!(codec::encode(&connect("w", false), V5, &mut buf).is_ok());
    assert!(codec::encode(&connect("", false), V5, &mut buf).is_err());
    assert!(codec::encode(&connect("w/#", false), V5, &mut buf).is_err());
    assert!(codec::encode(&connect("w", true), V5, &mut buf).is_err());
    let connack = Packet::ConnAck(Box::new(ConnAck {
        session_present: false,
        reason: ReasonCode::Success,
        properties: ConnAckProperties {
            maximum_qos: Some(QoS::ExactlyOnce),
            ..ConnAckProperties::default()
        },
    }));
    assert!(codec::encode(&connack, V5, &mut buf).is_err());
    assert!(buf.len() < 64, "only the valid CONNECT was written");
}

#[test]
fn decoded_publish_borrows_the_read_buffer() {
    let bytes = frame(0x30, &cat(&[&s("t"), b"payload"]));
    let mut buf = BytesMut::from(&bytes[..]);
    let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
    let Ok(Some(Packet::Publish(publish))) = codec::decode(&mut buf, V311, MAX) else {
        panic!("not a publish");
    };
    assert_eq!(&publish.payload[..], b"payload");
    assert!(range.contains(&(publish.payload.as_ptr() as usize)));
    assert!(range.contains(&(publish.topic.as_bytes().as_ptr() as usize)));
}

#[test]
fn short_acks_decode_in_place_as_the_general_path_does() {
    for first in [0x40u8, 0x50, 0x62, 0x70] {
        for version in [V311, V5] {
            for id in [1u16, 0x1234, 0xFFFF] {
                let [high, low] = id.to_be_bytes();
                let mut buf = BytesMut::from(&[first, 2, high, low, 0xC0, 0x00][..]);
                let fast = codec::decode(&mut buf, version, MAX).unwrap();
                assert_eq!(&buf[..], &[0xC0, 0x00], "only the ack was consumed");
                let header = codec::check(&[first, 2, high, low], MAX).unwrap().unwrap();
                let general = codec::decode_body(
                    header,
                    bytes::Bytes::copy_from_slice(&[high, low]),
                    version,
                )
                .unwrap();
                assert_eq!(fast, Some(general), "{first:#04x} {version:?} id {id}");
            }
        }
        let mut zero = BytesMut::from(&[first, 2, 0, 0][..]);
        assert!(
            codec::decode(&mut zero, V5, MAX).is_err(),
            "{first:#04x}: packet id 0"
        );
    }
    // Wrong PUBREL flags are still refused by the fixed header check.
    let mut bad = BytesMut::from(&[0x60u8, 2, 0, 1][..]);
    assert!(codec::decode(&mut bad, V5, MAX).is_err());
    // A partial short ack is incomplete and left alone.
    let mut partial = BytesMut::from(&[0x40u8, 2, 0][..]);
    assert_eq!(codec::decode(&mut partial, V5, MAX).unwrap(), None);
    assert_eq!(partial.len(), 3);
}
