//! The session table and the retained store are bounded: what a client sees when
//! they are full.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod harness;

use std::io::Write;
use std::time::Duration;

use harness::{blocking, raw, Broker};

fn broker(env: &[(&str, &str)]) -> Broker {
    Broker::start_with_env(&["--shards", "1", "--sys-interval", "0"], env)
}

/// MQTT 5, clean start, session expiry 0: returns the stream and the CONNACK code.
fn connect(port: u16, client_id: &str) -> (std::net::TcpStream, u8) {
    blocking::connect(port, &raw::Connect::v5(client_id))
}

#[test]
fn a_full_session_table_refuses_new_sessions_until_one_ends() {
    let broker = broker(&[("RINGMQ_MAX_SESSIONS", "2")]);
    let port = broker.port();
    let (_a, a) = connect(port, "a");
    let (mut b, b_code) = connect(port, "b");
    assert_eq!((a, b_code), (0, 0));
    let (_c, c) = connect(port, "c");
    assert_eq!(c, 0x97, "Quota exceeded");
    // Reconnecting an existing client id needs no new session.
    let (_a2, a2) = connect(port, "a");
    assert_eq!(a2, 0);
    // A session that ends frees its place; the broker ends b's session before it
    // closes b's connection.
    b.write_all(&raw::disconnect(5, 0, &raw::Props::new()))
        .unwrap();
    assert!(blocking::read_until_quiet(&mut b, Duration::from_secs(10)).is_empty());
    let (_d, d) = connect(port, "d");
    assert_eq!(d, 0);
}

#[test]
fn a_full_retained_store_keeps_what_it_has_and_delivers_the_rest() {
    let broker = broker(&[("RINGMQ_MAX_RETAINED_MESSAGES", "2")]);
    let port = broker.port();
    let (mut publisher, code) = connect(port, "pub");
    assert_eq!(code, 0);
    // Three retained QoS 1 messages on three topics, and a replacement of the first.
    for (id, topic, payload) in [
        (1u16, "t/1", "one"),
        (2, "t/2", "two"),
        (3, "t/3", "three"),
        (4, "t/1", "uno"),
    ] {
        let publish = raw::Publish::new(topic, 1, payload.as_bytes())
            .pkid(id)
            .retain(true);
        publisher.write_all(&publish.encode(5)).unwrap();
        let (kind, ack) = blocking::read_packet(&mut publisher).expect("PUBACK");
        assert_eq!((kind, &ack[..2]), (0x40, &id.to_be_bytes()[..]));
    }
    let (mut subscriber, code) = connect(port, "sub");
    assert_eq!(code, 0);
    subscriber
        .write_all(&raw::subscribe(5, 1, &[("t/#", 0)], &raw::Props::new()))
        .unwrap();
    let packets = blocking::read_until_quiet(&mut subscriber, Duration::from_millis(500));
    assert_eq!(packets.first().map(|p| p.0), Some(0x90), "SUBACK first");
    let mut got: Vec<(String, String)> = packets[1..]
        .iter()
        .map(|(kind, body)| {
            assert_eq!(kind & 0xF1, 0x31, "retained PUBLISH");
            let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
            let topic = String::from_utf8(body[2..2 + topic_len].to_vec()).unwrap();
            // MQTT 5: one property-length byte (0) after the topic at QoS 0.
            let payload = String::from_utf8(body[2 + topic_len + 1..].to_vec()).unwrap();
            (topic, payload)
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [("t/1".into(), "uno".into()), ("t/2".into(), "two".into())],
        "t/3 was not kept"
    );
}
