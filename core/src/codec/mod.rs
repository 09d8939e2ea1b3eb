//! MQTT 3.1.1 / 5.0 encoding and decoding over `bytes`.
//!
//! Layout:
//! - this file: the entry points, the fixed header and the error types;
//! - `read`: a bounds-checked, zero-copy reader over one frame;
//! - `write`: the [`Sink`] every encoder writes to, once to count, once to write;
//! - `property`: MQTT 5 properties, with the rules on which packet carries which;
//! - one file per packet family: `connect`, `publish`, `ack`, `subscribe`, `disconnect`.
//!
//! Decoding is check-then-parse: [`check`] reads only the fixed header, so an oversized
//! packet is refused before its body is buffered, and a partial frame is `Ok(None)`
//! (normal, not an error). [`decode`] then splits the whole frame off the read buffer
//! and parses it; strings and payloads of the result are slices of that buffer.

mod ack;
mod connect;
mod disconnect;
mod property;
mod publish;
mod read;
mod subscribe;
mod write;

use bytes::{Buf, Bytes, BytesMut};

use crate::limits::{REMAINING_LENGTH_MAX, VARINT_BYTES_MAX};
use crate::packet::{Packet, PacketId, PacketType, ProtocolVersion, PubResponse};
use crate::reason::{ReasonCode, ReasonKind};

pub use publish::{encode_bare_publish, encode_publish, publish_len, BareHeader};
pub use write::Sink;

/// Why bytes from a peer were refused. `Incomplete` is not here: a partial frame is
/// `Ok(None)` from [`check`] and [`decode`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes break the packet grammar (MQTT 5: 0x81).
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// The bytes parse but break a protocol rule (MQTT 5: 0x82).
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// The fixed header announces more than the receiver allows (MQTT 5: 0x95).
    #[error("packet of {size} bytes exceeds the maximum packet size of {max}")]
    TooLarge { size: usize, max: u32 },
    /// CONNECT with a protocol level this broker does not speak (CONNACK 0x84 / 0x01).
    #[error("unsupported protocol level {0}")]
    UnsupportedProtocolVersion(u8),
    /// A PUBLISH or will topic that is not a valid topic name (MQTT 5: 0x90).
    #[error("topic name invalid: {0}")]
    TopicNameInvalid(&'static str),
    /// A topic alias of 0 (MQTT 5: 0x94).
    #[error("topic alias invalid: {0}")]
    TopicAliasInvalid(&'static str),
}

impl DecodeError {
    /// The MQTT 5 reason code that reports this error to the peer.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            DecodeError::Malformed(_) => ReasonCode::MalformedPacket,
            DecodeError::Protocol(_) => ReasonCode::ProtocolError,
            DecodeError::TooLarge { .. } => ReasonCode::PacketTooLarge,
            DecodeError::UnsupportedProtocolVersion(_) => ReasonCode::UnsupportedProtocolVersion,
            DecodeError::TopicNameInvalid(_) => ReasonCode::TopicNameInvalid,
            DecodeError::TopicAliasInvalid(_) => ReasonCode::TopicAliasInvalid,
        }
    }
}

/// Why a packet could not be encoded. Encoding never writes a partial packet.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The packet's remaining length exceeds 268,435,455 bytes.
    #[error("packet body of {0} bytes exceeds the MQTT limit")]
    TooLarge(usize),
    /// A string or binary field exceeds 65,535 bytes.
    #[error("a string or binary field exceeds 65,535 bytes")]
    FieldTooLong,
    /// The packet cannot be expressed in the requested protocol version or is not a
    /// valid packet (for example QoS 1 without a packet id).
    #[error("cannot encode: {0}")]
    Invalid(&'static str),
}

/// The fixed header of a frame, read by [`check`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub packet_type: PacketType,
    /// The low nibble of the first byte.
    pub flags: u8,
    /// Bytes of the fixed header: 1 plus the length of the remaining-length integer.
    pub header_len: usize,
    pub remaining_len: usize,
}

impl FrameHeader {
    /// Bytes of the whole frame.
    pub fn frame_len(&self) -> usize {
        self.header_len + self.remaining_len
    }
}

/// Reads the fixed header at the start of `buf` without copying or allocating.
///
/// `Ok(None)` means more bytes are needed to know the frame's length. A frame larger
/// than `max_packet_size` is refused here, before its body arrives.
pub fn check(buf: &[u8], max_packet_size: u32) -> Result<Option<FrameHeader>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let packet_type = PacketType::from_nibble(first >> 4)
        .ok_or(DecodeError::Malformed("reserved packet type 0"))?;
    let flags = first & 0x0F;
    check_fixed_flags(packet_type, flags)?;

    let mut remaining_len: usize = 0;
    let mut shift = 0;
    for (index, &byte) in buf.iter().skip(1).take(VARINT_BYTES_MAX).enumerate() {
        remaining_len |= usize::from(byte & 0x7F) << shift;
        if byte & 0x80 == 0 {
            if byte == 0 && index > 0 {
                return Err(DecodeError::Malformed(
                    "remaining length not in its shortest form",
                ));
            }
            let header = FrameHeader {
                packet_type,
                flags,
                header_len: 2 + index,
                remaining_len,
            };
            let size = header.frame_len();
            if size > max_packet_size as usize {
                return Err(DecodeError::TooLarge {
                    size,
                    max: max_packet_size,
                });
            }
            return Ok(Some(header));
        }
        shift += 7;
    }
    if buf.len() > VARINT_BYTES_MAX {
        return Err(DecodeError::Malformed(
            "remaining length longer than 4 bytes",
        ));
    }
    Ok(None)
}

/// The flag bits the spec fixes for every type but PUBLISH (2.1.3).
fn check_fixed_flags(packet_type: PacketType, flags: u8) -> Result<(), DecodeError> {
    let expected = match packet_type {
        PacketType::Publish => {
            let qos = (flags >> 1) & 0b11;
            if qos == 3 {
                return Err(DecodeError::Malformed("PUBLISH with QoS 3"));
            }
            if qos == 0 && flags & 0b1000 != 0 {
                return Err(DecodeError::Malformed("PUBLISH with DUP set at QoS 0"));
            }
            return Ok(());
        }
        PacketType::PubRel | PacketType::Subscribe | PacketType::Unsubscribe => 0b0010,
        _ => 0,
    };
    if flags == expected {
        Ok(())
    } else {
        Err(DecodeError::Malformed("reserved fixed header flags"))
    }
}

/// Splits one whole frame off `buf` and decodes it.
///
/// `version` is the connection's protocol version; CONNECT is decoded by the level it
/// carries, so before CONNECT any version may be passed. `Ok(None)` means the frame is
/// not complete yet; the buffer is then untouched, and [`check`] tells how long the
/// frame will be, so the caller can reserve room for it once.
pub fn decode(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: u32,
) -> Result<Option<Packet>, DecodeError> {
    let Some(header) = check(buf, max_packet_size)? else {
        return Ok(None);
    };
    if buf.len() < header.frame_len() {
        return Ok(None);
    }
    if let Some(packet) = short_pub_response(header, buf)? {
        return Ok(Some(packet));
    }
    let mut body = buf.split_to(header.frame_len()).freeze();
    // `advance` moves the start without a reference-count round trip, as a
    // `split_off` of the header would.
    body.advance(header.header_len);
    decode_body(header, body, version).map(Some)
}

/// A PUBACK, PUBREC, PUBREL or PUBCOMP of just a packet id (success, no properties;
/// the same in both versions) is every other packet of a QoS 1/2 flow: it is read
/// in place and consumed, without taking the frame out as shared bytes. `Ok(None)`
/// for any other frame. `buf` holds the whole frame.
fn short_pub_response(
    header: FrameHeader,
    buf: &mut BytesMut,
) -> Result<Option<Packet>, DecodeError> {
    if header.remaining_len != 2 {
        return Ok(None);
    }
    let wrap: fn(PubResponse) -> Packet = match header.packet_type {
        PacketType::PubAck => Packet::PubAck,
        PacketType::PubRec => Packet::PubRec,
        PacketType::PubRel => Packet::PubRel,
        PacketType::PubComp => Packet::PubComp,
        _ => return Ok(None),
    };
    // Two bytes of remaining length have a one-byte header: the id is at 2..4.
    let Some(&[high, low]) = buf.get(2..4) else {
        return Ok(None);
    };
    let packet_id = PacketId::new(u16::from_be_bytes([high, low]))
        .ok_or(DecodeError::Malformed("packet identifier 0"))?;
    buf.advance(4);
    Ok(Some(wrap(PubResponse::success(packet_id))))
}

/// Decodes the body of a frame whose fixed header is `header`.
pub fn decode_body(
    header: FrameHeader,
    body: Bytes,
    version: ProtocolVersion,
) -> Result<Packet, DecodeError> {
    let mut r = read::Reader::new(body);
    let packet = match header.packet_type {
        PacketType::Connect => Packet::Connect(Box::new(connect::decode_connect(&mut r)?)),
        PacketType::ConnAck => Packet::ConnAck(Box::new(connect::decode_connack(&mut r, version)?)),
        PacketType::Publish => {
            Packet::Publish(publish::decode_publish(header.flags, &mut r, version)?)
        }
        PacketType::PubAck => Packet::PubAck(ack::decode_pub_response(
            &mut r,
            version,
            ReasonKind::PubAck,
        )?),
        PacketType::PubRec => Packet::PubRec(ack::decode_pub_response(
            &mut r,
            version,
            ReasonKind::PubRec,
        )?),
        PacketType::PubRel => Packet::PubRel(ack::decode_pub_response(
            &mut r,
            version,
            ReasonKind::PubRel,
        )?),
        PacketType::PubComp => Packet::PubComp(ack::decode_pub_response(
            &mut r,
            version,
            ReasonKind::PubComp,
        )?),
        PacketType::Subscribe => Packet::Subscribe(subscribe::decode_subscribe(&mut r, version)?),
        PacketType::SubAck => Packet::SubAck(ack::decode_suback(&mut r, version)?),
        PacketType::Unsubscribe => {
            Packet::Unsubscribe(subscribe::decode_unsubscribe(&mut r, version)?)
        }
        PacketType::UnsubAck => Packet::UnsubAck(ack::decode_unsuback(&mut r, version)?),
        PacketType::PingReq => Packet::PingReq,
        PacketType::PingResp => Packet::PingResp,
        PacketType::Disconnect => {
            Packet::Disconnect(disconnect::decode_disconnect(&mut r, version)?)
        }
        PacketType::Auth => match version {
            ProtocolVersion::V5 => Packet::Auth(disconnect::decode_auth(&mut r)?),
            ProtocolVersion::V311 => {
                return Err(DecodeError::Malformed(
                    "reserved packet type 15 in MQTT 3.1.1",
                ))
            }
        },
    };
    r.finish()?;
    Ok(packet)
}

/// Appends the encoding of `packet` for a peer of `version` to `buf`; returns the
/// number of bytes written. On error nothing is written.
pub fn encode(
    packet: &Packet,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<usize, EncodeError> {
    validate(packet, version)?;
    let body_len = write::body_len(packet, version)?;
    let frame_len = write::frame_len(body_len);
    buf.reserve(frame_len);
    write::put_frame(buf, first_byte(packet), body_len, packet, version);
    Ok(frame_len)
}

/// The number of bytes [`encode`] would write, after checking that it can.
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> Result<usize, EncodeError> {
    validate(packet, version)?;
    write::body_len(packet, version).map(write::frame_len)
}

fn validate(packet: &Packet, version: ProtocolVersion) -> Result<(), EncodeError> {
    match packet {
        Packet::Connect(connect) => connect::validate_connect(connect),
        Packet::ConnAck(connack) => connect::validate_connack(connack, version),
        Packet::Publish(publish) => publish::validate_publish(publish, version),
        Packet::Subscribe(subscribe) => subscribe::validate_subscribe(subscribe),
        Packet::Unsubscribe(unsubscribe) if unsubscribe.filters.is_empty() => {
            Err(EncodeError::Invalid("UNSUBSCRIBE without topic filters"))
        }
        Packet::SubAck(suback) if suback.reasons.is_empty() => {
            Err(EncodeError::Invalid("SUBACK without reason codes"))
        }
        Packet::UnsubAck(unsuback)
            if version == ProtocolVersion::V5 && unsuback.reasons.is_empty() =>
        {
            Err(EncodeError::Invalid("MQTT 5 UNSUBACK without reason codes"))
        }
        Packet::Auth(_) if version == ProtocolVersion::V311 => {
            Err(EncodeError::Invalid("AUTH does not exist in MQTT 3.1.1"))
        }
        _ if version == ProtocolVersion::V311 => Ok(()),
        Packet::PubAck(r) => reason_allowed(r.reason, ReasonKind::PubAck),
        Packet::PubRec(r) => reason_allowed(r.reason, ReasonKind::PubRec),
        Packet::PubRel(r) => reason_allowed(r.reason, ReasonKind::PubRel),
        Packet::PubComp(r) => reason_allowed(r.reason, ReasonKind::PubComp),
        Packet::SubAck(suback) => suback
            .reasons
            .iter()
            .try_for_each(|&reason| reason_allowed(reason, ReasonKind::SubAck)),
        Packet::UnsubAck(unsuback) => unsuback
            .reasons
            .iter()
            .try_for_each(|&reason| reason_allowed(reason, ReasonKind::UnsubAck)),
        Packet::Disconnect(d) => reason_allowed(d.reason, ReasonKind::Disconnect),
        Packet::Auth(auth) => {
            reason_allowed(auth.reason, ReasonKind::Auth)?;
            let bare = auth.reason == ReasonCode::Success && auth.properties.is_empty();
            if auth.properties.authentication_method.is_none() && !bare {
                return Err(EncodeError::Invalid("AUTH without authentication method"));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn reason_allowed(reason: ReasonCode, kind: ReasonKind) -> Result<(), EncodeError> {
    if reason.allowed_in(kind) {
        Ok(())
    } else {
        Err(EncodeError::Invalid(
            "reason code not allowed in this packet",
        ))
    }
}

/// The first byte of the fixed header: the type and its flags.
fn first_byte(packet: &Packet) -> u8 {
    let flags = match packet {
        Packet::Publish(publish) => publish::flags(publish),
        Packet::PubRel(_) | Packet::Subscribe(_) | Packet::Unsubscribe(_) => 0b0010,
        _ => 0,
    };
    ((packet.packet_type() as u8) << 4) | flags
}

impl write::Body for Packet {
    fn emit_body<S: Sink>(&self, version: ProtocolVersion, sink: &mut S) {
        match self {
            Packet::Connect(connect) => connect::emit_connect(connect, sink),
            Packet::ConnAck(connack) => connect::emit_connack(connack, version, sink),
            Packet::Publish(publish) => publish::emit_publish_body(publish, version, sink),
            Packet::PubAck(response)
            | Packet::PubRec(response)
            | Packet::PubRel(response)
            | Packet::PubComp(response) => ack::emit_pub_response(response, version, sink),
            Packet::Subscribe(subscribe) => subscribe::emit_subscribe(subscribe, version, sink),
            Packet::SubAck(suback) => ack::emit_suback(suback, version, sink),
            Packet::Unsubscribe(unsubscribe) => {
                subscribe::emit_unsubscribe(unsubscribe, version, sink)
            }
            Packet::UnsubAck(unsuback) => ack::emit_unsuback(unsuback, version, sink),
            Packet::PingReq | Packet::PingResp => {}
            Packet::Disconnect(disconnect) => {
                disconnect::emit_disconnect(disconnect, version, sink)
            }
            Packet::Auth(auth) => disconnect::emit_auth(auth, sink),
        }
    }
}

/// Bytes a variable byte integer takes for `value`.
pub(crate) const fn varint_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

const _: () = assert!(varint_len(REMAINING_LENGTH_MAX) == VARINT_BYTES_MAX);
