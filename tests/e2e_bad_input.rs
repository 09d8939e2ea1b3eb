//! Hostile and broken clients: malformed bytes, truncated frames, huge length
//! headers, reserved packet types, a SUBSCRIBE flood and a reader that never
//! reads. Each ends at most its own connection, with the right reason code
//! for MQTT 5, and a healthy pair of clients connected alongside keeps
//! publishing and receiving throughout.

// A test states its expectations with unwrap/expect and indexing: a panic
// here is a failed assertion, not a bug on a hot path.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod harness;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use harness::raw::{
    self, frame, kind, prop, put_str, put_u16, Connect, Packet, Props, Publish, RawClient, Value,
    Will,
};
use harness::{Broker, Qos, QUIET, V5, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// A subscriber and a publisher on different shards, connected before the
/// bad client arrives, that must keep working.
struct Healthy {
    sub: V5,
    publisher: V5,
    sent: u64,
}

impl Healthy {
    async fn new(broker: &Broker) -> Healthy {
        let mut sub = broker.v5(&broker.id_on("healthy-sub", 0)).await;
        sub.subscribe("healthy/t", Qos::AtLeastOnce).await;
        let publisher = broker.v5(&broker.id_on("healthy-pub", 1)).await;
        let mut h = Healthy {
            sub,
            publisher,
            sent: 0,
        };
        h.check("before").await;
        h
    }

    /// One QoS 1 round trip; panics (with `when`) if it does not complete in
    /// time. Returns how long it took.
    async fn check(&mut self, when: &str) -> Duration {
        let started = Instant::now();
        self.sent += 1;
        let payload = format!("{when} #{}", self.sent);
        self.publisher
            .publish("healthy/t", Qos::AtLeastOnce, false, payload.clone())
            .await;
        let p = self.sub.recv().await;
        assert_eq!(
            p.payload.as_ref(),
            payload.as_bytes(),
            "healthy pair {when}"
        );
        started.elapsed()
    }
}

/// Longest a healthy QoS 1 round trip may take while another client floods
/// the broker: far above what a fair broker needs even on a busy 2-core
/// machine (CI saw 1.05 s once with the flood, the broker and other tests on
/// two cores), far below "starved until the 8 s flood ends".
const HEALTHY_ROUND_TRIP_MAX: Duration = Duration::from_secs(3);

/// Deterministic noise (xorshift64), so a failure can be replayed.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_before_connect_closes_only_that_connection() {
    let broker = Broker::start();
    let mut healthy = Healthy::new(&broker).await;
    let inputs: Vec<(&str, u8, Vec<u8>)> = vec![
        (
            "an HTTP request",
            raw::V311,
            b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
        ),
        ("noise", raw::V311, noise(4096, 0x5eed_0001)),
        (
            "PUBLISH before CONNECT",
            raw::V311,
            Publish::new("early/t", 0, b"x").encode(raw::V311),
        ),
        (
            "SUBSCRIBE before CONNECT",
            raw::V311,
            raw::subscribe(raw::V311, 1, &[("early/#", 0)], &Props::new()),
        ),
        ("CONNECT with protocol name MQTX", raw::V311, {
            let mut c = Connect::v311("mqtx").encode();
            c[4..8].copy_from_slice(b"MQTX");
            c
        }),
        ("CONNECT with the reserved flag set (3.1.1)", raw::V311, {
            let mut c = Connect::v311("reserved-flag").encode();
            c[9] |= 0x01;
            c
        }),
        ("CONNECT with the reserved flag set (5.0)", raw::V5, {
            let mut c = Connect::v5("reserved-flag5").encode();
            c[9] |= 0x01;
            c
        }),
        ("CONNECT with will QoS 3", raw::V5, {
            let mut c = Connect::v5("will-qos3")
                .will(Will::new("w/t", b"x"))
                .encode();
            c[9] |= 0x18;
            c
        }),
        ("CONNECT with will QoS but no will flag", raw::V311, {
            let mut c = Connect::v311("will-qos-no-will").encode();
            c[9] |= 0x08;
            c
        }),
        (
            "CONNECT with a password but no user name (3.1.1)",
            raw::V311,
            {
                let mut c = Connect::v311("pass-no-user");
                c.password = Some(b"secret".to_vec());
                c.encode()
            },
        ),
        (
            "CONNECT with receive maximum 0",
            raw::V5,
            Connect::v5("rm0")
                .prop(prop::RECEIVE_MAXIMUM, Value::U16(0))
                .encode(),
        ),
        (
            "CONNECT with maximum packet size 0",
            raw::V5,
            Connect::v5("mps0")
                .prop(prop::MAXIMUM_PACKET_SIZE, Value::U32(0))
                .encode(),
        ),
        ("CONNECT whose client id runs past the packet", raw::V311, {
            let mut c = Connect::v311("cut").encode();
            c[13] = 0x40; // the id claims 64 bytes, the packet holds 3
            c
        }),
    ];
    for (name, version, bytes) in inputs {
        let mut c = broker.raw(version).await;
        c.send(&bytes).await.ok();
        let seen = c.expect_closed(name).await;
        assert!(
            !seen
                .iter()
                .any(|p| !matches!(p, Packet::ConnAck { code, .. } if *code >= 0x80)),
            "{name}: at most a refusing CONNACK before the close, got {seen:?}"
        );
        healthy.check(&format!("after {name}")).await;
    }
    broker.assert_healthy("garbage").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_protocol_level_gets_connack_refusal() {
    let broker = Broker::start();
    let mut c = broker.raw(raw::V311).await;
    let mut connect = Connect::v311("level6").encode();
    connect[8] = 6; // protocol level
    c.send(&connect).await.expect("send CONNECT");
    let (first, body) = c
        .recv_frame(WAIT)
        .await
        .expect("a CONNACK before the close");
    assert_eq!(first, 0x20, "CONNACK");
    let code = body.get(1).copied();
    assert!(
        code == Some(0x01) || code == Some(0x84),
        "0x01 (3.1.1 unacceptable protocol version) or 0x84 (5.0 unsupported), got {body:02x?}"
    );
    assert!(c.recv_frame(WAIT).await.is_none(), "then the broker closes");
    broker.assert_healthy("level").await;
}

/// One malformed or forbidden packet after a successful CONNECT.
struct Case {
    name: &'static str,
    version: u8,
    bytes: Vec<u8>,
    /// Reason codes a v5 DISCONNECT may carry for it.
    v5_codes: &'static [u8],
}

fn publish_raw_topic(topic: &[u8], qos: u8, pkid: u16, v5: bool) -> Vec<u8> {
    let mut body = Vec::new();
    put_u16(&mut body, topic.len() as u16);
    body.extend_from_slice(topic);
    if qos > 0 {
        put_u16(&mut body, pkid);
    }
    if v5 {
        body.push(0);
    }
    body.extend_from_slice(b"payload");
    frame((kind::PUBLISH << 4) | (qos << 1), &body)
}

fn cases() -> Vec<Case> {
    const MALFORMED: &[u8] = &[0x81];
    const MALFORMED_OR_PROTOCOL: &[u8] = &[0x81, 0x82];
    let mut bad_sub_flags = raw::subscribe(raw::V5, 1, &[("x/y", 0)], &Props::new());
    bad_sub_flags[0] = kind::SUBSCRIBE << 4;
    let mut publish_qos3 = Publish::new("q3/t", 1, b"x").encode(raw::V5);
    publish_qos3[0] = (kind::PUBLISH << 4) | 0x06;
    let mut long_topic = Vec::new();
    put_u16(&mut long_topic, 16);
    long_topic.extend_from_slice(b"abc");
    vec![
        Case {
            name: "reserved packet type 0 (v5)",
            version: raw::V5,
            bytes: vec![0x00, 0x00],
            v5_codes: MALFORMED_OR_PROTOCOL,
        },
        Case {
            name: "reserved packet type 0 (v3.1.1)",
            version: raw::V311,
            bytes: vec![0x00, 0x00],
            v5_codes: &[],
        },
        Case {
            name: "AUTH from a 3.1.1 client",
            version: raw::V311,
            bytes: vec![0xF0, 0x00],
            v5_codes: &[],
        },
        Case {
            name: "CONNACK sent by a client",
            version: raw::V5,
            bytes: vec![0x20, 0x03, 0x00, 0x00, 0x00],
            v5_codes: MALFORMED_OR_PROTOCOL,
        },
        Case {
            name: "SUBSCRIBE with header flags 0000",
            version: raw::V5,
            bytes: bad_sub_flags,
            v5_codes: MALFORMED,
        },
        Case {
            name: "PUBLISH with QoS 3",
            version: raw::V5,
            bytes: publish_qos3,
            v5_codes: MALFORMED,
        },
        Case {
            name: "PUBLISH topic longer than the packet",
            version: raw::V5,
            bytes: frame(0x30, &long_topic),
            v5_codes: MALFORMED,
        },
        Case {
            name: "PUBLISH topic with invalid UTF-8",
            version: raw::V5,
            bytes: publish_raw_topic(&[b'a', 0xC3, 0x28], 0, 0, true),
            v5_codes: MALFORMED,
        },
        Case {
            name: "PUBLISH topic with invalid UTF-8 (v3.1.1)",
            version: raw::V311,
            bytes: publish_raw_topic(&[0xFF, 0xFE], 0, 0, false),
            v5_codes: &[],
        },
        Case {
            name: "PUBLISH topic with a wildcard",
            version: raw::V5,
            bytes: publish_raw_topic(b"a/+/c", 1, 1, true),
            v5_codes: &[0x90, 0x81, 0x82],
        },
        Case {
            name: "PUBLISH topic with a NUL character",
            version: raw::V5,
            bytes: publish_raw_topic(b"a\0b", 0, 0, true),
            v5_codes: MALFORMED,
        },
        Case {
            name: "QoS 1 PUBLISH with packet id 0",
            version: raw::V5,
            bytes: publish_raw_topic(b"zero/id", 1, 0, true),
            v5_codes: MALFORMED_OR_PROTOCOL,
        },
        Case {
            name: "a second CONNECT",
            version: raw::V5,
            bytes: Connect::v5("second-connect").encode(),
            v5_codes: &[0x82],
        },
        Case {
            name: "PUBREL with header flags 0000",
            version: raw::V5,
            bytes: vec![0x60, 0x02, 0x00, 0x01],
            v5_codes: MALFORMED,
        },
        Case {
            name: "PINGREQ with a body",
            version: raw::V5,
            bytes: vec![0xC0, 0x01, 0x00],
            v5_codes: MALFORMED,
        },
        Case {
            name: "SUBSCRIBE without any filter",
            version: raw::V5,
            bytes: vec![0x82, 0x03, 0x00, 0x01, 0x00],
            v5_codes: MALFORMED_OR_PROTOCOL,
        },
        Case {
            name: "no local on a shared subscription",
            version: raw::V5,
            bytes: raw::subscribe(
                raw::V5,
                1,
                &[("$share/g/nl/t", raw::sub_options(1, true, false, 0))],
                &Props::new(),
            ),
            v5_codes: &[0x82],
        },
        Case {
            name: "retain handling 3",
            version: raw::V5,
            bytes: raw::subscribe(
                raw::V5,
                1,
                &[("rh3/t", raw::sub_options(1, false, false, 3))],
                &Props::new(),
            ),
            v5_codes: MALFORMED_OR_PROTOCOL,
        },
        Case {
            name: "reserved subscription option bits",
            version: raw::V5,
            bytes: raw::subscribe(raw::V5, 1, &[("resbits/t", 0xC1)], &Props::new()),
            v5_codes: MALFORMED_OR_PROTOCOL,
        },
        Case {
            name: "subscription identifier 0",
            version: raw::V5,
            bytes: raw::subscribe(
                raw::V5,
                1,
                &[("sid0/t", 1)],
                &Props::new().with(prop::SUBSCRIPTION_IDENTIFIER, Value::VarInt(0)),
            ),
            v5_codes: MALFORMED_OR_PROTOCOL,
        },
        Case {
            name: "remaining length of 5 bytes",
            version: raw::V5,
            bytes: vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            v5_codes: MALFORMED,
        },
        Case {
            name: "property not allowed in PUBLISH (session expiry)",
            version: raw::V5,
            bytes: {
                let mut body = Vec::new();
                put_str(&mut body, "prop/t");
                body.extend_from_slice(&[0x05, 0x11, 0, 0, 0, 1]);
                frame(0x30, &body)
            },
            v5_codes: MALFORMED_OR_PROTOCOL,
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_forbidden_packets_end_only_that_connection() {
    let broker = Broker::start();
    let mut healthy = Healthy::new(&broker).await;
    let mut failures = Vec::new();
    for (i, case) in cases().into_iter().enumerate() {
        let id = broker.id_on(&format!("bad{i}"), (i % 2) as u32);
        let connect = Connect {
            version: case.version,
            ..Connect::v5(&id)
        };
        let mut c = broker.raw_connected(&connect).await;
        c.send(&case.bytes).await.ok();
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        let closed = loop {
            match c
                .recv(deadline.saturating_duration_since(Instant::now()))
                .await
            {
                raw::Recv::Packet(p) => seen.push(p),
                raw::Recv::Closed => break true,
                raw::Recv::TimedOut => break false,
            }
        };
        let verdict = if !closed {
            Some(format!("connection left open, got {seen:?}"))
        } else if case.version == raw::V5 {
            match seen.as_slice() {
                [Packet::Disconnect { code, .. }] if case.v5_codes.contains(code) => None,
                other => Some(format!(
                    "expected DISCONNECT with one of {:02x?}, got {other:?}",
                    case.v5_codes
                )),
            }
        } else if !seen.is_empty() {
            Some(format!("3.1.1: expected a plain close, got {seen:?}"))
        } else {
            None
        };
        if let Some(v) = verdict {
            failures.push(format!("{}: {v}", case.name));
        }
        healthy.check(&format!("after {}", case.name)).await;
    }
    broker.assert_healthy("malformed").await;
    assert!(
        failures.is_empty(),
        "{} case(s) handled wrongly:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// An invalid topic filter is refused either in the SUBACK (0x8F, or 0x80 in
/// 3.1.1) with the connection kept, or by closing the connection (v5 with a
/// DISCONNECT); both are seen in the field. Never is it subscribed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_topic_filters_are_refused() {
    let broker = Broker::start();
    let mut healthy = Healthy::new(&broker).await;
    let mut publisher = broker.v5(&broker.id_on("badfilter-pub", 1)).await;
    for (i, filter) in ["a/#/b", "a/b#", "a+/b", ""].into_iter().enumerate() {
        for version in [raw::V5, raw::V311] {
            let id = broker.id_on(&format!("badfilter{i}-{version}"), 0);
            let mut c = broker
                .raw_connected(&Connect {
                    version,
                    ..Connect::v5(&id)
                })
                .await;
            c.send(&raw::subscribe(
                version,
                9,
                &[(filter, 1), ("good/filter", 1)],
                &Props::new(),
            ))
            .await
            .expect("send SUBSCRIBE");
            match c.recv(WAIT).await {
                raw::Recv::Packet(Packet::SubAck { pkid: 9, codes, .. }) => {
                    let refused = if version == raw::V5 { 0x8F } else { 0x80 };
                    assert_eq!(
                        codes,
                        vec![refused, 1],
                        "v{version} {filter:?}: refused, the valid one granted"
                    );
                    publisher
                        .publish("good/filter", Qos::AtLeastOnce, false, "still works")
                        .await;
                    assert_eq!(c.expect_publish().await.payload, b"still works");
                }
                raw::Recv::Packet(Packet::Disconnect { code, .. }) if version == raw::V5 => {
                    assert!(
                        [0x8F, 0x81, 0x82].contains(&code),
                        "{filter:?}: DISCONNECT {code:#x}"
                    );
                    c.expect_closed("after DISCONNECT").await;
                }
                raw::Recv::Closed => assert_eq!(
                    version,
                    raw::V311,
                    "{filter:?}: v5 closes with a DISCONNECT"
                ),
                other => panic!("v{version} {filter:?}: expected SUBACK or close, got {other:?}"),
            }
            healthy.check(&format!("after filter {filter:?}")).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_frames_then_close_are_abnormal_disconnects() {
    let broker = Broker::start();
    let mut healthy = Healthy::new(&broker).await;
    let mut will_watch = broker.v5(&broker.id_on("trunc-watch", 1)).await;
    will_watch.subscribe("trunc/will", Qos::AtLeastOnce).await;

    // Half a CONNECT, then close.
    let mut c = broker.raw(raw::V5).await;
    let connect = Connect::v5("half-connect").encode();
    c.send(&connect[..connect.len() - 3]).await.expect("send");
    drop(c);
    healthy.check("after half a CONNECT").await;

    // Half a PUBLISH after CONNECT, then close: the will goes out.
    let connect = Connect::v5(&broker.id_on("trunc", 0)).will(Will::new("trunc/will", b"cut off"));
    let mut c = broker.raw_connected(&connect).await;
    let publish = Publish::new("trunc/t", 1, &[b'z'; 300]).encode(raw::V5);
    c.send(&publish[..150]).await.expect("send");
    let (mut stream, _) = c.into_parts();
    stream.shutdown().await.ok();
    drop(stream);
    let p = will_watch.recv().await;
    assert_eq!(
        p.payload.as_ref(),
        b"cut off",
        "a connection cut mid-packet publishes its will"
    );
    healthy.check("after half a PUBLISH").await;

    // Only the first byte of a packet.
    let mut c = broker
        .raw_connected(&Connect::v311(&broker.id_on("trunc1", 1)))
        .await;
    c.send(&[0x30]).await.expect("send");
    drop(c);
    healthy.check("after a lone first byte").await;
    broker.assert_healthy("truncated").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remaining_length_of_256_mib_is_refused_without_allocating_it() {
    let broker = Broker::start();
    let mut healthy = Healthy::new(&broker).await;
    let rss_before = broker.rss_kib();
    const MAX_REMAINING_LENGTH: [u8; 4] = [0xFF, 0xFF, 0xFF, 0x7F]; // 268,435,455 bytes

    // As the very first packet.
    let mut c = broker.raw(raw::V5).await;
    let mut bytes = vec![0x10];
    bytes.extend_from_slice(&MAX_REMAINING_LENGTH);
    bytes.extend_from_slice(&Connect::v5("huge-connect").encode()[2..]);
    c.send(&bytes).await.ok();
    let seen = c.expect_closed("a 256 MiB CONNECT").await;
    assert!(
        seen.iter()
            .all(|p| matches!(p, Packet::ConnAck { code: 0x95, .. })),
        "at most a CONNACK 0x95, got {seen:?}"
    );
    healthy.check("after a 256 MiB CONNECT header").await;

    // After CONNECT, on both versions.
    for version in [raw::V5, raw::V311] {
        let connect = Connect {
            version,
            ..Connect::v5(&broker.id_on("huge", 1))
        };
        let mut c = broker.raw_connected(&connect).await;
        let mut bytes = vec![0x30];
        bytes.extend_from_slice(&MAX_REMAINING_LENGTH);
        bytes.extend_from_slice(&[0x00, 0x03, b'a', b'/', b'b']);
        bytes.extend_from_slice(&[b'x'; 4096]);
        c.send(&bytes).await.ok();
        let seen = c.expect_closed("a 256 MiB PUBLISH header").await;
        if version == raw::V5 {
            assert!(
                matches!(seen.as_slice(), [Packet::Disconnect { code: 0x95, .. }]),
                "v5: DISCONNECT 0x95 (packet too large), got {seen:?}"
            );
        } else {
            assert!(seen.is_empty(), "3.1.1: plain close, got {seen:?}");
        }
        healthy.check("after a 256 MiB PUBLISH header").await;
    }
    let grown_kib = broker.rss_kib().saturating_sub(rss_before);
    assert!(
        grown_kib < 64 * 1024,
        "broker RSS grew by {grown_kib} KiB: it allocated for the announced length"
    );
    broker.assert_healthy("huge").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_ten_thousand_subscribes_is_answered_and_harms_no_one() {
    const SUBSCRIBES: u16 = 10_000;
    let broker = Broker::start();
    let mut healthy = Healthy::new(&broker).await;
    let rss_before = broker.rss_kib();

    let c = broker
        .raw_connected(&Connect::v5(&broker.id_on("sub-flood", 0)))
        .await;
    let (stream, leftover) = c.into_parts();
    assert!(leftover.is_empty());
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        let mut bytes = Vec::new();
        for i in 1..=SUBSCRIBES {
            bytes.extend_from_slice(&raw::subscribe(
                raw::V5,
                i,
                &[(&format!("flood/{i}/+"), 1)],
                &Props::new(),
            ));
        }
        wr.write_all(&bytes).await.map(|_| wr)
    });
    let subacks = Arc::new(AtomicU64::new(0));
    let reader = {
        let subacks = Arc::clone(&subacks);
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                let mut at = 0;
                while let Some((first, header, len)) = raw::frame_bounds(&buf[at..]) {
                    if first >> 4 != kind::SUBACK {
                        return Err(format!("unexpected packet 0x{first:02x}"));
                    }
                    subacks.fetch_add(1, Ordering::Relaxed);
                    at += header + len;
                }
                buf.drain(..at);
                if subacks.load(Ordering::Relaxed) == u64::from(SUBSCRIBES) {
                    return Ok(());
                }
                match rd.read(&mut chunk).await {
                    Ok(0) | Err(_) => return Err("closed".to_string()),
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        })
    };

    // The healthy pair works while the flood is being processed.
    let took = healthy.check("during the SUBSCRIBE flood").await;
    assert!(
        took < HEALTHY_ROUND_TRIP_MAX,
        "a healthy round trip took {took:?} during the SUBSCRIBE flood"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let outcome = tokio::time::timeout_at(deadline, reader).await;
    let got = subacks.load(Ordering::Relaxed);
    match outcome {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => panic!("flooding client: {e} after {got} of {SUBSCRIBES} SUBACKs"),
        Ok(Err(e)) => panic!("reader task: {e}"),
        Err(_) => panic!("only {got} of {SUBSCRIBES} SUBACKs within 60 s"),
    }
    let _ = writer.await;
    healthy.check("after the SUBSCRIBE flood").await;
    let grown_kib = broker.rss_kib().saturating_sub(rss_before);
    assert!(
        grown_kib < 128 * 1024,
        "RSS grew by {grown_kib} KiB for 10k subscriptions"
    );
    broker.assert_healthy("sub-flood").await;
}

/// Writes QoS 0 publishes of `payload_len` bytes to `topic` on a raw 3.1.1
/// connection, 64 at a time (one batch per `pace` if given, else as fast as
/// the broker reads), until `budget` bytes or `until`; returns (bytes,
/// messages) written.
async fn flood(
    port: u16,
    client_id: String,
    topic: &'static str,
    payload_len: usize,
    budget: usize,
    pace: Option<Duration>,
    until: Instant,
) -> (usize, usize) {
    let c = RawClient::connect_ok(port, &Connect::v311(&client_id)).await;
    let (mut stream, _) = c.into_parts();
    let one = Publish::new(topic, 0, &vec![b'f'; payload_len]).encode(raw::V311);
    let batch: Vec<u8> = one.iter().copied().cycle().take(one.len() * 64).collect();
    let mut ticks = pace.map(|p| {
        let mut i = tokio::time::interval(p);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    let mut written = 0;
    while written < budget {
        if let Some(t) = ticks.as_mut() {
            t.tick().await;
        }
        match tokio::time::timeout_at(until, stream.write_all(&batch)).await {
            Ok(Ok(())) => written += batch.len(),
            Ok(Err(_)) | Err(_) => break,
        }
    }
    (written, written / one.len())
}

/// A subscriber that never reads while a publisher floods its topic: the
/// broker's memory stays bounded and other clients keep being served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_does_not_grow_memory_or_stall_others() {
    const FLOOD_BYTES: usize = 512 * 1024 * 1024;
    const RSS_GROWTH_MAX_KIB: u64 = 96 * 1024;
    let mut broker = Broker::start();
    let mut healthy = Healthy::new(&broker).await;

    // Subscribes, then never reads again (at QoS 0 and QoS 1).
    let mut stuck0 = broker
        .raw_connected(&Connect::v311(&broker.id_on("stuck0", 0)))
        .await;
    assert_eq!(
        stuck0.subscribe(1, &[("flood/t", 0)], &Props::new()).await,
        vec![0]
    );
    let mut stuck1 = broker
        .raw_connected(&Connect::v5(&broker.id_on("stuck1", 1)).clean(false))
        .await;
    assert_eq!(
        stuck1.subscribe(1, &[("flood/t", 1)], &Props::new()).await,
        vec![1]
    );

    let rss_before = broker.rss_kib();
    let until = Instant::now() + Duration::from_secs(8);
    let flooder = tokio::spawn(flood(
        broker.port(),
        broker.id_on("flooder", 1),
        "flood/t",
        4096,
        FLOOD_BYTES,
        None,
        until,
    ));

    let mut rss_max = rss_before;
    let mut checks = 0;
    let mut slowest = Duration::ZERO;
    while !flooder.is_finished() {
        let took = healthy
            .check(&format!("during the flood, check {checks}"))
            .await;
        slowest = slowest.max(took);
        checks += 1;
        rss_max = rss_max.max(broker.rss_kib());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (bytes, messages) = flooder.await.expect("flooder task");
    rss_max = rss_max.max(broker.rss_kib());
    eprintln!(
        "flood: {} MiB in {messages} messages; broker RSS {rss_before} -> max {rss_max} KiB; \
         {checks} healthy round trips, the slowest {slowest:?}",
        bytes >> 20
    );
    let grown = rss_max - rss_before;
    assert!(
        grown < RSS_GROWTH_MAX_KIB,
        "broker RSS grew by {grown} KiB while a client did not read (flood wrote {} MiB)",
        bytes >> 20
    );
    assert!(
        slowest < HEALTHY_ROUND_TRIP_MAX,
        "a healthy round trip took {slowest:?} during the flood: other clients are starved"
    );
    healthy.check("after the flood").await;
    assert!(broker.is_running(), "broker still running");
    drop((stuck0, stuck1));
    broker.assert_healthy("never-reads").await;
}

/// A publisher writing as fast as it can to a topic nobody subscribes to:
/// the broker keeps serving the other clients while it reads the flood.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_publisher_does_not_delay_other_clients() {
    let broker = Broker::start();
    let mut healthy = Healthy::new(&broker).await;
    let until = Instant::now() + Duration::from_secs(4);
    let flooder = tokio::spawn(flood(
        broker.port(),
        broker.id_on("flooder", 1),
        "unread/t",
        4096,
        usize::MAX,
        None,
        until,
    ));
    let mut round_trips = Vec::new();
    while !flooder.is_finished() {
        let took = healthy
            .check(&format!("during the flood, check {}", round_trips.len()))
            .await;
        round_trips.push(took);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (bytes, _) = flooder.await.expect("flooder task");
    let slowest = round_trips.iter().max().copied().unwrap_or_default();
    eprintln!(
        "flood of {} MiB; {} healthy round trips, the slowest {slowest:?}",
        bytes >> 20,
        round_trips.len()
    );
    assert!(
        slowest < HEALTHY_ROUND_TRIP_MAX,
        "a healthy round trip took {slowest:?} while one client flooded: {round_trips:?}"
    );
}

/// A paced flood (about 17 MB/s, which a reading client keeps up with) with a
/// fast subscriber on the same topic: the stuck subscriber must neither hold
/// back the publisher nor cost the fast subscriber its messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_does_not_stall_a_fast_subscriber_of_the_same_topic() {
    const FLOOD_BYTES: usize = 64 << 20;
    let broker = Broker::start();
    let mut stuck = broker
        .raw_connected(&Connect::v311(&broker.id_on("stuck", 0)))
        .await;
    assert_eq!(
        stuck.subscribe(1, &[("same/t", 0)], &Props::new()).await,
        vec![0]
    );

    let mut fast = broker
        .raw_connected(&Connect::v311(&broker.id_on("fast", 1)))
        .await;
    assert_eq!(
        fast.subscribe(1, &[("same/t", 0)], &Props::new()).await,
        vec![0]
    );
    let (stream, _) = fast.into_parts();
    let received = Arc::new(AtomicU64::new(0));
    let reader = {
        let received = Arc::clone(&received);
        tokio::spawn(async move {
            let mut stream = stream;
            let mut buf = Vec::new();
            let mut chunk = vec![0u8; 256 * 1024];
            while let Ok(n) = stream.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                let mut at = 0;
                while let Some((first, header, len)) = raw::frame_bounds(&buf[at..]) {
                    if first >> 4 == kind::PUBLISH {
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                    at += header + len;
                }
                buf.drain(..at);
            }
        })
    };

    let started = Instant::now();
    let until = started + Duration::from_secs(20);
    let pace = Some(Duration::from_millis(15));
    let (bytes, messages) = flood(
        broker.port(),
        broker.id_on("flooder", 1),
        "same/t",
        4096,
        FLOOD_BYTES,
        pace,
        until,
    )
    .await;
    let took = started.elapsed();
    // Let the fast reader catch up with what the broker already accepted.
    let deadline = Instant::now() + WAIT;
    let mut last = u64::MAX;
    loop {
        let now = received.load(Ordering::Relaxed);
        if now as usize >= messages || Instant::now() > deadline || now == last {
            break;
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    reader.abort();
    let got = received.load(Ordering::Relaxed) as usize;
    eprintln!(
        "flood wrote {} MiB ({messages} messages) in {took:?}; the fast subscriber got {got}",
        bytes >> 20
    );
    assert!(
        bytes >= FLOOD_BYTES,
        "the publisher wrote only {} of {} MiB in 20 s: a client that never reads holds back the topic",
        bytes >> 20,
        FLOOD_BYTES >> 20
    );
    // QoS 0 may be dropped for a subscriber that falls behind, and on a busy
    // machine the reader here can; a fan-out held up by the stuck client
    // loses far more than half.
    assert!(
        got * 2 >= messages,
        "the fast subscriber got {got} of {messages} messages"
    );
    drop(stuck);
    broker.assert_healthy("fast").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_churn_leaves_the_broker_serving() {
    let broker = Broker::start();
    let mut healthy = Healthy::new(&broker).await;
    for i in 0..300u32 {
        let connect = if i % 2 == 0 {
            Connect::v5(&format!("churn{i}"))
        } else {
            Connect::v311(&format!("churn{i}"))
        };
        let mut c = broker.raw_connected(&connect).await;
        match i % 3 {
            0 => {
                c.send(&raw::disconnect(connect.version, 0, &Props::new()))
                    .await
                    .ok();
            }
            1 => {
                c.send(&raw::subscribe(
                    connect.version,
                    1,
                    &[("churn/#", 1)],
                    &Props::new(),
                ))
                .await
                .ok();
            }
            _ => {}
        }
        drop(c);
        if i % 50 == 0 {
            healthy.check(&format!("churn {i}")).await;
        }
    }
    healthy.check("after churn").await;
    let mut publisher = broker.v5(&broker.id_on("churn-pub", 0)).await;
    publisher
        .publish("churn/x", Qos::AtLeastOnce, false, "nobody")
        .await;
    healthy.sub.expect_no_publish(QUIET).await;
    broker.assert_healthy("churn").await;
}
