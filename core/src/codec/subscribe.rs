//! SUBSCRIBE (3.8) and UNSUBSCRIBE (3.10). Topic filters are checked for UTF-8 here;
//! their syntax is the session's business, since a bad filter fails only its own
//! SUBACK entry (0x8F), not the packet.

use super::ack::packet_id;
use super::property::{decode_subscribe_properties, decode_user_properties, UserOnly};
use super::read::Reader;
use super::write::{put_properties, Sink};
use super::{DecodeError, EncodeError};
use crate::limits::SUBSCRIPTION_IDENTIFIER_MAX;
use crate::packet::{
    ProtocolVersion, QoS, RetainHandling, Subscribe, SubscribeProperties, Subscription,
    SubscriptionOptions, Unsubscribe,
};

const NO_LOCAL: u8 = 0b0000_0100;
const RETAIN_AS_PUBLISHED: u8 = 0b0000_1000;
const RETAIN_HANDLING_SHIFT: u8 = 4;

fn decode_options(byte: u8, version: ProtocolVersion) -> Result<SubscriptionOptions, DecodeError> {
    let reserved = match version {
        ProtocolVersion::V311 => 0b1111_1100,
        ProtocolVersion::V5 => 0b1100_0000,
    };
    if byte & reserved != 0 {
        return Err(DecodeError::Malformed(
            "reserved subscription option bits set",
        ));
    }
    let qos = QoS::from_u8(byte & 0b11).ok_or(DecodeError::Malformed("subscription with QoS 3"))?;
    let retain_handling = match (byte >> RETAIN_HANDLING_SHIFT) & 0b11 {
        0 => RetainHandling::OnSubscribe,
        1 => RetainHandling::OnNewSubscribe,
        2 => RetainHandling::Never,
        _ => return Err(DecodeError::Protocol("retain handling 3")),
    };
    Ok(SubscriptionOptions {
        qos,
        no_local: byte & NO_LOCAL != 0,
        retain_as_published: byte & RETAIN_AS_PUBLISHED != 0,
        retain_handling,
    })
}

fn encode_options(options: &SubscriptionOptions, version: ProtocolVersion) -> u8 {
    let mut byte = options.qos.as_u8();
    if version == ProtocolVersion::V5 {
        if options.no_local {
            byte |= NO_LOCAL;
        }
        if options.retain_as_published {
            byte |= RETAIN_AS_PUBLISHED;
        }
        byte |= (options.retain_handling as u8) << RETAIN_HANDLING_SHIFT;
    }
    byte
}

pub(crate) fn decode_subscribe(
    r: &mut Reader,
    version: ProtocolVersion,
) -> Result<Subscribe, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = match version {
        ProtocolVersion::V5 => decode_subscribe_properties(r)?,
        ProtocolVersion::V311 => SubscribeProperties::default(),
    };
    let mut subscriptions = Vec::new();
    while !r.is_empty() {
        let filter = r.string()?;
        let options = decode_options(r.u8()?, version)?;
        subscriptions.push(Subscription { filter, options });
    }
    if subscriptions.is_empty() {
        return Err(DecodeError::Protocol("SUBSCRIBE without topic filters"));
    }
    Ok(Subscribe {
        packet_id,
        subscriptions,
        properties,
    })
}

pub(crate) fn validate_subscribe(subscribe: &Subscribe) -> Result<(), EncodeError> {
    if subscribe.subscriptions.is_empty() {
        return Err(EncodeError::Invalid("SUBSCRIBE without topic filters"));
    }
    if subscribe
        .properties
        .subscription_identifier
        .is_some_and(|id| id.get() > SUBSCRIPTION_IDENTIFIER_MAX)
    {
        return Err(EncodeError::Invalid(
            "subscription identifier over 268,435,455",
        ));
    }
    Ok(())
}

pub(crate) fn emit_subscribe<S: Sink>(subscribe: &Subscribe, version: ProtocolVersion, s: &mut S) {
    s.put_u16(subscribe.packet_id.get());
    if version == ProtocolVersion::V5 {
        put_properties(s, &subscribe.properties);
    }
    for subscription in &subscribe.subscriptions {
        s.put_prefixed(subscription.filter.as_bytes());
        s.put_u8(encode_options(&subscription.options, version));
    }
}

pub(crate) fn decode_unsubscribe(
    r: &mut Reader,
    version: ProtocolVersion,
) -> Result<Unsubscribe, DecodeError> {
    let packet_id = packet_id(r)?;
    let user = match version {
        ProtocolVersion::V5 => decode_user_properties(r)?,
        ProtocolVersion::V311 => Vec::new(),
    };
    let mut filters = Vec::new();
    while !r.is_empty() {
        filters.push(r.string()?);
    }
    if filters.is_empty() {
        return Err(DecodeError::Protocol("UNSUBSCRIBE without topic filters"));
    }
    Ok(Unsubscribe {
        packet_id,
        filters,
        user,
    })
}

pub(crate) fn emit_unsubscribe<S: Sink>(
    unsubscribe: &Unsubscribe,
    version: ProtocolVersion,
    s: &mut S,
) {
    s.put_u16(unsubscribe.packet_id.get());
    if version == ProtocolVersion::V5 {
        put_properties(s, &UserOnly(&unsubscribe.user));
    }
    for filter in &unsubscribe.filters {
        s.put_prefixed(filter.as_bytes());
    }
}
