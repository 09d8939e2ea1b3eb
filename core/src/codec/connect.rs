//! CONNECT (3.1) and CONNACK (3.2).

use super::property::{
    decode_connack_properties, decode_connect_properties, decode_will_properties,
};
use super::publish::check_encodable_topic;
use super::read::Reader;
use super::write::{put_properties, Sink};
use super::{DecodeError, EncodeError};
use crate::packet::{ConnAck, ConnAckProperties, Connect, ProtocolVersion, QoS, Will};
use crate::reason::{ReasonCode, ReasonKind};

const RESERVED: u8 = 0b0000_0001;
const CLEAN_START: u8 = 0b0000_0010;
const WILL: u8 = 0b0000_0100;
const WILL_QOS_SHIFT: u8 = 3;
const WILL_RETAIN: u8 = 0b0010_0000;
const PASSWORD: u8 = 0b0100_0000;
const USERNAME: u8 = 0b1000_0000;

pub(crate) fn decode_connect(r: &mut Reader) -> Result<Connect, DecodeError> {
    let name = r.string()?;
    let level = r.u8()?;
    let protocol = match (&*name, level) {
        ("MQTT", 4) => ProtocolVersion::V311,
        ("MQTT", 5) => ProtocolVersion::V5,
        // MQTT 3.1 ("MQIsdp") and unknown levels get a CONNACK saying so (3.1.2.2).
        ("MQTT", level) | ("MQIsdp", level) => {
            return Err(DecodeError::UnsupportedProtocolVersion(level))
        }
        _ => return Err(DecodeError::Malformed("protocol name is not MQTT")),
    };
    let flags = r.u8()?;
    if flags & RESERVED != 0 {
        return Err(DecodeError::Malformed("reserved CONNECT flag set"));
    }
    let will_qos = (flags >> WILL_QOS_SHIFT) & 0b11;
    let will_flag = flags & WILL != 0;
    if !will_flag && (will_qos != 0 || flags & WILL_RETAIN != 0) {
        return Err(DecodeError::Malformed(
            "will QoS or will retain set without the will flag",
        ));
    }
    let will_qos = QoS::from_u8(will_qos).ok_or(DecodeError::Malformed("will QoS 3"))?;
    if protocol == ProtocolVersion::V311 && flags & PASSWORD != 0 && flags & USERNAME == 0 {
        return Err(DecodeError::Malformed(
            "password flag set without user name flag",
        ));
    }
    let keep_alive_s = r.u16()?;
    let properties = match protocol {
        ProtocolVersion::V5 => decode_connect_properties(r)?,
        ProtocolVersion::V311 => Default::default(),
    };
    let client_id = r.string()?;
    let will = if will_flag {
        let properties = match protocol {
            ProtocolVersion::V5 => decode_will_properties(r)?,
            ProtocolVersion::V311 => Default::default(),
        };
        let topic = r.topic_name()?;
        if topic.is_empty() {
            return Err(DecodeError::TopicNameInvalid("empty topic name"));
        }
        Some(Will {
            topic,
            payload: r.binary()?,
            qos: will_qos,
            retain: flags & WILL_RETAIN != 0,
            properties,
        })
    } else {
        None
    };
    let username = if flags & USERNAME != 0 {
        Some(r.string()?)
    } else {
        None
    };
    let password = if flags & PASSWORD != 0 {
        Some(r.binary()?)
    } else {
        None
    };
    Ok(Connect {
        protocol,
        clean_start: flags & CLEAN_START != 0,
        keep_alive_s,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

pub(crate) fn validate_connect(connect: &Connect) -> Result<(), EncodeError> {
    if connect.protocol == ProtocolVersion::V311
        && connect.password.is_some()
        && connect.username.is_none()
    {
        return Err(EncodeError::Invalid(
            "MQTT 3.1.1 CONNECT with a password but no user name",
        ));
    }
    if connect.properties.authentication_data.is_some()
        && connect.properties.authentication_method.is_none()
    {
        return Err(EncodeError::Invalid(
            "authentication data without authentication method",
        ));
    }
    if connect.client_id.contains('\0') {
        return Err(EncodeError::Invalid("client id contains U+0000"));
    }
    if let Some(will) = &connect.will {
        if will.topic.is_empty() {
            return Err(EncodeError::Invalid("will without a topic"));
        }
        check_encodable_topic(&will.topic)?;
    }
    Ok(())
}

/// CONNECT is encoded in the version it names, whatever the connection's.
pub(crate) fn emit_connect<S: Sink>(connect: &Connect, s: &mut S) {
    s.put_prefixed(b"MQTT");
    s.put_u8(connect.protocol.level());
    let mut flags = 0;
    if connect.clean_start {
        flags |= CLEAN_START;
    }
    if let Some(will) = &connect.will {
        flags |= WILL | (will.qos.as_u8() << WILL_QOS_SHIFT);
        if will.retain {
            flags |= WILL_RETAIN;
        }
    }
    if connect.username.is_some() {
        flags |= USERNAME;
    }
    if connect.password.is_some() {
        flags |= PASSWORD;
    }
    s.put_u8(flags);
    s.put_u16(connect.keep_alive_s);
    let v5 = connect.protocol == ProtocolVersion::V5;
    if v5 {
        put_properties(s, &connect.properties);
    }
    s.put_prefixed(connect.client_id.as_bytes());
    if let Some(will) = &connect.will {
        if v5 {
            put_properties(s, &will.properties);
        }
        s.put_prefixed(will.topic.as_bytes());
        s.put_prefixed(&will.payload);
    }
    if let Some(username) = &connect.username {
        s.put_prefixed(username.as_bytes());
    }
    if let Some(password) = &connect.password {
        s.put_prefixed(password);
    }
}

pub(crate) fn decode_connack(
    r: &mut Reader,
    version: ProtocolVersion,
) -> Result<ConnAck, DecodeError> {
    let flags = r.u8()?;
    if flags & 0b1111_1110 != 0 {
        return Err(DecodeError::Malformed("reserved CONNACK flag set"));
    }
    let code = r.u8()?;
    let (reason, properties) = match version {
        ProtocolVersion::V311 => (
            ReasonCode::from_v3_connack(code)
                .ok_or(DecodeError::Malformed("reserved CONNACK return code"))?,
            ConnAckProperties::default(),
        ),
        ProtocolVersion::V5 => {
            let reason = ReasonCode::from_u8(code)
                .filter(|reason| reason.allowed_in(ReasonKind::ConnAck))
                .ok_or(DecodeError::Malformed("reason code not allowed in CONNACK"))?;
            (reason, decode_connack_properties(r)?)
        }
    };
    let session_present = flags & 1 != 0;
    if session_present && reason != ReasonCode::Success {
        return Err(DecodeError::Protocol(
            "session present set on a refused connection",
        ));
    }
    Ok(ConnAck {
        session_present,
        reason,
        properties,
    })
}

pub(crate) fn validate_connack(
    connack: &ConnAck,
    version: ProtocolVersion,
) -> Result<(), EncodeError> {
    if connack.session_present && connack.reason != ReasonCode::Success {
        return Err(EncodeError::Invalid(
            "session present on a refused connection",
        ));
    }
    if connack.properties.maximum_qos == Some(QoS::ExactlyOnce) {
        return Err(EncodeError::Invalid(
            "maximum QoS 2 is the default and may not be sent",
        ));
    }
    if version == ProtocolVersion::V5 && !connack.reason.allowed_in(ReasonKind::ConnAck) {
        return Err(EncodeError::Invalid("reason code not allowed in CONNACK"));
    }
    Ok(())
}

pub(crate) fn emit_connack<S: Sink>(connack: &ConnAck, version: ProtocolVersion, s: &mut S) {
    s.put_u8(u8::from(connack.session_present));
    match version {
        ProtocolVersion::V311 => s.put_u8(connack.reason.to_v3_connack()),
        ProtocolVersion::V5 => {
            s.put_u8(connack.reason.as_u8());
            put_properties(s, &connack.properties);
        }
    }
}
