//! PUBACK, PUBREC, PUBREL, PUBCOMP (3.4 - 3.7), SUBACK (3.9) and UNSUBACK (3.11).

use super::property::decode_ack_properties;
use super::read::Reader;
use super::write::{put_properties, Sink};
use super::DecodeError;
use crate::packet::{AckProperties, PacketId, ProtocolVersion, PubResponse, SubAck, UnsubAck};
use crate::reason::{ReasonCode, ReasonKind};

pub(crate) fn packet_id(r: &mut Reader) -> Result<PacketId, DecodeError> {
    PacketId::new(r.u16()?).ok_or(DecodeError::Malformed("packet identifier 0"))
}

fn reason(r: &mut Reader, kind: ReasonKind) -> Result<ReasonCode, DecodeError> {
    ReasonCode::from_u8(r.u8()?)
        .filter(|reason| reason.allowed_in(kind))
        .ok_or(DecodeError::Malformed(
            "reason code not allowed in this packet",
        ))
}

/// MQTT 5 lets a success with no properties drop the reason code, and any reason with
/// no properties drop the property length (3.4.2.1).
pub(crate) fn decode_pub_response(
    r: &mut Reader,
    version: ProtocolVersion,
    kind: ReasonKind,
) -> Result<PubResponse, DecodeError> {
    let packet_id = packet_id(r)?;
    let mut response = PubResponse::success(packet_id);
    if version == ProtocolVersion::V5 && !r.is_empty() {
        response.reason = reason(r, kind)?;
        if !r.is_empty() {
            response.properties = decode_ack_properties(r)?;
        }
    }
    Ok(response)
}

/// MQTT 3.1.1 has no reason in these packets: only the packet id is written there.
pub(crate) fn emit_pub_response<S: Sink>(
    response: &PubResponse,
    version: ProtocolVersion,
    s: &mut S,
) {
    s.put_u16(response.packet_id.get());
    // The reason and property length may be left out when they say nothing; when
    // the reason is written the property length is too (MQTT 5 allows dropping it,
    // but common client libraries then fail to parse the packet).
    if version == ProtocolVersion::V5
        && (response.reason != ReasonCode::Success || !response.properties.is_empty())
    {
        s.put_u8(response.reason.as_u8());
        put_properties(s, &response.properties);
    }
}

pub(crate) fn decode_suback(
    r: &mut Reader,
    version: ProtocolVersion,
) -> Result<SubAck, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = match version {
        ProtocolVersion::V5 => decode_ack_properties(r)?,
        ProtocolVersion::V311 => AckProperties::default(),
    };
    let mut reasons = Vec::with_capacity(r.remaining());
    while !r.is_empty() {
        reasons.push(match version {
            ProtocolVersion::V5 => reason(r, ReasonKind::SubAck)?,
            ProtocolVersion::V311 => ReasonCode::from_v3_suback(r.u8()?)
                .ok_or(DecodeError::Malformed("reserved SUBACK return code"))?,
        });
    }
    if reasons.is_empty() {
        return Err(DecodeError::Protocol("SUBACK without reason codes"));
    }
    Ok(SubAck {
        packet_id,
        reasons,
        properties,
    })
}

pub(crate) fn emit_suback<S: Sink>(suback: &SubAck, version: ProtocolVersion, s: &mut S) {
    s.put_u16(suback.packet_id.get());
    match version {
        ProtocolVersion::V5 => {
            put_properties(s, &suback.properties);
            for reason in &suback.reasons {
                s.put_u8(reason.as_u8());
            }
        }
        ProtocolVersion::V311 => {
            for reason in &suback.reasons {
                s.put_u8(reason.to_v3_suback());
            }
        }
    }
}

pub(crate) fn decode_unsuback(
    r: &mut Reader,
    version: ProtocolVersion,
) -> Result<UnsubAck, DecodeError> {
    let packet_id = packet_id(r)?;
    let mut unsuback = UnsubAck {
        packet_id,
        reasons: Vec::new(),
        properties: AckProperties::default(),
    };
    if version == ProtocolVersion::V5 {
        unsuback.properties = decode_ack_properties(r)?;
        unsuback.reasons.reserve(r.remaining());
        while !r.is_empty() {
            unsuback.reasons.push(reason(r, ReasonKind::UnsubAck)?);
        }
        if unsuback.reasons.is_empty() {
            return Err(DecodeError::Protocol("UNSUBACK without reason codes"));
        }
    }
    Ok(unsuback)
}

pub(crate) fn emit_unsuback<S: Sink>(unsuback: &UnsubAck, version: ProtocolVersion, s: &mut S) {
    s.put_u16(unsuback.packet_id.get());
    if version == ProtocolVersion::V5 {
        put_properties(s, &unsuback.properties);
        for reason in &unsuback.reasons {
            s.put_u8(reason.as_u8());
        }
    }
}
