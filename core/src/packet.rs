//! The MQTT 3.1.1 / 5.0 packet model.
//!
//! One type serves both protocol versions: fields only MQTT 5 can carry (properties,
//! most reason codes) are left at their defaults for MQTT 3.1.1 and are not encoded
//! there. Strings are [`ByteString`] and binary fields [`Bytes`]: a decoded packet's
//! topic and payload are slices of the read buffer, not copies.
//!
//! Units are part of the names (`keep_alive_s`, `session_expiry_interval_s`).

use std::num::{NonZeroU16, NonZeroU32};

use bytes::Bytes;
pub use bytestring::ByteString;

use crate::reason::ReasonCode;

/// The protocol level of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProtocolVersion {
    /// MQTT 3.1.1, protocol level 4.
    V311,
    /// MQTT 5.0, protocol level 5.
    V5,
}

impl ProtocolVersion {
    /// The protocol level byte of CONNECT.
    pub const fn level(self) -> u8 {
        match self {
            ProtocolVersion::V311 => 4,
            ProtocolVersion::V5 => 5,
        }
    }
}

/// Quality of service of a message or subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum QoS {
    #[default]
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS for its two-bit value; 3 is not a QoS.
    pub const fn from_u8(value: u8) -> Option<QoS> {
        match value {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }

    pub const fn as_u8(self) -> u8 {
        self as u8
    }
}

/// A packet identifier: never zero (MQTT 2.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PacketId(pub NonZeroU16);

impl PacketId {
    pub const fn new(value: u16) -> Option<PacketId> {
        match NonZeroU16::new(value) {
            Some(id) => Some(PacketId(id)),
            None => None,
        }
    }

    pub const fn get(self) -> u16 {
        self.0.get()
    }
}

/// A user property (MQTT 5): a name/value pair that may repeat, order preserved.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UserProperty {
    pub name: ByteString,
    pub value: ByteString,
}

/// Payload format indicator (MQTT 5, 3.3.2.3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PayloadFormat {
    Unspecified = 0,
    Utf8 = 1,
}

/// Every packet of MQTT 3.1.1 and 5.0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet {
    Connect(Box<Connect>),
    ConnAck(Box<ConnAck>),
    Publish(Publish),
    PubAck(PubResponse),
    PubRec(PubResponse),
    PubRel(PubResponse),
    PubComp(PubResponse),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    /// MQTT 5 only.
    Auth(Auth),
}

impl Packet {
    /// The control packet type (the high nibble of the first byte).
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Connect(_) => PacketType::Connect,
            Packet::ConnAck(_) => PacketType::ConnAck,
            Packet::Publish(_) => PacketType::Publish,
            Packet::PubAck(_) => PacketType::PubAck,
            Packet::PubRec(_) => PacketType::PubRec,
            Packet::PubRel(_) => PacketType::PubRel,
            Packet::PubComp(_) => PacketType::PubComp,
            Packet::Subscribe(_) => PacketType::Subscribe,
            Packet::SubAck(_) => PacketType::SubAck,
            Packet::Unsubscribe(_) => PacketType::Unsubscribe,
            Packet::UnsubAck(_) => PacketType::UnsubAck,
            Packet::PingReq => PacketType::PingReq,
            Packet::PingResp => PacketType::PingResp,
            Packet::Disconnect(_) => PacketType::Disconnect,
            Packet::Auth(_) => PacketType::Auth,
        }
    }
}

/// MQTT control packet types (2.1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PacketType {
    Connect = 1,
    ConnAck = 2,
    Publish = 3,
    PubAck = 4,
    PubRec = 5,
    PubRel = 6,
    PubComp = 7,
    Subscribe = 8,
    SubAck = 9,
    Unsubscribe = 10,
    UnsubAck = 11,
    PingReq = 12,
    PingResp = 13,
    Disconnect = 14,
    Auth = 15,
}

impl PacketType {
    /// The type of a high nibble; 0 is reserved.
    pub const fn from_nibble(value: u8) -> Option<PacketType> {
        Some(match value {
            1 => PacketType::Connect,
            2 => PacketType::ConnAck,
            3 => PacketType::Publish,
            4 => PacketType::PubAck,
            5 => PacketType::PubRec,
            6 => PacketType::PubRel,
            7 => PacketType::PubComp,
            8 => PacketType::Subscribe,
            9 => PacketType::SubAck,
            10 => PacketType::Unsubscribe,
            11 => PacketType::UnsubAck,
            12 => PacketType::PingReq,
            13 => PacketType::PingResp,
            14 => PacketType::Disconnect,
            15 => PacketType::Auth,
            _ => return None,
        })
    }
}

/// CONNECT (3.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connect {
    pub protocol: ProtocolVersion,
    /// Clean Start (MQTT 5) / Clean Session (MQTT 3.1.1).
    pub clean_start: bool,
    pub keep_alive_s: u16,
    /// May be empty: the server then assigns one (MQTT 5) or, with clean session,
    /// accepts it (MQTT 3.1.1).
    pub client_id: ByteString,
    pub will: Option<Will>,
    pub username: Option<ByteString>,
    pub password: Option<Bytes>,
    pub properties: ConnectProperties,
}

/// CONNECT properties (MQTT 5, 3.1.2.11).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectProperties {
    pub session_expiry_interval_s: Option<u32>,
    pub receive_maximum: Option<NonZeroU16>,
    pub maximum_packet_size: Option<NonZeroU32>,
    pub topic_alias_maximum: Option<u16>,
    pub request_response_information: Option<bool>,
    pub request_problem_information: Option<bool>,
    pub authentication_method: Option<ByteString>,
    pub authentication_data: Option<Bytes>,
    pub user: Vec<UserProperty>,
}

/// The will message of a CONNECT (3.1.3.2 - 3.1.3.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Will {
    pub topic: ByteString,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    pub properties: WillProperties,
}

/// Will properties (MQTT 5, 3.1.3.2).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WillProperties {
    pub will_delay_interval_s: Option<u32>,
    pub payload_format: Option<PayloadFormat>,
    pub message_expiry_interval_s: Option<u32>,
    pub content_type: Option<ByteString>,
    pub response_topic: Option<ByteString>,
    pub correlation_data: Option<Bytes>,
    pub user: Vec<UserProperty>,
}

/// CONNACK (3.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnAck {
    pub session_present: bool,
    /// MQTT 3.1.1 return codes are mapped to the MQTT 5 code of the same meaning
    /// ([`ReasonCode::from_v3_connack`]).
    pub reason: ReasonCode,
    pub properties: ConnAckProperties,
}

/// CONNACK properties (MQTT 5, 3.2.2.3).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnAckProperties {
    pub session_expiry_interval_s: Option<u32>,
    pub receive_maximum: Option<NonZeroU16>,
    pub maximum_qos: Option<QoS>,
    pub retain_available: Option<bool>,
    pub maximum_packet_size: Option<NonZeroU32>,
    pub assigned_client_identifier: Option<ByteString>,
    pub topic_alias_maximum: Option<u16>,
    pub reason_string: Option<ByteString>,
    pub user: Vec<UserProperty>,
    pub wildcard_subscription_available: Option<bool>,
    pub subscription_identifiers_available: Option<bool>,
    pub shared_subscription_available: Option<bool>,
    pub server_keep_alive_s: Option<u16>,
    pub response_information: Option<ByteString>,
    pub server_reference: Option<ByteString>,
    pub authentication_method: Option<ByteString>,
    pub authentication_data: Option<Bytes>,
}

/// PUBLISH (3.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// Empty only in MQTT 5 with a topic alias that names a topic set before.
    pub topic: ByteString,
    /// Present exactly when `qos` is 1 or 2.
    pub packet_id: Option<PacketId>,
    pub properties: LazyProperties,
    pub payload: Bytes,
}

/// PUBLISH properties (MQTT 5, 3.3.2.3).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublishProperties {
    pub payload_format: Option<PayloadFormat>,
    pub message_expiry_interval_s: Option<u32>,
    pub topic_alias: Option<NonZeroU16>,
    pub response_topic: Option<ByteString>,
    pub correlation_data: Option<Bytes>,
    pub user: Vec<UserProperty>,
    /// Server to client only; one per matching subscription that had an identifier.
    pub subscription_identifiers: Vec<NonZeroU32>,
    pub content_type: Option<ByteString>,
}

impl PublishProperties {
    /// True when no property is set: the MQTT 5 property length is then 0.
    pub fn is_empty(&self) -> bool {
        // Field by field: comparing with a default built (and dropped) for the
        // purpose cost more than the rest of an outbound PUBLISH's header.
        let PublishProperties {
            payload_format,
            message_expiry_interval_s,
            topic_alias,
            response_topic,
            correlation_data,
            user,
            subscription_identifiers,
            content_type,
        } = self;
        payload_format.is_none()
            && message_expiry_interval_s.is_none()
            && topic_alias.is_none()
            && response_topic.is_none()
            && correlation_data.is_none()
            && user.is_empty()
            && subscription_identifiers.is_empty()
            && content_type.is_none()
    }
}

/// The properties of a PUBLISH behind one pointer, null when there are none.
///
/// Most PUBLISH packets carry no properties, and a PUBLISH moves by value from the
/// decoder through routing into the routed message: with the properties inline it was
/// about 250 bytes, and those moves were a tenth of the broker's instructions per
/// message. Reading goes through `Deref` (an empty set when absent); writing through
/// [`LazyProperties::make_mut`], which allocates then.
#[derive(Clone, Default)]
pub struct LazyProperties(Option<Box<PublishProperties>>);

/// What an absent set of properties reads as.
static NO_PROPERTIES: PublishProperties = PublishProperties {
    payload_format: None,
    message_expiry_interval_s: None,
    topic_alias: None,
    response_topic: None,
    correlation_data: None,
    user: Vec::new(),
    subscription_identifiers: Vec::new(),
    content_type: None,
};

impl LazyProperties {
    /// No properties; allocates nothing.
    pub const fn none() -> LazyProperties {
        LazyProperties(None)
    }

    /// The properties to change, allocated on first use.
    pub fn make_mut(&mut self) -> &mut PublishProperties {
        self.0.get_or_insert_with(Box::default)
    }

    /// Drops an allocation that holds no property any more.
    pub fn shrink(&mut self) {
        if self.0.as_deref().is_some_and(PublishProperties::is_empty) {
            self.0 = None;
        }
    }

    /// The properties by value.
    pub fn into_inner(self) -> PublishProperties {
        self.0.map(|boxed| *boxed).unwrap_or_default()
    }
}

impl From<PublishProperties> for LazyProperties {
    fn from(properties: PublishProperties) -> LazyProperties {
        if properties.is_empty() {
            LazyProperties(None)
        } else {
            LazyProperties(Some(Box::new(properties)))
        }
    }
}

impl std::ops::Deref for LazyProperties {
    type Target = PublishProperties;

    fn deref(&self) -> &PublishProperties {
        self.0.as_deref().unwrap_or(&NO_PROPERTIES)
    }
}

impl PartialEq for LazyProperties {
    fn eq(&self, other: &LazyProperties) -> bool {
        **self == **other
    }
}

impl Eq for LazyProperties {}

impl std::fmt::Debug for LazyProperties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP (3.4 - 3.7): a packet id and a reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PubResponse {
    pub packet_id: PacketId,
    pub reason: ReasonCode,
    pub properties: AckProperties,
}

impl PubResponse {
    /// A successful response with no properties: the common, smallest form.
    pub fn success(packet_id: PacketId) -> PubResponse {
        PubResponse {
            packet_id,
            reason: ReasonCode::Success,
            properties: AckProperties::default(),
        }
    }
}

/// The properties of PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AckProperties {
    pub reason_string: Option<ByteString>,
    pub user: Vec<UserProperty>,
}

impl AckProperties {
    pub fn is_empty(&self) -> bool {
        self.reason_string.is_none() && self.user.is_empty()
    }
}

/// How retained messages are sent when a subscription is made (MQTT 5, 3.8.3.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RetainHandling {
    /// Send retained messages at the time of the subscribe.
    #[default]
    OnSubscribe = 0,
    /// Send them only if the subscription did not exist before.
    OnNewSubscribe = 1,
    /// Do not send them.
    Never = 2,
}

/// Subscription options (3.8.3.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SubscriptionOptions {
    pub qos: QoS,
    /// MQTT 5: do not send this client its own publishes.
    pub no_local: bool,
    /// MQTT 5: keep the RETAIN flag of forwarded messages.
    pub retain_as_published: bool,
    pub retain_handling: RetainHandling,
}

/// One topic filter of a SUBSCRIBE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    pub filter: ByteString,
    pub options: SubscriptionOptions,
}

/// SUBSCRIBE (3.8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscribe {
    pub packet_id: PacketId,
    pub subscriptions: Vec<Subscription>,
    pub properties: SubscribeProperties,
}

/// SUBSCRIBE properties (MQTT 5, 3.8.2.1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubscribeProperties {
    pub subscription_identifier: Option<NonZeroU32>,
    pub user: Vec<UserProperty>,
}

/// SUBACK (3.9): one reason per filter, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubAck {
    pub packet_id: PacketId,
    pub reasons: Vec<ReasonCode>,
    pub properties: AckProperties,
}

/// UNSUBSCRIBE (3.10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsubscribe {
    pub packet_id: PacketId,
    pub filters: Vec<ByteString>,
    pub user: Vec<UserProperty>,
}

/// UNSUBACK (3.11). MQTT 3.1.1 carries no reasons: `reasons` is empty there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsubAck {
    pub packet_id: PacketId,
    pub reasons: Vec<ReasonCode>,
    pub properties: AckProperties,
}

/// DISCONNECT (3.14). MQTT 3.1.1 has no body: `reason` is `Success` there.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Disconnect {
    pub reason: ReasonCode,
    pub properties: DisconnectProperties,
}

/// DISCONNECT properties (MQTT 5, 3.14.2.2).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DisconnectProperties {
    pub session_expiry_interval_s: Option<u32>,
    pub reason_string: Option<ByteString>,
    pub user: Vec<UserProperty>,
    pub server_reference: Option<ByteString>,
}

impl DisconnectProperties {
    pub fn is_empty(&self) -> bool {
        self == &DisconnectProperties::default()
    }
}

/// AUTH (MQTT 5, 3.15).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Auth {
    pub reason: ReasonCode,
    pub properties: AuthProperties,
}

/// AUTH properties (MQTT 5, 3.15.2.2).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthProperties {
    pub authentication_method: Option<ByteString>,
    pub authentication_data: Option<Bytes>,
    pub reason_string: Option<ByteString>,
    pub user: Vec<UserProperty>,
}

impl AuthProperties {
    pub fn is_empty(&self) -> bool {
        self == &AuthProperties::default()
    }
}
