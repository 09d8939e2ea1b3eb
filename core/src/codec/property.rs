//! MQTT 5 properties (2.2.2): decoding with the rules on duplicates and values, one
//! property set per packet kind, and their encoding.
//!
//! Each packet kind has its own struct in [`crate::packet`], so a property a packet may
//! not carry cannot be encoded, and on decoding it is a protocol error.

use std::num::{NonZeroU16, NonZeroU32};

use bytes::Bytes;
use bytestring::ByteString;

use super::read::Reader;
use super::write::{PropertySet, Sink};
use super::DecodeError;
use crate::packet::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    PayloadFormat, PublishProperties, QoS, SubscribeProperties, UserProperty, WillProperties,
};

const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
const CONTENT_TYPE: u8 = 0x03;
const RESPONSE_TOPIC: u8 = 0x08;
const CORRELATION_DATA: u8 = 0x09;
const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
const SERVER_KEEP_ALIVE: u8 = 0x13;
const AUTHENTICATION_METHOD: u8 = 0x15;
const AUTHENTICATION_DATA: u8 = 0x16;
const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
const WILL_DELAY_INTERVAL: u8 = 0x18;
const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
const RESPONSE_INFORMATION: u8 = 0x1A;
const SERVER_REFERENCE: u8 = 0x1C;
const REASON_STRING: u8 = 0x1F;
const RECEIVE_MAXIMUM: u8 = 0x21;
const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
const TOPIC_ALIAS: u8 = 0x23;
const MAXIMUM_QOS: u8 = 0x24;
const RETAIN_AVAILABLE: u8 = 0x25;
const USER_PROPERTY: u8 = 0x26;
const MAXIMUM_PACKET_SIZE: u8 = 0x27;
const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;

/// One decoded property, its value already checked against the spec's range.
#[derive(Debug)]
pub(crate) enum Property {
    PayloadFormat(PayloadFormat),
    MessageExpiryInterval(u32),
    ContentType(ByteString),
    ResponseTopic(ByteString),
    CorrelationData(Bytes),
    SubscriptionIdentifier(NonZeroU32),
    SessionExpiryInterval(u32),
    AssignedClientIdentifier(ByteString),
    ServerKeepAlive(u16),
    AuthenticationMethod(ByteString),
    AuthenticationData(Bytes),
    RequestProblemInformation(bool),
    WillDelayInterval(u32),
    RequestResponseInformation(bool),
    ResponseInformation(ByteString),
    ServerReference(ByteString),
    ReasonString(ByteString),
    ReceiveMaximum(NonZeroU16),
    TopicAliasMaximum(u16),
    TopicAlias(NonZeroU16),
    MaximumQoS(QoS),
    RetainAvailable(bool),
    User(UserProperty),
    MaximumPacketSize(NonZeroU32),
    WildcardSubscriptionAvailable(bool),
    SubscriptionIdentifiersAvailable(bool),
    SharedSubscriptionAvailable(bool),
}

fn flag(r: &mut Reader, what: &'static str) -> Result<bool, DecodeError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::Protocol(what)),
    }
}

fn read_property(id: u32, r: &mut Reader) -> Result<Property, DecodeError> {
    let id = u8::try_from(id).map_err(|_| DecodeError::Malformed("unknown property identifier"))?;
    Ok(match id {
        PAYLOAD_FORMAT_INDICATOR => Property::PayloadFormat(match r.u8()? {
            0 => PayloadFormat::Unspecified,
            1 => PayloadFormat::Utf8,
            _ => return Err(DecodeError::Protocol("payload format indicator not 0 or 1")),
        }),
        MESSAGE_EXPIRY_INTERVAL => Property::MessageExpiryInterval(r.u32()?),
        CONTENT_TYPE => Property::ContentType(r.string()?),
        RESPONSE_TOPIC => Property::ResponseTopic(r.string()?),
        CORRELATION_DATA => Property::CorrelationData(r.binary()?),
        SUBSCRIPTION_IDENTIFIER => Property::SubscriptionIdentifier(
            NonZeroU32::new(r.varint()?)
                .ok_or(DecodeError::Protocol("subscription identifier 0"))?,
        ),
        SESSION_EXPIRY_INTERVAL => Property::SessionExpiryInterval(r.u32()?),
        ASSIGNED_CLIENT_IDENTIFIER => Property::AssignedClientIdentifier(r.string()?),
        SERVER_KEEP_ALIVE => Property::ServerKeepAlive(r.u16()?),
        AUTHENTICATION_METHOD => Property::AuthenticationMethod(r.string()?),
        AUTHENTICATION_DATA => Property::AuthenticationData(r.binary()?),
        REQUEST_PROBLEM_INFORMATION => {
            Property::RequestProblemInformation(flag(r, "request problem information not 0 or 1")?)
        }
        WILL_DELAY_INTERVAL => Property::WillDelayInterval(r.u32()?),
        REQUEST_RESPONSE_INFORMATION => Property::RequestResponseInformation(flag(
            r,
            "request response information not 0 or 1",
        )?),
        RESPONSE_INFORMATION => Property::ResponseInformation(r.string()?),
        SERVER_REFERENCE => Property::ServerReference(r.string()?),
        REASON_STRING => Property::ReasonString(r.string()?),
        RECEIVE_MAXIMUM => Property::ReceiveMaximum(
            NonZeroU16::new(r.u16()?).ok_or(DecodeError::Protocol("receive maximum 0"))?,
        ),
        TOPIC_ALIAS_MAXIMUM => Property::TopicAliasMaximum(r.u16()?),
        TOPIC_ALIAS => Property::TopicAlias(
            NonZeroU16::new(r.u16()?).ok_or(DecodeError::TopicAliasInvalid("topic alias 0"))?,
        ),
        MAXIMUM_QOS => Property::MaximumQoS(match r.u8()? {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            _ => return Err(DecodeError::Protocol("maximum QoS not 0 or 1")),
        }),
        RETAIN_AVAILABLE => Property::RetainAvailable(flag(r, "retain available not 0 or 1")?),
        USER_PROPERTY => Property::User(UserProperty {
            name: r.string()?,
            value: r.string()?,
        }),
        MAXIMUM_PACKET_SIZE => Property::MaximumPacketSize(
            NonZeroU32::new(r.u32()?).ok_or(DecodeError::Protocol("maximum packet size 0"))?,
        ),
        WILDCARD_SUBSCRIPTION_AVAILABLE => Property::WildcardSubscriptionAvailable(flag(
            r,
            "wildcard subscription available not 0 or 1",
        )?),
        SUBSCRIPTION_IDENTIFIER_AVAILABLE => Property::SubscriptionIdentifiersAvailable(flag(
            r,
            "subscription identifier available not 0 or 1",
        )?),
        SHARED_SUBSCRIPTION_AVAILABLE => Property::SharedSubscriptionAvailable(flag(
            r,
            "shared subscription available not 0 or 1",
        )?),
        _ => return Err(DecodeError::Malformed("unknown property identifier")),
    })
}

/// Reads a property length and the properties it spans, handing each to `apply`.
///
/// A property other than User Property appearing twice is a protocol error; the
/// Subscription Identifier may repeat in PUBLISH only, which the PUBLISH decoder
/// allows and every other one refuses.
fn decode_properties(
    r: &mut Reader,
    mut apply: impl FnMut(Property) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    let len = r.varint()? as usize;
    let mut r = Reader::new(r.take(len, "property length longer than the packet")?);
    let mut seen: u64 = 0;
    while !r.is_empty() {
        let id = r.varint()?;
        if id != u32::from(USER_PROPERTY) && id != u32::from(SUBSCRIPTION_IDENTIFIER) {
            let bit = 1u64.checked_shl(id).unwrap_or(0);
            if seen & bit != 0 {
                return Err(DecodeError::Protocol("property appears twice"));
            }
            seen |= bit;
        }
        apply(read_property(id, &mut r)?)?;
    }
    Ok(())
}

fn not_allowed(_: Property) -> Result<(), DecodeError> {
    Err(DecodeError::Protocol("property not allowed in this packet"))
}

fn once<T>(slot: &mut Option<T>, value: T) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::Protocol("property appears twice"));
    }
    *slot = Some(value);
    Ok(())
}

pub(crate) fn decode_connect_properties(r: &mut Reader) -> Result<ConnectProperties, DecodeError> {
    let mut p = ConnectProperties::default();
    decode_properties(r, |property| {
        match property {
            Property::SessionExpiryInterval(v) => p.session_expiry_interval_s = Some(v),
            Property::ReceiveMaximum(v) => p.receive_maximum = Some(v),
            Property::MaximumPacketSize(v) => p.maximum_packet_size = Some(v),
            Property::TopicAliasMaximum(v) => p.topic_alias_maximum = Some(v),
            Property::RequestResponseInformation(v) => p.request_response_information = Some(v),
            Property::RequestProblemInformation(v) => p.request_problem_information = Some(v),
            Property::AuthenticationMethod(v) => p.authentication_method = Some(v),
            Property::AuthenticationData(v) => p.authentication_data = Some(v),
            Property::User(v) => p.user.push(v),
            other => return not_allowed(other),
        }
        Ok(())
    })?;
    if p.authentication_data.is_some() && p.authentication_method.is_none() {
        return Err(DecodeError::Protocol(
            "authentication data without authentication method",
        ));
    }
    Ok(p)
}

pub(crate) fn decode_will_properties(r: &mut Reader) -> Result<WillProperties, DecodeError> {
    let mut p = WillProperties::default();
    decode_properties(r, |property| {
        match property {
            Property::WillDelayInterval(v) => p.will_delay_interval_s = Some(v),
            Property::PayloadFormat(v) => p.payload_format = Some(v),
            Property::MessageExpiryInterval(v) => p.message_expiry_interval_s = Some(v),
            Property::ContentType(v) => p.content_type = Some(v),
            Property::ResponseTopic(v) => p.response_topic = Some(v),
            Property::CorrelationData(v) => p.correlation_data = Some(v),
            Property::User(v) => p.user.push(v),
            other => return not_allowed(other),
        }
        Ok(())
    })?;
    Ok(p)
}

pub(crate) fn decode_connack_properties(r: &mut Reader) -> Result<ConnAckProperties, DecodeError> {
    let mut p = ConnAckProperties::default();
    decode_properties(r, |property| {
        match property {
            Property::SessionExpiryInterval(v) => p.session_expiry_interval_s = Some(v),
            Property::ReceiveMaximum(v) => p.receive_maximum = Some(v),
            Property::MaximumQoS(v) => p.maximum_qos = Some(v),
            Property::RetainAvailable(v) => p.retain_available = Some(v),
            Property::MaximumPacketSize(v) => p.maximum_packet_size = Some(v),
            Property::AssignedClientIdentifier(v) => p.assigned_client_identifier = Some(v),
            Property::TopicAliasMaximum(v) => p.topic_alias_maximum = Some(v),
            Property::ReasonString(v) => p.reason_string = Some(v),
            Property::User(v) => p.user.push(v),
            Property::WildcardSubscriptionAvailable(v) => {
                p.wildcard_subscription_available = Some(v)
            }
            Property::SubscriptionIdentifiersAvailable(v) => {
                p.subscription_identifiers_available = Some(v)
            }
            Property::SharedSubscriptionAvailable(v) => p.shared_subscription_available = Some(v),
            Property::ServerKeepAlive(v) => p.server_keep_alive_s = Some(v),
            Property::ResponseInformation(v) => p.response_information = Some(v),
            Property::ServerReference(v) => p.server_reference = Some(v),
            Property::AuthenticationMethod(v) => p.authentication_method = Some(v),
            Property::AuthenticationData(v) => p.authentication_data = Some(v),
            other => return not_allowed(other),
        }
        Ok(())
    })?;
    Ok(p)
}

pub(crate) fn decode_publish_properties(r: &mut Reader) -> Result<PublishProperties, DecodeError> {
    let mut p = PublishProperties::default();
    decode_properties(r, |property| {
        match property {
            Property::PayloadFormat(v) => p.payload_format = Some(v),
            Property::MessageExpiryInterval(v) => p.message_expiry_interval_s = Some(v),
            Property::TopicAlias(v) => p.topic_alias = Some(v),
            Property::ResponseTopic(v) => p.response_topic = Some(v),
            Property::CorrelationData(v) => p.correlation_data = Some(v),
            Property::User(v) => p.user.push(v),
            Property::SubscriptionIdentifier(v) => p.subscription_identifiers.push(v),
            Property::ContentType(v) => p.content_type = Some(v),
            other => return not_allowed(other),
        }
        Ok(())
    })?;
    Ok(p)
}

pub(crate) fn decode_ack_properties(r: &mut Reader) -> Result<AckProperties, DecodeError> {
    let mut p = AckProperties::default();
    decode_properties(r, |property| {
        match property {
            Property::ReasonString(v) => p.reason_string = Some(v),
            Property::User(v) => p.user.push(v),
            other => return not_allowed(other),
        }
        Ok(())
    })?;
    Ok(p)
}

pub(crate) fn decode_subscribe_properties(
    r: &mut Reader,
) -> Result<SubscribeProperties, DecodeError> {
    let mut p = SubscribeProperties::default();
    decode_properties(r, |property| {
        match property {
            Property::SubscriptionIdentifier(v) => once(&mut p.subscription_identifier, v)?,
            Property::User(v) => p.user.push(v),
            other => return not_allowed(other),
        }
        Ok(())
    })?;
    Ok(p)
}

pub(crate) fn decode_user_properties(r: &mut Reader) -> Result<Vec<UserProperty>, DecodeError> {
    let mut user = Vec::new();
    decode_properties(r, |property| match property {
        Property::User(v) => {
            user.push(v);
            Ok(())
        }
        other => not_allowed(other),
    })?;
    Ok(user)
}

pub(crate) fn decode_disconnect_properties(
    r: &mut Reader,
) -> Result<DisconnectProperties, DecodeError> {
    let mut p = DisconnectProperties::default();
    decode_properties(r, |property| {
        match property {
            Property::SessionExpiryInterval(v) => p.session_expiry_interval_s = Some(v),
            Property::ReasonString(v) => p.reason_string = Some(v),
            Property::User(v) => p.user.push(v),
            Property::ServerReference(v) => p.server_reference = Some(v),
            other => return not_allowed(other),
        }
        Ok(())
    })?;
    Ok(p)
}

pub(crate) fn decode_auth_properties(r: &mut Reader) -> Result<AuthProperties, DecodeError> {
    let mut p = AuthProperties::default();
    decode_properties(r, |property| {
        match property {
            Property::AuthenticationMethod(v) => p.authentication_method = Some(v),
            Property::AuthenticationData(v) => p.authentication_data = Some(v),
            Property::ReasonString(v) => p.reason_string = Some(v),
            Property::User(v) => p.user.push(v),
            other => return not_allowed(other),
        }
        Ok(())
    })?;
    Ok(p)
}

// Encoding: one line per property, skipped when unset.

fn put_u8<S: Sink>(s: &mut S, id: u8, value: Option<u8>) {
    if let Some(value) = value {
        s.put_u8(id);
        s.put_u8(value);
    }
}

fn put_flag<S: Sink>(s: &mut S, id: u8, value: Option<bool>) {
    put_u8(s, id, value.map(u8::from));
}

fn put_u16<S: Sink>(s: &mut S, id: u8, value: Option<u16>) {
    if let Some(value) = value {
        s.put_u8(id);
        s.put_u16(value);
    }
}

fn put_u32<S: Sink>(s: &mut S, id: u8, value: Option<u32>) {
    if let Some(value) = value {
        s.put_u8(id);
        s.put_u32(value);
    }
}

fn put_bytes<S: Sink>(s: &mut S, id: u8, value: Option<&[u8]>) {
    if let Some(value) = value {
        s.put_u8(id);
        s.put_prefixed(value);
    }
}

fn put_string<S: Sink>(s: &mut S, id: u8, value: &Option<ByteString>) {
    put_bytes(s, id, value.as_ref().map(|v| v.as_bytes().as_ref()));
}

fn put_binary<S: Sink>(s: &mut S, id: u8, value: &Option<Bytes>) {
    put_bytes(s, id, value.as_deref());
}

fn put_users<S: Sink>(s: &mut S, user: &[UserProperty]) {
    for property in user {
        s.put_u8(USER_PROPERTY);
        s.put_prefixed(property.name.as_bytes());
        s.put_prefixed(property.value.as_bytes());
    }
}

impl PropertySet for ConnectProperties {
    fn emit_properties<S: Sink>(&self, s: &mut S) {
        put_u32(s, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval_s);
        put_u16(
            s,
            RECEIVE_MAXIMUM,
            self.receive_maximum.map(NonZeroU16::get),
        );
        put_u32(
            s,
            MAXIMUM_PACKET_SIZE,
            self.maximum_packet_size.map(NonZeroU32::get),
        );
        put_u16(s, TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        put_flag(
            s,
            REQUEST_RESPONSE_INFORMATION,
            self.request_response_information,
        );
        put_flag(
            s,
            REQUEST_PROBLEM_INFORMATION,
            self.request_problem_information,
        );
        put_string(s, AUTHENTICATION_METHOD, &self.authentication_method);
        put_binary(s, AUTHENTICATION_DATA, &self.authentication_data);
        put_users(s, &self.user);
    }
}

impl PropertySet for WillProperties {
    fn emit_properties<S: Sink>(&self, s: &mut S) {
        put_u32(s, WILL_DELAY_INTERVAL, self.will_delay_interval_s);
        put_u8(
            s,
            PAYLOAD_FORMAT_INDICATOR,
            self.payload_format.map(|f| f as u8),
        );
        put_u32(s, MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval_s);
        put_string(s, CONTENT_TYPE, &self.content_type);
        put_string(s, RESPONSE_TOPIC, &self.response_topic);
        put_binary(s, CORRELATION_DATA, &self.correlation_data);
        put_users(s, &self.user);
    }
}

impl PropertySet for ConnAckProperties {
    fn emit_properties<S: Sink>(&self, s: &mut S) {
        put_u32(s, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval_s);
        put_u16(
            s,
            RECEIVE_MAXIMUM,
            self.receive_maximum.map(NonZeroU16::get),
        );
        put_u8(s, MAXIMUM_QOS, self.maximum_qos.map(QoS::as_u8));
        put_flag(s, RETAIN_AVAILABLE, self.retain_available);
        put_u32(
            s,
            MAXIMUM_PACKET_SIZE,
            self.maximum_packet_size.map(NonZeroU32::get),
        );
        put_string(
            s,
            ASSIGNED_CLIENT_IDENTIFIER,
            &self.assigned_client_identifier,
        );
        put_u16(s, TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        put_string(s, REASON_STRING, &self.reason_string);
        put_users(s, &self.user);
        put_flag(
            s,
            WILDCARD_SUBSCRIPTION_AVAILABLE,
            self.wildcard_subscription_available,
        );
        put_flag(
            s,
            SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            self.subscription_identifiers_available,
        );
        put_flag(
            s,
            SHARED_SUBSCRIPTION_AVAILABLE,
            self.shared_subscription_available,
        );
        put_u16(s, SERVER_KEEP_ALIVE, self.server_keep_alive_s);
        put_string(s, RESPONSE_INFORMATION, &self.response_information);
        put_string(s, SERVER_REFERENCE, &self.server_reference);
        put_string(s, AUTHENTICATION_METHOD, &self.authentication_method);
        put_binary(s, AUTHENTICATION_DATA, &self.authentication_data);
    }
}

impl PropertySet for PublishProperties {
    fn emit_properties<S: Sink>(&self, s: &mut S) {
        put_u8(
            s,
            PAYLOAD_FORMAT_INDICATOR,
            self.payload_format.map(|f| f as u8),
        );
        put_u32(s, MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval_s);
        put_u16(s, TOPIC_ALIAS, self.topic_alias.map(NonZeroU16::get));
        put_string(s, RESPONSE_TOPIC, &self.response_topic);
        put_binary(s, CORRELATION_DATA, &self.correlation_data);
        put_users(s, &self.user);
        for id in &self.subscription_identifiers {
            s.put_u8(SUBSCRIPTION_IDENTIFIER);
            s.put_varint(id.get() as usize);
        }
        put_string(s, CONTENT_TYPE, &self.content_type);
    }
}

impl PropertySet for AckProperties {
    fn emit_properties<S: Sink>(&self, s: &mut S) {
        put_string(s, REASON_STRING, &self.reason_string);
        put_users(s, &self.user);
    }
}

impl PropertySet for SubscribeProperties {
    fn emit_properties<S: Sink>(&self, s: &mut S) {
        if let Some(id) = self.subscription_identifier {
            s.put_u8(SUBSCRIPTION_IDENTIFIER);
            s.put_varint(id.get() as usize);
        }
        put_users(s, &self.user);
    }
}

/// UNSUBSCRIBE carries only user properties.
pub(crate) struct UserOnly<'a>(pub(crate) &'a [UserProperty]);

impl PropertySet for UserOnly<'_> {
    fn emit_properties<S: Sink>(&self, s: &mut S) {
        put_users(s, self.0);
    }
}

impl PropertySet for DisconnectProperties {
    fn emit_properties<S: Sink>(&self, s: &mut S) {
        put_u32(s, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval_s);
        put_string(s, REASON_STRING, &self.reason_string);
        put_users(s, &self.user);
        put_string(s, SERVER_REFERENCE, &self.server_reference);
    }
}

impl PropertySet for AuthProperties {
    fn emit_properties<S: Sink>(&self, s: &mut S) {
        put_string(s, AUTHENTICATION_METHOD, &self.authentication_method);
        put_binary(s, AUTHENTICATION_DATA, &self.authentication_data);
        put_string(s, REASON_STRING, &self.reason_string);
        put_users(s, &self.user);
    }
}
