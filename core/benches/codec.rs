//! Cost of decoding and encoding one PUBLISH: a 64-byte telemetry payload at QoS 0 and
//! QoS 1, over MQTT 3.1.1 and 5 (no properties, the common case).
//!
//! Decoding reads from a buffer refilled with up to 1,024 pre-encoded frames by one copy
//! into the same allocation; only the decodes are timed (the refill is not), so an
//! iteration costs one decode and the drop of its result, never an allocation or copy
//! of input. Encoding writes into one buffer cleared each time.
//!
//! `cargo bench -p ringmq-core --bench codec -- --warm-up-time 1 --measurement-time 3`
#![allow(clippy::expect_used, clippy::indexing_slicing)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringmq_core::codec;
use ringmq_core::limits::PACKET_SIZE_DEFAULT;
use ringmq_core::packet::{Packet, PacketId, ProtocolVersion, Publish, QoS};

/// Frames per refill of the decode buffer.
const FRAMES_PER_REFILL: usize = 1024;

const PAYLOAD_LEN: usize = 64;

const VERSIONS: [(ProtocolVersion, &str); 2] = [
    (ProtocolVersion::V311, "v3.1.1"),
    (ProtocolVersion::V5, "v5"),
];

fn telemetry(qos: QoS) -> Publish {
    let payload: Vec<u8> = (0..PAYLOAD_LEN).map(|i| (i * 7) as u8).collect();
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: "devices/000042/telemetry".into(),
        packet_id: (qos != QoS::AtMostOnce).then(|| PacketId::new(42).expect("42 is not 0")),
        properties: Default::default(),
        payload: Bytes::from(payload),
    }
}

fn cases() -> [(&'static str, Publish); 2] {
    [
        ("publish_qos0", telemetry(QoS::AtMostOnce)),
        ("publish_qos1", telemetry(QoS::AtLeastOnce)),
    ]
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(1));
    for (name, publish) in cases() {
        for (version, version_name) in VERSIONS {
            let mut frames = BytesMut::new();
            for _ in 0..FRAMES_PER_REFILL {
                codec::encode_publish(&publish, version, &mut frames).expect("encodes");
            }
            let frames = frames.freeze();
            let expected = Packet::Publish(publish.clone());
            let mut buf = BytesMut::from(&frames[..]);
            assert_eq!(
                codec::decode(&mut buf, version, PACKET_SIZE_DEFAULT),
                Ok(Some(expected)),
                "the benchmark must decode what it encoded"
            );
            let frame_len = frames.len() / FRAMES_PER_REFILL;
            group.bench_function(BenchmarkId::new(name, version_name), |b| {
                b.iter_custom(|iters| {
                    let mut elapsed = Duration::ZERO;
                    let mut left = iters;
                    while left > 0 {
                        let count = left.min(FRAMES_PER_REFILL as u64);
                        // Every frame decoded before has been dropped, so this copy
                        // reuses the allocation; it is not timed.
                        buf.clear();
                        buf.extend_from_slice(&frames[..frame_len * count as usize]);
                        let start = Instant::now();
                        for _ in 0..count {
                            let _ = black_box(codec::decode(
                                &mut buf,
                                black_box(version),
                                PACKET_SIZE_DEFAULT,
                            ));
                        }
                        elapsed += start.elapsed();
                        assert!(buf.is_empty(), "each iteration decodes one frame");
                        left -= count;
                    }
                    elapsed
                })
            });
        }
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(1));
    for (name, publish) in cases() {
        let packet = Packet::Publish(publish);
        for (version, version_name) in VERSIONS {
            let mut buf = BytesMut::with_capacity(256);
            group.bench_function(BenchmarkId::new(name, version_name), |b| {
                b.iter(|| {
                    buf.clear();
                    codec::encode(black_box(&packet), black_box(version), &mut buf)
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
