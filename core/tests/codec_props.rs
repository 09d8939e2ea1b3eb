//! Properties of `ringmq_core::codec` over generated valid packets of both versions:
//! encode then decode is the identity, a stream cut anywhere decodes the same, decoded
//! payloads borrow the read buffer, and an oversized frame is refused from its fixed
//! header alone.
//!
//! Cases default to proptest's 256; `PROPTEST_CASES` sets more for a longer pass.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod strategy;

use bytes::{BufMut, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use ringmq_core::codec::{self, DecodeError, FrameHeader};
use ringmq_core::limits::{PACKET_SIZE_MAX, REMAINING_LENGTH_MAX};
use ringmq_core::packet::{Packet, PacketType, ProtocolVersion};

use strategy::{packet, publish, version, versioned_packet, versioned_packets};

/// A limit no generated packet reaches: these properties are not about size limits.
const UNLIMITED: u32 = PACKET_SIZE_MAX as u32;

fn encode_all(packets: &[Packet], version: ProtocolVersion) -> BytesMut {
    let mut buf = BytesMut::new();
    for packet in packets {
        codec::encode(packet, version, &mut buf).unwrap();
    }
    buf
}

/// Decodes every whole frame in `buf`, stopping at the first incomplete one.
fn decode_available(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    out: &mut Vec<Packet>,
) -> Result<(), DecodeError> {
    loop {
        let len_before = buf.len();
        match codec::decode(buf, version, UNLIMITED)? {
            Some(packet) => out.push(packet),
            None => {
                assert_eq!(buf.len(), len_before, "Ok(None) consumed bytes");
                return Ok(());
            }
        }
    }
}

/// The first byte of a frame of each type, with the flags the spec fixes.
fn first_byte(packet_type: PacketType) -> u8 {
    let flags = match packet_type {
        PacketType::PubRel | PacketType::Subscribe | PacketType::Unsubscribe => 0b0010,
        _ => 0,
    };
    ((packet_type as u8) << 4) | flags
}

fn packet_type() -> impl Strategy<Value = PacketType> {
    (1u8..=15).prop_map(|nibble| PacketType::from_nibble(nibble).unwrap())
}

/// A remaining length, biased to the edges of each variable byte integer width.
fn remaining_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        proptest::sample::select(&[0usize, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152][..]),
        Just(REMAINING_LENGTH_MAX),
        0..=REMAINING_LENGTH_MAX,
    ]
}

fn put_varint(buf: &mut BytesMut, mut value: usize) {
    loop {
        let byte = (value & 0x7F) as u8;
        value >>= 7;
        if value == 0 {
            buf.put_u8(byte);
            return;
        }
        buf.put_u8(byte | 0x80);
    }
}

proptest! {
    /// (a) encode then decode gives the packet back, `encoded_len` is what `encode`
    /// writes, and the frame is consumed exactly.
    #[test]
    fn encode_decode_round_trip((version, packet) in versioned_packet()) {
        let mut buf = BytesMut::new();
        buf.put_slice(b"prefix");
        let written = codec::encode(&packet, version, &mut buf).unwrap();
        prop_assert_eq!(buf.len(), 6 + written);
        prop_assert_eq!(codec::encoded_len(&packet, version), Ok(written));
        let _prefix = buf.split_to(6);

        let header = codec::check(&buf, UNLIMITED).unwrap().unwrap();
        prop_assert_eq!(header.frame_len(), written);
        prop_assert_eq!(header.packet_type, packet.packet_type());

        let decoded = codec::decode(&mut buf, version, UNLIMITED).unwrap().unwrap();
        prop_assert_eq!(&decoded, &packet);
        prop_assert!(buf.is_empty());
    }

    /// (a) `encode_publish` and `publish_len` agree byte for byte with `encode`.
    #[test]
    fn encode_publish_matches_encode(
        (version, publish) in version().prop_flat_map(|v| (Just(v), publish(v, 300)))
    ) {
        let mut direct = BytesMut::new();
        let written = codec::encode_publish(&publish, version, &mut direct).unwrap();
        prop_assert_eq!(codec::publish_len(&publish, version), Ok(written));
        prop_assert_eq!(direct.len(), written);

        let packet = Packet::Publish(publish);
        let mut via_packet = BytesMut::new();
        codec::encode(&packet, version, &mut via_packet).unwrap();
        prop_assert_eq!(&direct, &via_packet);

        let decoded = codec::decode(&mut direct, version, UNLIMITED).unwrap();
        prop_assert_eq!(decoded, Some(packet));
    }

    /// (a) CONNECT is coded by the version it names, whatever the connection's version.
    #[test]
    fn connect_ignores_connection_version(
        (named, connect) in version().prop_flat_map(|v| (Just(v), strategy::connect(v))),
        connection in version(),
    ) {
        let packet = Packet::Connect(Box::new(connect));
        let mut as_named = BytesMut::new();
        codec::encode(&packet, named, &mut as_named).unwrap();
        let mut as_connection = BytesMut::new();
        codec::encode(&packet, connection, &mut as_connection).unwrap();
        prop_assert_eq!(&as_named, &as_connection);

        let decoded = codec::decode(&mut as_connection, connection, UNLIMITED).unwrap();
        prop_assert_eq!(decoded, Some(packet));
    }

    /// (b) several frames fed in chunks cut at arbitrary points decode to the same
    /// sequence, and an incomplete frame leaves the buffer untouched.
    #[test]
    fn stream_cut_anywhere_decodes_the_same(
        (version, packets) in versioned_packets(1..8),
        cuts in vec(any::<Index>(), 0..24),
    ) {
        let stream = encode_all(&packets, version).freeze();
        let mut cut_points: Vec<usize> = cuts.iter().map(|cut| cut.index(stream.len() + 1)).collect();
        cut_points.push(stream.len());
        cut_points.sort_unstable();
        cut_points.dedup();

        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        let mut start = 0;
        for end in cut_points {
            buf.extend_from_slice(&stream[start..end]);
            start = end;
            decode_available(&mut buf, version, &mut decoded).unwrap();
        }
        prop_assert!(buf.is_empty(), "{} bytes left over", buf.len());
        prop_assert_eq!(decoded, packets);
    }

    /// (b) the extreme cut: one byte at a time.
    #[test]
    fn stream_byte_by_byte_decodes_the_same((version, packets) in versioned_packets(1..4)) {
        let stream = encode_all(&packets, version);
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        for &byte in stream.iter() {
            buf.put_u8(byte);
            decode_available(&mut buf, version, &mut decoded).unwrap();
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(decoded, packets);
    }

    /// (c) a decoded PUBLISH's topic and payload are slices of the read buffer.
    #[test]
    fn publish_decodes_without_copying(
        // Other frames before the PUBLISH, so it is not at the start of the allocation.
        (version, leading, publish) in version().prop_flat_map(|v| {
            (Just(v), vec(packet(v), 0..3), publish(v, 512))
        }),
    ) {
        let mut buf = encode_all(&leading, version);
        codec::encode_publish(&publish, version, &mut buf).unwrap();

        let range = buf.as_ptr_range();
        let within = |ptr: *const u8| range.contains(&ptr);
        for _ in 0..leading.len() {
            codec::decode(&mut buf, version, UNLIMITED).unwrap().unwrap();
        }
        let decoded = codec::decode(&mut buf, version, UNLIMITED).unwrap().unwrap();
        let Packet::Publish(decoded) = decoded else {
            panic!("expected a PUBLISH, got {decoded:?}");
        };
        if !decoded.payload.is_empty() {
            prop_assert!(within(decoded.payload.as_ptr()), "payload was copied");
            let last = decoded.payload.as_ptr().wrapping_add(decoded.payload.len() - 1);
            prop_assert!(within(last), "payload runs past the frame");
        }
        if !decoded.topic.is_empty() {
            prop_assert!(within(decoded.topic.as_ptr()), "topic was copied");
        }
        prop_assert_eq!(decoded, publish);
    }

    /// (d) `check` refuses a frame over the limit from its fixed header alone, and
    /// accepts it once the limit allows its size; shorter prefixes are incomplete.
    #[test]
    fn check_refuses_oversize_from_the_fixed_header(
        (version, packet) in versioned_packet(),
        limit in any::<Index>(),
    ) {
        let mut frame = BytesMut::new();
        let frame_len = codec::encode(&packet, version, &mut frame).unwrap();
        let header = codec::check(&frame, UNLIMITED).unwrap().unwrap();
        let fixed_header = &frame[..header.header_len];

        let max = limit.index(frame_len) as u32;
        prop_assert_eq!(
            codec::check(fixed_header, max),
            Err(DecodeError::TooLarge { size: frame_len, max })
        );
        let mut partial = BytesMut::from(fixed_header);
        prop_assert_eq!(
            codec::decode(&mut partial, version, max),
            Err(DecodeError::TooLarge { size: frame_len, max })
        );
        prop_assert_eq!(codec::check(fixed_header, frame_len as u32), Ok(Some(header)));
        for len in 0..header.header_len {
            prop_assert_eq!(codec::check(&frame[..len], 0), Ok(None));
        }
    }

    /// (d) the same for every remaining length MQTT can express, with no body at all.
    #[test]
    fn check_refuses_any_announced_oversize(
        packet_type in packet_type(),
        remaining_len in remaining_len(),
        limit in any::<Index>(),
    ) {
        let mut header = BytesMut::new();
        header.put_u8(first_byte(packet_type));
        put_varint(&mut header, remaining_len);
        let frame_len = header.len() + remaining_len;

        let max = limit.index(frame_len) as u32;
        prop_assert_eq!(
            codec::check(&header, max),
            Err(DecodeError::TooLarge { size: frame_len, max })
        );
        let expected = FrameHeader {
            packet_type,
            flags: first_byte(packet_type) & 0x0F,
            header_len: header.len(),
            remaining_len,
        };
        prop_assert_eq!(codec::check(&header, frame_len as u32), Ok(Some(expected)));
    }
}
