//! PUBLISH (3.3), the hot path: the topic and payload of a decoded PUBLISH are slices of
//! the read buffer, and encoding writes straight into the caller's buffer.

use bytes::BytesMut;

use super::property::decode_publish_properties;
use super::read::Reader;
use super::write::{self, put_properties, Body, Sink};
use super::{DecodeError, EncodeError};
use crate::limits::{REMAINING_LENGTH_MAX, SUBSCRIPTION_IDENTIFIER_MAX};
use crate::packet::{LazyProperties, PacketId, ProtocolVersion, Publish, QoS};

const DUP: u8 = 0b1000;
const RETAIN: u8 = 0b0001;

pub(crate) fn decode_publish(
    flags: u8,
    r: &mut Reader,
    version: ProtocolVersion,
) -> Result<Publish, DecodeError> {
    let qos =
        QoS::from_u8((flags >> 1) & 0b11).ok_or(DecodeError::Malformed("PUBLISH with QoS 3"))?;
    let topic = r.topic_name()?;
    let packet_id = match qos {
        QoS::AtMostOnce => None,
        QoS::AtLeastOnce | QoS::ExactlyOnce => {
            Some(PacketId::new(r.u16()?).ok_or(DecodeError::Malformed("packet identifier 0"))?)
        }
    };
    let properties = match version {
        ProtocolVersion::V5 if r.skip_empty_properties() => LazyProperties::none(),
        ProtocolVersion::V5 => LazyProperties::from(decode_publish_properties(r)?),
        ProtocolVersion::V311 => LazyProperties::none(),
    };
    // MQTT 5 lets a topic alias stand in for the topic (3.3.2.3.4); an empty topic
    // without one is a protocol error (3.3.2.1). `topic_name` refused wildcards.
    if topic.is_empty() && properties.topic_alias.is_none() {
        return Err(DecodeError::Protocol(
            "empty topic name without a topic alias",
        ));
    }
    Ok(Publish {
        dup: flags & DUP != 0,
        qos,
        retain: flags & RETAIN != 0,
        topic,
        packet_id,
        properties,
        payload: r.rest(),
    })
}

/// The flag bits of a PUBLISH fixed header.
pub(crate) fn flags(publish: &Publish) -> u8 {
    header_flags(publish.qos, publish.dup, publish.retain)
}

fn header_flags(qos: QoS, dup: bool, retain: bool) -> u8 {
    let mut flags = qos.as_u8() << 1;
    if dup {
        flags |= DUP;
    }
    if retain {
        flags |= RETAIN;
    }
    flags
}

/// A packet id exactly at QoS 1 and 2, DUP only there.
fn check_header(qos: QoS, packet_id: Option<PacketId>, dup: bool) -> Result<(), EncodeError> {
    match (qos, packet_id) {
        (QoS::AtMostOnce, Some(_)) => {
            return Err(EncodeError::Invalid("QoS 0 PUBLISH with a packet id"))
        }
        (QoS::AtLeastOnce | QoS::ExactlyOnce, None) => {
            return Err(EncodeError::Invalid("QoS 1/2 PUBLISH without a packet id"))
        }
        _ => {}
    }
    if dup && qos == QoS::AtMostOnce {
        return Err(EncodeError::Invalid("DUP set on a QoS 0 PUBLISH"));
    }
    Ok(())
}

/// A topic name the decoder on the other side will accept (apart from emptiness,
/// which depends on a topic alias).
pub(crate) fn check_encodable_topic(topic: &str) -> Result<(), EncodeError> {
    if topic.bytes().any(|b| b == b'+' || b == b'#' || b == 0) {
        return Err(EncodeError::Invalid(
            "topic name contains a wildcard or U+0000",
        ));
    }
    Ok(())
}

pub(crate) fn validate_publish(
    publish: &Publish,
    version: ProtocolVersion,
) -> Result<(), EncodeError> {
    check_header(publish.qos, publish.packet_id, publish.dup)?;
    check_encodable_topic(&publish.topic)?;
    let alias = version == ProtocolVersion::V5 && publish.properties.topic_alias.is_some();
    if publish.topic.is_empty() && !alias {
        return Err(EncodeError::Invalid("PUBLISH without a topic"));
    }
    if publish
        .properties
        .subscription_identifiers
        .iter()
        .any(|id| id.get() > SUBSCRIPTION_IDENTIFIER_MAX)
    {
        return Err(EncodeError::Invalid(
            "subscription identifier over 268,435,455",
        ));
    }
    Ok(())
}

pub(crate) fn emit_publish_body<S: Sink>(publish: &Publish, version: ProtocolVersion, s: &mut S) {
    s.put_prefixed(publish.topic.as_bytes());
    if let Some(id) = publish.packet_id {
        s.put_u16(id.get());
    }
    if version == ProtocolVersion::V5 {
        put_properties(s, &*publish.properties);
    }
    s.put_slice(&publish.payload);
}

impl Body for Publish {
    fn emit_body<S: Sink>(&self, version: ProtocolVersion, sink: &mut S) {
        emit_publish_body(self, version, sink);
    }
}

/// Appends one PUBLISH to `buf` without going through [`crate::packet::Packet`];
/// returns the bytes written. On error nothing is written.
pub fn encode_publish(
    publish: &Publish,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<usize, EncodeError> {
    validate_publish(publish, version)?;
    let body_len = write::body_len(publish, version)?;
    let frame_len = write::frame_len(body_len);
    buf.reserve(frame_len);
    write::put_frame(buf, (3 << 4) | flags(publish), body_len, publish, version);
    Ok(frame_len)
}

/// The header fields of a PUBLISH without properties, for [`encode_bare_publish`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BareHeader {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// Present exactly when `qos` is 1 or 2.
    pub packet_id: Option<PacketId>,
}

impl BareHeader {
    /// The remaining length for a topic and payload of these lengths.
    fn body_len(&self, topic_len: usize, payload_len: usize, version: ProtocolVersion) -> usize {
        2 + topic_len
            + if self.packet_id.is_some() { 2 } else { 0 }
            + usize::from(version == ProtocolVersion::V5)
            + payload_len
    }
}

/// Appends a PUBLISH without properties from borrowed parts: the broker's common
/// outbound case, with no [`Publish`] built and no counting pass. `topic` must be a
/// topic name that passed the decoder (every topic the broker routes did): only its
/// length is checked here. Returns the bytes written; on error nothing is written.
pub fn encode_bare_publish(
    header: BareHeader,
    topic: &str,
    payload: &[u8],
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<usize, EncodeError> {
    debug_assert!(
        check_encodable_topic(topic).is_ok(),
        "unchecked topic {topic:?}"
    );
    check_header(header.qos, header.packet_id, header.dup)?;
    if topic.is_empty() {
        return Err(EncodeError::Invalid("PUBLISH without a topic"));
    }
    let topic_len = u16::try_from(topic.len()).map_err(|_| EncodeError::FieldTooLong)?;
    let body_len = header.body_len(topic.len(), payload.len(), version);
    if body_len > REMAINING_LENGTH_MAX {
        return Err(EncodeError::TooLarge(body_len));
    }
    let frame_len = write::frame_len(body_len);
    buf.reserve(frame_len);
    buf.put_u8((3 << 4) | header_flags(header.qos, header.dup, header.retain));
    Sink::put_varint(buf, body_len);
    buf.put_u16(topic_len);
    buf.extend_from_slice(topic.as_bytes());
    if let Some(id) = header.packet_id {
        buf.put_u16(id.get());
    }
    if version == ProtocolVersion::V5 {
        buf.put_u8(0);
    }
    buf.extend_from_slice(payload);
    Ok(frame_len)
}

/// The bytes [`encode_publish`] would write: what a receiver's maximum packet size is
/// compared with.
pub fn publish_len(publish: &Publish, version: ProtocolVersion) -> Result<usize, EncodeError> {
    validate_publish(publish, version)?;
    write::body_len(publish, version).map(write::frame_len)
}
