//! DISCONNECT (3.14) and AUTH (3.15): a reason code and properties that MQTT 5 lets
//! the sender drop when they are Success and empty.

use super::property::{decode_auth_properties, decode_disconnect_properties};
use super::read::Reader;
use super::write::{put_properties, Sink};
use super::DecodeError;
use crate::packet::{Auth, Disconnect, ProtocolVersion};
use crate::reason::{ReasonCode, ReasonKind};

fn reason(r: &mut Reader, kind: ReasonKind) -> Result<ReasonCode, DecodeError> {
    if r.is_empty() {
        return Ok(ReasonCode::Success);
    }
    ReasonCode::from_u8(r.u8()?)
        .filter(|reason| reason.allowed_in(kind))
        .ok_or(DecodeError::Malformed(
            "reason code not allowed in this packet",
        ))
}

pub(crate) fn decode_disconnect(
    r: &mut Reader,
    version: ProtocolVersion,
) -> Result<Disconnect, DecodeError> {
    let mut disconnect = Disconnect::default();
    if version == ProtocolVersion::V5 {
        disconnect.reason = reason(r, ReasonKind::Disconnect)?;
        if !r.is_empty() {
            disconnect.properties = decode_disconnect_properties(r)?;
        }
    }
    Ok(disconnect)
}

/// MQTT 3.1.1 DISCONNECT has no body.
pub(crate) fn emit_disconnect<S: Sink>(
    disconnect: &Disconnect,
    version: ProtocolVersion,
    s: &mut S,
) {
    if version == ProtocolVersion::V311 {
        return;
    }
    // As for PUBACK: a written reason is always followed by the property length,
    // which common client libraries require although MQTT 5 does not.
    if disconnect.reason != ReasonCode::Success || !disconnect.properties.is_empty() {
        s.put_u8(disconnect.reason.as_u8());
        put_properties(s, &disconnect.properties);
    }
}

pub(crate) fn decode_auth(r: &mut Reader) -> Result<Auth, DecodeError> {
    let mut auth = Auth {
        reason: reason(r, ReasonKind::Auth)?,
        ..Auth::default()
    };
    if !r.is_empty() {
        auth.properties = decode_auth_properties(r)?;
    }
    let bare = auth.reason == ReasonCode::Success && auth.properties.is_empty();
    if auth.properties.authentication_method.is_none() && !bare {
        return Err(DecodeError::Protocol("AUTH without authentication method"));
    }
    Ok(auth)
}

pub(crate) fn emit_auth<S: Sink>(auth: &Auth, s: &mut S) {
    if auth.reason != ReasonCode::Success || !auth.properties.is_empty() {
        s.put_u8(auth.reason.as_u8());
        put_properties(s, &auth.properties);
    }
}
