//! Fuzz-style properties of the decoder, runnable on the stable toolchain (cargo-fuzz
//! needs nightly): arbitrary and mutated bytes never make `decode` panic or consume
//! more than it was given, and whatever it accepts re-encodes to bytes that decode to
//! the same packet.
//!
//! Cases default to proptest's 256; `PROPTEST_CASES` sets more for a longer pass.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod strategy;

use bytes::BytesMut;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use ringmq_core::codec::{self, DecodeError};
use ringmq_core::limits::PACKET_SIZE_MAX;
use ringmq_core::packet::{Packet, ProtocolVersion};

use strategy::versioned_packets;

const VERSIONS: [ProtocolVersion; 2] = [ProtocolVersion::V311, ProtocolVersion::V5];

/// Limits from below any frame to above any frame.
const MAX_PACKET_SIZES: [u32; 6] = [0, 2, 5, 64, 1024 * 1024, u32::MAX];

/// Decodes frames from `input` until the decoder wants more bytes or refuses them,
/// checking that each accepted frame took between 1 byte and what was left, exactly
/// the length `check` announced. Returns the accepted packets and the final error.
fn decode_all(
    input: &[u8],
    version: ProtocolVersion,
    max_packet_size: u32,
) -> (Vec<Packet>, Option<DecodeError>) {
    let mut buf = BytesMut::from(input);
    let mut packets = Vec::new();
    loop {
        let len_before = buf.len();
        let announced = codec::check(&buf, max_packet_size);
        match codec::decode(&mut buf, version, max_packet_size) {
            Ok(Some(packet)) => {
                let consumed = len_before - buf.len();
                assert!(
                    consumed >= 2,
                    "a frame is at least 2 bytes, took {consumed}"
                );
                let header = announced
                    .expect("check refused what decode accepted")
                    .expect("check wanted more bytes than decode used");
                assert_eq!(consumed, header.frame_len());
                assert!(consumed <= max_packet_size as usize);
                packets.push(packet);
            }
            Ok(None) => {
                assert_eq!(buf.len(), len_before, "Ok(None) consumed bytes");
                return (packets, None);
            }
            Err(error) => return (packets, Some(error)),
        }
    }
}

/// Anything `decode` accepts must encode again, and those bytes decode to the same
/// packet: decode then encode is stable.
fn assert_reencodes(packet: &Packet, version: ProtocolVersion) {
    let mut buf = BytesMut::new();
    let written = codec::encode(packet, version, &mut buf)
        .unwrap_or_else(|error| panic!("decoded {packet:?} but cannot encode it: {error}"));
    assert_eq!(buf.len(), written);
    let again = codec::decode(&mut buf, version, PACKET_SIZE_MAX as u32);
    assert_eq!(
        again.as_ref(),
        Ok(&Some(packet.clone())),
        "re-encoded {buf:02X?}"
    );
    assert!(buf.is_empty());
}

/// Decodes `input` every way the broker might and checks the invariants above.
fn decode_every_way(input: &[u8]) {
    for version in VERSIONS {
        for max in MAX_PACKET_SIZES {
            let (packets, _) = decode_all(input, version, max);
            for packet in &packets {
                assert_reencodes(packet, version);
            }
        }
    }
}

/// The first byte of every packet type with its fixed flags, every PUBLISH flag
/// combination, and a few with reserved flags set.
const FIRST_BYTES: &[u8] = &[
    0x10, 0x20, 0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x3A, 0x3B, 0x3C, 0x3D, 0x40, 0x50, 0x62, 0x70,
    0x82, 0x90, 0xA2, 0xB0, 0xC0, 0xD0, 0xE0, 0xF0, // valid
    0x00, 0x11, 0x36, 0x38, 0x60, 0x80, 0xFF, // invalid
];

/// A frame that starts like a real one: a real first byte, a remaining length near
/// the body's actual length (sometimes in a non-minimal or over-long form), then
/// random bytes, often beginning with a plausible variable header.
fn biased_frame() -> impl Strategy<Value = Vec<u8>> {
    let length_error = prop_oneof![6 => Just(0i64), 2 => -3i64..=3, 1 => -300i64..=300];
    let variable_header = prop_oneof![
        Just(Vec::new()),
        Just(b"\x00\x04MQTT\x04".to_vec()),
        Just(b"\x00\x04MQTT\x05".to_vec()),
        Just(b"\x00\x06MQIsdp\x03".to_vec()),
        Just(b"\x00\x01\x00".to_vec()),
        Just(b"\x00\x03a/b\x00\x01".to_vec()),
        vec(any::<u8>(), 0..4),
    ];
    (
        select(FIRST_BYTES),
        variable_header,
        vec(any::<u8>(), 0..600),
        length_error,
        0usize..3,
    )
        .prop_map(|(first, head, tail, error, padding)| {
            let body: Vec<u8> = head.into_iter().chain(tail).collect();
            let remaining = (body.len() as i64 + error).max(0) as usize;
            let mut frame = vec![first];
            put_varint_padded(&mut frame, remaining, padding);
            frame.extend_from_slice(&body);
            frame
        })
}

/// A variable byte integer, followed by `padding` redundant continuation bytes when
/// asked (a non-minimal form the decoder must refuse).
fn put_varint_padded(out: &mut Vec<u8>, value: usize, padding: usize) {
    let mut value = value;
    let mut bytes = Vec::new();
    loop {
        let byte = (value & 0x7F) as u8;
        value >>= 7;
        if value == 0 {
            bytes.push(byte);
            break;
        }
        bytes.push(byte | 0x80);
    }
    for _ in 0..padding {
        if let Some(last) = bytes.last_mut() {
            *last |= 0x80;
        }
        bytes.push(0);
    }
    out.extend_from_slice(&bytes);
}

/// One edit of a byte string.
#[derive(Clone, Debug)]
enum Mutation {
    FlipBit(Index, u8),
    Overwrite(Index, u8),
    Insert(Index, u8),
    Delete(Index),
    /// Removes everything from the index on.
    Truncate(Index),
    /// Copies a short run of bytes to another place: repeats a field or property.
    Duplicate(Index, Index, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit(at, bit)),
        3 => (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Overwrite(at, byte)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert(at, byte)),
        2 => any::<Index>().prop_map(Mutation::Delete),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => (any::<Index>(), any::<Index>(), 1u8..8)
            .prop_map(|(from, to, len)| Mutation::Duplicate(from, to, len)),
    ]
}

fn apply(bytes: &mut Vec<u8>, mutation: &Mutation) {
    let len = bytes.len();
    match *mutation {
        Mutation::Insert(at, byte) => bytes.insert(at.index(len + 1), byte),
        _ if len == 0 => {}
        Mutation::FlipBit(at, bit) => bytes[at.index(len)] ^= 1 << bit,
        Mutation::Overwrite(at, byte) => bytes[at.index(len)] = byte,
        Mutation::Delete(at) => {
            bytes.remove(at.index(len));
        }
        Mutation::Truncate(at) => bytes.truncate(at.index(len)),
        Mutation::Duplicate(from, to, run) => {
            let from = from.index(len);
            let end = (from + usize::from(run)).min(len);
            let copied = bytes[from..end].to_vec();
            let to = to.index(len + 1);
            bytes.splice(to..to, copied);
        }
    }
}

/// Fixed-header and length-field edge cases, each checked every way.
#[test]
fn edge_inputs_never_panic() {
    let inputs: &[&[u8]] = &[
        &[],
        &[0x10],
        &[0x30, 0xFF, 0xFF, 0xFF, 0x7F],
        &[0x30, 0xFF, 0xFF, 0xFF, 0xFF],
        &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
        &[0x30, 0x80, 0x00],
        &[0xC0, 0x00],
        &[0xC0, 0x80],
        &[0xE0, 0x00],
        &[0xF0, 0x00],
        &[0xF0, 0x02, 0x18, 0x00],
        &[0x20, 0x02, 0x01, 0x00],
        &[0x20, 0x03, 0x00, 0x00, 0x00],
        &[0x40, 0x02, 0x00, 0x00],
        &[0x90, 0x03, 0x00, 0x01, 0x00],
        &[0xB0, 0x02, 0x00, 0x01],
        &[0x30, 0x02, 0x00, 0x00],
        &[0x32, 0x05, 0x00, 0x01, b'a', 0x00, 0x01],
    ];
    for input in inputs {
        decode_every_way(input);
    }
}

proptest! {
    /// (a) arbitrary bytes: no panic, no over-consumption, accepted frames re-encode.
    #[test]
    fn arbitrary_bytes_never_panic(input in vec(any::<u8>(), 0..4096)) {
        decode_every_way(&input);
    }

    /// (a) bytes that start like a real frame of each type, alone or a few in a row.
    #[test]
    fn biased_frames_never_panic(frames in vec(biased_frame(), 1..4)) {
        decode_every_way(&frames.concat());
    }

    /// (b) valid frames with a few random edits: no panic; anything still accepted
    /// is stable under encode then decode.
    #[test]
    fn mutated_frames_decode_stably(
        (version, packets) in versioned_packets(1..4),
        mutations in vec(mutation(), 1..8),
    ) {
        let mut bytes = BytesMut::new();
        for packet in &packets {
            codec::encode(packet, version, &mut bytes).unwrap();
        }
        let mut bytes = bytes.to_vec();
        for mutation in &mutations {
            apply(&mut bytes, mutation);
        }
        for max in MAX_PACKET_SIZES {
            let (decoded, _) = decode_all(&bytes, version, max);
            for packet in &decoded {
                assert_reencodes(packet, version);
            }
        }
        // The other version must cope with these bytes too.
        let other = match version {
            ProtocolVersion::V311 => ProtocolVersion::V5,
            ProtocolVersion::V5 => ProtocolVersion::V311,
        };
        let (decoded, _) = decode_all(&bytes, other, u32::MAX);
        for packet in &decoded {
            assert_reencodes(packet, other);
        }
    }

    /// (b) unmutated streams pass the same checks, so the mutated case is the only
    /// difference.
    #[test]
    fn valid_frames_decode_stably((version, packets) in versioned_packets(1..4)) {
        let mut bytes = BytesMut::new();
        for packet in &packets {
            codec::encode(packet, version, &mut bytes).unwrap();
        }
        let (decoded, error) = decode_all(&bytes, version, u32::MAX);
        prop_assert_eq!(error, None);
        prop_assert_eq!(&decoded, &packets);
    }
}
