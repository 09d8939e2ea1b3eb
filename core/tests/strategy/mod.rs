//! Proptest strategies for valid packets, shared by `codec_props` and `codec_fuzz`.
//!
//! "Valid" means what the encoder accepts for the given protocol version and the
//! decoder gives back unchanged: for MQTT 3.1.1 only what 3.1.1 can express (no
//! properties, only the reason codes 3.1.1 has a byte for, no AUTH); for MQTT 5 every
//! property sometimes set, and reasons from the set the spec allows for each packet.
#![allow(dead_code)] // each test crate uses its own subset.

use std::num::{NonZeroU16, NonZeroU32};

use bytes::Bytes;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;
use ringmq_core::limits::SUBSCRIPTION_IDENTIFIER_MAX;
use ringmq_core::packet::{
    AckProperties, Auth, AuthProperties, ByteString, ConnAck, ConnAckProperties, Connect,
    ConnectProperties, Disconnect, DisconnectProperties, Packet, PacketId, PayloadFormat,
    ProtocolVersion, PubResponse, Publish, PublishProperties, QoS, RetainHandling, SubAck,
    Subscribe, SubscribeProperties, Subscription, SubscriptionOptions, UnsubAck, Unsubscribe,
    UserProperty, Will, WillProperties,
};
use ringmq_core::reason::{ReasonCode, ReasonKind};

/// Characters that make string handling interesting: multi-byte UTF-8, the largest
/// scalar, a noncharacter, separators. Never U+0000, which MQTT forbids.
const SPECIAL_CHARS: &[char] = &[
    '/',
    ' ',
    'é',
    'ß',
    '€',
    '中',
    '\u{7F}',
    '\u{80}',
    '\u{7FF}',
    '\u{800}',
    '\u{FFFF}',
    '\u{10000}',
    '\u{10FFFF}',
    '😀',
];

pub fn version() -> impl Strategy<Value = ProtocolVersion> {
    prop_oneof![Just(ProtocolVersion::V311), Just(ProtocolVersion::V5)]
}

/// Any char but U+0000, mostly ASCII so topics and names look like real ones.
fn text_char() -> impl Strategy<Value = char> {
    prop_oneof![
        6 => proptest::char::range('a', 'z'),
        2 => proptest::char::range('\u{1}', '\u{7F}'),
        1 => select(SPECIAL_CHARS),
        1 => any::<char>().prop_filter("no U+0000", |&c| c != '\0'),
    ]
}

/// A valid MQTT UTF-8 string of up to `max_chars` characters.
pub fn text(max_chars: usize) -> impl Strategy<Value = ByteString> {
    vec(text_char(), 0..=max_chars).prop_map(|chars| chars.into_iter().collect::<String>().into())
}

/// A valid topic name: non-empty, no wildcard, levels separated by `/`.
pub fn topic_name() -> impl Strategy<Value = ByteString> {
    let level_char = text_char().prop_filter("no wildcard", |&c| c != '+' && c != '#');
    vec(vec(level_char, 0..8), 1..5)
        .prop_map(|levels| {
            levels
                .into_iter()
                .map(|level| level.into_iter().collect::<String>())
                .collect::<Vec<_>>()
                .join("/")
        })
        .prop_filter("non-empty", |topic| !topic.is_empty())
        .prop_map(ByteString::from)
}

/// A topic filter as a client might send it; the codec does not check filter syntax,
/// so arbitrary strings are fair too.
pub fn topic_filter() -> impl Strategy<Value = ByteString> {
    prop_oneof![
        topic_name(),
        Just(ByteString::from_static("#")),
        Just(ByteString::from_static("+/status/#")),
        Just(ByteString::from_static("$share/group/devices/+/telemetry")),
        text(16),
    ]
}

pub fn binary(max_len: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..=max_len).prop_map(Bytes::from)
}

pub fn packet_id() -> impl Strategy<Value = PacketId> {
    prop_oneof![Just(1u16), Just(u16::MAX), 1u16..=u16::MAX,]
        .prop_map(|id| PacketId::new(id).unwrap_or(PacketId(NonZeroU16::MIN)))
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn non_zero_u16() -> impl Strategy<Value = NonZeroU16> {
    (1u16..=u16::MAX).prop_map(|v| NonZeroU16::new(v).unwrap_or(NonZeroU16::MIN))
}

fn non_zero_u32() -> impl Strategy<Value = NonZeroU32> {
    prop_oneof![Just(1u32), Just(u32::MAX), 1u32..=u32::MAX]
        .prop_map(|v| NonZeroU32::new(v).unwrap_or(NonZeroU32::MIN))
}

/// Subscription identifiers, with the bounds of each variable byte integer width.
pub fn subscription_identifier() -> impl Strategy<Value = NonZeroU32> {
    prop_oneof![
        select(
            &[
                1u32,
                127,
                128,
                16_383,
                16_384,
                2_097_151,
                2_097_152,
                SUBSCRIPTION_IDENTIFIER_MAX
            ][..]
        ),
        1u32..=SUBSCRIPTION_IDENTIFIER_MAX,
    ]
    .prop_map(|v| NonZeroU32::new(v).unwrap_or(NonZeroU32::MIN))
}

fn user_properties() -> impl Strategy<Value = Vec<UserProperty>> {
    vec(
        (text(8), text(12)).prop_map(|(name, value)| UserProperty { name, value }),
        0..4,
    )
}

fn payload_format() -> impl Strategy<Value = PayloadFormat> {
    prop_oneof![Just(PayloadFormat::Unspecified), Just(PayloadFormat::Utf8)]
}

/// A reason code the spec allows in a packet of `kind`.
pub fn reason(kind: ReasonKind) -> impl Strategy<Value = ReasonCode> {
    let allowed: Vec<ReasonCode> = ReasonCode::ALL
        .iter()
        .copied()
        .filter(|code| code.allowed_in(kind))
        .collect();
    select(allowed)
}

/// Properties are only generated for MQTT 5; 3.1.1 gets the empty default.
fn for_version<T: Default + std::fmt::Debug + Clone + 'static>(
    version: ProtocolVersion,
    v5: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<T> {
    match version {
        ProtocolVersion::V5 => v5.boxed(),
        ProtocolVersion::V311 => Just(T::default()).boxed(),
    }
}

// Properties of each packet kind (MQTT 5).

fn connect_properties() -> impl Strategy<Value = ConnectProperties> {
    (
        (
            option::of(any::<u32>()),
            option::of(non_zero_u16()),
            option::of(non_zero_u32()),
            option::of(any::<u16>()),
            option::of(any::<bool>()),
            option::of(any::<bool>()),
        ),
        // Authentication data needs a method (3.1.2.11.10).
        option::of((text(12), option::of(binary(16)))),
        user_properties(),
    )
        .prop_map(|(fixed, auth, user)| {
            let (session_expiry, receive_max, packet_max, alias_max, response_info, problem_info) =
                fixed;
            let (authentication_method, authentication_data) = match auth {
                Some((method, data)) => (Some(method), data),
                None => (None, None),
            };
            ConnectProperties {
                session_expiry_interval_s: session_expiry,
                receive_maximum: receive_max,
                maximum_packet_size: packet_max,
                topic_alias_maximum: alias_max,
                request_response_information: response_info,
                request_problem_information: problem_info,
                authentication_method,
                authentication_data,
                user,
            }
        })
}

fn will_properties() -> impl Strategy<Value = WillProperties> {
    (
        option::of(any::<u32>()),
        option::of(payload_format()),
        option::of(any::<u32>()),
        option::of(text(12)),
        option::of(topic_name()),
        option::of(binary(16)),
        user_properties(),
    )
        .prop_map(
            |(delay, format, expiry, content_type, response_topic, correlation, user)| {
                WillProperties {
                    will_delay_interval_s: delay,
                    payload_format: format,
                    message_expiry_interval_s: expiry,
                    content_type,
                    response_topic,
                    correlation_data: correlation,
                    user,
                }
            },
        )
}

fn connack_properties() -> impl Strategy<Value = ConnAckProperties> {
    let numbers = (
        option::of(any::<u32>()),
        option::of(non_zero_u16()),
        option::of(prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce)]),
        option::of(non_zero_u32()),
        option::of(any::<u16>()),
        option::of(any::<u16>()),
    );
    let flags = (
        option::of(any::<bool>()),
        option::of(any::<bool>()),
        option::of(any::<bool>()),
        option::of(any::<bool>()),
    );
    let strings = (
        option::of(text(23)),
        option::of(text(16)),
        option::of(text(16)),
        option::of(text(16)),
        option::of(text(12)),
        option::of(binary(16)),
    );
    (numbers, flags, strings, user_properties()).prop_map(|(numbers, flags, strings, user)| {
        let (session_expiry, receive_max, max_qos, packet_max, alias_max, keep_alive) = numbers;
        let (retain, wildcard, sub_ids, shared) = flags;
        let (assigned_id, reason_string, response_info, server_ref, method, data) = strings;
        ConnAckProperties {
            session_expiry_interval_s: session_expiry,
            receive_maximum: receive_max,
            maximum_qos: max_qos,
            retain_available: retain,
            maximum_packet_size: packet_max,
            assigned_client_identifier: assigned_id,
            topic_alias_maximum: alias_max,
            reason_string,
            user,
            wildcard_subscription_available: wildcard,
            subscription_identifiers_available: sub_ids,
            shared_subscription_available: shared,
            server_keep_alive_s: keep_alive,
            response_information: response_info,
            server_reference: server_ref,
            authentication_method: method,
            authentication_data: data,
        }
    })
}

fn publish_properties() -> impl Strategy<Value = PublishProperties> {
    (
        option::of(payload_format()),
        option::of(any::<u32>()),
        option::of(non_zero_u16()),
        option::of(topic_name()),
        option::of(binary(16)),
        user_properties(),
        vec(subscription_identifier(), 0..4),
        option::of(text(12)),
    )
        .prop_map(
            |(format, expiry, alias, response_topic, correlation, user, sub_ids, content_type)| {
                PublishProperties {
                    payload_format: format,
                    message_expiry_interval_s: expiry,
                    topic_alias: alias,
                    response_topic,
                    correlation_data: correlation,
                    user,
                    subscription_identifiers: sub_ids,
                    content_type,
                }
            },
        )
}

fn ack_properties() -> impl Strategy<Value = AckProperties> {
    (option::of(text(16)), user_properties()).prop_map(|(reason_string, user)| AckProperties {
        reason_string,
        user,
    })
}

fn disconnect_properties() -> impl Strategy<Value = DisconnectProperties> {
    (
        option::of(any::<u32>()),
        option::of(text(16)),
        user_properties(),
        option::of(text(16)),
    )
        .prop_map(|(session_expiry, reason_string, user, server_reference)| {
            DisconnectProperties {
                session_expiry_interval_s: session_expiry,
                reason_string,
                user,
                server_reference,
            }
        })
}

fn auth_properties() -> impl Strategy<Value = AuthProperties> {
    (
        option::of(text(12)),
        option::of(binary(16)),
        option::of(text(16)),
        user_properties(),
    )
        .prop_map(|(method, data, reason_string, user)| AuthProperties {
            authentication_method: method,
            authentication_data: data,
            reason_string,
            user,
        })
}

// Packets.

fn will(version: ProtocolVersion) -> impl Strategy<Value = Will> {
    (
        topic_name(),
        binary(32),
        qos(),
        any::<bool>(),
        for_version(version, will_properties()),
    )
        .prop_map(|(topic, payload, qos, retain, properties)| Will {
            topic,
            payload,
            qos,
            retain,
            properties,
        })
}

/// A CONNECT that names `version` as its protocol.
pub fn connect(version: ProtocolVersion) -> impl Strategy<Value = Connect> {
    (
        any::<bool>(),
        any::<u16>(),
        text(23),
        option::of(will(version)),
        option::of(text(12)),
        option::of(binary(16)),
        for_version(version, connect_properties()),
    )
        .prop_map(
            move |(clean_start, keep_alive_s, client_id, will, username, password, properties)| {
                // MQTT 3.1.1 sends a password only with a user name (3.1.2.9).
                let password = match version {
                    ProtocolVersion::V311 if username.is_none() => None,
                    _ => password,
                };
                Connect {
                    protocol: version,
                    clean_start,
                    keep_alive_s,
                    client_id,
                    will,
                    username,
                    password,
                    properties,
                }
            },
        )
}

fn connack(version: ProtocolVersion) -> impl Strategy<Value = ConnAck> {
    let reason = match version {
        ProtocolVersion::V311 => select(
            (0u8..=5)
                .filter_map(ReasonCode::from_v3_connack)
                .collect::<Vec<_>>(),
        )
        .boxed(),
        ProtocolVersion::V5 => reason(ReasonKind::ConnAck).boxed(),
    };
    (
        any::<bool>(),
        reason,
        for_version(version, connack_properties()),
    )
        .prop_map(|(session_present, reason, properties)| ConnAck {
            // Only an accepted connection has a session (3.2.2.1.1).
            session_present: session_present && reason == ReasonCode::Success,
            reason,
            properties,
        })
}

/// A PUBLISH valid for `version`: a packet id exactly at QoS 1 and 2, DUP only there,
/// and in MQTT 5 sometimes an empty topic that a topic alias stands for.
pub fn publish(version: ProtocolVersion, payload_len_max: usize) -> impl Strategy<Value = Publish> {
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        topic_name(),
        packet_id(),
        for_version(version, publish_properties()),
        binary(payload_len_max),
        any::<bool>(),
    )
        .prop_map(
            |(qos, dup, retain, topic, id, properties, payload, alias_only)| {
                let acked = qos != QoS::AtMostOnce;
                let topic = if alias_only && properties.topic_alias.is_some() {
                    ByteString::new()
                } else {
                    topic
                };
                Publish {
                    dup: dup && acked,
                    qos,
                    retain,
                    topic,
                    packet_id: acked.then_some(id),
                    properties: properties.into(),
                    payload,
                }
            },
        )
}

fn pub_response(version: ProtocolVersion, kind: ReasonKind) -> impl Strategy<Value = PubResponse> {
    let reason = match version {
        ProtocolVersion::V311 => Just(ReasonCode::Success).boxed(),
        ProtocolVersion::V5 => reason(kind).boxed(),
    };
    (packet_id(), reason, for_version(version, ack_properties())).prop_map(
        |(packet_id, reason, properties)| PubResponse {
            packet_id,
            reason,
            properties,
        },
    )
}

fn subscription_options(version: ProtocolVersion) -> BoxedStrategy<SubscriptionOptions> {
    match version {
        ProtocolVersion::V311 => qos()
            .prop_map(|qos| SubscriptionOptions {
                qos,
                ..SubscriptionOptions::default()
            })
            .boxed(),
        ProtocolVersion::V5 => (
            qos(),
            any::<bool>(),
            any::<bool>(),
            prop_oneof![
                Just(RetainHandling::OnSubscribe),
                Just(RetainHandling::OnNewSubscribe),
                Just(RetainHandling::Never)
            ],
        )
            .prop_map(
                |(qos, no_local, retain_as_published, retain_handling)| SubscriptionOptions {
                    qos,
                    no_local,
                    retain_as_published,
                    retain_handling,
                },
            )
            .boxed(),
    }
}

fn subscribe(version: ProtocolVersion) -> impl Strategy<Value = Subscribe> {
    let subscription = (topic_filter(), subscription_options(version))
        .prop_map(|(filter, options)| Subscription { filter, options });
    let properties = (option::of(subscription_identifier()), user_properties()).prop_map(
        |(subscription_identifier, user)| SubscribeProperties {
            subscription_identifier,
            user,
        },
    );
    (
        packet_id(),
        vec(subscription, 1..5),
        for_version(version, properties),
    )
        .prop_map(|(packet_id, subscriptions, properties)| Subscribe {
            packet_id,
            subscriptions,
            properties,
        })
}

fn suback(version: ProtocolVersion) -> impl Strategy<Value = SubAck> {
    let reason = match version {
        ProtocolVersion::V311 => select(vec![
            ReasonCode::Success,
            ReasonCode::GrantedQoS1,
            ReasonCode::GrantedQoS2,
            ReasonCode::UnspecifiedError,
        ])
        .boxed(),
        ProtocolVersion::V5 => reason(ReasonKind::SubAck).boxed(),
    };
    (
        packet_id(),
        vec(reason, 1..6),
        for_version(version, ack_properties()),
    )
        .prop_map(|(packet_id, reasons, properties)| SubAck {
            packet_id,
            reasons,
            properties,
        })
}

fn unsubscribe(version: ProtocolVersion) -> impl Strategy<Value = Unsubscribe> {
    (
        packet_id(),
        vec(topic_filter(), 1..5),
        for_version(version, user_properties()),
    )
        .prop_map(|(packet_id, filters, user)| Unsubscribe {
            packet_id,
            filters,
            user,
        })
}

fn unsuback(version: ProtocolVersion) -> impl Strategy<Value = UnsubAck> {
    // MQTT 3.1.1 UNSUBACK carries no reasons.
    let reasons = match version {
        ProtocolVersion::V311 => Just(Vec::new()).boxed(),
        ProtocolVersion::V5 => vec(reason(ReasonKind::UnsubAck), 1..6).boxed(),
    };
    (packet_id(), reasons, for_version(version, ack_properties())).prop_map(
        |(packet_id, reasons, properties)| UnsubAck {
            packet_id,
            reasons,
            properties,
        },
    )
}

fn disconnect(version: ProtocolVersion) -> BoxedStrategy<Disconnect> {
    match version {
        ProtocolVersion::V311 => Just(Disconnect::default()).boxed(),
        ProtocolVersion::V5 => (reason(ReasonKind::Disconnect), disconnect_properties())
            .prop_map(|(reason, properties)| Disconnect { reason, properties })
            .boxed(),
    }
}

/// AUTH (MQTT 5 only): anything but a bare success needs an authentication method.
fn auth() -> impl Strategy<Value = Auth> {
    (reason(ReasonKind::Auth), auth_properties(), text(12)).prop_map(
        |(reason, mut properties, method)| {
            let bare = reason == ReasonCode::Success && properties.is_empty();
            if !bare && properties.authentication_method.is_none() {
                properties.authentication_method = Some(method);
            }
            Auth { reason, properties }
        },
    )
}

/// Any packet valid for `version`, every type about equally likely (PUBLISH twice as
/// likely: small, or with a payload of up to 20,000 bytes).
pub fn packet(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let mut arms: Vec<BoxedStrategy<Packet>> = vec![
        connect(version)
            .prop_map(|c| Packet::Connect(Box::new(c)))
            .boxed(),
        connack(version)
            .prop_map(|c| Packet::ConnAck(Box::new(c)))
            .boxed(),
        publish(version, 64).prop_map(Packet::Publish).boxed(),
        // Now and then a frame whose remaining length takes 2 or 3 bytes.
        publish(version, 20_000).prop_map(Packet::Publish).boxed(),
        pub_response(version, ReasonKind::PubAck)
            .prop_map(Packet::PubAck)
            .boxed(),
        pub_response(version, ReasonKind::PubRec)
            .prop_map(Packet::PubRec)
            .boxed(),
        pub_response(version, ReasonKind::PubRel)
            .prop_map(Packet::PubRel)
            .boxed(),
        pub_response(version, ReasonKind::PubComp)
            .prop_map(Packet::PubComp)
            .boxed(),
        subscribe(version).prop_map(Packet::Subscribe).boxed(),
        suback(version).prop_map(Packet::SubAck).boxed(),
        unsubscribe(version).prop_map(Packet::Unsubscribe).boxed(),
        unsuback(version).prop_map(Packet::UnsubAck).boxed(),
        Just(Packet::PingReq).boxed(),
        Just(Packet::PingResp).boxed(),
        disconnect(version).prop_map(Packet::Disconnect).boxed(),
    ];
    if version == ProtocolVersion::V5 {
        arms.push(auth().prop_map(Packet::Auth).boxed());
    }
    proptest::strategy::Union::new(arms).boxed()
}

/// A protocol version and a packet valid for it.
pub fn versioned_packet() -> impl Strategy<Value = (ProtocolVersion, Packet)> {
    version().prop_flat_map(|version| (Just(version), packet(version)))
}

/// A protocol version and several packets valid for it.
pub fn versioned_packets(
    count: std::ops::Range<usize>,
) -> impl Strategy<Value = (ProtocolVersion, Vec<Packet>)> {
    version().prop_flat_map(move |version| (Just(version), vec(packet(version), count.clone())))
}
